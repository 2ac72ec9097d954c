"""The writer's statements that every SQL database runs as they are: the mark, gaps and the ledger.

Named parameters, bound by SQLAlchemy for each backend's driver (DuckDB's and PostgreSQL's
writers both run these texts, so the two ledgers cannot drift apart).
"""

from __future__ import annotations

import sqlalchemy as sa

from archiver.storage.writer import LEDGER_COUNTERS

# The statements any SQL database runs as they are (named parameters, bound by SQLAlchemy).
# The mark only moves forward.
ADVANCE_MARK = sa.text(
    "UPDATE archive_state SET high_water_mark = greatest(coalesce(high_water_mark, :mark), :mark) WHERE id = 1"
)
RECORD_GAP = sa.text(
    "INSERT INTO gaps (since, until, detected_at, sync_id) VALUES (:since, :until, :detected_at, :ledger_id) "
    "ON CONFLICT DO NOTHING"
)
ORPHAN_RUNS = sa.text("UPDATE syncs SET outcome = 'interrupted', error = :error WHERE outcome = 'running'")
START_RUN = sa.text(
    "INSERT INTO syncs (id, kind, started, since, until, outcome) VALUES (:id, :kind, :started, :since, :until, 'running')"
)
FINISH_RUN = sa.text(
    "UPDATE syncs SET finished = :finished, outcome = :outcome, error = :error, "
    "high_water_mark = (SELECT high_water_mark FROM archive_state WHERE id = 1), "
    + ", ".join(f"{name} = :{name}" for name in LEDGER_COUNTERS) + " WHERE id = :id"
)

# -- run logs and artifacts: each run's progress mark and the pass's cursor ----------------------
# The mark's logs_after only moves forward; the rest says what the latest read knew.
SAVE_LOG_MARK = sa.text(
    "INSERT INTO log_progress (run_kind, run_id, logs_after, state_seen, ended, read_at, settled) "
    "VALUES (:run_kind, :run_id, :logs_after, :state_seen, :ended, :read_at, :settled) "
    "ON CONFLICT (run_kind, run_id) DO UPDATE SET "
    "logs_after = greatest(coalesce(log_progress.logs_after, excluded.logs_after), excluded.logs_after), "
    "state_seen = excluded.state_seen, ended = excluded.ended, read_at = excluded.read_at, settled = excluded.settled"
)
LOGS_CURSOR = sa.text("SELECT runs_archived_before FROM logs_pass WHERE id = 1")
ADVANCE_LOGS_CURSOR = sa.text(
    "UPDATE logs_pass SET runs_archived_before = "
    "greatest(coalesce(runs_archived_before, :planned_at), :planned_at) WHERE id = 1"
)

"""What the run-states pass costs a sync on a large archive: planning, and writing a batch.

    python bench/states.py                                  # 1M events, 20k flow runs
    python bench/states.py --events 10000000 --flow-runs 200000 --db /tmp/big-states.duckdb

Builds the synthetic archive of bench/analytics.py (real migrations, Prefect-shaped state-change
events for flow and task runs), then times, best of --repeat:
- planning when no run's states were read yet (the first sync after upgrading: every run pending;
  listed without the per-pass cap here, to show the whole scan);
- planning over every state event when each already has its state record (what every sync would
  pay without the pass's cursor);
- planning with the cursor after the last pass (what every later sync pays: only the events
  archived since are looked at);
- writing one batch of states (50 runs x 4 states, with their ledger rows) through the writer.
No server is involved: the reads themselves are one GET per changed run, bounded by
ingest.concurrency, and cost what the server takes to answer.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
from analytics import build  # noqa: E402

from archiver.ingest.states import BATCH, CURSOR_MARGIN, pending_runs, save_states  # noqa: E402
from archiver.storage.duckdb.writer import DuckDBWriter  # noqa: E402
from archiver.storage.writer import PendingRun  # noqa: E402

# Every state event gets its state record, as after a sync that read every run.
FILL_STATES = """
INSERT INTO run_states
SELECT event_id, 'flow_run', flow_run_id, state_type, state_name, timestamp, message, '{}', 'none',
       NULL, NULL, NULL, NULL, NULL, '{}', now()
FROM flow_run_states;
INSERT INTO run_states
SELECT event_id, 'task_run', task_run_id, state_type, state_name, timestamp, message, '{}', 'none',
       NULL, NULL, NULL, NULL, NULL, '{}', now()
FROM task_run_states;
CHECKPOINT;
"""


def best(repeat: int, action: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return min(times), result


def synthetic_batch(runs: int) -> list[tuple[PendingRun, list[dict[str, Any]]]]:
    start = datetime.now(timezone.utc)
    batch = []
    for _ in range(runs):
        run_id = str(uuid.uuid4())
        states = [
            {"id": str(uuid.uuid4()), "type": kind, "name": kind.title(), "message": None,
             "timestamp": (start + timedelta(seconds=i)).isoformat(),
             "data": {"storage_key": f"/results/{uuid.uuid4().hex}", "storage_block_id": None,
                      "serializer": {"type": "json"}, "expiration": None, "prefect_version": "3.8.8"}
             if kind == "COMPLETED" else None,
             "state_details": {"flow_run_id": run_id}}
            for i, kind in enumerate(("PENDING", "RUNNING", "RUNNING", "COMPLETED"))
        ]
        batch.append((PendingRun("flow_run", run_id, start + timedelta(seconds=3), 0, None), states))
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--flow-runs", type=int, default=20_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/archiver-bench-states.duckdb"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.db.unlink(missing_ok=True)
    build(args.db, args.events, args.flow_runs)
    archive = DuckDBWriter(args.db)

    seconds, (pending, _, _) = best(args.repeat, lambda: pending_runs(archive, 10**9))
    print(f"plan, nothing read yet:            {len(pending):>9,} runs pending   {seconds:7.3f}s")

    started = time.perf_counter()
    with duckdb.connect(str(args.db)) as conn:  # the bench's own fixture, not the writer's work
        conn.execute(FILL_STATES)
        states = conn.execute("SELECT count(*) FROM run_states").fetchone()[0]
    print(f"(filled {states:,} state records in {time.perf_counter() - started:.1f}s)")

    seconds, (pending, planned_at, _) = best(args.repeat, lambda: pending_runs(archive))
    print(f"plan, all events, none pending:    {len(pending):>9,} runs pending   {seconds:7.3f}s")
    # As if the last pass ran a while after these events were archived (the bench archived them
    # seconds ago, inside the cursor's safety margin).
    archive.advance_states_cursor(planned_at + CURSOR_MARGIN + timedelta(seconds=1))
    seconds, (pending, _, _) = best(args.repeat, lambda: pending_runs(archive))
    print(f"plan, since the last pass:         {len(pending):>9,} runs pending   {seconds:7.3f}s")

    seconds, report = best(args.repeat, lambda: save_states(archive, synthetic_batch(BATCH)))
    print(f"write one batch ({BATCH} runs, {report.states_saved} states): {seconds:24.3f}s")
    archive.close()


if __name__ == "__main__":
    main()

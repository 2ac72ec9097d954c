"""A run's report, without a server: the one field definition, outcomes, the stop token, partial reports."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import duckdb
import httpx
import pytest

from archiver.errors import ApiUnavailable, Stopped
from archiver.ingest.report import (
    FetchResult,
    GapFound,
    Reads,
    SyncReport,
    TrailingReconcile,
    outcome,
    partial_report,
)
from archiver.ingest.stop import NEVER, StopToken
from archiver.ingest.sync import ledger_run
from archiver.prefect.client import PrefectClient
from archiver.storage.duckdb.writer import DuckDBWriter
from archiver.storage.writer import LEDGER_COUNTERS

UTC = timezone.utc
T0 = datetime(2026, 11, 1, tzinfo=UTC)

# `sync --json`'s keys in the order it has always printed them (the CLI's list before issue 12).
SYNC_JSON_KEYS = [
    "windows", "fetched", "inserted", "duplicates", "conflicts", "quarantined", "reconciled", "repaired",
    "reconcile_requests", "reconcile_seconds", "objects_refreshed", "runs_states_read", "states_saved", "pages",
    "counts", "high_water_mark", "since", "until", "gaps", "seconds", "outcome", "run_id",
    # issue 14: run logs and artifacts, added after them
    "log_runs_read", "logs_inserted", "artifacts_saved",
]
# The report's part of the service's log line (the service adds event, lag_seconds, seconds, error, …).
LOG_KEYS = {
    "outcome", "windows", "fetched", "inserted", "reconciled", "repaired", "reconcile_requests", "reconcile_seconds",
    "gaps", "objects_refreshed", "runs_states_read", "states_saved", "high_water_mark",
    "log_runs_read", "logs_inserted", "artifacts_saved",
}


def test_sync_json_prints_exactly_the_keys_it_always_has_in_the_same_order():
    assert list(SyncReport().as_json()) == SYNC_JSON_KEYS


def test_the_service_log_line_and_the_ledger_read_the_same_definition():
    assert set(SyncReport().log_fields()) == LOG_KEYS
    # Every counter column the storage writes, and nothing else (a backend knows its own columns).
    assert tuple(SyncReport().ledger_counters()) == LEDGER_COUNTERS
    report = SyncReport(windows=3, fetched=10, inserted=7, duplicates=2, quarantined=1, conflicts=1, reconciled=4,
                        repaired=5, pages=9, logs_inserted=6, artifacts_saved=2)
    assert report.ledger_counters() == {"windows": 3, "fetched": 10, "inserted": 7, "duplicates": 2, "conflicts": 1,
                                        "quarantined": 1, "reconciled_buckets": 4, "logs_inserted": 6,
                                        "artifacts_saved": 2}


def test_gaps_print_as_they_always_have():
    gap = GapFound(T0, T0 + timedelta(hours=1), "the server keeps events for 7 days, 0:00:00 (ingest.retention)")
    printed = SyncReport(gaps=(gap,)).as_json()["gaps"]
    assert printed == [{"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T01:00:00Z", "why": gap.why}]
    assert SyncReport(gaps=(gap,)).log_fields()["gaps"] == printed


def test_reads_add_up_field_by_field():
    total = FetchResult(1, Reads(50, 40, 9, 2, 1)) + FetchResult(2, Reads(3, 1, 2, 0, 0))
    assert total == FetchResult(3, Reads(53, 41, 11, 2, 1))


def test_the_outcome_is_failed_by_an_error_interrupted_by_a_stop_else_ok():
    stop = StopToken()
    assert outcome(stop) == "ok"
    assert outcome(stop, ApiUnavailable("down")) == "failed"
    assert outcome(stop, Stopped("stopping")) == "interrupted"
    assert outcome(stop, KeyboardInterrupt()) == "interrupted"
    stop.set()
    assert outcome(stop) == "interrupted"
    assert outcome(stop, ApiUnavailable("down")) == "failed"


def test_a_failure_before_any_run_began_has_an_empty_report_with_its_outcome():
    assert partial_report(ApiUnavailable("down")) == SyncReport(outcome="failed")
    assert partial_report(Stopped("stopping")) == SyncReport(outcome="interrupted")


def test_stop_token_wakes_a_waiting_pass_at_once():
    stop = StopToken()
    assert not stop.stopped and stop.wait(0.01) is False
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert stop.wait(10) is True
    assert time.monotonic() - started < 5 and stop.stopped


def test_stop_token_cuts_a_retry_wait_short_with_stopped():
    stop = StopToken()
    stop.sleep(0.001)  # not set: just waits
    stop.set()
    with pytest.raises(Stopped):
        stop.sleep(60)


def test_never_is_never_set_and_cannot_be():
    assert not NEVER.stopped and NEVER.wait(0.001) is False
    with pytest.raises(TypeError, match="StopToken"):
        NEVER.set()
    assert not NEVER.stopped


def _client() -> PrefectClient:
    return PrefectClient("http://prefect.test/api", transport=httpx.MockTransport(lambda r: httpx.Response(500)),
                         csrf_support=False)


def test_a_run_that_fails_keeps_what_it_committed_in_the_ledger_and_for_the_caller(tmp_path):
    db = tmp_path / "archive.duckdb"
    archive = DuckDBWriter(db)
    with _client() as client, pytest.raises(ApiUnavailable) as raised:  # noqa: PT012
        with ledger_run(client, archive, "sync", T0, T0 + timedelta(days=1)) as run:
            run.add(FetchResult(2, Reads(fetched=100)))
            run.add(FetchResult(reads=Reads(inserted=90, duplicates=10)))
            run.reconciled(TrailingReconcile(T0, T0 + timedelta(days=1), 3, Reads(5, 5), requests=4, seconds=0.25))
            raise ApiUnavailable("the Prefect API kept failing")
    report = partial_report(raised.value)
    assert (report.outcome, report.windows, report.fetched, report.inserted, report.duplicates) == (
        "failed", 2, 105, 95, 10)
    assert (report.reconciled, report.repaired, report.reconcile_requests) == (3, 5, 4)
    assert report.run_id and report.since == "2026-11-01T00:00:00Z"
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute(
            "SELECT outcome, error, windows, fetched, inserted, duplicates, reconciled_buckets FROM syncs WHERE id = $1",
            [report.run_id],
        ).fetchone()
    finally:
        conn.close()
    assert row == ("failed", "ApiUnavailable: the Prefect API kept failing", 2, 105, 95, 10, 3)


def test_a_stopped_run_ends_interrupted_with_its_counts(tmp_path):
    archive = DuckDBWriter(tmp_path / "archive.duckdb")
    stop = StopToken()
    with _client() as client, ledger_run(client, archive, "reconcile", None, None, stop) as run:
        run.add(FetchResult(1, Reads(fetched=1, inserted=1)))
        stop.set()
    assert (run.report.outcome, run.report.inserted) == ("interrupted", 1)

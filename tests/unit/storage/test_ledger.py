"""The ledger of runs (sync, reconcile, verify) and the gaps they record."""

from __future__ import annotations

from datetime import timedelta

from archiver.storage.writer import ORPHANED_RUN_ERROR
from tests.unit.storage.shapes import T0


def test_a_run_is_running_until_finished_with_its_counters_and_the_mark(writer, stored, make_event):
    ledger_id = writer.start_run("sync", T0, T0 + timedelta(hours=1))
    assert stored("SELECT kind, outcome, since, until FROM syncs") == [
        ("sync", "running", T0, T0 + timedelta(hours=1))]
    writer.write_batch([make_event(T0)], mark=T0 + timedelta(hours=1), ledger_id=ledger_id)
    writer.finish_run(ledger_id, {"windows": 2, "fetched": 1, "inserted": 1, "reconciled_buckets": 3}, "ok")
    assert stored("SELECT id, outcome, error, windows, fetched, inserted, duplicates, reconciled_buckets, "
                  "high_water_mark, finished IS NOT NULL FROM syncs") == [
        (ledger_id, "ok", None, 2, 1, 1, 0, 3, T0 + timedelta(hours=1), True)]


def test_a_run_left_running_is_interrupted_when_the_next_writer_starts(backend, writer, stored):
    killed = writer.start_run("sync", None, None)  # its process dies: finish_run never comes
    writer.close()
    after = backend.writer(timedelta(seconds=5))
    try:
        ledger_id = after.start_run("verify", None, None)
        after.finish_run(ledger_id, {}, "failed", "ApiError: the server answered 500")
    finally:
        after.close()
    assert sorted(stored("SELECT id, kind, outcome, error FROM syncs"), key=lambda row: row[1]) == [
        (killed, "sync", "interrupted", ORPHANED_RUN_ERROR),
        (ledger_id, "verify", "failed", "ApiError: the server answered 500")]


def test_a_gap_is_recorded_once_and_listed_oldest_first(writer, stored):
    ledger_id = writer.start_run("sync", None, None)
    writer.record_gap(T0, T0 + timedelta(hours=2), ledger_id)
    writer.record_gap(T0 - timedelta(days=1), T0 - timedelta(hours=20), ledger_id)
    writer.record_gap(T0, T0 + timedelta(hours=2), ledger_id)
    assert writer.gaps() == [(T0 - timedelta(days=1), T0 - timedelta(hours=20)), (T0, T0 + timedelta(hours=2))]
    assert stored("SELECT count(*) FROM gaps WHERE sync_id = $1", ledger_id) == [(2,)]

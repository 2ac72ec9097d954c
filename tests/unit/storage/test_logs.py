"""Run logs and artifacts on every backend: pages with their progress marks, idempotence, planning, reading."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from archiver.errors import ArchiveError
from archiver.prefect.events import format_timestamp
from archiver.prefect.logs import parse_artifact, parse_log
from archiver.storage.logs import ArtifactQuery, Log, LogMark, LogQuery, RunLogCounts
from tests.unit.storage.shapes import T0
from tests.unit.storage.test_runs import flow_run_object

EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def log_json(run: uuid.UUID, at: datetime, message: str = "hello", level: int = 20, task_run: uuid.UUID | None = None,
             log_id: uuid.UUID | None = None) -> dict:
    """A log as POST /logs/filter returns it."""
    return {"id": str(log_id or uuid.uuid4()), "created": format_timestamp(at), "updated": format_timestamp(at),
            "name": "prefect.task_runs" if task_run else "prefect.flow_runs", "level": level, "message": message,
            "timestamp": format_timestamp(at), "flow_run_id": str(run), "task_run_id": str(task_run) if task_run else None,
            "worker_id": None}


def make_log(run: uuid.UUID, at: datetime, message: str = "hello", **options) -> Log:
    parsed = parse_log(log_json(run, at, message, **options))
    assert parsed is not None
    return parsed


def mark(run: uuid.UUID, after: datetime | None, settled: bool = False, kind: str = "flow_run") -> LogMark:
    return LogMark(kind, str(run), after, T0, None, T0 + timedelta(hours=1), settled)


def test_a_page_of_logs_and_its_mark_are_written_once(writer, stored):
    run = uuid.uuid4()
    page = [make_log(run, T0 + timedelta(seconds=i), f"line {i}") for i in range(3)]
    counts = writer.save_logs(page, mark(run, T0 + timedelta(seconds=2)))
    assert (counts.inserted, counts.duplicates) == (3, 0)
    again = writer.save_logs([*page, page[0]], mark(run, T0 + timedelta(seconds=2)))
    assert (again.inserted, again.duplicates) == (0, 4)
    assert stored("SELECT message, level FROM logs ORDER BY timestamp") == [(f"line {i}", 20) for i in range(3)]
    assert stored("SELECT logs_after, settled FROM log_progress") == [(T0 + timedelta(seconds=2), False)]


def test_the_first_version_of_a_log_id_is_kept(writer, stored):
    run, log_id = uuid.uuid4(), uuid.uuid4()
    writer.save_logs([make_log(run, T0, "first", log_id=log_id), make_log(run, T0, "second", log_id=log_id)],
                     mark(run, T0))
    writer.save_logs([make_log(run, T0, "third", log_id=log_id)], mark(run, T0))
    assert stored("SELECT message FROM logs") == [("first",)]


def test_a_log_mark_never_moves_back(writer, stored):
    run = uuid.uuid4()
    writer.save_logs([], mark(run, T0 + timedelta(minutes=5)))
    writer.save_logs([], mark(run, T0, settled=True))
    assert stored("SELECT logs_after, settled FROM log_progress") == [(T0 + timedelta(minutes=5), True)]


def test_a_failed_page_leaves_neither_logs_nor_mark(writer, stored):
    run = uuid.uuid4()
    bad = LogMark("flow_run", "not-a-uuid", T0, T0, None, T0, False)
    with pytest.raises(ArchiveError):
        writer.save_logs([make_log(run, T0)], bad)
    assert stored("SELECT count(*) FROM logs") == [(0,)]
    assert stored("SELECT count(*) FROM log_progress") == [(0,)]


def test_awkward_log_text_round_trips(backend, writer):
    run = uuid.uuid4()
    text = "tab\there\nnewline \\N back\\slash 100% _x_ ünï 🦆"
    writer.save_logs([make_log(run, T0, text)], mark(run, T0))
    reader = backend.reader(timedelta(seconds=5))
    assert [g["message"] for g in reader.logs(LogQuery(flow_run_ids=(run,)))] == [text]
    assert [g["message"] for g in reader.logs(LogQuery(text="100% _X_"))] == [text]
    assert reader.logs(LogQuery(text="%")) == reader.logs(LogQuery(flow_run_ids=(run,)))
    assert reader.logs(LogQuery(text="_y_")) == []


def test_reading_logs_filters_like_prefects_log_filter(backend, writer):
    run, other, task = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    writer.save_logs([make_log(run, T0 + timedelta(seconds=i), f"m{i}", level=10 * (i + 1)) for i in range(5)]
                     + [make_log(run, T0 + timedelta(seconds=9), "in a task", task_run=task)], mark(run, None))
    writer.save_logs([make_log(other, T0, "elsewhere")], mark(other, None))
    reader = backend.reader(timedelta(seconds=5))

    def messages(**q) -> list[str]:
        return [g["message"] for g in reader.logs(LogQuery(**q))]

    assert messages(flow_run_ids=(run,)) == ["m0", "m1", "m2", "m3", "m4", "in a task"]
    assert messages(flow_run_ids=(run,), level_ge=30) == ["m2", "m3", "m4"]
    assert messages(flow_run_ids=(run,), level_le=20) == ["m0", "m1", "in a task"]
    assert messages(flow_run_ids=(run,), after=T0 + timedelta(seconds=1), before=T0 + timedelta(seconds=3)) == [
        "m1", "m2", "m3"]
    assert messages(task_run_ids=(task,)) == ["in a task"]
    assert messages(flow_run_ids=(run,), task_run_is_null=True, descending=True, limit=2) == ["m4", "m3"]
    assert messages(flow_run_ids=(run,), limit=2, offset=4) == ["m4", "in a task"]
    assert messages(text="ELSE") == ["elsewhere"]
    assert reader.run_log_counts(run) == RunLogCounts(6, 0)
    assert reader.run_log_counts(task) == RunLogCounts(1, 0)
    logs, artifacts = reader.run_log_ids(other)
    assert reader.run_log_ids(run, level_ge=40)[0] == {g["id"] for g in reader.logs(LogQuery(run_id=run, level_ge=40))}
    assert len(logs) == 1 and artifacts == set()
    whole = reader.logs(LogQuery(task_run_ids=(task,)))[0]
    assert whole == log_json(run, T0 + timedelta(seconds=9), "in a task", task_run=task, log_id=uuid.UUID(whole["id"]))


def artifact_json(run: uuid.UUID, kind: str, data, *, key: str | None = None, updated: datetime = T0,
                  artifact_id: uuid.UUID | None = None) -> dict:
    return {"id": str(artifact_id or uuid.uuid4()), "created": format_timestamp(T0), "updated": format_timestamp(updated),
            "key": key, "type": kind, "description": f"a {kind}", "data": data, "metadata_": None,
            "flow_run_id": str(run), "task_run_id": None}


def test_artifacts_are_stored_whole_and_replaced_only_by_a_newer_version(backend, writer, stored):
    run = uuid.uuid4()
    progress_id = uuid.uuid4()
    first = [artifact_json(run, "markdown", "# Report\n\n*ok*", key="report"),
             artifact_json(run, "table", '[{"a": 1}]'),
             artifact_json(run, "progress", 10.0, artifact_id=progress_id)]
    counts = writer.save_artifacts([parse_artifact(a) for a in first], mark(run, None))
    assert (counts.inserted, counts.duplicates, counts.conflicts) == (3, 0, 0)
    later = artifact_json(run, "progress", 80.0, artifact_id=progress_id, updated=T0 + timedelta(minutes=1))
    counts = writer.save_artifacts([parse_artifact(a) for a in [*first[:2], later]], mark(run, None))
    assert (counts.inserted, counts.duplicates, counts.conflicts) == (0, 3, 1)
    counts = writer.save_artifacts([parse_artifact(first[2])], mark(run, None))  # an older version: kept out
    assert (counts.inserted, counts.duplicates, counts.conflicts) == (0, 1, 0)
    reader = backend.reader(timedelta(seconds=5))
    read = reader.artifacts(ArtifactQuery(flow_run_ids=(run,)))
    assert sorted((a["type"], a["data"]) for a in read) == [("markdown", "# Report\n\n*ok*"), ("progress", 80.0),
                                                            ("table", '[{"a": 1}]')]
    assert reader.artifacts(ArtifactQuery(keys=("report",))) == [first[0]]
    assert reader.artifacts(ArtifactQuery(types=("table",), flow_run_ids=(uuid.uuid4(),))) == []
    assert reader.run_log_counts(run) == RunLogCounts(0, 3)


def finished_run(writer, make_event, state_type: str = "COMPLETED", at: datetime = T0) -> uuid.UUID:
    run = uuid.uuid4()
    writer.write_batch([make_event(at, flow_run=run)])
    obj = flow_run_object(run) | {"state_type": state_type, "end_time": format_timestamp(at),
                                  "state": {"type": state_type, "timestamp": format_timestamp(at)}}
    writer.save_objects("flow_runs", [str(run)], [obj], give_up_after=5)
    return run


def test_runs_are_pending_until_settled_and_again_when_their_state_changes(writer, make_event):
    done = finished_run(writer, make_event)
    running = finished_run(writer, make_event, "RUNNING")
    finished_run(writer, make_event, "SCHEDULED")  # has not logged: not pending
    pending = writer.pending_log_runs(EARLIEST, 10)
    assert sorted(r.run_id for r in pending) == sorted([str(done), str(running)])
    by_id = {r.run_id: r for r in pending}
    assert by_id[str(done)].ended == T0 and by_id[str(running)].ended is None
    assert not by_id[str(done)].read_before
    planned_at = datetime.now(timezone.utc)
    writer.save_logs([], LogMark("flow_run", str(done), T0, T0, T0, planned_at, settled=True))
    writer.save_logs([], LogMark("flow_run", str(running), T0, T0, None, planned_at, settled=False))
    writer.advance_logs_cursor(planned_at)
    assert writer.logs_cursor() == planned_at
    again = writer.pending_log_runs(planned_at, 10)
    assert [(r.run_id, r.logs_after, r.read_before) for r in again] == [(str(running), T0, True)]
    # The finished run is run again (a retry): its metadata comes back with a newer state.
    later = T0 + timedelta(hours=1)
    obj = flow_run_object(done) | {"state_type": "RUNNING", "state": {"type": "RUNNING", "timestamp": format_timestamp(later)}}
    writer.save_objects("flow_runs", [str(done)], [obj], give_up_after=5)
    assert sorted(r.run_id for r in writer.pending_log_runs(planned_at, 10)) == sorted([str(done), str(running)])
    assert len(writer.pending_log_runs(EARLIEST, 1)) == 1


def test_a_runs_logs_read_by_keyset_pages_neither_skip_nor_repeat_at_one_instant(backend, writer):
    run, task = uuid.uuid4(), uuid.uuid4()
    writer.save_logs([make_log(run, T0, f"tie {i}") for i in range(7)]
                     + [make_log(run, T0 + timedelta(seconds=1), "in a task", task_run=task)], mark(run, None))
    reader = backend.reader(timedelta(seconds=5))
    for descending in (False, True):
        pages, key = [], None
        while True:
            page = reader.logs(LogQuery(run_id=run, limit=3, after_key=key, descending=descending))
            if not page:
                break
            pages += page
            key = (parse_log(page[-1]).timestamp, uuid.UUID(page[-1]["id"]))
        whole = reader.logs(LogQuery(run_id=run, limit=100, descending=descending))
        assert [g["id"] for g in pages] == [g["id"] for g in whole] and len(whole) == 8
    assert [g["message"] for g in reader.logs(LogQuery(run_id=task))] == ["in a task"]


def test_harvested_runs_are_the_settled_ones_that_ended_in_a_range(backend, writer):
    ended, running, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    writer.save_logs([], LogMark("flow_run", str(ended), T0, T0, T0, T0, settled=True))
    writer.save_logs([], LogMark("flow_run", str(running), T0, T0, None, T0, settled=False))
    writer.save_logs([], LogMark("task_run", str(later), T0, T0, T0 + timedelta(days=2), T0, settled=True))
    reader = backend.reader(timedelta(seconds=5))
    assert reader.harvested_runs(T0 - timedelta(hours=1), T0 + timedelta(days=1)) == [("flow_run", str(ended))]
    assert reader.harvested_runs(T0, T0 + timedelta(days=3)) == [("flow_run", str(ended)), ("task_run", str(later))]


def test_log_lines_stream_in_growing_pages_and_print_as_log_line_does(backend, writer, monkeypatch):
    from archiver.lookup import logs as lookup
    from archiver.render_logs import LogLines, log_line

    monkeypatch.setattr(lookup, "FIRST_PAGE", 2)
    monkeypatch.setattr(lookup, "PAGE", 5)
    run = uuid.uuid4()
    odd = T0 + timedelta(microseconds=999_999)
    logs = ([make_log(run, T0, f"tie {i}") for i in range(4)] + [make_log(run, odd, "cut, not rounded", level=25)]
            + [make_log(run, odd + timedelta(days=400, seconds=i), f"later {i}", level=40) for i in range(12)])
    writer.save_logs(logs, mark(run, None))
    reader = backend.reader(timedelta(seconds=5))
    for options in ({}, {"newest_first": True}, {"level": 30}, {"grep": "LATER 1"}):
        pages = list(lookup.iter_run_log_lines(reader, run, **options))
        expected = "".join(log_line(g, "Run 'x'") + "\n" for g in lookup.iter_run_logs(reader, run, **options))
        assert "".join(LogLines("Run 'x'").text(page) for page in pages) == expected
        assert sum(map(len, pages)) == expected.count("\n") and all(len(page) <= 5 for page in pages)
    assert [len(page) for page in lookup.iter_run_log_lines(reader, run)] == [2, 5, 5, 5]
    assert ".999 | Level 25 | Run 'x' - cut, not rounded\n" in LogLines("Run 'x'").text(
        next(iter(lookup.iter_run_log_lines(reader, run, level=25))))


def test_pending_runs_come_in_keyset_batches_that_neither_skip_nor_repeat(writer, make_event):
    runs = {str(finished_run(writer, make_event, state)) for state in ("COMPLETED", "RUNNING", "FAILED", "CRASHED", "RUNNING")}
    batches, after = [], None
    while True:
        batch = writer.pending_log_runs(EARLIEST, 2, after)
        batches.append([r.run_id for r in batch])
        if len(batch) < 2:
            break
        after = (batch[-1].run_kind, batch[-1].run_id)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sum(batches, []) == [r.run_id for r in writer.pending_log_runs(EARLIEST, 10)]
    assert set(sum(batches, [])) == runs

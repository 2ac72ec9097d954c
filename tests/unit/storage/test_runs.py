"""Run metadata (the refresh queue) and run states (pending runs, their states, the pass's cursor, blocks)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

from archiver.prefect.events import compact_json
from archiver.storage.writer import PendingRun, RunState, StateFetch, StorageBlock
from tests.unit.storage.shapes import T0

EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def flow_run_object(run: uuid.UUID, name: str = "calm-otter") -> dict:
    """A flow run as POST /flow_runs/filter returns it (the fields the archive types, and more)."""
    return {"id": str(run), "name": name, "flow_id": str(uuid.UUID(int=run.int ^ 1)), "state_type": "COMPLETED",
            "state_name": "Completed", "state": {"type": "COMPLETED", "timestamp": "2026-11-02T09:30:00Z"},
            "run_count": 1, "tags": ["nightly"], "parameters": {"day": "2026-11-02"},
            "created": "2026-11-02T09:29:00Z", "updated": "2026-11-02T09:30:00Z", "work_queue_name": None}


def test_new_events_queue_the_objects_they_name_once(writer, make_event):
    run = uuid.uuid4()
    writer.write_batch([make_event(T0, flow_run=run), make_event(T0 + timedelta(seconds=1), flow_run=run)])
    writer.write_batch([make_event(T0 + timedelta(seconds=2), flow_run=run)])
    assert writer.queued_objects("flow_runs", None, 10) == [str(run)]
    assert writer.queued_objects("flows", None, 10) == [str(uuid.UUID(int=run.int ^ 1))]
    assert writer.queued_objects("deployments", None, 10) == []


def test_queued_objects_are_paged_in_id_order(writer, make_event):
    runs = sorted(str(uuid.uuid4()) for _ in range(5))
    writer.write_batch([make_event(T0, flow_run=uuid.UUID(r)) for r in runs])
    assert writer.queued_objects("flow_runs", None, 2) == runs[:2]
    assert writer.queued_objects("flow_runs", runs[1], 2) == runs[2:4]
    assert writer.queued_objects("flow_runs", runs[4], 2) == []


def test_saved_objects_replace_what_was_archived_and_leave_the_queue(writer, stored, make_event):
    run = uuid.uuid4()
    writer.write_batch([make_event(T0, flow_run=run)])
    assert writer.save_objects("flow_runs", [str(run)], [flow_run_object(run, "first")], give_up_after=5) == 0
    writer.write_batch([make_event(T0 + timedelta(minutes=1), flow_run=run)])  # queued again by its next event
    writer.save_objects("flow_runs", [str(run)], [flow_run_object(run, "second")], give_up_after=5)
    assert writer.queued_objects("flow_runs", None, 10) == []
    assert stored("SELECT name, state_type, run_count, tags FROM flow_runs") == [("second", "COMPLETED", 1, ["nightly"])]


def test_an_object_the_server_lacks_stays_queued_until_given_up(writer, stored, make_event):
    found, missing = uuid.uuid4(), uuid.uuid4()
    writer.write_batch([make_event(T0, flow_run=found), make_event(T0, flow_run=missing)])
    asked = [str(found), str(missing)]
    assert writer.save_objects("flow_runs", asked, [flow_run_object(found)], give_up_after=3) == 0
    assert writer.queued_objects("flow_runs", None, 10) == [str(missing)]
    assert writer.save_objects("flow_runs", [str(missing)], [], give_up_after=3) == 0
    assert writer.save_objects("flow_runs", [str(missing)], [], give_up_after=3) == 1
    assert writer.queued_objects("flow_runs", None, 10) == []
    assert stored("SELECT id FROM flow_runs") == [(found,)]


def _state(run: str, at: datetime, *, message: str | None = None, block: str | None = None,
           state_id: str | None = None) -> RunState:
    return RunState(
        id=state_id or str(uuid.uuid4()), run_kind="flow_run", run_id=run, type="COMPLETED", name="Completed",
        timestamp=at, message=message, state_details={"flow_run_id": run},
        data_kind="result_reference" if block else "none", storage_key="/results/abc" if block else None,
        storage_block_id=block, serializer_type="json" if block else None, result_expiration=None,
        result_prefect_version="3.6.0" if block else None, state={"type": "COMPLETED"}, archived_at=at,
    )


def test_a_run_with_a_new_state_event_is_pending_until_its_state_is_saved(writer, make_event):
    run = uuid.uuid4()
    writer.write_batch([make_event(T0, flow_run=run)])
    assert writer.pending_runs("flow_run", EARLIEST, 10) == [PendingRun("flow_run", str(run), T0, 0, None)]
    assert writer.pending_runs("task_run", EARLIEST, 10) == []
    writer.save_states([_state(str(run), T0)], [StateFetch("flow_run", str(run), T0, 1, T0, T0, 0)])
    assert writer.pending_runs("flow_run", EARLIEST, 10) == []
    # A newer state event makes it pending again.
    writer.write_batch([make_event(T0 + timedelta(minutes=1), flow_run=run)])
    assert [r.newest_event for r in writer.pending_runs("flow_run", EARLIEST, 10)] == [T0 + timedelta(minutes=1)]


def test_a_run_being_retried_is_pending_whatever_the_cursor_says(writer, make_event):
    run = uuid.uuid4()
    writer.write_batch([make_event(T0, flow_run=run)])
    writer.save_states([], [StateFetch("flow_run", str(run), T0, 0, T0, None, 1)])  # the read lacked the state
    later = datetime.now(timezone.utc) + timedelta(days=1)  # no event archived since then
    assert writer.pending_runs("flow_run", later, 10) == [PendingRun("flow_run", str(run), T0, 1, None)]


def test_pending_runs_come_in_id_order_and_stop_at_the_limit(writer, make_event):
    runs = sorted(str(uuid.uuid4()) for _ in range(4))
    writer.write_batch([make_event(T0, flow_run=uuid.UUID(r)) for r in runs])
    assert [r.run_id for r in writer.pending_runs("flow_run", EARLIEST, 3)] == runs[:3]


def test_states_are_replaced_by_id_never_duplicated(writer, stored):
    run, state_id = str(uuid.uuid4()), str(uuid.uuid4())
    writer.save_states([_state(run, T0, message="first", state_id=state_id)], [])
    writer.save_states([_state(run, T0, message="second", state_id=state_id), _state(run, T0 + timedelta(seconds=1))], [])
    assert stored("SELECT message FROM run_states ORDER BY timestamp") == [("second",), (None,)]
    assert stored("SELECT state_details, state FROM run_states WHERE id = $1", state_id) == [
        (f'{{"flow_run_id":"{run}"}}', '{"type":"COMPLETED"}')]


def test_a_states_json_is_stored_as_the_api_sent_it_keys_in_their_order(writer, stored):
    """Not reordered (PostgreSQL's JSONB puts shorter keys first): `states --json` prints it as is."""
    run = str(uuid.uuid4())
    state = _state(run, T0)
    details = {"pause_reschedule": False, "flow_run_id": run, "task_run_id": None, "deferred": False}
    whole = {"type": "COMPLETED", "data": {"storage_key": "/r", "serializer": {"type": "json", "jsonlib": "x"}}, "id": state.id}
    writer.save_states([dataclasses.replace(state, state_details=details, state=whole)], [])
    assert stored("SELECT state_details, state FROM run_states") == [(compact_json(details), compact_json(whole))]


def test_the_states_cursor_only_moves_forward(writer):
    assert writer.states_cursor() is None
    writer.advance_states_cursor(T0)
    writer.advance_states_cursor(T0 - timedelta(hours=1))
    assert writer.states_cursor() == T0


def test_storage_blocks_are_read_once(writer, stored):
    block, lost = str(uuid.uuid4()), str(uuid.uuid4())
    run = str(uuid.uuid4())
    writer.save_states([_state(run, T0, block=block), _state(run, T0 + timedelta(seconds=1), block=lost)], [])
    assert writer.unread_storage_blocks() == sorted([block, lost])
    writer.save_storage_blocks([StorageBlock(block, True, "results", "local-file-system", "/srv/results"),
                                StorageBlock(lost, found=False)])
    assert writer.unread_storage_blocks() == []
    assert sorted(stored("SELECT found, name, block_type_slug, basepath FROM result_storage_blocks")) == [
        (False, None, None, None), (True, "results", "local-file-system", "/srv/results")]


def test_a_value_not_of_its_columns_type_leaves_the_column_null_and_the_object_whole(writer, stored):
    odd, coercible = uuid.uuid4(), uuid.uuid4()
    objects = [
        {**flow_run_object(odd), "run_count": "many", "start_time": "yesterday", "end_time": "20000-01-01T00:00:00Z",
         "total_run_time": "slow", "flow_id": "not-a-uuid", "tags": "nightly", "parameters": None,
         "expected_start_time": "2026-11-02T09:29:00+01:00"},
        {**flow_run_object(coercible), "run_count": "3", "total_run_time": "1.5", "tags": [1, "a", None],
         "start_time": "2026-11-02T09:29:30.5Z"},
    ]
    writer.save_objects("flow_runs", [str(odd), str(coercible)], objects, give_up_after=5)
    rows = stored("SELECT id, run_count, start_time, end_time, total_run_time, flow_id, tags, expected_start_time, "
                  "parameters FROM flow_runs")
    assert sorted(rows, key=lambda row: row[0] == coercible) == [
        (odd, None, None, None, None, None, None, datetime(2026, 11, 2, 8, 29, tzinfo=timezone.utc), "null"),
        (coercible, 3, datetime(2026, 11, 2, 9, 29, 30, 500000, tzinfo=timezone.utc), None, 1.5,
         uuid.UUID(int=coercible.int ^ 1), ["1", "a", None], None, '{"day":"2026-11-02"}'),
    ]
    assert stored("SELECT object->>'run_count' FROM flow_runs WHERE id = $1", str(odd)) == [("many",)]


def test_a_deployments_paused_flag_is_read_as_duckdb_reads_booleans(writer, stored):
    ids = [uuid.uuid4() for _ in range(4)]
    flags = ["yes", False, "maybe", 1]
    objects = [{"id": str(i), "name": f"d{n}", "paused": flag} for n, (i, flag) in enumerate(zip(ids, flags, strict=True))]
    writer.save_objects("deployments", [str(i) for i in ids], objects, give_up_after=5)
    assert sorted(stored("SELECT name, paused FROM deployments")) == [
        ("d0", True), ("d1", False), ("d2", None), ("d3", True)]

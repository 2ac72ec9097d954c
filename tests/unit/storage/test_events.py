"""Events and the high-water mark: idempotent batches, exact counts, the mark never ahead of its events."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from archiver.errors import ArchiveError
from archiver.prefect.events import PIVOT, Event, compact_json, parse_event
from archiver.storage.writer import WriteCounts
from tests.unit.storage.shapes import T0, event_json


def test_the_same_batch_twice_is_stored_once_and_the_counts_say_so(writer, stored, make_event):
    batch = [make_event(T0 + timedelta(seconds=i)) for i in range(5)]
    first = writer.write_batch(batch)
    again = writer.write_batch(batch)
    assert first == WriteCounts(inserted=5)
    assert again == WriteCounts(duplicates=5)
    assert stored("SELECT count(*) FROM events") == [(5,)]
    # Each event's resources once: its own (role '') and each related one.
    assert stored("SELECT count(*) FROM event_resources") == [(15,)]


def test_a_repeat_inside_one_batch_is_a_duplicate_and_the_first_version_wins(writer, stored, make_event):
    event_id = uuid.uuid4()
    first = make_event(T0, event_id=event_id, payload={"version": 1})
    second = make_event(T0, event_id=event_id, payload={"version": 2})
    counts = writer.write_batch([first, second, make_event(T0)])
    assert counts == WriteCounts(inserted=2, duplicates=1, conflicts=1)
    assert stored("SELECT payload FROM events WHERE id = $1", str(event_id)) == [('{"version":1}',)]


def _v7(millisecond: int) -> uuid.UUID:
    """A UUIDv7 as Prefect's clients make them: the time first, so ids sort in the order they were made."""
    return uuid.UUID(int=(millisecond << 80) | (0x7 << 76) | (0x2 << 62) | uuid.uuid4().int >> 66)


@pytest.mark.parametrize("make_id", [_v7, lambda _: uuid.uuid4()], ids=["uuid7", "uuid4"])
def test_overlapping_batches_store_each_event_once_and_count_only_the_new(writer, stored, make_event, make_id):
    ids = [make_id(i) for i in range(12)]
    events = [make_event(T0 + timedelta(seconds=i), event_id=ids[i]) for i in range(12)]
    assert writer.write_batch(events[0:12:2]) == WriteCounts(inserted=6)
    # Interleaved with the archived ids, reaching past both ends, and one of them twice.
    assert writer.write_batch([*events[0:9], events[3]]) == WriteCounts(inserted=4, duplicates=6)
    assert writer.write_batch(events[8:] + events[:1]) == WriteCounts(inserted=2, duplicates=3)
    assert writer.write_batch(events) == WriteCounts(duplicates=12)
    assert stored("SELECT id, count(*) FROM events GROUP BY id ORDER BY id") == [(i, 1) for i in sorted(ids)]
    # What comes with a new event was written once per event, never for a repeat.
    assert stored("SELECT count(*), count(DISTINCT event_id) FROM event_resources") == [(36, 12)]
    assert stored("SELECT sum(events) FROM event_days") == [(12,)]


def test_each_new_event_is_indexed_under_its_own_resources_and_nothing_else(writer, stored, make_event):
    """event_resources pairs every row with its own event's id and time, when the batch mixes new
    events with repeats and archived ones, and related resources without an id or a role."""
    archived = make_event(T0)
    writer.write_batch([archived])
    item = event_json(T0 + timedelta(seconds=2), event_id=uuid.uuid4())
    item["related"] = [{"prefect.resource.role": "flow"},  # no id: not indexed
                       {"prefect.resource.id": "prefect.deployment.d1"},  # no role: ''
                       {"prefect.resource.id": 42, "prefect.resource.role": "odd"}]
    odd = parse_event(item)
    assert isinstance(odd, Event)
    later = make_event(T0 + timedelta(seconds=3))
    writer.write_batch([archived, odd, archived, later, odd])
    expected = sorted(
        [(str(e.id), e.occurred, e.resource_id, "") for e in (archived, odd, later)]
        + [(str(e.id), e.occurred, r["prefect.resource.id"], r["prefect.resource.role"])
           for e in (archived, later) for r in e.related]
        + [(str(odd.id), odd.occurred, "prefect.deployment.d1", ""), (str(odd.id), odd.occurred, "42", "odd")])
    rows = stored("SELECT event_id::VARCHAR, occurred, resource_id, role FROM event_resources ORDER BY 1, 2, 3, 4")
    assert rows == expected


SPANS = "SELECT resource_id, first_occurred, last_occurred FROM resource_spans ORDER BY 1"
SPANS_OF_ROWS = "SELECT resource_id, min(occurred), max(occurred) FROM event_resources GROUP BY 1 ORDER BY 1"


def test_each_resources_span_takes_in_its_new_events_in_any_order_and_never_a_repeats(writer, stored, make_event):
    run = uuid.uuid4()
    later, earliest, last = (make_event(T0 + timedelta(hours=h), flow_run=run) for h in (1, 0, 2))
    writer.write_batch([later, make_event(T0 + timedelta(hours=9))])
    writer.write_batch([earliest])
    writer.write_batch([last, later])
    # A repeat of an archived id that says it occurred later: a duplicate, so no row and no wider span.
    writer.write_batch([make_event(T0 + timedelta(hours=5), flow_run=run, event_id=last.id)])
    spans = stored(SPANS)
    assert spans == stored(SPANS_OF_ROWS)  # one a resource, from its first row to its last
    assert (f"prefect.flow-run.{run}", T0, T0 + timedelta(hours=2)) in spans
    assert ("prefect.tag.nightly", T0, T0 + timedelta(hours=9)) in spans
    assert len(spans) == 2 * 2 + 1  # two flow runs and their flows, one tag


def test_an_archived_event_sent_again_with_other_content_is_a_conflict_and_kept_as_first_archived(
        writer, stored, make_event):
    event_id, run = uuid.uuid4(), uuid.uuid4()
    writer.write_batch([make_event(T0, event_id=event_id, flow_run=run, payload={"version": 1})])
    again = make_event(T0, event_id=event_id, flow_run=run, payload={"version": 2})
    assert writer.write_batch([again]) == WriteCounts(duplicates=1, conflicts=1)
    same = make_event(T0, event_id=event_id, flow_run=run, payload={"version": 1})
    assert writer.write_batch([same]) == WriteCounts(duplicates=1)
    assert stored("SELECT payload FROM events WHERE id = $1", str(event_id)) == [('{"version":1}',)]


def test_counts_add_up_to_what_was_handed_in(writer, make_event, make_malformed):
    old = [make_event(T0 + timedelta(minutes=i)) for i in range(3)]
    bad = make_malformed(note="first")
    writer.write_batch(old[:2], [bad])
    events = [*old, make_event(T0 + timedelta(hours=1)), old[0]]
    malformed = [bad, make_malformed(note="second")]
    counts = writer.write_batch(events, malformed)
    assert counts.inserted + counts.duplicates + counts.quarantined == len(events) + len(malformed)
    assert (counts.inserted, counts.duplicates, counts.quarantined) == (2, 4, 1)


def test_malformed_items_are_quarantined_once_with_the_ledger_run_that_saw_them(writer, stored, make_malformed):
    ledger_id = writer.start_run("sync", None, None)
    item = make_malformed()
    assert writer.write_batch([], [item], ledger_id=ledger_id) == WriteCounts(quarantined=1)
    assert writer.write_batch([], [item], ledger_id=ledger_id) == WriteCounts(duplicates=1)
    assert stored("SELECT raw, reason, event_id, sync_id FROM quarantine") == [
        (item.raw, item.reason, item.event_id, ledger_id)]


def test_a_quarantined_item_is_resolved_when_its_real_event_arrives(writer, stored, make_event, make_malformed):
    event_id = uuid.uuid4()
    writer.write_batch([], [make_malformed(event_id)])
    assert stored("SELECT count(*) FROM quarantine WHERE resolved IS NULL") == [(1,)]
    counts = writer.write_batch([make_event(T0, event_id=event_id)])
    assert (counts.inserted, counts.resolved) == (1, 1)
    assert stored("SELECT count(*) FROM quarantine WHERE resolved IS NOT NULL") == [(1,)]
    # An item quarantined after its event was archived is resolved at once.
    assert writer.write_batch([], [make_malformed(event_id, note="later")]).resolved == 1


def test_the_mark_commits_with_its_events(writer, make_event):
    assert writer.high_water_mark() is None
    writer.write_batch([make_event(T0)], mark=T0 + timedelta(minutes=1))
    assert writer.high_water_mark() == T0 + timedelta(minutes=1)


def test_a_batch_that_fails_part_way_leaves_events_and_mark_as_they_were(
        writer, stored, make_event, failing_after_events):
    writer.write_batch([make_event(T0)], mark=T0 + timedelta(minutes=1))
    with failing_after_events(), pytest.raises(ArchiveError, match="rolled back"):
        writer.write_batch([make_event(T0 + timedelta(minutes=5))], mark=T0 + timedelta(minutes=10))
    assert writer.high_water_mark() == T0 + timedelta(minutes=1)
    assert stored("SELECT count(*) FROM events") == [(1,)]
    assert stored("SELECT count(*) FROM event_resources") == [(3,)]
    # The writer carries on: the same batch goes in whole once the store works again.
    counts = writer.write_batch([make_event(T0 + timedelta(minutes=5))], mark=T0 + timedelta(minutes=10))
    assert counts.inserted == 1 and writer.high_water_mark() == T0 + timedelta(minutes=10)


def test_the_mark_only_moves_forward(writer, make_event):
    writer.advance_mark(T0)
    writer.advance_mark(T0 - timedelta(days=1))
    assert writer.high_water_mark() == T0
    writer.write_batch([make_event(T0 - timedelta(hours=2))], mark=T0 - timedelta(hours=1))
    assert writer.high_water_mark() == T0
    writer.write_batch([], mark=T0 + timedelta(seconds=1))
    assert writer.high_water_mark() == T0 + timedelta(seconds=1)


def test_bucket_counts_align_with_the_servers_buckets(writer, make_event):
    hour = timedelta(hours=1)
    start = PIVOT + 1000 * hour
    writer.write_batch([make_event(start + timedelta(minutes=m)) for m in (0, 10, 59, 60, 61, 185)])
    assert writer.bucket_counts(start, start + 4 * hour, hour) == {start: 3, start + hour: 2, start + 3 * hour: 1}
    # Only [since, until] is counted.
    assert writer.bucket_counts(start + hour, start + 2 * hour, hour) == {start + hour: 2}


def test_newest_occurred_before_looks_only_before_the_moment(writer, make_event):
    assert writer.newest_occurred_before(T0) is None
    writer.write_batch([make_event(T0 - timedelta(hours=3)), make_event(T0 - timedelta(hours=1)), make_event(T0)])
    assert writer.newest_occurred_before(T0) == T0 - timedelta(hours=1)
    assert writer.newest_occurred_before(T0 + timedelta(microseconds=1)) == T0


def test_a_hold_keeps_nothing_once_released(backend, writer, stored, make_event):
    with writer.holding():
        writer.write_batch([make_event(T0)])
        writer.release()
        assert stored("SELECT count(*) FROM events") == [(1,)]  # another connection gets in
        writer.write_batch([make_event(T0 + timedelta(seconds=1))])
    assert stored("SELECT count(*) FROM events") == [(2,)]


def test_awkward_text_round_trips_exactly(writer, stored, make_event):
    # What COPY's text format and JSON both escape: tabs, newlines, backslashes, quotes; and Unicode.
    payload = {"note": 'tab\there\nnew line \\ back\\slash "quoted" \\N é 😀 \u2028'}
    event = make_event(T0, payload=payload)
    assert writer.write_batch([event]).inserted == 1
    assert stored("SELECT payload FROM events WHERE id = $1", str(event.id)) == [(compact_json(payload),)]

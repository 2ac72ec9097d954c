"""Parsing what the API sends: valid events round-trip, anything else is Malformed with a reason."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from archiver.errors import BadInput
from archiver.models import Event, Malformed, event_to_api, format_timestamp, parse_event, parse_event_id, uuid7_time

UTC = timezone.utc
GOOD = {
    "occurred": "2026-11-23T17:23:56.945423Z",
    "event": "prefect.flow-run.Completed",
    "resource": {"prefect.resource.id": "prefect.flow-run.abc", "prefect.resource.name": "ünï"},
    "related": [{"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}],
    "payload": {"validated_state": {"type": "COMPLETED"}},
    "id": "0192f0c4-2f6b-7a51-9e4b-3c1f2d0e8a77",
    "follows": None,
    "received": "2026-11-23T19:23:57Z",
}


def test_a_valid_event_round_trips_to_the_api_shape():
    event = parse_event(GOOD)
    assert isinstance(event, Event)
    assert event.occurred == datetime(2026, 11, 23, 17, 23, 56, 945423, tzinfo=UTC)
    api = event_to_api(event.id, event.occurred, event.event, event.resource, event.related, event.payload,
                       event.received, event.follows)
    assert api == GOOD
    assert list(api) == list(GOOD)  # the API's key order


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"id": None}, "missing id"),
        ({"id": "nope"}, "is not a UUID"),
        ({"occurred": None}, "missing occurred"),
        ({"occurred": "yesterday"}, "bad timestamp"),
        ({"event": ""}, "missing event name"),
        ({"resource": {"name": "x"}}, "prefect.resource.id"),
        ({"related": {"a": 1}}, "related is not a list"),
        ({"payload": [1, 2]}, "payload is not an object"),
        ({"follows": "nope"}, "follows"),
    ],
)
def test_malformed_items_carry_their_reason_and_raw_text(change, reason):
    item = parse_event({**GOOD, **change})
    assert isinstance(item, Malformed)
    assert reason in item.reason
    assert json.loads(item.raw) == {**GOOD, **change}  # kept verbatim for the quarantine


def test_non_objects_are_malformed_not_crashes():
    for raw in (None, 42, "text", [GOOD]):
        assert isinstance(parse_event(raw), Malformed)


def test_content_hash_tells_apart_same_id_with_other_content():
    first, second = parse_event(GOOD), parse_event({**GOOD, "payload": {"other": 1}})
    assert isinstance(first, Event) and isinstance(second, Event)
    assert first.id == second.id and first.content_hash != second.content_hash
    assert parse_event(dict(reversed(list(GOOD.items())))).content_hash == first.content_hash


def test_timestamps_render_like_prefect():
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2026-01-02T03:04:05Z"


def test_uuid7_time_is_read_from_the_first_48_bits():
    moment = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    v7 = uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | 12345)
    assert v7.version == 7
    assert uuid7_time(v7) == moment
    assert uuid7_time(uuid.uuid4()) is None
    # A version-7 id whose bits are not a plausible time (Prefect 3.4.1's layout) gives no time.
    assert uuid7_time(uuid.UUID(int=(0x7 << 76) | (0b10 << 62))) is None


def test_event_ids_must_be_uuids():
    assert parse_event_id(" 0192F0C4-2F6B-7A51-9E4B-3C1F2D0E8A77 ") == uuid.UUID(GOOD["id"])
    with pytest.raises(BadInput, match="not an event id"):
        parse_event_id("12345")

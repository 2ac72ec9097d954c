"""Parsing what the API sends: valid events round-trip, anything else is Malformed with a reason."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from archiver.errors import BadInput
from archiver.prefect.events import (
    Event,
    Malformed,
    event_to_api,
    format_timestamp,
    parse_event,
    parse_event_id,
    parse_when,
    uuid7_time,
)

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
        # Valid ISO 8601 that Python's datetime cannot hold in UTC (year 10000, year 0).
        ({"received": "9999-12-31T23:59:59-01:00"}, "outside the years 1 to 9999"),
        ({"occurred": "0001-01-01T00:00:00+01:00"}, "outside the years 1 to 9999"),
        ({"occurred": 1732382636}, "not a timestamp"),
        # What Python's json reads but no JSON column can hold.
        ({"payload": {"ratio": float("inf")}}, "NaN or Infinity"),
    ],
)
def test_malformed_items_carry_their_reason_and_raw_text(change, reason):
    item = parse_event({**GOOD, **change})
    assert isinstance(item, Malformed)
    assert reason in item.reason
    assert json.loads(item.raw) == {**GOOD, **change}  # kept verbatim for the quarantine


def test_lone_surrogates_are_malformed_and_quarantined_as_escaped_json():
    item = parse_event({**GOOD, "payload": {"text": "\ud800"}})
    assert isinstance(item, Malformed) and "lone surrogate" in item.reason
    assert json.loads(item.raw)["payload"] == {"text": "\ud800"}  # the same JSON value, as \\u escapes
    assert len(item.raw_hash) == 64  # storable: the raw text encodes as UTF-8


def test_the_extremes_of_utc_are_valid_events():
    for occurred in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59+01:00"):
        event = parse_event({**GOOD, "occurred": occurred})
        assert isinstance(event, Event), occurred


def test_when_refuses_times_outside_utc_with_a_clear_error():
    for value in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(BadInput, match="outside the years 1 to 9999"):
            parse_when(value, name="--since")
    with pytest.raises(BadInput, match="before the year 1"):
        parse_when("99999999999d", name="--since")
    assert parse_when("0001-01-01", name="--since") == datetime(1, 1, 1, tzinfo=UTC)


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

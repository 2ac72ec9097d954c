"""Generated input for every parser of outside data: it is accepted or refused clearly, never a crash.

What the server sends (event pages) must become an Event or a Malformed item the archive can store;
what a user or a serve client sends (times, EventFilter JSON, page tokens, whole request bodies)
must become a value or BadInput / a 4xx — an exception anywhere else stops every later sync at the
same page, or answers 500. Hypothesis finds the inputs; no Prefect server is needed.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.config import Settings
from archiver.errors import BadInput
from archiver.prefect.events import Event, Malformed, event_to_api, parse_event, parse_timestamp, parse_when, to_utc
from archiver.prefect.filters import EventFilter, parse_filter
from archiver.storage.duckdb.reader import DuckDBReader
from archiver.storage.duckdb.writer import DuckDBWriter
from archiver.storage.reader import Page
from archiver.web.api import PageTokens, create_app

UTC = timezone.utc
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text as JSON can carry it: any code point, lone surrogates ("\ud800") included.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
moments = st.builds(lambda d, o: d.replace(tzinfo=timezone(o)), st.datetimes(), offsets)
# ISO timestamps near the edges of what datetime holds, in every zone, and text that only looks like one.
timestamps = st.one_of(
    moments.map(datetime.isoformat),
    st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z",
                     "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-23T25:00:00Z", ""]),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    any_text,
)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text, timestamps)
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=10,
)
GOOD = {
    "occurred": "2026-11-23T17:23:56.945423Z", "event": "prefect.flow-run.Completed",
    "resource": {"prefect.resource.id": "prefect.flow-run.abc"},
    "related": [{"prefect.resource.id": "prefect.flow.1", "prefect.resource.role": "flow"}],
    "payload": {}, "id": "0192f0c4-2f6b-7a51-9e4b-3c1f2d0e8a77", "follows": None, "received": "2026-11-23T17:23:57Z",
}
resources = st.fixed_dictionaries({"prefect.resource.id": st.one_of(any_text, json_values)},
                                  optional={"prefect.resource.role": any_text, "prefect.resource.name": json_values})
# Items shaped like events, each field valid, odd or missing.
event_items = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.uuids().map(str), json_values),
    "occurred": timestamps, "received": st.one_of(st.none(), timestamps),
    "event": st.one_of(st.just("prefect.flow-run.Completed"), any_text, json_values),
    "resource": st.one_of(resources, json_values), "related": st.one_of(st.lists(resources, max_size=3), json_values),
    "payload": st.one_of(st.dictionaries(any_text, json_values, max_size=3), json_values),
    "follows": st.one_of(st.none(), st.uuids().map(str), json_values),
}).map(lambda changes: {**GOOD, **changes})


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> DuckDBWriter:
    return DuckDBWriter(tmp_path_factory.mktemp("fuzz") / "archive.duckdb")


@FAST
@given(st.one_of(json_values, event_items))
def test_any_item_of_a_page_is_an_event_or_malformed_and_storable_as_text(raw):
    item = parse_event(raw)
    assert isinstance(item, (Event, Malformed))
    if isinstance(item, Malformed):
        item.raw.encode("utf-8")  # the quarantine stores it as text
        assert item.reason and len(item.raw_hash) == 64
        return
    assert item.occurred.tzinfo is UTC and (item.received is None or item.received.tzinfo is UTC)
    # What serve answers for it is strict JSON (no NaN) in UTF-8.
    api = event_to_api(item.id, item.occurred, item.event, item.resource, item.related, item.payload,
                       item.received, item.follows)
    json.dumps(api, allow_nan=False, ensure_ascii=False).encode("utf-8")


def with_fresh_id(raw: dict) -> dict:
    try:
        uuid.UUID(str(raw.get("id")))
    except ValueError:
        return raw
    return {**raw, "id": str(uuid.uuid4())}


@SLOW
@given(st.lists(event_items, min_size=1, max_size=5))
def test_any_page_of_event_shaped_items_is_written_whole(archive, raws):
    # Fresh ids, so every Event is new and really inserted: nothing the server sends may fail the write.
    items = [parse_event(with_fresh_id(raw)) for raw in raws]
    events = [i for i in items if isinstance(i, Event)]
    malformed = [i for i in items if isinstance(i, Malformed)]
    counts = archive.write_batch(events, malformed)
    assert counts.inserted == len(events)
    # Every item is accounted for once: new, a repeat (a malformed item quarantined by an earlier
    # example counts as one), or newly quarantined — the summary's "fetched = new + already + quarantined".
    assert counts.inserted + counts.duplicates + counts.quarantined == len(items)


@FAST
@given(st.one_of(timestamps, json_values))
def test_timestamps_parse_to_utc_or_raise_value_error(value):
    try:
        parsed = parse_timestamp(value)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


@FAST
@given(moments)
def test_to_utc_converts_every_aware_datetime_or_says_it_overflows(moment):
    try:
        converted = to_utc(moment)
    except ValueError as exc:
        assert "outside the years 1 to 9999" in str(exc)
        return
    assert converted == moment and converted.tzinfo is UTC


@FAST
@given(st.one_of(timestamps, st.from_regex(r"\A\s*\d{1,30}(\.\d{1,5})?\s*[smhdw]\s*(ago)?\s*\Z"), any_text))
def test_when_is_a_time_or_bad_input(value):
    try:
        assert parse_when(value, name="--since").tzinfo is not None
    except BadInput as exc:
        assert "--since" in str(exc)


keys = st.sampled_from(["id", "id_prefix", "labels", "role", "resources_in_roles", "prefix", "name", "exclude_prefix",
                        "exclude_name", "since", "until", "distinct"])
values = st.one_of(json_values, st.lists(any_text, max_size=3), st.dictionaries(any_text, st.lists(any_text, max_size=3)))
parts = st.dictionaries(st.one_of(keys, any_text), values, max_size=3)
filters = st.one_of(json_values, st.dictionaries(
    st.sampled_from(["occurred", "event", "resource", "related", "any_resource", "id", "order", "text"]),
    st.one_of(parts, st.lists(parts, max_size=3), timestamps, st.sampled_from(["ASC", "DESC", "asc"])), max_size=4,
))


@pytest.fixture(scope="module")
def reader(archive):
    archive.write_batch([e for e in (parse_event(GOOD),) if isinstance(e, Event)])
    with DuckDBReader(archive.path, timedelta(seconds=15)).session() as session:  # one opening for every example
        yield session


@SLOW
@given(filters)
def test_any_filter_json_is_a_filter_that_compiles_or_bad_input(reader, value):
    try:
        f = parse_filter(value)
    except BadInput as exc:
        assert str(exc)
        return
    assert parse_filter(f.to_api(), now=f.until) == f  # what a page token carries means the same
    page = reader.page(f, 5)
    assert page.total >= len(page.events)


def token_for(tokens: PageTokens) -> str:
    f = EventFilter(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), names=("a",))
    page = Page([], 7, (datetime(2026, 1, 5, tzinfo=UTC), uuid.UUID(int=5)))
    token = tokens.encode(f, 10, page)
    assert token is not None
    return token


@FAST
@given(st.one_of(any_text, st.text(st.sampled_from("ABCDEFabcdef0123456789-_.="), max_size=300)))
def test_any_page_token_is_decoded_or_refused(text):
    with pytest.raises(BadInput):
        PageTokens("", 1000).decode(text)


@FAST
@given(st.data())
def test_a_changed_page_token_is_refused_or_means_the_same(data):
    tokens = PageTokens("shared-secret", 1000)
    token = token_for(tokens)
    position = data.draw(st.integers(0, len(token) - 1))
    changed = token[:position] + data.draw(st.sampled_from("AZaz09-_.")) + token[position + 1:]
    try:
        decoded = tokens.decode(changed)
    except BadInput:
        return
    # Only a change in base64's unused padding bits decodes to the same signed bytes.
    assert decoded == tokens.decode(token)


@pytest.fixture(scope="module")
def http(reader, archive):
    from fastapi.testclient import TestClient

    with TestClient(create_app(Settings(db_path=archive.path), token="")) as client:
        yield client


@SLOW
@given(st.one_of(json_values, st.fixed_dictionaries({}, optional={"filter": filters, "limit": json_values})))
def test_serve_answers_any_body_with_a_page_or_a_422(http, body):
    # Sent as ASCII JSON (\u escapes), as a client would: lone surrogates and NaN reach the server.
    response = http.post("/api/events/filter", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert set(response.json()) == {"events", "total", "next_page"}
    else:
        assert response.json()["detail"]

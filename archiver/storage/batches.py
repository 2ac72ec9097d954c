"""What a batch of events becomes before any database sees it: deduplicated, its resources listed.

Pure functions both writers share (the DuckDB and PostgreSQL backends), so the two count and
index a batch the same way.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, timezone
from typing import Any

from archiver.errors import BadInput
from archiver.prefect.events import Event, compact_json, parse_event_id
from archiver.storage.logs import Artifact, Log


def uuid_text(value: str | None) -> str | None:
    """A quarantined item's event id as the archive spells it, or None if it is no UUID."""
    try:
        return str(parse_event_id(value)) if value else None
    except BadInput:
        return None


def dedupe(events: Sequence[Event]) -> tuple[list[Event], int, list[Event]]:
    """First occurrence of each id wins; return (unique, repeats, repeats with other content)."""
    first: dict[uuid.UUID, Event] = {}
    repeats, conflicting = 0, []
    for event in events:
        seen = first.get(event.id)
        if seen is None:
            first[event.id] = event
            continue
        repeats += 1
        if seen.content_hash != event.content_hash:
            conflicting.append(event)
    return list(first.values()), repeats, conflicting


def resource_rows(events: Sequence[Event]) -> tuple[list[int], list[str], list[str]]:
    """event_resources' rows of these events as (the event's position in `events`, resource id,
    role): each event's own resource with role '' and every related resource that has an id
    (Prefect's event_resources split)."""
    positions: list[int] = []
    resource_ids: list[str] = []
    roles: list[str] = []
    for position, e in enumerate(events):
        positions.append(position)
        resource_ids.append(e.resource_id)
        roles.append("")
        for r in e.related:
            resource_id = r.get("prefect.resource.id")
            if resource_id is not None:
                positions.append(position)
                resource_ids.append(str(resource_id))
                roles.append(str(r.get("prefect.resource.role", "")))
    return positions, resource_ids, roles


def resource_columns(events: Sequence[Event]) -> tuple[list[Any], ...]:
    """event_resources' columns (event id, occurred, resource id, role), a row as resource_rows lists it."""
    positions, resource_ids, roles = resource_rows(events)
    event_ids = [str(e.id) for e in events]
    return [event_ids[p] for p in positions], [events[p].occurred for p in positions], resource_ids, roles


def resource_spans(occurred: Sequence[Any], resource_ids: Sequence[str]) -> tuple[list[str], list[Any], list[Any]]:
    """resource_spans' columns for these (newly inserted) event_resources rows: each resource once,
    with the first and last time it occurred among them, in id order (two writers widening the
    same spans lock them in the same order)."""
    spans: dict[str, list[Any]] = {}
    for when, resource_id in zip(occurred, resource_ids, strict=True):
        span = spans.get(resource_id)
        if span is None:
            spans[resource_id] = [when, when]
        elif when < span[0]:
            span[0] = when
        elif when > span[1]:
            span[1] = when
    ids = sorted(spans)
    return ids, [spans[i][0] for i in ids], [spans[i][1] for i in ids]


def event_days(events: Sequence[Event]) -> tuple[list[date], list[int]]:
    """How many of these (newly inserted) events occurred on each UTC day, as event_days' columns,
    days in order (two writers adding to the same days lock them in the same order)."""
    counts = Counter(e.occurred.astimezone(timezone.utc).date() for e in events)
    days = sorted(counts)
    return days, [counts[d] for d in days]


Text = Callable[[Any], "str | None"]


def log_columns(logs: Sequence[Log], text: Text) -> list[list[Any]]:
    """A page of logs as the logs table's columns in order, archived_at aside; `text` makes each
    id and text value what the backend's text columns hold."""
    return [[str(g.id) for g in logs], [text(g.flow_run_id) for g in logs], [text(g.task_run_id) for g in logs],
            [g.level for g in logs], [text(g.name) for g in logs], [g.timestamp for g in logs],
            [text(g.message) for g in logs], [compact_json(g.raw) for g in logs]]


def artifact_columns(artifacts: Sequence[Artifact], text: Text) -> list[list[Any]]:
    """Artifacts as the artifacts table's columns in order, archived_at aside (`text` as above)."""
    return [[str(a.id) for a in artifacts], [text(a.key) for a in artifacts], [text(a.type) for a in artifacts],
            [text(a.description) for a in artifacts], [compact_json(a.data) for a in artifacts],
            [text(a.flow_run_id) for a in artifacts], [text(a.task_run_id) for a in artifacts],
            [a.created for a in artifacts], [a.updated for a in artifacts], [compact_json(a.raw) for a in artifacts]]

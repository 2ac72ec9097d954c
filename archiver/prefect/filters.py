"""Prefect's EventFilter: its JSON parsed into plain data that every archive backend answers.

The subset the archive answers is Prefect's (server/events/filters.py) with the same meaning:
`occurred {since, until}` (both inclusive), `event {prefix, exclude_prefix, name, exclude_name}`,
`resource {id, id_prefix, labels}`, `related {id, role, resources_in_roles, labels}` (one filter or
a list, each matched by one related resource, never the primary one unless a role is given),
`any_resource {id, id_prefix, labels}` (primary or related), `id {id}` and `order` (ASC | DESC).
Label values match like Prefect's: `*` and `?` are wildcards, a leading `!` negates.

Unlike Prefect, ties on `occurred` are broken by id, so a page boundary is a point in the order:
the next page starts after the last (occurred, id) returned — keyset paging, which neither skips
nor repeats events when a sync writes while a client pages (Prefect's offset paging does both).
Each backend turns a filter into its own SQL (storage/duckdb/search.py). Plain data only: no
database, no web stack, importable by flows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.errors import BadInput
from archiver.prefect.events import TimestampOutOfRange, format_timestamp, parse_timestamp

UTC = timezone.utc
ORDERS = ("ASC", "DESC")
# Sizes Prefect caps on events (server/events/schemas/events.py, settings server.events), so a
# filter past them cannot mean more, only cost more: `related` / `any_resource` filters per request
# (maximum_related_resources, default 100) and labels per resource filter (maximum_labels_per_resource).
MAX_RESOURCE_FILTERS = 100
MAX_LABELS = 500

Labels = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class ResourceMatch:
    """Prefect's EventResourceFilter / EventAnyResourceFilter: all given parts must hold."""

    ids: tuple[str, ...] = ()
    id_prefixes: tuple[str, ...] = ()
    labels: Labels | None = None


@dataclass(frozen=True)
class RelatedMatch:
    """Prefect's EventRelatedFilter: one related resource must satisfy every given part."""

    ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    resources_in_roles: tuple[tuple[str, str], ...] = ()
    labels: Labels | None = None


@dataclass(frozen=True)
class EventFilter:
    """Which events, in which order. Times are inclusive, like Prefect's `occurred` filter."""

    since: datetime
    until: datetime
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    exclude_prefixes: tuple[str, ...] = ()
    resource: ResourceMatch | None = None
    related: tuple[RelatedMatch, ...] = ()
    any_resource: tuple[ResourceMatch, ...] = ()
    ids: tuple[uuid.UUID, ...] = ()
    order: str = "DESC"

    def to_api(self) -> dict[str, Any]:
        """The filter as Prefect's JSON (what a page token carries)."""
        body: dict[str, Any] = {
            "occurred": {"since": format_timestamp(self.since), "until": format_timestamp(self.until)},
            "order": self.order,
        }
        names = {"prefix": self.prefixes, "exclude_prefix": self.exclude_prefixes,
                 "name": self.names, "exclude_name": self.exclude_names}
        if any(names.values()):
            body["event"] = {k: list(v) for k, v in names.items() if v}
        if self.resource:
            body["resource"] = _resource_to_api(self.resource)
        if self.related:
            body["related"] = [
                {k: v for k, v in {
                    "id": list(r.ids) or None, "role": list(r.roles) or None,
                    "resources_in_roles": [list(p) for p in r.resources_in_roles] or None,
                    "labels": _labels_to_api(r.labels),
                }.items() if v is not None}
                for r in self.related
            ]
        if self.any_resource:
            body["any_resource"] = [_resource_to_api(r) for r in self.any_resource]
        if self.ids:
            body["id"] = {"id": [str(i) for i in self.ids]}
        return body


def _labels_to_api(labels: Labels | None) -> dict[str, list[str]] | None:
    return None if labels is None else {k: list(v) for k, v in labels.items()}


def _resource_to_api(match: ResourceMatch) -> dict[str, Any]:
    return {k: v for k, v in {
        "id": list(match.ids) or None, "id_prefix": list(match.id_prefixes) or None,
        "labels": _labels_to_api(match.labels),
    }.items() if v is not None}


# -- parsing Prefect's JSON ------------------------------------------------------------------------


def default_since(now: datetime) -> datetime:
    """Prefect 3.8.8's default `occurred.since`: the start of today (UTC) minus 180 days."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=180)


def _object(value: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be an object")
    extra = sorted(set(value) - set(allowed))
    if extra:
        # Prefect's server forbids unknown keys in event filters too (HTTP 422).
        raise BadInput(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(allowed)})")
    return value


def _text(value: str, where: str) -> str:
    # JSON may carry lone surrogates ("\\ud800") that no database string can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{where} holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where} must be a list of strings")
    return tuple(_text(v, where) for v in value)


def _labels(value: Any, where: str) -> Labels | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be an object of label names to a value or a list of values")
    if len(value) > MAX_LABELS:
        raise BadInput(f"{where} has {len(value)} labels; at most {MAX_LABELS} (Prefect's "
                       "PREFECT_SERVER_EVENTS_MAXIMUM_LABELS_PER_RESOURCE: no resource has more)")
    labels: dict[str, tuple[str, ...]] = {}
    for key, values in value.items():
        where_key = f"{where}.{_text(key, where)}"
        labels[key] = (_text(values, where_key),) if isinstance(values, str) else _strings(values, where_key)
    return labels


def _resource(value: Any, where: str) -> ResourceMatch:
    body = _object(value, where, ("id", "id_prefix", "labels", "distinct"))
    if body.get("distinct"):
        raise BadInput(f"{where}.distinct is not supported by the archive; leave it out or set it to false")
    return ResourceMatch(_strings(body.get("id"), f"{where}.id"), _strings(body.get("id_prefix"), f"{where}.id_prefix"),
                         _labels(body.get("labels"), f"{where}.labels"))


def _related(value: Any, where: str) -> RelatedMatch:
    body = _object(value, where, ("id", "role", "resources_in_roles", "labels"))
    pairs = body.get("resources_in_roles")
    if pairs is not None and not (
        isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs)
    ):
        raise BadInput(f"{where}.resources_in_roles must be a list of [resource id, role] pairs")
    return RelatedMatch(_strings(body.get("id"), f"{where}.id"), _strings(body.get("role"), f"{where}.role"),
                        tuple((_text(p[0], where), _text(p[1], where)) for p in pairs or ()),
                        _labels(body.get("labels"), f"{where}.labels"))


def _many(value: Any, where: str) -> list[Any]:
    many = value if isinstance(value, list) else [] if value is None else [value]
    if len(many) > MAX_RESOURCE_FILTERS:
        raise BadInput(f"{where} has {len(many)} filters; at most {MAX_RESOURCE_FILTERS} (Prefect's "
                       "PREFECT_SERVER_EVENTS_MAXIMUM_RELATED_RESOURCES: no event has more related resources)")
    return many


def _when(value: Any, where: str) -> datetime:
    try:
        return parse_timestamp(value)
    except TimestampOutOfRange as exc:
        raise BadInput(f"{where}: {exc}") from None
    except ValueError:
        raise BadInput(f"{where} must be an ISO 8601 timestamp, not {value!r}") from None


def parse_filter(value: Any, now: datetime | None = None) -> EventFilter:
    """Prefect's EventFilter JSON (the "filter" of POST /events/filter) as an EventFilter.

    Missing `occurred` bounds get Prefect's defaults, resolved now (so a page token freezes them).
    Raises BadInput for what Prefect would refuse (unknown keys, wrong types) and for the parts
    the archive cannot answer (`text`, `resource.distinct`).
    """
    now = now or datetime.now(UTC)
    body = _object(value, "filter", ("occurred", "event", "resource", "related", "any_resource", "id", "text", "order"))
    if body.get("text") is not None:
        raise BadInput("filter.text is not supported by the archive; filter by event, resource or related instead")
    occurred = _object(body.get("occurred"), "filter.occurred", ("since", "until"))
    since = _when(occurred["since"], "filter.occurred.since") if occurred.get("since") is not None else default_since(now)
    until = _when(occurred["until"], "filter.occurred.until") if occurred.get("until") is not None else now
    names = _object(body.get("event"), "filter.event", ("prefix", "exclude_prefix", "name", "exclude_name"))
    ids = _object(body.get("id"), "filter.id", ("id",))
    try:
        event_ids = tuple(uuid.UUID(str(i)) for i in _strings(ids.get("id"), "filter.id.id"))
    except ValueError:
        raise BadInput("filter.id.id must be a list of UUIDs") from None
    order = body.get("order") or "DESC"
    if order not in ORDERS:
        raise BadInput(f"filter.order must be ASC or DESC, not {order!r}")
    return EventFilter(
        since=since, until=until,
        names=_strings(names.get("name"), "filter.event.name"),
        prefixes=_strings(names.get("prefix"), "filter.event.prefix"),
        exclude_names=_strings(names.get("exclude_name"), "filter.event.exclude_name"),
        exclude_prefixes=_strings(names.get("exclude_prefix"), "filter.event.exclude_prefix"),
        resource=_resource(body["resource"], "filter.resource") if body.get("resource") is not None else None,
        related=tuple(_related(r, "filter.related") for r in _many(body.get("related"), "filter.related")),
        any_resource=tuple(_resource(r, "filter.any_resource")
                           for r in _many(body.get("any_resource"), "filter.any_resource")),
        ids=event_ids, order=order,
    )

"""Searches over the archive: events by resource, role, name and time, and a flow run's whole story.

These read only the archive (the live API answers none of this beyond its retention), through
Prefect's EventFilter, which every archive backend answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from archiver.config import Settings, load_settings
from archiver.errors import BadInput
from archiver.prefect.events import EPOCH, parse_prefect_id, to_utc
from archiver.prefect.filters import EventFilter, RelatedMatch, ResourceMatch
from archiver.prefect.runs import FLOW_RUN as FLOW_RUN_KIND
from archiver.storage import open_archive

# Bounds for "no bound": DuckDB's TIMESTAMPTZ holds these, and no Prefect event falls outside them.
EARLIEST = EPOCH
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
FLOW_RUN = FLOW_RUN_KIND.resource_prefix


def _tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def search_events(
    *,
    resource: str | Sequence[str] | None = None,
    role: str | Sequence[str] | None = None,
    prefix: str | Sequence[str] | None = None,
    event: str | Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    oldest_first: bool = False,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Archived events, newest first, in the API's JSON shape.

    resource: a resource id (e.g. "prefect.flow-run.<uuid>", "prefect.deployment.<uuid>",
    "prefect.work-pool.<uuid>"); an event matches when it is the event's own resource or any
    related one. role: only where the resource plays this role ("flow-run", "deployment",
    "work-pool", "tag"…; "" for the event's own resource). prefix / event: event names starting
    with / equal to one of these. since / until: `occurred` bounds, both inclusive. Reads only the
    archive (the live API answers none of this beyond its retention).
    """
    if limit < 0:
        raise BadInput(f"limit must not be negative, not {limit}")
    roles = _tuple(role)
    resources = _tuple(resource)
    if roles and not resources:
        raise BadInput("role narrows a resource: give the resource id too")
    related: tuple[RelatedMatch, ...] = ()
    any_resource: tuple[ResourceMatch, ...] = ()
    if resources and roles:
        related = (RelatedMatch(ids=resources, roles=roles),)
    elif resources:
        any_resource = (ResourceMatch(ids=resources),)
    search = EventFilter(
        since=to_utc(since) if since else EARLIEST,
        until=to_utc(until) if until else LATEST,
        prefixes=_tuple(prefix),
        names=_tuple(event),
        related=related,
        any_resource=any_resource,
        order="ASC" if oldest_first else "DESC",
    )
    return query_archive(search, limit, settings=settings)


def query_archive(search: EventFilter, limit: int, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Up to `limit` archived events matching a Prefect-style EventFilter, in its order."""
    settings = settings or load_settings()
    return open_archive(settings.archive_url).reader(settings.read_timeout).page(search, limit, total=0).events


def flow_run_resource(flow_run_id: str | uuid.UUID) -> str:
    """"prefect.flow-run.<uuid>" from a flow run id, with or without that prefix; BadInput if no UUID."""
    return FLOW_RUN + str(parse_prefect_id(str(flow_run_id).strip().removeprefix(FLOW_RUN), "flow run"))


def events_of_flow_run(
    flow_run_id: str | uuid.UUID,
    *,
    prefix: str | Sequence[str] | None = None,
    limit: int = 1000,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Every archived event that names this flow run (its state changes, its task runs' events,
    logs-as-events…), oldest first: the run's story as the server told it."""
    return search_events(resource=flow_run_resource(flow_run_id), prefix=prefix, limit=limit,
                         oldest_first=True, settings=settings)

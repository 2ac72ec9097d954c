"""Reading the archive: one event by id (falling back to the live API), a flow run's triggering event,
searches, a run's states, status.

Importable inside a flow without the CLI: it opens the archive read-only, briefly, retrying while
a sync commits, and imports neither SQLAlchemy nor the ingest machinery.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from archiver.config import Settings, load_settings
from archiver.errors import ApiError, ArchiveError, BadInput, EventNotFound, NoTriggeringEvent, RunNotFound
from archiver.prefect.client import PrefectClient, RetryPolicy, redact_url, tls_verify
from archiver.prefect.events import (
    EVENT_COLUMNS,
    event_to_api,
    format_timestamp,
    parse_event_id,
    parse_prefect_id,
    parse_timestamp,
    to_utc,
    uuid7_time,
)
from archiver.prefect.filters import EventFilter, RelatedMatch, ResourceMatch, read_page
from archiver.prefect.results import ResultReference, ResultUnavailable, StorageBlock, read_result
from archiver.prefect.spans import MAX_QUERY_SPAN, walk_back
from archiver.storage.duckdb.connect import open_reader, scalar
from archiver.storage.duckdb.lock import ORPHANED_RUN_ERROR, lock_is_held

# A UUIDv7 records when the event object was created; `occurred` is at or before it in practice.
# The window around it stays within Prefect Cloud's 14-day cap on one query.
ID_TIME_AFTER = timedelta(minutes=10)
ID_TIME_BEFORE = MAX_QUERY_SPAN - ID_TIME_AFTER


def read_archived_event(
    path: Path, event_id: str | uuid.UUID, timeout: timedelta = timedelta(seconds=15)
) -> dict[str, Any] | None:
    """The archived event with this id in the API's JSON shape, or None."""
    parsed = parse_event_id(event_id)
    conn = open_reader(path, timeout)
    try:
        row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1", [str(parsed)]).fetchone()
    finally:
        conn.close()
    return event_to_api(*row) if row else None


def lookup_windows(event_id: str, now: datetime, horizon: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """Occurred windows to ask the API, most likely first, each within Cloud's 14-day cap."""
    moment = uuid7_time(parse_event_id(event_id))
    if moment is not None:
        yield moment - ID_TIME_BEFORE, moment + ID_TIME_AFTER
    # Then widen from now back to the retention horizon.
    upper = now + ID_TIME_AFTER
    for back in (timedelta(hours=1), timedelta(days=1), timedelta(days=7)):
        yield now - back, upper
        upper = now - back
    yield from walk_back(upper, now - horizon)


def read_live_event(
    client: PrefectClient, event_id: str, horizon: timedelta, now: datetime | None = None, *,
    storing: timedelta = timedelta(0), sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """Ask the API for one event, always with an explicit occurred window (its default misses).

    The server stores what it receives a few seconds later, in batches, and an automation starts
    its flow run from the event stream before that: the flow can ask for its event before the
    server has stored it. So an id whose UUIDv7 time is less than `storing` old (ingest.settle)
    is asked for again, once a second, until that much time has passed since it was made.
    """
    now = now or datetime.now(timezone.utc)
    wanted = str(parse_event_id(event_id))
    for since, until in lookup_windows(wanted, now, horizon):
        event = _read_by_id(client, wanted, since, until)
        if event is not None:
            return event
    moment = uuid7_time(uuid.UUID(wanted))
    while moment is not None and datetime.now(timezone.utc) < moment + storing:
        sleep(1.0)
        event = _read_by_id(client, wanted, moment - ID_TIME_BEFORE, moment + ID_TIME_AFTER)
        if event is not None:
            return event
    return None


def _read_by_id(client: PrefectClient, wanted: str, since: datetime, until: datetime) -> dict[str, Any] | None:
    page = client.read_events(
        {
            "id": {"id": [wanted]},
            "occurred": {"since": format_timestamp(since), "until": format_timestamp(until)},
            "order": "DESC",
        },
        limit=1,
    )
    for event in page["events"]:
        if isinstance(event, dict) and event.get("id") == wanted:
            return event
    return None


def client_for(
    settings: Settings, retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
    interactive: bool = False,
) -> PrefectClient:
    """A client configured from settings (the same environment a flow runs with).

    `sleep` waits between retries; a stoppable process passes one that ends the wait on a stop.
    `interactive`: a command someone waits for at a terminal, which fails at once on a refused
    connection instead of retrying it for minutes.
    """
    return PrefectClient(
        settings.require_api(),
        sleep=sleep,
        api_key=settings.api_key,
        auth_string=settings.auth_string,
        timeout=settings.timeout.total_seconds(),
        retry=retry or RetryPolicy(settings.max_retries, settings.max_retry_time, retry_refused=not interactive),
        custom_headers=settings.custom_headers,
        verify=tls_verify(settings.ssl_cert_file, settings.tls_insecure_skip_verify),
        csrf_support=settings.csrf_support,
        max_requests_per_minute=settings.max_requests_per_minute,
    )


def find_event(
    event_id: str | uuid.UUID, *, settings: Settings | None = None, archive_only: bool = False,
    interactive: bool = False,
) -> tuple[dict[str, Any], str]:
    """The event and where it was found: "archive" or "api" (`interactive`: see client_for)."""
    settings = settings or load_settings()
    event_id = str(parse_event_id(event_id))
    looked = []
    if settings.db_path.exists():
        try:
            event = read_archived_event(settings.db_path, event_id, settings.read_timeout)
        except ArchiveError as exc:
            if archive_only or not settings.api_url:
                raise
            # A busy or unreadable archive should not stop a flow from getting its event.
            looked.append(f"the archive at {settings.db_path} (unreadable: {exc})")
        else:
            if event is not None:
                return event, "archive"
            looked.append(f"the archive at {settings.db_path}")
    else:
        looked.append(f"the archive at {settings.db_path} (which does not exist)")
    if not archive_only and settings.api_url:
        try:
            with client_for(settings, interactive=interactive) as client:
                event = read_live_event(client, event_id, settings.lookup_horizon, storing=settings.settle)
        except ApiError as exc:
            # Same class (callers catch ApiUnavailable), but a message that says the archive was asked first.
            raise type(exc)(
                f"event {event_id} is not in {_archive_extent(settings)}, and the Prefect API at "
                f"{redact_url(settings.api_url)} could not answer: {exc}"
            ) from exc
        if event is not None:
            return event, "api"
        looked.append(
            f"the Prefect API at {redact_url(settings.api_url)} (occurred within the last "
            f"{settings.lookup_horizon.days} days, and around the time in the id if it is a UUIDv7, "
            f"asked again until {settings.settle.total_seconds():g}s after that time: ingest.settle)"
        )
    elif not archive_only:
        looked.append("not the live API: PREFECT_API_URL is not set")
    raise EventNotFound(f"no event with id {event_id} in " + "; ".join(looked))


def archived_until(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """The archive's high-water mark (everything before it is archived), or None before a first sync."""
    mark = scalar(conn, "SELECT high_water_mark FROM archive_state WHERE id = 1")
    return to_utc(mark) if mark else None


def _archive_extent(settings: Settings) -> str:
    """"the archive at P (archived up to MARK)", as far as it can be read, for an error message."""
    where = f"the archive at {settings.db_path}"
    if not settings.db_path.exists():
        return where + " (which does not exist)"
    try:
        conn = open_reader(settings.db_path, settings.read_timeout)
    except ArchiveError as exc:
        return f"{where} (unreadable: {exc})"
    try:
        mark = archived_until(conn)
    finally:
        conn.close()
    return f"{where} (archived up to {format_timestamp(mark) if mark else 'nothing yet: no sync has run'})"


def get_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """One event by id, from the archive or else the live API, in the API's JSON shape.

    For code inside a flow that was handed `{{ event.id }}` by an automation. Raises
    EventNotFound (a LookupError) naming where it looked, BadInput for an id that is no UUID.
    """
    return find_event(event_id, settings=settings)[0]


async def aget_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """get_event for async flows; the blocking reads run in a worker thread."""
    return await asyncio.to_thread(get_event, event_id, settings=settings)


# -- the event that made an automation start this flow run --------------------------------------

# After a run-deployment action succeeds, Prefect emits `prefect.automation.action.triggered` and
# `.executed`, both related to the flow run it created (role "flow-run"); newer servers (3.8.8,
# 3.9.1) also relate the event that fired the trigger ("prefect.event.<id>", role
# "triggering-event"; server/events/actions.py, Action.succeed). Older ones (3.4.18) name that
# event only on the automation's own `prefect.automation.triggered`, which occurred at the same
# instant as the action's `.triggered` (both are the firing's `triggered` time;
# server/events/schemas/automations.py). The flow run's `created_by` names only the automation.
ACTION_TRIGGERED = "prefect.automation.action.triggered"
ACTION_EVENTS = ("prefect.automation.action.executed", ACTION_TRIGGERED)
AUTOMATION_TRIGGERED = "prefect.automation.triggered"
CREATED_RUN_ROLE = "flow-run"
TRIGGERING_EVENT_ROLE = "triggering-event"
EVENT_RESOURCE = "prefect.event."
# `.triggered` occurs when the trigger fired (before the run exists; later if the action queue is
# backed up), `.executed` just after the run was created: one window around the run's `created`.
ACTION_BEFORE_RUN = timedelta(days=1)
ACTION_AFTER_RUN = timedelta(hours=1)
# The server emits the action events only after the flow run exists and stores them seconds later,
# so a run that starts at once can look before they are there: ask again this often.
ACTION_POLL = timedelta(seconds=1)

# find(names, resource, role, since, until): events with one of these names where `resource` plays
# `role` ("" for the event's own resource), in the archive or the live API.
EventFinder = Callable[[Sequence[str], str, str, datetime, datetime], list[dict[str, Any]]]


@dataclass(frozen=True)
class TriggerLink:
    """What the events say about the automation that created a flow run."""

    action: dict[str, Any] | None  # an action event naming the run; None: none found (yet)
    event_id: str | None  # the triggering event's id, when recorded
    settled: bool  # True when no later look can add the event id (found, or a proactive trigger)


def current_flow_run_id() -> str:
    """The id of the flow run this code runs in, from Prefect's runtime; BadInput outside one."""
    outside = BadInput("get_triggering_event() is not running inside a flow run: pass flow_run_id=")
    try:
        from prefect.runtime import flow_run  # only inside a flow: the archiver does not need Prefect
    except ImportError:
        raise outside from None
    if not flow_run.id:
        raise outside
    return str(flow_run.id)


def triggering_event_id(event: dict[str, Any]) -> str | None:
    """The id of the event an automation's event names as its trigger, or None."""
    for related in event.get("related") or ():
        if related.get("prefect.resource.role") == TRIGGERING_EVENT_ROLE:
            return str(related["prefect.resource.id"]).removeprefix(EVENT_RESOURCE)
    return None


def trigger_link(find: EventFinder, run: str, since: datetime, until: datetime) -> TriggerLink:
    """Follow the automation's events from flow run resource `run` to the event that fired it."""
    actions = find(ACTION_EVENTS, run, CREATED_RUN_ROLE, since, until)
    if not actions:
        return TriggerLink(None, None, settled=False)
    for action in actions:
        if event_id := triggering_event_id(action):
            return TriggerLink(action, event_id, settled=True)
    triggered = next((a for a in actions if a["event"] == ACTION_TRIGGERED), None)
    if triggered is None:
        return TriggerLink(actions[0], None, settled=False)
    at = parse_timestamp(triggered["occurred"])
    fired = find((AUTOMATION_TRIGGERED,), triggered["resource"]["prefect.resource.id"], "", at, at)
    event_id = next((i for i in map(triggering_event_id, fired) if i), None)
    # A firing that names no event is a proactive trigger's (settled); no firing: not stored or synced yet.
    return TriggerLink(triggered, event_id, settled=bool(fired))


def _find_archived(settings: Settings) -> EventFinder:
    def find(names: Sequence[str], resource: str, role: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return search_events(resource=resource, role=role, event=names, since=since, until=until, limit=10,
                             settings=settings)
    return find


def _find_live(client: PrefectClient) -> EventFinder:
    def find(names: Sequence[str], resource: str, role: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        where = {"resource": {"id": [resource]}} if role == "" else {"related": {"id": [resource], "role": [role]}}
        occurred = {"since": format_timestamp(since), "until": format_timestamp(until)}
        page = client.read_events({"event": {"name": list(names)}, **where, "occurred": occurred, "order": "DESC"}, limit=10)
        return list(page["events"])
    return find


def _archived_flow_run(run_id: str, settings: Settings) -> dict[str, Any] | None:
    """The flow run as last archived (its `object`), or None."""
    conn = open_reader(settings.db_path, settings.read_timeout)
    try:
        value = scalar(conn, "SELECT object FROM flow_runs WHERE id = $1", [run_id])
    except duckdb.CatalogException:  # an archive from before run metadata
        return None
    finally:
        conn.close()
    return json.loads(value) if value else None


def _not_by_automation(run_id: str, flow_run: dict[str, Any]) -> NoTriggeringEvent | None:
    """The error to raise when Prefect says an automation did not create this run, else None."""
    created_by = flow_run.get("created_by") or {}
    if created_by.get("type") == "AUTOMATION":
        return None
    by = (f"{created_by.get('type')} {created_by.get('display_value') or created_by.get('id')}" if created_by
          else "no automation (Prefect records no creator: a schedule, the UI, `prefect deployment run` or an API call)")
    return NoTriggeringEvent(
        f"flow run {run_id} was not started by an automation: it was created by {by}. "
        "Pass the event id to the flow as a parameter instead"
    )


def find_trigger_link(
    flow_run_id: str | uuid.UUID, *, settings: Settings, wait: timedelta = timedelta(seconds=30)
) -> TriggerLink:
    """The automation events behind this flow run: the archive first, then the live API.

    The API is asked again for up to `wait` while the server is still storing the action's events.
    NoTriggeringEvent when Prefect says no automation created the run, or nothing names it anywhere.
    """
    run = flow_run_resource(flow_run_id)
    run_id = run.removeprefix(FLOW_RUN)
    link = TriggerLink(None, None, settled=False)
    if settings.db_path.exists():
        try:
            link = trigger_link(_find_archived(settings), run, EARLIEST, LATEST)
        except ArchiveError:
            if not settings.api_url:
                raise
            pass  # a busy or unreadable archive should not stop the flow: ask the API
        if link.settled:
            return link
    if not settings.api_url:
        if link.action is not None:
            return link
        archived = _archived_flow_run(run_id, settings) if settings.db_path.exists() else None
        if archived is not None and (error := _not_by_automation(run_id, archived)):
            raise error
        raise NoTriggeringEvent(
            f"no automation event names flow run {run_id} in the archive at {settings.db_path}, and "
            "PREFECT_API_URL is not set to ask the live API: sync the archive, or set PREFECT_API_URL"
        )
    deadline = time.monotonic() + wait.total_seconds()
    with client_for(settings) as client:
        runs = client.read_objects("flow_runs", [run_id])
        if not runs:
            raise RunNotFound(f"the Prefect API at {redact_url(settings.api_url)} has no flow run {run_id}")
        if error := _not_by_automation(run_id, runs[0]):
            raise error
        created = parse_timestamp(runs[0]["created"])
        find = _find_live(client)
        while not (link := trigger_link(find, run, created - ACTION_BEFORE_RUN, created + ACTION_AFTER_RUN)).settled:
            if time.monotonic() >= deadline:
                break
            time.sleep(ACTION_POLL.total_seconds())
    if link.action is None:
        automation = runs[0]["created_by"]
        raise NoTriggeringEvent(
            f"flow run {run_id} was created by automation {automation.get('display_value')!r} "
            f"({automation.get('id')}), but no prefect.automation.action event naming it reached "
            f"the archive or the Prefect API within {wait.total_seconds():.0f}s; try again later"
        )
    return link


def get_triggering_event(
    flow_run_id: str | uuid.UUID | None = None,
    *,
    settings: Settings | None = None,
    wait: timedelta = timedelta(seconds=30),
) -> dict[str, Any]:
    """The event that made an automation start this flow run, whole, from the archive or the API.

    For a flow started by an automation's run-deployment action: no `{{ event.id }}` parameter
    needed. Inside a flow run it finds its own id; elsewhere pass `flow_run_id`. Raises
    NoTriggeringEvent (a LookupError) for a run no automation's event started, EventNotFound when
    the event itself is gone from both, BadInput for an id that is no UUID.
    """
    settings = settings or load_settings()
    run_id = current_flow_run_id() if flow_run_id is None else flow_run_id
    link = find_trigger_link(run_id, settings=settings, wait=wait)
    if link.event_id is None:
        name = (link.action or {}).get("resource", {}).get("prefect.resource.name")
        if not link.settled:
            raise NoTriggeringEvent(
                f"flow run {run_id} was started by automation {name!r}, but the {AUTOMATION_TRIGGERED} event "
                "that names its triggering event was not found (yet): sync the archive or try again later"
            )
        raise NoTriggeringEvent(
            f"flow run {run_id} was started by automation {name!r}, but its events name no triggering "
            "event: its trigger fired without one (a proactive trigger fires when events do not happen)"
        )
    return get_event(link.event_id, settings=settings)


async def aget_triggering_event(
    flow_run_id: str | uuid.UUID | None = None,
    *,
    settings: Settings | None = None,
    wait: timedelta = timedelta(seconds=30),
) -> dict[str, Any]:
    """get_triggering_event for async flows; the blocking reads run in a worker thread."""
    # asyncio.to_thread copies the context, so Prefect's run context is there too.
    return await asyncio.to_thread(get_triggering_event, flow_run_id, settings=settings, wait=wait)


# -- searches over the archive ----------------------------------------------------------------

# Bounds for "no bound": DuckDB's TIMESTAMPTZ holds these, and no Prefect event falls outside them.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
FLOW_RUN = "prefect.flow-run."


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
    conn = open_reader(settings.db_path, settings.read_timeout)
    try:
        return read_page(conn, search, limit, total=0).events
    finally:
        conn.close()


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


def archive_status(path: Path, timeout: timedelta = timedelta(seconds=15), now: datetime | None = None) -> dict[str, Any]:
    """Events archived, the high-water mark and lag, the last sync, gaps and quarantine.

    `quarantined` counts the items still unresolved; `quarantine_resolved` those whose real event
    was archived later.
    """
    now = now or datetime.now(timezone.utc)
    conn = open_reader(path, timeout)
    try:
        events = scalar(conn, "SELECT count(*) FROM events")
        mark = archived_until(conn)
        last = conn.execute(
            "SELECT id, started, finished, outcome, error, inserted, fetched FROM syncs "
            "WHERE kind = 'sync' ORDER BY started DESC LIMIT 1"
        ).fetchone()
        last_ok = scalar(conn, "SELECT max(finished) FROM syncs WHERE kind = 'sync' AND outcome = 'ok'")
        gaps = conn.execute("SELECT since, until FROM gaps ORDER BY since").fetchall()
        try:
            quarantined, resolved = conn.execute(
                "SELECT count(*) FILTER (resolved IS NULL), count(*) FILTER (resolved IS NOT NULL) FROM quarantine"
            ).fetchone() or (0, 0)
        except duckdb.BinderException:  # an archive from before migration 0006: no item resolved yet
            quarantined, resolved = scalar(conn, "SELECT count(*) FROM quarantine"), 0
    finally:
        conn.close()
    outcome, error = (last[3], last[4]) if last else (None, None)
    if outcome == "running" and not lock_is_held(path):
        # Every writer holds the sync lock while its run is 'running': with the lock free, the
        # process is gone (the next writer marks the row so in the ledger).
        outcome, error = "interrupted", ORPHANED_RUN_ERROR

    def ts(value: datetime | None) -> str | None:
        return format_timestamp(value) if value else None

    return {
        "archive": str(path),
        "events": events,
        "high_water_mark": ts(mark),
        "lag_seconds": round((now - mark).total_seconds(), 1) if mark else None,
        "last_sync": {
            "id": str(last[0]),
            "started": ts(last[1]),
            "finished": ts(last[2]),
            "outcome": outcome,
            "error": error,
            "inserted": last[5],
            "fetched": last[6],
        } if last else None,
        "last_success": ts(last_ok),
        "gaps": [{"since": ts(s), "until": ts(u)} for s, u in gaps],
        "quarantined": quarantined,
        "quarantine_resolved": resolved,
    }


# -- run states --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunState:
    """One state a run entered, from its archived state record or, failing that, its event.

    `source` is "state" when the state record was archived (message, state_details and the
    result reference as the API returned them), "event" when only its state-change event was
    (the run's states were not read before the server dropped them): then `state_details` is
    None and `data_kind` is "unknown".
    """

    id: str
    type: str
    name: str | None
    timestamp: datetime
    message: str | None
    state_details: dict[str, Any] | None
    data_kind: str  # "none", "result_reference", "inline" or "unknown"
    result: ResultReference | None
    source: str


@dataclass(frozen=True)
class RunHistory:
    """A flow run's or task run's states, oldest first."""

    run_kind: str  # "flow_run" or "task_run"
    run_id: str
    run_name: str | None
    states: list[RunState]
    # The archive's high-water mark when read: states entered after it come with the next sync.
    archived_until: datetime | None = None

    @property
    def final(self) -> RunState | None:
        return self.states[-1] if self.states else None


_STATES_SQL = """
SELECT s.id, s.type, s.name, s.timestamp, s.message, s.state_details, s.data_kind, s.storage_key, s.storage_block_id,
       s.serializer_type, s.result_expiration, s.result_prefect_version, 'state' AS source,
       b.found, b.name, b.block_type_slug, b.basepath, s.state->'data'->'serializer'
FROM run_states s LEFT JOIN result_storage_blocks b ON b.id = s.storage_block_id
WHERE s.run_kind = $2 AND s.run_id = $1
UNION ALL
SELECT event_id, state_type, state_name, timestamp, message, NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, 'event',
       NULL, NULL, NULL, NULL, NULL
FROM {kind}_states
WHERE {kind}_id = $1 AND event_id NOT IN (SELECT id FROM run_states WHERE run_kind = $2 AND run_id = $1)
ORDER BY 4, 1
"""


def read_run_history(path: Path, run_id: str, timeout: timedelta = timedelta(seconds=15)) -> RunHistory:
    """The archived states of the flow run or task run with this id; RunNotFound if it has none."""
    wanted = str(parse_prefect_id(run_id, "run"))
    conn = open_reader(path, timeout)
    try:
        mark = archived_until(conn)
        for kind, table in (("flow_run", "flow_runs"), ("task_run", "task_runs")):
            try:
                rows = conn.execute(_STATES_SQL.format(kind=kind), [wanted, kind]).fetchall()
            except duckdb.CatalogException:
                raise ArchiveError(
                    f"archive {path} predates run states: run `prefect-archiver sync` once to upgrade it"
                ) from None
            name = scalar(conn, f"SELECT name FROM {table} WHERE id = $1", [wanted])
            if rows or name is not None:
                return RunHistory(kind, wanted, name, [_run_state(row) for row in rows], mark)
    finally:
        conn.close()
    ends = (f"which ends at its high-water mark {format_timestamp(mark)}: a run newer than that is archived by "
            "the next `prefect-archiver sync`") if mark else "which no sync has filled yet"
    raise RunNotFound(f"no flow run or task run with id {wanted} in the archive at {path}, {ends}")


def _run_state(row: tuple[Any, ...]) -> RunState:
    (state_id, type_, name, timestamp, message, details, data_kind, storage_key, block_id, serializer_type,
     expiration, prefect_version, source, block_found, block_name, block_slug, basepath, serializer) = row
    block = StorageBlock(str(block_id), block_found, block_name, block_slug, basepath) if block_found is not None else None
    serializer = json.loads(serializer) if serializer else None
    reference = ResultReference(
        storage_key, str(block_id) if block_id else None, serializer_type,
        format_timestamp(to_utc(expiration)) if expiration else None, prefect_version, block,
        serializer if isinstance(serializer, dict) else None,
    ) if storage_key is not None else None
    return RunState(
        str(state_id), type_, name, to_utc(timestamp), message, json.loads(details) if details else None,
        data_kind, reference, source,
    )


def get_run_states(run_id: str, *, settings: Settings | None = None) -> RunHistory:
    """A flow run's or task run's whole state history from the archive alone.

    Raises RunNotFound (a LookupError) when the archive knows no such run, BadInput for an id
    that is no UUID.
    """
    settings = settings or load_settings()
    return read_run_history(settings.db_path, run_id, settings.read_timeout)


def get_run_result(run_id: str, *, settings: Settings | None = None) -> Any:
    """The value of a run's final result when it is in a file readable here: JSON always, any other
    serializer (pickle, Prefect's default) through Prefect's own result store when prefect is installed.

    Raises ResultUnavailable naming what can read it otherwise (Prefect's result store).
    """
    history = get_run_states(run_id, settings=settings)
    return read_result(final_result(history))


def final_result(history: RunHistory) -> ResultReference:
    """The result reference of the run's final state; ResultUnavailable if it has none."""
    final = history.final
    if final is None:
        raise ResultUnavailable(f"the archive holds no states of {history.run_kind.replace('_', ' ')} {history.run_id}")
    if final.result is None:
        why = {
            "none": "the run did not persist its result (persist_result was off, or nothing to persist)",
            "inline": "its data is not a persisted-result reference (see the state's JSON in run_states)",
            "unknown": "only its state-change event was archived, not the state record",
        }.get(final.data_kind, final.data_kind)
        raise ResultUnavailable(f"the final state ({final.name or final.type}) holds no result reference: {why}")
    return final.result

"""Reading the archive: one event by id (falling back to the live API), searches, a run's states, status.

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

from archiver.client import PrefectClient, RetryPolicy, redact_url, tls_verify
from archiver.config import Settings, load_settings
from archiver.connect import open_reader, scalar
from archiver.errors import ArchiveError, BadInput, EventNotFound, RunNotFound
from archiver.models import EVENT_COLUMNS, event_to_api, format_timestamp, parse_event_id, parse_prefect_id, to_utc, uuid7_time
from archiver.results import ResultReference, ResultUnavailable, StorageBlock, read_json_result
from archiver.search import EventFilter, RelatedMatch, ResourceMatch, read_page
from archiver.windows import MAX_QUERY_SPAN

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
    while upper > now - horizon:
        lower = max(upper - MAX_QUERY_SPAN, now - horizon)
        yield lower, upper
        upper = lower


def read_live_event(
    client: PrefectClient, event_id: str, horizon: timedelta, now: datetime | None = None
) -> dict[str, Any] | None:
    """Ask the API for one event, always with an explicit occurred window (its default misses)."""
    now = now or datetime.now(timezone.utc)
    wanted = str(parse_event_id(event_id))
    for since, until in lookup_windows(wanted, now, horizon):
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
    settings: Settings, retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep
) -> PrefectClient:
    """A client configured from settings (the same environment a flow runs with).

    `sleep` waits between retries; a stoppable process passes one that ends the wait on a stop.
    """
    return PrefectClient(
        settings.require_api(),
        sleep=sleep,
        api_key=settings.api_key,
        auth_string=settings.auth_string,
        timeout=settings.timeout.total_seconds(),
        retry=retry or RetryPolicy(settings.max_retries, settings.max_retry_time),
        custom_headers=settings.custom_headers,
        verify=tls_verify(settings.ssl_cert_file, settings.tls_insecure_skip_verify),
        csrf_support=settings.csrf_support,
        max_requests_per_minute=settings.max_requests_per_minute,
    )


def find_event(
    event_id: str | uuid.UUID, *, settings: Settings | None = None, archive_only: bool = False
) -> tuple[dict[str, Any], str]:
    """The event and where it was found: "archive" or "api"."""
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
        with client_for(settings) as client:
            event = read_live_event(client, event_id, settings.lookup_horizon)
        if event is not None:
            return event, "api"
        looked.append(
            f"the Prefect API at {redact_url(settings.api_url)} (occurred within the last "
            f"{settings.lookup_horizon.days} days, and around the time in the id if it is a UUIDv7)"
        )
    elif not archive_only:
        looked.append("not the live API: PREFECT_API_URL is not set")
    raise EventNotFound(f"no event with id {event_id} in " + "; ".join(looked))


def get_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """One event by id, from the archive or else the live API, in the API's JSON shape.

    For code inside a flow that was handed `{{ event.id }}` by an automation. Raises
    EventNotFound (a LookupError) naming where it looked, BadInput for an id that is no UUID.
    """
    return find_event(event_id, settings=settings)[0]


async def aget_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """get_event for async flows; the blocking reads run in a worker thread."""
    return await asyncio.to_thread(get_event, event_id, settings=settings)


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
    """Events archived, the high-water mark and lag, the last sync, gaps and quarantine."""
    now = now or datetime.now(timezone.utc)
    conn = open_reader(path, timeout)
    try:
        events = scalar(conn, "SELECT count(*) FROM events")
        mark = scalar(conn, "SELECT high_water_mark FROM archive_state WHERE id = 1")
        last = conn.execute(
            "SELECT id, started, finished, outcome, error, inserted, fetched FROM syncs "
            "WHERE kind = 'sync' ORDER BY started DESC LIMIT 1"
        ).fetchone()
        last_ok = scalar(conn, "SELECT max(finished) FROM syncs WHERE kind = 'sync' AND outcome = 'ok'")
        gaps = conn.execute("SELECT since, until FROM gaps ORDER BY since").fetchall()
        quarantined = scalar(conn, "SELECT count(*) FROM quarantine")
    finally:
        conn.close()
    mark = to_utc(mark) if mark else None

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
            # A run with no finish time died without recording one (killed, or the machine stopped).
            "outcome": last[3] if last[3] != "running" or last[2] else "running or killed",
            "error": last[4],
            "inserted": last[5],
            "fetched": last[6],
        } if last else None,
        "last_success": ts(last_ok),
        "gaps": [{"since": ts(s), "until": ts(u)} for s, u in gaps],
        "quarantined": quarantined,
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

    @property
    def final(self) -> RunState | None:
        return self.states[-1] if self.states else None


_STATES_SQL = """
SELECT s.id, s.type, s.name, s.timestamp, s.message, s.state_details, s.data_kind, s.storage_key, s.storage_block_id,
       s.serializer_type, s.result_expiration, s.result_prefect_version, 'state' AS source,
       b.found, b.name, b.block_type_slug, b.basepath
FROM run_states s LEFT JOIN result_storage_blocks b ON b.id = s.storage_block_id
WHERE s.run_kind = $2 AND s.run_id = $1
UNION ALL
SELECT event_id, state_type, state_name, timestamp, message, NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, 'event',
       NULL, NULL, NULL, NULL
FROM {kind}_states
WHERE {kind}_id = $1 AND event_id NOT IN (SELECT id FROM run_states WHERE run_kind = $2 AND run_id = $1)
ORDER BY 4, 1
"""


def read_run_history(path: Path, run_id: str, timeout: timedelta = timedelta(seconds=15)) -> RunHistory:
    """The archived states of the flow run or task run with this id; RunNotFound if it has none."""
    wanted = str(parse_prefect_id(run_id, "run"))
    conn = open_reader(path, timeout)
    try:
        for kind, table in (("flow_run", "flow_runs"), ("task_run", "task_runs")):
            try:
                rows = conn.execute(_STATES_SQL.format(kind=kind), [wanted, kind]).fetchall()
            except duckdb.CatalogException:
                raise ArchiveError(
                    f"archive {path} predates run states: run `prefect-archiver sync` once to upgrade it"
                ) from None
            name = scalar(conn, f"SELECT name FROM {table} WHERE id = $1", [wanted])
            if rows or name is not None:
                return RunHistory(kind, wanted, name, [_run_state(row) for row in rows])
    finally:
        conn.close()
    raise RunNotFound(f"no flow run or task run with id {wanted} in the archive at {path}")


def _run_state(row: tuple[Any, ...]) -> RunState:
    (state_id, type_, name, timestamp, message, details, data_kind, storage_key, block_id, serializer_type,
     expiration, prefect_version, source, block_found, block_name, block_slug, basepath) = row
    block = StorageBlock(str(block_id), block_found, block_name, block_slug, basepath) if block_found is not None else None
    reference = ResultReference(
        storage_key, str(block_id) if block_id else None, serializer_type,
        format_timestamp(to_utc(expiration)) if expiration else None, prefect_version, block,
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
    """The value of a run's final result when it is a JSON result in a file readable here.

    Raises ResultUnavailable naming what can read it otherwise (Prefect's result store).
    """
    history = get_run_states(run_id, settings=settings)
    return read_json_result(final_result(history))


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

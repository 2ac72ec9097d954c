"""One event by id: from the archive, falling back to the live API, for code inside a flow.

Importable inside a flow without the CLI: it opens the archive read-only, briefly, retrying while
a sync commits (through the archive's reader), and imports neither SQLAlchemy nor the ingest
machinery; httpx only when the live API is asked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from archiver.config import Settings, load_settings
from archiver.errors import ApiError, ArchiveError, EventNotFound
from archiver.prefect.events import format_timestamp, parse_event_id, uuid7_time
from archiver.prefect.spans import MAX_QUERY_SPAN, walk_back
from archiver.storage import Archive, open_archive

if TYPE_CHECKING:
    from archiver.prefect.client import PrefectClient

# A UUIDv7 records when the event object was created; `occurred` is at or before it in practice.
# The window around it stays within Prefect Cloud's 14-day cap on one query.
ID_TIME_AFTER = timedelta(minutes=10)
ID_TIME_BEFORE = MAX_QUERY_SPAN - ID_TIME_AFTER


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


def find_event(
    event_id: str | uuid.UUID, *, settings: Settings | None = None, archive_only: bool = False,
    interactive: bool = False,
) -> tuple[dict[str, Any], str]:
    """The event and where it was found: "archive" or "api" (`interactive`: see client_for)."""
    settings = settings or load_settings()
    wanted = parse_event_id(event_id)
    event_id = str(wanted)
    archive = open_archive(settings.archive_url)
    looked = []
    if archive.exists():
        try:
            event = archive.reader(settings.read_timeout).event(wanted)
        except ArchiveError as exc:
            if archive_only or not settings.api_url:
                raise
            # A busy or unreadable archive should not stop a flow from getting its event.
            looked.append(f"the archive at {archive.name} (unreadable: {exc})")
        else:
            if event is not None:
                return event, "archive"
            looked.append(f"the archive at {archive.name}")
    else:
        looked.append(f"the archive at {archive.name} (which does not exist)")
    if not archive_only and settings.api_url:
        from archiver.prefect.client import client_for, redact_url  # httpx: only now the live API is asked

        try:
            with client_for(settings, interactive=interactive) as client:
                event = read_live_event(client, event_id, settings.lookup_horizon, storing=settings.settle)
        except ApiError as exc:
            # Same class (callers catch ApiUnavailable), but a message that says the archive was asked first.
            raise type(exc)(
                f"event {event_id} is not in {_archive_extent(archive, settings.read_timeout)}, and the Prefect "
                f"API at {redact_url(settings.api_url)} could not answer: {exc}"
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


def _archive_extent(archive: Archive, timeout: timedelta) -> str:
    """"the archive at P (archived up to MARK)", as far as it can be read, for an error message."""
    where = f"the archive at {archive.name}"
    if not archive.exists():
        return where + " (which does not exist)"
    try:
        mark = archive.reader(timeout).high_water_mark()
    except ArchiveError as exc:
        return f"{where} (unreadable: {exc})"
    return f"{where} (archived up to {format_timestamp(mark) if mark else 'nothing yet: no sync has run'})"


def get_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """One event by id, from the archive or else the live API, in the API's JSON shape.

    For code inside a flow that was handed `{{ event.id }}` by an automation. Raises
    EventNotFound (a LookupError) naming where it looked, BadInput for an id that is no UUID.
    """
    return find_event(event_id, settings=settings)[0]


async def aget_event(event_id: str | uuid.UUID, *, settings: Settings | None = None) -> dict[str, Any]:
    """get_event for async flows; the blocking reads run in a worker thread."""
    import asyncio  # only async callers pay for it (a tenth of a lookup's import otherwise)

    return await asyncio.to_thread(get_event, event_id, settings=settings)

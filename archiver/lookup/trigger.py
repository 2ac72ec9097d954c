"""The event that made an automation start a flow run, followed through the automation's own events.

For a flow started by an automation's run-deployment action: the archive is asked first, then
the live API, which may still be storing the action's events when the run starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from archiver.config import Settings, load_settings
from archiver.errors import ArchiveError, BadInput, NoTriggeringEvent, RunNotFound
from archiver.lookup.events import get_event
from archiver.lookup.search import EARLIEST, FLOW_RUN, LATEST, flow_run_resource, search_events
from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.storage import open_archive

if TYPE_CHECKING:
    from archiver.prefect.client import PrefectClient

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
    archive = open_archive(settings.archive_url)
    if archive.exists():
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
        archived = archive.reader(settings.read_timeout).flow_run(uuid.UUID(run_id)) if archive.exists() else None
        if archived is not None and (error := _not_by_automation(run_id, archived)):
            raise error
        raise NoTriggeringEvent(
            f"no automation event names flow run {run_id} in the archive at {archive.name}, and "
            "PREFECT_API_URL is not set to ask the live API: sync the archive, or set PREFECT_API_URL"
        )
    from archiver.prefect.client import client_for, redact_url  # httpx: only now the live API is asked

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
    import asyncio  # only async callers pay for it

    # asyncio.to_thread copies the context, so Prefect's run context is there too.
    return await asyncio.to_thread(get_triggering_event, flow_run_id, settings=settings, wait=wait)

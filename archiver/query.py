"""The documented import path for reading the archive from a flow: `from archiver.query import get_event`.

Flows in the wild import these names from here; they live in archiver.lookup (also exported,
lazily, from `archiver` itself).
"""

from archiver.lookup.events import aget_event, get_event
from archiver.lookup.logs import get_run_artifacts, get_run_logs
from archiver.lookup.runs import get_run_result, get_run_states
from archiver.lookup.search import events_of_flow_run, search_events
from archiver.lookup.trigger import aget_triggering_event, get_triggering_event

__all__ = [
    "aget_event", "aget_triggering_event", "events_of_flow_run", "get_event", "get_run_artifacts", "get_run_logs",
    "get_run_result", "get_run_states", "get_triggering_event", "search_events",
]

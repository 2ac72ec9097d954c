"""prefect-archiver: a permanent, queryable DuckDB archive of a Prefect workspace's events.

The public API for code inside flows is importable from here (`from archiver import get_event`)
as from archiver.query; each name is imported on first use, so `import archiver` (and the CLI's
start) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the module that defines it.
_PUBLIC = {
    "get_event": "archiver.lookup.events",
    "aget_event": "archiver.lookup.events",
    "get_triggering_event": "archiver.lookup.trigger",
    "aget_triggering_event": "archiver.lookup.trigger",
    "search_events": "archiver.lookup.search",
    "events_of_flow_run": "archiver.lookup.search",
    "get_run_states": "archiver.lookup.runs",
    "get_run_result": "archiver.lookup.runs",
    "get_run_logs": "archiver.lookup.logs",
    "get_run_artifacts": "archiver.lookup.logs",
    "RunHistory": "archiver.storage.reader",
    "RunState": "archiver.storage.reader",
    "ArchiverError": "archiver.errors",
    "ArchiveError": "archiver.errors",
    "ArchiveMissing": "archiver.errors",
    "ArchiveBusy": "archiver.errors",
    "ApiError": "archiver.errors",
    "ApiUnavailable": "archiver.errors",
    "BadInput": "archiver.errors",
    "ConfigError": "archiver.errors",
    "EventNotFound": "archiver.errors",
    "NoTriggeringEvent": "archiver.errors",
    "RunNotFound": "archiver.errors",
    "ResultUnavailable": "archiver.prefect.results",
}

__all__ = [  # the names of _PUBLIC (tests/unit/test_public_api.py holds the two lists together)
    "ApiError", "ApiUnavailable", "ArchiveBusy", "ArchiveError", "ArchiveMissing", "ArchiverError", "BadInput",
    "ConfigError", "EventNotFound", "NoTriggeringEvent", "ResultUnavailable", "RunHistory", "RunNotFound", "RunState",
    "aget_event", "aget_triggering_event", "events_of_flow_run", "get_event", "get_run_artifacts", "get_run_logs",
    "get_run_result", "get_run_states", "get_triggering_event", "search_events",
]

if TYPE_CHECKING:
    from archiver.errors import (
        ApiError,
        ApiUnavailable,
        ArchiveBusy,
        ArchiveError,
        ArchiveMissing,
        ArchiverError,
        BadInput,
        ConfigError,
        EventNotFound,
        NoTriggeringEvent,
        RunNotFound,
    )
    from archiver.lookup.events import aget_event, get_event
    from archiver.lookup.logs import get_run_artifacts, get_run_logs
    from archiver.lookup.runs import get_run_result, get_run_states
    from archiver.lookup.search import events_of_flow_run, search_events
    from archiver.lookup.trigger import aget_triggering_event, get_triggering_event
    from archiver.prefect.results import ResultUnavailable
    from archiver.storage.reader import RunHistory, RunState


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'archiver' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

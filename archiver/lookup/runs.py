"""A run's archived states and the value of its final result, from the archive alone.

The states come from the archive's reader (storage.reader.RunHistory); the result is read where
its reference points (archiver.prefect.results).
"""

from __future__ import annotations

import uuid
from typing import Any

from archiver.config import Settings, load_settings
from archiver.prefect.events import parse_prefect_id
from archiver.prefect.results import ResultReference, ResultUnavailable, read_result
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage import open_archive
from archiver.storage.reader import RunHistory, RunState

__all__ = ["RunHistory", "RunState", "final_result", "get_run_result", "get_run_states"]

def get_run_states(run_id: str | uuid.UUID, *, settings: Settings | None = None) -> RunHistory:
    """A flow run's or task run's whole state history from the archive alone.

    Raises RunNotFound (a LookupError) when the archive knows no such run, BadInput for an id
    that is no UUID.
    """
    settings = settings or load_settings()
    wanted = parse_prefect_id(run_id, "run")
    return open_archive(settings.archive_url).reader(settings.read_timeout).run_history(wanted)


def get_run_result(run_id: str | uuid.UUID, *, settings: Settings | None = None) -> Any:
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
        raise ResultUnavailable(f"the archive holds no states of {kind_of(history.run_kind).words} {history.run_id}")
    if final.result is None:
        why = {
            "none": "the run did not persist its result (persist_result was off, or nothing to persist)",
            "inline": "its data is not a persisted-result reference (see the state's JSON in run_states)",
            "unknown": "only its state-change event was archived, not the state record",
        }.get(final.data_kind, final.data_kind)
        raise ResultUnavailable(f"the final state ({final.name or final.type}) holds no result reference: {why}")
    return final.result

"""Run logs and artifacts as the archive keeps them: the values the writer takes and the reader gives.

A log or an artifact is stored whole (`raw`, the object as the API sent it) beside the columns a
query needs. Each run's harvest keeps a progress mark (LogMark) that commits in the same
transaction as the page of logs it covers, as events and the high-water mark do, so a harvest
killed at any moment resumes where its last commit left it and doubles nothing (the log id is
the primary key; the first version stored wins).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from archiver.errors import ArchiveError


class PredatesLogs(ArchiveError):
    """The archive was made before run logs existed: run `prefect-archiver sync` once to upgrade it."""


# Prefect's state types after which a run logs nothing of its own (late batches aside).
TERMINAL_STATE_TYPES = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
# The state types of a run that may have logged: before RUNNING (SCHEDULED, PENDING) it has not.
HARVESTED_STATE_TYPES = ("RUNNING", "PAUSED", "CANCELLING", *TERMINAL_STATE_TYPES)


@dataclass(frozen=True)
class Log:
    """One log line of a run (POST /logs/filter's Log), with the whole object in `raw`."""

    id: uuid.UUID
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    level: int
    name: str | None
    timestamp: datetime
    message: str | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Artifact:
    """One artifact a run published (POST /artifacts/filter's Artifact), with the whole object in `raw`."""

    id: uuid.UUID
    key: str | None
    type: str | None
    description: str | None
    data: Any
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    created: datetime | None
    updated: datetime | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class LogMark:
    """How far one run's harvest got: written with each page of its logs, in one transaction.

    `logs_after`: the next read asks for logs with timestamp at or after it (None: from the
    first). `settled`: read after the run ended plus the late-batch horizon (or the server no
    longer has the run): not read again until its state changes.
    """

    run_kind: str  # "flow_run" or "task_run"
    run_id: str
    logs_after: datetime | None
    state_seen: datetime | None  # the run's state timestamp this read knew of
    ended: datetime | None  # when it reached a terminal state; None while it has not
    read_at: datetime  # when this read began
    settled: bool = False


@dataclass(frozen=True)
class LogRun:
    """A run whose logs (and artifacts) need reading, and what the archive knew of it when planned."""

    run_kind: str
    run_id: str
    state_type: str
    state_timestamp: datetime | None
    end_time: datetime | None
    logs_after: datetime | None  # from its progress mark; None: never read
    read_before: bool

    @property
    def ended(self) -> datetime | None:
        """When the run reached its terminal state, None while it has not."""
        if self.state_type not in TERMINAL_STATE_TYPES:
            return None
        return self.end_time or self.state_timestamp


@dataclass(frozen=True)
class LogQuery:
    """Which archived logs to read: every field narrows (None: any), as Prefect's LogFilter does.

    `text` matches a substring of the message, case-insensitively (`logs --grep`). Bounds are
    inclusive, like the API's timestamp.after_ / before_.
    """

    run_id: uuid.UUID | None = None  # a flow run's logs (its task runs' included), or a task run's
    flow_run_ids: tuple[uuid.UUID, ...] | None = None
    task_run_ids: tuple[uuid.UUID, ...] | None = None
    task_run_is_null: bool | None = None
    level_ge: int | None = None
    level_le: int | None = None
    after: datetime | None = None
    before: datetime | None = None
    text: str | None = None
    descending: bool = False
    limit: int = 200
    offset: int = 0
    # Keyset: only logs after this (timestamp, id) in the query's order (a reader's next page).
    after_key: tuple[datetime, uuid.UUID] | None = None


@dataclass(frozen=True)
class ArtifactQuery:
    """Which archived artifacts to read (None: any); by `created`, then id (oldest first unless newest_first)."""

    ids: tuple[uuid.UUID, ...] | None = None
    flow_run_ids: tuple[uuid.UUID, ...] | None = None
    task_run_ids: tuple[uuid.UUID, ...] | None = None
    keys: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    newest_first: bool = False
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True)
class RunLogCounts:
    """How many logs and artifacts the archive holds of one run (`states` says it)."""

    logs: int
    artifacts: int


def mark_params(mark: LogMark) -> dict[str, Any]:
    """The named parameters of storage.statements.SAVE_LOG_MARK."""
    return {"run_kind": mark.run_kind, "run_id": mark.run_id, "logs_after": mark.logs_after,
            "state_seen": mark.state_seen, "ended": mark.ended, "read_at": mark.read_at, "settled": mark.settled}


def first_of_each(items: list[Log]) -> list[Log]:
    """The items with duplicate ids dropped, the first of each kept (what the archive keeps)."""
    seen: set[uuid.UUID] = set()
    kept = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            kept.append(item)
    return kept


def log_run_from_row(row: tuple[Any, ...]) -> LogRun:
    """One row of log_queries.pending_runs as a LogRun."""
    from archiver.prefect.events import to_utc

    run_kind, run_id, state_type, state_timestamp, end_time, logs_after, read_before = row
    return LogRun(str(run_kind), str(run_id), str(state_type), to_utc(state_timestamp) if state_timestamp else None,
                  to_utc(end_time) if end_time else None, to_utc(logs_after) if logs_after else None, bool(read_before))


def artifacts_to_write(artifacts: Sequence[Artifact],
                       stored: Callable[[list[str]], dict[str, datetime | None]]) -> tuple[list[Artifact], list[Artifact]]:
    """Of one page of artifacts (the first of each id counts), those new to the archive and those
    the server updated since they were stored (a progress artifact changes in place): the rest are
    duplicates. `stored(ids)` gives the archived `updated` (UTC) of those ids the archive holds."""
    latest: dict[str, Artifact] = {}
    for artifact in artifacts:
        latest.setdefault(str(artifact.id), artifact)
    unique = list(latest.values())
    known = stored([str(a.id) for a in unique]) if unique else {}
    new = [a for a in unique if str(a.id) not in known]
    changed = []
    for a in unique:
        if str(a.id) in known and a.updated is not None:
            was = known[str(a.id)]
            if was is None or a.updated > was:
                changed.append(a)
    return new, changed

"""The reader interface: everything lookups, `serve`, the CLI's read commands and `check` ask an archive.

Callers hold an ArchiveReader (Archive.reader(timeout)) and never a path, a connection or SQL; the
values they get back are plain data defined here (Page, ArchiveStatus, RunHistory, SqlResult), so
they cannot tell which backend answered. DuckDB's reader (storage/duckdb/reader.py) is the first
implementation; PostgreSQL's implements the same methods and passes the same contract suite
(tests/unit/storage/test_reader_contract.py).

What an implementation must guarantee:
- it never blocks the writer for longer than one read: it holds the store only while a call (or a
  session()) runs, and waits up to its timeout for a committing writer (ArchiveBusy after that);
- it sees whole batches: a batch's events and the high-water mark it carries appear together;
- a missing archive raises ArchiveMissing from every read (reading never creates one), and an
  archive with no schema yet an ArchiveError that says to run sync;
- an archive written by an older prefect-archiver is read as far as its schema goes (no runs
  archived yet, no quarantine item resolved yet); what needs a newer schema raises an
  ArchiveError (or, for `sql`, BadInput) telling the user to run `prefect-archiver sync` once to
  upgrade it;
- `sql` only reads: it refuses writes, other files and changed settings with BadInput;
- keyset pages: ties on `occurred` are ordered by id, and a page after (occurred, id) neither
  skips nor repeats events while a writer commits between pages.

An ABC rather than a Protocol: every reader is ours and says so by subclassing (as every backend's
Archive does, beside it in base.py), and a backend missing a method fails when it is built, in the
contract suite, instead of when a request first calls that method in production.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from archiver.prefect.events import format_timestamp
from archiver.storage.browse import BrowseReads, Facets

if TYPE_CHECKING:
    from archiver.prefect.filters import EventFilter
    from archiver.prefect.results import ResultReference
    from archiver.storage.logs import ArtifactQuery, LogQuery, RunLogCounts

# After a page: the (occurred, id) of its last event, where the next page starts.
Position = tuple[datetime, uuid.UUID]


@dataclass(frozen=True)
class Page:
    """One page of events in the API's JSON shape, the filter's total, and where the next starts."""

    events: list[dict[str, Any]]
    total: int
    after: Position | None = None  # set when more events follow


def _ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value else None


@dataclass(frozen=True)
class LastSync:
    """The newest sync in the ledger; `outcome` "interrupted" also when its process died mid-run."""

    id: uuid.UUID
    started: datetime
    finished: datetime | None
    outcome: str  # "running", "ok", "failed", "interrupted"
    error: str | None
    inserted: int
    fetched: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "started": _ts(self.started), "finished": _ts(self.finished),
            "outcome": self.outcome, "error": self.error, "inserted": self.inserted, "fetched": self.fetched,
        }


@dataclass(frozen=True)
class ArchiveStatus:
    """What `status`, `check` and serve's /api/health say of an archive, read at `now`."""

    archive: str  # Archive.name: a path, or a URL without its password
    events: int
    high_water_mark: datetime | None  # everything that occurred before it is archived; None before a first sync
    lag: timedelta | None  # now − the mark
    last_sync: LastSync | None
    last_success: datetime | None  # when the newest sync that ended "ok" finished
    gaps: tuple[tuple[datetime, datetime], ...]  # stretches possibly lost, oldest first
    quarantined: int  # malformed items still unresolved
    quarantine_resolved: int  # those whose real event was archived later

    @property
    def lag_seconds(self) -> float | None:
        """The lag as `status` shows it: seconds, to a tenth."""
        return round(self.lag.total_seconds(), 1) if self.lag is not None else None

    def to_json(self) -> dict[str, Any]:
        """`status --json` without what the CLI adds (service, api_url): these keys, in this order."""
        return {
            "archive": self.archive,
            "events": self.events,
            "high_water_mark": _ts(self.high_water_mark),
            "lag_seconds": self.lag_seconds,
            "last_sync": self.last_sync.to_json() if self.last_sync else None,
            "last_success": _ts(self.last_success),
            "gaps": [{"since": _ts(since), "until": _ts(until)} for since, until in self.gaps],
            "quarantined": self.quarantined,
            "quarantine_resolved": self.quarantine_resolved,
        }


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


@dataclass(frozen=True)
class SqlResult:
    """What one query of the SQL console answered: its columns and the rows as they are fetched.

    `json` and `numeric` say per column what a printer needs (JSON values parsed, numbers
    right-aligned), so printing never depends on one backend's type names.
    """

    columns: list[str]
    types: list[str]  # as the backend names them
    rows: Iterator[tuple[Any, ...]]
    json: list[bool]
    numeric: list[bool]


# The columns a backend's run-history query returns, in this order (storage/*/reader.py's
# _STATES_SQL): the state, its result-reference columns, where it came from, its storage block.
def run_state_from_row(row: tuple[Any, ...]) -> RunState:
    """One row of a backend's run-history query as a RunState (JSON columns as text)."""
    import json

    from archiver.prefect.events import to_utc
    from archiver.prefect.results import ResultReference, StorageBlock

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


class ArchiveReader(BrowseReads, ABC):
    """Reads one archive; every call opens the store briefly and lets go (see session()).

    The web UI's reads of runs and deployments (storage/browse.py) come with it, written once.
    """

    @abstractmethod
    def event(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        """The archived event with this id in the API's JSON shape, or None."""

    @abstractmethod
    def page(self, search: EventFilter, limit: int, after: Position | None = None, total: int | None = None) -> Page:
        """Up to `limit` events matching `search` after the keyset position `after`, in its order.

        `total` is counted when not given (a page token carries the first page's count, as Prefect's does).
        """

    def first_page(self, search: EventFilter, limit: int, facets_up_to: int,
                   facet_limit: int = 10) -> tuple[Page, Facets | None]:
        """The first page of `search` and its facets, or None for facets when more than
        `facets_up_to` events match (the events page's read). A backend may find the matches once
        for both; this one asks page() then facets()."""
        page = self.page(search, limit)
        return page, self.facets(search, facet_limit) if page.total <= facets_up_to else None

    @abstractmethod
    def count(self, search: EventFilter) -> int:
        """How many archived events match `search`."""

    @abstractmethod
    def status(self, now: datetime | None = None) -> ArchiveStatus:
        """Events archived, the high-water mark and lag, the last sync, gaps and quarantine."""

    @abstractmethod
    def high_water_mark(self) -> datetime | None:
        """Everything that occurred before it is archived; None before a first sync."""

    @abstractmethod
    def flow_run(self, flow_run_id: uuid.UUID) -> dict[str, Any] | None:
        """The flow run as last archived (the API's object), or None (also before run metadata)."""

    @abstractmethod
    def run_history(self, run_id: uuid.UUID) -> RunHistory:
        """The archived states of the flow run or task run with this id; RunNotFound if it has none."""

    @abstractmethod
    def logs(self, query: LogQuery, whole: bool = True) -> list[dict[str, Any]]:
        """Archived logs matching `query`, in the API's shape (the Log object as the server sent it);
        `whole=False`: only id, timestamp (a datetime), level and message, without parsing the object."""

    @abstractmethod
    def log_lines(self, query: LogQuery) -> list[tuple[str, int, int, str | None]]:
        """Archived logs matching `query` as (id, timestamp in microseconds since the epoch, level,
        message): what a log line prints, as plain str and int (`logs RUN_ID`, a million lines)."""

    @abstractmethod
    def artifacts(self, query: ArtifactQuery) -> list[dict[str, Any]]:
        """Archived artifacts matching `query`, in the API's shape, oldest first."""

    @abstractmethod
    def run_log_counts(self, run_id: uuid.UUID) -> RunLogCounts:
        """How many logs and artifacts the archive holds of this flow run or task run (0 and 0 before logs existed)."""

    @abstractmethod
    def harvested_runs(self, since: datetime, until: datetime) -> list[tuple[str, str]]:
        """(run_kind, run_id) of the runs whose logs are settled and that ended (or last changed
        state) in [since, until], in that order: what `verify` compares with the server."""

    @abstractmethod
    def run_log_ids(self, run_id: uuid.UUID, level_ge: int | None = None) -> tuple[set[str], set[str]]:
        """The ids of the archived logs (at `level_ge` or above) and artifacts of this flow run or
        task run (verify compares them)."""

    @abstractmethod
    def sql(self, query: str) -> AbstractContextManager[SqlResult]:
        """One read-only query; the result's rows can be read while the block lasts. BadInput if refused."""

    @abstractmethod
    def facets(self, search: EventFilter, limit: int = 10) -> Facets:
        """The `limit` commonest event names, resource kinds and deployments among the events `search` matches."""

    @abstractmethod
    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        """Archived events per count-by bucket `width` wide (aligned like the server's) in [since, until]."""

    @abstractmethod
    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        """When the newest archived event before `moment` occurred (None if there is none)."""

    @abstractmethod
    def gaps(self) -> list[tuple[datetime, datetime]]:
        """The stretches recorded as possibly lost, oldest first."""

    @abstractmethod
    def session(self, time_limit: timedelta | None = None) -> AbstractContextManager[ArchiveReader]:
        """A reader whose calls share one opening of the store, for a caller with several reads.

        The store stays held while the block lasts: keep it short (one serve request). With a
        `time_limit`, reads still running that long after the block began are stopped and raise
        QueryTimeout.
        """

"""The writer interface: everything ingest stores, and the value types it hands over and gets back.

Ingest (sync, reconcile, verify, gaps, metadata, states), the service and the CLI's write
commands receive an ArchiveWriter from Archive.writer() and never see SQL, a connection or a
path. What an implementation must guarantee (tests/unit/storage holds every backend to it):

- **Mark and events in one transaction.** write_batch stores its events, quarantines its
  malformed items, queues the run metadata they name and moves the high-water mark in ONE
  transaction: after a crash at any moment, or a failed batch, the mark never claims an event
  that is not stored, and nothing of the failed batch is.
- **Idempotent writes, first version wins.** An event id already archived (or repeated inside
  the batch) is not written again; an item already quarantined is not quarantined again.
- **Exact counts of what was new.** WriteCounts says what the batch did: inserted + duplicates
  + quarantined = the events and malformed items handed in; conflicts counts the repeats whose
  content differs from the version they were compared with (the batch's first of that id, or the
  archived one); the version stored first is kept. Counted from what the
  database says it inserted (RETURNING), never from a driver's rowcount.
- **Cursors only move forward.** The high-water mark and the states pass's cursor never move
  back, whatever they are given.
- **The ledger.** start_run adds a 'running' row and turns rows still 'running' into
  'interrupted' (every writer holds Archive.writer_lock from before start_run to after
  finish_run, so such a row was left by a process that died); finish_run records the counts
  and the outcome with the mark as it is then.
- **The file is let go.** Between transactions the writer holds nothing a reader waits on,
  except inside holding(), which a backend that needs no hold may implement as doing nothing.

An ABC rather than a typing.Protocol: every writer is a backend of this package written to this
contract, so it says so by subclassing, and a backend that misses a method fails when it is
constructed (the contract suite constructs each one), not at the first call in a long sync.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module is the interface: it loads no driver and no event parser
    from archiver.prefect.events import Event, Malformed
    from archiver.storage.logs import Artifact, Log, LogMark, LogRun

# A stretch of time [since, until) the archive may have lost (ingest/gaps.py says how it is found).
Gap = tuple[datetime, datetime]

# The counters the ledger (`syncs`) keeps of each run, by name; finish_run takes a dict of them.
LEDGER_COUNTERS = (
    "windows", "fetched", "inserted", "duplicates", "conflicts", "quarantined", "reconciled_buckets",
    "logs_inserted", "artifacts_saved",
)


# What the ledger says of a run left 'running' while no process holds the writer lock: its process
# died without recording its end (SIGKILL, out of memory, the machine stopped). Every backend's
# start_run and status say it in these words.
ORPHANED_RUN_ERROR = "the process ended without finishing this run (killed, or the machine stopped)"


@dataclass(frozen=True)
class WriteCounts:
    """What one batch did to the archive: inserted + duplicates + quarantined = what was handed in."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0  # of the duplicates, those whose content differs from the version kept
    quarantined: int = 0
    resolved: int = 0  # quarantined items whose real event is now archived


@dataclass(frozen=True)
class PendingRun:
    """A run whose states need reading, and what the archive knew of it when planned."""

    run_kind: str  # "flow_run" or "task_run"
    run_id: str  # the Prefect run's id
    newest_event: datetime  # the newest state event's timestamp
    attempts: int  # earlier reads that lacked that state
    covered_until: datetime | None  # what an earlier read covered


@dataclass(frozen=True)
class RunState:
    """One state record of a run, as the archive keeps it (the run_states table's columns)."""

    id: str
    run_kind: str
    run_id: str
    type: str
    name: str | None
    timestamp: datetime
    message: str | None
    state_details: Any  # as the API sent it
    data_kind: str  # "none", "result_reference" or "inline"
    storage_key: str | None
    storage_block_id: str | None
    serializer_type: str | None
    result_expiration: datetime | None
    result_prefect_version: str | None
    state: dict[str, Any]  # the whole record as the API sent it
    archived_at: datetime


@dataclass(frozen=True)
class StateFetch:
    """The states pass's ledger row of one run: when it was read and how far that read covered."""

    run_kind: str
    run_id: str
    fetched_at: datetime
    states: int  # state records the read returned
    newest_event: datetime
    covered_until: datetime | None
    attempts: int


@dataclass(frozen=True)
class StorageBlock:
    """What locates results in a result storage block: never its data."""

    id: str
    found: bool  # False: the server did not have it when asked
    name: str | None = None
    block_type_slug: str | None = None
    basepath: str | None = None  # local-file-system blocks only


class ArchiveWriter(ABC):
    """The writer side of one archive (see the module docstring for what it guarantees)."""

    # -- events and the mark ------------------------------------------------------------------

    @abstractmethod
    def write_batch(
        self,
        events: Sequence[Event],
        malformed: Sequence[Malformed] = (),
        mark: datetime | None = None,
        ledger_id: uuid.UUID | None = None,
    ) -> WriteCounts:
        """Store events (first version wins), quarantine the malformed (noting the ledger run
        that saw them), queue the objects the new events name and advance the mark: atomically."""

    @abstractmethod
    def advance_mark(self, mark: datetime) -> None:
        """Move the mark over a stretch known to hold no events (never back)."""

    @abstractmethod
    def high_water_mark(self) -> datetime | None:
        """Every event that occurred before this is archived; None before the first sync."""

    @abstractmethod
    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        """Archived events per bucket of `width` in [since, until], keyed by the bucket's start.

        Buckets are aligned like the server's count-by (archiver.prefect.events.PIVOT), so the
        two sides' counts compare bucket for bucket.
        """

    @abstractmethod
    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        """When the newest archived event before `moment` occurred (None if there is none)."""

    def holding(self) -> AbstractContextManager[None]:
        """Let the transactions inside share what they open (a backfill's batches follow each other).

        A backend whose writer never keeps readers out need not override it: this default does nothing.
        """
        from contextlib import nullcontext

        return nullcontext()

    def release(self) -> None:  # noqa: B027 - a default on purpose: without holding() there is nothing to let go
        """Let go of anything a hold kept, before waiting on something else (the network)."""

    def close(self) -> None:
        """Let go of every connection; the writer is not used again."""
        self.release()

    # -- gaps ---------------------------------------------------------------------------------

    @abstractmethod
    def gaps(self) -> list[Gap]:
        """The stretches recorded as possibly lost, oldest first."""

    @abstractmethod
    def record_gap(self, since: datetime, until: datetime, ledger_id: uuid.UUID) -> None:
        """Record a stretch the server may have trimmed before the archive reached it (once)."""

    # -- run metadata (flow runs, task runs, deployments, flows, work pools) ------------------

    @abstractmethod
    def queued_objects(self, kind: str, after: str | None, limit: int) -> list[str]:
        """Ids of `kind` (a collection, e.g. "flow_runs") waiting for a refresh, in id order after `after`."""

    @abstractmethod
    def save_objects(self, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]], give_up_after: int) -> int:
        """Replace the archived versions of `objects` and dequeue them; count a miss for the rest.

        An id asked for that the server did not return keeps its last archived version and stays
        queued until it has been missed `give_up_after` times; returns how many were given up now.
        """

    # -- run states ---------------------------------------------------------------------------

    @abstractmethod
    def states_cursor(self) -> datetime | None:
        """Every state event archived before this was planned for by a completed pass (None: none was)."""

    @abstractmethod
    def pending_runs(self, run_kind: str, since: datetime, limit: int) -> list[PendingRun]:
        """Runs of `run_kind` whose states need reading, in id order, at most `limit`.

        Candidates are the runs with state events archived since `since` and the runs still being
        retried; one is pending when its newest state event is newer than both its newest archived
        state and what an earlier read covered.
        """

    @abstractmethod
    def save_states(self, states: Sequence[RunState], fetches: Sequence[StateFetch]) -> None:
        """Write a batch of runs' states (replaced by id, never deleted) and their ledger rows, atomically."""

    @abstractmethod
    def advance_states_cursor(self, planned_at: datetime) -> None:
        """Every state event archived before `planned_at` has been planned for (never back)."""

    @abstractmethod
    def unread_storage_blocks(self) -> list[str]:
        """Ids of the result storage blocks archived states reference that were never read."""

    @abstractmethod
    def save_storage_blocks(self, blocks: Sequence[StorageBlock]) -> None:
        """Store what was read of these storage blocks (replacing what was)."""

    # -- run logs and artifacts ----------------------------------------------------------------

    @abstractmethod
    def logs_cursor(self) -> datetime | None:
        """Every run whose metadata was archived before this was planned for by a completed logs pass."""

    @abstractmethod
    def pending_log_runs(self, since: datetime, limit: int, after: tuple[str, str] | None = None) -> list[LogRun]:
        """Runs whose logs need reading, in (run_kind, id) order, at most `limit`, after the
        (run_kind, run_id) `after` (the last of the previous batch): those whose metadata was
        archived since `since` with a state newer than their last read knew of, and those whose
        harvest is not settled (running, or ended within the late-batch horizon)."""

    @abstractmethod
    def save_logs(self, logs: Sequence[Log], mark: LogMark) -> WriteCounts:
        """Store a page of one run's logs (first version of an id wins) and its progress mark,
        atomically; inserted + duplicates = the logs handed in. The mark's logs_after never moves back."""

    @abstractmethod
    def save_artifacts(self, artifacts: Sequence[Artifact], mark: LogMark) -> WriteCounts:
        """Store one run's artifacts and its progress mark, atomically. An artifact is replaced
        when the server's version was updated since (progress artifacts change in place): those
        count in `conflicts`; inserted + duplicates = the artifacts handed in."""

    @abstractmethod
    def advance_logs_cursor(self, planned_at: datetime) -> None:
        """Every run archived before `planned_at` has been planned for (never back)."""

    # -- the ledger ---------------------------------------------------------------------------

    @abstractmethod
    def start_run(self, kind: str, since: datetime | None, until: datetime | None) -> uuid.UUID:
        """A new 'running' ledger row ("sync", "reconcile", "verify"); rows still 'running' become
        'interrupted'. Returns the ledger id that finish_run, write_batch and record_gap take."""

    @abstractmethod
    def finish_run(self, ledger_id: uuid.UUID, counters: dict[str, int], outcome: str, error: str | None = None) -> None:
        """Record how the run ended: its counters (LEDGER_COUNTERS), outcome, error and the mark."""

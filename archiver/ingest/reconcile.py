"""Reconciling the archive with the server: compare per-bucket counts, re-fetch what differs.

An event can reach the server long after its `occurred` — behind any high-water mark — so each
sync compares a trailing horizon, and `verify` any range. Counting is cheap on both sides (the
server groups on an indexed column; DuckDB scans one column), and only buckets whose counts
differ are drilled into and read again; inserts are idempotent, so a re-read costs no duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from archiver.ingest.fetch import Planner, count_buckets, fetch_window
from archiver.ingest.report import Reads
from archiver.ingest.stop import NEVER, StopToken
from archiver.ingest.windows import FINER, TICK, UNITS, choose_unit
from archiver.prefect.client import PrefectClient
from archiver.storage.base import ArchiveCounts
from archiver.storage.writer import ArchiveWriter

# Differing buckets are narrowed down to this unit before their events are read again.
REPAIR_UNIT = "minute"


@dataclass(frozen=True)
class BucketDiff:
    """One bucket where the server and the archive disagree."""

    since: datetime
    until: datetime
    unit: str
    server: int
    archive: int

    @property
    def missing(self) -> int:
        return max(self.server - self.archive, 0)


# Called after each window read again: (items read so far, items the differing buckets still
# hold by the server's count) — the caller's progress display adds these to its own figures.
ReadProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile compared and read; its reads add up as a sync's do (see report.Reads)."""

    unit: str
    buckets: int = 0  # compared, the finer ones a repair drilled into included
    diffs: tuple[BucketDiff, ...] = ()  # as first compared, at `unit`
    reads: Reads = Reads()

    @property
    def differing(self) -> int:
        return len(self.diffs)

    @property
    def inserted(self) -> int:
        """The events the repair added: those the archive lacked."""
        return self.reads.inserted


def compare(
    client: PrefectClient, archive: ArchiveCounts, since: datetime, end: datetime, unit: str
) -> tuple[list[BucketDiff], int]:
    """Buckets of `unit` over [since, end) whose server and archive counts differ, and how many were compared."""
    diffs, compared = [], 0
    for span_since, span_until, buckets in count_buckets(client, since, end, unit):
        local = archive.bucket_counts(span_since, span_until, UNITS[unit])
        for bucket in buckets:
            compared += 1
            archived = local.get(bucket.start, 0)
            if archived != bucket.count:
                diffs.append(
                    BucketDiff(max(bucket.start, span_since), min(bucket.end, span_until), unit, bucket.count, archived)
                )
    return diffs, compared


def reconcile(
    client: PrefectClient,
    archive: ArchiveCounts,
    since: datetime,
    end: datetime,
    *,
    unit: str | None = None,
    repair: bool = False,
    ledger_id: uuid.UUID | None = None,
    stop: StopToken = NEVER,
    progress: ReadProgress | None = None,
) -> ReconcileResult:
    """Compare [since, end) bucket by bucket; with `repair`, read again what the archive lacks
    (repairing writes: `archive` is then the writer)."""
    unit = unit or choose_unit(since, end)
    if since >= end:
        return ReconcileResult(unit)
    diffs, compared = compare(client, archive, since, end, unit)
    if not repair:
        return ReconcileResult(unit, compared, tuple(diffs))
    if not isinstance(archive, ArchiveWriter):
        raise TypeError("reconcile(repair=True) writes what it reads again: pass the archive's writer")
    todo = [d for d in diffs if d.missing]
    # At most what the server counts in the buckets still to repair is read again.
    repairing = _Repair(client, archive, ledger_id, progress, left=sum(d.server for d in todo))
    repairing.shown()
    for diff in todo:
        if stop.stopped:
            break  # each repaired window is committed on its own: stopping here loses nothing
        repairing.left -= diff.server
        repairing.bucket(diff)
    return ReconcileResult(unit, compared + repairing.compared, tuple(diffs), repairing.reads)


class _Repair:
    """Reads again the buckets the archive lacks events of, counting what it compared and read."""

    def __init__(self, client: PrefectClient, archive: ArchiveWriter, ledger_id: uuid.UUID | None,
                 progress: ReadProgress | None, left: int) -> None:
        self.client = client
        self.archive = archive
        self.ledger_id = ledger_id
        self.progress = progress
        self.left = left
        self.compared = 0
        self.reads = Reads()

    def shown(self) -> None:
        if self.progress is not None:
            self.progress(self.reads.fetched, self.left)

    def bucket(self, diff: BucketDiff) -> None:
        end = diff.until + TICK
        if diff.unit in FINER and diff.unit != REPAIR_UNIT:
            finer, compared = compare(self.client, self.archive, diff.since, end, FINER[diff.unit])
            self.compared += compared
            for sub in finer:
                if sub.missing:
                    self.bucket(sub)
            return
        for window in Planner(self.client, diff.since, end).windows():
            fetched = fetch_window(self.client, window)
            counts = self.archive.write_batch(fetched.events, fetched.malformed, ledger_id=self.ledger_id)
            self.reads += Reads.written(len(fetched.events) + len(fetched.malformed), counts)
            self.shown()

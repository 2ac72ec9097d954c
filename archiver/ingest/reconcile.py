"""Reconciling the archive with the server: compare per-bucket counts, re-fetch what differs.

An event can reach the server long after its `occurred` — behind any high-water mark — so each
sync compares a trailing horizon, and `verify` any range. Counting is cheap on both sides (the
server groups on an indexed column; DuckDB scans one column), and only buckets whose counts
differ are drilled into and read again; inserts are idempotent, so a re-read costs no duplicates.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from archiver.ingest.fetch import count_buckets, fetch_window, plan_range
from archiver.ingest.windows import FINER, TICK, UNITS, choose_unit
from archiver.prefect.client import PrefectClient
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


@dataclass
class ReconcileResult:
    """What a reconcile compared and read; the counts add up as a sync's do (see WriteCounts)."""

    unit: str
    buckets: int = 0
    diffs: list[BucketDiff] = field(default_factory=list)
    fetched: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0

    @property
    def differing(self) -> int:
        return len(self.diffs)


def compare(
    client: PrefectClient, archive: ArchiveWriter, since: datetime, end: datetime, unit: str, result: ReconcileResult
) -> list[BucketDiff]:
    """Buckets of `unit` over [since, end) whose server and archive counts differ."""
    diffs = []
    for span_since, span_until, buckets in count_buckets(client, since, end, unit):
        local = archive.bucket_counts(span_since, span_until, UNITS[unit])
        for bucket in buckets:
            result.buckets += 1
            archived = local.get(bucket.start, 0)
            if archived != bucket.count:
                diffs.append(
                    BucketDiff(max(bucket.start, span_since), min(bucket.end, span_until), unit, bucket.count, archived)
                )
    return diffs


def reconcile(
    client: PrefectClient,
    archive: ArchiveWriter,
    since: datetime,
    end: datetime,
    *,
    unit: str | None = None,
    repair: bool = False,
    ledger_id: uuid.UUID | None = None,
    stop: threading.Event | None = None,
    progress: ReadProgress | None = None,
) -> ReconcileResult:
    """Compare [since, end) bucket by bucket; with `repair`, read again what the archive lacks."""
    unit = unit or choose_unit(since, end)
    result = ReconcileResult(unit)
    if since >= end:
        return result
    result.diffs = compare(client, archive, since, end, unit, result)
    if repair:
        todo = [d for d in result.diffs if d.missing]
        # At most what the server counts in the buckets still to repair is read again.
        left = sum(d.server for d in todo)

        def read() -> None:
            if progress is not None:
                progress(result.fetched, left)

        read()
        for diff in todo:
            if stop is not None and stop.is_set():
                break  # each repaired window is committed on its own: stopping here loses nothing
            left -= diff.server
            _repair(client, archive, diff, result, ledger_id, read)
    return result


def _repair(
    client: PrefectClient, archive: ArchiveWriter, diff: BucketDiff, result: ReconcileResult, ledger_id: uuid.UUID | None,
    read: Callable[[], None],
) -> None:
    end = diff.until + TICK
    if diff.unit in FINER and diff.unit != REPAIR_UNIT and diff.unit != "second":
        for finer in compare(client, archive, diff.since, end, FINER[diff.unit], result):
            if finer.missing:
                _repair(client, archive, finer, result, ledger_id, read)
        return
    for window in plan_range(client, diff.since, end, diff.unit):
        fetched = fetch_window(client, window)
        counts = archive.write_batch(fetched.events, fetched.malformed, ledger_id=ledger_id)
        result.fetched += len(fetched.events) + len(fetched.malformed)
        result.inserted += counts.inserted
        result.duplicates += counts.duplicates
        result.conflicts += counts.conflicts
        result.quarantined += counts.quarantined
        read()

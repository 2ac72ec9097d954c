"""`verify`: compare the archive with the server over a range and, with repair, fill what it lacks.

Shared by `prefect-archiver verify` and the service's daily job. The caller holds the writer lock
(Archive.writer_lock) when repairing (the service holds it for its whole life).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from archiver.config import Settings
from archiver.ingest.fetch import first_event_time
from archiver.ingest.gaps import server_gap
from archiver.ingest.reconcile import BucketDiff, ReconcileResult, compare, reconcile
from archiver.ingest.report import SyncReport
from archiver.ingest.stop import NEVER, StopToken
from archiver.ingest.sync import ledger_run
from archiver.prefect.client import PrefectClient
from archiver.prefect.events import format_timestamp
from archiver.storage.base import ArchiveCounts
from archiver.storage.writer import ArchiveWriter, Gap


@dataclass(frozen=True)
class Verification:
    """What a verify found: `result.diffs` as first compared, `remaining` after any repair, and the
    ledger's report of the repair (None when it only compared)."""

    since: datetime
    until: datetime
    result: ReconcileResult
    remaining: tuple[BucketDiff, ...] = ()
    report: SyncReport | None = None

    @property
    def missing(self) -> list[BucketDiff]:
        """Buckets that still lack events the server holds."""
        return [d for d in self.remaining if d.missing]


def verify(
    settings: Settings,
    client: PrefectClient,
    archive: ArchiveCounts,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    unit: str | None = None,
    repair: bool = False,
    stop: StopToken = NEVER,
) -> Verification | None:
    """Compare [since, until); None if there is nothing to compare.

    Defaults: from the oldest event the server retains (not before ingest.start) to the mark.
    Comparing only reads the archive (a reader will do); `repair` writes, so it takes the writer.
    """
    # Counting past the server's "now" fails there (HTTP 500) when future-dated events exist.
    settled = settings.settled_until()
    until = min(until or archive.high_water_mark() or settled, settled)
    if since is None:
        since = first_event_time(client, until, settings.retention)
        if since is not None and settings.start is not None:
            since = max(since, settings.start)  # the archive was told to begin at ingest.start
    if since is None or since >= until:
        return None
    if not repair:
        result = reconcile(client, archive, since, until, unit=unit)
        return Verification(since, until, result, remaining=result.diffs)
    if not isinstance(archive, ArchiveWriter):
        raise TypeError("verify(repair=True) writes what it reads again: pass the archive's writer")
    with ledger_run(client, archive, "verify", since, until, stop) as run:
        result = reconcile(client, archive, since, until, unit=unit, repair=True, ledger_id=run.ledger_id, stop=stop)
        # The ledger's verify rows count the buckets and the events added, not the reads.
        run.set(since=format_timestamp(since), until=format_timestamp(until), reconciled=result.differing,
                inserted=result.inserted, repaired=result.inserted)
    remaining, _ = compare(client, archive, since, until, result.unit)
    return Verification(since, until, result, tuple(remaining), run.report)


def gaps_seen(settings: Settings, client: PrefectClient, archive: ArchiveCounts) -> list[Gap]:
    """The gaps syncs recorded, and the one the server shows now if it has trimmed past the mark.

    Verify compares only what the server still holds, so a stretch it trimmed before the archive
    reached it can only be told, not repaired.
    """
    gaps = archive.gaps()
    mark = archive.high_water_mark()
    if mark is not None:
        settled = settings.settled_until()
        live = server_gap(client, archive, mark, max(settled, mark), settings.retention)
        if live is not None and not any(since <= live[0] and live[1] <= until for since, until in gaps):
            gaps.append(live)
    return gaps

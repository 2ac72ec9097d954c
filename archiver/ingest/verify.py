"""`verify`: compare the archive with the server over a range and, with repair, fill what it lacks.

Shared by `prefect-archiver verify` and the service's daily job. The caller holds the writer lock
(Archive.writer_lock) when repairing (the service holds it for its whole life).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

from archiver.config import Settings
from archiver.ingest.fetch import first_event_time
from archiver.ingest.gaps import server_gap
from archiver.ingest.reconcile import BucketDiff, ReconcileResult, compare, reconcile
from archiver.ingest.sync import SyncReport, ledger_run
from archiver.prefect.client import PrefectClient
from archiver.storage.writer import ArchiveWriter, Gap


@dataclass
class Verification:
    """What a verify found: `result.diffs` as first compared, `remaining` after any repair."""

    since: datetime
    until: datetime
    result: ReconcileResult
    repaired: bool = False
    remaining: list[BucketDiff] = field(default_factory=list)

    @property
    def missing(self) -> list[BucketDiff]:
        """Buckets that still lack events the server holds."""
        return [d for d in self.remaining if d.missing]


def verify(
    settings: Settings,
    client: PrefectClient,
    archive: ArchiveWriter,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    unit: str | None = None,
    repair: bool = False,
    stop: threading.Event | None = None,
) -> Verification | None:
    """Compare [since, until); None if there is nothing to compare.

    Defaults: from the oldest event the server retains (not before ingest.start) to the mark.
    """
    # Counting past the server's "now" fails there (HTTP 500) when future-dated events exist.
    settled = datetime.now(timezone.utc) - settings.settle
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
    report = SyncReport()
    with ledger_run(client, archive, report, "verify", since, until) as ledger_id:
        result = reconcile(client, archive, since, until, unit=unit, repair=True, ledger_id=ledger_id, stop=stop)
        report.reconciled, report.inserted = result.differing, result.inserted
        report.outcome = "interrupted" if stop is not None and stop.is_set() else "ok"
    remaining = compare(client, archive, since, until, result.unit, ReconcileResult(result.unit))
    return Verification(since, until, result, repaired=True, remaining=remaining)


def gaps_seen(settings: Settings, client: PrefectClient, archive: ArchiveWriter) -> list[Gap]:
    """The gaps syncs recorded, and the one the server shows now if it has trimmed past the mark.

    Verify compares only what the server still holds, so a stretch it trimmed before the archive
    reached it can only be told, not repaired.
    """
    gaps = archive.gaps()
    mark = archive.high_water_mark()
    if mark is not None:
        settled = datetime.now(timezone.utc) - settings.settle
        live = server_gap(client, archive, mark, max(settled, mark), settings.retention)
        if live is not None and not any(since <= live[0] and live[1] <= until for since, until in gaps):
            gaps.append(live)
    return gaps

"""One sync: plan windows from the high-water mark, fetch them concurrently, commit them in order.

Windows are fetched by a small thread pool but written strictly in plan order, in batches; each
batch advances the mark to the end of its last window in the same transaction as its events, so
after a crash at any moment the mark never claims more than was written. The mark never passes
now − settle: the server stores events asynchronously and the newest seconds are still filling in.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from archiver.config import Settings
from archiver.errors import ArchiveError
from archiver.ingest.fetch import WindowResult, first_event_time
from archiver.ingest.first_read import range_end
from archiver.ingest.gaps import describe, find_gap
from archiver.ingest.logs import Harvest, harvest_logs
from archiver.ingest.metadata import refresh_objects
from archiver.ingest.prefetch import Prefetch, Unread
from archiver.ingest.reconcile import reconcile
from archiver.ingest.report import FetchResult, GapFound, Reads, SyncReport, TrailingReconcile, attach_report, outcome
from archiver.ingest.states import refresh_states
from archiver.ingest.stop import NEVER, StopToken
from archiver.prefect.client import PrefectClient, RequestCounts
from archiver.prefect.events import format_timestamp
from archiver.storage.writer import ArchiveWriter

log = logging.getLogger("archiver.ingest.sync")

# Commit at least this often during a long backfill, so a crash costs little and readers get in.
COMMIT_SECONDS = 5.0
# The most event text one write transaction carries, however few events that is: Prefect accepts
# events up to 1.5 MB, so 2,000 of them would be 3 GB, and one window's page of 50 up to 75 MB.
BATCH_BYTES = 8 * 1024 * 1024

# (events read so far, those plus what the server says is still to read)
Progress = Callable[[int, int], None]


class _Committer:
    """Collects fetched windows in plan order and writes them in batches with the mark."""

    def __init__(self, archive: ArchiveWriter, run: LedgerRun, mark: datetime | None, commit_every: int,
                 progress: Progress | None, unread: Unread) -> None:
        self.archive = archive
        self.run = run
        self.mark = mark
        self.commit_every = commit_every
        self.ledger_id = run.ledger_id
        self.progress = progress
        self.unread = unread
        self.batch: list[WindowResult] = []
        self.batch_events = 0
        self.batch_bytes = 0
        self.batch_mark: datetime | None = None
        self.last_flush = time.monotonic()

    def add(self, result: WindowResult) -> None:
        self.batch.append(result)
        self.batch_events += len(result.events)
        self.batch_bytes += sum(e.size for e in result.events) + sum(len(m.raw) for m in result.malformed)
        self.unread.read(result.window)
        self.run.add(FetchResult(1, Reads(fetched=len(result.events) + len(result.malformed))))
        # Only a window that starts at or before the mark extends the contiguous archived range.
        if self.mark is None or result.window.since <= self.mark:
            self.mark = max(self.mark or result.window.end, result.window.end)
            self.batch_mark = self.mark
        if (self.batch_events >= self.commit_every or self.batch_bytes >= BATCH_BYTES
                or time.monotonic() - self.last_flush >= COMMIT_SECONDS):
            self.flush()

    def flush(self) -> None:
        if not self.batch and self.batch_mark is None:
            return
        events = [e for r in self.batch for e in r.events]
        malformed = [m for r in self.batch for m in r.malformed]
        # Past BATCH_BYTES, the leading events go in transactions of their own without the mark
        # (written but not claimed: idempotent), and the mark moves with the last of them.
        chunks, size, start = [], 0, 0
        for i, event in enumerate(events):
            if size and size + event.size > BATCH_BYTES:
                chunks.append(events[start:i])
                size, start = 0, i
            size += event.size
        for chunk in chunks:
            self.run.add(FetchResult(reads=Reads.written(0, self.archive.write_batch(chunk, ledger_id=self.ledger_id))))
        last = self.archive.write_batch(events[start:], malformed, mark=self.batch_mark, ledger_id=self.ledger_id)
        self.run.add(FetchResult(reads=Reads.written(0, last)))
        for item in malformed:
            log.warning("quarantined an item the server sent (%s): event id %s", item.reason, item.event_id)
        self.batch, self.batch_mark, self.batch_events, self.batch_bytes = [], None, 0, 0
        self.last_flush = time.monotonic()
        if self.progress:
            fetched = self.run.report.fetched
            self.progress(fetched, fetched + self.unread())


def _ingest_range(
    client: PrefectClient,
    archive: ArchiveWriter,
    since: datetime,
    end: datetime,
    *,
    run: LedgerRun,
    mark: datetime | None,
    concurrency: int = 4,
    commit_every: int = 2000,
    progress: Progress | None = None,
    stop: StopToken = NEVER,
    prefetch: Prefetch | None = None,
) -> None:
    """Fetch and write every event with occurred in [since, end), moving the mark as it goes; each
    window read and each batch written count in `run` at once, so a failure loses no count.

    The windows are read by a Prefetch (`prefetch`, when one already reads this range) and
    written here in plan order.
    """
    reading = prefetch or Prefetch(client, since, end, concurrency=concurrency, stop=stop)
    committer = _Committer(archive, run, mark, commit_every, progress, reading.unread)
    # Batches follow each other as fast as they are written: keep the file between them (a
    # hold lets go by itself while the writer waits for fetching).
    with archive.holding():
        try:
            for result in reading.results():
                committer.add(result)
        except BaseException as failure:
            # Keep the complete windows already fetched in order, then report the original error
            # (unless writing was what failed: then trying again now would only fail again).
            reading.abandon()
            if not isinstance(failure, ArchiveError):
                try:
                    committer.flush()
                except Exception as exc:  # one line: the original error is what the caller reports
                    log.warning("could not write the windows fetched before the failure: %s", exc)
            raise
        else:
            committer.flush()
        finally:
            reading.close()


def sync(
    settings: Settings,
    client: PrefectClient,
    archive: ArchiveWriter,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    stop: StopToken = NEVER,
    now: datetime | None = None,
    reconcile_trailing: bool = True,
    prefetch: Prefetch | None = None,
) -> SyncReport:
    """Bring the archive up to now − settle (or `until`), then reconcile the trailing horizon.

    `reconcile_trailing=False` skips the reconcile, for a service told to run it on its own
    interval (schedule.reconcile_every; trailing_reconcile below). Before reading, a sync that
    continues from the mark looks for a stretch the server trimmed first (gaps.py). Setting
    `stop` ends the sync after the batch in hand is committed; the report's outcome is then
    "interrupted". A sync that raises leaves its report, as far as it got, on the exception
    (report.partial_report). `prefetch`, started by the caller (the CLI, before the archive was
    open), is used if it reads the range this sync reads, and closed either way.
    """
    try:
        return _sync(settings, client, archive, since=since, until=until, progress=progress, stop=stop,
                     now=now or datetime.now(timezone.utc), reconcile_trailing=reconcile_trailing, prefetch=prefetch)
    finally:
        if prefetch is not None:
            prefetch.close()


def _sync(settings: Settings, client: PrefectClient, archive: ArchiveWriter, *, since: datetime | None,
          until: datetime | None, progress: Progress | None, stop: StopToken, now: datetime,
          reconcile_trailing: bool, prefetch: Prefetch | None) -> SyncReport:
    end = range_end(settings, until, now)
    # One open of the archive for each run of transactions with no wait between them (the ledger,
    # the mark, passes with nothing to do); a hold lets go by itself while the sync waits.
    with archive.holding():
        mark = archive.high_water_mark()
        counted_from = prefetch.requests_before if prefetch is not None else None
        with ledger_run(client, archive, "sync", since, end, stop, counted_from) as run:
            start = since or mark or settings.start
            if start is None:
                start = first_event_time(client, end, settings.retention)
            if since is None:
                gap = _check_gaps(settings, client, archive, run.ledger_id, start, mark, now, end)
                run.set(gaps=(gap,) if gap else ())
            if start is not None and start < end:
                run.set(since=format_timestamp(start), until=format_timestamp(end))
                _ingest_range(
                    client, archive, start, end, run=run, mark=mark,
                    concurrency=settings.concurrency, commit_every=settings.commit_every,
                    progress=progress, stop=stop,
                    prefetch=prefetch if prefetch is not None and prefetch.covers(start, end) else None,
                )
            elif start is None and mark is None:
                # The server holds no events at all: everything before `end` is archived (trivially).
                archive.advance_mark(end)
            new_mark = archive.high_water_mark()
            if reconcile_trailing and new_mark is not None and not stop.stopped:
                run.reconciled(_reconcile_behind(settings, client, archive, new_mark, run, stop, progress))
            if not stop.stopped:
                run.set(objects_refreshed=refresh_objects(client, archive, stop=stop).total)
            if not stop.stopped:
                states = refresh_states(client, archive, concurrency=settings.concurrency, stop=stop)
                run.set(runs_states_read=states.runs_read, states_saved=states.states_saved)
            if not stop.stopped:
                harvested = harvest_logs(client, archive, Harvest.of(settings), concurrency=settings.concurrency, stop=stop)
                run.set(log_runs_read=harvested.runs_read, logs_inserted=harvested.logs_inserted,
                        artifacts_saved=harvested.artifacts_saved)
            run.set(high_water_mark=format_timestamp(new_mark) if new_mark else None)
    return run.report


def trailing_reconcile(
    settings: Settings, client: PrefectClient, archive: ArchiveWriter, *, stop: StopToken = NEVER,
) -> SyncReport:
    """Reconcile ingest.reconcile_horizon behind the mark on its own (schedule.reconcile_every)."""
    mark = archive.high_water_mark()
    with ledger_run(client, archive, "reconcile", None, mark, stop) as run:
        if mark is not None:
            run.reconciled(_reconcile_behind(settings, client, archive, mark, run, stop))
        run.set(high_water_mark=format_timestamp(mark) if mark else None)
    return run.report


@contextmanager
def ledger_run(client: PrefectClient, archive: ArchiveWriter, kind: str, since: datetime | None,
               until: datetime | None, stop: StopToken = NEVER,
               requests_before: RequestCounts | None = None) -> Iterator[LedgerRun]:
    """One run in the `syncs` ledger (sync, reconcile, verify): started here, finished with the
    report's counts and outcome however it ends (report.outcome: "interrupted" by a stop, "failed"
    by an error, else "ok"). An exception leaves with the report attached (report.partial_report).
    Its requests are those sent since `requests_before` (a Prefetch's, started earlier), else since now."""
    started = time.monotonic()
    requests_before = requests_before if requests_before is not None else client.requests()
    run = LedgerRun(archive.start_run(kind, since, until))
    failure: BaseException | None = None
    try:
        yield run
    except BaseException as exc:
        failure = exc
        raise
    finally:
        sent = client.requests() - requests_before
        run.set(seconds=round(time.monotonic() - started, 3), pages=sent.pages, counts=sent.counts,
                outcome=outcome(stop, failure))
        error = f"{type(failure).__name__}: {failure}" if failure is not None else None
        try:
            archive.finish_run(run.ledger_id, run.report.ledger_counters(), run.report.outcome, error)
        except Exception as exc:  # the ledger must not hide the error that got us here
            log.warning("could not record the end of run %s in the ledger: %s", run.ledger_id, exc)
        if failure is not None:
            attach_report(failure, run.report)


class LedgerRun:
    """One run in the `syncs` ledger (sync, reconcile, verify) and the report its passes add up to.

    The passes return frozen results; this adds them up as they come, so however the run ends
    the ledger row, and the caller, get the counts of what was committed.
    """

    def __init__(self, ledger_id: uuid.UUID) -> None:
        self.ledger_id = ledger_id
        self._decided = SyncReport(run_id=str(ledger_id))  # `sync --json` names the ledger row run_id
        # Added up apart from the report: a backfill adds a window at a time (tens of thousands).
        self._fetched = FetchResult()

    @property
    def report(self) -> SyncReport:
        """The run's report as it stands."""
        decided, fetched = self._decided, self._fetched
        reads = fetched.reads
        return replace(decided, windows=decided.windows + fetched.windows, fetched=decided.fetched + reads.fetched,
                       inserted=decided.inserted + reads.inserted, duplicates=decided.duplicates + reads.duplicates,
                       conflicts=decided.conflicts + reads.conflicts,
                       quarantined=decided.quarantined + reads.quarantined)

    def set(self, **fields: Any) -> None:
        """Fields a pass decides outright (its bounds, the mark, a count it returned)."""
        self._decided = replace(self._decided, **fields)

    def add(self, fetched: FetchResult) -> None:
        """Windows read and batches written: they add to what the run read before."""
        self._fetched += fetched

    def reconciled(self, trailing: TrailingReconcile) -> None:
        """A reconcile behind the mark: its reads count like the sync's, its late events as repaired."""
        decided = self._decided
        self.add(FetchResult(reads=trailing.reads))
        self.set(since=decided.since or format_timestamp(trailing.since),
                 until=decided.until or format_timestamp(trailing.until),
                 reconciled=decided.reconciled + trailing.differing,
                 repaired=decided.repaired + trailing.reads.inserted,
                 reconcile_requests=decided.reconcile_requests + trailing.requests,
                 reconcile_seconds=round(decided.reconcile_seconds + trailing.seconds, 3))


def _reconcile_behind(settings: Settings, client: PrefectClient, archive: ArchiveWriter, mark: datetime,
                      run: LedgerRun, stop: StopToken, progress: Progress | None = None) -> TrailingReconcile:
    """Reconcile ingest.reconcile_horizon behind the mark, repairing what the archive lacks."""
    floor = mark - settings.reconcile_horizon
    if settings.start:
        floor = max(floor, settings.start)
    started, requests_before, read_before = time.monotonic(), client.requests(), run.report.fetched

    def show(read: int, left: int) -> None:
        if progress is not None:
            progress(read_before + read, read_before + read + left)

    rec = reconcile(client, archive, floor, mark, repair=True, ledger_id=run.ledger_id, stop=stop, progress=show)
    return TrailingReconcile(floor, mark, rec.differing, rec.reads, (client.requests() - requests_before).total,
                             time.monotonic() - started)


def _check_gaps(settings: Settings, client: PrefectClient, archive: ArchiveWriter, ledger_id: uuid.UUID,
                start: datetime | None, mark: datetime | None, now: datetime, end: datetime) -> GapFound | None:
    """Record and say loudly any stretch the server may have trimmed before the archive reached it."""
    found = find_gap(client, archive, start, mark, now, end, settings.retention, settings.start is not None)
    if found is None:
        return None
    (since, until), why = found
    archive.record_gap(since, until, ledger_id)
    log.error("GAP: %s (%s)", describe(format_timestamp(since), format_timestamp(until)), why)
    return GapFound(since, until, why)

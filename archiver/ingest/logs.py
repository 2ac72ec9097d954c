"""Run logs and artifacts: read each run's from the server once it has logged, and keep them.

Driven by what the archive already has: the metadata pass (ingest.metadata) has just read every
flow run and task run a new event named, with its state, so the runs to read are those that
reached a state in which they may have logged (RUNNING on) and whose state is newer than their
last read knew, plus those not settled yet. A running run is read incrementally (from its
progress mark); an ended one is read again on every sync until `logs.horizon` after it ended
(its process ships the last batches after the final state), then it is settled and left alone
until its state changes again (a retry). Each page of logs is written with the run's progress
mark in one transaction, so a sync killed at any moment resumes from the last page written and
doubles nothing (ids are primary keys). The mark never passes now - ingest.settle, because the
server stores logs as clients ship them, seconds behind their timestamps. A run the server no
longer has answers no logs and keeps what was archived.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from archiver.config import Settings
from archiver.ingest.stop import NEVER, StopToken
from archiver.prefect.client import PrefectClient
from archiver.prefect.logs import artifacts_body, parse_artifact, walk_logs
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage.logs import Artifact, Log, LogMark, LogRun
from archiver.storage.writer import ArchiveWriter

log = logging.getLogger("archiver.ingest.logs")

# Runs planned at a time. The first sync over an archive made before logs has every run to read
# (two requests or more each): it reads them all, one batch after another, so what it holds stays
# one batch however large the archive; each run's logs commit with its mark, so a sync killed
# part way resumes with the runs not yet settled.
RUNS_PER_BATCH = 1_000
# As the states pass: runs archived since the previous pass began, less this for clocks stepping back.
CURSOR_MARGIN = timedelta(minutes=5)
# The longest read logs wait to be written (ingest.commit_every bounds how many go in one
# transaction): a crash costs at most this much reading again; what is written is never read twice.
COMMIT_SECONDS = 5.0
# At this level or below the server is asked for every log (DEBUG "keeps all", custom levels too).
DEBUG = 10
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class LogsReport:
    """Runs whose logs and artifacts were read, and what was new, in one pass or one run."""

    runs_read: int = 0
    logs_inserted: int = 0
    artifacts_saved: int = 0  # new, or replaced by a newer version
    requests: int = 0

    def __add__(self, other: LogsReport) -> LogsReport:
        return LogsReport(self.runs_read + other.runs_read, self.logs_inserted + other.logs_inserted,
                          self.artifacts_saved + other.artifacts_saved, self.requests + other.requests)


@dataclass(frozen=True)
class Harvest:
    """What to read: from the settings (logs.level, logs.artifacts, logs.horizon, ingest.settle)."""

    level: int | None  # None: no logs
    artifacts: bool
    horizon: timedelta
    settle: timedelta
    commit_every: int = 2000  # logs per write transaction at most (ingest.commit_every)

    @classmethod
    def of(cls, settings: Settings) -> Harvest:
        return cls(settings.log_level, settings.artifacts, settings.logs_horizon, settings.settle, settings.commit_every)

    @property
    def enabled(self) -> bool:
        return self.level is not None or self.artifacts

    @property
    def level_ge(self) -> int | None:
        """The level filter sent to the server: none for DEBUG, which keeps every log."""
        return None if self.level is None or self.level <= DEBUG else self.level


def read_artifacts(client: PrefectClient, run: LogRun) -> list[Artifact]:
    """Every artifact of the run, by offset pages of the server's size (a run has few)."""
    size = client.log_page_size()
    found: list[Artifact] = []
    offset = 0
    while True:
        items = client.read_artifacts(artifacts_body(run.run_kind, run.run_id, size, offset))
        found += [a for a in (parse_artifact(i) for i in items) if a is not None]
        offset += len(items)
        if len(items) < size:
            return found


def _gone(client: PrefectClient, run: LogRun) -> bool:
    """True when the server no longer has the run (deleted, or trimmed by its retention)."""
    return not client.read_objects(kind_of(run.run_kind).collection, [run.run_id])


def harvest_run(client: PrefectClient, archive: ArchiveWriter, run: LogRun, what: Harvest, *,
                now: datetime | None = None, stop: StopToken = NEVER) -> LogsReport:
    """Read one run's logs from its mark and its artifacts, writing pages with the run's mark.

    Pages are written ingest.commit_every lines (or COMMIT_SECONDS) at a time, each write carrying the
    mark of its last page: one transaction per 200-line page cost ~75 ms on DuckDB (the file's
    indexes and checkpoint), ten times a 2,000-line one's share.
    """
    read_at = now or datetime.now(timezone.utc)
    ended = run.ended
    settles = ended is not None and read_at >= ended + what.horizon
    cap = read_at - what.settle  # logs newer than this may still be arriving: read them again next time
    after = run.logs_after
    inserted = requests = 0
    pending: list[Log] = []
    flushed = time.monotonic()

    def flush() -> None:
        nonlocal inserted, flushed
        mark = LogMark(run.run_kind, run.run_id, after, run.state_timestamp, ended, read_at, settled=False)
        inserted += archive.save_logs(pending, mark).inserted
        pending.clear()
        flushed = time.monotonic()

    if what.level is not None:
        for page in walk_logs(client.read_logs, run.run_kind, run.run_id, run.logs_after, what.level_ge,
                              client.log_page_size()):
            requests += page.requests
            if page.resume_after is not None:
                after = min(page.resume_after, cap)
            pending += page.logs
            if len(pending) >= what.commit_every or time.monotonic() - flushed >= COMMIT_SECONDS or stop.stopped:
                flush()
            if stop.stopped:
                return LogsReport(1, inserted, 0, requests)
        if pending:
            flush()
    artifacts: list[Artifact] = []
    if what.artifacts:
        artifacts = read_artifacts(client, run)
        requests += 1
    if not settles and ended is None and inserted == 0 and _gone(client, run):
        # Its metadata still says it runs, but the server no longer has it: nothing more will come.
        log.info("the server no longer has %s %s; the archive keeps what it has", kind_of(run.run_kind).words,
                 run.run_id)
        settles = True
    mark = LogMark(run.run_kind, run.run_id, after, run.state_timestamp, ended, read_at, settled=settles)
    counts = archive.save_artifacts(artifacts, mark)
    return LogsReport(1, inserted, counts.inserted + counts.conflicts, requests)


def harvest_logs(client: PrefectClient, archive: ArchiveWriter, what: Harvest, *, concurrency: int = 4,
                 batch: int | None = None, stop: StopToken = NEVER) -> LogsReport:
    """Read the logs and artifacts of every run that needs it (module docstring) and archive them,
    `batch` (RUNS_PER_BATCH) runs planned at a time; the pass's cursor moves once every batch is read."""
    if not what.enabled:
        return LogsReport()
    batch = batch or RUNS_PER_BATCH
    planned_at = datetime.now(timezone.utc)
    with archive.holding():
        cursor = archive.logs_cursor()
    since = cursor - CURSOR_MARGIN if cursor is not None else EARLIEST
    report = LogsReport()

    def one(run: LogRun) -> LogsReport:
        if stop.stopped:
            return LogsReport()
        return harvest_run(client, archive, run, what, stop=stop)

    after: tuple[str, str] | None = None
    # Between two writes the harvest waits for the server (several pages, and retries): a hold
    # around it (sync's) lets go of the file meanwhile, so readers get in (DuckDBWriter.holding).
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="logs") as pool:
        while not stop.stopped:
            runs = archive.pending_log_runs(since, batch, after)
            if runs:
                log.info("reading the logs and artifacts of %d flow and task runs%s", len(runs),
                         f" (after {report.runs_read} already)" if report.runs_read else "")
            for done in pool.map(one, runs):
                report += done
            if len(runs) < batch:
                break
            after = (runs[-1].run_kind, runs[-1].run_id)
    if not stop.stopped:
        archive.advance_logs_cursor(planned_at)
    return report

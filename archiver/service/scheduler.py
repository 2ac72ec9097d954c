"""`prefect-archiver run`: sync on a schedule, for months, with one writer and a heartbeat.

APScheduler (3.x) runs interval jobs — sync (schedule.every, with the trailing reconcile inside
it by default, so late events arrive within two intervals), the trailing reconcile on its own if
schedule.reconcile_every is set, and a full verify --repair over the retained range
(schedule.verify_every) — on ONE worker thread, so they never overlap each other; max_instances=1
and coalesce=True turn runs missed while one was busy into a single later run, and
misfire_grace_time=None keeps a late run instead of dropping it (APScheduler's default of 1 s
drops it). The sync lock is held for the service's whole life: a second service or a manual
sync is refused with a message naming this pid, instead of both taking turns behind each other's
backs. The main thread only writes the heartbeat and waits for SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from archiver.config import Settings
from archiver.errors import ArchiverError
from archiver.ingest.logs import Harvest
from archiver.ingest.report import SyncReport, outcome, partial_report
from archiver.ingest.stop import StopToken
from archiver.ingest.sync import sync, trailing_reconcile
from archiver.ingest.verify import verify
from archiver.ingest.verify_logs import LogVerification, verify_logs
from archiver.prefect.client import client_for
from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.service.heartbeat import read_heartbeat, write_heartbeat
from archiver.service.metrics import Metrics
from archiver.service.stop import StopSignals
from archiver.storage import open_archive
from archiver.storage.writer import ArchiveWriter

log = logging.getLogger("archiver.service.scheduler")

# After a stop is asked for, the current job has this long to commit and end; then the process
# exits anyway (as safe as SIGKILL: an uncommitted batch is simply not there).
STOP_SECONDS = 20.0
HEARTBEAT_SECONDS = 15.0


def backoff(every: timedelta, failures: int, cap: timedelta) -> timedelta:
    """Wait before the next sync after `failures` consecutive failures: every, 2×, 4× … up to cap."""
    if failures <= 1:
        return every
    grown: timedelta = every * 2 ** min(failures - 1, 30)
    return min(grown, max(every, cap))


class Service:
    """One `prefect-archiver run` process."""

    def __init__(self, settings: Settings, metrics_at: tuple[str, int] | None = None, verbose: bool = False) -> None:
        self.settings = settings
        self.metrics_at = metrics_at
        self.metrics: Metrics | None = None
        self.verbose = verbose
        self.stop = StopToken()
        self._job_lock = threading.Lock()  # held while a job runs: stopping waits on it
        self._heartbeat_lock = threading.Lock()
        self.client = client_for(settings, sleep=self.stop.sleep)
        self.failures = 0
        self._log_verification: LogVerification | None = None  # the last verify job's, for its log line
        self.heartbeat_every = min(HEARTBEAT_SECONDS, max(settings.every.total_seconds(), 1.0))
        self.archive = open_archive(settings.archive_url)
        self.heartbeat_file = self.archive.heartbeat_path
        self.lock = self.archive.writer_lock(settings.lock_timeout, holder="run")
        self._heartbeat_failing = False
        previous = read_heartbeat(self.heartbeat_file) or {}
        now = _now()
        self.heartbeat: dict[str, Any] = {
            "pid": os.getpid(), "host": socket.gethostname(), "started": format_timestamp(now),
            "heartbeat_every": self.heartbeat_every, "every": settings.every.total_seconds(),
            "job": None, "job_started": None, "consecutive_failures": 0, "last_sync": None,
            "last_reconcile": previous.get("last_reconcile"), "last_verify": previous.get("last_verify"),
        }
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )

    # -- the process -----------------------------------------------------------------------------

    def run(self) -> int:
        """Hold the archive, schedule the jobs, beat until stopped; 0 after a clean stop."""
        with StopSignals(self.stop, exit_at_once=True) as signals, self.lock:
            # After the lock: a second service is refused for what it is, not for the metrics port.
            self.metrics = Metrics(self.metrics_at[1], self.metrics_at[0]) if self.metrics_at else None
            try:
                return self._serve(signals)
            finally:
                if self.metrics is not None:
                    self.metrics.close()

    def _serve(self, signals: StopSignals) -> int:
        settings = self.settings
        now = _now()
        self.scheduler.add_job(self._sync_job, "interval", seconds=settings.every.total_seconds(),
                               next_run_time=now, id="sync")
        if settings.reconcile_every:
            self.scheduler.add_job(self._reconcile_job, "interval", id="reconcile",
                                   seconds=settings.reconcile_every.total_seconds(),
                                   next_run_time=self._first_run("last_reconcile", settings.reconcile_every, now))
        if settings.verify_every:
            self.scheduler.add_job(self._verify_job, "interval", id="verify",
                                   seconds=settings.verify_every.total_seconds(),
                                   next_run_time=self._first_run("last_verify", settings.verify_every, now))
        self.scheduler.start()
        log.info("service started: syncing %s every %s (pid %d)", self.archive.name, settings.every, os.getpid(),
                 extra={"fields": {"event": "started", "every_seconds": settings.every.total_seconds()}})
        self._beat()
        while not self.stop.wait(self.heartbeat_every):
            self._beat()
        log.info("stopping on %s: letting the current job commit (at most %.0fs)", signals.received or "request",
                 STOP_SECONDS, extra={"fields": {"event": "stopping"}})
        # Wait for the job here, not in shutdown(wait=True): that holds the scheduler's job-store
        # lock while it waits, and a job ending reads its next run time under that same lock.
        self.scheduler.pause()
        ended = self._job_lock.acquire(timeout=STOP_SECONDS)
        if ended:
            self._job_lock.release()
            self.scheduler.shutdown(wait=False)
        self._write_heartbeat(job=None, stopped=format_timestamp(_now()))
        self.client.close()
        if not ended:
            log.warning("the current job did not end within %.0fs; exiting without it (committed batches are kept)",
                        STOP_SECONDS)
            sys.stderr.flush()
            os._exit(0)
        log.info("service stopped", extra={"fields": {"event": "stopped"}})
        return 0

    def _first_run(self, last_key: str, every: timedelta, now: datetime) -> datetime:
        # Across restarts: a daily verify stays daily instead of running (or never running) at each start.
        last = self.heartbeat.get(last_key)
        due = parse_timestamp(last) + every if last else now + every
        return max(due, now + timedelta(seconds=1))

    def _beat(self) -> None:
        def next_run(job_id: str) -> str | None:
            job = self.scheduler.get_job(job_id)
            return format_timestamp(job.next_run_time) if job is not None and job.next_run_time else None

        beat = {"heartbeat": format_timestamp(_now()), "next_sync": next_run("sync"),
                "next_reconcile": next_run("reconcile"), "next_verify": next_run("verify")}
        self._write_heartbeat(**beat)

    def _write_heartbeat(self, **changes: Any) -> None:
        # The main thread beats while a job reports: one writer of the dict and the file at a time.
        try:
            with self._heartbeat_lock:
                self.heartbeat.update(changes)
                write_heartbeat(self.heartbeat_file, self.heartbeat)
        except OSError as exc:  # the heartbeat must never stop the archiving
            log.warning("could not write the heartbeat file %s: %s", self.heartbeat_file, exc.strerror)
            if not self._heartbeat_failing:  # `status` reads why with the writer lock (WriterLock.note)
                self._heartbeat_failing = self.lock.note(f"{exc.strerror or exc} ({self.heartbeat_file})")
        else:
            if self._heartbeat_failing:
                self._heartbeat_failing = not self.lock.note(None)

    # -- jobs --------------------------------------------------------------------------------------

    def _sync_job(self) -> None:
        separate = bool(self.settings.reconcile_every)
        self._job("sync", lambda archive: sync(self.settings, self.client, archive, stop=self.stop,
                                               reconcile_trailing=not separate))

    def _reconcile_job(self) -> None:
        self._job("reconcile", lambda archive: trailing_reconcile(self.settings, self.client, archive, stop=self.stop))

    def _verify_job(self) -> None:
        def work(archive: ArchiveWriter) -> SyncReport:
            found = verify(self.settings, self.client, archive, repair=True, stop=self.stop)
            if found is None or found.report is None:  # the server holds nothing to compare
                return SyncReport(outcome=outcome(self.stop))
            if self.stop.stopped:
                return found.report
            # Then each run's logs, as `verify --repair` does, for the runs that ended in the range the
            # server still holds: log_runs_read says how many were compared, logs_inserted how many
            # logs the repair added (the job's log line says which runs differed).
            logs = verify_logs(self.client, self.archive.reader(self.settings.read_timeout), Harvest.of(self.settings),
                               found.since, found.until, writer=archive)
            self._log_verification = logs
            return replace(found.report, log_runs_read=logs.runs,
                           logs_inserted=found.report.logs_inserted + logs.repaired_logs)

        self._log_verification = None
        self._job("verify", work)

    def _job(self, job: str, work: Callable[[ArchiveWriter], SyncReport]) -> None:
        """Run one job; never raise (APScheduler would only log it), log one line, update the heartbeat."""
        with self._job_lock:
            if not self.stop.stopped:
                self._run_job(job, work)

    def _run_job(self, job: str, work: Callable[[ArchiveWriter], SyncReport]) -> None:
        started = time.monotonic()
        with self._heartbeat_lock:
            self.heartbeat.update(job=job, job_started=format_timestamp(_now()))
        self._beat()
        error: str | None = None
        writer: ArchiveWriter | None = None
        try:
            writer = self.archive.writer(self.settings.read_timeout)
            report = work(writer)
        except Exception as exc:  # a stop while waiting to retry (Stopped) is "interrupted", with no error
            report = partial_report(exc)  # what it committed still counts (log line, metrics)
            if report.outcome == "failed":
                error = str(exc) if isinstance(exc, ArchiverError) else f"unexpected {type(exc).__name__}: {exc}"
            if self.verbose and not isinstance(exc, ArchiverError):  # unforeseen: the traceback with -v
                log.exception("details of the failed %s", job)
        mark = self._mark(writer)
        if writer is not None:
            writer.close()
        lag = round((_now() - mark).total_seconds(), 1) if mark else None
        finished = format_timestamp(_now())
        retry = ""
        if job == "sync":
            retry = self._after_sync(report, error, finished, lag)
        elif report.outcome == "ok":
            with self._heartbeat_lock:
                self.heartbeat[f"last_{job}"] = finished
        self._log(job, report, lag, time.monotonic() - started, error, retry)
        if self.metrics is not None:
            if report.outcome == "ok":
                self.metrics.succeeded(job, report.inserted, lag)
            else:  # failed, or interrupted by a stop: what it inserted still counts
                self.metrics.failed(job, report.inserted, lag, counted=report.outcome == "failed")
        with self._heartbeat_lock:
            self.heartbeat.update(job=None, job_started=None)
        self._beat()

    @staticmethod
    def _mark(writer: ArchiveWriter | None) -> datetime | None:
        try:
            return writer.high_water_mark() if writer is not None else None
        except ArchiverError:  # the archive is what failed: the lag is unknown this time
            return None

    def _after_sync(self, report: SyncReport, error: str | None, finished: str, lag: float | None) -> str:
        """Record the sync in the heartbeat; after a failure, back off. Returns when the next try is."""
        last_sync = {"finished": finished, "outcome": report.outcome, "inserted": report.inserted,
                     "lag_seconds": lag, "error": error}
        retry = ""
        if report.outcome != "failed":
            self.failures = 0
        else:
            self.failures += 1
            delay = backoff(self.settings.every, self.failures, self.settings.max_backoff)
            if self.failures > 1 and not self.stop.stopped:
                self.scheduler.modify_job("sync", next_run_time=_now() + delay)
            retry = f"; next try in {delay.total_seconds():.0f}s ({self.failures} failed in a row)"
        with self._heartbeat_lock:
            self.heartbeat.update(last_sync=last_sync, consecutive_failures=self.failures)
        return retry

    def _log(self, job: str, report: SyncReport, lag: float | None, seconds: float, error: str | None,
             retry: str) -> None:
        fields = {"event": job, **report.log_fields(), "lag_seconds": lag, "seconds": round(seconds, 3),
                  "error": error, "consecutive_failures": self.failures if job == "sync" else None}
        windows = f"{report.windows} window{'' if report.windows == 1 else 's'}"
        text = (f"{job} {report.outcome}: {windows}, {report.fetched} fetched, {report.inserted} inserted, "
                f"{report.reconciled} buckets reconciled, lag {'-' if lag is None else f'{lag:.0f}s'}, {seconds:.1f}s")
        checked = self._log_verification if job == "verify" else None
        if checked is not None:
            for d in checked.diffs:
                log.warning("verify: %s %s: archive %s", d.run_kind.replace("_", " "), d.run_id, d.describe(),
                            extra={"fields": {"event": "verify_logs", **d.as_json()}})
            fields["log_runs_differing"] = len(checked.missing)
            text += (f"; logs of {checked.runs} runs compared, {len(checked.missing)} lacked logs or artifacts, "
                     f"{checked.repaired_logs} logs repaired")
        if error:
            log.error("%s — %s%s", text, error, retry, extra={"fields": fields})
        else:
            log.info("%s", text, extra={"fields": fields})


def _now() -> datetime:
    return datetime.now(timezone.utc)

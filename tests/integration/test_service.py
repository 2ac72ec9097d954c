"""`prefect-archiver run` in real processes against the real server: schedule, one writer, stop, outages."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from archiver.errors import ArchiveError
from archiver.prefect.events import format_timestamp
from archiver.service.heartbeat import service_status, write_heartbeat
from archiver.service.scheduler import backoff
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb.connect import open_reader
from archiver.storage.duckdb.lock import lock_holder
from tests.prefect_server import free_port, make_event, post_events, server_count, server_event_ids, wait_until_stored
from tests.support import BACKENDS, ROOT, Forwarder, archive_status, archived_ids, cli_env, query, run_cli, write_config

UTC = timezone.utc
SECRET_KEY = "pnu_archiver-test-key-do-not-log-7f3a"
SECRET_AUTH = "admin:hunter2-do-not-log"


class Service:
    """A `prefect-archiver run` process whose stderr goes to a file the test reads as it grows."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, preexec: Callable[[], None] | None = None):
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "archiver", "run", *args], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=self._err, text=True, preexec_fn=preexec,
        )

    @property
    def text(self) -> str:
        return self.log.read_text()

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            assert self.proc.poll() is None, f"the service exited ({self.proc.returncode}):\n{self.text}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or condition}:\n{self.text}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 25) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._err.close()
        return code, time.monotonic() - started


def read_live(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Query the archive while a service may be committing (retrying on DuckDB's lock)."""
    conn = open_reader(db, timedelta(seconds=10))
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def mark_of(db: Path) -> str | None:
    try:
        return archive_status(db, timedelta(seconds=10))["high_water_mark"]
    except ArchiveError:  # not created yet
        return None


def post_and_wait(api: str, events: list[dict[str, Any]], since: datetime, until: datetime) -> None:
    before = server_count(api, since, until)
    post_events(api, events)
    wait_until_stored(api, since, until, before + len(events))


def assert_complete_below_mark(api: str, db: Path, since: datetime) -> datetime:
    """Every event the server holds with occurred in [since, mark) is archived, nothing more."""
    mark = datetime.fromisoformat(query(db, "SELECT high_water_mark FROM archive_state")[0][0].isoformat())
    below = timedelta(microseconds=1)
    assert archived_ids(db, since, mark - below) == server_event_ids(api, since, mark - below)
    return mark


def test_run_syncs_on_its_interval_one_run_at_a_time_and_tells_its_operator(prefect_server, tmp_path):
    api = prefect_server.api_url
    now = datetime.now(UTC)
    since = now - timedelta(minutes=30)
    post_and_wait(api, [make_event(since + timedelta(seconds=17 * i + 3), event="acme.service.seed") for i in range(60)],
                  since, now)
    db = tmp_path / "service.duckdb"
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(since)}"\nsettle = "2s"\n'
                          '[schedule]\nreconcile_every = "3s"\nverify_every = "5s"\n')
    env = cli_env(api, db, config, PREFECT_API_KEY=SECRET_KEY, PREFECT_API_AUTH_STRING=SECRET_AUTH)
    port = free_port()
    service = Service(["--every", "2s", "--log-format", "json", "--metrics-port", str(port)], env, tmp_path / "run.log")
    started = time.monotonic()
    try:
        service.wait_for(lambda: (service_status(DuckDBArchive(db)) or {}).get("last_sync"), what="a first sync")

        status = json.loads(run_cli(["status", "--json"], env).stdout)["service"]
        assert status["running"] and status["pid"] == service.proc.pid
        assert status["next_sync"] and status["heartbeat_age_seconds"] < 5
        text_status = run_cli(["status"], env).stdout
        assert f"running, pid {service.proc.pid}" in text_status and "next sync:        20" in text_status

        # One writer: a manual sync and a second service are refused, naming this one.
        for args in (["sync"], ["run", "--every", "2s"]):
            refused = run_cli(args, env, timeout=30)
            assert refused.returncode == 1, refused.stderr
            assert f"the prefect-archiver service (`prefect-archiver run`, pid {service.proc.pid}) holds {db}" in refused.stderr

        # An event arriving behind the mark is picked up by the trailing reconcile job.
        service.wait_for(lambda: (mark_of(db) or "") > format_timestamp(datetime.now(UTC) - timedelta(seconds=30)),
                         what="the mark to reach the present")
        late = make_event(datetime.now(UTC) - timedelta(minutes=10), event="acme.service.late")
        post_and_wait(api, [late], since, datetime.now(UTC))
        service.wait_for(lambda: read_live(db, "SELECT 1 FROM events WHERE id = $1", [late["id"]]),
                         timeout=20, what="the late event")

        # The metrics endpoint agrees with the archive.
        def scraped() -> dict[str, float]:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            return {line.split()[0]: float(line.split()[1]) for line in body.splitlines()
                    if line.startswith("prefect_archiver")}

        def archived() -> int:
            return int(read_live(db, "SELECT count(*) FROM events")[0][0])

        metrics = service.wait_for(lambda: (m := scraped())["prefect_archiver_events_archived_total"] == archived() and m,
                                   what="metrics to match the archive")
        assert metrics['prefect_archiver_sync_failures_total{job="sync"}'] == 0
        assert 0 < metrics["prefect_archiver_lag_seconds"] < 30
        assert abs(metrics["prefect_archiver_last_success_timestamp_seconds"] - time.time()) < 30
        # Four syncs at least (a first at once, then one per interval) and 9 s at least. Waited for
        # rather than counted after a fixed time: a loaded machine makes each job slower, and the
        # one job thread then runs fewer of them, which is no fault of the schedule.
        def synced() -> int:
            return int(read_live(db, "SELECT count(*) FROM syncs WHERE kind = 'sync' AND finished IS NOT NULL")[0][0])

        service.wait_for(lambda: synced() >= 4 and time.monotonic() - started >= 9, timeout=120, what="four syncs")
    finally:
        code, took = service.stop()
    ran_for = time.monotonic() - started
    assert code == 0, service.text
    assert took < 20

    runs = query(db, "SELECT kind, started, finished, outcome FROM syncs ORDER BY started")
    assert all(finished is not None and outcome in ("ok", "interrupted") for _, _, finished, outcome in runs), runs
    for (_, _, finished, _), (_, next_started, _, _) in zip(runs, runs[1:], strict=False):
        assert finished <= next_started, "runs overlapped"
    kinds = [kind for kind, *_ in runs]
    assert {"sync", "reconcile", "verify"} <= set(kinds)
    # Every 2 s: a first sync at once, then one per interval — not back to back, none skipped for long.
    assert 4 <= kinds.count("sync") <= ran_for / 2 + 2, kinds
    assert_complete_below_mark(api, db, since)

    lines = [json.loads(line) for line in service.lines()]  # every line is JSON
    syncs = [line for line in lines if line.get("event") == "sync"]
    assert len(syncs) == kinds.count("sync")
    for line in syncs:
        assert {"windows", "fetched", "inserted", "reconciled", "lag_seconds", "seconds", "outcome"} <= line.keys()
    assert sum(line["inserted"] for line in lines if line.get("event") in ("sync", "reconcile", "verify")) == \
        query(db, "SELECT count(*) FROM events")[0][0]
    for secret in (SECRET_KEY, SECRET_AUTH, "hunter2"):
        assert secret not in service.text and secret not in DuckDBArchive(db).heartbeat_path.read_text()

    after = run_cli(["status"], env).stdout
    assert "service:          not running (stopped at" in after


@pytest.mark.parametrize("backend", BACKENDS)
def test_by_default_every_sync_reconciles_so_a_late_event_arrives_with_the_next_syncs(prefect_server, tmp_path,
                                                                                      new_archive, backend):
    api = prefect_server.api_url
    since = datetime.now(UTC) - timedelta(minutes=40)
    post_and_wait(api, [make_event(since + timedelta(seconds=31 * i + 5), event="acme.every.seed") for i in range(40)],
                  since, datetime.now(UTC))
    db = new_archive(backend, tmp_path, "every")
    # No [schedule] reconcile_every: the default reconciles inside each sync.
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(since)}"\nsettle = "2s"\n')
    env = cli_env(api, db, config)
    service = Service(["--every", "2s", "--log-format", "json"], env, tmp_path / "run.log")
    try:
        service.wait_for(lambda: (mark_of(db) or "") > format_timestamp(datetime.now(UTC) - timedelta(seconds=30)),
                         what="the mark to reach the present")
        late = make_event(datetime.now(UTC) - timedelta(minutes=10), event="acme.every.late")
        post_and_wait(api, [late], since, datetime.now(UTC))
        service.wait_for(lambda: query(db, "SELECT 1 FROM events WHERE id = $1", [late["id"]]),
                         timeout=30, what="the late event")
    finally:
        code, _ = service.stop()
    assert code == 0, service.text
    kinds = {kind for (kind,) in query(db, "SELECT DISTINCT kind FROM syncs")}
    assert kinds == {"sync"}, kinds  # no separate reconcile job
    syncs = [json.loads(line) for line in service.lines() if json.loads(line).get("event") == "sync"]
    repairing = [line for line in syncs if line["repaired"]]
    assert [line["repaired"] for line in repairing] == [1], syncs
    # Every sync compared the trailing horizon; a quiet one costs a count-by request or two.
    assert all(line["reconcile_requests"] >= 1 for line in syncs if line["outcome"] == "ok")
    assert query(db, "SELECT count(*) FROM syncs WHERE kind = 'sync' AND reconciled_buckets >= 1")[0][0] >= 1


def history_config(tmp_path: Path, history: Any, per_minute: int = 600) -> Path:
    """A sync of the whole history that commits often, so it can be stopped part-way.

    Paced to ten requests a second by default (api.max_requests_per_minute), so it lasts seconds
    on any machine: unpaced, a backfill writes the ~2,000 events in about a second.
    """
    return write_config(tmp_path / f"archiver-{per_minute}.toml", f'start = "{format_timestamp(history.since)}"\n'
                        f'concurrency = 1\ncommit_every = 50\n[api]\nmax_requests_per_minute = {per_minute}\n')


def wait_for_mark_to_move(proc: subprocess.Popen[str], db: Path, past: str | None) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sync ended before it could be stopped part-way"
        mark = mark_of(db)
        if mark is not None and mark != past:
            return mark
        time.sleep(0.02)
    raise AssertionError("the mark never moved")


def test_sigterm_mid_sync_stops_cleanly_and_sigkill_loses_nothing(prefect_server, history, tmp_path):
    api = prefect_server.api_url
    db = tmp_path / "stop.duckdb"
    env = cli_env(api, db, history_config(tmp_path, history))
    until = ["--until", format_timestamp(history.end)]

    # The plain sync command: SIGTERM → the batch in hand commits, exit 0, the mark is honest.
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "sync", *until], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_mark_to_move(proc, db, None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped on SIGTERM: what was committed is kept" in err
    mark = assert_complete_below_mark(api, db, history.since)
    assert mark < history.end, "the stop should land part-way through the backfill"
    assert query(db, "SELECT outcome, finished IS NOT NULL FROM syncs ORDER BY started DESC LIMIT 1") == [("interrupted", True)]

    # The service, killed outright mid-sync: the lock dies with it, the archive stays consistent.
    killed = Service(["--every", "1m"], env, tmp_path / "killed.log")
    wait_for_mark_to_move(killed.proc, db, mark_of(db))
    code, _ = killed.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert_complete_below_mark(api, db, history.since)

    # The service, stopped with SIGTERM mid-sync: exit 0 quickly, the sync recorded as interrupted.
    # On an archive of its own, paced to 2.5 requests a second, so the whole backfill (~20 s) is
    # ahead of it when the signal lands: in CI (four busy workers) the poll below first got into the
    # file after a 10-requests-a-second backfill of 9 s had ended.
    fresh = tmp_path / "stopped.duckdb"
    stopped = Service(["--every", "1m"], cli_env(api, fresh, history_config(tmp_path, history, per_minute=150)),
                      tmp_path / "stopped.log")
    wait_for_mark_to_move(stopped.proc, fresh, None)
    code, took = stopped.stop(signal.SIGTERM)
    assert code == 0, stopped.text
    assert took < 20
    assert "stopping on SIGTERM" in stopped.text and "sync interrupted" in stopped.text, stopped.text
    assert "Traceback" not in stopped.text
    assert assert_complete_below_mark(api, fresh, history.since) < history.end
    assert query(fresh, "SELECT outcome FROM syncs WHERE kind = 'sync' ORDER BY started DESC LIMIT 1") == [("interrupted",)]

    final = run_cli(["sync", *until], env)
    assert final.returncode == 0, final.stderr
    on_server = server_event_ids(api, history.since, history.until)
    assert archived_ids(db, history.since, history.until) == on_server
    assert query(db, "SELECT count(*) = count(DISTINCT id) FROM events") == [(True,)]


def test_an_api_outage_backs_off_with_one_line_per_failure_then_catches_up(prefect_server, tmp_path):
    api = prefect_server.api_url
    now = datetime.now(UTC)
    since = now - timedelta(minutes=20)
    post_and_wait(api, [make_event(since + timedelta(seconds=23 * i + 1), event="acme.outage") for i in range(40)],
                  since, now)
    forwarder = Forwarder(int(httpx.URL(api).port or 0), free_port())
    db = tmp_path / "outage.duckdb"
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(since)}"\nsettle = "2s"\n'
                          '[api]\nmax_retries = 1\nmax_retry_time = "1s"\n'
                          '[schedule]\nreconcile_every = "0s"\nverify_every = "0s"\nmax_backoff = "4s"\n')
    service = Service(["--every", "1s"], cli_env(forwarder.api_url, db, config, PREFECT_API_KEY=SECRET_KEY),
                      tmp_path / "run.log")
    try:
        # Bounds for a loaded machine: four failures and their 1+2+4 s back-off took more than 30 s
        # in a full run here at load 15 (one failed sync took 10 s of process work before its first request).
        failed = service.wait_for(lambda: [line for line in service.lines() if "sync failed" in line][3:] and
                                  [line for line in service.lines() if "sync failed" in line], timeout=120,
                                  what="4 failed syncs")
        forwarder.on()
        service.wait_for(lambda: "sync ok" in service.text, timeout=60, what="a sync after the API came back")
        ids_match = lambda: archived_ids(db, since, now) == server_event_ids(api, since, now)  # noqa: E731
        service.wait_for(lambda: mark_of(db) and ids_match(), timeout=20, what="a complete archive")
    finally:
        code, _ = service.stop()
        forwarder.off()
    assert code == 0
    for line in failed:
        assert "kept failing (ConnectError)" in line and "is the Prefect server up" in line
    # Backing off: 1 s, then 2 s, then 4 s (the cap) between attempts.
    assert "next try in 1s (1 failed in a row)" in failed[0]
    assert "next try in 2s (2 failed in a row)" in failed[1]
    assert "next try in 4s (3 failed in a row)" in failed[2] and "next try in 4s (4 failed" in failed[3]
    # One line per failed sync: no retry chatter, no tracebacks, no key.
    for line in service.lines():
        assert line.startswith(("prefect-archiver: INFO: ", "prefect-archiver: ERROR: sync failed")), line
    assert "Traceback" not in service.text and SECRET_KEY not in service.text
    failures = query(db, "SELECT count(*) FROM syncs WHERE outcome = 'failed'")[0][0]
    assert failures == sum("sync failed" in line for line in service.lines())
    assert archived_ids(db, since, now) == server_event_ids(api, since, now)


def test_a_full_disk_fails_the_write_cleanly_and_the_next_sync_after_space_is_freed_completes(
        prefect_server, history, tmp_path):
    api = prefect_server.api_url
    db = tmp_path / "full.duckdb"
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(history.since)}"\n'
                          '[schedule]\nreconcile_every = "0s"\nverify_every = "0s"\nmax_backoff = "1s"\n')
    env = cli_env(api, db, config)
    first = run_cli(["sync", "--until", format_timestamp(history.since + timedelta(hours=2))], env)
    assert first.returncode == 0, first.stderr
    mark_before = mark_of(db)
    count_before = query(db, "SELECT count(*) FROM events")[0][0]

    def small_disk() -> None:
        # Files this process writes may not grow past 300 kB (EFBIG, as on a full disk); the hard
        # limit stays open so the test can "free space" by raising the soft limit from outside.
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))

    service = Service(["--every", "1s"], env, tmp_path / "run.log", preexec=small_disk)
    try:
        failed = service.wait_for(lambda: [line for line in service.lines() if "sync failed" in line][1:],
                                  what="two failed syncs")
        assert mark_of(db) == mark_before
        assert read_live(db, "SELECT count(*) FROM events")[0][0] == count_before
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        service.wait_for(lambda: "sync ok" in service.text, what="a sync once space was freed")
    finally:
        code, _ = service.stop()
    assert code == 0
    for line in failed:
        assert "File too large" in line
        assert "the transaction was rolled back, so the archive and its high-water mark are as they were" in line
    assert "Traceback" not in service.text
    assert archived_ids(db, history.since, history.until) == server_event_ids(api, history.since, history.until)


def test_the_prefect_flow_runs_the_same_sync(prefect_server, tmp_path):
    from tests.prefect_server import run_flows_script

    api = prefect_server.api_url
    now = datetime.now(UTC)
    since = now - timedelta(minutes=40)
    post_and_wait(api, [make_event(since + timedelta(seconds=31 * i), event="acme.flow.sync") for i in range(20)],
                  since, now)
    db = tmp_path / "flow.duckdb"
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(since)}"\n')
    result = run_flows_script(api, "import json\nfrom archiver.prefect_flow import archive_events\n"
                                   "print(json.dumps(archive_events()))\n",
                              env={"ARCHIVER_DB": str(db), "ARCHIVER_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "ok"
    mark = assert_complete_below_mark(api, db, since)
    assert report["inserted"] == len(archived_ids(db, since, mark)) > 0
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["archive-prefect-events"]}}}).json()
    assert "COMPLETED" in {run["state_type"] for run in runs}


def test_backoff_grows_from_the_interval_to_the_cap():
    every, cap = timedelta(minutes=5), timedelta(minutes=30)
    assert [backoff(every, n, cap) for n in (0, 1, 2, 3, 4, 50)] == [every, every, every * 2, every * 4, cap, cap]
    assert backoff(timedelta(hours=1), 3, cap) == timedelta(hours=1)  # never sooner than the interval


def test_status_tells_a_live_service_from_a_stopped_or_vanished_one(tmp_path):
    archive = DuckDBArchive(tmp_path / "a.duckdb")
    assert service_status(archive) is None
    now = datetime.now(UTC)
    base = {"pid": 1, "host": "elsewhere", "heartbeat_every": 2, "heartbeat": format_timestamp(now)}
    write_heartbeat(archive.heartbeat_path, base)
    assert service_status(archive, now + timedelta(seconds=3))["running"] is True
    stale = service_status(archive, now + timedelta(seconds=7))
    assert stale["running"] is False and "no heartbeat since" in stale["why"]
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_heartbeat(archive.heartbeat_path, {**base, "host": socket.gethostname(), "pid": int(gone.stdout)})
    assert "is gone" in service_status(archive, now)["why"]
    write_heartbeat(archive.heartbeat_path, {**base, "stopped": format_timestamp(now)})
    assert service_status(archive, now)["why"].startswith("stopped at")
    assert lock_holder("123 run") == (123, "run") and lock_holder("77") == (77, "") and lock_holder("") == (None, "")


def test_metrics_without_prometheus_client_is_one_clear_line(prefect_server, tmp_path):
    db = tmp_path / "nometrics.duckdb"
    code = ("import sys; sys.modules['prometheus_client'] = None  # as if the metrics extra were not installed\n"
            "from archiver.cli import main; sys.exit(main(['run', '--metrics-port', '1']))")
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(prefect_server.api_url, db), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("prefect-archiver: error: --metrics-port needs prometheus-client: pip install "
                                     "\"prefect-archiver[metrics]\" (or run without --metrics-port)")


def test_status_tells_a_live_service_that_cannot_write_its_heartbeat_from_a_stopped_one(prefect_server, tmp_path):
    api = prefect_server.api_url
    db = tmp_path / "beat.duckdb"
    since = datetime.now(UTC) - timedelta(minutes=10)
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(since)}"\n'
                          '[schedule]\nreconcile_every = "0s"\nverify_every = "0s"\nmax_backoff = "1s"\n')
    env = cli_env(api, db, config)
    service = Service(["--every", "1s"], env, tmp_path / "run.log")

    def status_line() -> str:
        return next(line for line in run_cli(["status"], env).stdout.splitlines() if line.startswith("service:"))

    try:
        service.wait_for(lambda: (service_status(DuckDBArchive(db)) or {}).get("last_sync"), what="a first sync")
        # The disk fills up: the service's files may not grow past 200 bytes (EFBIG, as ENOSPC on a full
        # disk). Its heartbeat file, a new file each beat, can no longer be written; the process lives on.
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))
        stuck = service.wait_for(lambda: "heartbeat could not be written" in (line := status_line()) and line,
                                 what="status to notice the missing heartbeat")
        last_beat = service_status(DuckDBArchive(db))["heartbeat"]
        assert stuck == (f"service:          running (pid {service.proc.pid}) but its heartbeat could not be written "
                         f"since {last_beat}: File too large ({DuckDBArchive(db).heartbeat_path})")
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        service.wait_for(lambda: status_line().startswith(f"service:          running, pid {service.proc.pid}"),
                         what="the heartbeat back")
    finally:
        code, _ = service.stop()
    assert code == 0  # (its own log file was over the limit too: what it logged meanwhile is lost, as on a full disk)
    # Once it has stopped, it is not running, whatever its heartbeat file last said.
    assert status_line().startswith("service:          not running (stopped at ")

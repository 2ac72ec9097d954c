"""Run logs and artifacts against real flow runs, on one Prefect server that allows only 7 logs a page.

The module's server runs with PREFECT_SERVER_API_DEFAULT_LIMIT=7, so every run's logs take many
pages (the archiver must learn the limit from the server's 422), and one run holds 20 logs at a
single instant (posted through POST /logs/), more than a page: the keyset walk's tie case.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from archiver.ingest.report import SyncReport
from archiver.ingest.sync import sync
from archiver.prefect.events import format_timestamp
from tests.prefect_server import PrefectServer, delete, run_flows_script
from tests.proxy import RecordedRequest, RecordingProxy
from tests.support import (
    BACKENDS,
    ArchiveRef,
    archive_of,
    cli_env,
    client_for_test,
    last_sync_once_the_lock_is_free,
    query,
    run_cli,
    settings_for,
    start_cli,
    write_config,
)

UTC = timezone.utc
LIMIT = 7
TIES = 20
HORIZON = timedelta(hours=1)
BULK = 300  # logs of the bulk run: 43 pages at LIMIT

LOGS_WORKLOAD = '''
from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_link_artifact, create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)


@task
def step(i: int) -> int:
    get_run_logger().info("task step %d", i)
    return i


@flow(name="archiver-loud", log_prints=True)
def loud() -> None:
    logger = get_run_logger()
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    logger.error("an error line")
    logger.critical("a critical line")
    for i in range(3):
        step(i)
    create_markdown_artifact("# Nightly report\\n\\n*all rows loaded*", key="nightly-report", description="the report")
    create_table_artifact([{"table": "orders", "rows": 10}, {"table": "customers", "rows": 20}], key="row-counts")
    create_link_artifact("https://example.com/data", link_text="the data", key="data-link")
    progress = create_progress_artifact(0.0, key="load-progress")
    update_progress_artifact(progress, 100.0)
    print("printed after the last task")


@flow(name="archiver-broken")
def broken() -> None:
    raise ValueError("this flow fails on purpose")


@flow(name="archiver-bulk")
def bulk(n: int) -> None:
    logger = get_run_logger()
    for i in range(n):
        logger.info("bulk line %d", i)


if __name__ == "__main__":
    import sys
    print("RUN loud", loud(return_state=True).state_details.flow_run_id)
    print("RUN broken", broken(return_state=True).state_details.flow_run_id)
    print("RUN bulk", bulk(int(sys.argv[1]) if len(sys.argv) > 1 else BULK, return_state=True).state_details.flow_run_id)
'''.replace("BULK", str(BULK))


@dataclass
class Workload:
    api: str
    db: Path
    since: datetime
    runs: dict[str, str]  # loud / broken / bulk -> flow run id
    report: SyncReport


def _http(api: str) -> httpx.Client:
    return httpx.Client(base_url=api + "/", timeout=30)


def server_logs(api: str, run_id: str) -> list[dict[str, Any]]:
    """Every log the server holds of a flow run, by offset pages of the server's size."""
    found: list[dict[str, Any]] = []
    with _http(api) as http:
        while True:
            page = http.post("logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": LIMIT,
                                                  "offset": len(found), "sort": "TIMESTAMP_ASC"}).json()
            found += page
            if len(page) < LIMIT:
                return found


def server_artifact_ids(api: str, run_id: str) -> set[str]:
    with _http(api) as http:
        page = http.post("artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": LIMIT}).json()
    return {a["id"] for a in page}


def wait_for_events(api: str, run_ids: list[str], timeout: float = 30) -> None:
    """Until the server has stored an event of each run (the sync finds runs through their events)."""
    deadline = time.monotonic() + timeout
    now = datetime.now(UTC)
    window = {"since": format_timestamp(now - timedelta(hours=1)), "until": format_timestamp(now + timedelta(minutes=5))}
    with _http(api) as http:
        for run_id in run_ids:
            while True:
                body = {"filter": {"occurred": window, "any_resource": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 1}
                if http.post("events/filter", json=body).json()["total"] > 0:
                    break
                assert time.monotonic() < deadline, f"no event of flow run {run_id} stored"
                time.sleep(0.25)


def sync_logs(api: str, db: ArchiveRef, since: datetime, **overrides: Any) -> SyncReport:
    options: dict[str, Any] = {"settle": timedelta(0), "start": since, "log_level": 10, "logs_horizon": timedelta(0)}
    settings = settings_for(api, db, **(options | overrides))
    writer = archive_of(db).writer(timedelta(seconds=30))
    try:
        with client_for_test(api) as client:
            report = sync(settings, client, writer, until=datetime.now(UTC))
            assert client.log_page_size() == LIMIT  # learnt from the server's 422
    finally:
        writer.close()
    assert report.outcome == "ok"
    return report


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Any:
    """A server allowing 7 logs a page; real flow runs logging at every level, failing, publishing
    artifacts, one with 20 logs at one instant; archived by one sync (logs at DEBUG)."""
    with PrefectServer(env={"PREFECT_SERVER_API_DEFAULT_LIMIT": str(LIMIT)}) as server:
        api = server.api_url
        since = datetime.now(UTC) - timedelta(seconds=5)
        done = run_flows_script(api, LOGS_WORKLOAD, env={"PREFECT_LOGGING_LEVEL": "DEBUG"})
        assert done.returncode == 0, done.stderr[-3000:]
        runs = {line.split()[1]: line.split()[2] for line in done.stdout.splitlines() if line.startswith("RUN ")}
        instant = format_timestamp(datetime.now(UTC).replace(microsecond=123456))
        ties = [{"name": "archiver.ties", "level": 20, "message": f"tie {i}", "timestamp": instant,
                 "flow_run_id": runs["loud"], "task_run_id": None} for i in range(TIES)]
        with _http(api) as http:
            assert http.post("logs/", json=ties).status_code == 201
        wait_for_events(api, list(runs.values()))
        db = tmp_path_factory.mktemp("logs") / "archive.duckdb"
        # A horizon of an hour: the ended runs stay unsettled, read again by every sync of the module.
        yield Workload(api, db, since, runs, sync_logs(api, db, since, logs_horizon=HORIZON))


def archive_ids(db: ArchiveRef, run_id: str) -> tuple[set[str], set[str]]:
    return archive_of(db).reader(timedelta(seconds=15)).run_log_ids(uuid.UUID(run_id))


@pytest.fixture(scope="module")
def postgresql_synced(workload, new_archive) -> tuple[ArchiveRef, SyncReport]:
    """The module's runs archived by one sync into a PostgreSQL archive, as the workload's DuckDB one."""
    db = new_archive("postgresql", workload.db.parent)
    return db, sync_logs(workload.api, db, workload.since, logs_horizon=HORIZON)


@pytest.fixture(params=BACKENDS)
def synced(request, workload) -> tuple[ArchiveRef, SyncReport]:
    """(archive, the report of the sync that filled it) on each backend, from the module's one server."""
    if request.param == "duckdb":
        return workload.db, workload.report
    return request.getfixturevalue("postgresql_synced")


def test_the_archive_holds_every_log_and_artifact_the_server_has_run_by_run(workload, synced):
    db, report = synced
    total = 0
    for name, run_id in workload.runs.items():
        logs, artifacts = archive_ids(db, run_id)
        assert logs == {g["id"] for g in server_logs(workload.api, run_id)}, name
        assert artifacts == server_artifact_ids(workload.api, run_id), name
        total += len(logs)
    assert report.logs_inserted == total and report.log_runs_read >= 3
    loud = query(db, "SELECT level, message FROM logs WHERE flow_run_id = $1", [workload.runs["loud"]])
    assert {level for level, _ in loud} == {10, 20, 30, 40, 50}
    assert {"printed after the last task", "task step 2"} <= {m for _, m in loud}
    assert sum(1 for _, m in loud if m.startswith("tie ")) == TIES
    traceback = query(db, "SELECT message FROM logs WHERE flow_run_id = $1 AND level = 40",
                      [workload.runs["broken"]])
    assert any("Traceback" in m and "this flow fails on purpose" in m for (m,) in traceback)
    kinds = dict(query(db, "SELECT key, type FROM artifacts WHERE flow_run_id = $1", [workload.runs["loud"]]))
    assert {kinds["nightly-report"], kinds["row-counts"], kinds["load-progress"]} == {"markdown", "table", "progress"}
    # Prefect 3.9.1 stores a link artifact as markdown ("[the data](https://…)").
    assert "data-link" in kinds
    # The progress artifact was archived at its newest version.
    assert query(db, "SELECT data FROM artifacts WHERE key = 'load-progress'") == [("100.0",)] or \
        query(db, "SELECT data FROM artifacts WHERE key = 'load-progress'") == [("100",)]


def test_runs_that_ended_within_the_horizon_are_read_again_then_settle(workload):
    again = sync_logs(workload.api, workload.db, workload.since, logs_horizon=HORIZON)
    assert (again.log_runs_read, again.logs_inserted, again.artifacts_saved) == (3, 0, 0)
    settled = sync_logs(workload.api, workload.db, workload.since)  # past the horizon (0): read once more, settled
    assert (settled.log_runs_read, settled.logs_inserted) == (3, 0)
    assert query(workload.db, "SELECT count(*) FROM log_progress WHERE NOT settled") == [(0,)]
    assert sync_logs(workload.api, workload.db, workload.since).log_runs_read == 0
    assert query(workload.db, "SELECT count(*) = count(DISTINCT id) FROM logs") == [(True,)]


def test_logs_and_artifacts_commands_print_what_the_run_said_and_made(workload, tmp_path):
    env = cli_env(None, workload.db)
    loud = workload.runs["loud"]
    shown = run_cli(["logs", loud, "--level", "WARNING"], env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split(" | ")[1].strip() for line in lines] == ["WARNING", "ERROR", "CRITICAL"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| WARNING \| Flow run '[\w-]+' - a warning line", lines[0])
    grep = run_cli(["logs", loud, "--grep", "TASK STEP"], env)
    assert [line.rsplit(" - ", 1)[1] for line in grep.stdout.splitlines()] == ["task step 0", "task step 1", "task step 2"]
    as_json = run_cli(["logs", loud, "--json"], env)
    assert {g["id"] for g in json.loads(as_json.stdout)} == {g["id"] for g in server_logs(workload.api, loud)}
    artifacts = run_cli(["artifacts", loud], env)
    assert artifacts.returncode == 0, artifacts.stderr
    assert re.search(r"table\s+rows\s*\n\s*-+\s+-+\s*\n\s*orders\s+10", artifacts.stdout), artifacts.stdout
    assert "# Nightly report" in artifacts.stdout and "100%" in artifacts.stdout
    states = run_cli(["states", loud], env)
    count = len(server_logs(workload.api, loud))
    assert f"{count} logs and 4 artifacts archived" in states.stderr, states.stderr
    unknown = run_cli(["logs", str(uuid.uuid4())], env)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "no flow run or task run" in unknown.stderr
    bad = run_cli(["logs", loud, "--level", "LOUD"], env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_after_sigkill_mid_harvest_loses_nothing_and_doubles_nothing(workload, tmp_path, backend, new_archive):
    db = new_archive(backend, tmp_path, "killed")
    config = write_config(tmp_path / "archiver.toml",
                          f'settle = "0s"\ncommit_every = 20\nstart = "{format_timestamp(workload.since)}"\n'
                          '[logs]\nlevel = "DEBUG"\nhorizon = "0s"\n')
    bulk = workload.runs["bulk"]
    # Log pages answered slowly (the bulk run's 44 pages take over 6 s) so the kill lands mid-harvest
    # however fast this machine writes: unslowed, a run's 305 logs could all commit before the poll saw one.
    with RecordingProxy(workload.api.removesuffix("/api"), delay=_slow_log_pages) as proxy:
        env = cli_env(f"{proxy.url}/api", db, config)
        proc = start_cli(["sync"], env)
        try:
            deadline = time.monotonic() + 60
            while _archived(db, bulk) == 0:
                assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before any log was written"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert 0 < _archived(db, bulk) < len(server_logs(workload.api, bulk))  # killed mid-harvest
        proxy.delay = None
        # PostgreSQL frees the killed writer's advisory lock a few ms after the client is reaped (its
        # server process exits once it notices): a sync started inside that window is refused.
        last_sync_once_the_lock_is_free(db)
        finished = run_cli(["sync"], env)
    assert finished.returncode == 0, finished.stderr
    for run_id in (workload.runs["loud"], workload.runs["bulk"]):
        assert archive_ids(db, run_id)[0] == {g["id"] for g in server_logs(workload.api, run_id)}
    assert query(db, "SELECT count(*) = count(DISTINCT id) FROM logs") == [(True,)]


def _slow_log_pages(request: RecordedRequest) -> float:
    return 0.15 if request.path.startswith("/api/logs/filter") else 0.0


def _archived(db: ArchiveRef, run_id: str) -> int:
    try:
        return int(query(db, "SELECT count(*) FROM logs WHERE flow_run_id = $1", [run_id])[0][0])
    except Exception:  # noqa: BLE001 - before the schema exists
        return 0


def test_verify_compares_each_runs_log_ids_with_the_servers_and_repair_reads_the_lacking_again(workload, tmp_path):
    sync_logs(workload.api, workload.db, workload.since)  # horizon 0: every run settled, so verify compares it
    config = write_config(tmp_path / "archiver.toml", '[logs]\nlevel = "DEBUG"\n')
    env = cli_env(workload.api, workload.db, config)
    clean = run_cli(["verify", "--since", format_timestamp(workload.since), "--json"], env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["logs"] == {"runs": 3, "differences": [], "repaired": None, "remaining": 0}
    loud = workload.runs["loud"]
    with duckdb.connect(str(workload.db)) as conn:  # the archive loses three of a run's logs
        conn.execute("DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE flow_run_id = $1 ORDER BY id LIMIT 3)",
                     [loud])
    lacking = run_cli(["verify", "--since", format_timestamp(workload.since)], env)
    assert lacking.returncode == 1
    assert f"flow run {loud}: archive lacks 3 logs" in lacking.stdout, lacking.stdout
    repaired = run_cli(["verify", "--since", format_timestamp(workload.since), "--repair"], env)
    assert repaired.returncode == 0 and "repaired: 3 logs added" in repaired.stdout, repaired.stdout + repaired.stderr
    assert archive_ids(workload.db, loud)[0] == {g["id"] for g in server_logs(workload.api, loud)}


def test_the_services_scheduled_verify_compares_each_runs_logs_and_repairs_them(workload, caplog):
    from archiver.service.scheduler import Service

    sync_logs(workload.api, workload.db, workload.since)  # every run settled, so verify compares it
    bulk = workload.runs["bulk"]
    with duckdb.connect(str(workload.db)) as conn:  # the archive loses two of a run's logs
        conn.execute("DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE flow_run_id = $1 ORDER BY id LIMIT 2)",
                     [bulk])
    service = Service(settings_for(workload.api, workload.db, settle=timedelta(0), start=workload.since, log_level=10))
    with caplog.at_level(logging.INFO, logger="archiver.service.scheduler"):
        service._verify_job()  # as the scheduler runs it every schedule.verify_every
    done = [r for r in caplog.records if r.getMessage().startswith("verify ok")]
    assert len(done) == 1, [r.getMessage() for r in caplog.records]
    assert "; logs of 3 runs compared, 1 lacked logs or artifacts, 2 logs repaired" in done[0].getMessage()
    fields = done[0].__dict__["fields"]
    assert (fields["log_runs_read"], fields["logs_inserted"], fields["log_runs_differing"]) == (3, 2, 1)
    differing = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert differing == [f"verify: flow run {bulk}: archive lacks 2 logs"]
    assert archive_ids(workload.db, bulk)[0] == {g["id"] for g in server_logs(workload.api, bulk)}


# Last in the module: it deletes a run on the module's server.
def test_a_run_deleted_on_the_server_keeps_its_logs(workload):
    db, broken = workload.db, workload.runs["broken"]
    with duckdb.connect(str(db)) as conn:  # as if it had ended within the horizon: to be read again
        conn.execute("UPDATE log_progress SET settled = false WHERE run_id = $1", [broken])
    kept = archive_ids(db, broken)
    assert kept[0]
    read_at = "SELECT read_at FROM log_progress WHERE run_id = $1"
    before = query(db, read_at, [broken])
    delete(workload.api, f"flow_runs/{broken}")
    sync_logs(workload.api, db, workload.since, logs_horizon=HORIZON)
    assert query(db, read_at, [broken]) > before  # it was read again, and the server had nothing of it
    assert archive_ids(db, broken) == kept
    shown = run_cli(["logs", broken], cli_env(None, db))
    assert shown.returncode == 0 and "this flow fails on purpose" in shown.stdout

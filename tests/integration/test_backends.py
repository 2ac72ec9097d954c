"""The same server archived into DuckDB and into PostgreSQL: every command gives the same answers.

One module-scoped pair of archives, synced once from the seeded history by the CLI; each test
runs one command (or the Python lookups) on both and compares what it prints, with the archive's
own name (a path, a URL) as the only difference allowed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from archiver.lookup.events import aget_event, get_event
from archiver.prefect.events import format_timestamp
from tests.concurrency import lookup_summary, start_lookups
from tests.prefect_server import (
    free_port,
    make_event,
    post_events,
    run_flows_script,
    server_count,
    server_events,
    wait_until_quiet,
    wait_until_stored,
)
from tests.support import (
    BACKENDS,
    ArchiveRef,
    archive_of,
    archived_ids,
    cli_env,
    run_cli,
    settings_for,
    start_cli,
    write_config,
)

# A flow run of the seeded history (tests/datasets.py): its events are archived.
RUN_ID = "00000007-0000-4000-8000-000000000000"
# Real runs for `states`: a retried task with a JSON result, and a flow that fails.
FLOWS = '''
from prefect import flow, task

_attempts = {"n": 0}


@task(persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=0)
def double(x: int) -> int:
    _attempts["n"] += 1
    if _attempts["n"] == 1:
        raise ConnectionError("the first attempt fails on purpose")
    return x * 2


@flow(name="archiver-backends", persist_result=True, result_serializer="json")
def backends(n: int = 3) -> dict:
    return {"doubled": double(n)}


@flow(name="archiver-backends-failing")
def failing() -> None:
    raise ValueError("this flow fails on purpose")


if __name__ == "__main__":
    for run in (backends, failing):
        state = run(return_state=True)
        print("RUN", state.state_details.flow_run_id)
'''
# What differs by run and not by backend: how long a sync took, its ledger id.
PER_RUN = ("seconds", "reconcile_seconds", "run_id")


class Archived:
    """One backend's archive of the history: where it is, its CLI environment, its first sync's report."""

    def __init__(self, db: ArchiveRef, env: dict[str, str], reports: list[dict[str, Any]], runs: list[str]) -> None:
        self.db = db
        self.env = env
        self.reports = reports  # the history's sync, then the one up to the flow runs
        self.runs = runs  # flow run ids with state records
        self.name = archive_of(db).name

    def cli(self, *args: str, code: int = 0) -> str:
        """What the command prints on stdout, the archive's name replaced by <archive>."""
        result = run_cli(list(args), self.env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return result.stdout.replace(self.name, "<archive>")


@pytest.fixture(scope="module")
def archives(prefect_server, history, tmp_path_factory, new_archive) -> dict[str, Archived]:
    """The whole history and two real flow runs, synced by `prefect-archiver sync` (the history, then
    on from its mark to just after the runs) into a DuckDB file and a PostgreSQL database."""
    api = prefect_server.api_url
    folder = tmp_path_factory.mktemp("backends")
    flows_since = datetime.now(timezone.utc)
    done = run_flows_script(api, FLOWS, env={"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(folder / "results")})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN ")]
    wait_until_quiet(api, flows_since, datetime.now(timezone.utc) + timedelta(minutes=1))
    flows_until = datetime.now(timezone.utc)
    assert server_count(api, flows_since, flows_until) > 0, done.stdout
    # settle 0: the runs happened seconds ago, and the server has stored their events (waited for above).
    config = write_config(folder / "archiver.toml", f'start = "{format_timestamp(history.since)}"\nsettle = "0s"\n')
    synced = {}
    for backend in BACKENDS:
        db = new_archive(backend, folder)
        env = cli_env(api, db, config)
        reports = []
        for until in (history.end, flows_until):
            result = run_cli(["sync", "--until", format_timestamp(until), "--json"], env)
            assert result.returncode == 0, result.stderr
            reports.append(json.loads(result.stdout))
        synced[backend] = Archived(db, env, reports, runs)
        assert archived_ids(db, history.since, history.until) == history.ids
    return synced


def same(outputs: dict[str, Any]) -> Any:
    """The one answer every backend gave (the assertion shows both when they differ)."""
    duckdb, postgresql = (outputs[b] for b in BACKENDS)
    assert duckdb == postgresql, _differences(duckdb, postgresql)
    return duckdb


def _differences(duckdb: Any, postgresql: Any, where: str = "") -> list[str]:
    """Where two answers part, key by key (pytest cuts a long comparison short)."""
    if isinstance(duckdb, dict) and isinstance(postgresql, dict):
        return [d for key in sorted(set(duckdb) | set(postgresql), key=str)
                for d in _differences(duckdb.get(key), postgresql.get(key), f"{where}.{key}")]
    if isinstance(duckdb, list) and isinstance(postgresql, list) and len(duckdb) == len(postgresql):
        return [d for i, (a, b) in enumerate(zip(duckdb, postgresql, strict=True)) for d in _differences(a, b, f"{where}[{i}]")]
    if isinstance(duckdb, str) and isinstance(postgresql, str) and "\n" in duckdb + postgresql:
        import difflib

        return [f"{where}: " + "\n".join(difflib.unified_diff(duckdb.splitlines(), postgresql.splitlines(), "duckdb",
                                                               "postgresql", lineterm="", n=1))]
    return [] if duckdb == postgresql else [f"{where}: duckdb {duckdb!r} != postgresql {postgresql!r}"]


def test_sync_reports_the_same_counts(archives, history):
    reports = same({b: [{k: v for k, v in r.items() if k not in PER_RUN} for r in a.reports] for b, a in archives.items()})
    assert reports[0]["inserted"] == len(history.ids) and reports[0]["outcome"] == "ok"
    assert reports[1]["states_saved"] > 0 and reports[1]["outcome"] == "ok"
    # A second sync of the same range finds everything archived on both.
    again = same({b: {k: v for k, v in json.loads(a.cli("sync", "--until", format_timestamp(history.end), "--json")).items()
                      if k not in PER_RUN} for b, a in archives.items()})
    assert again["inserted"] == 0 and again["outcome"] == "ok"


def test_get_prints_the_same_event_byte_for_byte(archives, history):
    for event_id in (history.big_payload_id, history.unicode_id, history.many_related_id):
        printed = same({b: a.cli("get", event_id, "--json", "--archive-only") for b, a in archives.items()})
        assert json.loads(printed)["id"] == event_id


def test_events_searches_answer_the_same(archives, history):
    searches = [
        ["--flow-run", RUN_ID, "--json"],
        ["--resource", "prefect.flow.3", "--role", "flow", "--limit", "40", "--json"],
        ["--prefix", "acme.", "--since", format_timestamp(history.since), "--until", format_timestamp(history.until),
         "--limit", "200", "--oldest-first", "--json"],
        ["--event", "acme.burst", "--limit", "500"],  # the table, ties on one instant ordered by id
    ]
    searches.append(["--flow-run", archives["duckdb"].runs[0], "--oldest-first", "--json"])
    for search in searches:
        printed = same({b: a.cli("events", *search) for b, a in archives.items()})
        assert printed.strip()


def test_states_of_a_run_are_the_same(archives):
    for run_id in archives["duckdb"].runs:
        printed = same({b: a.cli("states", run_id, "--json") for b, a in archives.items()})
        assert json.loads(printed)["states"]
    # The completed run's JSON result, read from where its final state says it lives.
    table = same({b: a.cli("states", archives["duckdb"].runs[0], "--show-result") for b, a in archives.items()})
    assert "Completed" in table and '"doubled": 6' in table


def test_status_says_the_same(archives):
    statuses = {b: json.loads(a.cli("status", "--json")) for b, a in archives.items()}
    for status in statuses.values():
        status.pop("lag_seconds")
        for key in ("id", "started", "finished"):
            status["last_sync"].pop(key)
        status.pop("last_success")
    status = same(statuses)
    assert status["archive"] == "<archive>" and status["last_sync"]["outcome"] == "ok"


def test_check_gives_the_same_verdicts(archives):
    findings = same({b: json.loads(a.cli("check", "--json")) for b, a in archives.items()})
    assert all(f["ok"] for f in findings) and "archive" in [f["topic"] for f in findings]


def test_verify_finds_the_same_nothing_missing(archives, history):
    args = ["verify", "--since", format_timestamp(history.since), "--until", format_timestamp(history.until), "--json"]
    printed = same({b: a.cli(*args) for b, a in archives.items()})
    assert json.loads(printed)


def test_sql_answers_the_same(archives):
    queries = [  # each in one of the three formats: a process per query and backend is what costs
        ("csv", "SELECT event, count(*) AS n, min(occurred) AS first, max(occurred) AS last FROM events "
                "GROUP BY event ORDER BY event"),
        ("json", "SELECT * FROM event_volume ORDER BY 1, 2, 3"),
        ("table", "SELECT role, count(*) AS n FROM event_resources GROUP BY role ORDER BY role"),
        ("json", "SELECT id, occurred, event, resource, related, payload FROM events WHERE event = 'acme.wide'"),
        ("csv", "SELECT flow_run_id, state_type, state_name, timestamp, message, event_id FROM flow_run_states "
                "ORDER BY timestamp, event_id"),
        ("json", "SELECT * FROM flow_run_durations ORDER BY 1"),
        ("table", "SELECT count(*) AS n FROM deployment_health"),
    ]
    for fmt, sql in queries:
        printed = same({b: a.cli("sql", sql, "--format", fmt) for b, a in archives.items()})
        assert printed.strip()


def test_the_python_lookups_return_the_same_event(archives, prefect_server, history):
    on_server = {e["id"]: e for e in server_events(prefect_server.api_url, history.since, history.until)}
    for event_id in (history.big_payload_id, history.unicode_id, sorted(history.ids)[17]):
        found = {b: get_event(event_id, settings=settings_for(prefect_server.api_url, a.db)) for b, a in archives.items()}
        assert same(found) == on_server[event_id]
        awaited = {b: asyncio.run(aget_event(event_id, settings=settings_for(prefect_server.api_url, a.db)))
                   for b, a in archives.items()}
        assert same(awaited) == on_server[event_id]


def test_serve_answers_the_same_requests_the_same(archives, history):
    body = {"filter": {"occurred": {"since": format_timestamp(history.since), "until": format_timestamp(history.until)},
                       "event": {"prefix": ["acme."]}, "order": "ASC"}, "limit": 50}
    served: dict[str, Any] = {}
    procs = {}
    try:
        ports = {}
        for backend, archived in archives.items():
            ports[backend] = free_port()
            procs[backend] = start_cli(["serve", "--port", str(ports[backend])], archived.env)
        for backend, port in ports.items():
            base = f"http://127.0.0.1:{port}/api"
            deadline = time.monotonic() + 60
            while True:
                assert procs[backend].poll() is None, procs[backend].communicate()
                try:
                    if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=60) as http:
                first = http.post("/events/filter", json=body).json()
                token = first["next_page"].split("page-token=", 1)[1]
                second = http.get("/events/filter/next", params={"page-token": token}).json()
                one = http.get(f"/events/{history.unicode_id}")
                served[backend] = {"total": first["total"], "events": first["events"] + second["events"],
                                   "one": (one.status_code, one.json())}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    answer = same(served)
    assert len(answer["events"]) == 100 and answer["one"][0] == 200


def test_run_syncs_one_interval_and_stops_cleanly_on_both(prefect_server, tmp_path, new_archive):
    """`run` on fresh archives (it syncs up to now, so the pair above stays as synced)."""
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    seeded = [make_event(start + timedelta(seconds=20 * i + 1), event="acme.backends.run") for i in range(10)]
    before = server_count(prefect_server.api_url, start, start + timedelta(minutes=4))
    post_events(prefect_server.api_url, seeded)
    wait_until_stored(prefect_server.api_url, start, start + timedelta(minutes=4), before + len(seeded))
    config = write_config(tmp_path / "run.toml", f'start = "{format_timestamp(start)}"\nsettle = "2s"\n')
    lines = {}
    for backend in BACKENDS:
        db = new_archive(backend, tmp_path, "run")
        proc = start_cli(["run", "--every", "1h", "--log-format", "json"], cli_env(prefect_server.api_url, db, config))
        deadline = time.monotonic() + 60
        synced = None
        while synced is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            status = _status_or_none(db)
            if status and status["last_sync"] and status["last_sync"]["outcome"] == "ok":
                synced = status
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert synced is not None, stderr
        sync_lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        lines[backend] = sorted({key for line in sync_lines if line.get("event") == "sync" for key in line})
        assert {e["id"] for e in seeded} <= archived_ids(db, start, datetime.now(timezone.utc))
    assert same(lines), "the service logs a sync line"


def _status_or_none(db: ArchiveRef) -> dict[str, Any] | None:
    from archiver.errors import ArchiveError

    try:
        return archive_of(db).reader(timedelta(seconds=10)).status().to_json()
    except ArchiveError:
        return None


# -- the concurrency claim: a PostgreSQL archive serves lookups and a long query while a sync writes --


def test_a_sync_into_postgresql_finishes_while_a_long_query_runs_and_every_lookup_answers(
        prefect_server, history, tmp_path, new_archive, postgres_server):
    db = new_archive("postgresql", tmp_path)
    archive_of(db).writer(timedelta(seconds=10)).close()  # the schema, so the analyst's query can start first
    config = write_config(tmp_path / "slow.toml",
                          f'start = "{format_timestamp(history.since)}"\nconcurrency = 1\ncommit_every = 50\n'
                          "[api]\nmax_requests_per_minute = 600\n")
    env = cli_env(prefect_server.api_url, db, config)
    # The analyst's query holds its snapshot far longer than the sync takes; it is cancelled below.
    analyst = start_cli(["sql", "SELECT pg_sleep(300) AS slept, count(*) AS n FROM events"], env)
    lookups, stop = start_lookups(db, server_events(prefect_server.api_url, history.since, history.until), tmp_path)
    try:
        _wait_for(lambda: _sleeping_queries(postgres_server) == 1 or analyst.poll() is not None, "the analyst's query")
        assert analyst.poll() is None, analyst.communicate()
        result = run_cli(["sync", "--until", format_timestamp(history.end)], env, timeout=300)
        assert result.returncode == 0, result.stderr
        # The sync is done and the query it ran beside is still running.
        assert analyst.poll() is None and _sleeping_queries(postgres_server) == 1
        summary = lookup_summary(lookups, stop)
    finally:
        with postgres_server.admin() as conn:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
        analyst.communicate(timeout=30)
        if lookups.poll() is None:
            stop.touch()
            lookups.communicate(timeout=60)
    assert summary["wrong"] == [] and summary["error_count"] == 0, summary
    assert summary["lookups"] >= 20, summary
    assert archived_ids(db, history.since, history.until) == history.ids
    # Cancelled, the query is one line naming why, as any failed query is.
    assert analyst.returncode != 0


def _sleeping_queries(postgres_server: Any) -> int:
    with postgres_server.admin() as conn:
        # The console streams through a server-side cursor: the running statement is its FETCH, so
        # the query is told by what it waits on.
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()
    return int(row[0])


def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)

"""Run metadata, state history and analytics views, against real flow runs on a real server."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from archiver.ingest.metadata import GIVE_UP_AFTER
from archiver.ingest.sync import sync
from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb.migrate import available
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.prefect_server import delete, make_event, post_events, run_flows_script, server_events, server_states, wait_until_quiet
from tests.support import Faults, cli_env, client_for_test, query, run_cli, settings_for
from tests.workload import RUN_WORKLOAD

UTC = timezone.utc
COLLECTIONS = {"flow-run": "flow_runs", "task-run": "task_runs", "deployment": "deployments", "flow": "flows",
               "work-pool": "work_pools"}
_NAMED = re.compile(r"^prefect\.(flow-run|task-run|deployment|flow|work-pool)\.([0-9a-f-]{36})$")


@dataclass
class Workload:
    api: str
    db: Path
    since: datetime
    until: datetime
    events: list[dict[str, Any]]


def ts(value: str | None) -> datetime | None:
    return parse_timestamp(value) if value else None


def named_objects(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What the events name, per collection — worked out here from the API's events, not the archive."""
    named: dict[str, set[str]] = {c: set() for c in COLLECTIONS.values()}
    for event in events:
        for resource in [event["resource"], *event["related"]]:
            match = _NAMED.match(resource.get("prefect.resource.id", ""))
            if match:
                named[COLLECTIONS[match.group(1)]].add(match.group(2))
    return named


def server_objects(api: str, collection: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=api + "/", timeout=30) as http:
        response = http.post(f"{collection}/filter", json={collection: {"id": {"any_": sorted(ids)}}})
        response.raise_for_status()
        return {o["id"]: o for o in response.json()}


@pytest.fixture(scope="module")
def workload(prefect_server, tmp_path_factory) -> Workload:
    """The run workload on the shared server, archived by one sync."""
    api = prefect_server.api_url
    since = datetime.now(UTC) - timedelta(seconds=5)
    result = run_flows_script(api, RUN_WORKLOAD)
    assert result.returncode == 0, result.stderr[-3000:]
    wait_until_quiet(api, since, datetime.now(UTC) + timedelta(minutes=1))
    until = datetime.now(UTC)
    db = tmp_path_factory.mktemp("runs") / "archive.duckdb"
    with client_for_test(api) as client:
        report = sync(settings_for(api, db, settle=timedelta(0), start=since), client, DuckDBWriter(db), since=since, until=until)
    assert report.outcome == "ok"
    return Workload(api, db, since, until, server_events(api, since, until))


def test_every_object_named_by_an_event_is_archived_as_the_server_returns_it(workload):
    named = named_objects(workload.events)
    assert len(named["flow_runs"]) == 5 and len(named["task_runs"]) == 13
    assert len(named["deployments"]) == len(named["work_pools"]) == 1 and len(named["flows"]) == 2
    for collection, ids in named.items():
        on_server = server_objects(workload.api, collection, ids)
        assert set(on_server) == ids
        archived = {str(i): json.loads(o) for i, o in query(workload.db, f"SELECT id, object FROM {collection}")}
        assert archived == on_server, collection
    assert query(workload.db, "SELECT count(*) FROM object_refresh_queue") == [(0,)]

    # The typed columns say what the object says.
    runs = server_objects(workload.api, "flow_runs", named["flow_runs"])
    rows = query(workload.db, "SELECT id, name, flow_id, deployment_id, work_pool_name, state_type, state_name, "
                              "expected_start_time, start_time, end_time, total_run_time, tags, parameters FROM flow_runs")
    for (run_id, name, flow_id, deployment_id, pool, state_type, state_name, expected, start, end, total, tags,
         parameters) in rows:
        run = runs[str(run_id)]
        assert (name, str(flow_id), state_type, state_name) == (run["name"], run["flow_id"], run["state_type"], run["state_name"])
        assert (str(deployment_id) if deployment_id else None, pool) == (run["deployment_id"], run["work_pool_name"])
        assert (expected, start, end) == (ts(run["expected_start_time"]), ts(run["start_time"]), ts(run["end_time"]))
        assert (total, tags, json.loads(parameters)) == (run["total_run_time"], run["tags"], run["parameters"])
    task_rows = query(workload.db, "SELECT id, flow_run_id, task_key, state_name, run_count FROM task_runs")
    tasks = server_objects(workload.api, "task_runs", named["task_runs"])
    assert {(str(i), str(f), k, s, c) for i, f, k, s, c in task_rows} == {
        (t["id"], t["flow_run_id"], t["task_key"], t["state_name"], t["run_count"]) for t in tasks.values()
    }
    # Retried tasks ran twice; the failed one ended Failed.
    assert sorted(t["run_count"] for t in tasks.values() if t["name"].startswith("flaky")) == [2, 2, 2]
    assert [t["state_name"] for t in tasks.values() if t["name"].startswith("broken")] == ["Failed"]


@pytest.mark.parametrize("kind", ["flow", "task"])
def test_state_history_lists_every_transition_in_order(workload, kind):
    run_ids = named_objects(workload.events)[f"{kind}_runs"]
    for run_id in run_ids:
        expected = [
            (s["id"], s["type"], s["name"], ts(s["timestamp"]), s["message"] or None)
            for s in sorted(server_states(workload.api, kind, run_id), key=lambda s: s["timestamp"])
        ]
        archived = [
            (str(event_id), state_type, state_name, timestamp, message)
            for event_id, state_type, state_name, timestamp, message in query(
                workload.db,
                f"SELECT event_id, state_type, state_name, timestamp, message FROM {kind}_run_states "
                f"WHERE {kind}_run_id = $1 ORDER BY timestamp",
                [run_id],
            )
        ]
        assert archived == expected, run_id
    if kind == "flow":
        messages = [m for (m,) in query(workload.db, "SELECT message FROM flow_run_states WHERE state_type = 'FAILED'")]
        assert any("n must not be negative, got -1" in m for m in messages)
        assert any("this task fails on purpose" in m for m in messages)


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (what quantile_cont computes)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_analytics_views_give_the_numbers_worked_out_by_hand(workload):
    named = named_objects(workload.events)
    runs = server_objects(workload.api, "flow_runs", named["flow_runs"])
    seconds = {i: (ts(r["end_time"]) - ts(r["start_time"])).total_seconds() for i, r in runs.items()}

    durations = query(workload.db, "SELECT flow_run_id, flow_name, deployment_name, state_type, seconds FROM flow_run_durations")
    assert {str(i): round(s, 6) for i, _, _, _, s in durations} == {i: round(s, 6) for i, s in seconds.items()}
    assert Counter((f, d, s) for _, f, d, s, _ in durations) == Counter([
        ("archiver-adhoc", None, "FAILED"), ("archiver-nightly", None, "COMPLETED"),
        ("archiver-nightly", "nightly", "COMPLETED"), ("archiver-nightly", "nightly", "COMPLETED"),
        ("archiver-nightly", "nightly", "FAILED"),
    ])

    deployed = [i for i, r in runs.items() if r["deployment_id"]]
    # One row per deployment and UTC day of its runs' start: a workload that crosses midnight UTC
    # has two, each worked out from that day's runs.
    days: dict[Any, list[str]] = {}
    for i in deployed:
        days.setdefault(ts(runs[i]["start_time"]).date(), []).append(i)
    health = query(workload.db, "SELECT deployment_name, day, runs, completed, failed, crashed, failure_rate, "
                                "p50_seconds, p95_seconds FROM deployment_health ORDER BY day")
    assert [row[1] for row in health] == sorted(days)
    for name, day, total, completed, failed, crashed, rate, p50, p95 in health:
        states = Counter(runs[i]["state_type"] for i in days[day])
        assert (name, total, completed, failed, crashed) == (
            "nightly", len(days[day]), states["COMPLETED"], states["FAILED"], states["CRASHED"])
        assert rate == pytest.approx((states["FAILED"] + states["CRASHED"]) / len(days[day]))
        day_seconds = [seconds[i] for i in days[day]]
        assert p50 == pytest.approx(quantile(day_seconds, 0.5))
        assert p95 == pytest.approx(quantile(day_seconds, 0.95))
    # Three deployed runs in all, two completed and one failed, whichever days they fell on.
    assert [sum(row[k] for row in health) for k in (2, 3, 4, 5)] == [3, 2, 1, 0]

    late = {i: (ts(r["start_time"]) - ts(r["expected_start_time"])).total_seconds() for i, r in runs.items()}
    expected_late = {i: lag for i, lag in late.items() if lag >= 15}
    # The run scheduled 40 s back is late; on a loaded machine another run may start 15 s after its
    # expected time too (CI saw 15.6 s), and then it is late as well.
    assert max(expected_late.values()) >= 40
    got_late = {str(i): s for i, s in query(workload.db, "SELECT flow_run_id, late_seconds FROM late_runs")}
    assert got_late.keys() == expected_late.keys()
    assert all(got_late[i] == pytest.approx(expected_late[i]) for i in got_late)

    volume = Counter(
        (ts(e["occurred"]).replace(minute=0, second=0, microsecond=0), e["event"].rsplit(".", 1)[0]) for e in workload.events
    )
    got_volume = {(h, p): n for h, p, n in query(
        workload.db, "SELECT hour, event_prefix, events FROM event_volume WHERE hour >= $1",
        [workload.since.replace(minute=0, second=0, microsecond=0)],
    )}
    assert got_volume == dict(volume)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sql_reads_in_three_formats_and_cannot_change_the_archive(workload, tmp_path):
    db = tmp_path / "copy.duckdb"
    shutil.copy(workload.db, db)
    env = cli_env(None, db)
    before = sha256(db)
    for statement in [
        "DELETE FROM events",
        "UPDATE archive_state SET high_water_mark = NULL",
        "DROP VIEW late_runs",
        "CREATE TABLE notes AS SELECT 1",
        f"ATTACH '{db}' AS again; DELETE FROM again.events",
        f"ATTACH '{db}' AS again (READ_WRITE); DELETE FROM again.events",
        f"COPY events TO '{tmp_path / 'out.csv'}'",
        "SET enable_external_access = true",
        f"SELECT * FROM read_text('{tmp_path / 'copy.duckdb.lock'}')",
    ]:
        done = run_cli(["sql", statement], env)
        assert done.returncode == 2, (statement, done.stdout, done.stderr)
        assert done.stderr.startswith("prefect-archiver: error: the query") and done.stderr.count("\n") == 1, done.stderr
    assert sha256(db) == before
    assert not (tmp_path / "out.csv").exists()
    assert query(db, "SELECT count(*) FROM events") == query(workload.db, "SELECT count(*) FROM events")

    question = "SELECT flow_run_id, flow_name, state_name, seconds FROM flow_run_durations ORDER BY flow_run_id"
    expected = query(db, question)
    as_csv = run_cli(["sql", question, "--format", "csv"], env)
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["flow_run_id", "flow_name", "state_name", "seconds"]
    assert [(r[0], r[1], r[2], float(r[3])) for r in rows[1:]] == [(str(i), f, s, sec) for i, f, s, sec in expected]

    as_json = run_cli(["sql", "SELECT id, object, tags, created FROM flow_runs ORDER BY id", "--format", "json"], env)
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)
    archived = query(db, "SELECT id, object, created FROM flow_runs ORDER BY id")
    assert [(i["id"], i["object"], i["created"]) for i in items] == [
        (str(i), json.loads(o), format_timestamp(c)) for i, o, c in archived
    ]

    table = run_cli(["sql", question], env)
    assert table.returncode == 0 and table.stderr.strip() == f"({len(expected)} rows)"
    lines = table.stdout.splitlines()
    assert len(lines) == len(expected) + 2 and set(lines[1]) == {"-", " "}
    starts = [m.start() for m in re.finditer(r"-+", lines[1])]
    assert [lines[0][s - 1] if s else " " for s in starts] == [" "] * 4  # each header starts a column
    assert lines[2].split()[0] == str(expected[0][0])


def test_a_lower_server_limit_is_followed_and_a_refused_collection_waits_for_the_next_sync(workload, tmp_path):
    """A server with PREFECT_SERVER_API_DEFAULT_LIMIT=2, and one that will not serve work pools."""
    asked: list[int] = []

    def server_rules(_: int, request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/work_pools/filter"):
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path.endswith("/flow_runs/filter"):
            limit = json.loads(request.content)["limit"]
            asked.append(limit)
            if limit > 2:
                return httpx.Response(422, json={"detail": "Invalid limit: must be less than or equal to 2."})
        return None

    db = tmp_path / "limited.duckdb"
    settings = settings_for(workload.api, db, settle=timedelta(0), start=workload.since)
    with client_for_test(workload.api, Faults(before=server_rules)) as client:
        report = sync(settings, client, DuckDBWriter(db), since=workload.since, until=workload.until)
    assert report.outcome == "ok"
    assert asked == [5, 2, 2, 1]  # refused once, then at most two at a time
    # Compared with the server as it is now (another test deletes some runs there).
    on_server = server_objects(workload.api, "flow_runs", named_objects(workload.events)["flow_runs"])
    assert {str(i): json.loads(o) for i, o in query(db, "SELECT id, object FROM flow_runs")} == on_server
    assert query(db, "SELECT count(*) FROM work_pools") == [(0,)]
    assert query(db, "SELECT kind, attempts FROM object_refresh_queue") == [("work_pools", 0)]

    with client_for_test(workload.api) as client:
        sync(settings, client, DuckDBWriter(db), until=workload.until)
    assert query(db, "SELECT id, object FROM work_pools") == query(workload.db, "SELECT id, object FROM work_pools")
    assert query(db, "SELECT count(*) FROM object_refresh_queue") == [(0,)]


def create_archive_at_schema_1(path: Path, source: Path) -> None:
    """An archive as the first release made it (migration 0001 only), holding `source`'s events."""
    first = available()[0]
    assert first.version == 1
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL)")
        conn.execute(first.sql)
        conn.execute("INSERT INTO schema_migrations VALUES (1, $1, now())", [first.name])
        conn.execute(f"ATTACH '{source}' AS source (READ_ONLY)")
        for table in ("events", "event_resources", "syncs", "quarantine", "gaps"):
            # The columns schema 1 had: later migrations add some (e.g. quarantine.resolved, 0006).
            columns = ", ".join(d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description)
            conn.execute(f"INSERT INTO {table} SELECT {columns} FROM source.{table}")
        conn.execute("UPDATE archive_state SET high_water_mark = (SELECT high_water_mark FROM source.archive_state)")


def test_an_archive_from_the_first_schema_upgrades_in_place_and_fills_its_run_metadata(workload, tmp_path, monkeypatch):
    old = tmp_path / "old.duckdb"
    create_archive_at_schema_1(old, workload.db)
    tables = ("events", "event_resources", "archive_state", "syncs")
    # The columns schema 1 had: later migrations add some (syncs' ledger counters, e.g. 0007's).
    with duckdb.connect(str(old), read_only=True) as conn:
        had = {t: ", ".join(d[0] for d in conn.execute(f"SELECT * FROM {t} LIMIT 0").description) for t in tables}
    before = {t: sorted(map(str, query(old, f"SELECT {had[t]} FROM {t}"))) for t in tables}

    # Readers never change the schema; `sql` says what to do about views the archive lacks yet.
    refused = run_cli(["sql", "SELECT * FROM deployment_health"], cli_env(None, old))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"schema is version 1 and this prefect-archiver's is {available()[-1].version}" in refused.stderr
    assert "run `prefect-archiver sync` once to upgrade it in place" in refused.stderr

    archive = DuckDBWriter(old)  # opening it as the writer applies the migrations it lacks
    versions = [v for (v,) in query(old, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in available()]
    assert {t: sorted(map(str, query(old, f"SELECT {had[t]} FROM {t}"))) for t in tables} == before
    queued = {c: {str(i) for (i,) in query(old, "SELECT id FROM object_refresh_queue WHERE kind = $1", [c])}
              for c in COLLECTIONS.values()}
    assert queued == named_objects(workload.events)

    # The next sync finds no new events but refreshes every object the old events name, and reads
    # the logs of every run the server still has, two runs planned at a time (RUNS_PER_BATCH).
    monkeypatch.setattr("archiver.ingest.logs.RUNS_PER_BATCH", 2)
    with client_for_test(workload.api) as client:
        settings = settings_for(workload.api, old, settle=timedelta(0), start=workload.since)
        report = sync(settings, client, archive, until=workload.until)
    assert report.inserted == 0 and report.objects_refreshed == sum(len(ids) for ids in queued.values())
    for collection in COLLECTIONS.values():
        assert query(old, f"SELECT id, object FROM {collection} ORDER BY id") == \
            query(workload.db, f"SELECT id, object FROM {collection} ORDER BY id"), collection
    assert query(old, "SELECT * FROM flow_run_states ORDER BY event_id") == \
        query(workload.db, "SELECT * FROM flow_run_states ORDER BY event_id")
    logged = [str(i) for (i,) in query(old, "SELECT id FROM flow_runs WHERE state_type IN ('RUNNING', 'COMPLETED', "
                                          "'FAILED', 'CANCELLED', 'CRASHED') ORDER BY id")]
    assert len(logged) >= 5 and report.log_runs_read == len(logged)
    reader = DuckDBArchive(old).reader(timedelta(seconds=15))
    filled = 0
    with httpx.Client(base_url=workload.api + "/", timeout=30) as http:
        for run_id in logged:
            body = {"logs": {"flow_run_id": {"any_": [run_id]}, "level": {"ge_": 20}}, "limit": 200}
            on_server = {g["id"] for g in http.post("logs/filter", json=body).json()}
            assert reader.run_log_ids(uuid.UUID(run_id))[0] == on_server, run_id
            filled += bool(on_server)
    assert filled >= 2 and report.logs_inserted > 0  # runs that logged, planned in 3 batches
    assert query(old, "SELECT count(*) FROM log_progress") == [(len(logged),)]
    assert query(old, "SELECT runs_archived_before IS NOT NULL FROM logs_pass") == [(True,)]  # the pass was whole


def test_the_archive_still_answers_after_the_server_deletes_the_runs(workload, tmp_path):
    """Runs deleted on the server keep their archived version, state history and analytics.

    Last in this module: it deletes the workload's deployment and its runs on the server.
    """
    db = tmp_path / "trimmed.duckdb"
    shutil.copy(workload.db, db)
    question = "SELECT * FROM deployment_health"
    health = query(db, question)
    named = named_objects(workload.events)
    deployment_id = next(iter(named["deployments"]))
    runs = server_objects(workload.api, "flow_runs", named["flow_runs"])
    deployed = sorted(i for i, r in runs.items() if r["deployment_id"] == deployment_id)
    for path in [f"flow_runs/{run_id}" for run_id in deployed] + [f"deployments/{deployment_id}"]:
        delete(workload.api, path)
    assert server_objects(workload.api, "flow_runs", set(deployed)) == {}
    assert all(server_states(workload.api, "flow", run_id) == [] for run_id in deployed)

    # New events still name the deleted runs (as a late automation or a webhook might): the
    # refresh asks for them, finds nothing, and keeps what the archive had.
    before = {c: query(db, f"SELECT id, object, archived_at FROM {c} ORDER BY id") for c in ("flow_runs", "deployments")}
    now = datetime.now(UTC)
    posted = [
        make_event(now - timedelta(seconds=2), "acme.audit.reviewed",
                   related=[(f"prefect.flow-run.{run_id}", "flow-run"), (f"prefect.deployment.{deployment_id}", "deployment")])
        for run_id in deployed
    ]
    post_events(workload.api, posted)
    wait_until_quiet(workload.api, now - timedelta(minutes=1), now + timedelta(minutes=1))
    settings = settings_for(workload.api, db, settle=timedelta(0), start=workload.since)
    for attempt in range(1, GIVE_UP_AFTER + 1):
        with client_for_test(workload.api) as client:
            sync(settings, client, DuckDBWriter(db), until=datetime.now(UTC))
        left = query(db, "SELECT kind, attempts FROM object_refresh_queue ORDER BY kind")
        assert left == ([] if attempt == GIVE_UP_AFTER else [("deployments", attempt)] + [("flow_runs", attempt)] * 3)
    assert {c: query(db, f"SELECT id, object, archived_at FROM {c} ORDER BY id") for c in before} == before

    # With no server at all, `sql` answers from the archive alone.
    answer = run_cli(["sql", question, "--format", "json"], cli_env("http://127.0.0.1:9/api", db))
    assert answer.returncode == 0, answer.stderr
    (row,) = json.loads(answer.stdout)
    assert (row["deployment_name"], row["runs"], row["completed"], row["failed"]) == ("nightly", 3, 2, 1)
    assert [r[2:] for r in query(db, question)] == [r[2:] for r in health]
    states = query(db, "SELECT flow_run_id, state_name FROM flow_run_states WHERE flow_run_id = $1 ORDER BY timestamp",
                   [deployed[0]])
    assert [s for _, s in states][-1] in ("Completed", "Failed") and len(states) >= 3



def test_run_metadata_and_states_the_archive_cannot_type_do_not_stop_later_syncs(workload, tmp_path):
    """Times outside the years 1-9999 and counts that are no numbers, as a broken proxy or server
    could send them: the objects are archived whole with those columns empty, the bad state
    record is left out, and every sync ends ok."""
    broken_runs: set[str] = set()
    broken_states: set[str] = set()

    def after(_: int, request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        path = request.url.path
        if path.endswith("/flow_runs/filter"):
            runs = response.json()
            for run in runs:
                run["start_time"] = "9999-12-31T23:59:59-01:00"
                run["run_count"] = "lots"
                broken_runs.add(run["id"])
            return httpx.Response(200, json=runs)
        if path.endswith("/flow_run_states/") and not broken_states and response.json():
            states = response.json()
            states[0]["timestamp"] = "0001-01-01T00:00:00+01:00"
            broken_states.add(states[0]["id"])
            return httpx.Response(200, json=states)
        return None

    db = tmp_path / "untyped.duckdb"
    settings = settings_for(workload.api, db, settle=timedelta(0), start=workload.since)
    with client_for_test(workload.api, Faults(after=after)) as client:
        first = sync(settings, client, DuckDBWriter(db), since=workload.since, until=workload.until)
        again = sync(settings, client, DuckDBWriter(db), since=workload.since, until=workload.until)
    assert first.outcome == again.outcome == "ok"
    assert broken_runs and broken_states
    rows = query(db, "SELECT id, start_time, run_count, object FROM flow_runs")
    assert {str(r[0]) for r in rows} == broken_runs
    for _, start_time, run_count, obj in rows:
        assert start_time is None and run_count is None
        assert json.loads(obj)["start_time"] == "9999-12-31T23:59:59-01:00"  # kept whole, as sent
    saved = {str(r[0]) for r in query(db, "SELECT id FROM run_states")}
    assert saved and not saved & broken_states
    # Every other state record the server holds of these runs is here.
    on_server = {s["id"] for run_id in broken_runs for s in server_states(workload.api, "flow", run_id)}
    assert on_server - broken_states <= saved

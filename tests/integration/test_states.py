"""Run states and result references, against real flow runs on the real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from archiver.errors import ApiUnavailable
from archiver.ingest.report import SyncReport
from archiver.ingest.states import GIVE_UP_AFTER, refresh_states
from archiver.ingest.sync import sync
from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.query import get_run_result, get_run_states
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.prefect_server import delete, make_event, post_events, run_flows_script, server_states, wait_until_quiet
from tests.support import ROOT, Faults, cli_env, client_for_test, query, run_cli, settings_for

UTC = timezone.utc

STATES_WORKLOAD = '''
import os

from prefect import flow, task
from prefect.filesystems import LocalFileSystem

_attempts = {"fetch": 0}


@task(persist_result=True, result_serializer="json", retries=2, retry_delay_seconds=0)
def fetch(x: int) -> dict:
    _attempts["fetch"] += 1
    if _attempts["fetch"] == 1:
        raise ConnectionError("the first attempt fails on purpose")
    return {"x": x, "doubled": x * 2}


@flow(name="archiver-json-result", persist_result=True, result_serializer="json")
def json_result(n: int = 3) -> dict:
    return {"total": n, "fetched": fetch(n), "note": "caf\\u00e9"}


@flow(name="archiver-pickle-result", persist_result=True, result_serializer="pickle")
def pickle_result() -> set:
    return {1, 2, 3}


@flow(name="archiver-failing-result", persist_result=True, result_serializer="json")
def failing_result(n: int = -1) -> int:
    raise ValueError(f"n must not be negative, got {n}")


@flow(name="archiver-block-result", persist_result=True, result_serializer="json",
      result_storage="local-file-system/archiver-results")
def block_result() -> list:
    return [1, "two", None]


if __name__ == "__main__":
    LocalFileSystem(basepath=os.environ["BLOCK_BASEPATH"]).save("archiver-results", overwrite=True)
    runs = (("json", json_result), ("pickle", pickle_result), ("failing", failing_result), ("block", block_result))
    for name, run in runs:
        state = run(return_state=True)
        print("RUN", name, state.state_details.flow_run_id)
'''

JSON_VALUE = {"total": 3, "fetched": {"x": 3, "doubled": 6}, "note": "café"}


@dataclass
class StatesWorkload:
    api: str
    db: Path
    results: Path
    since: datetime
    until: datetime  # the end of the fixture's sync
    runs: dict[str, str]  # json / pickle / failing -> flow run id
    tasks: dict[str, str]  # task run id -> flow run id


def server_task_runs(api: str, flow_run_ids: list[str]) -> dict[str, str]:
    with httpx.Client(base_url=api + "/", timeout=30) as http:
        response = http.post("task_runs/filter", json={"flow_runs": {"id": {"any_": flow_run_ids}}})
        response.raise_for_status()
        return {t["id"]: t["flow_run_id"] for t in response.json()}


Sent = Counter[str]


def sync_to_now(api: str, db: Path, since: datetime, until: datetime | None = None) -> tuple[SyncReport, Sent, Sent]:
    """One sync up to now (or `until`): its report, requests sent per path, and the runs whose states it asked for.

    Other tests' runs on the shared server may change state meanwhile, so tests look at their own runs.
    """
    asked: Counter[str] = Counter()

    def record(_: int, request: httpx.Request) -> None:
        if request.url.path.endswith("_run_states/"):
            asked[request.url.params.get("flow_run_id") or request.url.params.get("task_run_id") or ""] += 1

    with client_for_test(api, Faults(before=record)) as client:
        settings = settings_for(api, db, settle=timedelta(0), start=since)
        report = sync(settings, client, DuckDBWriter(db), until=until or datetime.now(UTC))
        sent = client.sent.copy()
    assert report.outcome == "ok"
    return report, sent, asked


@pytest.fixture(scope="module")
def states_workload(prefect_server, tmp_path_factory) -> StatesWorkload:
    """Flows with JSON, pickled and failed results and a retried task, archived by one sync."""
    api = prefect_server.api_url
    results = tmp_path_factory.mktemp("results")
    since = datetime.now(UTC) - timedelta(seconds=5)
    env = {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(results), "BLOCK_BASEPATH": str(results / "block")}
    done = run_flows_script(api, STATES_WORKLOAD, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {line.split()[1]: line.split()[2] for line in done.stdout.splitlines() if line.startswith("RUN ")}
    assert set(runs) == {"json", "pickle", "failing", "block"}
    wait_until_quiet(api, since, datetime.now(UTC) + timedelta(minutes=1))
    db = tmp_path_factory.mktemp("states") / "archive.duckdb"
    until = datetime.now(UTC)
    _, _, asked = sync_to_now(api, db, since, until)
    tasks = server_task_runs(api, list(runs.values()))
    assert all(asked[run_id] == 1 for run_id in [*runs.values(), *tasks]), asked
    return StatesWorkload(api, db, results, since, until, runs, tasks)


def archived_states(db: Path, run_id: str) -> list[dict[str, Any]]:
    columns = ("id", "run_kind", "run_id", "type", "name", "timestamp", "message", "state_details", "data_kind",
               "storage_key", "storage_block_id", "serializer_type", "result_expiration", "result_prefect_version", "state")
    rows = query(db, f"SELECT {', '.join(columns)} FROM run_states WHERE run_id = $1 ORDER BY timestamp", [run_id])
    return [dict(zip(columns, row, strict=True)) for row in rows]


def ts(value: str) -> datetime:
    return parse_timestamp(value)


def test_sync_archives_every_state_of_each_run_as_the_server_returns_it(states_workload):
    w = states_workload
    runs = [("flow", run_id) for run_id in w.runs.values()] + [("task", task_id) for task_id in w.tasks]
    for kind, run_id in runs:
        expected = server_states(w.api, kind, run_id)
        archived = archived_states(w.db, run_id)
        assert [str(a["id"]) for a in archived] == [s["id"] for s in expected], run_id
        for state, row in zip(expected, archived, strict=True):
            assert json.loads(row["state"]) == state
            assert (row["run_kind"], str(row["run_id"]), row["type"], row["name"], row["timestamp"]) == (
                f"{kind}_run", run_id, state["type"], state["name"], ts(state["timestamp"]))
            assert row["message"] == (state["message"] or None)
            assert json.loads(row["state_details"]) == state["state_details"]
            data = state["data"]
            if data is None:
                assert row["data_kind"] == "none" and row["storage_key"] is None
            else:
                assert row["data_kind"] == "result_reference"
                block_id = str(row["storage_block_id"]) if row["storage_block_id"] else None
                assert (row["storage_key"], block_id, row["serializer_type"], row["result_prefect_version"]) == (
                    data["storage_key"], data["storage_block_id"], data["serializer"]["type"], data["prefect_version"])
                assert row["result_expiration"] is None and data["expiration"] is None
        # Every state-change event the archive holds for the run is one of these states (same id).
        event_ids = query(w.db, f"SELECT event_id FROM {kind}_run_states WHERE {kind}_run_id = $1", [run_id])
        assert {str(e) for (e,) in event_ids} <= {str(a["id"]) for a in archived}

    final = {name: archived_states(w.db, run_id)[-1] for name, run_id in w.runs.items()}
    assert (final["json"]["name"], final["json"]["serializer_type"]) == ("Completed", "json")
    assert Path(final["json"]["storage_key"]).parent == w.results
    assert (final["pickle"]["name"], final["pickle"]["serializer_type"]) == ("Completed", "pickle")
    assert final["failing"]["name"] == "Failed"
    assert "ValueError: n must not be negative, got -1" in final["failing"]["message"]
    # A LocalFileSystem block's key is relative to its basepath; the block is archived (without its data).
    block_id = final["block"]["storage_block_id"]
    assert block_id is not None and str(block_id) == json.loads(final["block"]["state"])["data"]["storage_block_id"]
    assert block_id is not None and not Path(final["block"]["storage_key"]).is_absolute()
    assert query(w.db, "SELECT id, found, name, block_type_slug, basepath FROM result_storage_blocks") == [
        (block_id, True, "archiver-results", "local-file-system", str(w.results / "block"))]
    (task_id,) = w.tasks
    names = [s["name"] for s in archived_states(w.db, task_id)]
    assert names[0] == "Pending" and names[-1] == "Completed" and "Retrying" in names


def test_a_second_sync_reads_no_states_and_a_new_state_is_read_again(states_workload, tmp_path):
    w = states_workload
    db = tmp_path / "copy.duckdb"
    shutil.copy(w.db, db)
    again, sent, _ = sync_to_now(w.api, db, w.since, w.until)  # no new events
    assert again.runs_states_read == 0
    assert sent["flow_run_states/"] == 0 and sent["task_run_states/"] == 0
    assert not [path for path in sent if path.startswith("block_documents")]

    # A new state for one run (as a retry from the UI would make): the next sync reads that run only.
    run_id = w.runs["pickle"]
    now = datetime.now(UTC)
    with httpx.Client(base_url=w.api + "/", timeout=30) as http:
        response = http.post(f"flow_runs/{run_id}/set_state", json={
            "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "scheduled again by a test"},
            "force": True,
        })
        assert response.status_code == 201 and response.json()["status"] == "ACCEPT", response.text
    wait_until_quiet(w.api, now - timedelta(seconds=1), now + timedelta(minutes=1))
    _, _, asked = sync_to_now(w.api, db, w.since)
    ours = {*w.runs.values(), *w.tasks}
    assert {r for r in asked if r in ours} == {run_id} and asked[run_id] == 1
    expected = server_states(w.api, "flow", run_id)
    assert [str(s["id"]) for s in archived_states(db, run_id)] == [s["id"] for s in expected]
    assert expected[-1]["message"] == "scheduled again by a test"
    assert archived_states(db, run_id)[-1]["message"] == "scheduled again by a test"


def run_states_cli(w: StatesWorkload, *args: str, db: Path | None = None, api: str | None = None) -> Any:
    return run_cli(["states", *args], cli_env(api, db or w.db))


def test_states_command_lists_states_messages_and_where_the_result_lives(states_workload):
    w = states_workload
    failing = run_states_cli(w, w.runs["failing"])
    assert failing.returncode == 0, failing.stderr
    lines = failing.stdout.splitlines()
    assert lines[0].startswith("flow run ") and lines[0].endswith(w.runs["failing"])
    assert [line.split()[2] for line in lines[1:4]] == ["Pending", "Running", "Failed"]
    assert any("ValueError: n must not be negative, got -1" in line for line in lines[4:])
    assert lines[-1].startswith("result: local file ") and "serializer json" in lines[-1]

    as_json = run_states_cli(w, w.runs["json"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    expected = server_states(w.api, "flow", w.runs["json"])
    assert document["run_kind"] == "flow_run" and document["run_name"]
    assert [(s["id"], s["name"], s["message"], s["source"]) for s in document["states"]] == [
        (s["id"], s["name"], s["message"] or None, "state") for s in expected]
    assert document["states"][-1]["result"]["storage_key"] == expected[-1]["data"]["storage_key"]
    assert "result_value" not in document

    (task_id,) = w.tasks
    task = run_states_cli(w, task_id)
    assert task.returncode == 0, task.stderr
    assert task.stdout.startswith("task run fetch-") and "Retrying" in task.stdout

    # A run the archive does not know yet (one newer than the last sync): the archive says where it ends.
    unknown = run_states_cli(w, "6b5e8f0e-0000-4000-8000-000000000000")
    mark = query(w.db, "SELECT high_water_mark FROM archive_state")[0][0]
    assert unknown.returncode == 1 and unknown.stderr == (
        f"prefect-archiver: error: no flow run or task run with id 6b5e8f0e-0000-4000-8000-000000000000 in the archive "
        f"at {w.db}, which ends at its high-water mark {format_timestamp(mark)}: a run newer than that is archived by "
        "the next `prefect-archiver sync`\n")
    assert document["archived_until"] == format_timestamp(mark)
    bad = run_states_cli(w, "not-a-uuid")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_show_result_prints_a_json_result_and_explains_what_it_cannot_read(states_workload):
    w = states_workload
    shown = run_states_cli(w, w.runs["json"], "--show-result")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout.split("result value:\n", 1)[1]) == JSON_VALUE
    as_json = json.loads(run_states_cli(w, w.runs["json"], "--show-result", "--json").stdout)
    assert as_json["result_value"] == JSON_VALUE

    # A task's result file is a whole result record (metadata + serialized value), a flow's holds the value alone.
    (task_id,) = w.tasks
    task = run_states_cli(w, task_id, "--show-result", "--json")
    assert task.returncode == 0, task.stderr
    assert json.loads(task.stdout)["result_value"] == JSON_VALUE["fetched"]

    # A result in a LocalFileSystem block: the archived block's basepath locates the file.
    block = run_states_cli(w, w.runs["block"], "--show-result")
    assert block.returncode == 0, block.stderr
    assert "local-file-system block 'archiver-results'" in block.stdout
    assert json.loads(block.stdout.split("result value:\n", 1)[1]) == [1, "two", None]

    # A failed run with the JSON serializer persisted its exception.
    failing = json.loads(run_states_cli(w, w.runs["failing"], "--show-result", "--json").stdout)
    assert failing["result_value"] == {"__exc_type__": "builtins.ValueError", "message": "n must not be negative, got -1"}

    # Prefect's default serializer, pickle: read through Prefect's own result store (prefect is installed here).
    pickled = run_states_cli(w, w.runs["pickle"], "--show-result")
    assert pickled.returncode == 0, pickled.stderr
    assert pickled.stdout.endswith("result value (Python repr: JSON cannot hold it):\n{1, 2, 3}\n")
    as_json = json.loads(run_states_cli(w, w.runs["pickle"], "--show-result", "--json").stdout)
    assert as_json["result_value"] == "{1, 2, 3}" and as_json["result_value_is_repr"] is True

    # Where prefect is not installed, the same command explains what reads it, in one line.
    code = ("import sys; sys.modules['prefect'] = None  # as if prefect were not installed\n"
            f"from archiver.cli import main; sys.exit(main(['states', '{w.runs['pickle']}', '--show-result']))")
    pickled = subprocess.run([sys.executable, "-c", code], env=cli_env(None, w.db), cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert pickled.returncode == 1
    assert "Completed" in pickled.stdout  # the states are still listed
    assert pickled.stderr.count("\n") == 1 and "serialized with pickle" in pickled.stderr
    # The hint is Python that Prefect runs: it reads the pickled value back.
    hint = pickled.stderr.split("reachable: ", 1)[1].split(" (ResultStore and", 1)[0]
    script = ("from prefect.results import ResultStore, resolve_serializer\n"
              "from prefect.filesystems import LocalFileSystem\n"
              f"print(sorted({hint}))\n")
    read_back = run_flows_script(w.api, script)
    assert read_back.returncode == 0, read_back.stderr[-2000:]
    assert read_back.stdout.strip() == "[1, 2, 3]"

    settings = settings_for(w.api, w.db)
    assert get_run_result(w.runs["json"], settings=settings) == JSON_VALUE
    assert get_run_result(w.runs["pickle"], settings=settings) == {1, 2, 3}


def test_an_interrupted_states_pass_keeps_what_it_committed_and_the_next_reads_only_the_rest(states_workload, tmp_path):
    """A 429 is waited out; a server that then fails stops the pass after its first batch; the next pass resumes."""
    w = states_workload
    db = tmp_path / "interrupted.duckdb"
    shutil.copy(w.db, db)
    total = query(db, "SELECT count(*) FROM run_state_fetches")[0][0]
    with duckdb.connect(str(db)) as conn:  # as if the archive's states had never been read
        conn.execute("DELETE FROM run_states; DELETE FROM run_state_fetches; "
                     "UPDATE run_states_progress SET events_archived_before = NULL")
    asked: list[str] = []

    def flaky_server(_: int, request: httpx.Request) -> httpx.Response | None:
        if "_run_states" not in request.url.path:
            return None
        asked.append(request.url.params.get("flow_run_id") or request.url.params.get("task_run_id") or "")
        if len(asked) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "slow down"})
        if len(asked) >= 4:
            return httpx.Response(503, json={"detail": "unavailable"})
        return None

    archive = DuckDBWriter(db)
    with client_for_test(w.api, Faults(before=flaky_server)) as client, pytest.raises(ApiUnavailable):
        refresh_states(client, archive, concurrency=1, batch=2)
    first_batch = set(asked[:3])
    assert len(first_batch) == 2
    assert {str(r) for (r,) in query(db, "SELECT DISTINCT run_id FROM run_states")} == first_batch
    assert query(db, "SELECT events_archived_before FROM run_states_progress") == [(None,)]

    with client_for_test(w.api) as client:
        resumed = refresh_states(client, archive, batch=2)
    assert resumed.runs_read == total - 2
    # Every run's states as the server has them now (an earlier test gave one run a new state).
    runs = [("flow", run_id) for run_id in w.runs.values()] + [("task", task_id) for task_id in w.tasks]
    for kind, run_id in runs:
        assert [json.loads(s["state"]) for s in archived_states(db, run_id)] == server_states(w.api, kind, run_id)


def test_a_backlog_of_runs_is_read_over_several_passes(states_workload, tmp_path):
    """As after upgrading a large archive: each pass reads at most max_runs; the cursor moves after the last."""
    w = states_workload
    db = tmp_path / "backlog.duckdb"
    shutil.copy(w.db, db)
    total = query(db, "SELECT count(*) FROM run_state_fetches")[0][0]
    with duckdb.connect(str(db)) as conn:
        conn.execute("DELETE FROM run_states; DELETE FROM run_state_fetches; "
                     "UPDATE run_states_progress SET events_archived_before = NULL")
    archive = DuckDBWriter(db)
    read = []
    with client_for_test(w.api) as client:
        while not query(db, "SELECT events_archived_before FROM run_states_progress")[0][0]:
            read.append(refresh_states(client, archive, max_runs=2).runs_read)
            assert len(read) <= total
        assert refresh_states(client, archive, max_runs=2).runs_read == 0
    assert read == [2] * (total // 2) + ([total % 2] if total % 2 else [])
    assert query(db, "SELECT count(DISTINCT run_id) FROM run_states")[0][0] == total


def test_the_archive_answers_after_the_server_deletes_the_runs(states_workload, tmp_path):
    """Deletes runs on the shared server: keep it last in this module."""
    w = states_workload
    db = tmp_path / "kept.duckdb"
    shutil.copy(w.db, db)
    failing, completed = w.runs["failing"], w.runs["json"]
    for run_id in (failing, completed):
        delete(w.api, f"flow_runs/{run_id}")
        assert server_states(w.api, "flow", run_id) == []
    sync_to_now(w.api, db, w.since)  # what changed since the fixture's sync (the previous test's new state)
    before = query(db, "SELECT * FROM run_states WHERE run_id IN ($1, $2) ORDER BY id", [failing, completed])

    # A late state event still names a deleted run: its states are asked for, the server has none,
    # and the archive keeps what it had; after GIVE_UP_AFTER reads it stops asking.
    now = datetime.now(UTC)
    post_events(w.api, [make_event(
        now - timedelta(seconds=1), "prefect.flow-run.Crashed", resource_id=f"prefect.flow-run.{failing}",
        resource_extra={"prefect.state-type": "CRASHED", "prefect.state-name": "Crashed",
                        "prefect.state-timestamp": (now - timedelta(seconds=1)).isoformat()},
    )])
    wait_until_quiet(w.api, now - timedelta(minutes=1), now + timedelta(minutes=1))
    for attempt in range(1, GIVE_UP_AFTER + 1):
        _, _, asked = sync_to_now(w.api, db, w.since)
        assert asked[failing] == 1, attempt
        fetches = query(db, "SELECT attempts, states FROM run_state_fetches WHERE run_id = $1", [failing])
        assert fetches == [(attempt % GIVE_UP_AFTER, 0)]
    assert sync_to_now(w.api, db, w.since)[2][failing] == 0
    assert query(db, "SELECT * FROM run_states WHERE run_id IN ($1, $2) ORDER BY id", [failing, completed]) == before
    assert len(before) == 6

    # With no server at all, the states and the result still answer from the archive (and the file).
    offline = "http://127.0.0.1:9/api"
    shown = run_states_cli(w, completed, "--show-result", "--json", db=db, api=offline)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["result_value"] == JSON_VALUE
    in_block = run_states_cli(w, w.runs["block"], "--show-result", "--json", db=db, api=offline)
    assert in_block.returncode == 0 and json.loads(in_block.stdout)["result_value"] == [1, "two", None]
    listed = run_states_cli(w, failing, "--json", db=db, api=offline)
    assert listed.returncode == 0, listed.stderr
    states = json.loads(listed.stdout)["states"]
    assert [(s["name"], s["source"]) for s in states] == [
        ("Pending", "state"), ("Running", "state"), ("Failed", "state"), ("Crashed", "event")]
    assert "ValueError: n must not be negative, got -1" in states[2]["message"]
    history = get_run_states(failing, settings=settings_for(offline, db))
    assert history.final is not None and (history.final.name, history.final.data_kind) == ("Crashed", "unknown")
    assert history.states[2].result is not None and history.states[2].result.serializer_type == "json"
    no_result = run_states_cli(w, failing, "--show-result", db=db, api=offline)
    assert no_result.returncode == 1 and "only its state-change event was archived" in no_result.stderr



def test_a_run_still_in_progress_at_the_mark_says_the_archive_ends_there(states_workload, tmp_path):
    """As when a sync ran while the flow was running: its last archived state is Running."""
    w = states_workload
    db = tmp_path / "midrun.duckdb"
    shutil.copy(w.db, db)
    run_id = w.runs["json"]
    with duckdb.connect(str(db)) as conn:
        final = conn.execute("SELECT id FROM run_states WHERE run_id = $1 AND type = 'COMPLETED'", [run_id]).fetchall()
        conn.execute("DELETE FROM run_states WHERE id IN (SELECT unnest($1::UUID[]))", [[str(i) for (i,) in final]])
        conn.execute("DELETE FROM events WHERE id IN (SELECT unnest($1::UUID[]))", [[str(i) for (i,) in final]])
        mark = conn.execute("SELECT high_water_mark FROM archive_state").fetchone()[0]
    shown = run_states_cli(w, run_id, db=db)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[-3].split()[2] == "Running"
    assert lines[-2] == (f"  (the archive ends at its high-water mark {format_timestamp(mark)}: later states come with "
                         "the next sync)")
    done = run_states_cli(w, run_id)  # the whole run, in the fixture's archive: no such note
    assert "the archive ends at" not in done.stdout

"""The servers people run: sync, verify and get work the same on the newest Prefect, on 3.4.18
(the version in the original user report) and on a Prefect server whose database is PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from archiver.prefect.events import format_timestamp
from archiver.query import get_event
from tests.prefect_server import (
    DEMO_FLOWS,
    PrefectServer,
    make_event,
    post_events,
    run_flows_script,
    server_events,
    wait_until_quiet,
)
from tests.support import cli_env, query, run_cli, settings_for, write_config

UTC = timezone.utc

# Each smoke runs against one of these (fixtures in conftest.py); the name of the fixture giving
# the interpreter whose Prefect client feeds it (None: the test venv's).
SERVERS = {
    "newest": ("prefect_server", None),
    "prefect-3.4.18": ("prefect_server_3_4", "prefect_3_4_python"),
    "postgresql": ("prefect_server_postgres", None),
}


@dataclass
class Fed:
    """A server and the window holding what `feed` gave it, all of it stored."""

    server: PrefectServer
    since: datetime
    until: datetime
    custom: list[dict[str, Any]]


def feed(server: PrefectServer, python: Path | None) -> Fed:
    """Real flow runs (tasks, a retry, a failure) by a client of the server's own release, and
    custom events; returns once the server has stored them all."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    result = run_flows_script(server.api_url, DEMO_FLOWS, python=python)
    assert result.returncode == 0, result.stderr[-3000:]
    now = datetime.now(UTC)
    custom = [
        make_event(now - timedelta(seconds=2), event="acme.order.placed", payload={"order": 1},
                   related=[("prefect.tag.smoke", "tag")]),
        make_event(now - timedelta(seconds=1), event="acme.ünïcödé.事件",
                   resource_extra={"prefect.resource.name": "café ☕"}, payload={"text": "שלום 🚀"}),
        make_event(now, event="acme.big", payload={"blob": "x" * 200_000}),
    ]
    post_events(server.api_url, custom)
    wait_until_quiet(server.api_url, since, now + timedelta(minutes=1))
    return Fed(server, since, datetime.now(UTC), custom)


@pytest.fixture(scope="module")
def fed(request: pytest.FixtureRequest) -> dict[str, Fed]:
    """Every server fed at once: feeding is mostly waiting (a flow run, the server's 5 s flushes)."""
    jobs = {}
    with ThreadPoolExecutor(max_workers=len(SERVERS)) as pool:
        for name, (server_fixture, python_fixture) in SERVERS.items():
            python = request.getfixturevalue(python_fixture) if python_fixture else None
            jobs[name] = pool.submit(feed, request.getfixturevalue(server_fixture), python)
        return {name: job.result() for name, job in jobs.items()}


def server_flow_run(api_url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    return dict(response.json())


@pytest.mark.parametrize("name", list(SERVERS))
def test_sync_verify_and_get_on_the_servers_people_run(name, fed, request, tmp_path):
    server, started, until, custom = fed[name].server, fed[name].since, fed[name].until, fed[name].custom
    since_text, until_text = format_timestamp(started), format_timestamp(until)
    db = tmp_path / "archive.duckdb"
    # ingest.start bounds the trailing reconcile too: on the shared server it would otherwise read
    # the 24 h before `started` as well, and the archive would hold other tests' events.
    config = write_config(tmp_path / "archiver.toml", f'settle = "0s"\nstart = "{since_text}"\n')
    env = cli_env(server.api_url, db, config)

    # `check` names the release it talks to: the one this server was really started from.
    checked = run_cli(["check"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    expected = "3.4.18" if name == "prefect-3.4.18" else version("prefect")
    assert [line.split()[-1] for line in checked.stdout.splitlines() if line.startswith("server:")] == [expected]

    synced = run_cli(["sync", "--since", since_text, "--until", until_text, "--json"], env)
    assert synced.returncode == 0, synced.stderr
    on_server = {e["id"]: e for e in server_events(server.api_url, started, until)}
    assert {c["id"] for c in custom} <= on_server.keys()
    # The archive holds the server's events, no more and no less.
    assert {str(event_id) for (event_id,) in query(db, "SELECT id FROM events")} == on_server.keys()
    assert json.loads(synced.stdout)["inserted"] == len(on_server)

    checked = run_cli(["verify", "--since", since_text, "--until", until_text], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # A state-change event (its id is the state's id) and a custom one, by the CLI and from Python.
    failed = next(e for e in on_server.values() if e["event"] == "prefect.flow-run.Failed")
    for event in (failed, on_server[custom[1]["id"]]):
        got = run_cli(["get", event["id"], "--json", "--archive-only"], env)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout) == event
        assert get_event(event["id"], settings=settings_for(None, db)) == event  # no API: the archive answered

    # The flow runs the events name were archived with the state the server gives them.
    run_ids = {e["resource"]["prefect.resource.id"].removeprefix("prefect.flow-run.")
               for e in on_server.values() if e["resource"]["prefect.resource.id"].startswith("prefect.flow-run.")}
    archived_runs = {str(run_id): state for run_id, state in query(db, "SELECT id, state_type FROM flow_runs")}
    assert archived_runs == {run_id: server_flow_run(server.api_url, run_id)["state_type"] for run_id in run_ids}
    assert sorted(archived_runs.values()) == ["COMPLETED", "FAILED"]

    if name == "postgresql":
        # The server really kept its events in PostgreSQL, not in a SQLite file beside it.
        stored = request.getfixturevalue("postgres_database").query(
            f"SELECT count(*) FROM events WHERE occurred BETWEEN '{since_text}' AND '{until_text}'")
        assert int(stored) == len(on_server)

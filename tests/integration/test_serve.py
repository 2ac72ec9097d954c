"""`serve` against the real Prefect server: the same requests get the same answers, pages stay stable."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import uvicorn

from archiver.lookup.events import find_event
from archiver.lookup.search import search_events
from archiver.prefect.events import Event, format_timestamp, parse_event
from archiver.storage.duckdb.writer import DuckDBWriter
from archiver.web.api import create_app
from tests.prefect_server import free_port, make_event
from tests.support import ROOT, cli_env, settings_for, start_cli, sync_range, write_config

UTC = timezone.utc


@contextmanager
def serving(app):
    """The app on a free loopback port, in a thread of this process (uvicorn, as `serve` runs it)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def archived(prefect_server, history, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "archive.duckdb"
    return sync_range(prefect_server.api_url, db, history.since, history.end)


@pytest.fixture(scope="module")
def serve_url(archived):
    with serving(create_app(archived, token="")) as url:
        yield url


def page_token(next_page: str) -> str:
    return next_page.split("page-token=", 1)[1]


def walk(base: str, body: dict, headers: dict | None = None) -> list[dict]:
    """Every page of a filter, following next_page by its token against `base` (as clients should)."""
    with httpx.Client(base_url=base, headers=headers or {}, timeout=60) as http:
        response = http.post("/events/filter", json=body)
        assert response.status_code == 200, response.text
        pages = [response.json()]
        while pages[-1]["next_page"]:
            assert pages[-1]["next_page"].startswith(f"{base}/events/filter/next?page-token=")
            response = http.get("/events/filter/next", params={"page-token": page_token(pages[-1]["next_page"])})
            assert response.status_code == 200, response.text
            pages.append(response.json())
            assert len(pages) < 500
    return pages


RUN = "prefect.flow-run.00000007-0000-4000-8000-000000000000"


def window(history) -> dict:
    return {"since": format_timestamp(history.since), "until": format_timestamp(history.until)}


def filter_bodies(history) -> list[dict]:
    w = window(history)
    run = RUN
    return [
        {"filter": {"occurred": w, "order": "ASC"}, "limit": 50},
        {"filter": {"occurred": w}},
        {"filter": {"occurred": w, "event": {"prefix": ["prefect.flow-run."]}}, "limit": 50},
        {"filter": {"occurred": w, "event": {"name": ["acme.burst"]}, "order": "ASC"}, "limit": 50},
        {"filter": {"occurred": w, "event": {"exclude_prefix": ["prefect."], "exclude_name": ["acme.burst", "acme.dense"]}}},
        {"filter": {"occurred": w, "resource": {"id": [run]}}, "limit": 7},
        {"filter": {"occurred": w, "resource": {"id_prefix": ["prefect.flow-run.0000001"]}, "order": "ASC"}},
        {"filter": {"occurred": w, "resource": {"labels": {"prefect.resource.name": "café*"}}}},
        {"filter": {"occurred": w, "resource": {"labels": {"prefect.resource.id": "!prefect.flow-run.*"}},
                    "event": {"exclude_name": ["acme.dense"]}}},
        {"filter": {"occurred": w, "related": {"id": ["prefect.flow.3"]}}, "limit": 50},
        {"filter": {"occurred": w, "related": {"role": ["role-3"]}}},
        {"filter": {"occurred": w, "related": {"resources_in_roles": [["prefect.flow.2", "flow"]]}, "order": "ASC"}},
        {"filter": {"occurred": w, "related": {"labels": {"prefect.resource.id": "acme.thing.1*"}}}},
        {"filter": {"occurred": w, "related": [{"id": ["prefect.flow.1"]}, {"role": ["tag"]}],
                    "event": {"prefix": ["prefect.flow-run.C"]}}},
        {"filter": {"occurred": w, "any_resource": {"id": [run]}}},
        # `related` never matches the event's own resource unless a role is asked for: nothing here.
        {"filter": {"occurred": w, "related": {"id": [run]}}},
        {"filter": {"occurred": w, "any_resource": {"id_prefix": ["acme.thing.3"]}}},
        {"filter": {"occurred": w, "any_resource": [{"labels": {"prefect.resource.name": ["nope", "*東京"]}},
                                                    {"labels": {"prefect.resource.role": ""}}]}},
        {"filter": {"occurred": w, "related": {"labels": {"prefect.resource.role": ["role-1", "role-2"],
                                                          "prefect.resource.id": "acme.thing.?"}}}},
        {"filter": {"occurred": w, "id": {"id": sorted(history.ids)[:3]}}},
        # Many related / any_resource filters at once: each must be matched by a resource of its own
        # kind, all of them by the same event (serve compiles them into one pass; Prefect ANDs them).
        {"filter": {"occurred": w, "related": [{"resources_in_roles": [[f"acme.thing.{i}", f"role-{i % 7}"]]}
                                               for i in range(history.related_count)]}},
        {"filter": {"occurred": w, "related": [{"id": ["prefect.flow.1"]}, {"role": ["tag"]},
                                               {"labels": {"prefect.resource.id": "prefect.tag.*"}}],
                    "any_resource": [{"id_prefix": ["prefect.flow-run."]}, {"labels": {"prefect.resource.role": "flow"}}]},
         "limit": 50},
        {"filter": {"occurred": w, "related": [{"role": ["tag"]}] * 100, "order": "ASC"}},
        {"filter": {"occurred": w, "any_resource": [{"labels": {"prefect.resource.name": "café*"}},
                                                    {"id_prefix": ["test.archiver.resource."]}]}},
        {"filter": {"occurred": w, "related": [{"role": ["role-1"], "labels": {"prefect.resource.id": "acme.thing.*"}},
                                               {"id": ["acme.thing.2"]}, {"labels": {"prefect.resource.role": "role-3"}}]}},
        # A role of "" names the event's own resource, in Prefect's event_resources as here.
        {"filter": {"occurred": w, "related": {"role": [""], "id": [run]}}},
        {"filter": {"occurred": {"since": w["since"], "until": format_timestamp(history.since + timedelta(hours=30, seconds=5))},
                    "order": "DESC"}, "limit": 13},
    ]


def test_serve_answers_prefect_shaped_requests_like_the_real_server(prefect_server, history, serve_url):
    for body in filter_bodies(history):
        ours, theirs = walk(serve_url, body), walk(prefect_server.api_url, body)
        assert theirs[0]["total"] > 0 or body["filter"].get("related") == {"id": [RUN]}, body
        assert len(ours) == len(theirs), body
        for mine, real in zip(ours, theirs, strict=True):
            assert set(mine) == set(real) == {"events", "total", "next_page"}
            assert mine["total"] == real["total"], body
            assert (mine["next_page"] is None) == (real["next_page"] is None), body
            # Same order by occurred; among events of one instant Prefect has no order, we use the id.
            assert [e["occurred"] for e in mine["events"]] == [e["occurred"] for e in real["events"]], body
        all_ours = [e for page in ours for e in page["events"]]
        all_theirs = [e for page in theirs for e in page["events"]]
        assert len({e["id"] for e in all_ours}) == len(all_ours) == theirs[0]["total"]
        # Field by field, every event.
        assert {e["id"]: e for e in all_ours} == {e["id"]: e for e in all_theirs}, body


def test_larger_pages_than_prefects_50_for_archive_clients_and_the_limits_are_checked(history, serve_url):
    body = {"filter": {"occurred": window(history), "order": "ASC"}, "limit": 1000}
    pages = walk(serve_url, body)
    assert len(pages[0]["events"]) == 1000 and len(pages) == -(-pages[0]["total"] // 1000)
    assert [e["id"] for p in pages for e in p["events"]] == [
        e["id"] for p in walk(serve_url, {**body, "limit": 50}) for e in p["events"]]
    with httpx.Client(base_url=serve_url) as http:
        assert http.post("/events/filter", json={**body, "limit": 1001}).status_code == 422
        refused = http.post("/events/filter", json={"id": {"id": [str(uuid.uuid4())]}})
        assert refused.status_code == 422 and "go under \"filter\"" in refused.json()["detail"]
        text = http.post("/events/filter", json={"filter": {"text": {"query": "x"}}})
        assert text.status_code == 422 and "not supported" in text.json()["detail"]
        assert http.get("/events/filter/next", params={"page-token": "bm90IGEgdG9rZW4"}).status_code == 403


def test_events_by_id_on_their_own_path(history, serve_url, archived):
    with httpx.Client(base_url=serve_url) as http:
        event = http.get(f"/events/{history.unicode_id}")
        assert event.status_code == 200
        assert event.json() == search_events(event="acme.ünïcödé.事件", settings=archived)[0]
        assert http.get(f"/events/{uuid.uuid4()}").status_code == 404
        assert http.get("/events/not-an-id").status_code == 422
        assert http.get("/health").json()["events"] >= len(history.ids)


def get_event_by_id(api_url: str, event_id: str, headers: dict | None = None) -> dict | None:
    """The helper users copy for Prefect's API (as in the README), unchanged but for the URL."""
    now = datetime.now(timezone.utc)
    body = {
        "filter": {
            "id": {"id": [event_id]},
            "occurred": {"since": (now - timedelta(days=3650)).isoformat(), "until": now.isoformat()},
        },
        "limit": 1,
    }
    response = httpx.post(f"{api_url}/events/filter", json=body, headers=headers or {})
    response.raise_for_status()
    events = response.json()["events"]
    return events[0] if events else None


def test_a_flow_elsewhere_finds_events_through_serve_with_a_token(prefect_server, history, archived, tmp_path):
    token = "s3cret-" + uuid.uuid4().hex
    with serving(create_app(archived, token=token)) as url:
        auth = {"Authorization": f"Bearer {token}"}
        expected = get_event_by_id(prefect_server.api_url, history.big_payload_id)
        assert get_event_by_id(url, history.big_payload_id, auth) == expected
        # The archiver's own get_event on a machine with no archive: PREFECT_API_URL/KEY point at serve.
        remote = settings_for(url, tmp_path / "no-archive-here.duckdb", api_key=token)
        assert find_event(history.big_payload_id, settings=remote) == (expected, "api")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": f"Basic {token}"}):
            for path in (f"/events/{history.big_payload_id}", "/events/filter/next?page-token=x"):
                response = httpx.get(url + path, headers=headers)
                assert response.status_code == 401 and token not in response.text
            refused = httpx.post(f"{url}/events/filter", json={}, headers=headers)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        # Health answers without the token, but tells nothing about the archive's contents.
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_pages_are_stable_while_a_sync_writes_into_the_window(prefect_server, history, tmp_path):
    db = tmp_path / "growing.duckdb"
    settings = sync_range(prefect_server.api_url, db, history.since, history.since + timedelta(hours=36))
    # A slow sync, whatever the machine: one window at a time, a commit per window, and paced to
    # five requests a second (api.max_requests_per_minute), so it is still writing while the pages
    # are read (planning packs windows so well that an unpaced sync could be done before then).
    config = write_config(tmp_path / "slow.toml", "concurrency = 1\ncommit_every = 50\n[api]\nmax_requests_per_minute = 300\n")
    body = {"filter": {"occurred": window(history), "order": "DESC"}, "limit": 10}
    with serving(create_app(settings, token="")) as url:
        before = {e["id"] for e in search_events(limit=100_000, settings=settings)}
        proc = start_cli(["sync", "--until", format_timestamp(history.end)], cli_env(prefect_server.api_url, db, config))
        try:
            # Start paging once the sync has committed something, newest first: the sync adds
            # newer events above the cursor, which shift every offset of Prefect's paging.
            while httpx.get(f"{url}/health").json()["events"] == len(before) and proc.poll() is None:
                time.sleep(0.05)
            started = {e["id"] for e in search_events(limit=100_000, settings=settings)}
            pages = walk(url, body)
            ended = {e["id"] for e in search_events(limit=100_000, settings=settings)}
        finally:
            _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(ended) > len(started) > len(before), "the sync should have written while the pages were read"
    walked = [e for page in pages for e in page["events"]]
    ids = [e["id"] for e in walked]
    assert len(ids) == len(set(ids)), "no event twice"
    assert started <= set(ids), "no event that was archived when paging began is skipped"
    keys = [(datetime.fromisoformat(e["occurred"]), e["id"]) for e in walked]
    assert keys == sorted(keys, reverse=True)
    assert {p["total"] for p in pages} == {pages[0]["total"]}  # frozen at the first page, like Prefect's


def test_the_serve_command_binds_loopback_and_checks_the_token(archived, tmp_path):
    port = free_port()
    token = uuid.uuid4().hex
    env = cli_env(None, archived.db_path, ARCHIVER_SERVE_TOKEN=token)
    proc = start_cli(["serve", "--port", str(port)], env)
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        body = {"filter": {"occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 3}
        assert httpx.post(f"{url}/events/filter", json=body).status_code == 401
        page = httpx.post(f"{url}/events/filter", json=body, headers={"Authorization": f"Bearer {token}"}).json()
        assert len(page["events"]) == 3 and page["next_page"].startswith(f"{url}/events/filter/next?page-token=")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}/api with a bearer token" in out
    assert token not in out + err


def test_serve_without_the_extra_says_how_to_install_it(tmp_path):
    # The core install has no fastapi: hide it from this interpreter and run the CLI.
    code = "import sys; sys.modules['fastapi'] = None; from archiver.cli import main; sys.exit(main(['serve']))"
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(None, tmp_path / "a.duckdb"),
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert 'pip install "prefect-archiver[serve]"' in result.stderr and result.stderr.count("\n") == 1
    # Every other command works without it.
    code = "import sys; sys.modules['fastapi'] = None; from archiver.cli import main; sys.exit(main(['events']))"
    other = subprocess.run([sys.executable, "-c", code], env=cli_env(None, tmp_path / "a.duckdb"),
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert other.returncode == 1 and "no archive at" in other.stderr


def forged(token: str, change) -> str:
    """The token's state changed by `change`, re-encoded under the original signature."""
    encoded, _, signature = token.partition(".")
    state = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    change(state)
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=") + "." + signature


def test_page_tokens_are_signed_so_a_forged_one_gets_403(history, archived, serve_url):
    body = {"filter": {"occurred": window(history)}, "limit": 5}
    with httpx.Client(base_url=serve_url) as http:
        token = page_token(http.post("/events/filter", json=body).json()["next_page"])
        assert http.get("/events/filter/next", params={"page-token": token}).status_code == 200
        for change in (lambda s: s.update(total=-5), lambda s: s.update(limit=1000),
                       lambda s: s["filter"].update(order="ASC"),
                       lambda s: s["after"].__setitem__(0, "9999-12-31T23:59:59-01:00")):
            refused = http.get("/events/filter/next", params={"page-token": forged(token, change)})
            assert refused.status_code == 403 and refused.json() == {"detail": "Forbidden"}
        for bad in (token.partition(".")[0], token + "x", "." + token.partition(".")[2], "é" * 10):
            assert http.get("/events/filter/next", params={"page-token": bad}).status_code == 403
    # Another serve process has its own key, unless both share ARCHIVER_SERVE_TOKEN (behind one balancer).
    with serving(create_app(archived, token="")) as other:
        assert httpx.get(f"{other}/events/filter/next", params={"page-token": token}).status_code == 403
    shared = uuid.uuid4().hex
    with serving(create_app(archived, token=shared)) as one, serving(create_app(archived, token=shared)) as two:
        auth = {"Authorization": f"Bearer {shared}"}
        first = httpx.post(f"{one}/events/filter", json=body, headers=auth).json()
        shared_token = page_token(first["next_page"])
        mine = httpx.get(f"{one}/events/filter/next", params={"page-token": shared_token}, headers=auth)
        theirs = httpx.get(f"{two}/events/filter/next", params={"page-token": shared_token}, headers=auth)
        assert theirs.status_code == 200 and theirs.json()["events"] == mine.json()["events"] != first["events"]


def test_the_bearer_scheme_is_accepted_in_any_case(archived):
    token = uuid.uuid4().hex
    with serving(create_app(archived, token=token)) as url:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            assert httpx.get(f"{url}/events/{uuid.uuid4()}", headers={"Authorization": f"{scheme} {token}"}).status_code == 404
        for wrong in (f"Basic {token}", f"Bearer{token}", f"Bearer {token.upper()}", f"Token {token}"):
            assert httpx.get(f"{url}/events/{uuid.uuid4()}", headers={"Authorization": wrong}).status_code == 401


def test_filters_past_prefects_caps_are_refused_saying_which_limit(history, serve_url):
    w = window(history)
    cases = [
        ({"related": [{"role": ["tag"]}] * 101}, "filter.related has 101 filters; at most 100",
         "PREFECT_SERVER_EVENTS_MAXIMUM_RELATED_RESOURCES"),
        ({"related": [{"role": ["tag"]}] * 300}, "filter.related has 300 filters; at most 100",
         "PREFECT_SERVER_EVENTS_MAXIMUM_RELATED_RESOURCES"),
        ({"any_resource": [{"id_prefix": ["prefect."]}] * 2000}, "filter.any_resource has 2000 filters; at most 100",
         "PREFECT_SERVER_EVENTS_MAXIMUM_RELATED_RESOURCES"),
        ({"resource": {"labels": {f"acme.l{i}": "x" for i in range(501)}}}, "has 501 labels; at most 500",
         "PREFECT_SERVER_EVENTS_MAXIMUM_LABELS_PER_RESOURCE"),
    ]
    with httpx.Client(base_url=serve_url) as http:
        for extra, message, setting in cases:
            refused = http.post("/events/filter", json={"filter": {"occurred": w, **extra}})
            detail = refused.json()["detail"]
            assert refused.status_code == 422 and message in detail and setting in detail
        for since in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
            refused = http.post("/events/filter", json={"filter": {"occurred": {"since": since}}})
            assert refused.status_code == 422 and "outside the years 1 to 9999" in refused.json()["detail"]
        # Long lists of values are not capped (Prefect caps none): they are one IN list, not an expression each.
        flows = [f"prefect.flow.{i}" for i in range(5000)]
        many = http.post("/events/filter", json={"filter": {"occurred": w, "related": {"id": flows}}})
        every_flow = walk(serve_url, {"filter": {"occurred": w, "related": {"role": ["flow"]}}})[0]["total"]
        assert many.status_code == 200 and many.json()["total"] == every_flow > 0


def test_a_query_past_the_request_timeout_is_stopped_with_504(tmp_path):
    # An archive big enough that a query on its events' JSON takes many DuckDB chunks (interrupt()
    # is seen between chunks): 40k events, three resources each.
    archive = DuckDBWriter(tmp_path / "big.duckdb")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for batch in range(8):
        items = [parse_event(make_event(start + timedelta(seconds=batch * 5000 + i), event="acme.load",
                                        related=[(f"prefect.flow.{i % 50}", "flow"), ("prefect.tag.a", "tag")]))
                 for i in range(5000)]
        archive.write_batch([e for e in items if isinstance(e, Event)])
    slow = settings_for("http://127.0.0.1:9/api", archive.path, request_timeout=timedelta(milliseconds=1))
    body = {"filter": {"occurred": {"since": "2025-12-31T00:00:00Z"}, "any_resource": [
        {"labels": {"prefect.resource.name": f"*{i}*", "acme.x": "!y*"}} for i in range(100)]}}
    with serving(create_app(slow, token="")) as url:
        stopped = httpx.post(f"{url}/events/filter", json=body, timeout=60)
        assert stopped.status_code == 504 and "serve.request_timeout (0.001s)" in stopped.json()["detail"]
        # The server goes on answering, and a cheap request still fits in the limit's place.
        assert httpx.get(f"{url}/health").status_code == 200

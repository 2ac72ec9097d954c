"""Sync against a real Prefect server: the archive holds exactly the events the server holds."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from archiver.ingest.fetch import first_event_time
from archiver.ingest.stop import NEVER
from archiver.ingest.sync import sync
from archiver.prefect.events import event_to_api, format_timestamp
from tests.prefect_server import (
    make_event,
    post_events,
    server_count,
    server_event_ids,
    server_events,
    wait_until_stored,
)
from tests.support import BACKENDS, Faults, archived_ids, client_for_test, query, settings_for, writer_for

UTC = timezone.utc


def archived_api_events(db_path):
    rows = query(db_path, "SELECT id, occurred, event, resource, related, payload, received, follows FROM events")
    return {str(r[0]): event_to_api(*r) for r in rows}


@pytest.fixture(scope="module", params=BACKENDS)
def backfilled(request, prefect_server, history, tmp_path_factory, new_archive):
    """One archive of each backend backfilled over the whole history, with the transport that saw every request."""
    db = new_archive(request.param, tmp_path_factory.mktemp("backfill"))
    transport = Faults()
    settings = settings_for(prefect_server.api_url, db)
    with client_for_test(prefect_server.api_url, transport) as client:
        report = sync(settings, client, writer_for(db), since=history.since, until=history.end)
    return db, report, transport


def test_backfill_holds_exactly_the_servers_events(prefect_server, history, backfilled):
    db, report, _ = backfilled
    on_server = server_event_ids(prefect_server.api_url, history.since, history.until)
    assert on_server == history.ids
    assert archived_ids(db, history.since, history.until) == on_server
    assert report.inserted == len(on_server)
    assert report.outcome == "ok"
    assert report.high_water_mark == format_timestamp(history.end)


def test_archived_events_match_the_api_field_by_field(prefect_server, history, backfilled):
    db, _, _ = backfilled
    archived = archived_api_events(db)
    for event in server_events(prefect_server.api_url, history.since, history.until):
        assert archived[event["id"]] == event
    big = archived[history.big_payload_id]
    assert len(big["payload"]["blob"]) == 600_000
    assert archived[history.unicode_id]["event"] == "acme.ünïcödé.事件"


def test_related_resources_are_indexed_with_their_roles(history, backfilled):
    db, _, _ = backfilled
    rows = query(db, "SELECT role, resource_id FROM event_resources WHERE event_id = $1", [history.many_related_id])
    assert len(rows) == history.related_count + 1
    assert ("", f"test.archiver.resource.{history.many_related_id}") in rows
    assert ("role-3", "acme.thing.3") in rows


def test_backfill_reads_windows_of_one_page_concurrently(backfilled):
    _, report, transport = backfilled
    next_pages = sum(1 for p in transport.paths if p.endswith("/events/filter/next"))
    # Only single instants denser than a page follow next_page: 120 events (2 more pages) and 51 (1).
    assert next_pages <= 3
    assert transport.max_in_flight >= 2
    # Flat cost: a window per page of events, not a long chain of offset pages.
    filters = sum(1 for p in transport.paths if p.endswith("/events/filter"))
    assert filters <= report.fetched / 50 * 3 + 20


def test_second_sync_adds_nothing(prefect_server, history, backfilled):
    db, _, _ = backfilled
    before = query(db, "SELECT count(*) FROM events")[0][0]
    with client_for_test(prefect_server.api_url) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert report.inserted == 0
    assert report.duplicates == report.fetched == len(history.ids)
    assert query(db, "SELECT count(*) FROM events")[0][0] == before


def test_sync_ledger_records_each_run(backfilled):
    db, report, _ = backfilled
    row = query(db, "SELECT outcome, inserted, windows, finished IS NOT NULL FROM syncs WHERE id = $1", [report.run_id])
    assert row == [("ok", report.inserted, report.windows, True)]


def test_first_sync_starts_at_the_oldest_event_the_server_holds(prefect_server, history, tmp_path):
    db = tmp_path / "first.duckdb"
    with client_for_test(prefect_server.api_url) as client:
        oldest = first_event_time(client, history.end)
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db),
                      until=history.since + timedelta(hours=12))
    # The oracle's view of the oldest event the server holds (other tests post back-dated events).
    oldest_on_server = min(
        datetime.fromisoformat(e["occurred"])
        for e in server_events(prefect_server.api_url, datetime(2000, 1, 1, tzinfo=UTC), history.end)
    )
    assert oldest == oldest_on_server
    assert report.since == format_timestamp(oldest)
    expected = server_event_ids(prefect_server.api_url, oldest, history.since + timedelta(hours=12))
    assert archived_ids(db, oldest, history.since + timedelta(hours=12)) == expected


def post_and_wait(api_url, events, since, until):
    """Post events and wait until the server has stored them (storage is asynchronous)."""
    before = server_count(api_url, since, until)
    post_events(api_url, events)
    wait_until_stored(api_url, since, until, before + len(events))


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_arrival_behind_the_mark_is_picked_up_by_the_next_sync(prefect_server, tmp_path, new_archive, backend):
    api = prefect_server.api_url
    now = datetime.now(UTC)
    since, first_until, second_until = now - timedelta(hours=5), now - timedelta(hours=1), now - timedelta(minutes=30)
    post_and_wait(api, [make_event(since + timedelta(minutes=10 * i, seconds=1), event="acme.late.test") for i in range(20)],
                  since, second_until)
    db = new_archive(backend, tmp_path, "late")
    settings = settings_for(api, db, start=since)
    with client_for_test(api) as client:
        sync(settings, client, writer_for(db), until=first_until)
        mark = writer_for(db).high_water_mark()
        assert mark == first_until
        # Posted after the sync, 2 h behind the mark.
        late = make_event(mark - timedelta(hours=2, minutes=3, seconds=7), event="acme.late.arrival")
        post_and_wait(api, [late], since, second_until)
        report = sync(settings, client, writer_for(db), until=second_until)
    assert late["id"] in archived_ids(db, since, second_until), report
    assert report.reconciled >= 1 and report.repaired >= 1
    assert archived_ids(db, since, second_until) == server_event_ids(api, since, second_until)


def test_faults_on_every_kind_of_request_still_end_complete(prefect_server, history, tmp_path, caplog):
    """429 with Retry-After, 500s, timeouts and connections dropped after the server answered."""
    import httpx

    def before(n, request):
        if n % 7 == 3:
            return httpx.Response(429, headers={"Retry-After": "0"})
        if n % 11 == 5:
            return httpx.Response(500, text="Internal Server Error")
        if n % 13 == 6:
            return httpx.ReadTimeout("timed out", request=request)
        return None

    def after(n, request, response):
        if n % 17 == 8:
            return httpx.RemoteProtocolError("peer closed connection without sending complete message body", request=request)
        return None

    transport = Faults(before, after)
    db = tmp_path / "faults.duckdb"
    caplog.set_level(logging.WARNING)
    with client_for_test(prefect_server.api_url, transport) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert report.outcome == "ok"
    assert archived_ids(db, history.since, history.until) == history.ids
    assert any("retry" in r.message for r in caplog.records)


def test_a_refused_page_token_restarts_the_window(prefect_server, history, tmp_path, caplog):
    import httpx

    refused = []

    def before(n, request):
        if request.url.path.endswith("/events/filter/next") and not refused:
            refused.append(n)
            return httpx.Response(403)
        return None

    db = tmp_path / "token.duckdb"
    caplog.set_level(logging.WARNING)
    with client_for_test(prefect_server.api_url, Faults(before)) as client:
        sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert refused, "the workload must make the sync follow at least one next_page"
    assert any("page token refused" in r.message for r in caplog.records)
    assert archived_ids(db, history.since, history.until) == history.ids


def test_total_changing_between_reads_makes_the_window_be_read_again(prefect_server, history, tmp_path, caplog):
    import httpx

    bumped = []

    def after(n, request, response):
        if request.url.path.endswith("/events/filter") and not bumped:
            body = response.json()
            # Below a page, so the bumped total still fits one (a full window would be split instead).
            if 0 < body["total"] < 50:
                bumped.append(n)
                body["total"] += 1  # as if an event arrived inside the window meanwhile
                return httpx.Response(200, json=body)
        return None

    db = tmp_path / "total.duckdb"
    caplog.set_level(logging.WARNING)
    with client_for_test(prefect_server.api_url, Faults(after=after)) as client:
        sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert bumped
    assert any("reading it again" in r.message for r in caplog.records)
    assert archived_ids(db, history.since, history.until) == history.ids


def test_a_malformed_event_is_quarantined_and_the_sync_goes_on(prefect_server, history, tmp_path):
    import httpx

    def after(n, request, response):
        if request.url.path.endswith("/events/filter") and history.unicode_id in response.text:
            body = response.json()
            for event in body["events"]:
                if event["id"] == history.unicode_id:
                    del event["occurred"]
            return httpx.Response(200, json=body)
        return None

    db = tmp_path / "malformed.duckdb"
    with client_for_test(prefect_server.api_url, Faults(after=after)) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert report.quarantined == 1 and report.outcome == "ok"
    assert query(db, "SELECT event_id, reason FROM quarantine") == [(history.unicode_id, "missing occurred")]
    assert archived_ids(db, history.since, history.until) | {history.unicode_id} == history.ids


def test_same_id_with_different_content_keeps_the_first_version(prefect_server, history, backfilled, tmp_path, new_archive):

    import httpx

    db = new_archive.clone(backfilled[0], tmp_path, "conflict")

    def after(n, request, response):
        if request.url.path.endswith("/events/filter") and history.many_related_id in response.text:
            body = response.json()
            for event in body["events"]:
                if event["id"] == history.many_related_id:
                    event["payload"] = {"tampered": True}
            return httpx.Response(200, json=body)
        return None

    with client_for_test(prefect_server.api_url, Faults(after=after)) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=history.since, until=history.end)
    assert report.conflicts == 1 and report.inserted == 0
    assert query(db, "SELECT payload FROM events WHERE id = $1", [history.many_related_id]) == [("{}",)]


def test_a_mark_behind_retention_is_reported_as_a_gap(prefect_server, history, tmp_path):
    db = tmp_path / "gap.duckdb"
    settings = settings_for(prefect_server.api_url, db)
    with client_for_test(prefect_server.api_url) as client:
        sync(settings, client, writer_for(db), since=history.since, until=history.since + timedelta(hours=1))
        short = settings_for(prefect_server.api_url, db, retention=timedelta(days=2))
        report = sync(short, client, writer_for(db), until=history.since + timedelta(hours=3))
    assert len(report.gaps) == 1
    assert report.gaps[0].since == history.since + timedelta(hours=1)
    assert query(db, "SELECT count(*) FROM gaps") == [(1,)]


def cloud_like(n, request):
    """Prefect Cloud refuses event queries spanning more than 14 days of occurred (documented)."""
    import json as _json

    import httpx

    if request.method == "POST" and "/events/" in request.url.path:
        occurred = _json.loads(request.content).get("filter", {}).get("occurred")
        if occurred:
            span = datetime.fromisoformat(occurred["until"]) - datetime.fromisoformat(occurred["since"])
            if span > timedelta(days=14):
                return httpx.Response(422, json={"detail": "Query range may not exceed 14 days"})
    return None


def test_no_query_spans_more_than_14_days_so_cloud_accepts_every_one(prefect_server, history, tmp_path):
    db = tmp_path / "cloud.duckdb"
    since = history.since - timedelta(days=20)
    with client_for_test(prefect_server.api_url, Faults(cloud_like)) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=since, until=history.end)
    assert report.outcome == "ok"
    assert archived_ids(db, since, history.until) == server_event_ids(prefect_server.api_url, since, history.until)


def test_the_oldest_event_is_found_in_14_day_steps_where_wide_queries_are_refused(prefect_server, history):
    with client_for_test(prefect_server.api_url) as client:
        wide = first_event_time(client, history.end)
    with client_for_test(prefect_server.api_url, Faults(cloud_like)) as client:
        stepped = first_event_time(client, history.end, horizon=datetime.now(UTC) - wide + timedelta(days=1))
        short = first_event_time(client, history.end, horizon=timedelta(days=2))
    assert stepped == wide
    assert short is not None and short >= history.end - timedelta(days=2)


def test_an_empty_stretch_moves_the_mark_with_no_events(prefect_server, history, tmp_path):
    db = tmp_path / "empty.duckdb"
    since, end = history.since - timedelta(days=3), history.since
    assert server_event_ids(prefect_server.api_url, since, end - timedelta(microseconds=1)) == set()
    with client_for_test(prefect_server.api_url) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), since=since, until=end)
    assert report.outcome == "ok" and report.fetched == report.inserted == 0
    assert report.windows >= 1
    assert writer_for(db).high_water_mark() == end


@pytest.mark.parametrize("backend", BACKENDS)
def test_counts_add_up_and_progress_never_passes_its_total_with_arrivals_and_the_reconcile(prefect_server, tmp_path,
                                                                                          new_archive, backend):
    """Events arriving while a range is read, late events behind the mark and a malformed one."""

    import httpx

    api = prefect_server.api_url
    # Each backend's run reads two hours of its own, so neither counts the other's events.
    hours_ago = 14 + 3 * BACKENDS.index(backend)
    base = (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(second=0, microsecond=0)
    mark, until = base + timedelta(hours=1), base + timedelta(hours=2)
    post_and_wait(api, [make_event(base + timedelta(minutes=i, seconds=7), event="acme.counts.seed") for i in range(120)],
                  base, until)
    db = new_archive(backend, tmp_path, "counts")
    # One window read at a time, each committed on its own: progress is shown after every window.
    settings = settings_for(api, db, start=base, concurrency=1, commit_every=1)
    with client_for_test(api) as client:
        sync(settings, client, writer_for(db), until=mark)

    late = [make_event(base + timedelta(minutes=2 * i, seconds=31), event="acme.counts.late") for i in range(30)]
    broken = make_event(base + timedelta(minutes=33, seconds=44), event="acme.counts.broken")
    post_and_wait(api, [*late, broken], base, until)
    # Posted while the sync reads its first window, into its last one: more than the plan counted.
    during = [make_event(until - timedelta(minutes=8, seconds=i), event="acme.counts.during") for i in range(20)]
    posted = threading.Event()

    def after(n, request, response):
        if request.url.path.endswith("/events/filter") and not posted.is_set():
            posted.set()
            post_and_wait(api, during, base, until)
        if request.url.path.endswith("/events/filter") and broken["id"] in response.text:
            body = response.json()
            for event in body["events"]:
                if event["id"] == broken["id"]:
                    del event["occurred"]
            return httpx.Response(200, json=body)
        return None

    shown: list[tuple[int, int]] = []
    with client_for_test(api, Faults(after=after)) as client:
        report = sync(settings, client, writer_for(db), until=until, progress=lambda done, total: shown.append((done, total)))
    assert posted.is_set() and report.outcome == "ok"
    assert report.fetched == report.inserted + report.duplicates + report.quarantined, report
    assert report.quarantined == 1 and report.repaired == len(late)
    assert report.inserted == 60 + len(during) + len(late)
    assert shown and all(done <= total for done, total in shown), shown
    assert shown[-1] == (report.fetched, report.fetched)
    row = query(db, "SELECT fetched, inserted, duplicates, quarantined FROM syncs WHERE id = $1", [report.run_id])
    assert row == [(report.fetched, report.inserted, report.duplicates, report.quarantined)]
    assert query(db, "SELECT event_id, resolved IS NULL FROM quarantine") == [(broken["id"], True)]

    # The server sends the real event on the next read of its bucket: the quarantined item is resolved.
    with client_for_test(api) as client:
        report = sync(settings, client, writer_for(db), until=until)
    assert broken["id"] in archived_ids(db, base, until) and report.repaired == 1
    assert query(db, "SELECT event_id, resolved IS NOT NULL FROM quarantine") == [(broken["id"], True)]
    assert archived_ids(db, base, until) == server_event_ids(api, base, until)
    from tests.support import archive_status

    status = archive_status(db)
    assert (status["quarantined"], status["quarantine_resolved"]) == (0, 1)


def test_a_sync_from_the_mark_on_a_server_that_trimmed_nothing_records_no_gap(prefect_server, history, backfilled, tmp_path,
                                                                               new_archive):
    import json as _json

    db = new_archive.clone(backfilled[0], tmp_path, "nogap")
    newest = format_timestamp(writer_for(db).newest_occurred_before(history.end))
    probes = []

    def before(n, request):
        if request.url.path.endswith("/events/filter"):
            body = _json.loads(request.content)
            if body["filter"]["occurred"]["since"] == newest:
                probes.append(body)
        return None

    with client_for_test(prefect_server.api_url, Faults(before)) as client:
        report = sync(settings_for(prefect_server.api_url, db), client, writer_for(db), until=history.end + timedelta(hours=1))
    assert report.gaps == () and query(db, "SELECT count(*) FROM gaps") == [(0,)]
    # The check costs one small request: the newest archived event's stretch, one event at most.
    assert [(p["limit"], p["filter"]["occurred"]["until"]) for p in probes] == [(1, format_timestamp(history.end))]


def read_range(client, since, end):
    """Every event id of [since, end) as a backfill plans and reads it."""
    from archiver.ingest.fetch import Planner, fetch_window

    ids = []
    for window in Planner(client, since, end).windows():
        result = fetch_window(client, window)
        ids += [str(e.id) for e in result.events]
    return ids


def test_backfill_requests_stay_near_one_per_full_page(history, backfilled):
    _, report, transport = backfilled
    reading = _event_reads(transport.paths)
    floor = -(-len(history.ids) // 50)
    # The history's bursts need pages of their own (120, 50 and 51 events at three instants: 6
    # pages for 221 events); the trailing reconcile adds its own count-by. Drilling down day →
    # hour → minute cost about 1.8x the floor here; packing must stay within 15% of it.
    assert reading <= floor * 1.15 + 6, f"{reading} requests for {len(history.ids)} events (floor {floor})"


def test_a_short_range_holding_less_than_a_page_is_one_request_and_no_count_by(prefect_server, history):
    since = history.since + timedelta(hours=20) - timedelta(minutes=2)
    end = since + timedelta(minutes=5)
    expected = server_event_ids(prefect_server.api_url, since, end - timedelta(microseconds=1))
    assert 0 < len(expected) <= 50
    transport = Faults()
    with client_for_test(prefect_server.api_url, transport) as client:
        ids = read_range(client, since, end)
    assert sorted(ids) == sorted(expected)
    assert [p for p in transport.paths if "/events/" in p] == ["/api/events/filter"]


def test_a_short_range_denser_than_a_page_is_planned_from_the_pages_total(prefect_server, history):
    # The dense minute: 300 events 200 ms apart, inside a 10-minute range.
    since = history.since + timedelta(hours=50)
    end = since + timedelta(minutes=10)
    expected = server_event_ids(prefect_server.api_url, since, end - timedelta(microseconds=1))
    assert len(expected) >= 300
    transport = Faults()
    with client_for_test(prefect_server.api_url, transport) as client:
        ids = read_range(client, since, end)
    assert len(ids) == len(set(ids)) and set(ids) == expected
    counts = sum(1 for p in transport.paths if p.endswith("/events/count-by/time"))
    pages = sum(1 for p in transport.paths if p.endswith("/events/filter"))
    assert counts <= 2, "the probe page's total sizes the buckets: no level-by-level drill-down"
    assert pages <= 1 + -(-len(expected) // 50) * 1.2 + 1
    assert not any(p.endswith("/events/filter/next") for p in transport.paths)


def test_a_window_of_events_near_prefects_size_limit_is_written_whole_in_bounded_transactions(prefect_server, tmp_path):
    # 30 events of 1.4 MB (Prefect accepts up to 1.5 MB) in one window: ~42 MB, written as several
    # transactions of at most ingest.BATCH_BYTES, the mark moving with the last.
    api = prefect_server.api_url
    now = datetime.now(UTC)
    since, until = now - timedelta(hours=3, minutes=10), now - timedelta(hours=3)
    big = [make_event(since + timedelta(seconds=10 * i + 1), event="acme.big.window",
                      payload={"blob": f"{i:04d}" + "z" * 1_400_000}) for i in range(30)]
    before = server_count(api, since, until)
    post_events(api, big, batch=1, per_second=30)
    wait_until_stored(api, since, until, before + len(big), timeout=120)
    db = tmp_path / "big.duckdb"
    with client_for_test(api) as client:
        report = sync(settings_for(api, db, start=since), client, writer_for(db), until=until)
    assert report.outcome == "ok"
    assert writer_for(db).high_water_mark() == until
    assert archived_ids(db, since, until) == server_event_ids(api, since, until)  # other tests post here too
    rows = query(db, "SELECT id, payload->>'blob' FROM events WHERE event = 'acme.big.window'")
    assert {str(i): b for i, b in rows} == {e["id"]: e["payload"]["blob"] for e in big}


def test_an_event_in_the_last_half_millisecond_before_a_count_span_ends_is_archived(prefect_server, tmp_path):
    # Prefect on SQLite counts an event by strftime('%s'), which rounds to the millisecond first: one
    # at 22:59:59.999764 is counted in 23:00:00's bucket. A count-by ending at 22:59:59.999999 has no
    # such bucket, and the server answered 500 (an IndexError) to every retry: a 1M-event backfill
    # failed on it. The sync asks such a count-by until just past the second, and reads everything.
    api = prefect_server.api_url
    end = (datetime.now(UTC) - timedelta(hours=9)).replace(minute=0, second=0, microsecond=0)
    since = end - timedelta(minutes=30)  # longer than fetch.PROBE_SPAN: planned with count-by
    edge = make_event(end - timedelta(microseconds=236), event="acme.edge.last")
    post_and_wait(api, [edge, make_event(since + timedelta(minutes=7, seconds=3), event="acme.edge.inner")], since, end)
    db = tmp_path / "edge.duckdb"
    with client_for_test(api) as client:
        report = sync(settings_for(api, db, start=since), client, writer_for(db), until=end)
        counted = client.count_by_time(since, end - timedelta(microseconds=1), "second", 2)
    assert report.outcome == "ok", report
    on_server = server_event_ids(api, since, end)
    assert edge["id"] in archived_ids(db, since, end) == on_server
    # The answer still tiles [since, end) and nothing past it; on SQLite the edge event is in none of its buckets.
    assert counted[0].start == since and counted[-1].end == end - timedelta(microseconds=1)
    assert sum(b.count for b in counted) == len(on_server) - 1


def _event_reads(paths):
    return sum(1 for p in paths if p.endswith(("/events/filter", "/events/filter/next", "/events/count-by/time")))


def test_a_range_read_before_the_archive_opens_is_archived_whole_and_counted_as_the_syncs(prefect_server, history, tmp_path):
    from archiver.cli import _prefetch_range

    db = tmp_path / "prefetched.duckdb"
    settings = settings_for(prefect_server.api_url, db)
    transport = Faults()
    since, until = history.since, history.since + timedelta(hours=30)
    with client_for_test(prefect_server.api_url, transport) as client:
        prefetch = _prefetch_range(settings, client, since, until, datetime.now(UTC), NEVER)
        assert prefetch is not None
        deadline = time.monotonic() + 30
        while _event_reads(transport.paths) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _event_reads(transport.paths) >= 3 and not db.exists(), "reading starts before the archive exists"
        report = sync(settings, client, writer_for(db), since=since, until=until, prefetch=prefetch)
    assert archived_ids(db, since, until) == server_event_ids(prefect_server.api_url, since, until)
    # Every event request, those sent before the writer opened among them, is the sync's.
    assert report.pages + report.counts == _event_reads(transport.paths)


def test_a_prefetch_the_sync_cannot_use_is_closed_and_its_requests_still_counted(prefect_server, history, tmp_path):
    from archiver.ingest.prefetch import Prefetch

    db = tmp_path / "other-range.duckdb"
    settings = settings_for(prefect_server.api_url, db)
    transport = Faults()
    since = history.since
    with client_for_test(prefect_server.api_url, transport) as client:
        prefetch = Prefetch(client, since, since + timedelta(hours=6), concurrency=2)
        report = sync(settings, client, writer_for(db), since=since, until=since + timedelta(hours=3), prefetch=prefetch)
        threads = [t.name for t in threading.enumerate() if t.name == "plan" or t.name.startswith("fetch")]
    assert threads == [], "the unused prefetch's threads ended with the sync"
    assert archived_ids(db, since, since + timedelta(hours=3)) == server_event_ids(
        prefect_server.api_url, since, since + timedelta(hours=3))
    assert report.pages + report.counts == _event_reads(transport.paths)


def test_a_prefetch_nobody_takes_from_reads_a_bounded_number_of_windows_ahead(prefect_server, history, monkeypatch):
    from archiver.ingest import prefetch as prefetching

    monkeypatch.setattr(prefetching, "WINDOWS_AHEAD", 5)  # the history holds ~40 windows: fewer than 64
    transport = Faults()
    with client_for_test(prefect_server.api_url, transport) as client:
        prefetch = prefetching.Prefetch(client, history.since, history.end, concurrency=4)
        before = -1
        while before != (before := _event_reads(transport.paths)):  # until reading stops by itself
            time.sleep(0.5)
        prefetch.close()
    pages = sum(1 for p in transport.paths if p.endswith("/events/filter"))
    # Five windows queued and a sixth submitted while offered; a window denser than its count
    # (a burst) may take a few more reads. All of the history would be ~40.
    assert 6 <= pages <= 9, pages

"""The web UI's reads (storage/browse.py and each backend's facets): the same answers on every backend."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from archiver.prefect.filters import EventFilter, RelatedMatch
from archiver.storage.base import Archive
from archiver.storage.reader import ArchiveReader
from tests.ui_seed import RUNS, XSS, Seeded, seed
from tests.unit.storage.shapes import T0


@pytest.fixture
def seeded(backend: Archive) -> tuple[ArchiveReader, Seeded]:
    writer = backend.writer(timedelta(seconds=5))
    try:
        seeded = seed(writer)
    finally:
        writer.close()
    return backend.reader(timedelta(seconds=5)), seeded


def _everything(s: Seeded) -> EventFilter:
    return EventFilter(since=s.now - timedelta(days=RUNS + 2), until=s.now)


def test_facets_count_names_kinds_and_deployments_of_the_search(seeded):
    reader, s = seeded
    facets = reader.facets(_everything(s))
    failed = len(s.failed)
    assert facets.names[:3] == [("prefect.flow-run.Running", RUNS), ("prefect.flow-run.Scheduled", RUNS),
                                ("prefect.flow-run.Completed", RUNS - failed)]
    assert (f"custom.{XSS}", 1) in facets.names
    assert facets.resource_kinds[0] == ("prefect.flow-run", 3 * RUNS)
    assert facets.deployments == [(f"prefect.deployment.{s.deployment}", "nightly", 3 * RUNS)]
    only_failed = reader.facets(EventFilter(since=s.now - timedelta(days=RUNS + 2), until=s.now,
                                            names=("prefect.flow-run.Failed",)), limit=1)
    assert only_failed.names == [("prefect.flow-run.Failed", failed)]


def test_facets_follow_related_filters_and_limits(seeded):
    reader, s = seeded
    run = s.newest_run
    f = EventFilter(since=s.now - timedelta(days=RUNS + 2), until=s.now,
                    related=(RelatedMatch(ids=(f"prefect.flow-run.{run}",)),))
    facets = reader.facets(f, limit=5)
    assert facets.names == [(f"custom.{XSS}", 1)]
    assert facets.deployments == []


def test_a_first_page_with_its_facets_answers_as_page_and_facets_do(seeded):
    reader, s = seeded
    deployment = f"prefect.deployment.{s.deployment}"
    for order in ("DESC", "ASC"):
        f = EventFilter(since=s.now - timedelta(days=RUNS + 2), until=s.now, order=order,
                        related=(RelatedMatch(ids=(deployment,)),))
        page, facets = reader.first_page(f, 4, facets_up_to=3 * RUNS)
        assert page.total == 3 * RUNS and len(page.events) == 4 and page.after is not None
        assert page == reader.page(f, 4)
        assert facets == reader.facets(f)
        assert facets is not None and facets.deployments == [(deployment, "nightly", 3 * RUNS)]
        # Past facets_up_to matches no facets are counted; the page is the same.
        assert reader.first_page(f, 4, facets_up_to=3 * RUNS - 1) == (page, None)
        # A last page (all of the matches) has no next position.
        whole, _ = reader.first_page(f, 3 * RUNS, facets_up_to=0)
        assert whole == reader.page(f, 3 * RUNS) and whole.after is None
    nothing = EventFilter(since=s.now - timedelta(days=RUNS + 2), until=s.now,
                          related=(RelatedMatch(ids=("prefect.deployment.none",)),))
    page, facets = reader.first_page(nothing, 4, facets_up_to=10)
    assert (page.events, page.total, page.after) == ([], 0, None)
    assert facets == reader.facets(nothing)


def test_objects_and_task_runs_read_as_archived(seeded):
    reader, s = seeded
    run = reader.archived_object("flow_runs", uuid.UUID(s.newest_run))
    assert run is not None and run["parameters"]["html"] == XSS
    assert reader.archived_object("deployments", uuid.UUID(s.deployment))["name"] == "nightly"
    assert reader.archived_object("flows", uuid.uuid4()) is None
    with pytest.raises(ValueError):
        reader.archived_object("events; DROP TABLE events", uuid.uuid4())
    tasks = reader.task_runs(uuid.UUID(s.newest_run))
    assert [t.id for t in tasks] == s.task_runs and [t.name for t in tasks] == ["extract-0", "load-0"]
    assert tasks[0].start_time is not None and tasks[0].start_time.tzinfo is not None
    assert reader.task_runs(uuid.UUID(s.runs[0])) == []
    assert reader.flow_run_count() == RUNS + 1  # and the bare run


def test_deployment_days_give_durations_failures_and_lateness_per_day(seeded):
    reader, s = seeded
    days = reader.deployment_days(uuid.UUID(s.deployment), None)
    assert len(days) == RUNS and [d.day for d in days] == sorted(d.day for d in days)
    # Run i took 60 + 30 i seconds and started 5 + 10 i seconds late (tests/ui_seed.py).
    assert [d.p50_seconds for d in days] == [60.0 + 30 * i for i in range(RUNS)]
    assert [d.failed for d in days] == [1 if i % 4 == 3 else 0 for i in range(RUNS)]
    assert [d.max_late_seconds for d in days] == [5.0 + 10 * i for i in range(RUNS)]
    assert [d.late_runs for d in days] == [0 if 5 + 10 * i < 15 else 1 for i in range(RUNS)]
    week = reader.deployment_days(uuid.UUID(s.deployment), (s.now - timedelta(days=7)).date())
    assert len(week) == 7 and week == days[-7:]
    p50, p95 = reader.deployment_percentiles(uuid.UUID(s.deployment), None)
    assert p50 == pytest.approx(60 + 30 * 5.5) and p95 == pytest.approx(60 + 30 * 10.45)
    assert reader.deployment_percentiles(uuid.uuid4(), None) == (None, None)


def test_failures_rank_deployments_and_list_the_newest_with_messages(seeded):
    reader, s = seeded
    ranks = reader.failing_deployments(None)
    assert [(r.deployment_id, r.name, r.flow_name, r.failed, r.runs) for r in ranks] == [
        (s.deployment, "nightly", "etl", len(s.failed), RUNS)]
    assert reader.failing_deployments((s.now + timedelta(days=1)).date()) == []
    failures = reader.recent_failures(limit=2)
    assert [f.id for f in failures] == s.failed[::-1][:2]
    assert failures[0].message == f"Flow run encountered an exception: boom {max(i for i in range(RUNS) if i % 4 == 3)}"
    assert failures[0].deployment_id == s.deployment
    runs = reader.deployment_runs(uuid.UUID(s.deployment), limit=3)
    assert [r.id for r in runs] == s.runs[::-1][:3]


def test_event_volume_reads_whole_days_from_event_days_and_answers_as_bucket_counts(seeded):
    reader, s = seeded
    day, hour = timedelta(days=1), timedelta(hours=1)
    start = s.now - timedelta(days=RUNS + 2)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = [(start, s.now, day), (start + 5 * hour, s.now - 7 * hour, day), (start, s.now, 3 * day),
               (midnight, midnight + 6 * day, day), (midnight + hour, midnight + 2 * day, day),
               (start, start + 3 * day, hour), (start, start + day, day)]
    for since, until, width in windows:
        volume = reader.event_volume(since, until, width)
        assert volume == reader.bucket_counts(since, until, width), (since, until, width)
    assert sum(reader.event_volume(start, s.now, day).values()) == s.events


def test_event_days_count_each_archived_event_once_on_its_utc_day(backend, writer, stored, make_event):
    late_night, next_morning = T0.replace(hour=23, minute=59), T0.replace(hour=0, minute=1) + timedelta(days=1)
    first = [make_event(late_night), make_event(late_night), make_event(next_morning)]
    writer.write_batch(first)
    writer.write_batch(first[1:] + [make_event(next_morning)])  # two repeats, one new
    days = stored("SELECT day, events FROM event_days ORDER BY day")
    assert [(str(d), n) for d, n in days] == [(str(T0.date()), 2), (str(next_morning.date()), 2)]

"""Window planning rules, without a server: tiling, page-sized groups, bucket alignment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from archiver.client import Bucket
from archiver.models import PIVOT
from archiver.windows import (
    MAX_BUCKETS,
    MAX_QUERY_SPAN,
    TICK,
    UNITS,
    bucket_start,
    choose_unit,
    count_spans,
    group_buckets,
)

UTC = timezone.utc
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def buckets(unit: str, counts: list[int], start: datetime = T0) -> list[Bucket]:
    size = UNITS[unit]
    return [Bucket(start + size * i, start + size * (i + 1) - TICK, c) for i, c in enumerate(counts)]


def assert_tiles(windows, since, until):
    assert windows[0].since == since
    assert windows[-1].until == until
    for before, after in zip(windows, windows[1:], strict=False):
        assert after.since == before.end, "windows must touch with no gap and no overlap"


def test_groups_fit_one_page_and_tile_the_range():
    counts = [10, 20, 15, 0, 0, 49, 1, 50, 0, 3]
    windows = list(group_buckets(buckets("hour", counts), "hour", T0, T0 + timedelta(hours=10) - TICK))
    assert_tiles(windows, T0, T0 + timedelta(hours=10) - TICK)
    assert all(w.expected <= 50 for w in windows)
    assert sum(w.expected for w in windows) == sum(counts)
    assert [w.expected for w in windows] == [45, 50, 50, 3]


def test_dense_bucket_is_its_own_window_for_drill_down():
    windows = list(group_buckets(buckets("hour", [5, 120, 5]), "hour", T0, T0 + timedelta(hours=3) - TICK))
    assert [w.expected for w in windows] == [5, 120, 5]
    assert windows[1].since == T0 + timedelta(hours=1)
    assert windows[1].until == T0 + timedelta(hours=2) - TICK


def test_partial_edge_buckets_are_clipped_to_the_range():
    since = T0 + timedelta(minutes=17)
    until = T0 + timedelta(hours=2, minutes=5)
    windows = list(group_buckets(buckets("hour", [1, 1, 1]), "hour", since, until))
    assert_tiles(windows, since, until)


def test_no_buckets_still_covers_the_range():
    windows = list(group_buckets([], "day", T0, T0 + timedelta(days=2)))
    assert len(windows) == 1 and windows[0].since == T0 and windows[0].until == T0 + timedelta(days=2)


def test_buckets_short_of_the_end_are_stretched_to_it():
    until = T0 + timedelta(hours=5) - TICK
    windows = list(group_buckets(buckets("hour", [3, 4]), "hour", T0, until))
    assert windows[-1].until == until


@pytest.mark.parametrize("unit", ["day", "hour", "minute", "second"])
def test_bucket_start_is_aligned_to_prefects_pivot(unit):
    moment = datetime(2026, 11, 23, 19, 21, 24, 123456, tzinfo=UTC)
    start = bucket_start(moment, unit)
    assert start <= moment < start + UNITS[unit]
    assert (start - PIVOT) % UNITS[unit] == timedelta(0)


def test_bucket_start_before_the_pivot():
    moment = datetime(2023, 1, 1, 12, tzinfo=UTC)
    assert bucket_start(moment, "day") == datetime(2023, 1, 1, tzinfo=UTC)


def test_count_spans_respect_the_server_bucket_limit():
    since = T0 + timedelta(minutes=7, seconds=3)
    end = since + timedelta(hours=40)
    spans = list(count_spans(since, end, "minute"))
    assert spans[0][0] == since and spans[-1][1] == end - TICK
    for span_since, span_until in spans:
        first = bucket_start(span_since, "minute")
        assert (span_until + TICK - first) / UNITS["minute"] <= MAX_BUCKETS
    for (_, before_until), (after_since, _) in zip(spans, spans[1:], strict=False):
        assert after_since == before_until + TICK


@pytest.mark.parametrize("unit, days", [("day", 45), ("hour", 20), ("minute", 2)])
def test_no_count_span_exceeds_cloud_14_day_cap_and_later_spans_are_aligned(unit, days):
    since = T0 + timedelta(hours=5, minutes=3, seconds=2)
    end = since + timedelta(days=days)
    spans = list(count_spans(since, end, unit))
    assert all(until + TICK - start <= MAX_QUERY_SPAN for start, until in spans)
    assert all(bucket_start(start, unit) == start for start, _ in spans[1:])
    assert spans[0][0] == since and spans[-1][1] == end - TICK


def test_choose_unit_keeps_first_counts_to_few_requests():
    assert choose_unit(T0, T0 + timedelta(days=400)) == "day"
    assert choose_unit(T0, T0 + timedelta(days=7)) == "day"
    assert choose_unit(T0, T0 + timedelta(hours=5)) == "hour"
    assert choose_unit(T0, T0 + timedelta(minutes=30)) == "minute"
    assert choose_unit(T0, T0 + timedelta(seconds=30)) == "second"

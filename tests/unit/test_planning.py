"""Window planning rules, without a server: tiling, page-sized groups, bucket alignment, packing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.ingest.windows import (
    MAX_BUCKETS,
    SIZES,
    TARGET_PER_BUCKET,
    TICK,
    UNITS,
    Refine,
    align,
    bucket_start,
    choose_unit,
    coarse_size,
    count_spans,
    pack,
    refine_plan,
)
from archiver.prefect.client import Bucket
from archiver.prefect.events import PIVOT
from archiver.prefect.spans import MAX_QUERY_SPAN

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
    windows = list(pack(buckets("hour", counts), T0, T0 + timedelta(hours=10) - TICK))
    assert_tiles(windows, T0, T0 + timedelta(hours=10) - TICK)
    assert all(w.expected <= 50 for w in windows)
    assert sum(w.expected for w in windows) == sum(counts)
    assert [w.expected for w in windows] == [45, 50, 50, 3]


def test_bucket_denser_than_a_page_is_a_window_of_its_own():
    windows = list(pack(buckets("hour", [5, 120, 5]), T0, T0 + timedelta(hours=3) - TICK))
    assert [w.expected for w in windows] == [5, 120, 5]
    assert windows[1].since == T0 + timedelta(hours=1)
    assert windows[1].until == T0 + timedelta(hours=2) - TICK


def test_partial_edge_buckets_are_clipped_to_the_range():
    since = T0 + timedelta(minutes=17)
    until = T0 + timedelta(hours=2, minutes=5)
    windows = list(pack(buckets("hour", [1, 1, 1]), since, until))
    assert_tiles(windows, since, until)


def test_no_buckets_still_covers_the_range():
    windows = list(pack([], T0, T0 + timedelta(days=2)))
    assert len(windows) == 1 and windows[0].since == T0 and windows[0].until == T0 + timedelta(days=2)


def test_buckets_short_of_the_end_are_stretched_to_it():
    until = T0 + timedelta(hours=5) - TICK
    windows = list(pack(buckets("hour", [3, 4]), T0, until))
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


# -- property tests of the backfill planner's pure parts ---------------------------------------

counts_lists = st.lists(st.integers(min_value=0, max_value=130), min_size=0, max_size=80)
sizes = st.sampled_from(SIZES)


def varied_buckets(draw_counts: list[int], draw_sizes: list[timedelta], start: datetime) -> list[Bucket]:
    """Contiguous buckets of mixed sizes, as the planner's stream of coarse and fine buckets is."""
    out, cursor = [], start
    for count, size in zip(draw_counts, draw_sizes, strict=False):
        out.append(Bucket(cursor, cursor + size - TICK, count))
        cursor += size
    return out


def fewest_runs(counts: list[int], limit: int) -> int:
    """The fewest runs of consecutive counts with sums ≤ limit (oversized counts alone): by DP."""
    best = [0] + [len(counts) + 1] * len(counts)
    for end in range(1, len(counts) + 1):
        total = 0
        for start in range(end, 0, -1):
            total += counts[start - 1]
            if total > limit and start < end:
                break
            best[end] = min(best[end], best[start - 1] + 1)
    return best[-1]


@given(st.data(), counts_lists, st.integers(min_value=0, max_value=3_599_999_999), st.integers(min_value=0, max_value=3))
def test_pack_tiles_the_range_exactly_with_the_fewest_windows_of_one_page(data, counts, offset_us, trim):
    chosen = data.draw(st.lists(sizes, min_size=len(counts), max_size=len(counts)))
    bs = varied_buckets(counts, chosen, T0)
    since = T0 + timedelta(microseconds=offset_us % (int(chosen[0] / TICK) if bs else 1))
    until = (bs[-trim - 1].end - TICK if len(bs) > trim else T0 + timedelta(hours=1)) if bs else T0 + timedelta(hours=1)
    until = max(until, since)
    windows = list(pack(bs, since, until))
    assert_tiles(windows, since, until)
    kept = [b for b in bs if max(b.start, since) <= min(b.end, until)]
    assert sum(w.expected for w in windows) == sum(b.count for b in kept)
    for w in windows:
        inside = [b for b in kept if b.count and max(b.start, w.since) <= min(b.end, w.until)]
        assert w.expected <= 50 or len(inside) == 1, "only a lone dense bucket exceeds a page"
        assert w.end - w.since <= MAX_QUERY_SPAN
    if kept and until >= kept[-1].end and all(b.end - b.start < MAX_QUERY_SPAN / 100 for b in kept):
        assert len(windows) == fewest_runs([b.count for b in kept], 50)


@given(st.integers(min_value=0, max_value=50 * 24 * 3600))
def test_long_empty_stretches_are_cut_at_clouds_14_day_limit(seconds):
    until = T0 + timedelta(seconds=seconds)
    windows = list(pack([], T0, until))
    assert_tiles(windows, T0, until)
    assert all(w.end - w.since <= MAX_QUERY_SPAN for w in windows)


@given(counts_lists, sizes, st.integers(min_value=1, max_value=59))
def test_refine_plan_covers_the_range_in_order_within_one_request_each(counts, size, cut_seconds):
    bs = buckets_of(size, counts)
    since = T0 + timedelta(seconds=cut_seconds) if size > timedelta(seconds=cut_seconds) else T0
    until = bs[-1].end if bs else T0
    plan = list(refine_plan(bs, since, until))
    cursor = since
    for item in plan:
        assert item.start == cursor if isinstance(item, Bucket) else item.since == cursor
        cursor = (item.end if isinstance(item, Bucket) else item.until) + TICK
        if isinstance(item, Refine):
            assert len(list(item.spans())) == 1, "a refinement is one count-by request"
            assert item.size < item.until + TICK - item.since
        else:
            assert item.count <= 50 or align(item.start, SIZES[0]) == align(item.end, SIZES[0])
    if bs and since <= until:
        assert cursor == until + TICK


@given(st.integers(min_value=0, max_value=50), sizes)
def test_a_lone_bucket_that_fits_a_page_is_not_counted_again(count, size):
    bucket = Bucket(T0, T0 + size - TICK, count)
    assert list(refine_plan([bucket], T0, bucket.end)) == [bucket]


def test_a_dense_run_is_counted_again_only_where_it_saves_a_request():
    def plan(counts):
        bs = buckets_of(timedelta(minutes=10), counts)
        return list(refine_plan(bs, T0, bs[-1].end))

    # 30 buckets of 40: packing them as they are wastes ~12 pages; one count-by is cheaper.
    assert [type(p) for p in plan([40] * 30)] == [Refine]
    # A few buckets of 8 between empty ones: at most a few events of waste, so kept as they are.
    assert all(isinstance(p, Bucket) for p in plan([0, 8, 0, 7, 0, 9, 0]))


@given(st.integers(min_value=51, max_value=5_000), sizes)
def test_a_bucket_over_a_page_is_refined_to_about_the_target_events_a_bucket(count, size):
    bucket = Bucket(T0, T0 + size - TICK, count)
    plan = list(refine_plan([bucket], T0, bucket.end))
    if size == SIZES[0]:
        assert plan == [bucket]  # a whole second is as fine as count-by goes
        return
    [refine] = plan
    assert isinstance(refine, Refine)
    per_bucket = count * (refine.size / size)
    assert per_bucket <= TARGET_PER_BUCKET or refine.size == SIZES[0]


def buckets_of(size: timedelta, counts: list[int]) -> list[Bucket]:
    return [Bucket(T0 + size * i, T0 + size * (i + 1) - TICK, c) for i, c in enumerate(counts)]


def test_coarse_size_plans_five_days_in_one_request_and_long_ranges_by_the_hour():
    assert coarse_size(T0, T0 + timedelta(days=5)) == timedelta(minutes=10)
    assert coarse_size(T0, T0 + timedelta(minutes=5)) == timedelta(seconds=1)
    assert coarse_size(T0, T0 + timedelta(days=400)) == timedelta(hours=1)
    for days in (1, 5, 13, 41):
        size = coarse_size(T0, T0 + timedelta(days=days))
        assert (timedelta(days=days) / size) <= MAX_BUCKETS


def test_uniform_history_costs_about_twenty_one_requests_per_thousand_events():
    """12,000 events spread evenly over 5 days: the pure plan's request count, as on a server."""
    minutes = 5 * 24 * 60
    coarse = buckets_of(timedelta(minutes=10), [12_000 // (minutes // 10)] * (minutes // 10))
    plan = list(refine_plan(coarse, T0, coarse[-1].end))
    refines = [p for p in plan if isinstance(p, Refine)]
    fine: list[Bucket] = []
    def events_before(moment: datetime) -> int:  # the events spread as evenly as integers allow
        return int(12_000 * ((moment - T0) / timedelta(days=5)))

    for r in refines:
        n = int((r.until + TICK - r.since) / r.size)
        starts = [r.since + r.size * i for i in range(n + 1)]
        fine += [Bucket(a, b - TICK, events_before(b) - events_before(a)) for a, b in zip(starts, starts[1:], strict=False)]
    windows = list(pack(fine, T0, coarse[-1].end))
    requests = 1 + len(refines) + len(windows)
    assert sum(w.expected for w in windows) == 12_000
    assert requests / 12 <= 22, f"{requests} requests for 12,000 events"

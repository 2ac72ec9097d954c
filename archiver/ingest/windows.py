"""Window planning: pure functions that tile a time range into windows of at most one page.

A window is [since, until] with both ends inclusive, as Prefect's `occurred` filter is; windows
tile a range exactly, each ending one microsecond before the next begins (Prefect stores
microseconds), so no event falls in two windows and none between them.

A backfill is planned in two steps (see fetch.Planner): one coarse count over the whole range,
then, where a coarse bucket is dense, one count at the bucket size its density calls for
(refine_plan) — not level by level. The resulting stream of buckets is packed greedily into
windows of up to a page (pack), across bucket and refinement boundaries alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from archiver.prefect.client import Bucket
from archiver.prefect.events import PAGE_SIZE, PIVOT, format_timestamp
from archiver.prefect.spans import MAX_QUERY_SPAN

TICK = timedelta(microseconds=1)

# Drill-down order for dense buckets. `second` is the floor: Prefect's SQLite backend buckets by
# whole seconds, so a denser second is read by following next_page (see fetch.fetch_window).
UNITS: dict[str, timedelta] = {
    "day": timedelta(days=1),
    "hour": timedelta(hours=1),
    "minute": timedelta(minutes=1),
    "second": timedelta(seconds=1),
}
FINER = {"day": "hour", "hour": "minute", "minute": "second"}

# The server refuses count-by requests that would make more buckets (counting.py). Every
# count-by span, and so every window (windows never cross a span), also stays within Prefect
# Cloud's MAX_QUERY_SPAN.
MAX_BUCKETS = 1000
# What a span is planned to: a bucket and two microseconds less, because a count-by may be asked
# until just past its span's end (client.count_by_until: Prefect on SQLite's rounding), and that
# request must stay within both limits too.
SPAN_BUCKETS = MAX_BUCKETS - 1
SPAN_LIMIT = MAX_QUERY_SPAN - 2 * TICK


# Bucket sizes the planner counts with: whole seconds, because Prefect's SQLite backend buckets by
# whole seconds (strftime('%s') in server/events/counting.py), and each divides an hour, so fine
# buckets (aligned to PIVOT like every count-by bucket) never straddle an hour-aligned coarse one.
SIZES = tuple(
    timedelta(seconds=s)
    for s in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600)
)
# Count dense stretches with buckets holding about this many events. Greedy packing leaves about
# half a bucket unused per window, so smaller buckets mean fuller windows; but count-by is not
# free for the server (3.8.8 builds a Python object per bucket: measured ~170 ms for 1,000
# buckets against ~13 ms for a page of 50). At 4, windows hold ~48 on average and one count-by
# covers ~4,000 events: the same requests per 1,000 events as 2, for half the counting.
TARGET_PER_BUCKET = 4
# A coarse bucket holding at most this many events is packed as it is: counting it again would
# save less than the request costs.
SPARSE_BUCKET = 4


@dataclass(frozen=True)
class Window:
    """A span of `occurred` to read in one go; `expected` is what count-by said was there."""

    since: datetime
    until: datetime
    expected: int = 0

    @property
    def end(self) -> datetime:
        """The exclusive end: where the next window starts."""
        return self.until + TICK

    @property
    def finest(self) -> bool:
        """True when the window lies within one whole second, which count-by cannot split."""
        return align(self.since, SIZES[0]) == align(self.until, SIZES[0])

    def occurred_filter(self) -> dict[str, str]:
        return {"since": format_timestamp(self.since), "until": format_timestamp(self.until)}


def align(moment: datetime, size: timedelta) -> datetime:
    """The start of the count-by bucket of `size` holding `moment` (buckets are aligned to PIVOT)."""
    return PIVOT + size * math.floor((moment - PIVOT) / size)


def bucket_start(moment: datetime, unit: str) -> datetime:
    """The start of the count-by bucket of `unit` holding `moment`."""
    return align(moment, UNITS[unit])


def size_spans(since: datetime, end: datetime, size: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """Split [since, end) into inclusive spans of at most MAX_BUCKETS buckets and MAX_QUERY_SPAN.

    After the first, spans start on bucket boundaries, so no bucket is split between two spans.
    """
    per_span = max(1, min(SPAN_BUCKETS, SPAN_LIMIT // size))
    cursor = since
    while cursor < end:
        stop = min(end, align(cursor, size) + size * per_span)
        yield cursor, stop - TICK
        cursor = stop


def count_spans(since: datetime, end: datetime, unit: str) -> Iterator[tuple[datetime, datetime]]:
    """size_spans for a named count-by unit."""
    return size_spans(since, end, UNITS[unit])


def coarse_size(since: datetime, end: datetime) -> timedelta:
    """The finest bucket size that counts [since, end) in one request, but never above an hour.

    A range too long for one request at an hour is counted an hour at a time, in spans of
    about MAX_QUERY_SPAN (335 buckets, SPAN_LIMIT): a request per two weeks, as days would cost.
    """
    for size in SIZES:
        if math.ceil((end - align(since, size)) / size) <= SPAN_BUCKETS:
            return size
    return SIZES[-1]


def fine_size(count: int, span: timedelta, target: float = TARGET_PER_BUCKET) -> timedelta:
    """The largest bucket size that spreads `count` events over `span` about `target` each."""
    chosen = SIZES[0]
    for size in SIZES:
        if size < span and count * (size / span) <= target:
            chosen = size
    return chosen


@dataclass(frozen=True)
class Refine:
    """A stretch to count again with buckets of `size` (both ends inclusive)."""

    since: datetime
    until: datetime
    size: timedelta

    def spans(self) -> Iterator[tuple[datetime, datetime]]:
        """The count-by requests this takes (the server allows MAX_BUCKETS buckets a request)."""
        return size_spans(self.since, self.until + TICK, self.size)


def refine_plan(
    buckets: Iterable[Bucket], since: datetime, until: datetime, dense: int = SPARSE_BUCKET
) -> Iterator[Bucket | Refine]:
    """Buckets clipped to [since, until], with runs of those holding more than `dense` events
    replaced by a Refine at the size their density calls for, where counting again pays.

    Neighbouring dense buckets share one Refine while it stays within one count-by request, so
    a uniformly dense range costs a request per 1,000 fine buckets. A run is refined when one of
    its buckets holds more than a page, or when packing it as it is would waste at least a page
    more than packing it finer (worth_refining). A bucket within one whole second cannot be
    counted finer and is kept.
    """
    run: list[Bucket] = []
    group: Refine | None = None
    # The finest size any bucket of the group needs at twice the target: a group is counted at
    # its average density, but a bucket much denser than its neighbours still gets fine buckets.
    group_floor = SIZES[-1]

    def close() -> Iterator[Bucket | Refine]:
        if group is not None and worth_refining(run):
            yield group
        else:
            yield from run

    for bucket in buckets:
        b_since, b_until = max(bucket.start, since), min(bucket.end, until)
        if b_since > b_until:
            continue
        clipped = Bucket(b_since, b_until, bucket.count)
        if bucket.count <= dense or align(b_since, SIZES[0]) == align(b_until, SIZES[0]):
            yield from close()
            run, group = [], None
            yield clipped
            continue
        span = b_until + TICK - b_since
        floor = fine_size(bucket.count, span, 2 * TARGET_PER_BUCKET)
        if group is not None:
            lowest = min(group_floor, floor)
            count = sum(b.count for b in run) + bucket.count
            merged = Refine(group.since, b_until, min(fine_size(count, b_until + TICK - group.since), lowest))
            if len(list(merged.spans())) == 1:
                run.append(clipped)
                group, group_floor = merged, lowest
                continue
            yield from close()
        run, group, group_floor = [clipped], Refine(b_since, b_until, min(fine_size(bucket.count, span), floor)), floor
    yield from close()


def worth_refining(run: Sequence[Bucket]) -> bool:
    """Whether counting these buckets again saves at least the request it costs.

    Greedy packing leaves about half a bucket of room in each window, so packing C events from
    buckets of mean m wastes about (C / PAGE_SIZE) · (m / 2) events: C·m / (2·PAGE_SIZE²) pages.
    Refining brings m down to TARGET_PER_BUCKET. A bucket over a page must be refined anyway.
    """
    if any(b.count > PAGE_SIZE for b in run):
        return True
    total = sum(b.count for b in run)
    mean = total / len(run) if run else 0.0
    return total * (mean - TARGET_PER_BUCKET) / (2 * PAGE_SIZE**2) >= 1


def choose_unit(since: datetime, end: datetime) -> str:
    """The coarsest useful unit for a first count over [since, end)."""
    span = end - since
    if span > UNITS["hour"] * 48:
        return "day"
    if span > UNITS["minute"] * 120:
        return "hour"
    if span > UNITS["second"] * 120:
        return "minute"
    return "second"


def pack(
    buckets: Iterable[Bucket],
    since: datetime,
    until: datetime,
    limit: int = PAGE_SIZE,
) -> Iterator[Window]:
    """Greedily merge consecutive buckets (of any sizes) into windows of at most `limit` events.

    Greedy is optimal for cutting a sequence into the fewest runs of bounded sum, so the windows
    are as few as the bucket resolution allows. A window never spans more than MAX_QUERY_SPAN
    (Prefect Cloud's limit), clipped to [since, until], and the windows tile it with no holes.
    """
    pending: Window | None = None
    for bucket in buckets:
        b_since, b_until = max(bucket.start, since), min(bucket.end, until)
        if b_since > b_until:
            continue
        if (pending is not None and pending.expected + bucket.count <= limit
                and b_until + TICK - pending.since <= MAX_QUERY_SPAN):
            pending = Window(pending.since, b_until, pending.expected + bucket.count)
            continue
        if pending is not None:
            yield pending
        pending = Window(pending.end if pending else since, b_until, bucket.count)
    # The server stops its buckets at the end of the current period and may return none at all:
    # stretch the last window to `until` so the tiling has no hole (its fetch checks the total),
    # in as many windows as MAX_QUERY_SPAN needs.
    if pending is not None and pending.until >= until:
        yield pending
        return
    cursor, expected = (pending.since, pending.expected) if pending else (since, 0)
    while cursor <= until:
        stop = min(until, cursor + MAX_QUERY_SPAN - TICK)
        yield Window(cursor, stop, expected)
        cursor, expected = stop + TICK, 0


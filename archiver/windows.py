"""Window planning: pure functions that tile a time range into windows of at most one page.

A window is [since, until] with both ends inclusive, as Prefect's `occurred` filter is; windows
tile a range exactly, each ending one microsecond before the next begins (Prefect stores
microseconds), so no event falls in two windows and none between them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from archiver.client import PAGE_SIZE, Bucket
from archiver.models import PIVOT, format_timestamp

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

# The server refuses count-by requests that would make more buckets (counting.py).
MAX_BUCKETS = 1000
# Prefect Cloud refuses event queries spanning more than 14 days of `occurred`; every count-by
# span, and so every window (windows never cross a span), stays within it.
MAX_QUERY_SPAN = timedelta(days=14)


@dataclass(frozen=True)
class Window:
    """A span of `occurred` to read in one go; `expected` is what count-by said was there."""

    since: datetime
    until: datetime
    expected: int = 0
    unit: str = "day"

    @property
    def end(self) -> datetime:
        """The exclusive end: where the next window starts."""
        return self.until + TICK

    @property
    def finest(self) -> bool:
        """True when the window cannot be split further by count-by."""
        return self.unit == "second" or self.end - self.since <= UNITS["second"]

    def occurred_filter(self) -> dict[str, str]:
        return {"since": format_timestamp(self.since), "until": format_timestamp(self.until)}


def bucket_start(moment: datetime, unit: str) -> datetime:
    """The start of the count-by bucket holding `moment` (buckets are aligned to PIVOT)."""
    size = UNITS[unit]
    return PIVOT + size * math.floor((moment - PIVOT) / size)


def count_spans(since: datetime, end: datetime, unit: str) -> Iterator[tuple[datetime, datetime]]:
    """Split [since, end) into inclusive spans of at most MAX_BUCKETS buckets and MAX_QUERY_SPAN.

    After the first, spans start on bucket boundaries, so no bucket is split between two spans.
    """
    size = UNITS[unit]
    per_span = min(MAX_BUCKETS, MAX_QUERY_SPAN // size)
    cursor = since
    while cursor < end:
        stop = min(end, bucket_start(cursor, unit) + size * per_span)
        yield cursor, stop - TICK
        cursor = stop


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


def group_buckets(
    buckets: Iterable[Bucket],
    unit: str,
    since: datetime,
    until: datetime,
    limit: int = PAGE_SIZE,
) -> Iterator[Window]:
    """Merge consecutive buckets into windows of at most `limit` events, clipped to [since, until].

    A bucket holding more than `limit` events becomes a window of its own with that count, for the
    caller to split with a finer unit. Empty stretches join a neighbour, so the windows tile the
    range with no holes and the high-water mark can pass over them.
    """
    pending: Window | None = None
    for bucket in buckets:
        b_since, b_until = max(bucket.start, since), min(bucket.end, until)
        if b_since > b_until:
            continue
        if pending is not None and pending.expected + bucket.count <= limit:
            pending = Window(pending.since, b_until, pending.expected + bucket.count, unit)
            continue
        if pending is not None:
            yield pending
        pending = Window(pending.end if pending else since, b_until, bucket.count, unit)
    # The server stops its buckets at the end of the current period and may return none at all:
    # stretch the last window to `until` so the tiling has no hole (its fetch checks the total).
    if pending is None:
        yield Window(since, until, 0, unit)
    else:
        yield Window(pending.since, max(pending.until, until), pending.expected, unit)


def settled_until(now: datetime, settle: timedelta) -> datetime:
    """The newest `occurred` the archive may treat as complete: the server stores asynchronously."""
    return now - settle

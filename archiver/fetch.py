"""Reading a time range from the API: count-by to plan windows of one page, then each window whole.

Deep `next_page` chains are offset paging (their cost grows with depth, and rows inserted or
trimmed meanwhile shift the offsets), so windows are sized with /events/count-by/time to fit one
page, drilling down day → hour → minute → second where a bucket is dense. Only a single second
holding more than a page is read by following next_page, and every window is checked: the
distinct items read must equal the server's `total`, or the window is read again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from archiver.client import PAGE_SIZE, Bucket, PrefectClient
from archiver.errors import ApiRejected, IncompleteWindow, PageTokenRejected
from archiver.models import Event, Malformed, format_timestamp, parse_event
from archiver.windows import FINER, MAX_QUERY_SPAN, TICK, Window, choose_unit, count_spans, group_buckets

log = logging.getLogger("archiver.fetch")

READS_PER_WINDOW = 3


@dataclass
class WindowResult:
    """Everything one window held, ready to be written in one go."""

    window: Window
    events: list[Event] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)

    def extend(self, other: WindowResult) -> None:
        self.events += other.events
        self.malformed += other.malformed


def count_buckets(
    client: PrefectClient, since: datetime, end: datetime, unit: str
) -> Iterator[tuple[datetime, datetime, list[Bucket]]]:
    """Count-by buckets of `unit` over [since, end), one request per span count_spans allows."""
    for span_since, span_until in count_spans(since, end, unit):
        yield span_since, span_until, client.count_by_time(span_since, span_until, unit)


class Planner:
    """Tiles [since, end) into windows; `expected` is the server's count once planning began."""

    def __init__(self, client: PrefectClient, since: datetime, end: datetime) -> None:
        self.client = client
        self.since = since
        self.end = end
        self.expected = 0

    def windows(self) -> Iterator[Window]:
        if self.since >= self.end:
            return
        unit = choose_unit(self.since, self.end)
        # The top level is counted up front (a request per 14 days) so progress has a total.
        top = list(count_buckets(self.client, self.since, self.end, unit))
        self.expected = sum(b.count for _, _, buckets in top for b in buckets)
        for span_since, span_until, buckets in top:
            yield from _refine(self.client, group_buckets(buckets, unit, span_since, span_until))


def plan_range(client: PrefectClient, since: datetime, end: datetime, unit: str) -> Iterator[Window]:
    """Windows over [since, end) counted at `unit`, refined further where still dense."""
    for span_since, span_until, buckets in count_buckets(client, since, end, unit):
        yield from _refine(client, group_buckets(buckets, unit, span_since, span_until))


def _refine(client: PrefectClient, windows: Iterator[Window]) -> Iterator[Window]:
    for window in windows:
        if window.expected > PAGE_SIZE and window.unit in FINER:
            yield from plan_range(client, window.since, window.end, FINER[window.unit])
        else:
            yield window


def _item_key(item: Event | Malformed) -> str:
    if isinstance(item, Event):
        return str(item.id)
    return item.event_id or item.raw_hash


def fetch_window(client: PrefectClient, window: Window) -> WindowResult:
    """Every event in `window`, verified against the server's total; split if denser than a page."""
    occurred = window.occurred_filter()
    query = {"occurred": occurred, "order": "ASC"}
    last_problem = ""
    for _attempt in range(1, READS_PER_WINDOW + 1):
        result = WindowResult(window)
        items: dict[str, Event | Malformed] = {}
        total = -1
        try:
            for page in client.iter_pages(query):
                if total < 0:
                    total = page["total"]
                    if total > PAGE_SIZE and not window.finest:
                        # More than count-by promised (late arrivals): split rather than page deep.
                        return _fetch_split(client, window)
                for raw in page["events"]:
                    item = parse_event(raw)
                    items.setdefault(_item_key(item), item)
        except PageTokenRejected:
            last_problem = "the server refused a page token"
            log.warning("window %s..%s: page token refused; reading the window again", occurred["since"], occurred["until"])
            continue
        if len(items) == total:
            for item in items.values():
                if isinstance(item, Event):
                    result.events.append(item)
                else:
                    result.malformed.append(item)
            return result
        last_problem = f"the server reported {total} events but {len(items)} distinct came back"
        log.warning("window %s..%s: %s; reading it again", occurred["since"], occurred["until"], last_problem)
    raise IncompleteWindow(
        f"events between {format_timestamp(window.since)} and {format_timestamp(window.until)} could "
        f"not be read whole after {READS_PER_WINDOW} tries ({last_problem}); nothing past them was "
        "marked archived — run sync again"
    )


def _fetch_split(client: PrefectClient, window: Window) -> WindowResult:
    result = WindowResult(window)
    for sub in plan_range(client, window.since, window.end, FINER[window.unit]):
        result.extend(fetch_window(client, sub))
    return result


def first_event_time(client: PrefectClient, until: datetime, horizon: timedelta = timedelta(days=30)) -> datetime | None:
    """When the oldest event the server still holds occurred, or None if it holds none.

    One request where the server allows an unbounded window. Prefect Cloud refuses queries over
    14 days: there, walk back in 14-day steps to `horizon` (the retention) and keep the oldest.
    """
    try:
        return _oldest_in(client, datetime(1970, 1, 1, tzinfo=timezone.utc), until)
    except ApiRejected:
        pass
    oldest = None
    upper = until
    while upper > until - horizon:
        lower = max(upper - MAX_QUERY_SPAN, until - horizon)
        oldest = _oldest_in(client, lower, upper - TICK) or oldest
        upper = lower
    return oldest


def _oldest_in(client: PrefectClient, since: datetime, until: datetime) -> datetime | None:
    page = client.read_events(
        {"occurred": {"since": format_timestamp(since), "until": format_timestamp(until)}, "order": "ASC"},
        limit=1,
    )
    for raw in page["events"]:
        item = parse_event(raw)
        if isinstance(item, Event):
            return item.occurred
    return None

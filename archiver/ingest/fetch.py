"""Reading a time range from the API: count-by to plan windows of one page, then each window whole.

Deep `next_page` chains are offset paging (their cost grows with depth, and rows inserted or
trimmed meanwhile shift the offsets), so windows are sized with /events/count-by/time to fit one
page: one coarse count, then one count at the resolution each dense stretch needs (see
windows.refine_plan), packed into windows of up to a page. Only a single second holding more than
a page is read by following next_page, and every window is checked: the distinct items read must
equal the server's `total`, or the window is read again (or split, when it grew denser).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from archiver.errors import ApiRejected, IncompleteWindow, PageTokenRejected
from archiver.ingest.first_read import oldest_probe
from archiver.ingest.windows import TICK, Refine, Window, coarse_size, count_spans, pack, refine_plan, size_spans
from archiver.prefect.client import Bucket, PrefectClient
from archiver.prefect.events import EPOCH, PAGE_SIZE, Event, Malformed, format_timestamp, parse_event
from archiver.prefect.spans import walk_back

log = logging.getLogger("archiver.ingest.fetch")

READS_PER_WINDOW = 3
# A range this short is read with one page request and no count-by: when it holds at most a page
# (an incremental sync, usually) that page is the whole plan; otherwise its `total` plans it.
PROBE_SPAN = timedelta(minutes=10)


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
    """Tiles [since, end) into windows; `expected` is the server's count once planning began.

    The one planner: a sync's range, a window denser than a page (given its total), and a bucket
    a repair reads again are all tiled here.

    Windows come lazily: the coarse count is made up front (a request per 1,000 buckets, so
    progress has a total), each refinement only when packing reaches it, so the first window is
    fetched while the rest is still being planned.
    """

    def __init__(self, client: PrefectClient, since: datetime, end: datetime, total: int | None = None) -> None:
        self.client = client
        self.since = since
        self.end = end
        self.expected = total or 0
        self.total = total

    def windows(self) -> Iterator[Window]:
        if self.since >= self.end:
            return
        until = self.end - TICK
        if self.total is None and self.end - self.since <= PROBE_SPAN:
            # fetch_window splits it (through a Planner given the page's total) if it is dense.
            yield Window(self.since, until)
            return
        if self.total is None:
            size = coarse_size(self.since, self.end)
            top = [b for s, u in size_spans(self.since, self.end, size) for b in self._count(s, u, size)]
            self.expected = sum(b.count for b in top)
        else:
            top = [Bucket(self.since, until, self.total)]
        yield from pack(self._buckets(refine_plan(top, self.since, until)), self.since, until)

    def _buckets(self, plan: Iterator[Bucket | Refine]) -> Iterator[Bucket]:
        for item in plan:
            if isinstance(item, Bucket):
                yield item
                continue
            fine = [b for s, u in item.spans() for b in self._count(s, u, item.size)]
            # A burst inside a stretch counted at its average density is counted again, finer.
            yield from self._buckets(refine_plan(fine, item.since, item.until))

    def _count(self, since: datetime, until: datetime, size: timedelta) -> list[Bucket]:
        return self.client.count_by_time(since, until, "second", size.total_seconds())


def _item_key(item: Event | Malformed) -> str:
    if isinstance(item, Event):
        return str(item.id)
    return item.event_id or item.raw_hash


def fetch_window(client: PrefectClient, window: Window, *, split: bool = True) -> WindowResult:
    """Every event in `window`, verified against the server's total; split if denser than a page.

    `split=False` reads the window by following next_page however dense it is.
    """
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
                    if total > PAGE_SIZE and split and not window.finest:
                        # More than count-by promised (late arrivals, or an unplanned probe):
                        # split rather than page deep.
                        log.info("window %s..%s holds %d events, more than a page: splitting it",
                                 occurred["since"], occurred["until"], total)
                        return _fetch_split(client, window, total)
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


def _fetch_split(client: PrefectClient, window: Window, total: int) -> WindowResult:
    result = WindowResult(window)
    for sub in Planner(client, window.since, window.end, total).windows():
        # A count that still puts everything in one window disagrees with the page's total (a
        # race with storage): page through it rather than split it again and again.
        whole = sub.since == window.since and sub.until == window.until
        result.extend(fetch_window(client, sub, split=not whole))
    return result


def first_event_time(client: PrefectClient, until: datetime, horizon: timedelta = timedelta(days=30)) -> datetime | None:
    """When the oldest event the server still holds occurred, or None if it holds none.

    One request where the server allows an unbounded window. Prefect Cloud refuses queries over
    14 days: there, walk back in 14-day steps to `horizon` (the retention) and keep the oldest.
    """
    try:
        return _oldest_in(client, EPOCH, until)
    except ApiRejected:
        pass
    oldest = None
    for lower, upper in walk_back(until, until - horizon):
        oldest = _oldest_in(client, lower, upper - TICK) or oldest
    return oldest


def _oldest_in(client: PrefectClient, since: datetime, until: datetime) -> datetime | None:
    page = client.read_events(oldest_probe(since, until), limit=1)
    for raw in page["events"]:
        item = parse_event(raw)
        if isinstance(item, Event):
            return item.occurred
    return None

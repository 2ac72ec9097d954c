"""Prefect Cloud's cap on one event query (14 days of `occurred`), and the walk back within it.

Cloud refuses an event query or a count-by whose `occurred` range spans more than 14 days; a
self-hosted server takes any range. Whatever looks back further than that — the oldest event a
server holds, an event by id — asks span by span, newest first, with walk_back.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

MAX_QUERY_SPAN = timedelta(days=14)


def walk_back(upper: datetime, floor: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Spans (lower, upper) tiling [floor, upper] from `upper` back, newest first, each at most
    MAX_QUERY_SPAN long; each span's lower end is the next one's upper end. None if upper <= floor."""
    while upper > floor:
        lower = max(upper - MAX_QUERY_SPAN, floor)
        yield lower, upper
        upper = lower

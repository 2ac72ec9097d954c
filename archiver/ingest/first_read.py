"""The event read a sync sends first, known from the archive's mark before its writer is open.

A sync's first event request is one of two one-event probes, and which one, with what bounds,
follows from the mark alone: the gap probe at the newest archived event before the mark (gaps.py),
or on a first sync the search for the oldest event the server holds (fetch.first_event_time).
Asked from here while the writer imports SQLAlchemy and opens and migrates the archive (about half
a second of CPU), its round trip overlaps that work instead of following it. Both probes are built
by the functions below and nowhere else, so the early read and the sync's own are the same request.
Kept light (no storage, no httpx): the CLI imports it before the rest of ingest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from archiver.config import Settings
from archiver.prefect.events import EPOCH, format_timestamp
from archiver.prefect.spans import MAX_QUERY_SPAN


def gap_probe(newest: datetime, mark: datetime) -> dict[str, Any]:
    """The filter of gaps.server_gap's probe: does the server still hold the newest archived event?

    `occurred [newest, min(mark, newest + 14 days)]`, oldest first: it contains that event, and
    stays within Prefect Cloud's 14-day cap.
    """
    return {
        "occurred": {"since": format_timestamp(newest), "until": format_timestamp(min(mark, newest + MAX_QUERY_SPAN))},
        "order": "ASC",
    }


def oldest_probe(since: datetime, until: datetime) -> dict[str, Any]:
    """The filter that finds the oldest event with occurred in [since, until] (asked with limit 1)."""
    return {"occurred": {"since": format_timestamp(since), "until": format_timestamp(until)}, "order": "ASC"}


def range_end(settings: Settings, until: datetime | None, now: datetime) -> datetime:
    """The end of the range [start, end) a sync reads: `until`, or now − settle when that is sooner."""
    settled = settings.settled_until(now)
    return min(until, settled) if until else settled


def first_read(settings: Settings, mark: datetime | None, newest: datetime | None, *,
               since: datetime | None, until: datetime | None, now: datetime) -> dict[str, Any] | None:
    """The filter of the first event read `sync(settings, …, since=, until=, now=)` sends (limit 1).

    `mark` is the archive's high-water mark and `newest` its newest event before the mark, as the
    writer will read them (so the writer lock must be held already). None when the first read is
    neither probe (a --since, an ingest.start on a first sync, an archive with no event before
    its mark): then it depends on planning, and nothing is asked early.
    """
    if since is not None:
        return None  # no gap check; the range is planned first
    if mark is not None:
        return gap_probe(newest, mark) if newest is not None else None
    if settings.start is not None:
        return None
    return oldest_probe(EPOCH, range_end(settings, until, now))

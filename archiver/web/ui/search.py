"""The events page's query string as an EventFilter and a keyset position, and back as links.

Fields: `event` (a name or its prefix), `resource` (the primary resource's id; `*` at the end for
a prefix), `related` (a related resource's id, or prefix*), `any` (a resource in any role),
`since` / `until` (ISO times or ages like 3d; default the last 7 days), `order`, `limit` (events
a page, PAGE_SIZE unless given, at most MAX_PAGE_SIZE). A next-page link
carries the first page's `until` and total with the last (occurred, id) shown, so the pages stay
put while a sync writes: new events land outside the frozen window, and a keyset never shifts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from archiver.errors import BadInput
from archiver.prefect.events import format_timestamp, parse_timestamp, parse_when
from archiver.prefect.filters import ORDERS, EventFilter, RelatedMatch, ResourceMatch
from archiver.storage.reader import Position

FIELDS = ("event", "resource", "related", "any", "since", "until", "order", "limit")
DEFAULT_SINCE = "7d"
PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
PAGE_SIZES = (10, PAGE_SIZE, 200, MAX_PAGE_SIZE)  # what the form offers
# Facets are counted for searches matching at most this many events: each is a GROUP BY over
# every match: ~400 ms for 100,000 events on 2 busy cores, seconds for a busy week (bench/ui.py).
FACETS_UP_TO = 25_000
MAX_TEXT = 500  # characters of one field: a longer one is a mistake or an attack, not a search


@dataclass(frozen=True)
class Search:
    """What the form asked for (`fields`, as typed) and what it means."""

    fields: dict[str, str]
    filter: EventFilter
    after: Position | None = None
    total: int | None = None
    limit: int = PAGE_SIZE

    def link(self, **changes: str) -> str:
        """This search with some fields changed (a facet clicked, another order), from its first page."""
        fields = {**self.fields, **changes}
        return "/events?" + urlencode({k: v for k, v in fields.items() if v})

    def next_link(self, after: Position, total: int) -> str:
        """The next page: this window frozen at its `until`, after the last event shown."""
        fields = {**self.fields, "until": format_timestamp(self.filter.until),
                  "since": format_timestamp(self.filter.since)}
        occurred, last = after
        fields.update(after=f"{format_timestamp(occurred)}~{last}", total=str(total))
        return "/events?" + urlencode({k: v for k, v in fields.items() if v})


def _match(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ids, id prefixes) for a typed resource id, `*` at its end meaning a prefix."""
    if value.endswith("*"):
        return (), (value[:-1],)
    return (value,), ()


def parse_search(query: Mapping[str, str], now: datetime) -> Search:
    """The search a query string asks for; BadInput naming the field that is wrong."""
    fields = {k: query.get(k, "").strip() for k in FIELDS}
    for name, value in fields.items():
        if len(value) > MAX_TEXT:
            raise BadInput(f"{name} is longer than {MAX_TEXT} characters")
    fields["since"] = fields["since"] or DEFAULT_SINCE
    since = parse_when(fields["since"], name="since", now=now)
    until = parse_when(fields["until"], name="until", now=now) if fields["until"] else now
    if since > until:
        raise BadInput("since is after until: give an earlier since or a later until")
    order = (fields["order"] or "DESC").upper()
    if order not in ORDERS:
        raise BadInput("order must be ASC (oldest first) or DESC (newest first)")
    f = EventFilter(since=since, until=until, order=order)
    if fields["event"]:
        f = replace(f, prefixes=(fields["event"],))
    if fields["resource"]:
        ids, prefixes = _match(fields["resource"])
        f = replace(f, resource=ResourceMatch(ids=ids, id_prefixes=prefixes))
    if fields["related"]:
        value = fields["related"]
        related = (RelatedMatch(labels={"prefect.resource.id": (value,)}) if value.endswith("*")
                   else RelatedMatch(ids=(value,)))
        f = replace(f, related=(related,))
    if fields["any"]:
        ids, prefixes = _match(fields["any"])
        f = replace(f, any_resource=(ResourceMatch(ids=ids, id_prefixes=prefixes),))
    after, total = _position(query.get("after", ""), query.get("total", ""))
    return Search(fields, f, after, total, _limit(fields["limit"]))


def _limit(text: str) -> int:
    if not text:
        return PAGE_SIZE
    if not (text.isdigit() and 1 <= int(text) <= MAX_PAGE_SIZE):
        raise BadInput(f"limit must be a whole number of events a page from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _position(after: str, total: str) -> tuple[Position | None, int | None]:
    if not after:
        return None, None
    occurred, sep, last = after.partition("~")
    try:
        position = (parse_timestamp(occurred), uuid.UUID(last))
    except (ValueError, BadInput):
        raise BadInput("after is not a position from a next-page link: start again from the first page") from None
    if not sep:
        raise BadInput("after is not a position from a next-page link: start again from the first page")
    if total and not (total.isdigit() and len(total) < 19):
        raise BadInput("total must be a whole number")
    return position, int(total) if total else None


def window_around(first: datetime | None, last: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """A window for one run's events: a day either side of its states, or all time when unknown."""
    if first is None or last is None:
        return datetime(1970, 1, 1, tzinfo=now.tzinfo), now + timedelta(days=1)
    return first - timedelta(days=1), last + timedelta(days=1)

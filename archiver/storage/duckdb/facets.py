"""Facet counts of a search on DuckDB: its events by name, resource kind and deployment."""

from __future__ import annotations

import uuid
from typing import Any

import duckdb

from archiver.prefect.events import EVENT_COLUMNS, event_to_api, to_utc
from archiver.prefect.filters import EventFilter
from archiver.storage.browse import KEY_ROW, TOTAL_ROW, Facets, facets_of, facets_sql, first_page_sql
from archiver.storage.duckdb.search import _Sql, has_spans, where_clause
from archiver.storage.reader import Page


def read_facets(conn: duckdb.DuckDBPyConnection, f: EventFilter, limit: int) -> Facets:
    """The `limit` commonest of each among the events `f` matches, most first (ties by value)."""
    sql = _Sql(has_spans(conn))
    where = where_clause(f, sql)
    query = facets_sql(where, sql.p(f.since), sql.p(f.until), limit)
    return facets_of(conn.execute(query, sql.params).fetchall())


def read_first_page(conn: duckdb.DuckDBPyConnection, f: EventFilter, limit: int, facet_limit: int,
                    facets_up_to: int) -> tuple[Page, Facets | None]:
    """read_page's first page and read_facets' counts (when `facets_up_to` or fewer match) from one
    query that finds the matches once (storage/browse.py first_page_sql), then the page's rows by id."""
    sql = _Sql(has_spans(conn))
    where = where_clause(f, sql)
    query = first_page_sql(where, sql.p(f.since), sql.p(f.until), f.order, limit + 1, facet_limit, facets_up_to)
    rows = conn.execute(query, sql.params).fetchall()
    total = next(int(n) for kind, _, _, n in rows if kind == TOTAL_ROW)
    ids = [str(value) for kind, value, _, _ in rows if kind == KEY_ROW]
    found: dict[str, Any] = {}
    if ids:
        marks = ", ".join(f"${i}" for i in range(1, len(ids) + 1))
        found = {str(r[0]): r for r in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id IN ({marks})",
                                                   ids).fetchall()}
    events = [found[i] for i in ids]
    more = len(events) > limit
    events = events[:limit]
    last = (to_utc(events[-1][1]), uuid.UUID(str(events[-1][0]))) if more and events else None
    page = Page([event_to_api(*row) for row in events], total, last)
    facets = facets_of([(kind, value, n) for kind, value, _, n in rows if kind < TOTAL_ROW])
    return page, facets if total <= facets_up_to else None

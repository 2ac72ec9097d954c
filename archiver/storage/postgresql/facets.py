"""Facet counts of a search on PostgreSQL: its events by name, resource kind and deployment (as DuckDB's)."""

from __future__ import annotations

from typing import Any

import psycopg

from archiver.prefect.filters import EventFilter
from archiver.storage.browse import Facets, facets_of, facets_sql
from archiver.storage.postgresql.search import _Sql, where_clause


def read_facets(conn: psycopg.Connection[Any], f: EventFilter, limit: int) -> Facets:
    """The `limit` commonest of each among the events `f` matches, most first (ties by value)."""
    sql = _Sql()
    where = where_clause(f, sql)
    query = facets_sql(where, sql.p(f.since), sql.p(f.until), limit)
    return facets_of(conn.execute(query, sql.params).fetchall())

"""Facet counts of a search on DuckDB: its events by name, resource kind and deployment."""

from __future__ import annotations

import duckdb

from archiver.prefect.filters import EventFilter
from archiver.storage.browse import Facets, facets_of, facets_sql
from archiver.storage.duckdb.search import _Sql, where_clause


def read_facets(conn: duckdb.DuckDBPyConnection, f: EventFilter, limit: int) -> Facets:
    """The `limit` commonest of each among the events `f` matches, most first (ties by value)."""
    sql = _Sql()
    where = where_clause(f, sql)
    query = facets_sql(where, sql.p(f.since), sql.p(f.until), limit)
    return facets_of(conn.execute(query, sql.params).fetchall())

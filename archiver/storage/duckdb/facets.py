"""Facet counts of a search on DuckDB: its events by name, resource kind and deployment."""

from __future__ import annotations

import duckdb

from archiver.prefect.filters import EventFilter
from archiver.storage.browse import Facets
from archiver.storage.duckdb.search import _Sql, where_clause

# A resource id without its last segment: prefect.flow-run.<uuid> -> prefect.flow-run.
KIND = r"regexp_replace(e.resource_id, '\.[^.]*$', '')"


def read_facets(conn: duckdb.DuckDBPyConnection, f: EventFilter, limit: int) -> Facets:
    """The `limit` commonest of each among the events `f` matches, most first (ties by value)."""
    def top(column: str, source: str = "events e", extra: str = "", counted: str = "*") -> list[tuple[str, int]]:
        sql = _Sql()
        where = where_clause(f, sql)
        rows = conn.execute(f"SELECT {column}, count({counted}) FROM {source} WHERE {where}{extra} "
                            f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {int(limit)}", sql.params).fetchall()
        return [(str(value), int(n)) for value, n in rows]

    # An event may name one deployment twice (two related entries): count it once.
    deployments = top("d.resource_id", "events e JOIN event_resources d ON d.event_id = e.id", " AND d.role = 'deployment'",
                      "DISTINCT e.id")
    return Facets(top("e.event"), top(KIND), [(rid, None, n) for rid, n in deployments])

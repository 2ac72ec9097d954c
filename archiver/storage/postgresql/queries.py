"""The reads both sides of the PostgreSQL backend ask: the writer during a sync, a reader otherwise.

One text each, with psycopg's %s parameters (SQLAlchemy's exec_driver_sql on the psycopg dialect
and psycopg's own execute both bind them). The answers equal DuckDB's (duckdb/queries.py):
buckets are numbered from PIVOT the same way, and bucket_params / bucket_starts are shared.
"""

from __future__ import annotations

from archiver.storage.duckdb.queries import bucket_params, bucket_starts

__all__ = ["BUCKET_COUNTS", "GAPS", "MARK", "NEWEST_BEFORE", "bucket_params", "bucket_starts"]

MARK = "SELECT high_water_mark FROM archive_state WHERE id = 1"
NEWEST_BEFORE = "SELECT max(occurred) FROM events WHERE occurred < %s"
GAPS = "SELECT since, until FROM gaps ORDER BY since"
# extract(epoch …) is NUMERIC (exact to the microsecond), so the floor is DuckDB's epoch_us arithmetic.
BUCKET_COUNTS = (
    "SELECT floor((extract(epoch FROM occurred) * 1000000 - %s) / %s)::BIGINT AS bucket, count(*) FROM events "
    "WHERE occurred BETWEEN %s AND %s GROUP BY bucket"
)

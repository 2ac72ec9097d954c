"""The reads both sides of the DuckDB backend ask: the writer during a sync, a reader otherwise.

A sync's reconcile asks them of the writer (the same process cannot open the file read-only beside
its own read-write connection); `verify` without --repair, `status` and `check` ask a reader. One
text each, with DuckDB's positional parameters, which SQLAlchemy's exec_driver_sql and DuckDB's own
execute both bind. And one write that both the writer and `copy`'s sink make (WIDEN_SPANS).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from archiver.prefect.events import PIVOT

MARK = "SELECT high_water_mark FROM archive_state WHERE id = 1"
NEWEST_BEFORE = "SELECT max(occurred) FROM events WHERE occurred < $1"
GAPS = "SELECT since, until FROM gaps ORDER BY since"
# Widen the resources' spans (migration 0011) to take in new event_resources rows: batches.resource_spans'
# columns, in the transaction that inserts the rows.
WIDEN_SPANS = """
INSERT INTO resource_spans SELECT * FROM (SELECT unnest($1::VARCHAR[]), unnest($2::TIMESTAMPTZ[]), unnest($3::TIMESTAMPTZ[]))
ON CONFLICT (resource_id) DO UPDATE SET
    first_occurred = least(resource_spans.first_occurred, excluded.first_occurred),
    last_occurred = greatest(resource_spans.last_occurred, excluded.last_occurred)
"""
# Buckets numbered from PIVOT the way Prefect's count-by numbers them, `width` microseconds wide.
BUCKET_COUNTS = (
    "SELECT floor((epoch_us(occurred) - $1) / $2)::BIGINT AS bucket, count(*) FROM events "
    "WHERE occurred BETWEEN $3 AND $4 GROUP BY bucket"
)


def bucket_params(since: datetime, until: datetime, width: timedelta) -> list[Any]:
    """BUCKET_COUNTS' parameters for buckets `width` wide in [since, until]."""
    return [int(PIVOT.timestamp()) * 1_000_000, width // timedelta(microseconds=1), since, until]


def bucket_starts(rows: Iterable[tuple[int, int]], width: timedelta) -> dict[datetime, int]:
    """BUCKET_COUNTS' rows as {bucket start: events}."""
    return {PIVOT + width * bucket: count for bucket, count in rows}

-- Events without a primary key. DuckDB keeps a primary key's index (an ART) in memory, checks it
-- on every insert and loads it again on every open of the file; it grew with the archive (a
-- 2,000-event batch into 5M events: ~450 MB of RSS) and reloading it was a fifth of a sync's time
-- (issue 16). Lookups by id need no index: Prefect's event ids are UUIDv7, about in insertion
-- order, so DuckDB's zone maps (min/max per row group) skip all but a row group or two. The writer
-- keeps ids unique itself: it looks a batch's ids up (within the batch's id range) and inserts only
-- the new ones, and only one writer ever holds the file (storage/duckdb/writer.py).
-- DuckDB cannot drop a primary key in place (ALTER TABLE … DROP CONSTRAINT is not implemented), so
-- the table is rebuilt: same columns, types, order and NOT NULLs, every row in its stored order
-- (insertion order is preserved, which keeps the zone maps tight). The macros and views over events
-- (0003) are bound by name when queried, so they read the new table. Runs in one transaction with
-- its schema_migrations row: killed midway, the archive is as it was.
CREATE TABLE events_without_key (
    id UUID NOT NULL,
    occurred TIMESTAMPTZ NOT NULL,
    received TIMESTAMPTZ,
    event VARCHAR NOT NULL,
    resource_id VARCHAR NOT NULL,
    resource JSON NOT NULL,
    related JSON NOT NULL,
    payload JSON NOT NULL,
    follows UUID,
    content_hash VARCHAR NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
INSERT INTO events_without_key SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_without_key RENAME TO events;

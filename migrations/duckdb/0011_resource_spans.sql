-- When each resource was first and last named by an archived event, in place of event_resources'
-- index on resource_id (0004). DuckDB holds the part of an index a commit adds to in memory, so
-- that index (3 rows an event) set the writer's floor: writing 1M events peaked at 327 MB of RSS
-- with it and 244 MB without (bench/writer_memory.py, issue 16). A lookup by resource id now reads
-- its span here (one row per resource, ~1/9 of event_resources' rows) and scans event_resources
-- only between those times, which its zone maps on `occurred` skip to: a flow run's rows on 1M
-- events, a fresh read-only open each, p50 24.6 ms through the index, 67.9 ms with no index and
-- 39.5 ms bounded by the span. Derived from event_resources and kept with it: the writer and
-- `copy` widen a resource's span in the transaction that inserts its rows, so every row lies
-- inside its resource's span; `copy` rebuilds it whole at the end; `export` leaves it out.
DROP INDEX event_resources_resource_id;
CREATE TABLE resource_spans (
    resource_id VARCHAR PRIMARY KEY,
    first_occurred TIMESTAMPTZ NOT NULL,
    last_occurred TIMESTAMPTZ NOT NULL
);
INSERT INTO resource_spans SELECT resource_id, min(occurred), max(occurred) FROM event_resources GROUP BY 1;

-- When each resource was first and last named by an archived event (DuckDB's 0011 says why: it
-- replaces event_resources' index there). PostgreSQL keeps its index on event_resources
-- (resource_id, occurred, event_id), which its lookups use; the table is here so that both
-- backends hold the same tables and `copy` moves an archive either way. Kept by the writer in the
-- transaction that inserts the rows, rebuilt by `copy`, not exported.
CREATE TABLE resource_spans (
    resource_id TEXT PRIMARY KEY,
    first_occurred TIMESTAMPTZ NOT NULL,
    last_occurred TIMESTAMPTZ NOT NULL
);
INSERT INTO resource_spans SELECT resource_id, min(occurred), max(occurred) FROM event_resources GROUP BY 1;

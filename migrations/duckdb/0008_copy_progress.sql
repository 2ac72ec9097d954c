-- How far `prefect-archiver copy` has come, per table, in an archive it copies into: the key of
-- the last row of the last committed page, written in the same transaction as that page, so a
-- copy killed at any moment resumes after it and doubles nothing. `source` names the archive
-- copied from (a path, or a PostgreSQL URL's host:port/db: never a user or password); a copy
-- into an archive that holds rows refuses unless a copy from that same source started it.
-- Numbered 0008, leaving 0007 to the run logs and artifacts (issue 14) being written beside it.
CREATE TABLE copy_progress (
    source VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    after_key VARCHAR,                  -- JSON list of the last copied row's key columns; NULL: none yet
    rows_copied BIGINT NOT NULL DEFAULT 0,
    done BOOLEAN NOT NULL DEFAULT false,
    updated TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, table_name)
);

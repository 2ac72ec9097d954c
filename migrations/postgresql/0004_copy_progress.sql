-- `prefect-archiver copy`'s progress per table (DuckDB 0008, where each column is explained).
-- Numbered 0003, leaving 0002 to the run logs and artifacts (issue 14) being written beside it.
CREATE TABLE copy_progress (
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    after_key TEXT,
    rows_copied BIGINT NOT NULL DEFAULT 0,
    done BOOLEAN NOT NULL DEFAULT false,
    updated TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, table_name)
);

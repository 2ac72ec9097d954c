-- Run logs and artifacts, their harvest's progress marks and ledger counts (DuckDB 0007; comments
-- on what each table means are there). The whole objects are JSON (the text as the API sent it),
-- as events' are.

CREATE TABLE logs (
    id UUID PRIMARY KEY,
    flow_run_id UUID,
    task_run_id UUID,
    level INTEGER NOT NULL,
    name TEXT,
    timestamp TIMESTAMPTZ NOT NULL,
    message TEXT,
    log JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
-- A run's logs in timestamp order read in index order; time ranges across runs by timestamp.
CREATE INDEX logs_flow_run ON logs (flow_run_id, timestamp);
CREATE INDEX logs_task_run ON logs (task_run_id, timestamp);
CREATE INDEX logs_timestamp ON logs (timestamp);

CREATE TABLE artifacts (
    id UUID PRIMARY KEY,
    key TEXT,
    type TEXT,
    description TEXT,
    data JSON,
    flow_run_id UUID,
    task_run_id UUID,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    artifact JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX artifacts_flow_run ON artifacts (flow_run_id);
CREATE INDEX artifacts_task_run ON artifacts (task_run_id);

CREATE TABLE log_progress (
    run_kind TEXT NOT NULL,
    run_id UUID NOT NULL,
    logs_after TIMESTAMPTZ,
    state_seen TIMESTAMPTZ,
    ended TIMESTAMPTZ,
    read_at TIMESTAMPTZ NOT NULL,
    settled BOOLEAN NOT NULL,
    PRIMARY KEY (run_kind, run_id)
);
-- The logs pass asks for the runs refreshed since it last began (DuckDB skips by zone maps).
CREATE INDEX flow_runs_archived_at ON flow_runs (archived_at);
CREATE INDEX task_runs_archived_at ON task_runs (archived_at);

CREATE TABLE logs_pass (
    id INTEGER PRIMARY KEY,
    runs_archived_before TIMESTAMPTZ
);
INSERT INTO logs_pass VALUES (1, NULL);

ALTER TABLE syncs ADD COLUMN logs_inserted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE syncs ADD COLUMN artifacts_saved BIGINT NOT NULL DEFAULT 0;

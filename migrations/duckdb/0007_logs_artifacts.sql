-- Run logs and artifacts (POST /logs/filter, POST /artifacts/filter), kept after the server has
-- forgotten the run. Each row keeps the whole object as the API sent it (`log`, `artifact`)
-- beside the columns queries use. Harvested per run (archiver/ingest/logs.py), each page of logs
-- committed with the run's progress mark (log_progress) in one transaction.

CREATE TABLE logs (
    id UUID PRIMARY KEY,
    flow_run_id UUID,
    task_run_id UUID,
    level INTEGER NOT NULL,            -- Python's levels: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL
    name VARCHAR,                      -- the logger's name: prefect.flow_runs, prefect.task_runs, ...
    timestamp TIMESTAMPTZ NOT NULL,    -- set by the client that logged it
    message VARCHAR,
    log JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
-- "The logs of this run" (`logs RUN_ID`, get_run_logs, serve's /logs/filter by run): an ART
-- index on each run column. Time ranges need none: rows arrive about in timestamp order, so
-- DuckDB's zone maps (min/max per row group) skip what a range excludes.
CREATE INDEX logs_flow_run_id ON logs (flow_run_id);
CREATE INDEX logs_task_run_id ON logs (task_run_id);

CREATE TABLE artifacts (
    id UUID PRIMARY KEY,
    key VARCHAR,
    type VARCHAR,                      -- markdown, table, link, image, progress, result, ...
    description VARCHAR,
    data JSON,                         -- as the API sent it: a markdown string, a table's JSON, a link, a number
    flow_run_id UUID,
    task_run_id UUID,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    artifact JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX artifacts_flow_run_id ON artifacts (flow_run_id);

-- How far each run's harvest got. The next read of a run asks for logs at or after
-- `logs_after` (the API's timestamp.after_ is inclusive: logs at that instant come again and are
-- known by id). `state_seen` is the run's state timestamp that read knew of, `ended` when it
-- reached a terminal state; a run is `settled` once read after ended + logs.horizon (late
-- batches), or when the server no longer has it, and is left alone until its state changes.
CREATE TABLE log_progress (
    run_kind VARCHAR NOT NULL,         -- 'flow_run' or 'task_run' (a task run outside any flow run)
    run_id UUID NOT NULL,
    logs_after TIMESTAMPTZ,
    state_seen TIMESTAMPTZ,
    ended TIMESTAMPTZ,
    read_at TIMESTAMPTZ NOT NULL,
    settled BOOLEAN NOT NULL,
    PRIMARY KEY (run_kind, run_id)
);

-- Where the next logs pass looks for runs: every run whose metadata was archived before
-- `runs_archived_before` was planned for by a completed pass. NULL: all of them (a first pass,
-- also over an archive made before logs existed).
CREATE TABLE logs_pass (
    id INTEGER PRIMARY KEY,
    runs_archived_before TIMESTAMPTZ
);
INSERT INTO logs_pass VALUES (1, NULL);

-- The ledger counts what each sync harvested.
ALTER TABLE syncs ADD COLUMN logs_inserted BIGINT DEFAULT 0;
ALTER TABLE syncs ADD COLUMN artifacts_saved BIGINT DEFAULT 0;

-- A PostgreSQL archive starts at the schema DuckDB's migrations 0001-0006 build, in one step:
-- the same tables, columns, keys and views, in PostgreSQL's types (JSON for events as the API
-- sent them, JSONB for the rest of the API's JSON, TEXT[] for lists). Later schema changes are numbered after this file, in both folders.
-- Comments on what each table means are in migrations/duckdb/; here only what differs.

-- Events as Prefect's API returned them: JSON, not JSONB, because JSON keeps the text as written
-- (the server's key order, its numbers: 1e20 stays 1e20), and `get`, `serve` and get_event answer
-- with that text, as the DuckDB archive does. Queries use ->/->> as on JSONB (or cast ::jsonb).
CREATE TABLE events (
    id UUID PRIMARY KEY,
    occurred TIMESTAMPTZ NOT NULL,
    received TIMESTAMPTZ,
    event TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    resource JSON NOT NULL,
    related JSON NOT NULL,
    payload JSON NOT NULL,
    follows UUID,
    content_hash TEXT NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
-- DuckDB skips through events by occurred and archived_at with its zone maps (min/max per row
-- group, no index needed); PostgreSQL needs a b-tree for the same range scans: bucket counts,
-- the newest event before a moment (reconcile, gaps) and the states pass's "archived since".
CREATE INDEX events_occurred ON events (occurred);
CREATE INDEX events_archived_at ON events (archived_at);

CREATE TABLE event_resources (
    event_id UUID NOT NULL,
    occurred TIMESTAMPTZ NOT NULL,
    resource_id TEXT NOT NULL,
    role TEXT NOT NULL
);
-- One resource's events newest first (a flow's, a flow run's: `events --flow-run`, serve's
-- related filters) read in index order: 1.7 ms for a page of a flow with 5,000 events in 1M,
-- against 27-40 ms with an index on resource_id alone.
CREATE INDEX event_resources_resource_id ON event_resources (resource_id, occurred, event_id);

CREATE TABLE archive_state (
    id INTEGER PRIMARY KEY,
    high_water_mark TIMESTAMPTZ
);
INSERT INTO archive_state VALUES (1, NULL);

CREATE TABLE syncs (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    finished TIMESTAMPTZ,
    since TIMESTAMPTZ,
    until TIMESTAMPTZ,
    windows BIGINT NOT NULL DEFAULT 0,
    fetched BIGINT NOT NULL DEFAULT 0,
    inserted BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    conflicts BIGINT NOT NULL DEFAULT 0,
    quarantined BIGINT NOT NULL DEFAULT 0,
    reconciled_buckets BIGINT NOT NULL DEFAULT 0,
    high_water_mark TIMESTAMPTZ,
    outcome TEXT NOT NULL,
    error TEXT
);

CREATE TABLE quarantine (
    raw_hash TEXT PRIMARY KEY,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    event_id TEXT,
    first_seen TIMESTAMPTZ NOT NULL,
    sync_id UUID,
    resolved TIMESTAMPTZ
);

CREATE TABLE gaps (
    since TIMESTAMPTZ NOT NULL,
    until TIMESTAMPTZ NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    sync_id UUID,
    PRIMARY KEY (since, until)
);

-- Run metadata (DuckDB 0002).

CREATE TABLE flows (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    tags TEXT[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE deployments (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    flow_id UUID,
    work_pool_name TEXT,
    work_queue_name TEXT,
    paused BOOLEAN,
    status TEXT,
    tags TEXT[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE work_pools (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT,
    status TEXT,
    is_paused BOOLEAN,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE flow_runs (
    id UUID PRIMARY KEY,
    name TEXT,
    flow_id UUID,
    deployment_id UUID,
    work_pool_id UUID,
    work_pool_name TEXT,
    work_queue_name TEXT,
    parent_task_run_id UUID,
    state_type TEXT,
    state_name TEXT,
    state_timestamp TIMESTAMPTZ,
    run_count INTEGER,
    expected_start_time TIMESTAMPTZ,
    start_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ,
    total_run_time DOUBLE PRECISION,
    tags TEXT[],
    parameters JSONB,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE task_runs (
    id UUID PRIMARY KEY,
    name TEXT,
    flow_run_id UUID,
    task_key TEXT,
    state_type TEXT,
    state_name TEXT,
    state_timestamp TIMESTAMPTZ,
    run_count INTEGER,
    expected_start_time TIMESTAMPTZ,
    start_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ,
    total_run_time DOUBLE PRECISION,
    tags TEXT[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

-- DuckDB's object_kind macro: prefect.flow-run.<uuid> -> 'flow_runs'; '' for anything else.
-- substring(… FROM pattern) returns the first parenthesized group, NULL without a match.
CREATE FUNCTION object_kind(resource_id TEXT) RETURNS TEXT
LANGUAGE SQL IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE substring(
            resource_id FROM
            '^prefect\.(flow-run|task-run|deployment|flow|work-pool)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
        WHEN 'flow-run' THEN 'flow_runs' WHEN 'task-run' THEN 'task_runs' WHEN 'deployment' THEN 'deployments'
        WHEN 'flow' THEN 'flows' WHEN 'work-pool' THEN 'work_pools' ELSE '' END
$$;

-- DuckDB's TRY_CAST(text AS TIMESTAMPTZ) for the views and the writer's typed columns: NULL for
-- text that is no time (instead of failing the statement), and for times outside the years
-- 1-9999, which PostgreSQL stores but Python cannot read back (DuckDB's writer drops those too).
-- A time without an offset is read as UTC (the function's own TimeZone), not the session's.
CREATE FUNCTION try_timestamptz(value TEXT) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET "TimeZone" = 'UTC' AS $$
DECLARE
    parsed TIMESTAMPTZ;
BEGIN
    IF value IS NULL THEN
        RETURN NULL;
    END IF;
    parsed := value::TIMESTAMPTZ;
    IF parsed < '0001-01-01 00:00:00+00' OR parsed >= '10000-01-01 00:00:00+00' OR NOT isfinite(parsed) THEN
        RETURN NULL;
    END IF;
    RETURN parsed;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

CREATE TABLE object_refresh_queue (
    kind TEXT NOT NULL,
    id UUID NOT NULL,
    queued_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id)
);
-- (DuckDB's 0002 queued the objects an older archive's events named; a PostgreSQL archive starts empty.)

-- State history and analytics views (DuckDB 0003): the same columns, in the same order, with the
-- same answers. Days and hours are cut in UTC whatever the session's TimeZone.

CREATE VIEW flow_run_states AS
SELECT
    right(resource_id, 36)::UUID AS flow_run_id,
    resource->>'prefect.state-type' AS state_type,
    resource->>'prefect.state-name' AS state_name,
    coalesce(try_timestamptz(resource->>'prefect.state-timestamp'), occurred) AS timestamp,
    nullif(coalesce(payload->'validated_state'->>'message', resource->>'prefect.state-message'), '') AS message,
    id AS event_id,
    event
FROM events
WHERE resource_id LIKE 'prefect.flow-run.%' AND resource->>'prefect.state-type' IS NOT NULL;

CREATE VIEW task_run_states AS
SELECT
    right(resource_id, 36)::UUID AS task_run_id,
    resource->>'prefect.state-type' AS state_type,
    resource->>'prefect.state-name' AS state_name,
    coalesce(try_timestamptz(resource->>'prefect.state-timestamp'), occurred) AS timestamp,
    nullif(coalesce(payload->'validated_state'->>'message', resource->>'prefect.state-message'), '') AS message,
    id AS event_id,
    event
FROM events
WHERE resource_id LIKE 'prefect.task-run.%' AND resource->>'prefect.state-type' IS NOT NULL;

-- extract(epoch FROM interval) is NUMERIC in PostgreSQL; DuckDB's epoch() is DOUBLE.
CREATE VIEW flow_run_durations AS
SELECT
    r.id AS flow_run_id,
    r.name AS flow_run_name,
    r.flow_id,
    f.name AS flow_name,
    r.deployment_id,
    d.name AS deployment_name,
    r.work_pool_name,
    r.state_type,
    r.state_name,
    r.start_time,
    r.end_time,
    extract(epoch FROM r.end_time - r.start_time)::DOUBLE PRECISION AS seconds,
    r.total_run_time AS run_seconds
FROM flow_runs r
LEFT JOIN flows f ON f.id = r.flow_id
LEFT JOIN deployments d ON d.id = r.deployment_id;

-- DuckDB's any_value is min() here (any_value needs PostgreSQL 16): within a deployment the name
-- is one value (deployment_name comes from the deployment's own row). The failure rate divides
-- as DOUBLE PRECISION: bigint / bigint would truncate to 0 in PostgreSQL.
CREATE VIEW deployment_health AS
SELECT
    r.deployment_id,
    min(r.deployment_name) AS deployment_name,
    min(r.flow_name) AS flow_name,
    r.day,
    count(*) AS runs,
    count(*) FILTER (WHERE r.state_type = 'COMPLETED') AS completed,
    count(*) FILTER (WHERE r.state_type = 'FAILED') AS failed,
    count(*) FILTER (WHERE r.state_type = 'CRASHED') AS crashed,
    count(*) FILTER (WHERE r.state_type = 'CANCELLED') AS cancelled,
    (count(*) FILTER (WHERE r.state_type IN ('FAILED', 'CRASHED')))::DOUBLE PRECISION
        / nullif(count(*) FILTER (WHERE r.state_type IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')), 0)
        AS failure_rate,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY r.seconds) AS p50_seconds,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY r.seconds) AS p95_seconds
FROM (
    SELECT
        d.*,
        (coalesce(d.start_time, fr.expected_start_time, fr.created) AT TIME ZONE 'UTC')::DATE AS day
    FROM flow_run_durations d
    JOIN flow_runs fr ON fr.id = d.flow_run_id
    WHERE d.deployment_id IS NOT NULL
) r
GROUP BY r.deployment_id, r.day;

CREATE VIEW event_volume AS
SELECT
    date_trunc('hour', occurred AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
    regexp_replace(event, '\.[^.]*$', '') AS event_prefix,
    count(*) AS events
FROM events
GROUP BY 1, 2;

CREATE VIEW late_runs AS
SELECT
    r.id AS flow_run_id,
    r.name AS flow_run_name,
    f.name AS flow_name,
    d.name AS deployment_name,
    r.work_pool_name,
    r.state_type,
    r.state_name,
    r.expected_start_time,
    r.start_time,
    extract(epoch FROM coalesce(r.start_time, now()) - r.expected_start_time)::DOUBLE PRECISION AS late_seconds
FROM flow_runs r
LEFT JOIN flows f ON f.id = r.flow_id
LEFT JOIN deployments d ON d.id = r.deployment_id
WHERE r.expected_start_time IS NOT NULL
  AND (extract(epoch FROM r.start_time - r.expected_start_time) >= 15
       OR (r.start_time IS NULL AND r.state_name = 'Late'));

-- Run states, their fetch ledger, the states pass's cursor and result storage blocks (DuckDB 0005).

CREATE TABLE run_states (
    id UUID PRIMARY KEY,
    run_kind TEXT NOT NULL,
    run_id UUID NOT NULL,
    type TEXT NOT NULL,
    name TEXT,
    timestamp TIMESTAMPTZ NOT NULL,
    message TEXT,
    state_details JSONB,
    data_kind TEXT NOT NULL,
    storage_key TEXT,
    storage_block_id UUID,
    serializer_type TEXT,
    result_expiration TIMESTAMPTZ,
    result_prefect_version TEXT,
    state JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);
-- The states pass asks for a run's newest archived state (DuckDB scans; this is its index).
CREATE INDEX run_states_run ON run_states (run_kind, run_id, timestamp);

CREATE TABLE run_state_fetches (
    run_kind TEXT NOT NULL,
    run_id UUID NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    states INTEGER NOT NULL,
    newest_event TIMESTAMPTZ NOT NULL,
    covered_until TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_kind, run_id)
);

CREATE TABLE run_states_progress (
    id INTEGER PRIMARY KEY,
    events_archived_before TIMESTAMPTZ
);
INSERT INTO run_states_progress VALUES (1, NULL);

CREATE TABLE result_storage_blocks (
    id UUID PRIMARY KEY,
    found BOOLEAN NOT NULL,
    name TEXT,
    block_type_slug TEXT,
    basepath TEXT,
    archived_at TIMESTAMPTZ NOT NULL
);

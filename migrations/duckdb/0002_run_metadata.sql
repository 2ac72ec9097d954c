-- Run metadata: the flow runs, task runs, deployments, flows and work pools that archived events
-- name, as the API last returned them. Typed columns for what people filter and group by; the
-- whole object in `object`. Rows are replaced when refreshed and never deleted: an object the
-- server has trimmed keeps its last archived version.

CREATE TABLE flows (
    id UUID PRIMARY KEY,
    name VARCHAR NOT NULL,
    tags VARCHAR[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE deployments (
    id UUID PRIMARY KEY,
    name VARCHAR NOT NULL,
    flow_id UUID,
    work_pool_name VARCHAR,
    work_queue_name VARCHAR,
    paused BOOLEAN,
    status VARCHAR,
    tags VARCHAR[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE work_pools (
    id UUID PRIMARY KEY,
    name VARCHAR NOT NULL,
    type VARCHAR,
    status VARCHAR,
    is_paused BOOLEAN,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE flow_runs (
    id UUID PRIMARY KEY,
    name VARCHAR,
    flow_id UUID,
    deployment_id UUID,
    work_pool_id UUID,
    work_pool_name VARCHAR,
    work_queue_name VARCHAR,
    parent_task_run_id UUID,
    state_type VARCHAR,
    state_name VARCHAR,
    state_timestamp TIMESTAMPTZ,
    run_count INTEGER,
    expected_start_time TIMESTAMPTZ,
    start_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ,
    total_run_time DOUBLE,
    tags VARCHAR[],
    parameters JSON,
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE task_runs (
    id UUID PRIMARY KEY,
    name VARCHAR,
    flow_run_id UUID,
    task_key VARCHAR,
    state_type VARCHAR,
    state_name VARCHAR,
    state_timestamp TIMESTAMPTZ,
    run_count INTEGER,
    expected_start_time TIMESTAMPTZ,
    start_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ,
    total_run_time DOUBLE,
    tags VARCHAR[],
    created TIMESTAMPTZ,
    updated TIMESTAMPTZ,
    object JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

-- The kind of Prefect object a resource id names: prefect.flow-run.<uuid> -> 'flow_runs' (the
-- table and API collection name); '' for anything else. The object's id is right(resource_id, 36).
CREATE MACRO object_kind(resource_id) AS CASE regexp_extract(
        resource_id,
        '^prefect\.(flow-run|task-run|deployment|flow|work-pool)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
        1)
    WHEN 'flow-run' THEN 'flow_runs' WHEN 'task-run' THEN 'task_runs' WHEN 'deployment' THEN 'deployments'
    WHEN 'flow' THEN 'flows' WHEN 'work-pool' THEN 'work_pools' ELSE '' END;

-- Objects named by archived events and not refreshed from the API since. Filled in the same
-- transaction as the events, so a crash between archiving events and refreshing their objects
-- loses nothing; a refresh deletes what it saved. `attempts` counts refreshes that did not find
-- the object (the server records task runs from events, a little later).
CREATE TABLE object_refresh_queue (
    kind VARCHAR NOT NULL,
    id UUID NOT NULL,
    queued_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id)
);

-- An archive made by an earlier version already holds events: queue every object they name.
INSERT INTO object_refresh_queue
SELECT DISTINCT object_kind(resource_id), right(resource_id, 36)::UUID, now(), 0
FROM event_resources
WHERE object_kind(resource_id) <> '';

-- Run states: the state records of flow runs and task runs as the API returns them
-- (GET /flow_run_states/?flow_run_id=, GET /task_run_states/?task_run_id=), kept after the server
-- trims or deletes the run. A state-change event reuses its state's id, so `id` joins
-- events.id and the event_id column of the flow_run_states / task_run_states views.
-- The result-reference columns are filled when `data` is a persisted result's metadata
-- (Prefect's ResultRecordMetadata: storage_key, storage_block_id, serializer, expiration,
-- prefect_version); `state` is the whole record, always.

CREATE TABLE run_states (
    id UUID PRIMARY KEY,
    run_kind VARCHAR NOT NULL,          -- 'flow_run' or 'task_run'
    run_id UUID NOT NULL,
    type VARCHAR NOT NULL,              -- COMPLETED, FAILED, ... (Prefect's StateType)
    name VARCHAR,                       -- Completed, Retrying, Late, ...
    timestamp TIMESTAMPTZ NOT NULL,
    message VARCHAR,
    state_details JSON,
    data_kind VARCHAR NOT NULL,         -- 'none', 'result_reference' or 'inline'
    storage_key VARCHAR,
    storage_block_id UUID,
    serializer_type VARCHAR,            -- json, pickle, compressed/pickle, ...
    result_expiration TIMESTAMPTZ,
    result_prefect_version VARCHAR,
    state JSON NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL
);

-- Which runs' states were read, and how far the archive's state events were covered by that
-- read. A run is read again when a state event newer than both its newest archived state and
-- `covered_until` arrives. `attempts` counts reads that did not return the state of the newest
-- state event (`newest_event`) while the server may still be recording it (task-run states are
-- written from events, a little later); after a few, or once that event is old, `covered_until`
-- moves past it and the run is left alone until a newer one arrives.
CREATE TABLE run_state_fetches (
    run_kind VARCHAR NOT NULL,
    run_id UUID NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    states INTEGER NOT NULL,            -- states the last read returned
    newest_event TIMESTAMPTZ NOT NULL,  -- the newest state event's timestamp when it was read
    covered_until TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_kind, run_id)
);

-- Where the next states pass starts looking for state events: every event archived before
-- `events_archived_before` has been planned for by a completed pass. NULL: look at all of them
-- (a new archive, or one made before run states existed).
CREATE TABLE run_states_progress (
    id INTEGER PRIMARY KEY,
    events_archived_before TIMESTAMPTZ
);
INSERT INTO run_states_progress VALUES (1, NULL);

-- The result storage blocks that archived states reference (GET /block_documents/{id}, without
-- secrets), read once when first seen so `states --show-result` can find a LocalFileSystem
-- block's files without the server. Only what locates a result is kept: never the block's data.
-- A block the server did not have when asked has found = false.
CREATE TABLE result_storage_blocks (
    id UUID PRIMARY KEY,
    found BOOLEAN NOT NULL,
    name VARCHAR,
    block_type_slug VARCHAR,            -- local-file-system, s3-bucket, ...
    basepath VARCHAR,                   -- local-file-system only
    archived_at TIMESTAMPTZ NOT NULL
);

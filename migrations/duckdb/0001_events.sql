-- Events as Prefect's API returns them, the resources they name, the high-water mark,
-- the sync ledger, quarantined items and known gaps.

-- One row per event id. JSON columns hold the API's values as text (fastest, and round-trips
-- exactly); content_hash lets a re-delivered id with different content be noticed.
CREATE TABLE events (
    id UUID PRIMARY KEY,
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

-- Prefect's own split (server/database: event_resources): the primary resource with role ''
-- and every related resource with its role, so "all events of this flow run" is one lookup.
CREATE TABLE event_resources (
    event_id UUID NOT NULL,
    occurred TIMESTAMPTZ NOT NULL,
    resource_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL
);

-- A single row. Every event with occurred < high_water_mark is archived; the mark only moves
-- forward and is written in the same transaction as the events that justify it.
CREATE TABLE archive_state (
    id INTEGER PRIMARY KEY,
    high_water_mark TIMESTAMPTZ
);
INSERT INTO archive_state VALUES (1, NULL);

-- One row per sync or verify run; a row left 'running' is a run that died without finishing.
CREATE TABLE syncs (
    id UUID PRIMARY KEY,
    kind VARCHAR NOT NULL,
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
    outcome VARCHAR NOT NULL,
    error VARCHAR
);

-- Items of an event page that could not be archived as events, kept verbatim with the reason.
CREATE TABLE quarantine (
    raw_hash VARCHAR PRIMARY KEY,
    raw VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    event_id VARCHAR,
    first_seen TIMESTAMPTZ NOT NULL,
    sync_id UUID
);

-- Stretches of time the archive may be missing for good: the mark fell behind the server's
-- retention horizon before they were archived.
CREATE TABLE gaps (
    since TIMESTAMPTZ NOT NULL,
    until TIMESTAMPTZ NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    sync_id UUID,
    PRIMARY KEY (since, until)
);

-- State history from the archived state-change events, and views for the questions people ask.
-- Times are TIMESTAMPTZ; days and hours are cut in UTC (epoch arithmetic, so the result does not
-- depend on the session's TimeZone setting or on the ICU extension being loaded).

-- The states runs entered, from their state-change events (prefect.flow-run.<State>, emitted by the
-- server, and prefect.task-run.<State>, emitted by the task engine; one per transition, and the
-- event id is the state's id). `message` is the state's message, when it has one. `prefix` picks
-- the kind of run by resource id, which keeps the scan cheap.
CREATE MACRO state_events(prefix) AS TABLE
SELECT
    right(resource_id, 36)::UUID AS run_id,
    resource->>'prefect.state-type' AS state_type,
    resource->>'prefect.state-name' AS state_name,
    coalesce(TRY_CAST(resource->>'prefect.state-timestamp' AS TIMESTAMPTZ), occurred) AS timestamp,
    nullif(coalesce(payload->'validated_state'->>'message', resource->>'prefect.state-message'), '') AS message,
    id AS event_id,
    event
FROM events
WHERE resource_id LIKE prefix || '%' AND resource->>'prefect.state-type' IS NOT NULL;

CREATE VIEW flow_run_states AS
SELECT run_id AS flow_run_id, * EXCLUDE (run_id) FROM state_events('prefect.flow-run.');

CREATE VIEW task_run_states AS
SELECT run_id AS task_run_id, * EXCLUDE (run_id) FROM state_events('prefect.task-run.');

-- Per flow run: what ran, where, how it ended and how long it took. `seconds` is wall-clock time
-- from start to end; `run_seconds` is Prefect's total_run_time (time spent running, all attempts).
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
    epoch(r.end_time - r.start_time) AS seconds,
    r.total_run_time AS run_seconds
FROM flow_runs r
LEFT JOIN flows f ON f.id = r.flow_id
LEFT JOIN deployments d ON d.id = r.deployment_id;

-- Per deployment and UTC day (of the start, or the expected start for runs that never started):
-- runs, how they ended, the failure rate among finished runs, and p50/p95 wall-clock duration.
CREATE VIEW deployment_health AS
SELECT
    r.deployment_id,
    any_value(r.deployment_name) AS deployment_name,
    any_value(r.flow_name) AS flow_name,
    r.day,
    count(*) AS runs,
    count(*) FILTER (WHERE r.state_type = 'COMPLETED') AS completed,
    count(*) FILTER (WHERE r.state_type = 'FAILED') AS failed,
    count(*) FILTER (WHERE r.state_type = 'CRASHED') AS crashed,
    count(*) FILTER (WHERE r.state_type = 'CANCELLED') AS cancelled,
    (count(*) FILTER (WHERE r.state_type IN ('FAILED', 'CRASHED')))
        / nullif(count(*) FILTER (WHERE r.state_type IN ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')), 0)
        AS failure_rate,
    quantile_cont(r.seconds, 0.5) AS p50_seconds,
    quantile_cont(r.seconds, 0.95) AS p95_seconds
FROM (
    SELECT
        d.*,
        CAST(make_timestamp(epoch_us(coalesce(d.start_time, fr.expected_start_time, fr.created))) AS DATE) AS day
    FROM flow_run_durations d
    JOIN flow_runs fr ON fr.id = d.flow_run_id
    WHERE d.deployment_id IS NOT NULL
) r
GROUP BY r.deployment_id, r.day;

-- Events per UTC hour and event-name prefix (the name without its last segment:
-- prefect.flow-run.Completed -> prefect.flow-run).
CREATE VIEW event_volume AS
SELECT
    to_timestamp((epoch_us(occurred) // 3600000000) * 3600) AS hour,
    regexp_replace(event, '\.[^.]*$', '') AS event_prefix,
    count(*) AS events
FROM events
GROUP BY ALL;

-- Flow runs that started later than expected, by how much. A run counts as late once it lags by
-- 15 seconds or more — the threshold at which Prefect's server marks a run Late
-- (PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS). Runs still waiting in a Late state count
-- too, with their lag so far.
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
    epoch(coalesce(r.start_time, now()) - r.expected_start_time) AS late_seconds
FROM flow_runs r
LEFT JOIN flows f ON f.id = r.flow_id
LEFT JOIN deployments d ON d.id = r.deployment_id
WHERE r.expected_start_time IS NOT NULL
  AND (epoch(r.start_time - r.expected_start_time) >= 15
       OR (r.start_time IS NULL AND r.state_name = 'Late'));

-- "All events of this flow run / deployment / work pool" goes through event_resources by
-- resource_id (search_events, `events --resource`, serve's related/any_resource filters).
-- Measured on 1M events (3M resource rows, bench/lookup.py's archive): a flow run's events with a
-- fresh read-only open each time (what a flow or the CLI pays) p50 165 ms -> 50 ms, on a warm
-- connection 31 ms -> 3 ms;
-- building it on an existing archive of that size takes ~2.5 s and ~12 MB; writes of 2,000-event
-- batches showed no difference beyond run-to-run noise (11-15k events/s either way).
-- Lookups by event id already use the events primary key. Note: DuckDB refuses DROP COLUMN /
-- ALTER TYPE / RENAME on a table with a secondary index: drop and recreate this one around them.
CREATE INDEX event_resources_resource_id ON event_resources (resource_id);

-- Run states' state_details and state as JSON, not JSONB: the text as the API sent it (its key
-- order), as events' columns are, so `states --json` and the run-history lookups answer byte for
-- byte as on DuckDB (JSONB reorders keys: shorter first). Rows written before keep JSONB's order.
-- Queries still use -> and ->> on them (or cast ::jsonb). Numbered 0003: 0002 is the logs' tables.
ALTER TABLE run_states
    ALTER COLUMN state_details TYPE JSON USING state_details::json,
    ALTER COLUMN state TYPE JSON USING state::json;

-- Events per UTC day they occurred on (DuckDB's 0009 says why): derived from events, kept by the
-- writer in the transaction that inserts them, rebuilt by `copy`, not exported.
CREATE TABLE event_days (
    day DATE PRIMARY KEY,
    events BIGINT NOT NULL
);
INSERT INTO event_days
SELECT (occurred AT TIME ZONE 'UTC')::DATE, count(*) FROM events GROUP BY 1;

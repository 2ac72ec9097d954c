-- Events per UTC day they occurred on: what the overview's event-volume chart reads for whole
-- days, instead of counting every event of the period (10M events: ~160 ms a request, against a
-- few ms for these rows). Derived from events and kept with them: the writer adds a batch's new
-- events to their days in the same transaction that inserts them (first write wins, so a repeat
-- adds nothing); `copy` rebuilds it from the copied events; `export` leaves it out. Filled here
-- from the events an archive already holds.
CREATE TABLE event_days (
    day DATE PRIMARY KEY,
    events BIGINT NOT NULL
);
INSERT INTO event_days
SELECT CAST(make_timestamp(epoch_us(occurred)) AS DATE), count(*) FROM events GROUP BY 1;

-- A quarantined item whose real event (same id) was archived later is resolved: kept verbatim
-- for the record, no longer counted as missing from the archive.
ALTER TABLE quarantine ADD COLUMN resolved TIMESTAMPTZ;

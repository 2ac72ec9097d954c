"""The read side for code inside flows: lookups by id (archive first, then the live API), searches, run histories.

events (one event by id, with the live-API fallback) → trigger (the event that started a flow
run); search (searches over the archive); runs (states and results). Every read goes through the
archive's reader (archiver.storage.reader), so nothing here holds SQL or imports a database
driver; and no ingest machinery, no web stack, no HTTP client until the live API is asked.
"""

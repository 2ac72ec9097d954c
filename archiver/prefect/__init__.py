"""The Prefect API as the archiver sees it: the HTTP client, the event model, event filters, results.

Nothing here knows about the archive: ingest reads through it, lookups fall back to it.
"""

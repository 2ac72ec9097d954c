"""The Prefect API as the archiver sees it: the HTTP client, the event model, event filters, results.

Also Prefect's own facts every layer shares: the kinds of run and their names (runs), Prefect
Cloud's 14-day cap on one query (spans), profiles and PREFECT_HOME (profiles).
Nothing here knows about the archive: ingest reads through it, lookups fall back to it.
"""

"""Ingest: from the Prefect API into the archive.

windows (pure planning) → fetch (count-by and pages) → sync (commit in order with the mark), then
reconcile/verify (compare counts, read again what differs), gaps (what the server trimmed first),
metadata (runs, deployments, flows, work pools) and states (run state records). Each pass returns a
frozen result that a run adds up into its report (report); a StopToken asks passes to stop
(stop). Every write goes through a storage writer (archiver.storage); nothing here holds SQL.
"""

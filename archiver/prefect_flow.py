"""The archiver as a Prefect flow, for users who want Prefect itself to schedule the sync.

    python -m archiver.prefect_flow                    # serve it: a sync every 5 minutes
    prefect deploy archiver/prefect_flow.py:archive_events -n archiver --interval 300 -p POOL

The flow runs the same sync as `prefect-archiver sync`, under the same writer lock, with settings
from the flow run's environment (PREFECT_API_URL is set there already; ARCHIVER_DB and
ARCHIVER_CONFIG as for the CLI). The archiver does not need Prefect: it is imported only here, and
by results.py when installed (to read pickled results).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from archiver.config import load_settings
from archiver.ingest.sync import sync
from archiver.prefect.client import client_for
from archiver.storage import open_archive


@flow(name="archive-prefect-events", retries=0)
def archive_events(db: str | None = None) -> dict[str, Any]:
    """Archive every event not archived yet; returns the sync's report as `sync --json` prints it."""
    settings = load_settings({"archive.path": db})
    logger = get_run_logger()
    archive = open_archive(settings.archive_url)
    with archive.writer_lock(settings.lock_timeout), client_for(settings) as client:
        writer = archive.writer(settings.read_timeout)
        try:
            report = sync(settings, client, writer)
        finally:
            writer.close()
    logger.info(
        "archived %d new events (%d fetched) in %d windows; high-water mark %s",
        report.inserted, report.fetched, report.windows, report.high_water_mark,
    )
    return report.as_json()


if __name__ == "__main__":
    import os

    # limit=1: a run due while the last one still syncs waits instead of failing on the lock.
    archive_events.serve(name="prefect-archiver", interval=int(os.environ.get("ARCHIVER_EVERY_SECONDS", "300")), limit=1)

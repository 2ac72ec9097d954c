"""Run metadata: refresh the flow runs, task runs, deployments, flows and work pools events name.

Prefect's run filters have no "updated since" cursor, but every state change emits an event naming
the run and its flow, deployment and work pool. So each batch of new events queues the objects it
names (ArchiveWriter.write_batch, same transaction), and a refresh reads exactly the queued ones from
`POST /<collection>/filter` with an id filter, a batch at a time, saving each batch as it comes:
an interrupted refresh resumes where it stopped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from archiver.errors import ApiAuthError, ApiNotFound, ApiRejected
from archiver.ingest.stop import NEVER, StopToken
from archiver.prefect.client import PrefectClient
from archiver.prefect.runs import FLOW_RUN, TASK_RUN
from archiver.storage.writer import ArchiveWriter

log = logging.getLogger("archiver.ingest.metadata")

# Refreshed in this order, so a run's flow and deployment are there when the run is.
COLLECTIONS = ("work_pools", "flows", "deployments", FLOW_RUN.collection, TASK_RUN.collection)

# The server's default for PREFECT_SERVER_API_DEFAULT_LIMIT; a server set lower says so (HTTP 422)
# and we follow it.
BATCH = 200

# The server writes task runs from their events a little after they are emitted, so an object not
# found yet is asked for again on the next refreshes before we stop looking for it.
GIVE_UP_AFTER = 5

_LIMIT = re.compile(r"less than or equal to (\d+)")


@dataclass(frozen=True)
class RefreshReport:
    """Objects read again and saved, per collection."""

    refreshed: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.refreshed.values())


def refresh_objects(
    client: PrefectClient, archive: ArchiveWriter, *, batch: int = BATCH, stop: StopToken = NEVER
) -> RefreshReport:
    """Read every queued object from the API and save it; objects the server lacks keep their last version."""
    refreshed: dict[str, int] = {}
    for collection in COLLECTIONS:
        after: str | None = None
        while not stop.stopped:
            ids = archive.queued_objects(collection, after, batch)
            if not ids:
                break
            try:
                objects, batch = _read(client, collection, ids, batch)
            except (ApiRejected, ApiNotFound, ApiAuthError) as exc:
                # One collection the server won't serve (an older server, a token without access to
                # it) must not fail every sync: the queue keeps the ids for the next one.
                log.warning("could not refresh %s (%s); they stay queued for the next sync", collection, exc)
                break
            ids = ids[:batch]
            refreshed[collection] = refreshed.get(collection, 0) + len(objects)
            given_up = archive.save_objects(collection, ids, objects, GIVE_UP_AFTER)
            if given_up:
                log.warning(
                    "%d %s named by archived events were not found on the server after %d tries; "
                    "the archive keeps what it had of them", given_up, collection, GIVE_UP_AFTER,
                )
            after = ids[-1]
    return RefreshReport(refreshed)


def _read(client: PrefectClient, collection: str, ids: list[str], batch: int) -> tuple[list[dict[str, Any]], int]:
    """One batch of objects, shrinking the batch to the server's limit if it refuses ours."""
    while True:
        try:
            return client.read_objects(collection, ids[:batch]), batch
        except ApiRejected as exc:
            limit = _LIMIT.search(str(exc))
            if not limit or int(limit.group(1)) >= batch or int(limit.group(1)) < 1:
                raise
            batch = int(limit.group(1))
            log.info("the server reads at most %d %s per request; using that", batch, collection)

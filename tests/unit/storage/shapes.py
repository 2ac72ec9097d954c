"""Prefect-shaped events for the storage contract suite: what /events/filter returns, as JSON."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.prefect.events import format_timestamp

# Any instant well inside what every backend stores; events are placed relative to it.
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)


def event_json(occurred: datetime, *, event_id: uuid.UUID | None = None, name: str = "prefect.flow-run.Completed",
                flow_run: uuid.UUID | None = None, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A flow run's state-change event, naming its flow and a tag, as the API returns it."""
    run = flow_run or uuid.uuid4()
    flow = uuid.UUID(int=run.int ^ 1)
    return {
        "id": str(event_id or uuid.uuid4()),
        "occurred": format_timestamp(occurred),
        "event": name,
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run}", "prefect.resource.name": "calm-otter",
                     "prefect.state-type": name.rsplit(".", 1)[-1].upper(), "prefect.state-name": name.rsplit(".", 1)[-1],
                     "prefect.state-timestamp": format_timestamp(occurred)},
        "related": [{"prefect.resource.id": f"prefect.flow.{flow}", "prefect.resource.role": "flow",
                     "prefect.resource.name": "etl"},
                    {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"}],
        "payload": payload if payload is not None else {"intended": {"from": "RUNNING", "to": "COMPLETED"}},
        "received": format_timestamp(occurred + timedelta(milliseconds=40)),
        "follows": None,
    }

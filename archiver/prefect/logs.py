"""Prefect's logs and artifacts API: the request bodies, parsing what it returns, and keyset paging of logs.

POST /logs/filter sorts only by timestamp (LogSort: TIMESTAMP_ASC/DESC, no tie-breaker) and pages
by offset, and `timestamp.after_` is inclusive (server/schemas/filters.py, LogFilterTimestamp). So
a run's logs are read by keyset on the timestamp: each page asks for logs at or after the last
timestamp seen, and the ids already seen at that instant are dropped. A page that is all one
instant cannot move the key: the rest of that instant is read by offset *within that instant
only* (timestamp after_ = before_ = it), then the key moves one microsecond past it (Prefect
keeps microseconds). Offset chains therefore never span more than one instant's logs.
POST /artifacts/filter has no time filter; a run has few artifacts, so offset paging is fine.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.storage.logs import Artifact, Log

log = logging.getLogger("archiver.prefect.logs")

# One microsecond: the finest step of a log timestamp as Prefect stores it.
TICK = timedelta(microseconds=1)
# Python's level names, as `prefect flow-run logs` shows them (logging.getLevelName).
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def level_name(level: int) -> str:
    """The level as Python's logging names it (e.g. 20 -> INFO; Level 25 for one it does not name)."""
    return logging.getLevelName(level)


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def parse_log(raw: Any) -> Log | None:
    """A Log from one item of /logs/filter, or None (logged) when it has no id, level or timestamp."""
    try:
        return Log(
            id=uuid.UUID(str(raw["id"])), flow_run_id=_uuid(raw.get("flow_run_id")),
            task_run_id=_uuid(raw.get("task_run_id")), level=int(raw["level"]), name=raw.get("name"),
            timestamp=parse_timestamp(raw["timestamp"]),
            message=raw["message"] if isinstance(raw.get("message"), str) else None, raw=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("left out a log the server sent that cannot be archived (%s: %s)", type(exc).__name__, exc)
        return None


def parse_artifact(raw: Any) -> Artifact | None:
    """An Artifact from one item of /artifacts/filter, or None (logged) when it cannot be archived."""
    try:
        return Artifact(
            id=uuid.UUID(str(raw["id"])), key=raw.get("key"), type=raw.get("type"), description=raw.get("description"),
            data=raw.get("data"), flow_run_id=_uuid(raw.get("flow_run_id")), task_run_id=_uuid(raw.get("task_run_id")),
            created=parse_timestamp(raw["created"]) if raw.get("created") else None,
            updated=parse_timestamp(raw["updated"]) if raw.get("updated") else None, raw=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("left out an artifact the server sent that cannot be archived (%s: %s)", type(exc).__name__, exc)
        return None


def run_filter(run_kind: str, run_id: str) -> dict[str, Any]:
    """The `logs` / `artifacts` filter of one run: a flow run's (its task runs' included) or a task run's."""
    return {f"{run_kind}_id": {"any_": [run_id]}}


def logs_body(run_kind: str, run_id: str, *, after: datetime | None, before: datetime | None, level_ge: int | None,
              limit: int, offset: int = 0) -> dict[str, Any]:
    """The body of POST /logs/filter for one run's logs in timestamp order; every bound sent explicitly."""
    logs: dict[str, Any] = run_filter(run_kind, run_id)
    timestamp = {}
    if after is not None:
        timestamp["after_"] = format_timestamp(after)
    if before is not None:
        timestamp["before_"] = format_timestamp(before)
    if timestamp:
        logs["timestamp"] = timestamp
    if level_ge is not None:
        logs["level"] = {"ge_": level_ge}
    return {"logs": logs, "sort": "TIMESTAMP_ASC", "limit": limit, "offset": offset}


@dataclass(frozen=True)
class LogPage:
    """One page of a run's logs, new to this walk, and where a walk resumed after it starts."""

    logs: list[Log]
    resume_after: datetime | None  # the next walk (or the next page) asks for logs at or after this
    requests: int = 1


def walk_logs(read: Any, run_kind: str, run_id: str, after: datetime | None, level_ge: int | None,
              limit: int) -> Iterator[LogPage]:
    """Every log of one run at or after `after`, page by page, by timestamp keyset (module docstring).

    `read(body) -> list` sends one POST /logs/filter. Each page yielded says where to resume if
    the walk stops after it (its progress mark); a walk resumed there reads some logs of that
    instant again, which the archive knows by id.
    """
    seen_at: set[str] = set()  # ids already yielded at the key's instant
    key = after
    while True:
        items = read(logs_body(run_kind, run_id, after=key, before=None, level_ge=level_ge, limit=limit))
        logs = [g for g in (parse_log(i) for i in items) if g is not None]
        if items and not logs and len(items) >= limit:
            # A full page of which nothing could be archived gives no key to move on by: stop here
            # (logged by parse_log); the next sync tries again from the same mark.
            yield LogPage([], key)
            return
        if len(items) >= limit and logs and logs[0].timestamp == logs[-1].timestamp:
            # A whole page at one instant: the key cannot move. Read the rest of that instant by
            # offset within it alone, then step past it.
            instant = logs[0].timestamp
            page, requests = list(logs), 1
            offset = len(items)
            while True:
                more = read(logs_body(run_kind, run_id, after=instant, before=instant, level_ge=level_ge,
                                      limit=limit, offset=offset))
                requests += 1
                page += [g for g in (parse_log(i) for i in more) if g is not None]
                offset += len(more)
                if len(more) < limit:
                    break
            fresh = [g for g in page if str(g.id) not in seen_at] if key == instant else page
            yield LogPage(fresh, instant + TICK, requests)
            key, seen_at = instant + TICK, set()
            continue
        fresh = [g for g in logs if not (g.timestamp == key and str(g.id) in seen_at)]
        if len(items) < limit:
            yield LogPage(fresh, logs[-1].timestamp if logs else key)
            return
        last = logs[-1].timestamp if logs else key
        seen_at = ({str(g.id) for g in logs if g.timestamp == last} | (seen_at if last == key else set()))
        yield LogPage(fresh, last)
        key = last


def artifacts_body(run_kind: str, run_id: str, limit: int, offset: int) -> dict[str, Any]:
    """The body of POST /artifacts/filter for one run's artifacts, in id order (stable under offset paging)."""
    return {"artifacts": run_filter(run_kind, run_id), "sort": "ID_DESC", "limit": limit, "offset": offset}

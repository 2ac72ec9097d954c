"""`serve`'s POST /logs/filter and POST /artifacts/filter: Prefect's log and artifact reads over the archive.

The bodies are Prefect's (server/api/logs.py and artifacts.py: `logs` a LogFilter, `artifacts`
an ArtifactFilter, `sort`, `limit`, `offset`) and so are the answers: a JSON list of the Log or
Artifact objects as the server sent them when they were archived. Differences, on purpose:
unknown keys are refused (422) instead of ignored; logs are ordered by timestamp and then id (a
tie-breaker Prefect lacks); `text.query` matches a substring of the message, any case (not
Prefect's search syntax); artifacts sort by `created` (ID_DESC, Prefect's default, is taken as
newest first: ids are random); `limit` may go up to serve's --max-limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, HTTPException

from archiver.errors import ArchiveError, BadInput, QueryTimeout
from archiver.prefect.events import parse_timestamp
from archiver.storage.logs import ArtifactQuery, LogQuery
from archiver.storage.reader import ArchiveReader

_WHOLE_BODY = Body(None)
_LOG_KEYS = {"level": {"ge_", "le_"}, "timestamp": {"before_", "after_"}, "flow_run_id": {"any_"},
             "task_run_id": {"any_", "is_null_"}, "text": {"query"}}
_ARTIFACT_KEYS = {"id": {"any_"}, "key": {"any_"}, "flow_run_id": {"any_"}, "task_run_id": {"any_"}, "type": {"any_"}}
_ARTIFACT_SORTS = {"ID_DESC": True, "CREATED_DESC": True, "UPDATED_DESC": True}


def _checked(body: Any, allowed: set[str], filter_key: str, filter_keys: dict[str, set[str]]) -> dict[str, Any]:
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise BadInput(f'the body must be an object: {{"{filter_key}": {{...}}, "limit": 200}}')
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadInput(f"unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(allowed))})")
    criteria = body.get(filter_key) or {}
    if not isinstance(criteria, dict):
        raise BadInput(f'"{filter_key}" must be an object')
    for name, value in criteria.items():
        if name not in filter_keys:
            raise BadInput(f"unknown {filter_key} filter {name!r} (known: {', '.join(filter_keys)})")
        if value is not None and (not isinstance(value, dict) or set(value) - filter_keys[name]):
            raise BadInput(f"{filter_key}.{name} takes {', '.join(sorted(filter_keys[name]))}")
    return body


def _page(body: dict[str, Any], max_limit: int) -> tuple[int, int]:
    limit, offset = body.get("limit", 200), body.get("offset", 0)
    for name, value, top in (("limit", limit, max_limit), ("offset", offset, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (top is not None and value > top):
            raise BadInput(f"{name} must be a whole number from 0{f' to {top}' if top else ''}")
    return limit, offset


def _ids(value: Any, name: str) -> tuple[uuid.UUID, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadInput(f"{name} must be a list of ids")
    try:
        return tuple(uuid.UUID(str(v)) for v in value)
    except ValueError:
        raise BadInput(f"{name} must be a list of UUIDs") from None


def _texts(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{name} must be a list of strings")
    return tuple(value)


def _level(value: Any, name: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadInput(f"{name} must be a whole number")
    return value


def log_query(body: Any, max_limit: int) -> LogQuery:
    """The LogQuery a POST /logs/filter body asks for; BadInput (422) for what Prefect would refuse, or we cannot answer."""
    body = _checked(body, {"logs", "limit", "offset", "sort"}, "logs", _LOG_KEYS)
    limit, offset = _page(body, max_limit)
    sort = body.get("sort", "TIMESTAMP_ASC")
    if sort not in ("TIMESTAMP_ASC", "TIMESTAMP_DESC"):
        raise BadInput("sort must be TIMESTAMP_ASC or TIMESTAMP_DESC")
    f = body.get("logs") or {}
    level, stamp = f.get("level") or {}, f.get("timestamp") or {}
    task, text = f.get("task_run_id") or {}, f.get("text") or {}
    try:
        after = parse_timestamp(stamp["after_"]) if stamp.get("after_") else None
        before = parse_timestamp(stamp["before_"]) if stamp.get("before_") else None
    except ValueError as exc:
        raise BadInput(f"logs.timestamp: {exc}") from None
    is_null = task.get("is_null_")
    if is_null is not None and not isinstance(is_null, bool):
        raise BadInput("logs.task_run_id.is_null_ must be true or false")
    query = text.get("query")
    if query is not None and not isinstance(query, str):
        raise BadInput("logs.text.query must be a string")
    return LogQuery(flow_run_ids=_ids((f.get("flow_run_id") or {}).get("any_"), "logs.flow_run_id.any_"),
                    task_run_ids=_ids(task.get("any_"), "logs.task_run_id.any_"), task_run_is_null=is_null,
                    level_ge=_level(level.get("ge_"), "logs.level.ge_"), level_le=_level(level.get("le_"), "logs.level.le_"),
                    after=after, before=before, text=query or None, descending=sort == "TIMESTAMP_DESC",
                    limit=limit, offset=offset)


def artifact_query(body: Any, max_limit: int) -> ArtifactQuery:
    """The ArtifactQuery a POST /artifacts/filter body asks for (BadInput, 422, for anything else)."""
    body = _checked(body, {"artifacts", "limit", "offset", "sort"}, "artifacts", _ARTIFACT_KEYS)
    limit, offset = _page(body, max_limit)
    sort = body.get("sort", "ID_DESC")
    if sort not in _ARTIFACT_SORTS:
        raise BadInput(f"sort must be one of {', '.join(_ARTIFACT_SORTS)} (newest first by created)")
    f = body.get("artifacts") or {}

    def any_of(name: str) -> Any:
        return (f.get(name) or {}).get("any_")

    return ArtifactQuery(ids=_ids(any_of("id"), "artifacts.id.any_"),
                         flow_run_ids=_ids(any_of("flow_run_id"), "artifacts.flow_run_id.any_"),
                         task_run_ids=_ids(any_of("task_run_id"), "artifacts.task_run_id.any_"),
                         keys=_texts(any_of("key"), "artifacts.key.any_"), types=_texts(any_of("type"), "artifacts.type.any_"),
                         newest_first=_ARTIFACT_SORTS[sort], limit=limit, offset=offset)


def logs_router(reader: ArchiveReader, max_limit: int, answering: Callable[[], Any]) -> APIRouter:
    """The two routes; `answering()` is the context a request reads the archive in (serve's session with its time limit)."""
    router = APIRouter()

    def read(what: Callable[[ArchiveReader], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            with answering() as session:
                return what(session)
        except QueryTimeout as exc:
            raise HTTPException(status_code=504, detail=f"{exc}: narrow the filter (a run's id, a time range)") from None
        except ArchiveError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None

    @router.post("/logs/filter")
    def read_logs(body: Any = _WHOLE_BODY) -> list[dict[str, Any]]:
        query = log_query(body, max_limit)
        return read(lambda session: session.logs(query))

    @router.post("/artifacts/filter")
    def read_artifacts(body: Any = _WHOLE_BODY) -> list[dict[str, Any]]:
        query = artifact_query(body, max_limit)
        return read(lambda session: session.artifacts(query))

    return router

"""Run metadata's typed columns, cast in Python the way DuckDB's TRY_CAST casts them.

DuckDB's writer fills each typed column with TRY_CAST(o->>'field' AS TYPE) (duckdb/runs.py): a
value that is not of the type leaves the column NULL, and the whole object is kept in `object`.
PostgreSQL's casts raise instead, so the values are cast here before the insert, from the text
`->>` would give (a JSON string's contents, any other value's JSON text) with DuckDB's rules for
what it accepts: integers round from decimals and must fit 32 bits; booleans are true/false,
t/f, yes/no, 1/0 in any case; times are ISO 8601 within the years 1-9999 (no offset: UTC).

PostgreSQL cannot store the NUL character in TEXT or JSONB (DuckDB can): jsonb_text and text
values replace it with U+FFFD, so one odd flow-run parameter cannot fail every refresh.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from archiver.prefect.events import compact_json

Path = tuple[str, ...]

# What flow runs and task runs both have (Prefect's shared run fields): column -> (path, type).
_RUN_COLUMNS: dict[str, tuple[Path, str]] = {
    "name": (("name",), "text"), "state_type": (("state_type",), "text"), "state_name": (("state_name",), "text"),
    "state_timestamp": (("state", "timestamp"), "timestamptz"), "run_count": (("run_count",), "integer"),
    "expected_start_time": (("expected_start_time",), "timestamptz"), "start_time": (("start_time",), "timestamptz"),
    "end_time": (("end_time",), "timestamptz"), "total_run_time": (("total_run_time",), "double"),
    "tags": (("tags",), "text[]"),
}
# The same columns as duckdb/runs.py's OBJECT_COLUMNS, table by table.
OBJECT_COLUMNS: dict[str, dict[str, tuple[Path, str]]] = {
    "flows": {"name": (("name",), "text"), "tags": (("tags",), "text[]")},
    "deployments": {
        "name": (("name",), "text"), "flow_id": (("flow_id",), "uuid"), "work_pool_name": (("work_pool_name",), "text"),
        "work_queue_name": (("work_queue_name",), "text"), "paused": (("paused",), "boolean"),
        "status": (("status",), "text"), "tags": (("tags",), "text[]"),
    },
    "work_pools": {
        "name": (("name",), "text"), "type": (("type",), "text"), "status": (("status",), "text"),
        "is_paused": (("is_paused",), "boolean"),
    },
    "flow_runs": {
        **_RUN_COLUMNS,
        "flow_id": (("flow_id",), "uuid"), "deployment_id": (("deployment_id",), "uuid"),
        "work_pool_id": (("work_pool_id",), "uuid"), "work_pool_name": (("work_pool_name",), "text"),
        "work_queue_name": (("work_queue_name",), "text"), "parent_task_run_id": (("parent_task_run_id",), "uuid"),
        "parameters": (("parameters",), "jsonb"),
    },
    "task_runs": {**_RUN_COLUMNS, "flow_run_id": (("flow_run_id",), "uuid"), "task_key": (("task_key",), "text")},
}
# Every column's type as its array is sent (id as text: PostgreSQL casts it, and an id that is no
# UUID fails the refresh as it does in DuckDB, whose (o->>'id')::UUID is no TRY_CAST).
COLUMN_TYPES: dict[str, dict[str, str]] = {
    kind: {"id": "text", **{c: t for c, (_, t) in columns.items()}, "created": "timestamptz",
           "updated": "timestamptz", "object": "jsonb"}
    for kind, columns in OBJECT_COLUMNS.items()
}

_MISSING = object()
_INT32 = (-(2**31), 2**31 - 1)
_TRUE, _FALSE = {"true", "t", "yes", "1"}, {"false", "f", "no", "0"}


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def text_value(text: str | None) -> str | None:
    """A string as a TEXT column holds it (NUL as U+FFFD), for states' and blocks' text fields."""
    return _no_nul(text) if text else text


def jsonb_text(value: Any) -> str:
    """JSON text PostgreSQL's JSONB accepts: \\u0000 (which JSONB refuses) as U+FFFD."""
    text = compact_json(value)
    # json.dumps escapes NUL as \u0000; an escaped backslash before "u0000" is rarer still and
    # harmless to touch: either way the text stays valid JSON.
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def _at(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _text(value: Any) -> str | None:
    """What DuckDB's ->> gives for a JSON value: a string's contents, any other value's JSON text."""
    if value is None or value is _MISSING:
        return None
    return _no_nul(value if isinstance(value, str) else compact_json(value))


def _integer(text: str) -> int | None:
    stripped = text.strip()
    try:
        number = int(stripped)
    except ValueError:
        try:
            decimal = float(stripped)
        except ValueError:
            return None
        if not math.isfinite(decimal):
            return None
        number = math.floor(decimal + 0.5) if decimal >= 0 else -math.floor(-decimal + 0.5)  # half away from zero
    return number if _INT32[0] <= number <= _INT32[1] else None


def _double(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _boolean(text: str) -> bool | None:
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _uuid(text: str) -> str | None:
    if text != text.strip() or text.lower().startswith("urn:"):
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _timestamptz(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    try:
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except OverflowError:  # in range only before the offset is applied (year 1 or 9999)
        return None


def _text_list(value: Any) -> str | None:
    """A TEXT[] column's value, as the JSON array of strings runs.py unpacks (None: not a list)."""
    if not isinstance(value, list):
        return None
    return jsonb_text([None if item is None else item if isinstance(item, str) else compact_json(item)
                       for item in value])


def cast(value: Any, sql_type: str) -> Any:
    """One value as its column stores it, or None when it is not of the type (TRY_CAST)."""
    if sql_type == "jsonb":
        return None if value is _MISSING else jsonb_text(value)
    if sql_type == "text[]":
        return _text_list(value)
    text = _text(value)
    if text is None or sql_type == "text":
        return text
    caster = {"integer": _integer, "double": _double, "boolean": _boolean, "uuid": _uuid, "timestamptz": _timestamptz}
    return caster[sql_type](text)


def column_values(kind: str, objects: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One list per column (id, the typed columns, created, updated, object), each in the objects' order."""
    paths: dict[str, tuple[Path, str]] = {"id": (("id",), "text"), **OBJECT_COLUMNS[kind],
                                           "created": (("created",), "timestamptz"),
                                           "updated": (("updated",), "timestamptz")}
    columns = [[cast(_at(o, path), sql_type) for o in objects] for path, sql_type in paths.values()]
    columns.append([jsonb_text(o) for o in objects])
    return columns

"""Prefect events as plain data: parsing what the API sends, and rendering it back the same way."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from archiver.errors import BadInput

UTC = timezone.utc

# Prefect's count-by buckets are aligned to this instant (server/events/counting.py).
PIVOT = datetime(2024, 4, 1, tzinfo=UTC)
# Before any Prefect event: the lower bound of a query that means "since the beginning".
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Events in one EventPage: the server's default and its maximum for `limit`, refusing larger pages
# with 422 (INTERACTIVE_PAGE_SIZE, server/events/storage); `serve` answers with the same default.
PAGE_SIZE = 50

# Seconds in each unit a duration or an age may be written in ("90s", "5m", "3d ago").
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Event:
    """One event as the API returned it, with timestamps normalised to UTC."""

    id: uuid.UUID
    occurred: datetime
    event: str
    resource: dict[str, Any]
    related: list[dict[str, Any]]
    payload: dict[str, Any]
    received: datetime | None
    follows: uuid.UUID | None
    content_hash: str
    size: int  # characters of its JSON text: what bounds a write batch by bytes (ingest.BATCH_BYTES)

    @property
    def resource_id(self) -> str:
        return str(self.resource["prefect.resource.id"])


@dataclass(frozen=True)
class Malformed:
    """Something in a page that is not an event we can archive; kept in quarantine, not dropped."""

    raw: str
    reason: str
    event_id: str | None

    @property
    def raw_hash(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8")).hexdigest()


class TimestampOutOfRange(ValueError):
    """A valid ISO 8601 time that has no UTC datetime (before year 1 or after 9999 once in UTC)."""


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already.

    ValueError (like any unparseable timestamp) when the instant has no UTC datetime: Python's
    datetime stops at years 1 and 9999, so 9999-12-31T23:59:59-01:00 or 0001-01-01T00:00:00+01:00
    overflow once converted (OverflowError from astimezone, which callers parsing input never expect).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise TimestampOutOfRange(f"{value.isoformat()} is outside the years 1 to 9999 once converted to UTC") from None


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO 8601 timestamp as Prefect sends it (e.g. 2026-11-23T17:23:56.945423Z)."""
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    return to_utc(datetime.fromisoformat(value))


def format_timestamp(value: datetime) -> str:
    """Render like Prefect's API does: UTC, 'Z', microseconds only when not zero."""
    return to_utc(value).isoformat().replace("+00:00", "Z")


# Built once: json.dumps with any argument makes a new JSONEncoder per call, a third of the cost
# of serializing a typical event's resource or related list (the archive writes three per event).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
# What an Event's content_hash is taken over: _COMPACT_SORTED, refusing NaN and Infinity.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """JSON text without spaces, Unicode kept: in the server's key order as the archive stores it,
    or with `sort_keys` as a content hash and the quarantine compare it."""
    return (_COMPACT_SORTED if sort_keys else _COMPACT).encode(value)


def _unarchivable(raw: Any) -> str | None:
    """Why `raw` cannot be written as JSON text faithfully, or None when it can.

    Python's json reads what no JSON column can hold: NaN and Infinity (DuckDB's JSON keeps them,
    then serve cannot answer them) and lone surrogates (`"\\ud800"`, not encodable as UTF-8).
    """
    try:
        json.dumps(raw, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return "text that is not valid Unicode (a lone surrogate)"
    except ValueError:
        return "a number JSON cannot carry (NaN or Infinity)"
    except RecursionError:
        return "nested too deeply"
    return None


def _raw_text(raw: Any) -> str:
    """The item as text for the quarantine, even when it holds what _unarchivable refuses."""
    if isinstance(raw, str):
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        text = compact_json(raw, sort_keys=True)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(raw, separators=(",", ":"), sort_keys=True)  # \\u escapes: the same JSON value
    except RecursionError:
        return repr(raw)[:100_000]


def _archivable_text(raw: Any) -> tuple[str, bytes, str | None]:
    """(the item's canonical JSON text, that text in UTF-8, why it cannot be archived faithfully or None).

    Serialized and encoded once on the common path: the quarantine keeps the text, an Event
    hashes its bytes (content_hash). Only an item the fast path refuses is looked at again, to say why.
    """
    if isinstance(raw, str):
        text = _raw_text(raw)
        return text, text.encode("utf-8", "backslashreplace"), None
    try:
        text = _CANONICAL.encode(raw)
        return text, text.encode("utf-8"), None  # raises on a lone surrogate
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        text = _raw_text(raw)
        return text, text.encode("utf-8", "backslashreplace"), _unarchivable(raw)  # never raises: parse_event must not


def parse_event(raw: Any) -> Event | Malformed:
    """Validate one item of an EventPage; anything we could not archive faithfully is Malformed.

    Never raises: an exception here would stop every later sync at the same page.
    """
    raw_text, raw_bytes, problem = _archivable_text(raw)
    if not isinstance(raw, dict):
        return Malformed(raw_text, "not a JSON object", None)
    event_id = raw.get("id")

    def bad(reason: str) -> Malformed:
        shown_id = _raw_text(str(event_id))[:200] if event_id is not None else None
        return Malformed(raw_text, reason, shown_id)

    try:
        parsed_id = uuid.UUID(str(event_id)) if event_id is not None else None
    except ValueError:
        return bad(f"id {event_id!r} is not a UUID")
    if parsed_id is None:
        return bad("missing id")
    if raw.get("occurred") is None:
        return bad("missing occurred")
    try:
        occurred = parse_timestamp(raw["occurred"])
        received = parse_timestamp(raw["received"]) if raw.get("received") is not None else None
    except ValueError as exc:
        return bad(f"bad timestamp: {exc}")
    name = raw.get("event")
    if not isinstance(name, str) or not name:
        return bad("missing event name")
    resource = raw.get("resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("prefect.resource.id"), str):
        return bad("missing resource['prefect.resource.id']")
    related = raw.get("related") if raw.get("related") is not None else []
    if not isinstance(related, list) or not all(isinstance(r, dict) for r in related):
        return bad("related is not a list of resources")
    payload = raw.get("payload") if raw.get("payload") is not None else {}
    if not isinstance(payload, dict):
        return bad("payload is not an object")
    try:
        follows = uuid.UUID(str(raw["follows"])) if raw.get("follows") is not None else None
    except ValueError:
        return bad(f"follows {raw['follows']!r} is not a UUID")
    if problem:
        return bad(f"holds {problem}")
    return Event(
        id=parsed_id,
        occurred=occurred,
        event=name,
        resource=resource,
        related=related,
        payload=payload,
        received=received,
        follows=follows,
        content_hash=hashlib.sha256(raw_bytes).hexdigest()[:32],
        size=len(raw_text),
    )


# The events columns event_to_api takes, in its order.
EVENT_COLUMNS = "id, occurred, event, resource, related, payload, received, follows"


def event_to_api(
    id: uuid.UUID | str,
    occurred: datetime,
    event: str,
    resource: Any,
    related: Any,
    payload: Any,
    received: datetime | None,
    follows: uuid.UUID | str | None,
) -> dict[str, Any]:
    """An archived row as the JSON object Prefect's API returns for the same event."""

    def loads(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return {
        "occurred": format_timestamp(occurred),
        "event": event,
        "resource": loads(resource),
        "related": loads(related),
        "payload": loads(payload),
        "id": str(id),
        "follows": str(follows) if follows is not None else None,
        "received": format_timestamp(received) if received is not None else None,
    }


def parse_prefect_id(value: str | uuid.UUID, kind: str) -> uuid.UUID:
    """A Prefect id (`kind`: "event", "run", "flow run") typed by a user or passed to a flow;
    BadInput when it is not a UUID."""
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        article = "an" if kind[0] in "aeiou" else "a"
        raise BadInput(f"{value!r} is not {article} {kind} id: Prefect {kind} ids are UUIDs") from None


def parse_event_id(value: str | uuid.UUID) -> uuid.UUID:
    """An event id typed by a user or passed to a flow; BadInput when it is not a UUID."""
    return parse_prefect_id(value, "event")


def uuid7_time(event_id: uuid.UUID) -> datetime | None:
    """The creation time a UUIDv7 carries in its first 48 bits, or None for other ids.

    Prefect's client makes UUIDv7 ids (3.4.2+). 3.4.1 used another layout, so a decoded time
    outside a plausible range is treated as no time at all.
    """
    if event_id.version != 7:
        return None
    moment = datetime.fromtimestamp((event_id.int >> 80) / 1000, tz=UTC)
    if not datetime(2023, 1, 1, tzinfo=UTC) <= moment <= datetime.now(UTC) + timedelta(days=2):
        return None
    return moment


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*(?:ago)?\s*$")


def parse_when(value: str, *, name: str = "time", now: datetime | None = None) -> datetime:
    """A point in time: 'now', an ISO date or datetime (naive means UTC), or '2h' / '3d' ago."""
    now = now or datetime.now(UTC)
    text = value.strip()
    if text.lower() == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        try:
            return now - timedelta(seconds=float(match.group(1)) * DURATION_UNITS[match.group(2)])
        except OverflowError:  # timedelta or the subtraction: an age reaching back past year 1
            raise BadInput(f"{name} {value!r} reaches back before the year 1: use a smaller age") from None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{name} {value!r} is not a time: use an ISO 8601 date or datetime "
            "(2026-11-01, 2026-11-01T12:00:00Z), 'now', or an age such as 2h or 3d"
        ) from None
    try:
        return to_utc(parsed)
    except ValueError as exc:
        raise BadInput(f"{name} {value!r} is not a time Prefect can hold: {exc}") from None

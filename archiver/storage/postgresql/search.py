"""Prefect's EventFilter as PostgreSQL SQL, and keyset pages of the events it matches.

The same conditions as storage/duckdb/search.py, in PostgreSQL's words: `->>` for a label (a
resource's labels are its top-level keys), jsonb_array_elements for the related resources,
`FILTER (WHERE …)`, and psycopg's named parameters (%(pN)s), which a text repeated in one
statement reuses as DuckDB's $n are reused. Ties on `occurred` are broken by id (uuid compares
by its bytes in both databases, as Python's UUID does), so the next page starts after the last
(occurred, id) returned and neither skips nor repeats events while a sync commits between pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from archiver.prefect.events import event_to_api, to_utc
from archiver.prefect.filters import EventFilter, Labels, RelatedMatch, ResourceMatch
from archiver.storage.reader import Page, Position

_LIKE = str.maketrans({"*": "%", "?": "_", "\\": "\\\\", "%": "\\%", "_": "\\_"})

# The columns event_to_api takes, the JSON ones as their stored text (json.loads keeps its key order).
EVENT_COLUMNS = ("e.id, e.occurred, e.event, e.resource::text, e.related::text, e.payload::text, "
                 "e.received, e.follows")


class _Sql:
    """WHERE clauses with named parameters (a condition written twice binds its values once)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def p(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    def any_of(self, column: str, values: Sequence[str], op: str) -> str:
        if op == "prefix":
            return "(" + " OR ".join(f"starts_with({column}, {self.p(v)})" for v in values) + ")"
        return f"{column} = ANY({self.p(list(values))}::text[])"

    def like(self, column: str, pattern: str) -> str:
        # Prefect's _is_like_match_expression: * and ? are wildcards, a leading ! negates. Exact
        # values and a single trailing * become = and starts_with, as in DuckDB's search.
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!")
        if not any(w in body for w in "*?"):
            expr = f"{column} = {self.p(body)}"
        elif body.endswith("*") and not any(w in body[:-1] for w in "*?"):
            expr = f"starts_with({column}, {self.p(body[:-1])})"
        else:
            expr = f"{column} LIKE {self.p(body.translate(_LIKE))} ESCAPE '\\'"
        return f"NOT ({expr})" if negated else expr

    def labels(self, labels: Labels, id_column: str, role_column: str | None, json_column: str) -> list[str]:
        clauses = []
        for label, values in labels.items():
            if not values:
                clauses.append("false")  # Prefect: an empty list of values matches nothing
                continue
            if label == "prefect.resource.id":
                column = id_column
            elif label == "prefect.resource.role" and role_column:
                clauses.append(f"{role_column} = ANY({self.p(list(values))}::text[])")
                continue
            else:
                column = f"({json_column}->>{self.p(label)})"
            exact = [v for v in values if not v.startswith("!") and not any(w in v for w in "*?")]
            parts = [self.like(column, v) for v in values if v not in exact]
            if exact:
                parts.append(f"{column} = ANY({self.p(exact)}::text[])")
            clauses.append("(" + " OR ".join(parts) + ")")
        return clauses


def _needs_json(labels: Labels | None) -> bool:
    return bool(labels) and any(k not in ("prefect.resource.id", "prefect.resource.role") for k in labels or {})


def _related_conditions(sql: _Sql, related: RelatedMatch) -> list[str]:
    """What one resource row (r) must satisfy for a `related` filter; [] when it filters nothing."""
    conditions = []
    if related.ids:
        conditions.append(sql.any_of("r.resource_id", related.ids, "in"))
    if related.roles:
        conditions.append(sql.any_of("r.role", related.roles, "in"))
    if related.resources_in_roles:
        conditions.append("(" + " OR ".join(
            f"(r.resource_id = {sql.p(rid)} AND r.role = {sql.p(role)})" for rid, role in related.resources_in_roles
        ) + ")")
    if related.labels is not None:
        conditions += sql.labels(related.labels, "r.resource_id", "r.role", "r.value")
    if conditions and not related.roles:
        # Prefect: a related filter without a role never matches the event's own resource (role '').
        conditions.append("r.role <> ''")
    return conditions


def _any_resource_conditions(sql: _Sql, match: ResourceMatch) -> list[str]:
    conditions = []
    if match.ids:
        conditions.append(sql.any_of("r.resource_id", match.ids, "in"))
    if match.id_prefixes:
        conditions.append(sql.any_of("r.resource_id", match.id_prefixes, "prefix"))
    if match.labels is not None:
        conditions += sql.labels(match.labels, "r.resource_id", "r.role", "r.value")
    return conditions


# An event's resources as rows (resource_id, role, value): the primary with role '', then the
# related ones, from the event's JSON (for labels other than id and role, which event_resources
# lacks). `::jsonb` is free on a JSONB column and parses a JSON one once per event.
_JSON_RESOURCES = (
    "(SELECT e.resource_id AS resource_id, '' AS role, e.resource::jsonb AS value UNION ALL "
    "SELECT v->>'prefect.resource.id', coalesce(v->>'prefect.resource.role', ''), v "
    "FROM jsonb_array_elements(e.related::jsonb) v) r"
)


def _resources_clause(sql: _Sql, f: EventFilter) -> str | None:
    """Every `related` and `any_resource` filter as one condition on the event's resources.

    As in DuckDB's search: each filter must be satisfied by one of the event's resources; they
    share one pass over the resources (grouped by event, `bool_or` per filter) instead of one
    correlated EXISTS each.
    """
    matches = [c for c in (_related_conditions(sql, r) for r in f.related) if c]
    matches += [c for c in (_any_resource_conditions(sql, m) for m in f.any_resource) if c]
    if not matches:
        return None
    each = ["(" + " AND ".join(c) + ")" for c in matches]
    where = each[0] if len(each) == 1 else "(" + " OR ".join(each) + ")"
    every = "" if len(each) == 1 else " HAVING " + " AND ".join(f"bool_or({c})" for c in each)
    if any(_needs_json(r.labels) for r in f.related) or any(_needs_json(m.labels) for m in f.any_resource):
        if len(each) == 1:
            return f"EXISTS (SELECT 1 FROM {_JSON_RESOURCES} WHERE {where})"
        return f"coalesce((SELECT {' AND '.join(f'bool_or({c})' for c in each)} FROM {_JSON_RESOURCES} WHERE {where}), false)"
    scope = f"r.occurred BETWEEN {sql.p(f.since)} AND {sql.p(f.until)}"
    return f"e.id IN (SELECT r.event_id FROM event_resources r WHERE {scope} AND {where} GROUP BY r.event_id{every})"


def where_clause(f: EventFilter, sql: _Sql) -> str:
    """The filter as one condition on `events e`, its values added to sql.params."""
    clauses = [f"e.occurred >= {sql.p(f.since)}", f"e.occurred <= {sql.p(f.until)}"]
    if f.prefixes:
        clauses.append(sql.any_of("e.event", f.prefixes, "prefix"))
    clauses += [f"NOT starts_with(e.event, {sql.p(p)})" for p in f.exclude_prefixes]
    if f.names:
        clauses.append(sql.any_of("e.event", f.names, "in"))
    if f.exclude_names:
        clauses.append("NOT " + sql.any_of("e.event", f.exclude_names, "in"))
    if f.ids:
        clauses.append(f"e.id = ANY({sql.p([uuid.UUID(str(i)) for i in f.ids])}::uuid[])")
    if f.resource:
        if f.resource.ids:
            clauses.append(sql.any_of("e.resource_id", f.resource.ids, "in"))
        if f.resource.id_prefixes:
            clauses.append(sql.any_of("e.resource_id", f.resource.id_prefixes, "prefix"))
        if f.resource.labels is not None:
            clauses += sql.labels(f.resource.labels, "e.resource_id", None, "e.resource") or ["true"]
    resources = _resources_clause(sql, f)
    if resources:
        clauses.append(resources)
    return " AND ".join(clauses)


def count_events(conn: psycopg.Connection[Any], f: EventFilter) -> int:
    """How many archived events match the filter."""
    sql = _Sql()
    row = conn.execute(f"SELECT count(*) FROM events e WHERE {where_clause(f, sql)}", sql.params).fetchone()
    return int(row[0]) if row else 0


def _by_one_resource(sql: _Sql, f: EventFilter) -> str | None:
    """The condition on event_resources (r) when the filter is one resource filter and a time range.

    Then a page is the newest (or oldest) resource rows that match, in (occurred, event_id) order —
    event_resources repeats each event's occurred — joined to their events afterwards: a flow's
    events page through its resource rows, instead of fetching every one of its events to sort
    them (1M events, a flow with 5,000: p50 133 ms that way, 40 ms this way, 1.7 ms with an index
    on event_resources (resource_id, occurred, event_id)). None for any other filter.
    """
    if f.names or f.prefixes or f.exclude_names or f.exclude_prefixes or f.ids or f.resource:
        return None
    if any(_needs_json(r.labels) for r in f.related) or any(_needs_json(m.labels) for m in f.any_resource):
        return None
    matches = [c for c in (_related_conditions(sql, r) for r in f.related) if c]
    matches += [c for c in (_any_resource_conditions(sql, m) for m in f.any_resource) if c]
    if len(matches) != 1:
        return None
    return f"r.occurred >= {sql.p(f.since)} AND r.occurred <= {sql.p(f.until)} AND " + " AND ".join(matches[0])


def read_page(
    conn: psycopg.Connection[Any],
    f: EventFilter,
    limit: int,
    after: Position | None = None,
    total: int | None = None,
) -> Page:
    """Up to `limit` events after the keyset position `after`, in the filter's order.

    One query: PostgreSQL walks the events_occurred index in order (an incremental sort breaks
    the ties by id) and fetches only the rows it returns. DuckDB's two steps (the page's ids,
    then its rows by id) measured slower here on 100k events, p50: the newest 50 0.52 ms in one
    query against 1.23 ms in two, by event name 1.13 against 1.48; only a related-resource
    filter gained (6.5 against 5.9 ms) — that case pages through event_resources instead
    (_by_one_resource). `total` is counted when not given (a page token carries the first
    page's count, as Prefect's does).
    """
    sql = _Sql()
    op = ">" if f.order == "ASC" else "<"
    direction = "ASC" if f.order == "ASC" else "DESC"
    order = f"ORDER BY e.occurred {direction}, e.id {direction}"
    resource = _by_one_resource(sql, f)
    if resource is not None:
        if after is not None:
            resource += f" AND (r.occurred, r.event_id) {op} ({sql.p(after[0])}::timestamptz, {sql.p(after[1])}::uuid)"
        # GROUP BY: an event may name the same resource twice (two roles); it is one event.
        query = (f"SELECT {EVENT_COLUMNS} FROM events e JOIN (SELECT r.event_id FROM event_resources r WHERE {resource} "
                 f"GROUP BY r.occurred, r.event_id ORDER BY r.occurred {direction}, r.event_id {direction} "
                 f"LIMIT {sql.p(limit + 1)}) k ON e.id = k.event_id {order}")
    else:
        where = where_clause(f, sql)
        if after is not None:
            where += f" AND (e.occurred, e.id) {op} ({sql.p(after[0])}::timestamptz, {sql.p(after[1])}::uuid)"
        query = f"SELECT {EVENT_COLUMNS} FROM events e WHERE {where} {order} LIMIT {sql.p(limit + 1)}"
    rows = conn.execute(query, sql.params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if total is None:
        total = count_events(conn, f)
    last = (to_utc(rows[-1][1]), uuid.UUID(str(rows[-1][0]))) if more and rows else None
    return Page([event_to_api(*row) for row in rows], total, last)

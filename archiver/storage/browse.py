"""What the web UI asks an archive beyond events: runs, deployments and their health, as plain data.

Both backends answer from the same tables and analytics views (deployment_health,
flow_run_durations) with the same SQL, except where their dialects differ (a Dialect's
fragments: percentiles, seconds between two times, the UTC day of a time). A backend's reader
mixes BrowseReads in and supplies `_browse_rows` (one query, `?` parameters) and `_dialect`;
facet counts need its own filter SQL, so each backend writes `facets` itself.
"""

from __future__ import annotations

import json
import uuid
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from archiver.prefect.events import PIVOT, to_utc

# The archive's tables of run metadata, by the Prefect collection name a page links to.
OBJECT_TABLES = ("flows", "deployments", "work_pools", "flow_runs", "task_runs")
FAILED_TYPES = ("FAILED", "CRASHED")


@dataclass(frozen=True)
class Dialect:
    """The SQL fragments that differ between backends; `{}` is the expression they apply to."""

    object_text: str  # a JSON column as its text
    p50: str
    p95: str
    seconds_between: str  # {0} − {1} in seconds, as a float
    utc_day: str  # the UTC date of a TIMESTAMPTZ


@dataclass(frozen=True)
class Facets:
    """How many events of a search fall on each event name, resource kind and deployment (most first)."""

    names: list[tuple[str, int]]
    resource_kinds: list[tuple[str, int]]
    deployments: list[tuple[str, str | None, int]]  # resource id, the deployment's name when archived, events


@dataclass(frozen=True)
class RunRow:
    """A flow run or task run as a list or a timeline shows it."""

    id: str
    name: str | None
    state_type: str | None
    state_name: str | None
    expected_start_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    message: str | None = None  # its final state's message (failures)
    deployment_id: str | None = None


@dataclass(frozen=True)
class DeploymentDay:
    """One UTC day of a deployment's runs (deployment_health), with its lateness (flow_runs)."""

    day: date
    runs: int
    completed: int
    failed: int  # FAILED and CRASHED
    p50_seconds: float | None
    p95_seconds: float | None
    late_runs: int  # started 15 s or more after they were expected (late_runs' threshold)
    max_late_seconds: float | None


@dataclass(frozen=True)
class DeploymentRank:
    """A deployment's failures over a period, for the overview."""

    deployment_id: str
    name: str | None
    flow_name: str | None
    failed: int
    runs: int


def _time(value: Any) -> datetime | None:
    return to_utc(value) if isinstance(value, datetime) else None


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


_RUN_COLUMNS = "id, name, state_type, state_name, expected_start_time, start_time, end_time"
# Late as late_runs counts it (migrations/*/0003: 15 s, when Prefect's server marks a run Late).
LATE_AFTER_SECONDS = 15


class BrowseReads:
    """The UI's reads, written once for every backend (see the module docstring)."""

    _dialect: Dialect

    @abstractmethod
    def _browse_rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """The rows of one query with `?` parameters, in one read of the store."""

    @abstractmethod
    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        """Archived events per bucket `width` wide (aligned to PIVOT) in [since, until] (the reader's)."""

    def event_volume(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        """bucket_counts' answer, read for whole-day buckets from event_days where it can be.

        The whole UTC days inside [since, until] come from event_days (a row a day, kept by the
        writer); only the partial first and last day are counted from the events themselves, which
        their time order lets both backends read in a few row groups or index pages. On 10M events
        all time went from ~160 ms to a few ms. Narrower buckets, or under two days: bucket_counts.
        """
        day = timedelta(days=1)
        if width < day or width % day or until - since < 2 * day:
            return self.bucket_counts(since, until, width)
        since_day = since.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        first_whole = since_day if since_day == since else since_day + day
        last_day = until.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

        def bucket(moment: datetime) -> datetime:
            return PIVOT + width * ((moment - PIVOT) // width)

        counts: Counter[datetime] = Counter()
        if since < first_whole:
            counts[bucket(since)] += self._count("occurred >= ? AND occurred < ?", [since, first_whole])
        for whole_day, events in self._browse_rows("SELECT day, events FROM event_days WHERE day >= ? AND day < ?",
                                                   [first_whole.date(), last_day.date()]):
            counts[bucket(datetime.combine(whole_day, time(), timezone.utc))] += int(events)
        counts[bucket(last_day)] += self._count("occurred >= ? AND occurred <= ?", [last_day, until])
        return {start: n for start, n in counts.items() if n}

    def _count(self, where: str, params: list[Any]) -> int:
        return int(self._browse_rows(f"SELECT count(*) FROM events WHERE {where}", params)[0][0])

    def archived_object(self, collection: str, object_id: uuid.UUID) -> dict[str, Any] | None:
        """A flow, deployment, work pool, flow run or task run as last archived, or None."""
        if collection not in OBJECT_TABLES:
            raise ValueError(f"{collection!r} is not one of {', '.join(OBJECT_TABLES)}")
        column = self._dialect.object_text.format("object")
        rows = self._browse_rows(f"SELECT {column} FROM {collection} WHERE id = ?", [str(object_id)])
        return json.loads(rows[0][0]) if rows else None

    def event_extent(self) -> tuple[datetime | None, datetime | None]:
        """When the oldest and the newest archived events occurred (None, None for an empty archive)."""
        oldest, newest = self._browse_rows("SELECT min(occurred), max(occurred) FROM events", [])[0]
        return _time(oldest), _time(newest)

    def flow_run_count(self) -> int:
        """How many flow runs the archive holds."""
        return int(self._browse_rows("SELECT count(*) FROM flow_runs", [])[0][0])

    def task_runs(self, flow_run_id: uuid.UUID, limit: int = 500) -> list[RunRow]:
        """The flow run's task runs, in the order they started (or were expected to)."""
        rows = self._browse_rows(
            f"SELECT {_RUN_COLUMNS} FROM task_runs WHERE flow_run_id = ? "
            f"ORDER BY coalesce(start_time, expected_start_time, created), id LIMIT {int(limit)}", [str(flow_run_id)])
        return [_run_row(row) for row in rows]

    def deployment_runs(self, deployment_id: uuid.UUID, limit: int = 20) -> list[RunRow]:
        """The deployment's newest flow runs, by when they were expected (or created)."""
        rows = self._browse_rows(
            f"SELECT {_RUN_COLUMNS}, object->'state'->>'message' FROM flow_runs WHERE deployment_id = ? "
            f"ORDER BY coalesce(expected_start_time, created) DESC, id LIMIT {int(limit)}", [str(deployment_id)])
        return [_run_row(row) for row in rows]

    def recent_failures(self, limit: int = 10) -> list[RunRow]:
        """The newest flow runs that ended Failed or Crashed, with their final state's message."""
        rows = self._browse_rows(
            f"SELECT {_RUN_COLUMNS}, object->'state'->>'message', deployment_id FROM flow_runs "
            f"WHERE state_type IN (?, ?) ORDER BY state_timestamp DESC NULLS LAST, id LIMIT {int(limit)}",
            list(FAILED_TYPES))
        return [_run_row(row) for row in rows]

    def failing_deployments(self, since: date | None, limit: int = 10) -> list[DeploymentRank]:
        """Deployments ranked by failed and crashed runs on the UTC days from `since` (None: all).

        Counted from flow_runs on the day deployment_health gives a run (its start, else its
        expected start, else its creation), not from the view: the view works out percentiles
        for every deployment and day, which a ranking does not need (200k runs: 150 ms against 60).
        """
        day = self._dialect.utc_day.format("coalesce(r.start_time, r.expected_start_time, r.created)")
        where, params = (f"AND {day} >= ?", [since]) if since else ("", [])
        rows = self._browse_rows(
            "SELECT r.deployment_id, min(d.name), min(f.name), "
            "count(*) FILTER (WHERE r.state_type IN ('FAILED', 'CRASHED')) AS failed, count(*) "
            "FROM flow_runs r LEFT JOIN deployments d ON d.id = r.deployment_id LEFT JOIN flows f ON f.id = r.flow_id "
            f"WHERE r.deployment_id IS NOT NULL {where} GROUP BY r.deployment_id "
            "HAVING count(*) FILTER (WHERE r.state_type IN ('FAILED', 'CRASHED')) > 0 "
            f"ORDER BY 4 DESC, 2, 1 LIMIT {int(limit)}", params)
        return [DeploymentRank(str(d), name, flow, int(failed), int(runs)) for d, name, flow, failed, runs in rows]

    def deployment_days(self, deployment_id: uuid.UUID, since: date | None) -> list[DeploymentDay]:
        """The deployment's runs per UTC day from `since` (None: all time), oldest first."""
        d = self._dialect
        late = d.seconds_between.format("start_time", "expected_start_time")
        day_of = d.utc_day.format("expected_start_time")
        since_health, since_late = ("AND day >= ?", "AND expected_start_time >= ?") if since else ("", "")
        health = self._browse_rows(
            "SELECT day, runs, completed, failed + crashed, p50_seconds, p95_seconds FROM deployment_health "
            f"WHERE deployment_id = ? {since_health} ORDER BY day", [str(deployment_id)] + ([since] if since else []))
        # A time, not a date: comparing a TIMESTAMPTZ with a DATE would cut the day in the session's zone.
        midnight = [datetime.combine(since, time(), timezone.utc)] if since else []
        lateness = self._browse_rows(
            f"SELECT {day_of} AS day, count(*) FILTER (WHERE {late} >= {LATE_AFTER_SECONDS}), max({late}) "
            f"FROM flow_runs WHERE deployment_id = ? AND start_time IS NOT NULL AND expected_start_time IS NOT NULL "
            f"{since_late} GROUP BY 1", [str(deployment_id), *midnight])
        late_by_day = {day: (int(n), float(worst) if worst is not None else None) for day, n, worst in lateness}
        return [
            DeploymentDay(day, int(runs), int(completed), int(failed), _float(p50), _float(p95),
                          *late_by_day.get(day, (0, None)))
            for day, runs, completed, failed, p50, p95 in health
        ]

    def deployment_percentiles(self, deployment_id: uuid.UUID, since: datetime | None) -> tuple[float | None, float | None]:
        """p50 and p95 of the deployment's run durations (flow_run_durations) started since `since`."""
        d = self._dialect
        where, params = ("AND start_time >= ?", [since]) if since else ("", [])
        rows = self._browse_rows(
            f"SELECT {d.p50.format('seconds')}, {d.p95.format('seconds')} FROM flow_run_durations "
            f"WHERE deployment_id = ? AND seconds IS NOT NULL {where}", [str(deployment_id), *params])
        p50, p95 = rows[0] if rows else (None, None)
        return _float(p50), _float(p95)

    def _named(self, facets: Facets) -> Facets:
        """The facets with each deployment's archived name."""
        prefix = "prefect.deployment."
        names = self.deployment_names([rid.removeprefix(prefix) for rid, _, _ in facets.deployments])
        deployments = [(rid, names.get(rid.removeprefix(prefix)), n) for rid, _, n in facets.deployments]
        return Facets(facets.names, facets.resource_kinds, deployments)

    def deployment_names(self, ids: list[str]) -> dict[str, str]:
        """The archived names of the deployments with these ids (any that are not UUIDs are skipped)."""
        wanted = [str(u) for u in (_uuid_or_none(i) for i in ids) if u is not None]
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = self._browse_rows(f"SELECT id, name FROM deployments WHERE id IN ({marks})", wanted)
        return {str(i): name for i, name in rows}


# A resource id without its last segment: prefect.flow-run.<uuid> -> prefect.flow-run.
_KIND = r"regexp_replace(resource_id, '\.[^.]*$', '')"


def _facet_counts(source: str, since: str, until: str) -> str:
    """The three facets' counts, rows (facet 0/1/2, value, n), of the matches in CTE `source`.

    The deployments join event_resources within the search's time range (their `occurred` is the
    event's), so its zone maps skip the rest of that table.
    """
    return (
        f"SELECT 0 AS facet, event AS value, count(*) AS n FROM {source} GROUP BY 2 "
        f"UNION ALL SELECT 1, {_KIND}, count(*) FROM {source} GROUP BY 2 "
        # An event may name one deployment twice (two related entries): count it once.
        f"UNION ALL SELECT 2, d.resource_id, count(DISTINCT m.id) FROM {source} m JOIN event_resources d ON d.event_id = m.id "
        f"WHERE d.role = 'deployment' AND d.occurred BETWEEN {since} AND {until} GROUP BY 2"
    )


def _ranked(limit: int) -> str:
    return ("SELECT facet, value, n FROM (SELECT *, row_number() OVER (PARTITION BY facet ORDER BY n DESC, value) AS rank "
            f"FROM counted) ranked WHERE rank <= {int(limit)}")


def facets_sql(where: str, since: str, until: str, limit: int) -> str:
    """One query for all three facets of the events `where` (on `events e`) matches, in [since, until].

    The matches are read once (a materialized CTE) and grouped three ways, instead of a query per
    facet each finding them again: on 10M events a deployment's week went from 164 to 66 ms.
    Rows: (facet 0/1/2, value, count), the `limit` commonest of each, most first and ties by value.
    """
    return (
        f"WITH m AS MATERIALIZED (SELECT e.id, e.event, e.resource_id FROM events e WHERE {where}), "
        f"counted AS ({_facet_counts('m', since, until)}) {_ranked(limit)} ORDER BY facet, n DESC, value"
    )


# first_page_sql's rows beside the facets' 0, 1 and 2.
TOTAL_ROW, KEY_ROW = 3, 4


def first_page_sql(where: str, since: str, until: str, order: str, limit: int, facet_limit: int,
                   facets_up_to: int) -> str:
    """A search's first page keys, its count and its facets in one query that finds the matches once.

    With a resource filter each of the three used to find the matches again through
    event_resources. Rows: (TOTAL_ROW, NULL, NULL, count), (KEY_ROW, id text, occurred, position
    on the page) for `limit` keys in `order` (ASC or DESC), and facets_sql's rows (with a NULL
    occurred) when the count is at most `facets_up_to` (none otherwise: larger ones cost too much).
    """
    direction = "ASC" if order == "ASC" else "DESC"
    return (
        f"WITH m AS MATERIALIZED (SELECT e.id, e.occurred, e.event, e.resource_id FROM events e WHERE {where}), "
        "total AS (SELECT count(*) AS n FROM m), "
        f"faceted AS (SELECT * FROM m WHERE (SELECT n FROM total) <= {int(facets_up_to)}), "
        f"counted AS ({_facet_counts('faceted', since, until)}) "
        f"SELECT {TOTAL_ROW} AS facet, NULL AS value, NULL AS occurred, n FROM total "
        f"UNION ALL SELECT {KEY_ROW}, CAST(id AS VARCHAR), occurred, "
        f"row_number() OVER (ORDER BY occurred {direction}, id {direction}) FROM "
        f"(SELECT id, occurred FROM m ORDER BY occurred {direction}, id {direction} LIMIT {int(limit)}) k "
        f"UNION ALL SELECT facet, value, NULL, n FROM ({_ranked(facet_limit)}) f "
        f"ORDER BY 1, CASE WHEN facet = {KEY_ROW} THEN n ELSE -n END, 2"
    )


def facets_of(rows: list[tuple[Any, ...]]) -> Facets:
    """facets_sql's rows as Facets (deployments not yet named)."""
    by_facet: dict[int, list[tuple[str, int]]] = {0: [], 1: [], 2: []}
    for facet, value, n in rows:
        by_facet[int(facet)].append((str(value), int(n)))
    return Facets(by_facet[0], by_facet[1], [(rid, None, n) for rid, n in by_facet[2]])


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _run_row(row: tuple[Any, ...]) -> RunRow:
    run_id, name, state_type, state_name, expected, start, end, *rest = row
    message = rest[0] if rest else None
    deployment = str(rest[1]) if len(rest) > 1 and rest[1] is not None else None
    return RunRow(str(run_id), name, state_type, state_name, _time(expected), _time(start), _time(end), message, deployment)

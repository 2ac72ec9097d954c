"""What each page shows, read from one reader session: plain dicts for the templates, charts included.

Pure apart from the reader calls, so a page's content is testable without a browser; routes.py
maps errors to status pages and renders.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from archiver.errors import BadInput, RunNotFound
from archiver.prefect.events import PIVOT, format_timestamp, parse_timestamp
from archiver.prefect.logs import level_name
from archiver.render_logs import artifact_lines
from archiver.storage.browse import RunRow
from archiver.storage.logs import ArtifactQuery, LogQuery
from archiver.storage.reader import ArchiveReader, RunHistory
from archiver.web.ui import links
from archiver.web.ui.charts import Chart, chart, day_label, hour_label, short_day

# The periods the overview and a deployment page offer, in days (None: all time).
PERIODS: dict[str, int | None] = {"7d": 7, "30d": 30, "90d": 90, "365d": 365, "all": None}
MAX_BUCKETS = 120  # points of the event-volume chart
# A run page shows its first lines (the rest a "more lines" link at a time), and every artifact up to this.
RUN_LOG_LINES, RUN_ARTIFACTS = 200, 200


class NotFound(Exception):
    """The archive holds no such thing (a 404 page)."""


def since_for(period: str, now: datetime) -> datetime | None:
    """The start of a period the pages offer; BadInput for a period they do not."""
    if period not in PERIODS:
        raise BadInput(f"period must be one of {', '.join(PERIODS)}, not {period[:40]!r}")
    days = PERIODS[period]
    return now - timedelta(days=days) if days else None


def _volume(reader: ArchiveReader, since: datetime, until: datetime) -> Chart:
    """Events per hour (a week or less) or per whole day(s), at most MAX_BUCKETS points."""
    span = until - since
    hour, day = timedelta(hours=1), timedelta(days=1)
    width = hour if span <= timedelta(days=7) else day * max(1, -(-span.days // MAX_BUCKETS))
    counts = reader.event_volume(since, until, width)
    first = PIVOT + width * ((since - PIVOT) // width)  # bucket_counts' buckets are aligned to PIVOT
    starts: list[datetime] = []
    moment = first
    while moment <= until and len(starts) <= MAX_BUCKETS + 2:
        starts.append(moment)
        moment += width
    label = hour_label if width < day else day_label
    return chart("Events archived", "events", [label(s) for s in starts],
                 [("events", "s-events", [float(counts.get(s, 0)) for s in starts], True)],
                 notes=[f"one bar per {'hour' if width == hour else 'day' if width == day else f'{width.days} days'} (UTC)"],
                 tick=short_day)


def overview(reader: ArchiveReader, now: datetime, period: str) -> dict[str, Any]:
    since = since_for(period, now)
    status = reader.status(now)
    oldest, newest = reader.event_extent()
    volume_since = since or oldest or now - timedelta(days=1)
    return {
        "status": status, "oldest": oldest, "newest": newest, "runs": reader.flow_run_count(),
        "period": period, "periods": list(PERIODS),
        "volume": _volume(reader, volume_since, now),
        "failing": reader.failing_deployments(since.date() if since else None),
        "failures": reader.recent_failures(10),
    }


def _resource_rows(event: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for role, resource in [("", event.get("resource") or {})] + [
            (r.get("prefect.resource.role", ""), r) for r in event.get("related") or [] if isinstance(r, dict)]:
        rid = str(resource.get("prefect.resource.id", ""))
        labels = {k: v for k, v in resource.items() if k not in ("prefect.resource.id", "prefect.resource.role")}
        rows.append({"role": role or "resource", "id": rid, "url": links.resource_url(rid), "labels": labels,
                     "events_url": links.events_url(any=rid)})
    return rows


def event(found: dict[str, Any]) -> dict[str, Any]:
    occurred = parse_timestamp(found["occurred"])
    return {"event": found, "occurred": occurred, "resources": _resource_rows(found),
            "received": parse_timestamp(found["received"]) if found.get("received") else None}


def _run_object(reader: ArchiveReader, run_id: uuid.UUID) -> tuple[str, dict[str, Any] | None, RunHistory | None]:
    """The run's kind, its archived object and its states (either may be missing, not both)."""
    try:
        history: RunHistory | None = reader.run_history(run_id)
    except RunNotFound:
        history = None
    kind = history.run_kind if history else "flow_run"
    found = reader.archived_object(f"{kind}s", run_id)
    if found is None and history is None:
        raise NotFound(f"no flow run or task run with id {run_id} in the archive")
    return kind, found, history


def _related(reader: ArchiveReader, collection: str, value: Any) -> dict[str, Any] | None:
    try:
        return reader.archived_object(collection, uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def _span(start: datetime | None, end: datetime | None, lo: datetime, hi: datetime) -> tuple[float, float]:
    """A bar's left edge and width in percent of the timeline [lo, hi] (a bar at least 0.5% wide)."""
    total = max((hi - lo).total_seconds(), 1e-6)
    left = ((start or lo) - lo).total_seconds() / total * 100
    width = ((end or hi) - (start or lo)).total_seconds() / total * 100
    return round(max(0.0, min(left, 99.5)), 2), round(max(0.5, min(width, 100 - left)), 2)


def _timeline(items: Sequence[tuple[Any, datetime | None, datetime | None]]) -> list[dict[str, Any]]:
    times = [t for _, start, end in items for t in (start, end) if t is not None]
    if not times:
        return []
    lo, hi = min(times), max(times)
    return [{"item": item, "x": _span(start, end, lo, hi)[0], "w": _span(start, end, lo, hi)[1]}
            for item, start, end in items]


def log_lines(reader: ArchiveReader, run_id: uuid.UUID, kind: str, after: tuple[datetime, uuid.UUID] | None = None,
              limit: int | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` (RUN_LOG_LINES) of the run's log lines after the keyset position `after` (oldest first), and the
    position to link the next lines from ("timestamp~id"), None when these are the last.

    A flow run's lines are its own and its task runs' (flow_run_id), a task run's its own, as
    `prefect-archiver logs` gives them. One query of limit + 1 lines: the run page used to read
    every line through iter_run_logs (2,000 on the bench's run) to show its first 1,000.
    """
    limit = limit or RUN_LOG_LINES
    lines = []
    if kind == "flow_run":
        lines = reader.logs(LogQuery(flow_run_ids=(run_id,), limit=limit + 1, after_key=after), whole=False)
    if not lines:  # a task run's, or a run the archive knows only by its logs (as iter_run_logs looks)
        lines = reader.logs(LogQuery(task_run_ids=(run_id,), limit=limit + 1, after_key=after), whole=False)
    more = len(lines) > limit
    lines = lines[:limit]
    shown = [{**line, "level_name": level_name(int(line["level"])).strip()} for line in lines]
    last = lines[-1] if more and lines else None
    return shown, f"{format_timestamp(last['timestamp'])}~{last['id']}" if last else None


def parse_log_position(text: str) -> tuple[datetime, uuid.UUID]:
    """A "more lines" link's position; BadInput when it is not one."""
    at, sep, last = text.partition("~")
    try:
        if sep:
            return parse_timestamp(at), uuid.UUID(last)
    except (ValueError, BadInput):
        pass
    raise BadInput("after is not a position from a more-lines link: start again from the run's page")


def _logs(reader: ArchiveReader, run_id: uuid.UUID, kind: str) -> dict[str, Any]:
    """The run's first RUN_LOG_LINES log lines and every artifact, with how many the archive holds."""
    counts = reader.run_log_counts(run_id)
    lines, more = log_lines(reader, run_id, kind)
    artifacts: list[dict[str, Any]] = []
    for query in (ArtifactQuery(flow_run_ids=(run_id,), limit=RUN_ARTIFACTS),
                  ArtifactQuery(task_run_ids=(run_id,), limit=RUN_ARTIFACTS)):
        artifacts += [a for a in reader.artifacts(query) if a not in artifacts]
    return {
        "log_count": counts.logs, "artifact_count": counts.artifacts, "logs": lines, "logs_after": more,
        "artifacts": [{"artifact": a, "text": "\n".join(artifact_lines(a))} for a in artifacts[:RUN_ARTIFACTS]],
    }


def run(reader: ArchiveReader, run_id: uuid.UUID) -> dict[str, Any]:
    kind, found, history = _run_object(reader, run_id)
    obj = found or {}
    states = history.states if history else []
    tasks: list[RunRow] = reader.task_runs(run_id) if kind == "flow_run" else []
    state_spans = [(s, s.timestamp, states[i + 1].timestamp if i + 1 < len(states) else s.timestamp)
                   for i, s in enumerate(states)]
    times = [s.timestamp for s in states]
    final = history.final if history else None
    return {
        "kind": kind, "run_id": str(run_id), "run": obj, "name": obj.get("name") or (history.run_name if history else None),
        "flow": _related(reader, "flows", obj.get("flow_id")),
        "deployment": _related(reader, "deployments", obj.get("deployment_id")),
        "parent": obj.get("flow_run_id") if kind == "task_run" else None,
        "states": states, "state_timeline": _timeline(state_spans), "archived_until": history.archived_until if history else None,
        "tasks": tasks, "task_timeline": _timeline([(t, t.start_time, t.end_time) for t in tasks]),
        "result": final.result if final else None, "final": final,
        "first": min(times) if times else None, "last": max(times) if times else None,
        **_logs(reader, run_id, kind),
    }


def run_logs(reader: ArchiveReader, run_id: uuid.UUID, after: str) -> dict[str, Any]:
    """A run's log lines after a "more lines" link's position, RUN_LOG_LINES at a time."""
    position = parse_log_position(after)
    try:
        history: RunHistory | None = reader.run_history(run_id)
    except RunNotFound:
        history = None
    kind = history.run_kind if history else "flow_run"
    lines, more = log_lines(reader, run_id, kind, position)
    return {"kind": kind, "run_id": str(run_id), "name": history.run_name if history else None, "after": position[0],
            "log_count": reader.run_log_counts(run_id).logs, "logs": lines, "logs_after": more}


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def deployment(reader: ArchiveReader, deployment_id: uuid.UUID, now: datetime, period: str) -> dict[str, Any]:
    since = since_for(period, now)
    found = reader.archived_object("deployments", deployment_id)
    days = reader.deployment_days(deployment_id, since.date() if since else None)
    if found is None and not days:
        raise NotFound(f"no deployment with id {deployment_id} in the archive (nor any run of one)")
    first = since.date() if since else (days[0].day if days else now.date())
    axis = _days(first, now.date())
    by_day = {d.day: d for d in days}
    labels = [d.isoformat() for d in axis]

    def values(attr: str) -> list[float | None]:
        return [(float(getattr(by_day[d], attr)) if getattr(by_day[d], attr) is not None else None)
                if d in by_day else None for d in axis]

    p50, p95 = reader.deployment_percentiles(deployment_id, since)
    return {
        "deployment": found or {"id": str(deployment_id), "name": None},
        "deployment_id": str(deployment_id),
        "flow": _related(reader, "flows", (found or {}).get("flow_id")),
        "period": period, "periods": list(PERIODS), "p50": p50, "p95": p95,
        "runs_total": sum(d.runs for d in days), "failed_total": sum(d.failed for d in days),
        "late_total": sum(d.late_runs for d in days),
        "durations": chart("Duration per day (wall clock, start to end)", "s", labels,
                           [("p50", "s-p50", values("p50_seconds"), False), ("p95", "s-p95", values("p95_seconds"), False)],
                           tick=short_day),
        "failures": chart("Runs and failures per day", "runs", labels,
                          [("runs", "s-runs", values("runs"), True), ("failed or crashed", "s-failed", values("failed"), True)],
                          tick=short_day),
        "lateness": chart("Lateness per day: the latest start after its expected time", "s", labels,
                          [("latest start", "s-late", values("max_late_seconds"), True)],
                          notes=["a run counts as late from 15 s, when Prefect's server marks it Late"], tick=short_day),
        "recent": reader.deployment_runs(deployment_id, 20),
    }

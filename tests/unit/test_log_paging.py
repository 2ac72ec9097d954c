"""Paging a run's logs by timestamp keyset (archiver.prefect.logs.walk_logs) against an in-memory server."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.prefect.logs import walk_logs

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
RUN = str(uuid.uuid4())


class FakeLogs:
    """POST /logs/filter as Prefect answers it: timestamp order with ties in no particular (but
    repeatable) order, after_/before_ inclusive, offset and limit."""

    def __init__(self, timestamps: list[datetime], seed: int = 7) -> None:
        self.logs = [{"id": str(uuid.uuid4()), "timestamp": format_timestamp(t), "level": 20, "message": f"m{i}",
                      "name": "prefect.flow_runs", "flow_run_id": RUN, "task_run_id": None}
                     for i, t in enumerate(timestamps)]
        random.Random(seed).shuffle(self.logs)  # ties come back in storage order, not id order
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        self.bodies.append(body)
        window = body["logs"].get("timestamp", {})
        after = parse_timestamp(window["after_"]) if "after_" in window else None
        before = parse_timestamp(window["before_"]) if "before_" in window else None
        rows = [g for g in self.logs if (after is None or parse_timestamp(g["timestamp"]) >= after)
                and (before is None or parse_timestamp(g["timestamp"]) <= before)]
        rows.sort(key=lambda g: parse_timestamp(g["timestamp"]))  # stable: ties keep storage order
        return rows[body["offset"]:body["offset"] + body["limit"]]


def walk(server: FakeLogs, after: datetime | None = None, limit: int = 5) -> list[str]:
    return [str(g.id) for page in walk_logs(server, "flow_run", RUN, after, None, limit) for g in page.logs]


def test_every_log_once_when_ties_straddle_pages():
    stamps = [T0 + timedelta(seconds=i // 3) for i in range(17)]  # threes at one instant, pages of 5
    server = FakeLogs(stamps)
    ids = walk(server)
    assert sorted(ids) == sorted(g["id"] for g in server.logs) and len(ids) == len(set(ids))
    assert all(b["offset"] == 0 for b in server.bodies)  # no offset chain at all


def test_an_instant_with_more_logs_than_a_page_is_read_by_offset_within_it_alone():
    stamps = [T0] * 2 + [T0 + timedelta(seconds=1)] * 12 + [T0 + timedelta(seconds=2)] * 3
    server = FakeLogs(stamps)
    ids = walk(server)
    assert sorted(ids) == sorted(g["id"] for g in server.logs) and len(ids) == len(set(ids))
    offsets = [b for b in server.bodies if b["offset"]]
    assert offsets and all(b["logs"]["timestamp"]["after_"] == b["logs"]["timestamp"]["before_"] for b in offsets)


def test_a_walk_resumed_from_any_page_mark_misses_nothing():
    stamps = [T0 + timedelta(seconds=i // 4) for i in range(9)] + [T0 + timedelta(seconds=5)] * 11
    server = FakeLogs(stamps)
    everything = set(walk(server))
    for page in walk_logs(server, "flow_run", RUN, None, None, 5):
        done = {str(g.id) for p in walk_logs(server, "flow_run", RUN, None, None, 5) for g in p.logs
                if p.resume_after is not None and g.timestamp < page.resume_after}  # what a kill after `page` keeps
        resumed = set(walk(server, page.resume_after))
        assert done | resumed == everything


def test_the_level_and_every_bound_are_sent_explicitly():
    server = FakeLogs([T0])
    list(walk_logs(server, "task_run", RUN, T0, 20, 5))
    assert server.bodies == [{"logs": {"task_run_id": {"any_": [RUN]}, "timestamp": {"after_": format_timestamp(T0)},
                                       "level": {"ge_": 20}}, "sort": "TIMESTAMP_ASC", "limit": 5, "offset": 0}]

"""Workloads posted to the real server: several days of history with the hard cases in it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from archiver.ingest.windows import TICK
from tests.prefect_server import make_event, post_events, wait_until_stored

UTC = timezone.utc


@dataclass
class History:
    since: datetime
    until: datetime  # inclusive, like Prefect's occurred filter
    ids: set[str] = field(default_factory=set)
    tie_instant: datetime | None = None
    big_payload_id: str = ""
    unicode_id: str = ""
    many_related_id: str = ""
    related_count: int = 40

    @property
    def end(self) -> datetime:
        return self.until + TICK


def seed_history(api_url: str, spread: int = 1500, days: int = 3, start_days_ago: int = 6) -> History:
    """Post `spread` events over `days` days plus ties, big payloads, unicode and wide `related`."""
    rng = random.Random(20261123)
    since = (datetime.now(UTC) - timedelta(days=start_days_ago)).replace(minute=0, second=0, microsecond=0)
    history = History(since=since, until=since + timedelta(days=days) - TICK)
    span = (days * 86400) - 7200
    events = []
    for i in range(spread):
        occurred = since + timedelta(seconds=rng.uniform(3600, span), microseconds=rng.randrange(1_000_000))
        flow_run = f"prefect.flow-run.{rng.randrange(200):08d}-0000-4000-8000-000000000000"
        events.append(
            make_event(
                occurred,
                event=rng.choice(["prefect.flow-run.Running", "prefect.flow-run.Completed", "acme.order.placed"]),
                resource_id=flow_run,
                related=[(f"prefect.flow.{rng.randrange(5)}", "flow"), ("prefect.tag.nightly", "tag")],
                payload={"n": i},
            )
        )
    # More than one page at a single instant, exactly one page, and one more than a page.
    history.tie_instant = since + timedelta(days=1, hours=3, minutes=7, seconds=11, microseconds=123456)
    for count, instant in ((120, history.tie_instant),
                           (50, since + timedelta(hours=30, seconds=5)),
                           (51, since + timedelta(hours=40, seconds=9, microseconds=7))):
        events += [make_event(instant, event="acme.burst", payload={"i": i}) for i in range(count)]
    # A dense minute spread over its seconds: forces drilling down to seconds.
    minute = since + timedelta(hours=50, minutes=3)
    events += [make_event(minute + timedelta(milliseconds=200 * i), event="acme.dense") for i in range(300)]
    big = make_event(since + timedelta(hours=20), event="acme.big", payload={"blob": "x" * 600_000})
    uni = make_event(
        since + timedelta(hours=21, microseconds=1),
        event="acme.ünïcödé.事件",
        resource_extra={"prefect.resource.name": "café ☕ — 東京"},
        payload={"text": "emoji 🚀, RTL שלום, nul-free \u2028 line sep", "nested": {"ключ": ["значение", 1.5, None]}},
    )
    wide = make_event(
        since + timedelta(hours=22),
        event="acme.wide",
        related=[(f"acme.thing.{i}", f"role-{i % 7}") for i in range(history.related_count)],
    )
    events += [big, uni, wide]
    history.big_payload_id, history.unicode_id, history.many_related_id = big["id"], uni["id"], wide["id"]
    history.ids = {e["id"] for e in events}
    post_events(api_url, events)
    wait_until_stored(api_url, history.since, history.until, len(events), timeout=120)
    return history

"""The harness itself must be right before it can judge the archiver."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from tests.prefect_server import (
    DEMO_FLOWS,
    PrefectServer,
    make_event,
    post_events,
    run_flows_script,
    server_event_ids,
    server_events,
    wait_until_quiet,
    wait_until_stored,
)


def test_oracle_returns_every_posted_event_including_ties(prefect_server: PrefectServer) -> None:
    """Ordering has no tie-breaker, so >50 events at one instant must still all come back."""
    api = prefect_server.api_url
    # A back-dated stretch no other test writes to, so counts are exact.
    base = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=timezone.utc)
    tie = base + timedelta(minutes=30)
    events = [make_event(tie, event="test.harness.tie", payload={"i": i}) for i in range(120)]
    events += [
        make_event(base + timedelta(seconds=13 * i, microseconds=i), payload={"i": i})
        for i in range(177)
    ]
    events.append(make_event(base + timedelta(minutes=2), payload={"blob": "x" * 600_000}))
    events.append(
        make_event(
            base + timedelta(minutes=3),
            resource_extra={"prefect.resource.name": "Zürich ☃ 東京 🚀"},
            payload={"text": "naïve café 🦆"},
        )
    )
    events.append(
        make_event(
            base + timedelta(minutes=4),
            related=[(f"prefect.tag.t{i}", "tag") for i in range(30)],
        )
    )
    since, until = base - timedelta(hours=1), base + timedelta(hours=2)

    post_events(api, events)
    wait_until_stored(api, since, until, len(events))

    assert server_event_ids(api, since, until) == {e["id"] for e in events}
    # Both ends of the occurred window are inclusive: [tie, tie] is exactly the tie.
    assert server_event_ids(api, tie, tie) == {e["id"] for e in events[:120]}
    stored = {e["id"]: e for e in server_events(api, since, until)}
    for sent in events:
        got = stored[sent["id"]]
        for key in ("event", "resource", "related", "payload"):
            assert got[key] == sent[key], (key, sent["id"])


def test_demo_flows_produce_flow_run_events(prefect_server: PrefectServer) -> None:
    """DEMO_FLOWS must yield real orchestration events: states, a retry and a failure."""
    api = prefect_server.api_url
    since = datetime.now(timezone.utc) - timedelta(seconds=5)

    result = run_flows_script(api, DEMO_FLOWS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEMO_FLOWS_OK" in result.stdout

    until = datetime.now(timezone.utc) + timedelta(minutes=1)
    wait_until_quiet(api, since, until)
    events = server_events(api, since, until)
    names = Counter(e["event"] for e in events)
    assert names["prefect.flow-run.Completed"] >= 1, names
    failed_flows = {
        r.get("prefect.resource.name")
        for e in events
        if e["event"] == "prefect.flow-run.Failed"
        for r in e["related"]
        if r["prefect.resource.role"] == "flow"
    }
    assert "archiver-demo-failing" in failed_flows, names
    assert names["prefect.task-run.Retrying"] >= 1, names
    assert names["prefect.task-run.Completed"] >= 4, names

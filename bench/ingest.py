"""Backfill speed: N events from a local Prefect server into a fresh archive, against a ceiling.

    python bench/ingest.py [--events 20000] [--days 3] [--concurrency 4] [--api-url URL]

Starts a real Prefect server on 127.0.0.1 (unless --api-url is given), posts N events spread over
--days days (paced: the server's queue drops a fast burst), then:
1. runs `prefect-archiver sync` in a child process over that range into a fresh archive and prints
   events/s, pages/s and the child's peak RSS;
2. reads the same range with a raw concurrent loop that stores nothing — the same count-by planned
   windows, httpx and a thread pool, no parsing, no DuckDB — and prints its events/s: the ceiling;
3. prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.client import PrefectClient  # noqa: E402
from archiver.fetch import Planner  # noqa: E402
from archiver.models import format_timestamp  # noqa: E402
from tests.prefect_server import PrefectServer, make_event, post_events, server_count, wait_until_stored  # noqa: E402

UTC = timezone.utc


def seed(api_url: str, events: int, days: int, per_second: float) -> tuple[datetime, datetime]:
    rng = random.Random(1)
    since = (datetime.now(UTC) - timedelta(days=days + 2)).replace(minute=0, second=0, microsecond=0)
    until = since + timedelta(days=days)
    if server_count(api_url, since, until) >= events:
        return since, until  # already seeded (--api-url against a server used before)
    batch = [
        make_event(
            since + timedelta(seconds=rng.uniform(0, days * 86400 - 1)),
            event=rng.choice(["prefect.flow-run.Running", "prefect.flow-run.Completed", "prefect.task-run.Completed"]),
            resource_id=f"prefect.flow-run.{rng.randrange(10_000)}",
            related=[(f"prefect.flow.{rng.randrange(50)}", "flow"), (f"prefect.deployment.{rng.randrange(20)}", "deployment")],
            payload={"i": i, "note": "x" * rng.randrange(50, 2000)},
        )
        for i in range(events)
    ]
    started = time.monotonic()
    # Back-pressure: the server's in-memory queue (10,000 messages) drops what overflows it, so
    # post a chunk, then wait until storage has nearly caught up before posting the next.
    chunk = 1000
    for offset in range(0, events, chunk):
        post_events(api_url, batch[offset:offset + chunk], per_second=per_second)
        while server_count(api_url, since, until) < offset + chunk - 2 * chunk:
            time.sleep(0.5)
    wait_until_stored(api_url, since, until, events, timeout=300)
    print(f"seeded {events:,} events over {days} days in {time.monotonic() - started:.1f}s", flush=True)
    return since, until


def archiver_backfill(api_url: str, since: datetime, until: datetime, concurrency: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    config = home / "archiver.toml"
    config.write_text(f'[ingest]\nconcurrency = {concurrency}\nretention = "3650d"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update(PREFECT_API_URL=api_url, ARCHIVER_DB=str(home / "archive.duckdb"), ARCHIVER_CONFIG=str(config))
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "archiver", "sync", "--json",
         "--since", format_timestamp(since), "--until", format_timestamp(until)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"sync failed: {err}")
    report = json.loads(out)
    report["wall"] = wall
    report["peak_rss_mb"] = usage.ru_maxrss / 1024
    report["archive_mb"] = (home / "archive.duckdb").stat().st_size / 2**20
    return report


def ceiling(api_url: str, since: datetime, until: datetime, concurrency: int) -> tuple[int, int, float]:
    """The same windows, fetched as fast as httpx allows, stored nowhere."""
    started = time.monotonic()
    with PrefectClient(api_url) as planner_client:
        windows = list(Planner(planner_client, since, until).windows())
    http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=60)

    def read(window) -> tuple[int, int]:
        body = {"filter": {"occurred": window.occurred_filter(), "order": "ASC"}, "limit": 50}
        page = http.post("events/filter", json=body).json()
        count, pages = len(page["events"]), 1
        while page.get("next_page"):
            token = httpx.URL(page["next_page"]).params["page-token"]
            page = http.get("events/filter/next", params={"page-token": token}).json()
            count, pages = count + len(page["events"]), pages + 1
        return count, pages

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(read, windows))
    http.close()
    return sum(c for c, _ in results), sum(p for _, p in results), time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--per-second", type=float, default=300, help="posting pace while seeding")
    parser.add_argument("--api-url", help="use this server instead of starting one")
    args = parser.parse_args()

    server = None if args.api_url else PrefectServer().start()
    api_url = args.api_url or server.api_url
    try:
        since, until = seed(api_url, args.events, args.days, args.per_second)
        report = archiver_backfill(api_url, since, until, args.concurrency)
        raw_events, raw_pages, raw_seconds = ceiling(api_url, since, until, args.concurrency)
    finally:
        if server:
            server.stop()

    events_s = report["fetched"] / report["seconds"]
    ceiling_s = raw_events / raw_seconds
    print(f"archiver: {report['inserted']:,} events archived in {report['seconds']:.2f}s of sync "
          f"({report['wall']:.2f}s wall with process start): {events_s:,.0f} events/s, "
          f"{report['pages'] / report['seconds']:,.1f} pages/s ({report['pages']} pages, {report['counts']} count-by "
          f"requests, {report['windows']} windows), peak RSS {report['peak_rss_mb']:.0f} MB, "
          f"archive {report['archive_mb']:.1f} MB")
    print(f"ceiling:  {raw_events:,} events read in {raw_seconds:.2f}s with nothing stored: "
          f"{ceiling_s:,.0f} events/s, {raw_pages / raw_seconds:,.1f} pages/s")
    print(f"ratio:    archiver / ceiling = {events_s / ceiling_s:.2f}")


if __name__ == "__main__":
    main()

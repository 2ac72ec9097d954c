"""How long the web UI's pages take on a large archive: per-page p50 / p95 of whole requests.

    python bench/ui.py                                  # 10M events, 200k flow runs (about 3 GB of disk)
    python bench/ui.py --events 1000000 --flow-runs 20000 --db /tmp/ui-small.duckdb

The archive is bench/analytics.py's (flow runs over 90 days from 2026-08-01 across 200
deployments, their state events, task-run events and custom events), plus the event_resources
rows a sync writes beside each event (the primary resource and every related one), which the
events page's filters and a run's events read, and run logs and artifacts: --logs-per-run lines
for every flow run, and for the run page's run 2,000 lines (the page shows its first 200) and
five artifacts. An archive made by an older version (the default --db from before logs) is
brought to the current schema first, as any sync would (the migrations fill event_days from its
events; the time is printed), and given the logs if it has none. Each page is requested through serve's own app
(FastAPI's TestClient: routing, every read, template rendering; no network), --repeat times after
one warm-up request; figures are wall-clock milliseconds, and the median CPU milliseconds of
a request (this process, every thread: DuckDB's included), which another load on the machine
inflates far less than it inflates wall-clock time. The default --db is kept: run again
without --rebuild to time the pages only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archiver.config import Settings  # noqa: E402
from archiver.storage.duckdb.connect import NO_EXTENSIONS  # noqa: E402
from archiver.storage.duckdb.writer import DuckDBWriter  # noqa: E402
from bench.analytics import build  # noqa: E402

# The resources of each event as a sync records them (storage/duckdb/writer.py): role '' for the primary.
RESOURCES = """
INSERT INTO event_resources SELECT id, occurred, resource_id, '' FROM events;
INSERT INTO event_resources
SELECT e.id, e.occurred, json_extract_string(j.value, '$."prefect.resource.id"'),
       coalesce(json_extract_string(j.value, '$."prefect.resource.role"'), '')
FROM events e, json_each(e.related) j;
"""


def add_resources(path: Path) -> None:
    started = time.perf_counter()
    with duckdb.connect(str(path), config=dict(NO_EXTENSIONS)) as conn:
        conn.execute(RESOURCES)
        conn.execute("CHECKPOINT")
        rows = conn.execute("SELECT count(*) FROM event_resources").fetchone()[0]  # type: ignore[index]
    print(f"added {rows:,} event_resources rows in {time.perf_counter() - started:.0f}s")


# Logs as the harvest stores them (storage/duckdb/logs.py): LINE_COLUMNS plus the whole API object.
LOGS = """
INSERT INTO logs
SELECT uuid() AS id, r.id, NULL, CASE WHEN i % 10 = 9 THEN 40 ELSE 20 END, 'prefect.flow_runs',
       coalesce(r.start_time, r.expected_start_time) + to_microseconds(i * 250000), 'step ' || i || ' of ' || r.name,
       json_object('flow_run_id', r.id::VARCHAR, 'level', 20, 'message', 'step ' || i || ' of ' || r.name), now()
FROM flow_runs r, range($per_run) t(i) $where
"""
ARTIFACTS = """
INSERT INTO artifacts
SELECT u, 'report-' || i, 'markdown', 'the run''s report ' || i, to_json('# Report ' || i), $run::UUID, NULL, now(), now(),
       json_object('id', u::VARCHAR, 'key', 'report-' || i, 'type', 'markdown', 'description', 'the run''s report ' || i,
                   'data', '# Report ' || i, 'flow_run_id', $run), now()
FROM (SELECT uuid() AS u, i FROM range(5) t(i))
"""


def upgrade(path: Path, run: str, per_run: int) -> None:
    """Bring an archive made by an older version to the current schema; give it logs if it has none."""
    started = time.perf_counter()
    DuckDBWriter(path).close()  # the real migrations, as a sync would apply them
    print(f"opened with the current schema in {time.perf_counter() - started:.1f}s")
    with duckdb.connect(str(path), config=dict(NO_EXTENSIONS)) as conn:
        if conn.execute("SELECT count(*) FROM logs").fetchone()[0]:  # type: ignore[index]
            return
        started = time.perf_counter()
        conn.execute(LOGS.replace("$per_run", str(per_run)).replace("$where", ""))
        conn.execute(LOGS.replace("$per_run", "2000").replace("$where", f"WHERE r.id = '{run}' AND i >= {per_run}"))
        conn.execute(ARTIFACTS.replace("$run", f"'{run}'"))
        conn.execute("CHECKPOINT")
        lines = conn.execute("SELECT count(*) FROM logs").fetchone()[0]  # type: ignore[index]
    print(f"added {lines:,} log lines and 5 artifacts in {time.perf_counter() - started:.0f}s")


def measured_run(conn: duckdb.DuckDBPyConnection) -> str:
    """The flow run whose page is timed: the first failed one by id."""
    return str(conn.execute("SELECT id FROM flow_runs WHERE state_type = 'FAILED' ORDER BY id LIMIT 1").fetchone()[0])  # type: ignore[index]


def pages(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The pages to time, with ids and windows taken from the archive."""
    run = measured_run(conn)
    deployment = conn.execute("SELECT id FROM deployments ORDER BY name LIMIT 1").fetchone()[0]  # type: ignore[index]
    newest = conn.execute("SELECT max(occurred) FROM events").fetchone()[0]  # type: ignore[index]
    event = conn.execute(f"SELECT id FROM events WHERE resource_id = 'prefect.flow-run.{run}' LIMIT 1").fetchone()[0]  # type: ignore[index]
    until = newest.isoformat()
    week = urlencode({"since": (newest - timedelta(days=7)).isoformat(), "until": until})
    day = urlencode({"since": (newest - timedelta(days=1)).isoformat(), "until": until})
    return {
        "overview 30d": "/?period=30d",  # periods end now: past the bench's events (they end 2026-10-30)
        "overview 90d": "/?period=90d",
        "overview all time": "/?period=all",
        "events: 7 days, no filter": f"/events?{week}",
        "events: 1 day, prefix filter": f"/events?{day}&event=prefect.flow-run.",
        "events: a deployment's, 7 days": f"/events?{week}&related=prefect.deployment.{deployment}",
        "event page": f"/events/{event}",
        "flow run page": f"/runs/{run}",
        "deployment page 30d": f"/deployments/{deployment}?period=30d",
        "deployment page all time": f"/deployments/{deployment}?period=all",
    }


def volume_reads(db: Path, repeat: int) -> None:
    """The overview's event-volume read both ways, interleaved in one process: every event counted
    (bucket_counts) against whole days from event_days (event_volume), which must answer the same."""
    from archiver.storage.duckdb.reader import DuckDBReader

    day = timedelta(days=1)
    with DuckDBReader(db, timedelta(seconds=30)).session() as reader:
        oldest, newest = reader.event_extent()
        assert oldest is not None and newest is not None
        until = newest + day
        print(f"{'event volume, per day':<42} {'counted CPU ms':>15} {'event_days CPU ms':>18}")
        for name, since in (("all time", oldest), ("90 days", until - 90 * day), ("30 days", until - 30 * day)):
            if reader.event_volume(since, until, day) != reader.bucket_counts(since, until, day):
                raise SystemExit(f"event_volume and bucket_counts differ over {name}")
            counted: list[float] = []
            rolled: list[float] = []
            for _ in range(repeat):
                for way, spent in ((reader.bucket_counts, counted), (reader.event_volume, rolled)):
                    used = time.process_time()
                    way(since, until, day)
                    spent.append((time.process_time() - used) * 1000)
            print(f"{name:<42} {statistics.median(counted):>15.1f} {statistics.median(rolled):>18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--flow-runs", type=int, default=200_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/archiver-bench-ui.duckdb"))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--logs-per-run", type=int, default=10, help="log lines given to every flow run")
    parser.add_argument("--rebuild", action="store_true", help="build the archive again even if --db exists")
    parser.add_argument("--page", action="append", default=[], metavar="TEXT",
                        help="time only the pages whose name holds TEXT (again for more; default: every page)")
    args = parser.parse_args()
    if args.rebuild or not args.db.exists():
        args.db.unlink(missing_ok=True)
        build(args.db, args.events, args.flow_runs)
        add_resources(args.db)
    with duckdb.connect(str(args.db), read_only=True) as conn:
        run = measured_run(conn)
    upgrade(args.db, run, args.logs_per_run)
    with duckdb.connect(str(args.db), read_only=True) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        runs = conn.execute("SELECT count(*) FROM flow_runs").fetchone()[0]  # type: ignore[index]
        wanted = {name: path for name, path in pages(conn).items()
                  if not args.page or any(text in name for text in args.page)}

    from fastapi.testclient import TestClient

    from archiver.web.api import create_app

    app = create_app(Settings(db_path=args.db), token="")
    print(f"archive {args.db}: {events:,} events, {runs:,} flow runs; {os.cpu_count()} CPUs; {args.repeat} requests a page")
    print(f"{'page':<42} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU ms':>8}")
    with TestClient(app, headers={"Accept": "text/html"}) as http:
        for name, path in wanted.items():
            response = http.get(path)
            if response.status_code != 200:
                raise SystemExit(f"{path} answered {response.status_code}: {response.text[:300]}")
            times, cpu = [], []
            for _ in range(args.repeat):
                started, used = time.perf_counter(), time.process_time()
                http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - used) * 1000)
            p95 = statistics.quantiles(times, n=20, method="inclusive")[-1] if len(times) >= 2 else times[0]
            print(f"{name:<42} {statistics.median(times):>8.1f} {p95:>8.1f} {max(times):>8.1f} {statistics.median(cpu):>8.1f}")
    if not args.page:
        volume_reads(args.db, args.repeat)


if __name__ == "__main__":
    main()

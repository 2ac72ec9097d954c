"""What harvesting run logs costs: lines/s from a real Prefect server, peak RSS, disk per line, `logs` latency.

    python bench/logs.py                          # 100,000 lines in one flow run, a DuckDB archive
    python bench/logs.py --lines 1000000          # the README's million
    python bench/logs.py --url postgresql+psycopg://…   # into a PostgreSQL archive instead

Starts a real `prefect server start` (tests/prefect_server.py), makes one flow run (RUNNING, then
COMPLETED) and posts --lines logs to it through POST /logs/ (messages of ~90 characters, like
Prefect's own, in batches of 1,000, timestamps 100 µs apart), then times the harvest of that
run through archiver.ingest.logs.harvest_run: every /logs/filter page of the server's size, each
written with its progress mark in one transaction, as `sync` does. Prints lines/s, the
process's peak RSS, the archive's bytes per line (DuckDB: file growth after a CHECKPOINT), and
how long `prefect-archiver logs RUN_ID` takes in a fresh process: the whole run to /dev/null, and
`--level WARNING` (a few lines out of all of them).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from archiver.ingest.logs import Harvest, harvest_run  # noqa: E402
from archiver.prefect.events import format_timestamp  # noqa: E402
from archiver.storage import open_archive, redact  # noqa: E402
from archiver.storage.logs import LogRun  # noqa: E402
from tests.prefect_server import PrefectServer  # noqa: E402
from tests.support import client_for_test  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seed(api: str, lines: int) -> tuple[str, datetime]:
    """A finished flow run holding `lines` logs (one in 500 a WARNING); its id and end."""
    http = httpx.Client(base_url=api + "/", timeout=120)
    flow = http.post("flows/", json={"name": "bench-logs"}).json()
    run = http.post("flow_runs/", json={"flow_id": flow["id"], "name": "bench-run"}).json()
    start = datetime.now(timezone.utc) - timedelta(seconds=lines / 10_000 + 60)
    http.post(f"flow_runs/{run['id']}/set_state", json={"state": {"type": "RUNNING"}, "force": True})
    started = time.perf_counter()
    for first in range(0, lines, 1000):
        batch = [{"name": "prefect.flow_runs", "level": 30 if i % 500 == 0 else 20,
                  "message": f"loaded batch {i} of table orders: 1000 rows in 0.{i % 997:03d}s, 0 rejected, checksum {i:08x}",
                  "timestamp": format_timestamp(start + timedelta(microseconds=100 * i)), "flow_run_id": run["id"],
                  "task_run_id": None} for i in range(first, min(first + 1000, lines))]
        response = http.post("logs/", json=batch)
        response.raise_for_status()
    http.post(f"flow_runs/{run['id']}/set_state", json={"state": {"type": "COMPLETED"}, "force": True})
    print(f"seeded {lines:,} logs in {time.perf_counter() - started:.1f}s")
    return run["id"], start + timedelta(microseconds=100 * lines)


def size_of(url: str, path: Path | None) -> int:
    if path is not None:
        import duckdb

        with duckdb.connect(str(path)) as conn:
            conn.execute("CHECKPOINT")
        return path.stat().st_size
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        row = conn.execute("SELECT pg_total_relation_size('logs')").fetchone()
    return int(row[0]) if row else 0


def cli_seconds(args: list[str], url: str, repeat: int) -> float:
    """Best wall time of `prefect-archiver ARGS` in a fresh process, output to /dev/null."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archiver", *args, "--url", url], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def timed(owner: Any, name: str, spent: dict[str, float], key: str) -> None:
    """Add the time each call of owner.name takes to spent[key]."""
    method = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--url", help="archive URL (default: a new DuckDB file in a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="`logs` timings: best of this many")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    path = None if options.url else folder / "archive.duckdb"
    url = options.url or f"duckdb:///{path}"
    archive = open_archive(url)
    writer = archive.writer(timedelta(seconds=30))
    before = size_of(url, path)
    with PrefectServer() as server:
        run_id, ended = seed(server.api_url, options.lines)
        run = LogRun("flow_run", run_id, "COMPLETED", ended, ended, None, False)
        what = Harvest(level=10, artifacts=True, horizon=timedelta(0), settle=timedelta(0))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with client_for_test(server.api_url) as client:
            spent = {"read": 0.0, "write": 0.0}
            timed(client, "read_logs", spent, "read")
            timed(writer, "save_logs", spent, "write")
            started = time.perf_counter()
            report = harvest_run(client, writer, run, what)  # as sync runs it: no holding() between writes
            seconds = time.perf_counter() - started
            pages = client.sent["logs/filter"]
        writer.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert report.logs_inserted == options.lines, report
    grown = size_of(url, path) - before
    print(f"archive: {redact(url)}")
    print(f"harvested {report.logs_inserted:,} lines in {seconds:.1f}s: {report.logs_inserted / seconds:,.0f} lines/s, "
          f"{pages:,} /logs/filter requests ({client.log_page_size()} a page)")
    print(f"of which waiting for the server {spent['read']:.1f}s, writing pages with their marks {spent['write']:.1f}s "
          f"({spent['write'] / pages * 1000:.1f} ms a page)")
    print(f"peak RSS {rss / 1024:.0f} MB (before the harvest {rss_before / 1024:.0f} MB)")
    print(f"archive grew {grown / 1e6:.1f} MB: {grown / options.lines:.0f} bytes per line "
          f"({grown / options.lines:.0f} MB per million lines)")
    print(f"`logs RUN_ID` (all {options.lines:,} lines to /dev/null): "
          f"{cli_seconds(['logs', run_id], url, options.repeat):.2f}s")
    print(f"`logs RUN_ID --level WARNING` ({options.lines // 500:,} lines): "
          f"{cli_seconds(['logs', run_id, '--level', 'WARNING'], url, options.repeat):.2f}s")
    grep = cli_seconds(["logs", run_id, "--grep", "batch 4242 "], url, options.repeat)
    print(f"`logs RUN_ID --grep 'batch 4242 '`: {grep:.2f}s")


if __name__ == "__main__":
    main()

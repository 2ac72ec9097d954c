"""What harvesting run logs costs: lines/s from a real Prefect server, peak RSS, disk per line, `logs` latency.

    python bench/logs.py                          # 100,000 lines in one flow run, a DuckDB archive
    python bench/logs.py --lines 1000000 --seed sqlite   # the README's million (seeded in the server's SQLite)
    python bench/logs.py --url postgresql+psycopg://…   # into a PostgreSQL archive instead

Starts a real `prefect server start` (tests/prefect_server.py), makes one flow run (RUNNING, then
COMPLETED) and posts --lines logs to it through POST /logs/ (messages of ~90 characters, like
Prefect's own, in batches of 1,000, timestamps 100 µs apart), then times the harvest of that
run through archiver.ingest.logs.harvest_run: every /logs/filter page of the server's size, each
written with its progress mark in one transaction, as `sync` does. Prints lines/s, the
process's peak RSS, the archive's bytes per line (DuckDB: file growth after a CHECKPOINT), and
how long `prefect-archiver logs RUN_ID` takes in a fresh process, to its first line and to its last
(read from a pipe), and its CPU seconds: the whole run, `--level WARNING` (a few lines of all) and `--grep`.
"""

from __future__ import annotations

import argparse
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from archiver.ingest.logs import Harvest, harvest_run  # noqa: E402
from archiver.prefect.events import format_timestamp, parse_timestamp  # noqa: E402
from archiver.storage import open_archive, redact  # noqa: E402
from archiver.storage.logs import LogRun  # noqa: E402
from tests.prefect_server import PrefectServer  # noqa: E402
from tests.support import client_for_test  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _log(run_id: str, start: datetime, i: int) -> dict[str, Any]:
    """The i-th bench log line as POST /logs/ takes it (one in 500 a WARNING)."""
    return {"name": "prefect.flow_runs", "level": 30 if i % 500 == 0 else 20,
            "message": f"loaded batch {i} of table orders: 1000 rows in 0.{i % 997:03d}s, 0 rejected, checksum {i:08x}",
            "timestamp": format_timestamp(start + timedelta(microseconds=100 * i)), "flow_run_id": run_id,
            "task_run_id": None}


def _sqlite_row(log: dict[str, Any], written: datetime) -> tuple[Any, ...]:
    """A log as Prefect's SQLite `log` table holds it (the server's own rows: naive UTC text with
    microseconds, a lowercase UUID; columns id, created, updated, name, level, flow_run_id,
    task_run_id, message, timestamp)."""
    def text(at: datetime) -> str:
        return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")

    return (str(uuid.uuid4()), text(written), text(written), log["name"], log["level"], log["flow_run_id"],
            log["task_run_id"], log["message"], text(parse_timestamp(log["timestamp"])))


def seed(server: PrefectServer, lines: int, via: str) -> tuple[str, datetime]:
    """A finished flow run holding `lines` logs; its id and end. `via="sqlite"`: the first 1,000
    through POST /logs/, the rest inserted into the server's SQLite `log` table in the shape the
    server wrote those (POST /logs/ stored ~220 lines/s here: a million would take over an hour);
    the server reads them as its own, which `check_seeded` verifies."""
    http = httpx.Client(base_url=server.api_url + "/", timeout=120)
    flow = http.post("flows/", json={"name": "bench-logs"}).json()
    run = http.post("flow_runs/", json={"flow_id": flow["id"], "name": "bench-run"}).json()
    start = datetime.now(timezone.utc) - timedelta(seconds=lines / 10_000 + 60)
    http.post(f"flow_runs/{run['id']}/set_state", json={"state": {"type": "RUNNING"}, "force": True})
    started = time.perf_counter()
    through_api = lines if via == "api" else min(lines, 1000)
    for first in range(0, through_api, 1000):
        response = http.post("logs/", json=[_log(run["id"], start, i) for i in range(first, min(first + 1000, through_api))])
        response.raise_for_status()
    if through_api < lines:
        assert server.home is not None
        with sqlite3.connect(server.home / "prefect.db", timeout=60) as db:  # WAL: the server keeps serving
            for first in range(through_api, lines, 100_000):
                written = datetime.now(timezone.utc)
                db.executemany("INSERT INTO log (id, created, updated, name, level, flow_run_id, task_run_id, message, "
                               "timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               [_sqlite_row(_log(run["id"], start, i), written)
                                for i in range(first, min(first + 100_000, lines))])
                db.commit()
        check_seeded(http, run["id"], start, through_api)
    http.post(f"flow_runs/{run['id']}/set_state", json={"state": {"type": "COMPLETED"}, "force": True})
    print(f"seeded {lines:,} logs in {time.perf_counter() - started:.1f}s ({through_api:,} through POST /logs/, "
          f"{lines - through_api:,} into the server's SQLite)")
    return run["id"], start + timedelta(microseconds=100 * lines)


def check_seeded(http: httpx.Client, run_id: str, start: datetime, through_api: int) -> None:
    """The last line the server wrote and the first one inserted read back alike through
    /logs/filter: the same keys, the same timestamp format, the values posted."""
    at = format_timestamp(start + timedelta(microseconds=100 * (through_api - 1)))
    pair = http.post("logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}, "timestamp": {"after_": at}},
                                          "sort": "TIMESTAMP_ASC", "limit": 2}).json()
    assert len(pair) == 2 and pair[0].keys() == pair[1].keys(), pair
    for log, i in zip(pair, (through_api - 1, through_api), strict=True):
        expected = _log(run_id, start, i)
        assert {k: log[k] for k in expected} == expected, (log, expected)
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", log[k]) for k in ("created", "updated")), log


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


def cli_seconds(args: list[str], url: str, repeat: int) -> tuple[float, float, float]:
    """Best wall time to the first line and to the last of `prefect-archiver ARGS` in a fresh
    process, read from a pipe, and that run's CPU seconds (user + system)."""
    best: tuple[float, float, float] | None = None
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "archiver", *args, "--url", url], cwd=ROOT,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        first = time.perf_counter() - started
        for _line in proc.stdout:
            pass
        assert proc.wait() == 0
        whole = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if best is None or whole < best[1]:
            best = (first, whole, cpu)
    assert best is not None
    return best


def shown(figures: tuple[float, float, float]) -> str:
    first, whole, cpu = figures
    return f"first line {first:.2f}s, all {whole:.2f}s ({cpu:.2f}s CPU)"


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
    parser.add_argument("--seed", choices=("api", "sqlite"), default="api",
                        help="api: every line through POST /logs/; sqlite: 1,000 so, the rest into the server's SQLite")
    parser.add_argument("--repeat", type=int, default=3, help="`logs` timings: best of this many")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    path = None if options.url else folder / "archive.duckdb"
    url = options.url or f"duckdb:///{path}"
    archive = open_archive(url)
    writer = archive.writer(timedelta(seconds=30))
    before = size_of(url, path)
    with PrefectServer() as server:
        run_id, ended = seed(server, options.lines, options.seed)
        run = LogRun("flow_run", run_id, "COMPLETED", ended, ended, None, False)
        what = Harvest(level=10, artifacts=True, horizon=timedelta(0), settle=timedelta(0))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with client_for_test(server.api_url) as client:
            spent = {"read": 0.0, "write": 0.0}
            timed(client, "read_logs", spent, "read")
            timed(writer, "save_logs", spent, "write")
            started, cpu = time.perf_counter(), time.process_time()
            report = harvest_run(client, writer, run, what)  # as sync runs it: no holding() between writes
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            pages = client.sent["logs/filter"]
        writer.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert report.logs_inserted == options.lines, report
    grown = size_of(url, path) - before
    print(f"archive: {redact(url)}")
    print(f"harvested {report.logs_inserted:,} lines in {seconds:.1f}s: {report.logs_inserted / seconds:,.0f} lines/s, "
          f"{pages:,} /logs/filter requests ({client.log_page_size()} a page); the archiver's CPU {cpu:.1f}s "
          f"({cpu / report.logs_inserted * 1e6:.0f} µs a line)")
    print(f"of which waiting for the server {spent['read']:.1f}s, writing pages with their marks {spent['write']:.1f}s "
          f"({spent['write'] / pages * 1000:.1f} ms a page)")
    print(f"peak RSS {rss / 1024:.0f} MB (before the harvest {rss_before / 1024:.0f} MB)")
    print(f"archive grew {grown / 1e6:.1f} MB: {grown / options.lines:.0f} bytes per line "
          f"({grown / options.lines:.0f} MB per million lines)")
    print(f"`logs RUN_ID` (all {options.lines:,} lines): {shown(cli_seconds(['logs', run_id], url, options.repeat))}")
    print(f"`logs RUN_ID --level WARNING` ({options.lines // 500:,} lines): "
          f"{shown(cli_seconds(['logs', run_id, '--level', 'WARNING'], url, options.repeat))}")
    grep = cli_seconds(["logs", run_id, "--grep", "batch 4242 "], url, options.repeat)
    print(f"`logs RUN_ID --grep 'batch 4242 '`: {shown(grep)}")

if __name__ == "__main__":
    main()

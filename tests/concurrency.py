"""A flow's lookups while a sync writes: a child process that looks events up by id in a loop.

    python -m tests.concurrency ARCHIVE_URL EXPECTED.json STOP_FILE

EXPECTED.json holds the events the sync will archive, oldest first, as the server serves them.
Until STOP_FILE exists the child reads the archive's high-water mark, picks an event that
occurred before it (everything there must be archived) and asks `get_event` for it, archive only
(no API configured), as a flow would. At the end it prints one JSON line: lookups, wrong (an
answer that differs from the server's, or a miss below the mark), errors, and the latencies in ms
(p50, p99, max). Used by tests/integration/test_backends.py and bench/pg_concurrency.py.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def start_lookups(url: str, expected: list[dict[str, Any]], folder: Path) -> tuple[subprocess.Popen[str], Path]:
    """The child, started; and the stop file that ends it (touch it, then communicate())."""
    events = folder / "expected.json"
    events.write_text(json.dumps(sorted(expected, key=lambda e: datetime.fromisoformat(e["occurred"]))))
    stop = folder / "stop-lookups"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tests.concurrency", url, str(events), str(stop)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, stop


def lookup_summary(proc: subprocess.Popen[str], stop: Path) -> dict[str, Any]:
    """Stop the child and return what it found."""
    stop.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def main(url: str, expected_path: str, stop_path: str) -> None:
    from archiver.config import Settings
    from archiver.errors import ArchiveError
    from archiver.lookup.events import get_event
    from archiver.storage import open_archive

    expected = json.loads(Path(expected_path).read_text())
    occurred = [datetime.fromisoformat(e["occurred"]) for e in expected]
    settings = Settings(db_path=Path("/nonexistent/archive.duckdb"), url=url, api_url=None)
    reader = open_archive(url).reader(timedelta(seconds=30))
    stop = Path(stop_path)
    latencies: list[float] = []
    wrong: list[str] = []
    errors: list[str] = []
    n = 0
    while not stop.exists():
        try:
            mark = reader.high_water_mark()
        except ArchiveError:  # no archive tables yet
            time.sleep(0.01)
            continue
        below = bisect.bisect_left(occurred, mark) if mark else 0
        if not below:
            time.sleep(0.01)
            continue
        event = expected[n * 7919 % below]
        n += 1
        started = time.perf_counter()
        try:
            found = get_event(event["id"], settings=settings)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            errors.append(f"{event['id']}: {type(exc).__name__}: {exc}")
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if found != event:
            wrong.append(event["id"])
    print(json.dumps({"lookups": len(latencies), "wrong": wrong, "errors": errors[:5], "error_count": len(errors),
                      "p50_ms": round(percentile(latencies, 0.5), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
                      "max_ms": round(max(latencies, default=0.0), 2)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""The DuckDB writer's peak RSS over a long backfill: N events written as a sync writes them, no server.

    python bench/writer_memory.py [--events 1000000] [--batch-size 500] [--no-limit]

One process opens a fresh archive with the real DuckDBWriter and writes Prefect-shaped events
(tests/unit/storage/shapes.py: a flow run's state change naming its flow and a tag; UUIDv7 ids
in time order, six events per flow run) in batches, each in its own hold (holding(): open, write,
commit, checkpoint on release), so every checkpoint a backfill's windows cause happens here too.
Prints the process's peak RSS (VmHWM) and its current RSS every 100,000 events, and the writer's
memory_limit. --no-limit runs the writer without one (DuckDB's default, 80% of RAM), to compare.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.prefect.events import Event, parse_event  # noqa: E402
from archiver.storage.duckdb import DuckDBArchive  # noqa: E402
from archiver.storage.duckdb import writer as duckdb_writer  # noqa: E402
from tests.unit.storage.shapes import event_json  # noqa: E402


def memory_mb() -> tuple[int, int]:
    """(peak, current) RSS of this process in MB."""
    found = {}
    for line in open("/proc/self/status"):
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0]) // 1024
    return found["VmHWM"], found["VmRSS"]


def batch(first: int, size: int, runs: list[uuid.UUID], rng: random.Random) -> list[Event]:
    t0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    out = []
    for k in range(first, first + size):
        occurred = t0 + timedelta(milliseconds=2600 * k)
        ms = int(occurred.timestamp() * 1000)
        v7 = uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0x2 << 62) | rng.getrandbits(62))
        event = parse_event(event_json(occurred, event_id=v7, flow_run=runs[k // 6]))
        assert isinstance(event, Event)
        out.append(event)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--no-limit", action="store_true", help="run the writer without a memory_limit")
    args = parser.parse_args()
    if args.no_limit:
        duckdb_writer.WRITER_MEMORY_CEILING_MB = 1  # every limit is past the ceiling: DuckDB's default
    rng = random.Random(7)
    runs = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(args.events // 6 + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-writer-memory-") as folder:
        writer = DuckDBArchive(Path(folder) / "archive.duckdb").writer(timedelta(seconds=30))
        started = time.monotonic()
        print(f"{'events':>10} {'seconds':>8} {'peak RSS MB':>12} {'RSS MB':>7} {'memory_limit':>13}", flush=True)
        try:
            for first in range(0, args.events, args.batch_size):
                events = batch(first, min(args.batch_size, args.events - first), runs, rng)
                with writer.holding():
                    writer.write_batch(events, mark=events[-1].occurred)
                done = first + len(events)
                if done % 100_000 == 0 or done == args.events:
                    peak, current = memory_mb()
                    limit = f"{writer.memory_limit_mb} MB" if writer.memory_limit_mb else "default"
                    print(f"{done:>10,} {time.monotonic() - started:>8.0f} {peak:>12} {current:>7} {limit:>13}", flush=True)
        finally:
            writer.close()


if __name__ == "__main__":
    main()

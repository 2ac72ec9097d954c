"""The writer's memory on a big DuckDB archive: what one 2,000-event batch costs as the archive grows.

    python bench/big_archive.py [--rows 1000000,5000000] [--batch-size 2000] [--keep DIR]

For each size, fills a fresh archive (the real migrations; the events table filled in bulk by
DuckDB with random UUIDs, small JSON, occurred spread over a year, so the primary-key index holds
as many keys as a real archive of that size), then in a fresh process each: opens it with the
real DuckDBWriter and writes one batch of new Prefect-shaped events (then the same batch again,
all duplicates), printing the process's peak RSS and DuckDB's own view of its memory
(duckdb_memory(), by tag) and the batch's seconds. Then the same for the design without a primary
key on events.id, measured on a copy of the table without it (ordered by occurred, as a backfill
writes it): new rows found by an anti-join against the ids already archived in the batch's
occurred range (zone maps skip the rest; it misses an id archived with another occurred), or by a
scan of the whole id column joined to the batch's ids (right whatever the occurred), and a lookup
by id (`get`) without an index, the price of that design. The no-key figures insert the events
rows alone (no resources, no refresh queue): compare their memory with the key's, not their seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FILL = """
INSERT INTO events
SELECT uuid(), TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_microseconds((i::HUGEINT * 31536000000000 // $2)::BIGINT),
       NULL, 'prefect.flow-run.Completed', 'prefect.flow-run.' || uuid(),
       '{"prefect.resource.id":"x"}', '[]', '{"note":"' || repeat('x', 200) || '"}', NULL, md5(i::VARCHAR), now()
FROM range($1, $1 + $3) t(i)
"""

# A child's peak RSS (ru_maxrss) starts at its parent's on Linux, which filled the archive: the
# children read their own mm's high-water mark instead.
_HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

# Runs in a child (its RSS is its own): open, write one batch of new events, then the same batch again.
_WRITE = """
import json, sys, time, uuid, random
HWM
from datetime import datetime, timedelta, timezone
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from archiver.prefect.events import parse_event
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.unit.storage.shapes import event_json
size = int(sys.argv[3])
t0 = datetime(2025, 7, 1, tzinfo=timezone.utc)
batch = [parse_event(event_json(t0 + timedelta(seconds=i))) for i in range(size)]
writer = DuckDBWriter(Path(sys.argv[2]), timedelta(seconds=60))
out = {"open_rss_mb": hwm()}
for label in ("new", "again"):
    started = time.perf_counter()
    counts = writer.write_batch(batch)
    out[label + "_s"] = round(time.perf_counter() - started, 3)
    out[label + "_inserted"] = counts.inserted
with writer._transaction() as conn:
    out["duckdb_memory_mb"] = {tag: round(mb, 1) for tag, mb in conn.exec_driver_sql(
        "SELECT tag, memory_usage_bytes / 1e6 FROM duckdb_memory() WHERE memory_usage_bytes > 0").fetchall()}
writer.close()
out["peak_rss_mb"] = hwm()
print(json.dumps(out))
"""
_WRITE = _WRITE.replace("HWM\n", _HWM)

# The same batch without a primary key: new ids by an anti-join in the batch's occurred range.
_ANTI = """
import duckdb, json, sys, time, uuid
HWM
from datetime import datetime, timedelta, timezone
con = duckdb.connect(sys.argv[1])
size = int(sys.argv[2])
t0 = datetime(2025, 7, 1, tzinfo=timezone.utc)
ids = [str(uuid.uuid4()) for _ in range(size)]
occurred = [t0 + timedelta(seconds=i) for i in range(size)]
sql = '''INSERT INTO events_nopk
SELECT b.* FROM (SELECT unnest($1::UUID[]) AS id, unnest($2::TIMESTAMPTZ[]) AS occurred, NULL, 'e', 'r', '{}', '[]', '{}',
                        NULL, 'h', now()) b
WHERE b.id NOT IN (SELECT id FROM events_nopk WHERE occurred BETWEEN $3 AND $4)
RETURNING id'''
out = {}
for label in ("new", "again"):
    started = time.perf_counter()
    con.execute("BEGIN")
    rows = con.execute(sql, [ids, occurred, min(occurred), max(occurred)]).fetchall()
    con.execute("COMMIT")
    out[label + "_s"] = round(time.perf_counter() - started, 3)
    out[label + "_inserted"] = len(rows)
# Correct whatever an event's occurred: the ids already archived, found by scanning the id column
# (the batch's 2,000 ids are the join's build side, so memory stays bounded), then only the rest inserted.
scan = '''SELECT id::VARCHAR FROM events_nopk WHERE id IN (SELECT unnest($1::UUID[]))'''
fresh = [str(uuid.uuid4()) for _ in range(size)]
for label in ("scan_new", "scan_again"):
    started = time.perf_counter()
    con.execute("BEGIN")
    found = {row[0] for row in con.execute(scan, [fresh]).fetchall()}
    todo = [i for i in fresh if i not in found]
    if todo:
        plain = sql.replace("WHERE b.id NOT IN (SELECT id FROM events_nopk WHERE occurred BETWEEN $3 AND $4)",
                            "WHERE $3 <= $4")
        con.execute(plain, [todo, occurred[:len(todo)], min(occurred), max(occurred)]).fetchall()
    con.execute("COMMIT")
    out[label + "_s"] = round(time.perf_counter() - started, 3)
    out[label + "_inserted"] = len(todo)
out["insert_rss_mb"] = hwm()
known = con.execute("SELECT id FROM events_nopk USING SAMPLE 20 ROWS").fetchall()
started = time.perf_counter()
for (i,) in known:
    con.execute("SELECT * FROM events_nopk WHERE id = $1", [i]).fetchall()
out["get_by_id_ms"] = round((time.perf_counter() - started) / len(known) * 1000, 1)
started = time.perf_counter()
for (i,) in known:
    con.execute("SELECT * FROM events WHERE id = $1", [i]).fetchall()
out["get_by_id_with_key_ms"] = round((time.perf_counter() - started) / len(known) * 1000, 1)
out["peak_rss_mb"] = hwm()
print(json.dumps(out))
"""


def child(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_ANTI = _ANTI.replace("HWM\n", _HWM)


def fill(path: Path, rows: int) -> float:
    """A migrated archive at `path` whose events table holds `rows` rows; seconds it took."""
    import duckdb

    sys.path.insert(0, str(ROOT))
    from datetime import timedelta

    from archiver.storage.duckdb.writer import DuckDBWriter

    DuckDBWriter(path, timedelta(seconds=30)).close()
    started = time.monotonic()
    con = duckdb.connect(str(path))
    chunk = 500_000
    for start in range(0, rows, chunk):
        con.execute(_FILL, [start, rows, min(chunk, rows - start)])
    con.execute("CREATE TABLE events_nopk AS SELECT * FROM events ORDER BY occurred")
    con.execute("CHECKPOINT")
    con.close()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="archive sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="build the archives here and keep them")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for rows in (int(n) for n in args.rows.split(",")):
            path = folder / f"archive-{rows}.duckdb"
            if not path.exists():
                print(f"filling {rows:,} rows: {fill(path, rows):.0f}s", flush=True)
            pk = child(_WRITE, str(ROOT), str(path), str(args.batch_size))
            print(f"{rows:>10,} rows, primary key (today): {json.dumps(pk)}", flush=True)
            anti = child(_ANTI, str(path), str(args.batch_size))
            print(f"{rows:>10,} rows, no key, anti-join:     {json.dumps(anti)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

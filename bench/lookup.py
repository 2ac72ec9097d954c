"""Lookup latency by event id on a large archive, against the live Prefect server's /events/filter.

    python bench/lookup.py [--events 1000000] [--archive PATH] [--lookups 2000] [--api-events 3000]

1. Builds (or reuses, if PATH already holds that many events) an archive of N synthetic,
   Prefect-shaped events spread over 180 days, written through `DuckDBWriter.write_batch`
   (the sync's own bulk path) — nothing is posted to Prefect for this.
2. Prints p50/p99 of a lookup by id:
   - in-process: the archive reader's `event` (fresh read-only open + query + close each time,
     which is what lets a sync in another process commit between lookups) and, for reference,
     one long-lived read-only connection;
   - a fresh process: `python -c "from archiver.query import get_event; get_event(id)"` — what a
     flow pays for its first lookup (interpreter start and imports included);
   - through `prefect-archiver serve` over HTTP (POST /api/events/filter with an id filter, and
     GET /api/events/{id});
   - the live Prefect server: POST /api/events/filter for ids it holds (it is started here and
     fed --api-events events, paced so its queue drops nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.config import Settings  # noqa: E402
from archiver.lookup.search import events_of_flow_run, search_events  # noqa: E402
from archiver.prefect.events import Event, format_timestamp  # noqa: E402
from archiver.storage.duckdb.connect import READER_CONFIG  # noqa: E402
from archiver.storage.duckdb.reader import DuckDBReader  # noqa: E402
from archiver.storage.duckdb.writer import DuckDBWriter  # noqa: E402
from tests.prefect_server import PrefectServer, free_port, make_event, post_events, wait_until_stored  # noqa: E402

UTC = timezone.utc
SPAN = timedelta(days=180)


def uuid7(moment: datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 like Prefect's client makes: 48 bits of milliseconds, then random bits."""
    ms = int(moment.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    return uuid.UUID(int=value)


def synthetic(i: int, end: datetime, rng: random.Random) -> Event:
    occurred = end - timedelta(seconds=rng.uniform(0, SPAN.total_seconds()))
    run = f"prefect.flow-run.{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    related = [
        {"prefect.resource.id": f"prefect.flow.{rng.randrange(200)}", "prefect.resource.role": "flow"},
        {"prefect.resource.id": f"prefect.deployment.{rng.randrange(100)}", "prefect.resource.role": "deployment"},
    ]
    payload = {"i": i, "note": "x" * rng.randrange(50, 600)}
    name = rng.choice(["prefect.flow-run.Running", "prefect.flow-run.Completed", "prefect.task-run.Completed"])
    event_id = uuid7(occurred, rng)
    return Event(
        id=event_id, occurred=occurred, event=name, resource={"prefect.resource.id": run}, related=related,
        payload=payload, received=occurred + timedelta(milliseconds=30), follows=None,
        content_hash=hashlib.sha256(f"{event_id}{i}".encode()).hexdigest()[:32],
        size=700 + len(payload["note"]),  # about its JSON text: what bounds a write transaction
    )


def count_events(path: Path) -> int:
    if not path.exists():
        return 0
    with duckdb.connect(str(path), read_only=True, config=READER_CONFIG) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def build(path: Path, events: int, batch: int = 20_000) -> None:
    archive = DuckDBWriter(path)  # applies any migration the archive lacks (e.g. indexes)
    have = count_events(path)
    if have >= events:
        print(f"archive {path}: {have:,} events already (reused)", flush=True)
        return
    rng = random.Random(4 + have)
    end = datetime.now(UTC) - timedelta(days=1)
    started = time.monotonic()
    for offset in range(have, events, batch):
        archive.write_batch([synthetic(i, end, rng) for i in range(offset, min(offset + batch, events))])
        done = min(offset + batch, events)
        if done % 100_000 == 0 or done == events:
            print(f"  built {done:,} events, {time.monotonic() - started:.0f}s", flush=True)
    size = path.stat().st_size / 2**20
    print(f"archive {path}: built {events - have:,} events in {time.monotonic() - started:.0f}s, {size:,.0f} MB", flush=True)


def sample_ids(path: Path, n: int) -> list[str]:
    with duckdb.connect(str(path), read_only=True, config=READER_CONFIG) as conn:
        rows = conn.execute(f"SELECT id FROM events USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)").fetchall()
    return [str(r[0]) for r in rows]


def report(label: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:<58} n={len(ms):>5}  p50 {statistics.median(ms):8.2f} ms  p99 {p99:8.2f} ms", flush=True)


def timed(fn, items) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t0)
    return out


def bench_in_process(path: Path, ids: list[str]) -> None:
    reader = DuckDBReader(path, timedelta(seconds=15))

    def fresh(event_id: str) -> None:
        assert reader.event(uuid.UUID(event_id)) is not None

    report("in-process, DuckDBReader.event (open+query+close)", timed(fresh, ids))
    conn = duckdb.connect(str(path), read_only=True, config=READER_CONFIG)

    def warm(event_id: str) -> None:
        assert conn.execute("SELECT payload FROM events WHERE id = $1", [event_id]).fetchone() is not None

    report("in-process, one long-lived read-only connection", timed(warm, ids))
    conn.close()


def bench_searches(path: Path, n: int = 50) -> None:
    """Searches by related resource: what `events --flow-run` and a deployment's history cost."""
    settings = Settings(db_path=path)
    with duckdb.connect(str(path), read_only=True, config=READER_CONFIG) as conn:
        runs = [r[0] for r in conn.execute(
            f"SELECT resource_id FROM events USING SAMPLE reservoir({n} ROWS) REPEATABLE (3)").fetchall()]
    report("search: events_of_flow_run(run)", timed(lambda run: events_of_flow_run(run, settings=settings), runs))
    deployments = [f"prefect.deployment.{i}" for i in range(n)]
    report("search: search_events(resource=deployment, limit=50)",
           timed(lambda d: search_events(resource=d, limit=50, settings=settings), deployments))
    report("search: search_events(prefix=prefect.flow-run., limit=50)",
           timed(lambda _: search_events(prefix="prefect.flow-run.", limit=50, settings=settings), range(n)))


def bench_fresh_process(path: Path, ids: list[str], env: dict[str, str]) -> None:
    code = "import sys\nfrom archiver.query import get_event\nget_event(sys.argv[1])"

    def child(event_id: str) -> None:
        subprocess.run([sys.executable, "-c", code, event_id], env=env, cwd=ROOT, check=True)

    report("fresh process: python -c 'get_event(id)' (start+import+lookup)", timed(child, ids))


def bench_serve(path: Path, ids: list[str], env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archiver", "serve", "--port", str(port)], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}/api"
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.2)

            def by_filter(event_id: str) -> None:
                body = {"filter": {"id": {"id": [event_id]}, "occurred": {
                    "since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}}, "limit": 1}
                page = http.post("/events/filter", json=body).json()
                assert page["events"][0]["id"] == event_id

            def by_path(event_id: str) -> None:
                assert http.get(f"/events/{event_id}").json()["id"] == event_id

            report("serve over HTTP: POST /api/events/filter {id}", timed(by_filter, ids))
            report("serve over HTTP: GET /api/events/{id}", timed(by_path, ids))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bench_prefect(api_events: int, lookups: int) -> None:
    rng = random.Random(9)
    now = datetime.now(UTC)
    since = now - timedelta(days=5)
    events = []
    for i in range(api_events):
        occurred = since + timedelta(seconds=rng.uniform(0, 4 * 86400))
        events.append(make_event(occurred, event="prefect.flow-run.Completed",
                                 resource_id=f"prefect.flow-run.{uuid.uuid4()}",
                                 related=[(f"prefect.flow.{rng.randrange(200)}", "flow")],
                                 payload={"i": i, "note": "x" * rng.randrange(50, 600)},
                                 id=str(uuid7(occurred, rng))))
    with PrefectServer() as server:
        post_events(server.api_url, events)
        wait_until_stored(server.api_url, since, now, len(events), timeout=300)
        picks = [events[rng.randrange(len(events))] for _ in range(lookups)]
        with httpx.Client(base_url=server.api_url, timeout=30) as http:

            def lookup(event: dict) -> None:  # type: ignore[type-arg]
                moment = datetime.fromisoformat(event["occurred"])
                body = {"filter": {"id": {"id": [event["id"]]}, "occurred": {
                    "since": format_timestamp(moment - timedelta(days=14)),
                    "until": format_timestamp(moment + timedelta(minutes=10))}}, "limit": 1}
                page = http.post("/events/filter", json=body).json()
                assert page["events"][0]["id"] == event["id"]

            report(f"live Prefect server ({api_events:,} events): POST /events/filter", timed(lookup, picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--archive", type=Path, default=Path(tempfile.gettempdir()) / "bench-lookup" / "archive.duckdb")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--process-lookups", type=int, default=100, help="fresh-process lookups (each ~0.5 s)")
    parser.add_argument("--api-events", type=int, default=3000)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--searches-only", action="store_true", help="stop after the in-process figures")
    args = parser.parse_args()

    build(args.archive, args.events)
    if args.build_only:
        return
    ids = sample_ids(args.archive, args.lookups)
    print(f"{len(ids):,} random ids of {count_events(args.archive):,} archived events", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env["ARCHIVER_DB"] = str(args.archive)
    bench_in_process(args.archive, ids)
    bench_searches(args.archive)
    if args.searches_only:
        return
    bench_serve(args.archive, ids, env)
    bench_fresh_process(args.archive, ids[: args.process_lookups], env)
    bench_prefect(args.api_events, min(args.lookups, 1000))


if __name__ == "__main__":
    main()

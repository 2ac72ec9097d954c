"""What one `serve` request costs as its filter grows: N related filters, N any_resource, long lists.

    python bench/serve.py [--events 200000] [--archive PATH] [--sizes 1,10,100,300] [--repeat 3]

Builds (or reuses) an archive of synthetic Prefect-shaped events with bench/lookup.py's builder
(every event has a flow and a deployment among its related resources), then times
`search.read_page` for filters of N `related` entries (each naming one flow, so every one must be
matched by its own related resource), N `any_resource` entries and one `related` whose `labels`
need the resources' JSON — in-process, bypassing serve's caps, so sizes past them show what the
SQL itself costs — and then the same bodies through `serve` over HTTP (caps, signing and the time
limit included): what a caller sees, 200 or 422/503, and how long it took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.config import Settings  # noqa: E402
from archiver.prefect.events import format_timestamp  # noqa: E402
from archiver.prefect.filters import EventFilter, RelatedMatch, ResourceMatch  # noqa: E402
from archiver.storage.duckdb.connect import READER_CONFIG  # noqa: E402
from archiver.storage.duckdb.search import read_page  # noqa: E402
from bench.lookup import build  # noqa: E402

UTC = timezone.utc


def shapes(n: int, since: datetime, until: datetime) -> dict[str, EventFilter]:
    """The filters timed at size n: every one matches (about) the events of flow 7."""
    flows = [f"prefect.flow.{7 + 200 * i}" if i else "prefect.flow.7" for i in range(n)]
    return {
        "related (N entries)": EventFilter(since, until, related=tuple(
            RelatedMatch(ids=("prefect.flow.7",) if i == 0 else (), roles=("flow",)) for i in range(n))),
        "related ids (1 entry, N ids)": EventFilter(since, until, related=(RelatedMatch(ids=tuple(flows)),)),
        "any_resource (N entries)": EventFilter(since, until, any_resource=tuple(
            ResourceMatch(ids=("prefect.flow.7",)) if i == 0 else ResourceMatch(id_prefixes=("prefect.",))
            for i in range(n))),
        "related labels (N id values)": EventFilter(since, until, related=(RelatedMatch(
            labels={"prefect.resource.role": ("flow",), "prefect.resource.id": tuple(flows)}),)),
        "related labels (N patterns, JSON)": EventFilter(since, until, related=(RelatedMatch(
            ids=("prefect.flow.7",), labels={"acme.team": tuple(f"team-{i}*" for i in range(n))}),)),
    }


def body_of(f: EventFilter) -> dict[str, Any]:
    return {"filter": f.to_api(), "limit": 50}


def bench_sql(path: Path, sizes: list[int], repeat: int, since: datetime, until: datetime) -> None:
    print("search.read_page in-process (no caps): median of", repeat, flush=True)
    with duckdb.connect(str(path), read_only=True, config=READER_CONFIG) as conn:
        for n in sizes:
            for label, f in shapes(n, since, until).items():
                seconds = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    try:
                        page = read_page(conn, f, 50)
                        outcome = f"total {page.total}"
                    except duckdb.Error as exc:
                        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
                    seconds.append(time.perf_counter() - t0)
                print(f"  N={n:<5} {label:<34} {statistics.median(seconds) * 1000:9.1f} ms  {outcome}", flush=True)


def bench_http(path: Path, sizes: list[int], since: datetime, until: datetime) -> None:
    from fastapi.testclient import TestClient

    from archiver.web.api import create_app

    print("POST /api/events/filter through serve (caps and time limit on):", flush=True)
    with TestClient(create_app(Settings(db_path=path), token="")) as http:
        for n in sizes:
            for label, f in shapes(n, since, until).items():
                t0 = time.perf_counter()
                response = http.post("/api/events/filter", json=body_of(f))
                took = time.perf_counter() - t0
                detail = response.json().get("detail", "") if response.status_code != 200 else f"total {response.json()['total']}"
                print(f"  N={n:<5} {label:<34} {took * 1000:9.1f} ms  HTTP {response.status_code} {str(detail)[:90]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--archive", type=Path, default=Path(tempfile.gettempdir()) / "bench-serve" / "archive.duckdb")
    parser.add_argument("--sizes", default="1,10,100,300")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="only the in-process SQL timings")
    args = parser.parse_args()
    build(args.archive, args.events)
    sizes = [int(s) for s in args.sizes.split(",")]
    until = datetime.now(UTC)
    since = until - timedelta(days=200)
    print(f"window {format_timestamp(since)} .. {format_timestamp(until)}", flush=True)
    bench_sql(args.archive, sizes, args.repeat, since, until)
    if not args.no_http:
        bench_http(args.archive, sizes, since, until)


if __name__ == "__main__":
    main()

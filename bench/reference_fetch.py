"""The reference fetcher of issue 16: count-by planning, adjacent buckets merged up to 50, 4 at a time.

    python bench/reference_fetch.py API_URL SINCE UNTIL [--concurrency 4] [--uncompressed]

Plans [SINCE, UNTIL] (ISO 8601, inclusive) at minute resolution (1,000 minutes a count-by
request), counts minutes holding more than a page again by the second, merges adjacent buckets
into windows of at most 50 events, then reads the windows with a pool of threads, following
next_page only for a second holding more than 50. It decodes each page's JSON and stores nothing.
Prints one JSON line: events, distinct ids, requests, seconds. Standalone on purpose (httpx only,
nothing from archiver), so it is a fair yardstick of what the API allows.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx

PIVOT = datetime(2024, 4, 1, tzinfo=timezone.utc)  # Prefect aligns count-by buckets to it
TICK = timedelta(microseconds=1)
PAGE = 50


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Api:
    def __init__(self, api_url: str, uncompressed: bool = False) -> None:
        headers = {"Accept-Encoding": "identity"} if uncompressed else {}
        self.http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=60, headers=headers)
        self.requests = 0
        self._lock = threading.Lock()

    def post(self, path: str, body: dict) -> object:
        with self._lock:
            self.requests += 1
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, params: dict) -> object:
        with self._lock:
            self.requests += 1
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()


def counts(api: Api, since: datetime, until: datetime, seconds: int) -> list[tuple[datetime, datetime, int]]:
    """(start, end, count) buckets of `seconds` over [since, until], 1,000 buckets a request."""
    size = timedelta(seconds=seconds)
    out = []
    cursor = since
    while cursor <= until:
        first = PIVOT + size * math.floor((cursor - PIVOT) / size)
        stop = min(until, first + size * 1000 - TICK)
        body = {"filter": {"occurred": {"since": iso(cursor), "until": iso(stop)}}, "time_unit": "second",
                "time_interval": seconds}
        for b in api.post("events/count-by/time", body):  # type: ignore[union-attr]
            start = max(cursor, datetime.fromisoformat(b["start_time"]))
            end = min(stop, datetime.fromisoformat(b["end_time"]))
            if start <= end:
                out.append((start, end, int(b["count"])))
        cursor = stop + TICK
    return out


def plan(api: Api, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    buckets = []
    for start, end, count in counts(api, since, until, 60):
        buckets += counts(api, start, end, 1) if count > PAGE else [(start, end, count)]
    windows: list[tuple[datetime, datetime]] = []
    w_start, w_count = since, 0
    for start, _end, count in buckets:
        if w_count and w_count + count > PAGE:
            windows.append((w_start, start - TICK))
            w_start, w_count = start, 0
        w_count += count
    windows.append((w_start, until))
    return windows


def read(api: Api, window: tuple[datetime, datetime]) -> list[str]:
    body = {"filter": {"occurred": {"since": iso(window[0]), "until": iso(window[1])}, "order": "ASC"}, "limit": PAGE}
    page = api.post("events/filter", body)
    ids = [e["id"] for e in page["events"]]  # type: ignore[index]
    while page.get("next_page"):  # type: ignore[union-attr]
        token = httpx.URL(page["next_page"]).params["page-token"]  # type: ignore[index]
        page = api.get("events/filter/next", {"page-token": token})
        ids += [e["id"] for e in page["events"]]  # type: ignore[index]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api_url")
    parser.add_argument("since", type=datetime.fromisoformat)
    parser.add_argument("until", type=datetime.fromisoformat)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--uncompressed", action="store_true",
                        help="ask for uncompressed responses (as the archiver does from a local server); default: httpx's gzip")
    args = parser.parse_args()
    started = time.monotonic()
    api = Api(args.api_url, args.uncompressed)
    windows = plan(api, args.since, args.until)
    with ThreadPoolExecutor(args.concurrency) as pool:
        ids = [i for chunk in pool.map(lambda w: read(api, w), windows) for i in chunk]
    print(json.dumps({"events": len(ids), "distinct": len(set(ids)), "requests": api.requests,
                      "windows": len(windows), "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()

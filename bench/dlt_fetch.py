"""The dlt contender of issue 16: an incremental `occurred` cursor over /events/filter into DuckDB.

    python bench/dlt_fetch.py API_URL SINCE UNTIL DUCKDB_PATH

Run with a Python that has `dlt[duckdb]` (kept out of the project's dependencies: see
bench/ingest.py). The setup a dlt user would write: one `@dlt.resource` with
`dlt.sources.incremental("occurred")` and `id` as primary key, reading one query in ASC order and
following `next_page` (offset paging, the only paging the API offers for a single query), loaded
into a fresh DuckDB file. Prints one JSON line: events loaded, requests, seconds.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import dlt
from dlt.sources.helpers import requests

REQUESTS = 0


def main() -> None:
    api_url, since, until, path = sys.argv[1:5]
    started = time.monotonic()
    base = api_url.rstrip("/")

    @dlt.resource(name="events", primary_key="id", write_disposition="append")
    def events(
        # dlt's documented idiom: the cursor is declared as the argument's default.
        occurred: dlt.sources.incremental[str] = dlt.sources.incremental("occurred", initial_value=since),  # noqa: B008
    ) -> Any:
        global REQUESTS
        body = {"filter": {"occurred": {"since": occurred.last_value, "until": until}, "order": "ASC"}, "limit": 50}
        REQUESTS += 1
        page = requests.post(f"{base}/events/filter", json=body).json()
        yield page["events"]
        while page.get("next_page"):
            token = page["next_page"].split("page-token=", 1)[1]
            REQUESTS += 1
            page = requests.get(f"{base}/events/filter/next", params={"page-token": token}).json()
            yield page["events"]

    pipeline = dlt.pipeline(pipeline_name="bench_events", destination=dlt.destinations.duckdb(path),
                            dataset_name="prefect", pipelines_dir=path + ".pipelines")
    pipeline.run(events())
    with pipeline.sql_client() as client:
        loaded = client.execute_sql("SELECT count(*), count(DISTINCT id) FROM events")[0]
    print(json.dumps({"events": loaded[0], "distinct": loaded[1], "requests": REQUESTS,
                      "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()

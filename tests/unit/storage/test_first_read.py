"""The read `sync` sends before its writer opens is the sync's own first read, on either backend.

`prefect-archiver sync` reads the mark with a reader and sends the first event read early
(cli._read_first_early, ingest.first_read); the sync must then take that answer as its own first
read, counted once in its report. A stand-in API (httpx.MockTransport) records what arrives.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from archiver.cli import _read_first_early
from archiver.config import Settings
from archiver.ingest.first_read import first_read
from archiver.ingest.report import SyncReport
from archiver.ingest.sync import sync
from archiver.prefect.client import PrefectClient
from archiver.prefect.events import format_timestamp, parse_timestamp
from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from tests.unit.storage.shapes import event_json

NOW = datetime.now(timezone.utc).replace(microsecond=0)
ARCHIVED = NOW - timedelta(minutes=10)  # an event a past sync archived, its mark 5 minutes later


class StandIn:
    """Answers every request as an empty server would, except the archived event to a read whose
    range holds it; notes each event read's body, and when the first arrived."""

    def __init__(self) -> None:
        self.reads: list[dict[str, Any]] = []
        self.first = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        if path != "events/filter":
            return httpx.Response(200, json=[])
        body = json.loads(request.content)
        self.reads.append(body)
        self.first.set()
        occurred = body["filter"].get("occurred", {})
        held = parse_timestamp(occurred["since"]) <= ARCHIVED <= parse_timestamp(occurred["until"])
        events = [event_json(ARCHIVED)] if held else []
        return httpx.Response(200, json={"events": events, "total": len(events), "next_page": None})


def _settings(backend: Archive) -> Settings:
    if isinstance(backend, DuckDBArchive):
        return Settings(db_path=backend.path, api_url="http://prefect.test/api", csrf_support=False)
    return Settings(db_path=Path("unused.duckdb"), url=backend.url, api_url="http://prefect.test/api", csrf_support=False)


def _sync_after_early_read(settings: Settings, backend: Archive, now: datetime) -> tuple[StandIn, SyncReport]:
    """A sync as the CLI runs it: the first read sent early, then the writer opened and the sync run."""
    api = StandIn()
    with PrefectClient(settings.require_api(), transport=httpx.MockTransport(api), csrf_support=False) as client:
        with backend.writer_lock():
            _read_first_early(settings, client, backend, None, None, now)
            assert api.first.wait(5), "nothing was read before the writer opened"
            writer = backend.writer(timedelta(seconds=5))
            try:
                return api, sync(settings, client, writer, now=now)
            finally:
                writer.close()


def test_the_read_sent_before_the_writer_opens_is_the_syncs_first_and_counted_once(backend: Archive):
    settings = _settings(backend)
    # A first sync (no archive yet: the search for the oldest event), then a later one (the gap
    # probe at the event the first archived), on one archive.
    for mark, newest in ((None, None), (NOW - settings.settle, ARCHIVED)):
        api, report = _sync_after_early_read(settings, backend, NOW)
        expected = first_read(settings, mark, newest, since=None, until=None, now=NOW)
        assert expected is not None
        assert api.reads[0] == {"filter": expected, "limit": 1}
        assert api.reads.count(api.reads[0]) == 1  # the sync took the early answer instead of asking again
        assert report.pages == len(api.reads)  # and counted it as its own
        assert report.outcome == "ok" and report.high_water_mark == format_timestamp(NOW - settings.settle)

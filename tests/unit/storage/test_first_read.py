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
import pytest

from archiver.cli import _read_first_early
from archiver.config import Settings
from archiver.ingest.first_read import first_read
from archiver.ingest.sync import sync
from archiver.prefect.client import PrefectClient
from archiver.prefect.events import Event, parse_event, parse_timestamp
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


@pytest.mark.parametrize("archived", [False, True], ids=["first sync", "later sync"])
def test_the_read_sent_before_the_writer_opens_is_the_syncs_first_and_counted_once(backend: Archive, archived: bool):
    settings = _settings(backend)
    if archived:
        event = parse_event(event_json(ARCHIVED))
        assert isinstance(event, Event)
        past = backend.writer(timedelta(seconds=5))
        past.write_batch([event], mark=ARCHIVED + timedelta(minutes=5))
        past.close()
    api = StandIn()
    with PrefectClient(settings.require_api(), transport=httpx.MockTransport(api), csrf_support=False) as client:
        with backend.writer_lock():
            _read_first_early(settings, client, backend, None, None, NOW)
            assert api.first.wait(5), "nothing was read before the writer opened"
            writer = backend.writer(timedelta(seconds=5))
            try:
                report = sync(settings, client, writer, now=NOW)
            finally:
                writer.close()
    mark = ARCHIVED + timedelta(minutes=5) if archived else None
    expected = first_read(settings, mark, ARCHIVED if archived else None, since=None, until=None, now=NOW)
    assert expected is not None
    assert api.reads[0] == {"filter": expected, "limit": 1}
    assert api.reads.count(api.reads[0]) == 1  # the sync took the early answer instead of asking again
    assert report.pages == len(api.reads)  # and counted it as its own
    assert report.outcome == "ok" and report.high_water_mark is not None

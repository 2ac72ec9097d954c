"""The web UI's fixtures: one seeded archive per backend for a whole module (pages only read it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archiver.config import Settings
from archiver.storage import open_archive
from archiver.storage.duckdb import archive_url
from archiver.web.api import create_app
from tests.servers import PostgresServer
from tests.ui_seed import Seeded, seed

TOKEN = "s3cret-ui-token"


@pytest.fixture(scope="module", params=["duckdb", "postgresql"])
def seeded_settings(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Seeded]]:
    """Settings naming a seeded archive of each backend (tests/ui_seed.py), and what was seeded."""
    db = tmp_path_factory.mktemp("ui") / "archive.duckdb"
    database, server = None, None
    if request.param == "duckdb":
        url = archive_url(db)
    else:
        server = request.getfixturevalue("postgres_server")
        assert isinstance(server, PostgresServer)
        database = server.create_database()
        url = server.url(database)
    writer = open_archive(url).writer(timedelta(seconds=10))
    try:
        seeded = seed(writer)
    finally:
        writer.close()
    # An API URL nothing answers at: run pages say the server did not answer, at once.
    yield Settings(db_path=Path(db), url=None if database is None else url, api_url="http://127.0.0.1:9/api"), seeded
    if server is not None and database is not None:
        server.drop_database(database)


@pytest.fixture(scope="module")
def client(seeded_settings: tuple[Settings, Seeded]) -> Iterator[TestClient]:
    """A browser-like client (asks for HTML) of serve's app without a token."""
    with TestClient(create_app(seeded_settings[0], token=""), headers={"Accept": "text/html"}) as http:
        yield http


@pytest.fixture(scope="module")
def seeded(seeded_settings: tuple[Settings, Seeded]) -> Seeded:
    return seeded_settings[1]

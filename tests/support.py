"""Helpers for tests that archive from the real server: settings, the CLI, the archive's ids, faults.

An archive is named by an ArchiveRef: a Path is a DuckDB file, a str an archive URL (a PostgreSQL
database, from the `new_archive` fixture). The helpers that read an archive go through its
storage reader (open_archive(url).reader()), so a test reads both backends the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from archiver.config import Settings
from archiver.ingest.sync import sync
from archiver.prefect.client import PrefectClient, RetryPolicy
from archiver.storage import open_archive
from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.writer import ArchiveWriter

ROOT = Path(__file__).resolve().parents[1]

# Tests post back-dated events; don't let gap detection or retention defaults get in the way.
LONG = timedelta(days=3650)


# A DuckDB file (Path) or an archive URL (str: postgresql+psycopg://…).
ArchiveRef = Path | str
BACKENDS = ("duckdb", "postgresql")


def archive_of(db: ArchiveRef) -> Archive:
    """The Archive an ArchiveRef names."""
    return DuckDBArchive(db) if isinstance(db, Path) else open_archive(db)


def backend_of(db: ArchiveRef) -> str:
    return "duckdb" if isinstance(db, Path) else "postgresql"


def writer_for(db: ArchiveRef, timeout: timedelta = timedelta(seconds=15)) -> ArchiveWriter:
    """The archive's writer (schema migrated), as the CLI opens it."""
    return archive_of(db).writer(timeout)


class Archives:
    """Fresh archives of either backend for a test: the `new_archive` fixture.

    new_archive(backend, folder, name) is a DuckDB file in `folder` or the URL of a new database on
    the session's PostgreSQL server (`postgres` gives it, so it starts only when first needed);
    new_archive.clone(db, folder, name) is a copy of an archive, for a test that changes one.
    """

    def __init__(self, postgres: Callable[[], Any]) -> None:
        self._postgres = postgres

    def __call__(self, backend: str, folder: Path, name: str = "archive") -> ArchiveRef:
        if backend == "duckdb":
            return folder / f"{name}.duckdb"
        if backend == "postgresql":
            url: str = self._postgres().new_archive()
            return url
        raise AssertionError(f"no archive for backend {backend!r}")

    def clone(self, db: ArchiveRef, folder: Path, name: str = "archive") -> ArchiveRef:
        if isinstance(db, Path):
            copy = folder / f"{name}.duckdb"
            shutil.copy(db, copy)
            return copy
        url: str = self._postgres().clone(db)
        return url


def settings_for(api_url: str | None, db: ArchiveRef, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_url": api_url, "retention": LONG}
    if isinstance(db, Path):
        values["db_path"] = db
    else:
        values.update(db_path=Path("/nonexistent/archive.duckdb"), url=db)
    values.update(overrides)
    return Settings(**values)


def client_for_test(api_url: str, transport: httpx.BaseTransport | None = None, **kwargs: Any) -> PrefectClient:
    return PrefectClient(api_url, transport=transport, retry=RetryPolicy(max_retries=8, base_delay=0.05, max_delay=0.2), **kwargs)


def not_created_yet(exc: Exception) -> bool:
    """True for the error a reader raises before a first sync has made the archive (either backend)."""
    return any(words in str(exc) for words in ("no archive at", "has no tables yet", "no archive in"))


def sql_literal(value: Any) -> str:
    """A parameter as an SQL literal both backends read the same way (the console takes no parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def query(db: ArchiveRef, sql: str, params: list[Any] | None = None,
          timeout: timedelta = timedelta(seconds=30)) -> list[tuple[Any, ...]]:
    """Rows of a read-only query ($1, $2 … parameters) through the archive's SQL console, on either
    backend (JSON columns as their text); waits like any reader while a sync commits."""
    import re

    values = params or []
    text = re.sub(r"\$(\d+)", lambda m: sql_literal(values[int(m.group(1)) - 1]), sql)
    with archive_of(db).reader(timeout).sql(text) as result:
        return list(result.rows)


def archived_ids(db: ArchiveRef, since: datetime, until: datetime) -> set[str]:
    rows = query(db, "SELECT id FROM events WHERE occurred BETWEEN $1 AND $2", [since, until])
    return {str(r[0]) for r in rows}


def archive_status(db: ArchiveRef, timeout: timedelta = timedelta(seconds=15)) -> dict[str, Any]:
    """What `status --json` says of the archive itself, read through its reader as `status` does."""
    return archive_of(db).reader(timeout).status().to_json()


def poll_until(check: Callable[[], Any], what: str, timeout: float = 30, interval: float = 0.05) -> Any:
    """check()'s first truthy value, asked again every `interval` s for up to `timeout` s.

    For an effect another process or server produces asynchronously (a lock released after a kill,
    an event stored after it was posted): the same condition an immediate check would assert,
    given a bound instead of a race. Fails naming `what` and check's last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def last_sync_once_the_lock_is_free(db: ArchiveRef, timeout: float = 10) -> dict[str, Any]:
    """The ledger's last sync as status reports it once a killed writer's lock is gone.

    A DuckDB file lock goes with the process. PostgreSQL releases a session's advisory lock when
    its server process notices the closed socket and exits, a few milliseconds after the client is
    reaped: CI once read status inside that window and saw 'running' (and a writer started there
    is refused). So wait, within a bound; after the bound, the 'running' row is what the caller sees.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: dict[str, Any] = archive_status(db, timedelta(seconds=10))["last_sync"]
        if last["outcome"] != "running" or time.monotonic() > deadline:
            return last
        time.sleep(0.05)


def read_archived_event(db: ArchiveRef, event_id: str, timeout: timedelta = timedelta(seconds=15)) -> dict[str, Any] | None:
    """The archived event with this id in the API's shape (the archive's reader), or None."""
    return archive_of(db).reader(timeout).event(uuid.UUID(event_id))


def cli_env(api_url: str | None, db: ArchiveRef, config: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI process on this archive: ARCHIVER_DB for a file, ARCHIVER_URL for a URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if isinstance(db, Path):
        env["ARCHIVER_DB"] = str(db)
    else:
        env["ARCHIVER_URL"] = db
    if config:
        env["ARCHIVER_CONFIG"] = str(config)
    env.update(extra)
    return env


def write_config(path: Path, text: str = "") -> Path:
    path.write_text('[ingest]\nretention = "3650d"\n' + text)
    return path


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "archiver", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


Rule = Callable[[int, httpx.Request], "httpx.Response | Exception | None"]
Rewrite = Callable[[int, httpx.Request, httpx.Response], "httpx.Response | Exception | None"]


class Faults(httpx.BaseTransport):
    """Forwards every request to the real server, but lets a rule answer or break some of them.

    `before(n, request)` may return a response or an exception instead of forwarding;
    `after(n, request, response)` may replace the real response or raise after the server
    has done the work (a connection dropped mid-page).
    """

    def __init__(self, before: Rule | None = None, after: Rewrite | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.before = before
        self.after = after
        self.count = 0
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.count += 1
            n = self.count
            self.paths.append(request.url.path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            injected = self.before(n, request) if self.before else None
            if isinstance(injected, Exception):
                raise injected
            if injected is not None:
                return injected
            response = self.inner.handle_request(request)
            if self.after is None:
                return response
            response.read()
            replaced = self.after(n, request, response)
            if isinstance(replaced, Exception):
                raise replaced
            return replaced or response
        finally:
            with self._lock:
                self.in_flight -= 1

    def close(self) -> None:
        self.inner.close()


class Forwarder:
    """A TCP forwarder on a fixed loopback port that can be switched off and on: an API outage.

    Off, nothing listens on the port (connection refused); on, every connection is piped to the
    real server. Switching off also cuts the connections in flight.
    """

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def on(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def off(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def read_terminal(primary: int) -> bytes:
    """Everything a child process writes to a pseudo-terminal, until it closes its side."""
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def sync_range(api_url: str, db: ArchiveRef, since: datetime, until: datetime) -> Settings:
    """Sync [since, until) of the server at `api_url` into `db` (settle 0); the settings used."""
    settings = settings_for(api_url, db, settle=timedelta(0))
    writer = writer_for(db)
    try:
        with client_for_test(api_url) as client:
            sync(settings, client, writer, since=since, until=until)
    finally:
        writer.close()
    return settings

"""A real Prefect server for tests and benchmarks, plus an independent oracle.

Everything here talks to the server over plain HTTP with httpx and never imports
the project package, so test expectations do not share bugs with the code under
test. No pytest imports: benchmark scripts use this module too.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import httpx

__all__ = [
    "delete",
    "server_states",
    "DEMO_FLOWS",
    "PrefectServer",
    "free_port",
    "make_event",
    "post_events",
    "run_flows_script",
    "server_count",
    "server_event_ids",
    "server_events",
    "wait_until_quiet",
    "wait_until_stored",
]

# The server refuses `limit` above 50 on /events/filter (HTTP 422).
PAGE_SIZE = 50
# /events/count-by/time refuses more than 1000 buckets per request.
MAX_BUCKETS = 1000
# Windows the oracle pages through are kept at or below this many events, unless
# a single second of history holds more (then that second is one window).
WINDOW_TARGET = 500
# count-by/time only buckets up to "now" on the server (later events make it
# answer 500), so the newest stretch is sized with plain /events/filter totals.
COUNT_BY_SAFETY = timedelta(minutes=5)

RelatedSpec = tuple[str, str] | Mapping[str, Any]


def free_port() -> int:
    """Ask the OS for a free TCP port on loopback (racy, but good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prefect_command(python: str | Path | None = None) -> list[str]:
    """The `prefect` CLI beside `python` (default: the interpreter running us, so the server matches our venv).

    Another venv's interpreter runs another Prefect version (tests/servers.py builds those).
    """
    interpreter = Path(python) if python is not None else Path(sys.executable)
    script = interpreter.with_name("prefect")
    if script.exists():
        return [str(script)]
    return [str(interpreter), "-m", "prefect"]


def _clean_env() -> dict[str, str]:
    """The parent environment without any PREFECT_* setting.

    A developer's PREFECT_API_URL/KEY/PROFILE, or a database URL or retention
    setting, must never leak into a test server or a test client.
    """
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PREFECT_")}


def _migrated_database(python: str | Path | None = None) -> Path | None:
    """A prefect.db with every migration of this Prefect release applied, built once per release.

    A server started on a fresh home spends about half its start-up CPU (some 10 s of 20 here)
    migrating an empty SQLite database to the same schema every time; copied into the home first,
    this one is already at head and the server only checks it. Kept beside the test venvs
    (tests/servers.venv_cache_dir), keyed by the release's dist-info name; a lock file serializes
    the processes that build it, and a build lands by rename, so a half-built one is never used.
    None when the release cannot be told (no dist-info beside the interpreter): migrate as usual.
    """
    from tests.servers import venv_cache_dir

    interpreter = Path(python) if python is not None else Path(sys.executable)
    releases = sorted(interpreter.parent.parent.glob("lib/python*/site-packages/prefect-*.dist-info"))
    if len(releases) != 1:
        return None
    root = venv_cache_dir() / "prefect-databases"
    root.mkdir(parents=True, exist_ok=True)
    database = root / releases[0].name.removesuffix(".dist-info") / "prefect.db"
    with open(root / f"{releases[0].name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if database.exists():
            return database
        building = Path(tempfile.mkdtemp(prefix="building-", dir=root))
        try:
            env = _clean_env()
            env["PREFECT_HOME"] = str(building)
            result = subprocess.run([*_prefect_command(python), "server", "database", "upgrade", "-y"], env=env,
                                    cwd=str(building), capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0 or not (building / "prefect.db").exists():
                raise RuntimeError(f"prefect server database upgrade exited {result.returncode}:\n"
                                   f"{result.stdout[-2000:]}{result.stderr[-4000:]}")
            database.parent.mkdir(exist_ok=True)
            os.replace(building / "prefect.db", database)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return database


class PrefectServer:
    """A real `prefect server start` subprocess on 127.0.0.1 with a throw-away home.

    Use as a context manager; `api_url` is ready once `__enter__`/`start()` returns.
    `python` runs the server from another venv's interpreter (another Prefect version);
    `env` adds server settings, e.g. PREFECT_API_DATABASE_CONNECTION_URL for PostgreSQL.
    `home` keeps the server's PREFECT_HOME (its SQLite database) in that directory across
    stop/start instead of a throw-away one, so a benchmark seeds it once and reuses it.
    """

    def __init__(
        self,
        retention_period: str = "P3650D",
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        python: str | Path | None = None,
        home: Path | None = None,
    ) -> None:
        # P3650D: tests back-date events by days/months and must not see them trimmed.
        self.retention_period = retention_period
        self.extra_env: dict[str, str] = dict(env or {})
        self.startup_timeout = startup_timeout
        self.python = python
        self.kept_home = home
        self.port: int = 0
        self.home: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any | None = None

    @property
    def api_url(self) -> str:
        """Base URL of the API, e.g. http://127.0.0.1:PORT/api (no trailing slash)."""
        if not self.port:
            raise RuntimeError("PrefectServer is not started")
        return f"http://127.0.0.1:{self.port}/api"

    def version(self) -> str:
        """The server's Prefect version, as GET /admin/version reports it."""
        with httpx.Client(timeout=10.0) as client:
            return str(_check(client.get(f"{self.api_url}/admin/version")).json())

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def start(self) -> PrefectServer:
        """Start the server and block until /health answers 200.

        Retries a couple of times with a new port if the free port got taken
        between `free_port()` and the server binding it.
        """
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except RuntimeError as exc:
                port_taken = "address already in use" in str(exc).lower()
                self.stop()
                if not port_taken or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        # Before the clock starts: building the migrated database, once per release, is no part of
        # this server's start-up (and took 90 s of a 120 s start-up timeout at load 15).
        own_database = self.kept_home is None and "PREFECT_API_DATABASE_CONNECTION_URL" not in self.extra_env
        migrated = _migrated_database(self.python) if own_database else None
        started = time.monotonic()
        if self.kept_home is not None:
            self.kept_home.mkdir(parents=True, exist_ok=True)
            self.home = self.kept_home
        else:
            self.home = Path(tempfile.mkdtemp(prefix="prefect-test-server-"))
            if migrated is not None:
                shutil.copyfile(migrated, self.home / "prefect.db")
        self.log_path = self.home / "server.log"
        self.port = free_port()
        env = _clean_env()
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": self.retention_period,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [
                *_prefect_command(self.python),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            cwd=str(self.home),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own process group: stop() signals the whole group, so no orphans.
            start_new_session=True,
        )
        deadline = started + self.startup_timeout
        health = f"{self.api_url}/health"
        with httpx.Client(timeout=5.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise RuntimeError(
                        f"prefect server exited early with code {code}; log tail:\n"
                        f"{self._log_tail()}"
                    )
                try:
                    if client.get(health).status_code == 200:
                        if not self._listening_elsewhere():
                            break
                        # Another test's server took the port first (free_port is racy): ours
                        # would fail to bind, and the tests would talk to a server not theirs.
                        raise RuntimeError(f"address already in use: port {self.port} answers for another process")
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prefect server not healthy after {self.startup_timeout:.0f} s "
                        f"at {health}; log tail:\n{self._log_tail()}"
                    )
                time.sleep(0.25)
        self.startup_seconds = time.monotonic() - started

    def _listening_elsewhere(self) -> bool:
        """Whether the process listening on our port is known and is not our server (or its children)."""
        import psutil

        try:
            ours = {p.pid for p in self._processes()}
            owners = {c.pid for c in psutil.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port}
        except (psutil.Error, PermissionError):
            return False  # cannot tell: as before, the answer is taken as ours
        return bool(owners) and None not in owners and not owners & ours

    def _processes(self) -> list[Any]:
        """The server's process and its descendants (uvicorn, services), as psutil.Process objects."""
        import psutil

        assert self._proc is not None, "the server is not running"
        leader = psutil.Process(self._proc.pid)
        return [leader, *leader.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the server's processes have used so far: what a client's
        requests cost the server is the difference across them (bench/ingest.py)."""
        import psutil

        total = 0.0
        for process in self._processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s, then remove its home (unless kept)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait()
            # Children (uvicorn, services) may outlive the leader; finish them too.
            self._signal_group(proc, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.home is not None:
            if self.kept_home is None:
                shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- events


def _iso(dt: datetime) -> str:
    """UTC ISO-8601 with a Z suffix; naive datetimes are refused, not guessed."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: pass a timezone-aware datetime")
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def make_event(
    occurred: datetime,
    event: str = "test.archiver.ping",
    resource_id: str | None = None,
    related: Sequence[RelatedSpec] | None = None,
    payload: Mapping[str, Any] | None = None,
    resource_extra: Mapping[str, str] | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """A Prefect event dict ready for POST /events.

    `related` items are (resource_id, role) tuples or full dicts (extra labels kept).
    Ids default to uuid4, like REST producers; the Prefect SDK would use uuid7.
    """
    event_id = id or str(uuid.uuid4())
    resource: dict[str, Any] = {
        "prefect.resource.id": resource_id or f"test.archiver.resource.{event_id}"
    }
    resource.update(resource_extra or {})
    related_list: list[dict[str, Any]] = []
    for item in related or ():
        if isinstance(item, Mapping):
            related_list.append(dict(item))
        else:
            rid, role = item
            related_list.append({"prefect.resource.id": rid, "prefect.resource.role": role})
    return {
        "id": event_id,
        "occurred": _iso(occurred),
        "event": event,
        "resource": resource,
        "related": related_list,
        "payload": dict(payload or {}),
    }


def _client(api_url: str, headers: Mapping[str, str] | None) -> httpx.Client:
    return httpx.Client(
        base_url=api_url.rstrip("/") + "/", headers=dict(headers or {}), timeout=60.0
    )


def _check(response: httpx.Response) -> httpx.Response:
    """raise_for_status, but with the body in the message (422s explain themselves)."""
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code}: {response.text[:2000]}",
            request=response.request,
            response=response,
        )
    return response


def post_events(
    api_url: str,
    events: Sequence[Mapping[str, Any]],
    batch: int = 100,
    per_second: float = 300,
    headers: Mapping[str, str] | None = None,
) -> None:
    """POST events in batches, paced to at most `per_second` events/s.

    Pacing matters: the server's in-memory queue holds ~10k messages and silently
    drops the overflow, so a fast burst loses events before they are stored.
    """
    if batch < 1 or per_second <= 0:
        raise ValueError("batch must be >= 1 and per_second > 0")
    started = time.monotonic()
    sent = 0
    with _client(api_url, headers) as client:
        for start in range(0, len(events), batch):
            # Don't send this batch before `sent` events' worth of time has passed.
            delay = started + sent / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            chunk = list(events[start : start + batch])
            _check(client.post("events", json=chunk))
            sent += len(chunk)


def _window_filter(since: datetime, until: datetime, order: str = "ASC") -> dict[str, Any]:
    return {"occurred": {"since": _iso(since), "until": _iso(until)}, "order": order}


def _filter_total(client: httpx.Client, since: datetime, until: datetime) -> int:
    body = {"filter": _window_filter(since, until), "limit": 1}
    return int(_check(client.post("events/filter", json=body)).json()["total"])


def server_count(
    api_url: str,
    since: datetime,
    until: datetime,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Events the server holds with occurred in [since, until] (both inclusive)."""
    with _client(api_url, headers) as client:
        return _filter_total(client, since, until)


def wait_until_stored(
    api_url: str,
    since: datetime,
    until: datetime,
    expected: int,
    timeout: float = 60,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll until the server holds exactly `expected` events in the window.

    Needed because POST /events only queues: storage happens seconds later.
    """
    deadline = time.monotonic() + timeout
    last = -1
    with _client(api_url, headers) as client:
        while True:
            last = _filter_total(client, since, until)
            if last == expected:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"server holds {last} events in [{_iso(since)}, {_iso(until)}], "
                    f"expected {expected} (waited {timeout} s)"
                )
            time.sleep(0.25)


def wait_until_quiet(
    api_url: str,
    since: datetime,
    until: datetime,
    settle: float = 6.0,
    timeout: float = 60,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Poll until the window's count is non-zero and unchanged for `settle` s; return it.

    For producers whose event count is not known up front (real flow runs): the
    server's event persister flushes every 5 s (batches of 20), so the last events
    (e.g. the final flow-run state) land seconds after the client process exits;
    `settle` must stay above that flush interval.
    """
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    with _client(api_url, headers) as client:
        while True:
            count = _filter_total(client, since, until)
            now = time.monotonic()
            if count != last:
                last, stable_since = count, now
            elif count > 0 and now - stable_since >= settle:
                return count
            if now > deadline:
                raise AssertionError(
                    f"event count in [{_iso(since)}, {_iso(until)}] did not settle "
                    f"within {timeout} s (last {last})"
                )
            time.sleep(0.25)


# --------------------------------------------------------------------------- oracle


def _page_token(next_page: str) -> str:
    """The raw page-token from a next_page URL.

    The server puts the token in the link without URL-encoding it, and the link's
    host/scheme/path are the server's own view (wrong behind a proxy), so only
    the token is reused. (In 3.8.8 it is base64 of base64, so it never holds '+'
    or '/', but a query-string parser would still turn any '+' into a space.)
    """
    marker = "page-token="
    idx = next_page.find(marker)
    if idx < 0:
        raise AssertionError(f"no page-token in next_page {next_page!r}")
    token = next_page[idx + len(marker) :].split("&", 1)[0]
    # Decode %xx escapes only (a future server might encode); keep '+' as '+'.
    return unquote(token)


def _count_buckets(
    client: httpx.Client, since: datetime, until: datetime, interval_s: int
) -> list[tuple[datetime, datetime, int]]:
    # Prefect on SQLite rounds an event to the millisecond before it takes its second: one in the
    # last half millisecond before a second is counted in it, and when the request lays out no
    # bucket for that second (it starts at or after `until`) the server answers 500. So ask until just past it; the
    # planner skips buckets past `until` (archiver.prefect.client.count_by_until does the same).
    until = max(until, (until + timedelta(microseconds=500)).replace(microsecond=0) + timedelta(microseconds=1))
    body = {
        "filter": _window_filter(since, until),
        "time_unit": "second",
        "time_interval": float(interval_s),
    }
    rows = _check(client.post("events/count-by/time", json=body)).json()
    return [
        (
            datetime.fromisoformat(r["start_time"].replace("Z", "+00:00")),
            datetime.fromisoformat(r["end_time"].replace("Z", "+00:00")),
            int(r["count"]),
        )
        for r in rows
    ]


def _plan_by_buckets(
    client: httpx.Client, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """Contiguous windows covering [since, until], each ~WINDOW_TARGET events at most.

    Buckets are whole seconds (SQLite buckets by integer epoch seconds), at most
    MAX_BUCKETS per request; neighbours are merged up to WINDOW_TARGET and a
    crowded bucket is split again with a finer interval. Windows tile the range
    with no gap whatever the buckets say, so a miscount costs speed, not ids.
    """
    span = (until - since).total_seconds()
    interval = max(1, math.ceil(span / (MAX_BUCKETS - 1)))
    tick = timedelta(microseconds=1)
    windows: list[tuple[datetime, datetime]] = []
    pending_lo, pending_count = since, 0
    for start, end, count in _count_buckets(client, since, until, interval):
        lo, hi = max(start, since), min(end, until)
        if lo > hi or lo < pending_lo:
            continue
        if count > WINDOW_TARGET and interval > 1:
            if pending_lo < lo:
                windows.append((pending_lo, lo - tick))
            windows.extend(_plan_by_buckets(client, lo, hi))
            pending_lo, pending_count = hi + tick, 0
        elif pending_count and pending_count + count > WINDOW_TARGET:
            windows.append((pending_lo, lo - tick))
            pending_lo, pending_count = lo, count
        else:
            pending_count += count
    if pending_lo <= until:
        windows.append((pending_lo, until))
    return windows


def _plan_by_bisection(
    client: httpx.Client, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """Windows for a stretch count-by/time cannot bucket (at or after server 'now')."""
    total = _filter_total(client, since, until)
    if total <= WINDOW_TARGET or until - since <= timedelta(milliseconds=1):
        return [(since, until)] if total else []
    mid = since + (until - since) / 2
    return _plan_by_bisection(client, since, mid) + _plan_by_bisection(
        client, mid + timedelta(microseconds=1), until
    )


def _plan_windows(
    client: httpx.Client, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    horizon = datetime.now(timezone.utc) - COUNT_BY_SAFETY
    if until <= horizon:
        return _plan_by_buckets(client, since, until)
    if since > horizon:
        return _plan_by_bisection(client, since, until)
    return _plan_by_buckets(client, since, horizon) + _plan_by_bisection(
        client, horizon + timedelta(microseconds=1), until
    )


def _walk_window(
    client: httpx.Client, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """All events of one window via /events/filter + /events/filter/next."""
    body = {"filter": _window_filter(since, until), "limit": PAGE_SIZE}
    page = _check(client.post("events/filter", json=body)).json()
    total = int(page["total"])
    events: list[dict[str, Any]] = list(page["events"])
    pages = 1
    while page.get("next_page"):
        token = _page_token(page["next_page"])
        page = _check(client.get("events/filter/next", params={"page-token": token})).json()
        events.extend(page["events"])
        pages += 1
        if pages > total // PAGE_SIZE + 5:
            raise AssertionError(f"paging did not end after {pages} pages (total {total})")
    distinct = {e["id"] for e in events}
    if len(distinct) != total:
        raise AssertionError(
            f"window [{_iso(since)}, {_iso(until)}]: {len(distinct)} distinct ids "
            f"from {len(events)} rows, but total says {total}"
        )
    # Keep one copy per id (offset paging may repeat rows if the window changed).
    unique: dict[str, dict[str, Any]] = {}
    for e in events:
        unique.setdefault(e["id"], e)
    return list(unique.values())


def _iter_server_events(
    api_url: str,
    since: datetime,
    until: datetime,
    headers: Mapping[str, str] | None,
) -> Iterator[dict[str, Any]]:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since/until must be timezone-aware")
    if since > until:
        raise ValueError("since is after until")
    seen: set[str] = set()
    with _client(api_url, headers) as client:
        expected = _filter_total(client, since, until)
        for lo, hi in _plan_windows(client, since, until):
            for event in _walk_window(client, lo, hi):
                if event["id"] in seen:
                    raise AssertionError(f"event {event['id']} appeared in two windows")
                seen.add(event["id"])
                yield event
        if len(seen) != expected:
            raise AssertionError(
                f"windows yielded {len(seen)} events but the whole range counts {expected}"
                " (was the server still receiving events?)"
            )


def server_events(
    api_url: str,
    since: datetime,
    until: datetime,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every event (full JSON) the server holds with occurred in [since, until].

    Independent of the project code: count-by/time sizes small windows, each is
    paged with the server's own tokens, and every window is checked against its
    `total`. Only trustworthy on a quiet server (offset paging underneath).
    """
    return list(_iter_server_events(api_url, since, until, headers))


def server_event_ids(
    api_url: str,
    since: datetime,
    until: datetime,
    headers: Mapping[str, str] | None = None,
) -> set[str]:
    """The ids of `server_events(...)`: the oracle for 'what should be archived'."""
    return {e["id"] for e in _iter_server_events(api_url, since, until, headers)}


# --------------------------------------------------------------------------- flows


def run_flows_script(
    api_url: str,
    script: str,
    timeout: float = 180,
    env: Mapping[str, str] | None = None,
    python: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run Python source in a fresh interpreter pointed at `api_url`.

    A temporary PREFECT_HOME keeps the developer's profiles out; `env` adds
    client settings (e.g. PREFECT_API_AUTH_STRING); `python` is another venv's
    interpreter (a client of the same Prefect release as the server it talks to).
    check=False: the caller asserts.
    """
    home = Path(tempfile.mkdtemp(prefix="prefect-test-client-"))
    try:
        script_path = home / "flows_script.py"
        script_path.write_text(script, encoding="utf-8")
        child_env = _clean_env()
        child_env.update(
            {
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(home),
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        child_env.update(env or {})
        return subprocess.run(
            [str(python or sys.executable), str(script_path)],
            env=child_env,
            cwd=str(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


DEMO_FLOWS = '''
"""Demo flows: tasks, a retried task, and a failing flow run."""
from prefect import flow, task

_attempts = {"flaky": 0}


@task
def add(x: int, y: int) -> int:
    return x + y


@task(retries=1, retry_delay_seconds=0)
def flaky(x: int) -> int:
    _attempts["flaky"] += 1
    if _attempts["flaky"] == 1:
        raise RuntimeError("first attempt fails on purpose")
    return x * 2


@flow(name="archiver-demo")
def demo(n: int = 3) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return flaky(total)


@flow(name="archiver-demo-failing")
def failing() -> None:
    raise ValueError("this flow fails on purpose")


if __name__ == "__main__":
    assert demo() == 6
    try:
        failing()
    except ValueError:
        pass
    else:
        raise SystemExit("failing flow did not fail")
    print("DEMO_FLOWS_OK")
'''


def delete(api: str, path: str) -> None:
    """DELETE on the server; its SQLite database is sometimes briefly busy (HTTP 503)."""
    with httpx.Client(base_url=api + "/", timeout=30) as http:
        for _ in range(20):
            response = http.delete(path)
            if response.status_code != 503:
                break
            time.sleep(0.5)
    assert response.status_code == 204, (path, response.status_code, response.text)


def server_states(api: str, kind: str, run_id: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=api + "/", timeout=30) as http:
        response = http.get(f"{kind}_run_states/", params={f"{kind}_run_id": run_id})
        response.raise_for_status()
        return response.json()

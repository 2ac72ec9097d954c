"""The Prefect REST API over httpx: the few event endpoints we need, with retries in one place.

Status codes are sorted once, here: connection errors, timeouts, 5xx and 429 are retried with
exponential backoff and jitter (honouring Retry-After), bounded in count and in total time;
401/403/404 and other 4xx are final and raised with a message that says what to check.
Credentials are sent as headers and never appear in a message or a log line.

Like Prefect's own client it honours custom headers, a CA bundle or skipped TLS verification,
and CSRF tokens: a server with CSRF protection wants `Prefect-Csrf-Token` and
`Prefect-Csrf-Client` on every POST, even read-only filters (prefect/client/base.py).
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import logging
import os
import random
import re
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from archiver import __version__
from archiver.errors import (
    ApiAuthError,
    ApiBadResponse,
    ApiError,
    ApiNotFound,
    ApiRejected,
    ApiTlsError,
    ApiUnavailable,
    ConfigError,
    PageTokenRejected,
)
from archiver.prefect.events import PAGE_SIZE, format_timestamp, parse_timestamp
from archiver.prefect.runs import run_kind as kind_named

if TYPE_CHECKING:
    from archiver.config import Settings

log = logging.getLogger("archiver.prefect.client")

# Headers the client manages itself; Prefect ignores custom values for these too.
PROTECTED_HEADERS = {"user-agent", "prefect-csrf-token", "prefect-csrf-client"}
# Fetch a new CSRF token this long before the old one expires.
CSRF_MARGIN = timedelta(minutes=1)
_CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


def tls_verify(ssl_cert_file: Path | None = None, insecure_skip_verify: bool = False) -> ssl.SSLContext | bool:
    """What httpx should verify the server's certificate with, from Prefect's TLS settings."""
    if insecure_skip_verify:
        log.warning(
            "TLS certificate verification is off (PREFECT_API_TLS_INSECURE_SKIP_VERIFY): anyone on the "
            "network path can read the API key; use PREFECT_API_SSL_CERT_FILE with your CA bundle instead"
        )
        return False
    if ssl_cert_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ssl_cert_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"PREFECT_API_SSL_CERT_FILE {ssl_cert_file} is not a readable PEM CA bundle ({exc})"
        ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on a retriable failure."""

    max_retries: int = 6
    max_total: timedelta = timedelta(minutes=2)
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A refused connection means nothing listens at the URL: someone at a terminal wants to hear
    # that at once; a service or a scheduled flow waits for the server to come back.
    retry_refused: bool = True

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based): full jitter, or Retry-After."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay * 4)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class Pacer:
    """Spaces requests evenly to stay under a requests-per-minute limit, across threads.

    Prefect Cloud meters API requests per minute by plan (625 / 1,250 / 2,500 / 5,000, event
    reads included) and answers 429 past it; sending at an even pace never trips the limit,
    where collecting 429s and backing off would stall the whole pool.
    """

    def __init__(self, per_minute: int, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / per_minute
        self._sleep = sleep
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller's turn: each turn comes `interval` seconds after the last."""
        with self._lock:
            now = self._clock()
            turn = max(now, self._next)
            self._next = turn + self.interval
        if turn > now:
            self._sleep(turn - now)


@dataclass(frozen=True)
class RequestCounts:
    """Requests a client sent, retries included, sorted by what they cost a sync."""

    pages: int = 0  # event pages: POST /events/filter and GET /events/filter/next
    counts: int = 0  # POST /events/count-by/time
    other: int = 0  # everything else: runs, states, blocks, CSRF tokens

    @property
    def total(self) -> int:
        return self.pages + self.counts + self.other

    def __sub__(self, before: RequestCounts) -> RequestCounts:
        """The requests sent since `before` was taken."""
        return RequestCounts(self.pages - before.pages, self.counts - before.counts, self.other - before.other)


# POST /logs/filter is asked for this many logs once; a server that allows fewer says how many
# (a 422), and Prefect's default limit (PREFECT_SERVER_API_DEFAULT_LIMIT) is what it says then.
LOG_PAGE_PROBE = 1000
DEFAULT_API_LIMIT = 200
_PAGE_PATHS = frozenset({"events/filter", "events/filter/next"})
_COUNT_PATHS = frozenset({"events/count-by/time"})


@dataclass(frozen=True)
class Bucket:
    """One count-by/time bucket: events with occurred in [start, end] (both inclusive)."""

    start: datetime
    end: datetime
    count: int


def _event_page_problem(data: Any) -> str | None:
    """What keeps `data` from being an EventPage ({"events": [...], "total": n, ...}), or None."""
    if isinstance(data, dict) and isinstance(data.get("detail"), str) and "events" not in data:
        return f"a body that is not an EventPage but {{'detail': {data['detail'][:120]!r}}}"
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return "a body that is not an EventPage (no 'events' list)"
    if isinstance(data.get("total"), bool) or not isinstance(data.get("total"), int):
        return "a body that is not an EventPage (no integer 'total')"
    return None


def redact_url(url: str | httpx.URL) -> str:
    """The URL without user:password and query, safe to show."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _refused(exc: BaseException) -> bool:
    """Whether a transport error is a refused connection (httpx wraps httpcore wraps the OSError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        moment = email.utils.parsedate_to_datetime(value)
        return moment.timestamp() - time.time() if moment else None


@dataclass
class _EarlyRead:
    """A read_events sent ahead (PrefectClient.read_events_early): its thread, its attempts, its outcome."""

    thread: threading.Thread = field(default_factory=threading.Thread)
    sent: Counter[str] = field(default_factory=Counter)
    page: Any = None
    error: BaseException | None = None


def _read_key(filter: dict[str, Any], limit: int) -> str:
    """Which read_events an early read answers: the same filter (key order aside) and limit."""
    return json.dumps([filter, limit], sort_keys=True)


class PrefectClient:
    """A synchronous client for one Prefect API (self-hosted `…/api` or a Cloud workspace URL).

    Safe to share between threads: httpx.Client pools connections under a lock.
    """

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        auth_string: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        custom_headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        csrf_support: bool = True,
        max_requests_per_minute: int | None = None,
        compression: str = "auto",
    ) -> None:
        parts = urlsplit(api_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"PREFECT_API_URL {redact_url(api_url)!r} is not an http(s) URL "
                "(self-hosted: http://HOST:4200/api)"
            )
        headers = {"User-Agent": f"prefect-archiver/{__version__}", "Accept": "application/json"}
        if not wants_gzip(api_url, compression):
            headers["Accept-Encoding"] = "identity"  # else httpx's default, which offers gzip
        for name, value in (custom_headers or {}).items():
            if name.lower() in PROTECTED_HEADERS:
                log.warning("ignoring custom header %r from PREFECT_CLIENT_CUSTOM_HEADERS: the client sets it itself", name)
            elif name.lower() == "authorization" and (api_key or auth_string):
                raise ConfigError(
                    "PREFECT_CLIENT_CUSTOM_HEADERS sets Authorization, which would replace the credentials "
                    "from PREFECT_API_KEY / PREFECT_API_AUTH_STRING: remove one of the two"
                )
            else:
                headers[name] = value
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        elif auth_string:
            headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
        self.base_url = api_url.strip().rstrip("/") + "/"
        # The URL as the user set it, for messages about the API as a whole (not one endpoint).
        self.shown_url = redact_url(api_url.strip())
        self.retry = retry
        # Requests sent, by endpoint path, retries included: reports read requests() instead.
        self.sent: Counter[str] = Counter()
        self._sent_lock = threading.Lock()
        self._log_page_size: int | None = None  # learnt by log_page_size()
        self.csrf_support = csrf_support
        self._csrf_client = str(uuid.uuid4())
        self._csrf_token: str | None = None
        self._csrf_expiration: datetime | None = None
        self._csrf_lock = threading.Lock()
        # fetch_csrf_token_early(): the thread asking, and what it raised (for the first POST to raise).
        self._csrf_early: threading.Thread | None = None
        self._csrf_early_error: BaseException | None = None
        # read_events_early(): reads sent ahead, by _read_key, until read_events takes them.
        self._early_reads: dict[str, _EarlyRead] = {}
        self._sleep = sleep
        # Set by close(): an early read still in flight then fails quietly (nobody waits for it).
        self._closed = False
        # Off by default: a self-hosted server has no such limit (api.max_requests_per_minute).
        self._pacer = Pacer(max_requests_per_minute, sleep) if max_requests_per_minute else None
        _import_httpcore()
        verify = plain_http_verify(api_url, verify)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            verify=verify,
        )

    def __enter__(self) -> PrefectClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._http.close()

    def requests(self) -> RequestCounts:
        """The requests sent so far; subtract an earlier snapshot for those of one pass."""
        with self._sent_lock:
            pages = sum(n for path, n in self.sent.items() if path in _PAGE_PATHS)
            counts = sum(n for path, n in self.sent.items() if path in _COUNT_PATHS)
            return RequestCounts(pages, counts, self.sent.total() - pages - counts)

    # -- events -------------------------------------------------------------------------------

    def read_events(self, filter: dict[str, Any], limit: int = PAGE_SIZE) -> dict[str, Any]:
        """POST /events/filter: the first EventPage for `filter` (keys go under "filter")."""
        if self._early_reads:  # one dict look-up per page otherwise
            with self._sent_lock:
                early = self._early_reads.pop(_read_key(filter, limit), None)
            if early is not None:
                return self._take(early)
        page: dict[str, Any] = self.request(
            "POST", "events/filter", json={"filter": filter, "limit": limit}, expect=_event_page_problem
        )
        return page

    def read_events_early(self, filter: dict[str, Any], limit: int = PAGE_SIZE) -> None:
        """Send read_events(filter, limit) now, in a thread; the first read_events asking the same takes its answer.

        For a read the caller knows it will make before it can make it (a sync's first probe,
        asked while the archive opens: first_read.py), so its round trip overlaps that work. It
        counts in requests() when it is taken, so the pass that takes it counts it as its own, and
        there it raises what it ran into, as if it had been sent then. One not taken is not counted.
        """
        early = _EarlyRead()

        def fetch() -> None:
            try:
                early.page = self._send("POST", "events/filter", early.sent, expect=_event_page_problem,
                                        json={"filter": filter, "limit": limit})
            except BaseException as exc:  # raised again by read_events
                early.error = exc

        early.thread = threading.Thread(target=fetch, name="early-read", daemon=True)
        early.thread.start()  # before it is listed: a thread is joined only once started
        with self._sent_lock:
            self._early_reads[_read_key(filter, limit)] = early

    def _take(self, early: _EarlyRead) -> dict[str, Any]:
        """An early read's page (or its error), its requests now counted."""
        early.thread.join()
        with self._sent_lock:
            self.sent.update(early.sent)
        if early.error is not None:
            raise early.error
        page: dict[str, Any] = early.page
        return page

    def read_next_page(self, next_page: str) -> dict[str, Any]:
        """The page after one whose `next_page` was given.

        The server builds `next_page` from its own view of the request (wrong behind a TLS proxy
        or a custom base path), so only its page token is used, against our base URL.
        """
        tokens = parse_qs(urlsplit(next_page).query).get("page-token")
        if not tokens:
            raise ApiBadResponse(f"next_page {redact_url(next_page)!r} carries no page-token")
        page: dict[str, Any] = self.request(
            "GET", "events/filter/next", params={"page-token": tokens[0]}, expect=_event_page_problem
        )
        return page

    def iter_pages(self, filter: dict[str, Any], limit: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Pages of one query, following next_page until the server says there are no more."""
        page = self.read_events(filter, limit)
        yield page
        while page.get("next_page"):
            page = self.read_next_page(page["next_page"])
            yield page

    def read_objects(self, collection: str, ids: list[str]) -> list[dict[str, Any]]:
        """POST /<collection>/filter for these ids (flow_runs, task_runs, deployments, flows, work_pools)."""
        data = self.request("POST", f"{collection}/filter", json={collection: {"id": {"any_": ids}}, "limit": len(ids)})
        if not isinstance(data, list) or not all(isinstance(o, dict) and "id" in o for o in data):
            raise ApiBadResponse(f"POST {collection}/filter answered something that is not a list of objects")
        return data

    def read_run_states(self, run_kind: str, run_id: str) -> list[dict[str, Any]] | None:
        """GET /flow_run_states/?flow_run_id= (or task_run_states): a run's state records, oldest first.

        None when the server answers 404; a run it no longer has gives [] (its route filters by id).
        """
        collection = kind_named(run_kind).states_path
        try:
            data = self.request("GET", collection, params={f"{run_kind}_id": run_id})
        except ApiNotFound:
            return None
        if not isinstance(data, list) or not all(isinstance(s, dict) and "id" in s and "type" in s for s in data):
            raise ApiBadResponse(f"GET {collection} answered something that is not a list of states")
        return data

    # -- run logs and artifacts ---------------------------------------------------------------

    def log_page_size(self) -> int:
        """The most logs one POST /logs/filter answers on this server, learnt once per client.

        The server refuses a limit above PREFECT_SERVER_API_DEFAULT_LIMIT with a 422 that names it
        (server/api/dependencies.py, LimitBody): asked once with LOG_PAGE_PROBE and a filter that
        matches nothing, then remembered. A refusal that names no number means Prefect's default.
        """
        with self._sent_lock:
            known = self._log_page_size
        if known is not None:
            return known
        size = LOG_PAGE_PROBE
        try:
            self.request("POST", "logs/filter", json={"logs": {"flow_run_id": {"any_": []}}, "limit": size})
        except ApiRejected as exc:
            found = re.search(r"less than or equal to (\d+)", str(exc))
            size = int(found.group(1)) if found and int(found.group(1)) > 0 else DEFAULT_API_LIMIT
        with self._sent_lock:
            self._log_page_size = size
        return size

    def read_logs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /logs/filter with `body` (archiver.prefect.logs.logs_body): a list of Log objects."""
        data = self.request("POST", "logs/filter", json=body)
        if not isinstance(data, list) or not all(isinstance(g, dict) for g in data):
            raise ApiBadResponse("POST logs/filter answered something that is not a list of logs")
        return data

    def read_artifacts(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /artifacts/filter with `body` (archiver.prefect.logs.artifacts_body): a list of Artifact objects."""
        data = self.request("POST", "artifacts/filter", json=body)
        if not isinstance(data, list) or not all(isinstance(a, dict) for a in data):
            raise ApiBadResponse("POST artifacts/filter answered something that is not a list of artifacts")
        return data

    def read_block_document(self, block_document_id: str) -> dict[str, Any] | None:
        """GET /block_documents/{id} without secrets (the server's default); None when it has no such block."""
        try:
            data = self.request("GET", f"block_documents/{block_document_id}", params={"include_secrets": "false"})
        except ApiNotFound:
            return None
        if not isinstance(data, dict) or "id" not in data:
            raise ApiBadResponse("GET block_documents/{id} answered something that is not a block document")
        return data

    def count_by_time(
        self,
        since: datetime,
        until: datetime,
        unit: str,
        interval: float = 1.0,
    ) -> list[Bucket]:
        """POST /events/count-by/time over [since, until] (inclusive); at most 1000 buckets.

        Asked up to just past the next whole second when `until` lies within half a millisecond
        of it or on it (count_by_until), and answered without the buckets that start after `until`.
        """
        body = {
            "filter": {"occurred": {"since": format_timestamp(since), "until": format_timestamp(count_by_until(until))}},
            "time_unit": unit,
            "time_interval": interval,
        }
        data = self.request("POST", "events/count-by/time", json=body)
        try:
            buckets = [
                Bucket(parse_timestamp(b["start_time"]), parse_timestamp(b["end_time"]), int(b["count"]))
                for b in data
            ]
        except (TypeError, KeyError, ValueError) as exc:
            raise ApiBadResponse(f"count-by answer is not a list of buckets ({exc})") from None
        return [b for b in buckets if b.start <= until]

    # -- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, expect: Callable[[Any], str | None] | None = None, **kwargs: Any) -> Any:
        """Send one request with retries; return its decoded JSON body (None for 204).

        `expect` checks a 200's body and says what is wrong with it: such a body is retried like
        one that is not JSON (proxies answer 200 with `{"detail": "upstream temporarily
        unavailable"}`), and ApiBadResponse is raised when the retries run out.
        """
        return self._send(method, path, self.sent, expect=expect, **kwargs)

    def _send(self, method: str, path: str, sent: Counter[str], *,
              expect: Callable[[Any], str | None] | None = None, **kwargs: Any) -> Any:
        """request(), each attempt counted in `sent` (an early read's own until it is taken)."""
        started = time.monotonic()
        attempt = 0
        csrf_refreshed = False
        while True:
            attempt += 1
            retry_after: float | None = None
            unreachable = False
            bad_body = False
            headers = self._csrf_headers() if method in _CHANGES else {}
            if self._pacer is not None:
                self._pacer.wait()
            with self._sent_lock:
                sent[path] += 1
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.UnsupportedProtocol:
                raise ConfigError(f"PREFECT_API_URL {redact_url(self.base_url)!r} is not an http(s) URL") from None
            except httpx.TransportError as exc:
                if self._closed:  # a thread sent ahead, cut off by close(): nothing to retry or report
                    raise ApiUnavailable(f"{method} {path} was cut off: the client was closed") from None
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc.__context__, ssl.SSLCertVerificationError):
                    raise ApiTlsError(
                        f"the TLS certificate of {redact_url(self.base_url)} was not trusted ({exc}): set "
                        "PREFECT_API_SSL_CERT_FILE to the CA bundle that signed it (or, for testing only, "
                        "PREFECT_API_TLS_INSECURE_SKIP_VERIFY=true)"
                    ) from None
                if not self.retry.retry_refused and _refused(exc):
                    raise ApiUnavailable(
                        f"nothing is listening at {self.shown_url} (connection refused): start the Prefect "
                        "server, or set PREFECT_API_URL (or --api-url) to where it runs"
                    ) from None
                problem = f"{type(exc).__name__}"
                # Not reaching the server at all is about the URL, not the endpoint asked (which may
                # be the CSRF token fetched before the first POST): name what the user set.
                unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                if response.status_code < 300:
                    if response.status_code == 204 or not response.content:
                        return None
                    try:
                        data = response.json()
                    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
                        problem = "a body that is not JSON"
                    else:
                        found = expect(data) if expect else None
                        if found is None:
                            return data
                        problem = found
                    bad_body = True
                elif response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    retry_after = _retry_after(response)
                elif (response.status_code == 403 and headers and not csrf_refreshed
                      and "Invalid CSRF token" in response.text):
                    # The token expired or the server forgot it: fetch a new one and send again.
                    self._forget_csrf_token(headers)
                    csrf_refreshed = True
                    attempt -= 1
                    continue
                else:
                    raise self._final_error(method, path, response)
            elapsed = time.monotonic() - started
            delay = self.retry.delay(attempt, retry_after)
            if attempt > self.retry.max_retries or elapsed + delay > self.retry.max_total.total_seconds():
                error = ApiBadResponse if bad_body else ApiUnavailable
                what = f"the Prefect API at {self.shown_url}" if unreachable else f"{method} {redact_url(self.base_url + path)}"
                raise error(
                    f"{what} kept failing ({problem}) after {attempt} attempts in {elapsed:.0f}s; "
                    "is the Prefect server up and PREFECT_API_URL right?"
                )
            log.warning(
                "%s %s failed (%s); retry %d/%d in %.1fs",
                method, self.shown_url if unreachable else path, problem, attempt, self.retry.max_retries, delay,
            )
            self._sleep(delay)

    # -- CSRF ---------------------------------------------------------------------------------

    def fetch_csrf_token_early(self) -> None:
        """Ask for the CSRF token now, in a thread, so it is in hand when the first POST is ready.

        Every POST (read-only filters too) needs the token, so a sync asks for it anyway: asked
        while the archive opens and migrates, its round trip costs nothing. The first POST waits for
        it and raises what it raised (a refused connection, a 401), as if it had asked itself.
        """
        if not self.csrf_support or self._csrf_early is not None:
            return

        def fetch() -> None:
            try:
                with self._csrf_lock:
                    if self._csrf_token is None:
                        self._fetch_csrf_token()
            except BaseException as exc:  # raised again by the first POST (_csrf_headers)
                self._csrf_early_error = exc

        self._csrf_early = threading.Thread(target=fetch, name="csrf-token", daemon=True)
        self._csrf_early.start()

    def _csrf_headers(self) -> dict[str, str]:
        """Prefect-Csrf-* headers for a POST, fetching a token first when needed; {} when off."""
        early = self._csrf_early
        if early is not None:
            early.join()
            error, self._csrf_early_error = self._csrf_early_error, None
            if error is not None:
                raise error
        if not self.csrf_support:
            return {}
        with self._csrf_lock:
            now = datetime.now(timezone.utc)
            if self._csrf_token is None or (self._csrf_expiration and now > self._csrf_expiration - CSRF_MARGIN):
                self._fetch_csrf_token()
            if self._csrf_token is None:
                return {}
            return {"Prefect-Csrf-Token": self._csrf_token, "Prefect-Csrf-Client": self._csrf_client}

    def _fetch_csrf_token(self) -> None:
        """GET /csrf-token; a server without CSRF protection (422) or too old for it (404) turns it off."""
        try:
            data = self.request("GET", "csrf-token", params={"client": self._csrf_client})
        except (ApiNotFound, ApiRejected):
            self.csrf_support = False
            return
        try:
            self._csrf_token = str(data["token"])
            self._csrf_expiration = parse_timestamp(data["expiration"])
        except (TypeError, KeyError, ValueError):
            raise ApiBadResponse("GET /csrf-token answered without a token and expiration") from None

    def _forget_csrf_token(self, sent: Mapping[str, str]) -> None:
        with self._csrf_lock:
            if self._csrf_token == sent.get("Prefect-Csrf-Token"):
                self._csrf_token = None

    def _final_error(self, method: str, path: str, response: httpx.Response) -> ApiError:
        where = f"{method} {redact_url(self.base_url + path)}"
        status = response.status_code
        if status == 403 and path == "events/filter/next":
            return PageTokenRejected(f"{where}: the server refused the page token (HTTP 403)")
        if status == 403 and "CSRF" in response.text:
            return ApiAuthError(
                f"{where} was refused (HTTP 403: {response.text[:120]}): the server requires CSRF tokens; "
                "leave PREFECT_CLIENT_CSRF_SUPPORT_ENABLED on (the default)"
            )
        if status in (401, 403):
            return ApiAuthError(
                f"{where} was refused (HTTP {status}): check PREFECT_API_KEY (Prefect Cloud) or "
                "PREFECT_API_AUTH_STRING (self-hosted basic auth) for this server"
            )
        if status == 404:
            return ApiNotFound(
                f"{where} answered 404: check PREFECT_API_URL — a self-hosted URL ends in /api, "
                "a Cloud URL is https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>"
            )
        detail = response.text[:300].replace("\n", " ")
        return ApiRejected(f"{where} was rejected (HTTP {status}): {detail}")


# How far Prefect on SQLite may move an event forward when it counts it: it buckets
# strftime('%s', occurred), and SQLite rounds a time to the millisecond before it takes the second.
_SQLITE_ROUNDING = timedelta(microseconds=500)


def count_by_until(until: datetime) -> datetime:
    """The `until` to send for a count-by that should cover [since, until].

    Prefect on SQLite counts an event in the last half millisecond of a second in the next
    second's bucket. When that second starts at or after `until`, the server has laid out no bucket
    for it and answers 500 (an IndexError in process_time_based_counts; met on 3.9.1 at 1M events,
    where an event at 22:59:59.999764 ended a span at 22:59:59.999999). So a count-by whose
    `until` is that close to the next second asks until just past it: the server then lays out
    the bucket, and count_by_time drops it. Such an event is then counted in no bucket of this
    span: a server count below the archive's, which planning and reconcile take as they take a
    trimmed server. On PostgreSQL (exact buckets) the answer is the same as without it, but for
    events in the gap up to the next second, there at most half a millisecond long.
    """
    second = (until + _SQLITE_ROUNDING).replace(microsecond=0)  # the latest an event up to `until` is counted in
    return max(until, second + timedelta(microseconds=1))


# Where httpx (trust_env) finds a proxy, which may itself be reached over TLS.
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


# Host names that never leave this machine or its network: a Docker or Kubernetes service name
# ("prefect-server", one label), mDNS and cluster names (*.local, *.svc.cluster.local), *.internal.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def on_local_network(api_url: str) -> bool:
    """Whether the API's host is this machine or a private network: localhost, a one-label name,
    a local suffix (_LOCAL_SUFFIXES), or a loopback, private or link-local address."""
    host = (urlsplit(api_url.strip()).hostname or "").rstrip(".").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def wants_gzip(api_url: str, compression: str) -> bool:
    """Whether to ask the server for gzipped responses (api.compression: "auto", "gzip", "off").

    Prefect's API gzips every response over 500 bytes a client accepts gzip for (GZipMiddleware),
    and a page of 50 events is tens of kilobytes: compressing it costs the server CPU, which a
    server on the same machine or network (auto's "off") saves for answering, while the bytes cost
    next to nothing to send. A 12,000-event backfill from a server on 127.0.0.1 took the server
    0.8 s less CPU uncompressed (median of 7 paired runs of 4-6 s). Over the internet (Prefect
    Cloud) gzip pays for itself.
    """
    if compression == "auto":
        return not on_local_network(api_url)
    return compression == "gzip"


def plain_http(api_url: str) -> bool:
    """Whether a client of `api_url` only ever speaks plain HTTP: an http:// URL, and no proxy in the
    environment (httpx's trust_env; a proxy may itself be reached over TLS).

    Every request is relative to the base URL and redirects are not followed, so such a client
    never uses a TLS context. httpx builds one when the client is made all the same, and loading a
    CA bundle into it costs 50-60 ms of CPU (250 ms for the first in a process, with certifi's
    import) before the first request: plain_http_verify and client_for skip that.
    """
    return (urlsplit(api_url.strip()).scheme == "http"
            and not any(name.lower() in _PROXY_VARIABLES for name in os.environ))


def plain_http_verify(api_url: str, verify: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    """What the client of `api_url` verifies with: for a plain-HTTP client (plain_http) left at the
    default, a context as strict as the default (CERT_REQUIRED, check_hostname) that trusts no CA,
    so anything that did reach TLS through it would fail, never pass; otherwise `verify`."""
    if verify is not True or not plain_http(api_url):
        return verify
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _import_httpcore() -> None:
    """Import httpcore (httpx imports it when the first client is made) without trio and h2.

    httpcore imports trio and h2 whenever they are installed (httpcore/_synchronization.py,
    _sync/__init__.py): ~0.15 s of CPU before the first request, for an async backend and an HTTP/2
    this synchronous HTTP/1.1 client never uses. They are marked absent only while httpcore is
    imported, and only when nothing imported them before (Prefect's own client, in a flow's process,
    has: then nothing changes); anything importing them afterwards gets them as usual.
    """
    if "httpcore" in sys.modules:
        return
    absent = [name for name in ("trio", "h2") if name not in sys.modules]
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401
    finally:
        for name in absent:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def client_for(
    settings: Settings, retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
    interactive: bool = False,
) -> PrefectClient:
    """A client configured from settings (the same environment a flow runs with).

    `sleep` waits between retries; a stoppable process passes one that ends the wait on a stop.
    `interactive`: a command someone waits for at a terminal, which fails at once on a refused
    connection instead of retrying it for minutes.
    """
    api_url = settings.require_api()
    # The CA bundle is never used by a plain-HTTP client (plain_http): not loaded, so not checked either.
    skip_bundle = plain_http(api_url) and not settings.tls_insecure_skip_verify
    return PrefectClient(
        api_url,
        sleep=sleep,
        api_key=settings.api_key,
        auth_string=settings.auth_string,
        timeout=settings.timeout.total_seconds(),
        retry=retry or RetryPolicy(settings.max_retries, settings.max_retry_time, retry_refused=not interactive),
        custom_headers=settings.custom_headers,
        verify=True if skip_bundle else tls_verify(settings.ssl_cert_file, settings.tls_insecure_skip_verify),
        csrf_support=settings.csrf_support,
        max_requests_per_minute=settings.max_requests_per_minute,
        compression=settings.compression,
    )

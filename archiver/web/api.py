"""`prefect-archiver serve`: Prefect's event read API over the archive, for flows on other machines.

Same paths and shapes as Prefect's (prefect/server/api/events.py), under `/api` like a Prefect
server, so code written for Prefect works by changing only its base URL
(PREFECT_API_URL=http://HOST:PORT/api): `POST /api/events/filter` with `{"filter": EventFilter,
"limit": n}` answers `{"events", "total", "next_page"}`, and `GET /api/events/filter/next?page-token=`
the following pages. The differences are deliberate: pages are keyset-based (the token holds the
filter, the first page's total and the last (occurred, id) returned, so paging while a sync writes
neither skips nor repeats), ties on `occurred` are ordered by id, `limit` may go past Prefect's 50
up to --max-limit, and unknown top-level keys are refused instead of silently ignored. Also
`GET /api/events/{id}` and `GET /api/health`. Read-only: each request opens the file read-only and
lets go (ArchiveReader.session), so a sync in another process can commit between requests.

FastAPI and uvicorn come with the `serve` extra (Prefect's own web stack); the CLI imports this
module only for `serve`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from datetime import datetime
from typing import Any

import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from archiver.config import Settings
from archiver.errors import ArchiveError, ArchiverError, BadInput, QueryTimeout
from archiver.prefect.events import PAGE_SIZE, format_timestamp, parse_event_id, parse_timestamp
from archiver.prefect.filters import EventFilter, parse_filter
from archiver.storage import open_archive
from archiver.storage.reader import Page

log = logging.getLogger("archiver.web.api")

TOKEN_VARIABLE = "ARCHIVER_SERVE_TOKEN"
_BODY_KEYS = ("filter", "limit")
# The whole JSON body as one value, checked by hand (FastAPI would silently drop unknown keys).
_WHOLE_BODY = Body(None)


class PageTokens:
    """Page tokens this server signs, so a client cannot forge one (`"total": -5`, another filter).

    A token is the page state as base64 JSON plus an HMAC-SHA256 of it. The key comes from
    ARCHIVER_SERVE_TOKEN when set, so every serve process sharing that token (behind a load
    balancer, or across a restart) accepts the others' tokens; without it, a random key per
    process (tokens then die with it). Like Prefect's, tokens carry no expiry.
    """

    def __init__(self, serve_token: str | None, max_limit: int) -> None:
        if serve_token:
            self._key = hashlib.sha256(b"prefect-archiver page tokens\0" + serve_token.encode()).digest()
        else:
            self._key = secrets.token_bytes(32)
        self.max_limit = max_limit

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest())

    def encode(self, f: EventFilter, limit: int, page: Page) -> str | None:
        if page.after is None:
            return None
        occurred, last_id = page.after
        state = {"filter": f.to_api(), "limit": limit, "total": page.total, "after": [occurred.isoformat(), str(last_id)]}
        payload = json.dumps(state, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def decode(self, token: str) -> tuple[EventFilter, int, int, tuple[datetime, uuid.UUID]]:
        """The state a page token carries; BadInput for anything this server did not sign."""
        encoded, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise BadInput("not a page token from this server") from None
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode("utf-8", "replace")):
            raise BadInput("not a page token from this server (bad signature)")
        # Signed by us, but checked anyway: a bug or a changed key must not reach the SQL.
        try:
            state = json.loads(payload)
            after = (parse_timestamp(state["after"][0]), uuid.UUID(state["after"][1]))
            limit, total = state["limit"], state["total"]
            if not all(type(v) is int for v in (limit, total)) or not 1 <= limit <= self.max_limit or total < 0:
                raise ValueError("limit or total out of range")
            return parse_filter(state["filter"]), limit, total, after
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, BadInput) as exc:
            raise BadInput(f"not a page token from this server: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def bearer_credentials(authorization: str) -> str | None:
    """The credentials of an `Authorization: Bearer …` header; the scheme in any case (RFC 9110 §11.1)."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip(" ") if scheme.lower() == "bearer" else None


def create_app(settings: Settings, *, max_limit: int = 1000, token: str | None = None, ui: bool = True) -> FastAPI:
    """The ASGI app; `token` (default: $ARCHIVER_SERVE_TOKEN) is required as a bearer token when set.

    With `ui`, the web UI's pages (archiver.web.ui) answer at `/`, ahead of the unprefixed API aliases.
    """
    token = token if token is not None else os.environ.get(TOKEN_VARIABLE) or None
    expected = token.encode() if token else None
    archive = open_archive(settings.archive_url)
    reader = archive.reader(settings.read_timeout)
    tokens = PageTokens(token, max_limit)
    time_limit = settings.request_timeout

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = bearer_credentials(request.headers.get("authorization", ""))
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected)

    def require_token(request: Request) -> None:
        if not authorized(request):
            # Never echo what was sent: it may be a real credential for something else.
            raise HTTPException(status_code=401, detail="missing or wrong bearer token (ARCHIVER_SERVE_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def page_link(request: Request, page_token: str | None) -> str | None:
        if page_token is None:
            return None
        # Like Prefect's generate_next_page_link, relative to where the request came in.
        api = "api/" if request.url.path.startswith(request.scope.get("root_path", "") + "/api/") else ""
        return f"{request.base_url}{api}events/filter/next?page-token={page_token}"

    def answer(request: Request, f: EventFilter, limit: int, after: Any = None, total: int | None = None) -> dict[str, Any]:
        try:
            # One opening of the archive per request, let go when it is answered.
            with reader.session(time_limit) as session:
                page = session.page(f, limit, after=after, total=total)
        except QueryTimeout:
            raise HTTPException(status_code=504, detail=(
                f"the query took longer than serve.request_timeout ({time_limit.total_seconds():g}s) and was stopped: "
                "narrow the filter (a shorter occurred window, fewer related or any_resource filters, "
                "exact ids instead of label patterns)")) from None
        except ArchiveError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return {"events": page.events, "total": page.total, "next_page": page_link(request, tokens.encode(f, limit, page))}

    router = APIRouter(dependencies=[Depends(require_token)])

    @router.post("/events/filter")
    def read_events(request: Request, body: Any = _WHOLE_BODY) -> dict[str, Any]:
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise BadInput('the body must be an object: {"filter": {...}, "limit": 50}')
        extra = sorted(set(body) - set(_BODY_KEYS))
        if extra:
            # Prefect ignores these silently and applies its default filter, which "finds" the
            # wrong events; refuse instead.
            raise BadInput(f"unknown key(s) {', '.join(extra)}: filter criteria go under \"filter\", beside \"limit\"")
        limit = body.get("limit", PAGE_SIZE)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= max_limit:
            raise BadInput(f"limit must be a whole number from 0 to {max_limit}")
        f = parse_filter(body.get("filter"))
        if f.ids:
            limit = min(limit, len(f.ids))  # Prefect's logical_limit: at most one event per id
        return answer(request, f, limit)

    @router.get("/events/filter/next")
    def read_next_page(request: Request, page_token: str = Query(..., alias="page-token")) -> dict[str, Any]:
        try:
            f, limit, total, after = tokens.decode(page_token)
        except BadInput:
            raise HTTPException(status_code=403, detail="Forbidden") from None  # as Prefect answers
        return answer(request, f, limit, after=after, total=total)

    @router.get("/events/{event_id}")
    def read_event(event_id: str) -> dict[str, Any]:
        wanted = parse_event_id(event_id)
        event = reader.event(wanted)
        if event is None:
            raise HTTPException(status_code=404, detail=f"no event with id {wanted} in the archive")
        return event

    open_router = APIRouter()

    @open_router.get("/health")
    def health(request: Request) -> dict[str, Any]:
        if not archive.exists():
            raise HTTPException(status_code=503, detail=f"no archive at {archive.name}")
        status = reader.status()
        if not authorized(request):
            return {"status": "ok"}
        mark = status.high_water_mark
        return {"status": "ok", "events": status.events, "high_water_mark": format_timestamp(mark) if mark else None}

    @open_router.get("/csrf-token")
    def csrf_token() -> JSONResponse:
        # What a Prefect server without CSRF protection answers; Prefect's clients then stop asking.
        return JSONResponse({"detail": "CSRF protection is disabled."}, status_code=422)

    from archiver.web.logs import logs_router  # POST /logs/filter, /artifacts/filter (issue 14)

    router.include_router(logs_router(reader, max_limit, lambda: reader.session(time_limit)))
    app = FastAPI(title="prefect-archiver", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    for prefix in ("/api", ""):
        if ui and prefix == "":
            from archiver.web.ui.routes import install

            def api_event(request: Request, event_id: str) -> dict[str, Any]:
                require_token(request)
                return read_event(event_id)

            # Before the aliases: GET /events/{id} is the event's page for a browser, its JSON otherwise.
            install(app, settings, reader, token, api_event)
        app.include_router(router, prefix=prefix)
        app.include_router(open_router, prefix=prefix)

    @app.exception_handler(BadInput)
    def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        # The message may quote the request, lone surrogates included: escape what UTF-8 cannot hold.
        return JSONResponse({"detail": str(exc).encode("utf-8", "backslashreplace").decode()}, status_code=422)

    @app.exception_handler(ArchiverError)
    def archive_error(request: Request, exc: ArchiverError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    return app


def serve_api(settings: Settings, *, host: str = "127.0.0.1", port: int = 4300, max_limit: int = 1000) -> None:
    """`prefect-archiver serve`: answer the API (and the web UI at /) over HTTP until interrupted."""
    if max_limit < 1:
        raise BadInput("--max-limit must be at least 1")
    if port < 0 or port > 65535:
        raise BadInput(f"--port must be from 0 to 65535, not {port}")
    app = create_app(settings, max_limit=max_limit)
    token = "with a bearer token" if os.environ.get(TOKEN_VARIABLE) else f"WITHOUT a token (set {TOKEN_VARIABLE})"
    print(f"serving {open_archive(settings.archive_url).name} read-only on http://{host}:{port}/api {token}; "
          f"the web UI at http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve_ui(settings: Settings, *, port: int = 0, open_browser: bool = True) -> None:
    """`prefect-archiver ui`: serve (UI and API) on loopback only, and open the UI in a browser.

    Port 0 takes a free one. The socket is bound here, before uvicorn starts, so the URL printed
    and opened is the one that answers; the browser opens once the server accepts requests.
    """
    import socket
    import threading
    import webbrowser

    if port < 0 or port > 65535:
        raise BadInput(f"--port must be from 0 to 65535, not {port}")
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise BadInput(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pick another --port, or 0 for a free one") from None
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    token = " (log in with ARCHIVER_SERVE_TOKEN)" if os.environ.get(TOKEN_VARIABLE) else ""
    print(f"the web UI over {open_archive(settings.archive_url).name} is at {url}{token}; Ctrl-C stops it", flush=True)

    def open_when_started() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started and open_browser and not webbrowser.open(url):
            print(f"no browser could be opened here: open {url} yourself", flush=True)

    threading.Thread(target=open_when_started, daemon=True).start()
    server.run(sockets=[sock])

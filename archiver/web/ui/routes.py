"""The UI's pages: each reads what it shows through one reader session and renders one template.

Overview `/`, events `/events` and `/events/{id}`, a run `/runs/{id}` (its further log lines
`/runs/{id}/logs`), a deployment
`/deployments/{id}`, and the login form. Every page is whole without JavaScript. Bad input is a
422 page, an id the archive lacks a 404 page, an archive that cannot be read a 503 page: never a
500. `GET /events/{id}` also answers API clients (anything not asking for HTML) with the event's
JSON, as that unprefixed API alias always did.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from archiver.config import Settings
from archiver.errors import ArchiveError, BadInput, QueryTimeout, RunNotFound
from archiver.prefect.events import parse_event_id
from archiver.prefect.filters import EventFilter, ResourceMatch
from archiver.storage.reader import ArchiveReader
from archiver.web.ui import pages
from archiver.web.ui.auth import UiAuth, safe_next
from archiver.web.ui.links import PrefectRuns
from archiver.web.ui.pages import NotFound
from archiver.web.ui.render import Renderer
from archiver.web.ui.search import FACETS_UP_TO, PAGE_SIZE, PAGE_SIZES, parse_search, window_around


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadInput(f"{value[:80]!r} is not a {what} id (a UUID such as 0b9a6c5e-…)") from None


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def ui_router(settings: Settings, reader: ArchiveReader, auth: UiAuth,
              api_event: Callable[[Request, str], Any]) -> APIRouter:
    """The pages over `reader`; `api_event` answers GET /events/{id} for clients not asking for HTML."""
    render = Renderer()
    prefect = PrefectRuns(settings)
    time_limit = settings.request_timeout
    router = APIRouter()

    def show(request: Request, build: Callable[[ArchiveReader, datetime], tuple[str, dict[str, Any]]]) -> Response:
        if not auth.authorized(request):
            return RedirectResponse("/login?next=" + quote(_path(request), safe=""), status_code=303)
        now = datetime.now(timezone.utc)
        try:
            with reader.session(time_limit) as session:
                template, context = build(session, now)
            return render.page(request, template, context)
        except BadInput as exc:
            return render.error(request, 422, "That cannot be shown", str(exc))
        except (NotFound, RunNotFound) as exc:
            return render.error(request, 404, "Not in the archive", str(exc))
        except QueryTimeout:
            return render.error(request, 504, "That took too long", (
                f"the page's reads took longer than serve.request_timeout ({time_limit.total_seconds():g}s) "
                "and were stopped: narrow the search (a shorter time range, an exact resource id)"))
        except ArchiveError as exc:
            return render.error(request, 503, "The archive cannot be read", str(exc))

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request, period: str = "30d") -> Response:
        return show(request, lambda r, now: ("overview.html", pages.overview(r, now, period)))

    @router.get("/events", response_class=HTMLResponse)
    def events(request: Request) -> Response:
        def build(r: ArchiveReader, now: datetime) -> tuple[str, dict[str, Any]]:
            search = parse_search(request.query_params, now)
            if search.after is None:
                page, facets = r.first_page(search.filter, search.limit, FACETS_UP_TO)
            else:
                page, facets = r.page(search.filter, search.limit, after=search.after, total=search.total), None
            return "events.html", {"search": search, "page": page, "facets": facets, "facets_up_to": FACETS_UP_TO,
                                   "page_sizes": PAGE_SIZES,
                                   "next": search.next_link(page.after, page.total) if page.after else None}
        return show(request, build)

    @router.get("/events/{event_id}", response_model=None)
    def event(request: Request, event_id: str) -> Any:
        if not _wants_html(request):
            return api_event(request, event_id)

        def build(r: ArchiveReader, now: datetime) -> tuple[str, dict[str, Any]]:
            wanted = parse_event_id(event_id)
            found = r.event(wanted)
            if found is None:
                raise NotFound(f"no event with id {wanted} in the archive")
            return "event.html", pages.event(found)
        return show(request, build)

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    def run(request: Request, run_id: str) -> Response:
        def build(r: ArchiveReader, now: datetime) -> tuple[str, dict[str, Any]]:
            wanted = _uuid(run_id, "flow run")
            context = pages.run(r, wanted)
            since, until = window_around(context["first"], context["last"], now)
            resource = f"prefect.{context['kind'].replace('_', '-')}.{wanted}"
            # The events whose resource the run is: its own (state changes). Events naming it in another
            # role (its task runs') are one link away: that search costs seconds on 10M events, this ~30 ms.
            f = EventFilter(since=since, until=until, order="ASC", resource=ResourceMatch(ids=(resource,)))
            context["events"] = r.page(f, PAGE_SIZE)
            context["resource_id"] = resource
            context["prefect"] = prefect.link(wanted) if context["kind"] == "flow_run" else None
            return "run.html", context
        return show(request, build)

    @router.get("/runs/{run_id}/logs", response_class=HTMLResponse)
    def run_logs(request: Request, run_id: str, after: str = "") -> Response:
        return show(request, lambda r, now: ("run_logs.html", pages.run_logs(r, _uuid(run_id, "flow run"), after)))

    @router.get("/deployments/{deployment_id}", response_class=HTMLResponse)
    def deployment(request: Request, deployment_id: str, period: str = "30d") -> Response:
        return show(request, lambda r, now: ("deployment.html",
                                             pages.deployment(r, _uuid(deployment_id, "deployment"), now, period)))

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return render.page(request, "login.html", {"next": safe_next(next), "failed": False, "required": auth.required})

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        given, goto = form.get("token", [""])[0], safe_next(form.get("next", ["/"])[0])
        if auth.required and not auth.token_matches(given):
            # Never echo what was typed: it may be a real credential for something else.
            context = {"next": goto, "failed": True, "required": True}
            return render.page(request, "login.html", context, status_code=401)
        response = RedirectResponse(goto, status_code=303)
        if auth.required:
            auth.log_in(request, response)
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        auth.log_out(response)
        return response

    @router.get("/ui/static/{name}")
    def static(name: str) -> Response:
        asset = render.asset(name)
        if asset is None:
            return Response("no such asset", status_code=404, media_type="text/plain")
        body, media_type = asset
        return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    return router


def _path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")



def install(app: FastAPI, settings: Settings, reader: ArchiveReader, token: str | None,
            api_event: Callable[[Request, str], Any]) -> None:
    """Add the pages to `app` (before its unprefixed API aliases) and HTML 404 pages for browsers."""
    app.include_router(ui_router(settings, reader, UiAuth(token), api_event))
    renderer = Renderer()

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405) and _wants_html(request) and not request.url.path.startswith("/api/"):
            return renderer.error(request, 404, "No such page", f"there is no page at {request.url.path[:200]}")
        return await http_exception_handler(request, exc)

"""Templates to HTML: one Jinja2 environment with autoescape on, the filters pages share, and the headers.

Autoescape is on for every template (select_autoescape with default=True), so any text from the
archive — an event's name, a label, a payload — is escaped wherever it lands; no template marks
anything `|safe`. The Content-Security-Policy allows script and styles only from this server's own
files (static/enhance.js: no inline script, no eval), so even markup that slipped through could
not run. Templates and assets are read from
the package (importlib.resources): nothing is fetched at run time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from archiver.prefect.events import format_timestamp
from archiver.web.ui import links
from archiver.web.ui.charts import format_value

CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}
_ASSETS = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
           ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def when(value: datetime | None) -> str:
    """A time as the pages show it: UTC to the second (the exact value is in the title attribute)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def exact(value: datetime | None) -> str:
    return format_timestamp(value) if value else ""


def seconds(value: Any) -> str:
    """A duration for people; "—" for anything that is not one (an archived object may hold any JSON)."""
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        s = float(value)
    else:
        return "—"
    return format_value(s, "s") if s >= 0 else "-" + format_value(-s, "s")


def pretty(value: Any) -> str:
    """JSON pretty-printed for a <pre> (escaped by autoescape like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


class Renderer:
    """Renders the package's templates with the UI's filters and headers."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("archiver.web.ui", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, exact=exact, seconds=seconds, pretty=pretty, number=lambda n: f"{n:,}")
        self.env.globals.update(resource_url=links.resource_url, event_url=links.event_url, events_url=links.events_url)

    def page(self, request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        html = self.env.get_template(template).render(path=request.url.path, **context)
        return HTMLResponse(html, status_code=status_code, headers=HEADERS)

    def error(self, request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "error.html", {"status": status_code, "title": title, "message": message}, status_code)

    @staticmethod
    def asset(name: str) -> tuple[bytes, str] | None:
        """A file of static/ by name (no directories: a name with / or .. is not an asset)."""
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in _ASSETS:
            return None
        path = resources.files("archiver.web.ui").joinpath("static", name)
        if not path.is_file():
            return None
        return path.read_bytes(), _ASSETS[suffix]

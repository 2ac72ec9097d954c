"""Where a resource leads: the UI's own page for it, and the same run in Prefect's UI while the server has it.

Prefect names objects in events by resource id (`prefect.flow-run.<uuid>`, `prefect.deployment.<uuid>`);
the pages link each one to its page here when there is one, and otherwise to the events naming it.
Prefect's UI is the API URL without `/api` (self-hosted) or app.prefect.cloud's account/workspace
path (Cloud), at `/runs/flow-run/{id}`. Whether the server still has a run is asked once per run
and remembered for a while, with a short timeout: an archive host is often offline, and a page
must not wait on a server that is gone.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlencode, urlsplit

from archiver.config import Settings

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PAGES = {"flow-run": "/runs/", "deployment": "/deployments/"}
_RESOURCE = re.compile(rf"^prefect\.(flow-run|deployment)\.({_UUID})$")
_CLOUD = re.compile(r"^/api/accounts/([^/]+)/workspaces/([^/]+)/?$")
# How long an answer about one run is trusted: the server trims runs slowly, comes back quickly.
_REMEMBER_FOUND, _REMEMBER_MISSING = 600.0, 60.0
CHECK_TIMEOUT = timedelta(seconds=1)


def events_url(**filters: str) -> str:
    """The events page searching these fields (event, resource, related, since, until)."""
    return "/events?" + urlencode({k: v for k, v in filters.items() if v})


def resource_url(resource_id: str) -> str:
    """This UI's page for a resource: a run's or deployment's own page, else the events naming it."""
    match = _RESOURCE.match(resource_id)
    if match:
        return _PAGES[match.group(1)] + match.group(2)
    return events_url(related=resource_id)


def event_url(event_id: str) -> str:
    return "/events/" + quote(event_id, safe="")


def prefect_ui_base(api_url: str | None) -> str | None:
    """Prefect's UI for an API URL (self-hosted http://host:4200/api -> http://host:4200); None if unknown."""
    if not api_url:
        return None
    parts = urlsplit(api_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    cloud = _CLOUD.match(parts.path)
    if parts.hostname == "api.prefect.cloud" and cloud:
        return f"https://app.prefect.cloud/account/{cloud.group(1)}/workspace/{cloud.group(2)}"
    path = parts.path.rstrip("/")
    path = path[: -len("/api")] if path.endswith("/api") else path
    host = parts.netloc.rsplit("@", 1)[-1]  # never a user:password@ into a page
    return f"{parts.scheme}://{host}{path}"


@dataclass(frozen=True)
class PrefectLink:
    """The run in Prefect's UI (`url` None when it cannot be linked) and why, for the page to say."""

    url: str | None
    note: str


class PrefectRuns:
    """Asks the Prefect server whether it still has a flow run, remembering the answer a while."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = prefect_ui_base(settings.api_url)
        self._known: dict[str, tuple[float, bool | None]] = {}
        self._lock = threading.Lock()

    def link(self, flow_run_id: uuid.UUID) -> PrefectLink:
        if self.base is None:
            return PrefectLink(None, "no Prefect API URL is configured (api.url / PREFECT_API_URL)")
        has = self._server_has(str(flow_run_id))
        if has is None:
            return PrefectLink(None, "Prefect's server did not answer: it may be offline")
        if not has:
            return PrefectLink(None, "Prefect's server no longer has this run: the archive is all that is left")
        return PrefectLink(f"{self.base}/runs/flow-run/{flow_run_id}", "Prefect's server still has this run")

    def _server_has(self, run_id: str) -> bool | None:
        now = time.monotonic()
        with self._lock:
            known = self._known.get(run_id)
        if known and known[0] > now:
            return known[1]
        has = self._ask(run_id)
        remember = _REMEMBER_FOUND if has else _REMEMBER_MISSING
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[run_id] = (now + remember, has)
        return has

    def _ask(self, run_id: str) -> bool | None:
        from dataclasses import replace

        from archiver.errors import ArchiverError
        from archiver.prefect.client import RetryPolicy, client_for

        settings = replace(self.settings, timeout=CHECK_TIMEOUT)
        try:
            with client_for(settings, retry=RetryPolicy(max_retries=0, retry_refused=False), interactive=True) as client:
                return bool(client.read_objects("flow_runs", [run_id]))
        except (ArchiverError, OSError):
            return None

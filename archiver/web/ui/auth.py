"""Who may read the UI: the API's bearer token (ARCHIVER_SERVE_TOKEN), or a cookie the login form sets.

The cookie never holds the token itself: it holds an HMAC of it, so a cookie copied out of a browser
profile is useless once the token changes, and the token appears in no cookie jar or log. It is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it, so the read-only
pages need no CSRF token), and Secure when the request came over HTTPS. Without a token
configured, the UI is open, as the API is (serve binds to loopback by default).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from fastapi.responses import Response

from archiver.web.api import bearer_credentials

COOKIE = "prefect_archiver_session"


class UiAuth:
    """Checks requests against the serve token; `token` None means the UI is open."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self._cookie = hmac.new(self._token, b"prefect-archiver ui session", hashlib.sha256).hexdigest() if self._token else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def token_matches(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    def authorized(self, request: Request) -> bool:
        if self._token is None or self._cookie is None:
            return True
        bearer = bearer_credentials(request.headers.get("authorization", ""))
        if bearer is not None and self.token_matches(bearer):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode("utf-8", "replace"), self._cookie.encode())

    def log_in(self, request: Request, response: Response) -> None:
        """Set the session cookie on `response` (the token was checked by the caller)."""
        assert self._cookie is not None
        response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")

    @staticmethod
    def log_out(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server only (never //host or a scheme: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return "/"
    return value

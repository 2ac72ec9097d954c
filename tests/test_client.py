"""HTTP behaviour the real server can't be made to show: 429, 5xx, timeouts, bad bodies, auth.

Faults are injected with httpx.MockTransport; sleeps are recorded instead of slept.
"""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from archiver.client import PrefectClient, RetryPolicy
from archiver.errors import (
    ApiAuthError,
    ApiBadResponse,
    ApiNotFound,
    ApiRejected,
    ApiUnavailable,
    ConfigError,
    PageTokenRejected,
)

PAGE = {"events": [], "total": 0, "next_page": None}
KEY = "pnu_TOPSECRETKEY0123456789"


def client_with(handler, sleeps=None, **kwargs) -> PrefectClient:
    return PrefectClient(
        "http://prefect.test/api/",
        transport=httpx.MockTransport(handler),
        sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
        **kwargs,
    )


def test_429_honours_retry_after_then_succeeds():
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return httpx.Response(200, json=PAGE)

    assert client_with(handler, sleeps).read_events({}) == PAGE
    assert sleeps == [7.0, 7.0]


def test_5xx_and_timeouts_are_retried_with_growing_backoff():
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(calls) == 2:
            raise httpx.RemoteProtocolError("peer closed connection mid-body", request=request)
        if len(calls) < 5:
            return httpx.Response(503)
        return httpx.Response(200, json=PAGE)

    client = client_with(handler, sleeps, retry=RetryPolicy(max_retries=6, base_delay=1.0))
    assert client.read_events({}) == PAGE
    assert len(calls) == 5
    # Full jitter: each delay is within its exponential cap.
    assert all(0 <= s <= 2 ** i for i, s in enumerate(sleeps))


def test_retries_are_bounded_in_count():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(500)

    with pytest.raises(ApiUnavailable, match=r"kept failing \(HTTP 500\) after 4 attempts"):
        client_with(handler, retry=RetryPolicy(max_retries=3)).read_events({})
    assert len(calls) == 4


def test_retries_are_bounded_in_total_time():
    def handler(request):
        return httpx.Response(429, headers={"Retry-After": "100"})

    with pytest.raises(ApiUnavailable):
        client_with(handler, retry=RetryPolicy(max_retries=50, max_total=timedelta(seconds=30))).read_events({})


def test_malformed_json_is_retried_then_reported():
    def handler(request):
        return httpx.Response(200, content=b'{"events": [', headers={"Content-Type": "application/json"})

    with pytest.raises(ApiBadResponse, match="not JSON"):
        client_with(handler, retry=RetryPolicy(max_retries=2)).read_events({})


def test_a_body_that_is_not_an_event_page_is_refused():
    with pytest.raises(ApiBadResponse, match="EventPage"):
        client_with(lambda r: httpx.Response(200, json={"detail": "hello"})).read_events({})


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_not_retried_and_say_what_to_check(status):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json={"detail": "nope"})

    with pytest.raises(ApiAuthError, match="PREFECT_API_KEY") as info:
        client_with(handler, api_key=KEY).read_events({})
    assert len(calls) == 1
    assert KEY not in str(info.value)


def test_404_points_at_the_url():
    with pytest.raises(ApiNotFound, match="ends in /api"):
        client_with(lambda r: httpx.Response(404)).read_events({})


def test_422_is_final_and_shows_the_servers_reason():
    with pytest.raises(ApiRejected, match="HTTP 422.*limit"):
        client_with(lambda r: httpx.Response(422, json={"detail": "limit too large"})).read_events({}, limit=51)


def test_403_on_a_page_token_is_its_own_error():
    with pytest.raises(PageTokenRejected):
        client_with(lambda r: httpx.Response(403)).read_next_page(
            "http://elsewhere:9999/api/events/filter/next?page-token=abc"
        )


def test_next_page_goes_to_our_base_url_with_only_the_token():
    seen = []

    def handler(request):
        seen.append(request.url)
        return httpx.Response(200, json=PAGE)

    # Behind a TLS proxy the server builds next_page with its own scheme and host.
    client_with(handler).read_next_page("http://internal:4200/api/events/filter/next?page-token=dG9rZW4%3D")
    assert str(seen[0]) == "http://prefect.test/api/events/filter/next?page-token=dG9rZW4%3D"


@pytest.mark.parametrize("url", ["http://prefect.test/api", "http://prefect.test/api/"])
def test_base_url_with_or_without_trailing_slash(url):
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json=PAGE)

    PrefectClient(url, transport=httpx.MockTransport(handler)).read_events({})
    assert seen == ["http://prefect.test/api/events/filter"]


def test_cloud_workspace_url_keeps_its_path():
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json=PAGE)

    url = "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"
    PrefectClient(url, api_key=KEY, transport=httpx.MockTransport(handler)).read_events({})
    assert seen == [url + "/events/filter"]


def test_credentials_are_sent_as_headers():
    seen = []

    def handler(request):
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=PAGE)

    client_with(handler, api_key=KEY).read_events({})
    client_with(handler, auth_string="admin:pass").read_events({})
    assert seen == [f"Bearer {KEY}", "Basic YWRtaW46cGFzcw=="]


def test_filter_keys_are_sent_under_filter_with_the_limit_beside_it():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=PAGE)

    client_with(handler).read_events({"occurred": {"since": "a", "until": "b"}, "order": "ASC"})
    assert bodies == [{"filter": {"occurred": {"since": "a", "until": "b"}, "order": "ASC"}, "limit": 50}]


def test_not_an_http_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as info:
        PrefectClient("ftp://user:hunter2@host/api")
    assert "hunter2" not in str(info.value)


def test_error_messages_never_carry_userinfo_from_the_url():
    client = PrefectClient(
        "http://user:hunter2@prefect.test/api",
        transport=httpx.MockTransport(lambda r: httpx.Response(404)),
    )
    with pytest.raises(ApiNotFound) as info:
        client.read_events({})
    assert "hunter2" not in str(info.value)

"""HTTP behaviour the real server can't be made to show: 429, 5xx, timeouts, bad bodies, auth.

Faults are injected with httpx.MockTransport; sleeps are recorded instead of slept.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from archiver.errors import (
    ApiAuthError,
    ApiBadResponse,
    ApiNotFound,
    ApiRejected,
    ApiUnavailable,
    ConfigError,
    PageTokenRejected,
)
from archiver.prefect.client import Pacer, PrefectClient, RequestCounts, RetryPolicy, plain_http, plain_http_verify

PAGE = {"events": [], "total": 0, "next_page": None}
KEY = "pnu_TOPSECRETKEY0123456789"


def client_with(handler, sleeps=None, **kwargs) -> PrefectClient:
    kwargs.setdefault("csrf_support", False)  # CSRF has its own tests below
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


@pytest.mark.parametrize("body", [{"detail": "upstream temporarily unavailable"}, [], {"events": [], "total": "7"},
                                  {"events": None, "total": 0}, {"total": True, "events": []}])
def test_a_200_that_is_not_an_event_page_is_retried_and_then_refused(body):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(200, json=body)

    with pytest.raises(ApiBadResponse, match=r"not an EventPage.* after 3 attempts"):
        client_with(handler, retry=RetryPolicy(max_retries=2)).read_events({})
    assert len(calls) == 3


def test_a_proxys_200_detail_body_is_retried_like_a_503_until_the_page_comes():
    # Proxies and load balancers answer 200 {"detail": ...} while the upstream restarts.
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(200, json={"detail": "upstream temporarily unavailable"})
        return httpx.Response(200, json=PAGE)

    client = client_with(handler)
    assert client.read_events({}) == PAGE
    assert client.read_next_page("http://x/api/events/filter/next?page-token=abc") == PAGE
    assert len(calls) == 4


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

    PrefectClient(url, transport=httpx.MockTransport(handler), csrf_support=False).read_events({})
    assert seen == ["http://prefect.test/api/events/filter"]


def test_cloud_workspace_url_keeps_its_path():
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json=PAGE)

    url = "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"
    PrefectClient(url, api_key=KEY, transport=httpx.MockTransport(handler), csrf_support=False).read_events({})
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
        csrf_support=False,
    )
    with pytest.raises(ApiNotFound) as info:
        client.read_events({})
    assert "hunter2" not in str(info.value)


def test_csrf_is_switched_off_after_one_request_on_a_server_without_it():
    paths = []

    def handler(request):
        paths.append(request.url.path)
        if request.url.path.endswith("/csrf-token"):
            return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
        assert "Prefect-Csrf-Token" not in request.headers
        return httpx.Response(200, json=PAGE)

    client = client_with(handler, csrf_support=True)
    client.read_events({})
    client.read_events({})
    assert paths == ["/api/csrf-token", "/api/events/filter", "/api/events/filter"]


def test_csrf_token_is_sent_on_posts_and_renewed_when_the_server_calls_it_invalid():
    issued, seen = [], []

    def handler(request):
        if request.url.path.endswith("/csrf-token"):
            issued.append(f"token-{len(issued)}")
            client_id = request.url.params["client"]
            return httpx.Response(200, json={"token": issued[-1], "client": client_id, "expiration": "2099-01-01T00:00:00Z"})
        seen.append((request.headers.get("Prefect-Csrf-Token"), request.headers.get("Prefect-Csrf-Client")))
        if len(seen) == 2:
            return httpx.Response(403, json={"detail": "Invalid CSRF token or client identifier."})
        return httpx.Response(200, json=PAGE)

    client = client_with(handler, csrf_support=True)
    client.read_events({})
    client.read_events({})
    assert issued == ["token-0", "token-1"]
    assert [token for token, _ in seen] == ["token-0", "token-0", "token-1"]
    assert len({client_id for _, client_id in seen}) == 1


def test_a_csrf_token_about_to_expire_is_renewed_before_use():
    issued = []

    def handler(request):
        if request.url.path.endswith("/csrf-token"):
            issued.append(1)
            soon = "2000-01-01T00:00:00Z" if len(issued) == 1 else "2099-01-01T00:00:00Z"
            return httpx.Response(200, json={"token": f"t{len(issued)}", "client": "c", "expiration": soon})
        return httpx.Response(200, json=PAGE)

    client = client_with(handler, csrf_support=True)
    client.read_events({})
    client.read_events({})
    client.read_events({})
    assert len(issued) == 2


def test_a_csrf_token_asked_for_early_is_the_one_the_first_post_sends():
    paths, release = [], threading.Event()

    def handler(request):
        paths.append(request.url.path)
        if request.url.path.endswith("/csrf-token"):
            release.wait(5)  # still in flight when the first POST is ready: that POST waits for it
            return httpx.Response(200, json={"token": "early", "client": "c", "expiration": "2099-01-01T00:00:00Z"})
        assert request.headers["Prefect-Csrf-Token"] == "early"
        return httpx.Response(200, json=PAGE)

    client = client_with(handler, csrf_support=True)
    client.fetch_csrf_token_early()
    threading.Timer(0.05, release.set).start()
    client.read_events({})
    client.read_events({})
    assert paths == ["/api/csrf-token", "/api/events/filter", "/api/events/filter"]


def test_what_the_early_csrf_request_ran_into_is_raised_by_the_first_post():
    def handler(request):
        return httpx.Response(401, json={"detail": "Unauthorized"})

    client = client_with(handler, csrf_support=True, api_key=KEY)
    client.fetch_csrf_token_early()
    with pytest.raises(ApiAuthError, match="PREFECT_API_KEY") as raised:
        client.read_events({})
    assert KEY not in str(raised.value)


def test_an_early_read_is_sent_once_and_answers_the_same_read_when_it_is_asked():
    bodies, release = [], threading.Event()

    def handler(request):
        bodies.append(json.loads(request.content))
        release.wait(5)  # still in flight when the read is asked: the read waits for it
        return httpx.Response(200, json={**PAGE, "total": len(bodies)})

    client = client_with(handler)
    probe = {"occurred": {"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"}, "order": "ASC"}
    client.read_events_early(probe, limit=1)
    assert client.requests() == RequestCounts()  # counted when taken, by the pass that takes it
    threading.Timer(0.05, release.set).start()
    # The same filter with its keys in another order is the same read.
    assert client.read_events(dict(reversed(probe.items())), limit=1)["total"] == 1
    assert client.requests() == RequestCounts(pages=1)
    assert client.read_events(probe, limit=1)["total"] == 2  # taken once: the next is a read of its own
    assert client.read_events(probe, limit=2)["total"] == 3
    assert bodies == [{"filter": probe, "limit": 1}] * 2 + [{"filter": probe, "limit": 2}]


def test_what_an_early_read_ran_into_is_raised_by_the_read_it_answers_with_its_retries_counted():
    sleeps: list[float] = []
    client = client_with(lambda request: httpx.Response(503), sleeps, retry=RetryPolicy(max_retries=2))
    client.read_events_early({"order": "ASC"}, limit=1)
    with pytest.raises(ApiUnavailable, match="after 3 attempts"):
        client.read_events({"order": "ASC"}, limit=1)
    assert client.requests() == RequestCounts(pages=3) and len(sleeps) == 2


def test_requests_sent_ahead_and_cut_off_by_close_end_quietly(caplog):
    """A sync refused (another writer) closes its client with the early CSRF token and read in flight."""
    arrived, closed = threading.Barrier(2), threading.Event()  # the token is asked first; the read waits for it

    def handler(request):
        arrived.wait(5)
        closed.wait(5)
        raise httpx.ReadError("connection closed")  # what the closed pool does to a request in flight

    client = client_with(handler, csrf_support=True)
    client.fetch_csrf_token_early()
    client.read_events_early({"order": "ASC"}, limit=1)
    arrived.wait(5)
    client.close()
    closed.set()
    early_threads = [t for t in threading.enumerate() if t.name in ("csrf-token", "early-read")]
    for thread in early_threads:
        thread.join(5)
    assert len(early_threads) == 2 and not any(t.is_alive() for t in early_threads)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no "retry 1/6" after the error


def test_a_plain_http_client_builds_no_ca_bundle_and_trusts_no_ca(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    context = plain_http_verify("http://127.0.0.1:4200/api", True)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() == []  # anything that reached TLS through it would fail, never pass
    assert plain_http_verify("https://api.prefect.cloud/api", True) is True  # httpx's default bundle
    assert plain_http_verify("http://127.0.0.1:4200/api", False) is False  # the user's choice stands
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.test:3128")  # a proxy may be reached over TLS
    assert not plain_http("http://127.0.0.1:4200/api")
    assert plain_http_verify("http://127.0.0.1:4200/api", True) is True


def test_custom_headers_are_sent_but_cannot_replace_managed_ones():
    seen = []

    def handler(request):
        seen.append(request.headers)
        return httpx.Response(200, json=PAGE)

    client_with(handler, custom_headers={"X-Team": "data", "User-Agent": "spoofed"}).read_events({})
    assert seen[0]["X-Team"] == "data"
    assert seen[0]["User-Agent"].startswith("prefect-archiver/")


@pytest.mark.parametrize(
    "url, compression, gzipped",
    [
        ("http://127.0.0.1:4200/api", "auto", False),
        ("http://localhost:4200/api", "auto", False),
        ("http://[::1]:4200/api", "auto", False),
        ("http://10.1.2.3:4200/api", "auto", False),
        ("http://192.168.0.7:4200/api", "auto", False),
        ("http://prefect-server:4200/api", "auto", False),  # a Docker / Kubernetes service name
        ("http://prefect.prefect.svc.cluster.local:4200/api", "auto", False),
        ("https://prefect.corp.internal/api", "auto", False),
        ("https://api.prefect.cloud/api/accounts/a/workspaces/w", "auto", True),
        ("https://prefect.example.com/api", "auto", True),
        ("http://8.8.8.8:4200/api", "auto", True),
        ("http://127.0.0.1:4200/api", "gzip", True),
        ("https://api.prefect.cloud/api/accounts/a/workspaces/w", "off", False),
    ],
)
def test_responses_are_asked_for_gzipped_only_from_a_remote_server(url, compression, gzipped):
    seen = []

    def handler(request):
        seen.append(request.headers.get("Accept-Encoding", ""))
        return httpx.Response(200, json=PAGE)

    PrefectClient(url, transport=httpx.MockTransport(handler), csrf_support=False, compression=compression).read_events({})
    assert ("gzip" in seen[0]) is gzipped, seen
    if not gzipped:
        assert seen == ["identity"]


def test_a_gzipped_answer_is_read_whatever_was_asked():
    import gzip

    body = gzip.compress(json.dumps(PAGE).encode())
    handler = lambda r: httpx.Response(200, content=body, headers={"Content-Encoding": "gzip",  # noqa: E731
                                                                   "Content-Type": "application/json"})
    client = PrefectClient("http://127.0.0.1:4200/api", transport=httpx.MockTransport(handler), csrf_support=False)
    assert client.read_events({}) == PAGE


def test_a_custom_accept_encoding_header_has_the_last_word():
    seen = []
    client_with(lambda r: seen.append(r.headers["Accept-Encoding"]) or httpx.Response(200, json=PAGE),
                custom_headers={"Accept-Encoding": "br"}).read_events({})
    assert seen == ["br"]


def test_a_custom_authorization_header_may_not_silently_replace_the_key():
    with pytest.raises(ConfigError, match="sets Authorization"):
        client_with(lambda r: httpx.Response(200, json=PAGE), api_key=KEY, custom_headers={"Authorization": "Bearer x"})
    # Without a key it is the user's way to authenticate through a proxy, and is sent.
    seen = []
    client_with(lambda r: seen.append(r.headers["Authorization"]) or httpx.Response(200, json=PAGE),
                custom_headers={"Authorization": "Bearer proxy"}).read_events({})
    assert seen == ["Bearer proxy"]


def closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_names_the_api_url_not_the_endpoint_and_fails_fast_when_asked():
    url = f"http://user:pw@127.0.0.1:{closed_port()}/api"
    sleeps: list[float] = []
    patient = PrefectClient(url, retry=RetryPolicy(max_retries=2, base_delay=0.01), sleep=sleeps.append)
    with pytest.raises(ApiUnavailable) as raised:
        patient.read_events({})  # a POST: the CSRF token is asked for first
    shown = url.replace("user:pw@", "")
    assert str(raised.value).startswith(f"the Prefect API at {shown} kept failing (ConnectError) after 3 attempts")
    assert "csrf" not in str(raised.value).lower() and "pw" not in str(raised.value)
    assert len(sleeps) == 2  # the service and flows keep retrying a refused connection

    sleeps.clear()
    interactive = PrefectClient(url, retry=RetryPolicy(retry_refused=False), sleep=sleeps.append)
    with pytest.raises(ApiUnavailable, match=rf"^nothing is listening at {shown} \(connection refused\)"):
        interactive.read_events({})
    assert sleeps == []


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def test_pacing_spaces_requests_evenly_at_the_plans_rate():
    clock = FakeClock()
    pacer = Pacer(1250, sleep=clock.sleep, clock=clock)
    sent_at = []
    for _ in range(50):
        pacer.wait()
        sent_at.append(clock.now)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert min(gaps) == pytest.approx(60 / 1250)
    # 1,250 a minute means no 60-second stretch ever holds more than 1,250 requests.
    assert sent_at[-1] - sent_at[0] == pytest.approx(49 * 60 / 1250)


def test_pacing_does_not_delay_requests_that_are_already_spaced():
    clock = FakeClock()
    pacer = Pacer(600, sleep=clock.sleep, clock=clock)
    pacer.wait()
    clock.now += 5  # longer than the 0.1 s interval
    before = clock.now
    pacer.wait()
    assert clock.now == before


def test_a_paced_client_waits_before_every_request_retries_included():
    sleeps, calls = [], []

    def handler(request):
        calls.append(request)
        return httpx.Response(503) if len(calls) == 1 else httpx.Response(200, json=PAGE)

    client = client_with(handler, sleeps, max_requests_per_minute=60, retry=RetryPolicy(base_delay=0.0))
    client.read_events({})
    client.read_events({})
    # Three requests at one a second: the retry and the second read each waited for their turn.
    assert len(calls) == 3
    assert sum(s for s in sleeps if s > 0.5) >= 1.5


def test_unpaced_client_never_waits():
    sleeps = []
    client = client_with(lambda request: httpx.Response(200, json=PAGE), sleeps)
    for _ in range(5):
        client.read_events({})
    assert sleeps == []


def test_request_counts_sort_pages_count_by_and_the_rest_retries_included():
    calls = []

    def handler(request):
        calls.append(request)
        if request.url.path.endswith("/events/count-by/time"):
            return httpx.Response(200, json=[])
        if request.url.path.endswith("/events/filter") and len(calls) == 1:
            return httpx.Response(503)  # retried: the retry is a page request too
        if request.url.path.endswith("/events/filter"):
            return httpx.Response(200, json={**PAGE, "next_page": "http://x/api/events/filter/next?page-token=t"})
        if request.url.path.endswith("/events/filter/next"):
            return httpx.Response(200, json=PAGE)
        return httpx.Response(200, json=[])

    client = client_with(handler)
    before = client.requests()
    assert before == RequestCounts(0, 0, 0)
    list(client.iter_pages({}))
    client.count_by_time(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc), "hour")
    client.read_run_states("flow_run", "0" * 32)
    sent = client.requests() - before
    assert sent == RequestCounts(pages=3, counts=1, other=1)
    assert sent.total == len(calls) == 5

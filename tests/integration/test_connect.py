"""Connecting wherever Prefect connects: basic auth, CSRF, profiles, custom headers, TLS, `check`.

Each kind of server is a real `prefect server start` configured that way.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from urllib.parse import urlsplit

import httpx
import pytest

from archiver.prefect.events import format_timestamp
from tests.prefect_server import PrefectServer, make_event, post_events, server_event_ids, wait_until_stored
from tests.proxy import RecordingProxy
from tests.support import archived_ids, cli_env, query, run_cli

UTC = timezone.utc
AUTH = "admin:s3cret-Pass"
BASIC = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}


def seed_small(api_url: str, headers: dict[str, str]) -> tuple[datetime, datetime, set[str]]:
    """120 events in one hour two days ago, 60 of them at a single instant (more than a page)."""
    since = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    tie = since + timedelta(minutes=20, microseconds=5)
    events = [make_event(tie, event="acme.tie") for _ in range(60)]
    events += [make_event(since + timedelta(seconds=50 * i + 1), event="acme.spread") for i in range(60)]
    post_events(api_url, events, headers=headers)
    until = since + timedelta(hours=1)
    wait_until_stored(api_url, since, until, len(events), headers=headers)
    return since, until, {e["id"] for e in events}


def sync_range(env: dict[str, str], since: datetime, until: datetime):
    return run_cli(["sync", "--since", format_timestamp(since), "--until", format_timestamp(until)], env)


@pytest.fixture(scope="module")
def auth_server():
    with PrefectServer(env={"PREFECT_SERVER_API_AUTH_STRING": AUTH}) as server:
        yield server


@pytest.fixture(scope="module")
def csrf_server():
    with PrefectServer(env={"PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true"}) as server:
        yield server


def csrf_headers(api_url: str) -> dict[str, str]:
    response = httpx.get(api_url + "/csrf-token", params={"client": "test-harness"})
    response.raise_for_status()
    return {"Prefect-Csrf-Token": response.json()["token"], "Prefect-Csrf-Client": "test-harness"}


def test_a_server_with_basic_auth_is_archived_completely(auth_server, tmp_path):
    since, until, ids = seed_small(auth_server.api_url, BASIC)
    db = tmp_path / "auth.duckdb"
    result = sync_range(cli_env(auth_server.api_url, db, PREFECT_API_AUTH_STRING=AUTH), since, until)
    assert result.returncode == 0, result.stderr
    assert archived_ids(db, since, until) == server_event_ids(auth_server.api_url, since, until, headers=BASIC) == ids


def test_a_wrong_auth_string_is_one_line_and_exit_1_and_never_shown(auth_server, tmp_path):
    wrong = "admin:not-the-Pass-9f8e"
    env = cli_env(auth_server.api_url, tmp_path / "wrong.duckdb", PREFECT_API_AUTH_STRING=wrong)
    result = run_cli(["sync"], env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "was refused (HTTP 401)" in result.stderr and "PREFECT_API_AUTH_STRING" in result.stderr
    checked = run_cli(["check"], env)
    assert checked.returncode == 1
    assert "auth:" in checked.stdout and "NO" in checked.stdout
    missing = run_cli(["check"], cli_env(auth_server.api_url, tmp_path / "none.duckdb"))
    assert missing.returncode == 1 and "no credentials" in missing.stdout
    wrong_key = "pnu_WrongKeyForThisServer000000000"
    keyed = run_cli(["sync"], cli_env(auth_server.api_url, tmp_path / "key.duckdb", PREFECT_API_KEY=wrong_key))
    assert keyed.returncode == 1 and keyed.stderr.count("\n") == 1
    assert "was refused (HTTP 401)" in keyed.stderr and "PREFECT_API_KEY" in keyed.stderr
    for output in (result.stdout, result.stderr, checked.stdout, checked.stderr):
        assert wrong not in output and "not-the-Pass" not in output
    assert wrong_key not in keyed.stdout + keyed.stderr


def test_a_server_with_csrf_protection_is_archived_completely(csrf_server, tmp_path):
    since, until, ids = seed_small(csrf_server.api_url, csrf_headers(csrf_server.api_url))
    db = tmp_path / "csrf.duckdb"
    result = sync_range(cli_env(csrf_server.api_url, db), since, until)
    assert result.returncode == 0, result.stderr
    assert archived_ids(db, since, until) == ids


def test_csrf_tokens_are_renewed_when_refused_or_expiring(csrf_server):
    from archiver.prefect.client import PrefectClient

    window = {"occurred": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}}
    with PrefectClient(csrf_server.api_url) as client:
        client.read_events(window)
        assert client.sent["csrf-token"] == 1
        client._csrf_token = "not-the-token"  # as if the server had forgotten ours
        client.read_events(window)
        assert client.sent["csrf-token"] == 2
        client._csrf_expiration = datetime.now(UTC)  # about to expire
        client.read_events(window)
        assert client.sent["csrf-token"] == 3


def test_csrf_support_turned_off_against_a_protected_server_says_why(csrf_server, tmp_path):
    env = cli_env(csrf_server.api_url, tmp_path / "off.duckdb", PREFECT_CLIENT_CSRF_SUPPORT_ENABLED="false")
    result = run_cli(["sync", "--since", "1h"], env)
    assert result.returncode == 1
    assert "requires CSRF tokens" in result.stderr and result.stderr.count("\n") == 1


def test_the_active_profile_is_used_with_no_environment(prefect_server, tmp_path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "local"\n\n[profiles.local]\n'
        f'PREFECT_API_URL = "{prefect_server.api_url}"\n\n'
        '[profiles.broken]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    env = cli_env(None, home / "archive.duckdb", PREFECT_HOME=str(home))
    del env["ARCHIVER_DB"]  # the default archive: $PREFECT_HOME/archive.duckdb
    result = run_cli(["sync", "--since", "30m"], env)
    assert result.returncode == 0, result.stderr
    assert (home / "archive.duckdb").exists()
    status = run_cli(["status"], env)
    assert f"(from Prefect profile 'local' in {home / 'profiles.toml'})" in status.stdout
    checked = run_cli(["check"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # PREFECT_PROFILE wins over the file's `active`, as in Prefect.
    broken = run_cli(["check"], {**env, "PREFECT_PROFILE": "broken", "ARCHIVER_CONFIG": str(write_fast_retries(tmp_path))})
    assert broken.returncode == 1 and "127.0.0.1:9" in broken.stdout


def write_fast_retries(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text('[api]\nmax_retries = 1\nmax_retry_time = "2s"\n')
    return path


def test_custom_headers_reach_the_server_through_a_proxy(prefect_server, history, tmp_path):
    upstream = "{0.scheme}://{0.netloc}".format(urlsplit(prefect_server.api_url))
    with RecordingProxy(upstream) as proxy:
        env = cli_env(proxy.url + "/api", tmp_path / "proxied.duckdb",
                      PREFECT_CLIENT_CUSTOM_HEADERS=json.dumps({"X-Team": "data-eng", "User-Agent": "spoofed"}))
        until = history.since + timedelta(hours=12)
        result = sync_range(env, history.since, until)
        recorded = list(proxy.requests)
    assert result.returncode == 0, result.stderr
    assert "ignoring custom header 'User-Agent'" in result.stderr
    assert recorded and all(r.headers.get("x-team") == "data-eng" for r in recorded)
    assert all(r.headers["user-agent"].startswith("prefect-archiver/") for r in recorded)
    assert archived_ids(tmp_path / "proxied.duckdb", history.since, until) == server_event_ids(
        prefect_server.api_url, history.since, until)


class _EncodingRecorder(httpx.HTTPTransport):
    """A real transport that notes each response's Content-Encoding ("" for none)."""

    def __init__(self) -> None:
        super().__init__()
        self.encodings: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.encodings.append(response.headers.get("content-encoding", ""))
        return response


def test_a_server_on_this_machine_answers_uncompressed_unless_gzip_is_asked_for(prefect_server, history):
    from archiver.prefect.client import PrefectClient

    window = {"occurred": {"since": format_timestamp(history.since), "until": format_timestamp(history.until)},
              "order": "ASC"}
    pages = {}
    for compression in ("auto", "gzip"):
        recorder = _EncodingRecorder()
        with PrefectClient(prefect_server.api_url, transport=recorder, compression=compression) as client:
            pages[compression] = client.read_events(window)
        assert recorder.encodings[-1] == ("gzip" if compression == "gzip" else "")
    assert len(pages["auto"]["events"]) == 50
    assert [e["id"] for e in pages["auto"]["events"]] == [e["id"] for e in pages["gzip"]["events"]]


def test_tls_with_a_ca_bundle_works_and_an_untrusted_certificate_is_explained(prefect_server, tmp_path):
    upstream = "{0.scheme}://{0.netloc}".format(urlsplit(prefect_server.api_url))
    with RecordingProxy(upstream, tls=True) as proxy:
        api = proxy.url + "/api"
        untrusted = run_cli(["sync", "--since", "30m"], cli_env(api, tmp_path / "a.duckdb"))
        trusted = run_cli(["sync", "--since", "30m"], cli_env(api, tmp_path / "b.duckdb",
                                                              PREFECT_API_SSL_CERT_FILE=str(proxy.cert_file)))
        skipped = run_cli(["sync", "--since", "30m"], cli_env(api, tmp_path / "c.duckdb",
                                                              PREFECT_API_TLS_INSECURE_SKIP_VERIFY="true"))
    assert untrusted.returncode == 1
    assert "was not trusted" in untrusted.stderr and "PREFECT_API_SSL_CERT_FILE" in untrusted.stderr
    assert untrusted.stderr.count("\n") == 1, untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert skipped.returncode == 0, skipped.stderr
    assert "TLS certificate verification is off" in skipped.stderr


def test_check_explains_a_healthy_setup(prefect_server, tmp_path):
    env = cli_env(prefect_server.api_url, tmp_path / "check.duckdb")
    result = run_cli(["check"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("api url:") and "(from the environment)" in lines[0]
    assert any(line.startswith("reachable:") and " ok " in line for line in lines)
    assert any(line.startswith("auth:") and "accepted" in line for line in lines)
    # The release the test venv runs the server from (3.9.1 today), not a number written here.
    assert any(line.startswith("server:") and f"Prefect {version('prefect')}" in line for line in lines)
    assert any(line.startswith("retained:") and "oldest event occurred" in line for line in lines)


def test_keys_appear_in_no_output_log_or_archive_table(prefect_server, tmp_path):
    key = "pnu_NEVERPRINTTHISKEY0000000000000"
    db = tmp_path / "key.duckdb"
    env = cli_env(prefect_server.api_url, db, PREFECT_API_KEY=key)
    commands = (["sync", "--since", "30m", "-v"], ["check", "-v"], ["status", "--json", "-v"],
                ["get", "0192f0c4-0000-7000-8000-000000000000", "-v"])
    for args in commands:
        result = run_cli(args, env)
        assert key not in result.stdout + result.stderr, args
    for (table,) in query(db, "SELECT table_name FROM information_schema.tables"):
        dump = json.dumps(query(db, f'SELECT * FROM "{table}"'), default=str)
        assert key not in dump, table
    for path in (db, db.with_name(db.name + ".wal")):
        assert not path.exists() or key.encode() not in path.read_bytes()


def test_sync_since_counts_in_its_report_every_request_it_sends(prefect_server, history, tmp_path):
    # `sync --since` starts reading before the archive is opened: those requests are its own too.
    upstream = "{0.scheme}://{0.netloc}".format(urlsplit(prefect_server.api_url))
    until = history.since + timedelta(hours=20)
    with RecordingProxy(upstream) as proxy:
        env = cli_env(proxy.url + "/api", tmp_path / "counted.duckdb")
        result = run_cli(["sync", "--json", "--since", format_timestamp(history.since),
                          "--until", format_timestamp(until)], env)
        recorded = list(proxy.requests)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    reads = [r for r in recorded
             if r.path.split("?")[0].endswith(("/events/filter", "/events/filter/next", "/events/count-by/time"))]
    assert report["pages"] + report["counts"] == len(reads) > 0
    last = until - timedelta(microseconds=1)  # --until is where the sync stops: an event at it is the next sync's
    assert archived_ids(tmp_path / "counted.duckdb", history.since, until) == server_event_ids(
        prefect_server.api_url, history.since, last)


def test_sync_since_into_an_archive_that_cannot_be_opened_says_so_and_ends(prefect_server, history, tmp_path):
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a DuckDB file" * 100)
    env = cli_env(prefect_server.api_url, broken)
    result = run_cli(["sync", "--since", format_timestamp(history.since),
                      "--until", format_timestamp(history.end)], env, timeout=60)
    assert result.returncode != 0
    assert str(broken) in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert broken.read_bytes() == b"this is not a DuckDB file" * 100

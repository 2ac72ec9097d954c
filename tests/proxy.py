"""A local recording reverse proxy for tests, optionally terminating TLS.

Tests put it in front of a real Prefect server (`tests.prefect_server.PrefectServer`)
to see what our HTTP client actually sends (custom headers, auth) and to exercise
TLS settings (CA bundle, skip-verify) against a self-signed certificate, without
needing a real TLS endpoint. No pytest imports, like `tests.prefect_server`.

    with PrefectServer() as server, RecordingProxy(server.api_url.removesuffix("/api"), tls=True) as proxy:
        api_url = f"{proxy.url}/api"      # trust proxy.cert_file as a CA bundle
"""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["RecordedRequest", "RecordingProxy", "make_self_signed_cert"]

# RFC 9110 §7.6.1 connection-specific headers: never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the proxy owns: Host is set for the upstream, the body is re-framed
# (httpx sets Content-Length), and 100-continue was already answered to the client.
DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "expect"}
# httpx hands back a decoded, fully read body, so its encoding/length headers no longer apply.
DROP_RESPONSE = HOP_BY_HOP | {"content-encoding", "content-length"}
# Statuses that carry no body and must not carry Content-Length (RFC 9110 §8.6).
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the proxy received it from the client (header names lower-cased).

    Repeated headers are joined with ", " as HTTP allows; `path` includes the query.
    """

    method: str
    path: str
    headers: dict[str, str]


def make_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write (cert.pem, key.pem) for a self-signed cert valid for `host` and localhost.

    The cert is its own CA (BasicConstraints CA=True, keyCertSign, SKI/AKI), so the
    cert file alone works as `cafile` for Python's default SSL context, which is
    what a user's "CA bundle" setting ends up doing.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Server(http.server.ThreadingHTTPServer):
    """Threaded server that does the TLS handshake per connection, off the accept loop.

    Wrapping the listening socket would handshake inside accept(): one slow or
    refusing client (the "default verification fails" test) would stall every
    other connection and print a traceback to stderr.
    """

    daemon_threads = True
    proxy: RecordingProxy

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn: socket.socket = request
        ctx = self.proxy._ssl_context
        if ctx is not None:
            try:
                conn.settimeout(30)
                conn = ctx.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                return  # client rejected our cert or went away; ThreadingMixIn closes the socket
        self.proxy._track(conn, add=True)
        try:
            super().finish_request(conn, client_address)
        finally:
            self.proxy._track(conn, add=False)
            if conn is not request:
                _close_quietly(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: resets and aborted clients are normal in tests that probe failures."""


def _close_quietly(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the upstream with httpx and relays the answer verbatim."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response below is length-delimited
    timeout = 120  # idle keep-alive connections give their thread back eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request stderr noise; tests read `proxy.requests` instead."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers: read and dropped
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _proxy(self) -> None:
        proxy = self.server.proxy
        path = self.path
        if "://" in path.split("?", 1)[0]:  # absolute-form target: keep only path+query
            parts = urlsplit(path)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

        recorded: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            recorded[key] = f"{recorded[key]}, {value}" if key in recorded else value
        request = RecordedRequest(self.command, path, recorded)
        proxy._record(request)
        if proxy.delay is not None and (seconds := proxy.delay(request)) > 0:
            time.sleep(seconds)

        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        forward = [
            (name, value)
            for name, value in self.headers.items()
            if name.lower() not in DROP_REQUEST and name.lower() not in connection_tokens
        ]
        forward.append(("Host", proxy._upstream_host))
        body = self._read_body()

        try:
            upstream = proxy._client.request(self.command, proxy.upstream + path, headers=forward, content=body)
        except httpx.HTTPError as exc:
            self._send(502, [("Content-Type", "text/plain; charset=utf-8")], f"proxy: upstream failed: {exc!r}".encode())
            return
        connection_tokens = {t.strip().lower() for t in upstream.headers.get("connection", "").split(",")}
        headers = [
            (name, value)
            for name, value in upstream.headers.multi_items()
            if name.lower() not in DROP_RESPONSE and name.lower() not in connection_tokens
        ]
        head_length = upstream.headers.get("content-length") if self.command == "HEAD" else None
        self._send(upstream.status_code, headers, upstream.content, head_length)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, head_length: str | None = None) -> None:
        # send_response_only: the upstream's own Date/Server are relayed, not duplicated with ours.
        self.send_response_only(status)
        names = {name.lower() for name, _ in headers}
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:  # the client asked for Connection: close; say we honour it
            self.send_header("Connection", "close")
        if status not in NO_BODY_STATUSES and status >= 200:
            self.send_header("Content-Length", head_length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in NO_BODY_STATUSES:
            self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy


class RecordingProxy:
    """Reverse proxy on 127.0.0.1 that records request headers and can speak TLS.

    `upstream` is scheme://host:port of the real server, without a path; `url` has
    no path either (append "/api"). With `tls=True`, `cert_file` is a fresh
    self-signed cert that doubles as a CA bundle for 127.0.0.1 and localhost.
    `delay` (settable while serving) holds each request it names a number of seconds
    before forwarding it: a slow server, so a test can act while a sync is mid-way.
    """

    def __init__(self, upstream: str, tls: bool = False,
                 delay: Callable[[RecordedRequest], float] | None = None) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"upstream must be scheme://host:port without a path, got {upstream!r}")
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self._upstream_host = parts.netloc
        self.tls = tls
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self.cert_file: Path | None = None
        self.key_file: Path | None = None
        self.port: int = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._dir: Path | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Shared pool: httpx.Client is thread-safe; no retries, no redirects, no env proxies,
        # so the test sees exactly what the upstream answered.
        self._client = httpx.Client(timeout=120.0, follow_redirects=False, trust_env=False)

    @property
    def url(self) -> str:
        """Base URL of the proxy, e.g. https://127.0.0.1:PORT (no path, no trailing slash)."""
        if not self.port:
            raise RuntimeError("RecordingProxy is not started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> RecordingProxy:
        """Bind a free loopback port and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("RecordingProxy is already started")
        if self._client.is_closed:
            self._client = httpx.Client(timeout=120.0, follow_redirects=False, trust_env=False)
        if self.tls:
            self._dir = Path(tempfile.mkdtemp(prefix="recording-proxy-"))
            self.cert_file, self.key_file = make_self_signed_cert(self._dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert_file, self.key_file)
            self._ssl_context = ctx
        server = _Server(("127.0.0.1", 0), _Handler)  # port 0: the OS picks, no race
        server.proxy = self
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"recording-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, remove the cert files."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            live = list(self._connections)
            self._connections.clear()
        for conn in live:  # otherwise a pooled client connection would keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._client.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._ssl_context = None

    def clear(self) -> None:
        """Forget recorded requests, e.g. between phases of one test."""
        with self._lock:
            self.requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

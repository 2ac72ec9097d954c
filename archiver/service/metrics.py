"""The service's Prometheus endpoint (`run --metrics-port`), through prometheus-client.

prometheus-client is an optional extra (`pip install "prefect-archiver[metrics]"`), imported only
when the endpoint is asked for.
"""

from __future__ import annotations

import time
from typing import Any

from archiver.errors import ConfigError


class Metrics:
    """Counters and gauges for one service process, served on http://HOST:PORT/metrics."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(
                "--metrics-port needs prometheus-client: pip install \"prefect-archiver[metrics]\" "
                "(or run without --metrics-port)"
            ) from None
        prom.disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise here
        self.registry = prom.CollectorRegistry()
        self.archived = prom.Counter(
            "prefect_archiver_events_archived", "Events newly written to the archive (syncs, reconciles, repairs)",
            registry=self.registry)
        self.failures = prom.Counter(
            "prefect_archiver_sync_failures", "Scheduled runs that failed, by job", ["job"], registry=self.registry)
        self.last_success = prom.Gauge(
            "prefect_archiver_last_success_timestamp_seconds", "Unix time the last sync succeeded",
            registry=self.registry)
        self.lag = prom.Gauge(
            "prefect_archiver_lag_seconds", "Seconds between now and the high-water mark, after the last sync",
            registry=self.registry)
        for job in ("sync", "reconcile", "verify"):
            self.failures.labels(job=job)
        try:
            self._server: Any
            self._server, _ = prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port} ({exc.strerror}); choose another --metrics-port") from None

    def succeeded(self, job: str, inserted: int, lag_seconds: float | None) -> None:
        self.archived.inc(inserted)
        if job == "sync":
            self.last_success.set(time.time())
        if lag_seconds is not None:
            self.lag.set(lag_seconds)

    def failed(self, job: str, inserted: int, lag_seconds: float | None, counted: bool = True) -> None:
        if counted:
            self.failures.labels(job=job).inc()
        self.archived.inc(inserted)
        if lag_seconds is not None:
            self.lag.set(lag_seconds)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

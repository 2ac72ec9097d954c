"""Log lines on stderr: `prefect-archiver: LEVEL: message`, or one JSON object per line.

A record may carry structured fields (`extra={"fields": {...}}`); the JSON format puts them at
the top level next to time, level, logger and message, so a log shipper can index them. Secrets
never reach a record: settings keep them out of repr and the client redacts URLs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line; tracebacks only when `tracebacks` (that is, with -v)."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info and self.tracebacks:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__("prefect-archiver: %(levelname)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks and record.exc_info:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


class QuietRetries(logging.Filter):
    """Drops the client's per-retry warnings: a service logs one line per failed run instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "archiver.prefect.client" and "retry" in str(record.msg))


def configure(level: int, log_format: str = "text", tracebacks: bool = False, quiet_retries: bool = False) -> None:
    """Send every log record of this process to stderr in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    if quiet_retries:
        handler.addFilter(QuietRetries())
    handler.setFormatter(JsonFormatter(tracebacks) if log_format == "json" else TextFormatter(tracebacks))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO; ours are enough. APScheduler's own lines repeat ours.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.INFO if tracebacks else logging.ERROR)

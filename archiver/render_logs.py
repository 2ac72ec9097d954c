"""Run logs and artifacts as the CLI prints them: log lines as `prefect flow-run logs` does, artifacts readably.

Log lines follow prefect/cli/flow_run.py (`logs`): `2026-12-01 14:00:26.300 | INFO    | Flow run
'calm-otter' - message`. Artifacts are shown by type: markdown as its text (a terminal reads
markdown as it is), a table as aligned columns, a link as its text and URL, progress as a
percentage, anything else as indented JSON.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.prefect.events import parse_timestamp
from archiver.prefect.logs import level_name

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLIS = [f".{i:03d}" for i in range(1000)]  # a timestamp's milliseconds as log lines show them (cut, not rounded)
# A table cell is cut to this many characters, so one long value does not push every column away.
CELL = 40


def log_line(log: dict[str, Any], run_label: str) -> str:
    """One log as `prefect flow-run logs` prints it; run_label is e.g. "Flow run 'calm-otter'"."""
    at = log["timestamp"]
    stamp = f"{at if isinstance(at, datetime) else parse_timestamp(at):%Y-%m-%d %H:%M:%S.%f}"[:-3]
    return f"{stamp} | {level_name(int(log['level'])):7s} | {run_label} - {log.get('message') or ''}"


class LogLines:
    """Pages of (id, timestamp in µs since the epoch, level, message) as log_line prints each row,
    byte for byte, at a fraction of its cost: a timestamp's date and time are formatted once per
    second and a level's name once (a run's lines share both), so a million lines print in seconds."""

    def __init__(self, run_label: str) -> None:
        self.run_label = run_label
        self._seconds: dict[int, str] = {}
        self._middles: dict[int, str] = {}  # by level: " | INFO    | Flow run 'calm-otter' - "

    def text(self, rows: list[tuple[str, int, int, str | None]]) -> str:
        """The rows' lines, each ending in a newline."""
        seconds, middles = self._seconds, self._middles
        lines = []
        for _, micros, level, message in rows:
            second, fraction = divmod(micros, 1_000_000)
            stamp = seconds.get(second)
            if stamp is None:
                stamp = seconds[second] = f"{EPOCH + timedelta(seconds=second):%Y-%m-%d %H:%M:%S}"
            middle = middles.get(level)
            if middle is None:
                middle = middles[level] = f" | {level_name(int(level)):7s} | {self.run_label} - "
            lines.append(f"{stamp}{_MILLIS[fraction // 1000]}{middle}{message or ''}\n")
        return "".join(lines)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= CELL else text[:CELL - 1] + "…"


def _table(data: Any) -> list[str] | None:
    """Rows of a table artifact's data (Prefect's create_table_artifact sends JSON text of a list of
    dicts, a list of lists, or a dict of columns), aligned; None when it is none of those."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    header: list[str]
    rows: list[list[Any]]
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        header = [str(k) for k in data]
        length = max((len(v) for v in data.values()), default=0)
        rows = [[v[i] if i < len(v) else "" for v in data.values()] for i in range(length)]
    elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        header = list(dict.fromkeys(k for r in data for k in r))
        rows = [[r.get(k, "") for k in header] for r in data]
    elif isinstance(data, list) and all(isinstance(r, list) for r in data):
        width = max((len(r) for r in data), default=0)
        header = [str(i) for i in range(width)]
        rows = [r + [""] * (width - len(r)) for r in data]
    else:
        return None
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def artifact_lines(artifact: dict[str, Any]) -> list[str]:
    """An artifact as the `artifacts` command prints it: a header line, then its content indented."""
    kind = artifact.get("type") or "result"
    title = " ".join(x for x in (kind, artifact.get("key") or "", artifact.get("created") or "") if x)
    lines = [f"{title}  {artifact.get('id')}"]
    if artifact.get("description"):
        lines.append(f"  {artifact['description']}")
    data = artifact.get("data")
    body: list[str] | None = None
    if kind == "table":
        body = _table(data)
    elif kind in ("markdown", "link") and isinstance(data, str):
        body = data.splitlines() or [""]
    elif kind == "progress" and isinstance(data, (int, float)):
        body = [f"{data:g}%"]
    if body is None:
        body = json.dumps(data, indent=2, ensure_ascii=False).splitlines()
    return lines + [f"    {line}".rstrip() for line in body]

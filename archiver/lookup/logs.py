"""A run's archived logs and artifacts, from the archive alone (kept after the server forgot the run).

A flow run's logs include its task runs' (as Prefect's `flow_run_id` filter gives them); a task
run's id gives that task run's. Read in pages by (timestamp, id) keyset, so a run with a million
lines streams without offsets.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from archiver.config import LOG_LEVELS, Settings, load_settings
from archiver.errors import BadInput
from archiver.prefect.events import parse_prefect_id, parse_timestamp
from archiver.storage import open_archive
from archiver.storage.logs import ArtifactQuery, LogQuery
from archiver.storage.reader import ArchiveReader

__all__ = ["get_run_artifacts", "get_run_logs", "iter_run_log_lines", "iter_run_logs"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Logs read from the archive per query while streaming one run's: the first page small, so the first
# line shows at once, the next ones ever larger, up to PAGE (each is one short read, which a sync's
# writer waits behind on DuckDB: the reader never holds the file between pages).
FIRST_PAGE = 1_000
PAGE = 50_000

Row = TypeVar("Row")


def log_level(level: str | int | None) -> int | None:
    """A level by name (WARNING) or number (30); BadInput for anything else."""
    if level is None or isinstance(level, int):
        return level
    text = str(level).strip().upper()
    if text.isdigit():
        return int(text)
    if text not in LOG_LEVELS:
        raise BadInput(f"log level {level!r} is none of {', '.join(LOG_LEVELS)} (or a number)")
    return LOG_LEVELS[text]


def _reader(settings: Settings | None) -> ArchiveReader:
    settings = settings or load_settings()
    return open_archive(settings.archive_url).reader(settings.read_timeout)


def _pages(reader: ArchiveReader, run_id: uuid.UUID, query: LogQuery, read: Callable[[LogQuery], list[Row]],
           key: Callable[[Row], tuple[datetime, uuid.UUID]]) -> Iterator[list[Row]]:
    """The run's logs matching `query`, page by page by (timestamp, id) keyset; `key` says a row's.

    A flow run's id is looked up by flow_run_id, a task run's by task_run_id: one indexed column
    each (`flow_run_id = x OR task_run_id = x` scanned the table: 17 s for 100k lines of 1 run).
    """
    is_flow_run = bool(reader.log_lines(LogQuery(flow_run_ids=(run_id,), limit=1)))
    query = replace(query, flow_run_ids=(run_id,)) if is_flow_run else replace(query, task_run_ids=(run_id,))
    size, after = FIRST_PAGE, None
    while True:
        page = read(replace(query, limit=size, after_key=after))
        if page:
            yield page
        if len(page) < size:
            return
        size, after = min(size * 8, PAGE), key(page[-1])


def _query(level: int | None, since: datetime | None, until: datetime | None, grep: str | None,
           newest_first: bool) -> LogQuery:
    return LogQuery(level_ge=level, after=since, before=until, text=grep or None, descending=newest_first)


def iter_run_logs(reader: ArchiveReader, run_id: uuid.UUID, *, level: int | None = None,
                  since: datetime | None = None, until: datetime | None = None, grep: str | None = None,
                  newest_first: bool = False, whole: bool = True) -> Iterator[dict[str, Any]]:
    """The run's archived logs in the API's shape, oldest first (or newest first), read page by page
    (`whole=False`: the columns a log line shows, see ArchiveReader.logs)."""
    def key(log: dict[str, Any]) -> tuple[datetime, uuid.UUID]:
        at = log["timestamp"]
        return at if isinstance(at, datetime) else parse_timestamp(at), uuid.UUID(str(log["id"]))

    query = _query(level, since, until, grep, newest_first)
    for page in _pages(reader, run_id, query, lambda q: reader.logs(q, whole), key):
        yield from page


def iter_run_log_lines(reader: ArchiveReader, run_id: uuid.UUID, *, level: int | None = None,
                       since: datetime | None = None, until: datetime | None = None, grep: str | None = None,
                       newest_first: bool = False) -> Iterator[list[tuple[str, int, int, str | None]]]:
    """Pages of the run's archived logs as (id, timestamp in µs since the epoch, level, message), in
    the order iter_run_logs gives them: what `logs RUN_ID` prints, without a dict, UUID or datetime a line."""
    def key(row: tuple[str, int, int, str | None]) -> tuple[datetime, uuid.UUID]:
        return EPOCH + timedelta(microseconds=row[1]), uuid.UUID(row[0])

    yield from _pages(reader, run_id, _query(level, since, until, grep, newest_first), reader.log_lines, key)


def get_run_logs(run_id: str | uuid.UUID, *, level: str | int | None = None, since: datetime | None = None,
                 until: datetime | None = None, grep: str | None = None,
                 settings: Settings | None = None) -> list[dict[str, Any]]:
    """A flow run's (its task runs' included) or a task run's archived logs, oldest first, as
    POST /logs/filter returns them; `level` keeps that level and above, `grep` messages holding
    that text (any case). [] when the archive holds none; BadInput for an id that is no UUID."""
    wanted = parse_prefect_id(run_id, "run")
    return list(iter_run_logs(_reader(settings), wanted, level=log_level(level), since=since, until=until, grep=grep))


def get_run_artifacts(run_id: str | uuid.UUID, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The artifacts a flow run (its task runs' included) or a task run published, oldest first, as
    POST /artifacts/filter returns them. [] when the archive holds none."""
    wanted = parse_prefect_id(run_id, "run")
    reader = _reader(settings)
    found: list[dict[str, Any]] = []
    for query in (ArtifactQuery(flow_run_ids=(wanted,), limit=10_000), ArtifactQuery(task_run_ids=(wanted,), limit=10_000)):
        found += [a for a in reader.artifacts(query) if a not in found]
    return found

"""What `export` asks of an archive: per-day fingerprints of a table, and a day's rows written as files.

The operation (archiver/export) decides which partitions to write and moves files into place; a
backend's ExportSource (storage/<backend>/export.py) only reads. Both backends write the files
through DuckDB (storage/duckdb/export_files.py): the archive's own DuckDB file directly, a
PostgreSQL archive streamed through an in-memory DuckDB, so the files' columns and types are the
same whichever backend holds the archive.

A fingerprint is computed in SQL by each backend alike: the rows of a partition and the sum of a
60-bit slice of md5(key columns | version epoch µs) over them, so an added, removed or replaced
row changes it, and the same rows give the same fingerprint on DuckDB and PostgreSQL.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from archiver.storage.tables import TableSpec

if TYPE_CHECKING:
    from archiver.storage.base import Archive

FORMATS = ("parquet", "jsonl")
# The Hive partition column: the UTC day (YYYY-MM-DD) of the row's TableSpec.time.
PARTITION_COLUMN = "day"
# An unpartitioned table's one partition.
WHOLE = ""

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Column kinds, as both backends' types map to them (and the files carry them).
KINDS = ("uuid", "timestamp", "json", "text_list", "text", "integer", "bigint", "double", "boolean")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # one of KINDS


@dataclass(frozen=True)
class Fingerprint:
    """What a partition holds, in a form two reads compare: rows, and a digest of their keys and versions."""

    rows: int
    digest: str


def day_bounds(partitions: Sequence[str]) -> tuple[datetime, datetime]:
    """The UTC instants [first day 00:00, last day + 1) the partitions `YYYY-MM-DD` span."""
    for partition in partitions:  # they become SQL literals: only the form a partition has
        if not _DAY.match(partition):
            raise ValueError(f"not a partition day (YYYY-MM-DD): {partition!r}")
    days = sorted(datetime.strptime(p, "%Y-%m-%d").replace(tzinfo=timezone.utc) for p in partitions)
    return days[0], days[-1] + timedelta(days=1)


@dataclass(frozen=True)
class Job:
    """Partitions of one table to write (WHOLE alone for an unpartitioned table)."""

    table: TableSpec
    partitions: tuple[str, ...]


# By table name, then partition.
Fingerprints = dict[str, dict[str, Fingerprint]]


class ExportSource(ABC):
    """The read side of `export` on one archive; every call opens the store once, briefly, and lets go."""

    @abstractmethod
    def fingerprints(self, tables: Sequence[TableSpec]) -> Fingerprints:
        """Every partition ('YYYY-MM-DD', or WHOLE for an unpartitioned table) of each of `tables` the
        archive has, with its fingerprint; a table the archive lacks (made by an older version) is left out."""

    @abstractmethod
    def write(self, jobs: Sequence[Job], file_format: str, staging: Path) -> Fingerprints:
        """Write the jobs' rows under `staging` and return their fingerprints, all from one snapshot.

        A partitioned table's rows go to staging/<table>/day=YYYY-MM-DD/*.<ext>, an unpartitioned
        one's to staging/<table>/data.<ext> (always written, empty or not). A partition that has no
        rows any more is returned with rows 0 and gets no file.
        """


def export_source(archive: Archive, read_timeout: timedelta) -> ExportSource:
    """The ExportSource of `archive`'s backend (imported only when asked for)."""
    from archiver.storage import BACKENDS, backend_name

    module = import_module(BACKENDS[backend_name(archive.url)] + ".export")
    source: ExportSource = module.export_source(archive, read_timeout)
    return source

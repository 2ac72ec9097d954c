"""`export` from a DuckDB archive: fingerprints and files straight from the archive file, read-only.

Each call opens the file read-only and lets go, as every reader does (a sync waits for a reader
at most archive.lock_timeout), so export holds it for one table's fingerprints or one chunk of
partitions at a time (the operation bounds a chunk's rows), never for the whole export. While
the file is open no writer can commit, so a chunk's fingerprints and files are one snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb.connect import NO_EXTENSIONS, open_duckdb, open_reader, require_archive, with_lock_retry
from archiver.storage.duckdb.export_files import quoted, write_files
from archiver.storage.export import (
    PARTITION_COLUMN,
    WHOLE,
    Column,
    ExportSource,
    Fingerprint,
    Fingerprints,
    Job,
    day_bounds,
)
from archiver.storage.tables import TableSpec

# DuckDB's type names (information_schema.columns.data_type) as export's column kinds.
_KINDS = {
    "UUID": "uuid", "TIMESTAMP WITH TIME ZONE": "timestamp", "JSON": "json", "VARCHAR[]": "text_list",
    "VARCHAR": "text", "INTEGER": "integer", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
}
# Writing sorts a chunk and may spill: bounded, and spilled under the export's own staging folder.
_CONFIG: dict[str, Any] = {**NO_EXTENSIONS, "memory_limit": "512MB", "threads": 2}


def export_source(archive: Archive, read_timeout: timedelta) -> DuckDBExportSource:
    if not isinstance(archive, DuckDBArchive):
        raise TypeError(f"not a DuckDB archive: {archive!r}")
    return DuckDBExportSource(archive.path, read_timeout)


def time_expr(table: TableSpec) -> str:
    return f"coalesce({', '.join(quoted(c) for c in table.time)})" if len(table.time) > 1 else quoted(table.time[0])


def day_expr(table: TableSpec) -> str:
    """The row's UTC day as YYYY-MM-DD (epoch arithmetic: the same whatever the TimeZone setting)."""
    return f"strftime(make_timestamp(epoch_us({time_expr(table)})), '%Y-%m-%d')"


def digest_expr(table: TableSpec) -> str:
    """60 bits of md5(key | version µs) per row, summed: PostgreSQL's export.py computes the same."""
    parts = [f"CAST({quoted(c)} AS VARCHAR)" for c in table.key]
    if table.version:
        parts.append(f"CAST(epoch_us({quoted(table.version)}) AS VARCHAR)")
    return f"coalesce(sum(CAST('0x' || substr(md5(concat_ws('|', {', '.join(parts)})), 1, 15) AS BIGINT)), 0)"


def order_expr(table: TableSpec) -> str:
    keys = ", ".join(quoted(c) for c in table.key)
    return f"{time_expr(table)}, {keys}" if table.partitioned else keys


class DuckDBExportSource(ExportSource):
    """Reads the archive file at `path` for `export`."""

    def __init__(self, path: Path, timeout: timedelta) -> None:
        self.path = path
        self.timeout = timeout

    @contextmanager
    def _connection(self, spill: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        if spill is None:
            conn = open_reader(self.path, self.timeout)  # checks the schema exists
        else:
            require_archive(self.path)
            conn = with_lock_retry(self.path, self.timeout,
                                   lambda: open_duckdb(str(self.path), read_only=True, config=_CONFIG), reader=True)
            conn.execute("SET temp_directory = $1", [str(spill / "spill")])
        try:
            yield conn
        finally:
            conn.close()

    def fingerprints(self, tables: Sequence[TableSpec]) -> Fingerprints:
        with self._connection() as conn:
            present = _tables(conn)
            return {t.name: _fingerprints(conn, t, None) for t in tables if t.name in present}

    def write(self, jobs: Sequence[Job], file_format: str, staging: Path) -> Fingerprints:
        staging.mkdir(parents=True, exist_ok=True)
        found: Fingerprints = {}
        with self._connection(spill=staging) as conn:
            for job in jobs:
                table = job.table
                now = _fingerprints(conn, table, job.partitions if table.partitioned else None)
                columns = _columns(conn, table.name)
                names = ", ".join(quoted(c.name) for c in columns)
                if table.partitioned:
                    relation = (f"SELECT {names}, {day_expr(table)} AS {PARTITION_COLUMN} FROM {quoted(table.name)} "
                                f"WHERE {_where(table, job.partitions)}")
                else:
                    relation = f"SELECT {names} FROM {quoted(table.name)}"
                write_files(conn, relation, columns, file_format, staging / table.name, table.partitioned, order_expr(table))
                found[table.name] = {p: now.get(p, Fingerprint(0, "0")) for p in job.partitions}
        return found


def _where(table: TableSpec, partitions: Sequence[str]) -> str:
    """Rows of these days: the time range lets DuckDB skip row groups, the list leaves out days between.

    Literals, not parameters: COPY (…) TO takes none, and the days are checked YYYY-MM-DD (day_bounds).
    """
    since, until = day_bounds(partitions)
    days = ", ".join(f"'{p}'" for p in partitions)
    at = time_expr(table)
    return (f"{at} >= '{since.isoformat()}'::TIMESTAMPTZ AND {at} < '{until.isoformat()}'::TIMESTAMPTZ "
            f"AND {day_expr(table)} IN ({days})")


def _fingerprints(conn: duckdb.DuckDBPyConnection, table: TableSpec, partitions: Sequence[str] | None) -> dict[str, Fingerprint]:
    if not table.partitioned:
        rows, digest = conn.execute(f"SELECT count(*), {digest_expr(table)} FROM {quoted(table.name)}").fetchone() or (0, 0)
        return {WHOLE: Fingerprint(rows, str(digest))}
    where = "TRUE" if partitions is None else _where(table, partitions)
    found = conn.execute(f"SELECT {day_expr(table)} AS day, count(*), {digest_expr(table)} FROM {quoted(table.name)} "
                         f"WHERE {where} GROUP BY day").fetchall()
    return {day: Fingerprint(rows, str(digest)) for day, rows, digest in found}


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()
    return {name for (name,) in rows}


def _columns(conn: duckdb.DuckDBPyConnection, name: str) -> list[Column]:
    rows = conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = 'main' AND table_name = $1 ORDER BY ordinal_position", [name]).fetchall()
    return [Column(column, _KINDS.get(data_type, "text")) for column, data_type in rows]

"""`export` from a PostgreSQL archive: fingerprints in SQL, rows streamed through DuckDB into the files.

A chunk of partitions is read in one READ ONLY, REPEATABLE READ transaction (its fingerprints and
its rows are one snapshot; readers never hold up the writer): its rows stream out with COPY … TO
STDOUT as CSV, every value as text in a form DuckDB reads back exactly (times as ISO 8601 UTC,
lists as JSON), into a file in the staging folder — so memory stays bounded however many rows a
day holds. An in-memory DuckDB then reads that file with the column types DuckDB's archive has and
writes the export's files as it writes them for a DuckDB archive (duckdb/export_files.py): the same
columns and types from either backend. JSON columns come as their text: events' exactly as stored
(json), the run tables' in JSONB's normalised form (same values; PostgreSQL's key order).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from archiver.storage.base import Archive
from archiver.storage.duckdb.connect import NO_EXTENSIONS, open_duckdb
from archiver.storage.duckdb.export import order_expr
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
from archiver.storage.postgresql import PostgreSQLArchive, pool
from archiver.storage.postgresql.connect import classify
from archiver.storage.tables import TableSpec

Conn = psycopg.Connection[Any]

# PostgreSQL's type names (information_schema.columns: data_type, or udt_name for arrays) as export's kinds.
_KINDS = {
    "uuid": "uuid", "timestamp with time zone": "timestamp", "json": "json", "jsonb": "json", "_text": "text_list",
    "text": "text", "integer": "integer", "bigint": "bigint", "double precision": "double", "boolean": "boolean",
}
# How DuckDB reads each kind back from the CSV's text (uuid, json and text stay text).
_DUCKDB_CASTS = {
    "timestamp": "CAST({} AS TIMESTAMPTZ)", "integer": "CAST({} AS INTEGER)", "bigint": "CAST({} AS BIGINT)",
    "double": "CAST({} AS DOUBLE)", "boolean": "CAST({} AS BOOLEAN)", "text_list": "CAST(CAST({} AS JSON) AS VARCHAR[])",
}
_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# An event may be 1.5 MB and a run's object more: DuckDB's CSV reader refuses longer lines (2 MB by default).
_MAX_LINE = 256 * 1024 * 1024


def export_source(archive: Archive, read_timeout: timedelta) -> PostgreSQLExportSource:
    if not isinstance(archive, PostgreSQLArchive):
        raise TypeError(f"not a PostgreSQL archive: {archive!r}")
    return PostgreSQLExportSource(archive.url, read_timeout)


def time_expr(table: TableSpec) -> str:
    return f"coalesce({', '.join(quoted(c) for c in table.time)})" if len(table.time) > 1 else quoted(table.time[0])


def day_expr(table: TableSpec) -> str:
    return f"to_char({time_expr(table)} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def digest_expr(table: TableSpec) -> str:
    """DuckDB's digest (duckdb/export.py) in PostgreSQL's words: the same number for the same rows."""
    parts = [f"{quoted(c)}::text" for c in table.key]
    if table.version:
        parts.append(f"((extract(epoch FROM {quoted(table.version)}) * 1000000)::bigint)::text")
    return f"coalesce(sum(('x' || substr(md5(concat_ws('|', {', '.join(parts)})), 1, 15))::bit(60)::bigint), 0)"


def _as_text(column: Column) -> str:
    name = quoted(column.name)
    if column.kind == "timestamp":
        return f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    if column.kind == "text_list":
        return f"to_json({name})::text"
    return f"{name}::text"


class PostgreSQLExportSource(ExportSource):
    """Reads the archive in the database `url` names for `export`."""

    def __init__(self, url: str, timeout: timedelta) -> None:
        self.url = url
        self.timeout = timeout

    def fingerprints(self, tables: Sequence[TableSpec]) -> Fingerprints:
        def read(conn: Conn) -> Fingerprints:
            present = _tables(conn)
            return {t.name: _fingerprints(conn, t, None) for t in tables if t.name in present}

        try:
            found: Fingerprints = pool.with_connection(self.url, self.timeout, read)
        except psycopg.Error as exc:
            raise classify(self.url, exc) from None
        return found

    def write(self, jobs: Sequence[Job], file_format: str, staging: Path) -> Fingerprints:
        staging.mkdir(parents=True, exist_ok=True)
        found: Fingerprints = {}
        read: list[tuple[Job, list[Column], Path]] = []
        conn = pool.begin(self.url, self.timeout, _SNAPSHOT)
        try:
            for number, job in enumerate(jobs):
                table = job.table
                now = _fingerprints(conn, table, job.partitions if table.partitioned else None)
                found[table.name] = {p: now.get(p, Fingerprint(0, "0")) for p in job.partitions}
                columns = _columns(conn, table.name)
                rows_file = staging / f"rows-{number}.csv"
                _copy_out(conn, job, columns, rows_file)
                read.append((job, columns, rows_file))
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            conn.close()
            raise classify(self.url, exc) from None
        except BaseException:
            conn.close()
            raise
        pool.give_back(self.url, self.timeout, conn)
        for job, columns, rows_file in read:  # the snapshot is let go before DuckDB writes the files
            _write_from_csv(rows_file, columns, job.table, file_format, staging / job.table.name)
            rows_file.unlink()
        return found


def _copy_out(conn: Conn, job: Job, columns: Sequence[Column], rows_file: Path) -> None:
    """The job's rows as PostgreSQL's CSV, every value as text DuckDB reads back exactly, into `rows_file`."""
    table = job.table
    select = ", ".join(_as_text(c) for c in columns)
    if table.partitioned:
        query = (f"SELECT {day_expr(table)}, {select} FROM {quoted(table.name)} WHERE {_where(table, job.partitions)} "
                 f"ORDER BY {order_expr(table)}")
    else:
        query = f"SELECT {select} FROM {quoted(table.name)} ORDER BY {order_expr(table)}"
    with rows_file.open("wb") as out, conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
        for data in copy:
            out.write(data)


def _write_from_csv(rows_file: Path, columns: Sequence[Column], table: TableSpec, file_format: str, staging: Path) -> None:
    """The CSV PostgreSQL wrote, typed as DuckDB's archive types it, written as the export's files."""
    names = ([PARTITION_COLUMN] if table.partitioned else []) + [c.name for c in columns]
    as_read = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in names) + "}"
    typed = ", ".join(_DUCKDB_CASTS.get(c.kind, "{}").format(quoted(c.name)) + f" AS {quoted(c.name)}" for c in columns)
    day = f"{PARTITION_COLUMN}, " if table.partitioned else ""
    path = str(rows_file).replace("'", "''")
    # PostgreSQL's CSV: NULL is an empty unquoted field, an empty string is "" (allow_quoted_nulls off).
    relation = (f"SELECT {day}{typed} FROM read_csv('{path}', columns = {as_read}, header = false, auto_detect = false, "
                f"delim = ',', quote = '\"', escape = '\"', allow_quoted_nulls = false, max_line_size = {_MAX_LINE})")
    conn = open_duckdb(":memory:", config={**NO_EXTENSIONS, "memory_limit": "512MB", "threads": 2})
    try:
        conn.execute("SET temp_directory = $1", [str(staging / "spill")])
        write_files(conn, relation, columns, file_format, staging, table.partitioned, order_expr(table))
    finally:
        conn.close()


def _where(table: TableSpec, partitions: Sequence[str]) -> str:
    """As DuckDB's: the time range lets PostgreSQL use its index on occurred; literals (checked days)."""
    since, until = day_bounds(partitions)
    at = time_expr(table)
    days = ", ".join(f"'{p}'" for p in partitions)
    return (f"{at} >= '{since.isoformat()}'::timestamptz AND {at} < '{until.isoformat()}'::timestamptz "
            f"AND {day_expr(table)} IN ({days})")


def _fingerprints(conn: Conn, table: TableSpec, partitions: Sequence[str] | None) -> dict[str, Fingerprint]:
    if not table.partitioned:
        row = conn.execute(f"SELECT count(*), {digest_expr(table)} FROM {quoted(table.name)}".encode()).fetchone()
        rows, digest = row if row else (0, 0)
        return {WHOLE: Fingerprint(int(rows), str(digest))}
    where = "TRUE" if partitions is None else _where(table, partitions)
    found = conn.execute(f"SELECT {day_expr(table)} AS day, count(*), {digest_expr(table)} FROM {quoted(table.name)} "
                         f"WHERE {where} GROUP BY 1".encode()).fetchall()
    return {str(day): Fingerprint(int(rows), str(digest)) for day, rows, digest in found}


def _tables(conn: Conn) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'").fetchall()
    return {str(name) for (name,) in rows}


def _columns(conn: Conn, name: str) -> list[Column]:
    rows = conn.execute("SELECT column_name, data_type, udt_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position", [name]).fetchall()
    return [Column(str(column), _KINDS.get(str(data_type), _KINDS.get(str(udt), "text"))) for column, data_type, udt in rows]

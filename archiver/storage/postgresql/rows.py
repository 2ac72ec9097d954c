"""Whole tables of a PostgreSQL archive as rows (storage/rows.py): read by key, written by COPY.

The source reads inside one REPEATABLE READ READ ONLY transaction for the whole copy: one
snapshot of the archive, however long the copy takes and whatever a `run` commits meanwhile,
and it never blocks that writer. The sink COPYs each page into a temporary table and moves the
new rows in with one INSERT … ON CONFLICT DO NOTHING RETURNING (the writer's bulk path), the
children of those rows and the copy's progress in the same transaction.

Text keys are compared COLLATE "C" (byte order, as DuckDB and Python compare them), so a key range
holds the same rows here as in a DuckDB archive whatever the database's collation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from archiver.errors import ArchiveError
from archiver.prefect.events import compact_json
from archiver.storage.postgresql.connect import classify, raw_connect
from archiver.storage.rows import Column, Key, Progress, Row, TableSink, TableSource, key_text, key_values
from archiver.storage.tables import TABLES, TableSpec

# PostgreSQL's type names (information_schema data_type, udt_name for arrays) as the neutral kinds.
_KINDS = {"uuid": "uuid", "text": "text", "json": "json", "jsonb": "jsonb", "timestamp with time zone": "timestamptz",
          "integer": "integer", "bigint": "bigint", "double precision": "double", "boolean": "boolean", "_text": "text[]"}
_TYPES = {"uuid": "uuid", "text": "text", "json": "json", "jsonb": "jsonb", "timestamptz": "timestamptz",
          "integer": "integer", "bigint": "bigint", "double": "double precision", "boolean": "boolean", "text[]": "text[]"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _no_nul_text(value: Any) -> Any:
    """TEXT cannot hold NUL (DuckDB's VARCHAR can): U+FFFD, as the writer stores states' text."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_no_nul_text(item) for item in value]
    return value


def _jsonb_text(value: Any) -> Any:
    """JSONB refuses the escape \\u0000 (JSON keeps it): U+FFFD, as typed.jsonb_text writes it."""
    return value.replace("\\u0000", "\\ufffd") if isinstance(value, str) and "\\u0000" in value else value


# How each derived table (tables.py) is computed from the rows it comes from: as migrations 0005 and 0006 filled them.
_REBUILD = {
    "event_days": ("DELETE FROM event_days",
                   "INSERT INTO event_days SELECT (occurred AT TIME ZONE 'UTC')::DATE, count(*) FROM events GROUP BY 1"),
    "resource_spans": ("DELETE FROM resource_spans",
                       "INSERT INTO resource_spans SELECT resource_id, min(occurred), max(occurred) FROM event_resources "
                       "GROUP BY 1"),
}


class PostgreSQLTables(TableSource):
    """Tables of one PostgreSQL archive, over one connection of their own."""

    def __init__(self, url: str, conn: psycopg.Connection[Any]) -> None:
        self.url = url
        self.conn = conn
        self._columns: dict[str, list[Column] | None] = {}
        self._streams = 0  # server-side cursors opened, for their names

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql.encode() if not params else sql, params or None).fetchall()
        except psycopg.Error as exc:
            raise classify(self.url, exc) from exc

    def schema_version(self) -> int | None:
        if not self._fetch("SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]:
            return None
        value = self._fetch("SELECT max(version) FROM schema_migrations")[0][0]
        return int(value) if value is not None else None

    def columns(self, table: str) -> list[Column] | None:
        if table not in self._columns:
            found = self._fetch(
                "SELECT column_name, CASE WHEN data_type = 'ARRAY' THEN udt_name ELSE data_type END "
                "FROM information_schema.columns WHERE table_name = %s AND table_schema = current_schema() "
                "ORDER BY ordinal_position", (table,))
            self._columns[table] = [Column(name, _KINDS.get(kind, kind)) for name, kind in found] or None
        return self._columns[table]

    def _kinds(self, table: str) -> dict[str, str]:
        return {c.name: c.kind for c in self.columns(table) or []}

    def _order(self, table: str, key: Sequence[str]) -> list[str]:
        kinds = self._kinds(table)
        return [f'{_q(k)} COLLATE "C"' if kinds[k] == "text" else _q(k) for k in key]

    def _after(self, table: str, key: Sequence[str], after: Key | None, params: list[Any]) -> str:
        if after is None:
            return ""
        kinds = self._kinds(table)
        columns = self._order(table, key)
        casts = []
        for name, value in zip(key, after, strict=True):
            params.append(value.isoformat() if isinstance(value, datetime) else str(value))
            casts.append(f"CAST(%s AS {_TYPES[kinds[name]]})")
        if len(key) > 1:
            return f" WHERE ({', '.join(columns)}) > ({', '.join(casts)})"
        return f" WHERE {columns[0]} > {casts[0]}"

    def _select(self, columns: Sequence[Column]) -> str:
        # JSON as text: the json type exactly as stored; jsonb re-made compact below.
        return ", ".join(f"{_q(c.name)}::text" if c.kind in ("json", "jsonb") else _q(c.name) for c in columns)

    @staticmethod
    def _neutral(columns: Sequence[Column], rows: list[tuple[Any, ...]]) -> list[Row]:
        jsonb = [i for i, c in enumerate(columns) if c.kind == "jsonb"]
        if not jsonb:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for i in jsonb:
                if values[i] is not None:
                    values[i] = compact_json(json.loads(values[i]))
            out.append(tuple(values))
        return out

    def count(self, table: str) -> int:
        return int(self._fetch(f"SELECT count(*) FROM {_q(table)}")[0][0])

    def pages(self, spec: TableSpec, columns: Sequence[Column], after: Key | None, size: int) -> Iterator[list[Row]]:
        params: list[Any] = []
        bound = (spec.parent_key,) if spec.parent_key else spec.key
        where = self._after(spec.name, bound, after, params)
        order = ", ".join(self._order(spec.name, spec.key))
        self._streams += 1
        # A server-side cursor: the rows come `size` at a time, however many the table holds.
        try:
            with self.conn.cursor(name=f"copy_stream_{self._streams}") as cursor:
                cursor.execute(f"SELECT {self._select(columns)} FROM {_q(spec.name)}{where} ORDER BY {order}", params)
                while chunk := cursor.fetchmany(size):
                    yield self._neutral(columns, chunk)
        except psycopg.Error as exc:
            raise classify(self.url, exc) from exc

    def cursor_value(self, spec: TableSpec) -> Any:
        assert spec.cursor is not None
        rows = self._fetch(f"SELECT {_q(spec.cursor)} FROM {_q(spec.name)} WHERE id = 1")
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.conn.close()


def open_source(url: str, timeout: timedelta) -> PostgreSQLTables:
    """The archive in one read-only snapshot (REPEATABLE READ) for the whole copy."""
    conn = raw_connect(url, "prefect-archiver copy (source)", autocommit=False)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return PostgreSQLTables(url, conn)


class PostgreSQLSink(PostgreSQLTables, TableSink):
    """Tables of a PostgreSQL archive being copied into (the caller holds its writer lock)."""

    def progress(self, source: str) -> dict[str, Progress]:
        rows = self._fetch("SELECT table_name, after_key, rows_copied, done FROM copy_progress WHERE source = %s", (source,))
        self._commit()
        return {name: Progress(name, key_values(after) if after else None, int(copied), bool(done))
                for name, after, copied, done in rows}

    def sources(self) -> list[str]:
        found = [row[0] for row in self._fetch("SELECT DISTINCT source FROM copy_progress ORDER BY 1")]
        self._commit()
        return found

    def holds_rows(self) -> bool:
        try:
            for spec in TABLES:
                if self.columns(spec.name) is None:
                    continue
                condition = f" WHERE {_q(spec.cursor)} IS NOT NULL" if spec.cursor else ""
                if self._fetch(f"SELECT 1 FROM {_q(spec.name)}{condition} LIMIT 1"):
                    return True
            return False
        finally:
            self._commit()

    def _commit(self) -> None:
        try:
            self.conn.commit()
        except psycopg.Error as exc:
            raise classify(self.url, exc) from exc

    def _copy_in(self, table: str, columns: Sequence[Column], rows: Sequence[Row]) -> None:
        jsonb = [i for i, c in enumerate(columns) if c.kind == "jsonb"]
        text = [i for i, c in enumerate(columns) if c.kind in ("text", "text[]")]
        names = ", ".join(_q(c.name) for c in columns)
        with self.conn.cursor() as cursor, cursor.copy(f"COPY {_q(table)} ({names}) FROM STDIN".encode()) as copy:
            for row in rows:
                values = list(row)
                for i in jsonb:
                    values[i] = _jsonb_text(values[i])
                for i in text:
                    values[i] = _no_nul_text(values[i])
                copy.write_row(values)

    def write_page(self, source: str, spec: TableSpec, columns: Sequence[Column], rows: Sequence[Row],
                   children: Sequence[tuple[TableSpec, Sequence[Column], Sequence[Row]]], progress: Progress) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            new: set[Key] = set()
            if rows:
                incoming = f"copy_incoming_{spec.name}"
                self.conn.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {_q(incoming)} (LIKE {_q(spec.name)}) "
                                  "ON COMMIT DELETE ROWS".encode())
                self._copy_in(incoming, columns, rows)
                names = ", ".join(_q(c.name) for c in columns)
                keys = ", ".join(_q(k) for k in spec.key)
                new = {tuple(r) for r in self.conn.execute(
                    f"INSERT INTO {_q(spec.name)} ({names}) SELECT {names} FROM {_q(incoming)} "
                    f"ON CONFLICT DO NOTHING RETURNING {keys}".encode()).fetchall()}
            for child, child_columns, child_rows in children:
                at = [c.name for c in child_columns].index(child.parent_key or "")
                mine = [r for r in child_rows if (r[at],) in new]
                if mine:
                    self._copy_in(child.name, child_columns, mine)
                counts[child.name] = len(mine)
            counts[spec.name] = len(new)
            self._save(source, progress)
            self.conn.commit()
        except psycopg.Error as exc:
            self.conn.rollback()
            raise self._error(exc) from exc
        return counts

    def _save(self, source: str, progress: Progress) -> None:
        self.conn.execute(
            "INSERT INTO copy_progress VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, table_name) DO UPDATE SET "
            "after_key = excluded.after_key, rows_copied = excluded.rows_copied, done = excluded.done, "
            "updated = excluded.updated",
            (source, progress.table, key_text(progress.after) if progress.after is not None else None,
             progress.rows_copied, progress.done, datetime.now(timezone.utc)))

    def save_progress(self, source: str, progress: Progress) -> None:
        try:
            self._save(source, progress)
            self.conn.commit()
        except psycopg.Error as exc:
            self.conn.rollback()
            raise self._error(exc) from exc

    def rebuild(self, spec: TableSpec) -> None:
        try:
            for statement in _REBUILD[spec.name]:
                self.conn.execute(statement)
            self.conn.commit()
        except psycopg.Error as exc:
            self.conn.rollback()
            raise self._error(exc) from exc

    def advance_cursor(self, spec: TableSpec, value: Any) -> None:
        if value is None:
            return
        assert spec.cursor is not None
        column = _q(spec.cursor)
        try:
            self.conn.execute(f"UPDATE {_q(spec.name)} SET {column} = greatest(coalesce({column}, %s), %s) WHERE id = 1",
                              (value, value))
            self.conn.commit()
        except psycopg.Error as exc:
            self.conn.rollback()
            raise self._error(exc) from exc

    def _error(self, exc: psycopg.Error) -> ArchiveError:
        error = classify(self.url, exc)
        return ArchiveError(f"{error}; that page was rolled back: run `prefect-archiver copy` again to continue "
                            "from the last page committed")


def open_sink(url: str, timeout: timedelta) -> PostgreSQLSink:
    """A connection of its own for the copy's writes (migrated before by the archive's writer)."""
    conn = raw_connect(url, "prefect-archiver copy", autocommit=False)
    seconds = max(1, int(timeout.total_seconds() * 1000))
    conn.execute(f"SET lock_timeout = {seconds}".encode())
    conn.commit()
    return PostgreSQLSink(url, conn)

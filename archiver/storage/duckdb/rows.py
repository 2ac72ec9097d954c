"""Whole tables of a DuckDB archive as rows (storage/rows.py): read by key, written in bulk.

The source opens the file read-only once for the whole copy (other readers may open it too; a
writer cannot commit meanwhile, so what it reads is one state of the archive). The sink keeps
one read-write connection for the whole copy: it runs under the writer lock, and each page is
one INSERT OR IGNORE … SELECT unnest(…) per table (DuckDB's bulk path, as the writer's), never
row by row; into events, which has no primary key, an INSERT … SELECT of the ids not there yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from archiver.errors import ArchiveError
from archiver.storage.batches import resource_spans
from archiver.storage.duckdb import queries
from archiver.storage.duckdb.connect import NO_EXTENSIONS, classify, open_duckdb, require_archive, scalar, with_lock_retry
from archiver.storage.rows import Column, Key, Progress, Row, TableSink, TableSource, key_text, key_values
from archiver.storage.tables import TABLES, TableSpec

# DuckDB's type names (information_schema.columns.data_type) as the neutral kinds.
_KINDS = {"UUID": "uuid", "VARCHAR": "text", "JSON": "json", "TIMESTAMP WITH TIME ZONE": "timestamptz",
          "INTEGER": "integer", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean", "VARCHAR[]": "text[]"}
# And back: what a list of values of each kind is cast to when unnested into a table.
_TYPES = {"uuid": "UUID", "text": "VARCHAR", "json": "JSON", "jsonb": "JSON", "timestamptz": "TIMESTAMPTZ",
          "integer": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN", "text[]": "VARCHAR[]"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# How each derived table (tables.py) is computed from the rows it comes from: as migrations 0009 and 0011 filled them.
_REBUILD = {
    "event_days": ("DELETE FROM event_days",
                   "INSERT INTO event_days SELECT CAST(make_timestamp(epoch_us(occurred)) AS DATE), count(*) "
                   "FROM events GROUP BY 1"),
    "resource_spans": ("DELETE FROM resource_spans",
                       "INSERT INTO resource_spans SELECT resource_id, min(occurred), max(occurred) FROM event_resources "
                       "GROUP BY 1"),
}


class DuckDBTables(TableSource):
    """Tables of one DuckDB archive file, over one connection."""

    def __init__(self, path: Path, conn: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self.conn = conn
        self._columns: dict[str, list[Column] | None] = {}
        self._primary_keys: dict[str, bool] = {}

    def schema_version(self) -> int | None:
        try:
            value = scalar(self.conn, "SELECT max(version) FROM schema_migrations")
        except duckdb.CatalogException:
            return None
        return int(value) if value is not None else None

    def columns(self, table: str) -> list[Column] | None:
        if table not in self._columns:
            found = self.conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 "
                "AND table_schema = 'main' ORDER BY ordinal_position", [table]).fetchall()
            self._columns[table] = [Column(name, _KINDS.get(kind, kind)) for name, kind in found] or None
        return self._columns[table]

    def _kinds(self, table: str) -> dict[str, str]:
        return {c.name: c.kind for c in self.columns(table) or []}

    def _after(self, table: str, key: Sequence[str], after: Key | None, params: list[Any]) -> str:
        """WHERE text for rows after `after` on `key`, its values appended to `params` as text cast in SQL."""
        if after is None:
            return ""
        kinds = self._kinds(table)
        casts = []
        for name, value in zip(key, after, strict=True):
            params.append(value.isoformat() if isinstance(value, datetime) else str(value))
            casts.append(f"CAST(${len(params)} AS {_TYPES[kinds[name]]})")
        columns = ", ".join(_q(k) for k in key)
        return f" WHERE ({columns}) > ({', '.join(casts)})" if len(key) > 1 else f" WHERE {columns} > {casts[0]}"

    def count(self, table: str) -> int:
        return int(scalar(self.conn, f"SELECT count(*) FROM {_q(table)}"))

    def pages(self, spec: TableSpec, columns: Sequence[Column], after: Key | None, size: int) -> Iterator[list[Row]]:
        params: list[Any] = []
        bound = (spec.parent_key,) if spec.parent_key else spec.key
        where = self._after(spec.name, bound, after, params)
        order = ", ".join(_q(k) for k in spec.key)
        selected = ", ".join(_q(c.name) for c in columns)
        # A cursor of its own: a second stream (a child table's) beside this one on the same database.
        cursor = self.conn.cursor()
        try:
            result = cursor.execute(f"SELECT {selected} FROM {_q(spec.name)}{where} ORDER BY {order}", params)
            while chunk := result.fetchmany(size):
                yield chunk
        finally:
            cursor.close()

    def cursor_value(self, spec: TableSpec) -> Any:
        assert spec.cursor is not None
        return scalar(self.conn, f"SELECT {_q(spec.cursor)} FROM {_q(spec.name)} WHERE id = 1")

    def close(self) -> None:
        self.conn.close()


# The source reads each table as one ordered query (rows.TableSource.pages), so DuckDB sorts whole
# tables: with a memory limit and nowhere to spill, sorting 100k events (600 MB) failed ("failed to
# pin block"); with a temporary folder to spill to and 512 MB it streamed them in 4 s (RSS 612 MB).
SOURCE_CONFIG = {**NO_EXTENSIONS, "memory_limit": "512MB", "threads": 1}
# The destination of a copy into DuckDB: without a limit DuckDB keeps every block it wrote cached, up
# to 80% of the machine (a 300k-event copy peaked at 2.4 GB); pages written are on disk already.
SINK_CONFIG = {**NO_EXTENSIONS, "memory_limit": "1GB"}


class DuckDBSource(DuckDBTables):
    """A DuckDB archive read for a copy, with a folder of its own for DuckDB's sorts to spill to."""

    def __init__(self, path: Path, conn: duckdb.DuckDBPyConnection, spill: str) -> None:
        super().__init__(path, conn)
        self.spill = spill

    def close(self) -> None:
        import shutil

        super().close()
        shutil.rmtree(self.spill, ignore_errors=True)


def open_source(path: Path, timeout: Any) -> DuckDBSource:
    """The archive file read-only (ArchiveMissing, ArchiveBusy as for any reader), for the whole copy."""
    import tempfile

    require_archive(path)
    spill = tempfile.mkdtemp(prefix="prefect-archiver-copy-")
    config = {**SOURCE_CONFIG, "temp_directory": spill}
    try:
        conn = with_lock_retry(path, timeout, lambda: open_duckdb(str(path), read_only=True, config=config), reader=True)
    except BaseException:
        import shutil

        shutil.rmtree(spill, ignore_errors=True)
        raise
    return DuckDBSource(path, conn, spill)


class DuckDBSink(DuckDBTables, TableSink):
    """Tables of a DuckDB archive file being copied into (the caller holds its writer lock)."""

    def progress(self, source: str) -> dict[str, Progress]:
        rows = self.conn.execute("SELECT table_name, after_key, rows_copied, done FROM copy_progress WHERE source = $1",
                                 [source]).fetchall()
        return {name: Progress(name, key_values(after) if after else None, copied, done)
                for name, after, copied, done in rows}

    def sources(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT DISTINCT source FROM copy_progress ORDER BY 1").fetchall()]

    def holds_rows(self) -> bool:
        for spec in TABLES:
            if self.columns(spec.name) is None:
                continue
            condition = f" WHERE {_q(spec.cursor)} IS NOT NULL" if spec.cursor else ""
            if self.conn.execute(f"SELECT 1 FROM {_q(spec.name)}{condition} LIMIT 1").fetchone():
                return True
        return False

    def _keyed(self, table: str) -> bool:
        """Whether `table` has a primary key (INSERT OR IGNORE needs one; events has none since 0010)."""
        if table not in self._primary_keys:
            self._primary_keys[table] = bool(self.conn.execute(
                "SELECT 1 FROM duckdb_constraints() WHERE table_name = $1 AND constraint_type = 'PRIMARY KEY'",
                [table]).fetchall())
        return self._primary_keys[table]

    def _insert(self, table: str, columns: Sequence[Column], rows: Sequence[Row], returning: Sequence[str] | None) -> list[Row]:
        kinds = self._kinds(table)
        lists: list[list[Any]] = [[] for _ in columns]
        for row in rows:
            for values, value in zip(lists, row, strict=True):
                values.append(value)
        for i, column in enumerate(columns):
            if column.kind == "uuid":  # DuckDB binds UUID objects by their text most reliably
                lists[i] = [None if v is None else str(v) for v in lists[i]]
        unnests = ", ".join(f"unnest(${i + 1}::{_TYPES[kinds[c.name]]}[]) AS {_q(c.name)}" for i, c in enumerate(columns))
        names = ", ".join(_q(c.name) for c in columns)
        if not returning:
            self.conn.execute(f"INSERT INTO {_q(table)} ({names}) SELECT * FROM (SELECT {unnests})", lists)
            return []
        tail = f" RETURNING {', '.join(_q(k) for k in returning)}"
        if self._keyed(table):
            return self.conn.execute(f"INSERT OR IGNORE INTO {_q(table)} ({names}) SELECT * FROM (SELECT {unnests}){tail}",
                                     lists).fetchall()
        # No primary key (events): skip the keys already there, looked up within the page's key range
        # (UUIDv7 ids: the zone maps skip the rest). The sink's caller holds the writer lock.
        [key] = returning
        at = [c.name for c in columns].index(key)
        params: list[Any] = list(lists)
        bound = ""
        if kinds[key] == "uuid" and lists[at]:
            params += [min(lists[at]), max(lists[at])]
            bound = f" WHERE {_q(key)} BETWEEN ${len(params) - 1}::UUID AND ${len(params)}::UUID"
        return self.conn.execute(
            f"INSERT INTO {_q(table)} ({names}) SELECT * FROM (SELECT {unnests}) page "
            f"WHERE page.{_q(key)} NOT IN (SELECT {_q(key)} FROM {_q(table)}{bound}){tail}", params).fetchall()

    def write_page(self, source: str, spec: TableSpec, columns: Sequence[Column], rows: Sequence[Row],
                   children: Sequence[tuple[TableSpec, Sequence[Column], Sequence[Row]]], progress: Progress) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            self.conn.execute("BEGIN TRANSACTION")
            new = self._insert(spec.name, columns, rows, spec.key) if rows else []
            counts[spec.name] = len(new)
            fresh = {tuple(r) for r in new}
            for child, child_columns, child_rows in children:
                at = [c.name for c in child_columns].index(child.parent_key or "")
                mine = [r for r in child_rows if (r[at],) in fresh]
                if mine:
                    self._insert(child.name, child_columns, mine, None)
                    if child.name == "event_resources":
                        self._widen_spans(child_columns, mine)
                counts[child.name] = len(mine)
            self._save(source, progress)
            self.conn.execute("COMMIT")
        except duckdb.Error as exc:
            self._rollback()
            raise self._error(exc) from exc
        return counts

    def _widen_spans(self, columns: Sequence[Column], rows: Sequence[Row]) -> None:
        """Keep resource_spans with the event_resources rows just inserted, as the writer does: a
        lookup by resource id reads only its span, so a copy stopped midway must not leave rows
        outside it (the whole table is rebuilt at the end all the same)."""
        names = [c.name for c in columns]
        occurred, resource_id = names.index("occurred"), names.index("resource_id")
        self.conn.execute(queries.WIDEN_SPANS, list(resource_spans([r[occurred] for r in rows],
                                                                   [r[resource_id] for r in rows])))

    def _save(self, source: str, progress: Progress) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO copy_progress VALUES ($1, $2, $3, $4, $5, $6)",
            [source, progress.table, key_text(progress.after) if progress.after is not None else None,
             progress.rows_copied, progress.done, datetime.now(timezone.utc)])

    def save_progress(self, source: str, progress: Progress) -> None:
        try:
            self._save(source, progress)
        except duckdb.Error as exc:
            raise self._error(exc) from exc

    def rebuild(self, spec: TableSpec) -> None:
        try:
            self.conn.execute("BEGIN TRANSACTION")
            for statement in _REBUILD[spec.name]:
                self.conn.execute(statement)
            self.conn.execute("COMMIT")
        except duckdb.Error as exc:
            self._rollback()
            raise self._error(exc) from exc

    def advance_cursor(self, spec: TableSpec, value: Any) -> None:
        if value is None:
            return
        assert spec.cursor is not None
        column = _q(spec.cursor)
        try:
            self.conn.execute(f"UPDATE {_q(spec.name)} SET {column} = greatest(coalesce({column}, $1), $1) WHERE id = 1",
                              [value])
        except duckdb.Error as exc:
            raise self._error(exc) from exc

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction left to roll back (the failed statement ended it)

    def _error(self, exc: duckdb.Error) -> ArchiveError:
        return classify(self.path, exc) or ArchiveError(
            f"writing to archive {self.path} failed ({str(exc).splitlines()[0]}); that page was rolled back: "
            "run `prefect-archiver copy` again to continue from the last page committed")


def open_sink(path: Path, timeout: Any) -> DuckDBSink:
    """The archive file read-write for the whole copy (migrated before by the archive's writer)."""
    conn = with_lock_retry(path, timeout, lambda: open_duckdb(str(path), config=SINK_CONFIG))
    return DuckDBSink(path, conn)


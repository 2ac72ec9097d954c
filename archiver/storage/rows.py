"""Whole tables as rows, for moving an archive: a TableSource reads any table by key, a TableSink writes it.

`copy` (storage/copy.py) reads a source archive through a TableSource and writes a destination
through a TableSink; the tables and their keys come from storage/tables.py. Values cross between
backends in one neutral form, so a row read from either backend can be written to either:

- JSON and JSONB columns as JSON text (events' JSON exactly as stored; PostgreSQL's JSONB as compact
  text in JSONB's key order, as DuckDB's writer would have written those values);
- UUIDs as uuid.UUID, timestamps as timezone-aware datetimes (microseconds kept), lists as lists,
  everything else as Python's own str, int, float, bool or None.

What an implementation must guarantee (tests/unit/storage/test_copy.py holds both backends to it):
- pages are in key order, the same order on every backend and in Python (text compared byte
  by byte, UUIDs as 128-bit numbers), so two archives' keys can be compared as two sorted streams;
- a source reads one consistent state of the archive for as long as it is open, and never writes;
- a sink writes each page, the rows of its children and the copy's progress in ONE transaction,
  first version wins (a row whose key is there already is left as it is), and says how many rows
  were new.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archiver.storage.tables import TableSpec

Key = tuple[Any, ...]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    """A column as both backends can talk about it: `kind` is one of KINDS."""

    name: str
    kind: str


# The column kinds an archive uses; a backend maps its own type names to these.
KINDS = frozenset({"uuid", "text", "json", "jsonb", "timestamptz", "integer", "bigint", "double", "boolean", "text[]"})


@dataclass(frozen=True)
class Progress:
    """How far a copy from one source has come in one table of the destination."""

    table: str
    after: Key | None  # the key of the last row copied (None: no page yet)
    rows_copied: int
    done: bool


def key_text(key: Key) -> str:
    """A key as the JSON text copy_progress keeps (UUIDs and times as strings; read back by key_values)."""
    return json.dumps([value.isoformat() if isinstance(value, datetime) else
                       value if isinstance(value, (int, float)) or value is None else str(value) for value in key])


def key_values(text: str) -> Key:
    """copy_progress's key text as the strings and numbers a backend casts to the key's column types."""
    return tuple(json.loads(text))


class TableSource(ABC):
    """Reads whole tables of one archive, by key, from one consistent state of it."""

    @abstractmethod
    def schema_version(self) -> int | None:
        """The newest migration applied to the archive (None: no schema)."""

    @abstractmethod
    def columns(self, table: str) -> list[Column] | None:
        """The table's columns in their order, or None when the archive has no such table."""

    @abstractmethod
    def count(self, table: str) -> int:
        """How many rows the table holds."""

    @abstractmethod
    def pages(self, spec: TableSpec, columns: Sequence[Column], after: Key | None, size: int) -> Iterator[list[Row]]:
        """Every row (the `columns`, in that order) after `after`, in key order, `size` rows at a time.

        One ordered query streamed to the end (not a query per page: a child table has no index on
        its parent key, and a page each would scan it again and again). For a child table `after`
        is its parent's key and applies to `parent_key`.
        """

    @abstractmethod
    def cursor_value(self, spec: TableSpec) -> Any:
        """The value of a cursor table's cursor (None: not set)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the archive."""


class TableSink(TableSource):
    """Writes whole tables into one archive (under its writer lock), and reads them back to verify."""

    @abstractmethod
    def progress(self, source: str) -> dict[str, Progress]:
        """What a copy from `source` has committed so far, by table."""

    @abstractmethod
    def sources(self) -> list[str]:
        """Every source copy_progress names (copies into this archive so far)."""

    @abstractmethod
    def holds_rows(self) -> bool:
        """True when any table of the registry holds a row, or any cursor is set."""

    @abstractmethod
    def write_page(self, source: str, spec: TableSpec, columns: Sequence[Column], rows: Sequence[Row],
                   children: Sequence[tuple[TableSpec, Sequence[Column], Sequence[Row]]], progress: Progress) -> dict[str, int]:
        """Insert the rows (first version wins), the children of those that were new, and the progress:
        one transaction. Returns how many rows were new, by table."""

    @abstractmethod
    def save_progress(self, source: str, progress: Progress) -> None:
        """Record a table's progress on its own (done, or reset to copy it again from the start)."""

    @abstractmethod
    def rebuild(self, spec: TableSpec) -> None:
        """Compute a derived table (spec.derived) anew from the rows it is derived from, in one transaction."""

    @abstractmethod
    def advance_cursor(self, spec: TableSpec, value: Any) -> None:
        """Move a cursor table's cursor to `value` if that is later (never back; None leaves it)."""

"""Export files written by DuckDB, for both backends: Parquet every engine reads, or JSON lines.

The caller hands a relation (SQL) with the table's columns in DuckDB types — the archive's own
table, or rows streamed from PostgreSQL — plus the partition column for a partitioned table.
Parquet: UUIDs and JSON as strings, TIMESTAMPTZ as Parquet's UTC timestamp in microseconds,
lists of strings as lists, zstd-compressed; no DuckDB-only type (UUID, HUGEINT, MAP, UNION) reaches
a file. JSON lines: one object per row with the same columns; JSON columns spliced in as the
archive's text (DuckDB's own JSON writer would re-print numbers: 1e20 as 100000000000000000000.0),
times as ISO 8601 in UTC with a Z. DuckDB writes the files; its parquet extension is built into
the wheel and extensions are never fetched (connect.NO_EXTENSIONS).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import duckdb

from archiver.storage.export import PARTITION_COLUMN, Column

EXTENSIONS = {"parquet": "parquet", "jsonl": "jsonl"}
# Identifiers come from the archive's schema; anything else would not be spliced into SQL.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# JSON text holds no raw control character (RFC 8259), so a line never holds this delimiter or a
# newline, and DuckDB's CSV writer, told not to quote, writes each line as it is.
_LINES = "FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x1f'"


def quoted(name: str) -> str:
    """A column name as SQL (`timestamp` and `type` are column names here), refusing anything odd."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a column name of the archive: {name!r}")
    return f'"{name}"'


def _utc_text(expr: str) -> str:
    # epoch_us -> a plain TIMESTAMP is UTC whatever the connection's TimeZone (no ICU needed).
    return f"strftime(make_timestamp(epoch_us({expr})), '%Y-%m-%dT%H:%M:%S.%fZ')"


def parquet_columns(columns: Sequence[Column]) -> str:
    """The select list of a Parquet file: strings for UUIDs, JSON and text (and any type export does
    not know, so no DuckDB-only type reaches a file), everything else as typed."""
    out = []
    for column in columns:
        name = quoted(column.name)
        out.append(f"CAST({name} AS VARCHAR) AS {name}" if column.kind in ("uuid", "json", "text") else name)
    return ", ".join(out)


def json_line(columns: Sequence[Column]) -> str:
    """One JSON object per row, in the table's column order, JSON columns as their archived text."""
    parts = []
    for i, column in enumerate(columns):
        name = quoted(column.name)
        if column.kind == "json":
            value = f"coalesce(CAST({name} AS VARCHAR), 'null')"
        elif column.kind == "timestamp":
            value = f"coalesce(CAST(to_json({_utc_text(name)}) AS VARCHAR), 'null')"
        elif column.kind in ("uuid", "text"):
            value = f"coalesce(CAST(to_json(CAST({name} AS VARCHAR)) AS VARCHAR), 'null')"
        else:
            value = f"coalesce(CAST(to_json({name}) AS VARCHAR), 'null')"
        parts.append(f"'{',' if i else '{'}\"{column.name}\":' || {value}")
    return " || ".join(parts) + " || '}'"


def write_files(conn: duckdb.DuckDBPyConnection, relation: str, columns: Sequence[Column], file_format: str,
                staging: Path, partitioned: bool, order_by: str) -> None:
    """COPY `relation` (its columns, and PARTITION_COLUMN if `partitioned`) to files under `staging`.

    Partitioned: staging/day=YYYY-MM-DD/data_N.<ext> (DuckDB's Hive layout); otherwise staging/data.<ext>.
    """
    if partitioned and any(c.name == PARTITION_COLUMN for c in columns):
        raise ValueError(f"a table with a column {PARTITION_COLUMN!r} cannot be partitioned by a column of that name")
    extension = EXTENSIONS[file_format]
    select = parquet_columns(columns) if file_format == "parquet" else f"{json_line(columns)} AS line"
    day = f", {PARTITION_COLUMN}" if partitioned else ""
    query = f"SELECT {select}{day} FROM ({relation}) ORDER BY {order_by}"
    options = "FORMAT parquet, COMPRESSION zstd" if file_format == "parquet" else _LINES
    if partitioned:
        target = staging
        # The staging folder also holds what DuckDB spills and, for PostgreSQL, the rows read: not empty.
        options += f", PARTITION_BY ({PARTITION_COLUMN}), FILE_EXTENSION '{extension}', OVERWRITE_OR_IGNORE"
    else:
        target = staging / f"data.{extension}"
    staging.mkdir(parents=True, exist_ok=True)
    conn.execute(f"COPY ({query}) TO '{_sql_text(str(target))}' ({options})")


def _sql_text(text: str) -> str:
    return text.replace("'", "''")

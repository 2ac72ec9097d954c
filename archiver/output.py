"""Printing a query's result as a table, CSV or JSON: the SQL console's output, whatever the backend.

Values become what JSON can hold (times in the API's format, ids as text, JSON columns parsed);
a table is cut to fit, CSV and JSON print every value whole.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

from archiver.prefect.events import format_timestamp
from archiver.storage.reader import SqlResult

# The widest a table cell gets when the output is no terminal (a file, a pipe): csv and json
# print values whole.
MAX_CELL = 80


def _plain(value: Any, json_column: bool = False) -> Any:
    """A value as JSON can hold it: times in the API's format, ids as text, JSON columns parsed."""
    if value is None:
        return None
    if json_column and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, datetime):
        return format_timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, (date, UUID)):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _text(value: Any) -> str:
    """A value as one cell of text (CSV, table)."""
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, (list, dict)):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def write_json(result: SqlResult, out: IO[str]) -> int:
    """A JSON array of objects, streamed; return the row count."""
    count = 0
    out.write("[")
    for row in result.rows:
        item = {name: _plain(v, j) for name, v, j in zip(result.columns, row, result.json, strict=True)}
        out.write(("," if count else "") + "\n" + json.dumps(item, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_csv(result: SqlResult, out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    count = 0
    for row in result.rows:
        writer.writerow([_text(v) for v in row])
        count += 1
    return count


@dataclass(frozen=True)
class Printed:
    """What print_result wrote: the rows, and how many table cells were cut to fit."""

    rows: int
    cut: int = 0


def write_table(result: SqlResult, out: IO[str], max_width: int | None = None) -> Printed:
    """An aligned table whose cells are cut (with "…") to fit: the row into `max_width` characters
    on a terminal, else each cell into MAX_CELL. Padding every line to the widest payload is how
    88 events once became 54 MB of table."""
    # One line per row: every line break Python knows (\r, \u2028, …), not only \n, becomes a space.
    rows = [[" ".join(_text(v).splitlines()) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    widths = _fit(widths, max_width) if max_width else [min(w, MAX_CELL) for w in widths]
    numeric = result.numeric
    cut = sum(len(cell) > width for row in rows for cell, width in zip(row, widths, strict=True))

    def line(cells: Sequence[str]) -> str:
        parts = []
        for cell, width, right in zip(cells, widths, numeric, strict=True):
            if len(cell) > width:
                cell = cell[: max(width - 1, 0)] + "…"
            parts.append(cell.rjust(width) if right else cell.ljust(width))
        return "  ".join(parts).rstrip()

    out.write(line(result.columns) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write(line(row) + "\n")
    return Printed(len(rows), cut)


def _fit(widths: list[int], total: int) -> list[int]:
    """Shrink the widest columns until the row (with two-space gaps) fits `total` characters."""
    widths = list(widths)
    budget = total - 2 * (len(widths) - 1)
    while sum(widths) > budget and max(widths) > 8:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    return widths


def print_result(result: SqlResult, fmt: str, out: IO[str] = sys.stdout) -> Printed:
    """Print in `fmt` (table, csv or json): csv and json whole, a table cut to fit the terminal."""
    if fmt == "json":
        return Printed(write_json(result, out))
    if fmt == "csv":
        return Printed(write_csv(result, out))
    width = shutil.get_terminal_size().columns if out.isatty() else None
    return write_table(result, out, width)

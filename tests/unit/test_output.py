"""The SQL console's printing, whatever backend answered: JSON columns parsed, numbers aligned, cells cut."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from archiver.output import MAX_CELL, print_result
from archiver.storage.reader import SqlResult

ROWS: list[tuple[Any, ...]] = [
    (uuid.UUID(int=1), '{"a": [1, 2]}', 7, datetime(2026, 3, 1, 12, tzinfo=timezone.utc), "x" * 200),
    (uuid.UUID(int=2), None, 1234, None, "short"),
]


def result() -> SqlResult:
    return SqlResult(
        columns=["id", "doc", "n", "at", "text"], types=["UUID", "JSON", "BIGINT", "TIMESTAMP WITH TIME ZONE", "VARCHAR"],
        rows=iter(ROWS), json=[False, True, False, False, False], numeric=[False, False, True, False, False],
    )


def test_json_output_parses_the_columns_the_result_marks_as_json() -> None:
    out = io.StringIO()
    assert print_result(result(), "json", out).rows == 2
    first, second = json.loads(out.getvalue())
    assert first == {"id": str(uuid.UUID(int=1)), "doc": {"a": [1, 2]}, "n": 7, "at": "2026-03-01T12:00:00Z", "text": "x" * 200}
    assert second["doc"] is None and second["at"] is None


def test_a_table_right_aligns_the_numeric_columns_and_cuts_long_cells() -> None:
    out = io.StringIO()
    printed = print_result(result(), "table", out)
    assert (printed.rows, printed.cut) == (2, 1)
    header, rule, first, second = out.getvalue().splitlines()
    end = header.index("   n  ") + 4  # the header of a numeric column is right-aligned too
    assert first[:end].endswith("   7") and second[:end].endswith("1234")
    assert "x" * (MAX_CELL - 1) + "…" in first and "x" * MAX_CELL not in first


def test_csv_prints_every_value_whole() -> None:
    out = io.StringIO()
    assert print_result(result(), "csv", out).rows == 2
    assert "x" * 200 in out.getvalue() and out.getvalue().startswith("id,doc,n,at,text\n")

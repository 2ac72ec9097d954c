"""The console script ends without the interpreter's teardown (cli.console_main), and loses nothing by it:
its output, its exit code and the process's exit handlers (DuckDB's cleanup, temporary folders)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from archiver.storage.duckdb import DuckDBArchive

ROOT = Path(__file__).resolve().parents[2]


def _console(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "exit-handler-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
        f"sys.argv = ['prefect-archiver', *{list(argv)!r}]\n"
        "from archiver.cli import console_main\n"
        "console_main()\n"
        "print('console_main returned')\n"  # it never does
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return done, marker


def test_a_command_that_prints_exits_with_its_output_whole_and_the_exit_handlers_run(tmp_path):
    db = tmp_path / "archive.duckdb"
    DuckDBArchive(db).writer(timedelta(seconds=5)).close()
    query = "SELECT range AS n FROM range(20000)"  # more than one pipe buffer of output
    done, marker = _console(tmp_path, "sql", "--db", str(db), query, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["n", *map(str, range(20000))]
    assert marker.read_text() == "ran"


def test_a_failing_command_keeps_its_exit_code_and_its_message(tmp_path):
    done, marker = _console(tmp_path, "status", "--db", str(tmp_path / "missing.duckdb"))
    assert done.returncode == 1
    assert done.stderr.startswith("prefect-archiver: error: no archive at") and done.stdout == ""
    assert marker.read_text() == "ran"

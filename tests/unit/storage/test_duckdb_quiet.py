"""No DuckDB connection of ours draws the progress bar: past 2 s DuckDB prints it on stdout, even
into a pipe, where it lands inside `sql --format json`, `sync --json`, `copy --json` or an export's
summary (seen on 1M events). It is a session setting, so every way we connect must turn it off.

Checked in a process of its own: under pytest DuckDB starts with the bar off anyway, as it does
not in a user's `prefect-archiver` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from datetime import timedelta
from pathlib import Path
import sqlalchemy as sa
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb.connect import open_duckdb, open_reader
from archiver.storage.duckdb.console import run_sql
from archiver.storage.duckdb.rows import open_source

BAR = "SELECT current_setting('enable_progress_bar')"
path = Path(sys.argv[1])
seen = {"plain duckdb.connect": open_duckdb.__globals__["duckdb"].connect().execute(BAR).fetchone()[0]}
writer = DuckDBArchive(path).writer(timedelta(seconds=5))  # creates and migrates the file
with writer.engine.connect() as conn:
    seen["writer"] = conn.execute(sa.text(BAR)).scalar()
writer.engine.dispose()
reader = open_reader(path)
seen["reader"] = reader.execute(BAR).fetchone()[0]
reader.close()
with run_sql(path, BAR) as result:
    seen["sql"] = list(result.rows)[0][0]
source = open_source(path, timedelta(seconds=5))
seen["copy source"] = source.conn.execute(BAR).fetchone()[0]
source.close()
seen["in memory"] = open_duckdb(":memory:").execute(BAR).fetchone()[0]
print(json.dumps(seen))
"""


def test_every_duckdb_connection_has_the_progress_bar_off(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "archive.duckdb")],
                          capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout)
    assert seen.pop("plain duckdb.connect") is True  # what a process starts with: why this matters
    assert seen == {"writer": False, "reader": False, "sql": False, "copy source": False, "in memory": False}

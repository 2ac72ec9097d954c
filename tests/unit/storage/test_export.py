"""`export`: files every engine reads, equal to the archive, rewritten only where it changed — on both backends.

Each test fills a fresh archive through its writer (the contract suite's `backend`), exports it and
reads the files back with DuckDB (read_parquet, hive_partitioning) and pyarrow.dataset
(partitioning="hive"), as an analyst's engine would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from archiver.cli import main
from archiver.export import export_archive
from archiver.export.manifest import NAME
from archiver.prefect.events import event_to_api
from archiver.storage import Archive
from archiver.storage.duckdb import DuckDBArchive, archive_url
from archiver.storage.export import export_source
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.tables import table
from archiver.storage.writer import RunState
from tests.unit.storage.shapes import T0

TIMEOUT = timedelta(seconds=5)
ROOT = Path(__file__).resolve().parents[3]
# Days 0, 1 and 2 after T0 (2026-11-02); one awkward payload: a number JSON tools re-print, Unicode, a newline.
AWKWARD = {"big": 1e20, "text": "zürich\nline two", "nested": {"b": [1, 2.5, None]}}


def _flow_run(run: uuid.UUID, name: str, expected: str) -> dict[str, Any]:
    return {"id": str(run), "name": name, "flow_id": str(uuid.UUID(int=run.int ^ 1)), "state_type": "COMPLETED",
            "state_name": "Completed", "run_count": 1, "tags": ["nightly", "etl"], "parameters": {"day": expected[:10]},
            "expected_start_time": expected, "created": "2026-11-01T00:00:00Z", "updated": expected}


@pytest.fixture
def filled(backend: Archive, writer: Any, make_event: Any) -> dict[str, Any]:
    """Events on three UTC days, two flow runs, a flow, run states: what the tests read back."""
    runs = [uuid.uuid4(), uuid.uuid4()]
    events = [make_event(T0 + timedelta(hours=11 * i), flow_run=runs[i % 2], payload=AWKWARD if i == 3 else {"i": i})
              for i in range(6)]
    writer.write_batch(events)
    writer.save_objects("flow_runs", [str(r) for r in runs],
                        [_flow_run(runs[0], "calm-otter", "2026-11-02T09:00:00Z"),
                         _flow_run(runs[1], "brave-fox", "2026-11-03T09:00:00Z")], give_up_after=3)
    writer.save_objects("flows", [], [{"id": str(uuid.UUID(int=runs[0].int ^ 1)), "name": "etl", "tags": []}], 3)
    writer.save_states([RunState(str(uuid.uuid4()), "flow_run", str(runs[0]), "COMPLETED", "Completed", T0, "done\tok",
                                 {"flow_run_id": str(runs[0])}, "none", None, None, None, None, None,
                                 {"type": "COMPLETED"}, T0)], [])
    return {"runs": runs, "events": events}


def _lake(query: str) -> duckdb.DuckDBPyConnection:
    """A query over export files in a DuckDB of its own, as an analyst's DuckDB reads them."""
    return duckdb.connect(config={"autoinstall_known_extensions": False}).execute(query)


def _ids(backend: Archive, table: str) -> set[str]:
    with backend.reader(TIMEOUT).sql(f"SELECT id FROM {table}") as result:
        return {str(row[0]) for row in result.rows}


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` with its inode and mtime (ns)."""
    out = {}
    for path in directory.rglob("*"):
        if path.is_file() and path.name != NAME and not path.name.endswith(".lock"):
            stat = path.stat()
            out[str(path.relative_to(directory))] = (stat.st_ino, stat.st_mtime_ns)
    return out


def test_parquet_reads_back_in_duckdb_and_pyarrow_with_the_archives_ids_and_events(backend, filled, tmp_path):
    out = tmp_path / "lake"
    report = export_archive(backend, out, "parquet", read_timeout=TIMEOUT)
    assert report.tables[0].table == "events" and report.tables[0].written == 3 and report.tables[0].rows == 6

    events = _lake(f"SELECT * FROM read_parquet('{out}/events/*/*.parquet', hive_partitioning = true)")
    columns = [d[0] for d in events.description or []]
    rows = [dict(zip(columns, row, strict=True)) for row in events.fetchall()]
    assert {r["id"] for r in rows} == _ids(backend, "events")
    reader = backend.reader(TIMEOUT)
    for row in rows:  # what `get` prints, rebuilt from the file's columns
        assert event_to_api(row["id"], row["occurred"], row["event"], row["resource"], row["related"], row["payload"],
                            row["received"], row["follows"]) == reader.event(uuid.UUID(row["id"]))
        assert str(row["day"]) == row["occurred"].astimezone(timezone.utc).strftime("%Y-%m-%d")
    awkward = next(r for r in rows if "zürich" in r["payload"])
    assert json.loads(awkward["payload"]) == AWKWARD and '"big":1e+20' in awkward["payload"]  # the archived text itself

    table = ds.dataset(out / "events", format="parquet", partitioning="hive").to_table()
    assert set(table.column("id").to_pylist()) == _ids(backend, "events")
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("occurred").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("payload").type == pa.string()

    runs = ds.dataset(out / "flow_runs", format="parquet", partitioning="hive").to_table().to_pylist()
    assert {(r["name"], r["day"]) for r in runs} == {("calm-otter", "2026-11-02"), ("brave-fox", "2026-11-03")}
    assert all(r["tags"] == ["nightly", "etl"] and json.loads(r["object"])["id"] == r["id"] for r in runs)
    states = ds.dataset(out / "run_states", format="parquet", partitioning="hive").to_table().to_pylist()
    assert [(s["message"], s["timestamp"]) for s in states] == [("done\tok", T0)]
    flows = pq.read_table(out / "flows" / "data.parquet").to_pylist()
    assert [f["name"] for f in flows] == ["etl"]
    assert pq.read_table(out / "work_pools" / "data.parquet").num_rows == 0  # written, with its columns
    resources = _lake(f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{out}/event_resources/*/*.parquet')")
    assert resources.fetchone() == (18, 6)


def test_jsonl_lines_read_back_equal_to_the_archive(backend, filled, tmp_path):
    out = tmp_path / "lines"
    export_archive(backend, out, "jsonl", read_timeout=TIMEOUT)
    lines = [line for path in sorted((out / "events").glob("day=*/*.jsonl")) for line in path.read_text().splitlines()]
    reader = backend.reader(TIMEOUT)
    assert len(lines) == 6
    for line in lines:
        row = json.loads(line)
        archived = reader.event(uuid.UUID(row["id"]))
        assert archived is not None
        assert {k: row[k] for k in ("id", "event", "resource", "related", "payload", "follows")} == \
            {k: archived[k] for k in ("id", "event", "resource", "related", "payload", "follows")}
        assert row["occurred"].endswith("Z") and row["occurred"][:19] == archived["occurred"][:19]
    assert any('"payload":{"big":1e+20,' in line for line in lines)  # spliced as archived, not re-printed
    runs = [json.loads(line) for path in (out / "flow_runs").glob("day=*/*.jsonl") for line in path.read_text().splitlines()]
    assert {r["name"] for r in runs} == {"calm-otter", "brave-fox"} and all(r["tags"] == ["nightly", "etl"] for r in runs)


def test_a_rerun_rewrites_only_the_partitions_that_changed(backend, filled, writer, make_event, tmp_path):
    out = tmp_path / "lake"
    export_archive(backend, out, "parquet", read_timeout=TIMEOUT)
    before = _files(out)
    again = export_archive(backend, out, "parquet", read_timeout=TIMEOUT)
    assert all(t.written == 0 for t in again.tables) and _files(out) == before

    # A late event into the first day, a new day, and the second day's flow run refreshed.
    late = make_event(T0 + timedelta(hours=1))
    writer.write_batch([late, make_event(T0 + timedelta(days=5))])
    runs = filled["runs"]
    writer.save_objects("flow_runs", [str(runs[1])], [_flow_run(runs[1], "brave-fox-2", "2026-11-03T09:00:00Z")], 3)
    report = {t.table: t for t in export_archive(backend, out, "parquet", read_timeout=TIMEOUT).tables}
    after = _files(out)

    assert (report["events"].written, report["events"].unchanged, report["events"].rows) == (2, 2, 8)
    assert (report["flow_runs"].written, report["flow_runs"].unchanged) == (1, 1)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {"events/day=2026-11-02/part-0.parquet", "events/day=2026-11-07/part-0.parquet",
                       "event_resources/day=2026-11-02/part-0.parquet", "event_resources/day=2026-11-07/part-0.parquet",
                       "flow_runs/day=2026-11-03/part-0.parquet"}
    assert set(before) <= set(after)
    ids = ds.dataset(out / "events", format="parquet", partitioning="hive").to_table().column("id").to_pylist()
    assert sorted(ids) == sorted(_ids(backend, "events")) and str(late.id) in ids
    names = _lake(f"SELECT name FROM read_parquet('{out}/flow_runs/*/*.parquet')").fetchall()
    assert sorted(names) == [("brave-fox-2",), ("calm-otter",)]


def test_a_run_that_moves_to_another_day_leaves_its_old_day(backend, filled, writer, tmp_path):
    out = tmp_path / "lake"
    export_archive(backend, out, "parquet", tables=["flow_runs"], read_timeout=TIMEOUT)
    run = filled["runs"][1]
    writer.save_objects("flow_runs", [str(run)], [_flow_run(run, "brave-fox", "2026-11-02T18:00:00Z")], 3)  # rescheduled
    report = export_archive(backend, out, "parquet", tables=["flow_runs"], read_timeout=TIMEOUT).tables[0]
    assert (report.written, report.removed, report.rows) == (1, 1, 2)
    assert sorted(p.name for p in (out / "flow_runs").iterdir()) == ["day=2026-11-02"]
    assert not (out / "events").exists()  # --table: only that table


def test_an_export_killed_midway_is_complete_after_the_next_run(backend, filled, tmp_path):
    out = tmp_path / "lake"
    # A real SIGKILL, after the second partition's files are renamed into place and before the manifest lists them.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "import archiver.export.run as run\n"
        "from archiver.storage import open_archive\n"
        "placed = []\n"
        "original = run._place\n"
        "def place(*args):\n"
        "    names = original(*args)\n"
        "    placed.append(names)\n"
        "    if len(placed) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return names\n"
        "run._place = place\n"
        "run.export_archive(open_archive(sys.argv[1]), Path(sys.argv[2]), 'parquet', chunk_rows=1)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, backend.url, str(out)], cwd=ROOT, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert len(list((out / "events").glob("day=*/*.parquet"))) == 2  # placed, never listed in the manifest
    assert json.loads((out / NAME).read_text())["tables"].get("events", {}).keys() <= {"2026-11-02"}

    report = export_archive(backend, out, "parquet", read_timeout=TIMEOUT)
    assert report.tables[0].rows == 6
    ids = _lake(f"SELECT id FROM read_parquet('{out}/events/*/*.parquet', hive_partitioning = true)").fetchall()
    assert sorted(str(i) for (i,) in ids) == sorted(_ids(backend, "events"))  # nothing twice, nothing missing
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or temporary file left
    listed = {f"{t}/{f}" for t, parts in json.loads((out / NAME).read_text())["tables"].items()
              for p in parts.values() for f in p["files"]}
    assert listed == set(_files(out))


def test_the_manifest_and_output_never_show_the_archives_password(backend, filled, tmp_path, capsys):
    if isinstance(backend, DuckDBArchive):
        url = archive_url(backend.path)
    else:  # the test server trusts local connections: a password in the URL is accepted and ignored
        url = backend.url.replace("postgresql+psycopg://postgres@", "postgresql+psycopg://postgres:s3cr3t-pw@")
    out = tmp_path / "lake"
    assert main(["export", str(out), "--url", url, "--table", "flows", "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["tables"]["flows"]["rows"] == 1
    assert "s3cr3t-pw" not in printed.out + printed.err + (out / NAME).read_text()


def test_the_same_rows_have_the_same_fingerprints_on_both_backends(tmp_path, postgres_database, make_event):
    events = [make_event(T0 + timedelta(hours=13 * i)) for i in range(4)]
    archives = [DuckDBArchive(tmp_path / "archive.duckdb"), PostgreSQLArchive(postgres_database)]
    for archive in archives:
        writer = archive.writer(TIMEOUT)
        writer.write_batch(events)
        writer.close()
    # event_resources has no archived_at (which differs between two archives): its fingerprints depend on rows alone.
    duck, postgres = (export_source(a, TIMEOUT).fingerprints([table("event_resources")]) for a in archives)
    assert duck == postgres and sorted(duck["event_resources"]) == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert sum(f.rows for f in duck["event_resources"].values()) == 12


def test_an_older_archive_is_exported_as_far_as_its_schema_goes_and_left_as_it_was(tmp_path, make_event):
    from archiver.storage.duckdb.migrate import BOOTSTRAP, available

    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute(BOOTSTRAP)
    first = available()[0]  # events, event_resources and the ledger: no run metadata yet
    conn.execute(first.sql)
    conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", [first.version, first.name])
    conn.close()
    report = export_archive(DuckDBArchive(path), tmp_path / "lake", read_timeout=TIMEOUT)
    assert [t.table for t in report.tables] == ["events", "event_resources"]
    assert "flow_runs" in report.absent and "run_states" in report.absent
    with duckdb.connect(str(path), read_only=True) as conn:  # never migrated by export
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchall() == [(first.version,)]


# -- bad input: one line, a non-zero exit, nothing of the user's touched (the DuckDB backend is enough) --


@pytest.fixture
def archive_file(tmp_path, make_event) -> Path:
    path = tmp_path / "archive.duckdb"
    writer = DuckDBArchive(path).writer(TIMEOUT)
    writer.write_batch([make_event(T0)])
    writer.close()
    return path


def _export(args: list[str], path: Path, capsys: Any) -> tuple[int, str]:
    code = main(["export", *args, "--db", str(path)])
    return code, capsys.readouterr().err


def test_an_unknown_format_or_table_is_refused(archive_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["export", str(tmp_path / "x"), "--format", "csv", "--db", str(archive_file)])
    assert exited.value.code == 2 and "invalid choice: 'csv'" in capsys.readouterr().err
    code, err = _export([str(tmp_path / "x"), "--table", "syncs"], archive_file, capsys)
    assert code == 2 and err.count("\n") == 1 and "'syncs' is not a table export writes" in err
    assert not (tmp_path / "x").exists()


def test_another_archive_exported_into_the_directory_replaces_what_the_first_left(archive_file, tmp_path, make_event):
    other = DuckDBArchive(tmp_path / "other.duckdb")
    writer = other.writer(TIMEOUT)
    writer.write_batch([make_event(T0 + timedelta(days=3)), make_event(T0 + timedelta(days=3, hours=1))])
    writer.close()
    out = tmp_path / "lake"
    export_archive(DuckDBArchive(archive_file), out, read_timeout=TIMEOUT)
    report = export_archive(other, out, read_timeout=TIMEOUT).tables[0]
    assert (report.written, report.removed, report.rows) == (1, 1, 2)
    ids = _lake(f"SELECT id FROM read_parquet('{out}/events/*/*.parquet')").fetchall()
    assert {i for (i,) in ids} == _ids(other, "events")


def test_a_directory_that_is_a_file_or_someone_elses_is_refused_untouched(archive_file, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, err = _export([str(a_file)], archive_file, capsys)
    assert code == 2 and err.count("\n") == 1 and "is a file, not a directory" in err

    theirs = tmp_path / "theirs"
    (theirs / "events").mkdir(parents=True)
    (theirs / "events" / "part-0.parquet").write_text("not ours")
    code, err = _export([str(theirs)], archive_file, capsys)
    assert code == 2 and err.count("\n") == 1 and "is not empty and holds no export" in err
    assert [p.name for p in theirs.rglob("*")] == ["events", "part-0.parquet"]
    assert a_file.read_text() == "mine"


def test_another_format_into_an_export_is_refused(archive_file, tmp_path, capsys):
    out = tmp_path / "lake"
    assert _export([str(out)], archive_file, capsys)[0] == 0
    before = _files(out)
    code, err = _export([str(out), "--format", "jsonl"], archive_file, capsys)
    assert code == 2 and err.count("\n") == 1 and "holds a parquet export" in err
    assert _files(out) == before


def test_a_missing_archive_is_one_line_and_makes_no_directory(tmp_path, capsys):
    code, err = _export([str(tmp_path / "lake")], tmp_path / "none.duckdb", capsys)
    assert code == 1 and err.count("\n") == 1 and "no archive at" in err
    assert not (tmp_path / "lake").exists()


def test_the_summary_names_every_table(archive_file, tmp_path, capsys):
    assert main(["export", str(tmp_path / "lake"), "--db", str(archive_file)]) == 0
    out = capsys.readouterr().out
    assert "events:" in out and "1 day written, 0 unchanged; 1 row (1 written)" in out and "flows:" in out
    assert out.strip().splitlines()[-1].startswith("exported ")
    assert os.path.isdir(tmp_path / "lake" / "events" / "day=2026-11-02")

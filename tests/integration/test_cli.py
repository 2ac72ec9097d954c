"""The CLI as users run it, in real processes: crashes, concurrent readers and writers, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from archiver.errors import ArchiveError
from archiver.prefect.events import format_timestamp
from archiver.storage.duckdb.connect import open_reader
from archiver.storage.duckdb.migrate import BOOTSTRAP, available
from archiver.storage.duckdb.writer import DuckDBWriter
from archiver.storage.writer import ORPHANED_RUN_ERROR
from tests.prefect_server import make_event, post_events, server_count, server_event_ids, server_events, wait_until_stored
from tests.support import (
    BACKENDS,
    ROOT,
    archive_of,
    archive_status,
    archived_ids,
    cli_env,
    last_sync_once_the_lock_is_free,
    not_created_yet,
    query,
    read_terminal,
    run_cli,
    start_cli,
    write_config,
)

UTC = timezone.utc


@pytest.fixture(params=BACKENDS)
def slow_sync_env(request, prefect_server, history, tmp_path, new_archive):
    """A sync of the whole history into an archive of each backend that commits often (several
    seconds), resuming from the mark.

    Paced to ten requests a second (api.max_requests_per_minute), so it lasts seconds on any
    machine: unpaced, a backfill now writes the ~2,000 events in about a second, too quickly for
    the readers and kills below to land part-way through.
    """
    db = new_archive(request.param, tmp_path)
    config = write_config(
        tmp_path / "archiver.toml",
        f'start = "{format_timestamp(history.since)}"\nconcurrency = 1\ncommit_every = 50\n'
        "[api]\nmax_requests_per_minute = 600\n",
    )
    return db, cli_env(prefect_server.api_url, db, config), ["sync", "--until", format_timestamp(history.end)]


def read_mark(db):
    status = archive_status(db, timedelta(seconds=10))
    return status["high_water_mark"]


def test_sigkill_mid_sync_then_sync_again_loses_nothing_and_doubles_nothing(prefect_server, history, slow_sync_env):
    db, env, args = slow_sync_env
    partial_marks = []
    kills = 0
    for _ in range(3):
        proc = start_cli(args, env)
        # Kill as soon as a commit has moved the mark past where this run started.
        started_from = read_mark(db) if archive_of(db).exists() else None
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                mark = read_mark(db)
            except ArchiveError:
                mark = None
            if mark is not None and mark != started_from:
                break
            time.sleep(0.02)
        killed = proc.poll() is None
        proc.kill()
        proc.wait()
        if killed:
            # Its row still says 'running', but no process holds the sync lock: status tells.
            last = last_sync_once_the_lock_is_free(db)
            assert (last["outcome"], last["error"]) == ("interrupted", ORPHANED_RUN_ERROR)
            kills += 1
        mark = read_mark(db)
        if mark and mark < format_timestamp(history.end):
            partial_marks.append(mark)
    assert partial_marks, "the kills should land while the sync was part-way through"
    final = run_cli(args, env)
    assert final.returncode == 0, final.stderr
    on_server = server_events(prefect_server.api_url, history.since, history.until)
    assert archived_ids(db, history.since, history.until) == {e["id"] for e in on_server}
    # Nothing doubled, in events or in the resources table written in the same transactions.
    assert query(db, "SELECT count(*), count(DISTINCT id) FROM events WHERE occurred BETWEEN $1 AND $2",
                 [history.since, history.until]) == [(len(on_server), len(on_server))]
    expected_resources = sum(1 + len(e["related"]) for e in on_server)
    assert query(db, "SELECT count(*) FROM event_resources WHERE occurred BETWEEN $1 AND $2",
                 [history.since, history.until]) == [(expected_resources,)]
    runs = query(db, "SELECT outcome, finished IS NULL, error FROM syncs ORDER BY started")
    assert runs[-1] == ("ok", False, None)
    # The next writer marked each killed run interrupted in the ledger: none stays 'running' forever.
    assert kills and runs.count(("interrupted", True, ORPHANED_RUN_ERROR)) == kills
    assert not [r for r in runs if r[0] == "running"]


def test_readers_answer_while_a_sync_runs(history, slow_sync_env):
    db, env, args = slow_sync_env
    # Three requests a second, not ten: the sync must outlast the start of a `status` process on a
    # loaded machine, and at ten a PostgreSQL sync ended first (load 9, reproduced three times).
    config = Path(env["ARCHIVER_CONFIG"])
    config.write_text(config.read_text().replace("max_requests_per_minute = 600", "max_requests_per_minute = 200"))
    proc = start_cli(args, env)
    answers_during_sync = 0
    # `prefect-archiver status` runs in a process of its own beside this loop's reads: a CLI start
    # takes seconds on a loaded machine, and run in the loop it held the reads up until the sync had
    # ended (CI saw one answer). Its answer names the sync 'running' when it read during the sync.
    status_cli: subprocess.Popen[str] | None = None
    cli_outcomes: list[str | None] = []

    def cli_answered(status_cli: subprocess.Popen[str]) -> None:
        out, err = status_cli.communicate(timeout=60)
        assert status_cli.returncode == 0, err
        cli_outcomes.append((json.loads(out)["last_sync"] or {}).get("outcome"))

    try:
        while proc.poll() is None:
            try:
                status = archive_status(db, timedelta(seconds=10))
            except ArchiveError as exc:
                # Before the first commit the file does not exist yet, or has no tables yet.
                assert not_created_yet(exc), exc
                time.sleep(0.02)
                continue
            if proc.poll() is None:
                answers_during_sync += 1
                assert status["events"] >= 0
            if status_cli is not None and status_cli.poll() is not None:
                cli_answered(status_cli)
                status_cli = None
            if status_cli is None and "running" not in cli_outcomes and proc.poll() is None:
                status_cli = start_cli(["status", "--json"], env)
            time.sleep(0.02)
    finally:
        proc.wait(timeout=120)
        if status_cli is not None:
            cli_answered(status_cli)
    assert proc.returncode == 0
    assert answers_during_sync >= 5
    assert "running" in cli_outcomes, f"`prefect-archiver status` should have answered while the sync ran: {cli_outcomes}"
    assert archived_ids(db, history.since, history.until) == history.ids


def test_a_second_writer_is_refused_with_a_clear_message(prefect_server, tmp_path):
    db = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from archiver.storage.duckdb.lock import SyncLock\n"
         f"lock = SyncLock(Path({str(db)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli(["sync"], cli_env(prefect_server.api_url, db))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"another prefect-archiver process (pid {holder.pid}) is writing {db}" in result.stderr
    assert result.stderr.count("\n") == 1
    # Once the holder is gone (even killed), the lock is free again.
    after = run_cli(["sync", "--since", "10m"], cli_env(prefect_server.api_url, db))
    assert after.returncode == 0, after.stderr


def test_get_prints_the_event_as_the_api_returns_it(prefect_server, history, tmp_path):
    db = tmp_path / "get.duckdb"
    env = cli_env(prefect_server.api_url, db)
    synced = run_cli(["sync", "--since", format_timestamp(history.since), "--until",
                      format_timestamp(history.since + timedelta(hours=23)), "--json"], env)
    assert synced.returncode == 0, synced.stderr
    summary = json.loads(synced.stdout)
    assert summary["inserted"] == len(archived_ids(db, history.since, history.until))
    on_server = {e["id"]: e for e in server_events(prefect_server.api_url, history.since, history.since + timedelta(hours=23))}
    result = run_cli(["get", history.unicode_id, "--archive-only"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == on_server[history.unicode_id]
    assert "source: archive" in result.stderr


def test_get_falls_back_to_the_live_api_for_an_event_newer_than_the_last_sync(prefect_server, tmp_path):
    db = tmp_path / "live.duckdb"
    env = cli_env(prefect_server.api_url, db)
    assert run_cli(["sync", "--since", "1h"], env).returncode == 0
    fresh = make_event(datetime.now(UTC) - timedelta(seconds=5), event="acme.fresh")
    moment = datetime.fromisoformat(fresh["occurred"])
    before = server_count(prefect_server.api_url, moment, moment)
    post_events(prefect_server.api_url, [fresh])
    wait_until_stored(prefect_server.api_url, moment, moment, before + 1)
    result = run_cli(["get", fresh["id"], "--json"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"] == "acme.fresh"
    assert "source: live Prefect API" in result.stderr
    archive_only = run_cli(["get", fresh["id"], "--archive-only"], env)
    assert archive_only.returncode == 1
    assert f"no event with id {fresh['id']}" in archive_only.stderr


def test_get_exit_codes_for_unknown_and_malformed_ids(prefect_server, tmp_path):
    env = cli_env(prefect_server.api_url, tmp_path / "none.duckdb")
    missing = run_cli(["get", "0192f0c4-0000-7000-8000-000000000000"], env)
    assert missing.returncode == 1
    assert "no event with id" in missing.stderr and "Prefect API" in missing.stderr
    malformed = run_cli(["get", "not-a-uuid"], env)
    assert malformed.returncode == 2
    assert "is not an event id" in malformed.stderr and "Traceback" not in malformed.stderr


def test_status_reports_mark_lag_and_last_sync(prefect_server, history, tmp_path):
    db = tmp_path / "status.duckdb"
    env = cli_env(prefect_server.api_url, db)
    until = history.since + timedelta(hours=6)
    assert run_cli(["sync", "--since", format_timestamp(history.since), "--until", format_timestamp(until)], env).returncode == 0
    result = run_cli(["status", "--json"], env)
    status = json.loads(result.stdout)
    assert status["high_water_mark"] == format_timestamp(until)
    assert status["events"] == len(server_event_ids(prefect_server.api_url, history.since, until - timedelta(microseconds=1)))
    assert status["last_sync"]["outcome"] == "ok"
    assert status["lag_seconds"] > 3 * 86400
    text = run_cli(["status"], env)
    assert "high-water mark:  " + format_timestamp(until) in text.stdout


def test_verify_reports_missing_buckets_and_repair_restores_them(prefect_server, history, tmp_path):
    db = tmp_path / "verify.duckdb"
    env = cli_env(prefect_server.api_url, db)
    since, until = format_timestamp(history.since), format_timestamp(history.end)
    assert run_cli(["sync", "--since", since, "--until", until], env).returncode == 0
    # Lose the events of one hour, as a bug or a hand-edit might.
    lost_hour = history.since + timedelta(hours=30)
    with duckdb.connect(str(db)) as conn:
        lost = conn.execute(
            "DELETE FROM events WHERE occurred >= $1 AND occurred < $2 RETURNING id",
            [lost_hour, lost_hour + timedelta(hours=1)],
        ).fetchall()
    assert lost
    checked = run_cli(["verify", "--since", since, "--until", until, "--unit", "hour"], env)
    assert checked.returncode == 1
    assert f"{format_timestamp(lost_hour)} .. " in checked.stdout and "archive lacks events" in checked.stdout
    repaired = run_cli(["verify", "--since", since, "--until", until, "--repair", "--json"], env)
    assert repaired.returncode == 0, repaired.stderr + repaired.stdout
    assert json.loads(repaired.stdout)["repaired"] == len(lost)
    assert archived_ids(db, history.since, history.until) == history.ids


def test_verify_only_reads_the_archive_and_repair_upgrades_it(prefect_server, history, tmp_path):
    # An archive an older prefect-archiver left (schema 5): comparing it with the server must not
    # migrate it or write anything (a service of that version may be using it); --repair writes.
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute(BOOTSTRAP)
        for migration in available():
            if migration.version <= 5:
                conn.execute(migration.sql)
                conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", [migration.version, migration.name])
    before = db.read_bytes()
    env = cli_env(prefect_server.api_url, db)
    # Two hours of the history: what is tested is reading versus writing, not the repair's reach.
    start, end = history.since, history.since + timedelta(hours=2)
    since, until = format_timestamp(start), format_timestamp(end)
    checked = run_cli(["verify", "--since", since, "--until", until, "--unit", "hour", "--json"], env)
    assert checked.returncode == 1, checked.stderr
    assert json.loads(checked.stdout)["remaining"] > 0
    assert db.read_bytes() == before
    assert not db.with_name(db.name + ".lock").exists()  # no writer lock taken either
    repaired = run_cli(["verify", "--since", since, "--until", until, "--repair", "--json"], env)
    assert repaired.returncode == 0, repaired.stderr
    assert query(db, "SELECT max(version) FROM schema_migrations")[0][0] == available()[-1].version
    on_server = server_event_ids(prefect_server.api_url, start, end - timedelta(microseconds=1))
    assert on_server and archived_ids(db, start, end - timedelta(microseconds=1)) == on_server


def test_a_damaged_archive_is_named_and_left_untouched(prefect_server, tmp_path):
    db = tmp_path / "damaged.duckdb"
    db.write_bytes(b"this is not a duckdb file" * 400)
    before = db.read_bytes()
    env = cli_env(prefect_server.api_url, db)
    for args in (["status"], ["sync"], ["get", "0192f0c4-0000-7000-8000-000000000000", "--archive-only"]):
        result = run_cli(args, env)
        assert result.returncode == 1, (args, result.stderr)
        assert str(db) in result.stderr and "Move the file aside" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_a_gap_behind_retention_is_loud_in_sync_and_status(prefect_server, history, tmp_path):
    db = tmp_path / "gap.duckdb"
    env = cli_env(prefect_server.api_url, db)
    first_until = history.since + timedelta(hours=1)
    first = run_cli(["sync", "--since", format_timestamp(history.since), "--until", format_timestamp(first_until)], env)
    assert first.returncode == 0, first.stderr
    short = write_config(tmp_path / "short.toml")
    short.write_text('[ingest]\nretention = "2d"\n')
    env_short = cli_env(prefect_server.api_url, db, short)
    result = run_cli(["sync", "--until", format_timestamp(first_until + timedelta(hours=1))], env_short)
    assert result.returncode == 0, result.stderr
    assert f"GAP: events that occurred between {format_timestamp(first_until)} and " in result.stderr
    assert "may have been lost" in result.stderr and "(ingest.retention)" in result.stderr
    status = run_cli(["status"], env_short)
    assert "GAP:" in status.stdout


def test_python_m_archiver_and_the_console_script_are_the_same_cli(tmp_path):
    script = shutil.which("prefect-archiver", path=str(Path(sys.executable).parent)) or shutil.which("prefect-archiver")
    assert script, "pip install . must put prefect-archiver on PATH"
    for command in ([script, "--help"], [sys.executable, "-m", "archiver", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0
        assert "sync" in result.stdout and "verify" in result.stdout


def test_a_backfill_on_a_terminal_shows_progress(prefect_server, history, tmp_path):
    import os
    import pty

    env = cli_env(prefect_server.api_url, tmp_path / "tty.duckdb")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archiver", "sync", "--since", format_timestamp(history.since),
         "--until", format_timestamp(history.end)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=secondary, text=True,
    )
    os.close(secondary)
    seen = read_terminal(primary)
    proc.wait(timeout=120)
    os.close(primary)
    assert proc.returncode == 0
    text = seen.decode()
    assert "archiving [" in text and f"/{len(history.ids):,} events" in text
    assert "archived" in proc.stdout.read()


# -- a first day's rough edges (issue 11 §6) ------------------------------------------------------


def closed_port_url() -> str:
    """An API URL where nothing listens: every connection is refused."""
    from tests.prefect_server import free_port

    return f"http://127.0.0.1:{free_port()}/api"


def test_an_unreachable_server_is_one_line_at_once_naming_the_url_the_user_set(tmp_path):
    url = closed_port_url()
    db = tmp_path / "a.duckdb"
    env = cli_env(url, db, PREFECT_API_KEY="pnu_never-shown-0123")
    DuckDBWriter(db).close()  # an empty archive, for verify to compare
    for args in (["get", "0192f0c4-0000-7000-8000-000000000000"], ["check"], ["sync"], ["verify", "--since", "1d"]):
        result = run_cli(args, env)
        assert result.returncode == 1, (args, result.stderr)
        out = result.stdout + result.stderr
        assert f"nothing is listening at {url} (connection refused)" in out, (args, out)
        # No retry storm, no endpoint the user never asked for, no key.
        assert "WARNING" not in out and "retry" not in out and "csrf" not in out.lower(), (args, out)
        assert "pnu_never-shown" not in out
        assert result.stderr.count("\n") <= 1, (args, result.stderr)


def test_sync_right_after_emitting_says_the_newest_events_are_left_for_the_next_run(prefect_server, tmp_path):
    now = datetime.now(UTC)
    post_events(prefect_server.api_url, [make_event(now, event="acme.just-emitted")])
    config = write_config(tmp_path / "archiver.toml", f'start = "{format_timestamp(now - timedelta(seconds=30))}"\n')
    result = run_cli(["sync"], cli_env(prefect_server.api_url, tmp_path / "fresh.duckdb", config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("archived 0 new events")
    assert "events of the last 60s (ingest.settle: the server may still be storing them) are left for the next run" \
           in lines
    # With an --until the settle does not cut, nothing is said to be left.
    bounded = run_cli(["sync", "--until", format_timestamp(now - timedelta(minutes=5))],
                      cli_env(prefect_server.api_url, tmp_path / "bounded.duckdb", config))
    assert bounded.returncode == 0, bounded.stderr
    assert "left for the next run" not in bounded.stdout


def test_a_sqlite_file_given_as_the_archive_is_refused_and_makes_duckdb_fetch_nothing(tmp_path):
    import sqlite3

    db = tmp_path / "prefect.db"  # Prefect's own SQLite database is the file people point --db at
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE flow_run (id TEXT)")
    before = db.read_bytes()
    home = tmp_path / "home"  # DuckDB would install extensions under ~/.duckdb
    env = cli_env(closed_port_url(), tmp_path / "unused.duckdb", HOME=str(home))
    for args in (["status"], ["sql", "SELECT 1"], ["events"], ["sync"], ["get", "0192f0c4-0000-7000-8000-000000000000",
                                                                          "--archive-only"]):
        result = run_cli([*args, "--db", str(db)], env)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr == (f"prefect-archiver: error: {db} is not a DuckDB archive (it looks like a SQLite database); "
                                 "nothing was read or changed: point --db or ARCHIVER_DB at your archive (a DuckDB file; "
                                 "by default $PREFECT_HOME/archive.duckdb), or at a path with no file yet to start a new "
                                 "archive there\n"), (args, result.stderr)
    assert db.read_bytes() == before
    assert not (home / ".duckdb").exists()


def test_every_connection_to_the_archive_has_extension_autoloading_off(tmp_path):
    db = tmp_path / "a.duckdb"
    archive = DuckDBWriter(db)
    with archive.engine.connect() as conn:  # every connection of the writer comes from this engine
        writer = conn.exec_driver_sql("SELECT current_setting('autoinstall_known_extensions'), "
                                      "current_setting('autoload_known_extensions')").fetchall()
    archive.close()
    reader = open_reader(db)
    try:
        read = reader.execute("SELECT current_setting('autoinstall_known_extensions'), "
                              "current_setting('autoload_known_extensions')").fetchall()
    finally:
        reader.close()
    sql = run_cli(["sql", "SELECT current_setting('autoinstall_known_extensions') AS install, "
                          "current_setting('autoload_known_extensions') AS load", "--format", "csv"], cli_env(None, db))
    assert writer == read == [(False, False)]
    assert sql.stdout == "install,load\nFalse,False\n", sql.stderr


def test_since_later_than_until_is_refused_saying_which_is_later(tmp_path):
    env = cli_env(closed_port_url(), tmp_path / "a.duckdb")
    for command in ("sync", "events", "verify"):
        result = run_cli([command, "--since", "2026-11-02", "--until", "2026-11-01T12:00:00Z"], env)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr == ("prefect-archiver: error: --since 2026-11-02T00:00:00Z is later than --until "
                                 "2026-11-01T12:00:00Z: swap them, or leave one out\n"), (command, result.stderr)


def test_the_missing_archive_message_names_where_its_path_came_from(tmp_path):
    missing = tmp_path / "nope.duckdb"
    flag = run_cli(["status", "--db", str(missing)], cli_env(None, tmp_path / "other.duckdb"))
    assert flag.returncode == 1
    assert flag.stderr == (f"prefect-archiver: error: no archive at {missing} (given with --db): check the path, or run "
                           "`prefect-archiver sync` to start an archive there\n")
    env = run_cli(["sql", "SELECT 1"], cli_env(None, missing))
    assert f"no archive at {missing} (from ARCHIVER_DB): check the path" in env.stderr
    config = tmp_path / "archiver.toml"
    config.write_text(f'[archive]\npath = "{missing}"\n')
    from_file = run_cli(["events", "--config", str(config)], {**cli_env(None, missing), "ARCHIVER_DB": ""})
    assert f"no archive at {missing} (archive.path in the config file)" in from_file.stderr
    home = tmp_path / "prefect-home"
    default = run_cli(["status"], {**cli_env(None, missing), "ARCHIVER_DB": "", "PREFECT_HOME": str(home)})
    assert default.stderr == (f"prefect-archiver: error: no archive at {home / 'archive.duckdb'}: run `prefect-archiver "
                              "sync` first, or point --db / ARCHIVER_DB at your archive\n")


def hold_archive(db: Path, *, as_sync: bool) -> subprocess.Popen[str]:
    """Another process holding the DuckDB file open: a read-only reader (a DuckDB shell, a notebook),
    or a prefect-archiver writer committing (the sync lock and a read-write connection, as sync holds them)."""
    script = ("import sys, time; from pathlib import Path; import duckdb\n"
              "from archiver.storage.duckdb.lock import SyncLock\n"
              f"db = Path({str(db)!r})\n"
              + ("SyncLock(db).acquire(); conn = duckdb.connect(str(db))\n" if as_sync else
                 "conn = duckdb.connect(str(db), read_only=True)\n")
              + "print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_the_lock_message_tells_a_reader_from_a_sync_committing(prefect_server, tmp_path):
    db = tmp_path / "held.duckdb"
    config = write_config(tmp_path / "archiver.toml", '[archive]\nread_timeout = "1s"\n')
    env = cli_env(prefect_server.api_url, db, config)
    assert run_cli(["sync", "--since", "5m"], env).returncode == 0
    reader = hold_archive(db, as_sync=False)
    try:
        blocked_sync = run_cli(["sync", "--since", "5m"], env)
    finally:
        reader.kill()
        reader.wait()
    assert blocked_sync.returncode == 1
    assert f"archive {db} is open in another process (pid {reader.pid}, " in blocked_sync.stderr
    assert "that is not a prefect-archiver sync" in blocked_sync.stderr and "sync committing" not in blocked_sync.stderr
    writer = hold_archive(db, as_sync=True)
    try:
        blocked_status = run_cli(["status"], env)
    finally:
        writer.kill()
        writer.wait()
    assert blocked_status.returncode == 1
    assert blocked_status.stderr == (f"prefect-archiver: error: archive {db} is being written by a prefect-archiver sync "
                                     f"(pid {writer.pid}) committing a batch; try again in a moment (readers wait up to "
                                     "archive.read_timeout)\n")

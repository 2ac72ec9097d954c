"""What `prefect-archiver run` costs while it waits, and how fast it stops.

    python bench/service.py [--events 5000] [--seconds 60] [--every 5s] [--api-url URL]

Starts a real Prefect server on 127.0.0.1 (unless --api-url is given), posts N events over the
last day, then:
1. starts `prefect-archiver run --every EVERY --log-format json` on a fresh archive and sends it
   SIGTERM as soon as the first backfill has committed a batch: prints the time to exit and the
   exit code (the graceful stop's bound is 20 s);
2. starts it again, lets it catch up, and runs it for --seconds more: prints the per-sync seconds
   (p50 and max, from its JSON log lines), its CPU time per minute and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import PrefectServer, make_event, post_events, server_count, wait_until_stored  # noqa: E402

UTC = timezone.utc


def start(api_url: str, workdir: Path, every: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update(PREFECT_API_URL=api_url, ARCHIVER_DB=str(workdir / "archive.duckdb"),
               ARCHIVER_CONFIG=str(workdir / "archiver.toml"))
    return subprocess.Popen([sys.executable, "-m", "archiver", "run", "--every", every, "--log-format", "json"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def log_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in kB) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    return cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", default="5s")
    parser.add_argument("--api-url")
    args = parser.parse_args()

    server = None if args.api_url else PrefectServer().start()
    api_url = args.api_url or server.api_url  # type: ignore[union-attr]
    try:
        now = datetime.now(UTC)
        since = now - timedelta(days=1)
        events = [make_event(since + timedelta(seconds=86000 * i / args.events), event="bench.service")
                  for i in range(args.events)]
        before = server_count(api_url, since, now)
        post_events(api_url, events, per_second=1000)
        wait_until_stored(api_url, since, now, before + len(events), timeout=300)

        workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
        (workdir / "archiver.toml").write_text(
            f'[ingest]\nstart = "{since.isoformat()}"\ncommit_every = 200\n[schedule]\nreconcile_every = "30s"\n')
        log = workdir / "stop.log"
        proc = start(api_url, workdir, args.every, log)
        mark_file = workdir / "archive.duckdb.service.json"
        while not mark_file.exists():
            time.sleep(0.05)
        time.sleep(1.0)  # into the backfill
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        syncs = [line for line in log_lines(log) if line.get("event") == "sync"]
        print(f"stop mid-backfill: exit {code} in {time.monotonic() - sent:.2f}s after SIGTERM; "
              f"the interrupted sync had inserted {syncs[-1]['inserted'] if syncs else 0} events")

        log = workdir / "steady.log"
        proc = start(api_url, workdir, args.every, log)
        while not any(line.get("event") == "sync" and line.get("outcome") == "ok" for line in log_lines(log)):
            time.sleep(0.2)
        caught_up = time.monotonic()
        cpu_start, _ = proc_stats(proc.pid)
        time.sleep(args.seconds)
        cpu_end, peak = proc_stats(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        steady = [float(line["seconds"]) for line in log_lines(log)[2:]  # type: ignore[arg-type]
                  if line.get("event") == "sync" and line.get("outcome") == "ok"]
        minutes = (time.monotonic() - caught_up) / 60
        print(f"steady state over {args.seconds:.0f}s, a sync every {args.every}: {len(steady)} syncs, "
              f"p50 {statistics.median(steady):.3f}s, max {max(steady):.3f}s per sync; "
              f"CPU {(cpu_end - cpu_start) / minutes:.2f}s per minute; peak RSS {peak / 1024:.0f} MB")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

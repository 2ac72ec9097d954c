"""Process start to first request: how long `prefect-archiver sync` takes to ask the server anything.

    python bench/start.py [--runs 15] [--baseline DIR]

A stand-in Prefect API on 127.0.0.1 notes when requests arrive, timed from just before the `sync`
process is exec'd (`python -m archiver sync`, the console script's work without its wrapper): the
first request (the CSRF token, which it answers), then the first that reads events (a POST; the
process is killed then, so nothing but start-up is measured, and the CPU seconds it used by then
are read from its rusage). Two cases, each on a fresh archive:
- new: no archive file yet (a first sync migrates a new file);
- existing: an archive with an event and a high-water mark after it (every later sync; its first
  event read is the gap probe at that event).
With --baseline DIR (a tree from `git archive`, e.g. main's), the same runs go to DIR's code too,
interleaved run by run so a busy machine hurts both alike. Prints the median and spread of each.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _FirstRequest(http.server.BaseHTTPRequestHandler):
    """Notes when each request arrives; hands out a CSRF token, and answers 503 to the rest (the
    process is killed at the first of them anyway)."""

    arrived: list[tuple[float, str]] = []
    event = threading.Event()

    def _answer(self) -> None:
        type(self).arrived.append((time.monotonic(), f"{self.command} {self.path.split('?')[0]}"))
        if self.path.startswith("/api/csrf-token"):
            body = json.dumps({"token": "t", "expiration": "2099-01-01T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b""
            type(self).event.set()
            self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except ConnectionError:  # the process was killed at the previous request
            pass

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def _existing_archive(tree: Path, path: Path) -> None:
    """An archive with the schema, an event and a mark after it, made by `tree`'s code in a child
    (as a past sync left it: its first request is then the gap probe at that event)."""
    code = (
        "import sys, uuid; from datetime import datetime, timedelta, timezone\n"
        "from archiver.prefect.events import format_timestamp, parse_event\n"
        "from archiver.storage import open_archive\n"
        "from archiver.storage.duckdb import archive_url\n"
        "mark = datetime.now(timezone.utc) - timedelta(minutes=5)\n"
        "at = format_timestamp(mark - timedelta(minutes=1))\n"
        "event = parse_event({'id': str(uuid.uuid4()), 'occurred': at, 'received': at, 'event': 'bench.start',\n"
        "                     'resource': {'prefect.resource.id': 'bench.start'}, 'related': [], 'payload': {}})\n"
        "w = open_archive(archive_url(sys.argv[1])).writer(timedelta(seconds=30))\n"
        "w.write_batch([event], mark=mark); w.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=tree,
                   env={**os.environ, "PYTHONPATH": str(tree)})


def once(tree: Path, api_url: str, case: str, work: Path) -> tuple[float, float, float, str]:
    """(seconds to the first request, to the first that reads events, CPU seconds by the
    second, which it was) for one `sync`."""
    db = work / f"{case}-{time.monotonic_ns()}.duckdb"
    if case == "existing":
        _existing_archive(tree, db)
    env = {**os.environ, "PYTHONPATH": str(tree), "PREFECT_API_URL": api_url, "ARCHIVER_DB": str(db),
           "PREFECT_HOME": str(work), "PREFECT_API_KEY": ""}
    _FirstRequest.arrived.clear()
    _FirstRequest.event.clear()
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "archiver", "sync"], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _FirstRequest.event.wait(30):
        child.kill()
        raise SystemExit(f"{tree}: no request within 30 s")
    os.kill(child.pid, signal.SIGKILL)
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = -9
    first = _FirstRequest.arrived[0][0]
    read, request = _FirstRequest.arrived[-1]
    return first - started, read - started, usage.ru_utime + usage.ru_stime, request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", type=Path, help="another tree (git archive) to measure in the same run")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FirstRequest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}/api"
    results: dict[tuple[str, str], list[tuple[float, float, float, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        work = Path(tmp)
        for tree in trees.values():  # one unmeasured run each: the first import compiles .pyc files
            once(tree, api_url, "new", work)
        for _ in range(args.runs):
            for case in ("new", "existing"):
                for name, tree in trees.items():
                    results.setdefault((name, case), []).append(once(tree, api_url, case, work))
    server.shutdown()
    print(f"process start to first request, {args.runs} runs each, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"(seconds: median [min-max])")
    print(f"{'tree':<10} {'archive':<9} {'first request':>19} {'first event read':>19} {'CPU s':>6}  (which)")
    for (name, case), runs in results.items():
        def spread(values: list[float]) -> str:
            return f"{statistics.median(values):.3f} [{min(values):.2f}-{max(values):.2f}]"
        print(f"{name:<10} {case:<9} {spread([r[0] for r in runs]):>19} {spread([r[1] for r in runs]):>19} "
              f"{statistics.median(r[2] for r in runs):>6.3f}  {runs[-1][3]}")

if __name__ == "__main__":
    main()

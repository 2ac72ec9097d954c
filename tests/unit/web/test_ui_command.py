"""`prefect-archiver ui`: loopback only, opens the browser at the URL that answers, one-line errors."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.unit.web.conftest import TOKEN


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "archiver", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    return {**env, "PREFECT_HOME": str(tmp_path / "home"), **extra}


def test_ui_opens_the_browser_at_its_loopback_url(seeded_settings, tmp_path):
    settings, seeded = seeded_settings
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    # Written whole, then renamed: polling for the file alone could read it between the shell's
    # creating it and echo's writing (CI saw '').
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}.part && mv {opened}.part {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    env = _env(tmp_path, BROWSER=str(browser), ARCHIVER_SERVE_TOKEN=TOKEN,
               **({"ARCHIVER_URL": settings.url} if settings.url else {"ARCHIVER_DB": str(settings.db_path)}))
    proc = _start(["ui"], env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert TOKEN not in line and "log in with ARCHIVER_SERVE_TOKEN" in line
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)  # type: ignore[union-attr]
        deadline = time.monotonic() + 20
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text().strip() == url
        page = httpx.get(url, headers={"Accept": "text/html"}, follow_redirects=True)
        assert page.status_code == 200 and 'name="token"' in page.text  # the login form: a token is set
        health = httpx.get(f"{url}api/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert health["events"] == seeded.events
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ui_on_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "archiver", "ui", "--no-browser", "--port", str(port),
                               "--db", str(tmp_path / "a.duckdb")], env=_env(tmp_path), capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"prefect-archiver: error: cannot listen on 127.0.0.1:{port} (Address already in use): "
        "pick another --port, or 0 for a free one"]


def test_ui_and_serve_without_jinja2_say_how_to_install_it(tmp_path):
    for command in ("ui", "serve"):
        code = f"import sys; sys.modules['jinja2'] = None; from archiver.cli import main; sys.exit(main(['{command}']))"
        done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path, ARCHIVER_DB=str(tmp_path / "a.duckdb")),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert 'pip install "prefect-archiver[serve]"' in done.stderr and done.stderr.count("\n") == 1

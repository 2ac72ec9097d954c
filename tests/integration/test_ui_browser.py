"""The web UI in a real browser: Debian's Chromium, headless, driven by Selenium through chromedriver.

One `prefect-archiver serve` (with a token, so the login form is part of the walk) over an archive
seeded through the writer (tests/ui_seed.py), one browser for the module. Every page must load
with no console errors (the CSP would report any inline script or style as one), search and
paging must walk every event once, a run page show its states, a deployment chart a point per
seeded run, and the XSS payloads stay text. A screenshot of each page is saved into the folder
printed at the start (ARCHIVER_UI_SCREENSHOTS, or a temporary one).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from archiver.storage.duckdb import DuckDBArchive
from tests.ui_seed import RUNS, XSS, Seeded, seed

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    db = tmp_path_factory.mktemp("ui-browser") / "archive.duckdb"
    writer = DuckDBArchive(db).writer(timedelta(seconds=10))
    try:
        return db, seed(writer)
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(seeded: tuple[Path, Seeded], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db, _ = seeded
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update(ARCHIVER_DB=str(db), ARCHIVER_SERVE_TOKEN=TOKEN, PREFECT_HOME=str(tmp_path_factory.mktemp("home")))
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("ARCHIVER_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _visit(driver: webdriver.Chrome, url: str, shots: Path | None = None, name: str = "") -> None:
    driver.get(url)
    assert _console_errors(driver) == [], url
    if shots is not None:
        driver.save_screenshot(str(shots / f"{name}.png"))


@pytest.fixture(scope="module")
def logged_in(browser: webdriver.Chrome, serve_url: str, screenshots: Path) -> webdriver.Chrome:
    _visit(browser, f"{serve_url}/", screenshots, "login")
    assert "/login" in browser.current_url  # a token is set: the pages ask for it first
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    assert browser.current_url == f"{serve_url}/"
    assert TOKEN not in browser.page_source
    return browser


def test_every_page_loads_without_console_errors(logged_in, serve_url, seeded, screenshots):
    s = seeded[1]
    pages = {"overview": "/?period=30d", "events": "/events?since=30d", "event": f"/events/{s.xss_event}",
             "run": f"/runs/{s.newest_run}", "failed-run": f"/runs/{s.failed[-1]}",
             "deployment": f"/deployments/{s.deployment}?period=all"}
    for name, path in pages.items():
        _visit(logged_in, serve_url + path, screenshots, name)
    # A 404 page: Chromium reports the status itself in the console, so only its content is checked
    # (and the console emptied, whatever happens, for the next test). Chromium may hand back an
    # empty document for a moment after an error status: wait for the page rather than read it once.
    try:
        logged_in.get(f"{serve_url}/runs/{s.deployment}")
        WebDriverWait(logged_in, 15).until(lambda driver: "Not in the archive" in driver.page_source)
        logged_in.save_screenshot(str(screenshots / "not-found.png"))
    finally:
        logged_in.get_log("browser")


def test_search_and_paging_walk_every_event_once(logged_in, serve_url, seeded):
    _visit(logged_in, f"{serve_url}/events?since=30d")
    field = logged_in.find_element(By.NAME, "event")
    field.clear()
    field.send_keys("prefect.flow-run.")
    logged_in.find_element(By.CSS_SELECTOR, "form.search button").click()
    total = int(logged_in.find_element(By.ID, "total").text.replace(",", ""))
    assert total == 3 * RUNS
    seen: list[str] = []
    while True:
        seen += [a.get_attribute("href").rsplit("/", 1)[1]
                 for a in logged_in.find_elements(By.CSS_SELECTOR, "table.events td:first-child a")]
        assert _console_errors(logged_in) == []
        following = logged_in.find_elements(By.ID, "next")
        if not following:
            break
        following[0].click()
    assert len(seen) == total == len(set(seen))


def test_a_run_page_shows_its_states_and_a_chart_its_points(logged_in, serve_url, seeded):
    s = seeded[1]
    _visit(logged_in, f"{serve_url}/runs/{s.failed[-1]}")
    states = [row.text for row in logged_in.find_elements(By.CSS_SELECTOR, "tr.state-row")]
    assert len(states) == 3 and "Failed" in states[-1] and "boom" in states[-1]
    assert logged_in.find_elements(By.CSS_SELECTOR, "#logs-and-artifacts")
    _visit(logged_in, f"{serve_url}/deployments/{s.deployment}?period=all")
    points = logged_in.find_elements(By.CSS_SELECTOR, 'g[data-series="p50"] circle.point')
    assert len(points) == RUNS
    failed = logged_in.find_elements(By.CSS_SELECTOR, 'g[data-series="failed or crashed"] rect.point')
    assert sum(float(bar.get_attribute("height")) > 0 for bar in failed) == len(s.failed)


def test_xss_payloads_stay_inert(logged_in, serve_url, seeded):
    s = seeded[1]
    for path in (f"/events/{s.xss_event}", f"/runs/{s.newest_run}", "/events?since=30d"):
        _visit(logged_in, serve_url + path)
        assert logged_in.execute_script("return window.__xss === undefined") is True, path
        assert not logged_in.find_elements(By.CSS_SELECTOR, "main script, main img"), path
    _visit(logged_in, f"{serve_url}/events/{s.xss_event}")
    assert logged_in.find_element(By.CSS_SELECTOR, "h1").text == f"custom.{XSS}"
    assert re.search(r'"html": "<script>', logged_in.find_element(By.CSS_SELECTOR, "pre.payload").text)

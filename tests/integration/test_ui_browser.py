"""The web UI in a real browser: Debian's Chromium, headless, driven by Selenium through chromedriver.

For each backend, one `prefect-archiver serve` (with a token, so the login form is part of the
walk) over an archive seeded through the writer (tests/ui_seed.py); one browser with JavaScript
and one without for the whole module. Every page must load with no console errors (the CSP would
report any inline script or style as one); search and paging must walk every event once, in place
with JavaScript (the page is never reloaded, the address bar follows) and as whole pages without
it; a run page shows its states, a deployment chart a point per seeded run, and the XSS payloads
stay text. A screenshot of each page (DuckDB's archive) is saved into the folder printed at the
start (ARCHIVER_UI_SCREENSHOTS, or a temporary one).
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

from archiver.storage import open_archive
from archiver.storage.duckdb import DuckDBArchive
from tests.support import BACKENDS, ArchiveRef
from tests.ui_seed import RUNS, XSS, Seeded, seed

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-test-token"


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           new_archive: Any) -> tuple[ArchiveRef, Seeded]:
    db = new_archive(request.param, tmp_path_factory.mktemp("ui-browser"))
    archive = DuckDBArchive(db) if isinstance(db, Path) else open_archive(db)
    writer = archive.writer(timedelta(seconds=10))
    try:
        return db, seed(writer)
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(seeded: tuple[ArchiveRef, Seeded], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db, _ = seeded
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ARCHIVER_"))}
    env.update({"ARCHIVER_DB" if isinstance(db, Path) else "ARCHIVER_URL": str(db)})
    env.update(ARCHIVER_SERVE_TOKEN=TOKEN, PREFECT_HOME=str(tmp_path_factory.mktemp("home")))
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
def screenshots(seeded: tuple[ArchiveRef, Seeded], tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where each page's screenshot goes: DuckDB's walk only (PostgreSQL's pages look the same)."""
    if not isinstance(seeded[0], Path):
        return None
    folder = Path(os.environ.get("ARCHIVER_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots in {folder}")
    return folder


def _chromium(tmp_path_factory: pytest.TempPathFactory, javascript: bool) -> webdriver.Chrome:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


# Session-scoped: one browser of each kind serves both backends' walks (a start is ~1-2 s).
@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = _chromium(tmp_path_factory, javascript=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def no_script_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = _chromium(tmp_path_factory, javascript=False)
    yield driver
    driver.quit()


def _console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _visit(driver: webdriver.Chrome, url: str, shots: Path | None = None, name: str = "") -> None:
    """Load `url` as a whole page (and save its screenshot when `shots` is a folder)."""
    driver.get(url)
    assert _console_errors(driver) == [], url
    if shots is not None:
        driver.save_screenshot(str(shots / f"{name}.png"))


def _log_in(driver: webdriver.Chrome, serve_url: str, shots: Path | None) -> webdriver.Chrome:
    # Cookies are per host, not port: the other backend's serve (same token) would let us straight in.
    driver.get(f"{serve_url}/login")
    driver.delete_all_cookies()
    _visit(driver, f"{serve_url}/", shots, "login")
    assert "/login" in driver.current_url  # a token is set: the pages ask for it first
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    # click() may return before the form's POST and its redirect have loaded (CI under load read
    # the login page's URL still): wait for the overview, up to 15 s.
    WebDriverWait(driver, 15).until(lambda d: d.current_url == f"{serve_url}/")
    assert TOKEN not in driver.page_source
    return driver


@pytest.fixture(scope="module")
def logged_in(browser: webdriver.Chrome, serve_url: str, screenshots: Path | None) -> webdriver.Chrome:
    return _log_in(browser, serve_url, screenshots)


def _save(driver: webdriver.Chrome, shots: Path | None, name: str) -> None:
    if shots is not None:
        driver.save_screenshot(str(shots / f"{name}.png"))


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
        _save(logged_in, screenshots, "not-found")
    finally:
        logged_in.get_log("browser")


def _walk(driver: webdriver.Chrome, serve_url: str, in_place: bool) -> None:
    """Search for the flow-run events, then follow Next page to the end, every event seen once.

    `in_place`: the script must do it without loading a page (a mark set on `window` survives,
    which a page load would clear), the address bar following each step, so it can be shared."""
    _visit(driver, f"{serve_url}/events?since=30d&limit=10")  # the form keeps the page size: 4 pages
    if in_place:
        assert driver.find_elements(By.CSS_SELECTOR, "html[data-enhanced]")
        driver.execute_script("window.__walk = 'no page load'")
    field = driver.find_element(By.NAME, "event")
    field.clear()
    field.send_keys("prefect.flow-run.")
    old = driver.find_element(By.ID, "total")
    driver.find_element(By.CSS_SELECTOR, "form.search button").click()
    WebDriverWait(driver, 15).until(lambda d: "event=prefect.flow-run." in d.current_url)
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "total") != old)
    total = int(driver.find_element(By.ID, "total").text.replace(",", ""))
    assert total == 3 * RUNS
    seen: list[str] = []
    while True:
        seen += [a.get_attribute("href").rsplit("/", 1)[1]
                 for a in driver.find_elements(By.CSS_SELECTOR, "table.events td:first-child a")]
        assert _console_errors(driver) == []
        following = driver.find_elements(By.ID, "next")
        if not following:
            break
        href = following[0].get_attribute("href")
        following[0].click()
        WebDriverWait(driver, 15).until(lambda d, href=href: d.current_url == href)
        WebDriverWait(driver, 15).until(lambda d: "a later page" in d.find_element(By.CSS_SELECTOR, "p.summary").text)
    assert len(seen) == total == len(set(seen))
    if in_place:
        assert driver.execute_script("return window.__walk") == "no page load"
        driver.back()  # the address bar's history holds each page: Back shows the one before
        WebDriverWait(driver, 15).until(lambda d: d.current_url != href)
        assert driver.execute_script("return window.__walk") == "no page load"
        assert _console_errors(driver) == []


def test_search_and_paging_walk_every_event_once_in_place(logged_in, serve_url, seeded):
    _walk(logged_in, serve_url, in_place=True)


def test_search_and_paging_work_without_javascript(no_script_browser, serve_url, seeded):
    driver = _log_in(no_script_browser, serve_url, None)
    _walk(driver, serve_url, in_place=False)
    assert not driver.find_elements(By.CSS_SELECTOR, "html[data-enhanced]")  # the script really did not run


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

"""The built site in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) opens every page from a local HTTP server. No page logs a console error,
every link to the site itself resolves (anchors included), and the search finds ``on_failure``.

A screenshot of the front page is written to the test's tmp folder; with
``WRITEBEHIND_SITE_SCREENSHOT=1`` also to docs/assets/site.png, the one committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "docs" / "assets" / "site.png"
# As root, in a sandbox whose network is closed: no sandbox, no GPU, and nothing that would
# call out (QUIC, background networking, component updates, sync).
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def chromium_missing() -> str | None:
    """Why no headless Chromium can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the built site without a log line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built with ``mkdocs build --strict``, served on 127.0.0.1; its base URL."""
    folder = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium with a fresh profile, its console log readable."""
    require(chromium_missing())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


class Ids(HTMLParser):
    """Every id of an HTML page: the anchors a link may point to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def fetch(url: str) -> tuple[int, str]:
    """Status and text of one URL of the site."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


def is_page(url: str) -> bool:
    """Whether a URL of the site is an HTML page (to open in the browser), not an asset."""
    return url.endswith(("/", ".html"))


def test_every_page_loads_without_console_errors_and_every_internal_link_resolves(
    site: str, browser: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    pages, seen, ids = [site], {site}, {}
    visited = 0
    while pages:
        page = pages.pop()
        browser.get(page)
        WebDriverWait(browser, 20).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )
        visited += 1
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], page
        hrefs: list[str] = browser.execute_script(
            "return Array.from(document.querySelectorAll('a[href]'), a => a.href)"
        )
        for href in hrefs:
            if not href.startswith(site):
                continue  # another site (GitHub, gunicorn's docs): not ours to check
            target, anchor = urldefrag(urljoin(page, href))
            if target not in ids:
                status, text = fetch(target)
                assert status == 200, f"{href} on {page}: HTTP {status}"
                parser = Ids()
                parser.feed(text)
                ids[target] = parser.ids
            assert not anchor or anchor in ids[target], f"{href} on {page}: no id {anchor!r}"
            if is_page(target) and target not in seen:
                seen.add(target)
                pages.append(target)
    assert visited >= 12  # the front page and every page of the navigation


def test_search_finds_on_failure(site: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site)
    WebDriverWait(browser, 20).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete"
    )
    browser.save_screenshot(str(tmp_path / "site.png"))
    if os.environ.get("WRITEBEHIND_SITE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "site.png", SCREENSHOT)
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys("on_failure")
    # The results are drawn again as the search refines them: read their text in one script,
    # rather than elements that may be replaced between the lookup and the read.
    found = WebDriverWait(browser, 30).until(
        lambda driver: [
            text
            for text in driver.execute_script(
                "return Array.from(document.querySelectorAll('.md-search-result__item'),"
                " item => item.textContent)"
            )
            if "on_failure" in text
        ]
    )
    assert found
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []

"""Headless Chromium for the web UI's tests: Debian's ``chromium`` package
(installed by ``make browser``), driven by Playwright. Playwright's own
browser download cannot work on these machines, so it is never used.

Screenshots go to ``test-artifacts/screenshots/`` (or
``$CORRAL_TEST_SCREENSHOTS``), for a person to look at; they are not committed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(
    os.environ.get("CORRAL_TEST_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots")
)

# Without the networking switches Chromium keeps calling Google's services,
# which this closed network refuses; --no-sandbox because tests run as root.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("CORRAL_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "Debian's chromium is not installed: `make browser` installs it "
            "(make test and .ci/run do so themselves)"
        )
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

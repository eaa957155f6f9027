"""Headless Chromium for the tests that open pages: Debian's ``chromium``, driven by Playwright.

``.ci/run`` installs the ``chromium`` package when it is missing; Playwright never downloads a
browser here, it is pointed at the system one. The flags keep Chromium off the network (this
machine's network is closed, and Chromium would otherwise try Google's hosts at every start).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium's path; the test fails (not skips) without it: CI installs it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: `apt-get install chromium` (.ci/run does this)")
    return path


@contextlib.contextmanager
def open_browser() -> Iterator[object]:
    """A Playwright ``Browser`` on the system Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

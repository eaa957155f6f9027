"""The dashboard at ``/``, in a real headless Chromium, against the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

from browser import open_browser
from conftest import ROOT
from helpers import Lines
from test_cli import BIN

TOKEN = "dash-operator-token-5c1e"


def test_dashboard_shows_the_strategies_streams_fills_and_pauses(fast_config_path, tmp_path):
    process = subprocess.Popen(
        [*BIN, "run", "-c", str(fast_config_path), "-q"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "LIMITLINE_OPERATOR_TOKEN": TOKEN},
    )
    try:
        base = Lines(process.stderr).wait_for(r"status at (http://127\.0\.0\.1:\d+)/status").group(1)
        with open_browser() as browser:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{base}/")

            # Both default strategies, each with a state.
            for name in ("sma-cross", "dip-buyer"):
                page.wait_for_selector(f'#strategies tr[data-strategy="{name}"] td.state', timeout=20_000)
            page.wait_for_selector("#tree li[data-node='strategy:dip-buyer']", timeout=20_000)
            page.wait_for_selector("#venues tr[data-venue='sim']", timeout=20_000)

            # A fill newer than any shown at load appears in the feed, without a reload.
            page.select_option("#feed-kind", "fill")
            page.wait_for_function(  # the filtered feed has loaded: fills only, at least one
                "(rows => rows.length > 0 && rows.every(r => r.dataset.kind === 'fill'))"
                "([...document.querySelectorAll('#feed tbody tr')])", timeout=30_000,
            )
            newest = page.evaluate(
                "Math.max(0, ...[...document.querySelectorAll('#feed tbody tr')].map(r => Number(r.dataset.seq)))"
            )
            url = page.url
            page.wait_for_function(
                f"[...document.querySelectorAll('#feed tbody tr[data-kind=fill]')].some(r => Number(r.dataset.seq) > {newest})",
                timeout=30_000,
            )
            assert page.url == url

            # The pause button pauses (with the operator token typed in).
            page.fill("#token", TOKEN)
            page.click("#token-form button[type=submit]")
            page.click('#strategies tr[data-strategy="sma-cross"] button[data-action="pause"]')
            page.wait_for_selector('#strategies tr[data-strategy="sma-cross"] td.state-paused', timeout=20_000)
            with urllib.request.urlopen(f"{base}/status/strategies/sma-cross", timeout=10) as response:
                row = json.loads(response.read())
            assert row["state"] == "paused" and "operator" in row["why"]
            assert problems == [], problems
    finally:
        process.terminate()
        process.wait(timeout=30)

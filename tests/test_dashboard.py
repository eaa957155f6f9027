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


def test_the_dashboard_draws_a_strategys_chart_with_the_reports_component(tmp_path):
    """A strategy's chart on the dashboard: the candles its venue replayed, a marker per
    fill, its equity; drawn by the Lab report's chart component, in Chromium."""
    import sqlite3

    import yaml

    from conftest import fast_config_raw
    from exchange.candles import bundled_path

    data = tmp_path / "candles.csv"
    data.write_text("\n".join(bundled_path().read_text().splitlines()[:301]) + "\n")
    raw = fast_config_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD"] = {"data": str(data), "lockstep": True}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    process = subprocess.Popen(
        [*BIN, "run", "-c", str(config)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        lines = Lines(process.stderr)
        base = lines.wait_for(r"status at (http://127\.0\.0\.1:\d+)/status").group(1)
        Lines(process.stdout).wait_for(r"replay_finished")  # all 300 candles replayed: the process says so
        assert replay_finished(base)
        store = sqlite3.connect(raw["store"])
        fills = store.execute("SELECT count(*) FROM fills JOIN orders USING (client_order_id) WHERE strategy = 'dip-buyer'")
        [[count]] = fills.fetchall()
        store.close()
        assert count > 5
        with open_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{base}/")
            page.click('#strategies tr[data-strategy="dip-buyer"] button[data-action="chart"]', timeout=20_000)
            page.wait_for_function("window.limitlineChart && document.querySelectorAll('#strategy-chart canvas').length > 0",
                                   timeout=20_000)
            assert page.evaluate("window.limitlineChart.data.candles.length") == 300
            assert page.evaluate("window.limitlineChart.api.panes()[0].getSeries()[0].data().length") == 300
            assert page.evaluate("window.limitlineChart.markers.markers().length") == count
            assert page.evaluate("window.limitlineChart.api.panes().length") == 3  # candles, equity, drawdown
            equity = page.evaluate("window.limitlineChart.data.equity")
            assert len(equity) == 300 and all(value > 0 for _, value in equity)
            assert problems == [], problems
    finally:
        process.terminate()
        process.wait(timeout=30)


def replay_finished(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/events?kind=replay_finished&limit=1", timeout=10) as response:
        return bool(json.loads(response.read())["events"])

"""The Lab's report as people and programs read it: report.html opened in headless Chromium
(the chart draws, zooms, pans; the trade table holds every fill), report.json with decimals as
strings and ISO-8601 times."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from actors.strategy.settings import StrategySettings
from exchange.candles import bundled_path, find_gaps, load_candles
from exchange.markets import MarketRules
from supervisors import lab_report
from supervisors.config import load_config
from supervisors.lab import Lab
from tests.browser import open_browser

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.00001"), min_amount=D("0.0001"),
                                min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"))


def sma_cross() -> StrategySettings:
    return next(s for s in load_config(None, lab=True).strategies if s.name == "sma-cross")


@pytest.fixture(scope="module")
def run():
    candles = load_candles(bundled_path())[:2500]
    gone = set(range(1000, 1003))  # a hole of three candles, to be reported
    candles = [c for i, c in enumerate(candles) if i not in gone]
    return Lab(sma_cross(), MARKET, candles, keep_events=False, fast=True).run(), find_gaps(candles)


def write(run, directory: Path) -> tuple[dict, dict]:
    result, gaps = run
    data = {"source": "export.csv", "handling": ["rows newest first: reversed to oldest first"]}
    numbers = lab_report.write_report(result, directory, "sma-cross", gaps, MARKET, data)
    return numbers, json.loads((directory / "report.json").read_text())


def test_report_json_has_decimal_strings_iso_times_and_buy_and_hold(run, tmp_path):
    numbers, report = write(run, tmp_path)
    result, _ = run
    assert report["symbol"] == "BTC/USD" and report["quote"] == "USD"
    assert report["data"] == {"source": "export.csv", "handling": ["rows newest first: reversed to oldest first"]}
    assert ISO.match(report["from"]) and ISO.match(report["to"])
    for key in ("start_equity", "end_equity", "total_return", "max_drawdown", "sharpe", "buy_and_hold_return"):
        assert isinstance(report[key], str) and DECIMAL.match(report[key]), (key, report[key])
    first, last = result.candles[0].close, result.candles[-1].close
    assert abs(D(report["buy_and_hold_return"]) - (last / first - 1)) < D("1e-12")
    assert report["gaps"] == [{"after": lab_report.iso(result.candles[999].ts),
                               "before": lab_report.iso(result.candles[1000].ts), "missing": 3}]
    assert len(report["trade_list"]) == len(result.fills) > 20
    for trade in report["trade_list"]:
        assert ISO.match(trade["time"]) and trade["side"] in ("buy", "sell") and trade["fee_currency"] in ("BTC", "USD")
        assert D(trade["value"]) == D(trade["price"]) * D(trade["amount"])
        assert (trade["realized_pnl"] is None) == (trade["side"] == "buy")
    sells = [D(t["realized_pnl"]) for t in report["trade_list"] if t["side"] == "sell"]
    settled = [e.realized_pnl for e in result.journal if e.kind == "settle" and e.side.value == "sell"]
    assert sells == settled
    assert [e["time"] for e in report["equity"]] == [lab_report.iso(c.ts) for c in result.candles]
    assert all(ISO.match(e["time"]) and DECIMAL.match(e["equity"]) for e in report["equity"])


def test_the_report_opens_offline_in_chromium_and_the_chart_zooms_and_pans(run, tmp_path):
    numbers, report = write(run, tmp_path)
    page_text = (tmp_path / "report.html").read_text()
    assert "<script src" not in page_text and "<link" not in page_text
    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        messages: list[str] = []
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_function("window.limitlineChart && document.querySelectorAll('#chart canvas').length > 0")
        assert messages == []
        assert [url for url in requests if not url.startswith("file:")] == []  # one offline file
        # Three panes (candles, equity with buy and hold, drawdown) over one time axis.
        assert page.evaluate("window.limitlineChart.api.panes().length") == 3
        drawn = page.evaluate("window.limitlineChart.api.panes()[0].getSeries()[0].data().length")
        assert drawn == len(run[0].candles)
        assert page.evaluate("document.querySelectorAll('#chart canvas').length") >= 3
        # Zoom: the wheel over the chart narrows the visible range; pan: a drag moves it.
        visible = "JSON.stringify(window.limitlineChart.api.timeScale().getVisibleLogicalRange())"
        before = json.loads(page.evaluate(visible))
        box = page.locator("#chart").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 4)
        page.mouse.wheel(0, -600)
        page.wait_for_function(f"{visible} !== {json.dumps(json.dumps(before))}")
        zoomed = json.loads(page.evaluate(visible))
        assert zoomed["to"] - zoomed["from"] < before["to"] - before["from"]
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 300, box["y"] + box["height"] / 4, steps=5)
        page.mouse.up()
        panned = json.loads(page.evaluate(visible))
        assert panned["from"] < zoomed["from"]
        # The trade table has every fill, with times in UTC and fees in their currency.
        rows = page.locator("#trades tbody tr")
        assert rows.count() == len(report["trade_list"]) == report["fills"]
        first = report["trade_list"][0]
        cells = rows.nth(0).locator("td").all_inner_texts()
        shown = datetime.fromisoformat(first["time"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
        assert cells[1] == shown and cells[2] == first["side"]
        assert cells[6] == f"{D(first['fee']).normalize():f} {first['fee_currency']}"
        figures = dict(zip(page.locator("#figures th").all_inner_texts(), page.locator("#figures td").all_inner_texts()))
        assert figures["Buy and hold: return"] == f"{numbers['buy_and_hold_return'] * 100:+.2f} %"
        assert figures["Total return"] == f"{numbers['total_return'] * 100:+.2f} %"
        assert figures["Gaps in the data"] == "1"
        assert "USD" in figures["Fees paid"] and "BTC" in figures["Fees paid"]
        assert figures["Data"] == "export.csv" and figures["Data read as"] == "rows newest first: reversed to oldest first"
        assert messages == []


def test_a_long_run_draws_merged_candles_with_every_fill_on_its_run(run, tmp_path, monkeypatch):
    monkeypatch.setattr(lab_report, "MAX_DRAWN_CANDLES", 400)
    result, gaps = run
    data = lab_report.chart_data(result, "BTC/USD", "USD", *[lab_report.figures(result)[k] for k in ("_drawdowns", "_buy_and_hold")])
    step = data["merged"]
    assert step == 7 and len(data["candles"]) == -(-len(result.candles) // step)
    starts = [c[0] for c in data["candles"]]
    for fill, drawn in zip(result.fills, data["fills"]):
        at = starts.index(drawn[0])
        assert starts[at] <= fill.at and (at + 1 == len(starts) or fill.at < starts[at + 1])
    for (ts, o, h, low, c), i in zip(data["candles"], range(0, len(result.candles), step)):
        run_ = result.candles[i: i + step]
        assert (o, h, low, c) == (float(run_[0].open), float(max(x.high for x in run_)), float(min(x.low for x in run_)),
                                  float(run_[-1].close))
    # The equity of each run as open, high, low, close: its extremes stay on the chart.
    values = result.equity.value
    assert len(data["equity"]) == len(data["candles"])
    for (ts, o, h, low, c), i in zip(data["equity"], range(0, len(values), step)):
        run_ = values[i: i + step]
        assert (o, h, low, c) == tuple(round(float(v), 2) for v in (run_[0], run_.max(), run_.min(), run_[-1]))
    lab_report.write_report(result, tmp_path, "sma-cross", gaps, MARKET)
    with open_browser() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_function("window.limitlineChart && document.querySelectorAll('#chart canvas').length > 0")
        assert page.evaluate("window.limitlineChart.api.panes()[0].getSeries()[0].data().length") == len(data["candles"])
        assert "draws every 7 candles as one" in page.inner_text("body")
        assert page.evaluate("window.limitlineChart.api.panes()[1].getSeries().map(s => s.seriesType())") == ["Line", "Bar"]
        assert errors == []


def test_a_run_keeping_only_what_the_report_needs_writes_the_same_report(tmp_path):
    """``keep_records=False`` (what ``limitline lab`` runs with, so memory follows the fills):
    the same report.json to the byte, from a fraction of the journal and no ended order."""
    candles = load_candles(bundled_path())[:2500]
    full = Lab(sma_cross(), MARKET, candles, keep_events=False, fast=True).run()
    lean = Lab(sma_cross(), MARKET, candles, keep_events=False, fast=True, keep_records=False).run()
    assert full.orders_placed == len(full.orders) == lean.orders_placed > 20
    assert len(lean.orders) <= sma_cross().max_open_orders and len(lean.journal) < len(full.journal) / 3
    assert lean.fills == full.fills
    for result, name in ((full, "full"), (lean, "lean")):
        lab_report.write_report(result, tmp_path / name, "sma-cross", [], MARKET)
    assert (tmp_path / "lean" / "report.json").read_text() == (tmp_path / "full" / "report.json").read_text()


def test_exposure_counts_only_candles_holding_at_least_the_markets_min_amount(run, tmp_path):
    # sma-cross pays its buys' fees in BTC: after a sell, a few satoshis below the market's
    # minimum amount stay held; no order could sell them, so they are not a position.
    _, report = write(run, tmp_path)
    held = [D(e["held"]) for e in report["equity"]]
    dust = sum(1 for h in held if 0 < h < MARKET.min_amount)
    assert dust > 100
    positions = sum(1 for h in held if h >= MARKET.min_amount)
    assert abs(D(report["exposure"]) - D(positions) / len(held)) < D("1e-9")


def test_every_fill_in_the_report_says_taker_or_maker(run, tmp_path):
    _, report = write(run, tmp_path)
    assert {t["taker_or_maker"] for t in report["trade_list"]} <= {"taker", "maker"}
    assert len(report["trade_list"]) > 20
    page = (tmp_path / "report.html").read_text()
    assert "<th>taker / maker</th>" in page
    assert page.count("<td>maker</td>") + page.count("<td>taker</td>") == len(report["trade_list"])


def test_people_see_fees_rounded_and_counts_with_separators_programs_the_exact_values(run, tmp_path):
    numbers, report = write(run, tmp_path)
    exact = {currency: D(fee) for currency, fee in report["fees_paid"].items()}
    assert set(exact) == {"BTC", "USD"} and exact["USD"] != exact["USD"].quantize(D("0.01"))
    shown = f"{exact['BTC'].quantize(D('1e-8')).normalize():f} BTC, {exact['USD'].quantize(D('0.01')):,} USD"
    assert re.search(rf"^  fees paid +{re.escape(shown)}$", lab_report.summary("sma-cross", numbers), re.M)
    assert f"<td>{shown}</td>" in (tmp_path / "report.html").read_text()
    assert "12,345 / 6,789" in lab_report.summary("sma-cross", {**numbers, "orders": 12345, "fills": 6789})


def test_start_equity_in_report_json_has_no_float_noise():
    assert repr(8000 + 0.3 * 8164.6) == "10449.380000000001"  # quote + base * close, as the Lab sums it
    assert lab_report._machine(8000 + 0.3 * 8164.6, "start_equity") == "10449.38"
    assert lab_report._machine(8000.0, "end_equity") == "8000"

"""The Lab from the command line: summary, report.json, report.html; bad data is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from exchange.candles import Candle, bundled_path, find_gaps

ROOT = Path(__file__).resolve().parents[1]


def lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisors.cli", "lab", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_lab_on_the_bundled_data_prints_the_summary_and_writes_the_report(tmp_path):
    result = lab("--strategy", "dip-buyer", "--to", "2018-01-01T00:00:00Z", "--report", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Strategy Lab: dip-buyer on BTC/USD, 2017-07-01 to 2018-01-01" in result.stdout
    for label in ("total return", "CAGR", "max drawdown", "Sharpe", "Sortino", "win rate", "profit factor", "exposure", "fees paid"):
        assert label in result.stdout
    assert "100 %" in result.stderr  # the progress bar reached the end
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["candles"] == len(report["equity"]) > 4000
    assert report["trades"] > 0 and len(report["trade_list"]) == report["fills"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'id="chart"' in page and "LimitlineChart.render" in page  # opened in Chromium by test_lab_report.py


def test_lab_without_a_strategy_runs_every_strategy_of_the_config_in_one_run(tmp_path):
    from decimal import Decimal as D

    result = lab("--to", "2017-09-01T00:00:00Z", "--report", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Strategy Lab: sma-cross, dip-buyer on BTC/USD in one run" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.strip().startswith("strategy "))
    assert header.split() == ["strategy", "sma-cross", "dip-buyer", "combined"]
    combined = json.loads((tmp_path / "r" / "report.json").read_text())
    parts = {name: json.loads((tmp_path / "r" / name / "report.json").read_text()) for name in ("sma-cross", "dip-buyer")}
    assert list(combined["strategies"]) == ["sma-cross", "dip-buyer"]
    assert all(parts[name]["fills"] > 5 for name in parts)
    assert combined["fills"] == sum(p["fills"] for p in parts.values()) == len(combined["trade_list"])
    for name, part in parts.items():
        assert combined["strategies"][name]["end_equity"] == part["end_equity"]
        assert {t["client_order_id"].split("-")[1] for t in part["trade_list"]} == {name.replace("-", "")}
    summed = sum(D(p["end_equity"]) for p in parts.values())
    assert abs(D(combined["end_equity"]) - summed) < D("1e-6")
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'href="sma-cross/report.html"' in page and 'href="dip-buyer/report.html"' in page


def test_lab_names_a_bad_row_and_an_unknown_strategy(tmp_path):
    bad = tmp_path / "bad.csv"
    lines = bundled_path().read_text().splitlines()[:50]
    lines[10] = lines[10].replace(lines[10].split(",")[2], "-3", 1)
    bad.write_text("\n".join(lines) + "\n")
    result = lab("--strategy", "sma-cross", "--data", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and f"{bad}:11:" in result.stderr and "Traceback" not in result.stderr
    result = lab("--strategy", "nope", cwd=tmp_path)
    assert result.returncode == 2 and "no strategy is named 'nope'" in result.stderr


def test_gaps_are_found_and_counted():
    def c(ts: int) -> Candle:
        return Candle(ts, *([1] * 5))

    candles = [c(0), c(3600), c(7200), c(18000), c(21600)]
    assert find_gaps(candles) == [{"after": 7200, "before": 18000, "missing": 2}]


def test_a_python_strategy_runs_in_the_same_core_and_the_fast_path_agrees():
    from decimal import Decimal as D

    from actors.strategy.settings import Allocation, Sizing, StrategySettings
    from exchange.candles import load_candles
    from exchange.markets import MarketRules
    from supervisors.lab import Lab

    market = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.00001"), min_amount=D("0.0001"),
                                    min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"))
    settings = StrategySettings(
        name="py", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=D(200)), allocation=Allocation(quote=D(5000)),
        python="actors.strategy.python:BuyTheDip", params={"drops": 3, "rises": 2}, limit_offset_bps=D(-5),
    )
    candles = load_candles(bundled_path())[:3000]
    stepped = Lab(settings, market, candles).run()
    fast = Lab(settings, market, candles, fast=True).run()
    rules = {o.rule for o in stepped.orders.values()}
    assert rules == {"python:3 falling closes", "python:2 rising closes"}
    assert len(stepped.fills) > 20
    assert fast.orders == stepped.orders and fast.fills == stepped.fills


def test_an_empty_report_directory_is_refused_and_nothing_is_written(tmp_path):
    for empty in ("", "  "):
        result = lab("--strategy", "dip-buyer", "--report", empty, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == ("limitline: --report: empty; name a directory for report.json and report.html "
                                         "(without --report: lab-report/dip-buyer)")
    assert list(tmp_path.iterdir()) == []

"""The Lab on a simulated swap venue: the perpetual cores over historical candles, its report,
liquidations with the insurance fund's clearance, Python strategies of positions, and
``limitline lab`` on the README's example config."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest
import yaml
from helpers import lab_ids
from test_perpetual_shadow import perp_raw, run

from exchange.candles import load_candles
from supervisors.app import build_perpetual_exchange
from supervisors.config import parse_config
from supervisors.lab_perpetual import PerpetualLab
from supervisors.lab_report import figures, trade_list, write_report

ROOT = Path(__file__).resolve().parent.parent


def lab_of(raw: dict, **kwargs):
    config = parse_config(raw, lab=True)
    venue = config.venues[0]
    symbol = config.strategies[0].symbol
    lab = PerpetualLab(config.strategies[0], build_perpetual_exchange(venue), load_candles(venue.replay[symbol].data),
                       **kwargs)
    return lab, lab.run()


def test_a_long_short_run_with_protection_reports_its_positions(tmp_path):
    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=600)
    lab, result = lab_of(raw)
    exchange = lab.exchange
    position = exchange.position("BTC/USD:USD")
    # The ledger's books are the engine's: the same cores as shadow mode, no second engine.
    assert D(result.position["size"]) == position.size
    assert D(result.position["realized_pnl"]) == position.realized_pnl
    assert D(result.position["fees_paid"]["USD"]) == position.fees
    assert D(result.position["funding_paid"]) == -position.funding != 0
    assert D(result.collateral["wallet"]) - 5000 == exchange.wallet - 20000
    assert exchange.violations == []
    assert result.visited == 600  # every candle (the spot fast path does not apply to positions)
    # Every order counts, protective ones too (the report's "orders / fills").
    assert result.orders_placed == len(result.orders) > len(result.protection_closes) > 0

    numbers = figures(result)
    assert numbers["market_type"] == "swap" and numbers["settlement"] == "USD"
    assert numbers["long_opens"] >= 1 and numbers["short_opens"] >= 1
    assert numbers["closes_by_protection"] == len(result.protection_closes) >= 1
    assert numbers["realized_pnl"] == position.realized_pnl and numbers["funding_paid"] == -position.funding
    assert numbers["fees_paid"] == {"USD": str(position.fees)}
    assert numbers["liquidations"] == [] and numbers["paused_at"] is None
    # Equity: collateral plus unrealized P&L at the close; held: the signed position.
    last = result.candles[-1]
    assert result.equity[-1][1] == pytest.approx(float(exchange.wallet - 15000 + position.size * (last.close - position.entry_price)))
    assert {h for _, _, h in result.equity} >= {0.5, -0.5, 0.0}
    # A trade is a fill that closed some of the position; its P&L is net of its fee.
    trades = trade_list(result)
    actions = {t["action"] for t in trades}
    assert {"open long", "open short", "close long", "close short"} <= actions
    closing = [t for t in trades if t["action"].startswith(("close", "reduce", "flip"))]
    assert numbers["trades"] == len(closing) and all(t["realized_pnl"] is not None for t in closing)
    assert all(t["realized_pnl"] is None for t in trades if t["action"].startswith("open"))
    assert sum(t["realized_pnl"] for t in closing) == position.realized_pnl

    write_report(result, tmp_path / "report", "trend", [], exchange.markets["BTC/USD:USD"])
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["market_type"] == "swap" and D(document["realized_pnl"]) == position.realized_pnl
    assert document["trade_list"][0]["action"] == "open long" or document["trade_list"][0]["action"] == "open short"
    page = (tmp_path / "report" / "report.html").read_text()
    for row in ("Realized P&amp;L", "Funding paid", "Closes by protection", "Liquidations", "Opens: long / short",
                "Trades (closing fills)"):
        assert f"<th>{row}</th>" in page, row
    chart = json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S).group(1))
    assert {f[4] for f in chart["fills"]} >= {"L", "S", "xL", "xS"}


def crash_candles(tmp_path: Path) -> Path:
    # A long at 101, isolated at 50x, then the market trades down through its liquidation
    # price (about 99.4) inside a candle's range, and later far below.
    rows = ["timestamp,open,high,low,close,volume"]
    closes = ["95"] * 3 + ["101"] * 4
    rows += [f"2020-01-01T{i:02d}:00:00Z,{c},{c},{c},{c},100000" for i, c in enumerate(closes)]
    rows += ["2020-01-01T07:00:00Z,101,101,99,100,100000"]
    rows += [f"2020-01-01T{i:02d}:00:00Z,96,96,96,96,100000" for i in range(8, 14)]
    rows += [f"2020-01-01T{i:02d}:00:00Z,102,102,102,102,100000" for i in range(14, 18)]
    data = tmp_path / "crash.csv"
    data.write_text("\n".join(rows) + "\n")
    return data


def test_a_liquidation_in_the_lab_is_booked_with_the_insurance_clearance_and_pauses_the_strategy(tmp_path):
    raw = perp_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD:USD"]["data"] = str(crash_candles(tmp_path))
    raw["venues"][0]["markets"][0].update(leverage=50, margin_mode="isolated", min_notional=1)
    raw["strategies"][0]["buy"] = {"kind": "price_cross", "level": 100, "direction": "up"}
    raw["strategies"][0]["sell"] = {"kind": "price_cross", "level": 50, "direction": "down"}
    lab, result = lab_of(raw)
    exchange = lab.exchange
    [forced] = [t for t in exchange.trades if t.liquidation]
    [clear] = [i for i in exchange.income if i.income_type == "INSURANCE_CLEAR"]
    # Filled at the liquidation price inside the candle's range: what was left of the
    # isolated margin (0.5 x 101 / 50 = 1.01) after the loss went to the insurance fund.
    margin = D("0.5") * 101 / 50
    assert forced.price > 99 and clear.amount == -(margin + forced.realized_pnl) < 0
    assert result.liquidations == [(int(forced.at), forced.price, D("0.5"), "sell")]
    # The ledger agrees with the engine: size, realized P&L, fees, and the wallet lost the margin.
    assert D(result.position["size"]) == 0 and D(result.position["realized_pnl"]) == exchange.position("BTC/USD:USD").realized_pnl
    assert D(result.collateral["wallet"]) - 5000 == exchange.wallet - 20000
    assert exchange.wallet == 20000 - margin - exchange.position("BTC/USD:USD").fees
    # As `run` does, the strategy is paused: it trades no more (the price crosses 100 again).
    assert result.paused_at == int(forced.at) and "liquidated by the exchange" in result.paused_reason
    assert not [t for t in exchange.trades if t.at > forced.at]
    kinds = [e.payload.get("class") for e in result.events if e.kind == "reconcile_difference"]
    assert kinds.count("liquidated") == 2  # the forced order's trade, and the insurance clearance
    numbers = figures(result)
    assert numbers["liquidations"][0]["price"] == str(forced.price)
    assert "liquidation" in {t["action"] for t in trade_list(result)}


class FlipFlop:
    """Long, then flip, then close, then open short again: open/close/flip actions."""

    def __init__(self, every: int = 12) -> None:
        self.every, self.count = every, 0

    def on_candle(self, candle, view):
        from actors.strategy.python import PositionIntent

        self.count += 1
        if self.count % self.every:
            return []
        step = (self.count // self.every) % 4
        if step == 1:
            return [PositionIntent("open", side="buy", reason="open long")]
        if step == 2:
            return [PositionIntent("flip", reason="flip", size=D("0.3"))] if view.position else []
        if step == 3:
            return [PositionIntent("close", reason="close")]
        return [PositionIntent("short", reason="short")]


class BadPosition:
    def on_candle(self, candle, view):
        from actors.strategy.python import PositionIntent

        return [PositionIntent("long", side="buy")]


@pytest.fixture
def positions_module(tmp_path, monkeypatch):
    (tmp_path / "position_strats.py").write_text(
        "from test_perpetual_lab import FlipFlop, BadPosition\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("position_strats", None)
    return "position_strats"


def python_raw(tmp_path: Path, spec: str, candles: int = 200) -> dict:
    raw = perp_raw(tmp_path, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=candles)
    strategy = raw["strategies"][0]
    del strategy["buy"], strategy["sell"]
    strategy["python"] = spec
    return raw


def test_a_python_strategy_opens_flips_and_closes_on_a_swap_venue_in_the_lab(tmp_path, positions_module):
    lab, result = lab_of(python_raw(tmp_path, f"{positions_module}:FlipFlop"))
    actions = [e.payload.get("action") for e in result.events if e.kind == "order_placed" and e.payload.get("action") != "protect"]
    assert {"open", "flip", "close"} <= set(actions)
    flips = [e for e in result.events if e.kind == "order_placed" and e.payload.get("action") == "flip"]
    assert {e.payload["leg"] for e in flips} == {"close", "open"}
    assert all(e.payload["reduce_only"] for e in flips if e.payload["leg"] == "close")
    sizes = {t.position_after for t in lab.exchange.trades}
    assert {D("0.5"), D("-0.3"), D("-0.5")} <= sizes  # the flip's size was the strategy's own
    assert D(result.position["size"]) == lab.exchange.position("BTC/USD:USD").size


def test_a_python_strategy_of_positions_answers_checked_and_pauses_on_a_bad_one(tmp_path, positions_module):
    from supervisors.lab import StrategyFailed

    with pytest.raises(StrategyFailed) as failed:
        lab_of(python_raw(tmp_path, f"{positions_module}:BadPosition"))
    assert ("PositionIntent(want='long', side='buy', reason='python', size=None): side ('buy' or 'sell') goes with "
            "want='open' and only with it") in str(failed.value)


async def test_a_python_strategy_on_a_swap_venue_makes_the_same_orders_and_fills_in_shadow_mode_and_the_lab(tmp_path):
    raw = python_raw(tmp_path, "actors.strategy.python:SwingLongShort", candles=300)
    raw["venues"][0]["volume_share"] = "0.002"
    watch, _, exchange, ledger, _ = await run(raw, evaluated=299)
    store = sqlite3.connect(raw["store"])
    ids = lab_ids(store)
    shadow_orders = {ids[cid]: (side, D(price), D(amount), state, D(filled)) for cid, side, price, amount, state, filled
                     in store.execute("SELECT client_order_id, side, price, amount, state, filled FROM orders")}
    shadow_fills = [(ids[cid], t, D(p), D(a)) for cid, t, p, a in store.execute(
        "SELECT client_order_id, trade_id, price, amount FROM fills ORDER BY CAST(trade_id AS INTEGER)")]
    lab, result = lab_of(raw)
    lab_orders = {o.client_order_id: (o.side.value, o.price, o.amount, o.state.value, o.filled) for o in result.orders.values()}
    lab_fills = [(f.client_order_id, f.trade_id, f.price, f.amount) for f in result.fills]
    assert len(lab_fills) >= 10 and {D(s) for s in ("0.5", "-0.5")} <= {t.position_after for t in lab.exchange.trades}
    assert shadow_orders == lab_orders
    assert shadow_fills == lab_fills
    assert ledger["collateral"]["trend"]["wallet"] == result.collateral["wallet"]


def readme_example() -> dict:
    """The README's example config of a long/short strategy with protection."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(# The Lab for perpetuals.*?)```", text, re.S)
    assert block, "the README's example config of the perpetual Lab is missing"
    return yaml.safe_load(block.group(1))


def test_limitline_lab_runs_the_readmes_long_short_example(tmp_path):
    from test_cli import limitline

    raw = readme_example()
    raw["store"] = str(tmp_path / "x.sqlite")
    config = tmp_path / "perp.yaml"
    config.write_text(yaml.safe_dump(raw))
    name = raw["strategies"][0]["name"]
    result = limitline("lab", "-c", str(config), "--strategy", name, "--from", "2017-07-01T00:00:00Z",
                       "--to", "2017-10-01T00:00:00Z", "--report", str(tmp_path / "report"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for row in ("realized P&L", "funding paid", "closes by protection", "liquidations", "opens: long / short"):
        assert row in result.stdout, row
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["market_type"] == "swap" and document["closes_by_protection"] > 0
    assert document["long_opens"] > 0 and document["short_opens"] > 0
    assert document["orders"] >= document["long_opens"] + document["short_opens"] + document["closes_by_protection"]
    assert not (tmp_path / "x.sqlite").exists()  # the Lab never opens the store

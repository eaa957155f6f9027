"""A strategy's row on the status endpoints, with plain calls on a snapshot's nodes
(issue 13, review F10): a perpetual's settle asset, position and margin; figures computed by
division shown to eight decimals, the stored values untouched."""

from __future__ import annotations

from decimal import Decimal as D

from supervisors.web.views import StrategyFacts, strategy_row, with_details


def perpetual_nodes() -> dict:
    status = {
        "active": True, "open_orders": 2, "market_type": "swap", "held": "-0.3", "position": "-0.3",
        "entry_price": "9996.666666666666666666666667", "realized_pnl": "-284.160544994994994994994995",
        "fees_paid": {"USDT": "1.5"}, "wallet": "4714.3394550050050050050", "free_collateral": "4114.33945500500",
        "margin_used": "599.8", "funding_paid": "-0.0246783", "leverage": "5",
        "protection": {"take_profit": "0.3", "stop_loss": "0.3"}, "breaker": {"state": "closed"},
    }
    return {"strategy:drv": {"name": "strategy:drv", "state": "running", "status": status}}


def test_a_perpetual_row_names_its_settle_asset_position_and_margin():
    row = strategy_row(StrategyFacts("drv", "usdm", "BTC/USDT:USDT", "live"), perpetual_nodes())
    assert (row["base"], row["quote"], row["settle"]) == ("BTC", "USDT", "USDT")
    assert row["entry_price"] == "9996.66666667" and row["realized_pnl"] == "-284.16054499"
    assert {k: row[k] for k in ("market_type", "position", "leverage", "collateral", "free_collateral", "margin_used",
                                "funding_paid")} == {
        "market_type": "swap", "position": "-0.3", "leverage": "5", "collateral": "4714.33945501",
        "free_collateral": "4114.339455", "margin_used": "599.8", "funding_paid": "-0.0246783",
    }
    detailed = with_details(row, {"mark": {"price": "9990", "at": 0}})
    assert D(detailed["unrealized_pnl"]) == (D("9990") - D("9996.66666667")) * D("-0.3")


def test_a_spot_row_is_unchanged_but_for_its_rounded_entry():
    nodes = {"strategy:s": {"state": "running", "status": {
        "active": True, "held": "0.5", "entry_price": "10010.00981944249614236187652", "realized_pnl": "0"}}}
    row = strategy_row(StrategyFacts("s", "sim", "BTC/USD", "shadow"), nodes)
    assert (row["quote"], row["entry_price"], row["realized_pnl"]) == ("USD", "10010.00981944", "0")
    assert "settle" not in row and "market_type" not in row

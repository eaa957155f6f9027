"""The dashboard's chart data for a strategy (supervisors/web/strategy_chart.py): each fill on
the candle it happened on, equity at each close from the ledger's entries."""

from __future__ import annotations

from decimal import Decimal as D

from exchange.candles import Candle
from supervisors.web.strategy_chart import strategy_chart


def candle(ts: int, close: str) -> Candle:
    return Candle(ts, D(close), D(close) + 1, D(close) - 1, D(close), D(10))


def fill(trade_id: str, side: str, price: str, amount: str, seen: int | None, kind: str) -> dict:
    return {"payload": {"trade_id": trade_id, "side": side, "price": price, "amount": amount, "market_ts": seen,
                        "taker_or_maker": kind}}


def test_fills_are_drawn_on_their_candle_and_equity_follows_the_settled_fills():
    candles = [candle(ts, c) for ts, c in ((100, "10"), (200, "11"), (300, "12"), (400, "13"))]
    events = [
        fill("1", "buy", "9", "1", 50, "taker"),  # before the window: counted from the start, not drawn
        fill("2", "buy", "11", "2", 200, "taker"),  # decided on 200, taken at its close
        fill("3", "sell", "12.5", "1", 200, "maker"),  # rested; the candle after 200 traded through it
    ]
    journal = [
        (None, D(100), D(0)),  # allocation
        ("1", D(-9), D(1)),
        ("2", D(-22), D(2)),
        ("3", D("12.5"), D(-1)),
    ]
    chart = strategy_chart("BTC/USD", candles, events, journal)
    assert chart["quote"] == "USD" and len(chart["candles"]) == 4
    assert chart["fills"] == [[200, "buy", 11.0, 2.0], [300, "sell", 12.5, 1.0]]
    # 91 USD and 1 BTC from the start; +2 BTC for 22 at 200; -1 BTC for 12.5 at 300.
    assert chart["equity"] == [[100, 101.0], [200, 69 + 3 * 11.0], [300, 81.5 + 2 * 12.0], [400, 81.5 + 2 * 13.0]]

"""The Lab trades by the simulated exchange's rules: a limit order that crosses the market
when it arrives fills at once as a taker (taker fee), one that rests fills later as a maker
(maker fee)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from actors.strategy.rules import PriceCross
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from supervisors.lab import Lab

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.0001"), min_amount=D("0.0001"),
                                min_notional=D("1"), maker_fee=D("0.001"), taker_fee=D("0.004"), fee_in="quote")


def candles() -> list[Candle]:
    """Flat at 100, a close above 105 on the fifth candle (the buy fires), then lower; each
    candle trades 3 below its close."""
    closes = ["100", "100", "100", "100", "106", "106", "104", "104"]
    return [Candle(i * 3600, D(c), D(c) + 1, D(c) - 3, D(c), D(1000)) for i, c in enumerate(closes)]


@pytest.mark.parametrize("fast", [False, True], ids=["every bar", "fast path"])
@pytest.mark.parametrize(
    "offset_bps, price, fill_price, fee_rate, kind",
    [
        (-50, D("106.53"), D("106"), D("0.004"), "taker"),  # 50 bp above the close: crosses, fills at the close
        (0, D("106"), D("106"), D("0.001"), "maker"),  # at the close: rests, fills when the market trades below
        (50, D("105.47"), D("105.47"), D("0.001"), "maker"),  # below it: rests
    ],
)
def test_a_crossing_limit_pays_the_taker_fee_and_a_resting_one_the_maker_fee(offset_bps, price, fill_price, fee_rate,
                                                                               kind, fast):
    settings = StrategySettings(
        name="fees", venue="sim", symbol="BTC/USD", sizing=Sizing(base=D(1)), allocation=Allocation(quote=D(1000)),
        buy=PriceCross(D(105), "up"), limit_offset_bps=D(offset_bps), ttl_seconds=10 * 3600,
    )
    result = Lab(settings, MARKET, candles(), fast=fast).run()
    [order] = result.orders.values()
    [fill] = result.fills
    assert order.price == price and order.state.value == "FILLED"
    assert (fill.price, fill.amount, fill.taker_or_maker) == (fill_price, D(1), kind)
    assert fill.fee == fill_price * fee_rate and fill.fee_currency == "USD"
    # A taker fills on the candle it was decided on; a maker once the market trades through it.
    assert fill.at == (4 * 3600 if kind == "taker" else 5 * 3600)

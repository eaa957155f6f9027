"""Several strategies in one Lab run: one ledger, one simulated exchange per venue, each
candle's volume shared. On a candle the strategies take turns in the config's order, in the
Lab and in a lockstep replay alike, so who fills first is decided, never left to scheduling."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from actors.connection.shadow_core import ShadowConnectionCore
from actors.messages import CandleClosed, CandleDone, StrategyReady, Subscribe, Tick, strategy_address
from actors.strategy.rules import PriceCross
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from supervisors.lab import Lab, LabVenue

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"),
                                min_notional=D("1"), maker_fee=D("0.001"), taker_fee=D("0.002"), fee_in="quote")


def candles() -> list[Candle]:
    """Flat at 100, then a close of 106 (every buy fires), then flat at 106; each candle
    trades 10 BTC."""
    closes = ["100"] * 4 + ["106"] * 6
    return [Candle(i * 3600, D(c), D(c) + 1, D(c) - 1, D(c), D(10)) for i, c in enumerate(closes)]


def taker(name: str) -> StrategySettings:
    """Buys 1 BTC 50 bp above the close when the close crosses 105: crosses, takes at once."""
    return StrategySettings(
        name=name, venue="sim", symbol="BTC/USD", sizing=Sizing(base=D(1)), allocation=Allocation(quote=D(1000)),
        buy=PriceCross(D(105), "up"), limit_offset_bps=D(-50), ttl_seconds=100 * 3600,
    )


@pytest.mark.parametrize("fast", [False, True], ids=["every bar", "fast path"])
def test_the_first_strategy_in_the_config_takes_the_candles_volume_first(fast):
    # 5 % of 10 BTC can be taken on arrival: the first in turn takes 0.5, the second nothing
    # then; both rest the rest and share the next candles' volume by queue (price, then time).
    venue = LabVenue("sim", (MARKET,), {"USD": D(5000)}, D("0.05"))
    for order in (["x", "y"], ["y", "x"]):
        run = Lab.together([taker(n) for n in order], [venue], candles(), fast=fast).run_all()
        first, second = (run.results[n] for n in order)
        assert [(f.amount, f.taker_or_maker) for f in first.fills][:1] == [(D("0.5"), "taker")]
        assert all(f.taker_or_maker == "maker" for f in second.fills)
        assert first.fills[0].at < second.fills[0].at  # the second waited for the next candle
        # Both end up filled, the first one first: 0.5 BTC a candle, shared by queue.
        assert sum(f.amount for f in first.fills) == sum(f.amount for f in second.fills) == D(1)
        assert max(f.at for f in first.fills) < max(f.at for f in second.fills)
        assert run.combined.fills == sorted(first.fills + second.fills, key=lambda f: int(f.trade_id))


def test_a_lockstep_replay_releases_each_candle_to_one_strategy_at_a_time_in_the_configs_order():
    exchange = SimulatedExchange([MARKET], {"USD": D(1000)})
    feed = ReplayFeed(candles(), speed=1.0, started_at=0.0)
    core = ShadowConnectionCore("sim", ShadowVenue(exchange, {"BTC/USD": feed}), lockstep_with=("b", "a"))
    def announced(sends) -> list[tuple[str, int]]:
        return [(s.to, s.message.candle.ts) for s in sends if isinstance(s.message, CandleClosed)]

    for name in ("a", "b"):  # subscribed in the other order: the turns follow lockstep_with
        core.handle(Subscribe(name, "BTC/USD"), 0.0)
    assert announced(core.handle(StrategyReady("a"), 0.0)) == []
    # The last one ready: the first candle, to the first in turn only.
    assert announced(core.handle(StrategyReady("b"), 0.0)) == [(strategy_address("b"), 0)]
    assert announced(core.handle(Tick(2.0), 0.0)) == []  # waits for b's turn to end
    assert announced(core.handle(CandleDone("b", "BTC/USD", 0), 0.0)) == [(strategy_address("a"), 0)]
    assert announced(core.handle(CandleDone("a", "BTC/USD", 0), 0.0)) == [(strategy_address("b"), 3600)]


def test_strategies_of_different_markets_are_refused_with_the_fix():
    other = StrategySettings(
        name="eth", venue="sim", symbol="ETH/USD", sizing=Sizing(base=D(1)), allocation=Allocation(quote=D(1000)),
        buy=PriceCross(D(105), "up"),
    )
    venue = LabVenue("sim", (MARKET,), {"USD": D(5000)})
    with pytest.raises(ValueError, match=r"trade \['BTC/USD', 'ETH/USD'\]: run the strategies of each market"):
        Lab.together([taker("x"), other], [venue], candles())

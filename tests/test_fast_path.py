"""The Lab's fast path (triggers computed up front, quiet bars skipped, and while orders
rest a jump straight to the next candle where one can fill or expire or an exit can sell)
gives exactly the trades of stepping bar by bar, on random strategies and random data."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.strategy.rules import Change, Combination, Grid, PriceCross, Rsi, SmaCross
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from supervisors.lab import Lab, LabVenue

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"),
                                min_notional=D("1"), maker_fee=D("0.001"), taker_fee=D("0.002"))


@st.composite
def series(draw) -> list[Candle]:
    """A random walk with random ranges and volumes (zero-volume bars included)."""
    steps = draw(st.lists(st.integers(min_value=-300, max_value=300), min_size=40, max_size=220))
    price, out = D(100), []
    for i, step in enumerate(steps):
        close = max(D("1.00"), price * (1 + D(step) / 10000)).quantize(D("0.01"))
        spread = D(draw(st.integers(min_value=0, max_value=150))) / 10000
        high = (max(price, close) * (1 + spread)).quantize(D("0.01"))
        low = (min(price, close) * (1 - spread)).quantize(D("0.01"))
        volume = D(draw(st.sampled_from([0, 1, 5, 50, 500])))
        out.append(Candle(i * 3600, price, high, low, close, volume))
        price = close
    return out


averages = st.builds(lambda f, gap, d, k: SmaCross(f, f + gap, d, k), st.integers(1, 8), st.integers(1, 12),
                     st.sampled_from(["up", "down"]), st.sampled_from(["sma_cross", "ema_cross"]))
changes = st.builds(lambda p, k: Change(D(p), k), st.sampled_from([-2, -0.5, 0.3, 1, 3]), st.integers(1, 6))
others = st.one_of(
    st.builds(lambda p, lvl: Rsi(p, below=D(lvl)), st.integers(2, 10), st.sampled_from([30, 45, 55])),
    st.builds(lambda lvl, d: PriceCross(D(lvl), d), st.sampled_from([95, 100, 105]), st.sampled_from(["up", "down"])),
    st.builds(lambda n, d: Grid(D(80), D(120), n, d), st.integers(2, 9), st.sampled_from(["up", "down"])),
)
triggers = st.one_of(averages, changes, others)
triggers_or_combos = st.one_of(triggers, st.builds(lambda a, b, k: Combination((a, b), k), triggers, triggers, st.sampled_from(["all", "any"])))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    candles=series(),
    buy=triggers_or_combos,
    sell=st.one_of(st.none(), triggers_or_combos),
    offset=st.sampled_from([-20, -5, 0, 10, 40, 150, 400]),  # crossing, at the close, resting near and far
    ttl=st.sampled_from([3600, 3 * 3600, 10 * 3600, 60 * 3600]),
    cooldown=st.sampled_from([0, 3600, 4 * 3600]),
    max_open=st.integers(1, 3),
    base=st.sampled_from([D(0), D("0.5")]),
    take_profit=st.sampled_from([None, D(1), D(5)]),
    stop_loss=st.sampled_from([None, D(1), D(3)]),
    sizing=st.sampled_from([Sizing(quote=D(150)), Sizing(percent=D(20))]),
)
def test_the_fast_path_trades_exactly_like_stepping_every_bar(candles, buy, sell, offset, ttl, cooldown, max_open, base,
                                                               take_profit, stop_loss, sizing):
    strategy = StrategySettings(
        name="p", venue="sim", symbol="BTC/USD", sizing=sizing, allocation=Allocation(quote=D(1000), base=base, base_cost=D(100) if base else None),
        buy=buy, sell=sell, limit_offset_bps=D(offset), ttl_seconds=ttl, cooldown_seconds=cooldown, max_open_orders=max_open,
        take_profit_pct=take_profit, stop_loss_pct=stop_loss,
    )
    stepped = Lab(strategy, MARKET, candles, volume_share=D("0.05"), keep_events=False).run()
    fast = Lab(strategy, MARKET, candles, volume_share=D("0.05"), keep_events=False, fast=True).run()
    assert fast.orders == stepped.orders
    assert fast.fills == stepped.fills
    assert fast.journal == stepped.journal
    for (ts_a, a, held_a), (ts_b, b, held_b) in zip(stepped.equity, fast.equity):
        assert ts_a == ts_b and held_a == held_b and abs(a - b) <= 1e-9 * max(1.0, abs(a))


def test_resting_orders_are_jumped_to_where_they_can_fill_on_real_candles():
    """Passive orders and exits on 3,000 real candles: the fast path visits a fraction of
    the candles (it jumps to where the market can trade through an order, an order expires
    or an exit's price is reached) and trades exactly as stepping every bar, partial fills
    and expiries included."""
    from exchange.candles import bundled_path, read_candles

    columns = read_candles(bundled_path()).candles[:3000]  # as `limitline lab` reads a file
    candles = list(columns)
    strategy = StrategySettings(
        name="rest", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=D(2000)), allocation=Allocation(quote=D(20000)),
        buy=SmaCross(10, 30, "up"), sell=SmaCross(10, 30, "down"), limit_offset_bps=D(100), ttl_seconds=72 * 3600,
        cooldown_seconds=3600, max_open_orders=2, take_profit_pct=D(6), stop_loss_pct=D(4),
    )
    stepped = Lab(strategy, MARKET, candles, volume_share=D("0.002"), keep_events=False).run()
    fast = Lab(strategy, MARKET, candles, volume_share=D("0.002"), keep_events=False, fast=True).run()
    assert fast.orders == stepped.orders and fast.fills == stepped.fills and fast.journal == stepped.journal
    # The fast path reads the searches' floats off the columns: the same trades.
    on_columns = Lab(strategy, MARKET, columns, volume_share=D("0.002"), keep_events=False, fast=True).run()
    assert on_columns.orders == stepped.orders and on_columns.fills == stepped.fills and on_columns.journal == stepped.journal
    assert on_columns.equity == fast.equity
    for (ts_a, a, held_a), (ts_b, b, held_b) in zip(stepped.equity, fast.equity, strict=True):
        assert ts_a == ts_b and held_a == held_b and abs(a - b) <= 1e-9 * abs(a)
    states = {o.state.value for o in stepped.orders.values()}
    assert {"FILLED", "EXPIRED"} <= states
    assert sum(1 for f in stepped.fills if not f.order_complete) > 5  # partial fills
    # Orders rest or a position is held on most candles; the fast path visits few of them.
    assert fast.visited < len(candles) / 5


@st.composite
def strategies_(draw, name: str) -> StrategySettings:
    base = draw(st.sampled_from([D(0), D("0.5")]))
    return StrategySettings(
        name=name, venue="sim", symbol="BTC/USD", sizing=draw(st.sampled_from([Sizing(quote=D(150)), Sizing(percent=D(20))])),
        allocation=Allocation(quote=D(1000), base=base, base_cost=D(100) if base else None),
        buy=draw(triggers_or_combos), sell=draw(st.one_of(st.none(), triggers_or_combos)),
        limit_offset_bps=D(draw(st.sampled_from([-20, -5, 0, 10, 40, 150]))),
        ttl_seconds=draw(st.sampled_from([3600, 3 * 3600, 10 * 3600])), cooldown_seconds=draw(st.sampled_from([0, 3600])),
        max_open_orders=draw(st.integers(1, 3)), take_profit_pct=draw(st.sampled_from([None, D(1), D(5)])),
        stop_loss_pct=draw(st.sampled_from([None, D(1), D(3)])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candles=series(), first=strategies_("a"), second=strategies_("b"), share=st.sampled_from([D("0.002"), D("0.05")]))
def test_several_strategies_sharing_a_venue_trade_on_the_fast_path_exactly_as_stepping_every_bar(candles, first, second,
                                                                                                   share):
    """Two random strategies on one simulated venue, competing for each candle's volume:
    the fast path (visiting the candles where either can act, jumping to where any resting
    order can fill) makes the same orders, fills and journal as stepping every bar."""
    venue = LabVenue("sim", (MARKET,), {"USD": D(5000), "BTC": D(2)}, share)
    stepped = Lab.together([first, second], [venue], candles, keep_events=False).run_all()
    fast = Lab.together([first, second], [venue], candles, keep_events=False, fast=True).run_all()
    assert fast.combined.orders == stepped.combined.orders
    assert fast.combined.fills == stepped.combined.fills
    assert fast.combined.journal == stepped.combined.journal
    for name in ("a", "b"):
        assert fast.results[name].fills == stepped.results[name].fills
        for (ts_a, a, held_a), (ts_b, b, held_b) in zip(stepped.results[name].equity, fast.results[name].equity, strict=True):
            assert ts_a == ts_b and held_a == held_b and abs(a - b) <= 1e-9 * max(1.0, abs(a))

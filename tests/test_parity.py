"""Parity: the same candles through shadow mode and through the Lab give the same orders
and fills. Shadow mode runs the whole tree (actors, channels, sqlite) with a lockstep
replay; the Lab runs the same cores in a loop."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
import trio
from helpers import Watch, lab_ids

from exchange.candles import bundled_path
from exchange.markets import MarketRules
from supervisors.app import App
from supervisors.config import parse_config
from supervisors.lab import Lab

CANDLES = 400


def market_rules(config) -> MarketRules:
    m = config.venues[0].markets[0]
    return MarketRules.for_symbol(m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount,
                                  min_notional=m.min_notional, maker_fee=m.maker_fee, taker_fee=m.taker_fee)


@pytest.mark.parametrize("strategy", [0, 1], ids=["sma-cross (crosses: taker fills)", "dip-buyer (rests: maker fills)"])
async def test_shadow_mode_and_the_lab_make_the_same_orders_and_fills(tmp_path, fast_raw, strategy):
    lines = bundled_path().read_text().splitlines()
    data = tmp_path / "candles.csv"
    data.write_text("\n".join(lines[: CANDLES + 1]) + "\n")
    fast_raw["venues"][0]["replay"]["BTC/USD"] = {"data": str(data), "lockstep": True}
    fast_raw["venues"][0]["volume_share"] = "0.001"  # partial fills are part of what must agree
    fast_raw["strategies"] = [fast_raw["strategies"][strategy]]  # one strategy: the Lab runs one at a time
    config = parse_config(fast_raw)
    watch = Watch()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(App(config, echo=watch).run)
            await watch.until(lambda events: watch.count("replay_finished") == 1)
            nursery.cancel_scope.cancel()

    store = sqlite3.connect(config.store)
    ids = lab_ids(store)
    shadow_orders = {
        ids[cid]: (side, Decimal(price), Decimal(amount), state, Decimal(filled))
        for cid, side, price, amount, state, filled in store.execute(
            "SELECT client_order_id, side, price, amount, state, filled FROM orders")
    }
    shadow_fills = [
        (ids[cid], trade, Decimal(price), Decimal(amount), Decimal(fee))
        for cid, trade, price, amount, fee in store.execute(
            "SELECT client_order_id, trade_id, price, amount, fee FROM fills ORDER BY CAST(trade_id AS INTEGER)")
    ]

    from exchange.candles import load_candles
    lab = Lab(config.strategies[0], market_rules(config), load_candles(data), volume_share=Decimal("0.001")).run()
    lab_orders = {
        o.client_order_id: (o.side.value, o.price, o.amount, o.state.value, o.filled) for o in lab.orders.values()
    }
    lab_fills = [(f.client_order_id, f.trade_id, f.price, f.amount, f.fee) for f in lab.fills]

    assert len(lab_orders) >= 10 and any(f[3] < lab_orders[f[0]][2] for f in lab_fills), "too little happened to compare"
    assert shadow_orders == lab_orders
    assert shadow_fills == lab_fills
    # sma-cross's limits cross the close (taker on arrival, the rest resting as a maker);
    # dip-buyer's rest.
    kinds = {f.taker_or_maker for f in lab.fills}
    assert kinds == ({"taker", "maker"} if strategy == 0 else {"maker"})


async def test_the_whole_default_config_in_shadow_mode_and_in_one_lab_run_makes_the_same_fills(tmp_path, fast_raw):
    """Both strategies of the default config on one simulated venue, sharing each candle's
    volume (0.1 % of it, so they compete for it): a lockstep replay in shadow mode and one
    Lab run of the whole config give the same orders and the same fills, trade ids included."""
    lines = bundled_path().read_text().splitlines()
    data = tmp_path / "candles.csv"
    data.write_text("\n".join(lines[: CANDLES + 1]) + "\n")
    fast_raw["venues"][0]["replay"]["BTC/USD"] = {"data": str(data), "lockstep": True}
    fast_raw["venues"][0]["volume_share"] = "0.001"
    config = parse_config(fast_raw)
    assert [s.name for s in config.strategies] == ["sma-cross", "dip-buyer"]
    shadow_orders, shadow_fills = await shadow_run(config)

    from exchange.candles import load_candles
    from supervisors.lab_config import lab_venues

    for fast in (False, True):
        run = Lab.together(config.strategies, lab_venues(config, config.strategies), load_candles(data), fast=fast).run_all()
        lab = run.combined
        lab_orders = {
            o.client_order_id: (o.side.value, o.price, o.amount, o.state.value, o.filled) for o in lab.orders.values()
        }
        lab_fills = [(f.client_order_id, f.trade_id, f.price, f.amount, f.fee) for f in lab.fills]
        assert shadow_orders == lab_orders
        assert shadow_fills == lab_fills
    per = run.results
    assert list(per) == ["sma-cross", "dip-buyer"]
    assert all(len(per[name].fills) >= 10 for name in per), "both strategies must trade"
    assert sorted(f.trade_id for r in per.values() for f in r.fills) == sorted(f.trade_id for f in lab.fills)
    # They competed for volume: some candle filled orders of both, and something stayed unfilled.
    owners: dict[float, set[str]] = {}
    for name, result in per.items():
        for fill in result.fills:
            owners.setdefault(fill.at, set()).add(name)
    assert any(len(names) == 2 for names in owners.values())
    assert any(f.amount < lab.orders[f.client_order_id].amount for f in lab.fills)
    combined = [e for _, e, _ in lab.equity]
    summed = [a + b for (_, a, _), (_, b, _) in zip(per["sma-cross"].equity, per["dip-buyer"].equity)]
    assert combined == summed


async def shadow_run(config) -> tuple[dict, list]:
    """Run ``config`` in shadow mode until its replay ends: (orders, fills) from the store."""
    watch = Watch()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(App(config, echo=watch).run)
            await watch.until(lambda events: watch.count("replay_finished") == 1)
            nursery.cancel_scope.cancel()
    store = sqlite3.connect(config.store)
    ids = lab_ids(store)
    orders = {
        ids[cid]: (side, Decimal(price), Decimal(amount), state, Decimal(filled))
        for cid, side, price, amount, state, filled in store.execute(
            "SELECT client_order_id, side, price, amount, state, filled FROM orders")
    }
    fills = [
        (ids[cid], trade, Decimal(price), Decimal(amount), Decimal(fee))
        for cid, trade, price, amount, fee in store.execute(
            "SELECT client_order_id, trade_id, price, amount, fee FROM fills ORDER BY CAST(trade_id AS INTEGER)")
    ]
    store.close()
    return orders, fills


@pytest.mark.parametrize("on_sell", ["short", "flat"], ids=["long/short", "long-only"])
async def test_a_perpetual_strategy_with_protection_makes_the_same_orders_and_fills_in_shadow_mode_and_the_lab(
    tmp_path, on_sell
):
    """A long/short strategy with a take-profit and a stop-limit on the bundled BTC/USD
    candles as a perpetual: shadow mode (the whole tree, lockstep) and the perpetual Lab
    place the same orders (protective ones included, with their triggers) and make the
    same fills, and their ledgers end with the same position, P&L, fees and funding."""
    from test_perpetual_shadow import perp_raw, run

    from exchange.candles import load_candles
    from supervisors.app import build_perpetual_exchange
    from supervisors.lab_perpetual import PerpetualLab

    raw = perp_raw(tmp_path, on_sell=on_sell, protection={"take_profit_pct": 3, "stop_loss_pct": 1.5}, candles=CANDLES)
    raw["venues"][0]["volume_share"] = "0.002"  # partial fills (resting and crossing) are part of what must agree
    watch, _, exchange, ledger, _ = await run(raw, evaluated=CANDLES - 1)
    store = sqlite3.connect(raw["store"])
    ids = lab_ids(store)
    shadow_orders = {
        ids[row[0]]: (row[1], Decimal(row[2]), Decimal(row[3]), row[4], Decimal(row[5]), row[6], row[7],
                 None if row[8] is None else Decimal(row[8]))
        for row in store.execute("SELECT client_order_id, side, price, amount, state, filled, order_type, "
                                 "reduce_only, trigger_price FROM orders")
    }
    shadow_fills = [
        (ids[cid], trade, Decimal(price), Decimal(amount), Decimal(fee))
        for cid, trade, price, amount, fee in store.execute(
            "SELECT client_order_id, trade_id, price, amount, fee FROM fills ORDER BY CAST(trade_id AS INTEGER)")
    ]

    config = parse_config(raw)
    venue = config.venues[0]
    lab = PerpetualLab(config.strategies[0], build_perpetual_exchange(venue),
                       load_candles(venue.replay["BTC/USD:USD"].data)).run()
    lab_orders = {
        o.client_order_id: (o.side.value, o.price, o.amount, o.state.value, o.filled, o.order_type, int(o.reduce_only),
                            o.trigger_price)
        for o in lab.orders.values()
    }
    lab_fills = [(f.client_order_id, f.trade_id, f.price, f.amount, f.fee) for f in lab.fills]

    assert len(lab_orders) >= 20 and len(lab_fills) >= 10, "too little happened to compare"
    kinds = {o[5] for o in lab_orders.values()}
    assert kinds == {"limit", "stop_limit"} and any(o[6] for o in lab_orders.values())
    assert len(lab.protection_closes) >= 1
    assert any(f[3] < lab_orders[f[0]][2] for f in lab_fills), "no partial fill to compare"
    assert shadow_orders == lab_orders
    assert shadow_fills == lab_fills
    booked = ledger["positions"]["trend:BTC/USD:USD"]
    for key in ("size", "realized_pnl", "fees_paid", "funding_paid"):
        assert booked[key] == lab.position[key], key
    assert ledger["collateral"]["trend"]["wallet"] == lab.collateral["wallet"]

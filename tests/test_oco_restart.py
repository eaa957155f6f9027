"""A spot OCO list resting on the exchange across a restart, through the real ccxt.binance
against the sandbox: adopted (not placed again) when nothing happened, and, when a leg
traded while limitline was down, the trade booked once and the holding equal to the
exchange's."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import trio
from helpers import KEY, SECRET, Watch, live_config, node, start_app

from exchange.candles import bundled_path
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox

NEVER = {"kind": "change", "percent": 50, "lookback": 1}
#: 0.5 BTC held from the start at 2,500 (the bundled candles open near it): a list with a
#: take-profit 20 % above and a stop 20 % below rests for the whole run.
STRATEGY = {"allocation": {"quote": 1000, "base": 0.5, "base_cost": 2500}, "buy": NEVER, "sell": NEVER,
            "protection": {"take_profit_pct": 20, "stop_loss_pct": 20}}


def decided_since_active(events) -> int:
    """Candles the strategy decided on since it last went active (0: not active yet)."""
    kinds = [e.kind for e in events]
    if "strategy_active" not in kinds:
        return 0
    return kinds[len(kinds) - 1 - kinds[::-1].index("strategy_active"):].count("evaluated")


def lists_in(store: str) -> list[tuple[str, str, str]]:
    return sqlite3.connect(store).execute(
        "SELECT client_order_id, state, filled FROM orders WHERE order_type = 'oco' ORDER BY created_at").fetchall()


async def test_a_list_resting_across_restarts_is_adopted_and_a_leg_filled_meanwhile_is_booked_once(tmp_path, credentials):
    # The account holds only the strategy's coins: a leg's trade not booked at the restart
    # would show as coins missing (a pause, a failed pre-flight), as the reviewer saw.
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=5.0, api_key=KEY, secret=SECRET,
                                      balances={"USDT": D("10000"), "BTC": D("0.5")}))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = live_config(tmp_path, url)
            raw["strategies"][0].update(STRATEGY)
            exchange = sandbox.dialect.exchange
            btc = exchange.balances["BTC"]

            def resting_lists() -> set[str]:
                return {o.list_client_id for o in exchange.open_orders() if o.list_client_id is not None}

            watch = Watch()
            running = await start_app(nursery, raw, watch)
            await watch.until(lambda events: bool(resting_lists()) and any(
                e.kind == "order_placed" and e.payload.get("type") == "oco" for e in events))
            [first] = resting_lists()
            await running.stop()

            # 1. A restart with nothing changed: the list of record is adopted as it rests.
            again = Watch()
            running = await start_app(nursery, raw, again)
            # Two candles decided on after it went active: a placement would have shown by then.
            await again.until(lambda events: decided_since_active(events) >= 2)
            assert resting_lists() == {first}
            assert not [e for e in again.events if e.kind in ("order_placed", "protection_placed")]
            await running.stop()

            # 2. While limitline is down, the take-profit leg trades in full (the exchange
            # ends the stop leg itself).
            trade = sandbox.dialect.fill_now(f"{first}-t", sandbox.now_ms())
            assert trade.amount == D("0.5") and not resting_lists()
            third = Watch()
            running = await start_app(nursery, raw, third)
            await third.until(lambda events: any(e.kind == "closed_by_protection" for e in events))
            await third.until(lambda events: decided_since_active(events) >= 2)
            held = D(node(running.app.snapshot(), "strategy:dipper")["status"]["held"])
            store = running.app.config.store
            nursery.cancel_scope.cancel()

    [(cid, state, filled)] = lists_in(store)
    assert (cid, state, D(filled)) == (first, "FILLED", D("0.5"))
    db = sqlite3.connect(store)
    fills = db.execute("SELECT trade_id, price, amount FROM fills WHERE client_order_id = ?", (first,)).fetchall()
    settles = db.execute("SELECT count(*) FROM journal WHERE kind = 'settle' AND client_order_id = ?", (first,)).fetchone()[0]
    assert [(t, D(p), D(a)) for t, p, a in fills] == [(trade.trade_id, trade.price, D("0.5"))] and settles == 1
    # What the ledger holds is the exchange's balance, to the satoshi; nothing new was placed
    # (nothing is held to protect), and nothing was paused on the way.
    assert held == 0 and btc.free + btc.used == 0
    assert not [e for e in third.events if e.kind in ("order_placed", "strategy_paused", "preflight_failed")], [
        (e.kind, e.reason) for e in third.events if e.kind != "evaluated"]

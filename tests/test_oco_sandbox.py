"""The sandbox's OCO order lists through the wire, with the real ccxt.binance client
(``privatePostOrderListOco``, ``privateDeleteOrderList``, ``privateGetOpenOrderList``)."""

from __future__ import annotations

from decimal import Decimal as D

import ccxt
import pytest
import trio
from test_sandbox import run_against_sandbox


def oco_params(client, last: float, list_id: str, amount: str = "0.5") -> dict:
    return {
        "symbol": "BTCUSDT", "side": "SELL", "quantity": amount, "listClientOrderId": list_id,
        "aboveType": "LIMIT_MAKER", "abovePrice": client.price_to_precision("BTC/USDT", last * 1.05),
        "aboveClientOrderId": f"{list_id}-t",
        "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": client.price_to_precision("BTC/USDT", last * 0.95),
        "belowPrice": client.price_to_precision("BTC/USDT", last * 0.94), "belowTimeInForce": "GTC",
        "belowClientOrderId": f"{list_id}-s",
    }


async def test_an_oco_list_locks_the_coins_once_lists_and_cancels_through_ccxt():
    def work(client, sandbox, url):
        trio.from_thread.run(sandbox.wait_for_candle)
        last = float(sandbox.dialect.closed["BTC/USDT"][-1].close)
        placed = client.privatePostOrderListOco(oco_params(client, last, "ll-t-7"))
        balance = client.fetch_balance()
        listed = client.privateGetOpenOrderList({})
        open_orders = client.fetch_open_orders("BTC/USDT")
        # Two separate sells of the same coins: the second finds nothing free.
        with pytest.raises(ccxt.InsufficientFunds):
            client.create_order("BTC/USDT", "limit", "sell", 1.6, last * 1.1, {"clientOrderId": "ll-t-x"})
        canceled = client.privateDeleteOrderList({"symbol": "BTCUSDT", "listClientOrderId": "ll-t-7"})
        return placed, balance, listed, open_orders, canceled, client.fetch_balance()

    placed, balance, listed, open_orders, canceled, after = await run_against_sandbox(work)
    assert placed["contingencyType"] == "OCO" and placed["listClientOrderId"] == "ll-t-7"
    assert [r["type"] for r in placed["orderReports"]] == ["STOP_LOSS_LIMIT", "LIMIT_MAKER"]
    assert {r["clientOrderId"] for r in placed["orderReports"]} == {"ll-t-7-t", "ll-t-7-s"}
    assert balance["used"]["BTC"] == 0.5 and balance["free"]["BTC"] == 1.5  # locked once, not twice
    assert [entry["listClientOrderId"] for entry in listed] == ["ll-t-7"]
    assert {o["clientOrderId"] for o in open_orders} == {"ll-t-7-t", "ll-t-7-s"}
    assert canceled["listStatusType"] == "ALL_DONE"
    assert all(r["status"] == "CANCELED" for r in canceled["orderReports"])
    assert after["free"]["BTC"] == 2 and after["used"]["BTC"] == 0


async def test_a_legs_trade_names_its_list_as_binance_does():
    def work(client, sandbox, url):
        trio.from_thread.run(sandbox.wait_for_candle)
        last = float(sandbox.dialect.closed["BTC/USDT"][-1].close)
        placed = client.privatePostOrderListOco(oco_params(client, last, "ll-t-5"))
        trade = sandbox.dialect.fill_now("ll-t-5-t", sandbox.now_ms())
        return placed, trade, client.fetch_my_trades("BTC/USDT")

    placed, trade, trades = await run_against_sandbox(work)
    [mine] = [t for t in trades if t["id"] == trade.trade_id]
    assert mine["info"]["orderListId"] == placed["orderListId"] != -1


async def test_an_oco_list_with_prices_on_the_wrong_side_or_a_market_leg_is_refused():
    def work(client, sandbox, url):
        trio.from_thread.run(sandbox.wait_for_candle)
        last = float(sandbox.dialect.closed["BTC/USDT"][-1].close)
        wrong = oco_params(client, last, "ll-t-8")
        wrong["abovePrice"] = client.price_to_precision("BTC/USDT", last * 0.9)
        with pytest.raises(ccxt.InvalidOrder):
            client.privatePostOrderListOco(wrong)
        market_leg = dict(oco_params(client, last, "ll-t-9"), belowType="STOP_LOSS")
        with pytest.raises(ccxt.ExchangeError):
            client.privatePostOrderListOco(market_leg)
        return client.fetch_balance()

    balance = await run_against_sandbox(work)
    assert balance["free"]["BTC"] == 2


async def test_the_adapter_places_looks_up_and_cancels_a_list_through_ccxt():
    from exchange.ccxt_adapter import perform

    def work(client, sandbox, url):
        trio.from_thread.run(sandbox.wait_for_candle)
        last = sandbox.dialect.closed["BTC/USDT"][-1].close
        placed = perform(client, "create_oco_sell", ("BTC/USDT", D("0.25"), (last * D("1.05")).quantize(D("0.01")),
                                                     (last * D("0.95")).quantize(D("0.01")),
                                                     (last * D("0.94")).quantize(D("0.01")), "ll-t-3", "ll-t-3-t", "ll-t-3-s"))
        looked_up = perform(client, "fetch_order_list_by_client_id", ("ll-t-3", "BTC/USDT"))
        by_id = perform(client, "fetch_order_list", (placed.order_list_id, "BTC/USDT"))
        canceled = perform(client, "cancel_order_list", (placed.order_list_id, "BTC/USDT"))
        return placed, looked_up, by_id, canceled, sandbox.dialect.exchange.orders

    placed, looked_up, by_id, canceled, orders = await run_against_sandbox(work)
    assert placed.list_client_order_id == "ll-t-3" and placed.summary().status == "open"
    assert {leg.client_order_id for leg in placed.legs} == {"ll-t-3-t", "ll-t-3-s"}
    assert looked_up.order_list_id == by_id.order_list_id == placed.order_list_id
    assert by_id.summary().amount == D("0.25") and by_id.summary().filled == 0
    assert canceled.summary().status == "canceled"
    # What reached the exchange: a limit-maker and a stop-loss-limit, never a market type.
    [stop] = [o for o in orders.values() if o.stop_price is not None]
    [maker] = [o for o in orders.values() if o.stop_price is None]
    assert stop.price < stop.stop_price < maker.price and stop.list_client_id == maker.list_client_id == "ll-t-3"


async def test_live_spot_protection_rests_one_list_on_the_exchange_and_closes_positions(tmp_path, credentials):
    """End to end: the runtime, live and armed, through the real ccxt.binance against the
    sandbox: after a buy fills, one OCO list rests on the exchange for the coins bought, and
    a leg of it sells them (``closed_by_protection``), booked once by the ledger."""
    import sqlite3

    from helpers import live_runtime

    # (A list may also be refused, its prices overtaken by a fast market, or a stop be
    # escalated: the run goes on until a leg of a list has closed a position.)
    strategy = {"allocation": {"quote": 5000}, "protection": {"take_profit_pct": 0.5, "stop_loss_pct": 0.5},
                "sell": {"kind": "change", "percent": 50, "lookback": 1}}  # (a sell signal that never fires)
    async with live_runtime(tmp_path, strategy=strategy, deadline=120) as (watch, sandbox, app, _):
        await watch.until(lambda events: any(e.kind == "closed_by_protection" and "oco" in (e.reason or "")
                                             for e in events))
        lists = [o for o in sandbox.dialect.exchange.orders.values() if o.list_client_id is not None]
        store = app.config.store
    placed = [e for e in watch.events if e.kind == "order_placed"]
    assert lists and all(o.side.value == "sell" for o in lists), [
        (e.kind, e.client_order_id, e.payload.get("type"), e.reason) for e in watch.events
        if e.kind in ("order_placed", "closed_by_protection", "protection_refused", "order_rejected", "fill")]
    assert {e.payload["type"] for e in placed} <= {"limit", "oco"} and any(e.payload["type"] == "oco" for e in placed)
    db = sqlite3.connect(store)
    filled = db.execute("SELECT client_order_id FROM orders WHERE order_type = 'oco' AND state = 'FILLED'").fetchall()
    assert filled
    [(cid,)] = filled[:1]
    legs = {o.client_order_id for o in lists if o.list_client_id == cid}
    assert legs == {f"{cid}-t", f"{cid}-s"}
    fills = db.execute("SELECT count(*) FROM fills WHERE client_order_id = ?", (cid,)).fetchone()[0]
    settles = db.execute("SELECT count(*) FROM journal WHERE kind = 'settle' AND client_order_id = ?", (cid,)).fetchone()[0]
    assert fills == settles >= 1

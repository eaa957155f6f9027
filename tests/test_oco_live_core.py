"""The live connection core and a spot OCO list, plain calls: what it asks ccxt for (the
order-list operations, never a market order) and how the legs' answers become the list's."""

from __future__ import annotations

from decimal import Decimal as D

from test_live_core import calls, sends, started

from actors.messages import LEDGER, CallDone, CancelOrder, FillReport, OrderAccepted, OrderCanceled, SubmitOrder, Tick
from actors.orders import Order, OrderState
from exchange.records import ExchangeOrder, ExchangeOrderList, ExchangeTrade, Side

LIST = "ll-s-abcdef-4"


def oco() -> Order:
    return Order(LIST, "s", "binance", "BTC/USDT", Side.SELL, D("110"), D("0.4"), OrderState.SUBMITTING, 0.0, 0.0,
                 rule="protection:oco@p1", order_type="oco", trigger_price=D("95"), stop_limit_price=D("94"))


def listed(stop="open", maker="open", stop_filled="0", maker_filled="0") -> ExchangeOrderList:
    return ExchangeOrderList("9", LIST, "BTC/USDT", (
        ExchangeOrder(f"{LIST}-s", "501", "BTC/USDT", Side.SELL, D("94"), D("0.4"), D(stop_filled), stop),
        ExchangeOrder(f"{LIST}-t", "502", "BTC/USDT", Side.SELL, D("110"), D("0.4"), D(maker_filled), maker),
    ))


def placed():
    core, _ = started()
    [create] = calls(core.handle(SubmitOrder(oco()), 1.0))
    assert create.operation == "create_oco_sell"
    assert create.args == ("BTC/USDT", D("0.4"), D("110"), D("95"), D("94"), LIST, f"{LIST}-t", f"{LIST}-s")
    [accepted] = sends(core.handle(CallDone(create.call_id, listed()), 1.1), OrderAccepted)
    assert accepted.message.exchange_order_id == "list-9"  # lists are numbered apart from orders
    return core


def test_the_stop_legs_trade_is_the_lists_fill_and_the_list_stays_open_while_a_leg_is_listed():
    core = placed()
    out = core.handle(Tick(3.0), 3.0)
    [listing] = [c for c in calls(out) if c.operation == "fetch_open_orders"]
    [trades] = [c for c in calls(out) if c.operation == "fetch_trades"]
    open_legs = list(listed().legs)
    assert calls(core.handle(CallDone(listing.call_id, open_legs), 3.1)) == []  # open: nothing looked up
    trade = ExchangeTrade("70", "501", "BTC/USDT", Side.SELL, D("95"), D("0.4"), D("0.038"), "USDT")
    [fill] = [s.message for s in core.handle(CallDone(trades.call_id, [trade]), 3.2) if s.to == LEDGER]
    assert isinstance(fill, FillReport) and fill.client_order_id == LIST and fill.order_complete


def test_a_list_gone_from_the_open_orders_is_looked_up_as_a_list():
    core = placed()
    out = core.handle(Tick(3.0), 3.0)
    [listing] = [c for c in calls(out) if c.operation == "fetch_open_orders"]
    [lookup] = calls(core.handle(CallDone(listing.call_id, []), 3.1))
    assert lookup.operation == "fetch_order_list" and lookup.args == ("9", "BTC/USDT")
    # Cancelled outside limitline, nothing filled: the list ends, its reservation is released.
    out = core.handle(CallDone(lookup.call_id, listed(stop="canceled", maker="canceled")), 3.2)
    [canceled] = [s.message for s in out if s.to == LEDGER]
    assert isinstance(canceled, OrderCanceled) and canceled.client_order_id == LIST and canceled.filled == 0


def test_a_cancel_cancels_the_list():
    core = placed()
    [cancel] = calls(core.handle(CancelOrder(LIST, "s", "resized"), 2.0))
    assert cancel.operation == "cancel_order_list" and cancel.args == ("9", "BTC/USDT")
    out = core.handle(CallDone(cancel.call_id, listed(stop="canceled", maker="canceled", maker_filled="0.1")), 2.1)
    [canceled] = [s.message for s in out if s.to == LEDGER]
    assert canceled.filled == D("0.1")  # a partial take-profit's trades are still to be reported


def test_the_reconciler_takes_an_oco_lists_legs_for_the_list_of_record():
    from test_reconciler import listed as listed_order
    from test_reconciler import order as record_order
    from test_reconciler import exchange as snapshot
    from test_reconciler import twice

    from actors.reconciler.core import Record

    cid = "ll-a-abcdef-3"
    record = Record((record_order(cid, exchange_id="list-9"),), frozenset())
    legs = [listed_order(f"{cid}-s", "501"), listed_order(f"{cid}-t", "502")]
    assert twice(record, snapshot(legs)) == ([], [], [])  # neither missing nor external
    classes, _, _ = twice(record, snapshot([]))
    assert classes == ["missing_on_exchange"]  # gone: looked up as a list by the connection

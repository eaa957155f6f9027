"""The live connection core of a USD-M perpetuals account, with plain calls: the settings it
puts in place at start, the margin it checks before an open, the stop-limit's path and the
exchange's own error codes. (The wire: tests/test_perpetual_live.py, against the sandbox.)"""

from __future__ import annotations

from decimal import Decimal as D

import attrs

from actors.connection.live_core import LiveSettings
from actors.connection.live_perpetual_core import LivePerpetualConnectionCore, PerpetualMarketSetting
from actors.messages import (
    LEDGER,
    CallDone,
    CancelOrder,
    ExchangeCall,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    SnapshotRequest,
    SubmitOrder,
    Subscribe,
    Tick,
    VenueInfo,
)
from actors.orders import Order, OrderState
from actors.strategy.preflight import venue_problems
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.ccxt_adapter import parse_markets
from exchange.records import ExchangeConditionalOrder, ExchangeOrder, ExchangeTrade, MarginAccount, Side

S = "BTC/USDT:USDT"
MARKETS = parse_markets({
    S: {
        "swap": True, "linear": True, "type": "swap", "active": True, "base": "BTC", "quote": "USDT",
        "maker": 0.0002, "taker": 0.0005, "precision": {"price": 0.1, "amount": 0.001},
        "limits": {"amount": {"min": 0.001}, "cost": {"min": 100}},
    }
}, market_type="swap")
SETTINGS = LiveSettings(poll_seconds=1, rate_limit_per_second=1000, isolate_after_seconds=60, probe_max_seconds=8)


def calls(effects) -> list[ExchangeCall]:
    return [e for e in effects if isinstance(e, ExchangeCall)]


def sends(effects, cls):
    return [e for e in effects if hasattr(e, "message") and isinstance(e.message, cls)]


def margin(available: str, wallet: str = "10000") -> dict[str, MarginAccount]:
    return {"USDT": MarginAccount("USDT", D(wallet), D(available), D(wallet))}


def started(leverage_read_back=(D(5), "cross"), margin_mode: str = "cross") -> tuple[LivePerpetualConnectionCore, list]:
    """A core through its start: markets, clock, margin, and the market's settings."""
    core = LivePerpetualConnectionCore("usdm", SETTINGS, 0.0, markets=[PerpetualMarketSetting(S, 5, margin_mode)],
                                       margin_max_age_seconds=5)
    [load] = calls(core.start(0.0))
    assert core.handle(Subscribe("s", S), 0.0) == []
    clock, balance, mode = calls(core.handle(CallDone(load.call_id, MARKETS), 0.1))
    assert (balance.operation, mode.operation, mode.args) == ("fetch_margin_account", "set_margin_mode", (S, margin_mode))
    core.handle(CallDone(clock.call_id, 0.0), 0.1)
    # The margin is known, but the strategies hear of the venue only once the settings are in place.
    assert sends(core.handle(CallDone(balance.call_id, margin("10000")), 0.2), VenueInfo) == []
    [leverage] = calls(core.handle(CallDone(mode.call_id, None), 0.3))
    assert (leverage.operation, leverage.args) == ("set_leverage", (S, 5))
    [read] = calls(core.handle(CallDone(leverage.call_id, None), 0.4))
    assert read.operation == "fetch_leverage"
    return core, core.handle(CallDone(read.call_id, leverage_read_back), 0.5)


def order(cid: str = "c1", *, side: Side = Side.BUY, price: str = "1000", amount: str = "0.5", reduce_only: bool = False,
          order_type: str = "limit", trigger: str | None = None) -> Order:
    return Order(cid, "s", "usdm", S, side, D(price), D(amount), OrderState.SUBMITTING, 0.0, 0.0,
                 order_type=order_type, trigger_price=None if trigger is None else D(trigger), reduce_only=reduce_only)


def strategy() -> StrategySettings:
    return StrategySettings(name="s", venue="usdm", symbol=S, sizing=Sizing(base=D("0.5")),
                            allocation=Allocation(quote=D(1000)), on_buy="long", on_sell="flat")


def test_settings_are_set_and_read_back_before_strategies_hear_of_the_venue():
    core, out = started()
    [info] = sends(out, VenueInfo)
    facts = info.message.facts
    assert facts.leverage == {S: D(5)} and facts.market_problems == {} and facts.balances == {"USDT": D(10000)}
    assert venue_problems(strategy(), facts, {"USDT": D(1000)}) == []


def test_a_market_whose_settings_read_back_otherwise_fails_its_strategys_preflight():
    core, out = started(leverage_read_back=(D(20), "cross"))
    [info] = sends(out, VenueInfo)
    assert venue_problems(strategy(), info.message.facts, {"USDT": D(1000)}) == [
        "market BTC/USDT:USDT on usdm: the exchange reads back leverage 20 and margin mode cross after setting "
        "leverage 5 and margin mode cross"
    ]


def test_a_refused_setting_is_the_strategys_problem_with_the_exchanges_message():
    core = LivePerpetualConnectionCore("usdm", SETTINGS, 0.0, markets=[PerpetualMarketSetting(S, 5, "isolated")])
    [load] = calls(core.start(0.0))
    core.handle(Subscribe("s", S), 0.0)
    clock, balance, mode = calls(core.handle(CallDone(load.call_id, MARKETS), 0.1))
    core.handle(CallDone(balance.call_id, margin("10000")), 0.2)
    out = core.handle(CallDone(mode.call_id, error_kind="rejected", error='binanceusdm {"code":-4048,"msg":"Margin type cannot be changed if there exists position."}', code=-4048), 0.3)
    [info] = sends(out, VenueInfo)
    assert info.message.facts.market_problems[S].startswith("set margin mode refused by the exchange: binanceusdm {\"code\":-4048")


def test_an_open_is_sent_only_if_the_exchanges_available_margin_covers_it():
    core, _ = started()
    # Margin read at 0.2 (within 5 s): 0.5 x 1000 / 5 + 500 x 0.0005 = 100.25 needed, 10000 available.
    [create] = calls(core.handle(SubmitOrder(order("c1")), 1.0))
    assert create.operation == "create_limit_order" and create.kwargs == {}
    core.handle(CallDone(create.call_id, ExchangeOrder("c1", "7", S, Side.BUY, D(1000), D("0.5"), D(0))), 1.1)
    # The account is drained meanwhile; a new reading says 150 available, and c1 was answered
    # before that reading was asked: it counts it already.
    [read] = [c for c in calls(core.handle(Tick(2.0), 2.0)) if c.operation == "fetch_margin_account"]
    core.handle(CallDone(read.call_id, margin("150")), 2.1)
    [second] = calls(core.handle(SubmitOrder(order("c2")), 2.2))  # 100.25 <= 150
    # c2 is not in any reading yet: 150 - 100.25 is what a third open may use.
    out = core.handle(SubmitOrder(order("c3")), 2.3)
    assert calls(out) == []
    [to_strategy, to_ledger] = sends(out, OrderRejected)
    assert to_ledger.to == LEDGER and to_strategy.message == to_ledger.message
    assert to_ledger.message.reason == (
        "insufficient margin on the exchange: needs 100.25 USDT (notional 500.00 / leverage 5 + worst fee), "
        "available 150 USDT read 0.3s ago, less 100.25 USDT held by opens just sent; not sent")
    # A close needs no margin: sent whatever the margin.
    [close] = calls(core.handle(SubmitOrder(order("c4", side=Side.SELL, reduce_only=True)), 2.4))
    assert close.kwargs == {"reduce_only": True}


def test_an_open_waits_for_a_fresh_reading_of_the_margin_and_is_refused_if_it_cannot_be_read():
    core, _ = started()
    out = core.handle(SubmitOrder(order("c1")), 10.0)  # the reading of 0.2 is 9.8 s old
    [read] = calls(out)
    assert read.operation == "fetch_margin_account"
    [create] = calls(core.handle(CallDone(read.call_id, margin("5000")), 10.1))
    assert create.operation == "create_limit_order"
    out = core.handle(SubmitOrder(order("c2")), 20.0)
    [read] = calls(out)
    out = core.handle(CallDone(read.call_id, error_kind="transient", error="RequestTimeout: read timed out"), 20.5)
    assert calls(out) == [] or all(c.operation != "create_limit_order" for c in calls(out))
    [rejected, _] = sends(out, OrderRejected)
    assert rejected.message.reason.startswith("the exchange's available margin could not be read (transient: RequestTimeout")


def test_binances_margin_rejection_is_a_rejection_with_its_reason_and_code():
    core, _ = started()
    [create] = calls(core.handle(SubmitOrder(order("c1")), 1.0))
    out = core.handle(CallDone(create.call_id, error_kind="rejected", code=-2019, reason="margin insufficient",
                               error='ExchangeError: binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'), 1.1)
    [to_strategy, to_ledger] = sends(out, OrderRejected)
    assert to_ledger.to == LEDGER
    assert to_strategy.message.reason == (
        'rejected: margin insufficient: ExchangeError: binanceusdm {"code":-2019,"msg":"Margin is insufficient."} (code -2019)')
    assert core._committed == {}  # what it held for the next check is let go


def test_a_stop_limit_rests_on_the_conditional_path_and_its_childs_trades_are_its_fills():
    core, _ = started()
    stop = order("sl", side=Side.SELL, price="979.9", order_type="stop_limit", trigger="984.9", reduce_only=True)
    [create] = calls(core.handle(SubmitOrder(stop), 1.0))
    assert create.operation == "create_conditional_order"
    assert create.args == (S, Side.SELL, D("0.5"), D("979.9"), D("984.9"), "sl")
    assert create.kwargs == {"kind": "stop", "reduce_only": True}
    algo = ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("979.9"), D("0.5"), D(0), trigger_price=D("984.9"))
    [accepted] = sends(core.handle(CallDone(create.call_id, algo), 1.1), OrderAccepted)
    assert accepted.message.exchange_order_id == "algo-12"  # algo ids are numbered apart from orders
    # The poll: no longer among the conditional orders waiting: looked up on the algo path.
    polls = calls(core.handle(Tick(2.0), 2.0))
    [algos] = [c for c in polls if c.operation == "fetch_open_conditional_orders"]
    [regular] = [c for c in polls if c.operation == "fetch_open_orders"]
    [trades] = [c for c in polls if c.operation == "fetch_trades"]
    # Its child's trade comes first: not mapped yet, so the cursor stays before it.
    child_trade = ExchangeTrade("40", "99", S, Side.SELL, D("984.9"), D("0.5"), D("0.24"), "USDT")
    assert sends(core.handle(CallDone(trades.call_id, [child_trade]), 2.1), FillReport) == []
    assert core.last_trade_id[S] == 39
    core.handle(CallDone(regular.call_id, []), 2.1)
    [lookup] = calls(core.handle(CallDone(algos.call_id, []), 2.2))
    assert (lookup.operation, lookup.args) == ("fetch_conditional_order", ("12", S))
    triggered = attrs.evolve(algo, status="closed", child_order_id="99", exchange_status="FINISHED")
    [child] = calls(core.handle(CallDone(lookup.call_id, triggered), 2.3))
    assert (child.operation, child.args) == ("fetch_order", ("99", S))  # its child says filled or ended
    core.handle(CallDone(child.call_id, ExchangeOrder("sl", "99", S, Side.SELL, D("979.9"), D("0.5"), D("0.5"), "closed")), 2.4)
    [trades] = [c for c in calls(core.handle(Tick(3.0), 3.0)) if c.operation == "fetch_trades"]
    assert trades.args[1] == 40  # read again from the held-back trade
    [fill, _] = sends(core.handle(CallDone(trades.call_id, [child_trade]), 3.1), FillReport)
    assert (fill.message.client_order_id, fill.message.exchange_order_id, fill.message.order_complete) == ("sl", "algo-12", True)


def test_a_cancel_of_a_stop_that_triggered_under_it_is_asked_again_of_its_child():
    """The race of issue 13's flaky escalation: the cancel of a stop goes to the algo path
    just as it triggers (-2011: no such conditional order any more); the listing adopts its
    child meanwhile, and the lookup of the stop says ``closed`` (ccxt's word for triggered,
    not for filled). The cancel is asked again, of the child, until the exchange says."""
    core, _ = started()
    stop = order("sl", side=Side.SELL, price="1072.6", order_type="stop_limit", trigger="1078", reduce_only=True)
    [create] = calls(core.handle(SubmitOrder(stop), 1.0))
    algo = ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("1072.6"), D("0.5"), D(0), trigger_price=D("1078"))
    core.handle(CallDone(create.call_id, algo), 1.1)
    polls = {c.operation: c for c in calls(core.handle(Tick(2.0), 2.0))}
    # The stop triggered: no longer listed, looked up (the lookup is on the wire)...
    [lookup] = calls(core.handle(CallDone(polls["fetch_open_conditional_orders"].call_id, []), 2.1))
    assert lookup.operation == "fetch_conditional_order"
    # ...when the strategy cancels it (the child is not known yet: the algo path).
    [cancel] = calls(core.handle(CancelOrder("sl", "s", "gapped stop replaced by an escalation"), 2.1))
    assert (cancel.operation, cancel.args) == ("cancel_conditional_order", ("12", S))
    # The regular listing shows its child (the stop's client id): adopted.
    child = ExchangeOrder("sl", "99", S, Side.SELL, D("1072.6"), D("0.5"), D(0), "open")
    core.handle(CallDone(polls["fetch_open_orders"].call_id, [child]), 2.2)
    assert core.tracked["sl"].child_order_id == "99"
    core.handle(CallDone(cancel.call_id, error_kind="rejected", code=-2011, reason="unknown order",
                         error='OrderNotFound: binanceusdm {"code": -2011, "msg": "Unknown order sent."}'), 2.3)
    triggered = attrs.evolve(algo, status="closed", child_order_id="99", exchange_status="TRIGGERED")
    core.handle(CallDone(lookup.call_id, triggered), 2.4)
    again = [c for t in (3.0, 4.0, 6.0, 10.0) for c in calls(core.handle(Tick(t), t))
             if c.operation in ("cancel_order", "cancel_conditional_order")]
    assert [(c.operation, c.args) for c in again][:1] == [("cancel_order", ("99", S))]
    [canceled, _] = sends(core.handle(CallDone(again[0].call_id, attrs.evolve(child, status="canceled")), 10.1),
                          OrderCanceled)
    assert canceled.message.client_order_id == "sl"


def test_a_take_profit_expired_by_the_exchange_is_reported_after_the_stop_fill_that_closed_the_position():
    core, _ = started()
    take = order("tp", side=Side.SELL, price="1055", reduce_only=True)
    stop = order("sl", side=Side.SELL, price="979.9", order_type="stop_limit", trigger="984.9", reduce_only=True)
    [c1] = calls(core.handle(SubmitOrder(take), 1.0))
    [c2] = calls(core.handle(SubmitOrder(stop), 1.0))
    core.handle(CallDone(c1.call_id, ExchangeOrder("tp", "8", S, Side.SELL, D(1055), D("0.5"), D(0))), 1.1)
    core.handle(CallDone(c2.call_id, ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("979.9"), D("0.5"), D(0))), 1.1)
    polls = calls(core.handle(Tick(2.0), 2.0))
    by_op = {c.operation: c for c in polls}
    core.handle(CallDone(by_op["fetch_trades"].call_id, []), 2.1)
    core.handle(CallDone(by_op["fetch_open_conditional_orders"].call_id, []), 2.1)  # the stop triggered
    [tp_lookup] = calls(core.handle(CallDone(by_op["fetch_open_orders"].call_id, []), 2.2))
    # The take-profit expired (nothing left to reduce): held back while the stop's fill is unreported.
    out = core.handle(CallDone(tp_lookup.call_id, ExchangeOrder("tp", "8", S, Side.SELL, D(1055), D("0.5"), D(0), "expired")), 2.3)
    assert sends(out, OrderCanceled) == []
    core.tracked["sl"].done = True  # its fill is reported
    [canceled, _] = sends(core.handle(Tick(2.4), 2.4), OrderCanceled)
    assert (canceled.message.client_order_id, canceled.message.reason) == ("tp", "expired on the exchange")


def test_the_snapshot_carries_positions_orders_of_both_kinds_trades_and_income():
    from exchange.records import ExchangeIncome, ExchangePosition

    core, _ = started()
    [create] = calls(core.handle(SubmitOrder(order("sl", side=Side.SELL, price="979.9", order_type="stop_limit",
                                                   trigger="984.9", reduce_only=True)), 1.0))
    core.handle(CallDone(create.call_id, ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("979.9"), D("0.5"), D(0))), 1.1)
    out = calls(core.handle(SnapshotRequest("reconciler", 7), 2.0))
    ops = sorted(c.operation for c in out)
    assert ops == ["fetch_forced_order_ids", "fetch_income", "fetch_leverages", "fetch_margin_account",
                   "fetch_open_conditional_orders", "fetch_open_orders", "fetch_positions", "fetch_trades"]
    answers = {
        "fetch_forced_order_ids": frozenset({"31"}),
        "fetch_income": [ExchangeIncome("f1", S, "FUNDING_FEE", D("-0.05"), "USDT", 1.0)],
        # An operator set 10x on the exchange; Binance's positionRisk (v3) does not say so.
        "fetch_leverages": {S: (D(10), "cross")},
        "fetch_margin_account": margin("9000", wallet="9990"),
        "fetch_open_conditional_orders": [ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("979.9"), D("0.5"), D(0))],
        "fetch_open_orders": [],
        "fetch_positions": [ExchangePosition(S, D("0.5"), D(1005))],
        "fetch_trades": [],
    }
    results = []
    for call in out:
        results += core.handle(CallDone(call.call_id, answers[call.operation]), 2.1)
    [snapshot] = [s.message for s in results if hasattr(s, "message") and s.message.__class__.__name__ == "ExchangeSnapshot"]
    positions = snapshot.positions
    assert [(p.symbol, p.size, p.entry_price, p.leverage) for p in positions.positions] == [(S, D("0.5"), D(1005), D(10))]
    assert positions.leverage == {S: D(10)} and positions.leverage_set == {S: D(5)}
    assert core.status()["leverage_on_exchange"] == {S: "10"} and core.status()["leverage"] == {S: "5"}
    # An open now needs the margin of the lower of the two (here the set 5x: 100.25).
    assert core.initial_margin(order("c9"))[2] == D(5)
    assert [o.exchange_order_id for o in positions.open_orders] == ["algo-12"]
    assert [(i.income_id, i.kind, i.amount) for i in positions.income] == [("f1", "FUNDING_FEE", D("-0.05"))]
    assert positions.wallet == D(9990) and snapshot.balances == {"USDT": D(9990)}
    assert positions.forced_order_ids == frozenset({"31"})



def test_settings_the_account_held_otherwise_are_set_at_start_with_an_event():
    core = LivePerpetualConnectionCore("usdm", SETTINGS, 0.0, markets=[PerpetualMarketSetting(S, 5)])
    [load] = calls(core.start(0.0))
    core.handle(Subscribe("s", S), 0.0)
    clock, balance, mode = calls(core.handle(CallDone(load.call_id, MARKETS), 0.1))
    core.handle(CallDone(clock.call_id, 0.0), 0.1)
    core.handle(CallDone(balance.call_id, margin("10000")), 0.2)
    # set_margin_mode answers what the account held before: 10x, set outside while we were down.
    [leverage] = calls(core.handle(CallDone(mode.call_id, (D(10), "cross")), 0.3))
    [read] = calls(core.handle(CallDone(leverage.call_id, None), 0.4))
    out = core.handle(CallDone(read.call_id, (D(5), "cross")), 0.5)
    [event] = [e.message for e in out if getattr(e.message, "kind", None) == "market_settings_set"]
    assert event.reason == ("BTC/USDT:USDT on usdm: the exchange held leverage 10 and margin mode cross; "
                            "set to the configured leverage 5 and margin mode cross at start")
    assert sends(out, VenueInfo) and core.leverage == {S: D(5)}


def test_a_setting_that_fails_for_a_passing_reason_is_asked_again_after_its_back_off():
    core = LivePerpetualConnectionCore("usdm", SETTINGS, 0.0, markets=[PerpetualMarketSetting(S, 5)])
    [load] = calls(core.start(0.0))
    core.handle(Subscribe("s", S), 0.0)
    clock, balance, mode = calls(core.handle(CallDone(load.call_id, MARKETS), 0.1))
    core.handle(CallDone(clock.call_id, 0.0), 0.1)
    core.handle(CallDone(balance.call_id, margin("10000")), 0.2)
    assert sends(core.handle(CallDone(mode.call_id, error_kind="transient", error="RequestTimeout"), 0.3), VenueInfo) == []
    assert [c for c in calls(core.handle(Tick(0.4), 0.4)) if c.operation == "set_margin_mode"] == []  # backing off
    [again] = [c for c in calls(core.handle(Tick(30.0), 30.0)) if c.operation == "set_margin_mode"]
    assert again.args == (S, "cross")


def test_an_expiry_is_held_only_until_a_newer_listing_shows_the_stop_still_waiting():
    """An operator closed the position: the take-profit expired, the stop still waits for
    its trigger. The expiry is reported once a listing asked after it shows the stop."""
    core, _ = started()
    take = order("tp", side=Side.SELL, price="1055", reduce_only=True)
    stop = order("sl", side=Side.SELL, price="979.9", order_type="stop_limit", trigger="984.9", reduce_only=True)
    [c1] = calls(core.handle(SubmitOrder(take), 1.0))
    [c2] = calls(core.handle(SubmitOrder(stop), 1.0))
    core.handle(CallDone(c1.call_id, ExchangeOrder("tp", "8", S, Side.SELL, D(1055), D("0.5"), D(0))), 1.1)
    waiting = ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("979.9"), D("0.5"), D(0))
    core.handle(CallDone(c2.call_id, waiting), 1.1)
    by_op = {c.operation: c for c in calls(core.handle(Tick(2.0), 2.0))}
    [tp_lookup] = calls(core.handle(CallDone(by_op["fetch_open_orders"].call_id, []), 2.1))
    expired = ExchangeOrder("tp", "8", S, Side.SELL, D(1055), D("0.5"), D(0), "expired")
    assert sends(core.handle(CallDone(tp_lookup.call_id, expired), 2.2), OrderCanceled) == []
    # This cycle's listing of conditional orders was asked before the expiry was learnt.
    assert sends(core.handle(CallDone(by_op["fetch_open_conditional_orders"].call_id, [waiting]), 2.3), OrderCanceled) == []
    by_op = {c.operation: c for c in calls(core.handle(Tick(3.0), 3.0))}
    [canceled, _] = sends(core.handle(CallDone(by_op["fetch_open_conditional_orders"].call_id, [waiting]), 3.1), OrderCanceled)
    assert (canceled.message.client_order_id, canceled.message.reason) == ("tp", "expired on the exchange")


def test_a_stop_whose_child_a_listing_shows_resting_is_reported_triggered_to_its_strategy():
    """Review 13c, F2: the strategy heard of a triggered stop only from the next candle's
    close; now every listing that shows its child resting says so (with the latest close)."""
    from actors.messages import StopTriggered

    core, _ = started()
    stop = order("sl", side=Side.SELL, price="984.8", order_type="stop_limit", trigger="989.8", reduce_only=True)
    [create] = calls(core.handle(SubmitOrder(stop), 1.0))
    algo = ExchangeConditionalOrder("sl", "12", S, Side.SELL, D("984.8"), D("0.5"), D(0), trigger_price=D("989.8"))
    core.handle(CallDone(create.call_id, algo), 1.1)
    polls = {c.operation: c for c in calls(core.handle(Tick(2.0), 2.0))}
    assert sends(core.handle(CallDone(polls["fetch_open_orders"].call_id, []), 2.1), StopTriggered) == []
    polls = {c.operation: c for c in calls(core.handle(Tick(3.0), 3.0))}
    child = ExchangeOrder("sl", "99", S, Side.SELL, D("984.8"), D("0.5"), D(0), "open")
    [told] = sends(core.handle(CallDone(polls["fetch_open_orders"].call_id, [child]), 3.1), StopTriggered)
    assert told.to == "strategy:s" and told.message.client_order_id == "sl" and core.tracked["sl"].child_order_id == "99"

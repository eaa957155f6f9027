"""The strategy core with plain calls: evaluation, decisions, blocks, and an order's path."""

from __future__ import annotations

from decimal import Decimal as D

from actors.messages import (
    AccountInfo,
    AccountQuery,
    CancelOrder,
    CandleClosed,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderDurable,
    OrderOutcomeUnknown,
    Quote,
    Reconciled,
    RecordEvent,
    RecordOrder,
    ReservationDenied,
    ReservationGranted,
    Reserve,
    SubmitOrder,
    Subscribe,
    VenueFacts,
    VenueInfo,
)
from actors.orders import OrderState
from actors.strategy.core import StrategyCore
from actors.strategy.rules import Change
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.records import Side

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=D("0.01"), lot_size=D("0.0001"), min_amount=D("0.0001"),
    min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"),
)
HOUR = 3600


def settings(**overrides) -> StrategySettings:
    values = dict(
        name="dip", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=D("100")),
        allocation=Allocation(quote=D("1000")), buy=Change(D("-1"), 1), sell=Change(D("1"), 1),
        limit_offset_bps=D("10"), ttl_seconds=2 * HOUR, cooldown_seconds=0, max_open_orders=1,
    )
    values.update(overrides)
    return StrategySettings(**values)


def candle(i: int, close: str) -> CandleClosed:
    c = D(close)
    return CandleClosed("sim", "BTC/USD", Candle(i * HOUR, c, c, c, c, D("10")))


def facts(**overrides) -> VenueFacts:
    values = dict(venue="sim", connection_error=None, markets={"BTC/USD": MARKET},
                  balances={"USD": D("10000"), "BTC": D("5")}, last_prices={"BTC/USD": D("100")})
    values.update(overrides)
    return VenueFacts(**values)


def events(sends, kind=None):
    return [s.message for s in sends if isinstance(s.message, RecordEvent) and (kind is None or s.message.kind == kind)]


def messages(sends, cls):
    return [s.message for s in sends if isinstance(s.message, cls)]


def active_core(**overrides) -> StrategyCore:
    core = StrategyCore(settings(**overrides))
    start = core.start(0.0)
    assert [type(s.message) for s in start][0] is Subscribe
    assert core.handle(VenueInfo(facts()), 0.0) == []  # the ledger has not answered yet
    assert not core.active
    out = core.handle(AccountInfo("dip", D("1000"), D(0), D(0), D(0)), 0.0)
    assert not core.active and core.inactive_reason == "waiting for the first reconciliation of sim"
    out = core.handle(Reconciled("sim"), 0.0)
    # What the account and the exchange hold after the reconciliation, both asked again.
    assert messages(out, AccountQuery) and messages(out, Subscribe)
    core.handle(VenueInfo(facts()), 0.0)
    out = core.handle(AccountInfo("dip", D("1000"), D(0), D(0), D(0)), 0.0)
    assert core.active and events(out, "strategy_active")
    return core


def buy_intent(core: StrategyCore) -> Reserve:
    core.handle(candle(0, "100"), 1.0)
    out = core.handle(candle(1, "98"), 2.0)  # -2 %: the buy trigger fires
    [reserve] = messages(out, Reserve)
    return reserve


def test_every_candle_writes_an_evaluated_event_with_the_rules_outcome():
    core = active_core()
    out = core.handle(candle(0, "100"), 1.0)
    [evaluated] = events(out, "evaluated")
    assert evaluated.payload["close"] == "100"
    assert [r["fired"] for r in evaluated.payload["rules"]] == [False, False]


def test_a_fired_buy_reserves_a_rounded_limit_price_below_the_close():
    core = active_core()
    reserve = buy_intent(core)
    assert reserve.side is Side.BUY
    assert reserve.price == D("97.90")  # 98 * (1 - 10 bp), rounded down to the tick
    assert reserve.amount == D("1.0214")  # 100 / 97.90 rounded down to the lot
    assert reserve.fee_rate == D("0.002")  # the worst fee the order can pay
    assert core.orders[reserve.client_order_id].state is OrderState.INTENT


def test_the_order_is_sent_only_after_it_is_durable():
    core = active_core()
    cid = buy_intent(core).client_order_id
    out = core.handle(ReservationGranted(cid), 3.0)
    [record] = messages(out, RecordOrder)
    assert record.durable_reply_to == "strategy:dip" and record.order.state is OrderState.RESERVED
    assert messages(out, SubmitOrder) == []
    out = core.handle(OrderDurable(cid), 4.0)
    [submit] = messages(out, SubmitOrder)
    assert submit.order.state is OrderState.SUBMITTING
    [placed] = events(out, "order_placed")
    assert placed.rule == "change(-1%,1)" and placed.client_order_id == cid
    assert placed.payload["type"] == "limit"


def place(core: StrategyCore) -> str:
    cid = buy_intent(core).client_order_id
    core.handle(ReservationGranted(cid), 3.0)
    core.handle(OrderDurable(cid), 4.0)
    core.handle(OrderAccepted(cid, "e1", 5.0), 5.0)
    return cid


def report(cid, trade, amount, complete=False, side=Side.BUY) -> FillReport:
    return FillReport("sim", cid, "e1", trade, "BTC/USD", side, D("97.90"), D(amount), D("0.01"), "USD", 6.0, complete)


def test_fills_move_the_order_and_duplicates_are_ignored():
    core = active_core()
    cid = place(core)
    core.handle(report(cid, "t1", "0.5"), 6.0)
    assert core.orders[cid].state is OrderState.PARTIALLY_FILLED
    assert core.handle(report(cid, "t1", "0.5"), 6.0) == []
    out = core.handle(report(cid, "t2", "0.5214", complete=True), 7.0)
    assert cid not in core.orders
    [record] = messages(out, RecordOrder)
    assert record.order.state is OrderState.FILLED and record.order.filled == D("1.0214")
    # What it holds is the ledger's answer alone, never a sum of fills.
    assert core.held == 0
    core.handle(AccountInfo("dip", D("900"), D(0), D("1.0214"), D(0), cost_basis=D("100")), 7.5)
    assert core.held == D("1.0214")


def test_a_denial_is_a_blocked_event_with_the_ledgers_reason():
    core = active_core()
    cid = buy_intent(core).client_order_id
    out = core.handle(ReservationDenied(cid, "insufficient capital: needs 102.10 USD, free 50.00 USD"), 3.0)
    [blocked] = events(out, "blocked")
    assert blocked.reason == "insufficient capital: needs 102.10 USD, free 50.00 USD"
    assert blocked.rule == "change(-1%,1)"
    assert messages(out, RecordOrder)[0].order.state is OrderState.DENIED


def test_max_open_orders_blocks_with_the_reason():
    core = active_core()
    place(core)
    out = core.handle(candle(2, "96"), 8.0)
    [blocked] = events(out, "blocked")
    assert blocked.reason == "max open orders reached (1)"
    assert messages(out, Reserve) == []


def test_an_unknown_order_blocks_new_orders_on_the_symbol():
    core = active_core(max_open_orders=5)
    cid = buy_intent(core).client_order_id
    core.handle(ReservationGranted(cid), 3.0)
    core.handle(OrderDurable(cid), 4.0)
    core.handle(OrderOutcomeUnknown(cid, "the submit timed out", 6.0), 6.0)
    assert core.orders[cid].state is OrderState.UNKNOWN
    out = core.handle(candle(2, "96"), 8.0)
    [blocked] = events(out, "blocked")
    assert blocked.reason.startswith(f"order {cid} is UNKNOWN")


def test_cooldown_after_a_fill_runs_on_market_time():
    core = active_core(cooldown_seconds=2 * HOUR, max_open_orders=5)
    cid = place(core)
    core.handle(report(cid, "t1", "1.0214", complete=True), 6.0)
    out = core.handle(candle(2, "96"), 7.0)
    assert events(out, "blocked")[0].reason.startswith("cooldown after a fill")
    core.handle(candle(3, "97"), 8.0)
    out = core.handle(candle(4, "95"), 9.0)  # two market hours after the fill
    assert messages(out, Reserve)


def test_time_to_live_expires_an_unfilled_order():
    core = active_core()
    cid = place(core)  # placed on the candle at 1h
    assert messages(core.handle(candle(2, "99"), 6.0), CancelOrder) == []
    out = core.handle(candle(3, "99"), 7.0)
    [cancel] = messages(out, CancelOrder)
    assert cancel == CancelOrder(cid, "dip", "expired")
    assert core.orders[cid].state is OrderState.CANCELING
    out = core.handle(OrderCanceled(cid, "expired", 8.0, expired=True), 8.0)
    assert messages(out, RecordOrder)[0].order.state is OrderState.EXPIRED
    assert events(out, "order_expired")


def test_an_illegal_transition_is_refused_and_logged():
    core = active_core()
    cid = place(core)
    out = core.handle(OrderDurable(cid), 9.0)  # a second "durable" for an OPEN order
    [event] = events(out, "illegal_transition")
    assert "submit is not allowed in state OPEN" in event.reason
    assert core.orders[cid].state is OrderState.OPEN


def test_sell_sizes_only_what_open_sells_do_not_already_offer():
    core = active_core(max_open_orders=3, buy=None)
    core.handle(AccountInfo("dip", D("1000"), D(0), D("1"), D(0)), 0.0)
    core.handle(candle(0, "100"), 1.0)
    [first] = messages(core.handle(candle(1, "102"), 2.0), Reserve)
    # The ledger sizes a sell: all that is free when it reserves (it owns the holdings).
    assert first.share_of_free == D("1") and first.side is Side.SELL
    out = core.handle(candle(2, "104"), 3.0)
    assert messages(out, Reserve) == []
    assert events(out, "blocked")[0].reason == "nothing to sell: all 1 BTC held is already in open sell orders"


def test_inactive_strategies_block_with_why():
    core = StrategyCore(settings())
    core.handle(candle(0, "100"), 1.0)
    out = core.handle(candle(1, "98"), 2.0)
    assert events(out, "blocked")[0].reason.startswith("inactive: pre-flight: waiting for the exchange")


def test_a_failed_preflight_keeps_the_strategy_inactive_with_the_message():
    core = StrategyCore(settings(sizing=Sizing(quote=D("5"))))
    core.handle(VenueInfo(facts()), 0.0)
    out = core.handle(AccountInfo("dip", D("1000"), D(0), D(0), D(0)), 0.0)
    [failed] = events(out, "preflight_failed")
    assert failed.reason == "pre-flight failed: sizing.quote: 5 USD is below the market's minimum notional 10 USD"
    assert not core.active
    assert core.status()["inactive_reason"] == failed.reason
    core.handle(candle(0, "100"), 1.0)
    out = core.handle(candle(1, "98"), 2.0)
    assert messages(out, Reserve) == []
    assert events(out, "blocked")[0].reason == f"inactive: {failed.reason}"


def test_take_profit_and_stop_loss_sell_from_the_average_entry():
    for close, rule in (("103.00", "take_profit(2%)"), ("94.00", "stop_loss(3%)")):
        core = active_core(take_profit_pct=D(2), stop_loss_pct=D(3), sell=None, max_open_orders=2)
        cid = place(core)  # a buy at 97.90
        core.handle(report(cid, "t1", "1.0214", complete=True), 6.0)
        assert core.entry_cost == 0  # until the ledger answers
        core.handle(AccountInfo("dip", D("900"), D(0), D("1.0214"), D(0), cost_basis=D("97.90") * D("1.0214")), 6.5)
        assert core.entry_price == D("97.90")
        out = core.handle(candle(2, "99.00"), 7.0)  # +1.1 % from entry: no exit yet
        assert messages(out, Reserve) == []
        out = core.handle(candle(3, close), 8.0)
        [sell] = [r for r in messages(out, Reserve) if r.side is Side.SELL]  # (a -4 % drop also fires the buy)
        assert sell.side is Side.SELL and sell.share_of_free == D("1")
        assert core.orders[sell.client_order_id].rule == rule
        assert core.wants_every_candle()


def test_limit_prices_can_start_from_the_best_bid_and_ask():
    core = active_core(price_from="best")
    core.handle(Quote("sim", "BTC/USD", D("97.50"), D("98.50"), at=0.5), 0.5)
    assert buy_intent(core).price == D("97.40")  # 97.50 (the bid) less 10 bp, down to the tick
    plain = active_core()
    plain.handle(Quote("sim", "BTC/USD", D("97.50"), D("98.50")), 0.5)
    assert buy_intent(plain).price == D("97.90")  # from the close, as configured


def test_a_stale_best_bid_is_not_a_price():
    core = active_core(price_from="best", quote_max_age_seconds=30)
    core.handle(Quote("sim", "BTC/USD", D("97.50"), D("98.50"), at=-40.0), 0.5)  # 42 s old when deciding
    assert buy_intent(core).price == D("97.90")  # from the close


def test_a_close_below_one_tick_is_a_blocked_decision_never_a_crash():
    # A buy at a close of 0.008 with a 0.01 tick rounds down to 0: no limit order exists.
    for sizing in (Sizing(quote=D("100")), Sizing(percent=D("10"))):
        core = active_core(sizing=sizing)
        core.handle(candle(0, "0.010"), 1.0)
        out = core.handle(candle(1, "0.008"), 2.0)  # -20 %: the buy trigger fires
        assert messages(out, Reserve) == [] and core.orders == {}
        [blocked] = events(out, "blocked")
        assert blocked.reason == (
            "price below one tick: close 0.008 at 10 bps rounds to 0.00 at the market's tick 0.01; "
            "no limit order can be placed (is tick_size right for this market?)"
        )
        assert blocked.rule == "change(-1%,1)" and blocked.payload == {"side": "buy", "below_tick": True}
    # The best bid too, where the offset is taken from it.
    core = active_core(price_from="best")
    core.handle(Quote("sim", "BTC/USD", D("0.004"), D("0.02")), 1.0)
    core.handle(candle(0, "0.010"), 1.0)
    [blocked] = events(core.handle(candle(1, "0.008"), 2.0), "blocked")
    assert blocked.reason.startswith("price below one tick: best bid 0.004 at 10 bps rounds to 0.00")


def test_an_operator_cancels_every_open_order_and_the_strategy_carries_on():
    from actors.messages import CancelOpenOrders

    core = active_core(max_open_orders=3, ttl_seconds=10 * HOUR)
    resting = place(core)  # accepted by the exchange: OPEN
    core.handle(report(resting, "t1", "0.5"), 6.0)  # partly filled: still resting
    in_flight = buy_intent_after(core, 3)  # decided, its outcome not known yet: left alone
    core.handle(ReservationGranted(in_flight), 8.0)
    core.handle(OrderDurable(in_flight), 8.5)
    out = core.handle(CancelOpenOrders("dip", "the operator over HTTP"), 9.0)
    assert messages(out, CancelOrder) == [CancelOrder(resting, "dip", "cancelled by the operator over HTTP")]
    assert core.orders[resting].state is OrderState.CANCELING
    assert core.orders[in_flight].state is OrderState.SUBMITTING
    [requested] = events(out, "cancel_requested")
    assert requested.payload == {"orders": [resting]} and f"{in_flight} (SUBMITTING)" in requested.reason
    out = core.handle(OrderCanceled(resting, "cancelled by the operator over HTTP", 10.0, filled=D("0.5")), 10.0)
    assert messages(out, RecordOrder)[0].order.state is OrderState.CANCELED
    assert core.active and core.paused is None  # cancelling is not pausing
    assert messages(core.handle(CancelOpenOrders("dip", "op"), 11.0), CancelOrder) == []  # nothing rests now


def buy_intent_after(core: StrategyCore, hour: int) -> str:
    core.handle(candle(hour, "100"), float(hour))
    [reserve] = messages(core.handle(candle(hour + 1, "98"), float(hour) + 0.5), Reserve)
    return reserve.client_order_id

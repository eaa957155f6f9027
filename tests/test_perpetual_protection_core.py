"""The perpetual strategy core's protection paths, with plain calls (review 13c): what a
restarted strategy does with the protective orders of record before and after it may act,
and what a report between candles (a quote, the exchange saying the stop triggered) does."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from test_perpetual_live import perpetual_config

from actors.messages import (
    CancelOrder,
    CandleClosed,
    FillReport,
    OrderCanceled,
    PositionInfo,
    PositionReserve,
    Quote,
    RecordEvent,
    Reconciled,
    StopTriggered,
    VenueFacts,
    VenueInfo,
)
from actors.orders import Order, OrderState
from actors.strategy.perpetual_core import PerpetualStrategyCore
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.records import Side
from supervisors.config import parse_config

S = "BTC/USDT:USDT"
CID = "ll-trend-2ab022-d73zrl-"
MARKET = MarketRules.for_symbol(S, tick_size=D("0.1"), lot_size=D("0.001"), min_amount=D("0.001"), min_notional=D(5),
                                maker_fee=D("0.0002"), taker_fee=D("0.0005"))


def settings():
    return parse_config(perpetual_config(Path("/tmp"), "http://127.0.0.1:1"), live=True).strategies[0]


def record(n: int, role: str, price: str, trigger: str | None = None) -> Order:
    """A protective order of record resting on the exchange (a long of 0.5 at 1010)."""
    return Order(client_order_id=f"{CID}{n}", strategy="trend", venue="usdm", symbol=S, side=Side.SELL, price=D(price),
                 amount=D("0.5"), state=OrderState.OPEN, created_at=0.0, updated_at=0.0, rule=f"protection:{role}@p1",
                 exchange_order_id=str(n), order_type="stop_limit" if trigger else "limit",
                 trigger_price=None if trigger is None else D(trigger), reduce_only=True)


def position(size: str, settled: frozenset[str] = frozenset()) -> PositionInfo:
    return PositionInfo(strategy="trend", symbol=S, size=D(size), entry_price=D(1010) if D(size) else None,
                        realized_pnl=D(0), fees_paid={}, funding_paid=D(0), margin_used=D(0), wallet=D(5000),
                        free=D(5000), settled=settled)


def facts(problems: dict[str, str] | None = None, last: str = "1005") -> VenueInfo:
    return VenueInfo(VenueFacts("usdm", None, {S: MARKET}, {"USDT": D(10000)}, {S: D(last)}, leverage={S: D(5)},
                     market_problems=problems or {}))


def restarted(problems: dict[str, str] | None = None, last: str = "1005") -> tuple[PerpetualStrategyCore, list]:
    """A strategy restarted with a long of 0.5 and its take-profit and stop resting,
    reconciled, told the venue's facts (``problems``: its pre-flight fails)."""
    core = PerpetualStrategyCore(settings(), {"USDT": D(5000)})
    out = core.restore([record(2, "take_profit", "1060.5"), record(3, "stop_loss", "984.8", "989.8")], 0.0)
    out += core.handle(position("0.5"), 1.0)
    out += core.handle(Reconciled("usdm"), 1.0)
    out += core.handle(position("0.5"), 1.0)
    out += core.handle(facts(problems, last), 1.0)
    return core, out


def events(out, kind: str) -> list[RecordEvent]:
    return [s.message for s in out if isinstance(s.message, RecordEvent) and s.message.kind == kind]


def candle(n: int, close: str) -> CandleClosed:
    c = D(close)
    return CandleClosed("usdm", S, Candle(1704070800 + 3600 * n, c, c, c, c, D(1000)))


def sent(out, kind) -> list:
    return [s.message for s in out if isinstance(s.message, kind)]


def test_a_protective_fill_heard_before_the_protection_restarted_is_closed_by_protection(credentials):
    """Review 13c, F12: the take-profit filled while limitline was down; its trade comes
    before the strategy may act again. It was a plain fill, with no closed_by_protection."""
    core = PerpetualStrategyCore(settings(), {"USDT": D(5000)})
    core.restore([record(2, "take_profit", "1060.5"), record(3, "stop_loss", "984.8", "989.8")], 0.0)
    assert core.protection is None
    out = core.handle(FillReport("usdm", f"{CID}2", "2", "7", S, Side.SELL, D("1060.5"), D("0.5"), D("0.1"), "USDT",
                                 1.0, order_complete=True), 1.0)
    [closed] = events(out, "closed_by_protection")
    assert closed.client_order_id == f"{CID}2" and closed.rule == "protection:take_profit@p1"
    assert "take-profit" in closed.reason and "0.5 @ 1060.5" in closed.reason


def test_a_stop_the_exchange_reports_triggered_is_escalated_at_once_from_the_latest_quote(credentials):
    """Review 13c, F2: the gap was judged only at a candle's close (an hour, live)."""
    core, out = restarted()
    assert core.active and not events(out, "protection_escalating")
    # A quote beyond the stop's limit alone does not say the stop fired ...
    assert not events(core.handle(Quote("usdm", S, D(950), D("950.1"), at=2.0), 2.0), "protection_escalating")
    # ... the exchange's word that it triggered (its child rests) does, at once.
    out = core.handle(StopTriggered(f"{CID}3", 3.0, D(1005)), 3.0)
    [escalating] = events(out, "protection_escalating")
    assert "gap" in escalating.reason and escalating.payload["price"] == "950"  # the quote's bid, fresher
    assert {c.client_order_id for c in sent(out, CancelOrder)} == {f"{CID}2", f"{CID}3"}


def test_at_start_up_the_stop_is_judged_at_the_latest_price_known(credentials):
    core, out = restarted(last="950")
    [escalating] = events(out, "protection_escalating")
    assert escalating.payload["stuck"] == "sl-r2" and D(escalating.payload["price"]) == 950


def test_a_strategy_whose_pre_flight_fails_still_protects_what_it_holds_once_reconciled(credentials):
    """Review 13c, F14: pre-flight failed at a restart (a setting the exchange refused); the
    operator cancelled the stop; it was never placed again (protection ran only when active)."""
    problem = {S: "set margin mode refused by the exchange: -4048"}
    core = PerpetualStrategyCore(settings(), {"USDT": D(5000)})
    core.restore([record(2, "take_profit", "1060.5"), record(3, "stop_loss", "984.8", "989.8")], 0.0)
    out = core.handle(position("0.5"), 1.0) + core.handle(facts(problem), 1.0)
    assert events(out, "preflight_failed") and core.protection is None  # not reconciled yet: nothing may be sent
    out = core.handle(Reconciled("usdm"), 2.0) + core.handle(position("0.5"), 2.0) + core.handle(facts(problem), 2.0)
    assert not core.active and core.protection is not None
    assert not sent(out, PositionReserve)  # the orders of record are adopted, not placed again
    # The operator cancels the stop on the exchange: it is placed again, at once.
    out = core.handle(OrderCanceled(f"{CID}3", "canceled outside limitline", 3.0), 3.0)
    out += core.handle(position("0.5"), 3.0)
    [reserve] = sent(out, PositionReserve)
    assert reserve.order.reduce_only and reserve.order.side is Side.SELL and reserve.order.amount == D("0.5")
    assert [e.reason for e in events(out, "protection_placed")] == ["stop_loss sell 0.5 @ 984.8 (trigger 989.8)"]
    # And a gap is escalated: the candle's close beyond its limit.
    out = core.handle(candle(3, "950"), 4.0)
    assert events(out, "protection_escalating") and not core.active

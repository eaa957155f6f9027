"""Protection of a position with limit orders only: plain calls (placement, resize on
partial fills, one-cancels-other, gap escalation, the spot OCO list, never a market type)
and a model where entries, protective fills, triggers and prices come in any order."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.ledger.positions_core import PositionBook, PositionOrderRequest
from actors.messages import FillReport
from actors.strategy.protection_core import (
    LIMIT_TYPES,
    CancelProtective,
    PlaceOcoList,
    PlaceProtective,
    ProtectionCore,
    ProtectionEvent,
    ProtectionSettings,
    ProtectiveOrder,
    round_price_to,
)
from exchange.records import Side

BUY, SELL = Side.BUY, Side.SELL
SYMBOL = "BTC/USDT:USDT"
SETTINGS = ProtectionSettings(take_profit=D("0.02"), stop_loss=D("0.01"), stop_limit_offset=D("0.005"), gap_slippage=D("0.01"))


def core(**kw) -> ProtectionCore:
    return ProtectionCore(SETTINGS, round_price_to(D("0.1")), **kw)


def placed(actions) -> dict[str, ProtectiveOrder]:
    return {a.order.role: a.order for a in actions if isinstance(a, PlaceProtective)}


def keys(actions, kind=PlaceProtective) -> dict[str, str]:
    return {(a.order.role if kind is PlaceProtective else a.key): a.key for a in actions if isinstance(a, kind)}


def test_an_entry_fill_places_a_take_profit_limit_and_a_stop_limit_both_reduce_only():
    actions = core().on_position(D(1), D(100))
    orders = placed(actions)
    tp, sl = orders["take_profit"], orders["stop_loss"]
    assert (tp.side, tp.amount, tp.price, tp.order_type, tp.trigger_price) == (SELL, D(1), D("102.0"), "limit", None)
    assert (sl.side, sl.amount, sl.trigger_price, sl.price, sl.order_type) == (SELL, D(1), D("99.0"), D("98.5"), "stop_limit")
    assert tp.ccxt_params() == {"reduceOnly": True}
    assert sl.ccxt_params() == {"reduceOnly": True, "stopLossPrice": D("99.0")}
    assert len({a.group for a in actions if isinstance(a, PlaceProtective)}) == 1  # one OCO group
    assert [a.kind for a in actions if isinstance(a, ProtectionEvent)] == ["protection_placed"] * 2


def test_a_short_is_protected_by_buys_above_for_the_stop_and_below_for_the_take_profit():
    orders = placed(core().on_position(D(-2), D(100)))
    assert (orders["take_profit"].side, orders["take_profit"].price) == (BUY, D("98.0"))
    assert (orders["stop_loss"].trigger_price, orders["stop_loss"].price) == (D("101.0"), D("101.6"))


def test_partial_entry_fills_resize_by_placing_the_new_order_and_cancelling_the_old_once_it_is_accepted():
    protection = core()
    first = keys(protection.on_position(D("0.4"), D(100)))
    for key in first.values():
        protection.on_accepted(key)
    actions = protection.on_position(D(1), D("100.2"))
    assert [type(a).__name__ for a in actions if not isinstance(a, ProtectionEvent)] == ["PlaceProtective"] * 2
    assert placed(actions)["stop_loss"].amount == D(1)
    new = keys(actions)
    # Until the exchange accepts the new stop, the old one is not touched.
    [cancel] = protection.on_accepted(new["stop_loss"])
    assert cancel.key == first["stop_loss"] and "replaced by" in cancel.reason
    [cancel] = protection.on_accepted(new["take_profit"])
    assert cancel.key == first["take_profit"]
    assert protection.protected_amounts() == {"take_profit": D(1), "stop_loss": D(1)}


def test_a_replacement_stop_the_exchange_refuses_leaves_the_old_stop_resting():
    protection = core()
    first = keys(protection.on_position(D("0.4"), D(100)))
    for key in first.values():
        protection.on_accepted(key)
    new = keys(protection.on_position(D(1), D("100.2")))
    assert protection.on_refused(new["stop_loss"], "rejected: -4045 (code -4045)") == []
    assert first["stop_loss"] in protection.resting and not protection.resting[first["stop_loss"]].canceling
    assert protection.protected_amounts()["stop_loss"] == D("0.4")  # still protected


def test_a_stop_refused_as_would_immediately_trigger_counts_as_fired_and_escalates_at_once():
    """Review 13: a resized stop refused with -2021 must not leave the position without a
    stop: the old stop is not cancelled for it; the position is escalated at once."""
    protection = core()
    first = keys(protection.on_position(D(-1), D(100)))
    for key in first.values():
        protection.on_accepted(key)
    protection.on_price(D("100.5"))
    new = keys(protection.on_position(D(-2), D("100.8")))  # trigger 101.9 for the new stop
    actions = protection.on_refused(new["stop_loss"], "order would immediately trigger (code -2021)", would_trigger=True)
    assert protection.escalating
    # first every protective order is cancelled (the old stop, both take-profits) ...
    assert {a.key for a in actions if isinstance(a, CancelProtective)} == {first["stop_loss"], first["take_profit"], new["take_profit"]}
    assert placed(actions) == {}
    assert protection.escalation_due(closes_working=False) == []  # cancels still under way
    for key in (first["stop_loss"], first["take_profit"], new["take_profit"]):
        protection.on_ended(key, "canceled")
    assert protection.escalation_due(closes_working=True) == []  # the strategy's own close still works
    actions = protection.escalation_due(closes_working=False)
    [escalation] = [a.order for a in actions if isinstance(a, PlaceProtective)]
    # ... then one crossing buy from the trigger (the price is past it): 101.9 x 1.01, up
    assert (escalation.side, escalation.amount, escalation.price, escalation.reduce_only) == (BUY, D(2), D("103.0"), True)
    assert [a.kind for a in actions if isinstance(a, ProtectionEvent)] == ["protection_escalated"]
    assert protection.escalation_due(closes_working=False) == []  # one escalation, not two


def test_one_escalation_per_position_however_many_stops_have_gapped():
    protection = core()
    first = keys(protection.on_position(D(1), D(100)))
    for key in first.values():
        protection.on_accepted(key)
    second = keys(protection.on_position(D(2), D(100)))  # replacements not accepted yet: two stops
    actions = protection.on_price(D("97.0"))  # both stops are through their trigger and limit
    cancels = {a.key for a in actions if isinstance(a, CancelProtective)}
    assert cancels == set(first.values()) | set(second.values())
    assert protection.on_price(D("96.0")) == [] and protection.on_position(D(2), D(100)) == []
    for key in cancels:
        protection.on_ended(key, "canceled")
    places = [a for a in protection.escalation_due(False) if isinstance(a, PlaceProtective)]
    assert [(p.order.role, p.order.amount, p.order.price) for p in places] == [("escalation", D(2), D("95.0"))]
    assert protection.on_price(D("95.5")) == [] and protection.escalation_due(False) == []


def test_a_partly_filled_take_profit_stays_and_the_stop_follows_the_smaller_position():
    protection = core()
    tp = keys(protection.on_position(D(1), D(100)))["take_profit"]
    assert protection.on_fill(tp, D("0.3"), complete=False) == []
    actions = protection.on_position(D("0.7"), D(100))
    assert set(placed(actions)) == {"stop_loss"} and placed(actions)["stop_loss"].amount == D("0.7")
    assert protection.protected_amounts() == {"take_profit": D("0.7"), "stop_loss": D("0.7")}


@pytest.mark.parametrize("filled", ["take_profit", "stop_loss"])
def test_one_cancels_the_other(filled):
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    other = "stop_loss" if filled == "take_profit" else "take_profit"
    [cancel] = protection.on_fill(orders[filled], D(1), complete=True)
    assert cancel.key == orders[other] and "one cancels the other" in cancel.reason
    assert protection.on_position(D(0), None) == []  # nothing left to cancel twice
    assert protection.protected_amounts() == {}


def test_a_gapped_stop_is_escalated_with_a_crossing_reduce_only_limit_at_the_configured_slippage():
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    protection.on_triggered(orders["stop_loss"])
    assert protection.on_price(D("98.7")) == []  # triggered, but the limit 98.5 can still fill
    actions = protection.on_price(D("98.0"))
    assert {a.key for a in actions if isinstance(a, CancelProtective)} == set(orders.values())
    assert placed(actions) == {}  # the stuck stop and the take-profit are cancelled first
    for key in orders.values():
        protection.on_ended(key, "canceled")
    actions = protection.escalation_due(closes_working=False)
    [escalation] = [a.order for a in actions if isinstance(a, PlaceProtective)]
    assert (escalation.role, escalation.side, escalation.amount, escalation.price) == ("escalation", SELL, D(1), D("97.0"))
    assert escalation.order_type == "limit" and escalation.reduce_only
    [event] = [a for a in actions if isinstance(a, ProtectionEvent)]
    assert event.kind == "protection_escalated" and "gap" in event.reason and "97.0" in event.reason
    # Protection is not placed again over the escalation while it closes the position.
    assert protection.on_position(D("0.5"), D(100)) == []
    # The price runs through the escalation too: it is cancelled, then again from the new price.
    [cancel, _event] = protection.on_price(D("96.0"))
    assert cancel.key == keys(actions)["escalation"]
    assert protection.escalation_due(False) == []
    protection.on_ended(cancel.key, "canceled")
    again = placed(protection.escalation_due(False))
    assert again["escalation"].price == D("95.0") and again["escalation"].amount == D("0.5")


def test_a_price_through_the_trigger_counts_as_triggered_even_before_the_exchange_says_so():
    protection = core()
    orders = keys(protection.on_position(D(-1), D(100)))
    protection.on_price(D("102.0"))
    for key in orders.values():
        protection.on_ended(key, "canceled")
    assert placed(protection.escalation_due(False))["escalation"].side is BUY


def test_a_protective_order_ended_outside_is_placed_again_while_the_position_is_open():
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    actions = protection.on_ended(orders["stop_loss"], "canceled by an operator")
    assert set(placed(actions)) == {"stop_loss"}
    assert protection.on_ended("sl-unknown", "x") == []


def test_spot_protection_is_one_oco_order_list():
    protection = core(spot_oco=True)
    [place, event] = protection.on_position(D(1), D(100))
    assert isinstance(place, PlaceOcoList)
    assert (place.take_profit.order_type, place.take_profit.price) == ("limit_maker", D("102.0"))
    assert (place.stop_loss.order_type, place.stop_loss.trigger_price, place.stop_loss.price) == ("stop_loss_limit", D("99.0"), D("98.5"))
    protection.on_accepted(place.key)
    actions = protection.on_position(D("1.5"), D(101))
    # The list it replaces locks every coin: cancelled at once (the strategy places the new
    # list once the ledger has the coins back), not once the new one is accepted.
    assert [type(a).__name__ for a in actions] == ["PlaceOcoList", "ProtectionEvent", "CancelProtective"]
    assert actions[2].key == place.key
    assert protection.on_accepted(actions[0].key) == []


@pytest.mark.parametrize("kind", ["market", "stop_market", "take_profit_market", "trailing_stop_market"])
def test_a_market_type_cannot_be_made(kind):
    with pytest.raises(ValueError, match="limit orders only"):
        ProtectiveOrder("stop_loss", SELL, D(1), D(99), kind)


def test_settings_out_of_bounds_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="protection.take_profit must be a fraction"):
        ProtectionCore(ProtectionSettings(take_profit=D(2)))
    with pytest.raises(ValueError, match="protection.gap_slippage"):
        ProtectionCore(ProtectionSettings(stop_loss=D("0.01"), gap_slippage=D(0)))


def test_a_position_below_the_minimum_is_reported_unprotected():
    [event] = core(min_amount=D("0.01")).on_position(D("0.001"), D(100))
    assert event.kind == "unprotected" and "below the market's minimum" in event.reason


# ------------------------------------------------------------- the model


class ProtectionMachine(RuleBasedStateMachine):
    """An exchange holding one position and the protective orders placed for it, and the
    ledger's position book, which reserves every protective order as a close of its OCO
    group: the protection's make-before-break resizes must always fit."""

    def __init__(self) -> None:
        super().__init__()
        self.core = core()
        self.ledger = PositionBook()
        self.ledger.allocate("s", D(10) ** 6, 0.0, "test")
        self.size = D(0)
        self.book: dict[str, ProtectiveOrder] = {}  # key -> order resting on the exchange
        self.filled: dict[str, D] = {}
        self.triggered: set[str] = set()
        self.price = D(100)
        self.trades = 0

    def _do(self, actions) -> None:
        for action in actions:
            if isinstance(action, PlaceProtective):
                order = action.order
                assert order.order_type in LIMIT_TYPES and order.reduce_only
                assert "market" not in order.order_type
                granted = self.ledger.reserve(PositionOrderRequest(
                    action.key, "s", SYMBOL, order.side, order.price, order.amount, D(10), D(0), True, action.group), 1.0)
                assert not isinstance(granted, str), granted
                self.book[action.key] = order
                self.filled[action.key] = D(0)
                self._do(self.core.on_accepted(action.key))
            elif isinstance(action, CancelProtective):
                if self.book.pop(action.key, None) is not None:
                    self.ledger.release(action.key, "canceled", 1.0)
                    self._do(self.core.on_ended(action.key, "canceled"))
        if actions:
            self._do(self.core.escalation_due(closes_working=False))

    def _trade(self, cid: str, side: Side, amount: D, price: D, complete: bool) -> None:
        self.trades += 1
        result = self.ledger.settle(FillReport("usdm", cid, cid, f"t{self.trades}", SYMBOL, side, price, amount, D(0),
                                               "USDT", 1.0, complete), 1.0)
        assert not isinstance(result, str), result

    def _position(self) -> None:
        position = self.ledger.position("s", SYMBOL)
        assert position.size == self.size
        self._do(self.core.on_position(position.size, position.entry_price))

    @rule(amount=st.decimals("0.001", "2", places=3), price=st.decimals("90", "110", places=1))
    def entry_fill(self, amount, price):
        if self.size < 0 or any(o.role == "escalation" for o in self.book.values()):
            return
        self.trades += 1
        cid = f"e{self.trades}"
        assert not isinstance(self.ledger.reserve(PositionOrderRequest(cid, "s", SYMBOL, BUY, price, amount, D(10), D(0)), 1.0), str)
        self._trade(cid, BUY, amount, price, True)
        self.size += amount
        self._position()

    @rule(which=st.integers(0, 5), share=st.sampled_from([D("0.3"), D("0.5"), D(1)]))
    def protective_fill(self, which, share):
        live = [k for k, o in sorted(self.book.items()) if o.role != "stop_loss" or k in self.triggered]
        if not live or not self.size:
            return
        key = live[which % len(live)]
        order = self.book[key]
        amount = min(((order.amount - self.filled[key]) * share).quantize(D("0.001")) or order.amount, abs(self.size))
        self.size -= amount
        self.filled[key] += amount
        complete = self.filled[key] >= order.amount
        self._trade(key, order.side, amount, order.price, complete)
        if complete:
            del self.book[key]
        self._do(self.core.on_fill(key, amount, complete))
        self._position()
        if not self.size:
            assert not self.core.protected_amounts()  # nothing left over a closed position

    @rule(price=st.decimals("95", "105", places=1))
    def price_moves(self, price):
        self.price = price
        for key, order in self.book.items():
            if order.trigger_price is not None and self.size > 0 and price <= order.trigger_price and key not in self.triggered:
                self.triggered.add(key)
                self.core.on_triggered(key)
        actions = self.core.on_price(price)
        for action in actions:
            if isinstance(action, PlaceProtective) and action.order.role == "escalation":
                assert action.order.price >= price * (1 - SETTINGS.gap_slippage) - D("0.1")  # bounded slippage
                assert action.order.price <= price  # it crosses: sells at or below the price
        self._do(actions)

    @invariant()
    def at_most_one_escalation_and_nothing_else_while_it_works(self):
        escalations = [k for k, o in self.book.items() if o.role == "escalation"]
        assert len(escalations) <= 1
        if escalations:
            assert set(self.book) == set(escalations)

    @invariant()
    def protection_size_is_the_position_size(self):
        amounts = self.core.protected_amounts()
        if not self.size:
            assert amounts == {}
            return
        if "escalation" in amounts:
            assert amounts["escalation"] >= abs(self.size)  # closes all of it
            return
        frozen = {o.role for k, o in self.book.items() if k in self.triggered}
        for role in ("take_profit", "stop_loss"):
            if role not in frozen:
                assert amounts.get(role) == abs(self.size), (role, amounts, self.size)

    @invariant()
    def what_rests_on_the_exchange_is_what_the_core_holds_and_the_ledger_reserves(self):
        assert set(self.book) <= set(self.core.resting)
        assert {o.client_order_id for o in self.ledger.open_orders("s")} == set(self.book)
        self.ledger.check_invariants()


ProtectionMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
test_protection_model = ProtectionMachine.TestCase


def test_between_candles_a_stop_counts_as_fired_only_once_the_exchange_says_it_triggered():
    """Review 13c, F2: a quote or a trigger report judges the gap at once; the price alone
    does not say the stop fired then (its child may have filled at its limit moments ago)."""
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))  # stop trigger 99.0, limit 98.5
    assert protection.on_price(D("98.0"), confirmed=True) == []
    assert not protection.escalating
    protection.on_triggered(orders["stop_loss"])
    actions = protection.on_price(D("98.0"), confirmed=True)
    assert {a.key for a in actions if isinstance(a, CancelProtective)} == set(orders.values())
    [event] = [a for a in actions if isinstance(a, ProtectionEvent)]
    assert event.kind == "protection_escalating" and protection.escalating


@pytest.mark.parametrize("filled", ["stop_loss", "take_profit"])
def test_an_escalation_decided_before_the_fills_that_closed_the_position_is_dropped_saying_so(filled):
    """Review 13c, F6: the stop filled at its limit within the candle; the candle's close
    (beyond the limit) came before the trade poll booked the fill. The escalation decided on
    it is never placed (it would sell a position already gone) and an event says why."""
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    protection.on_price(D("98.0"))  # the candle's close: a gap, by the price alone
    assert protection.escalating
    actions = protection.on_fill(orders[filled], D(1), complete=True)  # the fill, booked late
    [event] = [a for a in actions if isinstance(a, ProtectionEvent)]
    assert event.kind == "protection_escalation_dropped" and f"{filled} {orders[filled]} filled in full" in event.reason
    assert not protection.escalating
    other = next(k for role, k in orders.items() if role != filled)
    protection.on_ended(other, "canceled")
    assert protection.escalation_due(closes_working=False) == []  # nothing placed, ever
    assert protection.on_position(D(0), None) == []


def test_an_escalation_decided_when_the_position_then_closes_otherwise_is_dropped_saying_so():
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    protection.on_price(D("98.0"))
    for key in orders.values():
        protection.on_ended(key, "canceled")
    actions = protection.on_position(D(0), None)  # an operator closed it meanwhile
    [event] = [a for a in actions if isinstance(a, ProtectionEvent)]
    assert event.kind == "protection_escalation_dropped" and "the position is closed" in event.reason
    assert protection.escalation_due(closes_working=False) == []



def test_a_re_escalation_decided_before_the_stuck_escalations_own_fill_is_dropped():
    """The escalation's crossing limit filled in full, booked after a price beyond it had
    decided to replace it: the replacement is never placed (the position is gone)."""
    protection = core()
    orders = keys(protection.on_position(D(1), D(100)))
    protection.on_price(D("98.0"))
    for key in orders.values():
        protection.on_ended(key, "canceled")
    gap = keys(protection.escalation_due(closes_working=False))["escalation"]
    protection.on_price(D("96.0"))  # through the escalation's limit 97.0: cancelled, to be replaced
    actions = protection.on_fill(gap, D(1), complete=True)
    assert [a.kind for a in actions if isinstance(a, ProtectionEvent)] == ["protection_escalation_dropped"]
    assert protection.escalation_due(closes_working=False) == []

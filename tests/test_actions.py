"""Decisions (long / short / flat, open / close / flip) as limit orders, one leg at a time:
plain calls, and a model where orders fill in part, end early, are cancelled and the
position is reduced from outside, checking that at no step the worst case (every working
order filling) holds more than was asked for or already held."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.strategy.actions_core import ActionPlanner, Decision, Posture
from exchange.records import Side

BUY, SELL = Side.BUY, Side.SELL
BID, ASK = D("99.9"), D("100.1")


def test_a_flip_closes_reduce_only_first_and_opens_only_once_the_close_is_done():
    planner = ActionPlanner("BTC/USDT:USDT")
    step = planner.decide(Decision(Posture.SHORT, D(1), "cross down"), D("0.6"), BID, ASK)
    [close] = step.place
    assert (step.action, close.leg, close.side, close.amount, close.reduce_only, close.price) == (
        "flip", "close", SELL, D("0.6"), True, ASK)
    planner.sent("c1", close)
    planner.filled("c1", D("0.6"))
    [open_] = planner.ended("c1", D(0), BID, ASK).place
    assert (open_.leg, open_.side, open_.amount, open_.reduce_only, open_.action, open_.rule) == (
        "open", SELL, D(1), False, "flip", "cross down")
    planner.sent("o1", open_)
    step = planner.ended("o1", D(-1), BID, ASK)
    assert step.place == () and "holds short 1" in step.note


def test_a_partly_filled_close_is_followed_by_a_close_of_the_rest_and_the_open_leg_follows_the_ledger():
    planner = ActionPlanner("BTC/USDT:USDT")
    [close] = planner.decide(Decision.from_action("flip", D(2)), D(2), BID, ASK).place
    planner.sent("c1", close)
    planner.filled("c1", D("1.5"))
    [rest] = planner.ended("c1", D("0.5"), BID, ASK).place  # expired with 0.5 left open
    assert (rest.leg, rest.amount, rest.reduce_only) == ("close", D("0.5"), True)
    planner.sent("c2", rest)
    # Meanwhile the protective stop closed what was left: the next leg is the open, in full.
    [open_] = planner.ended("c2", D(0), BID, ASK).place
    assert (open_.side, open_.amount) == (SELL, D(2))


def test_an_adopted_order_of_an_earlier_decision_is_cancelled_by_the_next_one_before_its_legs():
    """Review 13c, F3: after a restart the open leg still working was not the planner's,
    so a flip's close went out beside it."""
    planner = ActionPlanner("BTC/USDT:USDT")
    planner.adopt("o1", BUY, D("0.5"), reduce_only=False, filled=D("0.12"))
    step = planner.decide(Decision(Posture.SHORT, D("0.2")), D("0.12"), BID, ASK)
    assert [c.client_order_id for c in step.cancel] == ["o1"] and step.place == ()
    assert "superseded by a decision for short 0.2" in step.cancel[0].reason
    planner.filled("o1", D("0.03"))  # filled once more before the cancel
    [close] = planner.ended("o1", D("0.15"), BID, ASK).place  # sized from what is then held
    assert (close.leg, close.side, close.amount, close.reduce_only) == ("close", SELL, D("0.15"), True)


def test_a_new_decision_cancels_the_working_orders_and_goes_on_once_they_ended():
    planner = ActionPlanner("BTC/USDT:USDT")
    [open_] = planner.decide(Decision(Posture.LONG, D(1)), D(0), BID, ASK).place
    planner.sent("o1", open_)
    step = planner.decide(Decision(Posture.FLAT), D(0), BID, ASK)
    assert [c.client_order_id for c in step.cancel] == ["o1"] and step.place == ()
    planner.filled("o1", D("0.3"))
    [close] = planner.ended("o1", D("0.3"), BID, ASK).place
    assert (close.leg, close.side, close.amount, close.reduce_only, close.action) == ("close", SELL, D("0.3"), True, "close")


def test_the_same_decision_again_holds_unless_the_position_moved():
    planner = ActionPlanner("BTC/USDT:USDT")
    [open_] = planner.decide(Decision(Posture.LONG, D(1)), D(0), BID, ASK).place
    planner.sent("o1", open_)
    assert planner.decide(Decision(Posture.LONG, D(1)), D(0), BID, ASK).action == "hold"
    planner.ended("o1", D(1), BID, ASK)
    assert planner.decide(Decision(Posture.LONG, D(1)), D(1), BID, ASK).place == ()
    # Protection closed it since: the same decision opens again.
    [again] = planner.decide(Decision(Posture.LONG, D(1)), D(0), BID, ASK).place
    assert (again.side, again.amount, again.action) == (BUY, D(1), "open")


def test_an_amount_below_the_market_minimum_is_not_placed_and_says_why():
    planner = ActionPlanner("BTC/USDT:USDT", round_amount=lambda a: a.quantize(D("0.001"), "ROUND_DOWN"), min_amount=D("0.001"))
    step = planner.decide(Decision(Posture.LONG, D("1.0004")), D(1), BID, ASK)
    assert step.place == () and "below the market's minimum" in step.note


@pytest.mark.parametrize(("action", "held", "side", "size", "target"), [
    ("open", D(0), BUY, D(2), D(2)), ("open", D(0), SELL, D(2), D(-2)), ("close", D(3), None, None, D(0)),
    ("flip", D(3), None, None, D(-3)), ("flip", D(-3), None, D(1), D(1)),
])
def test_actions_are_decisions(action, held, side, size, target):
    assert Decision.from_action(action, held, side, size).target == target


def test_bad_decisions_name_the_field():
    with pytest.raises(ValueError, match="size"):
        Decision(Posture.LONG, D(0))
    with pytest.raises(ValueError, match="no position to flip"):
        Decision.from_action("flip", D(0))
    with pytest.raises(ValueError, match="action must be one of"):
        Decision.from_action("buy", D(0))


# ------------------------------------------------------------- the model

SIZES = st.decimals("0.001", "3", places=3)


class ExposureMachine(RuleBasedStateMachine):
    """An exchange of one position and the planner's working orders."""

    def __init__(self) -> None:
        super().__init__()
        self.planner = ActionPlanner("BTC/USDT:USDT")
        self.position = D(0)
        self.orders: dict[str, dict] = {}  # cid -> side, amount, filled, reduce_only
        self.sequence = 0
        self.bounds = (D(0), D(0))
        self.target: D | None = None

    def _worst(self) -> tuple[D, D]:
        long_ = max(self.position, D(0)) + sum((o["amount"] - o["filled"] for o in self.orders.values()
                                                if o["side"] is BUY and not o["reduce_only"]), D(0))
        short = max(-self.position, D(0)) + sum((o["amount"] - o["filled"] for o in self.orders.values()
                                                 if o["side"] is SELL and not o["reduce_only"]), D(0))
        return long_, short

    def _apply(self, step) -> None:
        for intent in step.place:
            self.sequence += 1
            cid = f"x{self.sequence}"
            self.planner.sent(cid, intent)
            self.orders[cid] = {"side": intent.side, "amount": intent.amount, "filled": D(0), "reduce_only": intent.reduce_only}

    def _trade(self, cid: str, amount: D) -> None:
        order = self.orders[cid]
        if order["reduce_only"]:
            opposes = self.position and (self.position > 0) == (order["side"] is SELL)
            amount = min(amount, abs(self.position)) if opposes else D(0)  # the exchange trims it
        if amount <= 0:
            return
        order["filled"] += amount
        self.position += amount if order["side"] is BUY else -amount
        self.planner.filled(cid, amount)

    def _end(self, cid: str) -> None:
        del self.orders[cid]
        self._apply(self.planner.ended(cid, self.position, BID, ASK))

    @rule(posture=st.sampled_from(list(Posture)), size=SIZES)
    def decide(self, posture, size):
        decision = Decision(posture, D(0) if posture is Posture.FLAT else size)
        long_, short = self._worst()
        self.bounds = (max(decision.target, D(0), long_), max(-decision.target, D(0), short))
        self.target = decision.target
        step = self.planner.decide(decision, self.position, BID, ASK)
        assert {c.client_order_id for c in step.cancel} <= set(self.orders)
        self._apply(step)
        for cancel in step.cancel:  # the exchange confirms each cancel at once
            if cancel.client_order_id in self.orders:
                self._end(cancel.client_order_id)

    @rule(which=st.integers(0, 5), share=st.sampled_from([D("0.25"), D("0.5"), D(1)]), ends=st.booleans())
    def fill(self, which, share, ends):
        if not self.orders:
            return
        cid = sorted(self.orders)[which % len(self.orders)]
        order = self.orders[cid]
        self._trade(cid, ((order["amount"] - order["filled"]) * share).quantize(D("0.001")))
        if ends or order["filled"] >= order["amount"]:
            self._end(cid)  # filled, or expired with the rest unfilled

    @rule(share=st.sampled_from([D("0.5"), D(1)]))
    def protection_reduces(self, share):
        self.position -= (self.position * share).quantize(D("0.001"))

    @invariant()
    def never_more_exposure_than_asked_or_held(self):
        long_, short = self._worst()
        assert long_ <= self.bounds[0] and short <= self.bounds[1], (long_, short, self.bounds)

    @invariant()
    def at_rest_the_position_is_the_target(self):
        if self.target is not None and not self.orders:
            step = self.planner._next(self.position, BID, ASK)
            if not step.place and "below" not in step.note:
                assert self.position == self.target


ExposureMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_exposure_model = ExposureMachine.TestCase

"""The position cores together, as the strategy and ledger actors are to use them: the
decision planner's legs and the protection's orders are reserved in the position book,
an exchange model fills them (reduce-only orders never more than is held), and after every
step the book agrees with the exchange, no reservation the cores ask for is denied, the
protection covers the whole position, and the worst case never holds more than asked."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.ledger.positions_core import PositionBook, PositionOrderRequest
from actors.messages import FillReport
from actors.strategy.actions_core import ActionPlanner, Decision, Posture
from actors.strategy.protection_core import (
    CancelProtective,
    PlaceProtective,
    ProtectionCore,
    ProtectionSettings,
    round_price_to,
)
from exchange.records import Side

SYMBOL = "BTC/USDT:USDT"
BUY, SELL = Side.BUY, Side.SELL
LEVERAGE = D(5)


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = PositionBook()
        self.book.allocate("s", D(10) ** 6, 0.0, "start")
        self.planner = ActionPlanner(SYMBOL, round_amount=lambda a: a.quantize(D("0.001"), "ROUND_DOWN"))
        self.protection = ProtectionCore(ProtectionSettings(take_profit=D("0.03"), stop_loss=D("0.02")), round_price_to(D("0.1")))
        self.price = D(100)
        self.exchange: dict[str, dict] = {}  # cid -> side, amount, filled, reduce_only, owner (plan | protection)
        self.position = D(0)
        self.sequence = 0
        self.bounds = (D(0), D(0))

    # ---------------------------------------------------------- wiring

    def _reserve(self, cid, side, amount, price, reduce_only, group) -> None:
        result = self.book.reserve(PositionOrderRequest(cid, "s", SYMBOL, side, price, amount, LEVERAGE, D("0.0005"),
                                                        reduce_only, group), 1.0)
        assert not isinstance(result, str), result

    def _plan(self, step) -> None:
        for intent in step.place:
            self.sequence += 1
            cid = f"plan{self.sequence}"
            group = self.protection.group if intent.reduce_only else None
            self._reserve(cid, intent.side, intent.amount, intent.price, intent.reduce_only, group)
            self.planner.sent(cid, intent)
            self.exchange[cid] = {"side": intent.side, "amount": intent.amount, "filled": D(0),
                                  "reduce_only": intent.reduce_only, "owner": "plan", "price": intent.price}
        for cancel in step.cancel:
            self._gone(cancel.client_order_id)

    def _protect(self, actions) -> None:
        for action in actions:
            if isinstance(action, PlaceProtective):
                order = action.order
                self._reserve(action.key, order.side, order.amount, order.price, True, action.group)
                self.exchange[action.key] = {"side": order.side, "amount": order.amount, "filled": D(0),
                                             "reduce_only": True, "owner": "protection", "price": order.price}
                # Accepted: the order it replaces is cancelled only now.
                self._protect(self.protection.on_accepted(action.key))
            elif isinstance(action, CancelProtective):
                self._gone(action.key)

    def _gone(self, cid: str) -> None:
        """The exchange confirms the order ended (cancelled or expired, or filled)."""
        order = self.exchange.pop(cid, None)
        if order is None:
            return
        self.book.release(cid, "ended", 1.0)
        if order["owner"] == "plan":
            self._plan(self.planner.ended(cid, self.book.position("s", SYMBOL).size, self.price, self.price))
        else:
            self._protect(self.protection.on_ended(cid, "canceled"))

    def _position_changed(self) -> None:
        position = self.book.position("s", SYMBOL)
        self._protect(self.protection.on_position(position.size, position.entry_price))

    def _worst(self) -> tuple[D, D]:
        long_ = max(self.position, D(0)) + sum((o["amount"] - o["filled"] for o in self.exchange.values()
                                                if o["side"] is BUY and not o["reduce_only"]), D(0))
        short = max(-self.position, D(0)) + sum((o["amount"] - o["filled"] for o in self.exchange.values()
                                                 if o["side"] is SELL and not o["reduce_only"]), D(0))
        return long_, short

    # ----------------------------------------------------------- rules

    @rule(posture=st.sampled_from(list(Posture)), size=st.decimals("0.01", "2", places=2))
    def decide(self, posture, size):
        decision = Decision(posture, D(0) if posture is Posture.FLAT else size)
        long_, short = self._worst()
        self.bounds = (max(decision.target, D(0), long_), max(-decision.target, D(0), short))
        self._plan(self.planner.decide(decision, self.book.position("s", SYMBOL).size, self.price, self.price))

    @rule(which=st.integers(0, 7), share=st.sampled_from([D("0.4"), D(1)]), price=st.decimals("95", "105", places=1))
    def trade(self, which, share, price):
        if not self.exchange:
            return
        cid = sorted(self.exchange)[which % len(self.exchange)]
        order = self.exchange[cid]
        amount = ((order["amount"] - order["filled"]) * share).quantize(D("0.001"))
        if order["reduce_only"]:
            opposes = self.position and (self.position > 0) == (order["side"] is SELL)
            amount = min(amount, abs(self.position)) if opposes else D(0)
        if amount <= 0:
            return
        self.sequence += 1
        order["filled"] += amount
        complete = order["filled"] >= order["amount"]
        result = self.book.settle(FillReport("usdm", cid, cid, f"t{self.sequence}", SYMBOL, order["side"], price, amount,
                                             D(0), "USDT", 1.0, complete), 1.0)
        assert not isinstance(result, str), result
        self.position += amount if order["side"] is BUY else -amount
        if order["owner"] == "plan":
            self.planner.filled(cid, amount)
            self._position_changed()
            if complete:
                self._gone(cid)
        else:
            self._protect(self.protection.on_fill(cid, amount, complete))
            if complete:
                self.exchange.pop(cid, None)
            self._position_changed()
            if not self.position:
                # Reduce-only orders of a closed position end on the exchange.
                for other in [c for c, o in self.exchange.items() if o["reduce_only"] and o["owner"] == "plan"]:
                    self._gone(other)

    @rule(which=st.integers(0, 7))
    def plan_order_expires(self, which):
        plan = sorted(c for c, o in self.exchange.items() if o["owner"] == "plan")
        if plan:
            self._gone(plan[which % len(plan)])

    # ------------------------------------------------------ invariants

    @invariant()
    def the_book_is_the_exchange(self):
        assert self.book.position("s", SYMBOL).size == self.position
        assert {o.client_order_id for o in self.book.open_orders("s")} == set(self.exchange)
        self.book.check_invariants()

    @invariant()
    def protection_covers_the_whole_position(self):
        amounts = self.protection.protected_amounts()
        expected = {} if not self.position else {"take_profit": abs(self.position), "stop_loss": abs(self.position)}
        assert amounts == expected

    @invariant()
    def never_more_exposure_than_asked_or_held(self):
        long_, short = self._worst()
        assert long_ <= self.bounds[0] and short <= self.bounds[1]


PipelineMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_position_pipeline = PipelineMachine.TestCase

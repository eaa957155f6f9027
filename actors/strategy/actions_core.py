"""Decisions on a perpetual market (long, short, flat; or open, close, flip) as limit orders.

A strategy says what position it wants: :class:`Decision` (``long 0.5``, ``short 0.5``,
``flat``), or an action (``open`` with a side, ``close``, ``flip``) that
:meth:`Decision.from_action` turns into one. The :class:`ActionPlanner` of one (strategy,
symbol) turns the wanted position and the position the ledger holds into order intents,
one leg at a time:

- a **close** (or a reduce) is a reduce-only limit order: it can only shrink the position,
  whatever else fills meanwhile;
- a **flip** is a reduce-only close first and then the opposite open, sent only once the
  close is done (no order of the plan is working) and sized from the position the ledger
  then holds: a close that ended partly filled is followed by a close of the rest, a
  position that protection or an operator reduced meanwhile needs less, and the open leg is
  the wanted size less what is already held on its side;
- an **open** (or an add) is a limit order for the wanted size less what is held.

So the worst case (every working order filling) never holds more on either side than the
larger of what was asked for and what was held (or working) when the decision was made: at
no instant is there more exposure than asked for. A new decision while orders of the last
one are working cancels them first and goes on once they have ended; so does a decision
after a restart, for the orders of record still working (:meth:`ActionPlanner.adopt`).

A close leg sent while the position's protection rests is reserved in the protection's
OCO group (``ProtectionCore.group``): the position book then holds one close reservation
for them all, and the exchange's reduce-only rule lets them close no more than is held.

The planner is told the ledger's position on every call; it must be the position after
the fills of the order just ended have been booked (the strategy core waits for the
ledger's answer, as it does for spot).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Callable

import attrs

from exchange.records import Side

ZERO = Decimal(0)


class Posture(enum.Enum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


ACTIONS = ("open", "close", "flip")


@attrs.frozen
class Decision:
    """The position a strategy wants: ``posture`` and, unless flat, its ``size`` (base
    units, > 0). ``rule``: what decided it, for the event log."""

    posture: Posture
    size: Decimal = ZERO
    rule: str = ""

    def __attrs_post_init__(self) -> None:
        if self.posture is Posture.FLAT and self.size:
            raise ValueError(f"size: a flat decision has no size, got {self.size}")
        if self.posture is not Posture.FLAT and self.size <= 0:
            raise ValueError(f"size: a {self.posture.value} decision needs a size greater than 0, got {self.size}")

    @property
    def target(self) -> Decimal:
        """The wanted position, signed (long positive)."""
        return self.size if self.posture is Posture.LONG else -self.size if self.posture is Posture.SHORT else ZERO

    @classmethod
    def from_action(
        cls, action: str, held: Decimal, side: Side | None = None, size: Decimal | None = None, rule: str = ""
    ) -> "Decision":
        """``open`` (with ``side`` and ``size``): that position; ``close``: flat; ``flip``:
        the opposite of what is ``held``, of ``size`` (default: the same size)."""
        if action == "open":
            if side is None or size is None:
                raise ValueError("open needs a side (buy: long, sell: short) and a size")
            return cls(Posture.LONG if side is Side.BUY else Posture.SHORT, size, rule)
        if action == "close":
            return cls(Posture.FLAT, ZERO, rule)
        if action == "flip":
            if not held:
                raise ValueError("flip: there is no position to flip (open one instead)")
            return cls(Posture.SHORT if held > 0 else Posture.LONG, size if size is not None else abs(held), rule)
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")


@attrs.frozen
class OrderIntent:
    """One limit order to place. ``leg``: ``close`` (reduce-only) or ``open``; ``action``:
    what the decision is (``open``, ``add``, ``close``, ``reduce``, ``flip``), for the event."""

    leg: str
    side: Side
    amount: Decimal
    price: Decimal
    reduce_only: bool
    action: str
    rule: str


@attrs.frozen
class CancelIntent:
    client_order_id: str
    reason: str


@attrs.frozen
class Step:
    """What the planner asks for now: orders to place, orders to cancel, and what it
    means (``action``; ``note``: why nothing is placed, when nothing is)."""

    place: tuple[OrderIntent, ...] = ()
    cancel: tuple[CancelIntent, ...] = ()
    action: str = "hold"
    note: str = ""


@attrs.define
class WorkingOrder:
    client_order_id: str
    leg: str
    side: Side
    amount: Decimal
    reduce_only: bool
    filled: Decimal = ZERO
    canceling: bool = False


class ActionPlanner:
    """The legs of one (strategy, symbol)'s decisions. ``round_amount``: the market's lot
    rounding (down); ``min_amount``: below it an order is not placed (the step says so)."""

    def __init__(
        self, symbol: str, round_amount: Callable[[Decimal], Decimal] = lambda a: a, min_amount: Decimal = ZERO
    ) -> None:
        self.symbol = symbol
        self.round_amount = round_amount
        self.min_amount = min_amount
        self.decision: Decision | None = None
        #: What the current decision is, as it was first judged (``flip``, ``open``...).
        self.action = "hold"
        self.working: dict[str, WorkingOrder] = {}

    # ---------------------------------------------------------- inputs

    def decide(self, decision: Decision, position: Decimal, buy_price: Decimal, sell_price: Decimal) -> Step:
        """A new decision, given the ledger's ``position`` and the limit prices a buy and
        a sell would be placed at."""
        if self.decision is not None and decision.target == self.decision.target and (self.working or position == decision.target):
            return Step(action="hold", note=f"already working on or holding {_describe(decision)}")
        self.decision = decision
        self.action = _action(position, decision.target)
        cancels = tuple(
            CancelIntent(o.client_order_id, f"superseded by a decision for {_describe(decision)}")
            for o in self.working.values() if not o.canceling
        )
        for order in self.working.values():
            order.canceling = True
        if self.working:
            return Step(cancel=cancels, action=self.action, note="waiting for the last decision's orders to end")
        return self._next(position, buy_price, sell_price)

    def sent(self, client_order_id: str, intent: OrderIntent) -> None:
        """The caller placed ``intent`` under ``client_order_id``."""
        self.working[client_order_id] = WorkingOrder(
            client_order_id, intent.leg, intent.side, intent.amount, intent.reduce_only
        )

    def adopt(
        self, client_order_id: str, side: Side, amount: Decimal, reduce_only: bool, filled: Decimal = ZERO,
        canceling: bool = False,
    ) -> None:
        """An order of an earlier decision, still working (restored after a restart of the
        strategy): working as if :meth:`sent` had placed it, so the next decision cancels it
        first and sizes its legs from the position once it has ended. ``amount``: as
        placed; ``filled``: what it has filled so far; ``canceling``: a cancel is already
        asked of it."""
        self.working[client_order_id] = WorkingOrder(
            client_order_id, "close" if reduce_only else "open", side, amount, reduce_only, filled, canceling
        )

    def filled(self, client_order_id: str, amount: Decimal) -> None:
        """A trade of a working order (the position itself comes from the ledger)."""
        order = self.working.get(client_order_id)
        if order is not None:
            order.filled += amount

    def ended(self, client_order_id: str, position: Decimal, buy_price: Decimal, sell_price: Decimal) -> Step:
        """A working order can fill no further (filled, cancelled, expired, rejected);
        ``position``: the ledger's, with its fills booked. The next leg, if any."""
        self.working.pop(client_order_id, None)
        return self._next(position, buy_price, sell_price)

    def replan(self, position: Decimal, buy_price: Decimal, sell_price: Decimal) -> Step:
        """The current decision's next leg from ``position`` (the caller withheld a leg it
        was given, e.g. a close while its view of the position was stale)."""
        return self._next(position, buy_price, sell_price)

    # --------------------------------------------------------- deciding

    def _next(self, position: Decimal, buy_price: Decimal, sell_price: Decimal) -> Step:
        decision = self.decision
        if decision is None or self.working:
            return Step(action=self.action)
        target = decision.target
        close = ZERO
        if position and (target * position <= 0):
            close = abs(position)  # flat, or the other side: all of it first
        elif abs(position) > abs(target):
            close = abs(position) - abs(target)
        if close:
            side = Side.SELL if position > 0 else Side.BUY
            return self._order("close", side, close, buy_price, sell_price, decision)
        missing = abs(target) - abs(position)
        if missing > 0:
            side = Side.BUY if target > 0 else Side.SELL
            return self._order("open", side, missing, buy_price, sell_price, decision)
        return Step(action=self.action, note=f"holds {_describe(decision)}")

    def _order(self, leg: str, side: Side, amount: Decimal, buy: Decimal, sell: Decimal, decision: Decision) -> Step:
        rounded = self.round_amount(amount)
        if rounded <= 0 or rounded < self.min_amount:
            return Step(action=self.action, note=(
                f"{leg} of {amount} {self.symbol} rounds to {rounded}, below the market's minimum {self.min_amount}"
            ))
        intent = OrderIntent(
            leg=leg, side=side, amount=rounded, price=buy if side is Side.BUY else sell,
            reduce_only=leg == "close", action=self.action, rule=decision.rule,
        )
        return Step(place=(intent,), action=self.action)


def _action(position: Decimal, target: Decimal) -> str:
    """What going from ``position`` to ``target`` is called."""
    if not target:
        return "close"
    if position and position * target < 0:
        return "flip"
    if abs(target) > abs(position):
        return "open" if not position else "add"
    return "reduce" if abs(target) < abs(position) else "hold"


def _describe(decision: Decision) -> str:
    return "flat" if decision.posture is Posture.FLAT else f"{decision.posture.value} {decision.size}"

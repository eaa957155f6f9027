"""A position's protection on the exchange: take-profit and stop-loss, limit orders only.

After an entry fills, and whenever the position changes (a partial fill, a partial close),
:class:`ProtectionCore` says which protective orders to place, resize or cancel, so they
rest *on the exchange* and work while limitline is down:

- **take-profit**: a resting reduce-only limit order at ``entry x (1 +/- take_profit)``;
- **stop-loss**: a stop-limit, reduce-only: a trigger at ``entry x (1 -/+ stop_loss)``
  and a limit ``stop_limit_offset`` beyond it (room to fill in a fast market). In ccxt 4.5
  ``binanceusdm`` this is ``create_order(symbol, 'limit', side, amount, limit,
  {'stopLossPrice': trigger, 'reduceOnly': True})``, sent to Binance's algo-order endpoint
  as type ``STOP`` (see ``/work/shared/notes``).

Never a market type of any kind (no ``STOP_MARKET``, ``TAKE_PROFIT_MARKET``,
``closePosition``, trailing market stops): :class:`ProtectiveOrder` refuses one. Why:
limitline places limit orders only, so every fill has a price the strategy accepted; a
market stop in a thin or gapping book fills at whatever is there.

Rules:

- **Size.** Each protective order is for the whole position (``|size|``). Conditional
  orders cannot be amended on Binance, so a resize is a replacement: the new order is
  placed and then the old one cancelled (the position is never without a stop; both are
  reduce-only, so the exchange never lets the two together close more than is held).
- **One cancels the other.** When the take-profit fills in full the stop is cancelled, and
  the reverse: conditional orders outlive positions on Binance, and a symbol has few slots.
  A flat position cancels everything left.
- **Gap risk.** A stop-limit whose limit is gapped through triggers and then rests
  unfilled. When the stop has triggered (the exchange said so, or the price is through the
  trigger), the position is still open and the price is beyond the stop's limit, the stuck
  order is cancelled and replaced by a reduce-only limit that crosses the book:
  ``price x (1 - gap_slippage)`` for a long's sell (``1 +`` for a short's buy), a bounded,
  configured slippage, with a ``protection_escalated`` event saying why. Should the price
  run through that limit too, it escalates again from the new price.
- **Spot** (``spot_oco``): two separate protective sells would each lock the same coins, so
  the protection is one OCO order list (a limit-maker take-profit and a stop-loss-limit),
  where the venue offers it; the exchange cancels the other leg itself.

The core names its orders by a key (``tp-1``, ``sl-2``, ``oco-3``, ``gap-4``); the caller
places them under client order ids of its own and reports their fills and ends by key.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Union

import attrs

from exchange.records import Side

ZERO = Decimal(0)
ONE = Decimal(1)
#: The order types protection may use; anything else (every market type) is refused.
LIMIT_TYPES = frozenset({"limit", "stop_limit", "limit_maker", "stop_loss_limit"})


@attrs.frozen
class ProtectionSettings:
    """Distances are fractions (0.02 is 2 %) of the entry price. ``take_profit`` or
    ``stop_loss`` None: that order is not placed. ``stop_limit_offset``: how far beyond
    its trigger the stop's limit lies; ``gap_slippage``: how far beyond the current price
    an escalation crosses (both > 0 and below 0.5)."""

    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    stop_limit_offset: Decimal = Decimal("0.005")
    gap_slippage: Decimal = Decimal("0.01")

    def problems(self) -> list[str]:
        out = []
        for name in ("take_profit", "stop_loss"):
            value = getattr(self, name)
            if value is not None and not ZERO < value < ONE:
                out.append(f"protection.{name} must be a fraction between 0 and 1 (0.02 is 2 %), got {value}")
        for name in ("stop_limit_offset", "gap_slippage"):
            value = getattr(self, name)
            if not ZERO < value < Decimal("0.5"):
                out.append(f"protection.{name} must be between 0 and 0.5 (0.01 is 1 %), got {value}")
        return out


def _limit_type(instance: Any, attribute: Any, value: str) -> None:
    if value not in LIMIT_TYPES:
        raise ValueError(f"{attribute.name}: protection places limit orders only ({sorted(LIMIT_TYPES)}), got {value!r}")


@attrs.frozen
class ProtectiveOrder:
    """One reduce-only protective order. ``trigger_price`` only for a stop-limit."""

    role: str
    side: Side
    amount: Decimal
    price: Decimal
    order_type: str = attrs.field(validator=_limit_type)
    trigger_price: Decimal | None = None
    reduce_only: bool = True

    def ccxt_params(self) -> dict[str, Any]:
        """The ``params`` of ccxt's ``create_order(symbol, 'limit', side, amount, price,
        params)`` that make this order (binanceusdm; see /work/shared/notes)."""
        params: dict[str, Any] = {"reduceOnly": True} if self.reduce_only else {}
        if self.order_type == "stop_limit" and self.trigger_price is not None:
            params["stopLossPrice"] = self.trigger_price
        return params


@attrs.frozen
class PlaceProtective:
    key: str
    order: ProtectiveOrder
    #: The OCO group: the ledger lets the orders of one group share one close reservation.
    group: str


@attrs.frozen
class PlaceOcoList:
    """Spot: one order list of a limit-maker take-profit and a stop-loss-limit."""

    key: str
    take_profit: ProtectiveOrder
    stop_loss: ProtectiveOrder


@attrs.frozen
class CancelProtective:
    key: str
    reason: str


@attrs.frozen
class ProtectionEvent:
    kind: str  # protection_placed | protection_resized | protection_canceled | protection_escalated | unprotected
    reason: str
    payload: dict[str, Any] = attrs.field(factory=dict)


ProtectionAction = Union[PlaceProtective, PlaceOcoList, CancelProtective, ProtectionEvent]


@attrs.define
class Resting:
    key: str
    role: str  # take_profit | stop_loss | escalation | oco
    order: ProtectiveOrder
    group: str
    stop: ProtectiveOrder | None = None  # an OCO list's stop leg
    filled: Decimal = ZERO
    triggered: bool = False
    canceling: bool = False


def _identity(price: Decimal, up: bool) -> Decimal:
    """No rounding (a market without a tick, in tests)."""
    return price


class ProtectionCore:
    """The protection of one (strategy, symbol) position.

    ``round_price(price, up)``: the market's tick rounding (up or down); ``min_amount``:
    below it nothing can be placed (an ``unprotected`` event says so)."""

    def __init__(
        self, settings: ProtectionSettings, round_price: Callable[[Decimal, bool], Decimal] = _identity,
        min_amount: Decimal = ZERO, spot_oco: bool = False,
    ) -> None:
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.settings = settings
        self.round_price = round_price
        self.min_amount = min_amount
        self.spot_oco = spot_oco
        self.size = ZERO
        self.entry_price: Decimal | None = None
        self.resting: dict[str, Resting] = {}
        self._sequence = 0
        self._group: str | None = None

    # ------------------------------------------------------------ inputs

    def on_position(self, size: Decimal, entry_price: Decimal | None) -> list[ProtectionAction]:
        """The ledger's position changed (an entry filled, in part or in full; a close or
        a protective order filled in part). Place, resize or cancel to match it."""
        self.size, self.entry_price = size, entry_price
        return self._sync()

    def on_fill(self, key: str, amount: Decimal, complete: bool) -> list[ProtectionAction]:
        """A trade of a protective order. In full: one cancels the other(s)."""
        resting = self.resting.get(key)
        if resting is None:
            return []
        resting.filled += amount
        if not complete:
            return []  # the position's change (from the ledger) resizes the rest
        del self.resting[key]
        out: list[ProtectionAction] = []
        for other in list(self.resting.values()):
            if not other.canceling:
                other.canceling = True
                out.append(CancelProtective(other.key, f"one cancels the other: {resting.role} {key} filled"))
        return out

    def on_triggered(self, key: str) -> None:
        """The exchange says the stop's trigger fired (Binance: the algo order is
        ``TRIGGERED``, ccxt reports it ``closed``; its child order may still rest)."""
        resting = self.resting.get(key)
        if resting is not None:
            resting.triggered = True

    def on_ended(self, key: str, reason: str) -> list[ProtectionAction]:
        """A protective order ended without filling in full (cancelled, expired,
        rejected). Ours to cancel: forgotten. Ended otherwise while the position is open:
        placed again."""
        resting = self.resting.pop(key, None)
        if resting is None or resting.canceling:
            return []
        return [ProtectionEvent("protection_canceled", f"{resting.role} {key} ended outside limitline: {reason}")] + self._sync()

    def on_price(self, price: Decimal) -> list[ProtectionAction]:
        """The latest price (a long's stop: the bid; a short's: the ask). Escalates a
        gapped stop."""
        if not self.size:
            return []
        long_ = self.size > 0
        out: list[ProtectionAction] = []
        for resting in list(self.resting.values()):
            if resting.canceling or resting.role not in ("stop_loss", "escalation", "oco"):
                continue
            stop = resting.stop if resting.role == "oco" else resting.order
            if stop is None:
                continue
            trigger = stop.trigger_price
            fired = resting.triggered or resting.role == "escalation" or (
                trigger is not None and (price <= trigger if long_ else price >= trigger)
            )
            beyond = price < stop.price if long_ else price > stop.price
            if fired and beyond:
                out += self._escalate(resting, price)
        return out

    def adopt(self, resting: Resting) -> None:
        """A protective order that already rests on the exchange (recovered from the order
        book of record after a restart) is this position's: kept, not placed again; a
        close sent now joins its OCO group."""
        self.resting[resting.key] = resting
        self._group = resting.group

    # ---------------------------------------------------------- deciding

    def wanted(self) -> list[ProtectiveOrder]:
        """The protective orders the position needs now (each for the whole position)."""
        size, entry = self.size, self.entry_price
        if not size or entry is None or abs(size) < self.min_amount:
            return []
        if any(r.role == "escalation" and not r.canceling for r in self.resting.values()):
            return []  # the position is being closed by an escalation
        long_ = size > 0
        side = Side.SELL if long_ else Side.BUY
        amount = abs(size)
        s = self.settings
        out = []
        if s.take_profit is not None:
            target = entry * (ONE + s.take_profit if long_ else ONE - s.take_profit)
            out.append(ProtectiveOrder("take_profit", side, amount, self.round_price(target, long_),
                                       "limit_maker" if self.spot_oco else "limit"))
        if s.stop_loss is not None:
            trigger = self.round_price(entry * (ONE - s.stop_loss if long_ else ONE + s.stop_loss), not long_)
            limit = self.round_price(trigger * (ONE - s.stop_limit_offset if long_ else ONE + s.stop_limit_offset), not long_)
            out.append(ProtectiveOrder("stop_loss", side, amount, limit,
                                       "stop_loss_limit" if self.spot_oco else "stop_limit", trigger_price=trigger))
        return out

    def _sync(self) -> list[ProtectionAction]:
        wanted = self.wanted()
        live = {r.role: r for r in self.resting.values() if not r.canceling}
        out: list[ProtectionAction] = []
        if not self.size:
            for resting in live.values():
                resting.canceling = True
                out.append(CancelProtective(resting.key, "the position is closed"))
            self._group = None
            return out
        if not wanted:
            if not live and abs(self.size) < self.min_amount:
                out.append(ProtectionEvent("unprotected", f"position {self.size} is below the market's minimum "
                                           f"{self.min_amount}: no protective order can be placed"))
            return out
        if self._group is None:
            self._sequence += 1
            self._group = f"p{self._sequence}"
        if self.spot_oco:
            tp = next((o for o in wanted if o.role == "take_profit"), None)
            sl = next((o for o in wanted if o.role == "stop_loss"), None)
            current = live.get("oco")
            if tp is None or sl is None:
                raise ValueError("protection: an OCO order list needs both take_profit and stop_loss")
            if current is not None and _matches(current, tp) and current.stop is not None and _matches(current, sl, current.stop):
                return out
            key = self._key("oco")
            self.resting[key] = Resting(key, "oco", tp, self._group, stop=sl)
            out.append(PlaceOcoList(key, tp, sl))
            out.append(ProtectionEvent("protection_resized" if current else "protection_placed",
                                       f"OCO list for {sl.amount}: take-profit {tp.price}, stop {sl.trigger_price}/{sl.price}"))
            if current is not None:
                current.canceling = True
                out.append(CancelProtective(current.key, f"replaced by {key}"))
            return out
        for order in wanted:
            current = live.get(order.role)
            if current is not None and _matches(current, order):
                continue
            if current is not None and current.triggered:
                continue  # a triggered stop is not moved: a gap escalation handles it
            key = self._key("tp" if order.role == "take_profit" else "sl")
            self.resting[key] = Resting(key, order.role, order, self._group)
            out.append(PlaceProtective(key, order, self._group))
            what = f"{order.role} {order.side.value} {order.amount} @ {order.price}" + (
                f" (trigger {order.trigger_price})" if order.trigger_price is not None else "")
            out.append(ProtectionEvent("protection_resized" if current else "protection_placed", what))
            if current is not None:
                current.canceling = True  # placed first, then cancelled: never unprotected
                out.append(CancelProtective(current.key, f"replaced by {key} ({what})"))
        return out

    def _escalate(self, stuck: Resting, price: Decimal) -> list[ProtectionAction]:
        long_ = self.size > 0
        slip = self.settings.gap_slippage
        limit = self.round_price(price * (ONE - slip if long_ else ONE + slip), not long_)
        order = ProtectiveOrder("escalation", Side.SELL if long_ else Side.BUY, abs(self.size), limit, "limit")
        key = self._key("gap")
        stuck.canceling = True
        self.resting[key] = Resting(key, "escalation", order, stuck.group)
        stop = stuck.stop if stuck.role == "oco" else stuck.order
        reason = (
            f"gap: the stop {stuck.key} triggered (trigger {stop.trigger_price if stop else '-'}, limit "
            f"{stop.price if stop else '-'}) and rests unfilled while the position of {self.size} is open at "
            f"price {price}; escalated with a reduce-only limit at {limit} ({slip * 100:f} % beyond the price)"
        )
        out: list[ProtectionAction] = [CancelProtective(stuck.key, "gapped stop replaced by an escalation")]
        # The take-profit is cancelled too: the escalation closes the whole position.
        for other in self.resting.values():
            if other.role == "take_profit" and not other.canceling:
                other.canceling = True
                out.append(CancelProtective(other.key, "the position is being closed by a gap escalation"))
        return [PlaceProtective(key, order, stuck.group)] + out + [
            ProtectionEvent("protection_escalated", reason, {"price": str(price), "limit": str(limit)})
        ]

    def _key(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}-{self._sequence}"

    # ----------------------------------------------------------- queries

    @property
    def group(self) -> str | None:
        """The position's OCO group while protection rests: a close the strategy sends
        then is reserved in it (the ledger shares one close reservation per group)."""
        return self._group

    def protected_amounts(self) -> dict[str, Decimal]:
        """What rests per role (live orders, not being cancelled): each should be |size|."""
        out: dict[str, Decimal] = {}
        for resting in self.resting.values():
            if resting.canceling:
                continue
            if resting.role == "oco":
                out["take_profit"] = resting.order.amount - resting.filled
                if resting.stop is not None:
                    out["stop_loss"] = resting.stop.amount - resting.filled
            else:
                out[resting.role] = resting.order.amount - resting.filled
        return out


def _matches(resting: Resting, wanted: ProtectiveOrder, order: ProtectiveOrder | None = None) -> bool:
    """``resting`` (or its leg ``order``) is what is wanted: same prices, and what is left
    of it is the wanted amount (a partly filled take-profit is not replaced)."""
    have = order or resting.order
    return (
        have.price == wanted.price and have.trigger_price == wanted.trigger_price and have.side is wanted.side
        and have.amount - resting.filled == wanted.amount
    )


def round_price_to(tick: Decimal) -> Callable[[Decimal, bool], Decimal]:
    """A ``round_price`` for a market of tick size ``tick`` (up when asked, else down)."""

    def rounded(price: Decimal, up: bool) -> Decimal:
        return (price / tick).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR) * tick

    return rounded

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
  placed, and the old one is cancelled only once the exchange has *accepted* the new one
  (:meth:`ProtectionCore.on_accepted`): a replacement the exchange refuses leaves the old
  order resting, so the position is never without its stop (both are reduce-only, so the
  exchange never lets the two together close more than is held).
- **A stop the price has already passed.** Binance refuses a stop whose trigger the price
  has already crossed (-2021 "Order would immediately trigger"): the market is past the
  stop, so it counts as fired and the position is escalated at once
  (:meth:`ProtectionCore.on_refused`), from the trigger or the latest price, whichever is
  further beyond it.
- **One cancels the other.** When the take-profit fills in full the stop is cancelled, and
  the reverse: conditional orders outlive positions on Binance, and a symbol has few slots.
  A flat position cancels everything left.
- **Gap risk.** A stop-limit whose limit is gapped through triggers and then rests
  unfilled. When the stop has triggered (the exchange said so, or the price is through the
  trigger), the position is still open and the price is beyond the stop's limit, the
  position is *escalated*: every protective order of it (the stuck stop or its child, the
  take-profit, a stop being replaced) is cancelled first, and once none of them can fill
  any more and no other close of the position works (the caller says:
  :meth:`ProtectionCore.escalation_due`), one reduce-only limit that crosses the book is
  placed for the position then held: ``price x (1 - gap_slippage)`` for a long's sell
  (``1 +`` for a short's buy), a bounded, configured slippage, with a
  ``protection_escalated`` event saying why. At most one escalation works per position, and
  nothing else closes it meanwhile (the caller cancels its own closes and stops adding to
  the position while :attr:`ProtectionCore.escalating`). Should the price run through that
  limit too, it is cancelled and escalated again from the new price. The price is judged
  at each candle's close and, between candles, whenever a fresher one arrives (a quote, the
  exchange reporting the stop triggered, start-up): a stop counts as fired then only once
  the exchange said it triggered (:meth:`ProtectionCore.on_price` ``confirmed``). An
  escalation decided on a price older than the fills (the stop filled at its limit within
  the candle, the trades booked after) is dropped, not placed, when those fills close the
  position (``protection_escalation_dropped``).
- **Spot** (``spot_oco``): two separate protective sells would each lock the same coins, so
  the protection is one OCO order list (a limit-maker take-profit and a stop-loss-limit),
  where the venue offers it; the exchange cancels the other leg itself. A list the latest
  price has already passed (at or below its stop's trigger, or at or above its
  take-profit) is never sent: Binance would refuse it (-2010), and again at every candle.
  The stop counts as fired (or the take-profit as reached) and the holding is escalated
  at once, as a gapped stop is.

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
    kind: str  # protection_placed | protection_resized | protection_canceled | protection_escalating | protection_escalated | protection_escalation_dropped | unprotected
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
    #: The exchange has it (an order being replaced is cancelled only once its
    #: replacement is accepted).
    accepted: bool = False


@attrs.define
class Escalation:
    """The position's one escalation: decided (``key`` None: its cancels are under way)
    or placed (``key``). ``price``: the price it crosses from."""

    reason: str
    price: Decimal
    stuck: str
    key: str | None = None


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
        #: The latest price (:meth:`on_price`).
        self.last_price: Decimal | None = None
        self._escalation: Escalation | None = None

    # ------------------------------------------------------------ inputs

    def on_position(self, size: Decimal, entry_price: Decimal | None) -> list[ProtectionAction]:
        """The ledger's position changed (an entry filled, in part or in full; a close or
        a protective order filled in part). Place, resize or cancel to match it."""
        self.size, self.entry_price = size, entry_price
        return self._sync()

    def on_fill(self, key: str, amount: Decimal, complete: bool, price: Decimal | None = None) -> list[ProtectionAction]:
        """A trade of a protective order (at ``price``). In full: one cancels the other(s).

        A spot OCO list's leg that trades even in part ends the other leg (Binance does so
        itself): a take-profit leg's trade leaves what is held without a stop, so the list
        no longer matches and the ledger's answer replaces it (cancel the rest, then a new
        list for what is held); a stop leg's trade means its trigger fired."""
        resting = self.resting.get(key)
        if resting is None:
            return []
        resting.filled += amount
        if not complete:
            if resting.role == "oco" and resting.stop is not None and price is not None:
                if price >= resting.order.price:
                    stop, resting.stop = resting.stop, None
                    return [ProtectionEvent("unprotected", (
                        f"the take-profit leg of the OCO list {key} traded in part ({resting.filled} at {price}): the "
                        f"exchange ended its stop leg (trigger {stop.trigger_price}); the list is replaced by one for "
                        f"what is held"), {"key": key})]
                resting.triggered = True
            return []  # the position's change (from the ledger) resizes the rest
        del self.resting[key]
        out: list[ProtectionAction] = []
        escalation = self._escalation
        if escalation is not None and escalation.key == key:
            self._escalation = None
        elif escalation is not None and escalation.key is None:
            # Decided on a price older than this fill (a live candle or quote comes before
            # the trade poll books what the stop did within it): the order judged stuck,
            # or its sibling, has closed the position in full. Nothing is left to escalate;
            # the event says so (the record must not be left saying a gap stands).
            self._escalation = None
            out.append(ProtectionEvent("protection_escalation_dropped", (
                f"the escalation decided at price {escalation.price} is not placed: the {resting.role} {key} "
                f"filled in full ({resting.filled}) before it was due, closing the position"),
                {"key": key, "role": resting.role, "stuck": escalation.stuck}))
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

    def on_accepted(self, key: str) -> list[ProtectionAction]:
        """The exchange accepted (rests) the protective order ``key``: the orders of its
        role it replaces (placed before it) are cancelled now, never before."""
        resting = self.resting.get(key)
        if resting is None or resting.accepted:
            return []
        resting.accepted = True
        if resting.canceling or resting.role == "escalation":
            return []
        out: list[ProtectionAction] = []
        for other in list(self.resting.values()):
            if other is resting:
                break  # placed after it: it replaces this one once accepted
            if other.role == resting.role and not other.canceling:
                other.canceling = True
                out.append(CancelProtective(other.key, f"replaced by {key} ({_describe(resting.order)})"))
        return out

    def on_refused(self, key: str, reason: str, would_trigger: bool = False) -> list[ProtectionAction]:
        """The exchange (or the ledger) refused ``key``: forgotten; the order it would have
        replaced rests on. ``would_trigger``: a stop refused because the price has already
        passed its trigger (Binance -2021): the stop counts as fired, the position is
        escalated at once."""
        resting = self.forget(key)
        if resting is None or resting.canceling or not would_trigger or resting.role != "stop_loss" or not self.size:
            return []
        trigger = resting.order.trigger_price
        assert trigger is not None
        long_ = self.size > 0
        price = trigger if self.last_price is None else (min if long_ else max)(trigger, self.last_price)
        why = (f"the stop {key} (trigger {trigger}) was refused because the price is already past its trigger "
               f"({reason}): the stop counts as fired")
        return self._escalate(resting, price, why)

    def forget(self, key: str) -> Resting | None:
        """``key`` ended or was refused (no message to answer): dropped, and the
        escalation with it if it was the escalation's order."""
        resting = self.resting.pop(key, None)
        if self._escalation is not None and self._escalation.key == key:
            self._escalation = None
        return resting

    def on_ended(self, key: str, reason: str) -> list[ProtectionAction]:
        """A protective order ended without filling in full (cancelled, expired,
        rejected). Ours to cancel: forgotten. Ended otherwise while the position is open:
        placed again."""
        resting = self.forget(key)
        if resting is None or resting.canceling:
            return []
        return [ProtectionEvent("protection_canceled", f"{resting.role} {key} ended outside limitline: {reason}")] + self._sync()

    def on_price(self, price: Decimal, confirmed: bool = False) -> list[ProtectionAction]:
        """The latest price (a long's stop: the bid; a short's: the ask). Escalates a
        gapped stop (or a gapped escalation).

        ``confirmed``: a price between candles (a quote, a trigger report): a stop counts
        as fired only once the exchange has said it triggered (:meth:`on_triggered`), so a
        stop whose child may have filled at its limit moments ago is not judged on the
        price alone (nor is an escalation's limit: it is judged at the closes). A candle's
        close (and the start-up check) passes False: the price through the trigger is the
        evidence, as in the Lab."""
        self.last_price = price
        if not self.size:
            return []
        long_ = self.size > 0
        out: list[ProtectionAction] = []
        if self._escalation is not None and self._escalation.key is None:
            self._escalation.price = price  # decided, not placed yet: it crosses from the latest price
            return out
        for resting in list(self.resting.values()):
            if resting.canceling or resting.role not in ("stop_loss", "escalation", "oco"):
                continue
            stop = resting.stop if resting.role == "oco" else resting.order
            if stop is None:
                continue
            trigger = stop.trigger_price
            fired = resting.triggered or (not confirmed and (resting.role == "escalation" or (
                trigger is not None and (price <= trigger if long_ else price >= trigger))))
            beyond = price < stop.price if long_ else price > stop.price
            if fired and beyond:
                out += self._escalate(resting, price, (
                    f"gap: the {'escalation' if resting.role == 'escalation' else 'stop'} {resting.key} "
                    f"triggered (trigger {trigger if trigger is not None else '-'}, limit {stop.price}) and rests "
                    f"unfilled while the position of {self.size} is open at price {price}"))
        return out

    def adopt(self, resting: Resting) -> None:
        """A protective order that already rests on the exchange (recovered from the order
        book of record after a restart) is this position's: kept, not placed again; a
        close sent now joins its OCO group."""
        resting.accepted = True
        self.resting[resting.key] = resting
        self._group = resting.group
        if resting.role == "escalation":
            self._escalation = Escalation("adopted after a restart", resting.order.price, resting.key, resting.key)

    # ---------------------------------------------------------- deciding

    def wanted(self) -> list[ProtectiveOrder]:
        """The protective orders the position needs now (each for the whole position)."""
        size, entry = self.size, self.entry_price
        if not size or entry is None or abs(size) < self.min_amount:
            return []
        if self._escalation is not None:
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
            for resting in self.resting.values():
                if not resting.canceling:
                    resting.canceling = True
                    out.append(CancelProtective(resting.key, "the position is closed"))
            escalation = self._escalation
            if escalation is not None and escalation.key is None:
                out.append(ProtectionEvent("protection_escalation_dropped", (
                    f"the escalation decided at price {escalation.price} is not placed: the position is closed "
                    f"(its fills were booked before the escalation was due)"), {"stuck": escalation.stuck}))
            self._group = None
            self._escalation = None
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
            passed = self._list_passed(tp, sl)
            if passed is not None:
                # Binance refuses such a list (-2010): a stop the price has passed counts
                # as fired, a take-profit it has passed as reached; the holding is sold.
                assert self.last_price is not None
                return out + self._escalate(current, self.last_price, passed)
            key = self._key("oco")
            self.resting[key] = Resting(key, "oco", tp, self._group, stop=sl)
            out.append(PlaceOcoList(key, tp, sl))
            out.append(ProtectionEvent("protection_resized" if current else "protection_placed",
                                       f"OCO list for {sl.amount}: take-profit {tp.price}, stop {sl.trigger_price}/{sl.price}"))
            if current is not None:
                # Not placed-then-cancelled as a perpetual's stop is: the list it replaces
                # locks every coin, so the exchange would refuse this one. The caller
                # cancels first and places this list once the ledger has the coins back
                # (actors.strategy.spot_protection_core).
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
            # The order it replaces is cancelled once the exchange accepts this one
            # (on_accepted): placed first, cancelled after, never unprotected.
            out.append(ProtectionEvent("protection_resized" if current else "protection_placed", _describe(order)))
        return out

    def _list_passed(self, tp: ProtectiveOrder, sl: ProtectiveOrder) -> str | None:
        """Spot: why an OCO list for the holding cannot rest at the latest price (None: it
        can). Binance accepts a sell list only with ``take-profit > last trade > stop``
        (otherwise -2010 "The relationship of the prices for the orders is not correct.";
        Binance spot API, ``POST /api/v3/orderList/oco``)."""
        price = self.last_price
        if price is None:
            return None
        assert sl.trigger_price is not None
        if price <= sl.trigger_price:
            return (f"the price {price} is already at or below the stop's trigger {sl.trigger_price} of the OCO list "
                    f"for {sl.amount} (an exchange refuses such a list): the stop counts as fired")
        if price >= tp.price:
            return (f"the price {price} is already at or above the take-profit {tp.price} of the OCO list "
                    f"for {tp.amount} (an exchange refuses such a list): the take-profit counts as reached")
        return None

    def _escalate(self, stuck: Resting | None, price: Decimal, why: str) -> list[ProtectionAction]:
        """Decide the escalation: every protective order of the position is cancelled
        first; :meth:`escalation_due` places the one crossing limit once they have ended.
        ``stuck``: the order that failed (None: a spot list that could not be placed)."""
        current = self._escalation
        stuck_key = stuck.key if stuck is not None else "-"
        if current is not None and (current.key is None or current.key != stuck_key):
            return []  # one escalation per position: decided already, or one works
        self._escalation = Escalation(why, price, stuck_key)
        out: list[ProtectionAction] = []
        for other in self.resting.values():
            if other.canceling:
                continue
            other.canceling = True
            what = ("gapped stop replaced by an escalation" if other is stuck
                    else "the position is being closed by an escalation")
            out.append(CancelProtective(other.key, what))
        return out + [ProtectionEvent("protection_escalating", f"{why}; its protective orders are cancelled first, "
                                      f"then one {'crossing limit sell' if self.spot_oco else 'reduce-only limit'} closes it", {"price": str(price), "stuck": stuck_key})]

    @property
    def escalating(self) -> bool:
        """An escalation is decided or works: nothing else may close or add to the position."""
        return self._escalation is not None

    def escalation_due(self, closes_working: bool) -> list[ProtectionAction]:
        """Place the decided escalation once nothing else can close the position: none of
        the protective orders it cancelled can fill any more, and (``closes_working``,
        from the caller) no other order of the position works and no fill of it waits to
        be booked. Sized from the position held then; at most one per position."""
        escalation = self._escalation
        if escalation is None or escalation.key is not None or closes_working or not self.size:
            return []
        if any(r.canceling for r in self.resting.values()):
            return []  # a cancel is under way: it may still fill
        long_ = self.size > 0
        slip = self.settings.gap_slippage
        price = escalation.price
        limit = self.round_price(price * (ONE - slip if long_ else ONE + slip), not long_)
        order = ProtectiveOrder("escalation", Side.SELL if long_ else Side.BUY, abs(self.size), limit, "limit")
        key = self._key("gap")
        escalation.key = key
        if self._group is None:
            self._sequence += 1
            self._group = f"p{self._sequence}"
        self.resting[key] = Resting(key, "escalation", order, self._group)
        what = "a limit sell crossing the book" if self.spot_oco else "a reduce-only limit"
        reason = (f"{escalation.reason}; escalated with {what} at {limit} ({order.side.value} "
                  f"{order.amount}, {slip * 100:f} % beyond the price {price})")
        return [PlaceProtective(key, order, self._group),
                ProtectionEvent("protection_escalated", reason, {"price": str(price), "limit": str(limit)})]

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


#: After a protective order is refused, how long before protection is placed again
#: (seconds): doubled with each refusal in a row, capped (or the next candle, if sooner).
RETRY_FIRST, RETRY_MAX = Decimal(1), Decimal(60)


def retry_wait(refusals: int) -> float:
    """The wait (seconds) before protection is placed again after ``refusals`` in a row
    (1, 2, 4, ... at most 60): never a loop, never a candle (an hour live) away."""
    return float(min(RETRY_FIRST * 2 ** (refusals - 1), RETRY_MAX))


def _describe(order: ProtectiveOrder) -> str:
    return f"{order.role} {order.side.value} {order.amount} @ {order.price}" + (
        f" (trigger {order.trigger_price})" if order.trigger_price is not None else "")


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

"""A spot strategy's protection: one OCO sell list resting on the exchange.

On spot, a take-profit and a stop-loss placed as two separate sells would each lock the same
coins (the exchange refuses the second, or the holder sells twice). So where the venue
offers it, the protection of what a spot strategy holds is **one OCO order list** (Binance's
``POST /api/v3/orderList/oco``): a ``LIMIT_MAKER`` take-profit above and a
``STOP_LOSS_LIMIT`` below, for the whole holding. The list is one order of record (order
type ``oco``), reserved once in the ledger; whichever leg trades, its trades are the list's
fills, and the exchange ends the other leg itself.

:class:`actors.strategy.protection_core.ProtectionCore` (``spot_oco=True``) decides what
should rest; this mixin of :class:`actors.strategy.core.StrategyCore` carries it out:

- **After a buy fills** (the ledger's answer says the holding changed), the list is placed
  for what is held (rounded down to the lot; below the market's minimums an ``unprotected``
  event says so). Its prices follow the ledger's average entry price.
- **Resize** (a further buy, a new entry price): the old list is cancelled **first** and the
  new one placed once the exchange has confirmed the cancel and the ledger has released the
  coins. The perpetual rule (place the new, then cancel the old) cannot work here: the old
  list locks every coin, so the new one would be refused. The holding is unprotected for
  that one round trip (a cancel and a placement; within one candle in shadow mode and the
  Lab).
- **The strategy's own sell signal** cancels the list first, and the sell is decided once the
  coins are free again (within the same candle in lockstep); protection is not placed again
  while that sell rests. If the sell leaves coins (it expired in part), they are protected
  again.
- **Gap risk**: a stop-loss-limit gapped through rests unfilled below the market; as for
  perpetuals the list is cancelled and replaced (after the cancel) by a limit sell crossing
  the price by the configured ``gap_slippage_pct`` (``protection_escalated``). A list the
  price has already passed when it is due (the buy filled above a stop the market is now
  below) is not sent at all: the holding is escalated the same way. The gap is judged at
  each close and once at start-up at the latest price known (a gap while limitline was
  down); also while a restarted strategy's pre-flight fails, once reconciled
  (``_may_protect``: protecting what is held does not depend on being allowed to buy).
  Not between candles: no exchange reports a list's stop leg triggered, and a bid alone may
  predate the leg's fill (an escalation decided on it would be dropped, but the list would
  have been cancelled for nothing).
- **A refused list** (``protection_refused``) is planned again at the next candle, from
  that candle's close: placed if the list can rest there, escalated if the price has
  passed it. Protection is not held back by an open circuit breaker (it protects coins
  already held; its refusals still count towards the breaker, which stops new buys).
- Protective orders have no time-to-live, do not count towards ``max_open_orders``, and
  are never sent as a market order of any kind.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from actors.messages import LEDGER, CancelOrder, Reserve, Send
from actors.orders import Order, OrderState, Trigger, client_order_id
from actors.strategy.protection_core import (
    CancelProtective,
    PlaceOcoList,
    PlaceProtective,
    ProtectionAction,
    ProtectionCore,
    ProtectionEvent,
    ProtectionSettings,
    Resting,
    retry_wait,
    round_price_to,
)
from actors.strategy.rules import RuleOutcome
from exchange.candles import Candle
from exchange.records import Side

if TYPE_CHECKING:
    from actors.strategy.core import StrategyCore

PROTECTION = "protection:"
#: Orders not yet at the exchange: a cancel of one waits for its acceptance.
NOT_YET_SENT = frozenset({OrderState.INTENT, OrderState.RESERVED, OrderState.SUBMITTING})


def spot_protection_settings(settings: Any) -> ProtectionSettings | None:
    p = settings.protection
    if p is None:
        return None
    return ProtectionSettings(
        take_profit=None if p.take_profit_pct is None else p.take_profit_pct / 100,
        stop_loss=None if p.stop_loss_pct is None else p.stop_loss_pct / 100,
        stop_limit_offset=p.stop_limit_slippage_pct / 100, gap_slippage=p.gap_slippage_pct / 100,
    )


def is_protective(order: Order) -> bool:
    return order.rule.startswith(PROTECTION)


class SpotProtectionMixin:
    """The spot strategy's side of :class:`ProtectionCore` (see the module)."""

    def _init_spot_protection(self: "StrategyCore") -> None:
        #: A spot strategy with ``protection`` (a perpetual strategy's is its own).
        self._spot_protected = self.settings.protection is not None and not self.settings.perpetual
        self.spot_protection: ProtectionCore | None = None
        #: Protective orders: client order id <-> the protection's key.
        self._protective_key: dict[str, str] = {}
        self._protective_cid: dict[str, str] = {}
        #: Placements waiting for the coins a cancelled list still locks.
        self._pending_protection: list[PlaceOcoList | PlaceProtective] = []
        #: Cancels of protective orders not yet accepted by the exchange.
        self._list_cancel_on_accept: set[str] = set()
        #: A sell signal waiting for the list's cancel: (its outcome, its candle).
        self._sell_after_cancel: tuple[RuleOutcome, Candle] | None = None
        #: A protective order ended and the ledger's answer (releasing its coins) is due.
        self._release_due = False
        #: A protective order was refused (ledger or exchange): when the list is placed
        #: again (the shell's timer or the next candle, whichever comes first: 1 s doubled
        #: per refusal in a row, at most 60 s; never at once, a refusal that repeats must
        #: not spin). None: nothing waits to be placed again.
        self._spot_resync_at: float | None = None
        self._spot_refusals = 0
        #: Why what is held has no list resting (a refusal): no buy adds to it meanwhile.
        self._spot_unprotected: str | None = None
        #: The list of record has been judged at the latest price once (start-up).
        self._judged_at_start = False

    # -------------------------------------------------------------- inputs

    def _protection_core(self: "StrategyCore") -> ProtectionCore | None:
        if self.spot_protection is None and self.market is not None and self._spot_protected:
            settings = spot_protection_settings(self.settings)
            if settings is None:
                return None
            self.spot_protection = ProtectionCore(settings, round_price_to(self.market.tick_size), self.market.min_amount,
                                             spot_oco=True)
            # The latest price the venue reported: a list it has already passed is not sent.
            venue = self._venue
            self.spot_protection.last_price = venue.last_prices.get(self.market.symbol) if venue is not None else None
            for order in self.orders.values():  # a restart: the lists of record rest on
                if is_protective(order):
                    self._adopt(self.spot_protection, order)
        return self.spot_protection

    def _adopt(self: "StrategyCore", protection: ProtectionCore, order: Order) -> None:
        from actors.strategy.protection_core import ProtectiveOrder

        role, _, group = order.rule.removeprefix(PROTECTION).partition("@")
        key = f"{role}-r{order.client_order_id}"
        if order.order_type == "oco":
            assert order.trigger_price is not None and order.stop_limit_price is not None
            tp = ProtectiveOrder("take_profit", Side.SELL, order.amount, order.price, "limit_maker")
            sl = ProtectiveOrder("stop_loss", Side.SELL, order.amount, order.stop_limit_price, "stop_loss_limit",
                                 trigger_price=order.trigger_price)
            protection.adopt(Resting(key, "oco", tp, group, stop=sl, filled=order.filled))
        else:
            protective = ProtectiveOrder(role, Side.SELL, order.amount, order.price, "limit")
            protection.adopt(Resting(key, role, protective, group, filled=order.filled))
        self._protective_key[order.client_order_id] = key
        self._protective_cid[key] = order.client_order_id

    def _protect_position(self: "StrategyCore", now: float) -> list[Send]:
        """The ledger's answer: place, resize or cancel the list to match what is held."""
        self._release_due = False  # (this is the ledger's answer)
        return self._protect_holding(now)

    def _protect_holding(self: "StrategyCore", now: float) -> list[Send]:
        """Place, resize or cancel the list to match what the ledger last said is held."""
        protection = self._protection_core()
        if protection is None or not self._may_protect():
            return []
        out: list[Send] = []
        if self._sell_after_cancel is not None and not self._protective_live():
            outcome, candle = self._sell_after_cancel
            self._sell_after_cancel = None
            out += self._decide(Side.SELL, outcome, candle, now)
        if self._sell_after_cancel is not None or any(
            o.side is Side.SELL and not is_protective(o) for o in self.orders.values()
        ):
            return out  # the strategy's own sell has the coins: no protection meanwhile
        if self._spot_resync_at is not None:
            return out  # a refusal: placed again after its wait or at the next candle
        assert self.market is not None
        size = self.market.round_amount(self.held)
        if not size:
            self._spot_unprotected = None  # nothing held is left without a list
        entry = self.entry_price
        out += self._carry_out(protection.on_position(size if entry is not None else Decimal(0), entry), now)
        if not self._judged_at_start:
            # The first time it may act: judged at the latest price the venue knows (a
            # list gapped while limitline was down), not at the next candle's close.
            self._judged_at_start = True
            out += self._protect_latest(now)
        return out

    def _protect_price(self: "StrategyCore", candle: Candle, now: float) -> list[Send]:
        """The candle's close: a gapped stop is escalated."""
        if self.spot_protection is None or not self._may_protect():
            return []
        # The price first: a list refused at the last candle is placed again only if this
        # close lets it rest; past it, the holding is escalated instead (ProtectionCore).
        out = self._carry_out(self.spot_protection.on_price(candle.close), now)
        if self._spot_resync_at is not None:
            self._spot_resync_at = None
            out += self._protect_holding(now)
        return out

    def _spot_retry(self: "StrategyCore", now: float) -> list[Send]:
        """The shell's timer: a refused list is placed again once its wait is over."""
        if self._spot_resync_at is None or now < self._spot_resync_at:
            return []
        self._spot_resync_at = None
        return self._protect_holding(now)

    def _protect_latest(self: "StrategyCore", now: float) -> list[Send]:
        """Start-up (the strategy active, or protecting only): the list of record is judged
        at the latest price the venue knows, so a stop gapped while limitline was down is
        escalated now, not at the next candle's close."""
        protection = self.spot_protection
        if protection is None or not protection.size or protection.escalating:
            return []
        quote, price = self._quote, protection.last_price
        if quote is not None and now - quote.at <= self.settings.quote_max_age_seconds:
            price = quote.bid
        return [] if price is None else self._carry_out(protection.on_price(price), now)

    def _sell_cancels_protection(self: "StrategyCore", outcome: RuleOutcome, candle: Candle, now: float) -> list[Send] | None:
        """A sell signal while protection rests: the list is cancelled first and the sell
        decided once the coins are free (None: nothing rests, decide now)."""
        if self.spot_protection is None or not self._protective_live():
            return None
        self._sell_after_cancel = (outcome, candle)
        out: list[Send] = []
        for resting in list(self.spot_protection.resting.values()):
            if not resting.canceling:
                # (a placement still waiting is dropped: _cancel_protective forgets it)
                out += self._cancel_protective(CancelProtective(resting.key, f"the strategy's sell signal ({outcome.rule})"), now)
                resting.canceling = True
        return out

    # ------------------------------------------------------------ carrying out

    def _carry_out(self: "StrategyCore", actions: list[ProtectionAction], now: float) -> list[Send]:
        out: list[Send] = []
        for action in actions:
            if isinstance(action, ProtectionEvent):
                out.append(self._event(action.kind, now, reason=action.reason, payload=action.payload))
            elif isinstance(action, CancelProtective):
                out += self._cancel_protective(action, now)
            else:
                self._pending_protection = [p for p in self._pending_protection if p.key != action.key] + [action]
        return out + self._escalation_if_due(now) + self._place_pending(now)

    def _escalation_if_due(self: "StrategyCore", now: float) -> list[Send]:
        """A decided escalation (a crossing limit sell) is placed once nothing else can
        sell the coins: no protective order of it left to end, no sell of the strategy's."""
        protection = self.spot_protection
        if protection is None or not protection.escalating:
            return []
        selling = any(o.side is Side.SELL and not is_protective(o) for o in self.orders.values())
        due = protection.escalation_due(selling)
        return self._carry_out(due, now) if due else []

    def _cancel_protective(self: "StrategyCore", action: CancelProtective, now: float) -> list[Send]:
        pending = [p for p in self._pending_protection if p.key == action.key]
        if pending:  # never sent: forgotten
            self._pending_protection = [p for p in self._pending_protection if p.key != action.key]
            assert self.spot_protection is not None
            self.spot_protection.resting.pop(action.key, None)
            return []
        cid = self._protective_cid.get(action.key)
        order = self.orders.get(cid) if cid is not None else None
        if order is None:
            return []
        if order.state in NOT_YET_SENT:
            self._list_cancel_on_accept.add(order.client_order_id)
            return []
        if order.state not in (OrderState.OPEN, OrderState.PARTIALLY_FILLED):
            return []
        return self._advance(order.client_order_id, Trigger.CANCEL, now, reason=action.reason) + [
            Send(self.connection, CancelOrder(order.client_order_id, self.name, action.reason))
        ]

    def _protection_waits(self: "StrategyCore") -> bool:
        """A sell or a placement waits for the coins of a cancelled list (the exchange's
        confirmation, then the ledger's answer releasing them): the candle is not done yet
        (a lockstep replay waits). Only while one of those is still to come: a placement
        the coins cannot cover once they are released waits for the next change instead."""
        if self._sell_after_cancel is None and not self._pending_protection:
            return False  # (the common case, asked after every message: cheap first)
        return self._release_due or self._protective_live()

    def _protective_live(self: "StrategyCore") -> bool:
        return any(is_protective(o) for o in self.orders.values())

    def _place_pending(self: "StrategyCore", now: float) -> list[Send]:
        """Place what waits, once no protective order of record is left (the coins of a
        cancelled list are released only when the exchange confirms the cancel)."""
        resting = self.spot_protection.resting if self.spot_protection is not None else {}
        # A placement the protection has since given up (the position closed) is dropped.
        self._pending_protection = [p for p in self._pending_protection
                                    if p.key in resting and not resting[p.key].canceling]
        if not self._pending_protection or self._protective_live() or self._release_due:
            return []  # (what the ledger last said of the free coins predates the release)
        action = self._pending_protection[0]
        amount = action.take_profit.amount if isinstance(action, PlaceOcoList) else action.order.amount
        if amount > self.base_free:
            return []  # the ledger's answer releasing them comes next
        self._pending_protection = self._pending_protection[1:]
        return self._place_protective(action, now)

    def _place_protective(self: "StrategyCore", action: PlaceOcoList | PlaceProtective, now: float) -> list[Send]:
        assert self.market is not None and self.spot_protection is not None
        market = self.market
        if isinstance(action, PlaceOcoList):
            tp, sl = action.take_profit, action.stop_loss
            role, price, amount = "oco", tp.price, tp.amount
            extra: dict[str, Any] = {"order_type": "oco", "trigger_price": sl.trigger_price, "stop_limit_price": sl.price}
            problem = market.violation(tp.price, amount) or market.violation(sl.price, amount)
        else:
            role, price, amount = action.order.role, action.order.price, action.order.amount
            extra = {}
            problem = market.violation(price, amount)
        if problem is not None:
            self.spot_protection.resting.pop(action.key, None)
            return [self._event("unprotected", now, reason=f"{role} for {amount} cannot be placed: {problem}")]
        cid = client_order_id(self.name, self.next_sequence, self.client_id_instance)
        self.next_sequence += 1
        order = Order(
            client_order_id=cid, strategy=self.name, venue=self.settings.venue, symbol=market.symbol,
            side=Side.SELL, price=price, amount=amount, state=OrderState.INTENT, created_at=now, updated_at=now,
            rule=f"{PROTECTION}{role}@{self.spot_protection.group or '-'}", market_ts=self.market_time, **extra,
        )
        self.orders[cid] = order
        self._protective_key[cid] = action.key
        self._protective_cid[action.key] = cid
        return [Send(LEDGER, Reserve(
            client_order_id=cid, strategy=self.name, side=Side.SELL, symbol=market.symbol, base=market.base,
            quote=market.quote, price=price, amount=amount, fee_rate=max(market.maker_fee, market.taker_fee),
            reply_to=self.address, lot_size=market.lot_size, amount_digits=market.amount_digits,
            min_amount=market.min_amount, min_notional=market.min_notional,
        ))]

    # ------------------------------------------------------------ outcomes

    def _protective_fill(self: "StrategyCore", order: Order, amount: Decimal, complete: bool, now: float,
                         price: Decimal | None = None) -> list[Send]:
        """A trade of a protective order. It may come before the strategy is active again
        after a restart (a leg traded while limitline was down): still said, and the
        protection, once made, finds the list ended."""
        key = self._protective_key.get(order.client_order_id)
        out: list[Send] = []
        if key is not None and self.spot_protection is not None:
            if complete:
                self._forget_protective(order.client_order_id)
            out = self._carry_out(self.spot_protection.on_fill(key, amount, complete, price), now)
        if complete:
            out.append(self._event("closed_by_protection", now, order.client_order_id, rule=order.rule,
                                   reason=f"the exchange's {order.order_type} protective order sold {order.amount}"))
        return out

    def _protective_ended(self: "StrategyCore", order: Order, now: float) -> list[Send]:
        """A protective order reached a final state: the protection hears of it, and what
        waited for its coins is placed."""
        key = self._protective_key.get(order.client_order_id)
        self._list_cancel_on_accept.discard(order.client_order_id)
        # The ledger answers every end of a reservation (a denial made none).
        self._release_due = order.state is not OrderState.DENIED
        out: list[Send] = []
        if key is not None and order.state in (OrderState.REJECTED, OrderState.DENIED):
            self._forget_protective(order.client_order_id)
            if self.spot_protection is not None:
                self.spot_protection.resting.pop(key, None)
            self._spot_refusals += 1
            wait = retry_wait(self._spot_refusals)
            self._spot_resync_at = now + wait
            out.append(self._event("protection_refused", now, order.client_order_id, rule=order.rule, reason=(
                f"{order.reason}; placed again in {wait:g}s or at the next candle, whichever comes first "
                f"(refusal {self._spot_refusals} in a row)")))
            if self._spot_unprotected is None and self.held > 0:
                self._spot_unprotected = f"{order.client_order_id} was refused ({order.reason})"
                out.append(self._event("unprotected", now, order.client_order_id, rule=order.rule, reason=(
                    f"the holding of {self.held} has no OCO list resting: {self._spot_unprotected}; "
                    f"no buy adds to it until one rests")))
        elif key is not None and order.state is not OrderState.FILLED:
            # (a fill in full is heard by the protection from the fill: _protective_fill)
            self._forget_protective(order.client_order_id)
            if self.spot_protection is not None:
                out += self._carry_out(self.spot_protection.on_ended(key, order.state.value), now)
        # A gapped stop's list is cancelled: once nothing else can sell the coins, the one
        # escalation (a crossing limit sell) is placed.
        return out + self._escalation_if_due(now) + self._place_pending(now)

    def _forget_protective(self: "StrategyCore", cid: str) -> None:
        key = self._protective_key.pop(cid, None)
        if key is not None:
            self._protective_cid.pop(key, None)

    def _protective_accepted(self: "StrategyCore", cid: str, now: float) -> list[Send]:
        if cid in self._protective_key:
            self._spot_refusals, self._spot_unprotected = 0, None  # a list rests again
        if cid not in self._list_cancel_on_accept:
            return []
        self._list_cancel_on_accept.discard(cid)
        key = self._protective_key.get(cid)
        return self._cancel_protective(CancelProtective(key or "", "cancelled once accepted"), now) if key else []

    def _protective_wake(self: "StrategyCore") -> Decimal | None:
        """The close at or below which a resting list's stop may be gapped (the Lab's fast
        path visits those candles: an escalation is decided on the close)."""
        if self.spot_protection is None:
            return None
        stops = [r.stop.price for r in self.spot_protection.resting.values() if r.stop is not None and not r.canceling]
        return max(stops) if stops else None


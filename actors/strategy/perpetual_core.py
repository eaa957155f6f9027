"""A strategy of positions on a perpetual (swap) market: its rules of conduct.

The same core as a spot strategy (:class:`actors.strategy.core.StrategyCore`: pre-flight,
reconciliation gate, breaker, the order table, durable intents, events) with what a
position needs instead of inventory:

- **Decisions.** The buy and sell triggers say the position wanted: ``on_buy`` and
  ``on_sell`` (``long``, ``short`` or ``flat``) with the configured size (``sizing.base``,
  or ``sizing.quote`` as a notional at the close). The
  :class:`actors.strategy.actions_core.ActionPlanner` turns it into limit orders one leg at
  a time: a close is reduce-only, a flip closes and then opens, each leg sized from the
  position the ledger holds once the last leg's fills are booked. The ``evaluated`` event
  of a candle that decided carries the ``action`` (open, add, close, reduce, flip, hold),
  as do ``blocked`` and ``order_placed``.
- **Reservations** go to the ledger's position book (:class:`PositionReserve`): an open
  reserves initial margin at the market's leverage, a close the size it reduces (in the
  protection's OCO group while protection rests). What the strategy holds comes only from
  the ledger's :class:`PositionInfo`.
- **Protection.** With ``protection`` set, a :class:`actors.strategy.protection_core.ProtectionCore`
  places a take-profit (reduce-only limit) and a stop-loss (reduce-only stop-limit) for the
  whole position after every change of it the ledger reports, resizes them, cancels one
  when the other fills, and escalates a gapped stop (``protection_escalated``). They are
  orders of record like any other (``order_type`` ``limit`` or ``stop_limit``, with its
  ``trigger_price``); their time-to-live does not run out. A protective order the exchange
  refuses is placed again after a wait (1 s, doubling per refusal in a row, at most 60 s; the
  shell's timer sends a ``Tick``) or at the next candle, never in a loop; while the stop-loss
  is refused, nothing adds to the position (:meth:`_stop_missing`, ``unprotected``); a stop
  refused because the price is past its trigger (-2021) is escalated at once. While an escalation is decided or
  works, the plan's orders are cancelled, its decision dropped and new ones ``blocked``
  (:meth:`_escalation_step`); the one rule on closes is :meth:`_close_refused`. A gap is
  judged at each close, when the connection reports the stop triggered (``StopTriggered``)
  or a quote arrives, and at start-up (:meth:`_start_protection`). Protection runs whenever
  :meth:`_may_protect` (active, or a failed pre-flight once reconciled): protecting what is
  held does not depend on being allowed to open.
- **A stale position.** A reduce-only order refused with -2022 means the exchange holds
  nothing to reduce: no close is sent until the ledger's position changes (fills booked, a
  repair from the reconciler) or a wait runs out (1 s, doubling per refusal in a row, at
  most 60 s), with a ``close_held`` event (:meth:`_held_stale`).
- **Python strategies** (``python:``) answer a :class:`actors.strategy.python.PositionIntent`
  (a posture, or open/close/flip, with an optional size) or an ``Intent`` buy/sell (taken as
  ``on_buy``/``on_sell``), decided as a signal is.
- **Lockstep.** A candle is done (:meth:`_busy`) only once what it caused is settled: no
  order in transit, no fill announced on acceptance still to come, none reported and not
  yet booked, no leg waiting for the ledger. The Lab (which delivers every consequence of a
  candle before the next) and a lockstep replay then decide alike.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

import attrs

from actors.messages import (
    LEDGER,
    CancelOrder,
    FillReport,
    LedgerRefused,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PositionInfo,
    PositionOrderRequest,
    PositionReserve,
    Quote,
    ReservationDenied,
    Send,
    StopTriggered,
    SubmitOrder,
    Tick,
)
from actors.orders import Order, OrderState, Trigger, client_order_id
from actors.strategy.actions_core import ActionPlanner, Decision, OrderIntent, Posture, Step
from actors.strategy.core import BPS, StrategyCore
from actors.strategy.protection_core import (
    CancelProtective,
    PlaceOcoList,
    PlaceProtective,
    ProtectionAction,
    ProtectionCore,
    ProtectionEvent,
    ProtectionSettings,
    ProtectiveOrder,
    Resting,
    retry_wait,
    round_price_to,
)
from actors.strategy.python import PositionIntent, View
from actors.strategy.python import ask as ask_python
from actors.strategy.rules import RuleOutcome
from actors.strategy.settings import StrategySettings
from exchange.candles import Candle
from exchange.records import Side

ZERO = Decimal(0)
CANCELABLE = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED})


def protection_settings(settings: StrategySettings) -> ProtectionSettings | None:
    p = settings.protection
    if p is None or (p.take_profit_pct is None and p.stop_loss_pct is None):
        return None
    return ProtectionSettings(
        take_profit=None if p.take_profit_pct is None else p.take_profit_pct / 100,
        stop_loss=None if p.stop_loss_pct is None else p.stop_loss_pct / 100,
        stop_limit_offset=p.stop_limit_slippage_pct / 100,
        gap_slippage=p.gap_slippage_pct / 100,
    )


class PerpetualStrategyCore(StrategyCore):
    def __init__(
        self, settings: StrategySettings, allocated: Mapping[str, Decimal] | None = None,
        record_evaluations: bool = True,
    ) -> None:
        super().__init__(settings, allocated, record_evaluations)
        #: The ledger's position (signed, base units) and what it says of it.
        self.position = ZERO
        self.position_entry: Decimal | None = None
        self.wallet = ZERO
        self.free_collateral = ZERO
        self.funding_paid = ZERO
        self.margin_used = ZERO
        self.leverage = Decimal(1)
        self.planner: ActionPlanner | None = None
        self.protection: ProtectionCore | None = None
        #: Plan orders (the planner's legs) and protective orders (by the protection's key).
        self._plan: set[str] = set()
        self._key_of: dict[str, str] = {}
        self._cid_of: dict[str, str] = {}
        #: Plan orders that ended, waiting for the ledger to book their fills.
        self._ended: dict[str, frozenset[str]] = {}
        #: Orders asked to be cancelled before the exchange had them.
        self._cancel_on_accept: dict[str, str] = {}
        #: What the action of each order is (for ``order_placed``).
        self._action: dict[str, str] = {}
        self._told: tuple[Decimal, Decimal | None] = (ZERO, None)
        #: A protective order was refused: protection is placed again at ``_resync_at``
        #: (``now`` seconds; a :class:`Tick` or the next candle, whichever comes first).
        self._resync_protection = False
        self._resync_at: float | None = None
        #: Protective orders refused in a row (the wait before placing again doubles).
        self._protective_refusals = 0
        #: Why the exchange refused the position's stop-loss, while none rests for it: no
        #: order that adds to the position is sent meanwhile (:meth:`_stop_missing`).
        self._stop_refused: str | None = None
        self._last_close: Decimal | None = None
        #: A close was refused: the next legs wait for the ledger's next answer.
        self._await_position = False
        #: Protective orders of record to adopt once the protection starts (a restart), and
        #: the stops among them the exchange said triggered meanwhile (StopTriggered).
        self._adopt: list[Order] = []
        self._adopt_triggered: set[str] = set()
        #: This strategy's share of ``allocated`` (pre-flight: the account's balance must
        #: cover the strategies' collateral): its allocation, then its wallet in the ledger.
        self._collateral_counted = self.settings.allocation.quote
        #: Orders the exchange filled (in part) on arrival, and how much of those fills
        #: has not been reported yet (the acceptance says; the fills follow it).
        self._arriving: dict[str, Decimal] = {}
        #: Trades of our orders reported by the connection and not yet booked by the
        #: ledger (trade id -> client order id).
        self._unbooked: dict[str, str] = {}
        #: A reduce-only order was refused with -2022 (nothing to reduce on that side): the
        #: position as the ledger holds it is stale. No close is sent (plan legs or
        #: protection) until the ledger's position changes (fills booked, a repair from the
        #: reconciler's reading of the exchange) or, failing that, until ``_stale_until``
        #: (``now`` seconds; the wait doubles with each refusal in a row, up to STALE_WAIT_MAX).
        self._stale = False
        self._stale_until = 0.0
        self._stale_refusals = 0
        #: A decision's close was withheld while stale: planned again once it is not.
        self._replan = False

    # ------------------------------------------------------------ lifecycle

    def status(self) -> dict[str, Any]:
        out = super().status()
        for spot_only in ("base_free", "dust"):
            out.pop(spot_only, None)
        out.update(
            market_type="swap",
            # ``held``: the signed position, so (mark - entry) x held is its unrealized P&L.
            held=str(self.position),
            position=str(self.position),
            entry_price=None if self.position_entry is None else str(self.position_entry),
            wallet=str(self.wallet),
            free_collateral=str(self.free_collateral),
            margin_used=str(self.margin_used),
            funding_paid=str(self.funding_paid),
            leverage=str(self.leverage),
            working=sorted(self.planner.working) if self.planner else [],
            protection=({k: str(v) for k, v in self.protection.protected_amounts().items()} if self.protection else None),
        )
        return out

    def restore(self, orders: list[Order], now: float) -> list[Send]:
        """As a spot strategy's; besides, the protective orders of record still open are
        adopted by the protection once it starts (they rest on the exchange: placing them
        again would double them), and the other open orders expire as legs do."""
        out = super().restore(orders, now)
        self._adopt = [o for o in self.orders.values() if o.rule.startswith("protection:") and "@" in o.rule]
        self._plan.update(cid for cid, o in self.orders.items() if not o.rule.startswith("protection:"))
        for cid in self._plan:
            # Its trades before the restart were reported to the ledger then (one it missed
            # is reported again, and booked once, by trade id): a leg that ends now does not
            # wait for an answer that names them, or the next leg would wait for ever.
            for trade_id in self.orders[cid].trade_ids:
                self._settled[trade_id] = None
        return out

    def _adopt_protection(self, protection: ProtectionCore) -> None:
        for n, order in enumerate(self._adopt, start=1):
            if order.client_order_id not in self.orders:
                continue  # ended meanwhile
            role, _, group = order.rule.removeprefix("protection:").partition("@")
            kind = "stop_limit" if order.order_type == "stop_limit" else "limit"
            key = f"{'sl' if role == 'stop_loss' else 'tp' if role == 'take_profit' else 'gap'}-r{n}"
            protective = ProtectiveOrder(role, order.side, order.amount, order.price, kind, order.trigger_price)
            triggered = order.client_order_id in self._adopt_triggered
            protection.adopt(Resting(key, role, protective, group, filled=order.filled, triggered=triggered))
            self._key_of[order.client_order_id], self._cid_of[key] = key, order.client_order_id
        self._adopt = []
        self._adopt_triggered.clear()

    def _adopt_plan(self, planner: ActionPlanner) -> None:
        """The plan's orders restored from their records and still working (a restart, or
        a config reload that restarted this strategy) join the new planner's working
        orders: the next decision cancels them before its legs, as it does the orders of a
        decision made in this incarnation (review 13c, F3: a restored open leg kept filling
        beside a flip's close)."""
        for cid in sorted(self._plan):
            order = self.orders.get(cid)
            if order is None or cid in self._ended:
                continue  # ended before the planner existed: _next_legs hears of it
            planner.adopt(cid, order.side, order.amount, order.reduce_only, order.filled,
                          canceling=order.state is OrderState.CANCELING)

    def wants_every_candle(self) -> bool:
        return True

    def _busy(self) -> bool:
        # A plan leg that ended waits for the ledger to book its fills before the next leg
        # (a flip's open) is placed: the candle is not done until then, or a lockstep replay
        # would release the next candle first and the leg would meet another market than
        # the Lab's (which delivers every consequence of a candle before the next).
        # Likewise while fills are not booked yet: the ledger's answer may resize protection.
        return (super()._busy() or bool(self._ended) or self._await_position or bool(self._arriving)
                or bool(self._unbooked))

    def _maybe_activate(self, now: float) -> list[Send]:
        out = super()._maybe_activate(now)
        if self.active and self.planner is None and self.market is not None:
            market = self.market
            assert self._venue is not None
            self.leverage = Decimal(self._venue.leverage.get(market.symbol, 1))
            self.planner = ActionPlanner(market.symbol, market.round_amount, market.min_amount)
            self._adopt_plan(self.planner)
        return out + self._start_protection(now)

    # ------------------------------------------------------------ protection

    def _start_protection(self, now: float) -> list[Send]:
        """Once protection may act (:meth:`_may_protect`: active, or a pre-flight that
        failed after the venue was reconciled: what is held is still protected), the
        protective orders of record are adopted, the position protected, and the stop
        judged at the latest price known (a gap while limitline was down is escalated now,
        not at the next candle's close)."""
        if self.protection is not None or self.market is None or not self._may_protect():
            return []
        settings = protection_settings(self.settings)
        if settings is None:
            return []
        market = self.market
        if self.planner is None and self._venue is not None:
            self.leverage = Decimal(self._venue.leverage.get(market.symbol, 1))
        self.protection = ProtectionCore(settings, round_price_to(market.tick_size), market.min_amount)
        self._adopt_protection(self.protection)
        self._told = (ZERO, None)
        out = self._protect(self.protection.on_position(self.position, self.position_entry), now)
        price = self._latest_price(now) if self.position else None
        if price is not None and not self._unbooked and not self._stale:
            out += self._protect(self.protection.on_price(price), now)
        return out

    def _latest_price(self, now: float) -> Decimal | None:
        """The freshest price of the market for the position's stop: the quote's bid (a
        long's) or ask (a short's) while fresh, else the latest close known."""
        quote = self._quote
        if quote is not None and now - quote.at <= self.settings.quote_max_age_seconds:
            return quote.bid if self.position > 0 else quote.ask
        if self.protection is not None and self.protection.last_price is not None:
            return self.protection.last_price
        return self._venue.last_prices.get(self.settings.symbol) if self._venue is not None else None

    def _on_quote(self, message: Quote, now: float) -> list[Send]:
        """A price between candles: a stop the exchange said triggered, gapped through its
        limit, is escalated now (``confirmed``: the price alone does not say it fired)."""
        self._quote = message
        if self.protection is None or not self._may_protect() or not self.position or self._unbooked or self._stale:
            return []
        price = message.bid if self.position > 0 else message.ask
        return self._protect(self.protection.on_price(price, confirmed=True), now) + self._escalation_step(now)

    def _on_stop_triggered(self, message: StopTriggered, now: float) -> list[Send]:
        """The exchange says the stop triggered and its child rests: judged at once at the
        freshest price known (the quote, else the connection's, else the last close)."""
        if self.protection is None:
            self._adopt_triggered.add(message.client_order_id)  # adopted as triggered
            return []
        key = self._key_of.get(message.client_order_id)
        if key is None or not self._may_protect():
            return []
        self.protection.on_triggered(key)
        quote = self._quote
        fresh = quote is not None and now - quote.at <= self.settings.quote_max_age_seconds
        price = self._latest_price(now) if fresh or message.price is None else message.price
        if price is None or not self.position or self._unbooked or self._stale:
            return []
        return self._protect(self.protection.on_price(price, confirmed=True), now) + self._escalation_step(now)

    # -------------------------------------------------------------- dispatch

    def _handle(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, PositionInfo):
            return self._on_position(message, now)
        cid = getattr(message, "client_order_id", None)
        before = self.orders.get(cid) if cid is not None else None
        if isinstance(message, OrderRejected) and before is not None and before.reduce_only and _moot(message.reason):
            # A reduce-only order refused because the position is already gone (closed by
            # the other protective order, a fill in flight) or a stop the price has
            # already passed (the gap escalation takes over): an expected outcome of a
            # moving position, not a failing exchange; the breaker does not count it.
            out = self._advance(cid, Trigger.REJECTED, now, reason=message.reason)
            out.append(self._event("order_rejected", now, cid, reason=message.reason))
        else:
            out = super()._handle(message, now)
        if cid is None or before is None:
            return out
        if isinstance(message, OrderAccepted) and message.taken > 0:
            self._arriving[cid] = message.taken
        if isinstance(message, FillReport) and message.trade_id not in self._settled:
            self._unbooked[message.trade_id] = cid
        if isinstance(message, LedgerRefused) and message.client_order_id is not None:
            # The ledger could not book it (the strategy pauses): nothing more will come of it.
            self._unbooked = {t: c for t, c in self._unbooked.items() if c != message.client_order_id}
        if isinstance(message, FillReport) and cid in self._arriving:
            left = self._arriving[cid] - message.amount
            if left > 0:
                self._arriving[cid] = left
            else:
                del self._arriving[cid]
        if isinstance(message, OrderAccepted) and cid in self._cancel_on_accept:
            out += self._cancel(cid, self._cancel_on_accept.pop(cid), now)
        elif isinstance(message, OrderAccepted) and cid in self._key_of and self.protection is not None:
            # Accepted (resting): only now is the order it replaces cancelled.
            self._stop_rests(self._key_of[cid])
            out += self._protect(self.protection.on_accepted(self._key_of[cid]), now)
        if isinstance(message, FillReport):
            out += self._filled(cid, message, now, before.rule)
        if cid not in self.orders:  # it ended
            trade_ids = before.trade_ids | ({message.trade_id} if isinstance(message, FillReport) else set())
            out += self._order_ended(cid, message, frozenset(trade_ids), before.reduce_only, now)
        return out + self._escalation_step(now)

    def _on_position(self, info: PositionInfo, now: float) -> list[Send]:
        before = (self.position, self.position_entry)
        self.position, self.position_entry = info.size, info.entry_price
        self.realized_pnl, self.fees_paid = info.realized_pnl, dict(info.fees_paid)
        self.wallet, self.free_collateral = info.wallet, info.free
        settle = self.settings.symbol.partition(":")[2]
        if settle in self.allocated:
            # What must fit the account's balance after trading is the collateral as the
            # ledger holds it (P&L, fees and funding booked), not the allocation first given
            # (as a spot strategy's AccountInfo says): this strategy's share is its wallet.
            self.allocated[settle] += info.wallet - self._collateral_counted
            self._collateral_counted = info.wallet
        self.funding_paid, self.margin_used = info.funding_paid, info.margin_used
        self._balances_known = True
        if self._stale and (info.settled or (info.size, info.entry_price) != before):
            # Fills booked, or the position repaired from the exchange: read again.
            self._stale, self._stale_refusals = False, 0
        for trade_id in info.settled:
            self._settled[trade_id] = None
            self._unbooked.pop(trade_id, None)
        self._await_position = False
        if not info.size:
            self._stop_refused = None  # nothing left to protect
        out = self._maybe_activate(now) + self._decide_waiting(now)
        out += self._next_legs(now)
        # An answer older than fills already reported (the ledger answered a message before
        # their booking) says a position that no longer is: the protection waits for the
        # answer that books them, or it would place orders for a size already gone.
        if (self.protection is not None and not self._unbooked and not self._stale
                and (self.position, self.position_entry) != self._told):
            self._told = (self.position, self.position_entry)
            out += self._protect(self.protection.on_position(self.position, self.position_entry), now)
        return out + self._escalation_step(now)

    # ---------------------------------------------------------------- market

    def on_candle(self, candle: Candle, now: float) -> list[Send]:
        self.market_time = candle.ts
        self._last_close = candle.close
        out = self._expire(candle.ts, now)
        outcomes = [trigger.update(candle) for trigger in (self._buy, self._sell) if trigger is not None]
        buy = outcomes[0] if self._buy is not None else None
        sell = outcomes[-1] if self._sell is not None else None
        wanted: tuple[str, RuleOutcome] | None = None
        if buy is not None and buy.fired and self.settings.on_buy is not None:
            wanted = (self.settings.on_buy, buy)
        if sell is not None and sell.fired and self.settings.on_sell is not None:
            wanted = (self.settings.on_sell, sell)  # both fired: the later rule, as spot sells after buying
        decided: list[Send] = []
        action: dict[str, Any] = {}
        if wanted is not None:
            decided, action = self._decide_position(wanted[0], wanted[1], candle, now)
        if self._python is not None and self.python_failure is None:
            python, asked = self._ask_python(candle, now)
            decided += python
            action = asked or action
        if self.record_evaluations:
            out.append(self._event("evaluated", now, payload={
                "ts": candle.ts, "close": str(candle.close), "position": str(self.position),
                "rules": [{"rule": o.rule, "fired": o.fired, "inputs": o.inputs} for o in outcomes], **action,
            }))
        out += decided
        if self._stale and now >= self._stale_until:
            # No fill and no repair came: the position is read as the ledger holds it
            # once more (one attempt; a refusal again waits twice as long).
            self._stale = False
            self._resync_protection = self.protection is not None
            out += self._next_legs(now)
        if self.protection is not None and self._may_protect():
            if self._resync_protection and not self._stale:
                self._resync_protection = False
                out += self._protect(self.protection.on_position(self.position, self.position_entry), now)
            out += self._protect(self.protection.on_price(candle.close), now)
        return out + self._escalation_step(now)

    def _ask_python(self, candle: Candle, now: float) -> tuple[list[Send], dict[str, Any]]:
        """The Python strategy's wishes on this candle, each decided as a signal is: a
        :class:`PositionIntent` says its posture (or action, and size), an ``Intent('buy')``
        asks for ``on_buy`` (``'sell'``: ``on_sell``). A failure pauses the strategy, as on spot."""
        view = View(self.position, len(self.orders), self.settings.symbol, position=self.position,
                    entry_price=self.position_entry)
        intents, failure = ask_python(self._python, self.settings.python or "", candle, view, positions=True)
        out: list[Send] = []
        if failure is not None:
            self.python_failure = self.paused = failure
            out.append(self._event("strategy_paused", now, reason=failure, payload={"ts": candle.ts}))
        action: dict[str, Any] = {}
        for intent in intents:
            outcome = RuleOutcome(f"python:{intent.reason}", True, {})
            size = None
            if isinstance(intent, PositionIntent):
                posture = _posture(intent, self.position)
                size = None if intent.size is None else Decimal(intent.size)
            else:
                posture = self.settings.on_buy if intent.side == "buy" else self.settings.on_sell
            if posture is None:  # a flip with nothing to flip
                out.append(self._event("blocked", now, rule=outcome.rule, payload={"posture": intent.want},
                                       reason="flip: there is no position to flip (open one instead)"))
                continue
            decided, action = self._decide_position(posture, outcome, candle, now, size)
            out += decided
        return out, action

    def _prices(self, close: Decimal) -> tuple[Decimal, Decimal]:
        """The limit prices a buy and a sell are placed at (the configured offset from the close)."""
        assert self.market is not None
        offset = self.settings.limit_offset_bps / BPS
        buy = self.market.round_price(close * (1 - offset), passive_side_is_down=True)
        sell = self.market.round_price(close * (1 + offset), passive_side_is_down=False)
        return buy, sell

    def _decide_position(
        self, posture: str, outcome: RuleOutcome, candle: Candle, now: float, wanted_size: Decimal | None = None
    ) -> tuple[list[Send], dict[str, Any]]:
        """``wanted_size``: base units (a Python strategy's); else the configured sizing."""
        # As a spot strategy's, less the inventory to sell and max_open_orders (the protective
        # orders resting do not count toward it).
        blocked, changes = self._blocked_any(candle, now)
        out = self._breaker_events(changes, now)
        payload: dict[str, Any] = {"posture": posture}
        if blocked is None and self.protection is not None and self.protection.escalating:
            blocked = "the position is being closed by an escalation of its stop: no decision until it is done"

        if blocked is not None or self.planner is None or self.market is None:
            reason = blocked or "inactive: the market is not known yet"
            return out + [self._event("blocked", now, rule=outcome.rule, reason=reason, payload=payload)], payload
        market = self.market
        buy, sell = self._prices(candle.close)
        if buy <= 0:
            reason = f"price below one tick: close {candle.close} rounds to {buy} at the market's tick {market.tick_size}"
            return out + [self._event("blocked", now, rule=outcome.rule, reason=reason, payload=payload | {"below_tick": True})], payload
        size = ZERO
        if posture != "flat":
            sizing = self.settings.sizing
            raw = wanted_size if wanted_size is not None else (
                sizing.base if sizing.base is not None else (sizing.quote or ZERO) / candle.close)
            size = market.round_amount(raw)
            if size <= 0 or size < market.min_amount:
                reason = f"size {raw} {market.base} rounds to {size}, below the market's minimum {market.min_amount}"
                return out + [self._event("blocked", now, rule=outcome.rule, reason=reason, payload=payload)], payload
        decision = Decision(Posture(posture), size, outcome.rule)
        step = self.planner.decide(decision, self.position, buy, sell)
        if self._stale and any(intent.reduce_only for intent in step.place):
            # A close from a position known to be stale (-2022): the decision is kept, its
            # legs are planned again once the position is read again.
            self._replan = True
            step = attrs.evolve(step, place=())
            payload["held"] = "the position is stale (-2022): the close waits until it is read again"
        payload["action"] = step.action
        if not step.place and not step.cancel and step.action != "hold" and step.note:
            return out + [self._event("blocked", now, rule=outcome.rule, reason=step.note, payload=payload)], payload
        return out + self._apply(step, now), payload

    def _expire(self, market_time: int, now: float) -> list[Send]:
        """Plan orders resting past their time-to-live are cancelled (the planner places
        the leg again at the next price); protective orders rest until they fill or are
        replaced."""
        out: list[Send] = []
        for cid in sorted(self._cancel_again):
            order = self.orders.get(cid)
            if order is not None and order.state is OrderState.CANCELING:
                out.append(Send(self.connection, CancelOrder(cid, self.name, order.reason or "expired")))
        self._cancel_again.clear()
        for cid, order in list(self.orders.items()):
            if cid not in self._plan or order.state not in CANCELABLE:
                continue
            placed = order.market_ts if order.market_ts is not None else market_time
            if market_time - placed >= self.settings.ttl_seconds:
                out += self._advance(cid, Trigger.CANCEL, now, reason="expired")
                out.append(Send(self.connection, CancelOrder(cid, self.name, "expired")))
        return out

    # ---------------------------------------------------------------- orders

    def _apply(self, step: Step, now: float) -> list[Send]:
        out: list[Send] = []
        for cancel in step.cancel:
            out += self._cancel(cancel.client_order_id, cancel.reason, now)
        for intent in step.place:
            out += self._place_leg(intent, now)
        return out

    def _closes_working(self) -> Decimal:
        """What the position's working non-protective reduce-only orders (the plan's
        closes, the escalation) can still close."""
        return sum((o.amount - o.filled for cid, o in self.orders.items() if o.reduce_only and (
            cid in self._plan or o.rule.startswith("protection:escalation"))), ZERO)

    def _close_refused(self, amount: Decimal, what: str, now: float) -> list[Send]:
        """The one rule on closes (review 13): the working reduce-only closes that are not
        the position's protection (take-profit and stop-loss, one cancels the other) never
        add up to more than the position, and none works beside an escalation. [] when
        ``amount`` more fits; else the ``blocked`` event saying why."""
        working = self._closes_working()
        escalating = self.protection is not None and self.protection.escalating and not what.startswith("escalation")
        if not escalating and working + amount <= abs(self.position):
            return []
        reason = ("the position is being closed by an escalation of its stop" if escalating else
                  f"{what} of {amount} with {working} already closing would close more than the position "
                  f"{self.position}")
        return [self._event("blocked", now, reason=f"not sent: {reason}", payload={"leg": what})]

    def _place_leg(self, intent: OrderIntent, now: float) -> list[Send]:
        assert self.planner is not None
        if intent.reduce_only:
            refused = self._close_refused(intent.amount, f"{intent.action} close", now)
            if refused:
                self.planner.decision = None  # the next signal decides again
                return refused
        refused = self._open_refused(intent, now)
        if refused:
            return refused
        group = self.protection.group if (intent.reduce_only and self.protection is not None) else None
        cid, out = self._place(intent.side, intent.amount, intent.price, intent.reduce_only, intent.rule or intent.action,
                               f"{intent.action}:{intent.leg}", now, oco_group=group)
        self._plan.add(cid)
        self.planner.sent(cid, intent)
        return out

    def _place(
        self, side: Side, amount: Decimal, price: Decimal, reduce_only: bool, rule: str, action: str, now: float,
        order_type: str = "limit", trigger: Decimal | None = None, oco_group: str | None = None,
    ) -> tuple[str, list[Send]]:
        assert self.market is not None
        market = self.market
        cid = client_order_id(self.name, self.next_sequence, self.client_id_instance)
        self.next_sequence += 1
        self.orders[cid] = Order(
            client_order_id=cid, strategy=self.name, venue=self.settings.venue, symbol=self.settings.symbol,
            side=side, price=price, amount=amount, state=OrderState.INTENT, created_at=now, updated_at=now,
            rule=rule, market_ts=self.market_time, order_type=order_type, trigger_price=trigger, reduce_only=reduce_only,
        )
        self._action[cid] = action
        self.breaker.sent(cid)
        reserve = PositionReserve(PositionOrderRequest(
            client_order_id=cid, strategy=self.name, symbol=market.symbol, side=side, price=price, amount=amount,
            leverage=self.leverage, fee_rate=max(market.maker_fee, market.taker_fee),
            reduce_only=reduce_only, oco_group=oco_group,
        ), reply_to=self.address)
        return cid, [Send(LEDGER, reserve)]

    def _cancel(self, cid: str, reason: str, now: float) -> list[Send]:
        order = self.orders.get(cid)
        if order is None:
            return []
        if order.state in CANCELABLE:
            return self._advance(cid, Trigger.CANCEL, now, reason=reason) + [
                Send(self.connection, CancelOrder(cid, self.name, reason))]
        if order.state in (OrderState.INTENT, OrderState.RESERVED, OrderState.SUBMITTING):
            self._cancel_on_accept[cid] = reason  # cancelled as soon as the exchange has it
        return []

    def _on_durable(self, cid: str, now: float) -> list[Send]:
        out = self._advance(cid, Trigger.SUBMIT, now)
        order = self.orders.get(cid)
        if order is None or order.state is not OrderState.SUBMITTING:
            return out
        action, _, leg = self._action.get(cid, "").partition(":")
        payload: dict[str, Any] = {
            "type": order.order_type, "side": order.side.value, "symbol": order.symbol, "price": str(order.price),
            "amount": str(order.amount), "reduce_only": order.reduce_only, "action": action,
        }
        if leg:
            payload["leg"] = leg
        if order.trigger_price is not None:
            payload["trigger_price"] = str(order.trigger_price)
        return out + [Send(self.connection, SubmitOrder(order)),
                      self._event("order_placed", now, cid, rule=order.rule, payload=payload)]

    # ------------------------------------------------------- fills and ends

    def _filled(self, cid: str, fill: FillReport, now: float, rule: str) -> list[Send]:
        if cid in self._plan and self.planner is not None:
            self.planner.filled(cid, fill.amount)
            return []
        key = self._key_of.get(cid)
        complete = cid not in self.orders  # this fill ended it
        if key is None or self.protection is None:
            if complete and rule.startswith("protection:"):
                # A protective order of record that traded while limitline was down, heard
                # before the protection started again (a restart): still said; the
                # protection, once made, does not adopt it (it ended).
                role = ROLES.get(rule.removeprefix("protection:").partition("@")[0], rule)
                return [self._event("closed_by_protection", now, cid, rule=rule, reason=(
                    f"the {role} {cid} filled: {fill.amount} @ {fill.price}"), payload={"role": role})]
            return []
        out = self._protect(self.protection.on_fill(key, fill.amount, complete), now)
        if complete:
            role = {"tp": "take-profit", "sl": "stop-loss", "gap": "gap escalation"}.get(key.split("-")[0], key)
            out.append(self._event("closed_by_protection", now, cid, rule=f"protection:{key}", reason=(
                f"the {role} {cid} filled: {fill.amount} @ {fill.price}"), payload={"key": key, "role": role}))
        return out

    def _order_ended(self, cid: str, message: Any, trade_ids: frozenset[str], reduce_only: bool, now: float) -> list[Send]:
        self._action.pop(cid, None)
        self._cancel_on_accept.pop(cid, None)
        self._arriving.pop(cid, None)
        if cid in self._plan:
            self._plan.discard(cid)
            if isinstance(message, (ReservationDenied, OrderRejected)) and self.planner is not None:
                moot = isinstance(message, ReservationDenied) or _moot(message.reason)
                if reduce_only and moot:
                    # A close refused because the position changed under it (protection
                    # closed it, a fill was not booked yet): planned again from the
                    # position the ledger's next answer holds (it follows every denial),
                    # and after -2022 only once that position is read again (_stale).
                    self._ended[cid] = frozenset()
                    self._await_position = True
                    return self._held_stale(cid, message, now)
                # An open that cannot be placed (margin), or a leg the exchange refused
                # for its price: the decision is dropped and the next signal decides
                # again, never retried in a loop.
                self.planner.working.pop(cid, None)
                self.planner.decision = None
                return []
            self._ended[cid] = trade_ids
            return self._next_legs(now)
        key = self._key_of.pop(cid, None)
        if key is None or self.protection is None:
            return []
        self._cid_of.pop(key, None)
        if isinstance(message, FillReport):
            return []  # filled in full: on_fill said what follows
        if isinstance(message, (ReservationDenied, OrderRejected)):
            reason = getattr(message, "reason", "")
            would_trigger = isinstance(message, OrderRejected) and reason.endswith(WOULD_TRIGGER)
            escalation = self.protection.on_refused(key, reason, would_trigger)
            if escalation:
                # A stop the price has already passed: it counts as fired (escalated now).
                return self._protect(escalation, now)
            stale = self._held_stale(cid, message, now)
            if stale:
                return stale + [self._event("protection_refused", now, cid, rule=f"protection:{key}", reason=(
                    f"{key} refused ({reason}); placed again once the position is read again"))]
            wait = self._resync_later(now)
            out = [self._event("protection_refused", now, cid, rule=f"protection:{key}", reason=(
                f"{key} refused ({reason}); placed again in {wait:g}s (refusal {self._protective_refusals} in a row) "
                f"or at the next candle, whichever comes first"), payload={"wait_seconds": f"{wait:g}"})]
            if key.startswith("sl-"):
                out += self._stop_missing(cid, key, reason, now)
            return out
        reason = message.reason if isinstance(message, OrderCanceled) else "ended"
        resting = self.protection.forget(key)
        if resting is None or resting.canceling:
            return []
        # Ended by the exchange (a reduce-only order expires when the position closes):
        # placed again only if the position the ledger's next answer holds needs it (the
        # ledger answers every end), never from a position the fills may have changed.
        self._told = (Decimal(-1), None)
        return [self._event("protection_canceled", now, cid, rule=f"protection:{key}",
                            reason=f"{resting.role} {key} ended outside limitline: {reason}")]

    # ------------------------------------------- protective orders refused

    def _resync_later(self, now: float) -> float:
        """A protective order was refused (not -2021, not -2022): protection is placed
        again after a wait of 1 s, doubled with each refusal in a row, at most 60 s (the
        shell's timer wakes the strategy; the next candle does too), never in a loop.
        The wait, in seconds."""
        self._protective_refusals += 1
        wait = retry_wait(self._protective_refusals)
        self._resync_protection, self._resync_at = True, now + wait
        return wait

    def wake_at(self) -> float | None:
        return self._resync_at if self._resync_protection else None

    def _on_tick(self, message: Tick, now: float) -> list[Send]:
        """The shell's timer: protection refused earlier is placed again once its wait is over."""
        if self._resync_at is None or now < self._resync_at:
            return []
        self._resync_at = None
        if not self._resync_protection or self._stale or self.protection is None or not self._may_protect():
            return []  # the next candle (or the position read again) places it
        self._resync_protection = False
        return self._protect(self.protection.on_position(self.position, self.position_entry), now) \
            + self._escalation_step(now)

    def _stop_missing(self, cid: str, key: str, reason: str, now: float) -> list[Send]:
        """The exchange refused the position's stop-loss (review 13c, F5: e.g. its
        conditional-order slots are full): while no stop rests for the position, nothing
        adds to it. The plan's working opens are cancelled and its decision dropped (the
        next signal decides again; closes still go); ``unprotected`` says so, once per run
        of refusals. No count of its own: each refusal is an exchange failure to the
        breaker like any other (with opens held, repeated ones open it); a count that
        opened it sooner would hold the closes that take the risk away."""
        if not self.position:
            return []
        first = self._stop_refused is None
        self._stop_refused = reason
        out: list[Send] = []
        why = f"the position of {self.position} has no stop-loss resting: {key} was refused ({reason})"
        if self.planner is not None:
            for order in self.planner.working.values():
                if not order.reduce_only and not order.canceling:
                    order.canceling = True
                    self.planner.decision = None
                    out += self._cancel(order.client_order_id, f"{why}: no order adds to it until one rests", now)
        if first:
            out.append(self._event("unprotected", now, cid, rule=f"protection:{key}", reason=(
                f"{why}; no order adds to the position until a stop rests (placed again after a wait)"),
                payload={"key": key}))
        return out

    def _stop_rests(self, key: str) -> None:
        """A protective order ``key`` was accepted: a stop-loss resting again lets opens go.
        The refusals in a row end, unless the stop is the one still refused (a take-profit
        accepted beside it says nothing of the stop's slots)."""
        if key.startswith("sl-"):
            self._stop_refused = None
        if self._stop_refused is None:
            self._protective_refusals = 0

    def _open_refused(self, intent: OrderIntent, now: float) -> list[Send]:
        """An open (or add) while the position's stop-loss is refused: not sent, the
        decision dropped (the next signal decides again). [] when it may go."""
        if intent.reduce_only or self._stop_refused is None or not self.position:
            return []
        assert self.planner is not None
        self.planner.decision = None
        return [self._event("blocked", now, reason=(
            f"not sent: {intent.action} {intent.side.value} {intent.amount} would add to the position of "
            f"{self.position}, which has no stop-loss resting (it was refused: {self._stop_refused}); "
            "opens wait until one rests"), payload={"leg": f"{intent.action} {intent.leg}", "unprotected": True})]

    def _held_stale(self, cid: str, message: Any, now: float) -> list[Send]:
        """A reduce-only order refused with -2022: the exchange holds nothing to reduce on
        that side, so the position here is stale (protection or an operator closed it and
        the fills are not booked yet). Closes wait for the position to be read again; the
        wait doubles with each such refusal in a row. Other refusals: nothing ([])."""
        if not (isinstance(message, OrderRejected) and message.reason.endswith(REDUCE_ONLY_REFUSED)):
            return []
        self._stale_refusals += 1
        wait = min(STALE_WAIT_FIRST * 2 ** (self._stale_refusals - 1), STALE_WAIT_MAX)
        self._stale, self._stale_until = True, now + wait
        return [self._event("close_held", now, cid, reason=(
            f"the exchange refused the reduce-only order {cid} (-2022: no position to reduce on that side): the "
            f"position held here ({self.position}) is stale; no close is sent until the position is read again "
            f"(fills booked, the reconciler's reading) or for {wait:g}s (refusal {self._stale_refusals} in a row)"),
            payload={"wait_seconds": f"{wait:g}", "refusals": self._stale_refusals})]

    def _escalation_step(self, now: float) -> list[Send]:
        """While the position's stop escalates, nothing else closes it or adds to it: the
        plan's working orders (an open leg, a flip's close) are cancelled and its decision
        dropped (the next signal decides again); once they and the cancelled protective
        orders have ended and every fill is booked, the one escalation is placed."""
        protection = self.protection
        if protection is None or not protection.escalating:
            return []
        out: list[Send] = []
        if self.planner is not None:
            self.planner.decision = None
            for order in self.planner.working.values():
                if not order.canceling:
                    order.canceling = True
                    out += self._cancel(order.client_order_id, "the position is being closed by an escalation of "
                                        "its stop: no other order of it works meanwhile", now)
        busy = bool(self.planner and self.planner.working) or bool(self._unbooked) or bool(self._arriving) \
            or bool(self._ended) or self._stale
        return out + self._protect(protection.escalation_due(closes_working=busy), now)

    def _next_legs(self, now: float) -> list[Send]:
        """Plan orders that ended, once the ledger has booked all their fills: the next leg."""
        if self.planner is None or self._last_close is None or self._await_position or self._stale:
            return []
        out: list[Send] = []
        if self._replan:
            self._replan = False
            buy, sell = self._prices(self._last_close)
            out += self._apply(self.planner.replan(self.position, buy, sell), now)
        for cid, trade_ids in list(self._ended.items()):
            if any(t not in self._settled for t in trade_ids):
                continue
            del self._ended[cid]
            buy, sell = self._prices(self._last_close)
            step = self.planner.ended(cid, self.position, buy, sell)
            out += self._apply(step, now)
        return out

    def _protect(self, actions: list[ProtectionAction], now: float) -> list[Send]:
        out: list[Send] = []
        for action in actions:
            if isinstance(action, PlaceProtective):
                order = action.order
                if order.role == "escalation":
                    refused = self._close_refused(order.amount, "escalation", now)
                    if refused:
                        assert self.protection is not None
                        self.protection.forget(action.key)
                        out += refused
                        continue
                kind = "stop_limit" if order.order_type == "stop_limit" else "limit"
                # The rule names the role and the OCO group: after a restart the order is
                # adopted from its record into the protection, not placed again.
                cid, sends = self._place(
                    order.side, order.amount, order.price, True, f"protection:{order.role}@{action.group}",
                    f"protect:{order.role}", now, order_type=kind, trigger=order.trigger_price, oco_group=action.group,
                )
                self._key_of[cid], self._cid_of[action.key] = action.key, cid
                out += sends
            elif isinstance(action, CancelProtective):
                cid = self._cid_of.get(action.key)
                if cid is not None:
                    out += self._cancel(cid, action.reason, now)
            elif isinstance(action, ProtectionEvent):
                out.append(self._event(action.kind, now, reason=action.reason, payload=dict(action.payload)))
            elif isinstance(action, PlaceOcoList):  # spot only; never asked of a perpetual
                raise TypeError("an OCO order list is a spot venue's protection")
        return out


def _posture(intent: PositionIntent, held: Decimal) -> str | None:
    """The posture a Python strategy's :class:`PositionIntent` asks for, given the position
    ``held``; None for a flip of nothing."""
    if intent.want in ("long", "short", "flat"):
        return intent.want
    if intent.want == "open":
        return "long" if intent.side == "buy" else "short"
    if intent.want == "close":
        return "flat"
    return None if not held else ("short" if held > 0 else "long")


#: A protective order's role (its rule ``protection:<role>@<group>``), as events name it.
ROLES = {"take_profit": "take-profit", "stop_loss": "stop-loss", "escalation": "gap escalation"}

#: Binance's codes of a reduce-only order with nothing left to reduce (-2022) and of a stop
#: whose trigger the price has already passed (-2021); exchange.perpetuals gives the same.
REDUCE_ONLY_REFUSED, WOULD_TRIGGER = "(code -2022)", "(code -2021)"
MOOT_CODES = (REDUCE_ONLY_REFUSED, WOULD_TRIGGER)
#: After a -2022 refusal, how long closes wait for the position to be read again (seconds
#: of ``now``): doubled with each refusal in a row, capped.
STALE_WAIT_FIRST, STALE_WAIT_MAX = 1.0, 60.0


def _moot(reason: str) -> bool:
    return reason.endswith(MOOT_CODES)

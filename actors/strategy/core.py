"""A strategy's rules of conduct: when it evaluates, decides, blocks, and how its orders move.

Sans-IO: candles and replies come in as messages with the time, and the core answers with
the messages to send. Its timing rules (time-to-live, cooldown) run on *market time*, the
timestamp of the latest candle, so a replay through shadow mode and a Lab run make the same
decisions whatever the wall clock did.

An order's path: a trigger fires → INTENT and a reservation request to the ledger →
RESERVED, and the intent is written durably → SUBMITTING, sent to the connection → the
exchange's answers move it on (``actors.orders`` holds the table).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

import attrs

from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    AccountInfo,
    AccountQuery,
    CancelFailed,
    CancelOpenOrders,
    CancelOrder,
    CandleClosed,
    CandleDone,
    CheckOrder,
    FillReport,
    LedgerRefused,
    OrderAccepted,
    OrderCanceled,
    OrderDurable,
    OrderOutcomeUnknown,
    OrderRejected,
    Pause,
    Quote,
    StopTriggered,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordOrder,
    ReservationDenied,
    ReservationGranted,
    Reserve,
    Resume,
    Send,
    StrategyReady,
    SubmitOrder,
    Subscribe,
    Tick,
    VenueFacts,
    VenueInfo,
    VenueStatus,
    connection_address,
    strategy_address,
)
from actors.orders import (
    FINAL_STATES,
    IllegalTransition,
    Order,
    OrderState,
    Trigger,
    client_order_id,
    parse_sequence,
    transition,
)
from actors.strategy.breaker import BreakerChange, CircuitBreaker
from actors.strategy.preflight import preflight
from actors.strategy.python import View
from actors.strategy.python import ask as ask_python
from actors.strategy.python import load as load_python
from actors.strategy.rules import RuleOutcome, make_trigger
from actors.strategy.settings import StrategySettings
from actors.strategy.spot_protection_core import SpotProtectionMixin, is_protective
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.records import Side

BPS = Decimal(10000)
#: How many booked trade ids a strategy remembers for candles that wait on them.
SETTLED_REMEMBERED = 4096
#: Orders whose answer is still coming: a lockstep candle is done only when none is left.
IN_TRANSIT = frozenset({OrderState.INTENT, OrderState.RESERVED, OrderState.SUBMITTING, OrderState.CANCELING})


@attrs.frozen
class Wakeups:
    """What a strategy waits for besides its triggers (:meth:`StrategyCore.wakeups`):
    ``expiry``, the market time (epoch seconds) from which its first resting order is past
    its time-to-live; an exit sells once a close is at or above ``take_profit`` or at or
    below ``stop_loss`` (quote per base). None: nothing of that kind."""

    expiry: int | None
    take_profit: Decimal | None
    stop_loss: Decimal | None


class StrategyCore(SpotProtectionMixin):
    def __init__(
        self,
        settings: StrategySettings,
        allocated: Mapping[str, Decimal] | None = None,
        record_evaluations: bool = True,
        triggers: tuple[Any, Any] | None = None,
    ) -> None:
        """``allocated``: every strategy's allocation on this venue, per asset (pre-flight
        checks that they fit the account's balance). ``record_evaluations``: write an
        ``evaluated`` event per candle (the Lab turns it off when it keeps no events).
        ``triggers``: (buy, sell) states to use instead of the incremental ones (the Lab's
        fast path passes outcomes computed up front; same interface, same results)."""
        self.settings = settings
        self.record_evaluations = record_evaluations
        #: The store's client order id instance (``actors.orders.client_order_id``): set by
        #: the shell from the store before :meth:`restore`; "" in the Lab (no store).
        self.client_id_instance = ""
        self.allocated = dict(allocated or {})
        self.breaker = CircuitBreaker(settings.breaker)
        self.name = settings.name
        self.address = strategy_address(settings.name)
        self.connection = connection_address(settings.venue)
        self.market: MarketRules | None = None
        self.active = False
        self.inactive_reason = "pre-flight: waiting for the exchange connection and the ledger"
        self._balances_known = False
        self._reconciled = False
        self._venue: VenueFacts | None = None
        self.preflight_problems: list[str] = []
        #: Why the reconciler paused this strategy, until an operator resumes it.
        self.paused: str | None = None
        self._ack_due: tuple[str, int] | None = None
        #: A closed candle whose fills the ledger has not booked yet, and the trade ids it
        #: has booked lately (an ordered set, trimmed).
        self._waiting: CandleClosed | None = None
        #: Orders whose cancel the exchange refused: asked again at the next candle.
        self._cancel_again: set[str] = set()
        self._settled: dict[str, None] = {}
        #: The venue's latest best bid and ask, if it gives them.
        self._quote: Quote | None = None
        self._ready_sent = False
        #: Orders not yet final, by client order id.
        self.orders: dict[str, Order] = {}
        #: Orders the exchange ended (cancelled, expired) having filled more than we have
        #: seen: their late trades are still applied to them, until the filled amounts meet.
        self.settling: dict[str, Order] = {}
        self.next_sequence = 1
        self.market_time: int | None = None
        self.cooldown_until: int | None = None
        #: What this strategy holds, as the ledger last said (its only source): base held
        #: (free + in open sells), base free, and what the holding cost in quote.
        self.held = Decimal(0)
        self.base_free = Decimal(0)
        self.entry_cost = Decimal(0)
        self.realized_pnl = Decimal(0)
        self.fees_paid: dict[str, Decimal] = {}
        self._python = None
        #: Why the Python strategy's code failed (it raised, or answered nonsense): it is
        #: not called again until an operator resumes the strategy.
        self.python_failure: str | None = None
        if settings.python is not None:
            # A load problem is reported by pre-flight; the strategy then never goes active.
            self._python, _ = load_python(settings.python, dict(settings.params))
        if triggers is not None:
            self._buy, self._sell = triggers
        else:
            self._buy = make_trigger(settings.buy) if settings.buy else None
            self._sell = make_trigger(settings.sell) if settings.sell else None
        self._init_spot_protection()

    # ------------------------------------------------------------ lifecycle

    def start(self, now: float) -> list[Send]:
        return [
            Send(self.connection, Subscribe(self.name, self.settings.symbol)),
            Send(LEDGER, AccountQuery(self.name, self.address)),
            Send(RECONCILER, ReconciledQuery(self.settings.venue, self.address)),
        ]

    def restore(self, orders: list[Order], now: float) -> list[Send]:
        """Pick up where the last incarnation (or process) stopped: its open orders and the
        next sequence. An order that may have been sent without an answer recorded
        (RESERVED or SUBMITTING in the store) is UNKNOWN: it is checked with the exchange,
        never sent again."""
        out: list[Send] = []
        for order in orders:
            sequence = parse_sequence(order.client_order_id)
            if sequence is not None:
                self.next_sequence = max(self.next_sequence, sequence + 1)
            if order.state.is_final:
                if order.final_filled is not None and order.filled < order.final_filled:
                    self.settling[order.client_order_id] = order  # its late trades still count
                continue
            self.orders[order.client_order_id] = order
            if order.state is OrderState.CANCELING:
                # The cancel may have died with the process before the exchange had it: asked
                # again at the next candle (if the exchange has ended it, its evidence comes first).
                self._cancel_again.add(order.client_order_id)
            if order.state in (OrderState.RESERVED, OrderState.SUBMITTING):
                out += self._advance(order.client_order_id, Trigger.OUTCOME_UNKNOWN, now, reason="restarted before the exchange answered")
                out.append(self._event("order_unknown", now, order.client_order_id, reason="restarted before the exchange answered"))
            if self.orders[order.client_order_id].state is OrderState.UNKNOWN:
                out.append(Send(self.connection, CheckOrder(self.orders[order.client_order_id])))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "inactive_reason": None if self.active else self.inactive_reason,
            "open_orders": len(self.orders),
            "held": str(self.held),
            "base_free": str(self.base_free),
            "entry_price": str(self.entry_price) if self.entry_price is not None else None,
            "realized_pnl": str(self.realized_pnl),
            "fees_paid": {k: str(v) for k, v in self.fees_paid.items()},
            "dust": str(self.base_free) if self._is_dust(self.base_free) else None,
            "mode": self.settings.mode,
            "preflight_problems": self.preflight_problems,
            "paused": self.paused,
            "breaker": self.breaker.status(),
            # What its protection rests per role (spot: one OCO list), None without any.
            "protection": ({k: str(v) for k, v in self.spot_protection.protected_amounts().items()}
                           if self.spot_protection is not None else None),
        }

    # -------------------------------------------------------------- dispatch

    def handle(self, message: Any, now: float) -> list[Send]:
        out = self._handle(message, now)
        if self._ack_due is not None and not self._busy():
            symbol, ts = self._ack_due
            self._ack_due = None
            out.append(Send(self.connection, CandleDone(self.name, symbol, ts)))
        return out

    def _busy(self) -> bool:
        """Something this candle caused is still under way (an order in transit): the
        candle is not done yet (a lockstep replay waits for it)."""
        return any(o.state in IN_TRANSIT for o in self.orders.values()) or self._protection_waits()

    def _handle(self, message: Any, now: float) -> list[Send]:
        # One lookup by the message's type (a chain of isinstance checks cost the Lab's
        # fills about twenty checks each); a subclass finds its base's handler.
        name = _DISPATCH.get(type(message))
        if name is None:
            name = next((_DISPATCH[c] for c in type(message).__mro__ if c in _DISPATCH), None)
            if name is None:
                raise TypeError(f"strategy {self.name} does not handle {type(message).__name__}")
        return getattr(self, name)(message, now)

    def _on_candle_closed(self, message: CandleClosed, now: float) -> list[Send]:
        out = self._decide_waiting(now, force=True)  # a newer candle: the older one goes first
        if any(trade_id not in self._settled for trade_id in message.fills):
            # Its fills are not booked yet: decide once the ledger says what we hold.
            self._waiting = message
            return out
        return out + self._closed(message, now)

    def _on_venue_info(self, message: VenueInfo, now: float) -> list[Send]:
        self._venue = message.facts
        out = self._maybe_activate(now)
        # Active (or protecting only) from here, the ledger having answered first: what it
        # holds is protected now, not at the ledger's next answer, which may be a fill away.
        return out + self._protect_holding(now) if self._spot_protected and self._may_protect() else out

    def wake_at(self) -> float | None:
        """When (``now`` seconds) this strategy wants a :class:`Tick` besides its messages
        (the shell's timer sends one then); None: it waits for messages only. A spot
        strategy: when its refused protection is placed again."""
        return self._spot_resync_at

    def _on_tick(self, message: Tick, now: float) -> list[Send]:
        return self._spot_retry(now)

    def _on_quote(self, message: Quote, now: float) -> list[Send]:
        self._quote = message
        return []

    def _on_stop_triggered(self, message: StopTriggered, now: float) -> list[Send]:
        """A stop-limit of ours triggered (a perpetual's: its own core hears it)."""
        return []

    def _may_protect(self) -> bool:
        """Protection of what is already held may be placed, resized and escalated: the
        strategy is active, or its pre-flight failed but the venue has been reconciled
        (our state compared with the exchange's) and the market is known. Protecting a
        position does not depend on being allowed to open one (nor on the breaker or a
        pause); before the first reconciliation nothing is sent."""
        return self.active or (self._reconciled and self._venue is not None and self.market is not None)

    def _on_reconciled(self, message: Reconciled, now: float) -> list[Send]:
        self._reconciled = True
        if self.active:
            return []
        # The reconciliation booked what the exchange did while we were away: pre-flight
        # compares what the account's strategies hold *now* with what the exchange holds
        # now, so both are asked again (orders resting since may have filled).
        self._balances_known = False
        self._venue = None
        return [
            Send(self.connection, Subscribe(self.name, self.settings.symbol)),
            Send(LEDGER, AccountQuery(self.name, self.address)),
        ]

    def _on_pause(self, message: Pause, now: float) -> list[Send]:
        self.paused = message.reason
        return [self._event("strategy_paused", now, reason=message.reason)]

    def _on_resume(self, message: Resume, now: float) -> list[Send]:
        was, self.paused = self.paused, None
        self.python_failure = None  # the operator says: call its code again
        return [self._event("strategy_resumed", now, reason=f"resumed by {message.by} (was: {was})")] if was else []

    def _on_cancel_open_orders(self, message: CancelOpenOrders, now: float) -> list[Send]:
        return self._cancel_open(message.by, now)

    def _on_ledger_refused(self, message: LedgerRefused, now: float) -> list[Send]:
        self.paused = message.reason
        return [self._event("strategy_paused", now, message.client_order_id, reason=message.reason)]

    def _on_account_info(self, message: AccountInfo, now: float) -> list[Send]:
        self.held = message.base_free + message.base_reserved
        self.base_free = message.base_free
        self.entry_cost = message.cost_basis
        self.realized_pnl = message.realized_pnl
        self.fees_paid = dict(message.fees_paid)
        if message.account_holdings:
            # What the account's strategies hold now, not what they were first given:
            # after trading, that is what must fit the exchange's balance.
            self.allocated = dict(message.account_holdings)
        self._balances_known = True
        for trade_id in message.settled:
            self._settled[trade_id] = None
        while len(self._settled) > SETTLED_REMEMBERED:
            del self._settled[next(iter(self._settled))]
        out = self._maybe_activate(now) + self._decide_waiting(now)
        # (a perpetual strategy's protection is its own: actors/strategy/perpetual_core.py)
        return out + self._protect_position(now) if self._spot_protected else out

    def _on_granted(self, message: ReservationGranted, now: float) -> list[Send]:
        if message.amount is None:
            return self._advance(message.client_order_id, Trigger.GRANTED, now, durable=True)
        return self._advance(message.client_order_id, Trigger.GRANTED, now, durable=True, amount=message.amount)

    def _on_durable_message(self, message: OrderDurable, now: float) -> list[Send]:
        return self._on_durable(message.client_order_id, now)

    def _on_accepted(self, message: OrderAccepted, now: float) -> list[Send]:
        out = self._advance(message.client_order_id, Trigger.ACCEPTED, now, exchange_order_id=message.exchange_order_id)
        if self._spot_protected:
            out += self._protective_accepted(message.client_order_id, now)
        return out + self._breaker_events(self.breaker.success(now, message.client_order_id), now)

    def _on_rejected(self, message: OrderRejected, now: float) -> list[Send]:
        out = self._advance(message.client_order_id, Trigger.REJECTED, now, reason=message.reason)
        out.append(self._event("order_rejected", now, message.client_order_id, reason=message.reason))
        return out + self._breaker_events(self.breaker.failure(now, message.reason), now)

    def _on_canceled_message(self, message: OrderCanceled, now: float) -> list[Send]:
        return self._on_canceled(message, now) + self._breaker_events(self.breaker.success(now, message.client_order_id), now)

    def _on_outcome_unknown(self, message: OrderOutcomeUnknown, now: float) -> list[Send]:
        out = self._advance(message.client_order_id, Trigger.OUTCOME_UNKNOWN, now, reason=message.reason)
        return out + self._breaker_events(self.breaker.failure(now, message.reason), now)

    def _on_cancel_failed(self, message: CancelFailed, now: float) -> list[Send]:
        self._cancel_again.add(message.client_order_id)  # asked again at the next candle
        out = [self._event("cancel_failed", now, message.client_order_id, reason=message.reason)]
        return out + self._breaker_events(self.breaker.failure(now, message.reason), now)

    # ---------------------------------------------------------------- market

    def _closed(self, message: CandleClosed, now: float) -> list[Send]:
        if message.ack:
            # Lockstep replay: say when every order this candle caused is answered.
            self._ack_due = (message.symbol, message.candle.ts)
        return self.on_candle(message.candle, now)

    def _decide_waiting(self, now: float, force: bool = False) -> list[Send]:
        """The candle that waited for its fills to be booked, once they are (or now)."""
        waiting = self._waiting
        if waiting is None or not (force or all(t in self._settled for t in waiting.fills)):
            return []
        self._waiting = None
        return self._closed(waiting, now)

    def _on_venue_status(self, status: VenueStatus, now: float) -> list[Send]:
        """Isolated: stop submitting. Recovered: pre-flight again, from fresh facts."""
        self.active = False
        self._venue = None
        if status.isolated:
            self.inactive_reason = f"venue {status.venue} isolated: {status.reason}"
            return [self._event("strategy_inactive", now, reason=self.inactive_reason)]
        self._balances_known = False  # asked again with the venue's facts
        self.inactive_reason = f"pre-flight: venue {status.venue} recovered, checking again"
        return self.start(now)

    def _maybe_activate(self, now: float) -> list[Send]:
        """Run the pre-flight checks once both the exchange and the ledger have answered;
        go active once the venue is reconciled too (after a crash, nothing may be sent
        before our state has been compared with the exchange)."""
        if self.active or self._venue is None or not self._balances_known:
            return []
        # What the account holds is judged once the first reconciliation has booked what
        # the exchange did while we were away (a protective order that filled meanwhile),
        # not from a ledger that has not heard of those fills yet.
        self.preflight_problems = preflight(self.settings, self._venue, self.allocated, balances=self._reconciled)
        if not self.preflight_problems and not self._reconciled:
            self.inactive_reason = f"waiting for the first reconciliation of {self.settings.venue}"
            return []
        if self.preflight_problems:
            self.inactive_reason = f"pre-flight failed: {self.preflight_problems[0]}"
            if self._reconciled and self.settings.symbol in self._venue.markets:
                # Not allowed to open, but what it holds is still protected (_may_protect).
                self.market = self._venue.markets[self.settings.symbol]
            return self._ready() + [
                self._event("preflight_failed", now, reason=self.inactive_reason, payload={"problems": self.preflight_problems})
            ]
        self.market = self._venue.markets[self.settings.symbol]
        self.active = True
        return self._ready() + [self._event("strategy_active", now, reason="pre-flight passed", payload={"symbol": self.market.symbol, "held": str(self.held)})]

    def _ready(self) -> list[Send]:
        """Once: the connection may start a lockstep replay without waiting for us."""
        if self._ready_sent:
            return []
        self._ready_sent = True
        return [Send(self.connection, StrategyReady(self.name))]

    def on_candle(self, candle: Candle, now: float) -> list[Send]:
        self.market_time = candle.ts
        out = self._expire(candle.ts, now)
        if self.spot_protection is not None:
            out += self._protect_price(candle, now)
        outcomes = [trigger.update(candle) for trigger in (self._buy, self._sell) if trigger is not None]
        if self.record_evaluations:
            out.append(self._event(
                "evaluated",
                now,
                payload={
                    "ts": candle.ts,
                    "close": str(candle.close),
                    "rules": [{"rule": o.rule, "fired": o.fired, "inputs": o.inputs} for o in outcomes],
                },
            ))
        buy = outcomes[0] if self._buy is not None else None
        sell = outcomes[-1] if self._sell is not None else None
        if buy is not None and buy.fired:
            out += self._decide(Side.BUY, buy, candle, now)
        exit_rule = self._exit(candle)
        if sell is not None and sell.fired:
            out += self._decide(Side.SELL, sell, candle, now)
        elif exit_rule is not None:
            out += self._decide(Side.SELL, exit_rule, candle, now)
        if self._python is not None and self.python_failure is None:
            view = View(self.held, len(self.orders), self.settings.symbol)
            intents, failure = ask_python(self._python, self.settings.python or "", candle, view)
            if failure is not None:
                # The user's code failed, not this actor: pause this strategy (its code is
                # not called again until an operator resumes it); its siblings go on.
                self.python_failure = self.paused = failure
                out.append(self._event("strategy_paused", now, reason=failure, payload={"ts": candle.ts}))
            for intent in intents:
                side = Side.BUY if intent.side == "buy" else Side.SELL
                out += self._decide(side, RuleOutcome(f"python:{intent.reason}", True, {}), candle, now)
        return out

    def _exit(self, candle: Candle) -> RuleOutcome | None:
        """A take-profit or stop-loss sell, if the close has reached one."""
        s = self.settings
        entry = self.entry_price
        if entry is None or (s.take_profit_pct is None and s.stop_loss_pct is None):
            return None
        sellable = self._sellable()
        if sellable <= 0 or self._is_dust(sellable, candle.close):
            return None  # nothing an exit could sell now (in open sells already, or dust)
        inputs = {"entry": str(entry), "close": str(candle.close)}
        if s.take_profit_pct is not None and candle.close >= entry * (1 + s.take_profit_pct / 100):
            return RuleOutcome(f"take_profit({s.take_profit_pct}%)", True, inputs)
        if s.stop_loss_pct is not None and candle.close <= entry * (1 - s.stop_loss_pct / 100):
            return RuleOutcome(f"stop_loss({s.stop_loss_pct}%)", True, inputs)
        return None

    def wakeups(self) -> Wakeups | None:
        """What this strategy waits for besides its triggers (the Lab's fast path asks, to
        skip the candles on which it cannot act): the market times its resting orders
        expire at, and the closes at which an exit would sell. None: it must see the next
        candle (a cancel to ask again, an answer still to come, a Python strategy)."""
        if self._python is not None or self._cancel_again or self._waiting is not None or self._spot_resync_at is not None:
            return None
        expiries = []
        for order in self.orders.values():
            if order.state not in (OrderState.OPEN, OrderState.PARTIALLY_FILLED) or order.market_ts is None:
                return None
            if is_protective(order):
                continue  # no time-to-live
            due = order.market_ts + self.settings.ttl_seconds
            # Past its time-to-live and still here: kept for dust, until twice it (_expire).
            expiries.append(due if self.market_time is None or self.market_time < due else due + self.settings.ttl_seconds)
        s = self.settings
        entry = self.entry_price
        take_profit = stop_loss = None
        sellable = self._sellable()
        # Nothing to sell, or less than one minimum amount whatever the price: no exit can sell (_exit).
        can_exit = sellable > 0 and (self.market is None or self.market.round_amount(sellable) >= self.market.min_amount)
        if entry is not None and self.held > 0 and can_exit:
            if s.take_profit_pct is not None:
                take_profit = entry * (1 + s.take_profit_pct / 100)
            if s.stop_loss_pct is not None:
                stop_loss = entry * (1 - s.stop_loss_pct / 100)
        gap = self._protective_wake()
        if gap is not None:
            stop_loss = gap if stop_loss is None else max(stop_loss, gap)
        return Wakeups(min(expiries) if expiries else None, take_profit, stop_loss)

    def wants_every_candle(self) -> bool:
        """Whether skipping a candle could change what this strategy does (the Lab's fast
        path asks): orders rest, or a position with exits is held."""
        exits = self.settings.take_profit_pct is not None or self.settings.stop_loss_pct is not None
        return bool(self.orders) or (exits and self.held > 0) or self._python is not None

    # -------------------------------------------------------------- decisions

    def _decide(self, side: Side, outcome: RuleOutcome, candle: Candle, now: float) -> list[Send]:
        protection = self.spot_protection
        if side is Side.SELL and protection is not None and not protection.escalating and not outcome.rule.startswith("protection:"):
            cancels = self._sell_cancels_protection(outcome, candle, now)
            if cancels is not None:
                return cancels
        blocked, changes = self._blocked_reason(side, candle, now)
        out = self._breaker_events(changes, now)
        if blocked is not None:
            return out + [self._event("blocked", now, rule=outcome.rule, reason=blocked, payload={"side": side.value})]
        assert self.market is not None
        market = self.market
        offset = self.settings.limit_offset_bps / BPS
        share = None
        quote = self._quote
        fresh = quote is not None and now - quote.at <= self.settings.quote_max_age_seconds
        best = (quote.bid, quote.ask) if self.settings.price_from == "best" and fresh and quote is not None else None
        reference = (best[0] if side is Side.BUY else best[1]) if best is not None else candle.close
        price = market.round_price(reference * (1 - offset if side is Side.BUY else 1 + offset), passive_side_is_down=side is Side.BUY)
        if price <= 0:
            # A price below one tick rounds (down, for a buy) to 0: no limit order can be
            # placed. A decision, not a crash: the strategy, its siblings and the Lab go on.
            source = "close" if best is None else "best bid" if side is Side.BUY else "best ask"
            reason = (
                f"price below one tick: {source} {reference} at {self.settings.limit_offset_bps} bps rounds to {price} "
                f"at the market's tick {market.tick_size}; no limit order can be placed (is tick_size right for this market?)"
            )
            return out + [self._event("blocked", now, rule=outcome.rule, reason=reason, payload={"side": side.value, "below_tick": True})]
        if side is Side.BUY:
            sizing = self.settings.sizing
            if sizing.percent is not None:
                # Only the ledger knows the free capital right now: it sizes the order.
                share, amount = sizing.percent / 100, Decimal(0)
            else:
                raw = sizing.base if sizing.base is not None else (sizing.quote or Decimal(0)) / price
                amount = market.round_amount(raw)
        else:
            # Everything free, as the ledger counts it at the moment of reserving (it owns
            # the holdings: a fee taken in the coin received is already out of them).
            share, amount = Decimal(1), Decimal(0)
        problem = None if share is not None else market.violation(price, amount)
        if problem is not None:
            return out + [self._event("blocked", now, rule=outcome.rule, reason=problem, payload={"side": side.value})]
        cid = client_order_id(self.name, self.next_sequence, self.client_id_instance)
        self.next_sequence += 1
        order = Order(
            client_order_id=cid,
            strategy=self.name,
            venue=self.settings.venue,
            symbol=self.settings.symbol,
            side=side,
            price=price,
            amount=amount,
            state=OrderState.INTENT,
            created_at=now,
            updated_at=now,
            rule=outcome.rule,
            market_ts=candle.ts,
        )
        self.orders[cid] = order
        self.breaker.sent(cid)  # when half-open, this order is the one probe
        return out + [
            Send(
                LEDGER,
                Reserve(
                    client_order_id=cid,
                    strategy=self.name,
                    side=side,
                    symbol=market.symbol,
                    base=market.base,
                    quote=market.quote,
                    price=price,
                    amount=amount,
                    fee_rate=max(market.maker_fee, market.taker_fee),
                    reply_to=self.address,
                    share_of_free=share,
                    lot_size=market.lot_size,
                    amount_digits=market.amount_digits,
                    min_amount=market.min_amount,
                    min_notional=market.min_notional,
                ),
            )
        ]

    def _blocked_any(self, candle: Candle, now: float) -> tuple[str | None, list[BreakerChange]]:
        """What blocks any new order, spot or position, checked in this order: inactive,
        paused, an UNKNOWN order, the breaker, the cooldown; and the breaker's changes."""
        if not self.active:
            return f"inactive: {self.inactive_reason}", []
        if self.paused is not None:
            return f"paused until an operator resumes it: {self.paused}", []
        unknown = [o.client_order_id for o in self.orders.values() if o.state is OrderState.UNKNOWN]
        if unknown:
            return f"order {unknown[0]} is UNKNOWN: no new order on {self.settings.symbol} until it is resolved", []
        reason, changes = self.breaker.blocked_reason(now)
        if reason is not None:
            return reason, changes
        if self.cooldown_until is not None and candle.ts < self.cooldown_until:
            return f"cooldown after a fill until {self.cooldown_until} (market time)", changes
        return None, changes

    def _blocked_reason(self, side: Side, candle: Candle, now: float) -> tuple[str | None, list[BreakerChange]]:
        """Why the strategy must not act now (None: it may), checked in this order, and any
        change of the breaker's state that asking caused."""
        reason, changes = self._blocked_any(candle, now)
        if reason is not None:
            return reason, changes
        if self.spot_protection is not None and self.spot_protection.escalating:
            return "the holding is being sold by an escalation of its protection: no decision until it is done", changes
        if side is Side.BUY and self._spot_unprotected is not None:
            return (f"the holding of {self.held} has no OCO list resting ({self._spot_unprotected}): no buy adds "
                    f"to it until one rests"), changes
        if sum(not is_protective(o) for o in self.orders.values()) >= self.settings.max_open_orders:
            return f"max open orders reached ({self.settings.max_open_orders})", changes
        if side is Side.SELL:
            base = self.market.base if self.market else "base asset"
            sellable = self._sellable()
            if sellable <= 0 and self.held <= 0:
                return f"nothing to sell: holds no {base}", changes
            if sellable <= 0:
                return f"nothing to sell: all {self.held} {base} held is already in open sell orders", changes
            if self._is_dust(sellable, candle.close):
                return (
                    f"dust: {sellable} {base} free is below the market's minimum "
                    f"({self.market.min_amount if self.market else '?'} {base}, "
                    f"{self.market.min_notional if self.market else '?'} notional); it is sold with the next position",
                    changes,
                )
        return None, changes

    def _sellable(self) -> Decimal:
        """Inventory free in the ledger, unless a sell of ours is under way: a sell takes all
        that is free when it is reserved, and the ledger's answer after it may not be here
        yet (one sell at a time, so no sell is ever sent that the ledger must deny)."""
        if any(o.side is Side.SELL for o in self.orders.values()):
            return Decimal(0)
        return self.base_free

    def _is_dust(self, amount: Decimal, price: Decimal | None = None) -> bool:
        """``amount`` of the base asset is held but cannot be sold alone (below the market's
        minimum amount or notional, once rounded down to the lot)."""
        if self.market is None or amount <= 0:
            return False
        lots = self.market.round_amount(amount)
        reference = price if price is not None else self.entry_price
        return lots < self.market.min_amount or (reference is not None and lots * reference < self.market.min_notional)

    @property
    def entry_price(self) -> Decimal | None:
        """Average entry price of what is held, fees included, as the ledger counts it."""
        return self.entry_cost / self.held if self.held > 0 and self.entry_cost > 0 else None

    def _expire(self, market_time: int, now: float) -> list[Send]:
        out: list[Send] = []
        for cid in sorted(self._cancel_again):
            order = self.orders.get(cid)
            if order is not None and order.state is OrderState.CANCELING:
                out.append(Send(self.connection, CancelOrder(cid, self.name, order.reason or "expired")))
        self._cancel_again.clear()
        for cid, order in list(self.orders.items()):
            if order.state not in (OrderState.OPEN, OrderState.PARTIALLY_FILLED) or is_protective(order):
                continue  # (protection rests until it fills or is replaced: no time-to-live)
            if order.market_ts is None:
                # A row from before the decision's market time was kept: its time-to-live
                # counts from the first candle after the restart (late, but never forever).
                order = self.orders[cid] = attrs.evolve(order, market_ts=market_time)
            placed = order.market_ts
            age = market_time - placed
            if age >= self.settings.ttl_seconds:
                if age < 2 * self.settings.ttl_seconds and self._would_strand_dust(order):
                    continue  # one more time-to-live, to fill enough to be sold
                out += self._advance(cid, Trigger.CANCEL, now, reason="expired")
                out.append(Send(self.connection, CancelOrder(cid, self.name, "expired")))
        return out

    def _cancel_open(self, by: str, now: float) -> list[Send]:
        """Cancel every order resting on the exchange (open or partly filled), as an expiry
        does, with the operator's name as the reason."""
        reason = f"cancelled by {by}"
        out: list[Send] = []
        asked, left = [], []
        for cid, order in list(self.orders.items()):
            if order.state in (OrderState.OPEN, OrderState.PARTIALLY_FILLED):
                out += self._advance(cid, Trigger.CANCEL, now, reason=reason)
                out.append(Send(self.connection, CancelOrder(cid, self.name, reason)))
                asked.append(cid)
            else:
                left.append(f"{cid} ({order.state.value})")
        summary = f"{reason}: {len(asked)} open order(s)" + (f"; not now: {', '.join(left)}" if left else "")
        return out + [self._event("cancel_requested", now, reason=summary, payload={"orders": asked})]

    def _would_strand_dust(self, order: Order) -> bool:
        """Cancelling this partly filled order now would leave base that cannot be sold alone
        (the filled part of a buy, or the unfilled rest of a sell)."""
        if order.filled <= 0:
            return False
        if order.side is Side.BUY:
            free_after = max(self.base_free, order.filled)  # the ledger's answer may lag the fill
        else:
            free_after = self.base_free + order.remaining
        return self._is_dust(free_after, order.price)

    # ----------------------------------------------------------------- replies

    def _on_denied(self, message: ReservationDenied, now: float) -> list[Send]:
        order = self.orders.get(message.client_order_id)
        out = self._advance(message.client_order_id, Trigger.DENIED, now, reason=message.reason)
        self.breaker.withdrawn(message.client_order_id)  # a denied order never reached the exchange
        rule = order.rule if order else None
        return out + [self._event("blocked", now, message.client_order_id, rule=rule, reason=message.reason)]

    def _on_durable(self, cid: str, now: float) -> list[Send]:
        out = self._advance(cid, Trigger.SUBMIT, now)
        order = self.orders.get(cid)
        if order is None or order.state is not OrderState.SUBMITTING:
            return out
        return out + [
            Send(self.connection, SubmitOrder(order)),
            self._event(
                "order_placed",
                now,
                cid,
                rule=order.rule,
                payload={
                    "type": order.order_type,
                    "side": order.side.value,
                    "symbol": order.symbol,
                    "price": str(order.price),
                    "amount": str(order.amount),
                },
            ),
        ]

    def _on_canceled(self, message: OrderCanceled, now: float) -> list[Send]:
        trigger = Trigger.EXPIRED if message.expired else Trigger.CANCELED
        changes: dict[str, Any] = {"final_filled": message.filled} if message.filled is not None else {}
        out = self._advance(message.client_order_id, trigger, now, reason=message.reason, **changes)
        kind = "order_expired" if message.expired else "order_canceled"
        return out + [self._event(kind, now, message.client_order_id, reason=message.reason)]

    def _on_fill(self, fill: FillReport, now: float) -> list[Send]:
        order = self.orders.get(fill.client_order_id) or self.settling.get(fill.client_order_id)
        if order is None or fill.trade_id in order.trade_ids:
            return []  # not ours, already final, or a duplicate report
        filled = order.filled + fill.amount
        trigger = Trigger.FILL_COMPLETE if fill.order_complete or filled >= order.amount else Trigger.FILL
        changes: dict[str, Any] = {}
        if order.state.is_final:
            trigger = Trigger.FILL  # a late trade of an order that ended: it stays ended
        elif trigger is Trigger.FILL_COMPLETE and filled < order.amount:
            changes["final_filled"] = order.amount  # filled on the exchange; a trade is still to come
        out = self._advance(
            fill.client_order_id, trigger, now, filled=filled, trade_ids=order.trade_ids | {fill.trade_id}, **changes
        )
        if self._spot_protected and is_protective(order):
            # (after the move: a complete fill ends the order first, then the protection hears of it)
            out += self._protective_fill(order, fill.amount, trigger is Trigger.FILL_COMPLETE, now, fill.price)
        # What is held changes only by the ledger's answer to this fill (AccountInfo).
        if self.settings.cooldown_seconds and self.market_time is not None:
            self.cooldown_until = self.market_time + self.settings.cooldown_seconds
        return out + [
            self._event(
                "fill",
                now,
                fill.client_order_id,
                rule=order.rule,
                payload={
                    "trade_id": fill.trade_id,
                    "side": fill.side.value,
                    "price": str(fill.price),
                    "amount": str(fill.amount),
                    "fee": str(fill.fee),
                    "fee_currency": fill.fee_currency,
                    "order_complete": trigger is Trigger.FILL_COMPLETE,
                    "taker_or_maker": fill.taker_or_maker,
                    # The last candle this strategy had seen (market time): a taker filled
                    # at its close, a maker on a later one (the dashboard's chart places it).
                    "market_ts": self.market_time,
                },
            )
        ]

    # ------------------------------------------------------------- machinery

    def _breaker_events(self, changes: list[BreakerChange], now: float) -> list[Send]:
        return [
            self._event(f"breaker_{change.new.value}", now, reason=change.reason, payload={"from": change.old.value})
            for change in changes
        ]

    def _advance(self, cid: str, trigger: Trigger, now: float, durable: bool = False, **changes: Any) -> list[Send]:
        """Move one order through the table and record it; refuse what the table forbids."""
        order = self.orders.get(cid) or self.settling.get(cid)
        if order is None:
            return [self._event("unknown_order", now, cid, reason=f"{trigger.value} for an order this strategy does not hold")]
        was_unknown = order.state is OrderState.UNKNOWN
        try:
            order = transition(order, trigger, now, **changes)
        except IllegalTransition as error:
            return [self._event("illegal_transition", now, cid, reason=str(error))]
        out = [Send(WRITER, RecordOrder(order, self.address if durable else None))]
        if was_unknown and order.state is not OrderState.UNKNOWN:
            out.append(self._event("order_resolved", now, cid, reason=f"UNKNOWN -> {order.state.value} on the exchange's evidence"))
        if order.state in FINAL_STATES:
            self.orders.pop(cid, None)
            if order.final_filled is not None and order.filled < order.final_filled:
                # The exchange ended it having filled more than it has reported yet: those
                # trades still come, and still count.
                self.settling[cid] = order
            else:
                self.settling.pop(cid, None)
            if self.spot_protection is not None and is_protective(order) and cid in self._protective_key:
                out += self._protective_ended(order, now)
        else:
            self.orders[cid] = order
        return out

    def _event(
        self,
        kind: str,
        now: float,
        client_order_id: str | None = None,
        *,
        rule: str | None = None,
        reason: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Send:
        return Send(
            WRITER,
            RecordEvent(
                kind=kind,
                actor=self.address,
                at=now,
                strategy=self.name,
                client_order_id=client_order_id,
                rule=rule,
                reason=reason,
                payload=payload or {},
            ),
        )


#: The name of the method of :class:`StrategyCore` that handles each message it can receive
#: (by name: a subclass's override is the one called).
_DISPATCH: dict[type, str] = {
    CandleClosed: "_on_candle_closed",
    VenueInfo: "_on_venue_info",
    Quote: "_on_quote",
    StopTriggered: "_on_stop_triggered",
    VenueStatus: "_on_venue_status",
    Reconciled: "_on_reconciled",
    Pause: "_on_pause",
    Resume: "_on_resume",
    CancelOpenOrders: "_on_cancel_open_orders",
    LedgerRefused: "_on_ledger_refused",
    AccountInfo: "_on_account_info",
    ReservationGranted: "_on_granted",
    ReservationDenied: "_on_denied",
    OrderDurable: "_on_durable_message",
    OrderAccepted: "_on_accepted",
    OrderRejected: "_on_rejected",
    OrderCanceled: "_on_canceled_message",
    OrderOutcomeUnknown: "_on_outcome_unknown",
    CancelFailed: "_on_cancel_failed",
    FillReport: "_on_fill",
    Tick: "_on_tick",
}

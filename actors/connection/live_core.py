"""A connection to one exchange account through ccxt: the rules, without the I/O.

The core never calls ccxt. It returns :class:`ExchangeCall` effects naming an operation of
:mod:`exchange.ccxt_adapter`; the shell runs each on a worker thread and feeds the outcome
back as :class:`CallDone`, already parsed into exchange records. So this module decides,
in one place: what to poll and when, how fast to go (its own rate limiter: ccxt's
synchronous throttle is not safe across threads), what each error means (through
``exchange.errors``), and when the venue is isolated or recovered.

Polling, every ``poll_seconds`` while healthy: closed candles of each subscribed market;
for markets with orders we track, the open orders and our trades since the last one seen.
Trades become fills (deduplicated by trade id); a tracked order that leaves the open list
is looked up to learn whether it filled or was cancelled outside limitline.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import attrs

from actors.connection.pacing import Backoff, RateLimiter
from actors.connection.perpetual_core import ALGO_PREFIX
from actors.connection.simulated_orders import (
    LazySimulatedExchange,
    SimulatedOrders,
    fills_of,
)
from actors.messages import (
    LEDGER,
    WRITER,
    CallDone,
    CancelFailed,
    CancelOrder,
    CandleClosed,
    CandleDone,
    CheckOrder,
    ExchangeCall,
    ExchangeSnapshot,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderOutcomeUnknown,
    OrderRejected,
    Quote,
    RecordEvent,
    Send,
    SnapshotRequest,
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
from actors.orders import Order, OrderState, oco_leg_ids, oco_list_of
from exchange.candles import Candle
from exchange.errors import ErrorKind
from exchange.markets import MarketRules
from exchange.records import ExchangeConditionalOrder, ExchangeOrder, ExchangeOrderList, ExchangeTrade, Side
from exchange.retention import KEEP_FINISHED_ORDERS, KEEP_TRADES, Forgetting


@attrs.frozen
class LiveSettings:
    timeframe: str = "1h"
    #: The timeframe's length (the supervisor computes it by ccxt's rule).
    timeframe_seconds: int = 3600
    poll_seconds: float = 2.0
    #: Requests per second this connection allows itself (token bucket, burst of 2 s).
    rate_limit_per_second: float = 10.0
    #: Unreachable this long (no successful call) isolates the venue.
    isolate_after_seconds: float = 30.0
    #: Longest pause between probes of an isolated venue (doubling from ``poll_seconds``).
    probe_max_seconds: float = 60.0
    #: An UNKNOWN order is declared never placed only after every source (lookup by client
    #: order id, the open orders) has lacked it this long. Until then it blocks its symbol.
    never_placed_after_seconds: float = 60.0
    #: Seed of the back-off's jitter (a run can be replayed).
    seed: int = 0


#: Cancel attempts the exchange refuses while the order stays open, before the strategy
#: hears that the cancel failed (it tries again at its next decision).
CANCEL_ATTEMPTS = 8
#: Before the ids of the shadow strategies' simulated orders and trades on a real venue,
#: so they never take a real order's or trade's id (see SimulatedOrders).
SHADOW_ID_PREFIX = "shadow-"
#: Calls signed with our clock: their success shows the exchange accepts our timestamps.
SIGNED = frozenset({"balance", "create", "cancel", "lookup", "order", "open_orders", "trades", "probe",
                    "snapshot_orders", "snapshot_trades", "snapshot_balance"})
#: The exchange ended these orders without filling the rest (ccxt's unified statuses).
ENDED = {"canceled": "cancelled", "expired": "expired on the exchange", "rejected": "rejected by the exchange"}


@attrs.define
class Tracked:
    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    amount: Decimal
    exchange_order_id: str | None = None
    filled: Decimal = Decimal(0)
    cancel_reason: str | None = None
    #: Looked up by client order id until the exchange says what became of it.
    unknown: bool = False
    unknown_since: float | None = None
    done: bool = False
    #: A cancel we asked for and the exchange has not confirmed: retried with back-off
    #: from ``cancel_due`` until the exchange says cancelled, filled or unknown.
    cancel_due: float | None = None
    cancel_failures: int = 0
    price: Decimal = Decimal(0)
    #: What the exchange said had filled when it ended the order: its trades are polled
    #: until they add up to this.
    final_filled: Decimal | None = None
    #: ``limit``, or ``stop_limit`` (a conditional order: the exchange places a limit order,
    #: its child, when the price reaches ``trigger_price``); ``reduce_only`` for derivatives.
    order_type: str = "limit"
    trigger_price: Decimal | None = None
    reduce_only: bool = False
    #: A triggered conditional order's child order id (its trades carry it).
    child_order_id: str | None = None
    #: An OCO list (``order_type`` ``oco``): its stop-loss-limit's limit, and its legs'
    #: exchange ids (their trades are the list's fills; listed open, the list is open).
    stop_limit_price: Decimal | None = None
    leg_ids: tuple[str, ...] = ()

    @property
    def awaiting_trades(self) -> bool:
        return not self.done or (self.final_filled is not None and self.filled < self.final_filled)


@attrs.frozen
class _Pending:
    what: str
    key: str = ""
    #: When the call was decided (before it waited for the rate limiter or the network).
    issued_at: float = 0.0


class LiveConnectionCore:
    #: The operation that reads the account's balances (a derivatives account: its margin).
    BALANCE_OPERATION = "fetch_balance"

    def __init__(
        self,
        venue: str,
        settings: LiveSettings,
        now: float,
        fatal: str | None = None,
        *,
        shadow_strategies: frozenset[str] = frozenset(),
        shadow_exchange: LazySimulatedExchange | None = None,
        authenticated: bool = True,
    ) -> None:
        """``fatal``: a problem known before any call (e.g. unreadable credentials).

        ``shadow_strategies`` trade on ``shadow_exchange`` (simulated orders, this venue's
        real candles); ``authenticated``: the client has credentials (else no balance call:
        public market data only, for shadow strategies)."""
        self.venue = venue
        self.address = connection_address(venue)
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_limit_per_second, now)
        self.markets: dict[str, MarketRules] | None = None
        self.balances: dict[str, Decimal] = {}
        self._balances_loaded = False
        self.subscribers: dict[str, list[str]] = {}
        self.waiting: list[str] = []  # strategies that subscribed before the markets loaded
        self.tracked: dict[str, Tracked] = {}
        self.by_exchange_id: dict[str, str] = {}
        #: (symbol, trade id) of the trades already reported (Binance numbers trades per
        #: market); a dict as an ordered set: the oldest are forgotten.
        self.trade_ids: dict[tuple[str, str], None] = {}
        #: Of the orders that need nothing more, the most recent are remembered; a late
        #: trade of a forgotten one is the reconciler's (``missed_fill``, from the store).
        self._forget_orders: Forgetting[str, Tracked] = Forgetting(KEEP_FINISHED_ORDERS)
        self._forget_trades: Forgetting[tuple[str, str], None] = Forgetting(KEEP_TRADES)
        self.last_trade_id: dict[str, int] = {}
        self.last_candle_ms: dict[str, int] = {}
        self.last_prices: dict[str, Decimal] = {}
        self.fatal: str | None = fatal
        self.isolated: str | None = f"fatal: {fatal}" if fatal else None
        self.last_success = now
        self.next_poll = now
        self.backoff = settings.poll_seconds
        #: Consecutive failed reads: each pushes the next poll out (doubling, capped, jittered).
        self.read_failures = 0
        #: Each read's own consecutive failures and when it may be asked again: a read that
        #: keeps failing backs off even while the others succeed (which reset the count above).
        self._read_failures: dict[tuple[str, str], int] = {}
        self._read_due: dict[tuple[str, str], float] = {}
        self.retry = Backoff(
            min(2 * settings.poll_seconds, settings.probe_max_seconds), settings.probe_max_seconds, seed=settings.seed
        )
        #: The account balance is asked again from this time after a failure (start-up).
        self._balance_due: float | None = None
        #: The exchange's clock minus ours, in seconds (measured once the markets load).
        self.clock_offset = 0.0
        #: Clock errors of calls signed with a measured clock since the last signed call
        #: that succeeded; why the clock is the problem once measuring it did not help;
        #: calls refused for their timestamp, made again once the clock is measured.
        self.clock_errors = 0
        self.clock_problem: str | None = None
        self._after_sync: list[_Pending] = []
        #: When the latest measurement of the exchange's clock came back: calls signed
        #: before it may have used the clock as it was.
        self._clock_measured_at = float("-inf")
        self.shadow_strategies = shadow_strategies
        self._shadow_exchange = shadow_exchange
        self.shadow: SimulatedOrders | None = None
        self.authenticated = authenticated
        self._restored: list[Order] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._queue: list[ExchangeCall] = []
        self._snapshot_for: list[tuple[str, int]] = []
        self._snapshot_open: tuple[ExchangeOrder, ...] = ()
        self._snapshot_trades: list[ExchangeTrade] = []
        self._snapshot_waiting: set[str] = set()
        self._snapshot_round = 0

    # ------------------------------------------------------------- lifecycle

    def start(self, now: float) -> list[Any]:
        """Markets first, alone: ccxt's market cache must be loaded before concurrent calls."""
        if self.fatal is not None:
            return [self._event("venue_isolated", now, self.isolated or "")]
        return self._call(now, "load_markets", what="markets")

    def restore(self, orders: list[Order], now: float = 0.0) -> None:
        """Track again what a previous incarnation (or process) sent. An order without an
        exchange id may or may not have reached the exchange (a crash between the durable
        intent and the answer): it is UNKNOWN and looked up, never sent again."""
        self._restored = [o for o in orders if o.strategy in self.shadow_strategies]
        for order in orders:
            if order.strategy in self.shadow_strategies:
                continue
            if order.state.on_exchange or order.state is OrderState.RESERVED:
                unknown = order.exchange_order_id is None
                canceling = order.state is OrderState.CANCELING and not unknown
                self.tracked[order.client_order_id] = attrs.evolve(
                    _tracked(order), unknown=unknown, unknown_since=now if unknown else None,
                    # A cancel asked for before the restart and never confirmed: asked again.
                    cancel_reason=(order.reason or "expired") if canceling else None,
                    cancel_due=now if canceling else None,
                )
                if order.exchange_order_id:
                    self.by_exchange_id[order.exchange_order_id] = order.client_order_id
            elif order.final_filled is not None and order.filled < order.final_filled and order.exchange_order_id:
                # Ended on the exchange with trades not yet reported: keep polling for them.
                self.tracked[order.client_order_id] = attrs.evolve(_tracked(order), done=True, final_filled=order.final_filled)
                self.by_exchange_id[order.exchange_order_id] = order.client_order_id
            self.trade_ids.update(dict.fromkeys((order.symbol, trade_id) for trade_id in order.trade_ids))

    def status(self) -> dict[str, Any]:
        return {
            "mode": "live",
            "markets_loaded": self.markets is not None,
            "isolated": self.isolated,
            "tracked_orders": sum(not t.done for t in self.tracked.values()),
            "rate_limited_until": self.limiter.paused_until or None,
            "calls_in_flight": len(self._pending),
            "calls_queued": len(self._queue),
        }

    # -------------------------------------------------------------- dispatch

    def handle(self, message: Any, now: float) -> list[Any]:
        out = self._handle(message, now)
        if self.shadow is not None:
            # The simulated account's changes reach the writer ahead of what they caused
            # (see actors.connection.simulated_orders): shadow strategies continue exactly.
            return self.shadow.record_changes() + out
        return out

    def _handle(self, message: Any, now: float) -> list[Any]:
        if isinstance(message, Tick):
            return self.on_tick(now)
        if isinstance(message, CallDone):
            return self.on_done(message, now)
        if isinstance(message, Subscribe):
            return self.subscribe(message, now)
        if isinstance(message, SubmitOrder):
            return self.submit(message.order, now)
        if isinstance(message, CancelOrder):
            return self.cancel(message, now)
        if isinstance(message, CheckOrder):
            return self.check(message.order, now)
        if isinstance(message, (StrategyReady, CandleDone)):
            return []  # lockstep is for replays; a live market does not wait
        if isinstance(message, SnapshotRequest):
            if self.fatal is not None and self.markets is None:
                return []  # no client: the reconciler records that this venue did not answer
            if self.markets is None:
                # Markets load first, alone (ccxt would load them again inside each call):
                # taken once they are; only the newest request of each asker is kept.
                self._snapshot_for = [(to, i) for to, i in self._snapshot_for if to != message.reply_to]
                self._snapshot_for.append((message.reply_to, message.request_id))
                return []
            self._snapshot_for.append((message.reply_to, message.request_id))
            return self._snapshot_start(now) if len(self._snapshot_for) == 1 else []
        raise TypeError(f"connection {self.venue} does not handle {type(message).__name__}")

    def subscribe(self, message: Subscribe, now: float) -> list[Any]:
        to = strategy_address(message.strategy)
        subscribers = self.subscribers.setdefault(message.symbol, [])
        if to not in subscribers:
            subscribers.append(to)
        if (self.markets is None or not self._balances_loaded) and self.fatal is None:
            self.waiting.append(to)
            return []
        return [Send(to, VenueInfo(self.facts(to)))]

    def facts(self, to: str | None = None) -> VenueFacts:
        """The facts for a strategy's pre-flight: a shadow strategy's balances are those
        of the simulated account its orders go to."""
        error = self.fatal or self.clock_problem or (f"isolated: {self.isolated}" if self.isolated else None)
        balances = dict(self.balances)
        if self.shadow is not None and to is not None and to.removeprefix("strategy:") in self.shadow_strategies:
            balances = {asset: b.free + b.used for asset, b in self.shadow.exchange.balances.items()}
        return VenueFacts(self.venue, error, dict(self.markets or {}), balances, dict(self.last_prices))

    def _answer_waiting(self) -> list[Any]:
        waiting, self.waiting = self.waiting, []
        return [Send(to, VenueInfo(self.facts(to))) for to in waiting]

    def submit(self, order: Order, now: float) -> list[Any]:
        if order.strategy in self.shadow_strategies and self.shadow is not None:
            return list(self.shadow.submit(order, now))
        to = strategy_address(order.strategy)
        if self.isolated or self.fatal:
            rejected = OrderRejected(order.client_order_id, f"venue {self.venue} is isolated: {self.isolated or self.fatal}; not sent", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        tracked = self.tracked[order.client_order_id] = _tracked(order)
        return self._create(tracked, now)

    def _create(self, tracked: Tracked, now: float) -> list[Any]:
        """The order goes out under its client order id (idempotent: a second create with
        the same id is refused by the exchange, never placed twice). A stop-limit is a
        conditional order (ccxt: type ``limit`` with ``stopLossPrice``), never a market type."""
        args = (tracked.symbol, tracked.side, tracked.amount, tracked.price)
        kwargs = {"reduce_only": True} if tracked.reduce_only else {}
        if tracked.order_type == "stop_limit":
            return self._call(now, "create_conditional_order", (*args, tracked.trigger_price, tracked.client_order_id),
                              {"kind": "stop", "reduce_only": tracked.reduce_only},
                              write=True, what="create", key=tracked.client_order_id)
        if tracked.order_type == "oco":
            # Spot protection: one OCO order list (a limit-maker take-profit and a
            # stop-loss-limit), placed through Binance's order-list endpoint.
            return self._call(now, "create_oco_sell", (tracked.symbol, tracked.amount, tracked.price, tracked.trigger_price,
                                                       tracked.stop_limit_price, tracked.client_order_id,
                                                       *oco_leg_ids(tracked.client_order_id)),
                              write=True, what="create", key=tracked.client_order_id)
        if tracked.order_type != "limit":
            raise ValueError(f"order {tracked.client_order_id}: limit orders only, got {tracked.order_type!r}")
        return self._call(now, "create_limit_order", (*args, tracked.client_order_id), kwargs,
                          write=True, what="create", key=tracked.client_order_id)

    def _fetch_order(self, tracked: Tracked, now: float) -> list[Any]:
        """Look the order up by its exchange id (a triggered conditional order: its child)."""
        assert tracked.exchange_order_id is not None
        if tracked.order_type == "oco":
            return self._call(now, "fetch_order_list", (_list_id(tracked.exchange_order_id), tracked.symbol),
                              what="order", key=tracked.client_order_id)
        if tracked.order_type == "stop_limit" and tracked.child_order_id is None:
            return self._call(now, "fetch_conditional_order", (_algo_id(tracked.exchange_order_id), tracked.symbol),
                              what="order", key=tracked.client_order_id)
        order_id = tracked.child_order_id or tracked.exchange_order_id
        return self._call(now, "fetch_order", (order_id, tracked.symbol), what="order", key=tracked.client_order_id)

    def check(self, order: Order, now: float) -> list[Any]:
        """Resolve an UNKNOWN order by evidence: looked up on the next polls."""
        if order.strategy in self.shadow_strategies and self.shadow is not None:
            return list(self.shadow.check(order, now))
        tracked = self.tracked.get(order.client_order_id)
        if tracked is None:
            tracked = self.tracked[order.client_order_id] = _tracked(order)
        if tracked.exchange_order_id is None and not tracked.done and not tracked.unknown:
            tracked.unknown, tracked.unknown_since = True, now
        return []

    def cancel(self, message: CancelOrder, now: float) -> list[Any]:
        if self.shadow is not None and self.shadow.owns(message.client_order_id):
            return list(self.shadow.cancel(message, now))
        tracked = self.tracked.get(message.client_order_id)
        if tracked is None:
            return [Send(strategy_address(message.strategy), CancelFailed(message.client_order_id, "this connection does not track the order", now))]
        tracked.cancel_reason = message.reason
        if tracked.exchange_order_id is None:
            tracked.cancel_due = now  # cancelled as soon as the exchange's id is known
            return []
        tracked.cancel_due = None
        if self._in_flight("cancel", tracked.client_order_id):
            return []  # one cancel of an order on the wire at a time
        return self._cancel(tracked, now)

    def _cancel(self, tracked: Tracked, now: float) -> list[Any]:
        """Cancel by exchange id; a conditional order on the algo endpoint until it has
        triggered, then its child order."""
        assert tracked.exchange_order_id is not None
        if tracked.order_type == "oco":
            return self._call(now, "cancel_order_list", (_list_id(tracked.exchange_order_id), tracked.symbol),
                              write=True, what="cancel", key=tracked.client_order_id)
        if tracked.order_type == "stop_limit" and tracked.child_order_id is None:
            return self._call(now, "cancel_conditional_order", (_algo_id(tracked.exchange_order_id), tracked.symbol),
                              write=True, what="cancel", key=tracked.client_order_id)
        order_id = tracked.child_order_id or tracked.exchange_order_id
        return self._call(now, "cancel_order", (order_id, tracked.symbol), write=True, what="cancel", key=tracked.client_order_id)

    # ----------------------------------------------------------------- time

    def on_tick(self, now: float) -> list[Any]:
        out = self._flush_queue(now)
        if self.fatal is not None and self.markets is None:
            return out  # nothing can be called: the problem needs an operator
        # Unreachable from the start is isolated like unreachable later.
        if now - self.last_success > self.settings.isolate_after_seconds and not self.isolated:
            out += self._isolate(now, f"no successful call for {now - self.last_success:.0f}s")
        if self.markets is None:
            if now >= self.next_poll and not self._in_flight("markets"):
                out += self._call(now, "load_markets", what="markets")
            return out
        if (self._after_sync or self._clock_measured_at == float("-inf")) and self._may_read("clock", "", now):
            out += self._call(now, "sync_clock", what="clock")  # measuring failed: again, after its back-off
        if self._balance_due is not None and now >= self._balance_due and not self._in_flight("balance"):
            self._balance_due = None
            out += self._call(now, self.BALANCE_OPERATION, what="balance")
        for tracked in self.tracked.values():
            if tracked.cancel_due is not None and now >= tracked.cancel_due and not tracked.done and tracked.exchange_order_id:
                tracked.cancel_due = None
                if not self._in_flight("cancel", tracked.client_order_id):
                    out += self._cancel(tracked, now)
        if now < self.next_poll:
            return out
        if self.isolated or self.fatal:
            self.next_poll = now + self.backoff
            self.backoff = min(self.backoff * 2, self.settings.probe_max_seconds)
            # The clock can only be judged by a signed call.
            probe = "fetch_balance" if self.clock_problem and self.authenticated else "fetch_time"
            return out + self._call(now, probe, what="probe")
        self.next_poll = now + self.settings.poll_seconds
        for symbol in self.subscribers:
            if self._may_read("ticker", symbol, now):
                out += self._call(now, "fetch_quote", (symbol,), what="ticker", key=symbol)
            if self._may_read("candles", symbol, now):
                since = self.last_candle_ms.get(symbol)
                out += self._call(now, "fetch_candles", (symbol, self.settings.timeframe, None if since is None else since + 1, 100), what="candles", key=symbol)
        for symbol in sorted({t.symbol for t in self.tracked.values() if t.awaiting_trades}):
            if self._may_read("open_orders", symbol, now):
                out += self._call(now, "fetch_open_orders", (symbol,), what="open_orders", key=symbol)
            if self._may_read("trades", symbol, now):
                last = self.last_trade_id.get(symbol)
                out += self._call(now, "fetch_trades", (symbol, None if last is None else last + 1), what="trades", key=symbol)
        for tracked in self.tracked.values():
            if tracked.unknown and not tracked.done and self._may_read("lookup", tracked.client_order_id, now):
                operation = {"stop_limit": "fetch_conditional_order_by_client_id",
                             "oco": "fetch_order_list_by_client_id"}.get(tracked.order_type, "fetch_order_by_client_id")
                out += self._call(now, operation, (tracked.client_order_id, tracked.symbol), what="lookup", key=tracked.client_order_id)
        return out

    # --------------------------------------------------------------- outcomes

    def on_done(self, done: CallDone, now: float) -> list[Any]:
        pending = self._pending.pop(done.call_id, None)
        if pending is None:
            return []
        if done.error_kind is None:
            if pending.what in SIGNED:
                self.clock_errors = 0
                if pending.what == "probe" or self.clock_problem:
                    self.clock_problem = None  # a signed call went through: the clock is fine
            out = self._succeeded(now)
            self._read_failures.pop((pending.what, pending.key), None)
            self._read_due.pop((pending.what, pending.key), None)
            return out + self._on_result(pending, done.result, now)
        return self._on_error(pending, ErrorKind(done.error_kind), done, now)

    def _succeeded(self, now: float) -> list[Any]:
        self.last_success = now
        self.read_failures = 0
        # Isolated for the clock: only a signed call that goes through (which clears the
        # problem first) shows it is fixed; a public one proves nothing about timestamps.
        if self.isolated and self.fatal is None and self.clock_problem is None:
            return self._recover(now)
        return []

    def _on_result(self, pending: _Pending, result: Any, now: float) -> list[Any]:
        what, key = pending.what, pending.key
        if isinstance(result, ExchangeOrderList):
            result = self._order_list(key, result)  # from here on, the list is one order
        if what == "markets":
            return self._markets_loaded(result, now)
        if what == "balance":
            self.balances = result
            self._balances_loaded = True
            return self._answer_waiting()
        if what == "probe":
            return []
        if what == "clock":
            self.clock_offset = result
            self._clock_measured_at = now
            retry, self._after_sync = self._after_sync, []
            out: list[Any] = []
            for refused in retry:
                out += self._retry_signed(refused, now)
            return out
        if what == "candles":
            return self._candles(key, result, now, pending.issued_at)
        if what == "ticker":
            if result is None:
                return []  # this venue gives no best bid and ask: strategies use the close
            quote = Quote(self.venue, key, *result, at=now)
            return [Send(to, quote) for to in self.subscribers.get(key, [])]
        if what == "open_orders":
            return self._open_orders(key, result, now)
        if what == "trades":
            return self._trades(key, result, now)
        if what == "create":
            tracked = self.tracked[key]
            tracked.exchange_order_id = record_id(result)
            self.by_exchange_id[tracked.exchange_order_id] = key
            return [Send(strategy_address(tracked.strategy), OrderAccepted(key, tracked.exchange_order_id, now))]
        if what == "cancel":
            tracked = self.tracked[key]
            if tracked.done:
                return []
            if result is None:
                # Cancelled, but the answer does not say what had filled: the lookup does,
                # and only then are the order's funds released. (A lookup on the wire or
                # backing off: the open orders poll asks again, as it would anyway.)
                if not self._may_read("order", key, now):
                    return []
                return self._fetch_order(tracked, now)
            return self._closed(tracked, now, canceled_by_us=True, filled=result.filled)
        if what == "lookup":
            if not self.tracked[key].unknown:
                return self._order_status(key, result, now)  # resolved meanwhile (open orders)
            return self._looked_up(key, result, now)
        if what == "order":
            return self._order_status(key, result, now)
        if what.startswith("snapshot_") and key not in self._snapshot_waiting:
            return []  # a late answer of a round given up on: it would make a stale snapshot
        if what == "snapshot_orders":
            return self._snapshot_orders(result, now, key)
        if what == "snapshot_trades":
            self._snapshot_trades += result
            return self._snapshot_done(now, key)
        if what == "snapshot_balance":
            self.balances = result
            return self._snapshot_done(now, key)
        raise AssertionError(f"no handler for {what}")

    def _on_error(self, pending: _Pending, kind: ErrorKind, done: CallDone, now: float) -> list[Any]:
        what, key = pending.what, pending.key
        if what == "cancel" and kind is ErrorKind.REJECTED and _order_not_found(done) and key in self.tracked:
            # Our cancel of an order the exchange no longer has: it filled, or it was a
            # reduce-only order the exchange expired itself when the position closed. That is
            # no error (no exchange_error line): the lookup says what became of it, and an
            # order still open after CANCEL_ATTEMPTS such refusals is a CancelFailed.
            return self._cancel_failed(self.tracked[key], kind, done.error, now)
        out: list[Any] = [self._event("exchange_error", now, f"{what}: {kind.value}: {done.error}", key if what in ("create", "cancel", "lookup") else None)]
        if what.startswith("snapshot_"):
            self._snapshot_for.clear()  # the reconciler times out and asks again
            self._snapshot_waiting.clear()
        if kind is ErrorKind.CLOCK:
            return out + self._clock_error(pending, done.error, now)
        if kind is ErrorKind.FATAL:
            self.fatal = done.error
            out += self._isolate(now, f"fatal: {done.error}")
        elif kind is ErrorKind.RATE_LIMITED:
            pause = done.retry_after if done.retry_after is not None else max(1.0, self.settings.poll_seconds)
            self.limiter.pause(now, pause)
            out.append(self._event("venue_rate_limited", now, f"pausing every request for {pause:g}s"))
        elif what not in ("create", "cancel"):
            # A read failed: the next poll retries it, later each time (capped, jittered),
            # and this read later still while it alone keeps failing.
            self.read_failures += 1
            self.next_poll = max(self.next_poll, now + self.retry.delay(self.read_failures))
            failures = self._read_failures[(what, key)] = self._read_failures.get((what, key), 0) + 1
            self._read_due[(what, key)] = now + self.retry.delay(failures)
        if what in ("markets", "balance"):
            if kind is ErrorKind.FATAL:
                return out + self._answer_waiting()  # with the reason, for their pre-flight
            if what == "balance":
                self._balance_due = max(self.next_poll, self._read_due.get(("balance", ""), now))  # after the back-off
            return out
        if what == "create":
            tracked = self.tracked[key]
            to = strategy_address(tracked.strategy)
            if kind is ErrorKind.AMBIGUOUS:
                tracked.unknown, tracked.unknown_since = True, now
                return out + [Send(to, OrderOutcomeUnknown(key, done.error, now))]
            tracked.done = True
            rejected = OrderRejected(key, self._rejection_reason(kind, done), now)
            return out + [Send(to, rejected), Send(LEDGER, rejected)]
        if what == "cancel":
            return out + self._cancel_failed(self.tracked[key], kind, done.error, now)
        if what == "lookup" and kind is ErrorKind.REJECTED:
            return out + self._not_found(self.tracked[key], now)
        return out

    def _rejection_reason(self, kind: ErrorKind, done: CallDone) -> str:
        """What a refused create is rejected with: the kind and the exchange's message."""
        return f"{kind.value}: {done.error}"

    def _clock_error(self, pending: _Pending, error: str, now: float) -> list[Any]:
        """The exchange refused a request's timestamp (nothing was done).

        A call signed before the latest measurement of the exchange's clock was done (or
        while one is on the wire) says nothing against it: it is made again once measured.
        A call signed with the latest measurement: the first time, the clock is measured
        again and the call made again; if that fails too, the clock is the problem: the
        venue is isolated and its strategies' pre-flight names the clock and the offset."""
        what, key = pending.what, pending.key
        if self._in_flight("clock"):
            self._after_sync.append(pending)
            return []
        if pending.issued_at < self._clock_measured_at:
            return self._retry_signed(pending, now)
        self.clock_errors += 1
        if self.clock_errors == 1:
            self._after_sync.append(pending)
            return self._call(now, "sync_clock", what="clock")
        self.clock_problem = (
            f"clock: {self.venue} refuses this host's request times even after measuring its clock "
            f"(the exchange's clock minus ours: {self.clock_offset * 1000:+.0f} ms; {error}); "
            "synchronise this host's clock (NTP)"
        )
        out: list[Any] = []
        if what == "create":
            tracked = self.tracked[key]
            tracked.done = True
            rejected = OrderRejected(key, self.clock_problem, now)
            out += [Send(strategy_address(tracked.strategy), rejected), Send(LEDGER, rejected)]
        elif what == "balance":
            self._balance_due = now + self.retry.delay(self.clock_errors)
        elif what == "cancel":
            self.tracked[key].cancel_due = now + self.retry.delay(self.clock_errors)
        out += self._isolate(now, self.clock_problem)
        return out + self._answer_waiting()

    def _retry_signed(self, pending: _Pending, now: float) -> list[Any]:
        """Make again a call the exchange refused for its timestamp (nothing was done)."""
        what, key = pending.what, pending.key
        tracked = self.tracked.get(key)
        if what == "create":
            if tracked is not None and tracked.exchange_order_id is None and not tracked.done:
                return self._create(tracked, now)
        elif what == "balance":
            self._balance_due = now
        elif what == "cancel":
            if tracked is not None and not tracked.done:
                tracked.cancel_due = now
        elif what != "probe" and not what.startswith("snapshot_"):
            # A poll or a lookup: the next tick asks again. (The prober keeps its pace; the
            # reconciler asks for its snapshot again.)
            self.next_poll = min(self.next_poll, now)
        return []

    def _cancel_failed(self, tracked: Tracked, kind: ErrorKind, error: str, now: float) -> list[Any]:
        """A cancel is asked again until the exchange says what became of the order.

        A passing failure (429, 5xx, a timeout: a cancel is safe to repeat) is retried with
        back-off. A refusal most often means the order is no longer open (it filled, or was
        cancelled already): the order is looked up, and only if it is still open after
        :data:`CANCEL_ATTEMPTS` refusals does the strategy hear that the cancel failed."""
        if tracked.done:
            return []
        tracked.cancel_failures += 1
        if kind is ErrorKind.REJECTED:
            if tracked.cancel_failures >= CANCEL_ATTEMPTS:
                tracked.cancel_reason, tracked.cancel_failures = None, 0
                failed = CancelFailed(tracked.client_order_id, f"the exchange refused {CANCEL_ATTEMPTS} cancels: {error}", now)
                return [Send(strategy_address(tracked.strategy), failed)]
            out = []
            if self._may_read("order", tracked.client_order_id, now):
                out = self._fetch_order(tracked, now)
        else:
            out = []
        tracked.cancel_due = now + self.retry.delay(tracked.cancel_failures)
        return out

    # ---------------------------------------------------------------- helpers

    def _markets_loaded(self, markets: dict[str, MarketRules], now: float) -> list[Any]:
        self.markets = dict(markets)
        # The exchange's time: closed candles are judged by it, and ccxt signs with it.
        out = self._call(now, "sync_clock", what="clock")
        if self._shadow_exchange is not None and self.shadow is None:
            self.shadow = SimulatedOrders(self.venue, self._shadow_exchange.get(self.markets.values()), id_prefix=SHADOW_ID_PREFIX)
            out += self.shadow.restore(self._restored, now)
        if self._snapshot_for:
            out += self._snapshot_start(now)  # asked for while the markets loaded
        if not self.authenticated:
            self._balances_loaded = True  # public data only: no account to ask
            return out + self._answer_waiting()
        return out + self._call(now, self.BALANCE_OPERATION, what="balance")

    def _candles(self, symbol: str, candles: list[Candle], now: float, asked_at: float) -> list[Any]:
        """Closed candles are news, each once, with its final values. A candle is closed when
        the exchange says so: a newer one follows it, or the exchange's clock had passed its
        end when we asked (not when the answer arrived, and not by our own clock: a late
        answer or a host clock ahead would take a forming candle for a closed one)."""
        frame_ms = self.settings.timeframe_seconds * 1000
        exchange_ms = int((asked_at + self.clock_offset) * 1000)
        first_poll = symbol not in self.last_candle_ms
        last_closed = bool(candles) and candles[-1].ts * 1000 + frame_ms <= exchange_ms
        closed = candles if last_closed else candles[:-1]
        fresh = [c for c in closed if c.ts * 1000 > self.last_candle_ms.get(symbol, -1)]
        if not fresh:
            return []
        self.last_candle_ms[symbol] = fresh[-1].ts * 1000
        self.last_prices[symbol] = fresh[-1].close
        if first_poll:
            return []  # history is not news: decisions start with the next closed candle
        out: list[Any] = []
        for candle in fresh:
            if self.shadow is not None:
                # Simulated orders trade against the real candle before anyone sees it,
                # exactly as on a shadow venue.
                taken = self.shadow.since_last_candle(symbol)
                fills = self.shadow.match(symbol, candle, now)
                out += fills
                fills = taken + fills  # a candle names the fills since the last one
            else:
                fills = []
            out += [Send(to, CandleClosed(self.venue, symbol, candle, fills=fills_of(fills, to))) for to in self.subscribers.get(symbol, [])]
        return out

    def _open_orders(self, symbol: str, orders: list[ExchangeOrder], now: float) -> list[Any]:
        open_ids = {o.exchange_order_id for o in orders}
        out: list[Any] = []
        for listed in orders:  # evidence for UNKNOWN orders: listed open under their client id
            tracked = self.tracked.get(listed.client_order_id)
            if tracked is not None and tracked.unknown and not tracked.done:
                out += self._looked_up(tracked.client_order_id, listed, now)
            of_list = self.tracked.get(oco_list_of(listed.client_order_id) or "")
            if of_list is not None and listed.exchange_order_id not in of_list.leg_ids:
                # A leg of a list we track, listed open: its trades are the list's fills.
                of_list.leg_ids += (listed.exchange_order_id,)
                self.by_exchange_id[listed.exchange_order_id] = of_list.client_order_id
        for tracked in self.tracked.values():
            if (tracked.symbol == symbol and not tracked.done and tracked.exchange_order_id
                    and tracked.exchange_order_id not in open_ids and not open_ids.intersection(tracked.leg_ids)
                    and not self._listed_elsewhere(tracked)
                    and self._may_read("order", tracked.client_order_id, now)):
                out += self._fetch_order(tracked, now)
        return out

    def _order_list(self, cid: str, listed: ExchangeOrderList) -> ExchangeOrder:
        """An OCO list's answer: its legs' exchange ids now map to it (their trades are
        its fills); the list as one order, under its id (:data:`LIST_PREFIX`)."""
        tracked = self.tracked.get(cid)
        if tracked is not None:
            tracked.leg_ids = tuple(leg.exchange_order_id for leg in listed.legs)
            for leg_id in tracked.leg_ids:
                self.by_exchange_id[leg_id] = cid
        return attrs.evolve(listed.summary(), exchange_order_id=LIST_PREFIX + listed.order_list_id)

    def _listed_elsewhere(self, tracked: Tracked) -> bool:
        """The order is not in the open-orders list by its nature (a conditional order waiting
        for its trigger is listed apart); the list's absence says nothing of it."""
        return False

    def _trades(self, symbol: str, trades: list[ExchangeTrade], now: float) -> list[Any]:
        """Our trades become fills, each once. The cursor (the next poll's first trade id)
        never moves past a trade we cannot map to an order yet while an order of ours on
        this market has no exchange id (its create in flight, or UNKNOWN): that trade may
        be its fill, and it is read again once the order is known."""
        unmapped_possible = any(t.symbol == symbol and not t.done and self._id_unknown(t) for t in self.tracked.values())
        cursor = self.last_trade_id.get(symbol, 0)
        held_back: int | None = None
        out: list[Any] = []
        for trade in trades:
            trade_id = trade.trade_id
            number = int(trade_id) if trade_id.isdigit() else 0
            cid = self.by_exchange_id.get(trade.exchange_order_id)
            tracked = self.tracked.get(cid) if cid else None
            key = (symbol, trade_id)
            if tracked is None and unmapped_possible and key not in self.trade_ids:
                held_back = number if held_back is None else min(held_back, number)
            cursor = max(cursor, number)
            if key in self.trade_ids:
                continue
            if tracked is None:
                continue  # not ours (or not known yet): the reconciler classifies those
            self.trade_ids[key] = None
            amount = trade.amount
            tracked.filled += amount
            report = FillReport(
                venue=self.venue, client_order_id=tracked.client_order_id, exchange_order_id=tracked.exchange_order_id or "",
                trade_id=trade_id, symbol=symbol, side=tracked.side, price=trade.price, amount=amount,
                fee=trade.fee, fee_currency=trade.fee_currency, at=now,
                order_complete=tracked.filled >= tracked.amount, taker_or_maker=trade.taker_or_maker,
            )
            if report.order_complete:
                tracked.done = True
            out += [Send(LEDGER, report), Send(strategy_address(tracked.strategy), report)]
        self.last_trade_id[symbol] = cursor if held_back is None else min(cursor, held_back - 1)
        self._forget_finished()
        return out

    def _id_unknown(self, tracked: Tracked) -> bool:
        """The exchange may have made trades of this order under an id we do not know yet:
        its create is unanswered, or it is an OCO list whose legs are not mapped yet (after
        a restart: Binance's trades name a leg's order id, never the list's, so a leg that
        traded while limitline was down is booked only once the list is looked up)."""
        return tracked.exchange_order_id is None or (tracked.order_type == "oco" and not tracked.leg_ids)

    def _forget_finished(self) -> None:
        """Bound the maps of a months-long run: orders that need nothing more (all their
        trades reported, no cancel or lookup pending, no call on the wire) and old trade ids."""
        busy = {pending.key for pending in self._pending.values()}

        def finished(_: str, tracked: Tracked) -> bool:
            return not (tracked.awaiting_trades or tracked.unknown or tracked.cancel_due is not None
                        or tracked.client_order_id in busy)

        for _, tracked in self._forget_orders.sweep(self.tracked, finished):
            for order_id in (tracked.exchange_order_id, tracked.child_order_id, *tracked.leg_ids):
                if order_id is not None:
                    self.by_exchange_id.pop(order_id, None)
        self._forget_trades.sweep(self.trade_ids, lambda _, __: True)

    def _order_status(self, cid: str, order: ExchangeOrder, now: float) -> list[Any]:
        """What a lookup says of an order we track: ended (cancelled, expired, rejected) is
        closed and released; filled is settled by the trades poll; open stays."""
        tracked = self.tracked[cid]
        if order.status in ENDED and not tracked.done:
            return self._closed(tracked, now, canceled_by_us=tracked.cancel_reason is not None, filled=order.filled, status=order.status)
        if order.status == "closed":
            tracked.cancel_due = None  # a cancel that lost the race with the fill: no failure
        return []

    def _not_found(self, tracked: Tracked, now: float) -> list[Any]:
        """The lookup found nothing. Only after the whole window is it declared never placed."""
        since = tracked.unknown_since if tracked.unknown_since is not None else now
        if now - since < self.settings.never_placed_after_seconds:
            return []
        tracked.done, tracked.unknown = True, False
        reason = (
            f"never placed: no trace on the exchange for {now - since:.0f}s "
            "(looked up by client order id, and in the open orders)"
        )
        rejected = OrderRejected(tracked.client_order_id, reason, now)
        return [Send(strategy_address(tracked.strategy), rejected), Send(LEDGER, rejected)]

    def _looked_up(self, cid: str, order: ExchangeOrder, now: float) -> list[Any]:
        """Evidence for an UNKNOWN order: the exchange has it."""
        tracked = self.tracked[cid]
        tracked.unknown = False
        tracked.exchange_order_id = record_id(order)
        self.by_exchange_id[tracked.exchange_order_id] = cid
        to = strategy_address(tracked.strategy)
        if order.status in ENDED:
            return [Send(to, OrderAccepted(cid, tracked.exchange_order_id, now))] + self._closed(
                tracked, now, canceled_by_us=tracked.cancel_reason is not None, filled=order.filled, status=order.status
            )
        return [Send(to, OrderAccepted(cid, tracked.exchange_order_id, now))]

    def _closed(
        self, tracked: Tracked, now: float, canceled_by_us: bool, filled: Decimal | None, status: str = "canceled"
    ) -> list[Any]:
        """The exchange ended the order; ``filled``: how much it says had filled (trades up
        to that may still be reported, and are)."""
        tracked.done = True
        tracked.final_filled = filled
        tracked.cancel_due = None
        if canceled_by_us and tracked.cancel_reason:
            reason = tracked.cancel_reason
        elif status != "canceled":
            reason = ENDED[status]
            canceled_by_us = True  # the exchange's own rule, not an operator: nothing to reconcile
        else:
            reason = "canceled outside limitline"
        canceled = OrderCanceled(tracked.client_order_id, reason, now, expired=reason == "expired", filled=filled)
        out: list[Any] = [Send(strategy_address(tracked.strategy), canceled), Send(LEDGER, canceled)]
        if not canceled_by_us:
            # Found by the connection before the reconciler: the same class in the event log.
            out.append(Send(WRITER, RecordEvent(
                kind="reconcile_difference", actor=self.address, at=now, strategy=tracked.strategy,
                client_order_id=tracked.client_order_id, reason="canceled_outside: the exchange says it was cancelled, not by limitline",
                payload={"class": "canceled_outside", "venue": self.venue, "key": tracked.client_order_id},
            )))
        return out

    def _snapshot_start(self, now: float) -> list[Any]:
        """Open orders and recent trades per market (a symbol-less open-orders call costs
        ten times the rate-limit weight on Binance, and ccxt refuses it), then the balance."""
        self._snapshot_open = ()
        self._snapshot_trades = []
        # Each round's calls carry its number: answers of an earlier round are not this one's.
        self._snapshot_round += 1
        round_ = self._snapshot_round
        # Without credentials there is no account to ask: only the simulated one (shadow).
        symbols = sorted(set(self.subscribers) | {t.symbol for t in self.tracked.values()}) if self.authenticated else []
        self._snapshot_waiting = {f"{round_}|orders:{s}" for s in symbols} | {f"{round_}|trades:{s}" for s in symbols}
        out: list[Any] = []
        for symbol in symbols:
            out += self._call(now, "fetch_open_orders", (symbol,), what="snapshot_orders", key=f"{round_}|orders:{symbol}")
            out += self._call(now, "fetch_trades", (symbol, None, 1000), what="snapshot_trades", key=f"{round_}|trades:{symbol}")
        if self.authenticated:
            self._snapshot_waiting.add(f"{round_}|balance")
            out += self._call(now, self.BALANCE_OPERATION, what="snapshot_balance", key=f"{round_}|balance")
        return out + self._snapshot_done(now, None)

    def _snapshot_orders(self, orders: list[ExchangeOrder], now: float, key: str) -> list[Any]:
        self._snapshot_open += tuple(orders)
        return self._snapshot_done(now, key)

    def _snapshot_done(self, now: float, symbol: str | None) -> list[Any]:
        self._snapshot_waiting.discard(symbol or "")
        if self._snapshot_waiting:
            return []
        waiting, self._snapshot_for = self._snapshot_for, []
        return [Send(to, self._snapshot(now, request_id)) for to, request_id in waiting]

    def _snapshot(self, now: float, request_id: int) -> ExchangeSnapshot:
        listed = self._snapshot_open
        if self.shadow is not None:
            listed += self.shadow.open_orders()
        trades = tuple(self._snapshot_trades) + (self.shadow.trades() if self.shadow is not None else ())
        # Live and shadow strategies of this venue hold the real account and the simulated
        # one between them: the reconciler compares their sum with what they hold.
        balances = dict(self.balances)
        if self.shadow is not None:
            for asset, b in self.shadow.exchange.balances.items():
                balances[asset] = balances.get(asset, Decimal(0)) + b.free + b.used
        return ExchangeSnapshot(self.venue, listed, balances, now, request_id, trades)

    def _isolate(self, now: float, reason: str) -> list[Any]:
        if self.isolated:
            return []
        self.isolated = reason
        self.backoff = self.settings.poll_seconds
        status = VenueStatus(self.venue, True, reason)
        out: list[Any] = [self._event("venue_isolated", now, reason)]
        return out + [Send(to, status) for to in self._all_subscribers()]

    def _recover(self, now: float) -> list[Any]:
        reason = f"recovered after: {self.isolated}"
        self.isolated = None
        self.backoff = self.settings.poll_seconds
        self.next_poll = now
        status = VenueStatus(self.venue, False, reason)
        out: list[Any] = [self._event("venue_recovered", now, reason)]
        return out + [Send(to, status) for to in self._all_subscribers()]

    def _all_subscribers(self) -> list[str]:
        return sorted({to for subscribers in self.subscribers.values() for to in subscribers})

    def _may_read(self, what: str, key: str, now: float) -> bool:
        """The read is not on the wire, and past its back-off if it failed."""
        return not self._in_flight(what, key) and now >= self._read_due.get((what, key), now)

    def _in_flight(self, what: str, key: str = "") -> bool:
        return any(p.what == what and p.key == key for p in self._pending.values())

    def _call(self, now: float, operation: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
              *, write: bool = False, what: str, key: str = "") -> list[Any]:
        call = ExchangeCall(next(self._ids), operation, args, kwargs or {}, write)
        self._pending[call.call_id] = _Pending(what, key, now)
        if self._queue or not self.limiter.take(now):
            self._queue.append(call)
            return []
        return [call]

    def _flush_queue(self, now: float) -> list[Any]:
        out = []
        while self._queue and self.limiter.take(now):
            out.append(self._queue.pop(0))
        return out

    def _event(self, kind: str, now: float, reason: str, cid: str | None = None) -> Send:
        return Send(WRITER, RecordEvent(kind=kind, actor=self.address, at=now, client_order_id=cid, reason=reason))


#: The exchange's codes for "no such order" on a cancel (Binance: -2011 CANCEL_REJECTED,
#: "Unknown order sent."; -2013 NO_SUCH_ORDER), besides ccxt's class name OrderNotFound.
ORDER_NOT_FOUND_CODES = frozenset({-2011, -2013})


def _order_not_found(done: CallDone) -> bool:
    """Whether a refused call says the order does not exist (any more) on the exchange."""
    return done.code in ORDER_NOT_FOUND_CODES or (done.error or "").startswith("OrderNotFound")


def _tracked(order: Order) -> Tracked:
    """What the connection tracks of an order of record."""
    return Tracked(
        order.client_order_id, order.strategy, order.symbol, order.side, order.amount, order.exchange_order_id,
        order.filled, price=order.price, order_type=order.order_type, trigger_price=order.trigger_price,
        reduce_only=order.reduce_only, stop_limit_price=order.stop_limit_price,
    )


#: Before an OCO list's id in the order of record: Binance numbers order lists apart from
#: orders, so a list and an order could share a number.
LIST_PREFIX = "list-"


def _list_id(exchange_order_id: str) -> str:
    return exchange_order_id.removeprefix(LIST_PREFIX)


def record_id(order: ExchangeOrder) -> str:
    """The exchange id an order of record holds: a conditional order's is its algo id with
    :data:`ALGO_PREFIX` (Binance numbers conditional orders apart from the others, so the
    two could share a number), as in shadow mode (``actors.connection.perpetual_core``)."""
    if isinstance(order, ExchangeConditionalOrder):
        return ALGO_PREFIX + order.exchange_order_id
    return order.exchange_order_id


def _algo_id(exchange_order_id: str) -> str:
    return exchange_order_id.removeprefix(ALGO_PREFIX)

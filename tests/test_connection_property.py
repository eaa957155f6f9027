"""The live connection core against a random exchange: plain calls, no I/O, no clock.

A model exchange (one market) answers every call the core makes: at random, it carries the
call out or not, answers at once or some ticks later (so answers overtake each other), fails
it the ways a venue does (5xx, timeouts after acting or not, 429 with Retry-After, a
refused timestamp, a refusal), and between ticks a counterparty fills our orders, the
exchange expires them, an operator cancels them. A strategy stand-in submits orders,
cancels the ones that rest (as a time-to-live would) and folds every answer through the
one transition table; the reconciler asks for snapshots. Then the exchange settles (no
more faults, no more events) and the connection is given time. Required:

- every order is final, and its final state is what the exchange says of it;
- every trade of ours is reported to the ledger once, and only ours;
- each order's reservation is released once, unless it filled;
- no call is made more often than the back-off allows: a failed read waits its back-off
  before it is asked again, a failed cancel likewise, nothing is sent while the venue said
  to wait (Retry-After), and never more than the rate limiter lets through;
- the reconciler's requests are answered again once the venue is healthy.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from decimal import Decimal as D
from typing import Any

import attrs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors.connection.live_core import LiveConnectionCore, LiveSettings
from actors.messages import (
    LEDGER,
    CallDone,
    CancelFailed,
    CancelOrder,
    ExchangeCall,
    ExchangeSnapshot,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderOutcomeUnknown,
    OrderRejected,
    Send,
    SnapshotRequest,
    SubmitOrder,
    Subscribe,
    Tick,
)
from actors.orders import Order, OrderState, Trigger, transition
from exchange.ccxt_adapter import parse_markets
from exchange.records import ExchangeOrder, ExchangeTrade, Side

SYMBOL = "BTC/USDT"
MARKETS = parse_markets({
    SYMBOL: {
        "spot": True, "type": "spot", "active": True, "maker": 0.001, "taker": 0.001,
        "precision": {"price": 0.01, "amount": 0.00001},
        "limits": {"amount": {"min": 0.00001}, "cost": {"min": 5}},
    }
})
TICK = 0.1
RATE = 20.0
SETTINGS = LiveSettings(
    poll_seconds=0.5, rate_limit_per_second=RATE, isolate_after_seconds=6, probe_max_seconds=4,
    never_placed_after_seconds=5,
)
FIRST_RETRY = min(2 * SETTINGS.poll_seconds, SETTINGS.probe_max_seconds)
#: Calls signed with a timestamp (the others cannot be refused for the clock).
SIGNED = {"fetch_balance", "create_limit_order", "cancel_order", "fetch_order", "fetch_order_by_client_id",
          "fetch_open_orders", "fetch_trades"}
WRITES = {"create_limit_order", "cancel_order"}
#: Reads the core polls or looks up, each backing off on its own (the reconciler paces its
#: snapshots, the prober has its own doubling, markets and the clock come first).
BACKED_OFF = {"ticker", "candles", "open_orders", "trades", "lookup", "order", "balance"}
AMOUNT = D("0.1")


@attrs.define
class Faults:
    """Per call: the chances of each way to fail, and of an answer held for some ticks."""

    fail: float = 0.0  # a 5xx or a timeout, before acting (reads: transient; writes: ambiguous)
    fail_after_acting: float = 0.0  # writes only: acted, then a 5xx or a timeout (ambiguous)
    rate_limited: float = 0.0
    clock: float = 0.0
    refused: float = 0.0  # writes only: -2010 / -2011 without acting
    late: float = 0.0
    max_delay_ticks: int = 0


HEALTHY = Faults()


class ModelExchange:
    """One account on one market, answering the adapter's operations with its records."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.orders: dict[str, dict[str, Any]] = {}  # exchange id -> order
        self.by_cid: dict[str, str] = {}
        self.trades: list[ExchangeTrade] = []
        self._next_order = 100
        self._next_trade = 1

    def record(self, order: dict[str, Any]) -> ExchangeOrder:
        return ExchangeOrder(order["cid"], order["id"], SYMBOL, order["side"], order["price"], order["amount"],
                             order["filled"], order["status"])

    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["status"] == "open"]

    # ------------------------------------------------------- what others do

    def fill(self, order: dict[str, Any], amount: D) -> None:
        amount = min(amount, order["amount"] - order["filled"])
        if amount <= 0 or order["status"] != "open":
            return
        order["filled"] += amount
        if order["filled"] == order["amount"]:
            order["status"] = "closed"
        self.trades.append(ExchangeTrade(str(self._next_trade), order["id"], SYMBOL, order["side"], order["price"],
                                         amount, amount * D("0.001"), "BTC", client_order_id=order["cid"]))
        self._next_trade += 1

    def end(self, order: dict[str, Any], status: str) -> None:
        if order["status"] == "open":
            order["status"] = status

    # ---------------------------------------------------------- operations

    def perform(self, operation: str, args: tuple[Any, ...]) -> tuple[str | None, Any]:
        """(error kind or None, result) of carrying the call out now."""
        if operation == "load_markets":
            return None, MARKETS
        if operation == "sync_clock":
            return None, 0.0
        if operation in ("fetch_balance",):
            return None, {"USDT": D(100000), "BTC": D(2)}
        if operation == "fetch_time":
            return None, 1_700_000_000_000
        if operation == "fetch_quote":
            return None, None
        if operation == "fetch_candles":
            return None, []
        if operation == "fetch_open_orders":
            return None, [self.record(o) for o in self.open_orders()]
        if operation == "fetch_trades":
            symbol, from_id, *_ = args + (None,)
            return None, [t for t in self.trades if from_id is None or int(t.trade_id) >= from_id]
        if operation == "fetch_order":
            order = self.orders.get(args[0])
            return ("rejected", "OrderNotFound: -2013") if order is None else (None, self.record(order))
        if operation == "fetch_order_by_client_id":
            eid = self.by_cid.get(args[0])
            return ("rejected", "OrderNotFound: -2013") if eid is None else (None, self.record(self.orders[eid]))
        if operation == "create_limit_order":
            symbol, side, amount, price, cid = args
            if cid in self.by_cid:
                return "rejected", "InvalidOrder: -2010 Duplicate order sent."
            eid = str(self._next_order)
            self._next_order += 1
            self.orders[eid] = {"id": eid, "cid": cid, "side": side, "price": price, "amount": amount,
                                "filled": D(0), "status": "open"}
            self.by_cid[cid] = eid
            return None, self.record(self.orders[eid])
        if operation == "cancel_order":
            order = self.orders.get(args[0])
            if order is None or order["status"] != "open":
                return "rejected", "OrderNotFound: -2011 Unknown order sent."
            order["status"] = "canceled"
            # Binance's answer says what had filled; an answer may also say nothing of it.
            return None, self.record(order) if self.rng.random() < 0.7 else None
        raise AssertionError(f"the model has no {operation}")


@attrs.define
class Pending:
    due: int  # tick at which the answer arrives
    order: float  # tie-break: answers due at the same tick arrive in random order
    done: CallDone


@attrs.define
class Run:
    """The core, the exchange, the strategy stand-in, and everything observed."""

    rng: random.Random
    core: LiveConnectionCore = attrs.field(init=False)
    exchange: ModelExchange = attrs.field(init=False)
    tick: int = 0
    faults: Faults = HEALTHY
    pending: list[Pending] = attrs.Factory(list)
    orders: dict[str, Order] = attrs.Factory(dict)  # the strategy's view, folded through the table
    to_cancel: set[str] = attrs.Factory(set)  # resting orders to cancel (a time-to-live)
    cancel_again: set[str] = attrs.Factory(set)  # after a CancelFailed, as the strategy does
    #: (sequence, time, what, key, operation, args) of every call the core emitted, and
    #: (sequence, time, what, key, outcome) of every answer fed back; ``what`` and ``key``
    #: are the core's names for the call. One sequence orders both.
    sent: list[tuple[int, float, str, str, str, tuple[Any, ...]]] = attrs.Factory(list)
    answered: list[tuple[int, float, str, str, str | None]] = attrs.Factory(list)
    #: (sequence, until) of each Retry-After.
    paused: list[tuple[int, float]] = attrs.Factory(list)
    #: (sequence, client order id) of each CancelFailed.
    cancel_failed: list[tuple[int, str]] = attrs.Factory(list)
    seq: int = 0
    settled_at: float = 0.0
    unknown: int = 0
    fills_to_ledger: list[FillReport] = attrs.Factory(list)
    released: Counter = attrs.Factory(Counter)
    snapshots_asked: list[float] = attrs.Factory(list)  # when each request was made (its id: index + 1)
    snapshots_answered: set[int] = attrs.Factory(set)
    clock_refused_creates: Counter = attrs.Factory(Counter)

    def __attrs_post_init__(self) -> None:
        self.core = LiveConnectionCore("binance", attrs.evolve(SETTINGS, seed=self.rng.randrange(1 << 30)), now=0.0)
        self.exchange = ModelExchange(self.rng)
        self.effects(self.core.handle(Subscribe("s", SYMBOL), 0.0))
        self.effects(self.core.start(0.0))

    @property
    def now(self) -> float:
        return round(self.tick * TICK, 6)

    # ------------------------------------------------------------- driving

    def effects(self, out: list[Any]) -> None:
        for effect in out:
            if isinstance(effect, ExchangeCall):
                self.call(effect)
            elif isinstance(effect, Send):
                self.deliver(effect)

    def call(self, call: ExchangeCall) -> None:
        pending = self.core._pending[call.call_id]  # white-box: which of the core's calls this is
        self.seq += 1
        self.sent.append((self.seq, self.now, pending.what, pending.key, call.operation, call.args))
        f, rng = self.faults, self.rng
        roll = rng.random()
        kind: str | None
        if roll < f.rate_limited:
            kind, result, retry_after = "rate_limited", "DDoSProtection: 429", rng.choice([None, 0.5, 1.0, 2.0])
        elif call.operation in SIGNED and roll < f.rate_limited + f.clock:
            kind, result, retry_after = "clock", "InvalidNonce: -1021", None
        elif roll < f.rate_limited + f.clock + f.fail:
            kind, result, retry_after = ("ambiguous" if call.write else "transient"), "RequestTimeout", None
        elif call.write and roll < f.rate_limited + f.clock + f.fail + f.refused:
            kind, result, retry_after = "rejected", "InvalidOrder: -2010 refused", None
        else:
            kind, result = self.exchange.perform(call.operation, call.args)
            retry_after = None
            if call.write and kind is None and rng.random() < f.fail_after_acting:
                kind, result = "ambiguous", "ExchangeNotAvailable: 503 after acting"
        if kind == "clock" and call.operation == "create_limit_order":
            self.clock_refused_creates[call.args[4]] += 1
        delay = rng.randint(1, f.max_delay_ticks) if f.max_delay_ticks and rng.random() < f.late else 0
        done = CallDone(call.call_id, result if kind is None else None, error_kind=kind,
                        error="" if kind is None else str(result), retry_after=retry_after)
        self.pending.append(Pending(self.tick + delay, rng.random(), done))

    def deliver(self, send: Send) -> None:
        message = send.message
        if send.to == LEDGER:
            if isinstance(message, FillReport):
                self.fills_to_ledger.append(message)
            elif isinstance(message, (OrderCanceled, OrderRejected)):
                self.released[message.client_order_id] += 1
            return
        if isinstance(message, ExchangeSnapshot):
            self.snapshots_answered.add(message.request_id)
            return
        if send.to != "strategy:s":
            return  # events for the writer
        cid = getattr(message, "client_order_id", None)
        order = self.orders.get(cid)
        if order is None:
            return  # VenueInfo, VenueStatus, quotes
        if isinstance(message, OrderAccepted):
            self.orders[cid] = transition(order, Trigger.ACCEPTED, self.now, exchange_order_id=message.exchange_order_id)
        elif isinstance(message, OrderRejected):
            self.orders[cid] = transition(order, Trigger.REJECTED, self.now)
        elif isinstance(message, OrderOutcomeUnknown):
            self.unknown += 1
            self.orders[cid] = transition(order, Trigger.OUTCOME_UNKNOWN, self.now)
        elif isinstance(message, OrderCanceled):
            trigger = Trigger.EXPIRED if message.expired else Trigger.CANCELED
            self.orders[cid] = transition(order, trigger, self.now, final_filled=message.filled)
        elif isinstance(message, CancelFailed):
            self.seq += 1
            self.cancel_failed.append((self.seq, cid))
            self.cancel_again.add(cid)  # the strategy asks again at its next decision
        elif isinstance(message, FillReport):
            # As the strategy does: a late trade of an order that ended leaves it ended.
            filled = order.filled + message.amount
            if order.state.is_final:
                trigger = Trigger.FILL
            else:
                trigger = Trigger.FILL_COMPLETE if message.order_complete or filled >= order.amount else Trigger.FILL
            self.orders[cid] = transition(order, trigger, self.now, filled=filled)

    def step(self) -> None:
        """One tick: answers due arrive, the clock ticks, the strategy acts on what it knows."""
        due = sorted((p for p in self.pending if p.due <= self.tick), key=lambda p: (p.due, p.order))
        self.pending = [p for p in self.pending if p.due > self.tick]
        for p in due:
            pending = self.core._pending.get(p.done.call_id)
            if pending is not None:
                self.seq += 1
                self.answered.append((self.seq, self.now, pending.what, pending.key, p.done.error_kind))
                if p.done.error_kind == "rate_limited":
                    wait = p.done.retry_after if p.done.retry_after is not None else max(1.0, SETTINGS.poll_seconds)
                    self.paused.append((self.seq, self.now + wait))
            self.effects(self.core.handle(p.done, self.now))
        self.effects(self.core.handle(Tick(self.now), self.now))
        again, self.cancel_again = self.cancel_again, set()
        for cid in sorted(again):
            if self.orders[cid].state is OrderState.CANCELING:
                self.effects(self.core.handle(CancelOrder(cid, "s", "expired"), self.now))
        for cid in sorted(self.to_cancel):
            if self.orders[cid].state in (OrderState.OPEN, OrderState.PARTIALLY_FILLED):
                self.orders[cid] = transition(self.orders[cid], Trigger.CANCEL, self.now, reason="expired")
                self.effects(self.core.handle(CancelOrder(cid, "s", "expired"), self.now))
                self.to_cancel.discard(cid)
            elif self.orders[cid].state is not OrderState.SUBMITTING and self.orders[cid].state is not OrderState.UNKNOWN:
                self.to_cancel.discard(cid)  # cancelling, or final: nothing to ask
        self.tick += 1

    # ------------------------------------------------------------- actions

    def submit(self, side: Side) -> None:
        cid = f"c{len(self.orders) + 1}"
        order = Order(cid, "s", "binance", SYMBOL, side, D("100"), AMOUNT, OrderState.SUBMITTING, self.now, self.now)
        self.orders[cid] = order
        self.effects(self.core.handle(SubmitOrder(order), self.now))

    def snapshot(self) -> None:
        self.snapshots_asked.append(self.now)
        self.effects(self.core.handle(SnapshotRequest("reconciler", len(self.snapshots_asked)), self.now))

    def exchange_event(self, kind: str, pick: int, share: int) -> None:
        resting = self.exchange.open_orders()
        if not resting:
            return
        order = resting[pick % len(resting)]
        if kind == "fill":
            self.exchange.fill(order, (order["amount"] * share / 4).quantize(D("0.00001")))
        else:
            self.exchange.end(order, "canceled" if kind == "operator_cancel" else "expired")

    def settled(self) -> bool:
        return (all(o.state.is_final for o in self.orders.values()) and not self.pending
                and all(t.done and not t.awaiting_trades for t in self.core.tracked.values()))


SUBMIT = st.tuples(st.just("submit"), st.sampled_from([Side.BUY, Side.SELL]))
FILL = st.tuples(st.just("fill"), st.integers(0, 20), st.integers(1, 4))
CANCEL = st.tuples(st.just("cancel"), st.integers(0, 20))
STEP = st.one_of(
    SUBMIT, SUBMIT, SUBMIT, FILL, FILL, FILL, CANCEL, CANCEL,
    st.tuples(st.sampled_from(["expire", "operator_cancel"]), st.integers(0, 20), st.just(0)),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("wait"), st.integers(1, 30)),
)
FAULTS = st.builds(
    Faults,
    fail=st.floats(0.02, 0.4), fail_after_acting=st.floats(0, 0.4), rate_limited=st.floats(0, 0.05),
    clock=st.floats(0, 0.1), refused=st.floats(0, 0.3), late=st.floats(0, 0.6), max_delay_ticks=st.integers(0, 15),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=10, max_size=60), faults=FAULTS, seed=st.integers(0, 2**32 - 1))
def test_against_a_random_exchange_every_order_ends_every_trade_is_reported_once_and_calls_back_off(steps, faults, seed):
    run = Run(random.Random(seed))
    run.faults = faults
    for _ in range(5):
        run.step()  # markets, clock, balance
    for step in steps:
        if step[0] == "submit":
            run.submit(step[1])
        elif step[0] == "cancel":
            live = sorted(run.orders)
            if live:
                run.to_cancel.add(live[step[1] % len(live)])
        elif step[0] in ("fill", "expire", "operator_cancel"):
            run.exchange_event(step[0], step[1], step[2])
        elif step[0] == "snapshot":
            run.snapshot()
        for _ in range(step[1] if step[0] == "wait" else run.rng.randint(1, 4)):
            run.step()

    # The exchange settles: no more faults, no more events. Whatever rests is cancelled
    # (a time-to-live), and the reconciler keeps asking.
    run.faults = HEALTHY
    settle_from = run.now
    for _ in range(int(180 / TICK)):
        run.to_cancel |= {cid for cid, o in run.orders.items() if o.state in (OrderState.OPEN, OrderState.PARTIALLY_FILLED)}
        if run.tick % 10 == 0:
            run.snapshot()
        run.step()
        if run.settled() and run.now > settle_from + 10:
            break
    run.settled_at = run.now
    event(f"orders: {min(len(run.orders), 8)}, trades: {min(len(run.exchange.trades), 8)}")
    event(f"failed answers: {min(sum(kind is not None for *_, kind in run.answered), 50) // 10 * 10}+")
    event(f"orders whose outcome was unknown: {min(run.unknown, 3)}")
    event(f"venue isolated at some point: {bool(run.core.clock_problem) or any(w == 'probe' for _, _, w, *_ in run.sent)}")
    check(run)


def check(run: Run) -> None:
    exchange = run.exchange
    # Every order is final, as the exchange has it.
    stuck = {cid: o.state.value for cid, o in run.orders.items() if not o.state.is_final}
    assert not stuck, f"not final after the exchange settled: {stuck}"
    for cid, order in run.orders.items():
        on_exchange = exchange.orders.get(exchange.by_cid.get(cid, ""))
        expected = {None: {OrderState.REJECTED}, "closed": {OrderState.FILLED},
                    "canceled": {OrderState.CANCELED, OrderState.EXPIRED}, "expired": {OrderState.CANCELED, OrderState.EXPIRED},
                    "open": set()}[on_exchange and on_exchange["status"]]
        assert order.state in expected, f"{cid} is {order.state.value}; the exchange has {on_exchange}"
        if on_exchange is not None:
            assert order.filled == on_exchange["filled"], f"{cid}: reported {order.filled}, the exchange filled {on_exchange['filled']}"
    # Every trade of ours reported to the ledger once.
    reported = Counter(f.trade_id for f in run.fills_to_ledger)
    ours = {t.trade_id for t in exchange.trades}
    assert set(reported) == ours and max(reported.values(), default=1) == 1, (reported, ours)
    # A reservation is released once, unless the order filled whole.
    for cid, order in run.orders.items():
        assert run.released[cid] == (0 if order.state is OrderState.FILLED else 1), (cid, order.state, run.released[cid])
    # The reconciler is answered again once the venue is healthy (no failed snapshot wedges it).
    late = [i + 1 for i, t in enumerate(run.snapshots_asked) if t >= run.settled_at - 5]
    assert set(late[:-1]) <= run.snapshots_answered, (late, sorted(run.snapshots_answered)[-5:])
    check_pacing(run)


def back_off(failures: int) -> float:
    """The least wait after ``failures`` consecutive failures (the jitter takes up to 20 %)."""
    return 0.8 * min(FIRST_RETRY * 2 ** (failures - 1), SETTINGS.probe_max_seconds) - 1e-6


def check_pacing(run: Run) -> None:
    events = sorted([(seq, t, what, key, False, None) for seq, t, what, key, _, _ in run.sent]
                    + [(seq, t, what, key, True, kind) for seq, t, what, key, kind in run.answered])
    # A read that failed is not asked again before its own back-off.
    failures: dict[tuple[str, str], int] = defaultdict(int)
    failed_at: dict[tuple[str, str], float] = {}
    for _, t, what, key, answer, kind in events:
        read = (what, key)
        if what not in BACKED_OFF:
            continue
        if answer and kind in ("transient", "rejected"):
            failures[read] += 1
            failed_at[read] = t
        elif answer and kind is None:
            failures.pop(read, None)
            failed_at.pop(read, None)
        elif not answer and read in failed_at:
            assert t - failed_at[read] >= back_off(failures[read]), \
                f"{read} asked again {t - failed_at[read]:.2f}s after failure #{failures[read]}"
            del failed_at[read]
    # A failed cancel likewise. (After a CancelFailed the strategy may ask again at once;
    # a call refused for its timestamp is made again once the clock is measured.)
    gave_up: dict[str, list[int]] = defaultdict(list)
    for seq, cid in run.cancel_failed:
        gave_up[cid].append(seq)
    streak: dict[str, int] = defaultdict(int)
    cancel_failed_at: dict[str, tuple[int, float]] = {}
    for seq, t, what, key, answer, kind in events:
        if what != "cancel":
            continue
        if answer:
            if kind in ("ambiguous", "transient", "rejected", "rate_limited"):
                streak[key] += 1
                cancel_failed_at[key] = (seq, t)
            else:
                cancel_failed_at.pop(key, None)
        elif key in cancel_failed_at:
            failed_seq, failed_t = cancel_failed_at.pop(key)
            if any(failed_seq < g < seq for g in gave_up[key]):
                streak[key] = 0
            else:
                assert t - failed_t >= back_off(streak[key]), \
                    f"cancel of {key} asked again {t - failed_t:.2f}s after failure #{streak[key]}"
    # Nothing leaves while the venue said to wait; never more than the limiter lets through.
    for seq, until in run.paused:
        early = [t for s_, t, *_ in run.sent if s_ > seq and t < until - 1e-6]
        assert not early, f"{len(early)} calls sent during a Retry-After pause (until {until:.1f})"
    times = sorted(t for _, t, *_ in run.sent)
    for i, t in enumerate(times):
        within = sum(1 for u in times[i:i + int(4 * RATE)] if u < t + 1.0)
        assert within <= 3 * RATE, f"{within} calls within 1 s from {t:.1f} (bucket of {2 * RATE:g}, {RATE:g}/s)"
    # A create is sent once (again only after the exchange refused its timestamp: not placed).
    creates = Counter(key for _, _, what, key, _, _ in run.sent if what == "create")
    for cid, count in creates.items():
        assert count <= 1 + run.clock_refused_creates[cid], (cid, count)

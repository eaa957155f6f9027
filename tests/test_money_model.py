"""Money truth: strategy cores, the ledger core and the simulated exchange, run together.

A hypothesis state machine drives one simulated venue (BTC/USD) with one or two strategies
through the real cores, wired as the Lab wires them (a FIFO bus of ``Send``s, plain calls,
no trio), with an exchange model between the venue and the actors that reports trades late
(after later trades of the same order, after the order's cancel was confirmed, after a
restart), reports a trade twice, rejects orders, and a process that restarts (the ledger
from its journal, the strategies from their order rows), also with an order's request out.
Partial fills come from the venue's volume share; fees are charged in the coin received
(Binance), in the quote, or in BNB while it lasts.

After every step (the bus is always drained between steps) the money must agree: what the
strategies hold is the ledger's answer, the ledger is the exchange's trades less their
fees, nothing is negative, no reservation outlives its order, the journal rebuilds the
ledger, and every trade is recorded once.
"""

from __future__ import annotations

from collections import Counter, deque
from decimal import Decimal as D
from typing import Any

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.connection.shadow_core import ShadowConnectionCore
from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    CancelOrder,
    CandleClosed,
    FillReport,
    OrderDurable,
    OrderRejected,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordJournal,
    RecordOrder,
    Send,
    SubmitOrder,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from actors.strategy.core import StrategyCore
from actors.strategy.rules import Change
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.records import ExchangeTrade, Side
from exchange.shadow import ShadowVenue

VENUE, SYMBOL, BASE, QUOTE = "sim", "BTC/USD", "BTC", "USD"
HOUR = 3600
REJECTIONS = ["Account has insufficient balance for requested action. (code -2010)",
              "Filter failure: PERCENT_PRICE (code -1013)", "Market is closed. (code -1013)"]

BAR = st.tuples(
    st.integers(-15, 15),  # the close's move, per mille
    st.integers(0, 8),  # how far high and low reach beyond open and close, per mille
    st.sampled_from([D(0), D("0.5"), D(2), D(20)]),  # volume
    st.sampled_from([0, 0, 0, 1, 2, 7]),  # bit i: the exchange reports the bar's i-th trade late
)


def trade_deltas(trade: ExchangeTrade) -> dict[str, D]:
    """What one trade of the exchange moves per asset: coins and cost, less its fee."""
    sign = 1 if trade.side is Side.BUY else -1
    moves = {BASE: sign * trade.amount, QUOTE: -sign * trade.price * trade.amount}
    moves[trade.fee_currency] = moves.get(trade.fee_currency, D(0)) - trade.fee
    return moves


class MoneyMachine(RuleBasedStateMachine):
    @initialize(
        fee_in=st.sampled_from(["received", "quote", "BNB"]),
        bnb=st.sampled_from([D(0), D("0.002"), D(1)]),  # a little BNB runs out: fees fall back
        volume_share=st.sampled_from([D("0.2"), D(1)]),
        two=st.booleans(),
        offsets=st.tuples(st.sampled_from([-30, 0, 20]), st.sampled_from([-30, 0, 20])),
        percent=st.booleans(),
        base=st.sampled_from([D(0), D("0.3")]),
        batch_ledger=st.booleans(),
    )
    def start(self, fee_in, bnb, volume_share, two, offsets, percent, base, batch_ledger) -> None:
        self.market = MarketRules.for_symbol(
            SYMBOL, tick_size=D("0.01"), lot_size=D("0.0001"), min_amount=D("0.0001"), min_notional=D("10"),
            maker_fee=D("0.001"), taker_fee=D("0.002"), fee_in=fee_in,
            fee_currency_price=D("250") if fee_in == "BNB" else None,
        )
        self.settings = {
            name: StrategySettings(
                name=name, venue=VENUE, symbol=SYMBOL,
                sizing=Sizing(percent=D(30)) if percent else Sizing(quote=D(100)),
                allocation=Allocation(quote=D(1000), base=base, base_cost=D(100) if base else None),
                buy=Change(D("-0.5"), 1), sell=Change(D("0.5"), 1), limit_offset_bps=D(offset),
                ttl_seconds=2 * HOUR, max_open_orders=2,
            )
            for name, offset in zip(("a", "b") if two else ("a",), offsets)
        }
        self.start_holdings = {QUOTE: D(1000) * len(self.settings), BASE: base * len(self.settings)}
        # The account holds exactly what the strategies are given (plus BNB for fees), so
        # the ledger's holdings must equal the exchange's balances once every trade is in.
        self.exchange = SimulatedExchange([self.market], {**self.start_holdings, "BNB": bnb}, volume_share)
        self.venue = ShadowVenue(self.exchange, {})
        self.accounts_of = {name: ((VENUE, "shadow"), BASE, QUOTE) for name in self.settings}
        self.batch_ledger = batch_ledger
        # The store, as the writer would keep it.
        self.orders: dict[str, Order] = {}
        self.journal: list[Any] = []
        self.fills: list[FillReport] = []
        self.events: list[RecordEvent] = []
        # The exchange model: trades not reported yet (trade id -> the connection's sends),
        # the reports already delivered (to send again), submits to refuse.
        self.held: dict[str, list[Send]] = {}
        self.reported: list[list[Send]] = []
        self.rejecting: list[str] = []
        #: Die while the next order's request is out: True when it reached the exchange.
        self.crash_at_submit: bool | None = None
        self.crashed = False
        self.bus: deque[Send] = deque()
        self.ts, self.close = 0, D(100)
        self.ledger = LedgerCore(self.accounts_of)
        for name, s in self.settings.items():
            allocation = s.allocation
            self.journal += self.ledger.allocate(name, allocation.quote, allocation.base, 0.0, "test", allocation.base_cost)
        self._boot()

    # ------------------------------------------------------------- wiring

    def _boot(self) -> None:
        """Start the connection and the strategies, as the process does, from the store."""
        self.connection = ShadowConnectionCore(VENUE, self.venue)
        caught_up = self.connection.restore(list(self.orders.values()), float(self.ts))
        self.strategies = {name: StrategyCore(s, dict(self.start_holdings), record_evaluations=False)
                           for name, s in self.settings.items()}
        out: list[Send] = list(caught_up)
        for name, core in self.strategies.items():
            restored = core.restore([o for o in self.orders.values() if o.strategy == name], float(self.ts))
            out += core.start(float(self.ts)) + restored
        self._deliver(out)
        for core in self.strategies.values():
            # Restart path equals cold-start path: once reconciled (the trades it missed are
            # booked by then), the strategy trades again.
            assert core.active, f"{core.name} inactive after the handshake: {core.inactive_reason}"

    def _deliver(self, sends: list[Send]) -> None:
        """FIFO per actor, until nothing is in flight; the ledger drains its inbox in batches
        when ``batch_ledger`` (as its shell does)."""
        now = float(self.ts)
        self.bus.extend(sends)
        while self.bus:
            send = self.bus.popleft()
            submit = send.to == connection_address(VENUE) and isinstance(send.message, SubmitOrder)
            if send.to == LEDGER and self.batch_ledger:
                batch = [send.message] + [s.message for s in self.bus if s.to == LEDGER]
                self.bus = deque(s for s in self.bus if s.to != LEDGER)
                out = self.ledger.handle_batch(batch, now)
            elif send.to == LEDGER:
                out = self.ledger.handle(send.message, now)
            elif send.to == WRITER:
                out = self._write(send.message)
            elif send.to == RECONCILER:
                out = self._reconcile(send.message)
            elif submit and self.crash_at_submit is not None:
                # The request leaves (and reaches the exchange, or not); its answer is lost
                # with the process, whose other actors have done the rest of their work.
                if self.crash_at_submit:
                    self.connection.handle(send.message, now)
                self.crash_at_submit, self.crashed, out = None, True, []
            elif submit and self.rejecting:
                # The exchange refuses the order; the connection reports it to both.
                order = send.message.order
                rejected = OrderRejected(order.client_order_id, self.rejecting.pop(), now)
                out = [Send(strategy_address(order.strategy), rejected), Send(LEDGER, rejected)]
            elif send.to == connection_address(VENUE):
                out = self.connection.handle(send.message, now)
            else:
                out = self.strategies[send.to.partition(":")[2]].handle(send.message, now)
            self.bus.extend(out)

    def _write(self, message: Any) -> list[Send]:
        if isinstance(message, RecordOrder):
            self.orders[message.order.client_order_id] = message.order
            if message.durable_reply_to is not None:
                return [Send(message.durable_reply_to, OrderDurable(message.order.client_order_id))]
        elif isinstance(message, RecordJournal):
            self.journal += message.entries
            self.fills += message.fills
        elif isinstance(message, RecordEvent):
            self.events.append(message)
        return []

    def _reconcile(self, message: Any) -> list[Send]:
        """Reconciled at once, after handing over the trades the exchange has and our books
        lack, as the reconciler does (its missed fills, applied before it says Reconciled);
        here as the connection's original reports."""
        assert isinstance(message, ReconciledQuery)
        missed = [send for trade_id in sorted(self.held, key=int) for send in self.held.pop(trade_id)]
        return missed + [Send(message.reply_to, Reconciled(message.venue))]

    def _held_amount(self, cid: str) -> D:
        """What the exchange has filled of ``cid`` and not reported yet."""
        fills = [sends[0].message for sends in self.held.values()]
        return sum((fill.amount for fill in fills if fill.client_order_id == cid), D(0))

    # -------------------------------------------------------------- rules

    @rule(bars=st.lists(BAR, min_size=1, max_size=4))
    def candles(self, bars) -> None:
        for step, spread, volume, hold in bars:
            self._candle(step, spread, volume, hold)

    def _candle(self, step: int, spread: int, volume: D, hold: int) -> None:
        self.ts += HOUR
        opened, self.close = self.close, max(D(1), self.close * (1 + D(step) / 1000)).quantize(D("0.01"))
        wide = 1 + D(spread) / 1000
        high = (max(opened, self.close) * wide).quantize(D("0.01"))
        low = (min(opened, self.close) / wide).quantize(D("0.01"))
        candle = Candle(self.ts, opened, high, low, self.close, volume)
        out = self.connection.release([(SYMBOL, candle)], float(self.ts))
        trade_ids = list(dict.fromkeys(s.message.trade_id for s in out if isinstance(s.message, FillReport)))
        # Any trade may be late, an order's earlier trade after its later ones too: a trade
        # the connection missed is found by the reconciler, whenever that is.
        late = {t for i, t in enumerate(trade_ids) if hold >> i & 1}
        sends: list[Send] = []
        for send in out:
            message = send.message
            if isinstance(message, FillReport) and message.trade_id in late:
                self.held.setdefault(message.trade_id, []).append(send)
            elif isinstance(message, CandleClosed):
                # The connection names only the trades it has been told of.
                sends.append(Send(send.to, CandleClosed(message.venue, message.symbol, message.candle, message.ack,
                                                        tuple(t for t in message.fills if t not in late))))
            else:
                sends.append(send)
        self.reported += [[s for s in out if isinstance(s.message, FillReport) and s.message.trade_id == t]
                          for t in trade_ids if t not in late]
        self._deliver(sends)

    @rule(which=st.integers(0, 10), twice=st.booleans())
    def late_fill(self, which, twice) -> None:
        """A trade held back is reported now: often after its order's cancel was confirmed."""
        if not self.held:
            return
        trade_id = sorted(self.held, key=int)[which % len(self.held)]
        sends = self.held.pop(trade_id)
        self.reported.append(sends)
        self._deliver(sends * (2 if twice else 1))

    @rule(which=st.integers(0, 100))
    def duplicate_report(self, which) -> None:
        """A trade reported again, to the ledger and its strategy, maybe after a restart."""
        if self.reported:
            self._deliver(self.reported[which % len(self.reported)])

    @rule(reasons=st.lists(st.sampled_from(REJECTIONS), min_size=1, max_size=2))
    def exchange_rejects_next_orders(self, reasons) -> None:
        """The exchange refuses the next orders, for its own reasons."""
        self.rejecting = list(reasons)

    @rule(which=st.integers(0, 10))
    def operator_cancels_on_the_exchange(self, which) -> None:
        open_orders = self.exchange.open_orders()
        if open_orders:
            order = open_orders[which % len(open_orders)]
            owner = self.orders[order.client_order_id].strategy
            cancel = CancelOrder(order.client_order_id, owner, "canceled outside limitline")
            self._deliver([Send(connection_address(VENUE), cancel)])

    @rule(reached=st.booleans(), bars=st.lists(BAR, min_size=1, max_size=4))
    def crash_while_submitting(self, reached, bars) -> None:
        """The process dies with an order's request out: restored, it is UNKNOWN until the
        exchange's evidence says what became of it."""
        self.crash_at_submit = reached
        for bar in bars:
            self._candle(*bar)
            if self.crashed:
                self.crashed = False
                self.restart()
                break
        self.crash_at_submit = None

    @rule()
    def restart(self) -> None:
        """The process stops and starts again: the ledger is the fold of its journal, the
        strategies and the connection come back from the order rows; the exchange keeps
        its orders, balances and the trades it has not reported yet."""
        self.ledger = LedgerCore.from_journal(self.journal, self.accounts_of)
        self._boot()

    # --------------------------------------------------------- invariants
    # Checked after every step, when the bus is drained; trades the exchange has not
    # reported yet (``held``) are the only thing allowed to be missing from our books.

    @invariant()
    def strategies_hold_what_the_ledger_says(self) -> None:
        """1. Always: every change to an account is answered with an AccountInfo."""
        for name, core in self.strategies.items():
            account = self.ledger.accounts[name]
            assert core.held == account.base_free + account.base_reserved, name
            assert core.entry_cost == account.cost_basis, name

    @invariant()
    def the_ledger_is_the_exchanges_trades_less_fees(self) -> None:
        """2. Always for the trades booked, from the exchange's own trade list; and, once
        every trade is reported, equal to the account's balances."""
        booked = {e.trade_id for e in self.journal if e.kind == "settle"}
        unbooked = [t.trade_id for t in self.exchange.trades if t.trade_id not in booked | set(self.held)]
        assert not unbooked, f"reported trades the ledger did not book: {unbooked}"
        expected, fees = dict(self.start_holdings), {}
        for trade in (t for t in self.exchange.trades if t.trade_id in booked):
            for asset, delta in trade_deltas(trade).items():
                expected[asset] = expected.get(asset, D(0)) + delta
            fees[trade.fee_currency] = fees.get(trade.fee_currency, D(0)) + trade.fee
        accounts = self.ledger.accounts.values()
        held = {QUOTE: sum(a.quote_free + a.quote_reserved for a in accounts),
                BASE: sum(a.base_free + a.base_reserved for a in accounts)}
        assert held == {QUOTE: expected[QUOTE], BASE: expected[BASE]}
        paid: dict[str, D] = {}
        for account in accounts:
            for currency, fee in account.fees_paid.items():
                paid[currency] = paid.get(currency, D(0)) + fee
        assert paid == fees
        if not self.held:
            balances = self.exchange.balances
            assert held == {asset: balances[asset].free + balances[asset].used for asset in held}

    @invariant()
    def nothing_is_negative(self) -> None:
        """3. Always."""
        self.ledger.check_invariants()
        for asset, balance in self.exchange.balances.items():
            assert balance.free >= 0 and balance.used >= 0, (asset, balance)
        for core in self.strategies.values():
            assert core.held >= 0 and core.base_free >= 0

    @invariant()
    def no_reservation_outlives_its_order(self) -> None:
        """4. Always: a final order keeps funds reserved only for trades still to be
        reported, and those trades find them reserved (not handed to another order)."""
        for reservation in self.ledger.open_reservations():
            row = self.orders[reservation.client_order_id]
            if row.state.is_final:
                assert reservation.awaiting is not None and self._held_amount(row.client_order_id), (row, reservation)
        needs: dict[str, D] = {}
        for fill in (sends[0].message for sends in self.held.values()):
            fee = fill.fee if fill.fee_currency == QUOTE else D(0)
            need = fill.price * fill.amount + fee if fill.side is Side.BUY else fill.amount
            needs[fill.client_order_id] = needs.get(fill.client_order_id, D(0)) + need
        for cid, need in needs.items():
            reservation = self.ledger.reservations[cid]
            kept = reservation.quote_reserved if reservation.side is Side.BUY else reservation.base_reserved
            assert reservation.open and kept >= need, f"{cid}: {kept} reserved for unreported trades needing {need}"

    @invariant()
    def orders_agree_with_the_exchange(self) -> None:
        """4b. Always: order rows and reservations show what the exchange filled, less the
        trades not reported yet; once all are in, an order is final iff the exchange's is."""
        for cid, row in self.orders.items():
            placed = self.exchange.order_by_client_id(cid)
            exchange_filled = placed.filled if placed is not None else D(0)
            unreported = self._held_amount(cid)
            assert row.filled + unreported == exchange_filled, (row, placed)
            reservation = self.ledger.reservations.get(cid)
            if reservation is not None:
                assert reservation.filled + unreported == exchange_filled, (reservation, placed)
            if not unreported:
                assert row.state.is_final == (placed is None or placed.status != "open"), (row, placed)

    @invariant()
    def the_journal_rebuilds_the_ledger(self) -> None:
        """5. Always."""
        rebuilt = LedgerCore.from_journal(self.journal, self.accounts_of)
        assert rebuilt.snapshot() == self.ledger.snapshot()

        for cid, r in self.ledger.reservations.items():
            again = rebuilt.reservations[cid]
            assert (again.open, again.filled, again.awaiting, again.quote_reserved, again.base_reserved) == (
                r.open, r.filled, r.awaiting, r.quote_reserved, r.base_reserved), cid

    @invariant()
    def every_trade_is_recorded_once(self) -> None:
        """6. Always: one fill row and one ``fill`` event per reported trade, none for the
        others, whatever was reported twice."""
        rows = Counter(f.trade_id for f in self.fills)
        fill_events = Counter(e.payload["trade_id"] for e in self.events if e.kind == "fill")
        for trade in self.exchange.trades:
            expected = 0 if trade.trade_id in self.held else 1
            assert rows[trade.trade_id] == expected, f"trade {trade.trade_id}: {rows[trade.trade_id]} fill rows"
            assert fill_events[trade.trade_id] == expected, f"trade {trade.trade_id}: {fill_events[trade.trade_id]} fill events"


# No explain phase: on a failure it costs several times the whole run.
MoneyMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, phases=[p for p in Phase if p is not Phase.explain],
)
TestMoneyModel = MoneyMachine.TestCase

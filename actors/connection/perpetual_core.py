"""A connection to a simulated perpetuals (swap) account, in shadow mode.

The shadow connection's core (:class:`actors.connection.shadow_core.ShadowConnectionCore`:
subscriptions, replay, lockstep) over :class:`exchange.perpetuals.PerpetualExchange`
instead of the spot engine. Orders are routed by :class:`PerpetualOrders`:

- a ``limit`` order of record is a GTC limit order (``reduce_only`` passed on); a
  ``stop_limit`` is a conditional (algo) order of type ``STOP`` whose child limit order
  the exchange places when a candle's range reaches its trigger. The child carries the
  order's client id, so its fills reach the owner like any other; the order of record's
  exchange id is ``algo-<id>`` (the algo ids are a sequence of their own);
- acceptances → the owner; rejections and ends → the owner and the ledger; fills → the
  ledger and the owner, in the order the exchange made them; funding payments → the
  ledger (:class:`FundingReport`, for the strategy subscribed to the symbol: a one-way
  account has one position per symbol);
- what the exchange ends by itself is reported as an :class:`OrderCanceled` after the
  fills before it: a reduce-only order that could now only grow the position (it closes
  or flips; Binance expires them), a stop whose child order was refused at its trigger,
  orders a liquidation cancelled.

With ``persist`` the account's changes go to the writer after every operation (ahead of
the messages reporting them, as the spot engine's changes do), with the replay positions,
so shadow mode continues across restarts: the account itself (wallet, positions, marks,
counters) and only the orders, conditional orders, trades and income that changed or are
new (:meth:`PerpetualOrders._changes`), so a record costs what changed, not the history.
A liquidation's trade reaches the ledger as a fill of no order of ours (its row is kept);
the reconciler classifies it and the insurance fund's clearance, and books both through the
position book (the Lab runs that comparison at once after a liquidation).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from actors.connection.shadow_core import ShadowConnectionCore
from actors.messages import (
    LEDGER,
    WRITER,
    CancelFailed,
    CancelOrder,
    ExchangeSnapshot,
    FillReport,
    FundingReport,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    RecordPerpetualAccount,
    RecordSimulatedExchange,
    Send,
    Subscribe,
    VenueFacts,
    strategy_address,
)
from actors.orders import Order, OrderState
from actors.reconciler.positions_core import ExchangeIncome, ExchangePosition, PositionsSnapshot
from exchange.candles import Candle
from exchange.matching import Rejection
from exchange.perpetuals import ConditionalOrder, PerpetualExchange, PerpetualState
from exchange.records import ExchangeOrder, ExchangeTrade
from exchange.shadow import ShadowVenue

ZERO = Decimal(0)
ACCEPTED = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED, OrderState.CANCELING})
ALGO_PREFIX = "algo-"


class PerpetualOrders:
    def __init__(self, venue: str, exchange: PerpetualExchange, id_prefix: str = "") -> None:
        """``id_prefix``: put before every exchange order id, trade id and income id handed
        out (shadow strategies on a real venue: see
        :class:`actors.connection.simulated_orders.SimulatedOrders`)."""
        self.venue = venue
        self.exchange = exchange
        self.id_prefix = id_prefix
        #: client order id -> owning strategy's name
        self.owners: dict[str, str] = {}
        #: Orders accepted and not known to have ended: what :meth:`sweep` watches.
        self.live: dict[str, str] = {}
        #: How many of the exchange's trades, and of its income entries, have been routed.
        self._routed = len(exchange.trades)
        self._income_seen = len(exchange.income)
        #: symbol -> the strategy whose position it is (one-way account: one per symbol).
        self.holders: dict[str, str] = {}
        #: Fills made between candles, per symbol, for the next candle to name.
        self._taken: dict[str, list[Send]] = {}
        #: The account changed since it was last handed to the writer (a new incarnation
        #: hands it over whole at once: nothing is known as recorded yet).
        self.dirty = True
        self._recorded: tuple[int, int, int, int] | None = None
        #: Orders and conditional orders that may still change (open, waiting or triggered).
        self._changing_orders: set[str] = set()
        self._changing_algos: set[str] = set()

    def owns(self, client_order_id: str) -> bool:
        return client_order_id in self.owners

    def restore(self, orders: list[Order], now: float) -> list[Send]:
        """Who owns which order again, and what the exchange did to the accepted ones that
        their records lack (trades, ends), as a real exchange's history would say."""
        out: list[Send] = []
        for order in orders:
            self.owners[order.client_order_id] = order.strategy
            if order.state in ACCEPTED:
                self.live[order.client_order_id] = order.strategy
                for trade in self.exchange.trades:
                    if trade.client_order_id == order.client_order_id and self.id_prefix + trade.trade_id not in order.trade_ids:
                        out += self.route_fill(trade)
        return out + self.sweep(now)

    def record_changes(self, replay: dict[str, int] | None = None) -> list[Send]:
        """The account (whole) and the replay positions, for the writer, ahead of the
        messages that report what changed them."""
        out: list[Send] = []
        if self.dirty:
            self.dirty = False
            out.append(Send(WRITER, RecordPerpetualAccount(self.venue, self._changes())))
        if replay:
            out.append(Send(WRITER, RecordSimulatedExchange(self.venue, None, replay)))
        return out

    def _changes(self) -> PerpetualState:
        """The account now, with only the orders, conditional orders, trades and income
        that changed or are new since the last record (all of them, the first time).

        An order changes only while it is open (and when it ends); a conditional order while
        it waits or while its triggered child is open; trades and income are only appended.
        So the rows to write are those open at the last record or now, and the new ones."""
        ex = self.exchange
        if self._recorded is None:
            state = ex.snapshot()
        else:
            next_order, next_algo, trades, income = self._recorded
            head = ex.account_state((), (), (), ())  # the counters now: what is new since
            order_ids = self._changing_orders | {str(i) for i in range(next_order, head.next_order)}
            algo_ids = self._changing_algos | {str(i) for i in range(next_algo, head.next_algo)}
            state = ex.account_state(sorted(order_ids, key=int), sorted(algo_ids, key=int), ex.trades[trades:],
                                     ex.income[income:])
        self._changing_orders = {o.exchange_order_id for o in ex.open_orders()}
        self._changing_algos = {a.algo_id for a in state.conditional_orders if a.status in ("NEW", "TRIGGERED")}
        self._changing_algos |= {a.algo_id for a in ex.open_conditional_orders()}
        self._recorded = (state.next_order, state.next_algo, len(ex.trades), len(ex.income))
        return state

    def submit(self, order: Order, now: float) -> list[Send]:
        self.dirty = True
        to = strategy_address(order.strategy)
        cid = order.client_order_id
        self.owners[cid] = order.strategy
        exchange = self.exchange
        if order.order_type == "stop_limit":
            if order.trigger_price is None:
                result: Any = Rejection(-1102, "a stop-limit order needs its trigger price")
            else:
                result = exchange.create_conditional_order(
                    order.symbol, order.side, "STOP", order.amount, order.price, order.trigger_price, cid, now,
                    reduce_only=order.reduce_only,
                )
            exchange_id = None if isinstance(result, Rejection) else ALGO_PREFIX + result.algo_id
        elif order.order_type == "limit":
            result = exchange.create_limit_order(
                order.symbol, order.side, order.amount, order.price, cid, now, reduce_only=order.reduce_only
            )
            exchange_id = None if isinstance(result, Rejection) else result.exchange_order_id
        else:  # never sent: limit kinds only
            result = exchange.refuse_market_order(order.order_type, order.symbol, f"order {cid}", now)
            exchange_id = None
        if isinstance(result, Rejection):
            rejected = OrderRejected(cid, f"{result.message} (code {result.code})", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        assert exchange_id is not None
        self.live[cid] = order.strategy
        # A crossing limit fills at once (a taker): its fills follow the acceptance, which
        # says how much they come to (the strategy's candle is not done until they are in).
        taken = ZERO if isinstance(result, ConditionalOrder) else result.filled
        return [Send(to, OrderAccepted(cid, self.id_prefix + exchange_id, now, taken=taken))] + self._route_new() + self.sweep(now)

    def cancel(self, message: CancelOrder, now: float) -> list[Send]:
        self.dirty = True
        to = strategy_address(message.strategy)
        cid = message.client_order_id
        algo = self.exchange.find_conditional_order(client_algo_id=cid)
        filled = Decimal(0)
        if algo is not None and algo.status == "NEW":
            result: Any = self.exchange.cancel_conditional_order(algo_id=algo.algo_id, now=now)
        else:
            result = self.exchange.cancel_order(client_order_id=cid, now=now)
            if not isinstance(result, Rejection):
                filled = result.filled
        if isinstance(result, Rejection):
            # Most often it filled or ended in the meantime; those reports settle it.
            failed = CancelFailed(cid, f"{result.message} (code {result.code})", now)
            return self._route_new() + self.sweep(now) + [Send(to, failed)]
        self.live.pop(cid, None)
        canceled = OrderCanceled(cid, message.reason, now, expired=message.reason == "expired", filled=filled)
        return self._route_new() + [Send(to, canceled), Send(LEDGER, canceled)] + self.sweep(now)

    def check(self, order: Order, now: float) -> list[Send]:
        """An UNKNOWN order: the simulated exchange knows at once what became of it."""
        to = strategy_address(order.strategy)
        cid = order.client_order_id
        self.owners[cid] = order.strategy
        algo = self.exchange.find_conditional_order(client_algo_id=cid)
        found = self.exchange.find_order(client_order_id=cid)
        if algo is None and found is None:
            rejected = OrderRejected(cid, "never placed: the simulated exchange has no such order", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        out: list[Send] = []
        if order.state in (OrderState.SUBMITTING, OrderState.UNKNOWN):
            exchange_id = ALGO_PREFIX + algo.algo_id if algo is not None else found.exchange_order_id  # type: ignore[union-attr]
            out.append(Send(to, OrderAccepted(cid, self.id_prefix + exchange_id, now)))
        for trade in self.exchange.trades:
            if trade.client_order_id == cid and self.id_prefix + trade.trade_id not in order.trade_ids:
                out += self.route_fill(trade)
        self.live[cid] = order.strategy
        return out + self.sweep(now)

    def match(self, symbol: str, candle: Candle, now: float) -> list[Send]:
        """Run one closed candle: triggers, fills, funding, liquidation; route what it did."""
        self.dirty = True
        self.exchange.match(symbol, candle, now)
        return self._funding() + self._route_new(between_candles=False) + self.sweep(now)

    def _funding(self) -> list[Send]:
        """Funding payments since the last look, to the ledger (the position's strategy)."""
        income = self.exchange.income
        out: list[Send] = []
        for entry in income[self._income_seen:]:
            holder = self.holders.get(entry.symbol)
            if entry.income_type == "FUNDING_FEE" and holder is not None:
                out.append(Send(LEDGER, FundingReport(self.venue, holder, entry.symbol, self.id_prefix + str(entry.tran_id),
                                                      -entry.amount, entry.asset, entry.at)))
        self._income_seen = len(income)
        return out

    def _route_new(self, between_candles: bool = True) -> list[Send]:
        """Route the trades the exchange made since the last look. Made between candles (a
        crossing order filled on arrival), they are also named by the market's next
        candle (:meth:`since_last_candle`), so a strategy decides on it once they are booked."""
        trades = self.exchange.trades
        out: list[Send] = []
        for trade in trades[self._routed:]:
            sends = self.route_fill(trade)
            if between_candles:
                self._taken.setdefault(trade.symbol, []).extend(sends)
            out += sends
        self._routed = len(trades)
        return out

    def since_last_candle(self, symbol: str) -> list[Send]:
        """The fills made between candles on ``symbol`` (routed already), handed over once."""
        return self._taken.pop(symbol, [])

    def sweep(self, now: float) -> list[Send]:
        """Orders the exchange ended by itself since the last look (after their fills)."""
        out: list[Send] = []
        for cid, owner in list(self.live.items()):
            ended = self._ended(cid)
            if ended is None:
                continue
            del self.live[cid]
            reason, filled = ended
            if reason:
                canceled = OrderCanceled(cid, reason, now, filled=filled)
                out += [Send(strategy_address(owner), canceled), Send(LEDGER, canceled)]
        return out

    def _ended(self, cid: str) -> tuple[str, Decimal] | None:
        """None while the order may still fill; ("", filled) once it filled in full;
        (why, filled) when the exchange ended it otherwise."""
        algo = self.exchange.find_conditional_order(client_algo_id=cid)
        if algo is not None:
            if algo.status == "NEW":
                return None
            if algo.status in ("REJECTED", "EXPIRED"):
                return (f"the stop triggered but the exchange refused its order ({algo.status.lower()}: "
                        "a reduce-only order with no position left to reduce)", Decimal(0))
            if algo.status == "CANCELED":
                return "canceled by the exchange (a liquidation)", Decimal(0)
        order = self.exchange.find_order(client_order_id=cid)
        if order is None or order.status == "open":
            return None
        if order.status == "closed":
            return "", order.filled
        why = ("expired by the exchange: a reduce-only order that could no longer reduce the position"
               if order.status == "expired" else "canceled by the exchange")
        return why, order.filled

    def route_fill(self, trade: ExchangeTrade) -> list[Send]:
        report = FillReport(
            venue=self.venue, client_order_id=trade.client_order_id, exchange_order_id=self._record_id(trade),
            trade_id=self.id_prefix + trade.trade_id, symbol=trade.symbol, side=trade.side, price=trade.price,
            amount=trade.amount, fee=trade.fee, fee_currency=trade.fee_currency, at=trade.at, order_complete=trade.order_complete,
            taker_or_maker=trade.taker_or_maker,
        )
        out = [Send(LEDGER, report)]
        owner = self.owners.get(trade.client_order_id)
        if owner is not None:
            out.append(Send(strategy_address(owner), report))
        return out

    def _record_id(self, trade: ExchangeTrade) -> str:
        """The exchange id our order of record holds: a stop's child trades under its algo's."""
        algo = self.exchange.find_conditional_order(client_algo_id=trade.client_order_id)
        return self.id_prefix + (ALGO_PREFIX + algo.algo_id if algo is not None else trade.exchange_order_id)

    def trades(self) -> tuple[ExchangeTrade, ...]:
        """Recent trades (the last 1,000), each under the exchange id of our order of record."""
        out = []
        for trade in self.exchange.trades[-1000:]:
            record_id = self._record_id(trade)
            plain = ExchangeTrade(
                self.id_prefix + trade.trade_id, record_id, trade.symbol, trade.side, trade.price, trade.amount, trade.fee,
                trade.fee_currency, trade.client_order_id, trade.at, trade.order_complete,
            )
            out.append(plain)
        return tuple(out)

    def open_orders(self) -> tuple[ExchangeOrder, ...]:
        """Open limit orders (a triggered stop's child among them) and the stops waiting
        for their trigger, each as our order of record knows it."""
        orders = [
            attrs.evolve(o.record(), exchange_order_id=self._record_id(
                ExchangeTrade("", o.exchange_order_id, o.symbol, o.side, o.price, o.amount, Decimal(0), "",
                              o.client_order_id)))
            for o in self.exchange.open_orders()
        ]
        orders += [
            ExchangeOrder(a.client_algo_id, self.id_prefix + ALGO_PREFIX + a.algo_id, a.symbol, a.side, a.price, a.amount, Decimal(0))
            for a in self.exchange.open_conditional_orders()
        ]
        return tuple(orders)


class PerpetualConnectionCore(ShadowConnectionCore):
    """The shadow connection of a simulated perpetuals account (``shadow.exchange`` is a
    :class:`PerpetualExchange`)."""

    def __init__(
        self, venue: str, exchange: ShadowVenue, lockstep_with: frozenset[str] | None = None, persist: bool = False
    ) -> None:
        super().__init__(venue, exchange, lockstep_with, persist=persist)
        self.perpetuals: PerpetualExchange = exchange.exchange  # type: ignore[assignment]
        self.orders = PerpetualOrders(venue, self.perpetuals)  # type: ignore[assignment]

    def subscribe(self, message: Subscribe, now: float) -> list[Send]:
        self.orders.holders[message.symbol] = message.strategy  # type: ignore[attr-defined]
        return super().subscribe(message, now)

    def status(self) -> dict[str, Any]:
        ex = self.perpetuals
        return {
            "mode": "shadow",
            "market_type": "swap",
            "markets": sorted(ex.markets),
            "open_orders": len(ex.open_orders()) + len(ex.open_conditional_orders()),
            "wallet": str(ex.wallet),
            "positions": {
                s: {"size": str(p.size), "entry_price": str(p.entry_price), "leverage": p.leverage,
                    "margin_mode": p.margin_mode, "realized_pnl": str(p.realized_pnl), "fees": str(p.fees)}
                for s, p in sorted(ex.positions.items()) if p.size or p.realized_pnl or p.fees
            },
            "replay": self.exchange.progress(),
        }

    def facts(self) -> VenueFacts:
        ex = self.perpetuals
        return VenueFacts(
            venue=self.venue,
            connection_error=None,
            markets=dict(ex.markets),
            balances={ex.margin_asset: ex.wallet},
            last_prices=self.exchange.last_prices(),
            leverage={s: Decimal(p.leverage) for s, p in ex.positions.items()},
        )

    def snapshot(self, now: float, request_id: int = 0) -> ExchangeSnapshot:
        ex = self.perpetuals
        open_orders = self.orders.open_orders()
        trades = self.orders.trades()
        positions = PositionsSnapshot(
            venue=self.venue,
            positions=tuple(ExchangePosition(s, p.size, p.entry_price, Decimal(p.leverage))
                            for s, p in sorted(ex.positions.items()) if p.size),
            open_orders=open_orders,
            trades=trades,
            income=tuple(ExchangeIncome(str(i.tran_id), i.symbol, i.income_type, i.amount, i.asset, i.at)
                         for i in ex.income[-1000:]),
            wallet=ex.wallet,
            at=now,
            forced_order_ids=frozenset(o.exchange_order_id for o in ex.liquidation_orders),
        )
        return ExchangeSnapshot(
            venue=self.venue, open_orders=open_orders, balances={ex.margin_asset: ex.wallet}, at=now,
            request_id=request_id, trades=trades, positions=positions,
        )

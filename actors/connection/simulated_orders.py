"""Orders on the simulated exchange, as a connection routes them: one place for both
connection cores (shadow venues, and shadow strategies on a live venue).

Routing of the simulated exchange's reports:

- acceptances → the owning strategy;
- rejections, cancellations → the owning strategy and the ledger (which releases funds);
- fills → the owning strategy and the ledger (which settles them and records the fill row
  with its journal entries, in one transaction). An order that crossed the market fills
  (as a taker) when it is placed; those fills are routed at once and named again by the
  market's next candle (:meth:`SimulatedOrders.since_last_candle`), so a strategy decides
  on that candle only once the ledger has booked them, as it does for a candle's own fills.

Persistence (shadow mode continues across restarts). The simulated exchange's state is
written to the store as it changes, as records through the writer, not rebuilt from the
order book, fills and journal: those are the strategies' and the ledger's view and lag the
exchange by whatever was in flight at a crash (a fill the exchange made that the ledger had
not booked, a cancel not yet heard of), while the exchange's own record is exact by
construction. Every change goes to the writer as a :class:`RecordSimulatedExchange`
*ahead of* the messages that report it (:meth:`SimulatedOrders.record_changes`), and the writer
commits its inbox in order, so whatever a crash leaves on disk, the stored exchange is at
least as far as anything recorded because of it:

- an order the order book holds OPEN rests on it, with its filled amount and locked funds;
- a trade id in the fills table or the journal is below the stored next trade id, so none
  is ever given twice;
- what the exchange did that the books had not recorded yet is evidence, reported again at
  the next start (:meth:`SimulatedOrders.restore`), as a real exchange's trade history is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

import attrs

from actors.messages import (
    LEDGER,
    WRITER,
    CancelFailed,
    CancelOrder,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    RecordSimulatedExchange,
    Send,
    strategy_address,
)
from actors.orders import Order, OrderState, oco_leg_ids
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import ExchangeState, Rejection, SimulatedExchange
from exchange.records import ExchangeOrder, ExchangeTrade, Side
from exchange.retention import KEEP_FINISHED_ORDERS, KEEP_TRADES, Forgetting

#: States in which the order book of record holds that the exchange accepted the order.
ACCEPTED = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED, OrderState.CANCELING})


def fills_of(sends: list[Send], to: str) -> tuple[str, ...]:
    """Trade ids of the fills among ``sends`` that go to ``to``."""
    return tuple(s.message.trade_id for s in sends if s.to == to and isinstance(s.message, FillReport))


class LazySimulatedExchange:
    """A simulated account whose markets are known only once a live venue has loaded them.

    Held outside the connection actor, so that, like any exchange, it keeps its orders
    while the connection restarts. ``restored``: its state as the store holds it (it goes
    on from there once made); ``persist``: track its changes for the store.
    """

    def __init__(self, balances: dict[str, Decimal], restored: ExchangeState | None = None, persist: bool = False) -> None:
        self.balances = balances
        self.restored = restored
        self.persist = persist
        self.exchange: SimulatedExchange | None = None

    def get(self, markets: Iterable[MarketRules]) -> SimulatedExchange:
        if self.exchange is None:
            self.exchange = SimulatedExchange(markets, self.balances)
            if self.restored is not None:
                self.exchange.restore(self.restored)
            self.exchange.track_changes = self.persist
        return self.exchange


class SimulatedOrders:
    def __init__(self, venue: str, exchange: SimulatedExchange, id_prefix: str = "") -> None:
        """``id_prefix``: put before every exchange order id and trade id handed out. Shadow
        strategies on a real venue need it: the simulated account numbers its orders and
        trades from 1, like the real exchange (the sandbox) may, and the order book of
        record, the fills table and the reconciler key fills by (venue, trade id) and map
        trades to orders by exchange order id: an unprefixed simulated id took a real
        trade's place, and the real fill was dropped."""
        self.venue = venue
        self.exchange = exchange
        self.id_prefix = id_prefix
        #: client order id -> owning strategy's name (of ended orders, the most recent)
        self.owners: dict[str, str] = {}
        self._forget_owners: Forgetting[str, str] = Forgetting(KEEP_FINISHED_ORDERS)
        #: Per market, the fills made on arrival since its last candle (their routing).
        self._taken: dict[str, list[Send]] = {}

    def owns(self, client_order_id: str) -> bool:
        return client_order_id in self.owners

    def restore(self, orders: list[Order], now: float) -> list[Send]:
        """Know again who owns the orders a previous incarnation (or process) sent, and
        report what the exchange did to them that their records lack.

        Orders the record holds accepted (OPEN, PARTIALLY_FILLED, CANCELING) are checked
        here; the strategy itself asks about the others (RESERVED, SUBMITTING and UNKNOWN
        ones become :class:`CheckOrder`). Reports already known are ignored by strategy and
        ledger alike (by trade id; a release happens once)."""
        out: list[Send] = []
        for order in orders:
            self.owners[order.client_order_id] = order.strategy
            if order.state in ACCEPTED:
                out += self.evidence(order, now)
        return out

    def record_changes(self, replay: dict[str, int] | None = None) -> list[Send]:
        """The exchange's changes since the last call, for the writer (nothing if none):
        put ahead of the messages that report them."""
        state = self.exchange.drain_changes()
        if state is None and not replay:
            return []
        return [Send(WRITER, RecordSimulatedExchange(self.venue, state, replay or {}))]

    def submit(self, order: Order, now: float) -> list[Send]:
        to = strategy_address(order.strategy)
        self.owners[order.client_order_id] = order.strategy
        if order.order_type == "oco":
            return self._submit_list(order, now)
        result = self.exchange.create_limit_order(
            order.symbol, order.side, order.amount, order.price, order.client_order_id, now
        )
        if isinstance(result, Rejection):
            rejected = OrderRejected(order.client_order_id, f"{result.message} (code {result.code})", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        out = [Send(to, OrderAccepted(order.client_order_id, self.id_prefix + result.exchange_order_id, now))]
        for trade in self.exchange.trades_of(result.exchange_order_id):  # it crossed: taken at once
            fills = self.route_fill(trade)
            self._taken.setdefault(order.symbol, []).extend(fills)
            out += fills
        return out

    def _submit_list(self, order: Order, now: float) -> list[Send]:
        """An OCO sell list (spot protection): the list is the order of record, accepted
        under its above leg's exchange id; its legs' trades are reported as its fills."""
        to = strategy_address(order.strategy)
        above_id, below_id = oco_leg_ids(order.client_order_id)
        if order.trigger_price is None or order.stop_limit_price is None or order.side is not Side.SELL:
            rejected = OrderRejected(order.client_order_id, "an OCO list is a sell with a stop and its limit", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        result = self.exchange.create_oco_sell(
            order.symbol, order.amount, order.price, order.trigger_price, order.stop_limit_price,
            order.client_order_id, above_id, below_id, now,
        )
        if isinstance(result, Rejection):
            rejected = OrderRejected(order.client_order_id, f"{result.message} (code {result.code})", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        for leg in result:
            self.owners[leg.client_order_id] = order.strategy
        return [Send(to, OrderAccepted(order.client_order_id, self.id_prefix + result[0].exchange_order_id, now))]

    def since_last_candle(self, symbol: str) -> list[Send]:
        """The fills made on arrival on ``symbol`` since its last candle (routed already),
        handed over once: the next candle names them to their strategies."""
        return self._taken.pop(symbol, [])

    def cancel(self, message: CancelOrder, now: float) -> list[Send]:
        to = strategy_address(message.strategy)
        legs = self.exchange.order_list(message.client_order_id)
        if legs:
            ended = self.exchange.cancel_order_list(message.client_order_id)
            if isinstance(ended, Rejection):
                return [Send(to, CancelFailed(message.client_order_id, f"{ended.message} (code {ended.code})", now))]
            canceled = OrderCanceled(message.client_order_id, message.reason, now, filled=sum(leg.filled for leg in ended))
            return [Send(to, canceled), Send(LEDGER, canceled)]
        result = self.exchange.cancel_order(message.client_order_id)
        if isinstance(result, Rejection):
            # Most often it filled in the meantime; the fill report settles it.
            return [Send(to, CancelFailed(message.client_order_id, f"{result.message} (code {result.code})", now))]
        canceled = OrderCanceled(
            message.client_order_id, message.reason, now, expired=message.reason == "expired", filled=result.filled
        )
        return [Send(to, canceled), Send(LEDGER, canceled)]

    def check(self, order: Order, now: float) -> list[Send]:
        """An UNKNOWN order (or one the reconciler misses): the simulated exchange knows at
        once whether it has it, and all that happened to it."""
        to = strategy_address(order.strategy)
        self.owners[order.client_order_id] = order.strategy
        if self.exchange.order_by_client_id(order.client_order_id) is None and not self.exchange.order_list(order.client_order_id):
            rejected = OrderRejected(order.client_order_id, "never placed: the simulated exchange has no such order", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        return self.evidence(order, now)

    def evidence(self, order: Order, now: float) -> list[Send]:
        """What the exchange knows of ``order`` that its record lacks: that it was accepted
        (if the record does not say so), each trade the record does not name, and its end
        by a cancellation. Nothing if the exchange does not have it."""
        legs = self.exchange.order_list(order.client_order_id)  # an OCO list: its legs
        found = legs[0] if legs else self.exchange.order_by_client_id(order.client_order_id)
        if found is None:
            return []
        to = strategy_address(order.strategy)
        out: list[Send] = []
        if order.state in (OrderState.SUBMITTING, OrderState.UNKNOWN):
            out.append(Send(to, OrderAccepted(order.client_order_id, self.id_prefix + found.exchange_order_id, now)))
        for leg in legs or [found]:
            self.owners[leg.client_order_id] = order.strategy
            for trade in self.exchange.trades_of(leg.exchange_order_id):
                # A record from before the prefix names the trade without it: known all the same.
                if self.id_prefix + trade.trade_id not in order.trade_ids and trade.trade_id not in order.trade_ids:
                    out += self.route_fill(trade)
        if legs and all(leg.status == "canceled" for leg in legs) and not order.state.is_final:
            found = attrs.evolve(found, status="canceled", filled=sum((leg.filled for leg in legs), Decimal(0)))
        elif legs:
            found = attrs.evolve(found, status="open")
        if found.status == "canceled" and not order.state.is_final:
            expired = order.reason == "expired"  # the cancel we asked for when its time ran out
            reason = "expired" if expired else "canceled while limitline was down"
            canceled = OrderCanceled(order.client_order_id, reason, now, expired=expired, filled=found.filled)
            out += [Send(to, canceled), Send(LEDGER, canceled)]
        return out

    def match(self, symbol: str, candle: Candle, now: float) -> list[Send]:
        """Fill what this closed candle fills of the resting orders, and route the fills."""
        out: list[Send] = []
        for fill in self.exchange.match(symbol, candle, now):
            out += self.route_fill(fill)
        self._forget_finished()
        return out

    def _forget_finished(self) -> None:
        """Bound a months-long run: the exchange forgets old ended orders and trades (the
        store keeps them), and so does the routing of fills to their owners."""
        self.exchange.forget_finished(KEEP_FINISHED_ORDERS, KEEP_TRADES)

        def ended(client_order_id: str, _: str) -> bool:
            order = self.exchange.order_by_client_id(client_order_id)
            return order is None or order.status != "open"

        self._forget_owners.sweep(self.owners, ended)

    def route_fill(self, fill: ExchangeTrade) -> list[Send]:
        # A leg of an OCO list trades for the list: the list is the order of record (one
        # reservation in the ledger, one order in the strategy).
        leg = self.exchange.order_by_client_id(fill.client_order_id)
        client_order_id = leg.list_client_id if leg is not None and leg.list_client_id else fill.client_order_id
        report = FillReport(
            venue=self.venue,
            client_order_id=client_order_id,
            exchange_order_id=self.id_prefix + fill.exchange_order_id,
            trade_id=self.id_prefix + fill.trade_id,
            symbol=fill.symbol,
            side=fill.side,
            price=fill.price,
            amount=fill.amount,
            fee=fill.fee,
            fee_currency=fill.fee_currency,
            at=fill.at,
            order_complete=fill.order_complete,
            taker_or_maker=fill.taker_or_maker,
        )
        out = [Send(LEDGER, report)]
        owner = self.owners.get(client_order_id)
        if owner is not None:
            out.append(Send(strategy_address(owner), report))
        return out

    def trades(self) -> tuple[ExchangeTrade, ...]:
        """Recent trades of the simulated account (the last 1,000, like an exchange's list)."""
        trades = self.exchange.trades[-1000:]
        if not self.id_prefix:
            return tuple(trades)
        prefix = self.id_prefix
        return tuple(
            attrs.evolve(t, trade_id=prefix + t.trade_id, exchange_order_id=prefix + t.exchange_order_id) for t in trades
        )

    def open_orders(self) -> tuple[ExchangeOrder, ...]:
        records = [o.record() for o in self.exchange.open_orders()]
        if self.id_prefix:
            records = [attrs.evolve(r, exchange_order_id=self.id_prefix + r.exchange_order_id) for r in records]
        return tuple(records)

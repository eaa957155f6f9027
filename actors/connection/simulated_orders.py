"""Orders on the simulated exchange, as a connection routes them: one place for both
connection cores (shadow venues, and shadow strategies on a live venue).

Routing of the simulated exchange's reports:

- acceptances → the owning strategy;
- rejections, cancellations → the owning strategy and the ledger (which releases funds);
- fills → the owning strategy and the ledger (which settles them and records the fill row
  with its journal entries, in one transaction).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from actors.messages import (
    LEDGER,
    CancelFailed,
    CancelOrder,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    Send,
    strategy_address,
)
from actors.orders import Order
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import Rejection, SimulatedExchange
from exchange.records import ExchangeOrder, ExchangeTrade


def fills_of(sends: list[Send], to: str) -> tuple[str, ...]:
    """Trade ids of the fills among ``sends`` that go to ``to``."""
    return tuple(s.message.trade_id for s in sends if s.to == to and isinstance(s.message, FillReport))


class LazySimulatedExchange:
    """A simulated account whose markets are known only once a live venue has loaded them.

    Held outside the connection actor, so that, like any exchange, it keeps its orders
    while the connection restarts.
    """

    def __init__(self, balances: dict[str, Decimal]) -> None:
        self.balances = balances
        self.exchange: SimulatedExchange | None = None

    def get(self, markets: Iterable[MarketRules]) -> SimulatedExchange:
        if self.exchange is None:
            self.exchange = SimulatedExchange(markets, self.balances)
        return self.exchange


class SimulatedOrders:
    def __init__(self, venue: str, exchange: SimulatedExchange) -> None:
        self.venue = venue
        self.exchange = exchange
        #: client order id -> owning strategy's name
        self.owners: dict[str, str] = {}

    def owns(self, client_order_id: str) -> bool:
        return client_order_id in self.owners

    def restore(self, orders: list[Order]) -> None:
        """Know again who owns the orders a previous incarnation sent."""
        for order in orders:
            self.owners[order.client_order_id] = order.strategy

    def submit(self, order: Order, now: float) -> list[Send]:
        to = strategy_address(order.strategy)
        self.owners[order.client_order_id] = order.strategy
        result = self.exchange.create_limit_order(
            order.symbol, order.side, order.amount, order.price, order.client_order_id, now
        )
        if isinstance(result, Rejection):
            rejected = OrderRejected(order.client_order_id, f"{result.message} (code {result.code})", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        return [Send(to, OrderAccepted(order.client_order_id, result.exchange_order_id, now))]

    def cancel(self, message: CancelOrder, now: float) -> list[Send]:
        to = strategy_address(message.strategy)
        result = self.exchange.cancel_order(message.client_order_id)
        if isinstance(result, Rejection):
            # Most often it filled in the meantime; the fill report settles it.
            return [Send(to, CancelFailed(message.client_order_id, f"{result.message} (code {result.code})", now))]
        canceled = OrderCanceled(
            message.client_order_id, message.reason, now, expired=message.reason == "expired", filled=result.filled
        )
        return [Send(to, canceled), Send(LEDGER, canceled)]

    def check(self, order: Order, now: float) -> list[Send]:
        """An UNKNOWN order: the simulated exchange knows at once whether it has it."""
        to = strategy_address(order.strategy)
        self.owners[order.client_order_id] = order.strategy
        found = self.exchange.order_by_client_id(order.client_order_id)
        if found is None:
            rejected = OrderRejected(order.client_order_id, "never placed: the simulated exchange has no such order", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        out: list[Send] = [Send(to, OrderAccepted(order.client_order_id, found.exchange_order_id, now))]
        if found.status == "canceled":
            canceled = OrderCanceled(order.client_order_id, "canceled while limitline was down", now, filled=found.filled)
            out += [Send(to, canceled), Send(LEDGER, canceled)]
        return out

    def match(self, symbol: str, candle: Candle, now: float) -> list[Send]:
        """Fill what this closed candle fills of the resting orders, and route the fills."""
        out: list[Send] = []
        for fill in self.exchange.match(symbol, candle, now):
            out += self.route_fill(fill)
        return out

    def route_fill(self, fill: ExchangeTrade) -> list[Send]:
        report = FillReport(
            venue=self.venue,
            client_order_id=fill.client_order_id,
            exchange_order_id=fill.exchange_order_id,
            trade_id=fill.trade_id,
            symbol=fill.symbol,
            side=fill.side,
            price=fill.price,
            amount=fill.amount,
            fee=fill.fee,
            fee_currency=fill.fee_currency,
            at=fill.at,
            order_complete=fill.order_complete,
        )
        out = [Send(LEDGER, report)]
        owner = self.owners.get(fill.client_order_id)
        if owner is not None:
            out.append(Send(strategy_address(owner), report))
        return out

    def trades(self) -> tuple[ExchangeTrade, ...]:
        """Recent trades of the simulated account (the last 1,000, like an exchange's list)."""
        return tuple(self.exchange.trades[-1000:])

    def open_orders(self) -> tuple[ExchangeOrder, ...]:
        return tuple(o.record() for o in self.exchange.open_orders())

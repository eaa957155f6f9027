"""A connection to one exchange account, in shadow mode: orders go to the simulated exchange.

The simulated exchange and its replay feeds (:class:`exchange.shadow.ShadowVenue`) are the
"exchange": they outlive any incarnation of this actor, exactly as a real exchange keeps
its orders while our connection restarts. The core keeps only what a connection knows:
who subscribed to which market, and which strategy owns which client order id.

Routing of the exchange's reports:

- acceptances → the owning strategy;
- rejections, cancellations → the owning strategy and the ledger (which releases funds);
- fills → the owning strategy, the ledger (which settles) and the writer (``fills`` table).
"""

from __future__ import annotations

from typing import Any

from actors.messages import (
    LEDGER,
    WRITER,
    CancelFailed,
    CancelOrder,
    CandleClosed,
    ExchangeOrder,
    ExchangeSnapshot,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    RecordFill,
    Send,
    SnapshotRequest,
    SubmitOrder,
    Subscribe,
    Tick,
    VenueInfo,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from actors.strategy.preflight import VenueFacts
from exchange.matching import Rejection, SimFill
from exchange.shadow import ShadowVenue


class ShadowConnectionCore:
    def __init__(self, venue: str, exchange: ShadowVenue) -> None:
        self.venue = venue
        self.address = connection_address(venue)
        self.exchange = exchange
        self.subscribers: dict[str, list[str]] = {}
        #: client order id -> owning strategy's name
        self.owners: dict[str, str] = {}
        #: client order id -> why we asked to cancel it
        self.cancel_reasons: dict[str, str] = {}

    def restore(self, orders: list[Order]) -> None:
        """Know again who owns the orders a previous incarnation sent."""
        for order in orders:
            self.owners[order.client_order_id] = order.strategy

    def status(self) -> dict[str, Any]:
        return {
            "mode": "shadow",
            "markets": sorted(self.exchange.exchange.markets),
            "open_orders": len(self.exchange.exchange.open_orders()),
            "replay": self.exchange.progress(),
        }

    def handle(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, Tick):
            return self.on_tick(message.now, now)
        if isinstance(message, SubmitOrder):
            return self.submit(message.order, now)
        if isinstance(message, CancelOrder):
            return self.cancel(message, now)
        if isinstance(message, Subscribe):
            return self.subscribe(message, now)
        if isinstance(message, SnapshotRequest):
            return [Send(message.reply_to, self.snapshot(now, message.request_id))]
        raise TypeError(f"connection {self.venue} does not handle {type(message).__name__}")

    def subscribe(self, message: Subscribe, now: float) -> list[Send]:
        """Candles of the market from now on, and the facts for the pre-flight checks."""
        to = strategy_address(message.strategy)
        subscribers = self.subscribers.setdefault(message.symbol, [])
        if to not in subscribers:
            subscribers.append(to)
        return [Send(to, VenueInfo(self.facts()))]

    def facts(self) -> VenueFacts:
        exchange = self.exchange.exchange
        return VenueFacts(
            venue=self.venue,
            connection_error=None,  # the simulated exchange is always reachable
            markets=dict(exchange.markets),
            balances={asset: b.free + b.used for asset, b in exchange.balances.items()},
            last_prices=self.exchange.last_prices(),
        )

    def submit(self, order: Order, now: float) -> list[Send]:
        to = strategy_address(order.strategy)
        self.owners[order.client_order_id] = order.strategy
        result = self.exchange.exchange.create_limit_order(
            order.symbol, order.side, order.amount, order.price, order.client_order_id, now
        )
        if isinstance(result, Rejection):
            rejected = OrderRejected(order.client_order_id, f"{result.message} (code {result.code})", now)
            return [Send(to, rejected), Send(LEDGER, rejected)]
        return [Send(to, OrderAccepted(order.client_order_id, result.exchange_order_id, now))]

    def cancel(self, message: CancelOrder, now: float) -> list[Send]:
        result = self.exchange.exchange.cancel_order(message.client_order_id)
        if isinstance(result, Rejection):
            # Most often it filled in the meantime; the fill report settles it.
            failed = CancelFailed(message.client_order_id, f"{result.message} (code {result.code})", now)
            return [Send(strategy_address(message.strategy), failed)]
        canceled = OrderCanceled(message.client_order_id, message.reason, now, expired=message.reason == "expired")
        return [Send(strategy_address(message.strategy), canceled), Send(LEDGER, canceled)]

    def on_tick(self, clock: float, now: float) -> list[Send]:
        out: list[Send] = []
        for symbol, candle, fills in self.exchange.advance(clock, now):
            # Fills first: orders resting before this candle trade against it; a strategy
            # deciding on its close can only rest from the next candle on.
            for fill in fills:
                out += self._route_fill(fill)
            update = CandleClosed(self.venue, symbol, candle)
            out += [Send(to, update) for to in self.subscribers.get(symbol, [])]
        return out

    def _route_fill(self, fill: SimFill) -> list[Send]:
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
        out = [Send(WRITER, RecordFill(report)), Send(LEDGER, report)]
        owner = self.owners.get(fill.client_order_id)
        if owner is not None:
            out.append(Send(strategy_address(owner), report))
        return out

    def snapshot(self, now: float, request_id: int = 0) -> ExchangeSnapshot:
        exchange = self.exchange.exchange
        return ExchangeSnapshot(
            venue=self.venue,
            open_orders=tuple(
                ExchangeOrder(o.client_order_id, o.exchange_order_id, o.symbol, o.side, o.price, o.amount, o.filled)
                for o in exchange.open_orders()
            ),
            balances={asset: b.free + b.used for asset, b in exchange.balances.items()},
            at=now,
            request_id=request_id,
        )

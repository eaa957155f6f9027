"""A connection to one exchange account, in shadow mode: orders go to the simulated exchange.

The simulated exchange and its replay feeds (:class:`exchange.shadow.ShadowVenue`) are the
"exchange": they outlive any incarnation of this actor, exactly as a real exchange keeps
its orders while our connection restarts. The core keeps only what a connection knows:
who subscribed to which market, and which strategy owns which client order id.

Orders are routed by :class:`actors.connection.simulated_orders.SimulatedOrders`.
"""

from __future__ import annotations

from typing import Any

from actors.connection.simulated_orders import SimulatedOrders
from actors.messages import (
    CancelOrder,
    CheckOrder,
    CandleClosed,
    ExchangeSnapshot,
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
from exchange.shadow import ShadowVenue


class ShadowConnectionCore:
    def __init__(self, venue: str, exchange: ShadowVenue) -> None:
        self.venue = venue
        self.address = connection_address(venue)
        self.exchange = exchange
        self.orders = SimulatedOrders(venue, exchange.exchange)
        self.subscribers: dict[str, list[str]] = {}

    def restore(self, orders: list[Order]) -> None:
        self.orders.restore(orders)

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
            return self.orders.submit(message.order, now)
        if isinstance(message, CancelOrder):
            return self.orders.cancel(message, now)
        if isinstance(message, CheckOrder):
            return self.orders.check(message.order, now)
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

    def on_tick(self, clock: float, now: float) -> list[Send]:
        out: list[Send] = []
        for symbol, candle in self.exchange.advance(clock):
            # Fills first: orders resting before this candle trade against it; a strategy
            # deciding on its close can only rest from the next candle on.
            out += self.orders.match(symbol, candle, now)
            update = CandleClosed(self.venue, symbol, candle)
            out += [Send(to, update) for to in self.subscribers.get(symbol, [])]
        return out

    def snapshot(self, now: float, request_id: int = 0) -> ExchangeSnapshot:
        exchange = self.exchange.exchange
        return ExchangeSnapshot(
            venue=self.venue,
            open_orders=self.orders.open_orders(),
            balances={asset: b.free + b.used for asset, b in exchange.balances.items()},
            at=now,
            request_id=request_id,
            trades=self.orders.trades(),
        )

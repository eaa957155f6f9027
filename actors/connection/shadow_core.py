"""A connection to one exchange account, in shadow mode: orders go to the simulated exchange.

The simulated exchange and its replay feeds (:class:`exchange.shadow.ShadowVenue`) are the
"exchange": they outlive any incarnation of this actor, exactly as a real exchange keeps
its orders while our connection restarts. The core keeps only what a connection knows:
who subscribed to which market, and which strategy owns which client order id.

Orders are routed by :class:`actors.connection.simulated_orders.SimulatedOrders`. With
``persist``, every change of the simulated account and of the replay position goes to the
writer ahead of the messages it causes (see that module for why this order makes shadow
mode exact across any crash); the Lab runs the same core without it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Collection

from actors.connection.simulated_orders import SimulatedOrders, fills_of
from actors.messages import (
    WRITER,
    CancelOrder,
    CandleClosed,
    CandleDone,
    CheckOrder,
    ExchangeSnapshot,
    RecordEvent,
    Send,
    SnapshotRequest,
    StrategyReady,
    SubmitOrder,
    Subscribe,
    Tick,
    VenueFacts,
    VenueInfo,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from exchange.candles import Candle
from exchange.shadow import ShadowVenue


class ShadowConnectionCore:
    def __init__(
        self, venue: str, exchange: ShadowVenue, lockstep_with: Collection[str] | None = None, persist: bool = False
    ) -> None:
        """``lockstep_with``: the strategies of this venue; when given, each candle is
        released only once all of them are ready and done with the previous one, and to
        one strategy at a time, in the order of ``lockstep_with`` (the config's): the next hears
        of it once the one before is done with it. Strategies share each candle's volume,
        so which order reaches the exchange first decides who fills; taking turns makes a
        lockstep replay deterministic, and the Lab takes the same turns.
        ``persist``: record the simulated account and the replay position in the store."""
        self.venue = venue
        self.persist = persist
        exchange.exchange.track_changes = persist
        self.address = connection_address(venue)
        self.exchange = exchange
        self.orders = SimulatedOrders(venue, exchange.exchange)
        self.subscribers: dict[str, list[str]] = {}
        self.lockstep_with = lockstep_with
        self._not_ready: set[str] = set(lockstep_with or ())
        self._not_done: set[str] = set()
        #: Lockstep: the candle's announcements still to make, one strategy's turn each.
        self._turns: deque[Send] = deque()
        self._turn_order = {strategy_address(name): i for i, name in enumerate(lockstep_with or ())}
        self._finished_reported = False

    def restore(self, orders: list[Order], now: float) -> list[Send]:
        """Who owns which order again, and what the exchange did that their records lack."""
        return self.orders.restore(orders, now)

    def status(self) -> dict[str, Any]:
        return {
            "mode": "shadow",
            "markets": sorted(self.exchange.exchange.markets),
            "open_orders": len(self.exchange.exchange.open_orders()),
            "replay": self.exchange.progress(),
        }

    def handle(self, message: Any, now: float) -> list[Send]:
        out = self._handle(message, now)
        return self._record_changes() + out if self.persist else out

    def _record_changes(self) -> list[Send]:
        """The account's and the replay's changes, for the writer, ahead of what they cause."""
        return self.orders.record_changes(self.exchange.replay_changes())

    def _handle(self, message: Any, now: float) -> list[Send]:
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
        if isinstance(message, StrategyReady):
            self._not_ready.discard(message.strategy)
            return self._lockstep(now)
        if isinstance(message, CandleDone):
            self._not_done.discard(message.strategy)
            if self._turns:
                return [self._turns.popleft()]
            return self._lockstep(now)
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
        if self.lockstep_with is not None:
            return self._lockstep(now)
        return self._release(self.exchange.advance(clock), now, ack=False)

    def _lockstep(self, now: float) -> list[Send]:
        if self.lockstep_with is None or self._not_ready or self._not_done:
            return []
        candles = self.exchange.take_next()
        if not candles:
            return self._finished(now)
        self._not_done = set(self.lockstep_with)
        out = self._release(candles, now, ack=True)
        turns = sorted((s for s in out if isinstance(s.message, CandleClosed)), key=lambda s: self._turn_order.get(s.to, 0))
        self._turns.extend(turns[1:])  # each after the turn of the one before
        return [s for s in out if not isinstance(s.message, CandleClosed)] + turns[:1]

    def _finished(self, now: float) -> list[Send]:
        if self._finished_reported:
            return []
        self._finished_reported = True
        return [Send(WRITER, RecordEvent(kind="replay_finished", actor=self.address, at=now,
                                         reason=f"{self.venue}: every candle of the replay has been released"))]

    def release(self, candles: list[tuple[str, Candle]], now: float) -> list[Send]:
        """Close these candles now, whatever the feed's clock says (the Lab's fast path)."""
        out = self._release(candles, now, ack=False)
        return self._record_changes() + out if self.persist else out

    def _release(self, candles: list[tuple[str, Candle]], now: float, ack: bool) -> list[Send]:
        out: list[Send] = []
        if not candles and self.exchange.finished:
            return self._finished(now)
        for symbol, candle in candles:
            # Fills first: orders resting before this candle trade against it; a strategy
            # deciding on its close can only rest from the next candle on.
            taken = self.orders.since_last_candle(symbol)
            fills = self.orders.match(symbol, candle, now)
            out += fills
            named = taken + fills
            out += [
                Send(to, CandleClosed(self.venue, symbol, candle, ack, fills_of(named, to)))
                for to in self.subscribers.get(symbol, [])
            ]
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

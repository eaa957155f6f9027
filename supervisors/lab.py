"""The Strategy Lab: the same strategy, ledger and simulated-exchange cores, run over
historical candles in a deterministic discrete-event loop, without trio or channels.

Per candle, the loop delivers messages in FIFO order until none is left, exactly as the
actors would, one candle at a time: fills on the orders resting from before, then the
candle itself, then every consequence of it (reservations, the durable intent, the
submission). The writer is a list; the reconciler answers at once. Time is market time.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Callable, Sequence

import attrs

from actors.connection.shadow_core import ShadowConnectionCore
from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    OrderDurable,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordJournal,
    RecordOrder,
    Send,
    Tick,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from actors.strategy.core import StrategyCore
from actors.strategy.settings import StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue


@attrs.define
class LabResult:
    candles: Sequence[Candle]
    orders: dict[str, Order]  # last state of each order, by client order id
    fills: list[Any]  # FillReports, in order
    events: list[RecordEvent]
    journal: list[Any]
    #: (candle ts, equity in quote, base held) after each candle
    equity: list[tuple[int, float, float]]
    #: Candles the loop actually visited (all of them unless the fast path skipped some).
    visited: int = 0
    #: Signals blocked because the limit price was below one tick (market time of each).
    #: A close below the market's tick is a decision (``blocked``), exactly as in shadow and
    #: live mode, not a data error: the Lab must decide what ``run`` would decide on the same
    #: candles, and the candles are not wrong, the tick is too coarse for them. The CLI
    #: warns about them, since such a backtest says little about the strategy.
    below_tick: list[int] = attrs.Factory(list)


class StrategyFailed(Exception):
    """The strategy's own Python code failed (raised, or answered something that is not a
    list of intents) at the candle ``ts``: the backtest stops there, since what follows
    would be a backtest of a strategy that no longer decides. ``run`` pauses the strategy
    with the same message; the Lab, which has no operator to resume it, stops."""

    def __init__(self, strategy: str, ts: int, problem: str) -> None:
        self.strategy, self.ts, self.problem = strategy, ts, problem
        super().__init__(f"strategy {strategy} failed at the candle of {ts}: {problem}")


class Lab:
    def __init__(
        self,
        settings: StrategySettings,
        market: MarketRules,
        candles: Sequence[Candle],
        volume_share: Decimal = Decimal("0.1"),
        keep_events: bool = True,
        fast: bool = False,
    ) -> None:
        """``fast``: compute the triggers for the whole series up front and visit only the
        candles on which something can happen (a trigger fires, or an order rests and may
        fill or expire). Same orders and fills as visiting every candle."""
        if not candles:
            raise ValueError("the Lab needs at least one candle")
        self.fast = fast
        self.settings = settings
        self.candles = candles
        venue = settings.venue
        balances = {market.quote: settings.allocation.quote, market.base: settings.allocation.base}
        exchange = SimulatedExchange([market], balances, volume_share)
        # One candle per tick of a clock that counts candles.
        feed = ReplayFeed(candles, speed=1.0, started_at=0.0)
        self.connection = ShadowConnectionCore(venue, ShadowVenue(exchange, {settings.symbol: feed}))
        self.ledger = LedgerCore()
        allocated = {market.quote: settings.allocation.quote, market.base: settings.allocation.base}
        self._fired: Any = None
        triggers = None
        if fast:
            import numpy as np

            from actors.strategy.signals import Precomputed, fired

            self._closes = np.fromiter((float(c.close) for c in candles), dtype=float, count=len(candles))
            buy = fired(settings.buy, candles, self._closes) if settings.buy else None
            sell = fired(settings.sell, candles, self._closes) if settings.sell else None
            index = {candle.ts: i for i, candle in enumerate(candles)}
            triggers = (
                Precomputed(settings.buy.name, buy, index) if settings.buy else None,
                Precomputed(settings.sell.name, sell, index) if settings.sell else None,
            )
            parts = [a for a in (buy, sell) if a is not None]
            self._fired = np.flatnonzero(np.logical_or.reduce(parts)) if parts else np.array([], dtype=int)
            if settings.python is not None:
                self._fired = np.arange(len(candles))  # its decisions cannot be computed ahead
        self.strategy = StrategyCore(settings, allocated, record_evaluations=keep_events, triggers=triggers)
        self.keep_events = keep_events
        self.orders: dict[str, Order] = {}
        self.fills: list[Any] = []
        self.events: list[RecordEvent] = []
        self.journal: list[Any] = []
        self.below_tick: list[int] = []
        self._bus: deque[Send] = deque()
        self._handlers: dict[str, Callable[[Any, float], list[Send]]] = {
            LEDGER: self.ledger.handle,
            strategy_address(settings.name): self.strategy.handle,
            connection_address(venue): self.connection.handle,
            WRITER: self._write,
            RECONCILER: self._reconcile,
        }

    def run(self, progress: Callable[[int, int], None] | None = None) -> LabResult:
        first = self.candles[0].ts
        self.journal += self.ledger.allocate(
            self.settings.name, self.settings.allocation.quote, self.settings.allocation.base, first, "Lab allocation",
            self.settings.allocation.base_cost,
        )
        self._deliver(self.strategy.start(first), first)
        if self.fast:
            return self._run_fast(progress)
        equity: list[tuple[int, float, float]] = []
        total = len(self.candles)
        account = self.ledger.accounts[self.settings.name]
        for index, candle in enumerate(self.candles):
            now = float(candle.ts)
            self._deliver(self.connection.handle(Tick(index + 1.0), now), now)
            self._check_strategy(candle)
            held = account.base_free + account.base_reserved
            equity.append((candle.ts, float(account.quote_free + account.quote_reserved + held * candle.close), float(held)))
            if progress is not None and (index % 10_000 == 0 or index == total - 1):
                progress(index + 1, total)
        return LabResult(self.candles, self.orders, self.fills, self.events, self.journal, equity, total, self.below_tick)

    def _run_fast(self, progress: Callable[[int, int], None] | None) -> LabResult:
        import numpy as np

        total = len(self.candles)
        account = self.ledger.accounts[self.settings.name]
        symbol = self.settings.symbol
        exchange = self.connection.exchange.exchange
        fired = self._fired
        visited_at: list[int] = []
        quote_held: list[float] = []
        base_held: list[float] = []
        index = int(fired[0]) if len(fired) else total
        if self.strategy.wants_every_candle():
            index = 0  # e.g. starting inventory with exits: the first candle may already sell
        while index < total:
            candle = self.candles[index]
            now = float(candle.ts)
            self._deliver(self.connection.release([(symbol, candle)], now), now)
            self._check_strategy(candle)
            visited_at.append(index)
            quote_held.append(float(account.quote_free + account.quote_reserved))
            base_held.append(float(account.base_free + account.base_reserved))
            if exchange.open_orders() or self.strategy.wants_every_candle():
                index += 1  # something rests (or an exit may trigger): every candle counts
            else:
                later = int(np.searchsorted(fired, index, side="right"))
                index = int(fired[later]) if later < len(fired) else total
            if progress is not None and len(visited_at) % 10_000 == 0:
                progress(index, total)
        if progress is not None:
            progress(total, total)
        # Between visited candles nothing was held differently: equity follows the close.
        start_quote = float(self.settings.allocation.quote)
        start_base = float(self.settings.allocation.base)
        steps = np.searchsorted(np.array(visited_at, dtype=int), np.arange(total), side="right") - 1
        quote = np.where(steps >= 0, np.array(quote_held + [start_quote])[steps], start_quote)
        base = np.where(steps >= 0, np.array(base_held + [start_base])[steps], start_base)
        values = quote + base * self._closes
        equity = [(c.ts, float(v), float(b)) for c, v, b in zip(self.candles, values, base)]
        return LabResult(
            self.candles, self.orders, self.fills, self.events, self.journal, equity, len(visited_at), self.below_tick
        )

    def _check_strategy(self, candle: Candle) -> None:
        if self.strategy.python_failure is not None:
            raise StrategyFailed(self.settings.name, candle.ts, self.strategy.python_failure)

    def _deliver(self, sends: list[Send], now: float) -> None:
        self._bus.extend(sends)
        while self._bus:
            send = self._bus.popleft()
            self._bus.extend(self._handlers[send.to](send.message, now))

    def _write(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, RecordOrder):
            self.orders[message.order.client_order_id] = message.order
            if message.durable_reply_to is not None:
                return [Send(message.durable_reply_to, OrderDurable(message.order.client_order_id))]
        elif isinstance(message, RecordJournal):
            self.journal.extend(message.entries)
            self.fills.extend(message.fills)
        elif isinstance(message, RecordEvent):
            if message.kind == "blocked" and message.payload.get("below_tick"):
                self.below_tick.append(int(now))
            if self.keep_events:
                self.events.append(message)
        return []

    def _reconcile(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, ReconciledQuery):
            return [Send(message.reply_to, Reconciled(message.venue))]
        return []

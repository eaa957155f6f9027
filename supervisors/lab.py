"""The Strategy Lab: the same strategy, ledger and simulated-exchange cores, run over
historical candles in a deterministic discrete-event loop, without trio or channels.

Per candle, the loop delivers messages in FIFO order until none is left, exactly as the
actors would, one candle at a time: fills on the orders resting from before, then the
candle itself, then every consequence of it (reservations, the durable intent, the
submission). The writer is a list; the reconciler answers at once. Time is market time.
"""

from __future__ import annotations

import bisect
import gc
from collections import deque
from datetime import datetime, timezone
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
from exchange.candles import Candle, CandleSeries
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from supervisors.lab_equity import EquitySeries


@attrs.define
class LabResult:
    candles: Sequence[Candle]
    orders: dict[str, Order]  # last state of each order, by client order id
    fills: list[Any]  # FillReports, in order
    events: list[RecordEvent]
    journal: list[Any]
    #: (candle ts, equity in quote, base held) after each candle (the fast path keeps them
    #: as columns: an :class:`EquitySeries`)
    equity: Sequence[tuple[int, float, float]]
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
        super().__init__(strategy, ts, problem)  # picklable: a sweep's worker process raises it

    def __str__(self) -> str:
        at = datetime.fromtimestamp(self.ts, timezone.utc).isoformat().replace("+00:00", "Z")
        return f"strategy {self.strategy} stopped at the candle of {at}: {self.problem}"


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
        self._lows: Any = None
        self._highs: Any = None
        self._volumes: Any = None
        triggers = None
        if fast:
            import numpy as np

            from actors.strategy.signals import Precomputed, fired

            self._closes = _floats(candles, "close")
            self._ts = (
                candles.timestamps() if isinstance(candles, CandleSeries)
                else np.fromiter((c.ts for c in candles), dtype=np.int64, count=len(candles))
            )
            buy = fired(settings.buy, candles, self._closes) if settings.buy else None
            sell = fired(settings.sell, candles, self._closes) if settings.sell else None
            self._ts_list = self._ts.tolist()
            triggers = (
                Precomputed(settings.buy.name, buy, self._ts_list) if settings.buy else None,
                Precomputed(settings.sell.name, sell, self._ts_list) if settings.sell else None,
            )
            parts = [a for a in (buy, sell) if a is not None]
            self._fired = np.flatnonzero(np.logical_or.reduce(parts)) if parts else np.array([], dtype=int)
            if settings.python is not None:
                self._fired = np.arange(len(candles))  # its decisions cannot be computed ahead
            self._fired_list = self._fired.tolist()
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
        visited_at: list[int] = []
        quote_held: list[float] = []
        base_held: list[float] = []
        fired = self._fired
        index = int(fired[0]) if len(fired) else total
        if self.strategy.wants_every_candle():
            index = 0  # e.g. starting inventory with exits: the first candle may already sell
        # The cores make no reference cycles on this path; the cyclic collector, which
        # would walk every fill and journal entry kept so far again and again, waits.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while index < total:
                candle = self.candles[index]
                now = float(candle.ts)
                self._deliver(self.connection.release([(symbol, candle)], now), now)
                self._check_strategy(candle)
                visited_at.append(index)
                quote_held.append(float(account.quote_free + account.quote_reserved))
                base_held.append(float(account.base_free + account.base_reserved))
                index = self._next_visit(index)
                if progress is not None and len(visited_at) % 10_000 == 0:
                    progress(index, total)
        finally:
            if collecting:
                gc.enable()
        if progress is not None:
            progress(total, total)
        # Between visited candles nothing was held differently: equity follows the close.
        start_quote = float(self.settings.allocation.quote)
        start_base = float(self.settings.allocation.base)
        # The index of the last visit at or before each candle (-1 before the first).
        marks = np.zeros(total, dtype=np.int64)
        marks[np.array(visited_at, dtype=np.int64)] = 1
        steps = np.cumsum(marks) - 1
        quote = np.where(steps >= 0, np.array(quote_held + [start_quote])[steps], start_quote)
        base = np.where(steps >= 0, np.array(base_held + [start_base])[steps], start_base)
        values = quote + base * self._closes
        equity = EquitySeries(self._ts, values, base)
        return LabResult(
            self.candles, self.orders, self.fills, self.events, self.journal, equity, len(visited_at), self.below_tick
        )

    def _check_strategy(self, candle: Candle) -> None:
        if self.strategy.python_failure is not None:
            raise StrategyFailed(self.settings.name, candle.ts, self.strategy.python_failure)

    def _next_visit(self, index: int) -> int:
        """The next candle on which something can happen after candle ``index``: a trigger
        fires, a resting order can fill (the market trades through the best resting price,
        with volume) or expire, or an exit's price is reached. The searches are vectorised
        and err towards visiting: a visited candle on which nothing happens changes nothing,
        so the result is exactly that of stepping every candle (tests/test_fast_path.py)."""
        fired = self._fired_list
        later = bisect.bisect_right(fired, index)
        target = fired[later] if later < len(fired) else len(self.candles)
        exchange = self.connection.exchange.exchange
        if not exchange.open_orders() and not self.strategy.wants_every_candle():
            return target
        wakeups = self.strategy.wakeups()
        start = index + 1
        if wakeups is None:
            return start
        lows, highs, volumes = self._ranges()
        closes = self._closes
        buy, sell = exchange.fill_thresholds(self.settings.symbol)
        # Float comparisons are inclusive where the rules are strict: a price that rounds
        # to the same float is a candle to look at, never one to skip.
        fill = end = min(target + 1, len(self.candles))
        if buy is not None:
            fill = _first(lambda a, b: (lows[a:b] <= float(buy)) & (volumes[a:b] > 0), start, fill)
        if sell is not None:
            fill = _first(lambda a, b: (highs[a:b] >= float(sell)) & (volumes[a:b] > 0), start, fill)
        if fill < end:
            # A fill reaches the strategy before the candle that made it, when it has seen
            # the candle before (its market time, for a cooldown): visit that one too.
            target = max(start, fill - 1)
        if wakeups.expiry is not None:
            target = min(target, max(start, bisect.bisect_left(self._ts_list, wakeups.expiry)))
        if wakeups.take_profit is not None:
            take = float(wakeups.take_profit)
            target = _first(lambda a, b: closes[a:b] >= take, start, target)
        if wakeups.stop_loss is not None:
            stop = float(wakeups.stop_loss)
            target = _first(lambda a, b: closes[a:b] <= stop, start, target)
        return target

    def _ranges(self) -> tuple[Any, Any, Any]:
        """Lows, highs and volumes as floats (made once, when an order first rests)."""
        if self._lows is None:
            self._lows = _floats(self.candles, "low")
            self._highs = _floats(self.candles, "high")
            self._volumes = _floats(self.candles, "volume")
        return self._lows, self._highs, self._volumes

    def _deliver(self, sends: list[Send], now: float) -> None:
        bus, handlers = self._bus, self._handlers
        bus.extend(sends)
        while bus:
            to, message = bus.popleft()
            bus.extend(handlers[to](message, now))

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


def _floats(candles: Sequence[Candle], name: str) -> Any:
    """One value of every candle as floats (``float(Decimal)``, for the searches only): read
    off the columns of a :class:`CandleSeries` (what ``read_candles`` gives) without
    building a Candle each."""
    import numpy as np

    if isinstance(candles, CandleSeries):
        return candles.floats(name)
    return np.fromiter((float(getattr(c, name)) for c in candles), dtype=float, count=len(candles))


def _first(hits: Callable[[int, int], Any], start: int, end: int) -> int:
    """The first index in [start, end) where ``hits(a, b)`` (a boolean array for the
    indices a..b-1) is true, else ``end``; looks in windows that grow fourfold, so a
    search costs about as much as the distance it covers."""
    import numpy as np

    size = 64
    while start < end:
        stop = min(end, start + size)
        found = np.flatnonzero(hits(start, stop))
        if found.size:
            return start + int(found[0])
        start, size = stop, size * 4
    return end

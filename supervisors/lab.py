"""The Strategy Lab: the same strategy, ledger and simulated-exchange cores, run over
historical candles in a deterministic discrete-event loop, without trio or channels.

Per candle, the loop delivers messages in FIFO order until none is left, exactly as the
actors would, one candle at a time: fills on the orders resting from before, then the
candle itself, then every consequence of it (reservations, the durable intent, the
submission). The writer is a list; the reconciler answers at once. Time is market time.

Several strategies (:meth:`Lab.together`, ``limitline lab`` without ``--strategy``) share
one ledger and one simulated exchange per venue, as in shadow mode, so they share each
candle's volume. They take turns on a candle in the config's order, everything the first
causes delivered before the second hears of it: what a lockstep replay does
(:class:`actors.connection.shadow_core.ShadowConnectionCore`), so both give the same fills.
What a run leaves is in :mod:`supervisors.lab_results`.
"""

from __future__ import annotations

import bisect
from array import array
import gc
from collections import deque
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

import attrs

from actors.connection.shadow_core import ShadowConnectionCore
from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    CandleClosed,
    JournalEntry,
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
from exchange.records import Side
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from supervisors.lab_results import Equity, LabResult, LabRun

__all__ = ["Equity", "Lab", "LabResult", "LabRun", "LabVenue", "StrategyFailed"]


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


@attrs.frozen
class LabVenue:
    """One simulated venue of a Lab run: its markets, the account's opening balances (what
    the exchange holds; each strategy trades only its own allocation, which the ledger
    keeps), and the share of a candle's volume its orders may fill, all strategies'
    together."""

    name: str
    markets: tuple[MarketRules, ...]
    balances: Mapping[str, Decimal]
    volume_share: Decimal = Decimal("0.1")


class Lab:
    def __init__(
        self,
        settings: StrategySettings,
        market: MarketRules,
        candles: Sequence[Candle],
        volume_share: Decimal = Decimal("0.1"),
        keep_events: bool = True,
        fast: bool = False,
        keep_records: bool = True,
    ) -> None:
        """One strategy on a venue of its own, the exchange holding its allocation.

        ``fast``: compute the triggers for the whole series up front and visit only the
        candles on which something can happen (a trigger fires, or an order rests and may
        fill or expire). Same orders and fills as visiting every candle.

        ``keep_records`` False: keep only what the report needs, so memory follows the fills
        and not everything the ledger and the order book ever wrote (a run of millions of
        candles): every fill, of the journal the entries that realised P&L (sells' settle
        entries), of the orders those still open at the end (:attr:`LabResult.orders_placed`
        counts them all). Of those settle entries only the fields the report reads are kept
        (kind, strategy, time, order, trade, side, realized P&L)."""
        balances = {market.quote: settings.allocation.quote, market.base: settings.allocation.base}
        venue = LabVenue(settings.venue, (market,), balances, volume_share)
        self._build((settings,), (venue,), candles, keep_events, fast, keep_records)

    @classmethod
    def together(
        cls,
        strategies: Sequence[StrategySettings],
        venues: Sequence[LabVenue],
        candles: Sequence[Candle],
        keep_events: bool = True,
        fast: bool = False,
        keep_records: bool = True,
    ) -> Lab:
        """Several strategies over the same candles, through the same cores as shadow mode:
        one ledger, and one simulated exchange per venue that all the venue's strategies
        trade on, sharing each candle's volume. On each candle the strategies take turns in
        the order given (the config's), as a lockstep replay does: each decides, and its
        orders reach the exchange, before the next hears of the candle.

        ``candles`` are one market's: every strategy must trade that symbol. Raises
        ValueError naming what does not fit."""
        lab = cls.__new__(cls)
        lab._build(tuple(strategies), tuple(venues), candles, keep_events, fast, keep_records)
        return lab

    def _build(
        self,
        strategies: tuple[StrategySettings, ...],
        venues: tuple[LabVenue, ...],
        candles: Sequence[Candle],
        keep_events: bool,
        fast: bool,
        keep_records: bool = True,
    ) -> None:
        if not candles:
            raise ValueError("the Lab needs at least one candle")
        if not strategies:
            raise ValueError("the Lab needs at least one strategy")
        names = [s.name for s in strategies]
        if len(set(names)) < len(names):
            raise ValueError(f"strategy names must differ: {names}")
        symbols = {s.symbol for s in strategies}
        if len(symbols) > 1:
            raise ValueError(f"the Lab replays one market's candles, and these strategies trade {sorted(symbols)}: "
                             "run the strategies of each market on their own (--strategy NAME)")
        self.symbol = strategies[0].symbol
        by_name = {v.name: v for v in venues}
        for s in strategies:
            venue = by_name.get(s.venue)
            if venue is None or not any(m.symbol == s.symbol for m in venue.markets):
                raise ValueError(f"strategy {s.name}: venue {s.venue!r} with market {s.symbol} is not among the Lab's venues")
        self.fast = fast
        self.settings = strategies[0]
        self.strategy_settings = strategies
        self.candles = candles
        self.connections: dict[str, ShadowConnectionCore] = {}
        for venue in venues:
            if any(s.venue == venue.name for s in strategies):
                exchange = SimulatedExchange(venue.markets, dict(venue.balances), venue.volume_share)
                # One candle per tick of a clock that counts candles.
                feed = ReplayFeed(candles, speed=1.0, started_at=0.0)
                self.connections[venue.name] = ShadowConnectionCore(venue.name, ShadowVenue(exchange, {self.symbol: feed}))
        self.ledger = LedgerCore()
        self._fired: Any = None
        self._lows: Any = None
        self._highs: Any = None
        self._volumes: Any = None
        triggers: dict[str, Any] = {}
        if fast:
            import numpy as np

            from actors.strategy.signals import Precomputed, fired

            self._closes = _floats(candles, "close")
            self._ts = _timestamps(candles)
            # Plain ints for bisect, 8 bytes each (a list of ints took 38: 115 MB at 3M candles).
            self._ts_list = array("q", self._ts.astype("int64").tobytes())
            parts = []
            for s in strategies:
                buy = fired(s.buy, candles, self._closes) if s.buy else None
                sell = fired(s.sell, candles, self._closes) if s.sell else None
                triggers[s.name] = (
                    Precomputed(s.buy.name, buy, self._ts_list) if s.buy else None,
                    Precomputed(s.sell.name, sell, self._ts_list) if s.sell else None,
                )
                parts += [a for a in (buy, sell) if a is not None]
            self._fired = np.flatnonzero(np.logical_or.reduce(parts)) if parts else np.array([], dtype=int)
            if any(s.python is not None for s in strategies):
                self._fired = np.arange(len(candles))  # its decisions cannot be computed ahead
            self._fired_list = array("q", self._fired.astype("int64").tobytes())
        self.strategies: dict[str, StrategyCore] = {}
        for s in strategies:
            market = next(m for m in by_name[s.venue].markets if m.symbol == s.symbol)
            allocated = {market.quote: s.allocation.quote, market.base: s.allocation.base}
            self.strategies[s.name] = StrategyCore(s, allocated, record_evaluations=keep_events, triggers=triggers.get(s.name))
        self.strategy = self.strategies[self.settings.name]  # the first (a one-strategy Lab's only one)
        self.connection = self.connections[self.settings.venue]
        #: Turns on a candle: the strategies' addresses in the order given.
        self._turn = {strategy_address(s.name): i for i, s in enumerate(strategies)}
        self.keep_events = keep_events
        self.keep_records = keep_records
        self.orders: dict[str, Order] = {}
        self.fills: list[Any] = []
        self.events: list[RecordEvent] = []
        self.journal: list[Any] = []
        self.below_tick: dict[str, list[int]] = {s.name: [] for s in strategies}
        self._fills_of: dict[str, list[Any]] = {s.name: [] for s in strategies}
        self._bus: deque[Send] = deque()
        self._handlers: dict[str, Callable[[Any, float], list[Send]]] = {
            LEDGER: self.ledger.handle,
            WRITER: self._write,
            RECONCILER: self._reconcile,
        }
        for name, core in self.strategies.items():
            self._handlers[strategy_address(name)] = core.handle
        for venue_name, connection in self.connections.items():
            self._handlers[connection_address(venue_name)] = connection.handle

    def run(self, progress: Callable[[int, int], None] | None = None) -> LabResult:
        """Run a one-strategy Lab (:meth:`run_all` runs several)."""
        if len(self.strategies) > 1:
            raise ValueError("a Lab of several strategies runs with run_all()")
        return self.run_all(progress).combined

    def run_all(self, progress: Callable[[int, int], None] | None = None) -> LabRun:
        """Every candle (or, ``fast``, every candle on which something can happen), then each
        strategy's result and the combined account. ``progress(done, total)`` is called
        now and then. Raises StrategyFailed when a strategy's Python code fails."""
        first = self.candles[0].ts
        for s in self.strategy_settings:
            self.journal += self.ledger.allocate(
                s.name, s.allocation.quote, s.allocation.base, first, "Lab allocation", s.allocation.base_cost,
            )
        for core in self.strategies.values():
            self._deliver(core.start(first), first)
        total = len(self.candles)
        accounts = [self.ledger.accounts[s.name] for s in self.strategy_settings]
        visited = array("q")
        quote_held = [array("d") for _ in accounts]
        base_held = [array("d") for _ in accounts]
        if self.fast:
            fired = self._fired
            index = int(fired[0]) if len(fired) else total
            if any(core.wants_every_candle() for core in self.strategies.values()):
                index = 0  # e.g. starting inventory with exits: the first candle may already sell
        else:
            index = 0
        symbol = self.symbol
        # The cores make no reference cycles on this path; the cyclic collector, which would
        # walk every fill and journal entry kept so far again and again, waits.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while index < total:
                candle = self.candles[index]
                now = float(candle.ts)
                for connection in self.connections.values():
                    if self.fast:
                        self._deliver_in_turns(connection.release([(symbol, candle)], now), now)
                    else:
                        self._deliver_in_turns(connection.handle(Tick(index + 1.0), now), now)
                self._check_strategies(candle)
                visited.append(index)
                for account, quote, base in zip(accounts, quote_held, base_held):
                    quote.append(float(account.quote_free + account.quote_reserved))
                    base.append(float(account.base_free + account.base_reserved))
                index = self._next_visit(index) if self.fast else index + 1
                if progress is not None and len(visited) % 10_000 == 0:
                    progress(index, total)
        finally:
            if collecting:
                gc.enable()
        if progress is not None:
            progress(total, total)
        return self._results(visited, quote_held, base_held)

    def _results(self, visited: array, quote_held: list[array], base_held: list[array]) -> LabRun:
        """Each strategy's result and the combined one. Between visited candles nothing was
        held differently: equity follows the close."""
        import numpy as np

        total = len(self.candles)
        closes = self._closes if self.fast else _floats(self.candles, "close")
        ts = self._ts if self.fast else _timestamps(self.candles)
        steps = np.searchsorted(np.frombuffer(visited, dtype=np.int64), np.arange(total), side="right") - 1
        before = steps < 0
        steps[before] = 0
        equities = []
        for s, quote_at, base_at in zip(self.strategy_settings, quote_held, base_held):
            quote = np.frombuffer(quote_at, dtype=float)[steps] if len(quote_at) else np.zeros(total)
            base = np.frombuffer(base_at, dtype=float)[steps] if len(base_at) else np.zeros(total)
            quote[before] = float(s.allocation.quote)
            base[before] = float(s.allocation.base)
            equities.append(Equity(ts, quote + base * closes, base))
        del steps
        count = len(visited)
        below = sorted(t for ticks in self.below_tick.values() for t in ticks)
        # Each order has its own sequence number (client order id), from 1.
        placed = {name: core.next_sequence - 1 for name, core in self.strategies.items()}
        combined = LabResult(self.candles, self.orders, self.fills, self.events, self.journal, Equity.total(equities),
                             count, below, sum(placed.values()))
        if len(self.strategies) == 1:
            return LabRun({self.settings.name: combined}, combined)
        results = {
            s.name: LabResult(
                self.candles,
                {cid: o for cid, o in self.orders.items() if o.strategy == s.name},
                self._fills_of[s.name],
                [e for e in self.events if e.strategy == s.name],
                [e for e in self.journal if e.strategy == s.name],
                equity, count, self.below_tick[s.name], placed[s.name],
            )
            for s, equity in zip(self.strategy_settings, equities)
        }
        return LabRun(results, combined)

    def _check_strategies(self, candle: Candle) -> None:
        for name, core in self.strategies.items():
            if core.python_failure is not None:
                raise StrategyFailed(name, candle.ts, core.python_failure)

    def _next_visit(self, index: int) -> int:
        """The next candle on which something can happen after candle ``index``: a trigger
        of any strategy fires, a resting order of any can fill (the market trades through
        the best resting price of a venue, with volume) or expire, or an exit's price is
        reached. The searches are vectorised and err towards visiting: a visited candle on
        which nothing happens changes nothing, so the result is exactly that of stepping
        every candle (tests/test_fast_path.py)."""
        fired = self._fired_list
        later = bisect.bisect_right(fired, index)
        target = fired[later] if later < len(fired) else len(self.candles)
        exchanges = [connection.exchange.exchange for connection in self.connections.values()]
        cores = self.strategies.values()
        if not any(exchange.open_orders() for exchange in exchanges) and not any(c.wants_every_candle() for c in cores):
            return target
        start = index + 1
        wakeups = [core.wakeups() for core in cores]
        if any(w is None for w in wakeups):
            return start
        lows, highs, volumes = self._ranges()
        closes = self._closes
        # Float comparisons are inclusive where the rules are strict: a price that rounds
        # to the same float is a candle to look at, never one to skip.
        fill = end = min(target + 1, len(self.candles))
        for exchange in exchanges:
            buy, sell = exchange.fill_thresholds(self.symbol)
            if buy is not None:
                fill = _first(lambda a, b: (lows[a:b] <= float(buy)) & (volumes[a:b] > 0), start, fill)
            if sell is not None:
                fill = _first(lambda a, b: (highs[a:b] >= float(sell)) & (volumes[a:b] > 0), start, fill)
        if fill < end:
            # A fill reaches the strategy before the candle that made it, when it has seen
            # the candle before (its market time, for a cooldown): visit that one too.
            target = max(start, fill - 1)
        for wakeup in wakeups:
            assert wakeup is not None
            if wakeup.expiry is not None:
                target = min(target, max(start, bisect.bisect_left(self._ts_list, wakeup.expiry)))
            if wakeup.take_profit is not None:
                take = float(wakeup.take_profit)
                target = _first(lambda a, b: closes[a:b] >= take, start, target)
            if wakeup.stop_loss is not None:
                stop = float(wakeup.stop_loss)
                target = _first(lambda a, b: closes[a:b] <= stop, start, target)
        return target

    def _ranges(self) -> tuple[Any, Any, Any]:
        """Lows, highs and volumes as floats (made once, when an order first rests)."""
        if self._lows is None:
            self._lows = _floats(self.candles, "low")
            self._highs = _floats(self.candles, "high")
            self._volumes = _floats(self.candles, "volume")
        return self._lows, self._highs, self._volumes

    def _deliver_in_turns(self, sends: list[Send], now: float) -> None:
        """What a candle's release sends, with the strategies taking turns: the fills first,
        then the candle to one strategy at a time, each with all it causes delivered before
        the next hears of the candle (as a lockstep replay does in shadow mode)."""
        turns = sorted((s for s in sends if isinstance(s.message, CandleClosed)), key=lambda s: self._turn.get(s.to, 0))
        if len(turns) <= 1:
            self._deliver(sends, now)
            return
        self._deliver([s for s in sends if not isinstance(s.message, CandleClosed)] + turns[:1], now)
        for turn in turns[1:]:
            self._deliver([turn], now)

    def _deliver(self, sends: list[Send], now: float) -> None:
        bus, handlers = self._bus, self._handlers
        bus.extend(sends)
        while bus:
            to, message = bus.popleft()
            bus.extend(handlers[to](message, now))

    def _write(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, RecordOrder):
            order = message.order
            if self.keep_records or not order.state.is_final:
                self.orders[order.client_order_id] = order
            else:
                self.orders.pop(order.client_order_id, None)
            if message.durable_reply_to is not None:
                return [Send(message.durable_reply_to, OrderDurable(message.order.client_order_id))]
        elif isinstance(message, RecordJournal):
            if self.keep_records:
                self.journal.extend(message.entries)
            else:
                # Of a sell's settle entry, what the report reads (its other fields at their
                # shared defaults: a third of the memory).
                self.journal.extend(
                    JournalEntry("settle", e.strategy, e.at, e.client_order_id, e.trade_id, e.side,
                                 realized_pnl=e.realized_pnl)
                    for e in message.entries if e.kind == "settle" and e.side is Side.SELL
                )
            self.fills.extend(message.fills)
            if message.fills and len(self.strategies) > 1:
                self._fills_of[message.entries[0].strategy].extend(message.fills)
        elif isinstance(message, RecordEvent):
            if message.kind == "blocked" and message.payload.get("below_tick") and message.strategy in self.below_tick:
                self.below_tick[message.strategy].append(int(now))
            if self.keep_events:
                self.events.append(message)
        return []

    def _reconcile(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, ReconciledQuery):
            return [Send(message.reply_to, Reconciled(message.venue))]
        return []


def _floats(candles: Sequence[Candle], name: str) -> Any:
    """A column of the candles as floats: from a CandleSeries' arrays, else built."""
    import numpy as np

    if isinstance(candles, CandleSeries):
        return candles.floats(name)
    return np.fromiter((float(getattr(c, name)) for c in candles), dtype=float, count=len(candles))


def _timestamps(candles: Sequence[Candle]) -> Any:
    import numpy as np

    if isinstance(candles, CandleSeries):
        return candles.timestamps()
    return np.fromiter((c.ts for c in candles), dtype=np.int64, count=len(candles))


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

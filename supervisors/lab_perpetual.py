"""The Strategy Lab for perpetual (swap) strategies: the cores shadow mode runs, in a loop.

The same discrete-event loop as :class:`supervisors.lab.Lab` (one candle at a time, every
message delivered in FIFO order until none is left), over the cores a simulated swap venue
runs in shadow mode: :class:`actors.strategy.perpetual_core.PerpetualStrategyCore` (postures,
the action planner, protection), the ledger's position book
(:class:`actors.ledger.position_ledger_core.PositionLedgerCore`, beside the spot
:class:`actors.ledger.core.LedgerCore` as in the ledger actor),
:class:`actors.connection.perpetual_core.PerpetualConnectionCore` and the USD-M engine
:class:`exchange.perpetuals.PerpetualExchange` (positions, leverage, margin, reduce-only,
stop-limit triggers on the candle's range, funding, the liquidation approximation). There
is no second engine: what differs from ``limitline run`` is only the clock and the
reconciler.

- **Every candle is visited.** The spot Lab's fast path (jump to the next candle on which a
  trigger fires or a resting order can fill) does not apply: a position is exposed on every
  candle whatever rests: funding falls due every 8 hours, a liquidation price can be
  reached, a stop-limit's trigger and the protection's gap check look at every close, and a
  perpetual strategy asks for every candle (``wants_every_candle``). Correctness first.
- **The reconciler answers at once**, and it compares positions (the reconciler's own
  :func:`actors.reconciler.positions_core.compare_positions`, applied at once, without the
  two-cycle rule: the simulated exchange is exact) after a candle on which the exchange
  liquidated a position: the forced order's trade and the insurance fund's clearance are
  booked in the ledger as ``run`` books them, and the strategy is paused, as ``run`` pauses it
  (the Lab has no operator to resume it: it stays flat for the rest of the run, and the
  report says so).

Equity (per candle, in the settlement asset) is the strategy's collateral in the ledger
(allocation + realized P&L - fees - funding + adjustments) plus the unrealized P&L of its
position at the close; ``held`` is the signed position (base units).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Callable, Sequence

import attrs
import numpy as np

from actors.connection.perpetual_core import PerpetualConnectionCore
from actors.ledger.core import LedgerCore
from actors.ledger.position_ledger_core import PositionLedgerCore
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    LedgerSnapshot,
    OrderDurable,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordJournal,
    RecordOrder,
    RecordPositionJournal,
    Send,
    Tick,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from actors.reconciler.positions_core import compare_positions
from actors.strategy.perpetual_core import PerpetualStrategyCore
from actors.strategy.settings import StrategySettings
from exchange.candles import Candle
from exchange.perpetuals import PerpetualExchange
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from supervisors.lab import LabResult, StrategyFailed
from supervisors.lab_results import Equity


@attrs.define
class PerpetualLabResult(LabResult):
    """A Lab run of a perpetual strategy: :class:`LabResult` (``journal`` holds the position
    book's entries, ``equity`` the collateral plus unrealized P&L and the signed position)
    and what the account did besides the fills."""

    #: The settlement asset (equity, P&L, funding are in it).
    settlement: str = "USDT"
    #: The ledger's position at the end: size, entry price, realized P&L, fees by currency,
    #: funding paid (see ``actors.ledger.positions_core.Position.snapshot``).
    position: dict[str, Any] = attrs.Factory(dict)
    #: The strategy's collateral at the end (wallet, margin reserved, margin used).
    collateral: dict[str, str] = attrs.Factory(dict)
    #: The exchange's liquidations: (market time, price, amount, side of the forced order).
    liquidations: list[tuple[int, Decimal, Decimal, str]] = attrs.Factory(list)
    #: Client order ids of the protective orders that closed (or reduced) the position.
    protection_closes: list[str] = attrs.Factory(list)
    #: The market time from which the strategy was paused (a liquidation), if it was.
    paused_at: int | None = None
    paused_reason: str | None = None
    #: Income the exchange booked (type -> sum), e.g. FUNDING_FEE, INSURANCE_CLEAR.
    income: dict[str, Decimal] = attrs.Factory(dict)


class PerpetualLab:
    """``exchange``: the simulated account, configured as the venue is (wallet, leverage and
    margin mode per market, fees, funding rate, maintenance margin rate): for a config,
    ``supervisors.app.build_perpetual_exchange(venue)``, the one shadow mode builds."""

    def __init__(
        self,
        settings: StrategySettings,
        exchange: PerpetualExchange,
        candles: Sequence[Candle],
        keep_events: bool = True,
    ) -> None:
        if not candles:
            raise ValueError("the Lab needs at least one candle")
        if not settings.perpetual:
            raise ValueError(f"strategy {settings.name} is not a strategy of positions (on_buy / on_sell)")
        if settings.symbol not in exchange.markets:
            raise ValueError(f"the exchange does not list {settings.symbol} (it lists {sorted(exchange.markets)})")
        self.settings = settings
        self.candles = candles
        self.exchange = exchange
        self.settlement = exchange.margin_asset
        venue = settings.venue
        feed = ReplayFeed(candles, speed=1.0, started_at=0.0)  # one candle per tick of a clock that counts candles
        self.connection = PerpetualConnectionCore(venue, ShadowVenue(exchange, {settings.symbol: feed}))
        self.ledger = LedgerCore()
        self.book = PositionLedgerCore({settings.name: settings.symbol}, self.settlement)
        # What pre-flight checks the allocation against: the account's wallet in the
        # settlement asset (as ``allocated_on`` sums a config's).
        allocated = {self.settlement: settings.allocation.quote}
        self.strategy = PerpetualStrategyCore(settings, allocated, record_evaluations=keep_events)
        self.keep_events = keep_events
        self.orders: dict[str, Order] = {}
        self.fills: list[Any] = []
        self.events: list[RecordEvent] = []
        self.journal: list[Any] = []
        self.below_tick: list[int] = []
        self.liquidations: list[tuple[int, Decimal, Decimal, str]] = []
        self.protection_closes: list[str] = []
        self.paused_at: int | None = None
        self._bus: deque[Send] = deque()
        self._handlers: dict[str, Callable[[Any, float], list[Send]]] = {
            LEDGER: self._ledger,
            strategy_address(settings.name): self.strategy.handle,
            connection_address(venue): self.connection.handle,
            WRITER: self._write,
            RECONCILER: self._reconcile,
        }

    def run(self, progress: Callable[[int, int], None] | None = None) -> PerpetualLabResult:
        s = self.settings
        first = self.candles[0].ts
        self.journal += self.book.allocate({s.name: s.allocation.quote}, first)
        self._deliver(self.strategy.start(first), first)
        times = np.empty(len(self.candles), dtype=np.int64)
        values = np.empty(len(self.candles), dtype=float)
        held = np.empty(len(self.candles), dtype=float)
        total = len(self.candles)
        account = self.book.book
        forced = len(self.exchange.liquidation_orders)
        for index, candle in enumerate(self.candles):
            now = float(candle.ts)
            self._deliver(self.connection.handle(Tick(index + 1.0), now), now)
            if len(self.exchange.liquidation_orders) > forced:
                forced = len(self.exchange.liquidation_orders)
                self._reconcile_positions(candle, now)
            if self.strategy.python_failure is not None:
                raise StrategyFailed(s.name, candle.ts, self.strategy.python_failure)
            position = account.position(s.name, s.symbol)
            value = account.account(s.name).wallet + position.size * candle.close - position.entry_cost
            times[index], values[index], held[index] = candle.ts, float(value), float(position.size)
            if progress is not None and (index % 10_000 == 0 or index == total - 1):
                progress(index + 1, total)
        income: dict[str, Decimal] = {}
        for entry in self.exchange.income:
            income[entry.income_type] = income.get(entry.income_type, Decimal(0)) + entry.amount
        snapshot = account.snapshot()
        return PerpetualLabResult(
            self.candles, self.orders, self.fills, self.events, self.journal, Equity(times, values, held), total, self.below_tick,
            orders_placed=len(self.orders),  # every order is kept: the Lab of one perpetual strategy
            settlement=self.settlement,
            position=snapshot["positions"].get(f"{s.name}:{s.symbol}", {}),
            collateral=snapshot["collateral"].get(s.name, {}),
            liquidations=self.liquidations,
            protection_closes=self.protection_closes,
            paused_at=self.paused_at,
            paused_reason=self.strategy.paused if self.paused_at is not None else None,
            income=income,
        )

    def _reconcile_positions(self, candle: Candle, now: float) -> None:
        """After a liquidation: the reconciler's comparison of positions, applied at once."""
        s = self.settings
        for order in self.exchange.liquidation_orders[len(self.liquidations):]:
            self.liquidations.append((candle.ts, order.price, order.amount, order.side.value))
        snapshot = self.connection.snapshot(now)
        ledger = LedgerSnapshot(0, {}, {}, positions=self.book.view())
        differences = compare_positions(tuple(self.orders.values()), snapshot, ledger, {s.name: (s.venue, s.symbol)})
        sends: list[Send] = []
        for difference, actions in differences:
            sends.append(Send(WRITER, RecordEvent(
                kind="reconcile_difference", actor="reconciler", at=now, strategy=difference.strategy,
                reason=f"{difference.kind}: {difference.detail}",
                payload={"class": difference.kind, "venue": difference.venue, "key": difference.key},
            )))
            sends += actions
        self._deliver(sends, now)
        if self.strategy.paused is not None and self.paused_at is None:
            self.paused_at = candle.ts

    def _ledger(self, message: Any, now: float) -> list[Send]:
        """The ledger actor's routing: position messages to the position book, the rest
        (a fill of no order of ours: a liquidation's, kept as a row) to the spot core."""
        if self.book.owns(message):
            return self.book.handle_batch([message], now)
        return self.ledger.handle(message, now)

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
        elif isinstance(message, (RecordJournal, RecordPositionJournal)):
            self.journal.extend(message.entries)
            self.fills.extend(message.fills)
        elif isinstance(message, RecordEvent):
            if message.kind == "blocked" and message.payload.get("below_tick"):
                self.below_tick.append(int(now))
            if message.kind == "closed_by_protection" and message.client_order_id:
                self.protection_closes.append(message.client_order_id)
            if self.keep_events:
                self.events.append(message)
        return []

    def _reconcile(self, message: Any, now: float) -> list[Send]:
        if isinstance(message, ReconciledQuery):
            return [Send(message.reply_to, Reconciled(message.venue))]
        return []

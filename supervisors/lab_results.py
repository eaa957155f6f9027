"""What a Lab run leaves behind: per strategy its orders, fills, journal, events and equity,
and, for a run of several strategies, their combined account.

Per-candle series are numpy arrays (8 bytes a candle each), never a Python object per
candle: a 3-million-candle run keeps a strategy's equity in 48 MB (the times are shared with
the candles), where a list of tuples took about 400 MB.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence, overload

import attrs
import numpy as np

from actors.orders import Order
from exchange.candles import Candle


class Equity(Sequence[tuple[int, float, float]]):
    """Per candle: (its time in epoch seconds, equity in the quote asset at its close, base
    held), as three arrays of one length: ``ts`` (int64), ``value`` and ``held`` (float64).
    Indexing gives the tuple; slicing is a view."""

    __slots__ = ("ts", "value", "held")

    def __init__(self, ts: np.ndarray, value: np.ndarray, held: np.ndarray) -> None:
        if not len(ts) == len(value) == len(held):
            raise ValueError(f"equity arrays of different lengths: {len(ts)}, {len(value)}, {len(held)}")
        self.ts, self.value, self.held = ts, value, held

    def __len__(self) -> int:
        return len(self.ts)

    @overload
    def __getitem__(self, index: int) -> tuple[int, float, float]: ...

    @overload
    def __getitem__(self, index: slice) -> Equity: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Equity(self.ts[index], self.value[index], self.held[index])
        return int(self.ts[index]), float(self.value[index]), float(self.held[index])

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        step = 65_536  # a window at a time: never a Python object per candle all at once
        for start in range(0, len(self.ts), step):
            window = slice(start, start + step)
            yield from zip(self.ts[window].tolist(), self.value[window].tolist(), self.held[window].tolist())

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same (ts, equity, held) tuples, candle for candle."""
        if isinstance(other, Equity):
            return (np.array_equal(self.ts, other.ts) and np.array_equal(self.value, other.value)
                    and np.array_equal(self.held, other.held))
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Equity({len(self)} candles)"

    @staticmethod
    def total(parts: Sequence[Equity]) -> Equity:
        """The equity of several accounts over the same candles (one quote asset): summed."""
        if len(parts) == 1:
            return parts[0]
        return Equity(parts[0].ts, np.sum([p.value for p in parts], axis=0), np.sum([p.held for p in parts], axis=0))


@attrs.define
class LabResult:
    candles: Sequence[Candle]
    orders: dict[str, Order]  # last state of each order, by client order id
    fills: list[Any]  # FillReports, in order
    events: list[Any]  # RecordEvents
    journal: list[Any]  # JournalEntries
    #: (candle ts, equity in quote, base held) after each candle
    equity: Equity
    #: Candles the loop actually visited (all of them unless the fast path skipped some).
    visited: int = 0
    #: Signals blocked because the limit price was below one tick (market time of each).
    #: A close below the market's tick is a decision (``blocked``), exactly as in shadow and
    #: live mode, not a data error: the Lab must decide what ``run`` would decide on the same
    #: candles, and the candles are not wrong, the tick is too coarse for them. The CLI
    #: warns about them, since such a backtest says little about the strategy.
    below_tick: list[int] = attrs.Factory(list)
    #: Orders the strategies placed (decided and sent to the ledger), all of them: with
    #: ``keep_records`` off, ``orders`` holds only those still open at the end.
    orders_placed: int = 0


@attrs.define
class LabRun:
    """A Lab run of one or more strategies on shared simulated venues."""

    #: Per strategy (in the config's order): what it did, its own equity.
    results: dict[str, LabResult]
    #: The account of them all: every order, fill and journal entry; equity summed.
    combined: LabResult

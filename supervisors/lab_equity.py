"""The Lab's equity series kept as columns: a million candles' equity is three arrays, not
a million tuples (building the tuples cost the fast path as much as its orders did)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any


class EquitySeries(Sequence[tuple[int, float, float]]):
    """(candle ts, equity in quote, base held) after each candle, as the Lab's list of
    tuples reads (indexing, iteration, ``==`` with a list), from arrays: ``ts`` int64 epoch
    seconds, ``equity`` and ``held`` float64, of one length."""

    __slots__ = ("ts", "equity", "held")

    def __init__(self, ts: Any, equity: Any, held: Any) -> None:
        if not len(ts) == len(equity) == len(held):
            raise ValueError(f"ts, equity and held must have one length, got {len(ts)}, {len(equity)}, {len(held)}")
        self.ts, self.equity, self.held = ts, equity, held

    def __len__(self) -> int:
        return len(self.ts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return EquitySeries(self.ts[index], self.equity[index], self.held[index])
        return (int(self.ts[index]), float(self.equity[index]), float(self.held[index]))

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        return zip(self.ts.tolist(), self.equity.tolist(), self.held.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<EquitySeries of {len(self):,} candles>"

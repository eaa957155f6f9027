"""A replay feed: historical candles released one by one as (virtual) time passes.

Sans-IO: the feed is told the time and answers which candles have closed since it was last
asked. ``speed`` is candles per second of the clock it is driven by; candle ``i`` (counting
from where the clock started, ``start_index`` or where :meth:`ReplayFeed.resume_after` put
it) is released at ``started_at + (i + 1) / speed``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime
from typing import Sequence

from exchange.candles import Candle


class ReplayFeed:
    def __init__(
        self,
        candles: Sequence[Candle],
        speed: float,
        started_at: float | None = None,
        start: datetime | None = None,
    ) -> None:
        """``started_at`` None: the clock starts at the first :meth:`due` call."""
        if speed <= 0:
            raise ValueError(f"speed must be greater than 0 candles per second, got {speed}")
        self.candles = candles
        self.speed = speed
        self.started_at = started_at
        self.start_index = 0 if start is None else bisect_left([c.ts for c in candles], int(start.timestamp()))
        if self.start_index >= len(candles):
            raise ValueError(f"the data ends before the replay start {start.isoformat() if start else ''}")
        self.cursor = self.start_index
        #: The candle the clock counts from: the start, or where a resumed replay went on.
        self._clock_base = self.start_index

    def resume_after(self, ts: int) -> None:
        """Go on with the first candle after ``ts`` (the last one released before a
        restart), never before the start; the clock restarts at the next :meth:`due`."""
        timestamps = [c.ts for c in self.candles]
        self.cursor = max(self.start_index, bisect_right(timestamps, ts))
        self._clock_base = self.cursor
        self.started_at = None

    @property
    def last_ts(self) -> int | None:
        """The time of the last candle released, if any."""
        return self.candles[self.cursor - 1].ts if self.cursor > self.start_index else None

    def due(self, now: float) -> list[Candle]:
        """Candles that closed since the last call, oldest first."""
        if self.started_at is None:
            self.started_at = now
        released = self._clock_base + int((now - self.started_at) * self.speed)
        end = min(released, len(self.candles))
        if end <= self.cursor:
            return []
        batch = list(self.candles[self.cursor : end])
        self.cursor = end
        return batch

    def take_next(self) -> Candle | None:
        """The next candle regardless of time (lockstep replay), or None at the end."""
        if self.finished:
            return None
        self.cursor += 1
        return self.candles[self.cursor - 1]

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.candles)

    def next_release(self) -> float | None:
        """When the next candle is due, on the driving clock."""
        if self.finished or self.started_at is None:
            return None
        return self.started_at + (self.cursor - self._clock_base + 1) / self.speed

"""Trigger outcomes for a whole series at once, for the Lab's fast path.

Every function here gives, bar for bar, exactly what the incremental trigger states of
``rules.py`` give (the equivalence is a property test): simple averages and percentage
changes are vectorised with the same float arithmetic; exponential averages and RSI run the
same recurrence once over the series; price levels and grids run their incremental state
on the candles themselves (their comparisons are on Decimal prices).
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

from actors.strategy.rules import (
    Change,
    Combination,
    RuleOutcome,
    SmaCross,
    TriggerSpec,
    make_trigger,
)
from exchange.candles import Candle


def fired(spec: TriggerSpec, candles: Sequence[Candle], closes: np.ndarray) -> np.ndarray:
    """For each candle, whether ``spec`` fires on it."""
    if isinstance(spec, SmaCross) and spec.kind == "sma_cross":
        return _cross(_sma(closes, spec.fast), _sma(closes, spec.slow), spec.direction)
    if isinstance(spec, Change):
        return _change(closes, spec)
    if isinstance(spec, Combination):
        parts = [fired(part, candles, closes) for part in spec.of]
        return np.logical_and.reduce(parts) if spec.kind == "all" else np.logical_or.reduce(parts)
    state = make_trigger(spec)  # EMA, RSI, levels, grids: the incremental state, once
    return np.fromiter((state.update(candle).fired for candle in candles), dtype=bool, count=len(candles))


def _sma(closes: np.ndarray, length: int) -> np.ndarray:
    sums = np.concatenate(([0.0], np.cumsum(closes)))
    out = np.full(len(closes), np.nan)
    if len(closes) >= length:
        out[length - 1:] = (sums[length:] - sums[:-length]) / length
    return out


def _cross(fast: np.ndarray, slow: np.ndarray, direction: str) -> np.ndarray:
    diff = fast - slow
    out = np.zeros(len(diff), dtype=bool)
    previous, current = diff[:-1], diff[1:]
    defined = ~np.isnan(previous) & ~np.isnan(current)
    if direction == "up":
        out[1:] = defined & (previous <= 0) & (current > 0)
    else:
        out[1:] = defined & (previous >= 0) & (current < 0)
    return out


def _change(closes: np.ndarray, spec: Change) -> np.ndarray:
    k = spec.lookback
    out = np.zeros(len(closes), dtype=bool)
    if len(closes) <= k:
        return out
    reference = closes[:-k]
    change = (closes[k:] - reference) / reference * 100
    threshold = float(spec.percent)
    out[k:] = change <= threshold if threshold < 0 else change >= threshold
    return out


class Precomputed:
    """A trigger whose outcomes were computed up front; stands in for the incremental one.

    ``timestamps``: each candle's opening time, ascending (the outcome of a candle is found
    by its time; shared by the buy and sell triggers of one run)."""

    def __init__(self, name: str, outcomes: np.ndarray, timestamps: Sequence[int]) -> None:
        self.name = name
        self._fired = outcomes
        self._timestamps = timestamps

    def update(self, candle: Candle) -> RuleOutcome:
        return RuleOutcome(self.name, bool(self._fired[bisect.bisect_left(self._timestamps, candle.ts)]), {})

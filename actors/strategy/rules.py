"""Triggers: what makes a strategy want to buy or sell, from closed candles.

Each trigger kind has a spec (an attrs class read from the YAML, tagged by ``kind``) and a
running state that updates in constant time per candle. Indicator arithmetic is done in
floats: a signal does not need exact decimals, while every price and amount that becomes
an order is a ``Decimal``.

Documented bounds (the pre-flight checks refuse values outside them):

- ``sma_cross`` / ``ema_cross``: 1 <= fast < slow <= 1000; ``direction`` is ``up`` (the
  fast average crosses above the slow one) or ``down``; simple or exponential averages;
- ``change``: 1 <= lookback <= 1000 candles, percent in [-90, 1000] and not 0; it fires
  when the close moved by at least ``percent`` (a negative percent: a drop of at least
  that much) against the close ``lookback`` candles ago;
- ``rsi``: 2 <= period <= 1000; exactly one of ``below`` / ``above`` in (0, 100); fires while
  Wilder's RSI of the closes is below (or above) it;
- ``price_cross``: level > 0; fires on the candle whose close crosses the level (``up``:
  from below to at or above; ``down``: from above to at or below);
- ``grid``: low < high, 2 <= levels <= 1000 evenly spaced lines; fires when the close
  crosses any line in ``direction`` (``down`` suits buys, ``up`` sells);
- ``all`` / ``any``: a list of 1 to 20 triggers, all (or any) of which fire on the candle.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Literal, Union

import attrs

from exchange.candles import Candle


@attrs.frozen
class SmaCross:
    """A moving-average cross: simple (``sma_cross``) or exponential (``ema_cross``)."""

    fast: int
    slow: int
    direction: Literal["up", "down"] = "up"
    kind: Literal["sma_cross", "ema_cross"] = "sma_cross"

    def problems(self) -> list[str]:
        out = []
        if not 1 <= self.fast < self.slow <= 1000:
            out.append(f"fast and slow must satisfy 1 <= fast < slow <= 1000, got fast={self.fast} slow={self.slow}")
        if self.direction not in ("up", "down"):
            out.append(f"direction must be up or down, got {self.direction!r}")
        return out

    @property
    def name(self) -> str:
        return f"{self.kind}({self.fast},{self.slow},{self.direction})"


@attrs.frozen
class Rsi:
    period: int = 14
    below: Decimal | None = None
    above: Decimal | None = None
    kind: Literal["rsi"] = "rsi"

    def problems(self) -> list[str]:
        out = []
        if not 2 <= self.period <= 1000:
            out.append(f"period must be between 2 and 1000, got {self.period}")
        given = [v for v in (self.below, self.above) if v is not None]
        if len(given) != 1 or not all(0 < v < 100 for v in given):
            out.append(f"give exactly one of below or above, between 0 and 100, got below={self.below} above={self.above}")
        return out

    @property
    def name(self) -> str:
        side = f"<{self.below}" if self.below is not None else f">{self.above}"
        return f"rsi({self.period}){side}"


@attrs.frozen
class PriceCross:
    level: Decimal
    direction: Literal["up", "down"] = "up"
    kind: Literal["price_cross"] = "price_cross"

    def problems(self) -> list[str]:
        out = [] if self.level > 0 else [f"level must be greater than 0, got {self.level}"]
        if self.direction not in ("up", "down"):
            out.append(f"direction must be up or down, got {self.direction!r}")
        return out

    @property
    def name(self) -> str:
        return f"price_cross({self.level},{self.direction})"


@attrs.frozen
class Grid:
    low: Decimal
    high: Decimal
    levels: int
    direction: Literal["up", "down"] = "down"
    kind: Literal["grid"] = "grid"

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.low < self.high:
            out.append(f"need 0 < low < high, got low={self.low} high={self.high}")
        if not 2 <= self.levels <= 1000:
            out.append(f"levels must be between 2 and 1000, got {self.levels}")
        return out

    @property
    def name(self) -> str:
        return f"grid({self.low}-{self.high}x{self.levels},{self.direction})"


@attrs.frozen
class Combination:
    of: tuple["TriggerSpec", ...]
    kind: Literal["all", "any"] = "all"

    def problems(self) -> list[str]:
        if not 1 <= len(self.of) <= 20:
            return [f"{self.kind}: give 1 to 20 triggers, got {len(self.of)}"]
        return [f"{self.kind}[{i}]: {p}" for i, spec in enumerate(self.of) for p in spec.problems()]

    @property
    def name(self) -> str:
        return f"{self.kind}({', '.join(spec.name for spec in self.of)})"


@attrs.frozen
class Change:
    percent: Decimal
    lookback: int
    kind: Literal["change"] = "change"

    def problems(self) -> list[str]:
        out = []
        if not 1 <= self.lookback <= 1000:
            out.append(f"lookback must be between 1 and 1000 candles, got {self.lookback}")
        if self.percent == 0 or not Decimal(-90) <= self.percent <= Decimal(1000):
            out.append(f"percent must be in [-90, 1000] and not 0, got {self.percent}")
        return out

    @property
    def name(self) -> str:
        return f"change({self.percent}%,{self.lookback})"


TriggerSpec = Union[SmaCross, Change, Rsi, PriceCross, Grid, Combination]


@attrs.frozen
class RuleOutcome:
    rule: str
    fired: bool
    inputs: dict[str, Any]


class _SmaCrossState:
    name: str
    def __init__(self, spec: SmaCross) -> None:
        self.spec = spec
        self.name = spec.name
        average = _Ema if spec.kind == "ema_cross" else _Sma
        self._fast = average(spec.fast)
        self._slow = average(spec.slow)
        self._previous_diff: float | None = None

    def update(self, candle: Candle) -> RuleOutcome:
        close = float(candle.close)
        fast, slow = self._fast.update(close), self._slow.update(close)
        fired = False
        inputs: dict[str, Any] = {"fast": fast, "slow": slow}
        if fast is not None and slow is not None:
            diff = fast - slow
            previous = self._previous_diff
            if previous is not None:
                if self.spec.direction == "up":
                    fired = previous <= 0 < diff
                else:
                    fired = previous >= 0 > diff
            self._previous_diff = diff
        return RuleOutcome(self.name, fired, inputs)


class _ChangeState:
    name: str
    def __init__(self, spec: Change) -> None:
        self.spec = spec
        self.name = spec.name
        self._closes: deque[float] = deque(maxlen=spec.lookback + 1)
        self._threshold = float(spec.percent)

    def update(self, candle: Candle) -> RuleOutcome:
        self._closes.append(float(candle.close))
        if len(self._closes) <= self.spec.lookback:
            return RuleOutcome(self.name, False, {"change_pct": None})
        reference = self._closes[0]
        change = (self._closes[-1] - reference) / reference * 100
        fired = change <= self._threshold if self._threshold < 0 else change >= self._threshold
        return RuleOutcome(self.name, fired, {"change_pct": round(change, 4)})


class _Sma:
    """A simple moving average in O(1) per value: the difference of two cumulative sums.

    Defined this way (not as a running sum with subtractions) so that the Lab's vectorised
    fast path, which computes it with ``numpy.cumsum`` (sequential float additions, in the
    same order), gets bit-for-bit the same values and so the very same crossings.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._sums: deque[float] = deque([0.0], maxlen=length + 1)
        self._total = 0.0

    def update(self, value: float) -> float | None:
        self._total += value
        self._sums.append(self._total)
        if len(self._sums) <= self.length:
            return None
        return (self._sums[-1] - self._sums[0]) / self.length


class _Ema:
    """An exponential moving average (seeded with the simple average of the first values)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._alpha = 2 / (length + 1)
        self._seed = _Sma(length)
        self._value: float | None = None

    def update(self, value: float) -> float | None:
        if self._value is None:
            self._value = self._seed.update(value)
        else:
            self._value += self._alpha * (value - self._value)
        return self._value


class _RsiState:
    name: str
    """Wilder's RSI, O(1) per candle."""

    def __init__(self, spec: Rsi) -> None:
        self.spec = spec
        self.name = spec.name
        self._previous: float | None = None
        self._gain = self._loss = 0.0
        self._count = 0

    def update(self, candle: Candle) -> RuleOutcome:
        close = float(candle.close)
        value = None
        if self._previous is not None:
            change = close - self._previous
            gain, loss = max(change, 0.0), max(-change, 0.0)
            n = self.spec.period
            self._count += 1
            if self._count <= n:  # the first average is a simple one
                self._gain += gain / n
                self._loss += loss / n
            else:
                self._gain = (self._gain * (n - 1) + gain) / n
                self._loss = (self._loss * (n - 1) + loss) / n
            if self._count >= n:
                value = 100.0 if self._loss == 0 else 100 - 100 / (1 + self._gain / self._loss)
        self._previous = close
        fired = False
        if value is not None:
            fired = value < float(self.spec.below) if self.spec.below is not None else value > float(self.spec.above or 100)
        return RuleOutcome(self.name, fired, {"rsi": None if value is None else round(value, 4)})


class _PriceCrossState:
    name: str
    def __init__(self, spec: PriceCross) -> None:
        self.spec = spec
        self.name = spec.name
        self._previous: Decimal | None = None

    def update(self, candle: Candle) -> RuleOutcome:
        level, previous, close = self.spec.level, self._previous, candle.close
        self._previous = close
        fired = previous is not None and (
            previous < level <= close if self.spec.direction == "up" else previous > level >= close
        )
        return RuleOutcome(self.name, fired, {"close": str(close), "level": str(level)})


class _GridState:
    name: str
    def __init__(self, spec: Grid) -> None:
        self.spec = spec
        self.name = spec.name
        self._step = (spec.high - spec.low) / (spec.levels - 1)
        self._previous: Decimal | None = None

    def _line(self, price: Decimal) -> int:
        """How many grid lines lie at or below ``price``."""
        if price < self.spec.low:
            return 0
        return min(int((price - self.spec.low) / self._step) + 1, self.spec.levels)

    def update(self, candle: Candle) -> RuleOutcome:
        previous, self._previous = self._previous, candle.close
        fired = False
        if previous is not None:
            before, now = self._line(previous), self._line(candle.close)
            fired = now > before if self.spec.direction == "up" else now < before
        return RuleOutcome(self.name, fired, {"close": str(candle.close)})


class _CombinationState:
    name: str
    def __init__(self, spec: Combination) -> None:
        self.spec = spec
        self.name = spec.name
        self._parts = [make_trigger(part) for part in spec.of]

    def update(self, candle: Candle) -> RuleOutcome:
        # Every part updates on every candle, so each indicator stays current.
        outcomes = [part.update(candle) for part in self._parts]
        fired = all(o.fired for o in outcomes) if self.spec.kind == "all" else any(o.fired for o in outcomes)
        return RuleOutcome(self.name, fired, {o.rule: o.fired for o in outcomes})


TriggerState = Union[_SmaCrossState, _ChangeState, _RsiState, _PriceCrossState, _GridState, _CombinationState]

_STATES: dict[type, Any] = {
    SmaCross: _SmaCrossState, Change: _ChangeState, Rsi: _RsiState, PriceCross: _PriceCrossState,
    Grid: _GridState, Combination: _CombinationState,
}


def make_trigger(spec: TriggerSpec) -> TriggerState:
    return _STATES[type(spec)](spec)

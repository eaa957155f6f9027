"""Triggers: what makes a strategy want to buy or sell, from closed candles.

Each trigger kind has a spec (an attrs class read from the YAML, tagged by ``kind``) and a
running state that updates in constant time per candle. Indicator arithmetic is done in
floats: a signal does not need exact decimals, while every price and amount that becomes
an order is a ``Decimal``.

Documented bounds (the pre-flight checks refuse values outside them):

- ``sma_cross``: 1 <= fast < slow <= 1000; ``direction`` is ``up`` (fast crosses above slow)
  or ``down`` (fast crosses below);
- ``change``: 1 <= lookback <= 1000 candles, percent in [-90, 1000] and not 0; it fires
  when the close moved by at least ``percent`` (a negative percent: a drop of at least
  that much) against the close ``lookback`` candles ago.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Literal, Union

import attrs

from exchange.candles import Candle


@attrs.frozen
class SmaCross:
    fast: int
    slow: int
    direction: Literal["up", "down"] = "up"
    kind: Literal["sma_cross"] = "sma_cross"

    def problems(self) -> list[str]:
        out = []
        if not 1 <= self.fast < self.slow <= 1000:
            out.append(f"fast and slow must satisfy 1 <= fast < slow <= 1000, got fast={self.fast} slow={self.slow}")
        if self.direction not in ("up", "down"):
            out.append(f"direction must be up or down, got {self.direction!r}")
        return out

    @property
    def name(self) -> str:
        return f"sma_cross({self.fast},{self.slow},{self.direction})"


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


TriggerSpec = Union[SmaCross, Change]


@attrs.frozen
class RuleOutcome:
    rule: str
    fired: bool
    inputs: dict[str, Any]


class _SmaCrossState:
    def __init__(self, spec: SmaCross) -> None:
        self.spec = spec
        self._fast = _Sma(spec.fast)
        self._slow = _Sma(spec.slow)
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
        return RuleOutcome(self.spec.name, fired, inputs)


class _ChangeState:
    def __init__(self, spec: Change) -> None:
        self.spec = spec
        self._closes: deque[float] = deque(maxlen=spec.lookback + 1)
        self._threshold = float(spec.percent)

    def update(self, candle: Candle) -> RuleOutcome:
        self._closes.append(float(candle.close))
        if len(self._closes) <= self.spec.lookback:
            return RuleOutcome(self.spec.name, False, {"change_pct": None})
        reference = self._closes[0]
        change = (self._closes[-1] - reference) / reference * 100
        fired = change <= self._threshold if self._threshold < 0 else change >= self._threshold
        return RuleOutcome(self.spec.name, fired, {"change_pct": round(change, 4)})


class _Sma:
    """A simple moving average in O(1) per value."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._window: deque[float] = deque()
        self._sum = 0.0

    def update(self, value: float) -> float | None:
        self._window.append(value)
        self._sum += value
        if len(self._window) > self.length:
            self._sum -= self._window.popleft()
        return self._sum / self.length if len(self._window) == self.length else None


TriggerState = Union[_SmaCrossState, _ChangeState]


def make_trigger(spec: TriggerSpec) -> TriggerState:
    if isinstance(spec, SmaCross):
        return _SmaCrossState(spec)
    return _ChangeState(spec)

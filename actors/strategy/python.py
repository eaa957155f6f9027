"""Strategies written in Python, run inside the same strategy core as the YAML rules.

Config: ``python: "package.module:ClassName"`` and optional ``params: {...}`` (passed to the
constructor as keyword arguments). The class needs one method::

    def on_candle(self, candle: Candle, view: View) -> list[Intent]

called once per closed candle, in order. It returns what it wants (buy or sell, and why);
the core does the rest exactly as for YAML rules: sizing, the limit price, reservation in
the ledger, pre-flight, the breaker, blocks, events, time-to-live. It must not do I/O: the
Lab replays it, and the Lab's results must equal shadow mode's.
"""

from __future__ import annotations

import importlib
import inspect
from decimal import Decimal
from typing import Any, Literal

import attrs

from exchange.candles import Candle


@attrs.frozen
class Intent:
    side: Literal["buy", "sell"]
    #: Why, in a few words: it becomes the rule name in the event log.
    reason: str = "python"


@attrs.frozen
class View:
    """What the strategy may look at, besides the candle."""

    held: Decimal  # base asset held
    open_orders: int
    symbol: str


def load(spec: str, params: dict[str, Any]) -> tuple[Any, str | None]:
    """An instance of the class named by ``module:Class``, or (None, what went wrong).

    The name must be a class that defines ``on_candle``, and that is checked before
    anything it names is called: ``python: os:system`` with a ``command`` param must be a
    message, not a shell command run by ``limitline check``. (Importing the module runs
    its top-level code, as any import does: name only modules you trust.)"""
    module_name, _, class_name = spec.partition(":")
    expected = "a class with an on_candle(candle, view) method, e.g. actors.strategy.python:BuyTheDip"
    if not module_name or not class_name.isidentifier():
        return None, f"python: must look like package.module:ClassName ({expected}), got {_shown(spec)}"
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        return None, f"python: cannot load {_shown(spec)}: {type(error).__name__}: {_cut(str(error))}"
    if not inspect.isclass(cls):
        kind = "a function" if callable(cls) else f"a value of type {type(cls).__name__}"
        return None, f"python: {spec} is {kind}, not a class; name {expected}"
    if not callable(getattr(cls, "on_candle", None)):
        return None, f"python: {spec} has no on_candle method; name {expected}"
    try:
        instance = cls(**params)
    except Exception as error:  # noqa: BLE001 - any failure of user code is a pre-flight problem
        return None, f"python: {spec} could not be built with params {_shown(sorted(params))}: {type(error).__name__}: {_cut(str(error))}"
    return instance, None


SHOWN = 80


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _shown(value: object) -> str:
    return _cut(repr(value))


class BuyTheDip:
    """An example: buy after ``drops`` falling closes in a row, sell after ``rises`` rising ones."""

    def __init__(self, drops: int = 3, rises: int = 3) -> None:
        self.drops, self.rises = drops, rises
        self._previous: Decimal | None = None
        self._streak = 0  # > 0 rising, < 0 falling

    def on_candle(self, candle: Candle, view: View) -> list[Intent]:
        previous, self._previous = self._previous, candle.close
        if previous is None or candle.close == previous:
            self._streak = 0
            return []
        up = candle.close > previous
        self._streak = max(self._streak, 0) + 1 if up else min(self._streak, 0) - 1
        if self._streak == -self.drops:
            return [Intent("buy", f"{self.drops} falling closes")]
        if self._streak == self.rises and view.held > 0:
            return [Intent("sell", f"{self.rises} rising closes")]
        return []

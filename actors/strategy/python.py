"""Strategies written in Python, run inside the same strategy core as the YAML rules.

Config: ``python: "package.module:ClassName"`` and optional ``params: {...}`` (passed to the
constructor as keyword arguments). The class needs one method::

    def on_candle(self, candle: Candle, view: View) -> list[Intent]

called once per closed candle, in order. It returns what it wants (buy or sell, and why);
the core does the rest exactly as for YAML rules: sizing, the limit price, reservation in
the ledger, pre-flight, the breaker, blocks, events, time-to-live. It must not do I/O: the
Lab replays it, and the Lab's results must equal shadow mode's.

User code is called only through :func:`ask`: an exception it raises, or an answer that is
not a list of :class:`Intent`, is a problem of that strategy, never a crash of its actor
(a crash would restart it, the venue's supervisor would give up after a few candles and the
sibling strategies on that venue would stop with it). The strategy core pauses the strategy
with the message, until an operator resumes it.
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


def ask(strategy: Any, spec: str, candle: Candle, view: View) -> tuple[list[Intent], str | None]:
    """``strategy.on_candle(candle, view)``, checked: (its intents, None), or ([], what went
    wrong) when it raised or returned anything but a list (or tuple) of :class:`Intent`
    with ``side`` ``"buy"`` or ``"sell"`` and a ``str`` reason. Nothing of a bad answer is
    used, not even its valid part: the strategy's state is no longer known to be sound.

    The message names the class, the method and the error, e.g. ``python: mystrats:Raises
    .on_candle raised ZeroDivisionError: boom``. ``Exception`` only: a ``KeyboardInterrupt``
    or ``SystemExit`` is not the strategy's to swallow."""
    where = f"python: {spec}.on_candle"
    try:
        answer = strategy.on_candle(candle, view)
        intents = list(answer) if isinstance(answer, (list, tuple)) else None
    except Exception as error:  # noqa: BLE001 - any failure of user code is that strategy's problem
        return [], f"{where} raised {type(error).__name__}: {_cut(str(error))}"
    if intents is None:
        return [], f"{where} returned {_shown(answer)}, not a list; {EXPECTED_ANSWER}"
    for intent in intents:
        if not isinstance(intent, Intent):
            return [], f"{where} returned {_shown(intent)} in its list, not an Intent; {EXPECTED_ANSWER}"
        if intent.side not in ("buy", "sell") or not isinstance(intent.reason, str):
            return [], f"{where} returned {_shown(intent)}: side must be 'buy' or 'sell' and reason a str; {EXPECTED_ANSWER}"
    return intents, None


EXPECTED_ANSWER = "return a list of Intent('buy' or 'sell', reason), [] for nothing"
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

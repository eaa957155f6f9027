"""Strategies written in Python, run inside the same strategy core as the YAML rules.

Config: ``python: "package.module:ClassName"`` and optional ``params: {...}`` (passed to the
constructor as keyword arguments). The class needs one method::

    def on_candle(self, candle: Candle, view: View) -> list[Intent]

called once per closed candle, in order. It returns what it wants (buy or sell, and why);
the core does the rest exactly as for YAML rules: sizing, the limit price, reservation in
the ledger, pre-flight, the breaker, blocks, events, time-to-live. It must not do I/O: the
Lab replays it, and the Lab's results must equal shadow mode's.

On a perpetual (swap) venue it may also answer with :class:`PositionIntent`: the position
it wants (``long``, ``short``, ``flat``) or an action (``open`` with a side, ``close``,
``flip``), optionally with its size in base units (else the strategy's ``sizing``). The
perpetual strategy core turns it into limit orders as it does a YAML signal (closes
reduce-only, a flip one leg at a time, protection after every change). A plain
``Intent('buy')`` there asks for the configured ``on_buy`` posture (``Intent('sell')``:
``on_sell``). ``view.position`` is the signed position the ledger holds (long positive).

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


#: What a :class:`PositionIntent` may ask for: a posture, or an action.
POSITION_WANTS = ("long", "short", "flat", "open", "close", "flip")


@attrs.frozen
class PositionIntent:
    """A perpetual strategy's wish: ``want`` is ``long``, ``short`` or ``flat`` (the position
    it wants), or ``open`` (with ``side`` ``buy``: long, ``sell``: short), ``close`` (flat)
    or ``flip`` (the opposite of the position held). ``size``: base units, greater than 0
    (default: the strategy's ``sizing``); none for ``flat`` and ``close``."""

    want: str
    side: Literal["buy", "sell"] | None = None
    reason: str = "python"
    size: Decimal | None = None

    def problem(self) -> str | None:
        """What is wrong with it, or None."""
        if self.want not in POSITION_WANTS:
            return f"want must be one of {', '.join(POSITION_WANTS)}"
        if (self.want == "open") != (self.side in ("buy", "sell")):
            return "side ('buy' or 'sell') goes with want='open' and only with it"
        if not isinstance(self.reason, str):
            return "reason must be a str"
        if self.size is not None:
            if self.want in ("flat", "close"):
                return f"a {self.want} has no size"
            if not isinstance(self.size, (Decimal, int)) or isinstance(self.size, bool) or not self.size > 0:
                return "size must be a Decimal (or int) greater than 0, in base units"
        return None


@attrs.frozen
class View:
    """What the strategy may look at, besides the candle."""

    held: Decimal  # base asset held (a perpetual's: its signed position)
    open_orders: int
    symbol: str
    #: A perpetual strategy's position (signed, base units; long positive) and its average
    #: entry price (None when flat); 0 and None on a spot venue.
    position: Decimal = Decimal(0)
    entry_price: Decimal | None = None


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


def ask(
    strategy: Any, spec: str, candle: Candle, view: View, positions: bool = False
) -> tuple[list[Intent | PositionIntent], str | None]:
    """``strategy.on_candle(candle, view)``, checked: (its intents, None), or ([], what went
    wrong) when it raised or returned anything but a list (or tuple) of :class:`Intent`
    with ``side`` ``"buy"`` or ``"sell"`` and a ``str`` reason. Nothing of a bad answer is
    used, not even its valid part: the strategy's state is no longer known to be sound.

    The message names the class, the method and the error, e.g. ``python: mystrats:Raises
    .on_candle raised ZeroDivisionError: boom``. ``Exception`` only: a ``KeyboardInterrupt``
    or ``SystemExit`` is not the strategy's to swallow."""
    where = f"python: {spec}.on_candle"
    expected = EXPECTED_POSITION_ANSWER if positions else EXPECTED_ANSWER
    try:
        answer = strategy.on_candle(candle, view)
        intents = list(answer) if isinstance(answer, (list, tuple)) else None
    except Exception as error:  # noqa: BLE001 - any failure of user code is that strategy's problem
        return [], f"{where} raised {type(error).__name__}: {_cut(str(error))}"
    if intents is None:
        return [], f"{where} returned {_shown(answer)}, not a list; {expected}"
    for intent in intents:
        if positions and isinstance(intent, PositionIntent):
            problem = intent.problem()
            if problem is not None:
                return [], f"{where} returned {_shown(intent)}: {problem}; {expected}"
            continue
        if isinstance(intent, PositionIntent):
            return [], (f"{where} returned {_shown(intent)}: a PositionIntent is for a strategy on a perpetual "
                        f"(swap) venue; {expected}")
        if not isinstance(intent, Intent):
            return [], f"{where} returned {_shown(intent)} in its list, not an Intent; {expected}"
        if intent.side not in ("buy", "sell") or not isinstance(intent.reason, str):
            return [], f"{where} returned {_shown(intent)}: side must be 'buy' or 'sell' and reason a str; {expected}"
    return intents, None


EXPECTED_ANSWER = "return a list of Intent('buy' or 'sell', reason), [] for nothing"
EXPECTED_POSITION_ANSWER = ("return a list of PositionIntent('long', 'short', 'flat', 'open' with side, 'close' or "
                            "'flip') or Intent('buy' or 'sell', reason), [] for nothing")
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


class SwingLongShort:
    """An example for a perpetual venue: long after ``rises`` rising closes in a row, short
    after ``drops`` falling ones, flat when the position has moved ``exit_pct`` percent
    against its entry (besides any protection resting on the exchange)."""

    def __init__(self, rises: int = 3, drops: int = 3, exit_pct: float = 2.0) -> None:
        self.rises, self.drops = rises, drops
        self.exit = Decimal(str(exit_pct)) / 100
        self._previous: Decimal | None = None
        self._streak = 0

    def on_candle(self, candle: Candle, view: View) -> list[PositionIntent]:
        previous, self._previous = self._previous, candle.close
        if view.position and view.entry_price is not None:
            moved = (candle.close - view.entry_price) / view.entry_price * (1 if view.position > 0 else -1)
            if moved <= -self.exit:
                self._streak = 0
                return [PositionIntent("close", reason=f"{self.exit * 100}% against the entry")]
        if previous is None or candle.close == previous:
            self._streak = 0
            return []
        up = candle.close > previous
        self._streak = max(self._streak, 0) + 1 if up else min(self._streak, 0) - 1
        if self._streak == self.rises and view.position <= 0:
            return [PositionIntent("long", reason=f"{self.rises} rising closes")]
        if self._streak == -self.drops and view.position >= 0:
            return [PositionIntent("short", reason=f"{self.drops} falling closes")]
        return []

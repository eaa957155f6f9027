"""A strategy's parameters, as the YAML gives them (structured by cattrs)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import attrs

from actors.strategy.breaker import BreakerSettings
from actors.strategy.rules import TriggerSpec


@attrs.frozen
class Sizing:
    """How big each buy is (exactly one): a fixed quote amount, a fixed base amount, or a
    percentage of the strategy's free capital at the moment of reserving."""

    quote: Decimal | None = None
    base: Decimal | None = None
    percent: Decimal | None = None


@attrs.frozen
class Allocation:
    """What the strategy may use, and nothing more: capital (quote) and inventory (base)."""

    quote: Decimal = Decimal(0)
    base: Decimal = Decimal(0)
    #: What each unit of the starting inventory cost, in quote per base (its entry price):
    #: required with ``base``, so realized P&L, take-profit and stop-loss are honest.
    base_cost: Decimal | None = None


@attrs.frozen
class ProtectionConfig:
    """A position's protection (a perpetual's, or on spot one OCO list), in percent of the entry price (see
    :class:`actors.strategy.protection_core.ProtectionSettings`): a take-profit (a resting
    reduce-only limit), a stop-loss (a reduce-only stop-limit whose limit lies
    ``stop_limit_slippage_pct`` beyond its trigger), and how far beyond the price a gapped
    stop is escalated (``gap_slippage_pct``). Limit orders only."""

    take_profit_pct: Decimal | None = None
    stop_loss_pct: Decimal | None = None
    stop_limit_slippage_pct: Decimal = Decimal("0.5")
    gap_slippage_pct: Decimal = Decimal("1")
    #: Swap venues: a take-profit with no stop-loss is refused unless this says so (the
    #: position then has no stop on the exchange); it contradicts ``stop_loss_pct``.
    without_stop_loss: bool = False


@attrs.frozen
class StrategySettings:
    name: str
    venue: str
    symbol: str
    sizing: Sizing
    allocation: Allocation
    buy: TriggerSpec | None = None
    sell: TriggerSpec | None = None
    #: Distance of the limit price from the close, in basis points. Positive rests
    #: passively (a buy below the close, a sell above); negative crosses through it.
    limit_offset_bps: Decimal = Decimal(0)
    #: What the offset is taken from: the candle's ``close``, or the ``best`` bid (buys) and
    #: ask (sells) where the venue gives them (a live venue's ticker), else the close.
    price_from: Literal["close", "best"] = "close"
    #: A best bid/ask older than this (wall-clock seconds; e.g. the venue was isolated) is
    #: not used: the offset is taken from the close instead.
    quote_max_age_seconds: float = 30.0
    #: Market-time seconds an order may rest unfilled before we cancel it (it EXPIREs).
    ttl_seconds: int = 3 * 3600
    #: Market-time seconds after a fill during which no new order is placed.
    cooldown_seconds: int = 0
    max_open_orders: int = 1
    #: Exits, checked on every candle while holding inventory: sell (a limit order, at the
    #: usual offset) when the close is this many percent above (take-profit) or below
    #: (stop-loss) the average entry price.
    take_profit_pct: Decimal | None = None
    stop_loss_pct: Decimal | None = None
    breaker: BreakerSettings = BreakerSettings()
    mode: Literal["shadow", "live"] = "shadow"
    #: A strategy written in Python, ``package.module:ClassName`` (see actors/strategy/python.py),
    #: instead of (or besides) the buy and sell triggers; ``params`` go to its constructor.
    python: str | None = None
    params: dict[str, Any] = attrs.Factory(dict)
    #: Perpetual (swap) venues only: the position a buy signal and a sell signal ask for
    #: (``long``, ``short`` or ``flat``); both are required there, e.g. ``on_buy: long``
    #: with ``on_sell: flat`` (long-only) or ``on_sell: short`` (long/short).
    on_buy: Literal["long", "short", "flat"] | None = None
    on_sell: Literal["long", "short", "flat"] | None = None
    #: Take-profit and stop-loss resting on the exchange: on a swap venue a reduce-only
    #: limit and stop-limit; on a spot venue that offers it, one OCO order list (README).
    protection: ProtectionConfig | None = None

    @property
    def perpetual(self) -> bool:
        """A strategy of positions (a swap venue's), not of spot inventory."""
        return self.on_buy is not None or self.on_sell is not None

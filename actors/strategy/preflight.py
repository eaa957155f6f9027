"""Pre-flight checks: what must hold before a strategy may place any order.

Run at start-up and at every restart of the strategy, and by ``limitline check``. A
failure leaves that strategy inactive with the message, and every other strategy running.
Each message says what is wrong and what to change.

Documented bounds of the parameters (also in the README):

| field | bounds |
|---|---|
| ``limit_offset_bps`` | -500 .. 500 (negative crosses through the close) |
| ``ttl_seconds`` | 60 .. 2,592,000 (30 days), market time |
| ``cooldown_seconds`` | 0 .. 2,592,000, market time |
| ``max_open_orders`` | 1 .. 100 |
| ``breaker.threshold`` | 1 .. 100 failures |
| ``breaker.cooldown_seconds`` | 1 .. ``breaker.max_cooldown_seconds`` <= 86,400 |
| triggers | see ``actors/strategy/rules.py`` |
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Mapping

from actors.messages import VenueFacts
from actors.strategy.settings import StrategySettings
from exchange.markets import MarketRules

MAX_SECONDS = 30 * 24 * 3600


def parameter_problems(s: StrategySettings) -> list[str]:
    """Checks of the strategy's own parameters, needing no exchange."""
    out = _sizing_problems(s)
    if s.allocation.quote < 0 or s.allocation.base < 0:
        out.append(f"allocation: must not be negative, got quote {s.allocation.quote} base {s.allocation.base}")
    elif s.allocation.quote == 0 and s.allocation.base == 0:
        out.append("allocation: the strategy has no capital or inventory; set allocation.quote or allocation.base")
    if s.allocation.base > 0 and s.allocation.base_cost is None:
        out.append(
            f"allocation.base_cost: required with allocation.base ({s.allocation.base}): what each unit of the starting "
            "inventory cost, in quote per base; it is the entry price of take-profit, stop-loss and realized P&L"
        )
    elif s.allocation.base_cost is not None and s.allocation.base_cost <= 0:
        out.append(
            f"allocation.base_cost: must be greater than 0, got {s.allocation.base_cost}: a cost of 0 books the whole "
            "proceeds as profit and leaves take-profit and stop-loss without an entry price"
        )
    if s.buy is None and s.sell is None and s.take_profit_pct is None and s.stop_loss_pct is None and s.python is None:
        out.append("triggers: no buy or sell trigger, no exit and no python strategy; add at least one")
    if s.python is not None:
        from actors.strategy.python import load

        _, problem = load(s.python, dict(s.params))
        if problem is not None:
            out.append(problem)
    for side in ("buy", "sell"):
        spec = getattr(s, side)
        if spec is not None:
            out += [f"{side}: {problem}" for problem in spec.problems()]
    if not Decimal(-500) <= s.limit_offset_bps <= 500:
        out.append(f"limit_offset_bps: must be between -500 and 500, got {s.limit_offset_bps}")
    if not 60 <= s.ttl_seconds <= MAX_SECONDS:
        out.append(f"ttl_seconds: must be between 60 and {MAX_SECONDS}, got {s.ttl_seconds}")
    if not 0 <= s.cooldown_seconds <= MAX_SECONDS:
        out.append(f"cooldown_seconds: must be between 0 and {MAX_SECONDS}, got {s.cooldown_seconds}")
    if not 0 < s.quote_max_age_seconds <= 3600:
        out.append(f"quote_max_age_seconds: must be greater than 0 and at most 3600, got {s.quote_max_age_seconds:g}")
    if not 1 <= s.max_open_orders <= 100:
        out.append(f"max_open_orders: must be between 1 and 100, got {s.max_open_orders}")
    if s.take_profit_pct is not None and not Decimal(0) < s.take_profit_pct <= 1000:
        out.append(f"take_profit_pct: must be greater than 0 and at most 1000, got {s.take_profit_pct}")
    if s.stop_loss_pct is not None and not Decimal(0) < s.stop_loss_pct < 100:
        out.append(f"stop_loss_pct: must be greater than 0 and below 100, got {s.stop_loss_pct}")
    b = s.breaker
    if not 1 <= b.threshold <= 100:
        out.append(f"breaker.threshold: must be between 1 and 100, got {b.threshold}")
    if not 1 <= b.cooldown_seconds <= b.max_cooldown_seconds <= 86400:
        out.append(
            "breaker: need 1 <= cooldown_seconds <= max_cooldown_seconds <= 86400, "
            f"got {b.cooldown_seconds:g} and {b.max_cooldown_seconds:g}"
        )
    return out


def _sizing_problems(s: StrategySettings) -> list[str]:
    given = [name for name in ("quote", "base", "percent") if getattr(s.sizing, name) is not None]
    if len(given) != 1:
        return [f"sizing: give exactly one of quote, base or percent, got {' and '.join(given) or 'none'}"]
    value = getattr(s.sizing, given[0])
    if value <= 0:
        return [f"sizing.{given[0]}: must be greater than 0, got {value}"]
    if given[0] == "percent" and value > 100:
        return [f"sizing.percent: must be at most 100, got {value}"]
    return []


def venue_problems(s: StrategySettings, facts: VenueFacts, allocated: Mapping[str, Decimal],
                   balances: bool = True) -> list[str]:
    """Checks against the exchange. ``allocated``: all strategies' allocations on this
    venue, per asset; ``balances`` False: not compared with the account's balances yet (a
    restarted runtime compares them once its first reconciliation has booked what the
    exchange did meanwhile)."""
    if facts.connection_error is not None:
        return [f"exchange {facts.venue}: {facts.connection_error}"]
    market = facts.markets.get(s.symbol)
    if market is None:
        return [f"market {s.symbol} does not exist on {facts.venue}"]
    if not market.active:
        return [f"market {s.symbol} is not active on {facts.venue}"]
    if s.symbol in facts.market_problems:
        return [f"market {s.symbol} on {facts.venue}: {facts.market_problems[s.symbol]}"]
    out: list[str] = []
    for asset in (market.quote, market.base) if balances else ():
        total, balance = allocated.get(asset, Decimal(0)), facts.balances.get(asset, Decimal(0))
        if total > balance:
            out.append(
                f"allocations on {facts.venue} exceed the account balance: {total} {asset} allocated to all "
                f"strategies, balance {balance} {asset}"
            )
    if not parameter_problems(s):  # a parameter wrong in itself is reported once, above
        price = facts.last_prices.get(s.symbol)
        out += _size_problems(s, market, price)
        if s.perpetual and price is not None and not out:
            out += _margin_problems(s, market, price, Decimal(facts.leverage.get(s.symbol, 1)))
    return out


def _margin_problems(s: StrategySettings, market: MarketRules, price: Decimal, leverage: Decimal) -> list[str]:
    """An open of the strategy's size must fit its allocation: the ledger reserves its
    initial margin, ``notional / leverage + notional x worst fee rate`` (the rule of
    ``actors.ledger.positions_core``), out of the allocated collateral, and denies every
    open that does not fit. ``price``: the venue's last price."""
    if s.sizing.base is not None:
        field, notional = "sizing.base", market.round_amount(s.sizing.base) * price
        what = f"{s.sizing.base} {market.base} at the last price {price}"
    elif s.sizing.quote is not None:
        field, notional, what = "sizing.quote", s.sizing.quote, f"{s.sizing.quote} {market.settle}"
    else:
        return []
    margin = notional / leverage + notional * max(market.maker_fee, market.taker_fee)
    if margin <= s.allocation.quote:
        return []
    return [
        f"{field}: one open of {what} ({notional:.2f} {market.settle} notional) needs {margin:.2f} {market.settle} of "
        f"initial margin at leverage {leverage} with the worst-case fee, more than allocation.quote "
        f"{s.allocation.quote} {market.settle}: every open would be denied; lower the size, raise the allocation "
        "or the market's leverage"
    ]


def _size_problems(s: StrategySettings, market: MarketRules, price: Decimal | None) -> list[str]:
    sizing = s.sizing
    if sizing.percent is not None:
        return []  # sized by the ledger at each reservation, against the minimums
    if sizing.base is not None:
        amount = market.round_amount(sizing.base)
        if amount < market.min_amount:
            return [f"sizing.base: {sizing.base} {market.base} is below the market's minimum amount {market.min_amount} {market.base}"]
        if price is not None and amount * price < market.min_notional:
            return [f"sizing.base: {sizing.base} {market.base} is worth {amount * price:.2f} {market.quote}, below the market's minimum notional {market.min_notional} {market.quote}"]
        # A position's notional may exceed its collateral (leverage): the ledger's margin
        # check at each reservation is what bounds it.
        if price is not None and s.buy is not None and not s.perpetual and amount * price > s.allocation.quote:
            return [f"sizing.base: one buy of {sizing.base} {market.base} costs {amount * price:.2f} {market.quote}, more than the allocation {s.allocation.quote} {market.quote}"]
        return []
    if sizing.quote is None:
        return []
    if sizing.quote < market.min_notional:
        return [f"sizing.quote: {sizing.quote} {market.quote} is below the market's minimum notional {market.min_notional} {market.quote}"]
    if s.buy is not None and not s.perpetual and sizing.quote > s.allocation.quote:
        return [f"sizing.quote: one buy of {sizing.quote} {market.quote} is more than the allocation {s.allocation.quote} {market.quote}"]
    if price is not None and market.round_amount(sizing.quote / price) < market.min_amount:
        return [f"sizing.quote: {sizing.quote} {market.quote} buys less than the market's minimum amount {market.min_amount} {market.base} at {price}"]
    return []


def preflight(s: StrategySettings, facts: VenueFacts, allocated: Mapping[str, Decimal], balances: bool = True) -> list[str]:
    """Every reason the strategy may not become active, most basic first; [] to go.
    ``balances``: see :func:`venue_problems`. A figure longer than :data:`FIGURE_SHOWN`
    characters is cut (see :func:`_cut_figures`)."""
    return [_cut_figures(problem) for problem in parameter_problems(s) + venue_problems(s, facts, allocated, balances)]


#: The most of one figure a message repeats, as the config's messages cut what they echo.
FIGURE_SHOWN = 80
_LONG_FIGURE = re.compile(r"\d[\d.]{%d,}" % FIGURE_SHOWN)


def _cut_figures(problem: str) -> str:
    """``problem`` with every figure of more than :data:`FIGURE_SHOWN` characters cut to
    that many, ending in "…": the config reads numbers of up to 4,300 digits, and a
    401-digit ``sizing.quote`` must not fill the screen, the event log and ``/status``."""
    return _LONG_FIGURE.sub(lambda m: m[0][: FIGURE_SHOWN - 1] + "…", problem)

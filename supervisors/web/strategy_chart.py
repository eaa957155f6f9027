"""The dashboard's chart of one strategy, in the shape :file:`supervisors/web/chart.js` draws
(the report's chart component): the candles its venue has replayed lately, its fills as buy
and sell markers on the candle each happened on, and its equity at each candle's close.

Plain functions of plain data, no I/O. In shadow mode a fill's time is the wall clock's; the
candle it belongs to comes from the fill event's ``market_ts`` (the last candle the
strategy had seen when the fill arrived): a taker filled at that candle's close, a maker on
the candle after it (a resting order fills on a candle before the strategy hears of it).

Equity: what the strategy holds changes only by its ledger's ``allocate``, ``settle`` and
``correct`` entries (a reservation moves money between free and reserved, never out), so
equity at a candle = the quote held + the base held × its close, with every settle entry
of a fill drawn on or before that candle counted, and everything else (allocations,
corrections, fills before the window) counted from the start.
"""

from __future__ import annotations

import bisect
from decimal import Decimal
from typing import Any, Iterable, Sequence

from exchange.candles import Candle

#: Candles drawn by default, and at most (``?candles=``).
DEFAULT_CANDLES = 500
MAX_CANDLES = 5000


def fill_candle(payload: dict[str, Any], stamps: Sequence[int]) -> int | None:
    """The time of the candle (among ``stamps``, ascending) a fill event's fill happened on;
    None when it is before the first of them."""
    seen = payload.get("market_ts")
    if seen is None:
        return stamps[0] if stamps else None  # before any candle: the first one made it
    if payload.get("taker_or_maker") == "taker":
        at = bisect.bisect_right(stamps, seen) - 1  # at the close of the candle it was decided on
    else:
        at = bisect.bisect_right(stamps, seen)  # the next candle traded through it
    return stamps[at] if 0 <= at < len(stamps) else None


def strategy_chart(
    symbol: str,
    candles: Sequence[Candle],
    fill_events: Iterable[dict[str, Any]],
    journal: Iterable[tuple[str | None, Decimal, Decimal]],
) -> dict[str, Any]:
    """``fill_events``: the strategy's ``fill`` events (payloads as the strategy writes them:
    trade_id, side, price, amount, market_ts, taker_or_maker); ``journal``: its entries that
    change what it holds, as (trade id or None, quote delta, base delta). Returns
    ``{symbol, quote, candles, fills, equity}`` for ``LimitlineChart.render``."""
    quote = symbol.partition("/")[2]
    stamps = [c.ts for c in candles]
    drawn: dict[str, int] = {}  # trade id -> the candle its fill is drawn on
    fills = []
    for event in fill_events:
        payload = event["payload"]
        at = fill_candle(payload, stamps)
        if at is None:
            continue
        drawn[payload["trade_id"]] = at
        fills.append([at, payload["side"], float(payload["price"]), float(payload["amount"])])
    fills.sort(key=lambda f: f[0])
    quote_held = base_held = Decimal(0)
    later: dict[int, list[tuple[Decimal, Decimal]]] = {}
    for trade_id, quote_delta, base_delta in journal:
        at = drawn.get(trade_id) if trade_id is not None else None
        if at is None:
            quote_held += quote_delta
            base_held += base_delta
        else:
            later.setdefault(at, []).append((quote_delta, base_delta))
    equity = []
    for candle in candles:
        for quote_delta, base_delta in later.get(candle.ts, ()):
            quote_held += quote_delta
            base_held += base_delta
        equity.append([candle.ts, round(float(quote_held + base_held * candle.close), 2)])
    return {
        "symbol": symbol,
        "quote": quote,
        "candles": [[c.ts, float(c.open), float(c.high), float(c.low), float(c.close)] for c in candles],
        "fills": fills,
        "equity": equity if candles else [],
    }

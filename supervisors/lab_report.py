"""The Lab's report: figures from a run, ``report.json``, ``report.html`` and a summary table.

Definitions (per-candle equity E_t = capital + inventory at the close):

- total return: E_last / E_first - 1; CAGR: (1 + total return) ** (1 / years) - 1;
- maximum drawdown: the largest fall of E from its running peak, as a fraction of the peak;
- Sharpe and Sortino: mean of per-candle returns over their standard deviation (Sortino:
  over the downside deviation), annualised by the number of candles in a year; no
  risk-free rate;
- a trade is a sell fill (it realises P&L at average cost); win rate and profit factor are
  over those;
- exposure: the share of candles that ended holding a position (inventory, or a perpetual
  position long or short): at least the market's minimum amount and one lot, so dust left
  by fees charged in the base asset or by lot rounding, which no order could sell, is not one;
- buy and hold: E_first turned into the base asset at the first candle's close and held,
  no fees (the benchmark a strategy has to beat): return close_last / close_first - 1.

A perpetual strategy's run (:class:`supervisors.lab_perpetual.PerpetualLabResult`): equity is
the collateral plus the position's unrealized P&L at the close; a trade is a fill that
reduced the position (a close, a reduce, the closing part of a flip, a liquidation), its
P&L the realized P&L the exchange books for it (gross, as Binance's ``realizedPnl``) less its
fee; and the figures add the realized P&L, the fees with their currency, the funding paid
(positive: paid), the closes by protection (take-profit, stop-loss, gap escalation), the
liquidations, the opens of each side and the position at the end. Each fill says what it
did (``open long``, ``add short``, ``close long``, ``flip to short``, ``liquidation``) in
the trade list and on the chart's markers.

``report.json`` is for programs: decimals as strings (``"0.0534"``, never a float), times as
ISO-8601 UTC (``"2017-07-01T11:00:00Z"``), fees per currency. ``report.html`` is for people:
one file that opens offline (the chart library and the chart component are inlined), with
the figures formatted, an interactive chart (candles with the fills marked, equity beside
buy and hold, drawdown; zoom and pan) and every fill in a table.
"""

from __future__ import annotations

import bisect
import html
import itertools
import json
import math
from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from exchange.candles import CandleSeries
from exchange.markets import MarketRules
from supervisors.lab import LabResult
from supervisors.lab_perpetual import PerpetualLabResult

SECONDS_PER_YEAR = 365.25 * 24 * 3600
#: Above this many candles the chart draws coarser ones (each the open, high, low and close of
#: a run of candles), so a report of a million bars stays a few megabytes and opens at once.
#: The figures, the trade table and report.json always use every candle.
MAX_DRAWN_CANDLES = 50_000
#: The report's trade table shows at most this many fills (report.json has every one): a
#: table of hundreds of thousands of rows is a page no browser opens quickly.
MAX_TABLE_ROWS = 20_000
VENDORED_CHART_LIBRARY = "lightweight-charts.standalone.production.js"


def figures(result: LabResult, gaps: list[dict[str, Any]] | None = None,
            market: MarketRules | None = None) -> dict[str, Any]:
    """The run's figures as numbers (floats, epoch seconds): for the summary, sweeps and the
    report. Keys starting with ``_`` are series for the chart (numpy arrays), not figures.
    ``market``: the rules of the market traded, whose minimum amount and lot tell a position
    from dust (without it, any holding counts)."""
    equity = result.equity.value
    first, last = float(equity[0]), float(equity[-1])
    span = max(result.candles[-1].ts - result.candles[0].ts, 1)
    years = span / SECONDS_PER_YEAR
    total_return = last / first - 1 if first else 0.0
    drawdowns = _drawdowns(equity)
    before, after = equity[:-1], equity[1:]
    returns = after[before != 0] / before[before != 0] - 1
    per_year = len(returns) / years if years > 0 else 0.0
    mean = float(returns.mean()) if len(returns) else 0.0
    deviation = float(np.sqrt(((returns - mean) ** 2).mean())) if len(returns) else 0.0
    downside = float(np.sqrt((np.minimum(returns, 0.0) ** 2).mean())) if len(returns) else 0.0
    perpetual = isinstance(result, PerpetualLabResult)
    if perpetual:
        actions = fill_actions(result)
        pnl = [float(e.realized_pnl - (e.fee if e.fee_currency == result.settlement else 0))
               for e in result.journal if e.kind == "fill" and _reducing(actions.get(e.trade_id or "", ""))]
    else:
        sells = [e for e in result.journal if e.kind == "settle" and e.side is not None and e.side.value == "sell"]
        pnl = [float(e.realized_pnl) for e in sells]
    wins, losses = [p for p in pnl if p > 0], [p for p in pnl if p < 0]
    fees: dict[str, Decimal] = {}
    for fill in result.fills:
        fees[fill.fee_currency] = fees.get(fill.fee_currency, Decimal(0)) + fill.fee
    closes = _floats(result.candles, "close")
    held_value = first * closes / closes[0]
    held = result.equity.held
    extra = position_figures(result) if perpetual else {}
    return {
        "candles": len(result.candles),
        "from": result.candles[0].ts,
        "to": result.candles[-1].ts,
        "start_equity": first,
        "end_equity": last,
        "total_return": total_return,
        "cagr": (1 + total_return) ** (1 / years) - 1 if years > 0 and total_return > -1 else None,
        "max_drawdown": float(drawdowns.max()),
        "sharpe": mean / deviation * math.sqrt(per_year) if deviation else None,
        "sortino": mean / downside * math.sqrt(per_year) if downside else None,
        "orders": result.orders_placed,
        "fills": len(result.fills),
        "trades": len(pnl),
        "win_rate": len(wins) / len(pnl) if pnl else None,
        "profit_factor": sum(wins) / -sum(losses) if losses else None,
        "exposure": float((np.abs(held) >= _smallest_position(market)).mean()),
        "fees_paid": {k: str(v) for k, v in fees.items()},
        "buy_and_hold_return": float(closes[-1] / closes[0] - 1),
        "buy_and_hold_max_drawdown": float(_drawdowns(held_value).max()),
        "gaps": gaps or [],
        **extra,
        "_drawdowns": drawdowns,
        "_buy_and_hold": held_value,
    }


def _smallest_position(market: MarketRules | None) -> float:
    """The least holding that is a position (base asset, or contracts): the market's minimum
    amount and at least one lot; anything below is dust no order could sell."""
    if market is None:
        return float.fromhex("0x1p-1074")  # any holding above zero
    return max(float(market.min_amount), float(market.lot_size), float.fromhex("0x1p-1074"))


def position_figures(result: "PerpetualLabResult") -> dict[str, Any]:
    """What a perpetual strategy's run did besides its equity: P&L, fees, funding, how its
    positions opened and ended (the figures of :func:`figures` for a swap venue)."""
    actions = fill_actions(result)
    opens = {"long": 0, "short": 0}
    for label in actions.values():
        for side in ("long", "short"):
            if label in (f"open {side}", f"flip to {side}"):
                opens[side] += 1
    position = result.position
    return {
        "market_type": "swap",
        "settlement": result.settlement,
        "realized_pnl": Decimal(position.get("realized_pnl", "0")),
        "funding_paid": Decimal(position.get("funding_paid", "0")),
        "closes_by_protection": len(result.protection_closes),
        "liquidations": [{"ts": ts, "price": str(price), "amount": str(amount), "side": side}
                         for ts, price, amount, side in result.liquidations],
        "long_opens": opens["long"],
        "short_opens": opens["short"],
        "end_position": Decimal(position.get("size", "0")),
        "end_wallet": Decimal(result.collateral.get("wallet", "0")),
        "paused_at": result.paused_at,
        "paused_reason": result.paused_reason,
    }


#: What a fill that closed some of the position is called (the rest opened or added).
REDUCING = ("close", "reduce", "flip", "liquidation")


def _reducing(label: str) -> bool:
    return label.startswith(REDUCING)


def fill_actions(result: LabResult) -> dict[str, str]:
    """Trade id -> what the fill did to the position (``open long``, ``add long``, ``reduce
    long``, ``close long``, ``flip to short``, ``liquidation``, and the same for short),
    from the position book's entries in order; empty for a spot run."""
    if not isinstance(result, PerpetualLabResult):
        return {}
    out: dict[str, str] = {}
    size = Decimal(0)
    for entry in result.journal:
        if entry.kind == "adopt":
            size += entry.size
        if entry.kind != "fill" or entry.trade_id is None:
            continue
        after = size + entry.size
        side = "long" if size > 0 else "short"
        if entry.reason.startswith("liquidated"):
            label = "liquidation"
        elif not size:
            label = f"open {'long' if after > 0 else 'short'}"
        elif (size > 0) == (entry.size > 0):
            label = f"add {side}"
        elif not after:
            label = f"close {side}"
        elif (after > 0) != (size > 0):
            label = f"flip to {'long' if after > 0 else 'short'}"
        else:
            label = f"reduce {side}"
        out[entry.trade_id] = label
        size = after
    return out


def _drawdowns(values: np.ndarray) -> np.ndarray:
    """Each value's fall from its running peak, as a fraction of the peak (0 at a peak)."""
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peaks > 0, (peaks - values) / peaks, 0.0)


def _floats(candles: Any, name: str) -> np.ndarray:
    """A column of the candles as floats: straight from a CandleSeries' arrays, else built."""
    if isinstance(candles, CandleSeries):
        return candles.floats(name)
    return np.fromiter((float(getattr(c, name)) for c in candles), dtype=float, count=len(candles))


def trade_list(result: LabResult) -> list[dict[str, Any]]:
    """Every fill, oldest first, with the P&L it realised (sells; average cost, fees
    included, in the quote asset) and whether it took liquidity (``taker_or_maker``:
    ``"taker"`` or ``"maker"``, ccxt's ``takerOrMaker``). Values are Decimals and epoch seconds."""
    return list(trades_of(result))


def trades_of(result: LabResult) -> Iterator[dict[str, Any]]:
    """:func:`trade_list`, one fill at a time (a long run's report never holds them all as
    dicts at once)."""
    actions = fill_actions(result)
    if actions:  # a perpetual run: realized P&L (gross, as the exchange books it) of reducing fills
        realized = {e.trade_id: e.realized_pnl for e in result.journal
                    if e.kind == "fill" and e.trade_id is not None and _reducing(actions.get(e.trade_id, ""))}
        for f in result.fills:
            yield {"ts": int(f.at), "client_order_id": f.client_order_id, "trade_id": f.trade_id, "side": f.side.value,
                   "action": actions.get(f.trade_id, ""), "price": f.price, "amount": f.amount,
                   "value": f.price * f.amount, "fee": f.fee, "fee_currency": f.fee_currency,
                   "taker_or_maker": f.taker_or_maker, "realized_pnl": realized.get(f.trade_id)}
        return
    realized = {e.trade_id: e.realized_pnl for e in result.journal
                if e.kind == "settle" and e.trade_id is not None and e.side is not None and e.side.value == "sell"}
    for f in result.fills:
        yield {"ts": int(f.at), "client_order_id": f.client_order_id, "trade_id": f.trade_id, "side": f.side.value,
               "price": f.price, "amount": f.amount, "value": f.price * f.amount, "fee": f.fee,
               "fee_currency": f.fee_currency, "taker_or_maker": f.taker_or_maker,
               "realized_pnl": realized.get(f.trade_id) if f.side.value == "sell" else None}


def write_report(
    result: LabResult,
    directory: Path,
    name: str,
    gaps: list[dict[str, Any]] | None = None,
    market: MarketRules | None = None,
    data: dict[str, Any] | None = None,
    parts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Writes ``report.json`` and ``report.html`` into ``directory`` (created); returns the
    figures (as :func:`figures`, without the chart's series). ``data``: where the candles
    came from and how they were read (``{"source": ..., "handling": [...]}``). ``parts``:
    for the combined account of several strategies, each one's figures (as this returns
    them; their own reports are in ``directory/NAME/``), listed under ``strategies``."""
    directory.mkdir(parents=True, exist_ok=True)
    numbers = figures(result, gaps, market)
    drawdowns, held_value = numbers.pop("_drawdowns"), numbers.pop("_buy_and_hold")
    symbol = market.symbol if market is not None else (result.fills[0].symbol if result.fills else "")
    quote = market.quote if market is not None else symbol.partition("/")[2]
    document = {
        "strategy": name,
        "symbol": symbol,
        "quote": quote,
        "data": data,
        **{key: _machine(value, key) for key, value in numbers.items()},
        **({"strategies": {part: {key: _machine(value, key) for key, value in figures_.items()}
                           for part, figures_ in parts.items()}} if parts else {}),
    }
    with (directory / "report.json").open("w", encoding="utf-8") as out:
        # The trades and the equity series go out one entry at a time: a million candles
        # would otherwise be a million dicts in memory at once.
        head = json.dumps(document, indent=1)
        out.write(head[:-2] + ',\n "trade_list": [')
        for i, trade in enumerate(trades_of(result)):
            entry = {("time" if key == "ts" else key): _machine(value, key) for key, value in trade.items()}
            out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(entry, separators=(", ", ": ")))
        out.write('\n ],\n "equity": [')
        for i, (ts, equity, held) in enumerate(result.equity):
            entry = {"time": iso(ts), "equity": decimal_text(equity), "held": decimal_text(held)}
            out.write(("\n  " if i == 0 else ",\n  ") + json.dumps(entry, separators=(", ", ": ")))
        out.write("\n ]\n}\n")
    page = render_html(name, symbol, quote, numbers, result, drawdowns, held_value, data, parts)
    (directory / "report.html").write_text(page, encoding="utf-8")
    return numbers


def iso(ts: int | float) -> str:
    """Epoch seconds as ISO-8601 UTC: ``2017-07-01T11:00:00Z``."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def utc(ts: int | float) -> str:
    """Epoch seconds for people: ``2017-07-01 11:00 UTC``."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def decimal_text(value: float | Decimal) -> str:
    """A float as the shortest decimal that reads back as the same float, never in exponent
    form (``1e-05`` becomes ``0.00001``)."""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return f"{Decimal(repr(value)):f}"


def _machine(value: Any, key: str) -> Any:
    """One figure for report.json: ints stay, floats and Decimals become decimal strings,
    times ISO-8601, gaps with ISO times."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if key in ("from", "to", "ts", "paused_at"):
        return iso(value)
    if key == "liquidations":
        return [{**item, "ts": iso(item["ts"])} for item in value]
    if isinstance(value, int):
        return value
    if isinstance(value, float) and key in ("start_equity", "end_equity"):
        # Sums of floats (quote + base * close): 15 significant digits are what a float
        # holds; beyond them is noise (10449.380000000001).
        return decimal_text(Decimal(f"{value:.15g}").normalize())
    if isinstance(value, (float, Decimal)):
        return decimal_text(value)
    if key == "gaps":
        return [{"after": iso(g["after"]), "before": iso(g["before"]), "missing": g["missing"]} for g in value]
    return value


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:+.2f} %" if signed else f"{value * 100:.2f} %"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _money(value: float | Decimal, currency: str = "") -> str:
    text = f"{value:,.2f}"
    return f"{text} {currency}".rstrip()


#: Currencies counted in cents (fiat and the dollar and euro stablecoins); any other (BTC,
#: ETH, BNB) is shown to 8 decimals, a satoshi.
CENT_CURRENCIES = frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "TRY", "BRL", "USDT", "USDC",
                             "BUSD", "FDUSD", "TUSD", "DAI", "USDP", "EURC", "EURT"})


def _fees(fees: dict[str, str]) -> str:
    """Fees for people, each rounded to its currency's usual precision (report.json keeps
    the exact amounts)."""
    return ", ".join(f"{_amount_shown(Decimal(v), k)} {k}" for k, v in fees.items()) or "0"


def _amount_shown(value: Decimal, currency: str) -> str:
    if currency.upper() in CENT_CURRENCIES:
        return f"{value:,.2f}"
    text = f"{value:,.8f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _summary_rows(numbers: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("candles", f"{numbers['candles']:,}"),
        ("total return", _pct(numbers["total_return"], signed=True)),
        ("buy and hold", _pct(numbers["buy_and_hold_return"], signed=True)),
        ("CAGR", _pct(numbers["cagr"])), ("max drawdown", _pct(numbers["max_drawdown"])), ("Sharpe", _num(numbers["sharpe"])),
        ("Sortino", _num(numbers["sortino"])), ("orders / fills", f"{numbers['orders']:,} / {numbers['fills']:,}"),
        ("trades", str(numbers["trades"])), ("win rate", _pct(numbers["win_rate"])),
        ("profit factor", _num(numbers["profit_factor"])), ("exposure", _pct(numbers["exposure"])),
        ("fees paid", _fees(numbers["fees_paid"])),
        *[(k[0].lower() + k[1:], v) for k, v in _position_rows(numbers)],
        ("gaps in the data", str(len(numbers["gaps"]))),
    ]


def summary(name: str, numbers: dict[str, Any]) -> str:
    rows = [("strategy", name), *_summary_rows(numbers)]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _position_rows(numbers: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows a perpetual strategy's run adds to the figures (none for spot)."""
    if numbers.get("market_type") != "swap":
        return []
    currency = numbers["settlement"]
    liquidations = numbers["liquidations"]
    rows = [
        ("Realized P&L", f"{_plain(numbers['realized_pnl'])} {currency} (before fees and funding)"),
        ("Funding paid", f"{_plain(numbers['funding_paid'])} {currency}"),
        ("Opens: long / short", f"{numbers['long_opens']} / {numbers['short_opens']}"),
        ("Closes by protection", str(numbers["closes_by_protection"])),
        ("Liquidations", str(len(liquidations)) + "".join(
            f"; {utc(x['ts'])} {x['amount']} @ {x['price']}" for x in liquidations[:3])),
        ("Position at the end", f"{_plain(numbers['end_position'])} (wallet {_plain(numbers['end_wallet'])} {currency})"),
    ]
    if numbers["paused_at"] is not None:
        rows.append(("Paused", f"from {utc(numbers['paused_at'])}: {numbers['paused_reason']}"))
    return rows


def summary_table(parts: dict[str, dict[str, Any]], combined: dict[str, Any]) -> str:
    """The summary of a run of several strategies: a column per strategy, and the combined
    account's last."""
    columns = [("strategy", *(v for _, v in _summary_rows(n))) for n in parts.values()]
    columns = [(name, *column[1:]) for name, column in zip(parts, columns)]
    columns.append(("combined", *(v for _, v in _summary_rows(combined))))
    labels = ["strategy", *(k for k, _ in _summary_rows(combined))]
    width = max(len(k) for k in labels)
    widths = [max(len(v) for v in column) for column in columns]
    return "\n".join(
        f"  {label:<{width}}  " + "  ".join(f"{column[i]:>{w}}" for column, w in zip(columns, widths))
        for i, label in enumerate(labels)
    )


def web_asset(name: str) -> str:
    """The text of a file under ``supervisors/web/`` (installed with the package)."""
    return (resources.files("supervisors") / "web" / name).read_text(encoding="utf-8")


def chart_scripts() -> str:
    """The chart library and limitline's chart component as inline ``<script>`` elements."""
    parts = []
    for name in (f"vendor/{VENDORED_CHART_LIBRARY}", "chart.js"):
        text = web_asset(name)
        if "</script" in text.lower():  # would end the inline element early
            raise ValueError(f"supervisors/web/{name} contains '</script' and cannot be inlined")
        parts.append(f"<script>/* supervisors/web/{name} */\n{text}\n</script>")
    return "\n".join(parts)


def chart_data(result: LabResult, symbol: str, quote: str, drawdowns: np.ndarray, held_value: np.ndarray) -> dict[str, Any]:
    """The data :file:`supervisors/web/chart.js` draws (its header gives the shape), with
    runs of candles merged when there are more than :data:`MAX_DRAWN_CANDLES`."""
    candles = result.candles
    count = len(candles)
    step = max(1, math.ceil(count / MAX_DRAWN_CANDLES))
    starts = np.arange(0, count, step)
    ends = np.minimum(starts + step, count) - 1
    if isinstance(candles, CandleSeries):
        ts = candles.timestamps()
    else:
        ts = np.fromiter((c.ts for c in candles), dtype=np.int64, count=count)
    # One column of floats at a time, reduced to the drawn candles at once (a 3M-candle run
    # would otherwise hold four columns of 24 MB each).
    opens = _floats(candles, "open")[starts]
    highs = np.maximum.reduceat(_floats(candles, "high"), starts)
    lows = np.minimum.reduceat(_floats(candles, "low"), starts)
    closes = _floats(candles, "close")[ends]
    equity = result.equity.value
    times = ts[starts].tolist()
    drawn = [list(row) for row in zip(times, opens.tolist(), highs.tolist(), lows.tolist(), closes.tolist())]
    actions = fill_actions(result)
    fills = [[int(f.at), f.side.value, float(f.price), float(f.amount)]
             + ([marker_label(actions[f.trade_id])] if f.trade_id in actions else []) for f in result.fills]
    if step > 1:  # a merged candle's time is its first candle's: put each fill on its run
        for fill in fills:
            fill[0] = times[max(0, bisect.bisect_right(times, fill[0]) - 1)]
    return {
        "symbol": symbol, "quote": quote, "candles": drawn,
        "equity": _equity_rows(equity, times, starts, ends),
        "benchmark": [list(p) for p in zip(times, np.round(held_value[ends], 2).tolist())],
        "drawdown": [list(p) for p in zip(times, np.round(np.maximum.reduceat(drawdowns, starts), 6).tolist())],
        "fills": fills, "merged": step,
    }


def _equity_rows(equity: np.ndarray, times: list[int], starts: np.ndarray, ends: np.ndarray) -> list[list[float]]:
    """The equity as the chart draws it: a point per candle, or, where runs of candles are
    merged, each run's equity as open, high, low and close (first, highest, lowest, last),
    so the chart keeps the extremes a line through the runs' last values would hide."""
    if len(starts) == len(equity):
        return [list(p) for p in zip(times, np.round(equity, 2).tolist())]
    columns = (equity[starts], np.maximum.reduceat(equity, starts), np.minimum.reduceat(equity, starts), equity[ends])
    return [list(row) for row in zip(times, *(np.round(c, 2).tolist() for c in columns))]


def timeframe(candles: Any) -> str:
    """The usual (median) step between candles, as an exchange names it: ``1h``, ``15m``, ``1d``."""
    if len(candles) < 2:
        return "?"
    steps = sorted(b.ts - a.ts for a, b in zip(candles[:1001], candles[1:1002]))
    seconds = steps[len(steps) // 2]
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_html(
    name: str,
    symbol: str,
    quote: str,
    numbers: dict[str, Any],
    result: LabResult,
    drawdowns: np.ndarray,
    held_value: np.ndarray,
    data_read: dict[str, Any] | None = None,
    parts: dict[str, dict[str, Any]] | None = None,
) -> str:
    e = html.escape
    data = chart_data(result, symbol, quote, drawdowns, held_value)
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    excess = numbers["total_return"] - numbers["buy_and_hold_return"]
    cards = [
        ("Total return", _pct(numbers["total_return"], signed=True), _tone(numbers["total_return"])),
        ("Buy and hold", _pct(numbers["buy_and_hold_return"], signed=True), _tone(numbers["buy_and_hold_return"])),
        ("Versus buy and hold", f"{excess * 100:+.2f} pp", _tone(excess)),
        ("Max drawdown", _pct(numbers["max_drawdown"]), ""),
        ("Sharpe", _num(numbers["sharpe"]), ""),
        ("Trades", f"{numbers['trades']:,}", ""),
    ]
    rows = [
        ("Period", f"{utc(numbers['from'])} to {utc(numbers['to'])}"),
        ("Candles", f"{numbers['candles']:,} ({timeframe(result.candles)})"),
        ("Start equity", _money(numbers["start_equity"], quote)),
        ("End equity", _money(numbers["end_equity"], quote)),
        ("Total return", _pct(numbers["total_return"], signed=True)),
        ("CAGR", _pct(numbers["cagr"], signed=True)),
        ("Max drawdown", _pct(numbers["max_drawdown"])),
        ("Sharpe", _num(numbers["sharpe"])),
        ("Sortino", _num(numbers["sortino"])),
        ("Buy and hold: return", _pct(numbers["buy_and_hold_return"], signed=True)),
        ("Buy and hold: max drawdown", _pct(numbers["buy_and_hold_max_drawdown"])),
        ("Orders / fills", f"{numbers['orders']:,} / {numbers['fills']:,}"),
        ("Trades (closing fills)" if numbers.get("market_type") == "swap" else "Trades (sells)", f"{numbers['trades']:,}"),
        ("Win rate", _pct(numbers["win_rate"])),
        ("Profit factor", _num(numbers["profit_factor"])),
        ("Exposure", _pct(numbers["exposure"])),
        ("Fees paid", _fees(numbers["fees_paid"])),
        *_position_rows(numbers),
        ("Gaps in the data", f"{len(numbers['gaps']):,}"),
    ]
    if data_read is not None:
        rows.append(("Data", str(data_read.get("source", ""))))
        rows += [("Data read as", note) for note in data_read.get("handling", [])]
    figures_table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    card_html = "".join(f'<div class="card"><div class="label">{e(k)}</div><div class="value {t}">{e(v)}</div></div>'
                        for k, v, t in cards)
    shown = itertools.islice(trades_of(result), MAX_TABLE_ROWS)
    trade_rows = "".join(
        f'<tr class="{t["side"]}"><td>{i}</td><td>{e(utc(t["ts"]))}</td><td>{t["side"]}'
        f'{" · " + e(t["action"]) if t.get("action") else ""}</td>'
        f'<td class="n">{e(_plain(t["price"]))}</td><td class="n">{e(_plain(t["amount"]))}</td>'
        f'<td class="n">{e(_money(t["value"]))}</td><td class="n">{e(_plain(t["fee"]))} {e(t["fee_currency"])}</td>'
        f'<td>{e(t["taker_or_maker"] or "")}</td>'
        f'<td class="n {_tone(t["realized_pnl"])}">{"" if t["realized_pnl"] is None else e(_money(t["realized_pnl"]))}</td>'
        f'<td>{e(t["client_order_id"])}</td></tr>'
        for i, t in enumerate(shown, start=1)
    )
    fills = len(result.fills)
    table_note = (f'<p class="note">The first {MAX_TABLE_ROWS:,} of {fills:,} fills; every one is in report.json.</p>'
                  if fills > MAX_TABLE_ROWS else "")
    gaps = numbers["gaps"]
    gap_items = "".join(
        f"<li>{e(utc(g['after']))} to {e(utc(g['before']))}: {g['missing']:,} candle(s) missing</li>" for g in gaps[:200]
    )
    gap_html = (f"<h2>Gaps in the data ({len(gaps):,})</h2><p>Reported, not filled in: no candle was invented.</p>"
                f"<ul>{gap_items}</ul>{'<p>(the first 200; all are in report.json)</p>' if len(gaps) > 200 else ''}"
                if gaps else "")
    part_rows = "".join(
        f'<tr data-strategy="{e(part)}"><td><a href="{e(part)}/report.html">{e(part)}</a></td>'
        f'<td class="n {_tone(n["total_return"])}">{e(_pct(n["total_return"], signed=True))}</td>'
        f'<td class="n">{e(_pct(n["max_drawdown"]))}</td><td class="n">{e(_num(n["sharpe"]))}</td>'
        f'<td class="n">{n["orders"]:,} / {n["fills"]:,}</td><td class="n">{n["trades"]:,}</td><td>{e(_fees(n["fees_paid"]))}</td></tr>'
        for part, n in (parts or {}).items()
    )
    parts_html = (
        '<h2>Strategies in this run</h2><p class="note">One run, one simulated exchange per venue: the strategies shared '
        "each candle's volume, taking turns in the config's order. The chart, figures and trades above and below are "
        'their combined account.</p><table id="strategies"><thead><tr><th>strategy</th><th>total return</th>'
        "<th>max drawdown</th><th>Sharpe</th><th>orders / fills</th><th>trades</th><th>fees</th></tr></thead>"
        f"<tbody>{part_rows}</tbody></table>" if parts else ""
    )
    merged = (f"<p class=\"note\">The chart draws every {data['merged']} candles as one ({len(data['candles']):,} drawn);"
              " the equity of each as a bar from its lowest to its highest; the figures and the table use every candle.</p>" if data["merged"] > 1 else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>limitline Lab: {e(name)} on {e(symbol)}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#24292f}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:28px 0 8px}}
.sub{{color:#57606a;margin:0 0 16px}}
.cards{{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}}
.card{{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:130px}}
.card .label{{font-size:12px;color:#57606a}} .card .value{{font-size:20px;font-weight:600}}
.pos{{color:#1a7f37}} .neg{{color:#cf222e}}
#chart{{height:640px;width:100%;border:1px solid #d0d7de;border-radius:6px}}
.hint,.note{{font-size:12px;color:#57606a}}
table{{border-collapse:collapse;font-size:13px}} th,td{{padding:3px 10px;text-align:left;border-bottom:1px solid #eaeef2}}
td.n{{text-align:right;font-variant-numeric:tabular-nums}}
#trades thead th{{position:sticky;top:0;background:#f6f8fa}}
.scroll{{max-height:480px;overflow:auto;border:1px solid #d0d7de;border-radius:6px;display:inline-block}}
tr.buy td:nth-child(3){{color:#1a7f37}} tr.sell td:nth-child(3){{color:#cf222e}}
footer{{margin-top:32px;font-size:12px;color:#57606a}}
</style>
</head><body>
<h1>Strategy Lab: {e(name)}</h1>
<p class="sub">{e(symbol)} · {e(utc(numbers['from']))} to {e(utc(numbers['to']))} · {numbers['candles']:,} candles ({e(timeframe(result.candles))}) · equity in {e(quote)}</p>
<div class="cards">{card_html}</div>
<div id="chart"></div>
<p class="hint">Drag to pan, scroll or pinch to zoom, double-click the time axis to fit. Top: candles, buys ▲ green and sells ▼ red at their fill price{e(_marker_hint(numbers))}; middle: equity (blue) and buy and hold (grey, dashed); bottom: drawdown. Times in UTC.</p>
{merged}
{parts_html}
<h2>Figures</h2>
<table id="figures">{figures_table}</table>
<h2>Trades ({fills:,} fills)</h2>{table_note}
<div class="scroll"><table id="trades">
<thead><tr><th>#</th><th>time (UTC)</th><th>side</th><th>price ({e(quote)})</th><th>amount</th><th>value ({e(quote)})</th><th>fee</th><th>taker / maker</th><th>realized P&amp;L ({e(quote)})</th><th>order</th></tr></thead>
<tbody>{trade_rows}</tbody></table></div>
{gap_html}
<footer>Written by limitline's Strategy Lab; the same numbers are in report.json.
Charts: TradingView Lightweight Charts™, Copyright (с) 2023 TradingView, Inc.,
<a href="https://www.tradingview.com/">https://www.tradingview.com/</a> (Apache License 2.0).</footer>
<script type="application/json" id="chart-data">{data_json}</script>
{chart_scripts()}
<script>window.limitlineChart = LimitlineChart.render(document.getElementById("chart"), JSON.parse(document.getElementById("chart-data").textContent));</script>
</body></html>
"""


#: A fill's marker on the chart, in a few characters (a long run has thousands of markers).
MARKER_LABELS = {"open": "", "add": "+", "reduce": "-", "close": "x", "flip to": ">"}


def marker_label(action: str) -> str:
    """``open long`` -> ``L``, ``add short`` -> ``+S``, ``reduce long`` -> ``-L``, ``close
    short`` -> ``xS``, ``flip to short`` -> ``>S``, ``liquidation`` -> ``LIQ``."""
    if action == "liquidation":
        return "LIQ"
    kind, _, side = action.rpartition(" ")
    return MARKER_LABELS.get(kind, "?") + side[:1].upper()


def _marker_hint(numbers: dict[str, Any]) -> str:
    if numbers.get("market_type") != "swap":
        return ""
    return (", each lettered for what it did to the position: L open long, S open short, +L add, -L reduce, "
            "xL close, >S flip to short; LIQ (purple) a liquidation")


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _tone(value: float | Decimal | None) -> str:
    if value is None or value == 0:
        return ""
    return "pos" if value > 0 else "neg"

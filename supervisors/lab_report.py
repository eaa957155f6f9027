"""The Lab's report: figures from a run, ``report.json``, ``report.html`` and a summary table.

Definitions (per-candle equity E_t = capital + inventory at the close):

- total return: E_last / E_first - 1; CAGR: (1 + total return) ** (1 / years) - 1;
- maximum drawdown: the largest fall of E from its running peak, as a fraction of the peak;
- Sharpe and Sortino: mean of per-candle returns over their standard deviation (Sortino:
  over the downside deviation), annualised by the number of candles in a year; no
  risk-free rate;
- a trade is a sell fill (it realises P&L at average cost); win rate and profit factor are
  over those;
- exposure: the share of candles that ended holding inventory.
"""

from __future__ import annotations

import html
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from supervisors.lab import LabResult

SECONDS_PER_YEAR = 365.25 * 24 * 3600


def figures(result: LabResult, gaps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    equity = [float(e) for _, e, _ in result.equity]
    first, last = equity[0], equity[-1]
    span = max(result.candles[-1].ts - result.candles[0].ts, 1)
    years = span / SECONDS_PER_YEAR
    total_return = last / first - 1 if first else 0.0
    peak, max_drawdown, drawdowns = equity[0], 0.0, []
    for value in equity:
        peak = max(peak, value)
        drawdown = (peak - value) / peak if peak else 0.0
        drawdowns.append(drawdown)
        max_drawdown = max(max_drawdown, drawdown)
    returns = [b / a - 1 for a, b in zip(equity, equity[1:]) if a]
    per_year = len(returns) / years if years > 0 else 0.0
    mean = sum(returns) / len(returns) if returns else 0.0
    deviation = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns)) if returns else 0.0
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns)) if returns else 0.0
    sells = [e for e in result.journal if e.kind == "settle" and e.side is not None and e.side.value == "sell"]
    pnl = [float(e.realized_pnl) for e in sells]
    wins, losses = [p for p in pnl if p > 0], [p for p in pnl if p < 0]
    fees: dict[str, Decimal] = {}
    for fill in result.fills:
        fees[fill.fee_currency] = fees.get(fill.fee_currency, Decimal(0)) + fill.fee
    return {
        "candles": len(result.candles),
        "from": result.candles[0].ts,
        "to": result.candles[-1].ts,
        "start_equity": first,
        "end_equity": last,
        "total_return": total_return,
        "cagr": (1 + total_return) ** (1 / years) - 1 if years > 0 and total_return > -1 else None,
        "max_drawdown": max_drawdown,
        "sharpe": mean / deviation * math.sqrt(per_year) if deviation else None,
        "sortino": mean / downside * math.sqrt(per_year) if downside else None,
        "orders": len(result.orders),
        "fills": len(result.fills),
        "trades": len(pnl),
        "win_rate": len(wins) / len(pnl) if pnl else None,
        "profit_factor": sum(wins) / -sum(losses) if losses else None,
        "exposure": sum(1 for _, _, held in result.equity if held > 0) / len(result.equity),
        "fees_paid": {k: str(v) for k, v in fees.items()},
        "gaps": gaps or [],
        "_drawdowns": drawdowns,
    }


def write_report(result: LabResult, directory: Path, name: str, gaps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    numbers = figures(result, gaps)
    drawdowns = numbers.pop("_drawdowns")
    trades = [
        {"ts": int(f.at), "client_order_id": f.client_order_id, "side": f.side.value, "price": str(f.price),
         "amount": str(f.amount), "fee": str(f.fee), "fee_currency": f.fee_currency}
        for f in result.fills
    ]
    equity = [{"ts": ts, "equity": str(e), "held": str(h)} for ts, e, h in result.equity]
    (directory / "report.json").write_text(json.dumps({"strategy": name, **numbers, "trade_list": trades, "equity": equity}, indent=1))
    (directory / "report.html").write_text(_html(name, numbers, result, drawdowns))
    return numbers


def summary(name: str, numbers: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 100:.2f} %"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    rows = [
        ("strategy", name), ("candles", f"{numbers['candles']:,}"), ("total return", pct(numbers["total_return"])),
        ("CAGR", pct(numbers["cagr"])), ("max drawdown", pct(numbers["max_drawdown"])), ("Sharpe", num(numbers["sharpe"])),
        ("Sortino", num(numbers["sortino"])), ("orders / fills", f"{numbers['orders']} / {numbers['fills']}"),
        ("trades", str(numbers["trades"])), ("win rate", pct(numbers["win_rate"])),
        ("profit factor", num(numbers["profit_factor"])), ("exposure", pct(numbers["exposure"])),
        ("fees paid", ", ".join(f"{v} {k}" for k, v in numbers["fees_paid"].items()) or "0"),
        ("gaps in the data", str(len(numbers["gaps"]))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _html(name: str, numbers: dict[str, Any], result: LabResult, drawdowns: list[float]) -> str:
    width, height, pad = 1000, 420, 40
    equity = [float(e) for _, e, _ in result.equity]
    low, high = min(equity), max(equity)
    span = (high - low) or 1.0
    count = len(equity)
    step = max(1, count // 2000)  # at most ~2,000 points drawn

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * i / max(count - 1, 1)

    def y(value: float) -> float:
        return pad + (height * 0.65 - pad) * (1 - (value - low) / span)

    def y_dd(value: float) -> float:
        return height * 0.7 + (height * 0.3 - pad / 2) * value / (max(drawdowns) or 1.0)

    line = " ".join(f"{x(i):.1f},{y(equity[i]):.1f}" for i in range(0, count, step))
    dd = f"{x(0):.1f},{y_dd(0):.1f} " + " ".join(f"{x(i):.1f},{y_dd(drawdowns[i]):.1f}" for i in range(0, count, step)) + f" {x(count - 1):.1f},{y_dd(0):.1f}"
    index_of = {c.ts: i for i, c in enumerate(result.candles)}
    marks = []
    for fill in result.fills[:2000]:
        i = index_of.get(int(fill.at))
        if i is not None:
            colour = "#1a7f37" if fill.side.value == "buy" else "#cf222e"
            marks.append(f'<circle cx="{x(i):.1f}" cy="{y(equity[i]):.1f}" r="2.5" fill="{colour}"><title>{fill.side.value} {fill.amount} @ {fill.price}</title></circle>')
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in numbers.items() if k != "gaps"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>limitline Lab: {html.escape(name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}} th,td{{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>Strategy Lab: {html.escape(name)}</h1>
<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="equity and drawdown">
<text x="{pad}" y="{pad - 12}" font-size="13">equity (quote): {low:.2f} to {high:.2f}; buys green, sells red</text>
<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="1.2"/>
{''.join(marks)}
<text x="{pad}" y="{height * 0.7 - 6:.0f}" font-size="13">drawdown (max {numbers['max_drawdown'] * 100:.1f} %)</text>
<polygon points="{dd}" fill="#cf222e" fill-opacity="0.35" stroke="none"/>
</svg>
<table>{rows}</table>
<p>Gaps in the data: {len(numbers['gaps'])}</p>
</body></html>
"""

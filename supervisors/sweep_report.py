"""A sweep's results for people and programs: a table on the console, ``sweep.json`` (decimals
as strings, times ISO-8601 UTC, every trial) and ``sweep.html`` (one offline file: the
walk-forward verdict, a heatmap of the in-sample objective over two parameters, and the
trials)."""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from supervisors.lab_report import decimal_text, iso, utc
from supervisors.sweep import Outcome, SweepResult, Trial, unchosen

#: An axis with more distinct values than this (TPE over a continuous range) is binned.
MAX_AXIS = 25
BINS = 20
#: Trials listed per window in sweep.html (sweep.json has them all).
HTML_TRIALS = 500


def _machine(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return "inf" if value == math.inf else decimal_text(value)
    if isinstance(value, Decimal):
        return f"{value:f}"
    return value


def _outcome(outcome: Outcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {key: _machine(value) for key, value in attrs.asdict(outcome).items()}


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {name: _machine(value) for name, value in params.items()}


def document(result: SweepResult, strategy: str) -> dict[str, Any]:
    """``sweep.json``: the sweep as run, each window's choice with its out-of-sample
    figures, and every trial."""
    sweep, candles = result.sweep, result.candles
    return {
        "strategy": strategy,
        "executor": result.executor,
        "search": sweep.search,
        "objective": sweep.objective,
        "max_drawdown": _machine(sweep.max_drawdown),
        "min_trades": sweep.min_trades,
        "from": iso(candles[0].ts),
        "to": iso(candles[-1].ts),
        "candles": len(candles),
        "out_of_sample_return": _machine(result.out_of_sample_return()),
        "windows": [
            {
                "window": w.window.index,
                "in_sample": {"from": iso(candles[w.window.start].ts), "to": iso(candles[w.window.split - 1].ts),
                              "candles": w.window.split - w.window.start},
                "out_of_sample": {"from": iso(candles[w.window.split].ts), "to": iso(candles[w.window.end - 1].ts),
                                  "candles": w.window.end - w.window.split},
                "chosen": None if w.chosen is None else _params(w.chosen.params),
                "in_sample_objective": None if w.chosen is None else _machine(w.chosen.objective),
                "in_sample_figures": None if w.chosen is None else _outcome(w.chosen.outcome),
                "out_of_sample_figures": _outcome(w.out_of_sample),
            }
            for w in result.windows
        ],
        "trials": [
            {"window": t.window, "number": t.number, "params": _params(t.params), "objective": _machine(t.objective),
             "infeasible": t.infeasible, "figures": _outcome(t.outcome)}
            for t in result.trials
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f} %"


def _obj(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if value == math.inf else f"{value:.3f}"


def _shown_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_machine(v)}" for k, v in params.items())


def table(result: SweepResult) -> str:
    """The console's table: each window's choice, in sample and out of sample."""
    candles = result.candles
    lines = [f"{'window':<7}{'in sample (chooses)':<27}{'out of sample (tests)':<27}{result.sweep.objective + ' in':>12}"
             f"{'return out':>12}{'Sharpe out':>12}{'max DD out':>12}{'trades':>8}  chosen"]
    for w in result.windows:
        cut = w.window
        is_span = f"{utc(candles[cut.start].ts)[:10]} to {utc(candles[cut.split - 1].ts)[:10]}"
        oos_span = f"{utc(candles[cut.split].ts)[:10]} to {utc(candles[cut.end - 1].ts)[:10]}"
        if w.chosen is None or w.out_of_sample is None:
            lines.append(f"{cut.index + 1:<7}{is_span:<27}{oos_span:<27}  {unchosen(result, cut.index)}")
            continue
        o = w.out_of_sample
        lines.append(f"{cut.index + 1:<7}{is_span:<27}{oos_span:<27}{_obj(w.chosen.objective):>12}{_pct(o.total_return):>12}"
                     f"{_obj(o.sharpe):>12}{o.max_drawdown * 100:>10.2f} %{o.trades:>8}  {_shown_params(w.chosen.params)}")
    lines.append(f"out-of-sample return, windows compounded: {_pct(result.out_of_sample_return())}")
    return "\n".join(lines)


@attrs.frozen
class Heatmap:
    x: str
    y: str
    x_labels: list[str]
    y_labels: list[str]
    #: cells[row (y)][column (x)]: the mean over windows of the best in-sample objective among
    #: the trials in that cell; None where no trial in the cell was feasible.
    cells: list[list[float | None]]


def heatmap(result: SweepResult) -> Heatmap | None:
    """The in-sample objective over two parameters (``heatmap:`` in the sweep, else the first
    two); None for a sweep of one parameter."""
    sweep = result.sweep
    names = sweep.heatmap or [n for n in sweep.parameters][:2]
    if len(names) < 2:
        return None
    x, y = names
    x_key, x_labels = _axis([t.params[x] for t in result.trials], sweep.parameters[x].choices)
    y_key, y_labels = _axis([t.params[y] for t in result.trials], sweep.parameters[y].choices)
    best: dict[tuple[int, int, int], float] = {}
    for t in result.trials:
        if t.objective is None:
            continue
        cell = (t.window, y_key(t.params[y]), x_key(t.params[x]))
        best[cell] = max(best.get(cell, -math.inf), t.objective)
    per_cell: dict[tuple[int, int], list[float]] = defaultdict(list)
    for (_, row, column), value in best.items():
        per_cell[(row, column)].append(value)
    cells = [[(sum(v) / len(v)) if (v := per_cell.get((r, c))) else None for c in range(len(x_labels))]
             for r in range(len(y_labels))]
    return Heatmap(x, y, x_labels, y_labels, cells)


def _axis(values: list[Any], choices: list[Any] | None) -> tuple[Any, list[str]]:
    """(value -> column, column labels): choices in their order, numbers sorted, binned when
    there are more than :data:`MAX_AXIS` distinct ones."""
    if choices is not None:
        return (lambda v: choices.index(v)), [str(_machine(c)) for c in choices]
    distinct = sorted(set(values))
    if len(distinct) <= MAX_AXIS:
        position = {v: i for i, v in enumerate(distinct)}
        return (lambda v: position[v]), [str(_machine(v)) for v in distinct]
    low, high = float(distinct[0]), float(distinct[-1])
    width = (high - low) / BINS

    def column(v: Any) -> int:
        return min(BINS - 1, int((float(v) - low) / width))

    return column, [f"{low + i * width:.4g}–{low + (i + 1) * width:.4g}" for i in range(BINS)]


def _colour(value: float | None, scale: float) -> str:
    if value is None:
        return "#f6f8fa"
    share = max(-1.0, min(1.0, value / scale)) if scale else 0.0
    if share >= 0:
        return f"rgba(26,127,55,{0.1 + 0.8 * share:.2f})"
    return f"rgba(207,34,46,{0.1 + 0.8 * -share:.2f})"


def render_html(result: SweepResult, strategy: str) -> str:
    e = html.escape
    sweep, candles = result.sweep, result.candles
    names = list(sweep.parameters)
    window_rows = []
    for w in result.windows:
        cut = w.window
        o, c = w.out_of_sample, w.chosen
        window_rows.append(
            f"<tr><td>{cut.index + 1}</td><td>{e(utc(candles[cut.start].ts))} to {e(utc(candles[cut.split - 1].ts))}</td>"
            f"<td>{e(utc(candles[cut.split].ts))} to {e(utc(candles[cut.end - 1].ts))}</td>"
            + (f"<td>{e(_shown_params(c.params))}</td><td class=n>{_obj(c.objective)}</td>"
               f"<td class=n>{_pct(o.total_return)}</td><td class=n>{_obj(o.sharpe)}</td>"
               f"<td class=n>{o.max_drawdown * 100:.2f} %</td><td class=n>{o.trades}</td></tr>"
               if c is not None and o is not None else f"<td colspan=6>{e(unchosen(result, cut.index))}</td></tr>"))
    hm = heatmap(result)
    heat_html = ""
    if hm is not None:
        found = [v for row in hm.cells for v in row if v is not None and math.isfinite(v)]
        scale = max((abs(v) for v in found), default=0.0)
        head = "".join(f"<th>{e(label)}</th>" for label in hm.x_labels)
        body = "".join(
            f"<tr><th>{e(label)}</th>" + "".join(
                f'<td class="cell" style="background:{_colour(v if v is None or math.isfinite(v) else scale, scale)}" '
                f'title="{e(hm.x)}={e(hm.x_labels[c])} {e(hm.y)}={e(label)}: {_obj(v)}">{_obj(v) if v is not None else ""}</td>'
                for c, v in enumerate(row)) + "</tr>"
            for label, row in zip(hm.y_labels, hm.cells))
        heat_html = (f"<h2>Heatmap: in-sample {e(sweep.objective)} by {e(hm.x)} (columns) and {e(hm.y)} (rows)</h2>"
                     f"<p class=note>Each cell: the best feasible set with those two values, averaged over the windows; "
                     f"blank: none feasible. Green above 0, red below.</p>"
                     f'<table id="heatmap"><thead><tr><th>{e(hm.y)} \\ {e(hm.x)}</th>{head}</tr></thead><tbody>{body}</tbody></table>')
    trial_rows = []
    by_window: dict[int, list[Trial]] = defaultdict(list)
    for t in result.trials:
        by_window[t.window].append(t)
    for window, trials in sorted(by_window.items()):
        ranked = sorted(trials, key=lambda t: (t.objective is None, -(t.objective or 0), t.number))[:HTML_TRIALS]
        for t in ranked:
            o = t.outcome
            trial_rows.append(
                f"<tr><td>{window + 1}</td><td>{t.number}</td>" + "".join(f"<td>{e(str(_machine(t.params[n])))}</td>" for n in names)
                + f"<td class=n>{_obj(t.objective)}</td>"
                + (f"<td class=n>{_pct(o.total_return)}</td><td class=n>{_obj(o.sharpe)}</td><td class=n>{_obj(o.profit_factor)}</td>"
                   f"<td class=n>{o.max_drawdown * 100:.2f} %</td><td class=n>{o.trades}</td>" if o is not None else "<td colspan=5></td>")
                + f"<td>{e(t.infeasible or '')}</td></tr>")
    params_head = "".join(f"<th>{e(n)}</th>" for n in names)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>limitline sweep: {e(strategy)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#24292f}} h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}}
table{{border-collapse:collapse;font-size:13px}} th,td{{padding:3px 8px;border-bottom:1px solid #eaeef2;text-align:left}}
td.n,td.cell{{text-align:right;font-variant-numeric:tabular-nums}} td.cell{{min-width:48px}}
.note{{font-size:12px;color:#57606a}} .verdict{{font-size:18px;font-weight:600}}
</style></head><body>
<h1>Sweep: {e(strategy)}</h1>
<p>{len(candles):,} candles, {e(utc(candles[0].ts))} to {e(utc(candles[-1].ts))}; search {e(sweep.search)}, objective
{e(sweep.objective)} (maximised){f", max drawdown {float(sweep.max_drawdown):.2%}" if sweep.max_drawdown is not None else ""},
min trades {sweep.min_trades}; {len(result.windows)} walk-forward window(s); run on {e(result.executor)}.</p>
<p class="verdict">Out of sample, windows compounded: {_pct(result.out_of_sample_return())}</p>
<h2>Walk-forward: chosen in sample, tested out of sample</h2>
<table id="windows"><thead><tr><th>window</th><th>in sample (chooses)</th><th>out of sample (tests)</th><th>chosen</th>
<th>{e(sweep.objective)} in</th><th>return out</th><th>Sharpe out</th><th>max DD out</th><th>trades out</th></tr></thead>
<tbody>{''.join(window_rows)}</tbody></table>
{heat_html}
<h2>Trials, in sample ({len(result.trials):,}; best first per window{f", the first {HTML_TRIALS} of each" if any(len(v) > HTML_TRIALS for v in by_window.values()) else ""})</h2>
<table id="trials"><thead><tr><th>window</th><th>#</th>{params_head}<th>{e(sweep.objective)}</th><th>return</th><th>Sharpe</th>
<th>profit factor</th><th>max DD</th><th>trades</th><th>not chosen because</th></tr></thead>
<tbody>{''.join(trial_rows)}</tbody></table>
</body></html>
"""


def write_sweep_report(result: SweepResult, directory: Path, strategy: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.json").write_text(json.dumps(document(result, strategy), indent=1))
    (directory / "sweep.html").write_text(render_html(result, strategy), encoding="utf-8")

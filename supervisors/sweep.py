"""Parameter sweeps in the Lab, kept honest by walk-forward windows.

The candles are cut into ``walk_forward.windows`` consecutive windows. In each window, every
parameter set (a grid's combinations, or the sets Optuna's TPE sampler asks for) is
backtested on the in-sample part, the best feasible set by the objective is chosen there, and
that set alone is backtested on the window's out-of-sample rest: the figures reported for the
chosen parameters come from candles they were not chosen on.

Feasible: the parameters pass pre-flight, the in-sample run made at least ``min_trades``
trades and its maximum drawdown is within ``max_drawdown``. Ties go to the earlier set (grid
order, or the order TPE asked). Each backtest is the Lab's own (:class:`supervisors.lab.Lab`,
fast path) on its slice of candles from a fresh allocation.

Determinism: the grid's order is fixed; TPE is seeded per window and asked for ``batch``
sets at a time, told their values in order, so the sets it tries do not depend on which
executor ran them or how many workers it had. The same sweep file, config and candles give
the same result on the local pool, Dask and Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from actors.strategy.settings import StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from supervisors.sweep_executors import Executor
from supervisors.sweep_spec import Parameter, StrategyTemplate, Sweep, Value, grid

#: The shortest in-sample or out-of-sample part a window may have, in candles.
MIN_PART = 50
#: What TPE is told for a set that cannot be chosen (invalid, too few trades, too deep a
#: drawdown): below any real objective, so TPE learns to avoid its neighbourhood.
INFEASIBLE = -1e12


@attrs.frozen
class Job:
    """One backtest: these settings on ``candles[start:end]``."""

    settings: StrategySettings
    market: MarketRules
    start: int
    end: int


@attrs.frozen
class Outcome:
    """The figures of one backtest that a sweep ranks by (see ``supervisors/lab_report.py``)."""

    total_return: float
    sharpe: float | None
    profit_factor: float | None
    max_drawdown: float
    trades: int
    fills: int
    end_equity: float


def evaluate(job: Job, candles: Sequence[Candle]) -> Outcome:
    """Runs in a worker: the Lab on the job's slice, reduced to its figures."""
    from supervisors.lab import Lab
    from supervisors.lab_report import figures

    result = Lab(job.settings, job.market, candles[job.start: job.end], keep_events=False, fast=True).run()
    numbers = figures(result, market=job.market)
    profit_factor = numbers["profit_factor"]
    if profit_factor is None and numbers["trades"] and numbers["win_rate"]:
        profit_factor = math.inf  # wins and no loss
    return Outcome(numbers["total_return"], numbers["sharpe"], profit_factor, numbers["max_drawdown"],
                   numbers["trades"], numbers["fills"], numbers["end_equity"])


@attrs.frozen
class Window:
    index: int
    start: int  # candle indices: in sample [start, split), out of sample [split, end)
    split: int
    end: int


@attrs.define
class Trial:
    """One parameter set in one window's in-sample part."""

    window: int
    number: int  # its position: grid order, or the order TPE asked for it
    params: dict[str, Value]
    problem: str | None = None  # why it did not run (invalid parameters)
    outcome: Outcome | None = None
    objective: float | None = None
    infeasible: str | None = None  # why it cannot be chosen


@attrs.define
class WindowResult:
    window: Window
    chosen: Trial | None  # None: no feasible set in sample
    out_of_sample: Outcome | None


@attrs.define
class SweepResult:
    sweep: Sweep
    candles: Sequence[Candle]
    trials: list[Trial]
    windows: list[WindowResult]
    executor: str

    def out_of_sample_return(self) -> float | None:
        """The out-of-sample returns of every window compounded: the walk-forward's verdict."""
        outcomes = [w.out_of_sample for w in self.windows]
        if not outcomes or any(o is None for o in outcomes):
            return None
        return math.prod(1 + o.total_return for o in outcomes if o is not None) - 1


def windows(sweep: Sweep, count: int) -> list[Window]:
    """The walk-forward windows over ``count`` candles; ValueError naming the field when a
    part would be shorter than :data:`MIN_PART` candles."""
    wf = sweep.walk_forward
    size = count // wf.windows
    out = []
    for i in range(wf.windows):
        start = i * size
        end = count if i == wf.windows - 1 else start + size
        split = start + int((end - start) * wf.in_sample)
        if min(split - start, end - split) < MIN_PART:
            raise ValueError(
                f"walk_forward: {count:,} candles in {wf.windows} window(s) leave {split - start} in-sample and "
                f"{end - split} out-of-sample candles in a window; each part needs at least {MIN_PART}: "
                "use fewer windows, or more candles")
        out.append(Window(i, start, split, end))
    return out


def score(sweep: Sweep, outcome: Outcome) -> tuple[float | None, str | None]:
    """(objective, None) for a feasible outcome; (None, why) otherwise."""
    if outcome.trades < sweep.min_trades:
        return None, f"{outcome.trades} trade(s), fewer than min_trades {sweep.min_trades}"
    if sweep.max_drawdown is not None and outcome.max_drawdown > float(sweep.max_drawdown):
        return None, f"max drawdown {outcome.max_drawdown:.2%} above the bound {float(sweep.max_drawdown):.2%}"
    value = {"sharpe": outcome.sharpe, "return": outcome.total_return, "profit_factor": outcome.profit_factor}[sweep.objective]
    if value is None:
        return None, f"no {sweep.objective} (no trade, or no variation)"
    return value, None


def run_sweep(
    sweep: Sweep,
    template: StrategyTemplate,
    market: MarketRules,
    candles: Sequence[Candle],
    executor: Executor,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Runs the sweep; ``progress(n)`` after every ``n`` backtests finished (for a bar;
    :func:`planned` tells the total)."""
    cuts = windows(sweep, len(candles))
    step = progress or (lambda n: None)
    trials = _grid_trials(sweep, template, market, cuts, executor, step) if sweep.search == "grid" else \
        _tpe_trials(sweep, template, market, cuts, executor, step)
    chosen: list[Trial | None] = []
    for cut in cuts:
        feasible = [t for t in trials if t.window == cut.index and t.objective is not None]
        # max() keeps the first of equal objectives: ties go to the earlier set.
        chosen.append(max(feasible, key=lambda t: t.objective) if feasible else None)
    jobs, owners = [], []
    for cut, best in zip(cuts, chosen):
        if best is not None:
            settings, _ = template.build(sweep, best.params)
            jobs.append(Job(settings, market, cut.split, cut.end))
            owners.append(cut.index)
    out_of_sample: dict[int, Outcome] = {}
    for i, outcome in executor.run(evaluate, jobs):
        out_of_sample[owners[i]] = outcome
        step(1)
    results = [WindowResult(cut, best, out_of_sample.get(cut.index)) for cut, best in zip(cuts, chosen)]
    return SweepResult(sweep, candles, trials, results, executor.name)


def unchosen(result: SweepResult, window: int) -> str:
    """Why no parameter set was chosen in ``window``'s in-sample part: every set failed
    pre-flight (its parameters cannot run), or the sets that ran failed the drawdown or
    ``min_trades`` bound (or had no objective)."""
    trials = [t for t in result.trials if t.window == window]
    failed = sum(1 for t in trials if t.problem is not None)
    if trials and failed == len(trials):
        return "every parameter set failed pre-flight"
    return ("no parameter set in sample passed the drawdown or min_trades bound"
            + (f" ({failed} failed pre-flight)" if failed else ""))


def none_can_run(result: SweepResult) -> str | None:
    """The cause when no parameter set of the sweep could run at all (each one failed
    pre-flight), naming the first set's problem; None when any set ran."""
    if not result.trials or any(t.problem is None for t in result.trials):
        return None
    first = result.trials[0]
    shown = " ".join(f"{k}={v}" for k, v in first.params.items())
    return (f"no parameter set can run: all {len({repr(sorted(t.params.items())) for t in result.trials}):,} "
            f"failed pre-flight (for instance {shown}: {first.problem}); fix the sweep's ranges or choices")


def planned(sweep: Sweep) -> int:
    """How many backtests the sweep runs at most (the progress bar's total)."""
    from supervisors.sweep_spec import grid_size

    per_window = grid_size(sweep) if sweep.search == "grid" else sweep.trials
    return (per_window + 1) * sweep.walk_forward.windows


def _evaluate_all(sweep: Sweep, template: StrategyTemplate, market: MarketRules, trials: list[Trial],
                  cuts: list[Window], executor: Executor, step: Callable[[int], None]) -> None:
    """Builds and backtests ``trials`` in place (outcome, objective, or the problem)."""
    jobs, owners = [], []
    built: dict[str, tuple[StrategySettings | None, str | None]] = {}
    for trial in trials:
        key = repr(sorted(trial.params.items()))
        if key not in built:
            built[key] = template.build(sweep, trial.params)
        settings, trial.problem = built[key]
        if settings is None:
            trial.infeasible = f"failed pre-flight: {trial.problem}"
            step(1)
            continue
        cut = cuts[trial.window]
        jobs.append(Job(settings, market, cut.start, cut.split))
        owners.append(trial)
    for i, outcome in executor.run(evaluate, jobs):
        trial = owners[i]
        trial.outcome = outcome
        trial.objective, trial.infeasible = score(sweep, outcome)
        step(1)


def _grid_trials(sweep: Sweep, template: StrategyTemplate, market: MarketRules, cuts: list[Window],
                 executor: Executor, step: Callable[[int], None]) -> list[Trial]:
    sets = grid(sweep)
    trials = [Trial(cut.index, n, params) for cut in cuts for n, params in enumerate(sets)]
    _evaluate_all(sweep, template, market, trials, cuts, executor, step)
    return trials


def _tpe_trials(sweep: Sweep, template: StrategyTemplate, market: MarketRules, cuts: list[Window],
                executor: Executor, step: Callable[[int], None]) -> list[Trial]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {name: _distribution(p) for name, p in sweep.parameters.items()}
    studies = [
        optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sweep.seed + cut.index))
        for cut in cuts
    ]
    trials: list[Trial] = []
    asked = 0
    while asked < sweep.trials:
        count = min(sweep.batch, sweep.trials - asked)
        batch: list[tuple[Any, Any, Trial]] = []
        for cut, study in zip(cuts, studies):
            for k in range(count):
                handle = study.ask(space)
                params = {name: _value(sweep.parameters[name], handle.params[name]) for name in space}
                batch.append((study, handle, Trial(cut.index, asked + k, params)))
        _evaluate_all(sweep, template, market, [t for _, _, t in batch], cuts, executor, step)
        for study, handle, trial in batch:  # told in the order asked, whatever finished first
            study.tell(handle, _told(trial))
        trials += [t for _, _, t in batch]
        asked += count
    return trials


def _told(trial: Trial) -> float:
    """What TPE learns of a trial: its objective, capped (a profit factor of a run without a
    loss is infinite), or :data:`INFEASIBLE`."""
    if trial.objective is None:
        return INFEASIBLE
    return min(trial.objective, -INFEASIBLE)


def _distribution(p: Parameter) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.choices is not None:
        return CategoricalDistribution(list(range(len(p.choices))))  # by position: any YAML value
    if p.low is None or p.high is None:
        raise ValueError("a range needs low and high")
    whole = all(v is None or v == v.to_integral_value() for v in (p.low, p.high, p.step))
    if whole and p.step is not None:
        return IntDistribution(int(p.low), int(p.high), step=int(p.step))
    if p.step is not None:
        high = p.low + int((p.high - p.low) / p.step) * p.step  # optuna wants high on the grid
        return FloatDistribution(float(p.low), float(high), step=float(p.step))
    return FloatDistribution(float(p.low), float(p.high))


def _value(p: Parameter, raw: Any) -> Value:
    """What TPE suggested, as the config would have it: a choice, a whole number, or a
    Decimal on the step's grid (floats never reach the strategy's settings)."""
    if p.choices is not None:
        return p.choices[raw]
    if isinstance(raw, int):
        return raw
    if p.low is None:
        raise ValueError("a range needs low")
    if p.step is not None:
        return (p.low + round((Decimal(repr(raw)) - p.low) / p.step) * p.step).normalize()
    return Decimal(repr(raw)).quantize(Decimal("1e-8")).normalize()

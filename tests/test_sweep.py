"""Sweeps: the file's checks name the field; the walk-forward chooses in sample and reports
out of sample; the same sweep gives the same result on the local pool and on a real Dask
cluster (distributed.LocalCluster); the command line prints the table and writes sweep.json
and sweep.html with the heatmap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import attrs
import pytest

from exchange.candles import bundled_path, read_candles
from supervisors.lab_config import lab_market
from supervisors.config import ConfigError, load_config
from supervisors.sweep import Job, evaluate, planned, run_sweep, score, windows
from supervisors.sweep_executors import DaskCluster, LocalPool
from supervisors.sweep_report import document, heatmap
from supervisors.sweep_spec import StrategyTemplate, grid, parse_sweep

ROOT = Path(__file__).resolve().parents[1]
CANDLES = read_candles(bundled_path()).candles[:3000]  # a view of the columns, as the CLI gives it

GRID = {
    "strategy": "sma-cross",
    "parameters": {
        "fast": {"set": ["buy.fast", "sell.fast"], "low": 4, "high": 12, "step": 4},
        "slow": {"set": ["buy.slow", "sell.slow"], "choices": [12, 30]},
    },
    "objective": "sharpe",
    "walk_forward": {"windows": 2, "in_sample": 0.7},
}


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_sweep(raw, "s.yaml")
    return error.value.problems


def test_a_bad_sweep_file_names_every_field():
    assert problems({"parameters": {"fast": {"low": 3, "high": 1, "step": 0}}, "objectiv": "sharpe"}) == [
        "objectiv: unknown field (check its spelling)",
        "parameters.fast.high: must be at least low (3), got 1",
        "parameters.fast.step: must be greater than 0, got 0",
    ]
    assert problems({"parameters": {"fast": {"low": 3, "high": 1, "step": 0}}, "heatmap": ["fast", "slow"]}) == [
        "parameters.fast.high: must be at least low (3), got 1",
        "parameters.fast.step: must be greater than 0, got 0",
        "heatmap[1]: is not a parameter of the sweep ['fast']",
    ]
    assert problems({"parameters": {"x": {"low": 1, "high": 2}}, "objective": "alpha", "max_drawdown": 2}) == [
        "objective: must be one of sharpe, return, profit_factor, got 'alpha'",
        "parameters.x.step: a grid needs a step (or choices) for every parameter",
        "max_drawdown: must be a fraction greater than 0 and at most 1 (0.25 is 25 %), got 2",
    ]
    # A bad search or objective hides nothing else; a grid's rules do not judge a search not read.
    assert problems({"parameters": {"x": {"low": 1, "high": 2}}, "search": "annealing", "objective": "sortinoo",
                     "walk_forward": {"windows": 0}, "heatmap": ["x", "zzz"]}) == [
        "search: must be one of grid, tpe, got 'annealing'",
        "objective: must be one of sharpe, return, profit_factor, got 'sortinoo'",
        "walk_forward.windows: must be between 1 and 100, got 0",
        "heatmap[1]: is not a parameter of the sweep ['x']",
    ]
    assert problems({"parameters": {"x": {"low": "a"}}, "heatmap": ["x", "y"], "trials": 0}) == [
        "parameters['x'].low: expected a number, got 'a'",
        "trials: must be between 1 and 100,000, got 0",
    ]
    assert problems({"parameters": {"x": {"low": 1, "high": 2}}, "max_drawdown": 2,
                     "walk_forward": {"windows": 0, "in_sample": 1}}) == [
        "parameters.x.step: a grid needs a step (or choices) for every parameter",
        "max_drawdown: must be a fraction greater than 0 and at most 1 (0.25 is 25 %), got 2",
        "walk_forward.windows: must be between 1 and 100, got 0",
        "walk_forward.in_sample: must be a fraction between 0 and 1 (0.7: the first 70 % of each window chooses), got 1",
    ]
    assert problems({"parameters": {"x": {"choices": [1], "low": 1}, "y": {"choices": []}}}) == [
        "parameters.x: give either low, high (and step) or choices, not both",
        "parameters.y.choices: must list at least one value",
    ]
    assert problems({"parameters": {"x": {"low": "a", "high": 2, "step": 1}}}) == [
        "parameters['x'].low: expected a number, got 'a'",  # cattrs' (and the config's) form for a key
    ]
    big = {"parameters": {n: {"low": 1, "high": 100, "step": 1} for n in "abc"}}
    assert problems(big) == ["parameters: the grid holds 1,000,000 parameter sets, more than 100,000; "
                             "use larger steps, fewer choices, or search: tpe"]


def test_paths_the_strategy_lacks_are_named():
    sweep = parse_sweep({"parameters": {"x": {"set": ["buy.nope.fast", "sell.fast"], "choices": [1]},
                                        "y": {"set": ["buy.of.3"], "choices": [1]}}})
    assert StrategyTemplate(None, "sma-cross").check_paths(sweep) == [
        "parameters.x: cannot set buy.nope.fast in strategy sma-cross: the strategy has no buy.nope (add it to the config first)",
        "parameters.y: cannot set buy.of.3 in strategy sma-cross: the strategy has no buy.of (add it to the config first)",
    ]
    sweep = parse_sweep({"parameters": {"fast": {"low": 3, "high": 5, "step": 1},
                                        "slow": {"set": ["buy.slow"], "low": 20, "high": 21, "step": 0.5}}})
    assert StrategyTemplate(None, "sma-cross").check_paths(sweep) == [
        "parameters.fast: value 3 in strategy sma-cross: fast: unknown field (check its spelling)",
        "parameters.slow: value 20.0 in strategy sma-cross: buy.slow: expected a whole number, got 20.0",
    ]


def test_grid_values_stay_whole_or_exact_decimals():
    sweep = parse_sweep({"parameters": {"fast": {"set": ["buy.fast"], "low": 3, "high": 11, "step": 4},
                                        "bps": {"set": ["limit_offset_bps"], "low": -0.5, "high": 0.5, "step": 0.25}}})
    assert grid(sweep)[:5] == [{"fast": 3, "bps": D("-0.5")}, {"fast": 3, "bps": D("-0.25")}, {"fast": 3, "bps": D(0)},
                               {"fast": 3, "bps": D("0.25")}, {"fast": 3, "bps": D("0.5")}]
    settings, problem = StrategyTemplate(None, "sma-cross").build(sweep, {"fast": 7, "bps": D("-0.25")})
    assert problem is None and settings.limit_offset_bps == D("-0.25")


def setup(raw: dict):
    sweep = parse_sweep(raw)
    config = load_config(None, lab=True)
    settings = next(s for s in config.strategies if s.name == sweep.strategy)
    market, _ = lab_market(config, settings)
    return sweep, StrategyTemplate(None, sweep.strategy), market


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def grid_on_dask(dask_cluster):
    sweep, template, market = setup({**GRID, "parameters": {**GRID["parameters"],
                                                             "slow": {**GRID["parameters"]["slow"], "choices": [8, 12, 30]}}})
    executor = DaskCluster(CANDLES, dask_cluster)
    ticks: list[int] = []
    try:
        result = run_sweep(sweep, template, market, CANDLES, executor, ticks.append)
    finally:
        executor.client.close()
    return sweep, template, market, result, ticks


def test_walk_forward_chooses_in_sample_and_reports_out_of_sample(grid_on_dask):
    sweep, template, market, result, ticks = grid_on_dask
    assert sum(ticks) == planned(sweep) == (9 + 1) * 2  # the progress bar's total is met
    invalid = [t for t in result.trials if t.problem is not None]
    # fast 12 with slow 8 or 12: pre-flight refuses them (fast must be below slow); never run.
    assert {(t.params["fast"], t.params["slow"]) for t in invalid} == {(12, 8), (12, 12), (8, 8)}
    assert all("fast" in t.problem and t.outcome is None for t in invalid)
    cuts = windows(sweep, len(CANDLES))
    assert [(c.start, c.split, c.end) for c in cuts] == [(0, 1050, 1500), (1500, 2550, 3000)]
    for window in result.windows:
        mine = [t for t in result.trials if t.window == window.window.index and t.objective is not None]
        assert window.chosen.objective == max(t.objective for t in mine)
        # The chosen set, backtested on the out-of-sample candles only (after the split):
        settings, _ = template.build(sweep, window.chosen.params)
        direct = evaluate(Job(settings, market, window.window.split, window.window.end), CANDLES)
        assert window.out_of_sample == direct
        # ... and its in-sample figures came from the candles before the split.
        assert window.chosen.outcome == evaluate(Job(settings, market, window.window.start, window.window.split), CANDLES)
    oos = [w.out_of_sample.total_return for w in result.windows]
    assert result.out_of_sample_return() == pytest.approx((1 + oos[0]) * (1 + oos[1]) - 1)
    hm = heatmap(result)
    assert (hm.x, hm.y, hm.x_labels, hm.y_labels) == ("fast", "slow", ["4", "8", "12"], ["8", "12", "30"])
    assert hm.cells[0][2] is None and hm.cells[0][1] is None  # (fast 8 | 12, slow 8): invalid
    mean = sum(t.objective for t in result.trials if t.params == {"fast": 4, "slow": 30}) / 2
    assert hm.cells[2][0] == pytest.approx(mean)


def test_a_drawdown_bound_and_min_trades_keep_sets_from_being_chosen(grid_on_dask):
    sweep, _, _, result, _ = grid_on_dask
    outcome = next(t.outcome for t in result.trials if t.outcome is not None)
    bounded = attrs.evolve(sweep, max_drawdown=D(str(outcome.max_drawdown / 2)))
    value, why = score(bounded, outcome)
    assert value is None and why.startswith("max drawdown") and "above the bound" in why
    value, why = score(attrs.evolve(sweep, min_trades=outcome.trades + 1), outcome)
    assert value is None and f"fewer than min_trades {outcome.trades + 1}" in why
    assert score(sweep, outcome) == (outcome.sharpe, None)


def test_the_same_sweep_gives_the_same_result_on_the_local_pool_and_on_dask(grid_on_dask, dask_cluster):
    sweep, template, market, on_dask, _ = grid_on_dask
    pool = LocalPool(CANDLES, workers=2)
    try:
        on_pool = run_sweep(sweep, template, market, CANDLES, pool)
    finally:
        pool.close()
    a, b = document(on_dask, "sma-cross"), document(on_pool, "sma-cross")
    assert a.pop("executor") == "dask" and b.pop("executor") == "local"
    assert a == b
    assert [w["chosen"] for w in a["windows"]] == [w["chosen"] for w in b["windows"]]
    # TPE too: seeded, asked in batches of a fixed size and told in order, on any executor.
    tpe = parse_sweep({**GRID, "search": "tpe", "trials": 6, "batch": 3, "seed": 5,
                       "parameters": {"fast": {"set": ["buy.fast", "sell.fast"], "low": 2, "high": 10, "step": 1},
                                      "slow": {"set": ["buy.slow", "sell.slow"], "low": 14, "high": 40, "step": 2}}})
    executor = DaskCluster(CANDLES, dask_cluster)
    try:
        tpe_dask = document(run_sweep(tpe, template, market, CANDLES, executor), "sma-cross")
    finally:
        executor.client.close()
    pool = LocalPool(CANDLES, workers=2)
    try:
        tpe_pool = document(run_sweep(tpe, template, market, CANDLES, pool), "sma-cross")
    finally:
        pool.close()
    tpe_dask.pop("executor"), tpe_pool.pop("executor")
    assert tpe_dask == tpe_pool
    assert len(tpe_dask["trials"]) == 12 and len({json.dumps(t["params"]) for t in tpe_dask["trials"]}) > 3


def test_lab_sweep_from_the_command_line(tmp_path):
    (tmp_path / "sweep.yaml").write_text(json.dumps({**GRID, "max_drawdown": 0.5}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "supervisors.cli", "lab", "--sweep", "sweep.yaml", "--to", "2017-11-05T00:00:00Z",
               "--workers", "2", "--report", "out"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "Sweep: sma-cross on BTC/USD, 12 in-sample backtests of 6 parameter sets in 2 window(s) on local" in result.stdout
    assert "out-of-sample return, windows compounded:" in result.stdout
    assert "14/14" in result.stderr and "backtest" in result.stderr  # tqdm's bar reached its total
    report = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert report["executor"] == "local" and report["to"] == "2017-11-05T00:00:00Z" and len(report["trials"]) == 12
    assert all(isinstance(t["objective"], str) or t["objective"] is None for t in report["trials"])
    page = (tmp_path / "out" / "sweep.html").read_text()
    assert page.count('class="cell"') == 3 * 2 and 'id="heatmap"' in page
    (tmp_path / "bad.yaml").write_text("parameters: {fast: {set: [buy.fast], low: 1, high: 5, step: -1}}\n")
    bad = subprocess.run([*command[:4], "--strategy", "sma-cross", "--sweep", "bad.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "parameters.fast.step: must be greater than 0, got -1" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_same_sweep_on_a_local_ray_cluster(grid_on_dask):
    """Ray is optional (pip install -e ".[ray]"); where it is installed, a Ray cluster started
    for the test (ray.init(address="local")) gives the very result Dask gave."""
    pytest.importorskip("ray")
    from supervisors.sweep_executors import RayCluster

    sweep, template, market, on_dask, _ = grid_on_dask
    executor = RayCluster(CANDLES, "local")
    try:
        on_ray = run_sweep(sweep, template, market, CANDLES, executor)
    finally:
        executor.close()
    a, b = document(on_dask, "sma-cross"), document(on_ray, "sma-cross")
    assert (a.pop("executor"), b.pop("executor")) == ("dask", "ray")
    assert a == b


def test_a_sweep_where_every_set_fails_pre_flight_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "sweep.yaml").write_text(json.dumps({
        "strategy": "sma-cross", "search": "grid",
        "parameters": {"fast": {"set": ["buy.fast", "sell.fast"], "choices": [50, 60]},
                       "slow": {"set": ["buy.slow", "sell.slow"], "choices": [20, 30]}}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "supervisors.cli", "lab", "--sweep", "sweep.yaml", "--to", "2017-08-15T00:00:00Z",
               "--workers", "1", "--report", "out/sweep"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    assert "no parameter set can run: all 4 failed pre-flight (for instance fast=50 slow=20:" in result.stderr
    assert "drawdown" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nor an empty --report directory


def test_a_failed_sweep_leaves_no_report_directory_it_created(tmp_path):
    (tmp_path / "bad.yaml").write_text("parameters: {fast: {set: [buy.fast], low: 1, high: 5, step: 1}}\n")
    (tmp_path / "kept").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for report in ("new/deeper", "kept"):
        bad = subprocess.run([sys.executable, "-m", "supervisors.cli", "lab", "--sweep", "bad.yaml", "--strategy", "dip-buyer",
                              "--report", report], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
        assert bad.returncode == 2 and "buy.fast" in bad.stderr, bad.stderr
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "kept").is_dir()  # there before the run: left alone


def test_a_window_without_a_choice_says_why():
    from supervisors.sweep import SweepResult, Trial, Window, WindowResult, unchosen

    sweep = parse_sweep(GRID, "s.yaml")
    trials = [Trial(0, 0, {"fast": 4}, problem="fast must be below slow"), Trial(0, 1, {"fast": 8}, problem="x"),
              Trial(1, 0, {"fast": 4}, problem="fast must be below slow"), Trial(1, 1, {"fast": 8}, infeasible="0 trade(s)")]
    result = SweepResult(sweep, CANDLES, trials, [WindowResult(Window(i, 0, 1, 2), None, None) for i in (0, 1)], "local")
    assert unchosen(result, 0) == "every parameter set failed pre-flight"
    assert unchosen(result, 1) == "no parameter set in sample passed the drawdown or min_trades bound (1 failed pre-flight)"

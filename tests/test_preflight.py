"""Each pre-flight failure, with its exact message."""

from __future__ import annotations

from decimal import Decimal as D

import attrs
import pytest

from actors.messages import VenueFacts
from actors.strategy.breaker import BreakerSettings
from actors.strategy.preflight import preflight
from actors.strategy.rules import Change, SmaCross
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.markets import MarketRules

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=D("0.01"), lot_size=D("0.0001"), min_amount=D("0.001"),
    min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"),
)
GOOD = StrategySettings(
    name="s", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=D("100")),
    allocation=Allocation(quote=D("1000")), buy=SmaCross(5, 20, "up"), sell=SmaCross(5, 20, "down"),
)
FACTS = VenueFacts("sim", None, {"BTC/USD": MARKET}, {"USD": D("5000"), "BTC": D("1")}, {"BTC/USD": D("20000")})
ALLOCATED = {"USD": D("1000"), "BTC": D("0")}


def test_a_sane_strategy_passes():
    assert preflight(GOOD, FACTS, ALLOCATED) == []


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(sizing=Sizing()), "sizing: give exactly one of quote, base or percent, got none"),
        (dict(sizing=Sizing(quote=D("1"), base=D("1"))), "sizing: give exactly one of quote, base or percent, got quote and base"),
        (dict(sizing=Sizing(percent=D("150"))), "sizing.percent: must be at most 100, got 150"),
        (dict(sizing=Sizing(quote=D("-5"))), "sizing.quote: must be greater than 0, got -5"),
        (dict(allocation=Allocation()), "allocation: the strategy has no capital or inventory; set allocation.quote or allocation.base"),
        (dict(buy=None, sell=None), "triggers: no buy or sell trigger, no exit and no python strategy; add at least one"),
        (dict(python="no_such_module:Thing"), "python: cannot load 'no_such_module:Thing': ModuleNotFoundError: No module named 'no_such_module'"),
        (dict(python="actors.strategy.python:BuyTheDip", params={"dips": 2}),
         "python: actors.strategy.python:BuyTheDip could not be built with params ['dips']: TypeError: BuyTheDip.__init__() got an unexpected keyword argument 'dips'"),
        (dict(take_profit_pct=D("0")), "take_profit_pct: must be greater than 0 and at most 1000, got 0"),
        (dict(stop_loss_pct=D("100")), "stop_loss_pct: must be greater than 0 and below 100, got 100"),
        (dict(buy=SmaCross(20, 5)), "buy: fast and slow must satisfy 1 <= fast < slow <= 1000, got fast=20 slow=5"),
        (dict(sell=Change(D("0"), 3)), "sell: percent must be in [-90, 1000] and not 0, got 0"),
        (dict(sell=Change(D("2"), 0)), "sell: lookback must be between 1 and 1000 candles, got 0"),
        (dict(limit_offset_bps=D("501")), "limit_offset_bps: must be between -500 and 500, got 501"),
        (dict(ttl_seconds=59), "ttl_seconds: must be between 60 and 2592000, got 59"),
        (dict(cooldown_seconds=-1), "cooldown_seconds: must be between 0 and 2592000, got -1"),
        (dict(max_open_orders=0), "max_open_orders: must be between 1 and 100, got 0"),
        (dict(breaker=BreakerSettings(threshold=0)), "breaker.threshold: must be between 1 and 100, got 0"),
        (dict(breaker=BreakerSettings(cooldown_seconds=100, max_cooldown_seconds=10)),
         "breaker: need 1 <= cooldown_seconds <= max_cooldown_seconds <= 86400, got 100 and 10"),
        (dict(symbol="ETH/USD"), "market ETH/USD does not exist on sim"),
        (dict(sizing=Sizing(quote=D("5"))), "sizing.quote: 5 USD is below the market's minimum notional 10 USD"),
        (dict(sizing=Sizing(quote=D("2000"))), "sizing.quote: one buy of 2000 USD is more than the allocation 1000 USD"),
        (dict(sizing=Sizing(base=D("0.0005"))), "sizing.base: 0.0005 BTC is below the market's minimum amount 0.001 BTC"),
        (dict(sizing=Sizing(base=D("0.1"))), "sizing.base: one buy of 0.1 BTC costs 2000.00 USD, more than the allocation 1000 USD"),
    ],
)
def test_each_failure_says_what_to_change(changes, message):
    assert preflight(attrs.evolve(GOOD, **changes), FACTS, ALLOCATED) == [message]


def test_the_exchange_must_be_reachable_with_valid_credentials():
    facts = attrs.evolve(FACTS, connection_error="authentication failed: invalid API key")
    assert preflight(GOOD, facts, ALLOCATED) == ["exchange sim: authentication failed: invalid API key"]


def test_an_inactive_market_fails():
    facts = attrs.evolve(FACTS, markets={"BTC/USD": attrs.evolve(MARKET, active=False)})
    assert preflight(GOOD, facts, ALLOCATED) == ["market BTC/USD is not active on sim"]


def test_allocations_of_all_strategies_must_fit_the_balance():
    problems = preflight(GOOD, FACTS, {"USD": D("6000"), "BTC": D("2")})
    assert problems == [
        "allocations on sim exceed the account balance: 6000 USD allocated to all strategies, balance 5000 USD",
        "allocations on sim exceed the account balance: 2 BTC allocated to all strategies, balance 1 BTC",
    ]


def test_a_python_strategy_must_be_a_class_with_on_candle_checked_before_anything_is_called(tmp_path, monkeypatch):
    from actors.strategy.python import load

    (tmp_path / "user_strategies.py").write_text(
        "CALLS = []\n"
        "def helper(**params):\n    CALLS.append(('helper', params))\n"
        "class NoCandles:\n    def __init__(self, **params):\n        CALLS.append(('NoCandles', params))\n"
        "class Fine:\n    def __init__(self, n=1):\n        CALLS.append(('Fine', n))\n"
        "    def on_candle(self, candle, view):\n        return []\n"
        "LIMIT = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_strategies

    expected = "a class with an on_candle(candle, view) method, e.g. actors.strategy.python:BuyTheDip"
    assert load("os:system", {"command": "echo hi"}) == (None, f"python: os:system is a function, not a class; name {expected}")
    assert load("user_strategies:helper", {}) == (None, f"python: user_strategies:helper is a function, not a class; name {expected}")
    assert load("user_strategies:LIMIT", {}) == (None, f"python: user_strategies:LIMIT is a value of type int, not a class; name {expected}")
    assert load("user_strategies:NoCandles", {}) == (None, f"python: user_strategies:NoCandles has no on_candle method; name {expected}")
    assert load("user_strategies:a.b", {}) == (
        None, f"python: must look like package.module:ClassName ({expected}), got 'user_strategies:a.b'"
    )
    assert user_strategies.CALLS == []  # nothing it named was called
    instance, problem = load("user_strategies:Fine", {"n": 2})
    assert problem is None and user_strategies.CALLS == [("Fine", 2)]


def test_a_huge_figure_is_echoed_cut_to_eighty_characters(tmp_path):
    huge = D("9" * 401)
    [problem] = preflight(attrs.evolve(GOOD, sizing=Sizing(quote=huge)), FACTS, ALLOCATED)
    assert problem == f"sizing.quote: one buy of {'9' * 79}… USD is more than the allocation 1000 USD"
    [problem] = preflight(attrs.evolve(GOOD, ttl_seconds=10**500), FACTS, ALLOCATED)
    assert problem == f"ttl_seconds: must be between 60 and 2592000, got 1{'0' * 78}…"
    # From the command line too: `check` prints the same line.
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from supervisors.config import DEFAULT_CONFIG

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["strategies"][0]["sizing"] = {"quote": int("9" * 401)}
    config = tmp_path / "huge.yaml"
    config.write_text(yaml.safe_dump(raw, width=10_000))
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "supervisors.cli", "check", "-c", str(config)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(root)}, cwd=tmp_path)
    assert result.returncode == 1
    assert f"FAIL  sma-cross: sizing.quote: one buy of {'9' * 79}… USD is more than the allocation 8000 USD" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 200

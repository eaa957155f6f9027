"""Triggers with plain calls: each fires when its definition says, and only then."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.strategy.rules import (
    Combination,
    Grid,
    PriceCross,
    Rsi,
    SmaCross,
    make_trigger,
)
from exchange.candles import Candle
from supervisors.config import ConfigError, parse_config


def feed(spec, closes) -> list[bool]:
    trigger = make_trigger(spec)
    return [trigger.update(Candle(i, D(c), D(c), D(c), D(c), D(1))).fired for i, c in enumerate(closes)]


def test_ema_cross_fires_once_when_the_fast_average_crosses_up():
    closes = [10] * 10 + [9] * 5 + [12] * 5
    fired = feed(SmaCross(2, 5, "up", kind="ema_cross"), closes)
    assert fired.count(True) == 1 and fired.index(True) == 15


@given(st.lists(st.integers(min_value=1, max_value=1000), min_size=20, max_size=60))
def test_rsi_matches_its_definition(closes):
    period = 5
    trigger = make_trigger(Rsi(period, below=D(50)))
    values = [trigger.update(Candle(i, D(c), D(c), D(c), D(c), D(1))).inputs["rsi"] for i, c in enumerate(closes)]
    # Reference: Wilder's smoothing, written out plainly.
    changes = [b - a for a, b in zip(closes, closes[1:])]
    gain = sum(max(c, 0) for c in changes[:period]) / period
    loss = sum(max(-c, 0) for c in changes[:period]) / period
    expected = [None] * period + [100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)]
    for change in changes[period:]:
        gain = (gain * (period - 1) + max(change, 0)) / period
        loss = (loss * (period - 1) + max(-change, 0)) / period
        expected.append(100.0 if loss == 0 else 100 - 100 / (1 + gain / loss))
    assert [None if v is None else round(v, 4) for v in expected] == values


def test_rsi_above_fires_on_a_steady_rise():
    assert feed(Rsi(3, above=D(70)), [1, 2, 3, 4, 5]) == [False, False, False, True, True]


def test_price_cross_fires_on_the_crossing_candle_only():
    assert feed(PriceCross(D(100), "up"), [90, 99, 100, 120, 95, 101]) == [False, False, True, False, False, True]
    assert feed(PriceCross(D(100), "down"), [110, 100, 90, 105]) == [False, True, False, False]


def test_grid_fires_when_a_line_is_crossed_in_its_direction():
    # Lines at 100, 110, 120, 130, 140.
    assert feed(Grid(D(100), D(140), 5, "down"), [135, 133, 128, 121, 125, 95]) == [False, False, True, False, False, True]


def test_all_and_any_combine_and_keep_every_part_current():
    up, cross = PriceCross(D(100), "up"), PriceCross(D(50), "up")
    closes = [40, 60, 90, 110]
    assert feed(Combination((up, cross), "any"), closes) == [False, True, False, True]
    assert feed(Combination((up, cross), "all"), closes) == [False, False, False, False]
    assert feed(Combination((up,), "all"), closes) == [False, False, False, True]


def test_combinations_and_new_kinds_come_from_the_yaml(fast_raw):
    fast_raw["strategies"][0]["buy"] = {"kind": "all", "of": [
        {"kind": "rsi", "period": 14, "below": 30}, {"kind": "ema_cross", "fast": 5, "slow": 20, "direction": "up"}]}
    buy = parse_config(fast_raw).strategies[0].buy
    assert isinstance(buy, Combination) and buy.name == "all(rsi(14)<30, ema_cross(5,20,up))"
    fast_raw["strategies"][0]["buy"] = {"kind": "any", "of": [{"kind": "rsi", "period": 14, "blow": 30}]}
    with pytest.raises(ConfigError, match="blow"):
        parse_config(fast_raw)


def test_nested_problems_name_their_place():
    spec = Combination((Rsi(1, below=D(30)), Grid(D(5), D(1), 1)), "all")
    assert spec.problems() == [
        "all[0]: period must be between 2 and 1000, got 1",
        "all[1]: need 0 < low < high, got low=5 high=1",
        "all[1]: levels must be between 2 and 1000, got 1",
    ]

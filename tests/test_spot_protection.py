"""Spot protection: one OCO order list (a limit-maker take-profit and a stop-loss-limit)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from supervisors.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def raw_with(protection: dict | None, **strategy) -> dict:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["strategies"] = [dict(copy.deepcopy(raw["strategies"][0]), **strategy)]
    if protection is not None:
        raw["strategies"][0]["protection"] = protection
    return raw


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def test_a_spot_strategy_on_a_simulated_venue_may_have_protection():
    config = parse_config(raw_with({"take_profit_pct": 3, "stop_loss_pct": 2}))
    protection = config.strategies[0].protection
    assert protection is not None and protection.take_profit_pct == 3 and protection.stop_loss_pct == 2


def test_spot_protection_needs_both_legs_and_no_client_side_exit():
    problems = problems_of(raw_with({"take_profit_pct": 3}, stop_loss_pct=2))
    assert any(p.startswith("strategies[0].protection.stop_loss_pct: an OCO order list") for p in problems)
    assert any(p.startswith("strategies[0].stop_loss_pct: with protection") for p in problems)
    problems = problems_of(raw_with({"take_profit_pct": 3, "stop_loss_pct": 200}))
    assert any(p.startswith("strategies[0].protection.stop_loss_pct: must be above 0") for p in problems)


def ccxt_raw(exchange: str) -> dict:
    raw = raw_with({"take_profit_pct": 3, "stop_loss_pct": 2}, venue="cx")
    raw["venues"].append({"name": "cx", "kind": "ccxt", "exchange": exchange, "market_type": "spot"})
    return raw


def test_spot_protection_is_refused_on_a_ccxt_venue_without_oco_naming_why():
    problems = problems_of(ccxt_raw("kraken"))
    [problem] = [p for p in problems if p.startswith("strategies[0].protection:")]
    assert "OCO order list" in problem and "two separate sells would each lock the same coins" in problem
    assert "'kraken'" in problem or "kraken" in problem


def test_spot_protection_is_allowed_on_ccxt_binance_spot():
    try:
        parse_config(ccxt_raw("binance"))
    except ConfigError as error:
        assert not [p for p in error.problems if "protection" in p], error.problems

"""Config and pre-flight checks of a perpetual strategy (issue 13, review F8, F9, F11, F15):
each refusal names the field and the figures, with plain calls."""

from __future__ import annotations

import copy
from decimal import Decimal as D

import pytest
from test_perpetual_live import perpetual_config

from actors.messages import VenueFacts
from actors.strategy.preflight import preflight
from exchange.markets import MarketRules
from supervisors.config import ConfigError, config_warnings, liquidation_distance_pct, parse_config

S = "BTC/USDT:USDT"


def raw_config(tmp_path, **protection) -> dict:
    raw = perpetual_config(tmp_path, "http://127.0.0.1:1")
    if protection:
        raw["strategies"][0]["protection"] = protection
    return raw


def refused(raw) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, live=True)
    return error.value.problems


def test_an_invalid_market_type_is_the_only_error_of_its_venue_and_strategies(tmp_path):
    raw = raw_config(tmp_path)
    raw["venues"][0]["market_type"] = "future"
    assert refused(raw) == ["venues[0].market_type: must be one of spot, swap, got 'future'"]


def test_a_protection_that_protects_nothing_is_refused_naming_the_keys(tmp_path):
    problems = refused(raw_config(tmp_path, stop_limit_slippage_pct=0.5, gap_slippage_pct=1))
    assert problems == [
        "strategies[0].protection: protects nothing: set protection.stop_loss_pct (and protection.take_profit_pct), "
        "or remove protection"
    ]


def test_a_take_profit_alone_on_a_perpetual_must_say_so(tmp_path):
    problems = refused(raw_config(tmp_path, take_profit_pct=3))
    assert problems == [
        "strategies[0].protection.stop_loss_pct: a position's protection has a stop-loss: set "
        "protection.stop_loss_pct, or protection.without_stop_loss: true to rest the take-profit alone (the position "
        "then has no stop on the exchange)"
    ]
    config = parse_config(raw_config(tmp_path, take_profit_pct=3, without_stop_loss=True), live=True)
    assert config.strategies[0].protection.stop_loss_pct is None
    assert refused(raw_config(tmp_path, take_profit_pct=3, stop_loss_pct=2, without_stop_loss=True)) == [
        "strategies[0].protection.without_stop_loss: true contradicts protection.stop_loss_pct (2); remove one"
    ]


def test_a_stop_beyond_an_isolated_positions_liquidation_is_refused_with_the_distance(tmp_path):
    assert liquidation_distance_pct(20, D("0.004")) == D("4.6")
    raw = raw_config(tmp_path, take_profit_pct=30, stop_loss_pct=20)
    raw["venues"][0]["markets"][0].update(leverage=20, margin_mode="isolated")
    assert refused(raw) == [
        "strategies[0].protection.stop_loss_pct: a stop 20 % from the entry lies beyond the liquidation of an "
        "isolated position at leverage 20 on venue usdm, about 4.60 % (100 / leverage 20 minus the maintenance "
        "margin rate 0.4 %): the exchange would liquidate the position before the stop could act; set "
        "stop_loss_pct below 4.60 or lower the market's leverage"
    ]
    # The same stop at 4x lies inside the margin (25 % - 0.4 %).
    raw["venues"][0]["markets"][0]["leverage"] = 4
    assert config_warnings(parse_config(raw, live=True)) == []


def test_a_stop_beyond_a_cross_positions_own_margin_is_a_warning(tmp_path):
    raw = raw_config(tmp_path, take_profit_pct=30, stop_loss_pct=20)
    raw["venues"][0]["markets"][0].update(leverage=20, margin_mode="cross")
    [warning] = config_warnings(parse_config(raw, live=True))
    assert warning.startswith("strategies[0].protection.stop_loss_pct: a stop 20 % from the entry lies beyond the "
                              "liquidation distance of a position's own margin at leverage 20 (cross margin)")
    assert "about 4.60 %" in warning


def test_a_simulated_venue_uses_its_own_maintenance_margin_rate(tmp_path):
    from test_perpetual_shadow import perp_raw

    raw = perp_raw(tmp_path, protection={"take_profit_pct": 30, "stop_loss_pct": 9.5})
    raw["venues"][0]["markets"][0].update(leverage=10, margin_mode="isolated")
    raw["venues"][0]["maintenance_margin_rate"] = "0.01"
    [problem] = refused(raw)
    assert "about 9.00 % (100 / leverage 10 minus the maintenance margin rate 1 %)" in problem
    raw["strategies"][0]["protection"]["stop_loss_pct"] = 8.9
    parse_config(raw, live=True)


MARKET = MarketRules.for_symbol(
    S, tick_size=D("0.1"), lot_size=D("0.001"), min_amount=D("0.001"), min_notional=D("100"),
    maker_fee=D("0.0002"), taker_fee=D("0.0005"),
)


def facts(leverage: int) -> VenueFacts:
    return VenueFacts("usdm", None, {S: MARKET}, {"USDT": D(100000)}, {S: D("10000")}, leverage={S: D(leverage)})


def test_preflight_refuses_a_size_whose_initial_margin_exceeds_the_allocation(tmp_path):
    raw = raw_config(tmp_path)
    raw["strategies"][0]["sizing"] = {"base": 10}
    s = parse_config(raw, live=True).strategies[0]
    assert preflight(s, facts(5), {"USDT": D(5000)}) == [
        "sizing.base: one open of 10 BTC at the last price 10000 (100000.00 USDT notional) needs 20050.00 USDT of "
        "initial margin at leverage 5 with the worst-case fee, more than allocation.quote 5000 USDT: every open "
        "would be denied; lower the size, raise the allocation or the market's leverage"
    ]
    # At 25x the same size needs 4050 USDT: it fits.
    assert preflight(s, facts(25), {"USDT": D(5000)}) == []
    quoted = copy.deepcopy(raw)
    quoted["strategies"][0]["sizing"] = {"quote": 30000}
    [problem] = preflight(parse_config(quoted, live=True).strategies[0], facts(5), {"USDT": D(5000)})
    assert problem.startswith("sizing.quote: one open of 30000 USDT (30000.00 USDT notional) needs 6015.00 USDT")


async def test_a_cross_stop_beyond_the_positions_margin_is_a_config_warning_event_at_start(tmp_path):
    from test_perpetual_shadow import perp_raw
    from test_web import running

    raw = perp_raw(tmp_path, protection={"take_profit_pct": 30, "stop_loss_pct": 20}, candles=50)
    raw["venues"][0]["markets"][0]["leverage"] = 20
    async with running(raw) as (app, watch, client):
        await watch.until(lambda events: any(e.kind == "config_warning" for e in events))
    [warning] = [e for e in watch.events if e.kind == "config_warning"]
    assert warning.reason.startswith("strategies[0].protection.stop_loss_pct: a stop 20 % from the entry lies beyond")
    assert "(cross margin)" in warning.reason

"""Config loading: every problem is listed with its path; the default config is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from supervisors.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def default_raw() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value.problems


def test_the_embedded_default_is_the_top_level_config_and_is_valid():
    assert DEFAULT_CONFIG.read_text() == (ROOT / "config.yaml").read_text()
    config = load_config()
    assert len(config.strategies) >= 2
    assert all(s.mode == "shadow" for s in config.strategies)


def test_a_bad_value_names_its_path_and_what_is_expected():
    raw = default_raw()
    raw["venues"][0]["volume_share"] = -5
    assert problems_of(raw) == ["venues[0].volume_share: must be greater than 0 and at most 1, got -5"]


def test_every_structural_problem_is_listed_at_once():
    raw = default_raw()
    raw["strategies"][1]["sizng"] = 3
    raw["strategies"][1]["ttl_seconds"] = "soon"
    raw["strategies"][0]["buy"]["kind"] = "magic"
    del raw["venues"][0]["markets"][0]["tick_size"]
    assert sorted(problems_of(raw)) == sorted(
        [
            "strategies[1].sizng: unknown field (check its spelling)",
            "strategies[1].ttl_seconds: expected a whole number, got 'soon'",
            "strategies[0].buy: kind must be one of sma_cross, ema_cross, change, rsi, price_cross, grid, all, any, got 'magic'",
            "venues[0].markets[0].tick_size: is required",
        ]
    )


def test_every_problem_that_stops_the_process_is_listed_at_once():
    raw = default_raw()
    raw["strategies"][0]["venue"] = "nowhere"
    raw["strategies"][1]["name"] = "sma-cross"
    raw["venues"][0]["replay"]["BTC/USD"]["speed"] = 0
    raw["venues"][0]["markets"][0]["tick_size"] = 0
    assert problems_of(raw) == [
        "venues[0].markets[0].tick_size: must be greater than 0, got 0",
        "venues[0].replay.BTC/USD.speed: must be greater than 0 and at most 10000 candles per second, got 0",
        "strategies[0].venue: no venue is named 'nowhere' (venues: ['sim'])",
        "strategies[1].name: another strategy is already named 'sma-cross'",
    ]


def test_a_strategys_own_parameters_are_left_to_its_preflight():
    raw = default_raw()
    raw["strategies"][0]["sizing"]["quote"] = -5
    raw["strategies"][0]["max_open_orders"] = 0
    config = parse_config(raw)  # the process can start; that strategy will stay inactive
    assert config.strategies[0].max_open_orders == 0


def live_raw() -> dict:
    raw = default_raw()
    raw["venues"].append({
        "name": "binance", "kind": "ccxt", "exchange": "binance", "base_url": "http://127.0.0.1:8790",
        "api_key_env": "LL_KEY", "secret_env": "LL_SECRET",
    })
    raw["strategies"][0]["venue"] = "binance"
    raw["strategies"][0]["symbol"] = "BTC/USDT"
    raw["strategies"][0]["mode"] = "live"
    return raw


def test_live_mode_cannot_be_armed_from_the_yaml_alone():
    [problem] = problems_of(live_raw())
    assert problem == (
        "strategies[0].mode: strategy sma-cross is set to live but limitline was started without --live; "
        "it will not place real orders. Start with `limitline run --live` to arm it"
    )
    config = parse_config(live_raw(), live=True)
    assert config.venue("binance").kind == "ccxt"


def test_live_mode_needs_a_ccxt_venue():
    raw = default_raw()
    raw["strategies"][0]["mode"] = "live"
    assert problems_of(raw) == ["strategies[0].mode: live trading needs a ccxt venue; venue 'sim' is simulated"]


def test_a_secret_written_in_the_config_is_refused_without_repeating_it():
    raw = live_raw()
    raw["venues"][1]["secret"] = "hunter2-super-secret"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, live=True)
    assert caught.value.problems == [
        "venues[1].secret: secrets are never written in the config; put it in an environment variable "
        "and name that variable in secret_env, or use secrets_file"
    ]
    assert "hunter2" not in str(caught.value)


def test_a_live_strategy_needs_its_venue_to_name_credentials():
    raw = live_raw()
    del raw["venues"][1]["secret_env"]
    raw["venues"][1]["exchange"] = "nosuchexchange"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, live=True)
    assert caught.value.problems == [
        "venues[1].exchange: ccxt has no exchange 'nosuchexchange'",
        "strategies[0].mode: live trading on venue 'binance' needs credentials: name api_key_env and secret_env "
        "(environment variables), or secrets_file",
    ]


def test_shadow_strategies_on_a_ccxt_venue_need_no_credentials():
    raw = live_raw()
    raw["strategies"][0]["mode"] = "shadow"
    for key in ("api_key_env", "secret_env"):
        del raw["venues"][1][key]
    assert parse_config(raw).strategies[0].mode == "shadow"


def test_a_missing_file_and_bad_yaml_say_so(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.problems == ["the config file does not exist"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("venues: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.problems[0].startswith("config: not valid YAML: line")


def test_a_huge_value_is_echoed_cut_short():
    raw = default_raw()
    raw["strategies"][0]["sizing"]["quote"] = "9" * 5000 + "x"
    raw["strategies"][0]["mode"] = ["shadow"] * 1000
    raw["strategies"][0]["y" * 500] = 1
    quote, mode, unknown = sorted(problems_of(raw), key=lambda p: ("quote" not in p, "mode" not in p))
    assert quote == "strategies[0].sizing.quote: expected a number, got '" + "9" * 78 + "…"
    assert mode.startswith("strategies[0].mode: must be one of shadow, live, got ['shadow', 'shadow', ")
    assert mode.endswith("…") and len(mode) < 140
    assert unknown == "strategies[0]." + "y" * 79 + "…: unknown field (check its spelling)"


def test_a_wrong_container_gives_its_path_and_what_was_expected():
    raw = default_raw()
    raw["strategies"] = {"a": 1}
    raw["venues"][0]["markets"] = "BTC/USD"
    raw["venues"][0]["balances"] = ["USD", 1000]
    raw["status"] = None
    assert sorted(problems_of(raw)) == [
        "status: expected a mapping, got None",
        "strategies: expected a list, got {'a': 1}",
        "venues[0].balances: expected a mapping, got ['USD', 1000]",
        "venues[0].markets: expected a list, got 'BTC/USD'",
    ]
    raw = default_raw()
    raw["strategies"][0]["sizing"] = [100]
    raw["strategies"][1] = "sma-cross"
    raw["venues"][0]["replay"]["BTC/USD"] = ["bundled:btc_usd_1h_coinbase.csv"]
    raw["venues"][0]["markets"].append(["ETH/USD"])
    assert sorted(problems_of(raw)) == [
        "strategies[0].sizing: expected a mapping, got [100]",
        "strategies[1]: expected a mapping, got 'sma-cross'",
        "venues[0].markets[1]: expected a mapping, got ['ETH/USD']",
        "venues[0].replay['BTC/USD']: expected a mapping, got ['bundled:btc_usd_1h_coinbase.csv']",
    ]


def test_unknown_keys_that_are_not_text_are_listed_too():
    raw = default_raw()
    raw["strategies"][0][7] = "x"
    raw["strategies"][0]["zz"] = "x"
    assert problems_of(raw) == [
        "strategies[0].7: unknown field (check its spelling)",
        "strategies[0].zz: unknown field (check its spelling)",
    ]

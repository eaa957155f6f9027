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
            "strategies[0].buy: kind must be one of sma_cross, change, got 'magic'",
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


def test_live_mode_cannot_be_armed_from_the_yaml_alone():
    raw = default_raw()
    raw["strategies"][0]["mode"] = "live"
    [problem] = problems_of(raw)
    assert problem.startswith("strategies[0].mode: live trading needs a ccxt venue and `limitline run --live`")


def test_a_missing_file_and_bad_yaml_say_so(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.problems == ["the config file does not exist"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("venues: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.problems[0].startswith("config: not valid YAML: line")

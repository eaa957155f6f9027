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
        "status: expected a mapping, got null",
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


def ccxt_venue(**fields) -> dict:
    return {"name": "binance", "kind": "ccxt", "exchange": "binance", **fields}


@pytest.mark.parametrize("value, shown", [(float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan")])
def test_a_non_finite_number_is_refused_wherever_a_number_is_read(value, shown):
    raw = default_raw()
    raw["reconciler"]["interval_seconds"] = value
    raw["supervision"]["period_seconds"] = value
    raw["venues"][0]["replay"]["BTC/USD"]["speed"] = value
    raw["venues"][0]["volume_share"] = value
    raw["strategies"][0]["breaker"] = {"cooldown_seconds": value}
    raw["venues"].append(ccxt_venue(poll_seconds=value, rate_limit_per_second=value))
    assert sorted(problems_of(raw)) == sorted(
        f"{path}: expected a finite number, got {shown}"
        for path in (
            "reconciler.interval_seconds", "supervision.period_seconds", "venues[0].replay['BTC/USD'].speed",
            "venues[0].volume_share", "strategies[0].breaker.cooldown_seconds", "venues[1].poll_seconds",
            "venues[1].rate_limit_per_second",
        )
    )


def test_every_interval_lies_between_a_millisecond_and_thirty_days():
    raw = default_raw()
    raw["reconciler"]["interval_seconds"] = 0.0005
    raw["supervision"]["period_seconds"] = 3_000_000
    raw["venues"].append(ccxt_venue(poll_seconds=0.0001, timeout_seconds=0, never_placed_after_seconds=1e-9,
                                    rate_limit_per_second=5000))
    between = "must be between 0.001 (1 ms) and 2592000 (30 days) seconds, got"
    assert problems_of(raw) == [
        f"supervision.period_seconds: {between} 3e+06",
        f"reconciler.interval_seconds: {between} 0.0005",
        f"venues[1].poll_seconds: {between} 0.0001",
        f"venues[1].timeout_seconds: {between} 0",
        f"venues[1].never_placed_after_seconds: {between} 1e-09",
        "venues[1].rate_limit_per_second: must be greater than 0 and at most 1000 (one request a millisecond), got 5000",
    ]
    raw = default_raw()
    raw["reconciler"]["interval_seconds"] = 0.001  # the bounds themselves are fine
    raw["supervision"]["period_seconds"] = 2_592_000
    parse_config(raw)


def test_a_replay_file_is_checked_whole_and_its_start_must_lie_inside_it(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2020-01-01T00:00:00Z,1,2,1,2,5\n2020-01-01T01:00:00Z,1,x,1,2,5\n")
    raw = default_raw()
    raw["venues"][0]["replay"]["BTC/USD"]["data"] = str(bad)
    assert problems_of(raw) == [f"venues[0].replay.BTC/USD.data: {bad}:3: high 'x' is not a number"]
    raw = default_raw()
    raw["venues"][0]["replay"]["BTC/USD"]["start"] = "2019-10-17T09:00:00"  # the last candle, no zone: UTC
    assert parse_config(raw).venues[0].replay["BTC/USD"].start.tzinfo is not None
    raw["venues"][0]["replay"]["BTC/USD"]["start"] = "2019-10-17T10:00:00+01:00"  # the same moment
    parse_config(raw)
    raw["venues"][0]["replay"]["BTC/USD"]["start"] = "2019-10-17T09:00:01Z"
    assert problems_of(raw) == [
        "venues[0].replay.BTC/USD.start: 2019-10-17T09:00:01Z is after the data ends (last candle 2019-10-17T09:00:00Z); "
        "set an earlier start, or data that covers it"
    ]


def load_problems(path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_yaml_that_would_expand_without_bound_is_refused_before_it_is_built(tmp_path):
    import time

    bomb = tmp_path / "bomb.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    bomb.write_text("\n".join(levels) + "\nvenues: *a11\nstrategies: *a11\n")
    started = time.perf_counter()
    assert load_problems(bomb) == [
        "config: holds more than 100,000 values once its aliases (*name) are expanded; a config is far smaller: "
        "check its anchors (&name) and aliases"
    ]
    assert time.perf_counter() - started < 2
    looped = tmp_path / "loop.yaml"
    looped.write_text("a: &a [1, *a]\nvenues: *a\nstrategies: []\n")
    assert load_problems(looped) == [
        "config: an alias (*name) refers to a value that contains it; a config value cannot contain itself"
    ]
    deep = tmp_path / "deep.yaml"
    deep.write_text("venues: " + "[" * 5000 + "]" * 5000 + "\n")
    assert load_problems(deep) == ["config: is nested too deeply; a config has a few levels"]
    # Aliases within reason are fine: one trigger shared by two strategies.
    shared = default_raw()
    text = yaml.safe_dump(shared).replace("buy:\n    direction: up", "buy: &up\n    direction: up", 1)
    shared_path = tmp_path / "shared.yaml"
    shared_path.write_text(text)
    assert load_config(shared_path).strategies[0].buy is not None


def test_a_file_that_is_not_a_config_says_what_it_is(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"venues: []\n\xff\xfe\x00")
    assert load_problems(binary) == ["config: not UTF-8 text (byte 0xff at offset 11); save the config as UTF-8"]
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1 << 20) + "\n")
    assert load_problems(huge) == ["config: the file is larger than 1,048,576 bytes; a config is a few kilobytes"]
    number = tmp_path / "number.yaml"
    number.write_text("venues: []\nstrategies: []\nstore: " + "9" * 5000 + "\n")
    assert load_problems(number) == [
        "config: not valid YAML: line 3, column 8: a whole number too long to read (more than 4300 digits)"
    ]


def test_a_huge_or_self_containing_value_is_echoed_cut_short_and_quickly():
    import time

    looped: list = ["x"]
    looped.append(looped)
    wide = [["y"] * 1000] * 100_000  # 100 million items, shared
    raw = default_raw()
    raw["status"] = looped
    raw["reconciler"] = wide
    raw["strategies"][0]["mode"] = {"a" * 10_000: wide}
    started = time.perf_counter()
    problems = problems_of(raw)
    assert time.perf_counter() - started < 2
    assert sorted(problems) == [
        "reconciler: expected a mapping, got [['y', " + "'y', " * 14 + "'y…",
        "status: expected a mapping, got " + "['x', " * 13 + "[…",
        "strategies[0].mode: must be one of shadow, live, got {'" + "a" * 77 + "…",
    ]


def test_at_most_fifty_problems_are_listed_then_counted():
    raw = default_raw()
    for i in range(80):
        raw["strategies"][0][f"typo{i:02d}"] = 1
    problems = problems_of(raw)
    assert len(problems) == 51 and problems[-1] == "... and 30 more problems"


def test_the_lab_takes_a_live_strategy_without_arming_or_credentials():
    raw = live_raw()
    for key in ("api_key_env", "secret_env"):
        del raw["venues"][1][key]
    config = parse_config(raw, lab=True)
    assert config.strategies[0].mode == "live"
    assert problems_of(raw) and problems_of(live_raw())  # run and check still refuse it
    raw["strategies"][0]["venue"] = "sim"
    with pytest.raises(ConfigError, match="live trading needs a ccxt venue"):
        parse_config(raw, lab=True)  # never runs live anywhere: wrong in the Lab too


def test_a_key_given_twice_is_refused_with_its_path_and_lines(tmp_path):
    text = (DEFAULT_CONFIG.read_text()
            .replace("    allocation: {quote: 8000}\n", "    allocation: {quote: 1}\n    allocation: {quote: 8000}\n", 1)
            .replace("reconciler:\n", "reconciler:\n  interval_seconds: 1\n", 1))
    lines = text.splitlines()
    first = lines.index("    allocation: {quote: 1}") + 1
    reconciler = lines.index("reconciler:") + 2
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    assert load_problems(path) == [
        f"reconciler.interval_seconds: given twice (lines {reconciler} and {reconciler + 1}); YAML would keep only the "
        "last, silently; remove one",
        f"strategies[0].allocation: given twice (lines {first} and {first + 1}); YAML would keep only the last, silently; "
        "remove one",
    ]
    # A merge key is not a repetition: the keys beside it override the merged ones.
    merged = tmp_path / "merged.yaml"
    merged.write_text("x-base: &base {quote: 100}\n" + DEFAULT_CONFIG.read_text().replace(
        "    allocation: {quote: 8000}\n", "    allocation: {<<: *base, quote: 8000}\n", 1))
    with pytest.raises(ConfigError) as error:
        load_config(merged)
    assert error.value.problems == ["x-base: unknown field (check its spelling)"]


def test_values_are_echoed_as_yaml_writes_them_not_as_python_does(tmp_path):
    text = DEFAULT_CONFIG.read_text().replace("  interval_seconds:", "  interval_seconds: 2020-01-01\n  x_old:", 1)
    path = tmp_path / "values.yaml"
    rest = ("strategies:\n- name: a\n  venue: sim\n  symbol: BTC/USD\n  sizing: !!set {b, a}\n  ttl_seconds: !!binary aGVsbG8=\n"
            "  cooldown_seconds: 2020-01-01 10:00:00Z\n  max_open_orders: null\n  limit_offset_bps: true\n")
    path.write_text(text.split("strategies:")[0] + rest)
    problems = load_problems(path)
    for expected in (
        "reconciler.interval_seconds: expected a number, got 2020-01-01",
        "strategies[0].sizing: expected a mapping, got !!set {'a', 'b'}",
        "strategies[0].ttl_seconds: expected a whole number, got !!binary (5 bytes)",
        "strategies[0].cooldown_seconds: expected a whole number, got 2020-01-01T10:00:00+00:00",
        "strategies[0].max_open_orders: expected a whole number, got null",
        "strategies[0].limit_offset_bps: expected a number, got true",
    ):
        assert expected in problems, problems

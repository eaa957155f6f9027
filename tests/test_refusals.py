"""Bad input from the command line: a clear message naming the field or the file and row,
the right exit code, no traceback, and nothing written to the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fast_config_raw
from helpers import Lines

ROOT = Path(__file__).resolve().parents[1]
BIN = [sys.executable, "-m", "supervisors.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def limitline(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def write_config(tmp_path: Path, raw: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def refused(result: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "limitline.sqlite").exists()


def test_a_replay_file_that_is_not_csv_names_the_field_and_the_file(tmp_path):
    binary = tmp_path / "candles.csv"
    binary.write_bytes(bytes(range(255, -1, -1)) * 40)  # not text from its first byte
    raw = fast_config_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD"]["data"] = str(binary)
    config = write_config(tmp_path, raw)
    for command in ("run", "check"):
        refused(
            limitline(command, "-c", str(config), cwd=tmp_path),
            f"venues[0].replay.BTC/USD.data: {binary}:1: not UTF-8 text; a candle file is a CSV of UTF-8 text with "
            "the header timestamp,open,high,low,close,volume",
        )
    yaml_file = tmp_path / "notes.yaml"
    yaml_file.write_text("a: 1\n" * 10)
    raw["venues"][0]["replay"]["BTC/USD"]["data"] = str(yaml_file)
    refused(
        limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path),
        f"venues[0].replay.BTC/USD.data: {yaml_file}:1: the header must be timestamp,open,high,low,close,volume, got ['a: 1']",
    )
    nothing_written(tmp_path)


def test_a_replay_start_after_the_data_ends_is_refused(tmp_path):
    raw = fast_config_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD"]["start"] = "2030-01-01T00:00:00Z"
    refused(
        limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path),
        "venues[0].replay.BTC/USD.start: 2030-01-01T00:00:00Z is after the data ends (last candle 2019-10-17T09:00:00Z); "
        "set an earlier start, or data that covers it",
    )
    nothing_written(tmp_path)


def test_a_bad_report_directory_is_refused_before_the_backtest_runs(tmp_path):
    occupied = tmp_path / "report"
    occupied.write_text("a file")
    result = limitline("lab", "--strategy", "sma-cross", "--report", str(occupied), cwd=tmp_path)
    refused(result, f"limitline: --report {occupied}: is a file, not a directory; name a directory for report.json and report.html")
    assert "lab:" not in result.stderr  # no progress: the backtest never started
    result = limitline("lab", "--strategy", "sma-cross", "--report", str(occupied / "inside"), cwd=tmp_path)
    refused(result, f"--report {occupied / 'inside'}: a part of this path is a file, not a directory")


@pytest.fixture
def busy_port():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener.getsockname()[1]
    listener.close()


def test_a_status_port_in_use_is_refused_at_once(tmp_path, busy_port):
    raw = fast_config_raw(tmp_path)
    raw["status"]["port"] = busy_port
    refused(
        limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path, timeout=20),
        f"limitline: status.port: 127.0.0.1:{busy_port} is already in use by another program; set status.port to a "
        "free port, or to 0 to let limitline pick one",
    )
    nothing_written(tmp_path)


def test_a_bad_status_host_is_refused_at_once(tmp_path):
    raw = fast_config_raw(tmp_path)
    for host, message in (
        ("no-such-host.invalid", "limitline: status.host: cannot resolve no-such-host.invalid"),
        ("192.0.2.1", "limitline: status.host: cannot listen on 192.0.2.1:0"),  # TEST-NET: not this machine
    ):
        raw["status"]["host"] = host
        result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path, timeout=20)
        refused(result, message)
        assert "set status.host to an address of this machine" in result.stderr
        nothing_written(tmp_path)


def test_an_unwritable_store_is_refused_at_once(tmp_path):
    (tmp_path / "data").write_text("a file where a directory should be")
    raw = fast_config_raw(tmp_path)
    raw["store"] = str(tmp_path / "data" / "limitline.sqlite")
    result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path, timeout=20)
    refused(result, f"limitline: store {tmp_path / 'data' / 'limitline.sqlite'}: cannot create its lock file")
    assert "status at" not in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_store_directory_is_refused_at_once(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    raw = fast_config_raw(tmp_path)
    raw["store"] = str(readonly / "limitline.sqlite")
    try:
        result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path, timeout=20)
    finally:
        readonly.chmod(0o755)
    refused(result, f"limitline: store {readonly / 'limitline.sqlite'}: cannot create its lock file")


def test_a_small_yaml_alias_bomb_is_a_short_message_at_once(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nvenues: *a8\nstrategies: *a8\n")
    assert bomb.stat().st_size < 700  # 9 ** 9 values once expanded
    result = limitline("check", "-c", str(bomb), cwd=tmp_path, timeout=20)
    refused(result, "config: holds more than 100,000 values once its aliases (*name) are expanded")
    assert len(result.stderr) < 400


def test_non_finite_and_sub_millisecond_intervals_are_refused_with_their_path(tmp_path):
    raw = fast_config_raw(tmp_path)
    raw["reconciler"]["interval_seconds"] = float("inf")
    result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path)
    refused(result, "  reconciler.interval_seconds: expected a finite number, got inf")
    raw = fast_config_raw(tmp_path)
    raw["supervision"]["period_seconds"] = 0.0001
    result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path)
    refused(result, "  supervision.period_seconds: must be between 0.001 (1 ms) and 2592000 (30 days) seconds, got 0.0001")
    nothing_written(tmp_path)


def test_sighup_applies_the_edited_config_and_the_process_runs_on(fast_config_path, tmp_path):
    # SIGHUP reloads, as for any daemon (issue 14); SIGTERM and Ctrl-C stop in order.
    process = subprocess.Popen([*BIN, "run", "-c", str(fast_config_path)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        stderr, stdout = Lines(process.stderr), Lines(process.stdout)
        stderr.wait_for(r"status at http")
        stderr.wait_for(r"watching .*config.yaml for edits")
        process.send_signal(signal.SIGHUP)
        stderr.wait_for(r"SIGHUP: reading the config again")
        stdout.wait_for(r"config_unchanged .*no strategy changed")
        # Saved: the watcher applies it, no signal needed.
        raw = yaml.safe_load(fast_config_path.read_text())
        raw["strategies"][1]["ttl_seconds"] = 3600
        fast_config_path.write_text(yaml.safe_dump(raw))
        stdout.wait_for_all([r"config_applied .*changed dip-buyer \(ttl_seconds\)",
                             r"strategy_reconfigured +dip-buyer +\(restarting with the edited config: ttl_seconds\)"])
        stdout.wait_for(r"\bfill\b")  # still trading
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stderr.wait_for(r"stopped; the store is flushed")
    finally:
        if process.poll() is None:
            process.kill()


def live_config(tmp_path: Path) -> Path:
    raw = fast_config_raw(tmp_path)
    raw["venues"].append({"name": "binance", "kind": "ccxt", "exchange": "binance",
                          "api_key_env": "LL_NOT_SET_KEY", "secret_env": "LL_NOT_SET_SECRET"})
    raw["strategies"][0].update(venue="binance", symbol="BTC/USDT", mode="live")
    return write_config(tmp_path, raw)


def test_the_lab_backtests_a_live_strategy_as_configured_without_arming_anything(tmp_path):
    config = live_config(tmp_path)
    result = limitline("lab", "-c", str(config), "--strategy", "sma-cross", "--to", "2017-09-01T00:00:00Z",
                       "--report", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Strategy Lab: sma-cross on BTC/USDT" in result.stdout
    assert "sma-cross is a live strategy; the Lab backtests it as configured and never places an order" in result.stderr
    assert (tmp_path / "r" / "report.json").exists()
    # Running it is still armed twice.
    refused(limitline("run", "-c", str(config), cwd=tmp_path), "Start with `limitline run --live` to arm it")


def test_a_python_strategy_must_be_a_class_and_nothing_else_is_called(tmp_path):
    marker = tmp_path / "ran"
    raw = fast_config_raw(tmp_path)
    raw["strategies"][0].update(python="os:system", params={"command": f"touch {marker}"})
    raw["strategies"][1].update(python="subprocess:Popen", params={"args": ["touch", str(marker)]})
    result = limitline("check", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "FAIL  sma-cross: python: os:system is a function, not a class; name a class with an on_candle(candle, view) "
        "method, e.g. actors.strategy.python:BuyTheDip",
        "FAIL  dip-buyer: python: subprocess:Popen has no on_candle method; name a class with an on_candle(candle, view) "
        "method, e.g. actors.strategy.python:BuyTheDip",
    ]
    assert not marker.exists()


def test_a_close_below_one_tick_in_the_lab_is_a_blocked_decision_and_a_warning(tmp_path):
    rows = ["timestamp,open,high,low,close,volume"]
    closes = ["0.5"] * 5 + ["0.004", "0.002", "0.004", "0.001", "0.003"] * 4
    rows += [f"2020-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z,{c},{c},{c},{c},1000000" for i, c in enumerate(closes)]
    data = tmp_path / "pennies.csv"
    data.write_text("\n".join(rows) + "\n")
    result = limitline("lab", "--strategy", "dip-buyer", "--data", str(data), "--report", str(tmp_path / "r"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert ("signal(s) blocked because the limit price was below one tick (0.01 USD), first at the candle of "
            "2020-01-01T05:00:00Z") in result.stdout


async def test_a_close_below_one_tick_in_run_is_blocked_and_restarts_nothing(tmp_path):
    import trio
    from helpers import Watch, node

    from supervisors.app import App
    from supervisors.config import parse_config

    rows = ["timestamp,open,high,low,close,volume"]
    closes = ["0.5"] * 5 + ["0.004", "0.002", "0.004", "0.001", "0.003"] * 6
    rows += [f"2020-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z,{c},{c},{c},{c},1000000" for i, c in enumerate(closes)]
    data = tmp_path / "pennies.csv"
    data.write_text("\n".join(rows) + "\n")
    raw = fast_config_raw(tmp_path)
    # Lockstep: every candle waits for both strategies, so each is decided however slow
    # the machine (a free-running replay moves on while a strategy still waits for its
    # first reconciliation, and candles released before are not evaluated, by design).
    raw["venues"][0]["replay"]["BTC/USD"] = {"data": str(data), "speed": 50, "lockstep": True}
    raw["strategies"][0]["buy"] = {"kind": "change", "percent": -10, "lookback": 1}  # fires on the pennies
    raw["strategies"][0]["sizing"] = {"percent": 10}  # sized by the ledger: it must not divide by a price of 0
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: any(e.kind == "replay_finished" for e in events))
            await watch.until(lambda events: sum(e.kind == "evaluated" for e in events) >= 2 * len(closes))
            snapshot = app.snapshot()
            nursery.cancel_scope.cancel()
    blocked = [e for e in watch.of("blocked") if e.payload.get("below_tick")]
    assert {e.strategy for e in blocked} == {"sma-cross", "dip-buyer"}
    assert blocked[0].reason.startswith("price below one tick: close 0.00")
    assert watch.count("child_restarting") == 0 and watch.count("child_exited") == 0
    for name in ("strategy:sma-cross", "strategy:dip-buyer", "ledger"):
        assert node(snapshot, name)["incarnation"] == 1 and node(snapshot, name)["state"] == "running"


def test_a_sandbox_port_in_use_is_refused_at_once(tmp_path, busy_port):
    refused(
        limitline("sandbox", "--port", str(busy_port), cwd=tmp_path, timeout=20),
        f"limitline: --port: 127.0.0.1:{busy_port} is already in use by another program; choose another --port, "
        "or 0 for any free port",
    )


def test_ctrl_c_while_starting_stops_without_a_traceback(fast_config_path, tmp_path):
    """Wherever in the start the signal lands: a short message, exit 130 (not running yet)
    or 0 (stopped in order), never a traceback. Landing points are chosen by what the
    process has said so far (nothing yet; its first line; the line that it runs), not by
    waiting a fixed time."""
    outcomes = set()
    for after in (None, "limitline:", "running"):
        process = subprocess.Popen([*BIN, "run", "-c", str(fast_config_path)], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        said = []
        if after is not None:
            assert process.stderr is not None
            for line in process.stderr:
                said.append(line)
                if after in line:
                    break
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        stderr = "".join(said) + stderr
        assert "Traceback" not in stderr, (after, stderr)
        # Before the interpreter has installed its handler, the signal's default ends it
        # (-SIGINT, nothing said, nothing written yet).
        allowed = (0, 130, -signal.SIGINT) if after is None else (0, 130)
        assert process.returncode in allowed, (after, process.returncode, stderr)
        if process.returncode == 130:
            assert "limitline: interrupted while starting" in stderr, stderr
        outcomes.add(process.returncode)
    assert 0 in outcomes, outcomes  # once running, Ctrl-C is the orderly stop


#: The start of `limitline run`, with a Ctrl-C that lands where the exception it raises is
#: lost: code that clears any error (a C lookup, an ``except BaseException``) was running.
SWALLOWED = """
import os, signal, sys
sys.argv[0] = "limitline"
import supervisors.cli as cli
try:
    os.kill(os.getpid(), signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: the handler runs here
except BaseException:
    pass
sys.exit(cli.main(["run", "-c", sys.argv[1]]))
"""


def test_ctrl_c_whose_exception_is_lost_while_starting_still_stops_before_anything_runs(fast_config_path, tmp_path):
    """The landing point of a start that ran on, deaf to Ctrl-C, until the test's timeout
    (a full suite under load): the handler's SystemExit was raised into code that dropped
    it. The start checks what the handler saw before it runs anything."""
    result = subprocess.run([sys.executable, "-c", SWALLOWED, str(fast_config_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 130, result.stderr
    assert result.stderr.count("limitline: interrupted while starting; stopped before anything ran") == 1, result.stderr
    assert "Traceback" not in result.stderr and "running" not in result.stderr, result.stderr
    nothing_written(tmp_path)


def test_open_orders_of_a_strategy_the_config_no_longer_names_are_refused_at_start(tmp_path):
    from decimal import Decimal

    from actors.orders import Order, OrderState
    from actors.writer.core import Batch
    from exchange.records import Side
    from store.db import open_store, write_batch

    raw = fast_config_raw(tmp_path)
    connection = open_store(tmp_path / "limitline.sqlite")
    orders = {
        f"ll-gone-{i}": Order(f"ll-gone-{i}", "gone", "sim", "BTC/USD", Side.BUY, Decimal("100"), Decimal("1"), state, 0.0, 0.0)
        for i, state in enumerate((OrderState.OPEN, OrderState.PARTIALLY_FILLED, OrderState.FILLED))
    }
    write_batch(connection, Batch(orders=orders))
    connection.close()
    before = (tmp_path / "limitline.sqlite").read_bytes()
    result = limitline("run", "-c", str(write_config(tmp_path, raw)), cwd=tmp_path, timeout=30)
    refused(result, "open orders of strategies that are not in the config (gone: 2 (ll-gone-0, ll-gone-1))")
    assert "Put each strategy back in the config" in result.stderr
    assert (tmp_path / "limitline.sqlite").read_bytes() == before, "nothing written"


def test_an_empty_candle_file_is_named_empty(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    refused(limitline("lab", "--strategy", "sma-cross", "--data", "empty.csv", cwd=tmp_path),
            "limitline: empty.csv: the file is empty; ")
    assert not (tmp_path / "lab-report").exists()


def test_a_lab_start_after_the_data_names_the_datas_span(tmp_path):
    refused(limitline("lab", "--strategy", "sma-cross", "--from", "2030-01-01", cwd=tmp_path),
            "limitline: fewer than 2 candles between --from and --to: the data holds 20,111 candle(s), "
            "2017-07-01T11:00:00Z to 2019-10-17T09:00:00Z; choose --from and --to within it")
    assert not (tmp_path / "lab-report").exists()


def test_a_lab_on_cached_candles_of_another_symbol_warns(tmp_path):
    from exchange.candles import bundled_path

    cached = tmp_path / "cache" / "binance" / "ETH-USDT" / "1h.csv"
    cached.parent.mkdir(parents=True)
    cached.write_text("\n".join(bundled_path().read_text().splitlines()[:400]) + "\n")
    result = limitline("lab", "--strategy", "sma-cross", "--data", "binance:ETH/USDT:1h", "--cache", "cache",
                       "--report", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("lab: warning: --data binance:ETH/USDT:1h holds ETH/USDT candles and sma-cross trades BTC/USD: "
            "the backtest replays ETH/USDT's prices under BTC/USD's rules") in result.stderr

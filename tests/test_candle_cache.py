"""`limitline data download`: ccxt's real binance client pages fetch_ohlcv from the sandbox
over HTTP into the cache, resumes after an interruption, reports gaps and never writes a
forming candle; the Lab then reads the cache with --data exchange:symbol:timeframe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from exchange.candles import bundled_path, find_gaps, load_candles
from exchange.ccxt_adapter import make_client
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from supervisors import cli
from supervisors.candle_cache import DataSpec, download, iso, last_candle_ts, parse_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = DataSpec("binance", "BTC/USDT", "1h")


def holed_data(tmp_path: Path) -> tuple[Path, list]:
    """2,600 bundled candles with three missing after the 1,500th."""
    lines = bundled_path().read_text().splitlines()
    kept = [lines[0]] + [line for i, line in enumerate(lines[1:2601]) if i not in (1500, 1501, 1502)]
    path = tmp_path / "holed.csv"
    path.write_text("\n".join(kept) + "\n")
    return path, load_candles(path)


async def until_released(sandbox: Sandbox, count: int) -> None:
    while len(sandbox.dialect.closed["BTC/USDT"]) < count:
        await sandbox.wait_for_candle()


def test_data_specs_are_told_from_paths():
    assert parse_spec("binance:BTC/USDT:1h") == SPEC
    assert parse_spec("kraken:ETH/EUR:15m").path(Path("c")) == Path("c/kraken/ETH-EUR/15m.csv")
    assert parse_spec("binanceusdm:BTC/USDT:USDT:4h").path(Path("c")) == Path("c/binanceusdm/BTC-USDT_USDT/4h.csv")
    assert parse_spec("data/btc.csv") is None and parse_spec("C:/data/btc.csv") is None


async def test_download_pages_resumes_after_a_torn_line_and_reports_gaps(tmp_path, capsys):
    data, candles = holed_data(tmp_path)
    sandbox = Sandbox(SandboxSettings(data=str(data), speed=4000.0))
    cache = tmp_path / "cache"
    path = SPEC.path(cache)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        client = make_client("binance", base_url=url, timeout_ms=5000)
        await until_released(sandbox, 1200)
        # First run: up to the 1,100th candle (two pages of at most 1,000).
        first = await trio.to_thread.run_sync(
            lambda: download(client, SPEC, candles[0].ts, path, until=candles[1099].ts))
        assert (first.added, first.pages, first.resumed_after, first.gaps) == (1100, 2, None, [])
        assert load_candles(path) == candles[:1100]
        # A crash mid-write leaves a torn last line: it is cut off, and the run resumes after
        # the last whole candle.
        with path.open("a") as torn:
            torn.write("2017-08-16T15:00:00Z,4300.1,43")
        await until_released(sandbox, len(candles))
        code = await trio.to_thread.run_sync(lambda: cli.main([
            "data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--cache", str(cache), "--base-url", url]))
        nursery.cancel_scope.cancel()
    out = capsys.readouterr().out
    assert code == 0, out
    assert load_candles(path) == candles  # the same values, through ccxt and back
    assert f"data: binance:BTC/USDT:1h: {len(candles) - 1100:,} new candles" in out
    assert f"resumed after {iso(candles[1099].ts)}" in out
    after, before = candles[1499].ts, candles[1500].ts
    assert f"gap: no candles between {iso(after)} and {iso(before)} (3 missing; not filled in)" in out
    assert find_gaps(load_candles(path)) == [{"after": after, "before": before, "missing": 3}]
    assert last_candle_ts(path) == candles[-1].ts


async def test_a_forming_candle_is_never_written(tmp_path):
    """Candles on the server's clock (1 s long here), the forming one listed last by klines
    as Binance does: only candles whose second has ended are written."""
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=1.0, candle_seconds=1))
    spec = DataSpec("binance", "BTC/USDT", "1s")
    path = spec.path(tmp_path)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        client = make_client("binance", base_url=url, timeout_ms=5000)
        await sandbox.wait_for_candle()
        await sandbox.wait_for_candle()
        start = sandbox.now_ms() // 1000 - 30
        report = await trio.to_thread.run_sync(lambda: download(client, spec, start, path))
        now = sandbox.now_ms() // 1000
        nursery.cancel_scope.cancel()
    written = load_candles(path)
    assert report.added == len(written) >= 1
    assert all(c.ts + 1 <= now for c in written)
    assert report.forming >= 1  # the forming candle was listed, and left out


def test_the_lab_reads_the_cache_and_says_what_it_found(tmp_path):
    path = SPEC.path(tmp_path / "cache")
    path.parent.mkdir(parents=True)
    lines = bundled_path().read_text().splitlines()[:1201]
    path.write_text("\n".join(lines[:600] + lines[603:]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lab = [sys.executable, "-m", "supervisors.cli", "lab", "--strategy", "sma-cross", "--data", "binance:BTC/USDT:1h",
           "--cache", "cache", "--report", "r"]
    result = subprocess.run(lab, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "gaps in the data  1" in result.stdout
    missing = subprocess.run([*lab[:7], "binance:ETH/USDT:1h", "--cache", "cache"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, env=env)
    assert missing.returncode == 2
    assert ("--data binance:ETH/USDT:1h: no candles in the cache (cache/binance/ETH-USDT/1h.csv); download them first: "
            "limitline data download --exchange binance --symbol ETH/USDT --timeframe 1h --since 2024-01-01 --cache cache"
            ) in missing.stderr


def data_download(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "supervisors.cli", "data", "download", "--exchange", "binance",
                           "--symbol", "BTC/USDT", "--cache", "cache", *extra], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_span_that_cannot_hold_candles_is_refused_before_anything_is_written(tmp_path):
    backwards = data_download(tmp_path, "--since", "2017-09-01", "--until", "2017-08-01", "--base-url", "http://127.0.0.1:1")
    assert backwards.returncode == 2, backwards.stderr
    assert "--until: 2017-08-01T00:00:00Z is before --since 2017-09-01T00:00:00Z" in backwards.stderr
    future = data_download(tmp_path, "--since", "2999-01-01", "--base-url", "http://127.0.0.1:1")
    assert future.returncode == 2 and "--since: 2999-01-01T00:00:00Z is in the future" in future.stderr
    assert not (tmp_path / "cache").exists()


def test_an_unreachable_exchange_is_told_at_each_retry_and_given_up_on_soon(tmp_path):
    failed = data_download(tmp_path, "--since", "2017-07-01", "--base-url", "http://127.0.0.1:1")
    assert failed.returncode == 1, failed.stderr
    retries = [line for line in failed.stderr.splitlines() if line.startswith("data: load_markets failed")]
    assert [r.split("), ")[1] for r in retries] == [
        "retry 1 of 3; next try in 1 s", "retry 2 of 3; next try in 2 s", "retry 3 of 3; next try in 4 s"]
    assert "stopped before any candle" in failed.stderr and "Nothing was written" in failed.stderr
    assert "(gave up after 3 retries)" in failed.stderr and "resume" not in failed.stderr
    assert not (tmp_path / "cache").exists()


async def test_an_unknown_symbol_is_refused_and_leaves_no_file(tmp_path):
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=4000.0))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        await sandbox.wait_for_candle()
        result = await trio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "supervisors.cli", "data", "download", "--exchange", "binance", "--symbol", "BTC/USTD",
             "--since", "2017-07-01", "--cache", "cache", "--base-url", url], cwd=tmp_path, capture_output=True,
            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}))
        nursery.cancel_scope.cancel()
    assert result.returncode == 2, result.stderr
    assert "--symbol: binance lists no market 'BTC/USTD'; did you mean BTC/USDT?" in result.stderr
    assert "resume" not in result.stderr and not (tmp_path / "cache").exists()

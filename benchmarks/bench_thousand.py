"""A thousand strategies in one process: RSS over time, CPU while replaying and while idle.

Usage: python benchmarks/bench_thousand.py [--strategies 1000] [--candles 2000] [--speed 10000]
                                           [--idle-seconds 20]

Runs ``limitline run`` (shadow mode) as a separate process on a generated config: N
sma-cross strategies (fast/slow varied so they do not all act on the same candle) on the
default simulated venue and the bundled BTC/USD hourly candles, replayed as fast as the
strategies keep up (``speed`` is a ceiling; the replay waits for every strategy to decide a
candle before the next). It samples the process's RSS (``/proc/PID/status``) and CPU time
(``/proc/PID/stat``) every second, counts candle evaluations from the event log, and,
once the replay has ended, measures CPU while idle. It also measures ``/status`` size.

The baseline, measured in the same run, is one process with a single strategy: the ratio of
RSS per strategy tells what a strategy costs. Targets (issue 12): at most 300 MB RSS for
1,000 strategies, flat over the run; idle CPU under 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
#: The bundled data's first candle is 2017-07-01T11:00Z; each run starts this many
#: candles before its end so the replay ends by itself.
DATA_END = "2019-10-09T00:00:00Z"


def config(tmp: Path, strategies: int, candles: int, speed: float) -> Path:
    start = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.mktime(time.strptime(DATA_END, "%Y-%m-%dT%H:%M:%SZ")) - candles * 3600)
    )
    text = {
        "store": str(tmp / "bench.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 5},
        "venues": [{
            "name": "sim", "kind": "simulated", "balances": {"USD": 2000 * strategies, "BTC": 0}, "volume_share": 1,
            "markets": [{"symbol": "BTC/USD", "tick_size": 0.01, "lot_size": 0.00001, "min_amount": 0.0001,
                         "min_notional": 10, "maker_fee": 0.001, "taker_fee": 0.002}],
            "replay": {"BTC/USD": {"data": "bundled:btc_usd_1h_coinbase.csv", "speed": speed, "start": start, "lockstep": True}},
        }],
        "strategies": [
            {"name": f"s{i:04d}", "venue": "sim", "symbol": "BTC/USD", "allocation": {"quote": 2000},
             "sizing": {"quote": 100},
             "buy": {"kind": "sma_cross", "fast": 3 + i % 5, "slow": 12 + i % 17, "direction": "up"},
             "sell": {"kind": "sma_cross", "fast": 3 + i % 5, "slow": 12 + i % 17, "direction": "down"},
             "limit_offset_bps": -10, "ttl_seconds": 10800, "max_open_orders": 1}
            for i in range(strategies)
        ],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def evaluations(store: Path) -> tuple[int, int]:
    """(candle evaluations, replay_finished events) in the event log so far."""
    if not store.exists():
        return 0, 0
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
    try:
        rows = dict(connection.execute(
            "SELECT kind, COUNT(*) FROM events WHERE kind IN ('evaluated', 'blocked', 'replay_finished') GROUP BY kind"
        ).fetchall())
    except sqlite3.Error:
        return 0, 0
    finally:
        connection.close()
    return rows.get("evaluated", 0) + rows.get("blocked", 0), rows.get("replay_finished", 0)


def run(strategies: int, candles: int, speed: float, idle_seconds: float, quiet: bool = False) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        path = config(tmp, strategies, candles, speed)
        process = subprocess.Popen(
            [sys.executable, "-m", "supervisors.cli", "run", "-c", str(path)], cwd=tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        )
        assert process.stderr is not None
        url = None
        for line in process.stderr:
            if "status at " in line:
                url = line.split("status at ", 1)[1].split("/status", 1)[0]
                break
        os.set_blocking(process.stderr.fileno(), False)
        started = time.monotonic()
        samples: list[tuple[float, float, float, int]] = []
        ended_at = None
        try:
            while True:
                time.sleep(1.0)
                try:
                    process.stderr.read()  # keep the pipe drained
                except (TypeError, OSError):
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"limitline exited with {process.returncode}")
                done, ended = evaluations(tmp / "bench.sqlite")
                samples.append((time.monotonic() - started, rss_mb(process.pid), cpu_seconds(process.pid), done))
                if not quiet:
                    t, rss, cpu, n = samples[-1]
                    print(f"  t={t:6.1f}s rss={rss:7.1f} MB cpu={cpu:7.1f}s evaluations={n:,}", flush=True)
                if ended and ended_at is None:
                    ended_at = time.monotonic()
                    idle_cpu0 = cpu_seconds(process.pid)
                if ended_at is not None and time.monotonic() - ended_at >= idle_seconds:
                    idle_cpu = (cpu_seconds(process.pid) - idle_cpu0) / (time.monotonic() - ended_at)
                    break
            status_bytes = 0
            if url is not None:
                with urllib.request.urlopen(f"{url}/status", timeout=30) as response:
                    status_bytes = len(response.read())
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        replay = [s for s in samples if ended_at is None or s[0] <= ended_at - started]
        rss = [s[1] for s in replay]
        half = len(rss) // 2
        return {
            "strategies": strategies,
            "evaluations": samples[-1][3],
            "seconds": round(ended_at - started, 1) if ended_at else None,
            "rss_first_half_max_mb": round(max(rss[:half] or rss), 1),
            "rss_second_half_max_mb": round(max(rss[half:] or rss), 1),
            "rss_max_mb": round(max(s[1] for s in samples), 1),
            "replay_cpu_percent": round(100 * (replay[-1][2] - replay[0][2]) / max(replay[-1][0] - replay[0][0], 1e-9), 1),
            "idle_cpu_percent": round(100 * idle_cpu, 2),
            "status_bytes": status_bytes,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", type=int, default=1000)
    parser.add_argument("--candles", type=int, default=2000)
    parser.add_argument("--speed", type=float, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    print("baseline: 1 strategy")
    base = run(1, args.candles, args.speed, args.idle_seconds, quiet=True)
    print(json.dumps(base))
    print(f"{args.strategies} strategies")
    many = run(args.strategies, args.candles, args.speed, args.idle_seconds)
    print(json.dumps(many))
    per = (many["rss_max_mb"] - base["rss_max_mb"]) / max(args.strategies - 1, 1)  # type: ignore[operator]
    growth = many["rss_second_half_max_mb"] - many["rss_first_half_max_mb"]  # type: ignore[operator]
    print(f"RSS {many['rss_max_mb']} MB for {args.strategies} strategies ({many['rss_max_mb'] / base['rss_max_mb']:.2f}x "  # type: ignore[operator]
          f"the 1-strategy process, {per * 1000:.0f} KB per strategy); second half of the replay "
          f"{growth:+.1f} MB over the first; {many['evaluations']:,} evaluations in {many['seconds']} s; "
          f"idle CPU {many['idle_cpu_percent']} % (1 strategy: {base['idle_cpu_percent']} %); "
          f"/status {many['status_bytes']:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

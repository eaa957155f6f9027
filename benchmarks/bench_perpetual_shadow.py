"""A perpetual strategy through the real actors against a spot one, same run, same candles.

Usage: python benchmarks/bench_perpetual_shadow.py [--candles N]

Runs the whole process in-process (writer, ledger, connection, strategy, reconciler, a
sqlite store in a temporary directory) in shadow mode with a lockstep replay of the first
N bundled BTC/USD candles, twice:

1. spot: a simulated spot venue, an SMA-cross strategy buying and selling inventory;
2. perpetual: the same candles as ``BTC/USD:USD`` on a simulated swap venue, the same
   triggers as a long/short strategy with a take-profit and a stop-limit resting.

Prints the CPU time per candle of each (every thread of the process) and the perpetual's
ratio to the spot run's, with the orders each placed. Target: within 3x of spot per candle
(a perpetual places protective orders, and records its account's changes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from exchange.candles import bundled_path
from supervisors.app import App
from supervisors.config import parse_config


def config(tmp: Path, candles: int, perpetual: bool) -> dict[str, Any]:
    lines = bundled_path("btc_usd_1h_coinbase.csv").read_text().splitlines()[: candles + 1]
    data = tmp / "btc.csv"
    data.write_text("\n".join(lines) + "\n")
    symbol = "BTC/USD:USD" if perpetual else "BTC/USD"
    market: dict[str, Any] = {"symbol": symbol, "tick_size": 0.01, "lot_size": 0.001, "min_amount": 0.001,
                              "min_notional": 10, "maker_fee": 0.0002, "taker_fee": 0.0005}
    strategy: dict[str, Any] = {
        "name": "trend", "venue": "sim", "symbol": symbol, "allocation": {"quote": 5000}, "sizing": {"base": 0.5},
        "buy": {"kind": "sma_cross", "fast": 5, "slow": 20, "direction": "up"},
        "sell": {"kind": "sma_cross", "fast": 5, "slow": 20, "direction": "down"},
        "limit_offset_bps": -10, "ttl_seconds": 7200,
    }
    venue: dict[str, Any] = {"name": "sim", "kind": "simulated", "balances": {"USD": 20000}, "markets": [market],
                             "replay": {symbol: {"data": str(data), "speed": 50, "lockstep": True}}}
    if perpetual:
        market["leverage"] = 5
        venue["market_type"] = "swap"
        strategy.update(on_buy="long", on_sell="short", protection={"take_profit_pct": 3, "stop_loss_pct": 1.5})
    else:
        venue["balances"]["BTC"] = 0
    return {"store": str(tmp / "store.sqlite"), "status": {"port": 0}, "reconciler": {"interval_seconds": 0.5},
            "venues": [venue], "strategies": [strategy]}


async def run(raw: dict[str, Any], candles: int) -> tuple[float, int]:
    placed = evaluated = 0
    finished = trio.Event()

    def echo(event: Any) -> None:
        nonlocal placed, evaluated
        placed += event.kind == "order_placed"
        evaluated += event.kind == "evaluated"
        if evaluated >= candles - 1:
            finished.set()

    app = App(parse_config(raw), echo=echo)
    start = time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)
        await finished.wait()
        nursery.cancel_scope.cancel()
    return time.process_time() - start, placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=2000)
    candles = parser.parse_args().candles
    figures = {}
    for name, perpetual in (("spot", False), ("perpetual", True)):
        with tempfile.TemporaryDirectory() as tmp:
            figures[name] = trio.run(run, config(Path(tmp), candles, perpetual), candles)
    base = figures["spot"][0] / candles
    for name, (cpu, placed) in figures.items():
        per = cpu / candles
        print(f"{name:10s} {per * 1e6:8.0f} us CPU a candle  {placed:5d} orders placed  {per / base:4.2f}x spot")


if __name__ == "__main__":
    main()

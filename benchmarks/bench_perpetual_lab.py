"""The Lab on a perpetual strategy against the Lab on a spot one: same run, same candles.

Usage: python benchmarks/bench_perpetual_lab.py [--candles N] [--repeat R]

Runs the first N bundled BTC/USD candles (default: all of them) through:

1. the spot Lab (``supervisors.lab.Lab``), every bar, an SMA-cross strategy buying and
   selling inventory (the baseline);
2. the perpetual Lab (``supervisors.lab_perpetual.PerpetualLab``, always every bar): the
   same triggers as a long/short strategy with a take-profit and a stop-limit resting, on
   the same candles as ``BTC/USD:USD``.

Prints the best of R runs of each (microseconds per candle, candles per second) and the
perpetual's ratio to the spot run, with the orders each placed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_perpetual_shadow import config

from exchange.candles import bundled_path, load_candles
from exchange.markets import MarketRules
from supervisors.app import build_perpetual_exchange
from supervisors.config import parse_config
from supervisors.lab import Lab
from supervisors.lab_perpetual import PerpetualLab


def best(run: Any, repeat: int) -> tuple[float, int]:
    times, orders = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        orders = len(run().orders)
        times.append(time.perf_counter() - started)
    return min(times), orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    count = args.candles or len(load_candles(bundled_path("btc_usd_1h_coinbase.csv")))
    with tempfile.TemporaryDirectory() as tmp:
        spot = parse_config(config(Path(tmp), count, perpetual=False), lab=True)
        perp = parse_config(config(Path(tmp), count, perpetual=True), lab=True)
        candles = load_candles(spot.venues[0].replay["BTC/USD"].data)
        m = spot.venues[0].markets[0]
        rules = MarketRules.for_symbol(m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount,
                                       min_notional=m.min_notional, maker_fee=m.maker_fee, taker_fee=m.taker_fee)
        spot_time, spot_orders = best(
            lambda: Lab(spot.strategies[0], rules, candles, volume_share=spot.venues[0].volume_share,
                        keep_events=False).run(), args.repeat)
        perp_time, perp_orders = best(
            lambda: PerpetualLab(perp.strategies[0], build_perpetual_exchange(perp.venues[0]), candles,
                                 keep_events=False).run(), args.repeat)
    n = len(candles)
    for name, seconds, orders in (("spot Lab (every bar)", spot_time, spot_orders),
                                  ("perpetual Lab", perp_time, perp_orders)):
        print(f"{name:22s} {n:,} candles: {seconds * 1e6 / n:7.1f} us a candle, {n / seconds:9,.0f} candles/s, "
              f"{orders:,} orders")
    print(f"ratio (perpetual / spot, per candle): {perp_time / spot_time:.2f}x")


if __name__ == "__main__":
    main()

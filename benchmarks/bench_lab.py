"""The Lab's speed against backtesting.py, on the same bars and the same strategy, same run.

Usage: python benchmarks/bench_lab.py [--bars 1000000]
(backtesting.py is a benchmark-only dependency: pip install backtesting)

Bars: the bundled BTC/USD 1h candles stitched forward and back (each copy scaled to start
where the last one ended) until there are ``--bars``. Strategy: SMA 10/30 crossover; a buy
limit order 10 bp above the close when the fast average crosses up, a sell limit 10 bp
below when it crosses down. Prints bars per second of each and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.strategy.rules import SmaCross  # noqa: E402
from actors.strategy.settings import Allocation, Sizing, StrategySettings  # noqa: E402
from exchange.candles import Candle, bundled_path, load_candles  # noqa: E402
from exchange.markets import MarketRules  # noqa: E402
from supervisors.lab import Lab  # noqa: E402

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"), min_amount=Decimal("0.00001"),
    min_notional=Decimal("10"), maker_fee=Decimal("0.001"), taker_fee=Decimal("0.001"),
)


def stitched(count: int) -> list[Candle]:
    base = load_candles(bundled_path())
    out: list[Candle] = []
    forward = True
    while len(out) < count:
        segment = base if forward else base[::-1]
        scale = out[-1].close / segment[0].open if out else Decimal(1)
        start = out[-1].ts + 3600 if out else base[0].ts
        for i, c in enumerate(segment):
            if len(out) == count:
                break
            out.append(Candle(start + 3600 * i, (c.open * scale).quantize(Decimal("0.01")), (c.high * scale).quantize(Decimal("0.01")),
                              (c.low * scale).quantize(Decimal("0.01")), (c.close * scale).quantize(Decimal("0.01")), c.volume))
        forward = not forward
    return out


def run_lab(candles: list[Candle], fast: bool) -> tuple[float, int]:
    settings = StrategySettings(
        name="bench", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=Decimal(1000)),
        allocation=Allocation(quote=Decimal(10_000_000)), buy=SmaCross(10, 30, "up"), sell=SmaCross(10, 30, "down"),
        limit_offset_bps=Decimal(-10), ttl_seconds=10 * 24 * 3600, max_open_orders=1,
    )
    start = time.perf_counter()
    result = Lab(settings, MARKET, candles, keep_events=False, fast=fast).run()
    return time.perf_counter() - start, len(result.fills)


def run_backtesting(candles: list[Candle]) -> tuple[float, int]:
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    frame = pd.DataFrame(
        {"Open": [float(c.open) for c in candles], "High": [float(c.high) for c in candles],
         "Low": [float(c.low) for c in candles], "Close": [float(c.close) for c in candles],
         "Volume": [float(c.volume) for c in candles]},
        index=pd.to_datetime([c.ts for c in candles], unit="s"),
    )

    class SmaCross1030(Strategy):
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 30)

        def next(self) -> None:
            close = self.data.Close[-1]
            if crossover(self.fast, self.slow):
                self.buy(limit=close * 1.001, size=0.01)
            elif crossover(self.slow, self.fast) and self.position:
                self.sell(limit=close * 0.999, size=0.01)

    start = time.perf_counter()
    stats = Backtest(frame, SmaCross1030, cash=10_000_000, commission=0.001, finalize_trades=True).run()
    return time.perf_counter() - start, int(stats["# Trades"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_000_000)
    args = parser.parse_args()
    candles = stitched(args.bars)
    step_seconds, step_fills = run_lab(candles, fast=False)
    fast_seconds, fast_fills = run_lab(candles, fast=True)
    bt_seconds, bt_trades = run_backtesting(candles)
    n = len(candles)
    bt_rate = n / bt_seconds
    print(f"bars: {n:,} (BTC/USD 1h stitched), SMA 10/30 crossover, limit orders 10 bp through the close")
    print(f"limitline Lab, every bar  {n / step_seconds:12,.0f} bars/s  ({step_seconds:.1f} s, {step_fills} fills)  {n / step_seconds / bt_rate:.2f}x")
    print(f"limitline Lab, fast path  {n / fast_seconds:12,.0f} bars/s  ({fast_seconds:.1f} s, {fast_fills} fills)  {n / fast_seconds / bt_rate:.2f}x")
    print(f"backtesting.py            {bt_rate:12,.0f} bars/s  ({bt_seconds:.1f} s, {bt_trades} trades)")
    print("target: >= 10x backtesting.py")


if __name__ == "__main__":
    main()

"""The Lab's speed against backtesting.py and vectorbt: the same bars, the same strategy, one run.

Usage: python benchmarks/bench_lab.py [--bars 1000000]
(backtesting.py and vectorbt are benchmark-only dependencies: pip install -e ".[bench]")

Bars: the bundled BTC/USD 1h candles stitched forward and back (each copy scaled to start
where the last one ended) until there are ``--bars``.

Strategy, written the way each library's careful users would write it:
SMA 10/30 crossover on the close; when the fast average crosses up and nothing is held, a
buy limit order 10 bp above the close for 1,000 USD; when it crosses down and something is
held, a sell limit order 10 bp below the close for all of it. One position at a time.
Fees 0.1 % (maker and taker alike, so every engine charges the same).

- limitline Lab: the strategy as a config says it (``buy``/``sell`` sma_cross 10/30,
  ``limit_offset_bps: -10``, ``max_open_orders: 1``; a sell sells everything held). Its
  fill rules are the simulated exchange's: an order crossing the market fills at once as
  a taker (at the last trade, at most 10 % of the last candle's volume), the rest rests
  and fills when the market trades through it (at most 10 % of a candle's volume). Run
  stepping every bar and on the fast path (the default).
- backtesting.py: the fair strategy (:func:`backtesting_strategy`): a new cross cancels
  the stale unfilled orders, and it buys only when flat and sells only when long.
- vectorbt: ``Portfolio.from_order_func`` with the Lab's limit-order rules written as a
  numba order function (:func:`vectorbt_order_func`); the averages and crosses are
  computed with numpy first. Timed after a warm-up run that compiles it (the compile time
  is printed apart).

Timed for each, in CPU seconds of this process (every engine runs on one thread; the
machine the figures come from is shared, and wall time would count other work's turns as
theirs), the best of ``--repeat`` runs: from the bars already in memory (for the Lab, the
columns ``limitline lab`` reads a candle file into, a :class:`CandleSeries` of exact decimal
digits; a pandas frame of floats for the others) to the finished backtest, signals
included. Prints bars per second, fills, and the ratios to the others.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.strategy.rules import SmaCross  # noqa: E402
from actors.strategy.settings import Allocation, Sizing, StrategySettings  # noqa: E402
from exchange.candles import Candle, CandleSeries, bundled_path, load_candles  # noqa: E402
from exchange.markets import MarketRules  # noqa: E402
from supervisors.lab import Lab  # noqa: E402

#: Each engine's time is the CPU time of this process (every engine here runs on one
#: thread): the machine is shared, and wall time counted other work's turns as theirs.
clock = time.process_time

FEE = 0.001
OFFSET = 0.001  # 10 bp through the close
QUOTE_SIZE = 1000.0  # USD per buy
VOLUME_SHARE = 0.1
TTL_BARS = 240  # 10 days of 1h bars
CASH = 10_000_000.0

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"), min_amount=Decimal("0.00001"),
    min_notional=Decimal("10"), maker_fee=Decimal(str(FEE)), taker_fee=Decimal(str(FEE)), fee_in="quote",
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


def series_of(candles: list[Candle]) -> CandleSeries:
    """The candles in the columns the Lab reads files into (:func:`exchange.candles.read_candles`
    gives a :class:`CandleSeries`; ``limitline lab`` runs on one): each value's digits and
    exponent, exactly."""
    columns = []
    for name in ("open", "high", "low", "close", "volume"):
        digits, exponents = [], []
        for c in candles:
            value = getattr(c, name)
            exponent = value.as_tuple().exponent
            digits.append(int(value.scaleb(-exponent)))
            exponents.append(exponent)
        columns.append((np.array(digits, dtype=np.int64), np.array(exponents, dtype=np.int8)))
    return CandleSeries(np.array([c.ts for c in candles], dtype=np.int64), tuple(columns))


# --------------------------------------------------------------- limitline Lab


def lab_settings(offset_bps: int = -10) -> StrategySettings:
    return StrategySettings(
        name="bench", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=Decimal(int(QUOTE_SIZE))),
        allocation=Allocation(quote=Decimal(int(CASH))), buy=SmaCross(10, 30, "up"), sell=SmaCross(10, 30, "down"),
        limit_offset_bps=Decimal(offset_bps), ttl_seconds=TTL_BARS * 3600, max_open_orders=1,
    )


def run_lab(candles: CandleSeries, fast: bool, offset_bps: int = -10) -> tuple[float, int, float, int]:
    start = clock()
    result = Lab(lab_settings(offset_bps), MARKET, candles, volume_share=Decimal(str(VOLUME_SHARE)), keep_events=False,
                 fast=fast).run()
    return clock() - start, len(result.fills), result.equity[-1][1], result.visited


# ---------------------------------------------------------------- backtesting.py


def backtesting_strategy():
    """The fair backtesting.py strategy: stale unfilled orders cancelled on a new cross, one
    position at a time (``size=0.01``: 1 % of equity, backtesting.py's fractional sizing)."""
    from backtesting import Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class FairSmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 30)

        def next(self) -> None:
            close = self.data.Close[-1]
            if crossover(self.fast, self.slow):
                for order in self.orders:  # stale, unfilled
                    order.cancel()
                if not self.position:
                    self.buy(limit=close * (1 + OFFSET), size=0.01)
            elif crossover(self.slow, self.fast):
                for order in self.orders:
                    order.cancel()
                if self.position:
                    self.sell(limit=close * (1 - OFFSET), size=self.position.size)

    return FairSmaCross


def run_backtesting(frame) -> tuple[float, int, float]:
    from backtesting import Backtest

    start = clock()
    stats = Backtest(frame, backtesting_strategy(), cash=CASH, commission=FEE, finalize_trades=True).run()
    return clock() - start, 2 * int(stats["# Trades"]), float(stats["Equity Final [$]"])


# ---------------------------------------------------------------------- vectorbt


def vectorbt_order_func():
    """The Lab's limit-order rules as a numba order function for ``from_order_func``
    (flexible: at most two orders a bar, the resting order's fill, then the new decision).

    ``state``: [side (1 buy, -1 sell, 0 none), limit price, amount left, bar placed]."""
    from numba import njit
    from vectorbt.portfolio import nb
    from vectorbt.portfolio.enums import NoOrder

    @njit
    def order_func(c, close, low, high, volume, up, down, state):
        i, col = c.i, c.from_col
        if c.call_idx == 0:
            # The resting order trades against this bar first (the market through its price),
            # at its own price, at most the share of the bar's volume (maker).
            side, price, left, placed = state[0], state[1], state[2], state[3]
            if side != 0 and placed < i:
                through = low[i] < price if side > 0 else high[i] > price
                room = volume[i] * 0.1
                if through and room > 0:
                    amount = min(left, room)
                    state[2] = left - amount
                    if state[2] <= 1e-12:
                        state[0] = 0
                    return col, nb.order_nb(size=amount * side, price=price, fees=0.001)
            return col, NoOrder
        if c.call_idx == 1:
            # Deciding on this bar's close: expire a stale order, then act on a cross.
            if state[0] != 0 and i - state[3] >= 240:
                state[0] = 0
            held = c.last_position[col]
            side = 0
            if up[i] and held == 0 and state[0] == 0:
                side, price = 1, close[i] * 1.001
                amount = 1000.0 / price
            elif down[i] and held > 0 and state[0] == 0:
                side, price = -1, close[i] * 0.999
                amount = held
            if side == 0:
                return -1, NoOrder
            # It crosses the last trade (the close): taken at once at the close (taker), at
            # most the share of this bar's volume; the rest rests at its price.
            taken = min(amount, volume[i] * 0.1)
            state[0], state[1], state[2], state[3] = side, price, amount - taken, i
            if state[2] <= 1e-12:
                state[0] = 0
            if taken > 0:
                return col, nb.order_nb(size=taken * side, price=close[i], fees=0.001)
            return -1, NoOrder
        return -1, NoOrder

    return order_func


def crosses(close: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the fast simple average crosses the slow one up and down (previous <= 0 < now,
    previous >= 0 > now: the Lab's definition)."""
    sums = np.concatenate(([0.0], np.cumsum(close)))
    diff = np.full(len(close), np.nan)
    diff[slow - 1:] = (sums[slow:] - sums[slow - fast:-fast]) / fast - (sums[slow:] - sums[:-slow]) / slow
    previous, now = diff[:-1], diff[1:]
    up = np.zeros(len(close), dtype=np.bool_)
    down = np.zeros(len(close), dtype=np.bool_)
    up[1:] = (previous <= 0) & (now > 0)  # NaN compares False: no cross before both are defined
    down[1:] = (previous >= 0) & (now < 0)
    return up, down


def run_vectorbt(frame, order_func) -> tuple[float, int, float]:
    import vectorbt as vbt

    start = clock()
    close = frame["Close"].to_numpy()
    up, down = crosses(close, 10, 30)
    state = np.zeros(4)
    pf = vbt.Portfolio.from_order_func(
        frame["Close"], order_func, close, frame["Low"].to_numpy(), frame["High"].to_numpy(), frame["Volume"].to_numpy(),
        up, down, state, flexible=True, init_cash=CASH, max_orders=2 * len(close),
    )
    orders = pf.orders.count()
    final = float(pf.final_value())
    return clock() - start, int(orders), final


# -------------------------------------------------------------------------- run


def frame_of(candles: list[Candle]):
    import pandas as pd

    return pd.DataFrame(
        {"Open": [float(c.open) for c in candles], "High": [float(c.high) for c in candles],
         "Low": [float(c.low) for c in candles], "Close": [float(c.close) for c in candles],
         "Volume": [float(c.volume) for c in candles]},
        index=pd.to_datetime([c.ts for c in candles], unit="s"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="time each engine this many times; the best counts")
    parser.add_argument("--skip", nargs="*", default=[], choices=["every-bar", "backtesting"],
                        help="leave these out (for quick runs while working on the fast path)")
    args = parser.parse_args()
    bars = stitched(args.bars)
    frame = frame_of(bars)
    candles = series_of(bars)  # as `limitline lab` holds a file's candles
    assert list(candles[:1000]) == bars[:1000] and candles[-1] == bars[-1]
    del bars
    n = len(candles)

    order_func = vectorbt_order_func()
    compile_start = clock()
    run_vectorbt(frame.iloc[:2000], order_func)  # numba compiles on the first call
    compile_seconds = clock() - compile_start

    def best(run):  # the fastest of --repeat runs (each gives the same fills)
        return min((run() for _ in range(max(1, args.repeat))), key=lambda result: result[0])

    rows: list[tuple[str, float, int, float]] = []
    if "every-bar" not in args.skip:
        rows.append(("limitline Lab, every bar", *best(lambda: run_lab(candles, fast=False))[:3]))
    rows.append(("limitline Lab, fast path", *best(lambda: run_lab(candles, fast=True))[:3]))
    if "backtesting" not in args.skip:
        rows.append(("backtesting.py (fair strategy)", *best(lambda: run_backtesting(frame))))
    rows.append(("vectorbt from_order_func", *best(lambda: run_vectorbt(frame, order_func))))

    rates = {name: n / seconds for name, seconds, _, _ in rows}
    vbt_rate = rates["vectorbt from_order_func"]
    bt_rate = rates.get("backtesting.py (fair strategy)")
    print(f"bars: {n:,} (BTC/USD 1h stitched), SMA 10/30 crossover, limit orders 10 bp through the close, fees 0.1 %; "
          f"CPU time, best of {max(1, args.repeat)}")
    print(f"{'':32} {'bars/s':>12} {'cpu s':>8} {'fills':>7} {'final equity':>14} {'vs backtesting.py':>18} {'vs vectorbt':>12}")
    for name, seconds, fills, final in rows:
        vs_bt = f"{rates[name] / bt_rate:.2f}x" if bt_rate else "-"
        print(f"{name:32} {rates[name]:12,.0f} {seconds:8.2f} {fills:7,} {final:14,.2f} {vs_bt:>18} {rates[name] / vbt_rate:11.2f}x")
    print(f"(vectorbt's numba compile, done before timing: {compile_seconds:.1f} s)")
    print("target: the Lab's fast path >= vectorbt's bars/s, with fills identical to stepping every bar")
    if "every-bar" not in args.skip:
        # The same strategy with orders resting 10 bp on the passive side (maker fills): where
        # the fast path's jumps to the next candle that can fill an order pay off.
        print("\nresting orders (limit_offset_bps: +10), the Lab both ways:")
        for name, fast in (("every bar", False), ("fast path", True)):
            seconds, fills, final, visited = best(lambda: run_lab(candles, fast=fast, offset_bps=10))
            print(f"limitline Lab, {name:17} {n / seconds:12,.0f} bars/s {seconds:8.2f} s {fills:7,} fills "
                  f"{final:14,.2f}  candles visited {visited:,}")


if __name__ == "__main__":
    main()

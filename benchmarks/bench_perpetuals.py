"""The perpetuals engine's speed against the spot engine, on the same candles and orders.

Usage: python benchmarks/bench_perpetuals.py [--bars 20000]

Both engines run the bundled BTC/USD 1h candles. Per candle: one buy limit 0.5 % below the
close and one sell limit 0.5 % above (the spot engine gets the same two orders); the
perpetuals engine also keeps a reduce-only stop-limit under any long (cancelled and placed
again each candle), pays funding every 8 hours and checks liquidation. Prints candles per
second of each and the ratio (perpetuals / spot).
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exchange.candles import bundled_path, load_candles  # noqa: E402
from exchange.markets import MarketRules  # noqa: E402
from exchange.matching import Rejection, SimulatedExchange  # noqa: E402
from exchange.perpetuals import PerpetualExchange, perpetual_rules  # noqa: E402
from exchange.records import Side  # noqa: E402

RULES = dict(tick_size=Decimal("0.01"), lot_size=Decimal("0.001"), min_amount=Decimal("0.001"), min_notional=Decimal("5"),
             maker_fee=Decimal("0.0002"), taker_fee=Decimal("0.0005"))
AMOUNT = Decimal("0.01")


def spot(candles) -> float:
    x = SimulatedExchange([MarketRules.for_symbol("BTC/USDT", **RULES)], {"USDT": Decimal(10**9), "BTC": Decimal(10**6)})
    started = time.perf_counter()
    for i, c in enumerate(candles):
        x.match("BTC/USDT", c, c.ts)
        for order in x.open_orders():
            x.cancel_order(order.client_order_id)
        x.create_limit_order("BTC/USDT", Side.BUY, AMOUNT, (c.close * Decimal("0.995")).quantize(Decimal("0.01")), f"b{i}", c.ts)
        x.create_limit_order("BTC/USDT", Side.SELL, AMOUNT, (c.close * Decimal("1.005")).quantize(Decimal("0.01")), f"s{i}", c.ts)
    return time.perf_counter() - started


def perpetuals(candles) -> float:
    s = "BTC/USDT:USDT"
    x = PerpetualExchange([perpetual_rules(s, **RULES)], Decimal(10**9))
    started = time.perf_counter()
    for i, c in enumerate(candles):
        x.match(s, c, c.ts)
        for order in x.open_orders():
            x.cancel_order(exchange_order_id=order.exchange_order_id)
        for algo in x.open_conditional_orders():
            x.cancel_conditional_order(algo_id=algo.algo_id)
        x.create_limit_order(s, Side.BUY, AMOUNT, (c.close * Decimal("0.995")).quantize(Decimal("0.01")), f"b{i}", c.ts)
        x.create_limit_order(s, Side.SELL, AMOUNT, (c.close * Decimal("1.005")).quantize(Decimal("0.01")), f"s{i}", c.ts)
        size = x.position(s).size
        if size > 0:
            trigger = (c.close * Decimal("0.98")).quantize(Decimal("0.01"))
            result = x.create_conditional_order(s, Side.SELL, "STOP", size, trigger - Decimal("1"), trigger, f"sl{i}", c.ts, reduce_only=True)
            assert not isinstance(result, Rejection) or result.code == -2021, result
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=20000)
    bars = parser.parse_args().bars
    candles = load_candles(bundled_path())[:bars]
    base, perp = spot(candles), perpetuals(candles)
    print(f"spot engine:        {len(candles) / base:10.0f} candles/s")
    print(f"perpetuals engine:  {len(candles) / perp:10.0f} candles/s")
    print(f"ratio perpetuals / spot: {base / perp:.2f} (speed)")


if __name__ == "__main__":
    main()

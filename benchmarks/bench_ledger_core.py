"""The ledger core alone, plain calls: one reservation and its release, per order.

Usage: python benchmarks/bench_ledger_core.py [--orders N] [--repeats R]

Times ``LedgerCore.handle_batch`` on a batch of one ``Reserve``, then on a batch of one
``Release`` of it (each answer built in full: the journal message for the writer, the
grant, the balances after the release), as the ledger actor calls it, against a baseline
measured in the same run: a core that only answers (a grant for a reservation, the
balances for a release, nothing decided, journaled or applied). Prints the best of
``--repeats`` passes of ``--orders`` orders, in microseconds per call, and the ratio.
No trio, no store: this is the part of the round trip of ``bench_roundtrip.py`` that the
ledger's rules cost.
"""

from __future__ import annotations

import argparse
import gc
import time
from decimal import Decimal

from actors.ledger.core import LedgerCore
from actors.messages import AccountInfo, Release, ReservationGranted, Reserve, Send
from exchange.records import Side

PRICE, AMOUNT, FEE_RATE = Decimal("100"), Decimal("0.01"), Decimal("0.001")
ZERO = Decimal(0)


def answer_only(message: object, now: float) -> list[Send]:
    """The baseline: the least answer the ledger could give, deciding nothing."""
    if isinstance(message, Reserve):
        return [Send(message.reply_to, ReservationGranted(message.client_order_id))]
    return [Send("strategy:s0", AccountInfo("s0", ZERO, ZERO, ZERO, ZERO))]


def one_pass(handle, reserves: list[Reserve], releases: list[Release]) -> tuple[float, float]:
    """Microseconds per reserve and per release call."""
    start = time.perf_counter()
    for reserve in reserves:
        handle([reserve], 1.0)
    middle = time.perf_counter()
    for release in releases:
        handle([release], 2.0)
    end = time.perf_counter()
    return (middle - start) / len(reserves) * 1e6, (end - middle) / len(releases) * 1e6


def main(orders: int, repeats: int) -> None:
    core = LedgerCore()
    core.allocate("s0", Decimal("1e12"), ZERO, 0.0, "benchmark")
    baseline = lambda batch, now: [s for m in batch for s in answer_only(m, now)]  # noqa: E731
    gc.collect()
    gc.freeze()
    best_core = best_base = (float("inf"), float("inf"))
    for repeat in range(repeats):
        ids = [f"s0-{repeat}-{i}" for i in range(orders)]
        reserves = [Reserve(cid, "s0", Side.BUY, "BTC/USD", "BTC", "USD", PRICE, AMOUNT, FEE_RATE, "strategy:s0") for cid in ids]
        releases = [Release(cid, "benchmark") for cid in ids]
        base = one_pass(baseline, reserves, releases)
        measured = one_pass(core.handle_batch, reserves, releases)
        best_base = min(best_base[0], base[0]), min(best_base[1], base[1])
        best_core = min(best_core[0], measured[0]), min(best_core[1], measured[1])
    print(f"ledger core, best of {repeats} passes of {orders} orders (us per call):")
    print(f"  reserve  {best_core[0]:6.2f}   answer only {best_base[0]:5.2f}   ({best_core[0] / best_base[0]:.1f}x)")
    print(f"  release  {best_core[1]:6.2f}   answer only {best_base[1]:5.2f}   ({best_core[1] / best_base[1]:.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    main(args.orders, args.repeats)

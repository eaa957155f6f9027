"""The position book of perpetuals against the spot ledger core, same run, same work.

Usage: python benchmarks/bench_positions.py [--orders N]

For N orders (each: reserve, two partial fills, release of the rest; every fourth one a
close, so positions open, reduce and flip), measures per order:

1. spot: ``LedgerCore`` (``actors/ledger/core.py``) handling ``Reserve``, two ``FillReport``
   and ``Release`` messages (buys and sells of one strategy);
2. positions: ``PositionBook`` (``actors/ledger/positions_core.py``) reserving, settling and
   releasing the same orders (opens and reduce-only closes, with margin);
3. the rebuild of each from its journal (the fold at start-up).

Prints each figure and its ratio to the spot ledger's. Target: a position book no more
than 2x the spot ledger per order (it does more: margin, signed cost, close groups).
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal as D

from actors.ledger.core import LedgerCore
from actors.ledger.positions_core import PositionBook, PositionOrderRequest
from actors.messages import WRITER, FillReport, RecordJournal, Release, Reserve
from exchange.records import Side

SYMBOL, PERP = "BTC/USD", "BTC/USDT:USDT"


def spot(orders: int) -> tuple[float, float, int]:
    ledger = LedgerCore({"s": ("sim", "BTC", "USD")})
    journal = ledger.allocate("s", D(10) ** 9, D(10) ** 3, 0.0, "bench", base_cost=D(100))
    start = time.perf_counter()
    for i in range(orders):
        side = Side.SELL if i % 4 == 3 else Side.BUY
        cid = f"o{i}"
        price = D(100) + D(i % 7)
        out = ledger.handle(Reserve(cid, "s", side, SYMBOL, "BTC", "USD", price, D("0.4"), D("0.001"), "strategy:s"), 0.0)
        out += ledger.handle(FillReport("sim", cid, cid, f"{cid}a", SYMBOL, side, price, D("0.1"), D(0), "USD", 0.0, False), 0.0)
        out += ledger.handle(FillReport("sim", cid, cid, f"{cid}b", SYMBOL, side, price, D("0.2"), D(0), "USD", 0.0, False), 0.0)
        out += ledger.handle(Release(cid, "canceled"), 0.0)
        journal += [e for send in out if send.to == WRITER and isinstance(send.message, RecordJournal) for e in send.message.entries]
    live = time.perf_counter() - start
    start = time.perf_counter()
    LedgerCore.from_journal(journal, {"s": ("sim", "BTC", "USD")})
    return live, time.perf_counter() - start, len(journal)


def positions(orders: int) -> tuple[float, float, int]:
    book = PositionBook()
    journal = book.allocate("s", D(10) ** 9, 0.0, "bench")
    start = time.perf_counter()
    for i in range(orders):
        cid = f"o{i}"
        price = D(100) + D(i % 7)
        size = book.position("s", PERP).size
        close = i % 4 == 3 and size > D("0.4")
        side = Side.SELL if close or i % 8 == 5 else Side.BUY
        request = PositionOrderRequest(cid, "s", PERP, side, price, D("0.4"), D(10), D("0.0005"), reduce_only=close)
        for step in (
            book.reserve(request, 0.0),
            book.settle(FillReport("usdm", cid, cid, f"{cid}a", PERP, side, price, D("0.1"), D(0), "USDT", 0.0, False), 0.0),
            book.settle(FillReport("usdm", cid, cid, f"{cid}b", PERP, side, price, D("0.2"), D(0), "USDT", 0.0, False), 0.0),
            book.release(cid, "canceled", 0.0),
        ):
            if isinstance(step, str):
                raise SystemExit(f"order {cid}: {step}")
            journal += step
    live = time.perf_counter() - start
    start = time.perf_counter()
    rebuilt = PositionBook.from_journal(journal)
    elapsed = time.perf_counter() - start
    if rebuilt.snapshot() != book.snapshot():
        raise SystemExit("the rebuilt book differs from the live one")
    return live, elapsed, len(journal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20000)
    orders = parser.parse_args().orders
    spot_live, spot_fold, spot_entries = spot(orders)
    pos_live, pos_fold, pos_entries = positions(orders)
    print(f"{orders} orders (reserve, 2 fills, release each)")
    print(f"spot ledger     {spot_live / orders * 1e6:7.1f} µs/order   rebuild {spot_fold / spot_entries * 1e6:5.2f} µs/entry ({spot_entries} entries)")
    print(f"position book   {pos_live / orders * 1e6:7.1f} µs/order   rebuild {pos_fold / pos_entries * 1e6:5.2f} µs/entry ({pos_entries} entries)")
    print(f"ratio           {pos_live / spot_live:7.2f}x             rebuild {pos_fold / pos_entries / (spot_fold / spot_entries):5.2f}x per entry")


if __name__ == "__main__":
    main()

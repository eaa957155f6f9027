"""50 strategies share one account and fire on the same candle for more than they were given.

Runs the real tree (ledger, connection, writer, simulated exchange) on the real clock and
waits on events. Orders rest 5 % below the close with a 30-day time-to-live, so they stay
open on the exchange while we count them.
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from contextlib import closing
from decimal import Decimal as D

import trio

from actors.messages import RecordEvent
from supervisors.app import App
from supervisors.config import parse_config

STRATEGIES = 50
ALLOCATION = D("100")


async def test_fifty_strategies_never_exceed_their_allocations(fast_raw):
    fast_raw["venues"][0]["balances"] = {"USD": str(STRATEGIES * ALLOCATION), "BTC": 0}
    fast_raw["strategies"] = [
        {
            "name": f"s{i:02d}",
            "venue": "sim",
            "symbol": "BTC/USD",
            "allocation": {"quote": str(ALLOCATION)},
            "sizing": {"quote": 40},  # three of these would need 120.12 with fees
            "buy": {"kind": "change", "percent": -0.01, "lookback": 1},
            "limit_offset_bps": 500,
            "ttl_seconds": 2592000,
            "max_open_orders": 5,
        }
        for i in range(STRATEGIES)
    ]
    config = parse_config(fast_raw)
    denied: dict[str, list[str]] = defaultdict(list)
    seen = trio.Event()

    def watch(event: RecordEvent) -> None:
        if event.kind == "blocked" and event.client_order_id:  # a denial by the ledger
            denied[event.strategy].append(event.reason)
        if len(denied) == STRATEGIES and not seen.is_set() and all_granted_reached():
            seen.set()

    def all_granted_reached() -> bool:
        """Every order the ledger granted is on the exchange. A denial can be committed
        before an order granted ahead of it has been placed (it waits for its durable
        write, then for the connection's turn); its row is committed no later than the
        denial (the strategy records it first, one writer), so the store names them all.
        Asked again at each event: the candles' events keep coming."""
        on_exchange = {o.client_order_id for o in app.shadow_venues["sim"].exchange.orders.values()}
        with closing(sqlite3.connect(config.store)) as store:
            granted = {cid for (cid,) in store.execute("SELECT client_order_id FROM orders WHERE state != 'DENIED'")}
        return granted <= on_exchange

    app = App(config, echo=watch)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await seen.wait()
            exchange = app.shadow_venues["sim"].exchange
            reached = list(exchange.orders.values())
            nursery.cancel_scope.cancel()

    owner = dict(sqlite3.connect(config.store).execute("SELECT client_order_id, strategy FROM orders").fetchall())
    committed: dict[str, D] = defaultdict(D)
    for order in reached:
        committed[owner[order.client_order_id]] += order.price * order.amount * (1 + D("0.001"))
    assert len(committed) == STRATEGIES
    for strategy, value in committed.items():
        assert value <= ALLOCATION, f"{strategy} has {value} USD on the exchange, allocated {ALLOCATION}"
    # Every strategy got two orders through and was denied the third, with the reason.
    assert {strategy: sum(owner[o.client_order_id] == strategy for o in reached) for strategy in committed} == {
        strategy: 2 for strategy in committed
    }
    for strategy, reasons in denied.items():
        match = re.fullmatch(r"insufficient capital: needs (\d+\.\d\d) USD, free (\d+\.\d\d) USD", reasons[0])
        assert match, reasons[0]
        needs, free = D(match.group(1)), D(match.group(2))
        assert free < needs and needs + (ALLOCATION - free) > ALLOCATION

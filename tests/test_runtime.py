"""The whole tree in one trio run: shadow mode end to end.

These run on the real clock and wait on events (never on sleeps). The autojump clock is
the wrong tool here: the tree does real work on worker threads (sqlite), and while a
thread works the trio loop looks idle, so virtual time would race the replay ahead of the
writer and the two threads would then fight over the GIL.
"""

from __future__ import annotations

import sqlite3

import trio
from helpers import Watch, walk

from actors.ledger.core import LedgerCore
from store.db import load_journal, open_store
from supervisors.app import App
from supervisors.config import parse_config


async def test_shadow_mode_places_and_fills_limit_orders_and_keeps_the_books(fast_raw):
    config = parse_config(fast_raw)
    watch = Watch()
    app = App(config, echo=watch)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: sum(e.kind == "fill" for e in events) >= 3)
            nodes = {node["name"]: node for node in walk(app.snapshot())}
            for name in ["writer", "ledger", "venues", "venue:sim", "connection:sim", "strategy:sma-cross",
                         "strategy:dip-buyer", "reconciler", "status"]:
                assert nodes[name]["state"] == "running", name
            assert nodes["strategy:sma-cross"]["status"]["active"] is True
            assert nodes["ledger"]["status"]["accounts"]["sma-cross"]["quote_free"]
            nursery.cancel_scope.cancel()

    connection = sqlite3.connect(config.store)
    kinds = dict(connection.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    assert kinds["evaluated"] > 0 and kinds["order_placed"] > 0 and kinds["fill"] >= 3
    assert connection.execute("SELECT DISTINCT type FROM orders").fetchall() == [("limit",)]
    fills = connection.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert fills == kinds["fill"]
    # Every event the writer echoed was committed before the stop: the flush lost nothing.
    assert connection.execute("SELECT count(*) FROM events").fetchone()[0] >= len(watch.events)
    # The ledger rebuilt from the journal is consistent, and settled exactly the fills stored.
    ledger = LedgerCore.from_journal(load_journal(open_store(config.store)))
    ledger.check_invariants()
    settled = connection.execute("SELECT count(*) FROM journal WHERE kind = 'settle'").fetchone()[0]
    assert settled == fills


async def test_a_crashed_strategy_restarts_from_the_store_and_continues_its_sequence(fast_raw):
    config = parse_config(fast_raw)
    watch = Watch()
    app = App(config, echo=watch)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            await watch.until(lambda events: any(e.kind == "order_placed" and e.strategy == "dip-buyer" for e in events))
            placed_before = {e.client_order_id for e in watch.events if e.kind == "order_placed"}
            # A message the core does not understand is a bug: the actor crashes.
            await app.directory["strategy:dip-buyer"].send("poison")
            await watch.until(lambda events: any(e.kind == "child_restarting" for e in events))
            count = len(placed_before)
            await watch.until(lambda events: sum(e.kind == "order_placed" for e in events) >= count + 3)
            node = next(n for n in walk(app.snapshot()) if n["name"] == "strategy:dip-buyer")
            assert node["incarnation"] == 2 and node["restarts"] == 1
            assert "TypeError" in node["last_exit"]["reason"]
            assert node["state"] == "running"
            # The connection, before it under rest_for_one, was not restarted.
            connection_node = next(n for n in walk(app.snapshot()) if n["name"] == "connection:sim")
            assert connection_node["incarnation"] == 1
            nursery.cancel_scope.cancel()
    placed = [e.client_order_id for e in watch.events if e.kind == "order_placed"]
    assert len(placed) == len(set(placed)), "a client order id was used twice after the restart"

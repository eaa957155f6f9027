"""A restart after months reads what is live, not the whole history: the simulated
exchange's open and recent orders, and the journal folded a page at a time."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import trio

from actors.ledger.core import LedgerCore
from actors.ledger.shell import JOURNAL_PAGE, ledger_actor
from actors.messages import WRITER, JournalEntry, RecordJournal, RecordSimulatedExchange, Release, Reserve
from actors.orders import Order, OrderState
from actors.runtime import ActorEnv
from actors.writer.core import Batch, plan_batch
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.records import Side
from exchange.retention import KEEP_FINISHED_ORDERS
from store.access import SqliteReader, stored_simulated
from store.db import load_journal, open_store, write_batch

MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"),
                                min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"))


def test_a_restart_loads_the_open_and_the_most_recent_ended_simulated_orders_only(tmp_path):
    store = tmp_path / "s.sqlite"
    ex = SimulatedExchange([MARKET], {"USD": D("1000000"), "BTC": D("10")})
    ex.track_changes = True
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("50"), "resting-first", 0)
    # Ended in the exchange, but the order book of record does not know it yet (a crash
    # before the cancel reached the strategy): its evidence must come back however old.
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("50"), "unsettled", 0)
    ex.cancel_order("unsettled")
    for i in range(3 * KEEP_FINISHED_ORDERS):
        ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("50"), f"c{i}", float(i))
        ex.cancel_order(f"c{i}")
    ex.create_limit_order("BTC/USD", Side.SELL, D("1"), D("200"), "resting-last", 9e9)
    connection = open_store(store)
    write_batch(connection, plan_batch([RecordSimulatedExchange("sim", ex.drain_changes(), {"BTC/USD": 5})])[0])
    unsettled = Order("unsettled", "a", "sim", "BTC/USD", Side.BUY, D("50"), D("1"), OrderState.OPEN, 0.0, 0.0)
    write_batch(connection, Batch(orders={"unsettled": unsettled}))
    connection.close()

    state, _, _ = stored_simulated(store, "sim")
    loaded = [o.client_order_id for o in sorted(state.orders, key=lambda o: int(o.exchange_order_id))]
    recent = [f"c{i}" for i in range(2 * KEEP_FINISHED_ORDERS, 3 * KEEP_FINISHED_ORDERS)]
    assert loaded == ["resting-first", "unsettled", *recent, "resting-last"]
    back = SimulatedExchange([MARKET], {"USD": D("1")})
    back.restore(state)
    assert [o.client_order_id for o in back.open_orders()] == ["resting-first", "resting-last"]
    assert {a: (b.free, b.used) for a, b in back.balances.items()} == {a: (b.free, b.used) for a, b in ex.balances.items()}
    assert back.balances["BTC"].used == D("1")  # what the resting sell locks
    # Ids go on after every stored order, forgotten ones included.
    assert back.create_limit_order("BTC/USD", Side.BUY, D("1"), D("50"), "next", 0).exchange_order_id == str(
        3 * KEEP_FINISHED_ORDERS + 4)


def journal_of_many_orders(count: int) -> tuple[LedgerCore, list[JournalEntry]]:
    core = LedgerCore()
    entries = core.allocate("a", D(1_000_000), D(0), 0.0, "test")
    for i in range(count):
        for message in (Reserve(f"c{i}", "a", Side.BUY, "BTC/USD", "BTC", "USD", D("100"), D("0.01"), D("0.001"), "strategy:a"),
                        Release(f"c{i}", "canceled")):
            entries += [e for s in core.handle(message, float(i)) if s.to == WRITER and isinstance(s.message, RecordJournal)
                        for e in s.message.entries]
    return core, entries


class CountingReader(SqliteReader):
    """The real reader, noting the largest list any read returned."""

    largest = 0

    async def read(self, query: Any, **kwargs: Any) -> Any:
        result = await super().read(query, **kwargs)
        found = result[0] if isinstance(result, tuple) else result
        if isinstance(found, list):
            self.largest = max(self.largest, len(found))
        return result


class Context:
    name = "ledger"
    status: dict[str, Any] = {}
    status_provider = None
    incarnation = 1

    def __init__(self, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        self.inbox = inbox


async def test_the_ledger_rebuilds_from_the_journal_a_page_at_a_time(tmp_path):
    live, entries = journal_of_many_orders(3 * JOURNAL_PAGE // 2)  # two entries an order: three pages
    store = tmp_path / "s.sqlite"
    connection = open_store(store)
    write_batch(connection, Batch(journal=entries))
    assert load_journal(connection) == entries
    connection.close()

    reader = CountingReader(store)
    send, receive = trio.open_memory_channel[Any](100)
    writer_send, _writer_receive = trio.open_memory_channel[Any](100)
    ctx = Context(receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: ledger_actor(ctx, {}, ActorEnv({WRITER: writer_send}, reader),
                                                             task_status=task_status))
        rebuilt = ctx.status_provider()["accounts"]
        nursery.cancel_scope.cancel()
    assert rebuilt == live.snapshot() == LedgerCore.from_journal(entries).snapshot()
    assert len(entries) > 2 * JOURNAL_PAGE and reader.largest == JOURNAL_PAGE  # never the whole journal at once

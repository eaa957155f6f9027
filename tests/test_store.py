"""The sqlite store: migrations, batches, durability flag, and the reads actors rebuild from."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import pytest
import trio

from actors.messages import (
    FillReport,
    JournalEntry,
    OrderDurable,
    RecordEvent,
    RecordJournal,
    RecordOrder,
    Send,
)
from actors.orders import Order, OrderState
from actors.writer.core import plan_batch
from exchange.records import Side
from store.db import (
    CLIENT_ID_INSTANCE_KEY,
    latest_events,
    load_client_id_instance,
    load_journal,
    load_orders,
    open_store,
    write_batch,
)
from store.schema import MIGRATIONS, SCHEMA_VERSION, current_version, migrate


def order(cid="ll-a-1", state=OrderState.RESERVED, **changes) -> Order:
    values = dict(
        client_order_id=cid, strategy="a", venue="sim", symbol="BTC/USD", side=Side.BUY,
        price=D("100.5"), amount=D("0.25"), state=state, created_at=1.0, updated_at=1.0, rule="r",
    )
    values.update(changes)
    return Order(**values)


def test_migrations_bring_a_new_file_to_the_current_version_once(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    assert current_version(connection) == SCHEMA_VERSION
    assert migrate(connection) == SCHEMA_VERSION  # idempotent
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_from_a_newer_limitline_is_refused(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.commit()
    with pytest.raises(RuntimeError, match="schema version 99, newer than this limitline"):
        migrate(connection)


def test_the_writer_plans_one_batch_and_replies_only_for_durable_intents():
    durable = RecordOrder(order(), durable_reply_to="strategy:a")
    later = RecordOrder(order(state=OrderState.SUBMITTING))
    event = RecordEvent("evaluated", "strategy:a", 1.0, strategy="a")
    batch, replies = plan_batch([durable, event, later])
    assert batch.durable
    assert replies == [Send("strategy:a", OrderDurable("ll-a-1"))]
    assert batch.orders["ll-a-1"].state is OrderState.SUBMITTING  # the last state wins
    batch, replies = plan_batch([event])
    assert not batch.durable and replies == []


def test_rows_round_trip_and_fills_are_unique_per_trade(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    fill = FillReport("sim", "ll-a-1", "9", "t1", "BTC/USD", Side.BUY, D("100.5"), D("0.1"), D("0.01"), "USD", 2.0, False)
    entry = JournalEntry("reserve", "a", 1.0, client_order_id="ll-a-1", side=Side.BUY, price=D("100.5"),
                         amount=D("0.25"), quote_free=D("-25.15"), quote_reserved=D("25.15"))
    batch, _ = plan_batch([
        RecordOrder(order(state=OrderState.PARTIALLY_FILLED, filled=D("0.1"), trade_ids=frozenset({"t1"}))),
        RecordJournal((), (fill,)), RecordJournal((), (fill,)),
        RecordJournal((entry,)),
        RecordEvent("fill", "strategy:a", 2.0, strategy="a", client_order_id="ll-a-1", payload={"price": "100.5"}),
    ])
    write_batch(connection, batch)
    [loaded] = load_orders(connection, strategy="a", open_only=True)
    assert loaded.filled == D("0.1") and loaded.trade_ids == frozenset({"t1"}) and loaded.price == D("100.5")
    assert load_journal(connection) == [entry]
    assert connection.execute("SELECT count(*) FROM fills").fetchone()[0] == 1
    [event] = latest_events(connection, strategy="a")
    assert event["kind"] == "fill" and event["payload"] == {"price": "100.5"}


def test_a_trade_id_names_a_trade_of_one_market_and_old_stores_keep_their_fills(tmp_path):
    """Binance numbers trades per market: trade t1 of BTC/USD and t1 of ETH/USD are two rows."""
    path = tmp_path / "s.sqlite"
    connection = sqlite3.connect(path)
    # A store of version 6, whose fills were keyed by (venue, trade id), with one fill.
    for version in range(6):
        for statement in MIGRATIONS[version]:
            connection.execute(statement)
    connection.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '6') "
                       "ON CONFLICT (key) DO UPDATE SET value = '6'")
    connection.execute("INSERT INTO fills VALUES ('sim', 't1', 'll-a-1', '9', 'BTC/USD', 'buy', '100', '0.1', '0.01', "
                       "'USD', 1.0)")
    connection.commit()
    connection.close()
    connection = open_store(path)
    assert current_version(connection) == SCHEMA_VERSION
    eth = FillReport("sim", "ll-b-1", "10", "t1", "ETH/USD", Side.BUY, D("10"), D("1"), D("0.01"), "USD", 2.0, False)
    again = FillReport("sim", "ll-a-1", "9", "t1", "BTC/USD", Side.BUY, D("100"), D("0.1"), D("0.01"), "USD", 2.0, False)
    batch, _ = plan_batch([RecordJournal((), (eth, again))])
    write_batch(connection, batch)
    rows = connection.execute("SELECT symbol, trade_id, client_order_id FROM fills ORDER BY symbol").fetchall()
    assert rows == [("BTC/USD", "t1", "ll-a-1"), ("ETH/USD", "t1", "ll-b-1")]


def test_the_schema_refuses_anything_but_a_limit_order(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute(
            "INSERT INTO orders (client_order_id, strategy, venue, symbol, side, type, price, amount, filled,"
            " state, created_at, updated_at) VALUES ('x','a','sim','BTC/USD','buy','market','1','1','0','OPEN',0,0)"
        )


class _Sink:
    """The writer's sink in memory: what it was asked to commit, batch by batch, each also
    sent to ``committed`` (from the writer's worker thread)."""

    location = "memory"

    def __init__(self, committed) -> None:
        self.batches: list = []
        self.committed = committed

    def write(self, batch) -> None:
        self.batches.append(batch)
        trio.from_thread.run_sync(self.committed.send_nowait, batch)

    def close(self) -> None:
        pass


async def test_the_writer_gathers_rows_for_a_window_but_commits_an_intent_at_once(autojump_clock):
    """Rows nobody waits for share a commit within the group window (the writer is not woken
    by each); an order intent, or a full mailbox, rings the mailbox's bell and is committed
    at once."""
    from actors.mailbox import Mailbox
    from actors.messages import WRITER
    from actors.writer.core import is_durable
    from actors.writer.shell import GROUP_COMMIT_SECONDS, writer_actor

    committed, commits = trio.open_memory_channel(10)
    sink = _Sink(committed)
    writer_box, strategy_box = Mailbox(4, urgent=is_durable), Mailbox()
    directory = {WRITER: writer_box.send_channel, "strategy:a": strategy_box.send_channel}
    replies = strategy_box.open_receiver()

    class Context:
        name, status, status_provider, incarnation = WRITER, {}, None, 1
        inbox = writer_box.open_receiver()

    event = RecordEvent("evaluated", "strategy:a", 1.0, strategy="a")
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: writer_actor(
            Context(), lambda: sink, directory, bell=writer_box.bell, task_status=task_status))
        directory[WRITER].send_nowait(event)
        await trio.sleep(GROUP_COMMIT_SECONDS * 0.8)
        directory[WRITER].send_nowait(event)
        assert sink.batches == []  # still gathering
        start = trio.current_time()
        directory[WRITER].send_nowait(RecordOrder(order(), durable_reply_to="strategy:a"))
        assert await replies.receive() == OrderDurable("ll-a-1")
        assert trio.current_time() - start < GROUP_COMMIT_SECONDS / 10
        [batch] = sink.batches
        assert batch.durable and len(batch.events) == 2 and list(batch.orders) == ["ll-a-1"]
        assert await commits.receive() is batch
        # Unwatched rows wait out the window, then commit.
        start = trio.current_time()
        directory[WRITER].send_nowait(event)
        batch = await commits.receive()
        assert not batch.durable and trio.current_time() - start >= GROUP_COMMIT_SECONDS
        # A full mailbox rings too: its senders are not parked for a whole window.
        start = trio.current_time()
        for _ in range(6):
            await directory[WRITER].send(event)
        assert trio.current_time() - start < GROUP_COMMIT_SECONDS / 10
        nursery.cancel_scope.cancel()


def test_each_new_store_gets_its_own_client_order_id_instance_and_keeps_it(tmp_path):
    first, second = open_store(tmp_path / "a.sqlite"), open_store(tmp_path / "b.sqlite")
    mine, theirs = load_client_id_instance(first), load_client_id_instance(second)
    assert len(mine) == len(theirs) == 6 and mine != theirs
    first.close()
    again = open_store(tmp_path / "a.sqlite")
    assert load_client_id_instance(again) == mine  # kept in the store, across restarts
    again.close()
    second.close()


def test_a_store_made_before_instances_keeps_its_client_order_ids(tmp_path):
    # A store of an earlier limitline: it has orders (maybe open on the exchange) with ids
    # without an instance; they must still be recognised as its own after the upgrade.
    connection = open_store(tmp_path / "old.sqlite")
    with connection:
        connection.execute("DELETE FROM meta WHERE key = ?", (CLIENT_ID_INSTANCE_KEY,))
    connection.close()
    upgraded = open_store(tmp_path / "old.sqlite")
    assert load_client_id_instance(upgraded) == ""
    assert upgraded.execute("SELECT value FROM meta WHERE key = ?", (CLIENT_ID_INSTANCE_KEY,)).fetchone() == ("",)
    upgraded.close()

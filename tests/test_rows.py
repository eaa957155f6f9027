"""Rows derived from attrs fields: the same columns as the schema, and the same values."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import attrs
import pytest

from actors.messages import JournalEntry, RecordEvent
from actors.orders import Order, OrderState, Side
from store.db import (
    JOURNAL_COLUMNS,
    VALUES_PER_STATEMENT,
    ORDER_COLUMNS,
    Batch,
    load_journal,
    load_orders,
    open_store,
    write_batch,
)
from store.rows import Columns


def table_columns(connection, table: str) -> set[str]:
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


def test_every_field_has_its_column_and_every_column_but_the_defaults_its_field(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    assert table_columns(connection, "journal") == {*JOURNAL_COLUMNS.names, "seq"}
    assert table_columns(connection, "orders") == {*ORDER_COLUMNS.names, "type"}


def test_values_are_stored_as_text_values_and_null():
    entry = JournalEntry("settle", "a", 2.5, trade_id="t1", side=Side.SELL, price=D("100.50"), fee=D("1E-8"))
    row = dict(zip(JOURNAL_COLUMNS.names, JOURNAL_COLUMNS.row(entry)))
    assert row["side"] == "sell" and row["price"] == "100.50" and row["fee"] == "1E-8"
    assert row["amount"] is None and row["client_order_id"] is None and row["at"] == 2.5
    assert JOURNAL_COLUMNS.record(JOURNAL_COLUMNS.row(entry)) == entry
    order = Order("ll-a-1", "a", "sim", "BTC/USD", Side.BUY, D("1"), D("2"), OrderState.OPEN, 1.0, 1.0,
                  trade_ids=frozenset({"t2", "t1"}))
    assert dict(zip(ORDER_COLUMNS.names, ORDER_COLUMNS.row(order)))["trade_ids"] == '["t1", "t2"]'


def test_a_null_in_a_nullable_column_reads_as_the_fields_default(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    order = Order("ll-a-1", "a", "sim", "BTC/USD", Side.BUY, D("1"), D("2"), OrderState.OPEN, 1.0, 1.0, rule="r")
    write_batch(connection, Batch(orders={order.client_order_id: order}))
    with connection:
        connection.execute("UPDATE orders SET rule = NULL, reason = NULL")
    assert load_orders(connection) == [attrs.evolve(order, rule="")]


def test_a_field_with_no_column_type_is_refused_when_the_class_is_read():
    @attrs.frozen
    class Odd:
        values: list[int]

    with pytest.raises(TypeError, match="no column type"):
        Columns(Odd)


def test_a_batch_of_many_rows_is_stored_whole_and_in_order(tmp_path):
    # More rows than one statement holds, and not a multiple of it: every piece in order.
    connection = open_store(tmp_path / "s.sqlite")
    count = 3 * (VALUES_PER_STATEMENT // len(JOURNAL_COLUMNS.names)) + 77
    entries = [
        JournalEntry("reserve", f"s{i % 7}", float(i), client_order_id=f"c{i}", side=Side.BUY, price=D(i + 1),
                     amount=D("0.5"), quote_free=-D(i + 1) / 2, quote_reserved=D(i + 1) / 2)
        for i in range(count)
    ]
    orders = {f"ll-a-{i}": Order(f"ll-a-{i}", "a", "sim", "BTC/USD", Side.BUY, D("1"), D(i + 1), OrderState.OPEN, float(i), float(i))
              for i in range(300)}
    write_batch(connection, Batch(journal=entries[:5]))
    write_batch(connection, Batch(journal=entries[5:], orders=orders))
    assert load_journal(connection) == entries
    assert load_orders(connection) == list(orders.values())
    # The latest state of an order replaces its row, as many rows as there are.
    canceled = {cid: attrs.evolve(o, state=OrderState.CANCELED) for cid, o in orders.items()}
    write_batch(connection, Batch(orders=canceled))
    assert load_orders(connection) == list(canceled.values())


def test_a_batch_that_fails_writes_nothing_and_the_next_one_is_written(tmp_path):
    connection = open_store(tmp_path / "s.sqlite")
    good = JournalEntry("allocate", "a", 1.0, quote_free=D("10"))
    bad = JournalEntry("borrow", "a", 2.0)  # the schema knows no such movement
    event = RecordEvent(kind="note", actor="test", at=1.0)
    for durable in (False, True):
        with pytest.raises(sqlite3.IntegrityError):
            write_batch(connection, Batch(events=[event], journal=[good, bad], durable=durable))
        assert load_journal(connection) == [] and connection.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    write_batch(connection, Batch(events=[event], journal=[good]))
    assert load_journal(connection) == [good]
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again after a durable batch

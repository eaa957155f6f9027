"""The store as the actors get it: a reader for their rebuilds and a sink for the writer.

The composition root (``supervisors.app``) makes these and hands them to the shells, so no
actor imports the store. Reads run on a worker thread, each with a read-only connection
of its own (WAL lets them read while the writer writes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, TypeVar

import trio

from actors.messages import JournalEntry, RecordKeys
from actors.orders import Order
from actors.writer.core import Batch
from exchange.matching import ExchangeState
from store.db import (
    load_client_id_instance,
    load_journal,
    load_journal_page,
    load_ledger_checkpoint,
    load_orders,
    load_perpetual,
    load_position_journal,
    load_journal_of,
    load_record,
    load_simulated,
    open_store,
    write_batch,
)
from store.schema import current_version

T = TypeVar("T")


class SqliteReader:
    """:class:`actors.runtime.StoreReader` over the sqlite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def read(self, query: Callable[..., T], **kwargs: Any) -> T:
        """Run ``query(connection, **kwargs)`` on a worker thread."""

        def run() -> T:
            connection = open_store(self.path, readonly=True)
            try:
                return query(connection, **kwargs)
            finally:
                connection.close()

        return await trio.to_thread.run_sync(run)

    async def client_id_instance(self) -> str:
        """The store's client order id instance (see ``store.db.CLIENT_ID_INSTANCE_KEY``)."""
        return await self.read(load_client_id_instance)

    async def orders(
        self, *, strategy: str | None = None, venue: str | None = None, open_only: bool = False
    ) -> list[Order]:
        return await self.read(load_orders, strategy=strategy, venue=venue, open_only=open_only)

    async def journal(self) -> list[JournalEntry]:
        return await self.read(load_journal)

    async def ledger_checkpoint(self) -> tuple[int, Any] | None:
        """The latest ledger checkpoint and the journal sequence number it follows, or None."""
        return await self.read(load_ledger_checkpoint)

    async def journal_pages(self, page_size: int, after: int = 0) -> AsyncIterator[list[JournalEntry]]:
        """The journal in order from the entry after sequence number ``after``,
        ``page_size`` entries at a time, each page read on a worker thread by sequence
        range (:func:`store.db.load_journal_page`): a fold of months of entries holds one
        page. Entries committed while the pages are read come in the later pages (the
        journal only grows at its end)."""
        while True:
            page, after = await self.read(load_journal_page, after=after, limit=page_size)
            if page:
                yield page
            if len(page) < page_size:
                return

    async def position_journal(self) -> list[Any]:
        """The position book's journal (``actors.ledger.positions_core.PositionEntry``)."""
        return await self.read(load_position_journal)

    async def record(self, *, venue: str, wanted: RecordKeys) -> tuple[list[Order], frozenset[tuple[str, str]]]:
        return await self.read(
            load_record, venue=venue, client_order_ids=wanted.client_order_ids,
            exchange_order_ids=wanted.exchange_order_ids, trade_ids=wanted.trade_ids,
        )

    async def journal_of(self, client_order_ids: Iterable[str]) -> list[JournalEntry]:
        return await self.read(load_journal_of, client_order_ids=tuple(client_order_ids))


#: The first schema version that keeps the simulated exchange's state.
SIMULATED_SINCE_VERSION = 3
#: The first schema version that keeps positions and the simulated perpetuals account.
PERPETUAL_SINCE_VERSION = 6


def stored_simulated(
    path: str | Path, venue: str, strategies: Iterable[str] | None = None
) -> tuple[ExchangeState | None, dict[str, int], bool]:
    """The simulated account of ``venue`` and its replay positions as the store at
    ``path`` holds them, read once at start-up, before any actor runs; and whether the
    store has orders on it (of ``strategies``, if given: the shadow ones of a live venue)
    written before the simulated exchange's state was kept, which cannot be continued
    exactly. A missing file holds nothing."""
    path = Path(path)
    if not path.exists():
        return None, {}, False
    connection = open_store(path, readonly=True)
    try:
        version = current_version(connection)
        if version == 0:
            return None, {}, False
        if version < SIMULATED_SINCE_VERSION:
            rows = connection.execute("SELECT strategy FROM orders WHERE venue = ?", (venue,)).fetchall()
            return None, {}, any(strategies is None or strategy in strategies for (strategy,) in rows)
        state, replay = load_simulated(connection, venue=venue)
        return state, replay, False
    finally:
        connection.close()


def stored_perpetual(path: str | Path, venue: str) -> Any:
    """A simulated perpetuals account (``exchange.perpetuals.PerpetualState``) as the
    store at ``path`` holds it, read once at start-up; None if never recorded."""
    path = Path(path)
    if not path.exists():
        return None
    connection = open_store(path, readonly=True)
    try:
        if current_version(connection) < PERPETUAL_SINCE_VERSION:
            return None
        return load_perpetual(connection, venue=venue)
    finally:
        connection.close()


class SqliteWriter:
    """:class:`actors.writer.core.BatchSink` over the sqlite file at ``path`` (the writer's
    one connection; opened, used and closed on the writer's worker thread)."""

    def __init__(self, path: str | Path) -> None:
        self.location = str(path)
        self._connection: sqlite3.Connection = open_store(path)

    def write(self, batch: Batch) -> None:
        write_batch(self._connection, batch)

    def close(self) -> None:
        self._connection.close()

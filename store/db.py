"""The sqlite file: opening it, writing a batch, and the reads the actors rebuild from.

Synchronous on purpose: the writer actor runs these on one worker thread at a time, and
readers (start-up rebuilds, the status endpoint) use connections of their own, which WAL
lets read while the writer writes. Only the writer actor ever calls :func:`write_batch`.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import attrs

from actors.ledger.positions_core import PositionEntry
from actors.messages import JournalEntry, RecordSimulatedExchange
from actors.orders import Order, OrderState
from actors.writer.core import Batch
from exchange.matching import ExchangeState, SimOrder
from exchange.perpetuals import ConditionalOrder, Income, PerpetualOrder, PerpetualState, PerpetualTrade
from exchange.records import ExchangeTrade
from exchange.retention import KEEP_FINISHED_ORDERS
from store import checkpoint as ledger_checkpoint
from store.codec import dumps, state_json, state_of
from store.errors import NotAStore, OrphanedOrders, StoreUnavailable
from store.rows import Columns
from store.schema import current_version, migrate, not_a_store

log = logging.getLogger(__name__)

#: A column per field (store/schema.py has the same ones): amounts as decimal text, enums as
#: their values, an order's trade ids as a sorted JSON list. The orders table's ``type``
#: column is left to its default, ``limit``, the only kind of order there is.
JOURNAL_COLUMNS = Columns(JournalEntry)
POSITION_JOURNAL_COLUMNS = Columns(PositionEntry)
ORDER_COLUMNS = Columns(Order)
_ORDER_UPDATES = ", ".join(f"{name} = excluded.{name}" for name in ORDER_COLUMNS.names if name != "client_order_id")
#: The simulated exchange's orders and trades, each row after its venue.
SIM_ORDER_COLUMNS = Columns(SimOrder)
SIM_TRADE_COLUMNS = Columns(ExchangeTrade)
#: Trades kept in memory after a restart besides those of orders still being settled: as
#: many as the recent-trades list a snapshot shows.
RECENT_SIM_TRADES = 1000


def open_store(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the store at ``path``.

    For writing, a file that is not a limitline store is refused before anything is
    written to it (:class:`NotAStore`), and a file or directory that cannot be created or
    written raises :class:`StoreUnavailable`, each with a message naming the path."""
    path = Path(path)
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 5000")
        return connection
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's connection moves between trio's worker threads (one at a time, under a
        # capacity limiter of 1), hence check_same_thread=False.
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as error:
        raise StoreUnavailable(_cannot_write(path, error)) from None
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
        # Before the first write (switching to WAL writes the file's header): is it ours?
        foreign = not_a_store(connection)
        if foreign is not None:
            raise NotAStore(_not_ours(path, foreign))
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.isolation_level = "DEFERRED"
        made_now = current_version(connection) == 0
        migrate(connection)
        _keep_client_id_instance(connection, made_now)
    except NotAStore:
        connection.close()
        raise
    except sqlite3.OperationalError as error:  # read-only file or directory, disk full, locked
        connection.close()
        raise StoreUnavailable(_cannot_write(path, error)) from None
    except sqlite3.DatabaseError:  # "file is not a database"
        connection.close()
        raise NotAStore(_not_ours(path, "is not a sqlite database")) from None
    return connection


#: The ``meta`` key of the store's client order id instance (``actors.orders.client_order_id``).
CLIENT_ID_INSTANCE_KEY = "client_order_id_instance"
_INSTANCE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _keep_client_id_instance(connection: sqlite3.Connection, made_now: bool) -> None:
    """Give the store its client order id instance once, for good: 6 random characters for a
    store made now (two stores on one exchange account never make the same client order
    id), "" for one made before instances existed (its ids keep their form, so the orders
    it has open on the exchange are still recognised as its own)."""
    if connection.execute("SELECT 1 FROM meta WHERE key = ?", (CLIENT_ID_INSTANCE_KEY,)).fetchone() is not None:
        return
    instance = "".join(secrets.choice(_INSTANCE_ALPHABET) for _ in range(6)) if made_now else ""
    with connection:
        connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (CLIENT_ID_INSTANCE_KEY, instance))


def load_client_id_instance(connection: sqlite3.Connection) -> str:
    """The store's client order id instance ("" if it has none)."""
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (CLIENT_ID_INSTANCE_KEY,)).fetchone()
    return str(row[0]) if row else ""


def archive_store(path: str | Path, now: datetime | None = None) -> Path | None:
    """Move the store at ``path`` aside, to ``<stem>.<UTC time><suffix>`` beside it, so a
    new one starts empty; None if there is none. Its write-ahead log is folded into it
    first (a store left by ``kill -9`` may hold committed rows only there), so the archive
    is one file that opens as it was; if that fails, the log files move along with it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    except sqlite3.Error:
        pass  # moved with its -wal and -shm below: sqlite reads them under the new name
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}")
        n += 1
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            side.rename(target.with_name(target.name + extra))
    path.rename(target)
    return target


def check_store(path: str | Path) -> None:
    """Refuse, without writing anything, a store path that cannot be limitline's store:
    another program's sqlite database, a file that is not sqlite, a store of a newer
    limitline, a directory. A path where nothing exists yet is fine."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise StoreUnavailable(f"store {path}: is a directory; set `store` to a file path such as {path / 'limitline.sqlite'}")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StoreUnavailable(_cannot_write(path, error)) from None
    try:
        foreign = not_a_store(connection)
    except sqlite3.OperationalError as error:
        raise StoreUnavailable(_cannot_write(path, error)) from None
    except sqlite3.DatabaseError:
        foreign = "is not a sqlite database"
    finally:
        connection.close()
    if foreign is not None:
        raise NotAStore(_not_ours(path, foreign))


def _not_ours(path: Path, why: str) -> str:
    if "newer than this limitline" in why:
        return f"store {path}: {why}"
    return (
        f"store {path}: {why}; limitline never writes into a file that is not its own. "
        "Set `store` to a new path (or to an existing limitline store)"
    )


def _cannot_write(path: Path, error: BaseException) -> str:
    why = getattr(error, "strerror", None) or str(error)
    return (
        f"store {path}: cannot be created or written ({why}); the file and its directory must be writable "
        "by this user: fix the permissions or set `store` to another path"
    )


#: Values bound to one INSERT statement at most (sqlite's classic limit; rows of 17
#: columns go in statements of 1,927). ``executemany`` steps once per row, and each step
#: lets go of the GIL and must take it back: while the event loop is busy, that can take
#: up to the interpreter's switch interval (5 ms), row after row. One statement of many
#: rows binds them all in C and steps once (binding and inserting this many values took
#: 4 ms of CPU on the 2-core machine, the binding a part of it: within one switch interval).
VALUES_PER_STATEMENT = 32766


def write_batch(connection: sqlite3.Connection, batch: Batch) -> None:
    """Write ``batch`` in one transaction; with ``batch.durable`` the commit is fsynced.

    Rows go in in the order the batch holds them (a table's rows in one statement are
    inserted in the order of its VALUES), so the journal's order is the ledger's."""
    if batch.durable:
        # The store runs at NORMAL (open_store); a durable batch alone is fsynced. Setting
        # it for every batch would cost a statement (and a wait for the GIL) each time.
        connection.execute("PRAGMA synchronous = FULL")
    try:
        # BEGIN and COMMIT as statements from the connection's cache: sqlite3's own
        # transaction handling prepares them afresh each time, letting go of the GIL (and
        # waiting to take it back from a busy event loop) at every step of that.
        connection.execute("BEGIN")
        try:
            _write_rows(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
    finally:
        if batch.durable:
            connection.execute("PRAGMA synchronous = NORMAL")


def _write_rows(connection: sqlite3.Connection, batch: Batch) -> None:
    _insert(
        connection,
        "INSERT INTO events (at, kind, actor, strategy, client_order_id, rule, reason, payload)",
        8,
        [
            v
            for e in batch.events
            for v in (e.at, e.kind, e.actor, e.strategy, e.client_order_id, e.rule, e.reason, dumps(e.payload))
        ],
    )
    _insert(
        connection,
        f"INSERT INTO orders ({ORDER_COLUMNS.sql})",
        len(ORDER_COLUMNS.names),
        ORDER_COLUMNS.values(batch.orders.values()),
        # The row is the order's latest state: every column but the key is replaced.
        f"ON CONFLICT (client_order_id) DO UPDATE SET {_ORDER_UPDATES}",
    )
    _insert(
        connection,
        """INSERT INTO fills (venue, trade_id, client_order_id, exchange_order_id, symbol, side,
               price, amount, fee, fee_currency, at)""",
        11,
        [
            v
            for f in batch.fills
            for v in (
                f.venue, f.trade_id, f.client_order_id, f.exchange_order_id, f.symbol, f.side.value,
                str(f.price), str(f.amount), str(f.fee), f.fee_currency, f.at,
            )
        ],
        "ON CONFLICT DO NOTHING",
    )
    _insert(
        connection,
        f"INSERT INTO journal ({JOURNAL_COLUMNS.sql})",
        len(JOURNAL_COLUMNS.names),
        JOURNAL_COLUMNS.values(batch.journal),
    )
    if batch.checkpoints:
        _write_checkpoints(connection, batch)
    _insert(
        connection,
        f"INSERT INTO position_journal ({POSITION_JOURNAL_COLUMNS.sql})",
        len(POSITION_JOURNAL_COLUMNS.names),
        POSITION_JOURNAL_COLUMNS.values(batch.positions),
    )
    for record in batch.simulated:
        _write_simulated(connection, record)
    for record in batch.perpetual:
        _write_perpetual(connection, record.venue, record.state)


def _write_checkpoints(connection: sqlite3.Connection, batch: Batch) -> None:
    """The ledger's latest checkpoint in ``batch``, under the sequence number of the last
    journal entry before it (the batch's entries were just inserted, one after the other,
    so they end at the journal's highest number), if that is the number the ledger counted
    (otherwise the ledger's state and the journal disagree on what it folds: no checkpoint
    then, the previous one stays); older checkpoints go."""
    (last,) = connection.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()
    count, record = batch.checkpoints[-1]
    seq = last - len(batch.journal) + count
    if seq != record.seq:
        log.warning("ledger checkpoint not written: the ledger counts %d journal entries, the journal %d", record.seq, seq)
        return
    connection.execute(
        "INSERT OR REPLACE INTO ledger_checkpoints (seq, at, state) VALUES (?, (julianday('now') - 2440587.5) * 86400, ?)",
        (seq, ledger_checkpoint.encode(record.checkpoint)),
    )
    connection.execute("DELETE FROM ledger_checkpoints WHERE seq < ?", (seq,))


#: The rows of a simulated perpetuals account: kind, the collection, each row's id.
PERPETUAL_ROWS = (
    ("order", "orders", lambda o: o.exchange_order_id, PerpetualOrder),
    ("algo", "conditional_orders", lambda a: a.algo_id, ConditionalOrder),
    ("trade", "trades", lambda t: t.trade_id, PerpetualTrade),
    ("income", "income", lambda i: str(i.tran_id), Income),
)


def _write_perpetual(connection: sqlite3.Connection, venue: str, state: PerpetualState) -> None:
    """One change of a simulated perpetuals account: its account whole, its changed rows."""
    account = attrs.evolve(state, orders=(), conditional_orders=(), trades=(), income=())
    connection.execute(
        "INSERT INTO sim_perpetual (venue, account) VALUES (?, ?) ON CONFLICT (venue) DO UPDATE SET account = excluded.account",
        (venue, state_json(account)),
    )
    for kind, field, key, _ in PERPETUAL_ROWS:
        _insert(
            connection,
            "INSERT INTO sim_perpetual_rows (venue, kind, id, body)",
            4,
            [v for row in getattr(state, field) for v in (venue, kind, key(row), state_json(row))],
            "ON CONFLICT (venue, kind, id) DO UPDATE SET body = excluded.body",
        )


def _insert(connection: sqlite3.Connection, head: str, columns: int, values: list[Any], tail: str = "") -> None:
    """``{head} VALUES (?, ...), (?, ...) {tail}`` for the rows whose values ``values``
    holds one after the other, ``columns`` each: in order, in statements as large as
    :data:`VALUES_PER_STATEMENT` allows, the rest in powers of two (few statements to
    prepare and cache)."""
    rows = len(values) // columns
    # sqlite before 3.32 binds at most 999 values to a statement.
    most = min(VALUES_PER_STATEMENT, connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) // columns
    done = 0
    while done < rows:
        n = min(most, 1 << ((rows - done).bit_length() - 1))
        connection.execute(_statement(head, columns, n, tail), values[done * columns : (done + n) * columns])
        done += n


@functools.lru_cache(maxsize=256)
def _statement(head: str, columns: int, rows: int, tail: str) -> str:
    row = f"({', '.join('?' * columns)})"
    return f"{head} VALUES {', '.join([row] * rows)} {tail}"


def _write_simulated(connection: sqlite3.Connection, record: RecordSimulatedExchange) -> None:
    """One simulated account's changes (inside the batch's transaction)."""
    venue, state = record.venue, record.state
    if state is not None:
        connection.execute(
            """INSERT INTO sim_accounts (venue, next_order, next_trade) VALUES (?, ?, ?)
               ON CONFLICT (venue) DO UPDATE SET next_order = excluded.next_order, next_trade = excluded.next_trade""",
            (venue, state.next_order, state.next_trade),
        )
        _insert(
            connection,
            "INSERT INTO sim_balances (venue, asset, free, used)",
            4,
            [v for asset, (free, used) in state.balances.items() for v in (venue, asset, str(free), str(used))],
            "ON CONFLICT (venue, asset) DO UPDATE SET free = excluded.free, used = excluded.used",
        )
        _insert(
            connection,
            f"INSERT INTO sim_orders (venue, {SIM_ORDER_COLUMNS.sql})",
            1 + len(SIM_ORDER_COLUMNS.names),
            [v for o in state.orders for v in (venue, *SIM_ORDER_COLUMNS.row(o))],
            """ON CONFLICT (venue, exchange_order_id) DO UPDATE SET
                   filled = excluded.filled, status = excluded.status, locked = excluded.locked,
                   triggered = excluded.triggered""",
        )
        _insert(
            connection,
            f"INSERT INTO sim_trades (venue, {SIM_TRADE_COLUMNS.sql})",
            1 + len(SIM_TRADE_COLUMNS.names),
            [v for t in state.trades for v in (venue, *SIM_TRADE_COLUMNS.row(t))],
            "ON CONFLICT DO NOTHING",
        )
    _insert(
        connection,
        "INSERT INTO sim_replay (venue, symbol, last_ts)",
        3,
        [v for symbol, ts in record.replay.items() for v in (venue, symbol, ts)],
        "ON CONFLICT (venue, symbol) DO UPDATE SET last_ts = excluded.last_ts",
    )


# ----------------------------------------------------------------- reads


def load_journal(connection: sqlite3.Connection) -> list[JournalEntry]:
    """The whole journal, in order (tests and audits; a rebuild reads it in pages)."""
    rows = connection.execute(f"SELECT {JOURNAL_COLUMNS.sql} FROM journal ORDER BY seq").fetchall()
    return [JOURNAL_COLUMNS.record(row) for row in rows]


def load_ledger_checkpoint(connection: sqlite3.Connection) -> tuple[int, Any] | None:
    """The latest ledger checkpoint (``actors.ledger.core.LedgerCheckpoint``) and the
    sequence number of the journal entry it follows; None if there is none (or it is of a
    layout this limitline does not read: the whole journal is folded then)."""
    try:
        row = connection.execute("SELECT seq, state FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # a store of schema 7 or older, not migrated yet: none
        return None
    if row is None:
        return None
    checkpoint = ledger_checkpoint.decode(row[1])
    return None if checkpoint is None else (row[0], checkpoint)


def load_journal_page(connection: sqlite3.Connection, *, after: int, limit: int) -> tuple[list[JournalEntry], int]:
    """Up to ``limit`` journal entries with a sequence number above ``after``, in order, and
    the sequence number of the last one (``after`` if there is none). Read by the primary
    key, so a page costs its own rows however long the journal: a rebuild that folds the
    journal page by page holds one page in memory, not months of entries."""
    rows = connection.execute(
        f"SELECT seq, {JOURNAL_COLUMNS.sql} FROM journal WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    ).fetchall()
    return [JOURNAL_COLUMNS.record(row[1:]) for row in rows], (rows[-1][0] if rows else after)


def load_position_journal(connection: sqlite3.Connection) -> list[PositionEntry]:
    """The position book's entries in journal order: the book is their fold."""
    rows = connection.execute(f"SELECT {POSITION_JOURNAL_COLUMNS.sql} FROM position_journal ORDER BY seq").fetchall()
    return [POSITION_JOURNAL_COLUMNS.record(row) for row in rows]


def load_perpetual(connection: sqlite3.Connection, *, venue: str) -> PerpetualState | None:
    """A simulated perpetuals account as the store holds it, whole (None if never recorded)."""
    with connection:
        connection.execute("BEGIN")
        row = connection.execute("SELECT account FROM sim_perpetual WHERE venue = ?", (venue,)).fetchone()
        if row is None:
            return None
        parts = {}
        for kind, field, _, cls in PERPETUAL_ROWS:
            rows = connection.execute(
                "SELECT body FROM sim_perpetual_rows WHERE venue = ? AND kind = ? ORDER BY rowid", (venue, kind)
            ).fetchall()
            parts[field] = tuple(state_of(body, cls) for (body,) in rows)
    return attrs.evolve(state_of(row[0], PerpetualState), **parts)


def load_orders(
    connection: sqlite3.Connection,
    *,
    strategy: str | None = None,
    venue: str | None = None,
    open_only: bool = False,
) -> list[Order]:
    clauses, params = [], []
    if strategy is not None:
        clauses.append("strategy = ?")
        params.append(strategy)
    if venue is not None:
        clauses.append("venue = ?")
        params.append(venue)
    if open_only:
        finals = [s.value for s in OrderState if s.is_final]
        clauses.append(f"state NOT IN ({', '.join('?' * len(finals))})")
        params.extend(finals)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(f"SELECT {ORDER_COLUMNS.sql} FROM orders{where} ORDER BY created_at", params)
    return [ORDER_COLUMNS.record(row) for row in rows.fetchall()]


def load_record(
    connection: sqlite3.Connection,
    *,
    venue: str,
    client_order_ids: Iterable[str] = (),
    exchange_order_ids: Iterable[str] = (),
    trade_ids: Iterable[str] = (),
) -> tuple[list[Order], frozenset[tuple[str, str]]]:
    """What the reconciler compares for one venue, read in one transaction so the parts agree:
    the venue's orders that are not final, plus those the snapshots name (by client or
    exchange order id); and which of ``trade_ids`` the fills table holds, as (symbol, trade
    id) pairs (an exchange may number trades per market).

    The reads use indexes (schema version 4), so a cycle costs what is open or named, not
    the whole history: a months-long run keeps every order ever placed in the store."""
    finals = [s.value for s in OrderState if s.is_final]
    with connection:
        connection.execute("BEGIN")
        rows = connection.execute(
            f"""SELECT {ORDER_COLUMNS.sql} FROM orders WHERE venue = ? AND state NOT IN ({', '.join('?' * len(finals))})
                UNION SELECT {ORDER_COLUMNS.sql} FROM orders
                      WHERE client_order_id IN (SELECT value FROM json_each(?)) AND venue = ?
                UNION SELECT {ORDER_COLUMNS.sql} FROM orders
                      WHERE venue = ? AND exchange_order_id IN (SELECT value FROM json_each(?))""",
            (venue, *finals, json.dumps(sorted(set(client_order_ids))), venue, venue,
             json.dumps(sorted(set(exchange_order_ids)))),
        ).fetchall()
        recorded = connection.execute(
            "SELECT symbol, trade_id FROM fills WHERE venue = ? AND trade_id IN (SELECT value FROM json_each(?))",
            (venue, json.dumps(sorted(set(trade_ids)))),
        ).fetchall()
    orders = sorted((ORDER_COLUMNS.record(row) for row in rows), key=lambda o: (o.created_at, o.client_order_id))
    return orders, frozenset((row[0], row[1]) for row in recorded)


def check_owned(connection: sqlite3.Connection, strategies: Iterable[str]) -> None:
    """Raise :class:`OrphanedOrders` if orders that are not final belong to a strategy not
    in ``strategies``: after a config edit removed or renamed it, nothing would watch its
    orders (their fills, their time-to-live), and the actors would address a strategy that
    does not exist."""
    finals = [s.value for s in OrderState if s.is_final]
    rows = connection.execute(
        f"SELECT strategy, client_order_id FROM orders WHERE state NOT IN ({', '.join('?' * len(finals))}) ORDER BY strategy, created_at",
        finals,
    ).fetchall()
    known = set(strategies)
    orphans: dict[str, list[str]] = {}
    for strategy, cid in rows:
        if strategy not in known:
            orphans.setdefault(strategy, []).append(cid)
    if orphans:
        listed = "; ".join(f"{name}: {len(cids)} ({', '.join(cids[:3])}{', ...' if len(cids) > 3 else ''})" for name, cids in orphans.items())
        raise OrphanedOrders(
            f"the store holds open orders of strategies that are not in the config ({listed}). Put each strategy "
            "back in the config so its orders are managed again (cancel them with the operator endpoint, then remove "
            "it), or, for shadow mode only, start over with `limitline run --fresh`",
            orphans,
        )


def load_journal_of(connection: sqlite3.Connection, *, client_order_ids: Iterable[str]) -> list[JournalEntry]:
    """The ``reserve`` and ``settle`` entries of these orders, in journal order: what the
    ledger reads back of a reservation it no longer keeps in memory when a late fill names
    it (it comes back closed and empty, so its releases do not matter; the index by order,
    schema 9, holds only these)."""
    rows = connection.execute(
        f"SELECT {JOURNAL_COLUMNS.sql} FROM journal WHERE client_order_id IN (SELECT value FROM json_each(?))"
        " AND kind IN ('reserve', 'settle') ORDER BY seq",
        (json.dumps(sorted(set(client_order_ids))),),
    ).fetchall()
    return [JOURNAL_COLUMNS.record(row) for row in rows]


def load_simulated(connection: sqlite3.Connection, *, venue: str) -> tuple[ExchangeState | None, dict[str, int]]:
    """A simulated account as the store holds it (None if it never changed) and its
    replay positions (market -> time of the last candle released), read together.

    Of the orders, the open ones, the :data:`KEEP_FINISHED_ORDERS` most recently placed of
    those that ended (what the engine keeps in memory anyway: ``forget_finished``), and
    every order the order book of record does not yet hold as final; of the trades, the
    last :data:`RECENT_SIM_TRADES` and every trade of an order the order book of record
    does not yet hold as final (the evidence a restart may still have to report). So a
    restart after months reads what is live, not every order ever simulated (the table
    keeps them all). Placement order is row order: an order's row is inserted when it is
    placed and only updated after."""
    finals = [s.value for s in OrderState if s.is_final]
    with connection:
        connection.execute("BEGIN")
        replay = dict(connection.execute("SELECT symbol, last_ts FROM sim_replay WHERE venue = ?", (venue,)).fetchall())
        account = connection.execute("SELECT next_order, next_trade FROM sim_accounts WHERE venue = ?", (venue,)).fetchone()
        if account is None:
            return None, replay
        balances = {
            asset: (Decimal(free), Decimal(used))
            for asset, free, used in connection.execute("SELECT asset, free, used FROM sim_balances WHERE venue = ?", (venue,))
        }
        orders = [
            SIM_ORDER_COLUMNS.record(row[1:])
            for row in connection.execute(
                f"""SELECT venue, {SIM_ORDER_COLUMNS.sql} FROM sim_orders WHERE venue = ? AND (
                        status = 'open'
                        OR rowid IN (SELECT rowid FROM sim_orders WHERE venue = ? AND status != 'open'
                                     ORDER BY rowid DESC LIMIT ?)
                        OR client_order_id IN (SELECT client_order_id FROM orders
                                               WHERE venue = ? AND state NOT IN ({', '.join('?' * len(finals))})))""",
                (venue, venue, KEEP_FINISHED_ORDERS, venue, *finals),
            )
        ]
        trades = [
            SIM_TRADE_COLUMNS.record(row)
            for row in connection.execute(
                f"""SELECT {SIM_TRADE_COLUMNS.sql} FROM sim_trades WHERE venue = ? AND (
                        rowid IN (SELECT rowid FROM sim_trades WHERE venue = ? ORDER BY rowid DESC LIMIT ?)
                        OR client_order_id IN (SELECT client_order_id FROM orders
                                               WHERE venue = ? AND state NOT IN ({', '.join('?' * len(finals))})))""",
                (venue, venue, RECENT_SIM_TRADES, venue, *finals),
            )
        ]
    return ExchangeState(balances, account[0], account[1], tuple(orders), tuple(trades)), replay


def latest_events(
    connection: sqlite3.Connection, *, strategy: str | None = None, kind: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest activity-feed entries first."""
    clauses, params = [], []
    if strategy is not None:
        clauses.append("strategy = ?")
        params.append(strategy)
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(
        "SELECT seq, at, kind, actor, strategy, client_order_id, rule, reason, payload"
        f" FROM events{where} ORDER BY seq DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    keys = ("seq", "at", "kind", "actor", "strategy", "client_order_id", "rule", "reason")
    return [{**dict(zip(keys, row[:8])), "payload": json.loads(row[8])} for row in rows]

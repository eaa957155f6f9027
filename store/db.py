"""The sqlite file: opening it, writing a batch, and the reads the actors rebuild from.

Synchronous on purpose: the writer actor runs these on one worker thread at a time, and
readers (start-up rebuilds, the status endpoint) use connections of their own, which WAL
lets read while the writer writes. Only the writer actor ever calls :func:`write_batch`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from actors.messages import JournalEntry
from actors.orders import Order, OrderState
from actors.writer.core import Batch
from store.codec import dumps
from store.rows import Columns
from store.errors import NotAStore, StoreUnavailable
from store.schema import migrate, not_a_store

#: A column per field (store/schema.py has the same ones): amounts as decimal text, enums as
#: their values, an order's trade ids as a sorted JSON list. The orders table's ``type``
#: column is left to its default, ``limit``, the only kind of order there is.
JOURNAL_COLUMNS = Columns(JournalEntry)
ORDER_COLUMNS = Columns(Order)


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
        migrate(connection)
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


def write_batch(connection: sqlite3.Connection, batch: Batch) -> None:
    """Write ``batch`` in one transaction; with ``batch.durable`` the commit is fsynced."""
    connection.execute(f"PRAGMA synchronous = {'FULL' if batch.durable else 'NORMAL'}")
    with connection:
        connection.executemany(
            "INSERT INTO events (at, kind, actor, strategy, client_order_id, rule, reason, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.at, e.kind, e.actor, e.strategy, e.client_order_id, e.rule, e.reason, dumps(e.payload))
                for e in batch.events
            ],
        )
        connection.executemany(
            # The columns an order changes over its life; the rest are fixed when it is made.
            f"""INSERT INTO orders ({ORDER_COLUMNS.sql}) VALUES ({ORDER_COLUMNS.placeholders})
               ON CONFLICT (client_order_id) DO UPDATE SET
                   filled = excluded.filled, state = excluded.state,
                   exchange_order_id = excluded.exchange_order_id, reason = excluded.reason,
                   trade_ids = excluded.trade_ids, updated_at = excluded.updated_at,
                   final_filled = excluded.final_filled""",
            [ORDER_COLUMNS.row(o) for o in batch.orders.values()],
        )
        connection.executemany(
            """INSERT INTO fills (venue, trade_id, client_order_id, exchange_order_id, symbol, side,
                   price, amount, fee, fee_currency, at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
            [
                (
                    f.venue, f.trade_id, f.client_order_id, f.exchange_order_id, f.symbol, f.side.value,
                    str(f.price), str(f.amount), str(f.fee), f.fee_currency, f.at,
                )
                for f in batch.fills
            ],
        )
        connection.executemany(
            f"INSERT INTO journal ({JOURNAL_COLUMNS.sql}) VALUES ({JOURNAL_COLUMNS.placeholders})",
            [JOURNAL_COLUMNS.row(j) for j in batch.journal],
        )


# ----------------------------------------------------------------- reads


def load_journal(connection: sqlite3.Connection) -> list[JournalEntry]:
    rows = connection.execute(f"SELECT {JOURNAL_COLUMNS.sql} FROM journal ORDER BY seq").fetchall()
    return [JOURNAL_COLUMNS.record(row) for row in rows]


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


def load_fill_trade_ids(connection: sqlite3.Connection, *, venue: str) -> frozenset[str]:
    rows = connection.execute("SELECT trade_id FROM fills WHERE venue = ?", (venue,)).fetchall()
    return frozenset(row[0] for row in rows)


def load_record(connection: sqlite3.Connection, *, venue: str) -> tuple[list[Order], frozenset[str]]:
    """One venue's orders (all of them) and the trade ids of its recorded fills, read in one
    transaction so they agree with each other."""
    with connection:
        connection.execute("BEGIN")
        return load_orders(connection, venue=venue), load_fill_trade_ids(connection, venue=venue)


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

"""The sqlite file: opening it, writing a batch, and the reads the actors rebuild from.

Synchronous on purpose: the writer actor runs these on one worker thread at a time, and
readers (start-up rebuilds, the status endpoint) use connections of their own, which WAL
lets read while the writer writes. Only the writer actor ever calls :func:`write_batch`.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.messages import JournalEntry
from actors.orders import Order, OrderState
from actors.writer.core import Batch
from exchange.records import Side
from store.codec import dumps
from store.schema import migrate


def open_store(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the store at ``path``."""
    path = Path(path)
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 5000")
        return connection
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's connection moves between trio's worker threads (one at a time, under a
    # capacity limiter of 1), hence check_same_thread=False.
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.isolation_level = "DEFERRED"
    migrate(connection)
    return connection


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
            """INSERT INTO orders (client_order_id, strategy, venue, symbol, side, price, amount,
                   filled, state, exchange_order_id, rule, reason, trade_ids, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (client_order_id) DO UPDATE SET
                   filled = excluded.filled, state = excluded.state,
                   exchange_order_id = excluded.exchange_order_id, reason = excluded.reason,
                   trade_ids = excluded.trade_ids, updated_at = excluded.updated_at""",
            [
                (
                    o.client_order_id, o.strategy, o.venue, o.symbol, o.side.value, str(o.price),
                    str(o.amount), str(o.filled), o.state.value, o.exchange_order_id, o.rule,
                    o.reason, json.dumps(sorted(o.trade_ids)), o.created_at, o.updated_at,
                )
                for o in batch.orders.values()
            ],
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
            f"INSERT INTO journal ({_JOURNAL_COLUMNS}) VALUES ({', '.join('?' * 17)})",
            [_journal_row(j) for j in batch.journal],
        )


_JOURNAL_COLUMNS = (
    "at, kind, strategy, client_order_id, trade_id, side, price, amount, fee, fee_currency,"
    " quote_free, quote_reserved, base_free, base_reserved, realized_pnl, cost_basis, reason"
)


def _journal_row(j: JournalEntry) -> tuple[Any, ...]:
    # Plain text for decimals: exact, and several times cheaper than a JSON document.
    return (
        j.at, j.kind, j.strategy, j.client_order_id, j.trade_id, j.side.value if j.side else None,
        _text(j.price), _text(j.amount), str(j.fee), j.fee_currency, str(j.quote_free),
        str(j.quote_reserved), str(j.base_free), str(j.base_reserved), str(j.realized_pnl),
        str(j.cost_basis), j.reason,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


# ----------------------------------------------------------------- reads


def load_journal(connection: sqlite3.Connection) -> list[JournalEntry]:
    rows = connection.execute(f"SELECT {_JOURNAL_COLUMNS} FROM journal ORDER BY seq").fetchall()
    return [
        JournalEntry(
            kind=kind, strategy=strategy, at=at, client_order_id=cid, trade_id=trade_id,
            side=Side(side) if side else None, price=_decimal(price), amount=_decimal(amount),
            fee=Decimal(fee), fee_currency=fee_currency, quote_free=Decimal(quote_free),
            quote_reserved=Decimal(quote_reserved), base_free=Decimal(base_free),
            base_reserved=Decimal(base_reserved), realized_pnl=Decimal(realized_pnl),
            cost_basis=Decimal(cost_basis), reason=reason,
        )
        for (at, kind, strategy, cid, trade_id, side, price, amount, fee, fee_currency, quote_free,
             quote_reserved, base_free, base_reserved, realized_pnl, cost_basis, reason) in rows
    ]


_ORDER_COLUMNS = (
    "client_order_id, strategy, venue, symbol, side, price, amount, filled, state,"
    " exchange_order_id, rule, reason, trade_ids, created_at, updated_at"
)


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
    rows = connection.execute(f"SELECT {_ORDER_COLUMNS} FROM orders{where} ORDER BY created_at", params)
    return [_order_from_row(row) for row in rows.fetchall()]


def _order_from_row(row: tuple[Any, ...]) -> Order:
    (cid, strategy, venue, symbol, side, price, amount, filled, state, exchange_id, rule, reason,
     trade_ids, created_at, updated_at) = row
    return Order(
        client_order_id=cid,
        strategy=strategy,
        venue=venue,
        symbol=symbol,
        side=Side(side),
        price=Decimal(price),
        amount=Decimal(amount),
        state=OrderState(state),
        created_at=created_at,
        updated_at=updated_at,
        rule=rule or "",
        filled=Decimal(filled),
        exchange_order_id=exchange_id,
        reason=reason or "",
        trade_ids=frozenset(json.loads(trade_ids)),
    )


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

"""What the HTTP endpoints read from the store: plain functions of a read-only sqlite
connection, run on the store's reader thread (``SqliteReader.read``).

Each reads only what one page or one scrape shows: the strategies of one page, the feed
after a sequence number, counts grouped in sqlite. Amounts stay decimal text as stored.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any, Iterable

from actors.orders import OrderState

FINAL_STATES = tuple(s.value for s in OrderState if s.is_final)
#: The events that are a strategy's decision on a candle: evaluated (no rule fired, or
#: before what followed), blocked (with its reason), an order placed (with its rule).
DECISIONS = ("evaluated", "blocked", "order_placed")
EVENT_KEYS = ("seq", "at", "kind", "actor", "strategy", "client_order_id", "rule", "reason")


def _marks(names: Iterable[str]) -> str:
    return ", ".join("?" for _ in names)


def feed(
    connection: sqlite3.Connection,
    *,
    after: int | None,
    strategy: str | None,
    kinds: tuple[str, ...],
    limit: int,
) -> list[dict[str, Any]]:
    """Activity-feed entries: with ``after``, those newer than that sequence number, oldest
    first (what a live view appends); without it, the newest ``limit``, newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    if strategy:
        clauses.append("strategy = ?")
        params.append(strategy)
    if kinds:
        clauses.append(f"kind IN ({_marks(kinds)})")
        params.extend(kinds)
    if after is not None:
        clauses.append("seq > ?")
        params.append(after)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    order = "ASC" if after is not None else "DESC"
    rows = connection.execute(
        f"SELECT seq, at, kind, actor, strategy, client_order_id, rule, reason, payload FROM events{where}"
        f" ORDER BY seq {order} LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [{**dict(zip(EVENT_KEYS, row[:8])), "payload": json.loads(row[8])} for row in rows]


def chart_rows(
    connection: sqlite3.Connection, *, name: str, fills: int
) -> tuple[list[dict[str, Any]], list[tuple[str | None, Decimal, Decimal]]]:
    """For a strategy's chart: its newest ``fills`` fill events (oldest first), and every
    journal entry that changes what it holds (allocate, settle, correct) as (trade id,
    quote delta, base delta), in order."""
    events = feed(connection, after=None, strategy=name, kinds=("fill",), limit=fills)
    events.reverse()
    rows = connection.execute(
        "SELECT trade_id, quote_free, quote_reserved, base_free, base_reserved FROM journal"
        " WHERE strategy = ? AND kind IN ('allocate', 'settle', 'correct') ORDER BY seq",
        (name,),
    )
    journal = [(trade, Decimal(qf) + Decimal(qr), Decimal(bf) + Decimal(br)) for trade, qf, qr, bf, br in rows]
    return events, journal


def newest_seq(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]


def strategy_details(connection: sqlite3.Connection, *, names: list[str]) -> dict[str, dict[str, Any]]:
    """For each strategy of a page: its open orders (from the order book of record), its
    last decision and the close of the last candle it evaluated (its mark price)."""
    details: dict[str, dict[str, Any]] = {name: {"orders": [], "last_decision": None, "mark": None} for name in names}
    if not names:
        return details
    rows = connection.execute(
        "SELECT strategy, client_order_id, side, price, amount, filled, state, rule, created_at FROM orders"
        f" WHERE strategy IN ({_marks(names)}) AND state NOT IN ({_marks(FINAL_STATES)}) ORDER BY created_at",
        [*names, *FINAL_STATES],
    ).fetchall()
    for strategy, cid, side, price, amount, filled, state, rule, created_at in rows:
        details[strategy]["orders"].append(
            {"client_order_id": cid, "side": side, "price": price, "amount": amount, "filled": filled,
             "state": state, "rule": rule, "created_at": created_at}
        )
    for name in names:
        # Both walk the (strategy, seq) index backwards from the newest entry.
        decision = connection.execute(
            f"SELECT seq, at, kind, rule, reason, payload FROM events WHERE strategy = ? AND kind IN ({_marks(DECISIONS)})"
            " ORDER BY seq DESC LIMIT 1",
            [name, *DECISIONS],
        ).fetchone()
        if decision is not None:
            seq, at, kind, rule, reason, payload = decision
            details[name]["last_decision"] = {"seq": seq, "at": at, "kind": kind, "rule": rule, "reason": reason,
                                              "summary": _decision_summary(kind, rule, reason, json.loads(payload))}
        evaluated = connection.execute(
            "SELECT at, payload FROM events WHERE strategy = ? AND kind = 'evaluated' ORDER BY seq DESC LIMIT 1", [name]
        ).fetchone()
        if evaluated is not None:
            payload = json.loads(evaluated[1])
            details[name]["mark"] = {"price": payload.get("close"), "candle_ts": payload.get("ts"), "at": evaluated[0]}
    return details


def _decision_summary(kind: str, rule: str | None, reason: str | None, payload: dict[str, Any]) -> str:
    if kind == "evaluated":
        rules = payload.get("rules", [])
        fired = [r["rule"] for r in rules if r.get("fired")]
        if fired:
            return f"fired: {', '.join(fired)}"
        return "no rule fired" + (f" ({', '.join(r['rule'] for r in rules)})" if rules else "")
    if kind == "blocked":
        return f"blocked{f' {rule}' if rule else ''}: {reason}"
    return f"order placed: {payload.get('side')} {payload.get('amount')} @ {payload.get('price')} (rule {rule})"


# ------------------------------------------------------------------ metrics


def metric_counts(connection: sqlite3.Connection) -> dict[str, Any]:
    """The counts ``/metrics`` takes from the store, grouped in sqlite: orders by strategy
    and state, fills per strategy, and reservations the ledger denied, by strategy and the
    reason's class (the text before its first ``:``, such as ``insufficient capital``)."""
    orders = connection.execute("SELECT strategy, state, count(*) FROM orders GROUP BY strategy, state").fetchall()
    fills = connection.execute(
        "SELECT o.strategy, count(*) FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id GROUP BY o.strategy"
    ).fetchall()
    # A denial is the one ``blocked`` event that names an order: the ledger refused its
    # reservation (every other block happens before an order exists).
    denied = connection.execute(
        "SELECT coalesce(strategy, ''), trim(substr(reason, 1, instr(coalesce(reason, '') || ':', ':') - 1)), count(*)"
        " FROM events WHERE kind = 'blocked' AND client_order_id IS NOT NULL GROUP BY 1, 2"
    ).fetchall()
    by_reason = {(strategy, (reason or "unknown")[:60]): count for strategy, reason, count in denied}
    return {"orders": orders, "fills": fills, "denied": by_reason}

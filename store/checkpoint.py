"""The ledger's checkpoint as the store keeps it: one JSON document per checkpoint.

A checkpoint (``actors.ledger.core.LedgerCheckpoint``) is the fold of the journal up to
one entry; the ``ledger_checkpoints`` table keeps it with that entry's sequence number, so
a restart folds only the entries after it: its time follows what happened since the last
checkpoint, not the journal's length. Amounts are decimal text (exact, as in the journal).
A document of another version than :data:`VERSION` is not read (the rebuild then folds
the whole journal, which is always right).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from actors.ledger.core import Account, LedgerCheckpoint, Reservation
from exchange.records import Side

#: The document's layout; a change of layout is a new version.
VERSION = 1


def encode(checkpoint: LedgerCheckpoint) -> str:
    """``checkpoint`` as a JSON document: accounts and reservations as arrays of their
    fields, in the order the fold keeps them."""
    accounts = [
        [a.strategy, str(a.quote_free), str(a.quote_reserved), str(a.base_free), str(a.base_reserved),
         str(a.realized_pnl), str(a.cost_basis), _amounts(a.fees_paid), _amounts(a.others)]
        for a in checkpoint.accounts
    ]
    reservations = [
        [r.client_order_id, r.strategy, r.side.value, str(r.price), str(r.amount), str(r.quote_reserved),
         str(r.base_reserved), str(r.unit_quote), str(r.filled), sorted(r.trade_ids), r.open,
         None if r.awaiting is None else str(r.awaiting)]
        for r in checkpoint.reservations
    ]
    document = {
        "version": VERSION, "next_sweep": checkpoint.next_sweep, "open_strategies": list(checkpoint.open_strategies),
        "accounts": accounts, "reservations": reservations,
    }
    return json.dumps(document, separators=(",", ":"))


def decode(text: str) -> LedgerCheckpoint | None:
    """The checkpoint ``text`` holds; None if it is of another version."""
    document = json.loads(text)
    if document.get("version") != VERSION:
        return None
    accounts = tuple(
        Account(
            strategy=name, quote_free=Decimal(qf), quote_reserved=Decimal(qr), base_free=Decimal(bf),
            base_reserved=Decimal(br), realized_pnl=Decimal(pnl), cost_basis=Decimal(cost),
            fees_paid=_decimals(fees), others=_decimals(others),
        )
        for name, qf, qr, bf, br, pnl, cost, fees, others in document["accounts"]
    )
    reservations = tuple(
        Reservation(
            client_order_id=cid, strategy=strategy, side=Side(side), price=Decimal(price), amount=Decimal(amount),
            quote_reserved=Decimal(qr), base_reserved=Decimal(br), unit_quote=Decimal(unit), filled=Decimal(filled),
            trade_ids=set(trade_ids) if trade_ids else frozenset(), open=open_,
            awaiting=None if awaiting is None else Decimal(awaiting),
        )
        for cid, strategy, side, price, amount, qr, br, unit, filled, trade_ids, open_, awaiting in document["reservations"]
    )
    return LedgerCheckpoint(accounts, reservations, int(document["next_sweep"]), tuple(document["open_strategies"]))


def _amounts(values: dict[str, Decimal]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


def _decimals(values: dict[str, Any]) -> dict[str, Decimal]:
    return {key: Decimal(value) for key, value in values.items()}

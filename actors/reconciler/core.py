"""The reconciler's rules: compare the order book of record with the exchange's truth.

A difference is reported only when two consecutive cycles both show it, because an order
in flight (sent but not yet acknowledged, or filled but not yet recorded) looks like a
difference for a moment and is not one.

Classes of difference found so far:

- ``unknown_exchange_order``: the exchange holds an open order that our record does not
  have open (an operator's order, or one we lost track of);
- ``missing_on_exchange``: our record holds an order open that the exchange no longer
  lists (cancelled outside limitline, or a fill we missed).
"""

from __future__ import annotations

from typing import Any

import attrs

from actors.messages import WRITER, ExchangeSnapshot, RecordEvent, Send
from actors.orders import Order, OrderState

#: States in which the exchange must list the order. SUBMITTING and UNKNOWN are in flight
#: or being resolved by evidence; CANCELING may be gone already.
MUST_BE_LISTED = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED})


@attrs.frozen
class Difference:
    kind: str
    venue: str
    client_order_id: str
    strategy: str | None
    detail: str


def compare(record: list[Order], snapshot: ExchangeSnapshot) -> list[Difference]:
    ours = {o.client_order_id: o for o in record if not o.state.is_final}
    theirs = {o.client_order_id: o for o in snapshot.open_orders}
    out = []
    for cid, order in sorted(theirs.items()):
        if cid not in ours:
            out.append(
                Difference("unknown_exchange_order", snapshot.venue, cid, None,
                           f"the exchange lists open {order.side.value} {order.amount} {order.symbol} @ {order.price}, not open in our record")
            )
    for cid, mine in sorted(ours.items()):
        if mine.state in MUST_BE_LISTED and cid not in theirs:
            out.append(
                Difference("missing_on_exchange", snapshot.venue, cid, mine.strategy,
                           f"our record holds it {mine.state.value}; the exchange does not list it open")
            )
    return out


class ReconcilerCore:
    def __init__(self) -> None:
        self._previous: dict[str, set[Difference]] = {}
        self.cycles = 0
        self.reported: list[Difference] = []
        self.first_cycle_done: set[str] = set()

    def on_cycle(self, record: list[Order], snapshot: ExchangeSnapshot, now: float) -> list[Send]:
        """Compare once; report what the previous cycle of this venue showed too."""
        self.cycles += 1
        current = set(compare(record, snapshot))
        stable = current & self._previous.get(snapshot.venue, set())
        self._previous[snapshot.venue] = current
        self.first_cycle_done.add(snapshot.venue)
        out = []
        for difference in sorted(stable, key=lambda d: (d.kind, d.client_order_id)):
            if difference in self.reported:
                continue
            self.reported.append(difference)
            out.append(
                Send(
                    WRITER,
                    RecordEvent(
                        kind="reconcile_difference",
                        actor="reconciler",
                        at=now,
                        strategy=difference.strategy,
                        client_order_id=difference.client_order_id,
                        reason=f"{difference.kind}: {difference.detail}",
                        payload={"class": difference.kind, "venue": difference.venue},
                    ),
                )
            )
        return out

    def status(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "venues_reconciled": sorted(self.first_cycle_done),
            "differences_reported": len(self.reported),
        }

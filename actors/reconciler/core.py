"""The reconciler's rules: exchange truth against the order book of record and the ledger.

Exchange truth wins, and repairs go only through the ledger and the connection's evidence:
the reconciler never places or cancels an order.

A difference counts only when two consecutive cycles both show it: an order in flight
(sent, not yet acknowledged; filled, not yet recorded) looks like a difference for a moment
and is not one. Each class and what is done about it:

| class | what it is | action |
|---|---|---|
| ``missed_fill`` | a trade of one of our orders that the fills table lacks | settled through the ledger (duplicates are ignored there) |
| ``missing_on_exchange`` | our record holds an order open that the exchange no longer lists | the connection checks it by evidence (cancelled outside, or filled) |
| ``reservation_without_order`` | the ledger holds a reservation for an order that is final or absent | released through the ledger |
| ``external_order`` | an open order on the exchange that no intent of ours made | recorded as external (an operator's) |
| ``stale_final`` | an order our record holds final is still open on the exchange | unexplained: its strategy is paused |
| ``balance_changed`` | the exchange holds less of an asset than the strategies on it do | unexplained: those strategies are paused; judged only in a cycle with no ``missed_fill``, no ``missing_on_exchange`` and no UNKNOWN order (fills still to be booked) |

A paused strategy places no order until an operator resumes it (``POST
/strategies/NAME/resume``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

import attrs

from actors.messages import (
    LEDGER,
    WRITER,
    CheckOrder,
    ExchangeSnapshot,
    FillReport,
    LedgerSnapshot,
    Pause,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordKeys,
    Release,
    Send,
    connection_address,
    strategy_address,
)
from actors.orders import Order, OrderState, oco_list_of

#: States in which the exchange must list the order. SUBMITTING and UNKNOWN are in flight
#: or being resolved by evidence; CANCELING may be gone already.
MUST_BE_LISTED = frozenset({OrderState.OPEN, OrderState.PARTIALLY_FILLED})
#: Balances closer than this are equal (ccxt hands amounts over as floats).
TOLERANCE = Decimal("0.00000001")
#: Differences whose repair may book fills: while one shows, balances are not judged.
BOOKING_PENDING = frozenset({"missed_fill", "missing_on_exchange"})


@attrs.frozen
class Difference:
    kind: str
    venue: str
    key: str  # client order id, trade id or asset
    strategy: str | None
    detail: str


@attrs.frozen
class Market:
    venue: str
    base: str
    quote: str


@attrs.frozen
class Record:
    """What the store says about one venue: its orders that are not final plus those the
    snapshots name (:func:`wanted`), and which of the exchange's trades it has recorded."""

    orders: tuple[Order, ...]
    #: (symbol, trade id) of the recorded fills among the exchange's trades: Binance numbers
    #: trades per market, so a trade id alone may name trades of two markets.
    fill_trade_ids: frozenset[tuple[str, str]]


def wanted(exchange: ExchangeSnapshot, ledger: LedgerSnapshot) -> RecordKeys:
    """The orders and trades :func:`compare` looks up besides the open orders: a cycle
    reads what is open or named, never the whole history of a months-long run."""
    return RecordKeys(
        client_order_ids=frozenset(
            {o.client_order_id for o in exchange.open_orders if o.client_order_id} | set(ledger.open_reservations)
        ),
        exchange_order_ids=frozenset(
            {o.exchange_order_id for o in exchange.open_orders} | {t.exchange_order_id for t in exchange.trades}
        ),
        trade_ids=frozenset(t.trade_id for t in exchange.trades),
    )


def compare(record: Record, exchange: ExchangeSnapshot, ledger: LedgerSnapshot,
            markets: Mapping[str, Market]) -> list[tuple[Difference, list[Send]]]:
    """Every difference on one venue, each with the messages that apply it."""
    venue = exchange.venue
    ours = {o.client_order_id: o for o in record.orders}
    by_exchange_id = {o.exchange_order_id: o for o in record.orders if o.exchange_order_id}
    listed = {o.client_order_id: o for o in exchange.open_orders}
    # A spot OCO list is one order of record; the exchange lists its legs (actors.orders.oco_leg_ids).
    listed.update({oco_list_of(cid): o for cid, o in list(listed.items()) if oco_list_of(cid)})
    listed_ids = {o.exchange_order_id for o in exchange.open_orders}
    out: list[tuple[Difference, list[Send]]] = []

    for trade in exchange.trades:
        order = by_exchange_id.get(trade.exchange_order_id)
        if order is None or (trade.symbol, trade.trade_id) in record.fill_trade_ids:
            continue
        report = FillReport(
            venue=venue, client_order_id=order.client_order_id, exchange_order_id=trade.exchange_order_id,
            trade_id=trade.trade_id, symbol=trade.symbol, side=trade.side, price=trade.price, amount=trade.amount,
            fee=trade.fee, fee_currency=trade.fee_currency, at=exchange.at, order_complete=False,
        )
        out.append((
            Difference("missed_fill", venue, trade.trade_id, order.strategy,
                       f"trade {trade.trade_id} of {order.client_order_id}: {trade.amount} @ {trade.price}"),
            [Send(LEDGER, report), Send(strategy_address(order.strategy), report)],
        ))

    for cid, order in sorted(ours.items()):
        if order.state in MUST_BE_LISTED and cid not in listed and order.exchange_order_id not in listed_ids:
            out.append((
                Difference("missing_on_exchange", venue, cid, order.strategy,
                           f"our record holds it {order.state.value}; the exchange does not list it open"),
                [Send(connection_address(venue), CheckOrder(order))],
            ))

    for item in sorted(exchange.open_orders, key=lambda o: o.exchange_order_id):
        mine = (ours.get(item.client_order_id) or by_exchange_id.get(item.exchange_order_id)
                or ours.get(oco_list_of(item.client_order_id) or ""))
        if mine is None:
            out.append((
                Difference("external_order", venue, item.exchange_order_id, None,
                           f"open {item.side.value} {item.amount} {item.symbol} @ {item.price} "
                           f"(client id {item.client_order_id or 'none'}) was not placed by limitline"),
                [],
            ))
        elif mine.state.is_final:
            out.append((
                Difference("stale_final", venue, mine.client_order_id, mine.strategy,
                           f"our record holds it {mine.state.value} but the exchange lists it open"),
                [Send(strategy_address(mine.strategy), Pause(mine.strategy, f"order {mine.client_order_id} is "
                      f"{mine.state.value} in our record but open on {venue}"))],
            ))

    for cid, strategy in sorted(ledger.open_reservations.items()):
        market = markets.get(strategy)
        if market is None or market.venue != venue:
            continue
        order = ours.get(cid)
        if order is None or order.state.is_final:
            state = order.state.value if order else "absent from the record"
            out.append((
                Difference("reservation_without_order", venue, cid, strategy, f"the order is {state}"),
                [Send(LEDGER, Release(cid, f"reconciler: no live order ({state})"))],
            ))

    if any(difference.kind in BOOKING_PENDING for difference, _ in out) or any(
            o.state is OrderState.UNKNOWN for o in record.orders):
        # Fills being repaired or looked up change the books: balances are judged once they
        # are booked, so a repaired difference is never also reported as an unexplained one.
        # An order the exchange no longer lists (or one UNKNOWN) may have traded: a spot OCO
        # list's trades name a leg's order id, which the record does not hold, so a leg
        # filled while limitline was down is no missed_fill here; the connection's lookup
        # books it. A balance truly gone still shows once nothing is outstanding.
        return out
    held: dict[str, Decimal] = {}
    holders: dict[str, list[str]] = {}
    for strategy, owed in ledger.others.items():
        market = markets.get(strategy)
        if market is not None and market.venue == venue:
            for asset, amount in owed.items():
                held[asset] = held.get(asset, Decimal(0)) + amount  # fees paid in BNB, say
    for strategy, (quote, base) in ledger.holdings.items():
        market = markets.get(strategy)
        if market is None or market.venue != venue:
            continue
        for asset, amount in ((market.quote, quote), (market.base, base)):
            held[asset] = held.get(asset, Decimal(0)) + amount
            if amount > 0:
                holders.setdefault(asset, []).append(strategy)
    for asset, amount in sorted(held.items()):
        on_exchange = exchange.balances.get(asset, Decimal(0))
        if on_exchange + TOLERANCE < amount:
            reason = (f"balance changed outside limitline: {venue} holds {on_exchange} {asset}, "
                      f"the strategies hold {amount} {asset}")
            out.append((
                Difference("balance_changed", venue, f"{asset}:{on_exchange}:{amount}", None, reason),
                [Send(strategy_address(s), Pause(s, reason)) for s in holders.get(asset, [])],
            ))
    return out


#: Classes whose key is not a client order id (an asset, a trade, a symbol, an income id).
NOT_ORDER_KEYS = frozenset({
    "balance_changed", "missed_fill", "closed_by_protection", "liquidated", "position_changed_outside",
    "margin_changed", "funding",
})

#: A venue counts as reconciled after this many cycles (the two-cycle rule acts on the 2nd)...
CYCLES_TO_RECONCILE = 2
#: ... and once no order of record is being looked up (``missing_on_exchange``): its lookup
#: may book fills (a spot list's leg that traded while limitline was down), and a strategy's
#: pre-flight, run when it hears its venue is reconciled, compares what it holds with the
#: exchange. A lookup that never ends holds the venue back at most this many seconds from
#: its first cycle.
LOOKUP_WAIT_SECONDS = 30.0


class ReconcilerCore:
    def __init__(self, markets: Mapping[str, Market], perpetuals: Mapping[str, tuple[str, str]] | None = None) -> None:
        """``markets``: each spot strategy's venue and assets; ``perpetuals``: each strategy
        of positions' venue and symbol (their differences: ``actors.reconciler.positions_core``)."""
        self.markets = dict(markets)
        self.perpetuals = dict(perpetuals or {})
        self._previous: dict[str, set[Difference]] = {}
        #: Per venue, the differences acted on that are still shown: each is applied once
        #: while it lasts. One that is gone is forgotten (a later recurrence is a new one),
        #: so this holds at most what the exchange shows now, however long the run.
        self._applied: dict[str, set[Difference]] = {}
        self.cycles = 0
        self.counts: dict[str, int] = {}
        self._venue_cycles: dict[str, int] = {}
        self._first_cycle_at: dict[str, float] = {}
        self.venues_reconciled: set[str] = set()
        #: venue -> when its last cycle was compared (for the operator's view).
        self.last_cycle_at: dict[str, float] = {}
        self._asking: dict[str, set[str]] = {}

    def query(self, message: ReconciledQuery) -> list[Send]:
        """A strategy waits for its venue's reconciliation before it may submit."""
        if message.venue in self.venues_reconciled:
            return [Send(message.reply_to, Reconciled(message.venue))]
        self._asking.setdefault(message.venue, set()).add(message.reply_to)
        return []

    def on_cycle(self, record: Record, exchange: ExchangeSnapshot, ledger: LedgerSnapshot, now: float) -> list[Send]:
        """Compare one venue; apply what the previous cycle showed too, once."""
        self.cycles += 1
        venue = exchange.venue
        found = compare(record, exchange, ledger, self.markets)
        if exchange.positions is not None and self.perpetuals:
            from actors.reconciler.positions_core import compare_positions  # it builds on this module

            found += compare_positions(record.orders, exchange, ledger, self.perpetuals)
        current = {difference for difference, _ in found}
        stable = current & self._previous.get(venue, set())
        self._previous[venue] = current
        self._venue_cycles[venue] = self._venue_cycles.get(venue, 0) + 1
        self._first_cycle_at.setdefault(venue, now)
        self.last_cycle_at[venue] = now
        applied = self._applied[venue] = self._applied.get(venue, set()) & current
        out: list[Send] = []
        for difference, actions in found:
            if difference not in stable or difference in applied:
                continue
            applied.add(difference)
            self.counts[difference.kind] = self.counts.get(difference.kind, 0) + 1
            out.append(Send(WRITER, RecordEvent(
                kind="reconcile_difference", actor="reconciler", at=now, strategy=difference.strategy,
                client_order_id=None if difference.kind in NOT_ORDER_KEYS else difference.key,
                reason=f"{difference.kind}: {difference.detail}",
                payload={"class": difference.kind, "venue": difference.venue, "key": difference.key},
            )))
            out += actions
        looking_up = any(difference.kind == "missing_on_exchange" for difference in current)
        if (venue not in self.venues_reconciled and self._venue_cycles[venue] >= CYCLES_TO_RECONCILE
                and (not looking_up or now - self._first_cycle_at[venue] >= LOOKUP_WAIT_SECONDS)):
            self.venues_reconciled.add(venue)
            out.append(Send(WRITER, RecordEvent(kind="venue_reconciled", actor="reconciler", at=now,
                                                reason=f"{venue}: state compared with the exchange; orders may flow")))
            # Every strategy of the venue hears it, not only those that asked this
            # incarnation: a strategy that asked one that then restarted waits for no one
            # (an active strategy ignores it; an inactive one checks itself again).
            of_venue = {strategy_address(name) for name, market in self.markets.items() if market.venue == venue}
            of_venue |= {strategy_address(name) for name, (where, _) in self.perpetuals.items() if where == venue}
            out += [Send(to, Reconciled(venue)) for to in sorted(self._asking.pop(venue, set()) | of_venue)]
        return out

    def reconciled(self, venue: str) -> bool:
        return venue in self.venues_reconciled

    def status(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "venues_reconciled": sorted(self.venues_reconciled),
            "differences": dict(self.counts),
            "last_cycle_at": dict(self.last_cycle_at),
        }

"""The reconciler's classes of difference, with plain calls: each found, applied once,
only when two consecutive cycles show it."""

from __future__ import annotations

from decimal import Decimal as D

from actors.messages import (
    LEDGER,
    CheckOrder,
    ExchangeSnapshot,
    FillReport,
    LedgerSnapshot,
    Pause,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    Release,
)
from actors.orders import Order, OrderState
from actors.reconciler.core import LOOKUP_WAIT_SECONDS, Market, ReconcilerCore, Record
from exchange.records import ExchangeOrder, ExchangeTrade, Side

MARKETS = {"a": Market("sim", "BTC", "USD"), "b": Market("sim", "BTC", "USD")}


def order(cid, state=OrderState.OPEN, exchange_id="1", strategy="a") -> Order:
    return Order(cid, strategy, "sim", "BTC/USD", Side.BUY, D("100"), D("1"), state, 0.0, 0.0, exchange_order_id=exchange_id)


def exchange(open_orders=(), balances=None, trades=()) -> ExchangeSnapshot:
    return ExchangeSnapshot("sim", tuple(open_orders), balances or {"USD": D("1000"), "BTC": D("1")}, 1.0, 0, tuple(trades))


def listed(cid, exchange_id="1") -> ExchangeOrder:
    return ExchangeOrder(cid, exchange_id, "BTC/USD", Side.BUY, D("100"), D("1"), D("0"))


LEDGER_OK = LedgerSnapshot(0, {"a": (D("500"), D("0.5")), "b": (D("500"), D("0.5"))}, {})


def twice(record, snapshot, ledger=LEDGER_OK):
    core = ReconcilerCore(MARKETS)
    first = core.on_cycle(record, snapshot, ledger, 1.0)
    second = core.on_cycle(record, snapshot, ledger, 2.0)
    third = core.on_cycle(record, snapshot, ledger, 3.0)
    assert first == [] and third == [], "a difference acts only on its second sighting, and once"
    events = [s.message for s in second if isinstance(s.message, RecordEvent) and s.message.kind == "reconcile_difference"]
    actions = [s for s in second if not isinstance(s.message, (RecordEvent, Reconciled))]
    return [e.payload["class"] for e in events], events, actions


def test_agreement_is_quiet():
    assert twice(Record((order("c1"),), frozenset()), exchange([listed("c1")])) == ([], [], [])


def test_a_missed_fill_is_settled_through_the_ledger():
    trade = ExchangeTrade("t9", "1", "BTC/USD", Side.BUY, D("100"), D("0.4"), D("0.04"), "USD")
    classes, events, actions = twice(Record((order("c1"),), frozenset()), exchange([listed("c1")], trades=[trade]))
    assert classes == ["missed_fill"]
    fills = {s.to for s in actions if isinstance(s.message, FillReport)}
    assert fills == {LEDGER, "strategy:a"}
    classes, _, _ = twice(Record((order("c1"),), frozenset({("BTC/USD", "t9")})), exchange([listed("c1")], trades=[trade]))
    assert classes == []


def test_a_repaired_missed_fill_is_not_also_an_unexplained_balance_change():
    # The exchange spent 40.04 USD on a trade our books lack: the fill is repaired, and the
    # same cycle does not pause anyone for "balance changed outside limitline".
    trade = ExchangeTrade("t9", "1", "BTC/USD", Side.BUY, D("100"), D("0.4"), D("0.04"), "USD")
    snapshot = exchange([listed("c1")], balances={"USD": D("959.96"), "BTC": D("1.4")}, trades=[trade])
    classes, _, actions = twice(Record((order("c1"),), frozenset()), snapshot)
    assert classes == ["missed_fill"]
    assert not [s for s in actions if isinstance(s.message, Pause)]


def oco_list(state=OrderState.OPEN) -> Order:
    """A spot OCO sell list of record (``exchange_order_id`` ``list-<id>``, as the live
    connection records it) protecting 0.5 BTC of strategy a."""
    return Order("ll-a-1a2b3c-k3f9qz-2", "a", "sim", "BTC/USD", Side.SELL, D("110"), D("0.5"), state, 0.0, 0.0,
                 exchange_order_id="list-7", order_type="oco", trigger_price=D("95"))


def test_a_list_leg_filled_while_down_is_looked_up_before_balances_are_judged():
    # The stop leg (order 8, not the list's id) sold 0.5 BTC while limitline was down: the
    # exchange lists no leg and holds 0.5 BTC less than the books. The leg's trade names an
    # order id the record does not hold, so it is no missed_fill; the list is looked up
    # (missing_on_exchange) and that lookup books the fill: no pause in the meantime.
    leg_trade = ExchangeTrade("t5", "8", "BTC/USD", Side.SELL, D("95"), D("0.5"), D("0.0475"), "USD")
    lower = {"USD": D("1047.45"), "BTC": D("0.5")}
    classes, _, actions = twice(Record((oco_list(),), frozenset()), exchange(balances=lower, trades=[leg_trade]))
    assert classes == ["missing_on_exchange"]
    assert [(s.to, type(s.message)) for s in actions] == [("connection:sim", CheckOrder)]
    # Once nothing is outstanding (the list final in the record) and the books still hold
    # the coins, the difference is real and reported.
    classes, events, actions = twice(Record((oco_list(OrderState.FILLED),), frozenset()), exchange(balances=lower))
    assert classes == ["balance_changed"]
    assert "sim holds 0.5 BTC, the strategies hold 1.0 BTC" in events[0].reason
    assert sorted(s.to for s in actions if isinstance(s.message, Pause)) == ["strategy:a", "strategy:b"]


def test_a_venue_is_reconciled_once_its_lookups_have_booked_what_they_found():
    # Strategies run their pre-flight (what they hold against the exchange) when they hear
    # their venue is reconciled: not while the list's lookup may still book the leg's fill.
    core = ReconcilerCore(MARKETS)
    lower = exchange(balances={"USD": D("1047.45"), "BTC": D("0.5")})
    reconciled = lambda sends: [s.to for s in sends if isinstance(s.message, Reconciled)]  # noqa: E731
    assert core.on_cycle(Record((oco_list(),), frozenset()), lower, LEDGER_OK, 1.0) == []
    second = core.on_cycle(Record((oco_list(),), frozenset()), lower, LEDGER_OK, 2.0)
    assert [type(s.message) for s in second if not isinstance(s.message, RecordEvent)] == [CheckOrder]
    assert reconciled(second) == [] and not core.reconciled("sim")
    booked = LedgerSnapshot(0, {"a": (D("547.45"), D("0")), "b": (D("500"), D("0.5"))}, {})
    third = core.on_cycle(Record((oco_list(OrderState.FILLED),), frozenset()), lower, booked, 3.0)
    assert reconciled(third) == ["strategy:a", "strategy:b"] and core.reconciled("sim")
    assert not [s for s in third if isinstance(s.message, Pause)]
    # A lookup that never ends holds the venue back only so long.
    core = ReconcilerCore(MARKETS)
    for now in (1.0, 2.0, 3.0):
        assert reconciled(core.on_cycle(Record((oco_list(),), frozenset()), lower, LEDGER_OK, now)) == []
    late = core.on_cycle(Record((oco_list(),), frozenset()), lower, LEDGER_OK, 1.0 + LOOKUP_WAIT_SECONDS)
    assert reconciled(late) == ["strategy:a", "strategy:b"]


def test_balances_wait_while_an_order_is_unknown():
    # A submit whose outcome is unknown may have filled; its trade cannot be matched to it
    # (no exchange id yet). Balances are judged once its evidence has resolved it.
    lower = {"USD": D("900"), "BTC": D("1")}
    classes, _, actions = twice(Record((order("c1", OrderState.UNKNOWN, exchange_id=None),), frozenset()), exchange(balances=lower))
    assert classes == [] and actions == []
    classes, _, _ = twice(Record((order("c1", OrderState.REJECTED, exchange_id=None),), frozenset()), exchange(balances=lower))
    assert classes == ["balance_changed"]


def test_an_order_gone_from_the_exchange_is_checked_by_evidence():
    classes, events, actions = twice(Record((order("c1"),), frozenset()), exchange([]))
    assert classes == ["missing_on_exchange"]
    assert [(s.to, type(s.message)) for s in actions] == [("connection:sim", CheckOrder)]


def test_an_order_placed_outside_is_recorded_as_external():
    classes, events, actions = twice(Record((), frozenset()), exchange([listed("manual-1", "77")]))
    assert classes == ["external_order"] and actions == []
    assert "was not placed by limitline" in events[0].reason


def test_a_final_order_still_open_on_the_exchange_pauses_its_strategy():
    classes, _, actions = twice(Record((order("c1", OrderState.CANCELED),), frozenset()), exchange([listed("c1")]))
    assert classes == ["stale_final"]
    assert [type(s.message) for s in actions] == [Pause] and actions[0].to == "strategy:a"


def test_a_reservation_without_a_live_order_is_released():
    ledger = LedgerSnapshot(0, LEDGER_OK.holdings, {"c1": "a", "c2": "a"})
    record = Record((order("c1", OrderState.FILLED), order("c2")), frozenset())
    classes, _, actions = twice(record, exchange([listed("c2")]), ledger)
    assert classes == ["reservation_without_order"]
    assert [(s.to, s.message) for s in actions] == [(LEDGER, Release("c1", "reconciler: no live order (FILLED)"))]


def test_less_on_the_exchange_than_the_strategies_hold_pauses_them():
    classes, events, actions = twice(Record((), frozenset()), exchange(balances={"USD": D("900"), "BTC": D("1")}))
    assert classes == ["balance_changed"]
    assert events[0].reason == "balance_changed: balance changed outside limitline: sim holds 900 USD, the strategies hold 1000 USD"
    assert sorted(s.to for s in actions) == ["strategy:a", "strategy:b"]
    # More on the exchange than allocated is fine: unallocated funds.
    assert twice(Record((), frozenset()), exchange(balances={"USD": D("5000"), "BTC": D("3")}))[0] == []


def test_a_difference_that_goes_away_by_itself_is_never_applied():
    core = ReconcilerCore(MARKETS)
    assert core.on_cycle(Record((order("c1"),), frozenset()), exchange([]), LEDGER_OK, 1.0) == []
    # The next cycle: it was in flight, the exchange lists it now.
    second = core.on_cycle(Record((order("c1"),), frozenset()), exchange([listed("c1")]), LEDGER_OK, 2.0)
    assert [s.message.kind for s in second if isinstance(s.message, RecordEvent)] == ["venue_reconciled"]
    assert all(isinstance(s.message, (RecordEvent, Reconciled)) for s in second)


def test_strategies_hear_their_venue_is_reconciled_after_two_cycles():
    core = ReconcilerCore(MARKETS)
    assert core.query(ReconciledQuery("sim", "strategy:a")) == []
    record, snapshot = Record((), frozenset()), exchange()
    assert core.on_cycle(record, snapshot, LEDGER_OK, 1.0) == []
    second = core.on_cycle(record, snapshot, LEDGER_OK, 2.0)
    # Every strategy of the venue hears it, asked or not: one that asked an earlier
    # incarnation of the reconciler (which then restarted) is not left waiting.
    assert [(s.to, s.message) for s in second if isinstance(s.message, Reconciled)] == [
        ("strategy:a", Reconciled("sim")), ("strategy:b", Reconciled("sim"))]
    assert [s.message.kind for s in second if isinstance(s.message, RecordEvent)] == ["venue_reconciled"]
    # Asked later (a restarted strategy): answered at once.
    assert core.query(ReconciledQuery("sim", "strategy:b"))[0].message == Reconciled("sim")

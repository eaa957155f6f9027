"""Bounded memory in a months-long run: what is finished is forgotten in memory, by one rule,
deterministically; what is open never is; the store answers a late question."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from actors.connection.simulated_orders import SimulatedOrders
from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    WRITER,
    ExchangeSnapshot,
    FillReport,
    JournalEntry,
    LedgerSnapshot,
    RecordJournal,
    Reserve,
)
from actors.orders import Order, OrderState
from actors.reconciler.core import Market, ReconcilerCore, Record, wanted
from actors.writer.core import Batch
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.records import ExchangeOrder, ExchangeTrade, Side
from exchange.retention import KEEP_FINISHED_ORDERS, KEEP_TRADES, Forgetting
from store.db import load_journal, load_journal_of, load_record, open_store, write_batch

MANY = 5 * KEEP_FINISHED_ORDERS


@given(st.lists(st.booleans(), max_size=300), st.integers(1, 20))
def test_forgetting_never_drops_what_is_not_finished_and_keeps_the_newest_finished(finished_flags, keep):
    entries: dict[int, bool] = {}
    forgetting: Forgetting[int, bool] = Forgetting(keep)
    dropped: list[int] = []
    for key, finished in enumerate(finished_flags):
        entries[key] = finished
        dropped += [k for k, _ in forgetting.sweep(entries, lambda _, done: done)]
    assert all(finished_flags[k] for k in dropped), "only finished entries are dropped"
    assert all(k in entries for k, done in enumerate(finished_flags) if not done), "unfinished entries all stay"
    kept_finished = sorted(k for k, done in entries.items() if done)
    assert dropped == sorted(dropped) and (not dropped or not kept_finished or max(dropped) < min(kept_finished)), (
        "the oldest finished go first"
    )
    assert len(entries) <= 2 * keep + sum(not f for f in finished_flags) + keep


def reserve(cid: str, price: str = "100") -> Reserve:
    return Reserve(cid, "a", Side.BUY, "BTC/USD", "BTC", "USD", D(price), D("0.01"), D("0.001"), "strategy:a")


def fill(cid: str, trade: str, amount: str = "0.01", complete: bool = True) -> FillReport:
    return FillReport("sim", cid, f"x{cid}", trade, "BTC/USD", Side.BUY, D("100"), D(amount), D("0.001"), "USD", 0.0, complete)


def journal(sends) -> list[JournalEntry]:
    return [e for s in sends if s.to == WRITER and isinstance(s.message, RecordJournal) for e in s.message.entries]


def run_orders(core: LedgerCore, count: int) -> list[JournalEntry]:
    entries = []
    for i in range(count):
        entries += journal(core.handle(reserve(f"c{i}"), float(i)))
        entries += journal(core.handle(fill(f"c{i}", f"t{i}"), float(i)))
    return entries


def test_the_ledger_keeps_a_bounded_number_of_closed_reservations_and_a_rebuild_keeps_the_same():
    core = LedgerCore()
    entries = core.allocate("a", D(10_000_000), D(0), 0.0, "test")
    entries += run_orders(core, MANY)
    assert len(core.reservations) <= 2 * KEEP_FINISHED_ORDERS + 1
    assert not core.open_reservations()
    rebuilt = LedgerCore.from_journal(entries)
    assert list(rebuilt.reservations) == list(core.reservations), "forgetting is part of the fold"
    assert rebuilt.accounts["a"] == core.accounts["a"]


def test_a_late_fill_of_a_forgotten_order_is_settled_once_from_the_store(tmp_path):
    core = LedgerCore()
    entries = core.allocate("a", D(10_000_000), D(0), 0.0, "test")
    # The first order fills half, and the exchange ends it with all of it filled: the
    # second trade is still to come when thousands of later orders push it out of memory.
    entries += journal(core.handle(reserve("first"), 0.0))
    entries += journal(core.handle(fill("first", "t-first-1", amount="0.005", complete=False), 0.0))
    entries += journal(core.handle(fill("first", "t-first-2", amount="0.005", complete=True), 0.0))
    entries += run_orders(core, MANY)
    assert "first" not in core.reservations
    connection = open_store(tmp_path / "store.sqlite")
    write_batch(connection, Batch(journal=entries))

    late = fill("first", "t-first-3", amount="0.001", complete=True)
    repeated = fill("first", "t-first-2", amount="0.005", complete=True)
    assert core.unknown_orders([late, repeated]) == {"first"}
    core.recall(load_journal_of(connection, client_order_ids=["first"]))
    before = core.accounts["a"].quote_free
    settled = journal(core.handle(late, 9.0))
    assert [e.kind for e in settled] == ["settle"] and settled[0].strategy == "a"
    assert core.accounts["a"].quote_free == before - D("0.1") - D("0.001")
    assert journal(core.handle(repeated, 9.0)) == [], "a trade settled before the order was forgotten is a duplicate"
    core.check_invariants()
    # And the fold of everything, the late fill included, is the live state.
    write_batch(connection, Batch(journal=settled))
    assert LedgerCore.from_journal(load_journal(connection)).accounts["a"] == core.accounts["a"]


MARKETS = {"a": Market("sim", "BTC", "USD")}


def order(cid: str, state: OrderState, exchange_id: str) -> Order:
    return Order(cid, "a", "sim", "BTC/USD", Side.BUY, D("100"), D("1"), state, 0.0, 0.0, exchange_order_id=exchange_id)


def test_the_reconciler_reads_what_is_open_or_named_and_remembers_only_current_differences(tmp_path):
    connection = open_store(tmp_path / "store.sqlite")
    history = {f"old{i}": order(f"old{i}", OrderState.FILLED, str(i)) for i in range(MANY)}
    history["open"] = order("open", OrderState.OPEN, "open-x")
    write_batch(connection, Batch(orders=history))

    reconciler = ReconcilerCore(MARKETS)
    ledger = LedgerSnapshot(0, {"a": (D(0), D(0))}, {"old7": "a"})
    for cycle in range(200):
        # Each cycle the exchange shows a different operator's order, and one trade of ours.
        external = ExchangeOrder(f"manual{cycle // 3}", f"ext{cycle // 3}", "BTC/USD", Side.SELL, D("200"), D("1"), D(0))
        trade = ExchangeTrade("t1", "3", "BTC/USD", Side.BUY, D("100"), D("1"), D("0.1"), "USD")
        snapshot = ExchangeSnapshot("sim", (external, ExchangeOrder("open", "open-x", "BTC/USD", Side.BUY, D("100"), D("1"), D(0))),
                                    {"USD": D(0)}, float(cycle), 0, (trade,))
        keys = wanted(snapshot, ledger)
        orders, recorded = load_record(connection, venue="sim", client_order_ids=keys.client_order_ids,
                                       exchange_order_ids=keys.exchange_order_ids, trade_ids=keys.trade_ids)
        assert {o.client_order_id for o in orders} == {"open", "old7", "old3"}, "open, named by the ledger, traded"
        assert recorded == frozenset()
        sends = reconciler.on_cycle(Record(tuple(orders), recorded), snapshot, ledger, float(cycle))
        assert sum(len(applied) for applied in reconciler._applied.values()) <= 3
    kinds = [s.message.payload["class"] for s in sends if s.to == WRITER and getattr(s.message, "kind", "") == "reconcile_difference"]
    assert kinds == [] or set(kinds) <= {"external_order", "missed_fill", "reservation_without_order"}


def market() -> MarketRules:
    return MarketRules("BTC/USD", "BTC", "USD", D("0.01"), D("0.00001"), D("0.0001"), D("10"), D("0.001"), D("0.002"))


def test_the_simulated_exchange_and_its_routing_forget_old_ended_orders_and_trades():
    exchange = SimulatedExchange([market()], {"USD": D(10_000_000)}, volume_share=D(1))
    orders = SimulatedOrders("sim", exchange)
    routed = 0
    for i in range(MANY):
        cid = f"c{i}"
        orders.submit(Order(cid, "a", "sim", "BTC/USD", Side.BUY, D("100"), D("0.2"), OrderState.SUBMITTING, 0.0, 0.0), i * 3600.0)
        if i % 2:
            exchange.cancel_order(cid)
        else:
            sends = orders.match("BTC/USD", Candle((i + 1) * 3600, D("101"), D("102"), D("99"), D("100"), D("50")), (i + 2) * 3600.0)
            routed += sum(1 for s in sends if s.to == "strategy:a")
            assert [s.to for s in sends] == [LEDGER, "strategy:a"], "each fill reaches the ledger and its owner"
    assert routed == MANY // 2
    assert len(exchange.orders) <= 2 * KEEP_FINISHED_ORDERS + 1
    assert len(orders.owners) <= 2 * KEEP_FINISHED_ORDERS + 1
    assert len(exchange.trades) <= 2 * KEEP_TRADES
    assert exchange.orders[str(MANY)].client_order_id == f"c{MANY - 1}", "the newest are remembered"


def small_ledger(monkeypatch, keep: int = 2) -> tuple[LedgerCore, list[JournalEntry]]:
    import actors.ledger.core as ledger_core

    monkeypatch.setattr(ledger_core, "KEEP_FINISHED_ORDERS", keep)
    core = LedgerCore()
    return core, core.allocate("a", D(1_000_000), D(0), 0.0, "test")


def test_an_order_that_closes_in_the_batch_of_its_late_fill_is_not_forgotten_before_the_fill(monkeypatch):
    from actors.messages import OrderCanceled

    core, entries = small_ledger(monkeypatch)
    entries += journal(core.handle(reserve("old"), 0.0))  # rests for a long time
    entries += run_orders(core, 20)  # many others open and close meanwhile
    late = fill("old", "t-old", amount="0.004", complete=False)
    # The exchange's cancel does not say what had filled; a trade of it follows at once.
    batch = [OrderCanceled("old", "expired", 9.0, expired=True, filled=None), late]
    assert core.unknown_orders(batch) == set()
    core._forgetting._next_sweep = 0  # whenever the sweep comes, say at this very close
    settled = journal(core.handle_batch(batch, 9.0))
    assert [e.kind for e in settled if e.client_order_id == "old"] == ["release", "settle"]
    assert core.accounts["a"].base_free == D("0.2") + D("0.004"), "the late fill is booked"
    core.check_invariants()


def test_a_recalled_order_comes_back_closed_and_empty_even_if_its_release_is_not_on_disk_yet(monkeypatch):
    core, entries = small_ledger(monkeypatch)
    entries += journal(core.handle(reserve("old"), 0.0))
    entries += journal(core.handle(fill("old", "t1", amount="0.005", complete=False), 0.0))
    release = journal(core.handle(fill("old", "t2", amount="0.005", complete=True), 0.0))
    entries += run_orders(core, 20)
    entries += journal(core.handle(reserve("busy"), 1.0))  # another order's funds, reserved
    assert "old" not in core.reservations
    # The writer has not committed the last settle and release of "old" yet.
    on_disk = [e for e in entries if e.client_order_id == "old" and e not in release]
    core.recall(on_disk)
    assert core.reservation("old").open is False
    assert core.reservation("old").quote_reserved == 0
    core.handle(fill("old", "t3", amount="0.001", complete=True), 2.0)
    core.check_invariants()  # the late fill is paid from free capital, not from "busy"'s reservation
    assert core.open_reservations("a")[0].client_order_id == "busy"

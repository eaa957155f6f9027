"""Reconciliation of perpetual positions: one plain-call test per class, each applying its
actions to a real position book and checking the book then agrees with the exchange."""

from __future__ import annotations

from decimal import Decimal as D

import attrs

from actors.ledger.positions_core import PositionBook, PositionOrderRequest
from actors.messages import FillReport
from actors.reconciler.positions_core import (
    AdjustCollateral,
    AdoptPosition,
    BookedPosition,
    BookExternalTrade,
    BookFunding,
    BookInsuranceClear,
    CancelProtective,
    ExchangeIncome,
    ExchangePosition,
    PauseStrategy,
    RestoreCollateral,
    PositionsRecord,
    PositionsSnapshot,
    ProtectiveRecord,
    SettleTrade,
    classify,
)
from exchange.records import ExchangeOrder, ExchangeTrade, Side

BTC = "BTC/USDT:USDT"
BUY, SELL = Side.BUY, Side.SELL
STRATEGIES = {BTC: "trend"}


def long_book(size="1", price="100") -> PositionBook:
    """The ledger after an entry: long ``size`` at ``price``, a take-profit and a stop resting."""
    book = PositionBook()
    book.allocate("trend", D(1000), 0.0, "start")
    book.reserve(PositionOrderRequest("e1", "trend", BTC, BUY, D(price), D(size), D(10), D("0.0004")), 1.0)
    book.settle(FillReport("usdm", "e1", "1", "t1", BTC, BUY, D(price), D(size), D(0), "USDT", 1.0, True), 1.0)
    for cid in ("tp1", "sl1"):
        book.reserve(PositionOrderRequest(cid, "trend", BTC, SELL, D(price), D(size), D(10), D("0.0004"), True, "p1"), 2.0)
    return book


PROTECTION = (
    ProtectiveRecord("tp1", "trend", BTC, "take_profit", "p1", frozenset({"11"})),
    ProtectiveRecord("sl1", "trend", BTC, "stop_loss", "p1", frozenset({"12", "120"})),  # algo id, child id
)


def record(book: PositionBook, booked=("t1",), income=(), protective=PROTECTION) -> PositionsRecord:
    position = book.position("trend", BTC)
    return PositionsRecord(
        positions=(BookedPosition("trend", BTC, position.size, position.entry_price, position.leverage),),
        protective=protective, own_order_ids=frozenset({"1"}), booked_trade_ids=frozenset(booked),
        booked_income_ids=frozenset(income), collateral={"trend": book.account("trend").wallet},
        withdrawn={"trend": book.account("trend").withdrawn},
    )


def snapshot(positions=(), orders=(), trades=(), income=(), wallet=D(1000), forced=frozenset(), **settings) -> PositionsSnapshot:
    return PositionsSnapshot("usdm", tuple(positions), tuple(orders), tuple(trades), tuple(income), wallet, 10.0, forced, **settings)


def trade(tid, order_id, side, amount, price, client_id="", fee="0"):
    return ExchangeTrade(tid, order_id, BTC, side, D(price), D(amount), D(fee), "USDT", client_id, 5.0)


def open_order(cid, order_id, side=SELL, price="120"):
    return ExchangeOrder(cid, order_id, BTC, side, D(price), D(1), D(0))


def apply(book: PositionBook, found) -> tuple[list, list]:
    """Carry the actions out on the book; return the cancels and pauses asked for."""
    cancels, pauses = [], []
    for _, actions in found:
        for action in actions:
            if isinstance(action, SettleTrade):
                t = action.trade
                result = book.settle(FillReport("usdm", action.client_order_id, t.exchange_order_id, t.trade_id, t.symbol,
                                                t.side, t.price, t.amount, t.fee, t.fee_currency, 10.0, False), 10.0)
            elif isinstance(action, BookExternalTrade):
                t = action.trade
                result = book.book_external(action.strategy, t.symbol, t.side, t.price, t.amount, t.fee, t.fee_currency,
                                            t.trade_id, 10.0, action.reason)
            elif isinstance(action, BookFunding):
                result = book.funding(action.strategy, action.symbol, action.income_id, action.paid, action.currency, 10.0)
            elif isinstance(action, AdoptPosition):
                result = book.adopt(action.strategy, action.symbol, action.size, action.entry_price, action.leverage, 10.0,
                                    action.reason)
            elif isinstance(action, AdjustCollateral):
                result = book.adjust_collateral(action.strategy, action.delta, 10.0, action.reason)
            elif isinstance(action, RestoreCollateral):
                result = book.restore_collateral(action.strategy, action.income_id, action.amount, action.currency, 10.0)
            elif isinstance(action, BookInsuranceClear):
                result = book.insurance_clear(action.strategy, action.symbol, action.income_id, action.amount,
                                              action.currency, 10.0)
            elif isinstance(action, CancelProtective):
                cancels.append(action.client_order_id)
                continue
            elif isinstance(action, PauseStrategy):
                pauses.append(action.strategy)
                continue
            assert not isinstance(result, str), result
    book.check_invariants()
    return cancels, pauses


def kinds(found) -> list[str]:
    return [difference.kind for difference, _ in found]


def test_nothing_differs_when_the_books_agree():
    book = long_book()
    found = classify(record(book), snapshot([ExchangePosition(BTC, D(1), D(100), D(10))],
                                            [open_order("tp1", "11"), open_order("sl1", "12")]), STRATEGIES)
    assert found == []


def test_a_stop_that_closed_the_position_between_cycles_is_settled_and_its_take_profit_cancelled():
    book = long_book()
    exchange = snapshot([], [open_order("tp1", "11")], [trade("t9", "120", SELL, "1", "98.5", fee="0.0394")])
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["closed_by_protection"]
    cancels, pauses = apply(book, found)
    assert (cancels, pauses) == (["tp1"], [])
    position = book.position("trend", BTC)
    assert (position.size, position.realized_pnl, position.fees_paid["USDT"]) == (0, D("-1.5"), D("0.0394"))
    assert position.size_reserved == 0 and book.orders["sl1"].open is False  # filled: released
    # Booked now: the next cycle finds nothing (the take-profit's cancel is under way).
    assert classify(record(book, booked=("t1", "t9")), snapshot([], [], exchange.trades), STRATEGIES) == []


def test_a_partial_take_profit_between_cycles_settles_and_cancels_nothing():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D("0.6"), D(100), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")],
                        [trade("t9", "11", SELL, "0.4", "120")])
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["closed_by_protection"]
    assert apply(book, found) == ([], [])
    assert book.position("trend", BTC).size == D("0.6")


def test_an_operator_close_explained_by_its_trade_is_booked_and_the_strategy_carries_on():
    book = long_book()
    exchange = snapshot([], [open_order("tp1", "11"), open_order("sl1", "12")], [trade("op1", "777", SELL, "1", "105")])
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["position_changed_outside", "orphaned_protection", "orphaned_protection"]
    assert "explain the exchange's position" in found[0][0].detail
    cancels, pauses = apply(book, found)
    assert sorted(cancels) == ["sl1", "tp1"] and pauses == []
    assert (book.position("trend", BTC).size, book.position("trend", BTC).realized_pnl) == (0, D(5))


def test_a_size_no_trade_explains_is_adopted_and_the_strategy_paused():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D("0.3"), D("101"), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")])
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["position_changed_outside"]
    assert "unexplained" in found[0][0].detail
    cancels, pauses = apply(book, found)
    assert pauses == ["trend"]
    position = book.position("trend", BTC)
    assert (position.size, position.entry_price, position.realized_pnl) == (D("0.3"), D(101), 0)
    assert position.size_reserved <= D("0.3")  # the closes were cut to what is held


def test_the_same_size_at_another_entry_is_refreshed_without_a_pause():
    book = long_book()
    found = classify(record(book), snapshot([ExchangePosition(BTC, D(1), D("100.5"), D(10))],
                                            [open_order("tp1", "11"), open_order("sl1", "12")]), STRATEGIES)
    assert kinds(found) == ["position_changed_outside"]
    assert apply(book, found) == ([], [])
    assert book.position("trend", BTC).entry_price == D("100.5")


def test_a_liquidation_is_booked_with_its_reason_and_the_strategy_paused():
    book = long_book()
    exchange = snapshot([], [open_order("sl1", "12")], [trade("liq1", "555", SELL, "1", "91", client_id="autoclose-123")])
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["liquidated", "orphaned_protection"]
    cancels, pauses = apply(book, found)
    assert (cancels, pauses) == (["sl1"], ["trend"])
    assert book.position("trend", BTC).realized_pnl == D(-9)
    # Known from the force-orders list alone, too.
    forced = snapshot([], [], [trade("liq1", "555", SELL, "1", "91")], forced=frozenset({"555"}))
    assert kinds(classify(record(long_book()), forced, STRATEGIES)) == ["liquidated"]


def test_margin_withdrawn_outside_cuts_the_one_strategy_collateral_and_its_next_open_is_denied():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D(1), D(100), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")],
                        income=[ExchangeIncome("tr1", "", "TRANSFER", D(-985), "USDT")], wallet=D(15))
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["margin_changed"] and "(transfers tr1)" in found[0][0].detail
    apply(book, found)
    assert book.account("trend").wallet == D(15)  # 10 of it is the position's margin
    denied = book.reserve(PositionOrderRequest("e2", "trend", BTC, BUY, D(100), D(1), D(10), D("0.0004")), 11.0)
    assert isinstance(denied, str) and denied.startswith("insufficient margin")


def test_margin_withdrawn_from_an_account_of_two_strategies_pauses_both():
    book = long_book()
    book.allocate("other", D(500), 0.0, "start")
    rec = record(book)
    rec = PositionsRecord(rec.positions, rec.protective, rec.own_order_ids, rec.booked_trade_ids, rec.booked_income_ids,
                          {"trend": D(1000), "other": D(500)})
    exchange = snapshot([ExchangePosition(BTC, D(1), D(100), D(10))], [], wallet=D(1200))
    found = classify(rec, exchange, {BTC: "trend", "ETH/USDT:USDT": "other"})
    assert kinds(found) == ["margin_changed"]
    assert sorted(a.strategy for a in found[0][1]) == ["other", "trend"]
    assert all(isinstance(a, PauseStrategy) for a in found[0][1])


def test_margin_added_is_an_event_and_more_than_allocated_is_no_difference():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D(1), D(100), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")],
                        income=[ExchangeIncome("tr2", "", "TRANSFER", D(300), "USDT")], wallet=D(1300))
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["margin_changed"] and "not allocated" in found[0][0].detail
    apply(book, found)  # seen, once: nothing was cut, nothing given
    assert book.account("trend").wallet == D(1000) and "tr2" in book.booked_ids
    assert classify(record(book, income=("tr2",)), exchange, STRATEGIES) == []


def test_a_transfer_in_gives_back_what_a_withdrawal_cut_and_never_more():
    book = long_book()
    withdrawn = snapshot([ExchangePosition(BTC, D(1), D(100), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")],
                         income=[ExchangeIncome("tr1", "", "TRANSFER", D(-985), "USDT", 1.0)], wallet=D(15))
    apply(book, classify(record(book), withdrawn, STRATEGIES))
    assert book.account("trend").wallet == D(15) and book.account("trend").withdrawn == D(985)
    # 2000 come back: the 985 cut is given back, the rest is not allocated.
    back = attrs.evolve(withdrawn, income=withdrawn.income + (ExchangeIncome("tr2", "", "TRANSFER", D(2000), "USDT", 2.0),),
                        wallet=D(2015))
    found = classify(record(book), back, STRATEGIES)
    assert kinds(found) == ["margin_changed"] and found[0][0].strategy == "trend"
    assert [type(a) for a in found[0][1]] == [RestoreCollateral]
    assert "gives trend back up to 985 USDT" in found[0][0].detail
    apply(book, found)
    assert book.account("trend").wallet == D(1000) and book.account("trend").withdrawn == 0
    assert book.reserve(PositionOrderRequest("e2", "trend", BTC, BUY, D(100), D(1), D(10), D("0.0004")), 11.0) != []
    # Once per transfer, and the rebuilt book remembers both the cut and its restoration.
    assert book.restore_collateral("trend", "tr2", D(2000), "USDT", 12.0) == []
    assert classify(record(book, income=("tr2",)), back, STRATEGIES) == []
    fresh = PositionBook()
    entries = fresh.allocate("trend", D(1000), 0.0, "start") + fresh.adjust_collateral("trend", D(-985), 1.0, "withdrawn")
    assert PositionBook.from_journal(entries).account("trend").withdrawn == D(985)
    entries += fresh.restore_collateral("trend", "tr2", D(400), "USDT", 2.0)
    rebuilt = PositionBook.from_journal(entries)
    assert (rebuilt.account("trend").wallet, rebuilt.account("trend").withdrawn) == (D(415), D(585))
    assert rebuilt.snapshot() == fresh.snapshot()


def test_leverage_changed_outside_pauses_the_strategy():
    book = long_book()
    found = classify(record(book), snapshot([ExchangePosition(BTC, D(1), D(100), D(20))],
                                            [open_order("tp1", "11"), open_order("sl1", "12")]), STRATEGIES)
    assert kinds(found) == ["margin_changed"] and "leverage changed outside" in found[0][0].detail
    assert [type(a) for a in found[0][1]] == [PauseStrategy]


def test_leverage_changed_outside_is_seen_from_the_symbols_settings_when_positions_carry_none():
    # Binance's /fapi/v3/positionRisk lists no leverage: the connection reads it from
    # /fapi/v1/symbolConfig for every symbol, position or not.
    book = long_book()
    quiet = snapshot([ExchangePosition(BTC, D(1), D(100))], [open_order("tp1", "11"), open_order("sl1", "12")])
    assert classify(record(book), attrs.evolve(quiet, leverage={BTC: D(10)}, leverage_set={BTC: D(10)}), STRATEGIES) == []
    changed = attrs.evolve(quiet, leverage={BTC: D(20)}, leverage_set={BTC: D(10)})
    found = classify(record(book), changed, STRATEGIES)
    assert kinds(found) == ["margin_changed"] and found[0][0].key == f"{BTC}:leverage:20"
    assert found[0][1] == [PauseStrategy("trend", found[0][0].detail)]
    assert "10 set by limitline, 20 on the exchange" in found[0][0].detail
    # Flat, the next open would run at the exchange's leverage, not the configured one: paused too.
    flat = PositionBook()
    flat.allocate("trend", D(1000), 0.0, "start")
    found = classify(record(flat), snapshot(leverage={BTC: D(20)}, leverage_set={BTC: D(10)}), STRATEGIES)
    assert kinds(found) == ["margin_changed"] and [type(a) for a in found[0][1]] == [PauseStrategy]


def test_the_insurance_funds_clearance_of_a_liquidated_isolated_position_is_booked_once_on_the_collateral():
    # Long 1 @ 100 at 10x isolated (margin 10), liquidated at 90.4: 9.6 lost, the 0.4 left of
    # the margin goes to the insurance fund; the wallet loses the whole margin, as the exchange's.
    book = long_book()
    clear = ExchangeIncome("i9", BTC, "INSURANCE_CLEAR", D("-0.4"), "USDT")
    exchange = snapshot([], [], [trade("liq1", "555", SELL, "1", "90.4", client_id="autoclose-123")], income=[clear],
                        wallet=D(990))
    found = classify(record(book), exchange, STRATEGIES)
    assert kinds(found) == ["liquidated", "liquidated"]
    assert "the insurance fund cleared -0.4 USDT" in found[1][0].detail
    apply(book, found)
    assert book.account("trend").wallet == D(990) and book.position("trend", BTC).realized_pnl == D("-9.6")
    # Booked once: the next cycle finds it booked, and a second booking changes nothing.
    assert kinds(classify(record(book, booked=("t1", "liq1"), income=("i9",)), exchange, STRATEGIES)) == []
    assert book.insurance_clear("trend", BTC, "i9", D("-0.4"), "USDT", 11.0) == []
    assert PositionBook.from_journal([], "USDT").insurance_clear("x", BTC, "i1", D("-1"), "USDT", 1.0).startswith(
        "insurance clearance i1 of -1 would leave x's wallet at -1")


def test_funding_not_yet_booked_is_booked_once_as_its_own_entry():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D(1), D(100), D(10))], [open_order("tp1", "11"), open_order("sl1", "12")],
                        income=[ExchangeIncome("f1", BTC, "FUNDING_FEE", D("-0.25"), "USDT"),
                                ExchangeIncome("f0", BTC, "FUNDING_FEE", D("0.1"), "USDT")])
    found = classify(record(book, income=("f0",)), exchange, STRATEGIES)
    assert kinds(found) == ["funding"]
    apply(book, found)
    position = book.position("trend", BTC)
    assert (position.funding_paid, position.realized_pnl, book.account("trend").wallet) == (D("0.25"), 0, D("999.75"))


def test_trades_of_our_own_orders_defer_the_size_judgement_to_the_missed_fill_repair():
    book = long_book()
    exchange = snapshot([ExchangePosition(BTC, D(2), D(100), D(10))], [], [trade("t2", "1", BUY, "1", "100")])
    assert classify(record(book), exchange, STRATEGIES) == []

"""The position book of perpetuals: plain calls, and a hypothesis state machine against an
independent cash-flow model (opens, partial closes, flips in one fill, OCO closes, fees in
two currencies, funding, outside trades, adoption, rebuilds from the journal)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from actors.ledger.positions_core import PositionBook, PositionEntry, PositionOrderRequest
from actors.messages import FillReport
from exchange.records import Side

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
BUY, SELL = Side.BUY, Side.SELL


def request(cid, side, amount, price, *, strategy="a", symbol=BTC, leverage="10", fee_rate="0.0004", reduce_only=False, oco=None):
    return PositionOrderRequest(cid, strategy, symbol, side, D(price), D(amount), D(leverage), D(fee_rate), reduce_only, oco)


def fill(cid, trade_id, side, amount, price, fee="0", currency="USDT", complete=False, symbol=BTC):
    return FillReport("usdm", cid, "x" + cid, trade_id, symbol, side, D(price), D(amount), D(fee), currency, 0.0, complete)


def book_with(collateral="1000") -> PositionBook:
    book = PositionBook()
    book.allocate("a", D(collateral), 0.0, "test")
    return book


def test_an_open_reserves_initial_margin_plus_the_worst_fee_and_a_fill_settles_at_its_price():
    book = book_with()
    [entry] = book.reserve(request("o1", BUY, "1", "100"), 1.0)
    assert entry.margin_reserved == D("10.04")  # 100 / 10 + 100 x 0.0004
    assert book.account("a").free == D("989.96")
    book.settle(fill("o1", "t1", BUY, "1", "99.5", fee="0.0398", complete=True), 2.0)
    position = book.position("a", BTC)
    assert (position.size, position.entry_price, position.margin_used) == (D(1), D("99.5"), D("9.95"))
    account = book.account("a")
    assert (account.margin_reserved, account.wallet) == (0, D("999.9602"))
    assert position.fees_paid == {"USDT": D("0.0398")}
    assert position.unrealized_pnl(D("101")) == D("1.5")
    book.check_invariants()


def test_a_partial_close_realizes_its_share_and_frees_its_share_of_margin():
    book = book_with()
    book.reserve(request("o1", BUY, "2", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "2", "100", complete=True), 1.0)
    book.reserve(request("c1", SELL, "0.5", "110", reduce_only=True), 2.0)
    book.settle(fill("c1", "t2", SELL, "0.5", "110", fee="0.022", complete=True), 3.0)
    position = book.position("a", BTC)
    assert position.realized_pnl == D("5")  # (110 - 100) x 0.5, gross of the fee
    assert (position.size, position.entry_price, position.margin_used) == (D("1.5"), D(100), D(15))
    assert book.account("a").wallet == D("1004.978")
    book.check_invariants()


def test_a_fill_through_zero_closes_the_whole_position_and_opens_the_rest_at_the_same_price():
    book = book_with()
    book.reserve(request("o1", SELL, "1", "100"), 1.0)
    book.settle(fill("o1", "t1", SELL, "1", "100", complete=True), 1.0)
    book.reserve(request("o2", BUY, "3", "90"), 2.0)
    book.settle(fill("o2", "t2", BUY, "3", "90", complete=True), 2.0)
    position = book.position("a", BTC)
    assert position.realized_pnl == D(10)  # the short gained 100 - 90 on 1
    assert (position.size, position.entry_price) == (D(2), D(90))
    assert position.margin_used == D(18)  # only the new long's margin
    book.check_invariants()


def test_a_close_never_reserves_more_than_is_held_and_an_oco_pair_shares_one_reservation():
    book = book_with()
    book.reserve(request("o1", BUY, "1", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "1", "100", complete=True), 1.0)
    assert "nothing to close" in book.reserve(request("x", SELL, "1", "100", reduce_only=True, symbol=ETH), 1.0)
    assert "cannot close a long" in book.reserve(request("x", BUY, "1", "100", reduce_only=True), 1.0)
    assert "close too large" in book.reserve(request("x", SELL, "1.5", "100", reduce_only=True), 1.0)
    book.reserve(request("tp", SELL, "1", "120", reduce_only=True, oco="p1"), 2.0)
    book.reserve(request("sl", SELL, "1", "90", reduce_only=True, oco="p1"), 2.0)
    assert book.position("a", BTC).size_reserved == 1  # one of the two can fill
    assert "close too large" in book.reserve(request("x", SELL, "0.1", "100", reduce_only=True), 2.0)
    # The take-profit fills half: the stop still covers what is left, no more.
    book.settle(fill("tp", "t2", SELL, "0.5", "120"), 3.0)
    assert book.position("a", BTC).size_reserved == D("0.5")
    book.release("sl", "one cancels the other", 4.0)
    book.release("tp", "replaced", 4.0)
    assert book.position("a", BTC).size_reserved == 0
    book.check_invariants()


def test_a_smaller_replacement_joins_its_group_before_the_old_order_is_cancelled():
    book = book_with()
    book.reserve(request("o1", BUY, "1", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "1", "100", complete=True), 1.0)
    book.reserve(request("sl1", SELL, "1", "90", reduce_only=True, oco="p1"), 2.0)
    book.book_external("a", BTC, SELL, D(101), D("0.5"), D(0), "USDT", "op1", 3.0, "operator reduced it")
    assert book.position("a", BTC).size_reserved == D("0.5")
    assert not isinstance(book.reserve(request("sl2", SELL, "0.5", "90", reduce_only=True, oco="p1"), 4.0), str)
    book.release("sl1", "replaced by sl2", 5.0)
    assert book.position("a", BTC).size_reserved == D("0.5")
    book.check_invariants()


def test_a_strategy_close_while_protection_rests_joins_the_protection_group():
    book = book_with()
    book.reserve(request("o1", BUY, "1", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "1", "100", complete=True), 1.0)
    book.reserve(request("tp", SELL, "1", "120", reduce_only=True, oco="p1"), 2.0)
    book.reserve(request("sl", SELL, "1", "90", reduce_only=True, oco="p1"), 2.0)
    denied = book.reserve(request("close", SELL, "1", "101", reduce_only=True), 3.0)
    assert "joins its group: p1" in denied
    assert not isinstance(book.reserve(request("close", SELL, "1", "101", reduce_only=True, oco="p1"), 3.0), str)
    book.settle(fill("close", "t2", SELL, "1", "101", complete=True), 4.0)
    assert (book.position("a", BTC).size, book.position("a", BTC).size_reserved) == (0, 0)
    book.check_invariants()


def test_a_reduce_only_fill_larger_than_the_position_is_refused_whole():
    book = book_with()
    book.reserve(request("o1", BUY, "1", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "1", "100", complete=True), 1.0)
    book.reserve(request("c1", SELL, "1", "110", reduce_only=True), 2.0)
    before = book.snapshot()
    refused = book.settle(fill("c1", "t2", SELL, "1.5", "110"), 3.0)
    assert isinstance(refused, str) and "would cross or grow" in refused
    assert book.snapshot() == before


def test_an_open_is_denied_with_the_margin_it_needs_and_unrealized_losses_are_not_free():
    book = book_with("100")
    assert book.reserve(request("o1", BUY, "10", "100"), 1.0) == (
        "insufficient margin: needs 100.40 USDT (notional 1000.00 / leverage 10 + worst fee), free 100.00 USDT"
    )
    book.reserve(request("o1", BUY, "5", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "5", "100", complete=True), 1.0)  # uses 50 of margin
    assert not isinstance(book.reserve(request("o2", BUY, "4", "100"), 2.0), str)
    book.release("o2", "canceled", 2.0)
    # At a mark of 95 the long has lost 25: that is not free collateral.
    denied = book.reserve(request("o3", BUY, "4", "100"), 3.0, marks={BTC: D(95)})
    assert isinstance(denied, str) and "free 25.00" in denied


def test_funding_moves_the_wallet_once_per_income_id_and_never_the_realized_pnl():
    book = book_with()
    book.funding("a", BTC, "i1", D("0.5"), "USDT", 1.0)
    book.funding("a", BTC, "i1", D("0.5"), "USDT", 1.0)
    book.funding("a", BTC, "i2", D("-0.2"), "USDT", 2.0)
    position = book.position("a", BTC)
    assert (position.funding_paid, position.realized_pnl, book.account("a").wallet) == (D("0.3"), 0, D("999.7"))


def test_an_outside_close_and_an_adoption_are_booked_with_their_reasons_and_cut_the_close_reservations():
    book = book_with()
    book.reserve(request("o1", BUY, "2", "100"), 1.0)
    book.settle(fill("o1", "t1", BUY, "2", "100", complete=True), 1.0)
    book.reserve(request("sl", SELL, "2", "90", reduce_only=True), 2.0)
    entries = book.book_external("a", BTC, SELL, D(105), D("1.5"), D(0), "USDT", "op1", 3.0, "operator reduced it")
    assert entries[0].reason == "operator reduced it" and entries[-1].kind == "trim"
    assert book.position("a", BTC).size_reserved == D("0.5")
    assert book.position("a", BTC).realized_pnl == D("7.5")
    assert book.book_external("a", BTC, SELL, D(105), D("1.5"), D(0), "USDT", "op1", 3.0, "again") == []
    book.adopt("a", BTC, D(0), D(0), D(10), 4.0, "the exchange holds no position")
    position = book.position("a", BTC)
    assert (position.size, position.entry_cost, position.margin_used, position.size_reserved) == (0, 0, 0, 0)
    book.check_invariants()


def test_the_book_rebuilds_exactly_from_its_journal():
    book = PositionBook()
    journal = book.allocate("a", D(1000), 0.0, "test")
    for step in (
        book.reserve(request("o1", BUY, "1", "100"), 1.0),
        book.settle(fill("o1", "t1", BUY, "0.4", "100"), 2.0),
        book.settle(fill("o1", "t2", BUY, "0.6", "101", complete=True), 3.0),
        book.reserve(request("c1", SELL, "0.3", "110", reduce_only=True, oco="g"), 4.0),
        book.settle(fill("c1", "t3", SELL, "0.3", "110", fee="0.01", currency="BNB", complete=True), 5.0),
        book.funding("a", BTC, "i1", D("0.07"), "USDT", 6.0),
    ):
        assert not isinstance(step, str)
        journal += step
    assert PositionBook.from_journal(journal).snapshot() == book.snapshot()


def test_every_kind_of_entry_round_trips_through_a_sqlite_journal_and_rebuilds_the_book(tmp_path):
    # The store's own row codec (a typed column per field), into a real sqlite file.
    import sqlite3

    from store.rows import Columns

    book = PositionBook()
    journal = book.allocate("a", D(1000), 0.0, "start")
    for step in (
        book.reserve(request("o1", BUY, "2", "100", leverage="3"), 1.0),
        book.settle(fill("o1", "t1", BUY, "2", "100.3", fee="0.08", complete=True), 2.0),
        book.reserve(request("tp", SELL, "2", "110", reduce_only=True, oco="p1"), 3.0),
        book.reserve(request("sl", SELL, "2", "95", reduce_only=True, oco="p1"), 3.0),
        book.settle(fill("tp", "t2", SELL, "0.5", "110", fee="0.02", currency="BNB"), 4.0),
        book.book_external("a", BTC, SELL, D(104), D("2.5"), D(0), "USDT", "op1", 5.0, "operator flipped it"),
        book.funding("a", BTC, "i1", D("-0.013"), "USDT", 6.0),
        book.adopt("a", BTC, D("-0.75"), D("104.5"), D(3), 7.0, "exchange size"),
        book.adjust_collateral("a", D(-100), 8.0, "margin withdrawn"),
        book.release("sl", "canceled", 9.0),
    ):
        assert not isinstance(step, str), step
        journal += step
    assert {e.kind for e in journal} == {"allocate", "reserve", "fill", "release", "trim", "funding", "adopt", "adjust"}
    columns = Columns(PositionEntry)
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        db.execute(f"CREATE TABLE position_journal (seq INTEGER PRIMARY KEY, {columns.sql})")
        db.executemany(f"INSERT INTO position_journal ({columns.sql}) VALUES ({columns.placeholders})",
                       [columns.row(e) for e in journal])
        rows = db.execute(f"SELECT {columns.sql} FROM position_journal ORDER BY seq").fetchall()
    read = [columns.record(row) for row in rows]
    assert read == journal
    assert PositionBook.from_journal(read).snapshot() == book.snapshot()
    book.check_invariants()


# ------------------------------------------------------------- the model

SYMBOLS = (BTC, ETH)
STRATEGIES = ("a", "b")
PRICE = st.decimals("50", "150", places=2)
AMOUNT = st.decimals("0.001", "3", places=3)
MARKS = (D("80.5"), D("123.25"))


class PositionMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.book = PositionBook()
        self.journal: list = []
        self.trade = 0
        # The independent model: per (strategy, symbol) signed quantity, trade cash flow,
        # fees and funding in USDT; per strategy what was given.
        self.qty: dict = {}
        self.cash: dict = {}
        self.fees: dict = {}
        self.funding_paid: dict = {}
        self.given: dict = {}
        for name in STRATEGIES:
            self._log(self.book.allocate(name, D(2000), 0.0, "start"))
            self.given[name] = D(2000)

    def _log(self, entries):
        assert not isinstance(entries, str), entries
        self.journal += entries
        return entries

    def _key(self, strategy, symbol):
        return (strategy, symbol)

    def _model_trade(self, strategy, symbol, side, amount, price, fee, currency):
        key = self._key(strategy, symbol)
        signed = amount if side is BUY else -amount
        self.qty[key] = self.qty.get(key, D(0)) + signed
        self.cash[key] = self.cash.get(key, D(0)) - signed * price
        if currency == "USDT":
            self.fees[key] = self.fees.get(key, D(0)) + fee

    @rule(target=orders, strategy=st.sampled_from(STRATEGIES), symbol=st.sampled_from(SYMBOLS), buy=st.booleans(),
          amount=AMOUNT, price=PRICE, leverage=st.sampled_from(["1", "3", "10", "20"]))
    def place_open(self, strategy, symbol, buy, amount, price, leverage):
        side = BUY if buy else SELL
        self.trade += 1
        cid = f"o{self.trade}"
        account = self.book.account(strategy)
        free = account.free
        needs = (price * amount / D(leverage) + price * amount * D("0.0005")).quantize(D("1e-12"), "ROUND_CEILING")
        result = self.book.reserve(request(cid, side, amount, price, strategy=strategy, symbol=symbol,
                                           leverage=leverage, fee_rate="0.0005"), 1.0)
        if isinstance(result, str):
            assert needs > free and "insufficient margin" in result
            return None
        self._log(result)
        assert needs <= free and self.book.account(strategy).free >= 0  # never beyond the collateral
        return cid

    @rule(target=orders, strategy=st.sampled_from(STRATEGIES), symbol=st.sampled_from(SYMBOLS),
          share=st.sampled_from([D("0.25"), D("0.5"), D(1)]), price=PRICE, pair=st.booleans())
    def place_close(self, strategy, symbol, share, price, pair):
        position = self.book.position(strategy, symbol)
        free = abs(position.size) - position.size_reserved
        amount = (free * share).quantize(D("0.001"))
        if not position.size or amount <= 0:
            return None
        side = SELL if position.size > 0 else BUY
        self.trade += 1
        cid = f"c{self.trade}"
        group = f"g{self.trade}" if pair else None
        self._log(self.book.reserve(request(cid, side, amount, price, strategy=strategy, symbol=symbol,
                                            reduce_only=True, oco=group), 1.0))
        if pair:  # a stop-loss sharing the take-profit's reservation
            self._log(self.book.reserve(request(cid + "s", side, amount, price, strategy=strategy, symbol=symbol,
                                                reduce_only=True, oco=group), 1.0))
        assert self.book.position(strategy, symbol).size_reserved <= abs(self.book.position(strategy, symbol).size)
        return cid

    @rule(cid=orders, share=st.sampled_from([D("0.3"), D("0.5"), D(1)]), price=PRICE, bnb=st.booleans())
    def fill(self, cid, share, price, bnb):
        order = self.book.orders.get(cid) if cid else None
        if order is None or not order.open:
            return
        amount = (order.remaining * share).quantize(D("0.001")) or order.remaining
        position = self.book.position(order.strategy, order.symbol)
        before = position.size
        if order.reduce_only:
            opposes = before and (before > 0) == (order.side is SELL)
            if not opposes:
                return  # the exchange would cancel it: nothing left to reduce
            amount = min(amount, abs(before))
            # First the exchange's impossibility: more than is held is refused whole.
            snapshot = self.book.snapshot()
            self.trade += 1
            refused = self.book.settle(fill(cid, f"bad{self.trade}", order.side, abs(before) + 1, price, symbol=order.symbol), 1.0)
            assert isinstance(refused, str) and self.book.snapshot() == snapshot
        fee = (amount * price * D("0.0004")).quantize(D("0.00000001"))
        currency = "BNB" if bnb else "USDT"
        self.trade += 1
        complete = amount >= order.remaining
        self._log(self.book.settle(fill(cid, f"t{self.trade}", order.side, amount, price, fee, currency, complete,
                                        symbol=order.symbol), 1.0))
        self._model_trade(order.strategy, order.symbol, order.side, amount, price, fee, currency)
        after = self.book.position(order.strategy, order.symbol).size
        if order.reduce_only:
            assert after == 0 or (after > 0) == (before > 0)  # never through zero
            assert abs(after) < abs(before)

    @rule(cid=consumes(orders), reason=st.sampled_from(["canceled", "expired", "rejected"]))
    def end(self, cid, reason):
        if cid is not None:
            self._log(self.book.release(cid, reason, 1.0))
            if cid.startswith("c"):
                self._log(self.book.release(cid + "s", reason, 1.0))

    @rule(strategy=st.sampled_from(STRATEGIES), symbol=st.sampled_from(SYMBOLS),
          paid=st.decimals("-2", "2", places=4))
    def funding(self, strategy, symbol, paid):
        self.trade += 1
        self._log(self.book.funding(strategy, symbol, f"i{self.trade}", paid, "USDT", 1.0))
        key = self._key(strategy, symbol)
        self.funding_paid[key] = self.funding_paid.get(key, D(0)) + paid

    @rule(strategy=st.sampled_from(STRATEGIES), symbol=st.sampled_from(SYMBOLS), buy=st.booleans(),
          amount=AMOUNT, price=PRICE)
    def outside_trade(self, strategy, symbol, buy, amount, price):
        side = BUY if buy else SELL
        self.trade += 1
        self._log(self.book.book_external(strategy, symbol, side, price, amount, D(0), "USDT", f"x{self.trade}", 1.0,
                                          "an operator traded"))
        self._model_trade(strategy, symbol, side, amount, price, D(0), "USDT")

    @rule(strategy=st.sampled_from(STRATEGIES), delta=st.decimals("-300", "300", places=2))
    def margin_moved_outside(self, strategy, delta):
        result = self.book.adjust_collateral(strategy, delta, 1.0, "margin moved outside")
        if isinstance(result, str):
            assert self.book.account(strategy).wallet + delta < 0
            return
        self._log(result)
        self.given[strategy] += delta

    @rule()
    def rebuild(self):
        rebuilt = PositionBook.from_journal(self.journal)
        assert rebuilt.snapshot() == self.book.snapshot()
        self.book = rebuilt  # carry on from the rebuilt book

    @invariant()
    def books_hold(self):
        self.book.check_invariants()

    @invariant()
    def pnl_equals_the_cash_flow_model(self):
        for name in STRATEGIES:
            for mark in MARKS:
                model_equity = self.given[name]
                for symbol in SYMBOLS:
                    key = self._key(name, symbol)
                    position = self.book.position(name, symbol)
                    qty, cash = self.qty.get(key, D(0)), self.cash.get(key, D(0))
                    fees, funding = self.fees.get(key, D(0)), self.funding_paid.get(key, D(0))
                    assert position.size == qty
                    assert position.realized_pnl + position.unrealized_pnl(mark) == cash + qty * mark
                    assert position.fees_paid.get("USDT", D(0)) == fees
                    assert position.funding_paid == funding
                    model_equity += cash + qty * mark - fees - funding
                account = self.book.account(name)
                marks = {symbol: mark for symbol in SYMBOLS}
                assert account.wallet + self.book.unrealized_pnl(name, marks) == model_equity

    @precondition(lambda self: len(self.journal) > 0)
    @invariant()
    def rebuild_equals_live(self):
        assert PositionBook.from_journal(self.journal).snapshot() == self.book.snapshot()


PositionMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_position_book_model = PositionMachine.TestCase


@pytest.mark.parametrize("leverage", ["0", "-1"])
def test_a_leverage_that_is_not_positive_is_refused_naming_it(leverage):
    assert "leverage must be greater than 0" in book_with().reserve(request("o", BUY, "1", "100", leverage=leverage), 1.0)

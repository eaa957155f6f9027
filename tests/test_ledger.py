"""The ledger's rules, with plain calls, and a stateful property test of its invariants."""

from __future__ import annotations

from decimal import Decimal as D

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from actors.ledger.core import LedgerCore
from actors.messages import (
    WRITER,
    AccountInfo,
    AccountQuery,
    Correct,
    CorrectionRefused,
    FillReport,
    OrderCanceled,
    ReservationDenied,
    ReservationGranted,
    Reserve,
)
from exchange.records import Side


def reserve(cid, strategy="a", side=Side.BUY, price="100", amount="1", fee="0.001") -> Reserve:
    return Reserve(cid, strategy, side, "BTC/USD", "BTC", "USD", D(price), D(amount), D(fee), f"strategy:{strategy}")


def fill(cid, trade, side=Side.BUY, price="100", amount="1", fee="0.1", currency="USD", complete=False) -> FillReport:
    return FillReport("sim", cid, "x", trade, "BTC/USD", side, D(price), D(amount), D(fee), currency, 0.0, complete)


def ledger(quote="1000", base="0", strategies=("a",)) -> LedgerCore:
    core = LedgerCore()
    for name in strategies:
        core.allocate(name, D(quote), D(base), 0.0, "test")
    return core


def journal_of(sends) -> list:
    return [e for s in sends if s.to == WRITER for e in s.message.entries]


def test_a_buy_reserves_price_times_amount_plus_the_worst_fee():
    core = ledger()
    out = core.handle(reserve("c1", price="100", amount="2", fee="0.002"), 1.0)
    assert out[-1].message == ReservationGranted("c1")
    account = core.accounts["a"]
    assert account.quote_reserved == D("200.4") and account.quote_free == D("799.6")
    core.check_invariants()


def test_a_denial_says_what_was_needed_and_what_was_free():
    core = ledger(quote="180")
    [send] = core.handle(reserve("c1", price="250", amount="1", fee="0.0004"), 1.0)
    assert send.message == ReservationDenied("c1", "insufficient capital: needs 250.10 USD, free 180.00 USD")
    assert core.accounts["a"].quote_free == D("180")
    [send] = core.handle(reserve("c2", side=Side.SELL, amount="0.5"), 1.0)
    assert send.message.reason == "insufficient inventory: needs 0.5 BTC, free 0 BTC"


def test_one_strategy_never_draws_on_another():
    core = ledger(quote="100", strategies=("a", "b"))
    granted = core.handle(reserve("a1", strategy="a", price="99", amount="1", fee="0"), 1.0)
    denied = core.handle(reserve("a2", strategy="a", price="99", amount="1", fee="0"), 1.0)
    assert isinstance(granted[-1].message, ReservationGranted)
    assert isinstance(denied[-1].message, ReservationDenied)
    assert core.accounts["b"].quote_free == D("100")


def test_partial_fill_then_cancel_keeps_the_filled_part_and_releases_the_rest():
    core = ledger()
    core.handle(reserve("c1", price="100", amount="2", fee="0.001"), 1.0)  # reserves 200.2
    core.handle(fill("c1", "t1", price="99", amount="1", fee="0.099"), 2.0)
    account = core.accounts["a"]
    assert account.base_free == D("1")
    assert account.quote_reserved == D("200.2") - D("99.099")
    out = core.handle(OrderCanceled("c1", "expired", 3.0), 3.0)
    assert [e.kind for e in journal_of(out)] == ["release"]
    assert account.quote_reserved == 0
    assert account.quote_free == D("1000") - D("99.099")
    assert account.fees_paid == {"USD": D("0.099")}
    core.check_invariants()


def test_a_duplicate_fill_is_settled_once_and_a_fill_after_cancel_is_accepted():
    core = ledger()
    core.handle(reserve("c1", amount="2"), 1.0)
    core.handle(fill("c1", "t1"), 2.0)
    assert core.handle(fill("c1", "t1"), 2.0) == []
    core.handle(OrderCanceled("c1", "by us", 3.0), 3.0)
    late = core.handle(fill("c1", "t2"), 4.0)  # the exchange filled it before the cancel took
    assert [e.kind for e in journal_of(late)] == ["settle"]
    assert core.accounts["a"].base_free == D("2")
    core.check_invariants()


def test_a_sell_realizes_pnl_at_average_cost_and_charges_the_actual_fee():
    core = ledger()
    core.handle(reserve("b1", price="100", amount="1", fee="0"), 1.0)
    core.handle(fill("b1", "t1", price="100", amount="1", fee="0", complete=True), 1.0)
    core.handle(reserve("s1", side=Side.SELL, price="150", amount="1", fee="0"), 2.0)
    core.handle(fill("s1", "t2", side=Side.SELL, price="150", amount="1", fee="0.15", complete=True), 2.0)
    account = core.accounts["a"]
    assert account.realized_pnl == D("49.85")
    assert account.quote_free == D("1000") - D("100") + D("150") - D("0.15")
    assert account.inventory == 0 and account.cost_basis == 0


def test_a_fee_in_the_base_asset_comes_out_of_the_inventory():
    core = ledger()
    core.handle(reserve("b1", price="100", amount="1", fee="0.001"), 1.0)
    core.handle(fill("b1", "t1", amount="1", fee="0.001", currency="BTC", complete=True), 1.0)
    account = core.accounts["a"]
    assert account.base_free == D("0.999")
    assert account.quote_free == D("900")  # the reserved worst-case fee came back
    core.check_invariants()


def test_a_share_of_free_capital_is_sized_by_the_ledger_when_it_reserves():
    core = ledger(quote="1000")
    request = attrs.evolve(reserve("c1", price="100", amount="0", fee="0.001"), share_of_free=D("0.25"),
                           lot_size=D("0.01"), min_amount=D("0.01"), min_notional=D("10"))
    [_, granted] = core.handle(request, 1.0)
    # 25 % of 1000 = 250, at 100.1 per unit (fee included): 2.4975..., rounded down to the lot.
    assert granted.message == ReservationGranted("c1", D("2.49"))
    assert core.accounts["a"].quote_reserved == D("100") * D("2.49") * D("1.001")
    # The next one is sized on what is free now.
    [_, granted] = core.handle(attrs.evolve(request, client_order_id="c2"), 2.0)
    assert granted.message.amount == D("1.87")  # 25 % of the 750.751 still free
    [denied] = core.handle(attrs.evolve(request, client_order_id="c3", share_of_free=D("0.001")), 3.0)
    assert denied.message.reason == "sizing: 0.100 % of free 563.56 USD buys 0.00 BTC at 100, below the market's minimum (0.01 BTC, 10 USD)"



def test_a_share_of_free_capital_at_a_price_of_zero_is_denied_not_a_crash():
    core = ledger(quote="1000")
    request = attrs.evolve(reserve("c1", price="0", amount="0"), share_of_free=D("0.25"), lot_size=D("0.01"))
    [denied] = core.handle(request, 1.0)
    assert denied.message == ReservationDenied("c1", "price must be greater than 0, got 0")
    core.check_invariants()


def test_account_query_answers_the_balances():
    core = ledger(quote="10", base="2")
    [send] = core.handle(AccountQuery("a", "strategy:a"), 0.0)
    assert send.message == AccountInfo("a", D("10"), D("0"), D("2"), D("0"))


def test_a_batch_records_its_journal_once_and_each_strategy_hears_its_balances_once_after_its_replies():
    core = ledger(strategies=("a", "b"))
    core.handle_batch([reserve("a1"), reserve("b1", strategy="b"), reserve("a2")], 1.0)
    out = core.handle_batch(
        [
            fill("a1", "t1", amount="0.5", fee="0"),
            OrderCanceled("a1", "expired", 2.0),
            reserve("a3", price="100", amount="2", fee="0"),
            OrderCanceled("b1", "expired", 2.0),
            fill("a2", "t2", amount="1", fee="0", complete=True),
            reserve("b1", strategy="b"),  # a duplicate id: denied
        ],
        2.0,
    )
    to = [s.to for s in out]
    assert to == [WRITER, "strategy:a", "strategy:b", "strategy:b", "strategy:a"]
    journal, granted, denied, info_b, info_a = (s.message for s in out)
    assert [(e.kind, e.client_order_id) for e in journal.entries] == [
        ("settle", "a1"), ("release", "a1"), ("reserve", "a3"), ("release", "b1"), ("settle", "a2"), ("release", "a2"),
    ]
    assert [f.trade_id for f in journal.fills] == ["t1", "t2"]
    assert granted == ReservationGranted("a3") and isinstance(denied, ReservationDenied)
    # Each as it was at its account's last change, naming every trade booked in the batch.
    a = core.accounts["a"]
    assert info_a == AccountInfo("a", a.quote_free, a.quote_reserved, a.base_free, a.base_reserved, {}, a.cost_basis,
                                 a.realized_pnl, dict(a.fees_paid), ("t1", "t2"))
    assert info_b.settled == () and info_b.quote_reserved == 0
    # A reservation does not answer with balances: those a release sent stand as they were.
    again = ledger(strategies=("a",))
    again.handle(reserve("a1", fee="0"), 1.0)
    [_, _, info] = again.handle_batch([OrderCanceled("a1", "expired", 2.0), reserve("a2", fee="0")], 2.0)
    assert info.message.quote_free == D("1000") and again.accounts["a"].quote_free == D("900")
    # One message at a time says the same, in as many answers.
    single = ledger(strategies=("a",))
    single.handle(reserve("a1"), 1.0)
    [record, info] = single.handle(OrderCanceled("a1", "expired", 2.0), 2.0)
    assert record.to == WRITER and [e.kind for e in record.message.entries] == ["release"]
    assert info.message == AccountInfo("a", D("1000"), D("0"), D("0"), D("0"))


def test_a_correction_needs_a_reason_and_never_leaves_a_balance_negative():
    core = ledger(quote="100", base="1")
    out = core.handle(Correct("a", D("-20"), D("0.5"), "operator withdrew 20 USD", "reconciler"), 1.0)
    assert [e.kind for e in journal_of(out)] == ["correct"]
    assert (core.accounts["a"].quote_free, core.accounts["a"].base_free) == (D("80"), D("1.5"))
    [refused] = core.handle(Correct("a", D("-81"), D("0"), "too much", "reconciler"), 2.0)
    assert isinstance(refused.message, CorrectionRefused)
    assert refused.message.reason.startswith("correction would leave a negative")
    [refused] = core.handle(Correct("a", D("1"), D("0"), "", "reconciler"), 2.0)
    assert refused.message.reason == "a correction needs a reason"
    assert core.accounts["a"].quote_free == D("80")


class LedgerMachine(RuleBasedStateMachine):
    """Random reserves, fills, cancels, rejects and expiries across three strategies."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.core = LedgerCore()
        self.journal: list = []
        self.sequence = 0
        self.trades = 0
        for name in ("a", "b", "c"):
            self.journal += self.core.allocate(name, D("1000"), D("5"), 0.0, "test")
        self.totals = {name: self._value(name) for name in ("a", "b", "c")}

    def _value(self, name):
        a = self.core.accounts[name]
        return (a.quote_free + a.quote_reserved, a.base_free + a.base_reserved)

    def _run(self, message):
        out = self.core.handle(message, 0.0)
        entries = journal_of(out)
        self.journal += entries
        return out, entries

    @rule(
        target=reservations,
        strategy=st.sampled_from("abc"),
        side=st.sampled_from(Side),
        price=st.decimals("1", "500", places=2),
        amount=st.decimals("0.01", "4", places=2),
        fee=st.sampled_from([D("0"), D("0.001"), D("0.002")]),
    )
    def reserve(self, strategy, side, price, amount, fee):
        self.sequence += 1
        cid = f"{strategy}-{self.sequence}"
        before = self._value(strategy)
        out, entries = self._run(reserve(cid, strategy, side, str(price), str(amount), str(fee)))
        granted = isinstance(out[-1].message, ReservationGranted)
        assert granted == bool(entries)
        assert self._value(strategy) == before, "a reservation changed free + reserved"
        return (cid, strategy, side, price, amount, fee)

    @rule(r=reservations, share=st.sampled_from([D("0.25"), D("0.5"), D("1")]), better=st.booleans())
    def partial_fill(self, r, share, better):
        cid, strategy, side, price, amount, fee = r
        reservation = self.core.reservations.get(cid)
        if reservation is None or not reservation.open:
            return
        qty = min(amount * share, amount - reservation.filled).quantize(D("0.0001"))
        if qty <= 0:
            return
        # A limit order fills at its price or better.
        fill_price = price - D("0.5") if better and side is Side.BUY and price > 1 else price
        if side is Side.SELL and better:
            fill_price = price + D("0.5")
        self.trades += 1
        before = {name: self._value(name) for name in "abc"}
        complete = reservation.filled + qty >= amount
        self._run(fill(cid, f"t{self.trades}", side, str(fill_price), str(qty), str(fill_price * qty * fee), "USD", complete))
        for other in set("abc") - {strategy}:
            assert self._value(other) == before[other], "a fill moved another strategy's money"

    @rule(r=consumes(reservations), how=st.sampled_from(["canceled", "rejected", "expired"]))
    def end(self, r, how):
        cid, strategy = r[0], r[1]
        before = self._value(strategy)
        self._run(OrderCanceled(cid, how, 0.0, expired=how == "expired"))
        assert self._value(strategy) == before, "a release changed free + reserved"
        reservation = self.core.reservations.get(cid)
        assert reservation is None or not reservation.open

    @rule(r=reservations)
    def duplicate_fill(self, r):
        reservation = self.core.reservations.get(r[0])
        if reservation is None or not reservation.trade_ids:
            return
        trade = sorted(reservation.trade_ids)[0]
        before = self._value(reservation.strategy)
        _, entries = self._run(fill(r[0], trade, r[2], str(r[3]), "0.01"))
        assert entries == [] and self._value(reservation.strategy) == before

    @rule(strategy=st.sampled_from("abc"), quote=st.decimals("-50", "50", places=2), base=st.decimals("-1", "1", places=2))
    def correct(self, strategy, quote, base):
        before = self._value(strategy)
        account = self.core.accounts[strategy]
        allowed = account.quote_free + quote >= 0 and account.base_free + base >= 0
        _, entries = self._run(Correct(strategy, quote, base, "reconciled", "reconciler"))
        assert bool(entries) == allowed
        expected = (before[0] + quote, before[1] + base) if allowed else before
        assert self._value(strategy) == expected, "a correction moved more than it said"

    @invariant()
    def invariants_hold(self):
        self.core.check_invariants()

    @invariant()
    def the_journal_rebuilds_the_same_state(self):
        rebuilt = LedgerCore.from_journal(self.journal)
        assert rebuilt.snapshot() == self.core.snapshot()
        assert {k: (v.open, v.filled, v.quote_reserved, v.base_reserved) for k, v in rebuilt.reservations.items()} == {
            k: (v.open, v.filled, v.quote_reserved, v.base_reserved) for k, v in self.core.reservations.items()
        }


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestLedgerStateful = LedgerMachine.TestCase

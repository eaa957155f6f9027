"""The positions' wiring cores with plain calls: the ledger's position messages
(PositionLedgerCore) and the shadow connection's routing of a perpetuals account
(PerpetualOrders)."""

from __future__ import annotations

from decimal import Decimal as D

from actors.connection.perpetual_core import PerpetualOrders
from actors.ledger.position_ledger_core import PositionLedgerCore
from actors.ledger.positions_core import PositionBook
from actors.messages import (
    LEDGER,
    WRITER,
    AccountQuery,
    CancelOrder,
    FillReport,
    FundingReport,
    OrderAccepted,
    OrderCanceled,
    PositionInfo,
    PositionOrderRequest,
    PositionReserve,
    RecordPositionJournal,
    ReservationDenied,
    ReservationGranted,
)
from actors.orders import Order, OrderState
from exchange.candles import Candle
from exchange.perpetuals import PerpetualExchange, perpetual_rules
from exchange.records import Side

SYMBOL = "BTC/USDT:USDT"
ME = "strategy:s"


def ledger() -> PositionLedgerCore:
    core = PositionLedgerCore({"s": SYMBOL})
    core.allocate({"s": D(1000)}, 0.0)
    return core


def reserve(cid: str, side: Side, amount: str, price: str = "100", reduce_only: bool = False) -> PositionReserve:
    return PositionReserve(PositionOrderRequest(cid, "s", SYMBOL, side, D(price), D(amount), D(5), D("0.0005"), reduce_only), ME)


def fill(cid: str, trade: str, side: Side, amount: str, price: str = "100", complete: bool = True) -> FillReport:
    return FillReport("perp", cid, cid, trade, SYMBOL, side, D(price), D(amount), D("0.01"), "USDT", 1.0, complete)


def test_the_ledger_reserves_settles_and_answers_with_the_position():
    core = ledger()
    out = core.handle_batch([reserve("a", Side.BUY, "2")], 1.0)
    assert isinstance(out[0].message, RecordPositionJournal) and [e.kind for e in out[0].message.entries] == ["reserve"]
    assert (out[1].to, out[1].message) == (ME, ReservationGranted("a"))
    assert isinstance(out[2].message, PositionInfo) and out[2].message.free == D(1000) - D("40.1")
    out = core.handle_batch([fill("a", "t1", Side.BUY, "2")], 1.0)
    [journal, info] = out
    assert journal.to == WRITER and journal.message.fills[0].trade_id == "t1"
    assert info.message.size == D(2) and info.message.entry_price == D(100) and info.message.settled == ("t1",)
    # A close larger than held is denied; the strategy hears what it holds after it.
    out = core.handle_batch([reserve("b", Side.SELL, "3", reduce_only=True)], 1.0)
    assert isinstance(out[0].message, ReservationDenied) and out[0].message.reason.startswith("close too large")
    assert isinstance(out[1].message, PositionInfo) and out[1].message.size == D(2)
    # The close: reserve, fill at 110 (P&L 20 gross), the book is the fold of its journal.
    core.handle_batch([reserve("c", Side.SELL, "2", "110", reduce_only=True)], 1.0)
    [_, info] = core.handle_batch([fill("c", "t2", Side.SELL, "2", "110")], 1.0)
    assert info.message.size == 0 and info.message.realized_pnl == D(20)
    assert info.message.fees_paid == {"USDT": D("0.02")}


def test_the_ledger_routes_only_its_own_messages_and_books_funding_once():
    core = PositionLedgerCore({"s": SYMBOL})
    journal = core.allocate({"s": D(1000)}, 0.0)

    def handle(*messages):
        out = core.handle_batch(list(messages), 1.0)
        journal.extend(e for s in out if isinstance(s.message, RecordPositionJournal) for e in s.message.entries)
        return out

    handle(reserve("a", Side.BUY, "1"))
    assert core.owns(fill("a", "t1", Side.BUY, "1")) and not core.owns(fill("spot-order", "t9", Side.BUY, "1"))
    assert core.owns(AccountQuery("s", ME)) and not core.owns(AccountQuery("spot-strategy", "strategy:spot-strategy"))
    assert core.owns(OrderCanceled("a", "expired", 1.0)) and not core.owns(OrderCanceled("x", "expired", 1.0))
    handle(fill("a", "t1", Side.BUY, "1"))
    funding = FundingReport("perp", "s", SYMBOL, "7", D("0.5"), "USDT", 2.0)
    out = handle(funding, funding)
    assert [e.kind for e in out[0].message.entries] == ["funding"]  # once per income id
    assert out[-1].message.funding_paid == D("0.5") and out[-1].message.realized_pnl == 0
    assert out[-1].message.wallet == D(1000) - D("0.01") - D("0.5")
    # The book is the fold of what it journaled.
    assert PositionBook.from_journal(journal, "USDT").snapshot() == core.book.snapshot()


def exchange() -> PerpetualExchange:
    rules = perpetual_rules(SYMBOL, tick_size=D("0.1"), lot_size=D("0.001"), min_amount=D("0.001"),
                            min_notional=D(5), maker_fee=D("0.0002"), taker_fee=D("0.0005"))
    ex = PerpetualExchange([rules], D(10000))
    ex.match(SYMBOL, Candle(0, D(100), D(100), D(100), D(100), D(1000)), 0.0)
    return ex


def order(cid: str, side: Side, amount: str, price: str, reduce_only: bool = False, order_type: str = "limit",
          trigger: str | None = None) -> Order:
    return Order(cid, "s", "perp", SYMBOL, side, D(price), D(amount), OrderState.SUBMITTING, 0.0, 0.0,
                 order_type=order_type, trigger_price=None if trigger is None else D(trigger), reduce_only=reduce_only)


def test_a_crossing_open_fills_at_once_and_a_stop_rests_under_its_algo_id():
    orders = PerpetualOrders("perp", exchange())
    out = orders.submit(order("open", Side.BUY, "1", "101"), 1.0)
    assert out[0].message == OrderAccepted("open", "1", 1.0, taken=D(1))  # the fills that follow come to 1
    fills = [s for s in out if isinstance(s.message, FillReport)]
    assert [s.to for s in fills] == [LEDGER, ME] and fills[0].message.price == D(100)  # taker, at the last price
    out = orders.submit(order("stop", Side.SELL, "1", "97", reduce_only=True, order_type="stop_limit", trigger="98"), 2.0)
    assert out == [out[0]] and out[0].message.exchange_order_id == "algo-1"
    assert [(o.client_order_id, o.exchange_order_id) for o in orders.open_orders()] == [("stop", "algo-1")]
    # The candle falls through the trigger: the child limit crosses the price that fired it
    # and fills at once, reported under the algo's id to the ledger and the owner.
    out = orders.match(SYMBOL, Candle(3600, D(100), D(100), D(97.5), D(98), D(1000)), 3.0)
    assert [(s.to, s.message.client_order_id, s.message.exchange_order_id, s.message.price) for s in out] == [
        (LEDGER, "stop", "algo-1", D(98)), (ME, "stop", "algo-1", D(98))]
    assert orders.exchange.position(SYMBOL).size == 0 and not orders.open_orders() and not orders.live


def test_a_reduce_only_order_the_exchange_expires_is_reported_after_the_fill_that_closed_the_position():
    orders = PerpetualOrders("perp", exchange())
    orders.submit(order("open", Side.BUY, "1", "101"), 1.0)
    orders.submit(order("tp", Side.SELL, "1", "105", reduce_only=True), 2.0)
    orders.submit(order("tp2", Side.SELL, "1", "106", reduce_only=True), 2.0)
    out = orders.match(SYMBOL, Candle(3600, D(100), D(105.5), D(100), D(105), D(1000)), 3.0)
    kinds = [(type(s.message).__name__, s.message.client_order_id, s.to) for s in out]
    assert kinds == [
        ("FillReport", "tp", LEDGER), ("FillReport", "tp", ME),
        ("OrderCanceled", "tp2", ME), ("OrderCanceled", "tp2", LEDGER),
    ]
    assert out[2].message.reason.startswith("expired by the exchange")
    # A cancel of an order already gone fails, and changes nothing.
    assert type(orders.cancel(CancelOrder("tp2", "s", "x"), 4.0)[-1].message).__name__ == "CancelFailed"
    assert orders.exchange.violations == []

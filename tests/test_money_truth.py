"""Money truth: one owner for every fact. The strategy and the ledger cores together, with the
test standing in for the exchange, on the examples that used to drift."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from decimal import Decimal as D

import attrs

from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    WRITER,
    AccountQuery,
    CancelOrder,
    CandleClosed,
    FillReport,
    OrderAccepted,
    OrderCanceled,
    OrderDurable,
    OrderRejected,
    Reconciled,
    RecordEvent,
    RecordJournal,
    RecordOrder,
    ReservationDenied,
    ReservationGranted,
    Send,
    SubmitOrder,
    Subscribe,
    VenueFacts,
    VenueInfo,
)
from actors.orders import Order, OrderState
from actors.strategy.breaker import BreakerSettings
from actors.strategy.core import StrategyCore
from actors.strategy.rules import Change
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.records import Side

MARKET = MarketRules.for_symbol(
    "BTC/USDT", tick_size=D("0.01"), lot_size=D("0.00001"), min_amount=D("0.00001"),
    min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.001"),
)
HOUR = 3600


class Desk:
    """A strategy core and the ledger core on one FIFO bus; the test plays the exchange."""

    def __init__(self, market: MarketRules = MARKET, **overrides) -> None:
        values = dict(
            name="s", venue="binance", symbol=market.symbol, sizing=Sizing(base=D("0.999")),
            allocation=Allocation(quote=D("1000")), buy=Change(D("-0.5"), 1), sell=Change(D("0.5"), 1),
            limit_offset_bps=D(0), ttl_seconds=2 * HOUR, max_open_orders=1,
        )
        values.update(overrides)
        self.settings = StrategySettings(**values)
        self.market = market
        self.ledger = LedgerCore()
        self.journal = self.ledger.allocate(
            "s", self.settings.allocation.quote, self.settings.allocation.base, 0.0, "test", self.settings.allocation.base_cost
        )
        self.rows: dict[str, Order] = {}
        self.fill_rows: dict[str, FillReport] = {}
        self.events: list[RecordEvent] = []
        self.to_exchange: list = []
        self.replies: list = []
        self.strategy = self.start()

    def start(self, orders: list[Order] = ()) -> StrategyCore:
        self.strategy = StrategyCore(self.settings)
        self.facts = VenueFacts("binance", None, {self.market.symbol: self.market}, {"USDT": D("100000"), "BTC": D("100")}, {})
        self.bus(self.strategy.restore(list(orders), 0.0) + self.strategy.start(0.0))
        self.bus([Send("strategy:s", Reconciled("binance"))])
        assert self.strategy.active, self.strategy.inactive_reason
        return self.strategy

    def bus(self, sends: list[Send], now: float = 0.0) -> None:
        queue = deque(sends)
        while queue:
            send = queue.popleft()
            message = send.message
            if send.to == LEDGER:
                queue.extend(self.ledger.handle(message, now))
            elif send.to == "strategy:s":
                self.replies.append(message)
                queue.extend(self.strategy.handle(message, now))
            elif send.to == WRITER:
                if isinstance(message, RecordOrder):
                    self.rows[message.order.client_order_id] = message.order
                    if message.durable_reply_to:
                        queue.append(Send(message.durable_reply_to, OrderDurable(message.order.client_order_id)))
                elif isinstance(message, RecordJournal):
                    self.journal += message.entries
                    self.fill_rows.update({f.trade_id: f for f in message.fills})
                elif isinstance(message, RecordEvent):
                    self.events.append(message)
            elif send.to == "connection:binance":
                if isinstance(message, Subscribe):
                    queue.append(Send("strategy:s", VenueInfo(self.facts)))
                else:
                    self.to_exchange.append(message)
            # the reconciler: nothing to say here

    # ------------------------------------------------------------ the exchange

    def candle(self, i: int, close: str, fills: tuple[str, ...] = ()) -> None:
        c = D(close)
        self.bus([Send("strategy:s", CandleClosed("binance", self.market.symbol, Candle(i * HOUR, c, c, c, c, D(100)), fills=fills))], i * HOUR)

    def submitted(self) -> Order:
        [submit] = [m for m in self.to_exchange if isinstance(m, SubmitOrder)]
        self.to_exchange.remove(submit)
        self.bus([Send("strategy:s", OrderAccepted(submit.order.client_order_id, "x-" + submit.order.client_order_id, 0.0))])
        return submit.order

    def fill(self, order: Order, trade: str, amount: str, fee: str, currency: str, complete: bool = False) -> FillReport:
        report = FillReport("binance", order.client_order_id, "x", trade, order.symbol, order.side, order.price, D(amount),
                            D(fee), currency, 0.0, complete)
        self.bus([Send(LEDGER, report), Send("strategy:s", report)])
        return report

    def account(self):
        return self.ledger.accounts["s"]


def test_a_fee_taken_in_the_coin_bought_leaves_holdings_that_the_next_sell_sells():
    # Binance takes a buy's fee from the coins received: 0.999 BTC bought, 0.000999 BTC fee.
    desk = Desk()
    desk.candle(0, "100.51")
    desk.candle(1, "100")  # -0.5 %: buy 0.999 at 100
    buy = desk.submitted()
    assert (buy.side, buy.price, buy.amount) == (Side.BUY, D("100"), D("0.999"))
    desk.fill(buy, "t1", "0.999", "0.000999", "BTC", complete=True)
    assert desk.account().base_free == D("0.998001")
    assert desk.strategy.held == D("0.998001")  # the ledger's answer, not a sum of fills
    desk.candle(2, "101")  # +1 %: sell
    [granted] = [m for m in desk.replies if isinstance(m, ReservationGranted) and m.amount is not None]
    assert granted.amount == D("0.99800")  # all that is free, floored to the lot
    assert not [m for m in desk.replies if isinstance(m, ReservationDenied)]
    sell = desk.submitted()
    assert (sell.side, sell.amount) == (Side.SELL, D("0.99800"))


def test_fees_in_the_quote_and_a_third_currency_are_charged_to_the_strategy_that_paid():
    for currency, fee, base_after, quote_after in (
        ("USDT", "0.0999", D("0.999"), D("1000") - D("99.9") - D("0.0999")),
        ("BNB", "0.0003", D("0.999"), D("1000") - D("99.9")),
    ):
        desk = Desk()
        desk.candle(0, "100.51")
        desk.candle(1, "100")
        desk.fill(desk.submitted(), "t1", "0.999", fee, currency, complete=True)
        account = desk.account()
        assert (account.base_free, account.quote_free) == (base_after, quote_after)
        assert account.fees_paid == {currency: D(fee)}
        assert desk.strategy.fees_paid == {currency: D(fee)}


def test_a_fill_reported_after_the_cancel_still_counts_and_its_funds_stay_reserved():
    market = attrs.evolve(MARKET, lot_size=D("0.0001"), min_amount=D("0.0001"))
    desk = Desk(market, sizing=Sizing(base=D("1.0005")), limit_offset_bps=D(5))
    desk.candle(0, "100.6")
    desk.candle(1, "100")  # buy 1.0005 at 99.95, resting
    buy = desk.submitted()
    assert (buy.price, buy.amount) == (D("99.95"), D("1.0005"))
    # The exchange fills 0.25; its time-to-live runs out; the cancel is confirmed with the
    # exchange's filled amount before the trade itself is reported.
    desk.candle(3, "100")
    [cancel] = [m for m in desk.to_exchange if isinstance(m, CancelOrder)]
    desk.bus([Send("strategy:s", OrderCanceled(buy.client_order_id, "expired", 0.0, expired=True, filled=D("0.25"))),
              Send(LEDGER, OrderCanceled(buy.client_order_id, "expired", 0.0, expired=True, filled=D("0.25")))])
    # The trade's money is still reserved: nothing else may take it.
    kept = D("0.25") * D("99.95") * D("1.001")
    assert desk.account().quote_reserved == kept
    assert desk.account().quote_free == D("1000") - kept
    desk.fill(buy, "t1", "0.25", "0.00025", "BTC")
    row = desk.rows[buy.client_order_id]
    assert row.state is OrderState.EXPIRED and row.filled == D("0.25")
    assert [e.client_order_id for e in desk.events if e.kind == "fill"] == [buy.client_order_id]
    assert desk.account().base_free == desk.strategy.held == D("0.24975")
    assert desk.account().quote_reserved == 0 and desk.ledger.open_reservations() == []
    assert set(desk.fill_rows) == {"t1"}
    desk.ledger.check_invariants()


def test_a_late_fill_that_would_drive_a_balance_negative_is_refused_and_nothing_is_lost():
    desk = Desk(sizing=Sizing(quote=D("990")), allocation=Allocation(quote=D("1000")))
    desk.candle(0, "100.51")
    desk.candle(1, "100")
    first = desk.submitted()
    # The exchange did not say what had filled: everything is released ...
    desk.bus([Send("strategy:s", OrderCanceled(first.client_order_id, "canceled outside limitline", 0.0)),
              Send(LEDGER, OrderCanceled(first.client_order_id, "canceled outside limitline", 0.0))])
    desk.candle(2, "100.51")
    desk.candle(3, "100")  # ... and handed to a new order
    desk.submitted()
    before = desk.ledger.snapshot()
    # ... then a trade of the first order arrives: booking it would leave quote_free < 0.
    desk.fill(first, "t1", "5", "0.005", "BTC")
    assert desk.ledger.snapshot() == before  # refused whole, never half-applied
    [refused] = [e for e in desk.events if e.kind == "ledger_refused"]
    assert "quote_free" in refused.reason and refused.client_order_id == first.client_order_id
    assert "t1" in desk.fill_rows  # the exchange's trade is recorded all the same
    assert desk.strategy.paused and "ledger refused" in desk.strategy.paused
    desk.ledger.check_invariants()
    assert LedgerCore.from_journal(desk.journal).snapshot() == desk.ledger.snapshot()


def test_invariant_checks_survive_python_O():
    probe = (
        "from decimal import Decimal\n"
        "from actors.ledger.core import LedgerCore, LedgerInvariantError\n"
        "core = LedgerCore(); core.allocate('s', Decimal(1), Decimal(0), 0.0, 'x')\n"
        "core.accounts['s'].quote_free = Decimal(-1)\n"
        "try:\n    core.check_invariants()\nexcept LedgerInvariantError as e:\n    print('caught', e)\n"
    )
    result = subprocess.run([sys.executable, "-O", "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("caught s.quote_free is negative")


def test_starting_inventory_has_its_cost_and_the_entry_price_survives_a_restart():
    desk = Desk(allocation=Allocation(quote=D("8000"), base=D("0.2"), base_cost=D("2505.56")), buy=None,
                sell=Change(D("2"), 1), sizing=Sizing(quote=D("500")))
    assert desk.strategy.entry_price == D("2505.56")
    desk.candle(0, "2550")
    desk.candle(1, "2601")  # +2 %: sell the 0.2 BTC
    sell = desk.submitted()
    desk.fill(sell, "t1", "0.2", "0.5202", "USDT", complete=True)
    # Proceeds less fee less what the coins cost: not the whole proceeds.
    assert desk.account().realized_pnl == D("0.2") * D("2601") - D("0.5202") - D("0.2") * D("2505.56")
    assert desk.strategy.realized_pnl == desk.account().realized_pnl


def test_the_entry_price_is_the_same_before_and_after_a_restart():
    desk = Desk()
    desk.candle(0, "100.51")
    desk.candle(1, "100")
    desk.fill(desk.submitted(), "t1", "0.5", "0.05", "USDT")
    running = desk.strategy.entry_price
    assert running == (D("50") + D("0.05")) / D("0.5")  # fees included, as the ledger counts
    desk.ledger = LedgerCore.from_journal(desk.journal)
    restarted = desk.start(list(desk.rows.values()))
    assert restarted.entry_price == running


def test_a_partial_fill_below_the_minimum_is_not_stranded_at_the_time_to_live():
    # Minimum notional 10 USDT: 0.0002 BTC at 99.95 (2 USDT) could never be sold alone.
    desk = Desk(sizing=Sizing(base=D("1")), limit_offset_bps=D(5), max_open_orders=2, sell=Change(D("0.5"), 1))
    desk.candle(0, "100.6")
    desk.candle(1, "100")
    buy = desk.submitted()
    desk.candle(2, "99.9", fills=("t1",))
    desk.fill(buy, "t1", "0.0002", "0.0000002", "BTC")
    desk.candle(3, "100")  # the time-to-live (2 h) has run out: not cancelled, given one more
    assert not [m for m in desk.to_exchange if isinstance(m, CancelOrder)]
    assert desk.strategy.status()["dust"] == "0.0001998"
    desk.candle(4, "100.6")  # +0.6 %: the sell trigger fires, but there is only dust to sell
    [blocked] = [e for e in desk.events if e.kind == "blocked" and e.reason.startswith("dust")]
    assert "it is sold with the next position" in blocked.reason
    desk.candle(5, "100.6")  # twice the time-to-live: cancelled now; the dust joins the next position
    assert [m.reason for m in desk.to_exchange if isinstance(m, CancelOrder)] == ["expired"]


def test_the_half_open_breaker_lets_exactly_one_probe_out_whatever_max_open_orders():
    desk = Desk(max_open_orders=5, breaker=BreakerSettings(threshold=3, cooldown_seconds=1, max_cooldown_seconds=4),
                sizing=Sizing(quote=D("20")), sell=None)
    close = D("100")
    for i in range(3):  # three rejections open the breaker
        close = (close * D("0.99")).quantize(D("0.01"))
        desk.candle(i, str(close))
        if i == 0:
            continue
        [submit] = [m for m in desk.to_exchange if isinstance(m, SubmitOrder)]
        desk.to_exchange.remove(submit)
        rejected = OrderRejected(submit.order.client_order_id, "-1013 Filter failure", 0.0)
        desk.bus([Send("strategy:s", rejected), Send(LEDGER, rejected)])
    desk.candle(3, str(close * D("0.99")))
    [submit] = [m for m in desk.to_exchange if isinstance(m, SubmitOrder)]
    desk.to_exchange.remove(submit)
    desk.bus([Send("strategy:s", OrderRejected(submit.order.client_order_id, "-1013", 0.0)),
              Send(LEDGER, OrderRejected(submit.order.client_order_id, "-1013", 0.0))])
    assert desk.strategy.breaker.state.value == "open"
    # After the cooldown (wall time), two decisions before the ledger has answered the first
    # (both candles are queued ahead of its reply): one probe, one block.
    reserves_before = len([m for m in desk.replies if isinstance(m, ReservationGranted)])
    desk.bus([
        Send("strategy:s", CandleClosed("binance", "BTC/USDT", Candle(i * HOUR, D(price), D(price), D(price), D(price), D(100))))
        for i, price in ((4, "90"), (5, "89"))
    ], 100.0)
    granted = [m for m in desk.replies if isinstance(m, ReservationGranted)][reserves_before:]
    assert len(granted) == 1
    assert [e.reason for e in desk.events if e.kind == "blocked"][-1].startswith("circuit breaker half-open: waiting for probe")


def test_a_strategy_asks_and_the_ledger_answers_what_it_holds():
    desk = Desk()
    [info] = [s.message for s in desk.ledger.handle(AccountQuery("s", "strategy:s"), 0.0)]
    assert (info.quote_free, info.base_free, info.cost_basis) == (D("1000"), 0, 0)


def test_the_completing_trade_reported_before_an_earlier_one_keeps_its_funds_and_both_count():
    # Found by the model-based test: trades of one order can be reported out of order.
    desk = Desk(sizing=Sizing(base=D("2")), allocation=Allocation(quote=D("1000")))
    desk.candle(0, "100.51")
    desk.candle(1, "100")
    buy = desk.submitted()
    desk.fill(buy, "t2", "1", "0.001", "BTC", complete=True)  # the exchange: filled
    kept = D("1") * D("100") * D("1.001")  # what the unreported trade t1 still needs
    assert desk.account().quote_reserved == kept
    desk.fill(buy, "t1", "1", "0.001", "BTC")
    row = desk.rows[buy.client_order_id]
    assert row.state is OrderState.FILLED and row.filled == D("2")
    assert len([e for e in desk.events if e.kind == "fill"]) == 2
    assert desk.account().base_free == desk.strategy.held == D("1.998")
    assert desk.ledger.open_reservations() == [] and not [e for e in desk.events if e.kind == "ledger_refused"]


def test_a_fee_paid_in_bnb_is_owed_by_the_strategy_that_paid_it_and_nobody_looks_short():
    from actors.messages import (
        ExchangeSnapshot,
        LedgerSnapshot,
        LedgerSnapshotRequest,
        Pause,
        Reserve,
    )
    from actors.reconciler.core import Market, ReconcilerCore, Record

    accounts_of = {"btc": (("sim", "shadow"), "BTC", "USDT"), "bnbholder": (("sim", "shadow"), "BNB", "USDT")}
    ledger = LedgerCore(accounts_of)
    journal = ledger.allocate("btc", D("1000"), D(0), 0.0, "test")
    journal += ledger.allocate("bnbholder", D(0), D("0.5"), 0.0, "test", D("300"))
    out = ledger.handle(Reserve("b1", "btc", Side.BUY, "BTC/USDT", "BTC", "USDT", D("100"), D("1"), D("0.001"), "strategy:btc"), 1.0)
    # The exchange charged the fee in BNB (0.1 USDT at 300 USDT/BNB), out of the account's 0.5 BNB.
    out += ledger.handle(FillReport("sim", "b1", "x", "t1", "BTC/USDT", Side.BUY, D("100"), D("1"), D("0.0003333"), "BNB", 1.0, True), 1.0)
    journal += [e for s in out if isinstance(s.message, RecordJournal) for e in s.message.entries]
    assert ledger.accounts["btc"].others == {"BNB": D("-0.0003333")}
    assert ledger.accounts["bnbholder"].base_free == D("0.5")  # nobody else pays
    [snapshot] = [s.message for s in ledger.handle(LedgerSnapshotRequest("reconciler", 1), 2.0)]
    assert isinstance(snapshot, LedgerSnapshot)
    exchange = ExchangeSnapshot("sim", (), {"USDT": D("900"), "BTC": D("1"), "BNB": D("0.4996667")}, 2.0, 1, ())
    reconciler = ReconcilerCore({"btc": Market("sim", "BTC", "USDT"), "bnbholder": Market("sim", "BNB", "USDT")})
    sends = [s for cycle in (2.0, 3.0, 4.0) for s in reconciler.on_cycle(Record((), frozenset()), exchange, snapshot, cycle)]
    assert not [s for s in sends if isinstance(s.message, Pause)]
    assert LedgerCore.from_journal(journal, accounts_of).snapshot() == ledger.snapshot()  # the fold knows it too


def test_an_allocation_is_journaled_only_once_its_parameters_pass(fast_raw):
    # Starting inventory without its cost fails pre-flight; its allocation must not reach
    # the journal at cost 0, where a later base_cost could no longer change it.
    from supervisors.app import App
    from supervisors.config import parse_config

    del fast_raw["strategies"][1]["allocation"]["base_cost"]
    app = App(parse_config(fast_raw))
    [ledger] = [c.spec for c in app.root._children if c.spec.name == "ledger"]
    assert set(ledger.start.keywords["allocations"]) == {"sma-cross"}

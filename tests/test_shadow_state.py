"""Shadow mode continues across restarts: the simulated exchange's state in the store, with
plain calls.

The last test is the crash proof: one run of the default config's cores (without trio),
its writer's messages cut at many points (whatever ``kill -9`` can leave on disk is a
prefix of what the writer was sent, since it commits its inbox in order), and each cut
restarted from the store: the simulated exchange must agree with the ledger and the order
book, trade ids never repeat, nothing stays open past its time-to-live, and the
strategies trade on.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import yaml

from actors.connection.shadow_core import ShadowConnectionCore
from actors.ledger.core import LedgerCore
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    CancelOrder,
    LedgerSnapshotRequest,
    OrderAccepted,
    OrderDurable,
    ReconciledQuery,
    RecordJournal,
    RecordOrder,
    RecordSimulatedExchange,
    Send,
    SubmitOrder,
    Subscribe,
    Tick,
    connection_address,
    strategy_address,
)
from actors.orders import Order, OrderState
from actors.reconciler.core import Market, ReconcilerCore, Record
from actors.strategy.core import StrategyCore
from actors.writer.core import plan_batch
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import SimulatedExchange
from exchange.records import Side
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from store.access import stored_simulated
from store.db import (
    archive_store,
    load_journal,
    load_orders,
    load_record,
    load_simulated,
    open_store,
    write_batch,
)
from supervisors.app import build_shadow_venue
from supervisors.config import allocated_on, parse_config

ROOT = Path(__file__).resolve().parents[1]
MARKET = MarketRules.for_symbol("BTC/USD", tick_size=D("0.01"), lot_size=D("0.001"), min_amount=D("0.001"),
                                min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"))


def candle(ts: int, low: str, high: str, volume: str = "10") -> Candle:
    return Candle(ts, D(high), D(high), D(low), D(low), D(volume))


def write(path: Path, *records: RecordSimulatedExchange) -> None:
    connection = open_store(path)
    batch, _ = plan_batch(records)
    write_batch(connection, batch)
    connection.close()


def test_the_exchange_continues_from_the_store_with_its_book_locks_and_ids(tmp_path):
    store = tmp_path / "s.sqlite"
    ex = SimulatedExchange([MARKET], {"USD": D("10000"), "BTC": D("1")}, volume_share=D("0.5"))
    ex.track_changes = True
    ex.create_limit_order("BTC/USD", Side.BUY, D("4"), D("100"), "buy", 0)
    ex.create_limit_order("BTC/USD", Side.SELL, D("0.5"), D("120"), "sell", 0)
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("90"), "gone", 0)
    ex.cancel_order("gone")
    write(store, RecordSimulatedExchange("sim", ex.drain_changes(), {"BTC/USD": 100}))
    [partial] = ex.match("BTC/USD", candle(200, "99", "110", volume="2"), 1)
    assert partial.amount == D("1") and not partial.order_complete
    # The second record holds only what changed: the partly filled buy and its trade.
    changes = ex.drain_changes()
    assert [o.client_order_id for o in changes.orders] == ["buy"] and len(changes.trades) == 1
    write(store, RecordSimulatedExchange("sim", changes, {"BTC/USD": 200}))
    assert ex.drain_changes() is None  # handed over once

    state, replay, _ = stored_simulated(store, "sim")
    assert replay == {"BTC/USD": 200}
    back = SimulatedExchange([MARKET], {"USD": D("1")}, volume_share=D("0.5"))  # the config's opening balance
    back.restore(state)
    assert {a: (b.free, b.used) for a, b in back.balances.items()} == {a: (b.free, b.used) for a, b in ex.balances.items()}
    assert [o.record() for o in back.open_orders()] == [o.record() for o in ex.open_orders()]
    assert [o.locked for o in back.open_orders()] == [o.locked for o in ex.open_orders()]
    assert back.order_by_client_id("gone").status == "canceled"
    assert back.trades == ex.trades and back.trades_of("1") == [partial]
    # Both go on alike: the resting orders keep their places, the ids follow the stored ones.
    later = candle(300, "99", "130", volume="10")
    assert back.match("BTC/USD", later, 2) == ex.match("BTC/USD", later, 2)
    assert [t.trade_id for t in back.trades] == ["1", "2", "3"]
    assert back.balances["USD"].used == 0 and back.balances["BTC"].used == 0  # both filled: nothing locked
    assert back.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "next", 3).exchange_order_id == "4"


def test_after_a_lost_write_a_restarted_connection_hands_everything_over_again():
    ex = SimulatedExchange([MARKET], {"USD": D("10000")}, volume_share=D("1"))
    ex.track_changes = True
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("100"), "a", 0)
    ex.create_limit_order("BTC/USD", Side.BUY, D("1"), D("50"), "b", 0)
    ex.match("BTC/USD", candle(0, "99", "101"), 1)
    ex.drain_changes()  # handed to a writer that failed to write it
    ex.resync()
    again = ex.drain_changes()
    assert [o.client_order_id for o in again.orders] == ["a", "b"] and len(again.trades) == 1


def test_a_store_without_a_simulated_account_restores_nothing(tmp_path):
    assert stored_simulated(tmp_path / "none.sqlite", "sim") == (None, {}, False)
    open_store(tmp_path / "empty.sqlite").close()
    assert stored_simulated(tmp_path / "empty.sqlite", "sim") == (None, {}, False)


def test_a_store_from_before_the_simulated_state_was_kept_is_noticed(tmp_path):
    from store.schema import MIGRATIONS

    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    for version, statements in enumerate(MIGRATIONS[:2], start=1):
        for statement in statements:
            connection.execute(statement)
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))
    connection.execute("INSERT INTO orders (client_order_id, strategy, venue, symbol, side, price, amount, filled, state,"
                       " created_at, updated_at) VALUES ('ll-a-1', 'a', 'sim', 'BTC/USD', 'buy', '1', '1', '0', 'OPEN', 0, 0)")
    connection.commit()
    connection.close()
    assert stored_simulated(path, "sim") == (None, {}, True)


def test_a_resumed_replay_goes_on_with_the_next_candle_at_its_speed():
    candles = [candle(ts, "1", "2") for ts in range(0, 100, 10)]
    feed = ReplayFeed(candles, speed=2.0)
    assert feed.due(0.0) == [] and [c.ts for c in feed.due(1.0)] == [0, 10]
    resumed = ReplayFeed(candles, speed=2.0)
    resumed.resume_after(feed.last_ts)
    assert resumed.due(500.0) == []  # its clock starts now: nothing is due at once
    assert [c.ts for c in resumed.due(500.5)] == [20]
    assert [c.ts for c in resumed.due(501.5)] == [30, 40]
    assert resumed.next_release() == 502.0
    finished = ReplayFeed(candles, speed=2.0)
    finished.resume_after(90)
    assert finished.finished and finished.take_next() is None


def test_an_order_restored_from_the_store_still_expires_on_market_time():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    settings = parse_config(raw).strategies[1]  # dip-buyer: time-to-live 2 hours
    order = Order("ll-dipbuyer-94ecae-7", settings.name, "sim", "BTC/USD", Side.BUY, D("2500"), D("0.2"),
                  OrderState.OPEN, 1.0, 1.0, exchange_order_id="7", market_ts=10_000)
    core = StrategyCore(settings)
    assert core.restore([order], 2.0) == []
    assert not [s for s in core.on_candle(candle(10_000 + 3600, "1", "2"), 3.0) if s.to == "connection:sim"]
    sends = core.on_candle(candle(10_000 + 7200, "1", "2"), 4.0)
    [cancel] = [s.message for s in sends if s.to == "connection:sim"]
    assert cancel.client_order_id == order.client_order_id and cancel.reason == "expired"


def test_fresh_moves_the_store_aside_with_the_time_in_its_name(tmp_path):
    from datetime import datetime, timezone

    path = tmp_path / "data" / "limitline.sqlite"
    connection = open_store(path)
    write_batch(connection, plan_batch([RecordSimulatedExchange("sim", None, {"BTC/USD": 5})])[0])
    # Left open, as by kill -9: the rows are in the write-ahead log only.
    when = datetime(2024, 5, 1, 10, 22, 33, tzinfo=timezone.utc)
    archived = archive_store(path, when)
    assert archived == tmp_path / "data" / "limitline.20240501T102233Z.sqlite"
    assert not path.exists() and not Path(f"{path}-wal").exists()
    assert load_simulated(open_store(archived, readonly=True), venue="sim") == (None, {"BTC/USD": 5})
    open_store(path).close()
    assert archive_store(path, when) == tmp_path / "data" / "limitline.20240501T102233Z-1.sqlite"
    assert archive_store(tmp_path / "nothing.sqlite") is None
    connection.close()


def test_fresh_is_refused_when_a_strategy_is_live(tmp_path, capsys):
    from supervisors.cli import start_fresh

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["store"] = str(tmp_path / "s.sqlite")
    raw["venues"].append({"name": "binance", "kind": "ccxt", "exchange": "binance", "api_key_env": "K", "secret_env": "S"})
    raw["strategies"][0].update(venue="binance", mode="live")
    open_store(tmp_path / "s.sqlite").close()
    problem = start_fresh(parse_config(raw, live=True))
    assert problem is not None and "sma-cross are live" in problem
    assert (tmp_path / "s.sqlite").exists()


def reports(sends: list[Send]) -> list[Any]:
    return [s.message for s in sends]


def test_a_connection_records_each_change_ahead_of_what_it_causes():
    """The writer commits its inbox in order: the exchange's change must be on its way there
    before the ledger or a strategy can hear of it (and record something because of it)."""
    shadow = ShadowVenue(
        SimulatedExchange([MARKET], {"USD": D("10000"), "BTC": D("1")}),
        {"BTC/USD": ReplayFeed([candle(ts, "99", "101", volume="100") for ts in (0, 3600, 7200)], speed=1.0)},
    )
    core = ShadowConnectionCore("sim", shadow, persist=True)
    core.handle(Subscribe("a", "BTC/USD"), 0.0)
    order = Order("ll-a-1", "a", "sim", "BTC/USD", Side.BUY, D("100"), D("1"), OrderState.SUBMITTING, 0.0, 0.0)
    placed = core.handle(SubmitOrder(order), 0.0)
    assert placed[0].to == WRITER and placed[0].message.state.orders[0].status == "open"
    assert isinstance(placed[1].message, OrderAccepted)
    assert core.handle(Tick(10.0), 10.0) == []  # the clock starts: nothing is due, nothing changed
    filled = core.handle(Tick(11.0), 11.0)
    record = filled[0].message
    assert isinstance(record, RecordSimulatedExchange) and record.replay == {"BTC/USD": 0}
    assert [t.trade_id for t in record.state.trades] == ["1"]
    assert [type(m).__name__ for m in reports(filled[1:])] == ["FillReport", "FillReport", "CandleClosed"]
    assert core.handle(Tick(11.5), 11.5) == []  # nothing changed: nothing to write
    second = Order("ll-a-2", "a", "sim", "BTC/USD", Side.BUY, D("90"), D("1"), OrderState.SUBMITTING, 0.0, 0.0)
    core.handle(SubmitOrder(second), 12.0)
    canceled = core.handle(CancelOrder("ll-a-2", "a", "expired"), 12.0)
    assert canceled[0].message.state.orders[0].status == "canceled"
    assert [type(m).__name__ for m in reports(canceled[1:])] == ["OrderCanceled", "OrderCanceled"]
    # The Lab runs the same core without persistence: no record at all.
    lab = ShadowConnectionCore("sim", ShadowVenue(SimulatedExchange([MARKET], {"USD": D("10000")}), {}))
    assert not [s for s in lab.handle(SubmitOrder(order), 0.0) if s.to == WRITER]


def test_shadow_strategies_on_a_live_venue_keep_their_simulated_account_too():
    from actors.connection.live_core import LiveConnectionCore, LiveSettings
    from actors.connection.simulated_orders import LazySimulatedExchange
    from actors.messages import CallDone, ExchangeCall

    settings = LiveSettings(poll_seconds=1, rate_limit_per_second=100, isolate_after_seconds=10, probe_max_seconds=8)
    book = LazySimulatedExchange({"USD": D("10000")}, persist=True)
    core = LiveConnectionCore("binance", settings, 0.0, shadow_strategies=frozenset({"a"}), shadow_exchange=book,
                              authenticated=False)
    [load] = [e for e in core.start(0.0) if isinstance(e, ExchangeCall)]
    core.handle(CallDone(load.call_id, {"BTC/USD": MARKET}), 0.1)
    order = Order("ll-a-1", "a", "binance", "BTC/USD", Side.BUY, D("100"), D("1"), OrderState.SUBMITTING, 0.0, 0.0)
    placed = core.handle(SubmitOrder(order), 1.0)
    assert placed[0].to == WRITER and isinstance(placed[0].message, RecordSimulatedExchange)
    assert isinstance(placed[1].message, OrderAccepted)
    # The next process continues the account: the order rests, the ids go on.
    again = LazySimulatedExchange({"USD": D("10000")}, restored=placed[0].message.state, persist=True)
    assert [o.client_order_id for o in again.get([MARKET]).open_orders()] == ["ll-a-1"]
    assert again.get([MARKET]).balances["USD"].used == D("100.2")  # locked with the worst (taker) fee


# ------------------------------------------------------------------------------------------
# kill -9 at any instant, with the cores


class Runtime:
    """One limitline process on the default config: the real cores (strategies, ledger,
    shadow connection, reconciler) on a FIFO bus, without trio, one candle per step. Its
    writer keeps every message in the order it was sent (``sent``) and :meth:`commit`
    writes what is new to the store, as the writer actor would."""

    def __init__(self, store: Path) -> None:
        raw = yaml.safe_load((ROOT / "config.yaml").read_text())
        raw["store"] = str(store)
        self.config = config = parse_config(raw)
        venue = config.venues[0]
        shadow = build_shadow_venue(venue)
        state, replay, _ = stored_simulated(store, venue.name)
        shadow.restore(state, replay)
        self.exchange = shadow.exchange
        self.first_trade_id = state.next_trade if state else 1
        self.connection = ShadowConnectionCore(venue.name, shadow, persist=True)
        self.db = open_store(store)
        orders = load_orders(self.db)
        accounts_of = {s.name: ((s.venue, s.mode), *s.symbol.split("/")) for s in config.strategies}
        self.ledger = LedgerCore.from_journal(load_journal(self.db), accounts_of)
        self.reconciler = ReconcilerCore({s.name: Market(s.venue, *s.symbol.split("/")) for s in config.strategies})
        self.strategies = {s.name: StrategyCore(s, allocated_on(config, venue.name, "shadow")) for s in config.strategies}
        self.sent: list[Any] = []
        self._committed = 0
        self.now = 1_000.0
        for s in config.strategies:
            if s.name not in self.ledger.accounts:
                entries = self.ledger.allocate(s.name, s.allocation.quote, s.allocation.base, self.now, "allocation",
                                               s.allocation.base_cost)
                self.sent.append(RecordJournal(tuple(entries)))
        self.handlers = {
            LEDGER: self.ledger.handle,
            connection_address(venue.name): self.connection.handle,
            WRITER: self._write,
            RECONCILER: self._reconcile,
            **{strategy_address(name): core.handle for name, core in self.strategies.items()},
        }
        # As the shells start them: the connection first (what it reports waits in the
        # strategies' mailboxes), then each strategy restores before it reads its mailbox.
        starting = self.connection.restore([o for o in orders if o.venue == venue.name], self.now)
        for name, core in self.strategies.items():
            starting += core.restore([o for o in orders if o.strategy == name], self.now) + core.start(self.now)
        self.bus(starting)

    def bus(self, sends: list[Send]) -> None:
        queue = deque(sends)
        while queue:
            send = queue.popleft()
            queue.extend(self.handlers[send.to](send.message, self.now))

    def _write(self, message: Any, now: float) -> list[Send]:
        self.sent.append(message)
        if isinstance(message, RecordOrder) and message.durable_reply_to is not None:
            return [Send(message.durable_reply_to, OrderDurable(message.order.client_order_id))]
        return []

    def _reconcile(self, message: Any, now: float) -> list[Send]:
        return self.reconciler.query(message) if isinstance(message, ReconciledQuery) else []

    def step(self, reconcile: bool = False) -> None:
        """One candle (the clock moves by one candle at the replay's speed), and a
        reconciliation cycle against the store if asked."""
        self.now += 0.2
        self.bus(self.connection.handle(Tick(self.now), self.now))
        if reconcile:
            self.commit()
            orders, trade_ids = load_record(self.db, venue="sim")
            [ledger] = [s.message for s in self.ledger.handle(LedgerSnapshotRequest(RECONCILER, 1), self.now)]
            exchange = self.connection.snapshot(self.now)
            self.bus(self.reconciler.on_cycle(Record(tuple(orders), trade_ids), exchange, ledger, self.now))

    def commit(self) -> None:
        write_batch(self.db, plan_batch(self.sent[self._committed:])[0])
        self._committed = len(self.sent)


def check_books(runtime: Runtime) -> None:
    """The store and the cores agree (after a restart and a clean stop)."""
    db = runtime.db
    fills = {row[0]: row[1:] for row in db.execute("SELECT trade_id, client_order_id, price, amount, fee FROM fills")}
    trades = {row[0]: row[1:] for row in db.execute("SELECT trade_id, client_order_id, price, amount, fee FROM sim_trades")}
    settled = [row[0] for row in db.execute("SELECT trade_id FROM journal WHERE kind = 'settle'")]
    assert fills == trades, "the fills table and the simulated exchange's trades differ"
    assert sorted(settled) == sorted(fills), "the ledger and the fills table differ"
    new = [int(t.trade_id) for t in runtime.exchange.trades if int(t.trade_id) >= runtime.first_trade_id]
    assert new, "nothing filled after the restart"
    ledger = LedgerCore.from_journal(load_journal(db))
    ledger.check_invariants()
    # What the strategies hold plus what the config left unallocated is the whole account.
    unallocated = {"USD": D("20000") - D("16000"), "BTC": D("0.5") - D("0.2")}
    held = {
        "USD": sum((a.quote_free + a.quote_reserved for a in ledger.accounts.values()), D(0)),
        "BTC": sum((a.base_free + a.base_reserved for a in ledger.accounts.values()), D(0)),
    }
    balances = {a: D(free) + D(used) for a, free, used in db.execute("SELECT asset, free, used FROM sim_balances")}
    assert {a: held[a] + unallocated[a] for a in held} == balances
    # Every order the book holds open rests on the exchange with what it filled, and back;
    # the ledger reserves for exactly those.
    book = {o.client_order_id: o for o in load_orders(db, open_only=True)}
    resting = {cid: D(f) for cid, f in db.execute("SELECT client_order_id, filled FROM sim_orders WHERE status = 'open'")}
    assert {cid: o.filled for cid, o in book.items()} == resting
    assert {r.client_order_id for r in ledger.open_reservations()} == set(book)
    # Nothing outlives its time-to-live in market time (twice it for a partly filled order
    # whose cancellation would leave dust).
    [last_ts] = db.execute("SELECT last_ts FROM sim_replay").fetchone()
    ttl = {s.name: s.ttl_seconds for s in runtime.config.strategies}
    for order in book.values():
        assert last_ts - order.market_ts < 2 * ttl[order.strategy], f"{order.client_order_id} is past its time-to-live"
    for core in runtime.strategies.values():
        assert core.active and core.paused is None, core.inactive_reason
    assert runtime.reconciler.counts == {} or set(runtime.reconciler.counts) <= {"reservation_without_order"}


def test_kill_9_at_any_point_of_a_run_and_the_restart_continues_exactly(tmp_path):
    first = Runtime(tmp_path / "run.sqlite")
    for step in range(120):
        first.step(reconcile=step % 5 == 0)
    sent = first.sent
    changes = [i for i, m in enumerate(sent) if isinstance(m, RecordSimulatedExchange) and m.state is not None]
    assert len(changes) >= 10, "too little happened to cut"
    # Cuts spread over the run, and right before and after changes of the exchange (the
    # order against the ledger's and the strategies' records is what is under test).
    points = sorted({len(sent) * i // 12 for i in range(1, 12)} | {i + d for i in changes[::4] for d in (0, 1, 3)})
    for point in points:
        store = tmp_path / f"cut-{point}.sqlite"
        crashed = open_store(store)
        write_batch(crashed, plan_batch(sent[:point])[0])  # what kill -9 left: a prefix
        crashed.close()
        restarted = Runtime(store)
        for step in range(80):
            restarted.step(reconcile=step % 3 == 0)
        restarted.commit()
        try:
            check_books(restarted)
        except AssertionError as failure:
            raise AssertionError(f"cut after {point} of {len(sent)} messages: {failure}") from failure

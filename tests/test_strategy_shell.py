"""The strategy actor's shell under the autojump clock, with scripted neighbours.

The neighbours (connection, ledger, writer) are small actors that answer the way the real
ones do; the breaker's cooldowns of 30 s and more then run in virtual milliseconds.
"""

from __future__ import annotations

import functools
from decimal import Decimal as D

import trio

from actors.mailbox import Mailbox
from actors.messages import (
    AccountInfo,
    AccountQuery,
    CandleClosed,
    OrderAccepted,
    OrderDurable,
    OrderRejected,
    Reconciled,
    ReconciledQuery,
    RecordEvent,
    RecordOrder,
    ReservationGranted,
    Reserve,
    SubmitOrder,
    Subscribe,
    VenueFacts,
    VenueInfo,
)
from actors.runtime import ActorEnv
from actors.strategy.breaker import BreakerSettings
from actors.strategy.rules import Change
from actors.strategy.settings import Allocation, Sizing, StrategySettings
from actors.strategy.shell import strategy_actor
from exchange.candles import Candle
from exchange.markets import MarketRules
from actors.orders import client_order_id
from store.access import SqliteReader
from store.db import load_client_id_instance, open_store
from supervisors.tree import ChildSpec, Supervisor

MARKET = MarketRules.for_symbol(
    "BTC/USD", tick_size=D("0.01"), lot_size=D("0.0001"), min_amount=D("0.0001"),
    min_notional=D("10"), maker_fee=D("0.001"), taker_fee=D("0.002"),
)


class Neighbours:
    """Fake connection, ledger and writer in one task each; the exchange fails on demand."""

    def __init__(self) -> None:
        self.boxes = {name: Mailbox(256) for name in ("connection:sim", "ledger", "writer", "reconciler", "strategy:s")}
        self.directory = {name: box.send_channel for name, box in self.boxes.items()}
        self.events: list[RecordEvent] = []
        self.submitted: list[str] = []
        self.failing = True
        self._changed = trio.Event()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate) -> None:
        while not predicate(self):
            await self._changed.wait()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._connection)
            nursery.start_soon(self._ledger)
            nursery.start_soon(self._writer)
            nursery.start_soon(self._reconciler)

    async def _reconciler(self) -> None:
        async for message in self.boxes["reconciler"].open_receiver():
            if isinstance(message, ReconciledQuery):
                await self.directory[message.reply_to].send(Reconciled(message.venue))

    async def _connection(self) -> None:
        strategy = self.directory["strategy:s"]
        async for message in self.boxes["connection:sim"].open_receiver():
            if isinstance(message, Subscribe):
                facts = VenueFacts("sim", None, {"BTC/USD": MARKET}, {"USD": D("1000000")}, {"BTC/USD": D("100")})
                await strategy.send(VenueInfo(facts))
            elif isinstance(message, SubmitOrder):
                cid = message.order.client_order_id
                self.submitted.append(cid)
                now = trio.current_time()
                reply = OrderRejected(cid, "Internal error; unable to process your request. (code -1001)", now) if self.failing else OrderAccepted(cid, "x" + cid, now)
                await strategy.send(reply)
                self._note()

    async def _ledger(self) -> None:
        strategy = self.directory["strategy:s"]
        async for message in self.boxes["ledger"].open_receiver():
            if isinstance(message, AccountQuery):
                await strategy.send(AccountInfo("s", D("1000000"), D(0), D(0), D(0)))
            elif isinstance(message, Reserve):
                await strategy.send(ReservationGranted(message.client_order_id))

    async def _writer(self) -> None:
        strategy = self.directory["strategy:s"]
        async for message in self.boxes["writer"].open_receiver():
            if isinstance(message, RecordEvent):
                self.events.append(message)
                self._note()
            elif isinstance(message, RecordOrder) and message.durable_reply_to:
                await strategy.send(OrderDurable(message.order.client_order_id))


async def test_the_breaker_opens_probes_and_closes_in_virtual_time(tmp_path, autojump_clock):
    open_store(tmp_path / "s.sqlite").close()
    settings = StrategySettings(
        name="s", venue="sim", symbol="BTC/USD", sizing=Sizing(quote=D("100")), allocation=Allocation(quote=D("1000000")),
        buy=Change(D("-0.1"), 1), ttl_seconds=3600, max_open_orders=100,
        breaker=BreakerSettings(threshold=3, cooldown_seconds=30, max_cooldown_seconds=120),
    )
    n = Neighbours()
    env = ActorEnv(n.directory, SqliteReader(tmp_path / "s.sqlite"))
    start = functools.partial(strategy_actor, settings=settings, allocated={"USD": D("1000000")}, env=env)
    sup = Supervisor("venue:sim", [ChildSpec("strategy:s", start, mailbox=n.boxes["strategy:s"])])
    price = [D("1000")]

    async def candle() -> None:
        price[0] -= 5  # every candle falls 0.5 %: the buy trigger fires every time
        c = Candle(int(trio.current_time()), price[0], price[0], price[0], price[0], D("100"))
        await n.directory["strategy:s"].send(CandleClosed("sim", "BTC/USD", c))

    def status():
        return sup.snapshot()["children"][0]["status"]["breaker"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        await nursery.start(sup.run_root)
        await n.until(lambda n: "strategy_active" in n.kinds())
        await candle()
        for expected in (1, 2, 3):
            await candle()
            await n.until(lambda n: len(n.submitted) == expected and n.kinds().count("order_rejected") == expected)
        assert status()["state"] == "open"
        # The ids carry the store's instance: another store on the account never makes them.
        connection = open_store(tmp_path / "s.sqlite")
        instance = load_client_id_instance(connection)
        connection.close()
        assert len(instance) == 6 and n.submitted == [client_order_id("s", i, instance) for i in (1, 2, 3)]
        opened_at = trio.current_time()
        # While open, signals are blocked with the reason, and nothing reaches the exchange.
        await candle()
        await n.until(lambda n: n.events[-1].kind == "blocked")
        assert n.events[-1].reason.startswith("circuit breaker open until")
        assert len(n.submitted) == 3

        # The cooldown passes (30 virtual seconds); exactly one probe goes, and it fails.
        await trio.sleep(30)
        await candle()
        await n.until(lambda n: len(n.submitted) == 4 and n.kinds().count("breaker_open") == 2)
        assert "breaker_half_open" in n.kinds()
        assert status()["cooldown_seconds"] == 60  # doubled
        assert trio.current_time() - opened_at >= 30

        # After the longer cooldown the probe succeeds and orders flow again.
        n.failing = False
        await trio.sleep(60)
        await candle()
        await n.until(lambda n: "breaker_closed" in n.kinds())
        assert status() == {**status(), "state": "closed", "consecutive_failures": 0, "cooldown_seconds": 30}
        await candle()
        await n.until(lambda n: len(n.submitted) == 6)
        nursery.cancel_scope.cancel()
    kinds = n.kinds()
    assert kinds.index("breaker_open") < kinds.index("breaker_half_open") < kinds.index("breaker_closed")

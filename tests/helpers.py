"""Helpers shared by the tests that run the whole tree."""

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, Callable

import trio

from actors.messages import RecordEvent
from actors.orders import client_order_id, parse_sequence
from exchange.candles import bundled_path
from exchange.faults import FaultSettings
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from supervisors.app import App
from supervisors.config import parse_config

#: The credentials of the live tests' sandbox (canaries: they must never appear anywhere).
KEY, SECRET = "canary-key-7f3a9", "canary-secret-b41c2"


class Watch:
    """Collects the events the writer commits, and wakes a test when one it waits for comes."""

    def __init__(self) -> None:
        self.events: list[RecordEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: RecordEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Callable[[list[RecordEvent]], bool]) -> None:
        while not predicate(self.events):
            await self._changed.wait()

    def count(self, kind: str, strategy: str | None = None) -> int:
        return sum(e.kind == kind and (strategy is None or e.strategy == strategy) for e in self.events)

    def of(self, kind: str) -> list[RecordEvent]:
        return [e for e in self.events if e.kind == kind]


def walk(node: dict[str, Any]):
    """Every node of a supervision-tree snapshot."""
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def lab_ids(store: sqlite3.Connection) -> dict[str, str]:
    """Each client order id of a store's orders as the Lab makes it: the Lab has no store,
    so its ids carry no store instance (``actors.orders.client_order_id``); the decisions
    (strategy, sequence) are what shadow mode and the Lab must share."""
    return {cid: client_order_id(strategy, parse_sequence(cid))
            for cid, strategy in store.execute("SELECT client_order_id, strategy FROM orders")}


def node(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in walk(snapshot) if n["name"] == name)


class Lines:
    """Reads a pipe on a thread so a test can wait for a line with a deadline."""

    def __init__(self, pipe) -> None:
        import queue
        import threading

        self.queue: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            self.queue.put(line)
        self.queue.put("")

    def wait_for(self, pattern: str, timeout: float = 60):
        import queue
        import re

        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout}s; last lines:\n{''.join(self.seen[-40:])}") from None
            self.seen.append(line)
            if line == "":
                raise AssertionError(f"the stream ended before {pattern!r}:\n{''.join(self.seen[-40:])}")
            match = re.search(pattern, line)
            if match:
                return match

    def wait_for_all(self, patterns: list[str], timeout: float = 60) -> None:
        """Until every pattern has matched some line (in any order)."""
        import re

        missing = [p for p in patterns if not any(re.search(p, line) for line in self.seen)]
        while missing:
            self.wait_for("|".join(f"(?:{p})" for p in missing), timeout)
            missing = [p for p in patterns if not any(re.search(p, line) for line in self.seen)]


# ------------------------------------------------------- live, over the wire


def live_config(tmp_path, url: str, **venue) -> dict:
    """One ccxt venue on the sandbox at ``url``, one live strategy (``dipper``)."""
    return {
        "store": str(tmp_path / "live.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 0.5},
        "venues": [
            {"name": "binance", "kind": "ccxt", "exchange": "binance", "base_url": url,
             "api_key_env": "LL_TEST_KEY", "secret_env": "LL_TEST_SECRET",
             "poll_seconds": 0.1, "rate_limit_per_second": 200, **venue},
        ],
        "strategies": [
            {"name": "dipper", "venue": "binance", "symbol": "BTC/USDT", "mode": "live",
             "allocation": {"quote": 5000, "base": 0.5, "base_cost": 2500}, "sizing": {"quote": 200},
             "buy": {"kind": "change", "percent": -0.3, "lookback": 1},
             "sell": {"kind": "change", "percent": 0.3, "lookback": 1},
             "limit_offset_bps": -5, "ttl_seconds": 7200, "max_open_orders": 2,
             "breaker": {"threshold": 3, "cooldown_seconds": 1, "max_cooldown_seconds": 4}},
        ],
    }


def new_sandbox(speed: float = 20.0, volume_share: str = "0.1", faults: FaultSettings | None = None,
                candle_seconds: int | None = None) -> Sandbox:
    return Sandbox(SandboxSettings(data=str(bundled_path()), speed=speed, api_key=KEY, secret=SECRET,
                                   volume_share=Decimal(volume_share), candle_seconds=candle_seconds), faults)


class Running:
    """A runtime started by :func:`start_app`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    async def stop(self) -> None:
        """Stops it alone, as a process that ends would: the store stays, the exchange carries on."""
        self.scope.cancel()
        await self.stopped.wait()


async def start_app(nursery: trio.Nursery, raw: dict, watch: Watch) -> Running:
    """The runtime of ``raw`` (live armed), started."""
    running = Running(App(parse_config(raw, live=True), echo=watch, live=True))

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with running.scope:
                await running.app.run(task_status=task_status)
        finally:
            running.stopped.set()

    await nursery.start(run)
    return running


@asynccontextmanager
async def live_runtime(tmp_path, sandbox_speed=20.0, extra_venues=(), extra_strategies=(), port=0, volume_share="0.1",
                       *, strategy: dict | None = None, faults: FaultSettings | None = None,
                       candle_seconds: int | None = None, deadline: float = 90, reconciler: dict | None = None, **venue):
    """The sandbox and the runtime, running; yields (watch, sandbox, app, nursery).

    ``strategy``: fields of the strategy ``dipper`` to change; ``reconciler``: of the
    reconciler's settings; ``faults``: the sandbox's faults from its first request on."""
    sandbox = new_sandbox(sandbox_speed, volume_share, faults, candle_seconds)
    watch = Watch()
    with trio.fail_after(deadline):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, port)
            raw = live_config(tmp_path, url, **venue)
            raw["strategies"][0].update(strategy or {})
            raw["reconciler"].update(reconciler or {})
            raw["venues"] += list(extra_venues)
            raw["strategies"] += list(extra_strategies)
            app = (await start_app(nursery, raw, watch)).app
            yield watch, sandbox, app, nursery
            nursery.cancel_scope.cancel()


def order_state(app: App, cid: str) -> str | None:
    """The order's state in the order book of record."""
    row = sqlite3.connect(app.config.store).execute("SELECT state FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
    return row[0] if row else None


def open_reservations(app: App) -> set[str]:
    """Client order ids whose reservation the journal still holds."""
    rows = sqlite3.connect(app.config.store).execute(
        "SELECT client_order_id FROM journal GROUP BY client_order_id"
        " HAVING sum(kind = 'reserve') > sum(kind = 'release')"
    ).fetchall()
    return {cid for (cid,) in rows}

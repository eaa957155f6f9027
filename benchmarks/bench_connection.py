"""Orders per second through the connection actor, against raw ccxt calls, same run.

Usage: python benchmarks/bench_connection.py [--orders N]

Both sides place limit orders with the real ccxt.binance client on a `limitline sandbox`
on loopback, with the same concurrency (the connection's thread limit). The orders rest far
from the market (buy at 1 USDT) so matching does not run. Target: actor overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import trio

from actors.connection.live_core import LiveSettings
from actors.connection.live_shell import THREADS_PER_CONNECTION, live_connection_actor
from actors.mailbox import Mailbox
from actors.messages import (
    LEDGER,
    WRITER,
    OrderAccepted,
    SubmitOrder,
    connection_address,
)
from actors.orders import Order, OrderState
from actors.runtime import ActorEnv
from exchange.candles import bundled_path
from exchange.ccxt_adapter import make_client
from exchange.records import Side
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from store.access import SqliteReader
from store.db import open_store
from supervisors.tree import ChildSpec, Supervisor

BALANCES = {"USDT": Decimal("1e12"), "BTC": Decimal("1e6")}


def client(url: str):
    c = make_client("binance", api_key="sandbox-key", secret="sandbox-secret", base_url=url)
    c.load_markets()
    return c


async def raw_ccxt(url: str, orders: int, tag: str) -> float:
    c = await trio.to_thread.run_sync(client, url)
    limiter = trio.CapacityLimiter(THREADS_PER_CONNECTION)

    async def place(i: int) -> None:
        await trio.to_thread.run_sync(
            functools.partial(c.create_order, "BTC/USDT", "limit", "buy", 6, 1, {"clientOrderId": f"{tag}-{i}"}), limiter=limiter
        )

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(orders):
            nursery.start_soon(place, i)
    return orders / (time.perf_counter() - start)


async def through_actor(url: str, orders: int, store: Path) -> float:
    boxes = {name: Mailbox(orders + 16) for name in (WRITER, LEDGER, "strategy:bench", connection_address("sandbox"))}
    directory = {name: box.send_channel for name, box in boxes.items()}
    env = ActorEnv(directory, SqliteReader(store))
    start_actor = functools.partial(
        live_connection_actor,
        venue="sandbox",
        make_client=functools.partial(make_client, "binance", api_key="sandbox-key", secret="sandbox-secret", base_url=url),
        secrets=(),
        settings=LiveSettings(poll_seconds=10_000, rate_limit_per_second=1_000_000),
        env=env,
    )
    root = Supervisor("root", [ChildSpec(connection_address("sandbox"), start_actor, mailbox=boxes[connection_address("sandbox")])])
    replies = boxes["strategy:bench"].open_receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run_root)
        while boxes[WRITER].depth == 0 and root.snapshot()["children"][0].get("status", {}).get("markets_loaded") is not True:
            await trio.sleep(0.01)  # benchmark set-up only: wait for the markets to load
        start = time.perf_counter()
        for i in range(orders):
            order = Order(f"bench-{i}", "bench", "sandbox", "BTC/USDT", Side.BUY, Decimal(1), Decimal(6), OrderState.SUBMITTING, 0, 0)
            await directory[connection_address("sandbox")].send(SubmitOrder(order))
        accepted = 0
        while accepted < orders:
            if isinstance(await replies.receive(), OrderAccepted):
                accepted += 1
        rate = orders / (time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return rate


async def main(orders: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        open_store(Path(tmp) / "bench.sqlite").close()
        sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=0.001, balances=BALANCES))
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = await raw_ccxt(url, orders, "raw1")
            actor = await through_actor(url, orders, Path(tmp) / "bench.sqlite")
            raw_again = await raw_ccxt(url, orders, "raw2")
            nursery.cancel_scope.cancel()
    baseline = (raw + raw_again) / 2
    print(f"orders: {orders}, {THREADS_PER_CONNECTION} threads, real ccxt.binance against limitline sandbox on loopback")
    print(f"raw ccxt create_order           {raw:8.0f} orders/s (again after: {raw_again:.0f})")
    print(f"through the connection actor    {actor:8.0f} orders/s")
    print(f"overhead: {(baseline / actor - 1) * 100:+.1f} %  (target <= 10 %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1000)
    trio.run(main, parser.parse_args().orders)

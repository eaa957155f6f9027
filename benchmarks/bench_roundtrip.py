"""Strategy -> ledger -> strategy round trips through the real actors, against bare trio.

Usage: python benchmarks/bench_roundtrip.py [--trips N] [--strategies K] [--window W]

Measures, in the same process and run:

1. bare: clients send requests on a trio memory channel to a task that answers each on
   the client's own channel, moving messages exactly as the actors do (``send_nowait``
   as ``deliver`` does, ``receive_batch`` as ``serve`` does), with nothing in between:
   sequential round trips (latency p50/p99) and K concurrent clients (throughput);
2. actors: the real writer and ledger actors under a real supervisor, with supervisor-owned
   mailboxes; a "strategy" delivers ``Reserve`` as a strategy shell does and takes its
   inbox in batches until ``ReservationGranted`` is in it (the timed round trip), then
   sends ``Release``. Every reservation and release is journaled to sqlite by the writer,
   as in production. Sequentially twice: waiting (untimed) for the ledger's answer to each
   release, so a trip is one request and its reply, as bare; and not waiting, so the
   release shares the ledger's batch with the next reservation and its handling counts in
   that trip. Then K concurrent strategies (throughput);
3. pipelined: each of the K strategies keeps ``--window`` reservations in flight (a
   strategy with several open orders), bare and through the ledger actor.

Prints each figure, its ratio to bare, the CPU time of the process per trip (every thread,
counting the writer until it has committed the phase's journal: steadier than wall time on
a shared machine), and how many rows the writer committed at a time in each phase. Targets (issue 12): the round trip's p50 within 2x of bare; at least 100k
reservations/s with 100 concurrent strategies. Run it a few times: on a shared machine
the ratios move from run to run (see the README for what was measured).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import trio

from actors.ledger.shell import ledger_actor
from actors.mailbox import Mailbox, receive_batch
from actors.messages import (
    LEDGER,
    WRITER,
    AccountInfo,
    Release,
    ReservationGranted,
    Reserve,
    Send,
)
from actors.runtime import ActorEnv, deliver, tune_garbage_collector
from actors.strategy.settings import Allocation
from actors.writer.core import is_durable
from actors.writer.shell import writer_actor
from exchange.records import Side
from store.access import SqliteReader, SqliteWriter
from supervisors.tree import ChildSpec, RestartStrategy, Supervisor


T = TypeVar("T")
PRICE, AMOUNT, FEE_RATE = Decimal("100"), Decimal("0.01"), Decimal("0.001")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


# The bare baseline moves messages exactly as the actors do (``deliver``: ``send_nowait``;
# ``serve``: ``receive_batch``), with nothing in between: an echo.


async def bare_server(requests: trio.MemoryReceiveChannel, replies: list[trio.MemorySendChannel]) -> None:
    while True:
        for client, message in await receive_batch(requests):
            replies[client].send_nowait(message)


async def bare_sequential(trips: int) -> list[float]:
    req_send, req_recv = trio.open_memory_channel(1024)
    rep_send, rep_recv = trio.open_memory_channel(1024)
    latencies = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bare_server, req_recv, [rep_send])
        for i in range(trips):
            start = time.perf_counter()
            req_send.send_nowait((0, i))
            await receive_batch(rep_recv)
            latencies.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return latencies


async def bare_concurrent(trips: int, clients: int) -> float:
    req_send, req_recv = trio.open_memory_channel(1024)
    replies = [trio.open_memory_channel(16) for _ in range(clients)]

    async def client(index: int, count: int):
        for i in range(count):
            req_send.send_nowait((index, i))
            await receive_batch(replies[index][1])

    per_client = trips // clients
    async with trio.open_nursery() as outer:
        outer.start_soon(bare_server, req_recv, [send for send, _ in replies])
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(client, index, per_client)
        elapsed = time.perf_counter() - start
        outer.cancel_scope.cancel()
    return per_client * clients / elapsed


class ActorRig:
    """The real writer and ledger under a supervisor, plus K strategy mailboxes."""

    def __init__(self, store: Path, strategies: int) -> None:
        self.directory: dict = {}
        self.env = ActorEnv(self.directory, SqliteReader(store))
        self.inboxes = {}
        for index in range(strategies):
            mailbox = Mailbox(64)
            self.directory[f"strategy:s{index}"] = mailbox.send_channel
            self.inboxes[index] = mailbox.open_receiver()
        writer_box, ledger_box = Mailbox(8192, urgent=is_durable), Mailbox(1024)
        self.directory[WRITER] = writer_box.send_channel
        self.directory[LEDGER] = ledger_box.send_channel
        allocations = {f"s{i}": Allocation(quote=Decimal("1e12")) for i in range(strategies)}
        self.root = Supervisor(
            "root",
            [
                ChildSpec(WRITER, functools.partial(writer_actor, open_sink=functools.partial(SqliteWriter, store), directory=self.directory, bell=writer_box.bell), mailbox=writer_box),
                ChildSpec(LEDGER, functools.partial(ledger_actor, allocations=allocations, env=self.env), mailbox=ledger_box),
            ],
            RestartStrategy.REST_FOR_ONE,
        )
        self.sequence = 0

    async def writer_caught_up(self) -> None:
        """Wait until the writer has committed everything sent to it (so the CPU time of a
        phase includes writing its journal)."""
        while True:
            before = self.writer_counts()
            await trio.sleep(0.05)
            [writer] = [c for c in self.root.snapshot()["children"] if c["name"] == WRITER]
            if writer["mailbox"]["depth"] == 0 and self.writer_counts() == before:
                return

    def writer_counts(self) -> tuple[int, int]:
        """The writer's commits and rows so far."""
        [writer] = [c for c in self.root.snapshot()["children"] if c["name"] == WRITER]
        return writer["status"]["batches"], writer["status"]["rows"]

    async def trip(self, index: int, *, await_release: bool = False) -> float:
        """One reservation round trip, sent the way a strategy shell sends; its latency.

        Then the reservation is released (journaled too; the books stay small). With
        ``await_release`` the strategy waits, untimed, for the ledger's answer to the
        release (its balances) before its next reservation: the timed trip is one request
        and its reply, as bare. Without, the release shares the ledger's next batch with
        the next reservation, whose trip then includes the release's handling."""
        self.sequence += 1
        cid = f"s{index}-{self.sequence}"
        reserve = Reserve(cid, f"s{index}", Side.BUY, "BTC/USD", "BTC", "USD", PRICE, AMOUNT, FEE_RATE, f"strategy:s{index}")
        inbox = self.inboxes[index]
        start = time.perf_counter()
        await deliver(self.directory, [Send(LEDGER, reserve)])
        # As a strategy's serve loop does: take what is in the inbox (the balances after
        # the last release, AccountInfo, may come along with the answer).
        replies: list = []
        while not replies:
            replies = [r for r in await receive_batch(inbox) if not isinstance(r, AccountInfo)]
        latency = time.perf_counter() - start
        assert len(replies) == 1 and isinstance(replies[0], ReservationGranted) and replies[0].client_order_id == cid
        await deliver(self.directory, [Send(LEDGER, Release(cid, "benchmark"))])
        if await_release:
            while not any(isinstance(r, AccountInfo) for r in await receive_batch(inbox)):
                pass
        return latency


async def actors_sequential(rig: ActorRig, trips: int, await_release: bool) -> list[float]:
    return [await rig.trip(0, await_release=await_release) for _ in range(trips)]


async def actors_concurrent(rig: ActorRig, trips: int, clients: int) -> float:
    per_client = trips // clients

    async def client(index: int):
        for _ in range(per_client):
            await rig.trip(index)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
    return per_client * clients / (time.perf_counter() - start)


async def actors_pipelined(rig: ActorRig, trips: int, clients: int, window: int) -> float:
    """Each strategy keeps ``window`` reservations in flight (a strategy with several open
    orders). Like a strategy shell, it drains its inbox in batches and delivers its answers
    (a release per grant, then new requests) in one go."""
    per_client = trips // clients

    async def client(index: int) -> None:
        sent = received = 0
        strategy = f"s{index}"
        inbox = rig.inboxes[index]
        while received < per_client:
            out = []
            while sent < per_client and sent - received + len(out) < window:
                rig.sequence += 1
                cid = f"{strategy}-{rig.sequence}"
                out.append(Send(LEDGER, Reserve(cid, strategy, Side.BUY, "BTC/USD", "BTC", "USD", PRICE, AMOUNT, FEE_RATE, f"strategy:{strategy}")))
            sent += len(out)
            await deliver(rig.directory, out)
            # The ledger also tells each strategy its balances after a release: not a reply.
            replies = [r for r in await receive_batch(inbox) if not isinstance(r, AccountInfo)]
            for reply in replies:
                assert isinstance(reply, ReservationGranted), reply
            received += len(replies)
            await deliver(rig.directory, [Send(LEDGER, Release(r.client_order_id, "benchmark")) for r in replies])

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
    return per_client * clients / (time.perf_counter() - start)


async def bare_pipelined(trips: int, clients: int, window: int) -> float:
    """The same shape on bare channels: a server that echoes, clients that batch."""
    req_send, req_recv = trio.open_memory_channel(4096)
    replies = [trio.open_memory_channel(window + 1) for _ in range(clients)]

    async def client(index: int, count: int):
        sent = received = 0
        while received < count:
            while sent < count and sent - received < window:
                req_send.send_nowait((index, sent))
                sent += 1
            received += len(await receive_batch(replies[index][1]))

    per_client = trips // clients
    async with trio.open_nursery() as outer:
        outer.start_soon(bare_server, req_recv, [send for send, _ in replies])
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(client, index, per_client)
        elapsed = time.perf_counter() - start
        outer.cancel_scope.cancel()
    return per_client * clients / elapsed


async def cpu_per_trip(count: int, phase: Awaitable[T], after: Callable[[], Awaitable[None]] | None = None) -> tuple[T, float]:
    """``phase``'s result and the process's CPU time (every thread) per trip, counting what
    ``after`` waits for (the writer catching up)."""
    start = time.process_time()
    result = await phase
    if after is not None:
        await after()
    return result, (time.process_time() - start) / count


async def main(trips: int, clients: int, window: int) -> None:
    tune_garbage_collector()  # both sides under the collector's settings of `limitline run`
    bare_lat = await bare_sequential(trips)
    count = trips // clients * clients
    piped = trips * 2 // clients * clients
    bare_rate, bare_cpu = await cpu_per_trip(count, bare_concurrent(trips, clients))
    bare_piped, bare_piped_cpu = await cpu_per_trip(piped, bare_pipelined(trips * 2, clients, window))
    phases = ("sequential", "sequential, after a release", "concurrent", "pipelined")
    with tempfile.TemporaryDirectory() as tmp:
        rig = ActorRig(Path(tmp) / "bench.sqlite", clients)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.root.run_root)
            await actors_sequential(rig, min(2000, trips), True)  # warm up
            tune_garbage_collector()  # as `limitline run` does once running
            await rig.writer_caught_up()
            commits = [rig.writer_counts()]
            actor_lat = await actors_sequential(rig, trips, True)
            commits.append(rig.writer_counts())
            after_release = await actors_sequential(rig, trips, False)
            await rig.writer_caught_up()
            commits.append(rig.writer_counts())
            actor_rate, actor_cpu = await cpu_per_trip(count, actors_concurrent(rig, trips, clients), rig.writer_caught_up)
            commits.append(rig.writer_counts())
            actor_piped, actor_piped_cpu = await cpu_per_trip(
                piped, actors_pipelined(rig, trips * 2, clients, window), rig.writer_caught_up
            )
            commits.append(rig.writer_counts())
            nursery.cancel_scope.cancel()
    b50, b99 = percentiles(bare_lat)
    a50, a99 = percentiles(actor_lat)
    r50, r99 = percentiles(after_release)
    us = 1e6
    print(f"round trips: {trips} sequential; {clients} concurrent clients")
    print(f"bare trio request-reply       p50 {b50 * us:7.1f} us  p99 {b99 * us:7.1f} us  {bare_rate:9.0f} trips/s concurrent")
    print(f"strategy->ledger->strategy    p50 {a50 * us:7.1f} us  p99 {a99 * us:7.1f} us  {actor_rate:9.0f} reservations/s concurrent")
    print(f"  the same, after a release   p50 {r50 * us:7.1f} us  p99 {r99 * us:7.1f} us  (the release shares the ledger's batch)")
    print(f"ratio to bare: p50 {a50 / b50:.2f}x (after a release {r50 / b50:.2f}x)  p99 {a99 / b99:.2f}x  concurrent throughput {bare_rate / actor_rate:.2f}x slower")
    print(f"targets (issue 12): p50 within 2x of bare: {a50 / b50:.2f}x; {clients} strategies at 100k reservations/s: "
          f"{actor_rate / 1000:.0f}k/s, against {bare_rate / 1000:.0f}k/s for the bare fan-in of {clients} clients on this "
          f"machine now ({actor_rate / bare_rate:.0%} of it; 100k/s is {100_000 / bare_rate:.0%} of it)")
    print(f"pipelined, {window} in flight per strategy: bare {bare_piped:9.0f} trips/s   ledger actor {actor_piped:9.0f} reservations/s   ({bare_piped / actor_piped:.2f}x slower)")
    print(
        f"CPU time per trip (every thread, the journal written): concurrent bare {bare_cpu * us:.1f} us, ledger {actor_cpu * us:.1f} us"
        f" ({actor_cpu / bare_cpu:.2f}x); pipelined bare {bare_piped_cpu * us:.1f} us, ledger {actor_piped_cpu * us:.1f} us"
        f" ({actor_piped_cpu / bare_piped_cpu:.2f}x)"
    )
    # Commits that finished during each phase (a commit still running at its end is not
    # counted: under load the writer may finish none while the ledger runs ahead of it).
    per_commit = [
        f"{phase} {(rows1 - rows0) / (batches1 - batches0):.0f}" if batches1 > batches0 else f"{phase} (none finished)"
        for phase, (batches0, rows0), (batches1, rows1) in zip(phases, commits, commits[1:])
    ]
    print(f"rows per commit: {', '.join(per_commit)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trips", type=int, default=20000)
    parser.add_argument("--strategies", type=int, default=100)
    parser.add_argument("--window", type=int, default=8, help="reservations in flight per strategy when pipelined")
    args = parser.parse_args()
    trio.run(main, args.trips, args.strategies, args.window)

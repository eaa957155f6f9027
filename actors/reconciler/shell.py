"""The reconciler actor: every interval, for each venue, the exchange's truth, the ledger's
books and the store's record, compared by the core."""

from __future__ import annotations

import itertools
from typing import Any, Awaitable, Callable, Mapping

import trio

from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    ExchangeSnapshot,
    LedgerSnapshot,
    LedgerSnapshotRequest,
    ReconciledQuery,
    RecordEvent,
    Send,
    SnapshotRequest,
    connection_address,
)
from actors.reconciler.core import Market, ReconcilerCore, Record, wanted
from actors.runtime import ActorContext, ActorEnv, deliver


async def reconciler_actor(
    ctx: ActorContext,
    venues: list[str],
    markets: Mapping[str, Market],
    interval: float,
    env: ActorEnv,
    perpetuals: Mapping[str, tuple[str, str]] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    assert ctx.inbox is not None
    inbox = ctx.inbox
    core = ReconcilerCore(markets, perpetuals)
    requests = itertools.count(1)
    ctx.status_provider = core.status
    task_status.started()
    timeout = max(interval, 1.0)

    async def other(message: Any) -> None:
        """Messages that are not the answer being waited for."""
        if isinstance(message, ReconciledQuery):
            await deliver(env.directory, core.query(message))

    while True:
        for venue in venues:
            exchange = await _ask(inbox, env, connection_address(venue), SnapshotRequest(RECONCILER, next(requests)), ExchangeSnapshot, timeout, other)
            ledger = await _ask(inbox, env, LEDGER, LedgerSnapshotRequest(RECONCILER, next(requests)), LedgerSnapshot, timeout, other)
            if exchange is None or ledger is None:
                who = f"venue {venue}" if exchange is None else "the ledger"
                event = RecordEvent("reconcile_skipped", RECONCILER, env.clock.now(), reason=f"{who} did not answer")
                await deliver(env.directory, [Send(WRITER, event)])
                continue
            # Read the record after the snapshots: what is in flight now is recorded by the
            # next cycle, and the two-cycle rule waits for that.
            orders, trade_ids = await env.store.record(venue=venue, wanted=wanted(exchange, ledger))
            record = Record(tuple(orders), trade_ids)
            await deliver(env.directory, core.on_cycle(record, exchange, ledger, env.clock.now()))
        # Until every venue is reconciled, cycle quickly: strategies wait for it to start.
        pause = interval if all(core.reconciled(v) for v in venues) else min(interval, 0.2)
        with trio.move_on_after(pause):
            while True:
                await other(await inbox.receive())


async def _ask(
    inbox: trio.MemoryReceiveChannel, env: ActorEnv, to: str, request: Any, answer: type, timeout: float,
    other: Callable[[Any], Awaitable[None]],
) -> Any:
    """The answer to ``request``, or None in time; late answers to earlier requests are
    dropped (a stale snapshot would invent differences)."""
    await deliver(env.directory, [Send(to, request)])
    with trio.move_on_after(timeout):
        while True:
            message = await inbox.receive()
            if isinstance(message, answer) and message.request_id == request.request_id:
                return message
            if not isinstance(message, (ExchangeSnapshot, LedgerSnapshot)):
                await other(message)
    return None

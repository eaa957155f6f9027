"""The reconciler actor: every interval, ask each connection for the truth and compare."""

from __future__ import annotations

import itertools

import trio

from actors.messages import RECONCILER, WRITER, ExchangeSnapshot, RecordEvent, Send, SnapshotRequest, connection_address
from actors.reconciler.core import ReconcilerCore
from actors.shell import ActorEnv, deliver
from store.db import load_orders
from supervisors.tree import ChildContext


async def reconciler_actor(
    ctx: ChildContext, venues: list[str], interval: float, env: ActorEnv, *, task_status: trio.TaskStatus[None]
) -> None:
    assert ctx.inbox is not None
    core = ReconcilerCore()
    requests = itertools.count(1)
    ctx.status_provider = core.status
    task_status.started()
    while True:
        for venue in venues:
            snapshot = await _ask(ctx.inbox, env, venue, next(requests), timeout=max(interval, 1.0))
            if snapshot is None:
                event = RecordEvent("reconcile_skipped", RECONCILER, env.clock.now(), reason=f"venue {venue} did not answer")
                await deliver(env.directory, [Send(WRITER, event)])
                continue
            # Read the record after the snapshot: what was open on the exchange then is
            # recorded by now unless it is still in flight (the two-cycle rule covers that).
            record = await env.read_store(load_orders, venue=venue, open_only=True)
            await deliver(env.directory, core.on_cycle(record, snapshot, env.clock.now()))
        await trio.sleep(interval)


async def _ask(
    inbox: trio.MemoryReceiveChannel, env: ActorEnv, venue: str, request_id: int, timeout: float
) -> ExchangeSnapshot | None:
    """This venue's snapshot, or None if it does not answer in time. Late answers to an
    earlier question are dropped: a stale snapshot would invent differences."""
    await deliver(env.directory, [Send(connection_address(venue), SnapshotRequest(RECONCILER, request_id))])
    with trio.move_on_after(timeout):
        while True:
            message = await inbox.receive()
            if isinstance(message, ExchangeSnapshot) and message.request_id == request_id:
                return message
    return None

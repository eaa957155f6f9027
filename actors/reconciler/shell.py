"""The reconciler actor: every interval, ask each connection for the truth and compare."""

from __future__ import annotations

import trio

from actors.messages import RECONCILER, ExchangeSnapshot, SnapshotRequest, connection_address
from actors.reconciler.core import ReconcilerCore
from actors.shell import ActorEnv, deliver
from store.db import load_orders
from supervisors.tree import ChildContext


async def reconciler_actor(
    ctx: ChildContext, venues: list[str], interval: float, env: ActorEnv, *, task_status: trio.TaskStatus[None]
) -> None:
    inbox = ctx.inbox
    assert inbox is not None
    core = ReconcilerCore()
    ctx.status_provider = core.status
    task_status.started()
    while True:
        for venue in venues:
            await env.directory[connection_address(venue)].send(SnapshotRequest(RECONCILER))
            snapshot = await inbox.receive()
            if not isinstance(snapshot, ExchangeSnapshot):
                raise TypeError(f"the reconciler expected a snapshot, got {type(snapshot).__name__}")
            # Read the record after the snapshot: what was open on the exchange then is
            # recorded by now unless it is still in flight (the two-cycle rule covers that).
            record = await env.read_store(load_orders, venue=venue, open_only=True)
            await deliver(env.directory, core.on_cycle(record, snapshot, env.clock.now()))
        await trio.sleep(interval)

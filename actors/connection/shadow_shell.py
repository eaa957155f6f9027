"""The connection actor in shadow mode: drives the simulated venue on a timer."""

from __future__ import annotations

import trio

from actors.connection.shadow_core import ShadowConnectionCore
from actors.messages import Tick
from actors.runtime import ActorContext, ActorEnv, serve
from exchange.shadow import ShadowVenue


async def shadow_connection_actor(
    ctx: ActorContext,
    venue: str,
    shadow: ShadowVenue,
    tick_interval: float,
    env: ActorEnv,
    lockstep_with: frozenset[str] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    assert ctx.inbox is not None
    core = ShadowConnectionCore(venue, shadow, lockstep_with)
    core.restore(await env.store.orders(venue=venue))
    own_inbox = env.directory[core.address]

    async def tick() -> None:
        while True:
            await own_inbox.send(Tick(trio.current_time()))
            await trio.sleep(tick_interval)

    ctx.status_provider = core.status
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        task_status.started()
        await serve(ctx.inbox, core.handle, env)

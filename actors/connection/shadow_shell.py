"""The connection actor in shadow mode: drives the simulated venue on a timer."""

from __future__ import annotations

from typing import Collection

import trio

from actors.connection.shadow_core import ShadowConnectionCore
from actors.messages import Tick
from actors.runtime import ActorContext, ActorEnv, deliver, serve
from exchange.shadow import ShadowVenue


async def shadow_connection_actor(
    ctx: ActorContext,
    venue: str,
    shadow: ShadowVenue,
    tick_interval: float,
    env: ActorEnv,
    lockstep_with: Collection[str] | None = None,
    persist: bool = True,
    core_class: type[ShadowConnectionCore] = ShadowConnectionCore,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``shadow`` outlives this actor (it stands for the exchange); ``persist``: its
    changes are recorded in the store, so shadow mode continues across restarts.
    ``core_class``: :class:`actors.connection.perpetual_core.PerpetualConnectionCore` for a
    simulated perpetuals (swap) account."""
    assert ctx.inbox is not None
    core = core_class(venue, shadow, lockstep_with, persist=persist)
    if persist and ctx.incarnation > 1:
        shadow.resync()  # what a failed write lost (the writer restarts us) reaches the store again
    # What the exchange did that the records lack goes out before anything new happens.
    await deliver(env.directory, core.restore(await env.store.orders(venue=venue), env.clock.now()))
    own_inbox = env.directory[core.address]

    async def tick() -> None:
        # Once every candle is released, one last tick reports the end and the connection
        # idles: a finished replay costs no CPU (it used to tick every 50 µs at full speed).
        while True:
            await own_inbox.send(Tick(trio.current_time()))
            if shadow.finished:
                return
            await trio.sleep(tick_interval)

    ctx.status_provider = core.status
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        task_status.started()
        await serve(ctx.inbox, core.handle, env)

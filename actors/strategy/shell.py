"""The strategy actor: restores its orders from the store, then reacts to its inbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping

import trio

from actors.messages import Send, Tick
from actors.runtime import ActorContext, ActorEnv, deliver, serve
from actors.strategy.core import StrategyCore
from actors.strategy.perpetual_core import PerpetualStrategyCore
from actors.strategy.settings import StrategySettings


async def strategy_actor(
    ctx: ActorContext,
    settings: StrategySettings,
    allocated: Mapping[str, Decimal],
    env: ActorEnv,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``allocated``: all strategies' allocations on this venue, per asset (for pre-flight)."""
    assert ctx.inbox is not None
    core = (PerpetualStrategyCore if settings.perpetual else StrategyCore)(settings, allocated)
    core.client_id_instance = await env.store.client_id_instance()
    now = env.clock.now()
    restored = core.restore(await env.store.orders(strategy=settings.name), now)
    await deliver(env.directory, core.start(now) + restored)
    ctx.status_provider = core.status
    handled = trio.Event()

    def after_batch() -> None:
        nonlocal handled
        handled.set()
        handled = trio.Event()

    async def wake() -> None:
        """A :class:`Tick` to the core when it asks for one (``core.wake_at``), looked at
        again after every batch it handles; no timer runs while it asks for none."""
        while True:
            due, changed = core.wake_at(), handled
            if due is None:
                await changed.wait()
                continue
            with trio.move_on_after(max(due - env.clock.now(), 0.0)):
                await changed.wait()
                continue
            await deliver(env.directory, [Send(core.address, Tick(env.clock.now()))])
            await changed.wait()  # the core has seen the tick before it is asked again

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wake)
        task_status.started()
        await serve(ctx.inbox, core.handle, env, after_batch)

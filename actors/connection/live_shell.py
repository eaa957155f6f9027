"""The connection actor on ccxt: the core decides, this shell calls ccxt on worker threads."""

from __future__ import annotations

import os
from typing import Any, Callable

import trio

from actors.connection.call_stats import CallStats
from actors.connection.live_core import LiveConnectionCore, LiveSettings
from actors.connection.simulated_orders import LazySimulatedExchange
from actors.mailbox import receive_batch
from actors.messages import CallDone, ExchangeCall, Send, Tick
from actors.runtime import ActorContext, ActorEnv, deliver
from exchange.ccxt_adapter import classify, error_reason, exchange_error_code, perform

#: ccxt calls in flight at once for one connection.
THREADS_PER_CONNECTION = 4
TICK_SECONDS = 0.1

#: For crash tests only: end the process (as kill -9 would, no clean-up) at one of these
#: points of an order's life. Unset in normal use.
CRASH_AT_ENV = "LIMITLINE_CRASH_AT"
CRASH_POINTS = ("before_send", "after_send", "before_fill_record")


def _crash(point: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == point:
        os._exit(137)


async def live_connection_actor(
    ctx: ActorContext,
    venue: str,
    make_client: Callable[[], Any],
    secrets: tuple[str, ...],
    settings: LiveSettings,
    env: ActorEnv,
    fatal: str | None = None,
    shadow_strategies: frozenset[str] = frozenset(),
    shadow_exchange: LazySimulatedExchange | None = None,
    authenticated: bool = True,
    call_stats: CallStats | None = None,
    core_class: type[LiveConnectionCore] = LiveConnectionCore,
    core_options: dict[str, Any] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``make_client`` builds the ccxt client (with its credentials); ``secrets`` are the
    values to scrub from any error text before it leaves this actor; ``fatal``: why no
    client can be made (the venue starts isolated and says so to its strategies);
    ``call_stats``: where each call's latency and failure kind are counted (``/metrics``);
    ``core_class`` and ``core_options``: a derivatives account's core
    (:class:`actors.connection.live_perpetual_core.LivePerpetualConnectionCore`) and its settings."""
    assert ctx.inbox is not None
    client = make_client() if fatal is None else None
    core = core_class(
        venue, settings, env.clock.now(), fatal,
        shadow_strategies=shadow_strategies, shadow_exchange=shadow_exchange, authenticated=authenticated,
        **(core_options or {}),
    )
    core.restore(await env.store.orders(venue=venue), env.clock.now())
    if ctx.incarnation > 1 and shadow_exchange is not None and shadow_exchange.exchange is not None:
        shadow_exchange.exchange.resync()  # what a failed write lost reaches the store again
    limiter = trio.CapacityLimiter(THREADS_PER_CONNECTION)
    own = env.directory[core.address]
    ctx.status_provider = core.status

    async def run_call(call: ExchangeCall) -> None:
        if call.operation == "create_limit_order":
            _crash("before_send")  # the intent is durable; nothing has left the process
        started = trio.current_time()
        try:
            result = await trio.to_thread.run_sync(
                perform, client, call.operation, call.args, call.kwargs, limiter=limiter, abandon_on_cancel=True
            )
            if call.operation == "create_limit_order":
                _crash("after_send")  # the exchange has the order; we never hear the answer
            if call.operation == "fetch_trades" and result:
                _crash("before_fill_record")  # the exchange filled it; nothing is recorded yet
            done = CallDone(call.call_id, result)
        except Exception as error:  # noqa: BLE001 - every outcome is data for the core
            done = CallDone(
                call.call_id,
                error_kind=classify(error, write=call.write).value,
                error=scrub(f"{type(error).__name__}: {error}", secrets),
                retry_after=getattr(error, "retry_after", None),
                code=exchange_error_code(error),
                reason=error_reason(error),
            )
        if call_stats is not None:
            call_stats.observe(call.operation, trio.current_time() - started, done.error_kind)
        await own.send(done)

    async def tick() -> None:
        while True:
            await own.send(Tick(trio.current_time()))
            await trio.sleep(TICK_SECONDS)

    async def carry_out(effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, ExchangeCall):
                nursery.start_soon(run_call, effect)
        await deliver(env.directory, [e for e in effects if isinstance(e, Send)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        task_status.started()
        await carry_out(core.start(env.clock.now()))
        while True:
            batch = await receive_batch(ctx.inbox)
            now = env.clock.now()
            effects: list[Any] = []
            for message in batch:
                effects.extend(core.handle(message, now))
            await carry_out(effects)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced, so no error text can carry one out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text

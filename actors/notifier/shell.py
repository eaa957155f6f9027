"""The notifier actor: posts each notification to its webhook over HTTP (httpx on trio),
retrying as the core says, several at a time, without ever making a sender wait.

Events reach its mailbox with ``send_nowait`` from the writer's side (after the commit):
when the mailbox is full the event is dropped and counted there, so a slow or dead
endpoint can hold up nothing but its own notifications.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import httpx
import trio

from actors.messages import RecordEvent
from actors.notifier.core import Delivery, NotifierCore
from actors.runtime import ActorContext, ActorEnv

log = logging.getLogger("limitline")

#: Posts in flight at once: one slow endpoint may not hold up the others.
CONCURRENT_POSTS = 4


async def notifier_actor(
    ctx: ActorContext,
    make_core: Callable[[], NotifierCore],
    timeout: float,
    env: ActorEnv,
    dropped_before: Callable[[], int] = lambda: 0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``make_core``: a fresh core (its routes and retry policy); ``timeout``: seconds per
    POST; ``dropped_before``: how many events were dropped before reaching the mailbox."""
    assert ctx.inbox is not None
    inbox = ctx.inbox
    core = make_core()
    ctx.status_provider = lambda: {**core.status(), "dropped": core.dropped + dropped_before()}
    limiter = trio.CapacityLimiter(CONCURRENT_POSTS)
    changed = trio.Event()

    def poke() -> None:
        nonlocal changed
        changed.set()
        changed = trio.Event()

    client: httpx.AsyncClient | None = None  # made at the first notification: most runs send none

    async def post(delivery: Delivery) -> None:
        nonlocal client
        async with limiter:
            if client is None:
                client = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                           headers={"user-agent": "limitline", "content-type": "application/json"})
            error = await _post(client, delivery)
        now = trio.current_time()
        if error is None:
            core.delivered(delivery.id)
        elif core.failed(delivery.id, error, now) is None:
            log.warning("webhook %s to %s: gave up after %d tries (last: %s)", delivery.route.webhook,
                        delivery.route.host, delivery.attempts, error)
        poke()

    async def receive() -> None:
        async for message in inbox:
            if isinstance(message, RecordEvent) and core.offer(message, trio.current_time()) is not None:
                poke()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            task_status.started()
            while True:
                for delivery in core.take_due(trio.current_time()):
                    nursery.start_soon(post, delivery)
                due = core.next_due()
                wait = changed
                with trio.move_on_at(due if due is not None else math.inf):
                    await wait.wait()
    finally:
        if client is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await client.aclose()


async def _post(client: Any, delivery: Delivery) -> str | None:
    """None if the webhook took it (2xx); else what went wrong, without the URL."""
    try:
        response = await client.post(delivery.route.url, content=delivery.body)
    except httpx.HTTPError as error:
        return type(error).__name__  # its text would repeat the URL
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"

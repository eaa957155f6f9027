"""The reconciler actor: every interval, for each venue, the exchange's truth, the ledger's
books and the store's record, compared by the core.

How long a snapshot may take is not the interval: a perpetual account's snapshot (positions,
symbol settings, conditional orders, income, forced orders, trades, balances) is several
calls at the venue's rate limit and can take longer than a short interval. The reconciler
waits up to ``snapshot_timeout`` for a venue's snapshot; an answer later than that is not
dropped: it is used as soon as it comes, so a slow venue is reconciled more slowly, never
skipped for good. The next cycle asks again as well (a connection whose round failed
answers nothing and waits for a new request; one still working joins the request to the
round under way), and the first answer to any request still outstanding is taken.
"""

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

#: Seconds the reconciler waits for a venue's snapshot before it says the venue is slow
#: (``reconciler.snapshot_timeout_seconds``).
DEFAULT_SNAPSHOT_TIMEOUT = 30.0


async def reconciler_actor(
    ctx: ActorContext,
    venues: list[str],
    markets: Mapping[str, Market],
    interval: float,
    env: ActorEnv,
    perpetuals: Mapping[str, tuple[str, str]] | None = None,
    snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    assert ctx.inbox is not None
    inbox = ctx.inbox
    core = ReconcilerCore(markets, perpetuals)
    requests = itertools.count(1)
    ctx.status_provider = core.status
    task_status.started()
    #: venue -> the snapshot requests it has not answered yet (any answer of them will do)
    pending: dict[str, set[int]] = {}
    #: venue -> a late answer to one of its pending requests, to be used at once
    late: dict[str, ExchangeSnapshot] = {}

    async def other(message: Any) -> None:
        """Messages that are not the answer being waited for."""
        if isinstance(message, ReconciledQuery):
            await deliver(env.directory, core.query(message))
        elif isinstance(message, ExchangeSnapshot) and message.request_id in pending.get(message.venue, ()):
            late[message.venue] = message
            del pending[message.venue]

    async def exchange_snapshot(venue: str) -> ExchangeSnapshot | None:
        if venue in late:
            return late.pop(venue)
        request_id = next(requests)
        asked = pending.setdefault(venue, set())
        asked.add(request_id)
        await deliver(env.directory, [Send(connection_address(venue), SnapshotRequest(RECONCILER, request_id))])
        answer = await _answer(inbox, ExchangeSnapshot, asked, snapshot_timeout, other)
        if answer is not None:
            pending.pop(venue, None)
        return answer

    while True:
        for venue in venues:
            exchange = await exchange_snapshot(venue)
            if exchange is None:
                reason = (
                    f"venue {venue} is slower than {snapshot_timeout:g} s to answer a snapshot "
                    "(reconciler.snapshot_timeout_seconds); its answer is used when it comes"
                )
                await deliver(env.directory, [Send(WRITER, RecordEvent("reconcile_skipped", RECONCILER, env.clock.now(), reason=reason))])
                continue
            request = LedgerSnapshotRequest(RECONCILER, next(requests))
            await deliver(env.directory, [Send(LEDGER, request)])
            ledger = await _answer(inbox, LedgerSnapshot, {request.request_id}, snapshot_timeout, other)
            if ledger is None:
                reason = f"the ledger did not answer within {snapshot_timeout:g} s (reconciler.snapshot_timeout_seconds)"
                await deliver(env.directory, [Send(WRITER, RecordEvent("reconcile_skipped", RECONCILER, env.clock.now(), reason=reason))])
                continue
            # Read the record after the snapshots: what is in flight now is recorded by the
            # next cycle, and the two-cycle rule waits for that.
            orders, trade_ids = await env.store.record(venue=venue, wanted=wanted(exchange, ledger))
            record = Record(tuple(orders), trade_ids)
            await deliver(env.directory, core.on_cycle(record, exchange, ledger, env.clock.now()))
        # Until every venue is reconciled, cycle quickly: strategies wait for it to start. A
        # late snapshot ends the pause: it is used while it is fresh.
        pause = interval if all(core.reconciled(v) for v in venues) else min(interval, 0.2)
        with trio.move_on_after(pause):
            while not late:
                await other(await inbox.receive())


async def _answer(
    inbox: trio.MemoryReceiveChannel, answer: type, request_ids: set[int], timeout: float,
    other: Callable[[Any], Awaitable[None]],
) -> Any:
    """The first answer to one of ``request_ids``, or None after ``timeout`` seconds; other
    messages go to ``other`` (which keeps a late answer to another venue's pending request;
    any other snapshot is an answer nobody waits for any more, and a stale one would invent
    differences)."""
    with trio.move_on_after(timeout):
        while True:
            message = await inbox.receive()
            if isinstance(message, answer) and message.request_id in request_ids:
                return message
            await other(message)
    return None

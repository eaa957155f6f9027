"""The writer actor: the only code that writes the store (through the sink it is given)."""

from __future__ import annotations

from typing import Callable

import trio

from actors.mailbox import Doorbell, receive_batch, take_queued
from actors.messages import RecordEvent
from actors.runtime import ActorContext, Directory, deliver
from actors.writer.core import BatchSink, is_durable, plan_batch

#: Larger than an actor's usual batch: a commit costs the same for 1 row or 1,000.
WRITE_BATCH_LIMIT = 2048
#: How long rows may wait to share a commit. An order intent never waits: a batch that
#: holds one is committed at once, since the order is not sent before it is on disk.
GROUP_COMMIT_SECONDS = 0.005


async def _gather(inbox: trio.MemoryReceiveChannel, bell: Doorbell) -> list:
    """One commit's worth of messages: what is queued, plus what arrives within the group
    window, unless a durable request asks for the commit now.

    Within the window the writer sleeps on the mailbox's doorbell, not on the mailbox: a
    ledger under load sends a journal message per batch it handles, and waking the writer
    for each (to find it is not durable) cost every round trip a task switch. A durable
    request, or a full mailbox, rings the bell (:func:`is_durable`, ``supervisors.app``)."""
    messages = await receive_batch(inbox, WRITE_BATCH_LIMIT)
    if len(messages) < WRITE_BATCH_LIMIT and not bell.rung and not any(map(is_durable, messages)):
        with trio.move_on_after(GROUP_COMMIT_SECONDS):
            await bell.wait()
        messages += take_queued(inbox, WRITE_BATCH_LIMIT - len(messages))
    if len(messages) < WRITE_BATCH_LIMIT:
        # Every queued message is in this batch, so is whatever rang: the ring is answered.
        # (Otherwise it stays rung, and the next batch is committed without a window.)
        bell.clear()
    return messages


async def writer_actor(
    ctx: ActorContext,
    open_sink: Callable[[], BatchSink],
    directory: Directory,
    bell: Doorbell,
    echo: Callable[[RecordEvent], None] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``open_sink`` opens the store for writing (on a worker thread); ``bell`` is the
    doorbell of the writer's mailbox (``Mailbox(urgent=is_durable)``), rung by a durable
    request; ``echo``, if given, sees every event as it is written (the CLI prints some)."""
    assert ctx.inbox is not None
    # One sink, used by one worker thread at a time.
    limiter = trio.CapacityLimiter(1)
    sink = await trio.to_thread.run_sync(open_sink, limiter=limiter)
    ctx.status.update(path=sink.location, batches=0, rows=0)
    task_status.started()
    try:
        while True:
            messages = await _gather(ctx.inbox, bell)
            batch, replies = plan_batch(messages)
            # Not cancellable: a write that started finishes, so a stop never half-writes.
            await trio.to_thread.run_sync(sink.write, batch, limiter=limiter)
            ctx.status["batches"] += 1
            ctx.status["rows"] += len(batch)
            if echo is not None:
                for event in batch.events:
                    echo(event)
            await deliver(directory, replies)
    finally:
        with trio.CancelScope(shield=True):
            await _flush(ctx, sink, limiter)
            sink.close()


async def _flush(ctx: ActorContext, sink: BatchSink, limiter: trio.CapacityLimiter) -> None:
    """On the way out, write what is still queued: a stop loses no event."""
    assert ctx.inbox is not None
    pending = []
    while True:
        try:
            pending.append(ctx.inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    if pending:
        batch, _ = plan_batch(pending)
        await trio.to_thread.run_sync(sink.write, batch, limiter=limiter)

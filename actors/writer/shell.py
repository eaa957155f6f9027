"""The writer actor: the only code that writes the store (through the sink it is given)."""

from __future__ import annotations

from typing import Callable

import trio

from actors.mailbox import receive_batch
from actors.messages import RecordEvent, RecordOrder
from actors.runtime import ActorContext, Directory, deliver
from actors.writer.core import BatchSink, plan_batch

#: Larger than an actor's usual batch: a commit costs the same for 1 row or 1,000.
WRITE_BATCH_LIMIT = 2048
#: How long rows may wait to share a commit. An order intent never waits: a batch that
#: holds one is committed at once, since the order is not sent before it is on disk.
GROUP_COMMIT_SECONDS = 0.005


async def _gather(inbox: trio.MemoryReceiveChannel) -> list:
    """One commit's worth of messages: what is queued, plus what arrives within the group
    window, unless a durable request asks for the commit now."""
    messages = await receive_batch(inbox, WRITE_BATCH_LIMIT)
    durable = any(map(_is_durable, messages))
    with trio.move_on_after(GROUP_COMMIT_SECONDS):
        while not durable and len(messages) < WRITE_BATCH_LIMIT:
            more = await receive_batch(inbox, WRITE_BATCH_LIMIT - len(messages))
            durable = any(map(_is_durable, more))
            messages += more
    return messages


def _is_durable(message: object) -> bool:
    return isinstance(message, RecordOrder) and message.durable_reply_to is not None


async def writer_actor(
    ctx: ActorContext,
    open_sink: Callable[[], BatchSink],
    directory: Directory,
    echo: Callable[[RecordEvent], None] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """``open_sink`` opens the store for writing (on a worker thread); ``echo``, if given,
    sees every event as it is written (the CLI prints some)."""
    assert ctx.inbox is not None
    # One sink, used by one worker thread at a time.
    limiter = trio.CapacityLimiter(1)
    sink = await trio.to_thread.run_sync(open_sink, limiter=limiter)
    ctx.status.update(path=sink.location, batches=0, rows=0)
    task_status.started()
    try:
        while True:
            messages = await _gather(ctx.inbox)
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

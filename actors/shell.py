"""What every actor shell shares: delivering a core's messages, and the clock it reads.

This and the ``shell.py`` of each actor are the only modules of ``actors`` that know trio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import trio

from actors.messages import Send
from store.db import open_store
from supervisors.mailbox import receive_batch

T = TypeVar("T")

Directory = Mapping[str, trio.MemorySendChannel[Any]]


class UnknownAddress(Exception):
    """A core addressed an actor that does not exist: a wiring bug."""


async def deliver(directory: Directory, sends: Iterable[Send]) -> None:
    """Send each message to its recipient's mailbox, in order, waiting if a mailbox is full.

    Like trio's own ``send``, the work is done by ``send_nowait``; the task parks only when
    a mailbox is full. The caller's loop checkpoints on its next receive, so skipping the
    checkpoint here costs no fairness and saves a trip through the scheduler per message.
    """
    for send in sends:
        channel = directory.get(send.to)
        if channel is None:
            raise UnknownAddress(f"no actor is named {send.to!r}")
        try:
            channel.send_nowait(send.message)
        except trio.WouldBlock:
            await channel.send(send.message)


class WallClock:
    """Wall-clock seconds that advance with trio's clock.

    Cores get time as an argument; shells read it here. Under trio's autojump clock in
    tests, this time jumps with the virtual clock, so timestamps stay consistent.
    """

    def __init__(self) -> None:
        self._epoch = time.time() - trio.current_time()

    def now(self) -> float:
        return self._epoch + trio.current_time()


class ActorEnv:
    """What every shell needs from the running process."""

    def __init__(self, directory: Directory, store_path: Path, clock: WallClock | None = None) -> None:
        self.directory = directory
        self.store_path = store_path
        self._clock = clock

    @property
    def clock(self) -> WallClock:
        # Made on first use, inside trio: it reads trio's clock.
        if self._clock is None:
            self._clock = WallClock()
        return self._clock

    async def read_store(self, query: Callable[..., T], **kwargs: Any) -> T:
        """Run a read of the store on a worker thread, with a read-only connection of its own."""

        def read() -> T:
            connection = open_store(self.store_path, readonly=True)
            try:
                return query(connection, **kwargs)
            finally:
                connection.close()

        return await trio.to_thread.run_sync(read)


async def serve(
    inbox: trio.MemoryReceiveChannel[Any],
    handle: Callable[[Any, float], list[Send]],
    env: ActorEnv,
    after_batch: Callable[[], None] | None = None,
    *,
    handle_batch: Callable[[list[Any], float], list[Send]] | None = None,
) -> None:
    """The loop of every actor: take a batch, let the core handle it, deliver what it says.

    A core that can do better with the whole batch at once (the ledger coalesces its
    journal) passes ``handle_batch``; otherwise each message goes to ``handle``.
    """
    while True:
        batch = await receive_batch(inbox)
        now = env.clock.now()
        if handle_batch is not None:
            out = handle_batch(batch, now)
        else:
            out = []
            for message in batch:
                out.extend(handle(message, now))
        if after_batch is not None:
            after_batch()
        await deliver(env.directory, out)

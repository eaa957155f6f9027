"""What every actor shell runs on: the context its supervisor hands it, delivery of a core's
messages, the clock, and the store reader it is given.

Shells depend on the small protocols here, not on the supervisor or the store: the
supervisor's child context satisfies :class:`ActorContext`, and the composition root
(``supervisors.app``) injects a :class:`StoreReader`. This module, ``mailbox.py`` and the
``*shell.py`` modules are the only ones of ``actors`` that know trio.
"""

from __future__ import annotations

import gc
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Protocol

import trio

from actors.mailbox import receive_batch
from actors.messages import JournalEntry, RecordKeys, Send
from actors.orders import Order

Directory = Mapping[str, trio.MemorySendChannel[Any]]


class ActorContext(Protocol):
    """What a supervisor hands to each incarnation of an actor."""

    name: str
    #: This incarnation's receive side of the actor's mailbox (None for an actor without one).
    inbox: trio.MemoryReceiveChannel[Any] | None
    #: Facts the actor publishes about itself for the status endpoint (JSON-able).
    status: dict[str, Any]
    #: Set by the actor: called when a snapshot is taken, merged over ``status``.
    status_provider: Callable[[], dict[str, Any]] | None
    #: 1 at the first start, +1 at every restart.
    incarnation: int


class StoreReader(Protocol):
    """The reads actors rebuild from (the store's own connection, off the event loop)."""

    async def orders(
        self, *, strategy: str | None = None, venue: str | None = None, open_only: bool = False
    ) -> list[Order]: ...

    async def client_id_instance(self) -> str:
        """The store's client order id instance (``actors.orders.client_order_id``)."""
        ...

    async def ledger_checkpoint(self) -> tuple[int, Any] | None:
        """The ledger's latest checkpoint (``actors.ledger.core.LedgerCheckpoint``) and the
        sequence number of the journal entry it follows, or None."""
        ...

    def journal_pages(self, page_size: int, after: int = 0) -> AsyncIterator[list[JournalEntry]]:
        """The journal in order from the entry after sequence number ``after``, at most
        ``page_size`` entries a page (a rebuild's memory is bounded by a page, not by the
        journal's length)."""
        ...

    async def record(self, *, venue: str, wanted: RecordKeys) -> tuple[list[Order], frozenset[tuple[str, str]]]:
        """One venue's orders that are not final plus those ``wanted`` names, and which of
        ``wanted.trade_ids`` the fills table holds, read together."""
        ...

    async def journal_of(self, client_order_ids: Iterable[str]) -> list[JournalEntry]:
        """The ``reserve`` and ``settle`` entries of these orders, in journal order (what
        ``LedgerCore.recall`` uses)."""
        ...

    async def position_journal(self) -> list[Any]:
        """The position book's entries (perpetual markets), in journal order."""
        ...


#: The cyclic garbage collector's thresholds once the process runs (Python's are 700, 10,
#: 10). Messages and journal entries are tracked objects that almost all die young, by
#: reference counting; at 700 the collector ran every hundred or so round trips and, with
#: the full collections that walk every object start-up made, took about 10 % of the
#: actors' CPU time (8 us a reservation under load, 0 with these).
GC_THRESHOLDS = (20_000, 20, 50)


def tune_garbage_collector() -> None:
    """Once the process has started (every actor running): move what start-up made
    (modules, the config, the rebuilt books) out of the collector's sight, ``gc.freeze``,
    since it lives as long as the process, and collect the young generation less often
    (:data:`GC_THRESHOLDS`). Memory freed by reference counting is unaffected; only cycles
    wait longer to be found. Process-wide: the CLI calls it once ``run`` is running."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    """What every shell needs from the running process: the directory of mailboxes, the
    store reader, and the clock."""

    def __init__(self, directory: Directory, store: StoreReader, clock: WallClock | None = None) -> None:
        self.directory = directory
        self.store = store
        self._clock = clock

    @property
    def clock(self) -> WallClock:
        # Made on first use, inside trio: it reads trio's clock.
        if self._clock is None:
            self._clock = WallClock()
        return self._clock


async def serve(
    inbox: trio.MemoryReceiveChannel[Any],
    handle: Callable[[Any, float], list[Send]],
    env: ActorEnv,
    after_batch: Callable[[], None] | None = None,
    *,
    handle_batch: Callable[[list[Any], float], list[Send]] | None = None,
    before_batch: Callable[[list[Any]], Awaitable[None] | None] | None = None,
) -> None:
    """The loop of every actor: take a batch, let the core handle it, deliver what it says.

    A core that can do better with the whole batch at once (the ledger coalesces its
    journal) passes ``handle_batch``; otherwise each message goes to ``handle``.
    ``before_batch`` says what the core needs fetched for a batch (the ledger reads back
    reservations it no longer keeps in memory) before the core sees it: an awaitable that
    fetches it, or None when there is nothing to fetch (almost always: no coroutine is made
    per batch for nothing).
    """
    clock = env.clock
    while True:
        batch = await receive_batch(inbox)
        if before_batch is not None:
            fetch = before_batch(batch)
            if fetch is not None:
                await fetch
        now = clock.now()
        if handle_batch is not None:
            out = handle_batch(batch, now)
        else:
            out = []
            for message in batch:
                out.extend(handle(message, now))
        if after_batch is not None:
            after_batch()
        await deliver(env.directory, out)

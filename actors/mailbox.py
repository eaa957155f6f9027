"""Mailboxes: the bounded trio memory channels actors talk through.

A mailbox belongs to the supervisor, not to the actor that reads it. Each incarnation of
the actor gets a *clone* of the receive side and closes only that clone when it dies, so
the buffer, and every message queued in it, survives a crash and is read by the next
incarnation. Closing the last receiver would drop the buffer; the supervisor never does.
"""

from __future__ import annotations

from typing import Any, Callable

import trio

DEFAULT_CAPACITY = 1024
#: The most messages an actor takes from its inbox before it yields to others.
BATCH_LIMIT = 256


class Doorbell:
    """Wakes a reader that waits for something other than its next message.

    A reader parked in ``receive`` is woken by every message sent to it; one that gathers
    messages for a while (the writer's group commit) waits on a doorbell instead, and is
    woken only when a message that must not wait arrives. A ring while nobody waits is
    kept until :meth:`clear`."""

    __slots__ = ("rung", "_lot")

    def __init__(self) -> None:
        self.rung = False
        self._lot = trio.lowlevel.ParkingLot()

    def ring(self) -> None:
        self.rung = True
        self._lot.unpark_all()

    def clear(self) -> None:
        self.rung = False

    async def wait(self) -> None:
        """Return once the bell has rung (at once if it rang since the last :meth:`clear`)."""
        if not self.rung:
            await self._lot.park()


class RingingSendChannel:
    """A mailbox's send side that rings its :class:`Doorbell` after a message ``urgent``
    says must not wait, and when the mailbox is full (a full mailbox parks its senders
    until the reader takes from it, so the reader must not sleep on). Everything else is
    the memory channel's own."""

    def __init__(
        self, channel: trio.MemorySendChannel[Any], urgent: Callable[[Any], bool], bell: Doorbell
    ) -> None:
        self._channel = channel
        self._urgent = urgent
        self.bell = bell

    def send_nowait(self, message: Any) -> None:
        try:
            self._channel.send_nowait(message)
        except trio.WouldBlock:
            self.bell.ring()
            raise
        if self._urgent(message):
            self.bell.ring()

    async def send(self, message: Any) -> None:
        # trio's MemorySendChannel.send, with the ring of send_nowait.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_nowait(message)
        except trio.WouldBlock:
            await self._channel.send(message)
            if self._urgent(message):
                self.bell.ring()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def __getattr__(self, name: str) -> Any:
        # statistics, clone, close, aclose: the channel's.
        return getattr(self._channel, name)


class Mailbox:
    """One actor's inbox: its stable address survives every restart of the actor.

    With ``urgent``, the mailbox has a :attr:`bell` that its send side rings after a message
    for which ``urgent(message)`` is true (and when it is full): its reader may gather
    messages without being woken by each one (see :class:`Doorbell`)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, urgent: Callable[[Any], bool] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {capacity}")
        self.send_channel: trio.MemorySendChannel[Any]
        self._receiver: trio.MemoryReceiveChannel[Any]
        self.send_channel, self._receiver = trio.open_memory_channel(capacity)
        self.capacity = capacity
        self.bell: Doorbell | None = None
        if urgent is not None:
            self.bell = Doorbell()
            # Duck-typed: it sends as a memory channel does (trio's channels are final).
            self.send_channel = RingingSendChannel(self.send_channel, urgent, self.bell)  # type: ignore[assignment]

    def open_receiver(self) -> trio.MemoryReceiveChannel[Any]:
        """A receive channel for one incarnation; close it when that incarnation ends."""
        return self._receiver.clone()

    @property
    def depth(self) -> int:
        """Messages queued and not yet received."""
        return self.send_channel.statistics().current_buffer_used

    def snapshot(self) -> dict[str, int]:
        return {"depth": self.depth, "capacity": self.capacity}


async def receive_batch(
    inbox: trio.MemoryReceiveChannel[Any], limit: int = BATCH_LIMIT
) -> list[Any]:
    """Wait for one message, then take whatever else is already queued, up to ``limit``.

    Draining with ``receive_nowait`` costs a fraction of a channel hop per message, so an
    actor under load handles its inbox in batches instead of parking once per message.
    Raises ``trio.EndOfChannel`` when every sender is closed and the buffer is empty.
    """
    batch = [await inbox.receive()]
    while len(batch) < limit:
        try:
            batch.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


def take_queued(inbox: trio.MemoryReceiveChannel[Any], limit: int) -> list[Any]:
    """What is queued in ``inbox`` now, up to ``limit`` messages, without waiting."""
    taken: list[Any] = []
    while len(taken) < limit:
        try:
            taken.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return taken

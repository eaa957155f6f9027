"""The writer's rules: how a drained inbox becomes one transaction, and who hears back.

One batch is one transaction. If any message in it asks for durability (an order intent),
the whole batch commits with ``synchronous=FULL`` and the replies go out only after the
commit: the intent is on disk before the request can leave the process.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import attrs

from actors.messages import (
    FillReport,
    JournalEntry,
    OrderDurable,
    RecordEvent,
    RecordJournal,
    RecordLedgerCheckpoint,
    RecordOrder,
    RecordPerpetualAccount,
    RecordPositionJournal,
    RecordSimulatedExchange,
    Send,
)
from actors.orders import Order


@attrs.define
class Batch:
    """Rows for one transaction."""

    events: list[RecordEvent] = attrs.Factory(list)
    orders: dict[str, Order] = attrs.Factory(dict)  # the last state of each order wins
    fills: list[FillReport] = attrs.Factory(list)
    journal: list[JournalEntry] = attrs.Factory(list)
    #: The position book's entries (perpetual markets), in the ledger's order.
    positions: list[Any] = attrs.Factory(list)
    #: Simulated perpetuals accounts' changes, in the order they happened.
    perpetual: list[Any] = attrs.Factory(list)
    #: The ledger's checkpoints, each with how many of ``journal``'s entries precede it.
    checkpoints: list[tuple[int, RecordLedgerCheckpoint]] = attrs.Factory(list)
    #: Simulated accounts' changes, in the order they happened.
    simulated: list[RecordSimulatedExchange] = attrs.Factory(list)
    #: Commit with synchronous=FULL: some sender waits for this batch to be on disk.
    durable: bool = False

    def __len__(self) -> int:
        return (
            len(self.events) + len(self.orders) + len(self.fills) + len(self.journal) + len(self.simulated)
            + len(self.positions) + len(self.perpetual) + len(self.checkpoints)
        )


class BatchSink(Protocol):
    """Where batches go (the store): synchronous, called from one worker thread at a time."""

    #: Where it writes, for the status endpoint.
    location: str

    def write(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction (fsynced when ``batch.durable``)."""
        ...

    def close(self) -> None: ...


def is_durable(message: object) -> bool:
    """Whether ``message`` waits for its commit (an order intent): the writer's mailbox
    rings its doorbell for these, so they never wait out a group-commit window."""
    return isinstance(message, RecordOrder) and message.durable_reply_to is not None


def plan_batch(messages: Iterable[Any]) -> tuple[Batch, list[Send]]:
    """The rows to write for ``messages`` and the replies to send once they are committed."""
    batch = Batch()
    replies: list[Send] = []
    for message in messages:
        if isinstance(message, RecordEvent):
            batch.events.append(message)
        elif isinstance(message, RecordOrder):
            batch.orders[message.order.client_order_id] = message.order
            if message.durable_reply_to is not None:
                batch.durable = True
                replies.append(Send(message.durable_reply_to, OrderDurable(message.order.client_order_id)))
        elif isinstance(message, RecordJournal):
            batch.journal.extend(message.entries)
            batch.fills.extend(message.fills)
        elif isinstance(message, RecordPositionJournal):
            batch.positions.extend(message.entries)
            batch.fills.extend(message.fills)
        elif isinstance(message, RecordLedgerCheckpoint):
            batch.checkpoints.append((len(batch.journal), message))
        elif isinstance(message, RecordPerpetualAccount):
            batch.perpetual.append(message)
        elif isinstance(message, RecordSimulatedExchange):
            batch.simulated.append(message)
        else:
            raise TypeError(f"the writer does not handle {type(message).__name__}")
    return batch, replies

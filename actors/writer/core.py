"""The writer's rules: how a drained inbox becomes one transaction, and who hears back.

One batch is one transaction. If any message in it asks for durability (an order intent),
the whole batch commits with ``synchronous=FULL`` and the replies go out only after the
commit: the intent is on disk before the request can leave the process.
"""

from __future__ import annotations

from typing import Any, Iterable

from actors.messages import (
    OrderDurable,
    RecordEvent,
    RecordFill,
    RecordJournal,
    RecordOrder,
    Send,
)
from store.db import Batch


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
        elif isinstance(message, RecordFill):
            batch.fills.append(message.fill)
        elif isinstance(message, RecordJournal):
            batch.journal.extend(message.entries)
        else:
            raise TypeError(f"the writer does not handle {type(message).__name__}")
    return batch, replies

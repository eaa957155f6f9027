"""The notifier's rules: which events go to which webhook, the JSON body, retries with a
doubling back-off, and what is counted. Sans-IO: events and time in, deliveries out; the
shell (``shell.py``) does the HTTP.

A notification is sent once its event is in the store (the writer hands it over after the
commit). It is tried up to ``max_attempts`` times: a 2xx answer delivers it; any other
answer, a timeout or a refused connection is a failure, retried after ``backoff`` seconds,
doubling up to ``max_backoff``. At most ``capacity`` wait; one more is dropped and counted,
never waited for: a dead endpoint must never hold up trading.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import urlsplit

import attrs

from actors.messages import RecordEvent


@attrs.frozen
class Route:
    """Where one kind of event goes: its webhook's name (``fill``, ``breaker``...) and URL."""

    webhook: str
    url: str

    @property
    def host(self) -> str:
        """What a log line may say of the URL: a webhook URL often holds a token."""
        return urlsplit(self.url).hostname or "?"


@attrs.frozen
class RetryPolicy:
    max_attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    capacity: int = 1000


@attrs.define
class Delivery:
    id: int
    route: Route
    body: bytes
    #: When it may be tried next (the shell's clock, seconds).
    due: float
    attempts: int = 0
    in_flight: bool = False
    last_error: str | None = None


def body(event: RecordEvent, webhook: str) -> bytes:
    """The JSON a webhook receives: the event as the activity feed has it, times in UTC."""
    at = datetime.fromtimestamp(event.at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    document = {
        "webhook": webhook,
        "kind": event.kind,
        "at": at,
        "strategy": event.strategy,
        "actor": event.actor,
        "client_order_id": event.client_order_id,
        "rule": event.rule,
        "reason": event.reason,
        "payload": event.payload,
    }
    return json.dumps(document, default=_plain, sort_keys=True).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact, as everywhere else money leaves the process
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class NotifierCore:
    def __init__(self, routes: Mapping[str, Route], policy: RetryPolicy = RetryPolicy(),
                 scrub: Any = None) -> None:
        """``routes``: event kind -> its webhook. ``scrub``: text -> text with every secret
        blanked (applied to each body: belt and braces, events never hold secrets)."""
        self.routes = dict(routes)
        self.policy = policy
        self.scrub = scrub
        self.pending: dict[int, Delivery] = {}
        self._ids = itertools.count(1)
        self.sent = 0
        self.retried = 0
        self.gave_up = 0
        self.dropped = 0

    def offer(self, event: RecordEvent, now: float) -> Delivery | None:
        """Queue the event's notification, if its kind has a webhook; None if not, or if
        the queue is full (then it is counted in ``dropped``)."""
        route = self.routes.get(event.kind)
        if route is None:
            return None
        if len(self.pending) >= self.policy.capacity:
            self.dropped += 1
            return None
        data = body(event, route.webhook)
        if self.scrub is not None:
            data = self.scrub(data.decode()).encode()
        delivery = Delivery(next(self._ids), route, data, due=now)
        self.pending[delivery.id] = delivery
        return delivery

    def take_due(self, now: float) -> list[Delivery]:
        """The deliveries to try now (each marked in flight until its outcome is told)."""
        due = [d for d in self.pending.values() if not d.in_flight and d.due <= now]
        for delivery in due:
            delivery.in_flight = True
            delivery.attempts += 1
        return due

    def next_due(self) -> float | None:
        """When the earliest waiting delivery may be tried, or None if none waits."""
        waiting = [d.due for d in self.pending.values() if not d.in_flight]
        return min(waiting) if waiting else None

    def delivered(self, delivery_id: int) -> None:
        self.pending.pop(delivery_id, None)
        self.sent += 1

    def failed(self, delivery_id: int, error: str, now: float) -> float | None:
        """A try failed: when it will be tried again, or None if that was its last try."""
        delivery = self.pending.get(delivery_id)
        if delivery is None:
            return None
        delivery.in_flight = False
        delivery.last_error = error
        if delivery.attempts >= self.policy.max_attempts:
            del self.pending[delivery_id]
            self.gave_up += 1
            return None
        self.retried += 1
        delay = min(self.policy.backoff * 2 ** (delivery.attempts - 1), self.policy.max_backoff)
        delivery.due = now + delay
        return delivery.due

    def status(self) -> dict[str, Any]:
        return {
            "webhooks": sorted({route.webhook for route in self.routes.values()}),
            "pending": len(self.pending),
            "sent": self.sent,
            "retried": self.retried,
            "gave_up": self.gave_up,
            "dropped": self.dropped,
        }

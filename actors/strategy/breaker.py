"""A strategy's circuit breaker: domain state, not a crash.

``CLOSED``: orders flow; consecutive failed exchange operations are counted and any success
resets the count. At ``threshold`` failures it goes ``OPEN``: no submission until the
cooldown has passed. Then ``HALF_OPEN``: exactly one probe order may go. The probe's success
closes it (count and cooldown reset); its failure opens it again with the cooldown doubled,
capped at ``max_cooldown``.

Time is wall time passed in by the caller: exchange outages happen in real time, unlike the
strategy's market-time rules.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

import attrs


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class BreakerSettings:
    threshold: int = 3
    cooldown_seconds: float = 30.0
    max_cooldown_seconds: float = 900.0


@attrs.frozen
class BreakerChange:
    """A change of state, for the event log."""

    old: BreakerState
    new: BreakerState
    reason: str


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings = BreakerSettings()) -> None:
        self.settings = settings
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.cooldown = settings.cooldown_seconds
        self.open_until: float | None = None
        self.last_failure: str | None = None
        #: The client order id of the half-open probe, once it is sent.
        self.probe: str | None = None

    def blocked_reason(self, now: float) -> tuple[str | None, list[BreakerChange]]:
        """Why a new order may not be sent now (None: it may), and any change of state."""
        changes: list[BreakerChange] = []
        if self.state is BreakerState.OPEN and self.open_until is not None and now >= self.open_until:
            changes.append(self._move(BreakerState.HALF_OPEN, "cooldown over: one probe order may go"))
        if self.state is BreakerState.OPEN:
            return (
                f"circuit breaker open until {_utc(self.open_until)} after {self.failures} consecutive "
                f"exchange failures (last: {self.last_failure})",
                changes,
            )
        if self.state is BreakerState.HALF_OPEN and self.probe is not None:
            return f"circuit breaker half-open: waiting for probe {self.probe}", changes
        return None, changes

    def sent(self, client_order_id: str) -> None:
        """An order was decided (it will be sent unless the ledger denies it); when half-open,
        it is the one probe, and no other order may go until the probe's outcome is known,
        however many orders the strategy may have open."""
        if self.state is BreakerState.HALF_OPEN and self.probe is None:
            self.probe = client_order_id

    def withdrawn(self, client_order_id: str) -> None:
        """The probe never reached the exchange (the ledger denied it): another may go."""
        if self.probe == client_order_id:
            self.probe = None

    def success(self, now: float, client_order_id: str | None = None) -> list[BreakerChange]:
        """The exchange answered an operation of ``client_order_id``. Closed: the count of
        failures resets. Open: nothing changes (an order from before, answered now, says
        nothing of the cooldown). Half-open: only the probe's answer closes it."""
        if self.state is BreakerState.OPEN:
            return []
        if self.state is BreakerState.HALF_OPEN and (self.probe is None or client_order_id != self.probe):
            return []
        self.failures = 0
        if self.state is BreakerState.CLOSED:
            return []
        self.cooldown = self.settings.cooldown_seconds
        self.open_until = None
        self.probe = None
        return [self._move(BreakerState.CLOSED, "the exchange answered: orders resume")]

    def failure(self, now: float, reason: str) -> list[BreakerChange]:
        self.failures += 1
        self.last_failure = reason
        if self.state is BreakerState.HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.settings.max_cooldown_seconds)
            return [self._open(now, f"the probe failed ({reason}); cooling down {self.cooldown:g}s")]
        if self.state is BreakerState.CLOSED and self.failures >= self.settings.threshold:
            return [self._open(now, f"{self.failures} consecutive exchange failures (last: {reason}); cooling down {self.cooldown:g}s")]
        return []

    def _open(self, now: float, reason: str) -> BreakerChange:
        self.open_until = now + self.cooldown
        self.probe = None
        return self._move(BreakerState.OPEN, reason)

    def _move(self, new: BreakerState, reason: str) -> BreakerChange:
        change = BreakerChange(self.state, new, reason)
        self.state = new
        return change

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "open_until": self.open_until,
            "cooldown_seconds": self.cooldown,
            "last_failure": self.last_failure,
        }


def _utc(at: float | None) -> str:
    """``at`` (epoch seconds) as the time every other message shows: ``2026-12-08 01:24:16 UTC``."""
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

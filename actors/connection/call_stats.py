"""How a connection's exchange calls went: latency per operation and failures by kind.

Kept by the live connection's shell (which alone sees a call start and end) in an object
the app owns, so the figures survive a restart of the connection; read at scrape time by
``/metrics``. Plain counting, no I/O, no clock: the shell passes the measured seconds.
"""

from __future__ import annotations

import bisect

#: Upper bounds of the latency buckets, in seconds (Prometheus' defaults, to 30 s: a ccxt
#: timeout is 10 s by default).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf"))


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total_seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total_seconds += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, calls at most that long), as Prometheus' ``le`` buckets."""
        out, running = [], 0
        for bound, count in zip(BUCKETS, self.counts):
            running += count
            out.append((bound, running))
        return out


class CallStats:
    """One venue's exchange calls: ``latency[operation]``, ``errors[(operation, kind)]``
    (``kind``: the error taxonomy's value, ``exchange.errors.ErrorKind``)."""

    def __init__(self) -> None:
        self.latency: dict[str, LatencyHistogram] = {}
        self.errors: dict[tuple[str, str], int] = {}

    def observe(self, operation: str, seconds: float, error_kind: str | None) -> None:
        self.latency.setdefault(operation, LatencyHistogram()).observe(seconds)
        if error_kind is not None:
            self.errors[(operation, error_kind)] = self.errors.get((operation, error_kind), 0) + 1

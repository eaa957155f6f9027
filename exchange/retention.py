"""How long the maps of a months-long run remember what is finished.

Every actor and the simulated exchange keep what is live (open orders, reservations) for as
long as it lives, and of what is finished only the most recent: a real exchange, too, stops
answering for old orders. What is forgotten in memory stays in the store, which answers
the rare late question (a late fill's owner, say).

:class:`Forgetting` is the one rule; each owner of a map sweeps it after adding entries.
"""

from __future__ import annotations

from typing import Callable, Generic, MutableMapping, TypeVar

#: Finished orders (and closed reservations) each map remembers, the most recent.
KEEP_FINISHED_ORDERS = 1_000
#: Trades (and trade ids already reported) remembered, the most recent.
KEEP_TRADES = 10_000

K = TypeVar("K")
V = TypeVar("V")


class Forgetting(Generic[K, V]):
    """Keeps, of a map's finished entries, the ``keep`` most recently added.

    :meth:`sweep` passes over the map only once it has grown by ``keep`` entries since the
    last pass (so a pass costs a constant per entry added, however many entries are live)."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.keep = keep
        self._next_sweep = 2 * keep

    def sweep(self, entries: MutableMapping[K, V], finished: Callable[[K, V], bool]) -> list[tuple[K, V]]:
        """Drop the oldest entries for which ``finished(key, value)`` holds (insertion
        order) until at most ``keep`` finished ones remain; entries not finished are never dropped. Returns what was
        dropped, as (key, value) pairs (nothing if the map has not grown enough for a pass)."""
        if len(entries) <= self._next_sweep:
            return []
        done = [(key, value) for key, value in entries.items() if finished(key, value)]
        dropped = done[: max(len(done) - self.keep, 0)]
        for key, _ in dropped:
            del entries[key]
        self._next_sweep = len(entries) + self.keep
        return dropped

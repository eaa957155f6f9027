"""Why a process cannot use a store. Each message says which file, why, and what to do.

- :class:`StoreBusy`: another process holds the store (one process per store);
- :class:`NotAStore`: the file is not limitline's (another program's sqlite database, not
  sqlite at all, or a store of a newer limitline): it is never written into;
- :class:`OrphanedOrders`: the store holds open orders of a strategy the config no longer
  has (nothing would manage them);
- :class:`StoreUnavailable` itself: the file or its directory cannot be created or written.
"""

from __future__ import annotations


class StoreUnavailable(RuntimeError):
    """This process cannot use the store; ``str(error)`` is the whole message for the user."""


class StoreBusy(StoreUnavailable):
    """Another live process holds the store's lock; ``holder`` is what it wrote about itself
    (``pid``, ``host``, ``command``, ``cwd``, ``started``), as far as it could be read."""

    def __init__(self, message: str, holder: dict[str, object]) -> None:
        super().__init__(message)
        self.holder = holder


class NotAStore(StoreUnavailable):
    """The file at the store's path is not a limitline store this version can use."""


class OrphanedOrders(StoreUnavailable):
    """The store holds orders that are not final for strategies the config does not name;
    ``orders`` maps each such strategy to its client order ids."""

    def __init__(self, message: str, orders: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.orders = orders

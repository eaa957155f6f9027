"""A shadow venue: the simulated exchange plus the replay feeds that move its markets.

It stands where a real exchange would: it keeps its orders and balances while the
connection actor that talks to it restarts, and (its state being kept in the store) while
limitline itself is down: :meth:`ShadowVenue.restore` continues the account and the replay
where the store says they were.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.candles import Candle
from exchange.matching import ExchangeState, SimulatedExchange
from exchange.replay import ReplayFeed


class ShadowVenue:
    def __init__(self, exchange: SimulatedExchange, feeds: dict[str, ReplayFeed]) -> None:
        unknown = set(feeds) - set(exchange.markets)
        if unknown:
            raise ValueError(f"replay feeds for markets the exchange does not list: {sorted(unknown)}")
        self.exchange = exchange
        open_at = getattr(exchange, "open_at", None)
        for symbol, feed in feeds.items():
            if open_at is not None and not feed.finished:
                open_at(symbol, feed.candles[feed.cursor].open)  # (a restore observes where it stopped)
        self.feeds = feeds
        #: The replay positions last handed over by :meth:`replay_changes`.
        self._positions: dict[str, int] = {}

    def restore(self, state: ExchangeState | None, positions: dict[str, int]) -> None:
        """Continue from the store: the account (if it was ever recorded) and each replay
        from the candle after the last one released (``positions``: market -> its time)."""
        if state is not None:
            self.exchange.restore(state)
        for symbol, ts in positions.items():
            feed = self.feeds.get(symbol)
            if feed is not None:
                feed.resume_after(ts)
                # The market is where the replay stopped: orders cross it (a perpetuals
                # account keeps its own marks in its state).
                observe = getattr(self.exchange, "observe", None)
                if feed.cursor and observe is not None:
                    observe(symbol, feed.candles[feed.cursor - 1])
        self._positions = {symbol: ts for symbol, ts in positions.items() if symbol in self.feeds}

    def resync(self) -> None:
        """Hand over the whole account and every replay position with the next changes
        (see :meth:`SimulatedExchange.resync`)."""
        resync = getattr(self.exchange, "resync", None)
        if resync is not None:  # a perpetuals account is recorded whole each time
            resync()
        self._positions = {}

    def replay_changes(self) -> dict[str, int]:
        """Each market whose replay moved since the last call, and its last candle's time."""
        moved = {}
        for symbol, feed in self.feeds.items():
            ts = feed.last_ts
            if ts is not None and self._positions.get(symbol) != ts:
                moved[symbol] = self._positions[symbol] = ts
        return moved

    def advance(self, clock: float) -> list[tuple[str, Candle]]:
        """The candles due by ``clock`` (the feeds' clock), oldest first per market; the
        caller matches orders against each before anyone sees it."""
        return [(symbol, candle) for symbol, feed in self.feeds.items() for candle in feed.due(clock)]

    def take_next(self) -> list[tuple[str, Candle]]:
        """One candle of each market, regardless of time (lockstep replay)."""
        out = []
        for symbol, feed in self.feeds.items():
            candle = feed.take_next()
            if candle is not None:
                out.append((symbol, candle))
        return out

    @property
    def finished(self) -> bool:
        return all(feed.finished for feed in self.feeds.values())

    def last_prices(self) -> dict[str, Decimal]:
        """The latest close per market; before the replay starts, the first candle's open."""
        prices = {}
        for symbol, feed in self.feeds.items():
            prices[symbol] = feed.candles[feed.cursor - 1].close if feed.cursor else feed.candles[feed.cursor].open
        return prices

    def progress(self) -> dict[str, Any]:
        return {
            symbol: {
                "candles_replayed": feed.cursor - feed.start_index,
                "candles_left": len(feed.candles) - feed.cursor,
                "last_ts": feed.candles[feed.cursor - 1].ts if feed.cursor else None,
            }
            for symbol, feed in self.feeds.items()
        }

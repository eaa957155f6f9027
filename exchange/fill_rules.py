"""When a resting limit order fills against a candle: the rules the spot engine
(:mod:`exchange.matching`) and the perpetuals engine (:mod:`exchange.perpetuals`) share.

- a resting buy fills only when the market trades *below* its price (``low < price``) and a
  sell only when it trades *above* (``high > price``): trading at the price says nothing
  about the queue ahead of us;
- each candle can fill at most ``volume_share`` of its traded volume across all our orders
  on that market, best price first (highest buy, lowest sell), then first placed first;
- a limit order that would trade at once against the market's last price is a *taker*
  (it crosses). What crossing orders can take on arrival is at most ``volume_share`` of the
  latest candle's volume, less what crossing orders took since (:class:`TakerLiquidity`):
  the depth of the book is unknown and the traded volume stands for it; the rest of the
  order rests at its own price. The taker fee is charged on what is taken.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.records import Side


def trades_through(side: Side, price: Decimal, candle: Candle) -> bool:
    """The candle traded strictly beyond a resting order's price, on its side."""
    return candle.low < price if side is Side.BUY else candle.high > price


def queue_key(side: Side, price: Decimal, sequence: int) -> tuple[Decimal, int]:
    """Sort key of the fill queue: price priority, then time priority (``sequence``)."""
    return (-price if side is Side.BUY else price, sequence)


def volume_budget(market: MarketRules, candle: Candle, volume_share: Decimal) -> Decimal:
    """What one candle can fill of our orders on its market, on the market's lot."""
    return market.round_amount(candle.volume * volume_share)


def crosses(side: Side, price: Decimal, last_price: Decimal) -> bool:
    """A new limit order at ``price`` would trade at once against ``last_price`` (a taker):
    a buy at or above it, a sell at or below it (the perpetuals engine's rule; the spot
    engine's is strict, see :mod:`exchange.matching`)."""
    return price >= last_price if side is Side.BUY else price <= last_price


class TakerLiquidity:
    """What crossing orders may take on arrival, per market: ``volume_share`` of the volume
    of the market's latest candle (on the market's lot), less what crossing orders took
    since. Both engines hold one; :meth:`observe` is called with every candle matched (and,
    after a restart, with the candle where the replay stopped)."""

    def __init__(self, volume_share: Decimal) -> None:
        self.volume_share = volume_share
        self._left: dict[str, Decimal] = {}

    def observe(self, market: MarketRules, candle: Candle) -> None:
        self._left[market.symbol] = volume_budget(market, candle, self.volume_share)

    def left(self) -> tuple[tuple[str, Decimal], ...]:
        """What each market still offers crossing orders (for a store), by symbol."""
        return tuple(sorted(self._left.items()))

    def restore(self, left: Iterable[tuple[str, Decimal]]) -> None:
        self._left = dict(left)

    def take(self, symbol: str, wanted: Decimal) -> Decimal:
        """How much of ``wanted`` a crossing order fills on arrival (0 before any candle)."""
        left = self._left.get(symbol, Decimal(0))
        amount = min(wanted, left)
        if amount <= 0:
            return Decimal(0)
        self._left[symbol] = left - amount
        return amount

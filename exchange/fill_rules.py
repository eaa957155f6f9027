"""When a resting limit order fills against a candle: the rules the spot engine
(:mod:`exchange.matching`) and the perpetuals engine (:mod:`exchange.perpetuals`) share.

- a resting buy fills only when the market trades *below* its price (``low < price``) and a
  sell only when it trades *above* (``high > price``): trading at the price says nothing
  about the queue ahead of us;
- each candle can fill at most ``volume_share`` of its traded volume across all our orders
  on that market, best price first (highest buy, lowest sell), then first placed first;
- a limit order that would trade at once against the market's last price is a *taker*
  (it crosses): a buy at or above the last price, a sell at or below it.
"""

from __future__ import annotations

from decimal import Decimal

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
    """A new limit order at ``price`` would trade at once against ``last_price`` (a taker)."""
    return price >= last_price if side is Side.BUY else price <= last_price

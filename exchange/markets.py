"""A market's trading rules, and the exchange-style checks of an order against them.

The rejection texts follow Binance's (``Filter failure: PRICE_FILTER`` and so on), so a
strategy sees the same reasons in shadow mode as it will see live.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import attrs


@attrs.frozen
class MarketRules:
    symbol: str  # ccxt's unified form, "BTC/USD"
    base: str
    quote: str
    tick_size: Decimal  # price increment
    lot_size: Decimal  # amount increment
    min_amount: Decimal
    min_notional: Decimal  # price * amount at least this, in the quote asset
    maker_fee: Decimal  # a rate: 0.001 is 0.1 %
    taker_fee: Decimal
    active: bool = True
    #: The currency a fill's fee is charged in (the simulated exchange): ``received``, the
    #: asset the fill pays out (base on a buy, quote on a sell: Binance spot's rule),
    #: ``quote``, or a third currency such as ``BNB``, valued at ``fee_currency_price``
    #: (quote per unit) and taken from that balance while it lasts, else as ``received``.
    fee_in: str = "received"
    fee_currency_price: Decimal | None = None

    @classmethod
    def for_symbol(cls, symbol: str, **values: object) -> "MarketRules":
        base, _, quote = symbol.partition("/")
        if not base or not quote:
            raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
        return cls(symbol=symbol, base=base, quote=quote, **values)  # type: ignore[arg-type]

    def round_price(self, price: Decimal, passive_side_is_down: bool) -> Decimal:
        """Round to the tick, away from the market: down for a buy, up for a sell."""
        rounding = ROUND_FLOOR if passive_side_is_down else ROUND_CEILING
        return (price / self.tick_size).to_integral_value(rounding) * self.tick_size

    def round_amount(self, amount: Decimal) -> Decimal:
        """Round down to the lot: never more than was sized."""
        return (amount / self.lot_size).to_integral_value(ROUND_FLOOR) * self.lot_size

    def violation(self, price: Decimal, amount: Decimal) -> str | None:
        """Why the exchange would reject this limit order, or None."""
        if not self.active:
            return f"Market {self.symbol} is closed."
        if price <= 0 or price % self.tick_size != 0:
            return f"Filter failure: PRICE_FILTER (price {price} is not a multiple of tick {self.tick_size})"
        if amount < self.min_amount or amount % self.lot_size != 0:
            return (
                f"Filter failure: LOT_SIZE (amount {amount} must be a multiple of {self.lot_size}"
                f" and at least {self.min_amount})"
            )
        if price * amount < self.min_notional:
            return f"Filter failure: NOTIONAL (value {price * amount} is below {self.min_notional})"
        return None

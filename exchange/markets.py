"""A market's trading rules, and the exchange-style checks of an order against them.

The rejection texts follow Binance's (``Filter failure: PRICE_FILTER`` and so on), so a
strategy sees the same reasons in shadow mode as it will see live.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

import attrs


@attrs.frozen
class MarketRules:
    symbol: str  # ccxt's unified form, "BTC/USD"
    base: str
    quote: str
    tick_size: Decimal  # price increment (0 when prices count significant digits instead)
    lot_size: Decimal  # amount increment (0 when amounts count significant digits instead)
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
    #: Venues whose precision counts significant digits (ccxt's SIGNIFICANT_DIGITS mode,
    #: e.g. bitfinex): prices and amounts keep at most this many; the step is then 0.
    price_digits: int | None = None
    amount_digits: int | None = None

    @property
    def settle(self) -> str:
        """The asset amounts in quote are paid in: the quote on spot, a perpetual's
        settlement asset (``BTC/USDT:USDT`` -> ``USDT``; ``quote`` keeps ccxt's suffix)."""
        return self.quote.rpartition(":")[2]

    @classmethod
    def for_symbol(cls, symbol: str, **values: object) -> "MarketRules":
        base, _, quote = symbol.partition("/")
        if not base or not quote:
            raise ValueError(f"symbol must look like BASE/QUOTE, got {symbol!r}")
        return cls(symbol=symbol, base=base, quote=quote, **values)  # type: ignore[arg-type]

    def round_price(self, price: Decimal, passive_side_is_down: bool) -> Decimal:
        """Round to the tick (or the significant digits), away from the market: down for a
        buy, up for a sell."""
        rounding = ROUND_FLOOR if passive_side_is_down else ROUND_CEILING
        return round_to(price, self.tick_size, self.price_digits, rounding)

    def round_amount(self, amount: Decimal) -> Decimal:
        """Round down to the lot (or the significant digits): never more than was sized."""
        return round_to(amount, self.lot_size, self.amount_digits, ROUND_DOWN)

    def violation(self, price: Decimal, amount: Decimal) -> str | None:
        """Why the exchange would reject this limit order, or None."""
        if not self.active:
            return f"Market {self.symbol} is closed."
        if price <= 0 or price != round_to(price, self.tick_size, self.price_digits, ROUND_DOWN):
            step = f"tick {self.tick_size}" if self.price_digits is None else f"{self.price_digits} significant digits"
            return f"Filter failure: PRICE_FILTER (price {price} is not a multiple of {step})"
        if amount <= 0 or amount < self.min_amount or amount != round_to(amount, self.lot_size, self.amount_digits, ROUND_DOWN):
            step = f"{self.lot_size}" if self.amount_digits is None else f"{self.amount_digits} significant digits"
            return f"Filter failure: LOT_SIZE (amount {amount} must be a multiple of {step} and at least {self.min_amount})"
        if price * amount < self.min_notional:
            return f"Filter failure: NOTIONAL (value {price * amount} is below {self.min_notional})"
        return None


def round_to(value: Decimal, step: Decimal, digits: int | None, rounding: str) -> Decimal:
    """``value`` on the grid of ``step``, or to ``digits`` significant digits (ccxt's
    TICK_SIZE and SIGNIFICANT_DIGITS counting; DECIMAL_PLACES arrives here as a step)."""
    if digits is not None:
        if value == 0:
            return value
        quantum = Decimal(1).scaleb(value.adjusted() - digits + 1)
        return (value / quantum).to_integral_value(rounding) * quantum
    return (value / step).to_integral_value(rounding) * step

"""What an exchange says about orders and trades: one record type for each, whoever says it.

The real exchange (parsed from ccxt by :mod:`exchange.ccxt_adapter`), the simulated engine
(:mod:`exchange.matching`) and the sandbox all speak in these records, so everything above
the exchange layer reads one shape. Money is ``Decimal``.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


#: ccxt's unified order statuses. ``closed`` means filled in full; ``expired`` and
#: ``rejected`` are final without a fill of the rest (Binance expires orders by
#: self-trade prevention or time in force, for example).
ORDER_STATUSES = ("open", "closed", "canceled", "expired", "rejected")


@attrs.frozen
class ExchangeOrder:
    """One order as the exchange lists it."""

    client_order_id: str  # "" when the exchange gives none (an order placed outside limitline)
    exchange_order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    filled: Decimal
    status: str = "open"


@attrs.frozen
class ExchangeTrade:
    """One trade (a fill) of one order of the account, as the exchange reports it.

    ``fee`` is charged in ``fee_currency``: the quote asset, the base asset (Binance takes
    a buy's fee from the coins received), or a third currency (BNB). ``client_order_id``
    is "" when the exchange's trade list does not carry it (Binance's does not).
    ``order_complete`` is True when the exchange knows this trade filled the order's rest;
    ``at`` is the exchange's time of the trade in epoch seconds (0 when not given).
    ``taker_or_maker`` (ccxt's ``takerOrMaker``): ``"taker"`` when our order took liquidity
    (it crossed the market on arrival), ``"maker"`` when it rested and was taken; None
    when the exchange does not say.
    """

    trade_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    client_order_id: str = ""
    at: float = 0.0
    order_complete: bool = False
    taker_or_maker: str | None = None

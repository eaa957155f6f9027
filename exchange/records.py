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
class ExchangeOrderList:
    """An OCO order list (Binance's ``orderList``) as the exchange lists it: its id, its
    client id and its legs (each an :class:`ExchangeOrder`, below leg first as Binance
    lists them)."""

    order_list_id: str
    list_client_order_id: str
    symbol: str
    legs: tuple[ExchangeOrder, ...]

    def summary(self) -> ExchangeOrder:
        """The list as one order of record: its filled amount is its legs' (only one leg
        ever trades); ``open`` while a leg is open, else ``closed`` when a leg filled in
        full, ``canceled`` when a leg was cancelled, ``expired`` otherwise."""
        statuses = {leg.status for leg in self.legs}
        status = ("open" if "open" in statuses else "closed" if "closed" in statuses
                  else "canceled" if "canceled" in statuses else "expired")
        first = self.legs[0]
        return ExchangeOrder(self.list_client_order_id, self.order_list_id, self.symbol, first.side,
                             max(leg.price for leg in self.legs), first.amount,
                             sum((leg.filled for leg in self.legs), Decimal(0)), status)


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


@attrs.frozen
class ExchangePosition:
    """One symbol's position on a derivatives venue in one-way mode, as the exchange reports
    it (``fetch_positions``). ``size`` is signed, in base units (negative: short);
    ``leverage`` is None when the listing does not carry it (Binance's
    ``/fapi/v3/positionRisk``); ``isolated_margin`` is the collateral an isolated position
    holds (0 for cross). The first four fields are those of
    ``actors.reconciler.positions_core.ExchangePosition``."""

    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: Decimal | None = None
    margin_mode: str = "cross"  # cross | isolated
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal = Decimal(0)
    liquidation_price: Decimal | None = None
    isolated_margin: Decimal = Decimal(0)


@attrs.frozen
class ExchangeConditionalOrder(ExchangeOrder):
    """A conditional order resting on the exchange (a stop-limit or a take-profit-limit):
    when the price reaches ``trigger_price`` the exchange places a limit order at ``price``.
    ``status`` is ccxt's (a triggered one reads ``closed`` although its child order, id
    ``child_order_id``, may still be open); ``exchange_status`` is the exchange's own
    (Binance: NEW, TRIGGERED, FINISHED, CANCELED, EXPIRED, REJECTED)."""

    trigger_price: Decimal = Decimal(0)
    kind: str = "stop"  # stop | take_profit
    reduce_only: bool = False
    child_order_id: str = ""
    exchange_status: str = ""


@attrs.frozen
class ExchangeIncome:
    """One change of a derivatives account's balance (realized P&L, fee, funding, transfer,
    insurance clearance) as the exchange's income history lists it, ``amount`` signed
    (positive: the account received it). ``kind`` is the exchange's own name when it gives one
    (Binance: REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER, INSURANCE_CLEAR), else ccxt's
    ledger type. The fields are those of ``actors.reconciler.positions_core.ExchangeIncome``
    plus ``trade_id``."""

    income_id: str
    symbol: str
    kind: str
    amount: Decimal
    asset: str
    at: float = 0.0
    trade_id: str = ""


@attrs.frozen
class MarginAccount:
    """A derivatives account's margin in one asset (Binance USD-M ``/fapi/v3/account``):
    ``wallet`` is the wallet balance (deposits, realized P&L, fees and funding; no unrealized
    P&L), ``available`` what a new order may still use as initial margin
    (``availableBalance``), ``margin_balance`` the wallet plus unrealized P&L."""

    asset: str
    wallet: Decimal
    available: Decimal
    margin_balance: Decimal


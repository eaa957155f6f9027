"""The simulated exchange: a sans-IO matching engine for limit orders, with balances.

Rules (the ones a paper trader most often gets wrong are the ones that flatter it):

- limit orders only; an order is checked against the market's tick, lot and minimum
  notional and against the free balance, and rejected the way the exchange would;
- an order rests from the candle after the one it was placed on; a resting buy fills only
  when the market trades *below* its price (low < price) and a sell only when it trades
  *above* (high > price): trading at the price says nothing about the queue ahead of us;
- fills are at the order's own price (we are the maker) and pay the maker fee in the
  currency the market charges (``MarketRules.fee_in``): by default the asset received, as
  Binance spot does (a buy's fee comes out of the coins bought), or the quote asset, or a
  third currency (BNB) while its balance lasts;
- each candle can fill at most ``volume_share`` of its traded volume across all our orders
  on that market, best price first, then first placed first: partial fills are normal.
  A candle with zero volume fills nothing.

Its state (balances, every order, the trades, the next order and trade ids) is what a real
exchange would keep while we are down. With ``track_changes`` on, the engine remembers what
changed, and :meth:`SimulatedExchange.drain_changes` hands it over as an
:class:`ExchangeState` for the store; :meth:`SimulatedExchange.restore` continues from what
the store holds. The Lab leaves tracking off and pays nothing for it.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Iterable

import attrs

from exchange.candles import Candle
from exchange.fill_rules import queue_key, trades_through, volume_budget
from exchange.markets import MarketRules
from exchange.records import ExchangeOrder, ExchangeTrade, Side
from exchange.retention import Forgetting

# Binance's codes, so the sandbox can answer with them verbatim.
CODE_FILTER_FAILURE = -1013
CODE_REJECTED = -2010
CODE_UNKNOWN_ORDER = -2011


@attrs.define
class SimOrder:
    """An order in the engine's book (mutable: it fills and unlocks as it goes)."""

    exchange_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    placed_at: float
    filled: Decimal = Decimal(0)
    status: str = "open"  # open | closed (filled) | canceled | expired
    locked: Decimal = Decimal(0)  # what is still locked for it, in quote (buy) or base (sell)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    def record(self) -> ExchangeOrder:
        """The order as the exchange lists it."""
        return ExchangeOrder(
            self.client_order_id, self.exchange_order_id, self.symbol, self.side, self.price, self.amount,
            self.filled, self.status,
        )


@attrs.frozen
class ExchangeState:
    """The simulated account as the store keeps it: whole (to restore from) or only what
    changed since it was last drained (to write).

    ``balances`` and the id sequences are always whole; ``orders`` are the orders that
    changed (their latest state, copies), ``trades`` the new trades.
    """

    balances: dict[str, tuple[Decimal, Decimal]]  # asset -> (free, used)
    next_order: int
    next_trade: int
    orders: tuple[SimOrder, ...] = ()
    trades: tuple[ExchangeTrade, ...] = ()


@attrs.frozen
class Rejection:
    code: int
    message: str


@attrs.define
class Balance:
    free: Decimal = Decimal(0)
    used: Decimal = Decimal(0)


class SimulatedExchange:
    """One simulated account on one simulated exchange."""

    def __init__(
        self,
        markets: Iterable[MarketRules],
        balances: dict[str, Decimal],
        volume_share: Decimal = Decimal("0.1"),
    ) -> None:
        if not Decimal(0) < volume_share <= Decimal(1):
            raise ValueError(f"volume_share must be in (0, 1], got {volume_share}")
        self.markets = {market.symbol: market for market in markets}
        self.balances: dict[str, Balance] = defaultdict(Balance)
        for asset, amount in balances.items():
            self.balances[asset].free = Decimal(amount)
        self.volume_share = volume_share
        self.orders: dict[str, SimOrder] = {}  # by exchange order id, every order ever placed
        #: The open ones, in placement order: matching looks at these only (a long run
        #: places many thousands of orders; scanning them all per candle was quadratic).
        self._open: dict[str, SimOrder] = {}
        self._by_client_id: dict[str, str] = {}
        self._next_order = 1
        self._next_trade = 1
        self.trades: list[ExchangeTrade] = []
        #: Remember what changes, for :meth:`drain_changes` (shadow mode persists it).
        self.track_changes = False
        self._changed: dict[str, SimOrder] = {}
        self._new_trades: list[ExchangeTrade] = []
        self._forgetting: Forgetting[str, SimOrder] | None = None

    # ------------------------------------------------------------- state

    def drain_changes(self) -> ExchangeState | None:
        """What changed since the last call (None: nothing), with the whole balances and id
        sequences; forgotten once handed over."""
        if not self._changed and not self._new_trades:
            return None
        state = ExchangeState(
            balances={asset: (b.free, b.used) for asset, b in self.balances.items()},
            next_order=self._next_order,
            next_trade=self._next_trade,
            # Copies: the book goes on changing after the state has been handed over.
            orders=tuple(attrs.evolve(order) for order in self._changed.values()),
            trades=tuple(self._new_trades),
        )
        self._changed = {}
        self._new_trades = []
        return state

    def restore(self, state: ExchangeState) -> None:
        """Continue from ``state`` as the store holds it: its balances, its orders (the open
        ones rest again, with what they filled and what they lock), its trades, and id
        sequences that never give an id twice."""
        self.balances = defaultdict(Balance, {asset: Balance(free, used) for asset, (free, used) in state.balances.items()})
        orders = sorted((attrs.evolve(o) for o in state.orders), key=lambda o: int(o.exchange_order_id))
        self.orders = {o.exchange_order_id: o for o in orders}
        self._open = {o.exchange_order_id: o for o in orders if o.status == "open"}
        # A client order id reused after its first order ended names the latest order.
        self._by_client_id = {o.client_order_id: o.exchange_order_id for o in orders}
        self.trades = sorted(state.trades, key=lambda t: int(t.trade_id))
        self._next_order = state.next_order
        self._next_trade = state.next_trade
        self._changed = {}
        self._new_trades = []

    def resync(self) -> None:
        """Hand over everything again with the next changes (orders and trades alike).

        For a restart of whoever carries the changes to the store within one process: a
        batch the writer failed to write is lost, and later changes alone would leave the
        store behind for good. (Not needed after a restore: the store is where it came from.)"""
        if self.track_changes:
            self._changed = dict(self.orders)
            self._new_trades = list(self.trades)

    def forget_finished(self, keep_orders: int, keep_trades: int) -> None:
        """Of the ended orders keep the ``keep_orders`` most recently placed, of the trades
        the last ``keep_trades`` (a real exchange, too, stops answering for old orders);
        open orders always stay. Shadow mode's store still holds every order and trade."""
        if self._forgetting is None:
            self._forgetting = Forgetting(keep_orders)
        for exchange_id, order in self._forgetting.sweep(self.orders, lambda _, o: o.status != "open"):
            if self._by_client_id.get(order.client_order_id) == exchange_id:
                del self._by_client_id[order.client_order_id]
        if len(self.trades) > 2 * keep_trades:
            del self.trades[:-keep_trades]

    def trades_of(self, exchange_order_id: str) -> list[ExchangeTrade]:
        """The trades of one order, oldest first (of those the engine still holds)."""
        return [t for t in self.trades if t.exchange_order_id == exchange_order_id]

    # ------------------------------------------------------------- orders

    def create_limit_order(
        self, symbol: str, side: Side, amount: Decimal, price: Decimal, client_order_id: str, now: float
    ) -> SimOrder | Rejection:
        market = self.markets.get(symbol)
        if market is None:
            return Rejection(CODE_REJECTED, f"Invalid symbol {symbol}.")
        problem = market.violation(price, amount)
        if problem is not None:
            return Rejection(CODE_FILTER_FAILURE, problem)
        existing = self._by_client_id.get(client_order_id)
        if existing is not None and self.orders[existing].status == "open":
            return Rejection(CODE_REJECTED, "Duplicate order sent.")
        if side is Side.BUY:
            asset, lock = market.quote, price * amount * (1 + market.maker_fee)
        else:
            asset, lock = market.base, amount
        balance = self.balances[asset]
        if balance.free < lock:
            return Rejection(CODE_REJECTED, "Account has insufficient balance for requested action.")
        balance.free -= lock
        balance.used += lock
        order = SimOrder(
            exchange_order_id=str(self._next_order),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            price=price,
            amount=amount,
            placed_at=now,
            locked=lock,
        )
        self._next_order += 1
        self.orders[order.exchange_order_id] = order
        self._open[order.exchange_order_id] = order
        self._by_client_id[client_order_id] = order.exchange_order_id
        self._touched(order)
        return order

    def cancel_order(self, client_order_id: str) -> SimOrder | Rejection:
        return self._end(client_order_id, "canceled")

    def expire_order(self, client_order_id: str) -> SimOrder | Rejection:
        """The exchange ends an open order by its own rule (Binance's self-trade prevention,
        for example): what has filled stays filled, the rest is unlocked."""
        return self._end(client_order_id, "expired")

    def _end(self, client_order_id: str, status: str) -> SimOrder | Rejection:
        """End an open order with ``status``; its unfilled rest is unlocked, and the change
        is tracked for the store like any other."""
        order = self.order_by_client_id(client_order_id)
        if order is None or order.status != "open":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        order.status = status
        del self._open[order.exchange_order_id]
        self._unlock(order, order.locked)
        self._touched(order)
        return order

    def fill_whole(self, client_order_id: str, now: float) -> ExchangeTrade | Rejection:
        """A counterparty takes all that is left of an open order, at its price, at once
        (whatever the candles say)."""
        order = self.order_by_client_id(client_order_id)
        if order is None or order.status != "open":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        trade = self._fill(self.markets[order.symbol], order, order.remaining, now)
        self.trades.append(trade)
        return trade

    def order_by_client_id(self, client_order_id: str) -> SimOrder | None:
        exchange_id = self._by_client_id.get(client_order_id)
        return None if exchange_id is None else self.orders[exchange_id]

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        return [order for order in self._open.values() if symbol is None or order.symbol == symbol]

    # ------------------------------------------------------------ matching

    def match(self, symbol: str, candle: Candle, now: float) -> list[ExchangeTrade]:
        """Fill what ``candle`` could fill of the orders resting on ``symbol``."""
        if not self._open:
            return []
        market = self.markets[symbol]
        budget = volume_budget(market, candle, self.volume_share)
        fills: list[ExchangeTrade] = []
        for order in self._queue(symbol):
            if budget <= 0:
                break
            if not trades_through(order.side, order.price, candle):
                continue
            amount = min(order.remaining, budget)
            budget -= amount
            fills.append(self._fill(market, order, amount, now))
        self.trades.extend(fills)
        if self.track_changes:
            self._new_trades.extend(fills)
        return fills

    def _queue(self, symbol: str) -> list[SimOrder]:
        return sorted(self.open_orders(symbol), key=lambda o: queue_key(o.side, o.price, int(o.exchange_order_id)))

    def _fee(self, market: MarketRules, side: Side, cost: Decimal, amount: Decimal) -> tuple[Decimal, str]:
        """The fee of a fill and the currency it is charged in."""
        rate = market.maker_fee
        if market.fee_in not in ("received", "quote") and market.fee_currency_price:
            fee = cost * rate / market.fee_currency_price
            if self.balances[market.fee_in].free >= fee:
                return fee, market.fee_in
        if market.fee_in == "quote" or side is Side.SELL:
            return cost * rate, market.quote
        return amount * rate, market.base

    def _fill(self, market: MarketRules, order: SimOrder, amount: Decimal, now: float) -> ExchangeTrade:
        cost = order.price * amount
        fee, fee_currency = self._fee(market, order.side, cost, amount)
        quote, base = self.balances[market.quote], self.balances[market.base]
        fee_quote = fee if fee_currency == market.quote else Decimal(0)
        fee_base = fee if fee_currency == market.base else Decimal(0)
        if fee_currency not in (market.quote, market.base):
            self.balances[fee_currency].free -= fee
        if order.side is Side.BUY:
            spent = cost + fee_quote
            quote.used -= spent
            order.locked -= spent
            base.free += amount - fee_base
        else:
            base.used -= amount
            order.locked -= amount
            quote.free += cost - fee_quote
        order.filled += amount
        complete = order.remaining == 0
        if complete:
            order.status = "closed"
            del self._open[order.exchange_order_id]
            # Whatever is still locked (a worst-case fee not charged) goes back.
            self._unlock(order, order.locked)
        fill = ExchangeTrade(
            trade_id=str(self._next_trade),
            exchange_order_id=order.exchange_order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            price=order.price,
            amount=amount,
            fee=fee,
            fee_currency=fee_currency,
            at=now,
            order_complete=complete,
        )
        self._next_trade += 1
        self._touched(order)
        return fill

    def _touched(self, order: SimOrder) -> None:
        if self.track_changes:
            self._changed[order.exchange_order_id] = order

    def _unlock(self, order: SimOrder, amount: Decimal) -> None:
        market = self.markets[order.symbol]
        asset = market.quote if order.side is Side.BUY else market.base
        self.balances[asset].used -= amount
        self.balances[asset].free += amount
        order.locked -= amount

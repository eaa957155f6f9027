"""The simulated exchange: a sans-IO matching engine for limit orders, with balances.

Rules (the ones a paper trader most often gets wrong are the ones that flatter it):

- limit orders only; an order is checked against the market's tick, lot and minimum
  notional and against the free balance, and rejected the way the exchange would;
- an order that *crosses* the market when it arrives (a buy priced above the last trade,
  the close of the market's latest candle; a sell priced below it) takes liquidity at once,
  as on every exchange: it fills at the last trade's price (no better, no worse: the
  spread is not modelled) and pays the **taker** fee. What it can take is at most
  ``volume_share`` of that candle's volume, less what other crossing orders took since
  (the depth of the book is unknown; the traded volume stands for it); the rest rests at
  its own price. An order priced exactly at the last trade does not cross: the last trade
  may have been on either side of the book. Before the exchange has seen a candle of the
  market, nothing crosses;
- an order rests from the candle after the one it was placed on; a resting buy fills only
  when the market trades *below* its price (low < price) and a sell only when it trades
  *above* (high > price): trading at the price says nothing about the queue ahead of us;
- a resting order fills at its own price (we are the maker) and pays the **maker** fee;
  every fee is charged in the currency the market charges (``MarketRules.fee_in``): by
  default the asset received, as Binance spot does (a buy's fee comes out of the coins
  bought), or the quote asset, or a third currency (BNB) while its balance lasts. Each
  trade says which it was (``ExchangeTrade.taker_or_maker``, ccxt's ``takerOrMaker``);
- each candle can fill at most ``volume_share`` of its traded volume across all our
  resting orders on that market, best price first, then first placed first (the queue):
  partial fills are normal. A candle with zero volume fills nothing.
- an **OCO order list** (Binance's ``POST /api/v3/orderList/oco``; only the sell that
  protects held coins is offered): a ``LIMIT_MAKER`` take-profit above the last trade and
  a ``STOP_LOSS_LIMIT`` below it (``take-profit > last trade > stop``, else rejected as
  Binance does). The coins are locked **once** for the list (the list holds one amount: only
  one leg can ever sell it). A leg that fills, even in part, ends the other (``expired``, as
  Binance reports it) and keeps the lock; cancelling either leg cancels the list. The stop
  triggers on a candle whose low reaches its stop price, at the stop price or at the open
  when the candle gapped below it; its limit then takes at once what crosses that price (a
  taker, within the candle's takeable volume) and otherwise rests from the next candle, so
  a gapped stop-limit can rest unfilled. Triggers come before the candle's resting fills
  (the path inside a candle is unknown: the pessimistic order for the holder).

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
from exchange.fill_rules import TakerLiquidity, queue_key, trades_through, volume_budget
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
    #: The OCO order list it is a leg of (its ``listClientOrderId``), None for a lone order.
    list_client_id: str | None = None
    #: A stop-loss-limit leg's stop (trigger) price; None for a plain limit order.
    stop_price: Decimal | None = None
    #: The stop has triggered: the leg rests (or filled) as a plain limit.
    triggered: bool = False

    @property
    def waiting(self) -> bool:
        """A stop leg whose trigger has not fired: it cannot fill yet."""
        return self.stop_price is not None and not self.triggered

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
        #: The legs of each OCO order list, by list client order id (exchange ids).
        self._lists: dict[str, list[str]] = defaultdict(list)
        self._next_order = 1
        self._next_trade = 1
        self.trades: list[ExchangeTrade] = []
        self._trades_by_order: dict[str, list[ExchangeTrade]] = defaultdict(list)
        #: Per market, the latest candle matched and the volume crossing orders may still
        #: take from it (what a taker can fill on arrival).
        self._last_trade: dict[str, Decimal] = {}
        self._liquidity = TakerLiquidity(volume_share)
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
        self._lists = defaultdict(list)
        for o in orders:
            if o.list_client_id is not None:
                self._lists[o.list_client_id].append(o.exchange_order_id)
        self.trades = sorted(state.trades, key=lambda t: int(t.trade_id))
        self._trades_by_order = defaultdict(list)
        for trade in self.trades:
            self._trades_by_order[trade.exchange_order_id].append(trade)
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
            self._trades_by_order = defaultdict(list)
            for trade in self.trades:
                self._trades_by_order[trade.exchange_order_id].append(trade)

    def trades_of(self, exchange_order_id: str) -> list[ExchangeTrade]:
        """The trades of one order, oldest first (of those the engine still holds). Right
        after :meth:`create_limit_order`, what the order took on arrival (as a taker)."""
        return list(self._trades_by_order.get(exchange_order_id, ()))

    def observe(self, symbol: str, candle: Candle) -> None:
        """The market's latest candle is ``candle`` (what :meth:`match` notes of each): its
        close is the last trade a crossing order fills at, ``volume_share`` of its volume
        what crossing orders may take. For a restart, where the replay stopped."""
        market = self.markets[symbol]
        self._last_trade[symbol] = candle.close
        self._liquidity.observe(market, candle)

    def open_at(self, symbol: str, price: Decimal) -> None:
        """Before the market's first candle: its last trade is ``price`` (a replay's first
        open), as a real exchange always has one. A limit-maker or an OCO list is judged
        against it (one on the wrong side is refused, not left resting to fill at a price
        the market never offered); nothing is takeable until a candle is seen."""
        self._last_trade.setdefault(symbol, price)

    # ------------------------------------------------------------- orders

    def create_limit_order(
        self, symbol: str, side: Side, amount: Decimal, price: Decimal, client_order_id: str, now: float,
        post_only: bool = False,
    ) -> SimOrder | Rejection:
        """Place a limit order: rejected by the market's rules or the free balance, else
        accepted, taking at once what it crosses (see the module's rules). ``post_only``
        (Binance's ``LIMIT_MAKER``): an order that would cross is rejected instead."""
        market = self.markets.get(symbol)
        if market is None:
            return Rejection(CODE_REJECTED, f"Invalid symbol {symbol}.")
        problem = market.violation(price, amount)
        if problem is not None:
            return Rejection(CODE_FILTER_FAILURE, problem)
        existing = self._by_client_id.get(client_order_id)
        if existing is not None and self.orders[existing].status == "open":
            return Rejection(CODE_REJECTED, "Duplicate order sent.")
        if post_only and self._crosses(symbol, side, price):
            return Rejection(CODE_REJECTED, "Order would immediately match and take.")
        if side is Side.BUY:
            # The worst fee it may pay: it may take (taker) now, or rest and fill later (maker).
            asset, lock = market.quote, price * amount * (1 + max(market.maker_fee, market.taker_fee))
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
        self._take(market, order, now)
        return order

    def _take(self, market: MarketRules, order: SimOrder, now: float) -> None:
        """Fill at once what ``order`` takes from the market on arrival (see the module's
        rules): at the last trade's price, as a taker, up to the volume still takeable."""
        if not self._crosses(order.symbol, order.side, order.price):
            return
        last = self._last_trade[order.symbol]
        amount = self._liquidity.take(order.symbol, order.remaining)
        if amount <= 0:
            return
        self._record([self._fill(market, order, amount, now, price=last, taker=True)])

    def create_oco_sell(
        self, symbol: str, amount: Decimal, take_profit_price: Decimal, stop_price: Decimal,
        stop_limit_price: Decimal, list_client_id: str, above_client_id: str, below_client_id: str, now: float,
    ) -> tuple[SimOrder, SimOrder] | Rejection:
        """Place an OCO sell list (see the module's rules): a ``LIMIT_MAKER`` at
        ``take_profit_price`` (the above leg) and a ``STOP_LOSS_LIMIT`` triggering at
        ``stop_price`` with its limit at ``stop_limit_price`` (the below leg), locking
        ``amount`` of the base once. Returns (above, below) or the rejection, with Binance's
        codes: -1013 for a filter, -2010 for the balance, a duplicate id or the prices'
        relationship (``take-profit > last trade > stop``)."""
        market = self.markets.get(symbol)
        if market is None:
            return Rejection(CODE_REJECTED, f"Invalid symbol {symbol}.")
        for price in (take_profit_price, stop_limit_price):
            problem = market.violation(price, amount)
            if problem is not None:
                return Rejection(CODE_FILTER_FAILURE, problem)
        if stop_price != market.round_price(stop_price, True):
            return Rejection(CODE_FILTER_FAILURE, f"Filter failure: PRICE_FILTER (stopPrice {stop_price})")
        last = self._last_trade.get(symbol)
        if not take_profit_price > stop_price or (last is not None and not take_profit_price > last > stop_price):
            return Rejection(CODE_REJECTED, "The relationship of the prices for the orders is not correct.")
        ids = (list_client_id, above_client_id, below_client_id)
        if len(set(ids)) < 3 or list_client_id in self._lists or any(
            (e := self._by_client_id.get(cid)) is not None and self.orders[e].status == "open" for cid in ids[1:]
        ):
            return Rejection(CODE_REJECTED, "Duplicate order sent.")
        balance = self.balances[market.base]
        if balance.free < amount:
            return Rejection(CODE_REJECTED, "Account has insufficient balance for requested action.")
        balance.free -= amount
        balance.used += amount
        legs = []
        for cid, price, stop, lock in ((above_client_id, take_profit_price, None, amount),
                                       (below_client_id, stop_limit_price, stop_price, Decimal(0))):
            # The lock is held once, by the above leg; a leg that fills takes it over.
            order = SimOrder(str(self._next_order), cid, symbol, Side.SELL, price, amount, now, locked=lock,
                             list_client_id=list_client_id, stop_price=stop)
            self._next_order += 1
            self.orders[order.exchange_order_id] = order
            self._open[order.exchange_order_id] = order
            self._by_client_id[cid] = order.exchange_order_id
            self._lists[list_client_id].append(order.exchange_order_id)
            self._touched(order)
            legs.append(order)
        return legs[0], legs[1]

    def order_list(self, list_client_id: str) -> list[SimOrder]:
        """The legs of an OCO order list (above, below), empty for an unknown list."""
        return [self.orders[e] for e in self._lists.get(list_client_id, ()) if e in self.orders]

    def cancel_order_list(self, list_client_id: str) -> list[SimOrder] | Rejection:
        """Cancel an OCO order list: its open legs end, the coins still locked come back."""
        legs = [leg for leg in self.order_list(list_client_id) if leg.status == "open"]
        if not legs:
            return Rejection(CODE_UNKNOWN_ORDER, "Order list does not exist.")
        self._end(legs[0].client_order_id, "canceled")
        return self.order_list(list_client_id)

    def _end_siblings(self, order: SimOrder, status: str) -> None:
        """The other open legs of ``order``'s list end with ``status``; their lock (the
        list's one lock) passes to ``order``, which may still fill."""
        for exchange_id in self._lists.get(order.list_client_id or "", ()):
            other = self.orders.get(exchange_id)
            if other is None or other is order or other.status != "open":
                continue
            other.status = status
            del self._open[exchange_id]
            order.locked += other.locked
            other.locked = Decimal(0)
            self._touched(other)

    def cancel_order(self, client_order_id: str) -> SimOrder | Rejection:
        """Cancel an order; a leg of an OCO list cancels the whole list (as Binance does)."""
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
        if order.list_client_id is not None:
            self._end_siblings(order, status)
        order.status = status
        del self._open[order.exchange_order_id]
        self._unlock(order, order.locked)
        self._touched(order)
        return order

    def _crosses(self, symbol: str, side: Side, price: Decimal) -> bool:
        """Whether a limit at ``price`` crosses the last trade (nothing crosses before the
        exchange has seen a candle of the market)."""
        last = self._last_trade.get(symbol)
        if last is None:
            return False
        return price > last if side is Side.BUY else price < last

    def fill_whole(self, client_order_id: str, now: float) -> ExchangeTrade | Rejection:
        """A counterparty takes all that is left of an open order, at its price, at once
        (whatever the candles say)."""
        order = self.order_by_client_id(client_order_id)
        if order is None or order.status != "open":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        trade = self._fill(self.markets[order.symbol], order, order.remaining, now)
        self._record([trade])
        return trade

    def order_by_client_id(self, client_order_id: str) -> SimOrder | None:
        exchange_id = self._by_client_id.get(client_order_id)
        return None if exchange_id is None else self.orders[exchange_id]

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        return [order for order in self._open.values() if symbol is None or order.symbol == symbol]

    def fill_thresholds(self, symbol: str) -> tuple[Decimal | None, Decimal | None]:
        """(highest resting buy price or waiting sell stop's stop price, lowest resting
        sell price) on ``symbol``, None for a side with nothing resting: a candle fills or
        triggers nothing unless it has volume and its low is at or below the first or its
        high above the second (the rule of :meth:`match`). The Lab's fast path searches the
        candles ahead for the next that can."""
        # A sell stop waiting for its trigger fires when the low reaches its stop price:
        # a threshold on the lows, like a buy's (inclusive there too).
        buys = [o.stop_price if o.waiting else o.price for o in self._open.values()
                if o.symbol == symbol and (o.side is Side.BUY or o.waiting)]
        sells = [o.price for o in self._open.values() if o.symbol == symbol and o.side is Side.SELL and not o.waiting]
        return (max(buys) if buys else None, min(sells) if sells else None)

    # ------------------------------------------------------------ matching

    def match(self, symbol: str, candle: Candle, now: float) -> list[ExchangeTrade]:
        """Fill what ``candle`` could fill of the orders resting on ``symbol``."""
        self.observe(symbol, candle)
        if not self._open:
            return []
        market = self.markets[symbol]
        fills: list[ExchangeTrade] = []
        triggered = set()
        for order in [o for o in self._open.values() if o.waiting and o.symbol == symbol]:
            if candle.low <= order.stop_price:  # type: ignore[operator]
                triggered.add(order.exchange_order_id)
                fills += self._trigger(market, order, candle, now)
        budget = volume_budget(market, candle, self.volume_share)
        for order in self._queue(symbol):
            if budget <= 0:
                break
            if order.waiting or order.exchange_order_id in triggered or order.status != "open":
                continue  # a stop triggered on this candle rests from the next one
            if not trades_through(order.side, order.price, candle):
                continue
            amount = min(order.remaining, budget)
            budget -= amount
            fills.append(self._fill(market, order, amount, now))
        self._record(fills)
        return fills

    def _trigger(self, market: MarketRules, order: SimOrder, candle: Candle, now: float) -> list[ExchangeTrade]:
        """A sell stop's trigger fired on ``candle``: at its stop price, or at the open when
        the candle gapped below it. Its limit takes at once what crosses that price."""
        order.triggered = True
        self._touched(order)
        at = min(candle.open, order.stop_price)  # type: ignore[type-var]
        if not order.price < at:
            return []
        amount = self._liquidity.take(order.symbol, order.remaining)
        return [self._fill(market, order, amount, now, price=at, taker=True)] if amount > 0 else []

    def _record(self, trades: list[ExchangeTrade]) -> None:
        self.trades.extend(trades)
        for trade in trades:
            self._trades_by_order[trade.exchange_order_id].append(trade)
        if self.track_changes:
            self._new_trades.extend(trades)

    def _queue(self, symbol: str) -> list[SimOrder]:
        return sorted(self.open_orders(symbol), key=lambda o: queue_key(o.side, o.price, int(o.exchange_order_id)))

    def _fee(self, market: MarketRules, side: Side, cost: Decimal, amount: Decimal, taker: bool) -> tuple[Decimal, str]:
        """The fee of a fill and the currency it is charged in: the taker fee for what an
        order took on arrival, the maker fee for what it filled resting."""
        rate = market.taker_fee if taker else market.maker_fee
        if market.fee_in not in ("received", "quote") and market.fee_currency_price:
            fee = cost * rate / market.fee_currency_price
            if self.balances[market.fee_in].free >= fee:
                return fee, market.fee_in
        if market.fee_in == "quote" or side is Side.SELL:
            return cost * rate, market.quote
        return amount * rate, market.base

    def _fill(
        self, market: MarketRules, order: SimOrder, amount: Decimal, now: float, price: Decimal | None = None,
        taker: bool = False,
    ) -> ExchangeTrade:
        """``amount`` of ``order`` trades at ``price`` (the order's own unless it took a
        better one on arrival)."""
        price = order.price if price is None else price
        if order.list_client_id is not None:
            self._end_siblings(order, "expired")  # one leg trading, even in part, ends the other
        cost = price * amount
        fee, fee_currency = self._fee(market, order.side, cost, amount, taker)
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
            price=price,
            amount=amount,
            fee=fee,
            fee_currency=fee_currency,
            at=now,
            order_complete=complete,
            taker_or_maker="taker" if taker else "maker",
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

"""The simulated USD-M perpetuals exchange: a sans-IO engine of one futures account.

Linear perpetuals settled in one margin asset (USDT), one-way position mode (Binance's
``positionSide: BOTH``): each symbol has one signed position. Its rules, and where they come
from (Binance USD-M futures, https://developers.binance.com/docs/derivatives/usds-margined-futures):

- **Orders are limit orders only**: GTC or post-only (Binance's ``GTX``). Any market type
  (``MARKET``, ``STOP_MARKET``, ``TAKE_PROFIT_MARKET``, ``TRAILING_STOP_MARKET``,
  ``closePosition``) is refused by :meth:`PerpetualExchange.refuse_market_order` and kept
  in :attr:`PerpetualExchange.violations`: limitline must never send one.
- **Fills** follow :mod:`exchange.fill_rules`, as on spot: a resting order fills when the
  market trades strictly through its price, within a share of the candle's volume, at its
  own price, as a *maker*. A new order that crosses the last price (the previous candle's
  close) is a *taker*: it fills at once at that last price (the best price the book
  offered), as much as the latest candle's volume lets crossing orders take (the spot
  engine's rule, :class:`exchange.fill_rules.TakerLiquidity`); the rest rests at its own
  price. What it takes pays the taker fee; a post-only order that would cross is rejected
  (-5022). A triggered stop's child takes from the candle that triggered it.
  A buy above 1.05 times the mark or a sell below 0.95 times it is rejected (Binance's
  PERCENT_PRICE filter: -4016, -4024).
  Fees are ``price * amount * rate`` in the margin asset (:func:`fee_of`).
- **Reduce-only** (``reduceOnly=true``): refused with -2022 when the position is flat or on
  the order's side (it could only increase it); at a fill, never more than the position
  (the rest expires); when the position closes or flips, the remaining reduce-only orders
  that could now increase it expire, as Binance cancels them.
- **Positions**: signed size, average entry price (opening fills average in; closing fills
  keep it), realized P&L ``closed * (exit - entry)`` for a long (the reverse for a short);
  a fill larger than the position flips it (the rest opens at the fill's price).
- **Margin**: initial margin = notional / leverage (a position at the mark price, an order
  at its price for the part that would open exposure, plus that part's worst-case taker fee,
  so a fill never leaves the wallet short of its fee). Available margin = cross wallet +
  cross unrealized P&L - cross positions' initial margin - open orders' margin. An order
  that does not fit is rejected with -2019 "Margin is insufficient.". Isolated positions
  hold their own margin (the initial margin of each opening fill moves into the position's
  isolated wallet; a closing fill releases its share), which an operator may add or remove.
  The mark price is the last candle's close.
- **Conditional orders** (Binance's algo orders, ``algoType CONDITIONAL``): a stop-limit
  (``STOP``: a buy triggers when the price rises to the trigger, a sell when it falls to
  it) or a take-profit-limit (``TAKE_PROFIT``: the reverse). One that would trigger at once
  is refused (-2021). A candle whose range reaches the trigger fires it at the trigger
  price, or at the candle's open when the market opened beyond it (a gap); the child limit
  order is placed then: if it crosses that price it fills at once as a taker; otherwise it
  rests from the next candle (the path inside the candle is unknown), so a gapped stop can
  rest unfilled while the position stays open. The algo order then reads ``TRIGGERED``
  with its child's id (``actualOrderId``), ``FINISHED`` once the child has ended. A symbol
  holds at most ``max_conditional_orders`` waiting ones (Binance: 10; -4045 beyond).
- **Funding** every ``funding_interval`` seconds (Binance: 00:00, 08:00, 16:00 UTC): a
  position pays ``size * mark * rate`` (a long pays a positive rate, a short receives it)
  with the mark at the first candle opening at or after the funding time. The rate is the
  configured one or, when a table is given (:func:`load_funding_rates`), the table's.
- **Liquidation (an approximation)**: maintenance margin = ``|size| * mark *
  maintenance_margin_rate`` (Binance's first bracket for BTCUSDT is 0.4 %). After a
  candle's fills, a position whose liquidation price (where its margin balance equals its
  maintenance margin; for cross, with the account's other positions at their marks) lies in
  the candle's range is closed there, or at the open on a gap. What margin the position had
  left goes to the insurance fund (``INSURANCE_CLEAR``; an isolated position loses its
  whole margin), and the symbol's open orders are cancelled. The wallet never goes below
  zero: a loss beyond it is the insurance fund's. Order in a candle: funding; liquidation
  if the candle opened beyond the liquidation price; triggers in placement order (each
  preceded by the liquidation if its price lies on the way to the trigger); resting
  fills; liquidation anywhere in the range.

Every change of the wallet is an income entry (:class:`Income`: ``REALIZED_PNL``,
``COMMISSION``, ``FUNDING_FEE``, ``TRANSFER``, ``INSURANCE_CLEAR``), as Binance's
``/fapi/v1/income`` lists them, so the wallet always equals the initial wallet plus the sum
of the income. Money booked is kept to the margin asset's 8 decimals (:func:`money`).

:meth:`PerpetualExchange.snapshot` hands over the whole account and
:meth:`PerpetualExchange.restore` continues from it (shadow mode's restarts). Not yet: the
spot engine's changes-only tracking (``drain_changes``); one-way position mode only; one
maintenance-margin bracket.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation
from pathlib import Path

import attrs

from exchange.candles import Candle
from exchange.fill_rules import TakerLiquidity, crosses, queue_key, trades_through, volume_budget
from exchange.markets import MarketRules
from exchange.matching import Rejection
from exchange.records import ExchangeOrder, ExchangeTrade, Side

# Binance USD-M error codes
# (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code).
CODE_FILTER_FAILURE = -1013
CODE_INVALID_ORDER_TYPE = -1116
CODE_BAD_SYMBOL = -1121
CODE_UNKNOWN_ORDER = -2011
CODE_NO_SUCH_ORDER = -2013
CODE_MARGIN_INSUFFICIENT = -2019
CODE_WOULD_IMMEDIATELY_TRIGGER = -2021
CODE_REDUCE_ONLY_REJECTED = -2022
CODE_PRICE_TICK = -4014
CODE_PRICE_ABOVE_MULTIPLIER_UP = -4016
CODE_QUANTITY_STEP = -4023
CODE_PRICE_BELOW_MULTIPLIER_DOWN = -4024
CODE_INVALID_LEVERAGE = -4028
CODE_MAX_STOP_ORDERS = -4045
CODE_NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
CODE_MARGIN_TYPE_OPEN_ORDERS = -4047
CODE_MARGIN_TYPE_POSITION = -4048
CODE_ADD_MARGIN_ISOLATED_ONLY = -4049
CODE_ISOLATED_BALANCE_INSUFFICIENT = -4051
CODE_DUPLICATE_CLIENT_ID = -4116
CODE_MIN_NOTIONAL = -4164
CODE_POST_ONLY_REJECTED = -5022

MARGIN_MODES = ("cross", "isolated")
CONDITIONAL_KINDS = ("STOP", "TAKE_PROFIT")
#: Order types a limit-only client never sends (each is executed as a market order).
MARKET_TYPES = ("MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
INCOME_TYPES = ("REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "TRANSFER", "INSURANCE_CLEAR")
ZERO = Decimal(0)
#: Money booked (margin held, P&L, fees, funding) is kept to the margin asset's 8 decimals,
#: as Binance's wallet does: exact sums, so the wallet always equals its income.
MONEY = Decimal("0.00000001")


def money(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    return amount.quantize(MONEY, rounding)


def perpetual_rules(symbol: str, **values: object) -> MarketRules:
    """Market rules of a linear perpetual named as ccxt does (``BTC/USDT:USDT``)."""
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    if not base or not quote or settle != quote:
        raise ValueError(f"a linear perpetual's symbol looks like BTC/USDT:USDT, got {symbol!r}")
    return MarketRules(symbol=symbol, base=base, quote=quote, **values)  # type: ignore[arg-type]


def fee_of(market: MarketRules, price: Decimal, amount: Decimal, taker: bool) -> Decimal:
    """A futures fill's fee, in the margin asset: notional times the maker or taker rate
    (rounded up to the asset's 8 decimals)."""
    return money(price * amount * (market.taker_fee if taker else market.maker_fee), ROUND_UP)


def load_funding_rates(path: str | Path) -> dict[int, Decimal]:
    """A funding-rate table: CSV with ``timestamp`` (ISO-8601 UTC or epoch seconds) and
    ``funding_rate`` columns, as Binance's funding history lists them. Returns funding time
    (epoch seconds) -> rate. Raises ValueError naming the file and row of a bad value."""
    rates: dict[int, Decimal] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"timestamp", "funding_rate"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs the columns timestamp,funding_rate")
        for row_number, row in enumerate(reader, start=2):
            stamp = row["timestamp"].strip()
            try:
                ts = int(stamp) if stamp.isdigit() else int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp())
                rate = Decimal(row["funding_rate"].strip())
            except (ValueError, InvalidOperation):
                raise ValueError(f"{path}:{row_number}: timestamp must be ISO-8601 or epoch seconds and funding_rate a number") from None
            if not rate.is_finite() or abs(rate) >= 1:
                raise ValueError(f"{path}:{row_number}: funding_rate must be a rate below 1 in size (0.0001 is 0.01 %), got {rate}")
            rates[ts] = rate
    return rates


@attrs.define
class Position:
    """One symbol's position and settings. ``size`` is signed (negative: short)."""

    symbol: str
    leverage: int
    margin_mode: str = "cross"
    size: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    #: Isolated mode: the margin held for this position (part of the wallet).
    isolated_wallet: Decimal = ZERO
    updated_at: float = 0.0


@attrs.define
class PerpetualOrder:
    """A limit order in the book (mutable: it fills as it goes)."""

    exchange_order_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    placed_at: float
    time_in_force: str = "GTC"  # GTC | GTX (post-only)
    reduce_only: bool = False
    #: LIMIT, or STOP / TAKE_PROFIT for the child of a triggered conditional order.
    origin_type: str = "LIMIT"
    filled: Decimal = ZERO
    filled_cost: Decimal = ZERO
    status: str = "open"  # open | closed (filled) | canceled | expired
    margin: Decimal = ZERO  # initial margin held for the part that would open exposure
    #: A triggered child rests from the candle after the one that triggered it.
    rests_after_ts: int | None = None
    updated_at: float = 0.0

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def average_price(self) -> Decimal:
        return self.filled_cost / self.filled if self.filled else ZERO

    def record(self) -> ExchangeOrder:
        return ExchangeOrder(self.client_order_id, self.exchange_order_id, self.symbol, self.side, self.price,
                             self.amount, self.filled, self.status)


@attrs.define
class ConditionalOrder:
    """A conditional (algo) order: a limit order placed when the trigger price is reached."""

    algo_id: str
    client_algo_id: str
    symbol: str
    side: Side
    kind: str  # STOP | TAKE_PROFIT
    trigger_price: Decimal
    price: Decimal
    amount: Decimal
    reduce_only: bool
    placed_at: float
    status: str = "NEW"  # NEW | CANCELED | TRIGGERED | FINISHED | REJECTED | EXPIRED
    triggered_at: float = 0.0
    actual_order_id: str = ""
    updated_at: float = 0.0

    def fires(self, candle: Candle) -> bool:
        """The candle's range reaches the trigger, in the direction that fires it."""
        return candle.high >= self.trigger_price if self._rising() else candle.low <= self.trigger_price

    def fired_at(self, candle: Candle) -> Decimal:
        """The market price when it fired: the trigger, or the open on a gap beyond it."""
        if self._rising():
            return max(candle.open, self.trigger_price)
        return min(candle.open, self.trigger_price)

    def fires_at_once(self, last_price: Decimal) -> bool:
        return last_price >= self.trigger_price if self._rising() else last_price <= self.trigger_price

    def _rising(self) -> bool:
        # A buy stop and a sell take-profit fire on the way up; the others on the way down.
        return (self.side is Side.BUY) == (self.kind == "STOP")


@attrs.frozen
class PerpetualTrade(ExchangeTrade):
    """A futures fill: the record every venue gives, plus what USD-M's trade list says."""

    realized_pnl: Decimal = ZERO
    maker: bool = True
    reduce_only: bool = False
    #: The position's signed size right after this fill.
    position_after: Decimal = ZERO
    liquidation: bool = False


@attrs.frozen
class Income:
    """One change of the wallet, as ``/fapi/v1/income`` lists it (``amount`` signed)."""

    tran_id: int
    symbol: str  # "" for a transfer
    income_type: str
    amount: Decimal
    asset: str
    at: float
    trade_id: str = ""


@attrs.frozen
class Violation:
    """A market-type order someone tried to place (limitline must never send one)."""

    at: float
    order_type: str
    symbol: str
    detail: str


@attrs.frozen
class PerpetualState:
    """The whole simulated futures account, as a store would keep it (copies: the engine
    goes on changing after a snapshot). :meth:`PerpetualExchange.restore` continues from it."""

    wallet: Decimal
    initial_wallet: Decimal
    positions: tuple[Position, ...]
    marks: tuple[tuple[str, Decimal], ...]
    last_candle_ts: tuple[tuple[str, int], ...]
    orders: tuple[PerpetualOrder, ...]
    conditional_orders: tuple[ConditionalOrder, ...]
    trades: tuple[PerpetualTrade, ...]
    income: tuple[Income, ...]
    violations: tuple[Violation, ...]
    liquidation_order_ids: tuple[str, ...]
    next_order: int
    next_algo: int
    next_trade: int
    next_income: int
    #: What crossing orders may still take from each market's latest candle.
    taker_left: tuple[tuple[str, Decimal], ...] = ()


class PerpetualExchange:
    """One simulated USD-M futures account (one-way position mode)."""

    def __init__(
        self,
        markets: Iterable[MarketRules],
        wallet: Decimal,
        *,
        margin_asset: str = "USDT",
        volume_share: Decimal = Decimal("0.1"),
        maintenance_margin_rate: Decimal = Decimal("0.004"),
        funding_rate: Decimal = Decimal("0.0001"),
        funding_interval: int = 8 * 3600,
        funding_rates: Mapping[str, Mapping[int, Decimal]] | None = None,
        default_leverage: int = 20,
        max_leverage: int = 125,
        max_conditional_orders: int = 10,
        percent_price: tuple[Decimal, Decimal] = (Decimal("1.05"), Decimal("0.95")),
    ) -> None:
        if not ZERO < volume_share <= 1:
            raise ValueError(f"volume_share must be in (0, 1], got {volume_share}")
        if not ZERO <= maintenance_margin_rate < Decimal("0.5"):
            raise ValueError(f"maintenance_margin_rate must be in [0, 0.5), got {maintenance_margin_rate}")
        if wallet < 0:
            raise ValueError(f"wallet must be 0 or more, got {wallet}")
        if not 1 <= default_leverage <= max_leverage:
            raise ValueError(f"default_leverage must be within 1..{max_leverage}, got {default_leverage}")
        self.markets = {m.symbol: m for m in markets}
        #: The same rules without the minimum notional (USD-M checks it on its own: -4164).
        self._lot_and_tick = {s: attrs.evolve(m, min_notional=ZERO) for s, m in self.markets.items()}
        self.margin_asset = margin_asset
        self.wallet = Decimal(wallet)
        self.initial_wallet = self.wallet
        self.volume_share = volume_share
        self.maintenance_margin_rate = maintenance_margin_rate
        self.funding_rate = funding_rate
        self.funding_interval = funding_interval
        self.funding_rates = {s: dict(t) for s, t in (funding_rates or {}).items()}
        self.max_leverage = max_leverage
        self.max_conditional_orders = max_conditional_orders
        self.percent_price = percent_price
        self.positions = {s: Position(s, default_leverage) for s in self.markets}
        self.mark: dict[str, Decimal] = {}
        #: What crossing orders may still take from the latest candle (the spot engine's rule).
        self._liquidity = TakerLiquidity(volume_share)
        self._last_candle_ts: dict[str, int] = {}
        self.orders: dict[str, PerpetualOrder] = {}
        self._open: dict[str, PerpetualOrder] = {}
        self._by_client_id: dict[str, str] = {}
        self.algo_orders: dict[str, ConditionalOrder] = {}
        #: The conditional orders still waiting for their trigger, in placement order, and
        #: the triggered ones by their child's id (a long run places many thousands).
        self._open_algos: dict[str, ConditionalOrder] = {}
        self._algo_of_child: dict[str, ConditionalOrder] = {}
        self._algo_by_client_id: dict[str, str] = {}
        self.trades: list[PerpetualTrade] = []
        self.income: list[Income] = []
        self.violations: list[Violation] = []
        #: The forced orders that closed liquidated positions, oldest first.
        self.liquidation_orders: list[PerpetualOrder] = []
        self._next_order = 1
        self._next_algo = 1
        self._next_trade = 1
        self._next_income = 1

    # -------------------------------------------------------------- state

    def snapshot(self) -> PerpetualState:
        """The whole account now (for a store; the engine's own objects are copied)."""
        return self.account_state(self.orders, self.algo_orders, self.trades, self.income)

    def account_state(
        self, order_ids: Iterable[str], algo_ids: Iterable[str], trades: Iterable[PerpetualTrade],
        income: Iterable[Income],
    ) -> PerpetualState:
        """The account now (wallet, positions, marks, counters, copied) with only the
        orders and conditional orders named and the trades and income given: a record of
        what changed, for a store that keeps the rest (:meth:`snapshot` names them all)."""
        return PerpetualState(
            wallet=self.wallet,
            initial_wallet=self.initial_wallet,
            positions=tuple(attrs.evolve(p) for p in self.positions.values()),
            marks=tuple(sorted(self.mark.items())),
            last_candle_ts=tuple(sorted(self._last_candle_ts.items())),
            orders=tuple(attrs.evolve(self.orders[i]) for i in order_ids if i in self.orders),
            conditional_orders=tuple(attrs.evolve(self.algo_orders[i]) for i in algo_ids if i in self.algo_orders),
            trades=tuple(trades),
            income=tuple(income),
            violations=tuple(self.violations),
            liquidation_order_ids=tuple(o.exchange_order_id for o in self.liquidation_orders),
            next_order=self._next_order,
            next_algo=self._next_algo,
            next_trade=self._next_trade,
            next_income=self._next_income,
            taker_left=self._liquidity.left(),
        )

    def restore(self, state: PerpetualState) -> None:
        """Continue from ``state``: the same account, whose next candle, order or id follows
        as if the engine had never stopped. Raises ValueError for a symbol this engine does
        not list."""
        unknown = {p.symbol for p in state.positions} - set(self.markets)
        if unknown:
            raise ValueError(f"the state holds markets this exchange does not list: {', '.join(sorted(unknown))}")
        self.wallet, self.initial_wallet = state.wallet, state.initial_wallet
        self.positions = {p.symbol: attrs.evolve(p) for p in state.positions}
        self.mark = dict(state.marks)
        self._last_candle_ts = dict(state.last_candle_ts)
        orders = sorted((attrs.evolve(o) for o in state.orders), key=lambda o: int(o.exchange_order_id))
        self.orders = {o.exchange_order_id: o for o in orders}
        self._open = {o.exchange_order_id: o for o in orders if o.status == "open"}
        # A client order id reused after its first order ended names the latest order.
        self._by_client_id = {o.client_order_id: o.exchange_order_id for o in orders}
        algos = sorted((attrs.evolve(a) for a in state.conditional_orders), key=lambda a: int(a.algo_id))
        self.algo_orders = {a.algo_id: a for a in algos}
        self._open_algos = {a.algo_id: a for a in algos if a.status == "NEW"}
        self._algo_by_client_id = {a.client_algo_id: a.algo_id for a in algos}
        self._algo_of_child = {a.actual_order_id: a for a in algos if a.status == "TRIGGERED" and a.actual_order_id}
        self.trades = list(state.trades)
        self.income = list(state.income)
        self.violations = list(state.violations)
        self.liquidation_orders = [self.orders[i] for i in state.liquidation_order_ids]
        self._next_order, self._next_algo = state.next_order, state.next_algo
        self._next_trade, self._next_income = state.next_trade, state.next_income
        self._liquidity.restore(state.taker_left)

    # ------------------------------------------------------------- margin

    def position(self, symbol: str) -> Position:
        return self.positions[symbol]

    def mark_price(self, symbol: str) -> Decimal | None:
        return self.mark.get(symbol)

    def unrealized_pnl(self, symbol: str, price: Decimal | None = None) -> Decimal:
        pos = self.positions[symbol]
        price = price if price is not None else self.mark.get(symbol, pos.entry_price)
        return pos.size * (price - pos.entry_price)

    def position_initial_margin(self, symbol: str) -> Decimal:
        pos = self.positions[symbol]
        return abs(pos.size) * self.mark.get(symbol, pos.entry_price) / pos.leverage

    def maintenance_margin(self, symbol: str, price: Decimal | None = None) -> Decimal:
        pos = self.positions[symbol]
        price = price if price is not None else self.mark.get(symbol, pos.entry_price)
        return abs(pos.size) * price * self.maintenance_margin_rate

    def isolated_wallets(self) -> Decimal:
        return sum((p.isolated_wallet for p in self.positions.values() if p.margin_mode == "isolated"), ZERO)

    def cross_wallet(self) -> Decimal:
        return self.wallet - self.isolated_wallets()

    def order_margin(self) -> Decimal:
        return sum((o.margin for o in self._open.values()), ZERO)

    def available_margin(self) -> Decimal:
        """What a new order may use: cross wallet + cross unrealized P&L - cross positions'
        initial margin - open orders' margin (Binance's ``availableBalance``)."""
        cross = [s for s, p in self.positions.items() if p.margin_mode == "cross" and p.size]
        return (
            self.cross_wallet()
            + sum((self.unrealized_pnl(s) for s in cross), ZERO)
            - sum((self.position_initial_margin(s) for s in cross), ZERO)
            - self.order_margin()
        )

    def liquidation_price(self, symbol: str) -> Decimal | None:
        """The price at which the position's margin balance equals its maintenance margin
        (cross: with the other cross positions at their marks); None when flat or never."""
        pos = self.positions[symbol]
        s = pos.size
        if not s:
            return None
        if pos.margin_mode == "isolated":
            wallet, others, others_mm = pos.isolated_wallet, ZERO, ZERO
        else:
            rest = [o for o, p in self.positions.items() if o != symbol and p.margin_mode == "cross" and p.size]
            wallet = self.cross_wallet()
            others = sum((self.unrealized_pnl(o) for o in rest), ZERO)
            others_mm = sum((self.maintenance_margin(o) for o in rest), ZERO)
        sign = 1 if s > 0 else -1
        # wallet + others + s * (P - e) = others_mm + |s| * P * mmr, solved for P.
        price = (others_mm - wallet - others + s * pos.entry_price) / (s * (1 - sign * self.maintenance_margin_rate))
        return price if price > 0 else None

    # ------------------------------------------------------------ settings

    def set_leverage(self, symbol: str, leverage: int, now: float = 0.0) -> Position | Rejection:
        """Binance ``POST /fapi/v1/leverage``: refused outside 1..max (-4028) or when the
        position's initial margin at the new leverage would not fit (-2019)."""
        if symbol not in self.markets:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        if not 1 <= leverage <= self.max_leverage:
            return Rejection(CODE_INVALID_LEVERAGE, f"Leverage {leverage} is not valid")
        pos = self.positions[symbol]
        if pos.size and pos.margin_mode == "cross":
            more = abs(pos.size) * self.mark.get(symbol, pos.entry_price) * (Decimal(1) / leverage - Decimal(1) / pos.leverage)
            if more > 0 and more > self.available_margin():
                return Rejection(CODE_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        pos.leverage = leverage
        pos.updated_at = now
        return pos

    def set_margin_mode(self, symbol: str, mode: str, now: float = 0.0) -> Position | Rejection:
        """Binance ``POST /fapi/v1/marginType``: -4046 when already so, -4048 with a
        position, -4047 with open orders."""
        if symbol not in self.markets:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        if mode not in MARGIN_MODES:
            return Rejection(-1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.")
        pos = self.positions[symbol]
        if pos.margin_mode == mode:
            return Rejection(CODE_NO_NEED_TO_CHANGE_MARGIN_TYPE, "No need to change margin type.")
        if pos.size:
            return Rejection(CODE_MARGIN_TYPE_POSITION, "Margin type cannot be changed if there exists position.")
        if self.open_orders(symbol):
            return Rejection(CODE_MARGIN_TYPE_OPEN_ORDERS, "Margin type cannot be changed if there exists open orders.")
        pos.margin_mode = mode
        pos.updated_at = now
        return pos

    def adjust_isolated_margin(self, symbol: str, delta: Decimal, now: float = 0.0) -> Position | Rejection:
        """Binance ``POST /fapi/v1/positionMargin``: add (``delta`` > 0) margin to an
        isolated position from the cross wallet, or remove it, keeping the position's
        initial margin (-4051 otherwise)."""
        pos = self.positions.get(symbol)
        if pos is None:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        if pos.margin_mode != "isolated":
            return Rejection(CODE_ADD_MARGIN_ISOLATED_ONLY, "Add margin only support for isolated position.")
        if not pos.size:
            return Rejection(CODE_ISOLATED_BALANCE_INSUFFICIENT, "Isolated balance insufficient.")
        if delta > 0 and delta > self.available_margin():
            return Rejection(CODE_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        if delta < 0 and pos.isolated_wallet + self.unrealized_pnl(symbol) + delta < self.position_initial_margin(symbol):
            return Rejection(CODE_ISOLATED_BALANCE_INSUFFICIENT, "Isolated balance insufficient.")
        pos.isolated_wallet += delta
        pos.updated_at = now
        return pos

    def transfer(self, delta: Decimal, now: float) -> Income | Rejection:
        """Collateral deposited (``delta`` > 0) or withdrawn from the futures wallet, as an
        operator does outside the bot; a withdrawal is limited to the available margin."""
        if delta < 0 and -delta > max(self.available_margin(), ZERO):
            return Rejection(CODE_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        return self._book("", "TRANSFER", delta, now)

    # -------------------------------------------------------------- orders

    def refuse_market_order(self, order_type: str, symbol: str, detail: str, now: float) -> Rejection:
        """Refuse (and record) a market-type order: limitline's venues take limit orders only."""
        self.violations.append(Violation(now, order_type, symbol, detail))
        return Rejection(CODE_INVALID_ORDER_TYPE, f"Invalid orderType {order_type}: this venue accepts limit orders only.")

    def create_limit_order(
        self,
        symbol: str,
        side: Side,
        amount: Decimal,
        price: Decimal,
        client_order_id: str,
        now: float,
        *,
        post_only: bool = False,
        reduce_only: bool = False,
    ) -> PerpetualOrder | Rejection:
        """Place a GTC (or post-only) limit order. A crossing one fills at once as a taker."""
        return self._place(symbol, side, amount, price, client_order_id, now, post_only, reduce_only, "LIMIT", self.mark.get(symbol))

    def _place(
        self, symbol: str, side: Side, amount: Decimal, price: Decimal, client_order_id: str, now: float,
        post_only: bool, reduce_only: bool, origin_type: str, last_price: Decimal | None,
    ) -> PerpetualOrder | Rejection:
        market = self.markets.get(symbol)
        if market is None:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        problem = self._filter_problem(symbol, price, amount, reduce_only)
        if problem is not None:
            return problem
        existing = self._by_client_id.get(client_order_id)
        if existing is not None and self.orders[existing].status == "open":
            return Rejection(CODE_DUPLICATE_CLIENT_ID, "ClientOrderId is duplicated.")
        pos = self.positions[symbol]
        if reduce_only and not _reduces(pos.size, side):
            return Rejection(CODE_REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        band = self._price_band_problem(symbol, side, price, last_price)
        if band is not None:
            return band
        taker = last_price is not None and crosses(side, price, last_price)
        if taker and post_only:
            return Rejection(CODE_POST_ONLY_REJECTED, "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history")
        # Held for the part that would open exposure: its initial margin plus the worst-case
        # (taker) fee, so a fill never leaves the wallet short of its fee.
        opening = ZERO if reduce_only else self._opening_amount(pos.size, side, amount) * price
        margin = money(opening / pos.leverage + opening * market.taker_fee, ROUND_UP)
        if margin > 0 and margin > self.available_margin():
            return Rejection(CODE_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        order = PerpetualOrder(
            exchange_order_id=str(self._next_order), client_order_id=client_order_id, symbol=symbol, side=side,
            price=price, amount=amount, placed_at=now, time_in_force="GTX" if post_only else "GTC",
            reduce_only=reduce_only, origin_type=origin_type, margin=margin, updated_at=now,
        )
        self._next_order += 1
        self.orders[order.exchange_order_id] = order
        self._open[order.exchange_order_id] = order
        self._by_client_id[client_order_id] = order.exchange_order_id
        if taker:
            assert last_price is not None
            # What the latest candle's volume lets it take; the rest rests at its price.
            amount = self._liquidity.take(symbol, order.remaining)
            if amount > 0:
                self._fill(order, amount, last_price, now, taker=True)
        return order

    def _price_band_problem(self, symbol: str, side: Side, price: Decimal, mark: Decimal | None) -> Rejection | None:
        """Binance's PERCENT_PRICE filter: a buy at most ``up`` times the mark price, a sell at
        least ``down`` times it (1.05 and 0.95 for BTCUSDT), so a crossing limit's slippage
        is bounded by the exchange too. ``mark``: the price now (a triggered order's is the
        price that fired it)."""
        if mark is None:
            return None
        up, down = self.percent_price
        market = self.markets[symbol]
        if side is Side.BUY and price > mark * up:
            return Rejection(CODE_PRICE_ABOVE_MULTIPLIER_UP, f"Limit price can't be higher than {market.round_price(mark * up, True)}.")
        if side is Side.SELL and price < mark * down:
            return Rejection(CODE_PRICE_BELOW_MULTIPLIER_DOWN, f"Limit price can't be lower than {market.round_price(mark * down, False)}.")
        return None

    def _filter_problem(self, symbol: str, price: Decimal, amount: Decimal, reduce_only: bool) -> Rejection | None:
        # Tick and lot by the market's own rule (one place); the notional is USD-M's -4164,
        # waived for reduce-only orders ("unless you choose reduce only").
        market = self.markets[symbol]
        problem = self._lot_and_tick[symbol].violation(price, amount)
        if problem is not None:
            if "PRICE_FILTER" in problem:
                return Rejection(CODE_PRICE_TICK, "Price not increased by tick size.")
            if "LOT_SIZE" in problem:
                return Rejection(CODE_QUANTITY_STEP, "Quantity not increased by step size.")
            return Rejection(CODE_FILTER_FAILURE, problem)
        if not reduce_only and price * amount < market.min_notional:
            return Rejection(CODE_MIN_NOTIONAL, f"Order's notional must be no smaller than {market.min_notional} (unless you choose reduce only).")
        return None

    @staticmethod
    def _opening_amount(size: Decimal, side: Side, amount: Decimal) -> Decimal:
        """The part of an order that would open exposure (the rest closes the position)."""
        if _reduces(size, side):
            return max(amount - abs(size), ZERO)
        return amount

    def create_conditional_order(
        self,
        symbol: str,
        side: Side,
        kind: str,
        amount: Decimal,
        price: Decimal,
        trigger_price: Decimal,
        client_algo_id: str,
        now: float,
        *,
        reduce_only: bool = False,
    ) -> ConditionalOrder | Rejection:
        """Place a stop-limit (``STOP``) or take-profit-limit (``TAKE_PROFIT``) algo order."""
        market = self.markets.get(symbol)
        if market is None:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        if kind not in CONDITIONAL_KINDS:
            return Rejection(CODE_INVALID_ORDER_TYPE, f"Invalid orderType {kind}.")
        problem = self._filter_problem(symbol, price, amount, reduce_only)
        if problem is None and trigger_price != market.round_price(trigger_price, True):
            problem = Rejection(CODE_PRICE_TICK, "Price not increased by tick size.")
        if problem is not None:
            return problem
        existing = self._algo_by_client_id.get(client_algo_id)
        if existing is not None and self.algo_orders[existing].status == "NEW":
            return Rejection(CODE_DUPLICATE_CLIENT_ID, "ClientOrderId is duplicated.")
        if reduce_only and not _reduces(self.positions[symbol].size, side):
            return Rejection(CODE_REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        algo = ConditionalOrder(str(self._next_algo), client_algo_id, symbol, side, kind, trigger_price, price, amount,
                                reduce_only, now, updated_at=now)
        last = self.mark.get(symbol)
        if last is not None and algo.fires_at_once(last):
            return Rejection(CODE_WOULD_IMMEDIATELY_TRIGGER, "Order would immediately trigger.")
        # Binance: at most 10 open conditional orders per symbol (MAX_NUM_ALGO_ORDERS).
        if len(self.open_conditional_orders(symbol)) >= self.max_conditional_orders:
            return Rejection(CODE_MAX_STOP_ORDERS, "Reach max stop order limit.")
        self._next_algo += 1
        self.algo_orders[algo.algo_id] = algo
        self._open_algos[algo.algo_id] = algo
        self._algo_by_client_id[client_algo_id] = algo.algo_id
        return algo

    def cancel_order(self, exchange_order_id: str | None = None, client_order_id: str | None = None, now: float = 0.0) -> PerpetualOrder | Rejection:
        order = self.find_order(exchange_order_id, client_order_id)
        if order is None or order.status != "open":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        self._end(order, "canceled", now)
        return order

    def cancel_conditional_order(self, algo_id: str | None = None, client_algo_id: str | None = None, now: float = 0.0) -> ConditionalOrder | Rejection:
        algo = self.find_conditional_order(algo_id, client_algo_id)
        if algo is None or algo.status != "NEW":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        self._algo_done(algo, "CANCELED", now)
        return algo

    def find_order(self, exchange_order_id: str | None = None, client_order_id: str | None = None) -> PerpetualOrder | None:
        if exchange_order_id is not None:
            return self.orders.get(exchange_order_id)
        found = self._by_client_id.get(client_order_id or "")
        return None if found is None else self.orders[found]

    def find_conditional_order(self, algo_id: str | None = None, client_algo_id: str | None = None) -> ConditionalOrder | None:
        if algo_id is not None:
            return self.algo_orders.get(algo_id)
        found = self._algo_by_client_id.get(client_algo_id or "")
        return None if found is None else self.algo_orders[found]

    def open_orders(self, symbol: str | None = None) -> list[PerpetualOrder]:
        return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def open_conditional_orders(self, symbol: str | None = None) -> list[ConditionalOrder]:
        return [a for a in self._open_algos.values() if symbol is None or a.symbol == symbol]

    def _algo_done(self, algo: ConditionalOrder, status: str, now: float) -> None:
        """A waiting conditional order leaves the waiting list with ``status``."""
        algo.status, algo.updated_at = status, now
        del self._open_algos[algo.algo_id]

    def _end(self, order: PerpetualOrder, status: str, now: float) -> None:
        order.status, order.updated_at, order.margin = status, now, ZERO
        del self._open[order.exchange_order_id]
        self._child_ended(order, now)

    def _child_ended(self, order: PerpetualOrder, now: float) -> None:
        algo = self._algo_of_child.pop(order.exchange_order_id, None)
        if algo is not None and algo.status == "TRIGGERED":
            algo.status, algo.updated_at = "FINISHED", now

    def fill_whole(self, client_order_id: str, now: float) -> PerpetualTrade | Rejection:
        """A counterparty takes all that is left of an open order, at its price, at once
        (whatever the candles say); a reduce-only order never beyond the position."""
        order = self.find_order(client_order_id=client_order_id)
        if order is None or order.status != "open":
            return Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")
        first = len(self.trades)
        self._fill(order, order.remaining, order.price, now, taker=False)
        return self.trades[-1] if len(self.trades) > first else Rejection(CODE_UNKNOWN_ORDER, "Unknown order sent.")

    # ------------------------------------------------------------ operator

    def operator_reduce(self, symbol: str, amount: Decimal | None, now: float) -> PerpetualOrder | Rejection:
        """An operator reduces (``amount``) or closes (None) the position by hand, with a
        reduce-only limit order at the mark price, which fills at once as a taker (as far as
        the latest candle's volume goes; the rest rests). The price is the mark on the
        market's tick, rounded towards the book (down for a sell, up for a buy): a mark off
        the tick (candles in cents, a tick of 0.1) would be refused (-4014)."""
        pos = self.positions.get(symbol)
        if pos is None:
            return Rejection(CODE_BAD_SYMBOL, "Invalid symbol.")
        mark = self.mark.get(symbol)
        if not pos.size or mark is None:
            return Rejection(CODE_REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        side = Side.SELL if pos.size > 0 else Side.BUY
        qty = abs(pos.size) if amount is None else min(amount, abs(pos.size))
        # It takes at that price: trades happen on the tick grid, the mark need not be on it.
        price = self.markets[symbol].round_price(mark, passive_side_is_down=side is Side.SELL)
        return self._place(symbol, side, qty, price, f"operator-{self._next_order}", now, False, True, "LIMIT", price)

    # ------------------------------------------------------------ matching

    def open_market(self, symbol: str, candle: Candle) -> None:
        """Before any candle has closed: the market trades at ``candle``'s open, and crossing
        orders may take what its volume allows (a server that quotes a price at once)."""
        self.mark[symbol] = candle.open
        self._liquidity.observe(self.markets[symbol], candle)

    def match(self, symbol: str, candle: Candle, now: float) -> list[PerpetualTrade]:
        """Run one closed candle of ``symbol``: funding due, triggers, resting fills, then
        liquidation; the mark moves to its close. Returns the trades it made."""
        first = len(self.trades)
        self._liquidity.observe(self.markets[symbol], candle)
        previous = self._last_candle_ts.get(symbol)
        if previous is not None:
            self._funding(symbol, previous, candle, now)
        self._last_candle_ts[symbol] = candle.ts
        # The market opened beyond the liquidation price: nothing else happens first.
        self._liquidate_if_reached(symbol, candle, now, at_open=True)
        for algo in self.open_conditional_orders(symbol):  # placement order
            if algo.status == "NEW" and algo.fires(candle):
                # A liquidation price on the way to this trigger is reached first.
                self._liquidate_if_reached(symbol, candle, now, before=algo.fired_at(candle))
                if algo.status == "NEW":
                    self._trigger(algo, candle, now)
        self._rest_fills(symbol, candle, now)
        self._liquidate_if_reached(symbol, candle, now)
        self.mark[symbol] = candle.close
        return self.trades[first:]

    def _trigger(self, algo: ConditionalOrder, candle: Candle, now: float) -> None:
        at = algo.fired_at(candle)
        algo.triggered_at = now
        # Marked before the child is placed: a child that takes at once ends it at once.
        self._algo_done(algo, "TRIGGERED", now)
        algo.actual_order_id = str(self._next_order)
        self._algo_of_child[algo.actual_order_id] = algo
        child = self._place(algo.symbol, algo.side, algo.amount, algo.price, algo.client_algo_id, now, False,
                            algo.reduce_only, algo.kind, at)
        if isinstance(child, Rejection):
            del self._algo_of_child[algo.actual_order_id]
            algo.actual_order_id = ""
            algo.status = "EXPIRED" if child.code == CODE_REDUCE_ONLY_REJECTED else "REJECTED"
            return
        child.rests_after_ts = candle.ts

    def _rest_fills(self, symbol: str, candle: Candle, now: float) -> None:
        market = self.markets[symbol]
        budget = volume_budget(market, candle, self.volume_share)
        resting = [o for o in self.open_orders(symbol) if o.rests_after_ts is None or o.rests_after_ts < candle.ts]
        for order in sorted(resting, key=lambda o: queue_key(o.side, o.price, int(o.exchange_order_id))):
            if budget <= 0:
                break
            if order.status != "open" or not trades_through(order.side, order.price, candle):
                continue
            amount = min(order.remaining, budget)
            budget -= self._fill(order, amount, order.price, now, taker=False)

    def _fill(self, order: PerpetualOrder, amount: Decimal, price: Decimal, now: float, taker: bool) -> Decimal:
        """Fill ``amount`` of ``order`` at ``price``; a reduce-only order never beyond the
        position (its rest expires). Returns the amount filled."""
        pos = self.positions[order.symbol]
        if order.reduce_only:
            amount = min(amount, abs(pos.size)) if _reduces(pos.size, order.side) else ZERO
            if amount <= 0:
                self._end(order, "expired", now)
                return ZERO
        before = order.remaining
        self._trade(order.symbol, order.side, amount, price, now, taker, order.exchange_order_id,
                    order.client_order_id, order.reduce_only, complete=amount == before)
        order.margin -= money(order.margin * amount / before)
        order.filled += amount
        order.filled_cost += amount * price
        order.updated_at = now
        if order.remaining == 0:
            order.status = "closed"
            order.margin = ZERO
            del self._open[order.exchange_order_id]
            self._child_ended(order, now)
        self._expire_reduce_only(order.symbol, now)
        return amount

    def _trade(
        self, symbol: str, side: Side, amount: Decimal, price: Decimal, now: float, taker: bool,
        exchange_order_id: str, client_order_id: str, reduce_only: bool, liquidation: bool = False,
        complete: bool = True,
    ) -> PerpetualTrade:
        """Book one fill on the position and the wallet (realized P&L and fee as income)."""
        market, pos = self.markets[symbol], self.positions[symbol]
        signed = amount if side is Side.BUY else -amount
        size = pos.size
        closing = min(amount, abs(size)) if _reduces(size, side) else ZERO
        opening = amount - closing
        realized = money(closing * (price - pos.entry_price) * (1 if size > 0 else -1)) if closing else ZERO
        if pos.margin_mode == "isolated" and closing:
            released = pos.isolated_wallet if closing == abs(size) else money(pos.isolated_wallet * closing / abs(size))
            pos.isolated_wallet -= released
        if opening:
            held = size if not closing else ZERO  # after a full close the rest opens anew
            pos.entry_price = (abs(held) * pos.entry_price + opening * price) / (abs(held) + opening)
        pos.size = size + signed
        if not pos.size:
            pos.entry_price = ZERO
        if pos.margin_mode == "isolated" and opening:
            pos.isolated_wallet += money(opening * price / pos.leverage, ROUND_UP)
        fee = ZERO if liquidation else fee_of(market, price, amount, taker)
        trade_id = str(self._next_trade)
        self._next_trade += 1
        pos.realized_pnl += realized
        pos.fees += fee
        pos.updated_at = now
        if realized:
            self._book(symbol, "REALIZED_PNL", realized, now, trade_id)
        if fee:
            self._book(symbol, "COMMISSION", -fee, now, trade_id)
        trade = PerpetualTrade(
            trade_id=trade_id, exchange_order_id=exchange_order_id, client_order_id=client_order_id, symbol=symbol,
            side=side, price=price, amount=amount, fee=fee, fee_currency=self.margin_asset, at=now,
            order_complete=complete, realized_pnl=realized, maker=not taker, reduce_only=reduce_only, position_after=pos.size,
            liquidation=liquidation,
        )
        self.trades.append(trade)
        return trade

    def _expire_reduce_only(self, symbol: str, now: float) -> None:
        size = self.positions[symbol].size
        for order in self.open_orders(symbol):
            if order.reduce_only and not _reduces(size, order.side):
                self._end(order, "expired", now)

    def _book(self, symbol: str, income_type: str, amount: Decimal, now: float, trade_id: str = "") -> Income:
        entry = Income(self._next_income, symbol, income_type, amount, self.margin_asset, now, trade_id)
        self._next_income += 1
        self.wallet += amount
        self.income.append(entry)
        return entry

    # ------------------------------------------------------------- funding

    def _funding(self, symbol: str, previous_ts: int, candle: Candle, now: float) -> None:
        interval = self.funding_interval
        due = (previous_ts // interval + 1) * interval
        pos = self.positions[symbol]
        table = self.funding_rates.get(symbol)
        while due <= candle.ts:
            if pos.size:
                rate = table.get(due, self.funding_rate) if table is not None else self.funding_rate
                payment = money(-pos.size * candle.open * rate)
                pos.funding += payment
                if pos.margin_mode == "isolated":
                    pos.isolated_wallet = max(pos.isolated_wallet + payment, ZERO)
                self._book(symbol, "FUNDING_FEE", payment, now)
            due += interval

    # ---------------------------------------------------------- liquidation

    def _liquidate_if_reached(
        self, symbol: str, candle: Candle, now: float, *, at_open: bool = False, before: Decimal | None = None
    ) -> None:
        """Liquidate the position if the candle reaches its liquidation price: anywhere in
        its range, or only at its open (``at_open``), or only on the way to ``before`` (a
        price the market reached in the candle)."""
        pos = self.positions[symbol]
        price = self.liquidation_price(symbol)
        if price is None:
            return
        long = pos.size > 0
        low, high = (candle.open, candle.open) if at_open else (candle.low, candle.high)
        if before is not None:
            low, high = max(low, before), min(high, before)
        if long and low <= price:
            at = min(candle.open, price)
        elif not long and high >= price:
            at = max(candle.open, price)
        else:
            return
        at = self.markets[symbol].round_price(at, pos.size > 0)
        for order in self.open_orders(symbol):
            self._end(order, "canceled", now)
        for algo in self.open_conditional_orders(symbol):
            self._algo_done(algo, "CANCELED", now)
        isolated = pos.margin_mode == "isolated"
        margin_before = pos.isolated_wallet if isolated else self.cross_wallet()
        side = Side.SELL if pos.size > 0 else Side.BUY
        amount = abs(pos.size)
        # The exchange's forced order, listed like any other (Binance: a LIMIT IOC order whose
        # client id starts with ``autoclose-``, also in ``/fapi/v1/forceOrders``).
        order = PerpetualOrder(
            exchange_order_id=str(self._next_order), client_order_id=f"autoclose-{self._next_order}", symbol=symbol,
            side=side, price=at, amount=amount, placed_at=now, time_in_force="IOC", reduce_only=True,
            filled=amount, filled_cost=amount * at, status="closed", updated_at=now,
        )
        self._next_order += 1
        self.orders[order.exchange_order_id] = order
        self.liquidation_orders.append(order)
        trade = self._trade(symbol, side, amount, at, now, True, order.exchange_order_id, order.client_order_id, True,
                            liquidation=True)
        # What the position had left is the insurance fund's: an isolated position loses
        # its whole margin, a cross one its maintenance margin; a loss beyond the wallet is
        # the insurance fund's too, so the wallet never goes below zero.
        if isolated:
            clear = -(margin_before + trade.realized_pnl)
        elif self.wallet < 0:
            clear = -self.wallet
        else:
            clear = -min(money(amount * at * self.maintenance_margin_rate), self.wallet)
        if clear:
            self._book(symbol, "INSURANCE_CLEAR", clear, now)
        if isolated:
            pos.isolated_wallet = ZERO


def _reduces(size: Decimal, side: Side) -> bool:
    """An order on ``side`` would reduce a position of signed ``size``."""
    return (size > 0 and side is Side.SELL) or (size < 0 and side is Side.BUY)


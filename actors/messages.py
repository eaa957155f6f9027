"""Every message the actors send each other. Frozen, slotted attrs classes; money is Decimal.

Actors address each other by name (``ledger``, ``writer``, ``reconciler``,
``connection:<venue>``, ``strategy:<name>``); a core returns :class:`Send` effects naming the
recipient and its shell delivers them. Expected outcomes (a denial, a rejection, an unknown
result) are messages here, never exceptions.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import attrs

from actors.orders import Order
from exchange.candles import Candle
from exchange.markets import MarketRules
from exchange.matching import ExchangeState
from exchange.records import ExchangeOrder, ExchangeTrade, Side

if TYPE_CHECKING:  # the position book imports FillReport from here
    from actors.ledger.positions_core import PositionEntry

LEDGER = "ledger"
WRITER = "writer"
RECONCILER = "reconciler"


def strategy_address(name: str) -> str:
    return f"strategy:{name}"


def connection_address(venue: str) -> str:
    return f"connection:{venue}"


# ----------------------------------------------------------------- effects


class Send(NamedTuple):
    """Deliver ``message`` to the actor named ``to``.

    A NamedTuple rather than an attrs class: every core makes one per message it sends,
    and a tuple is several times cheaper to build, and just as immutable.
    """

    to: str
    message: Any


# ------------------------------------------------------------------ timing


@attrs.frozen
class Tick:
    """Time passed; sent by an actor's own timer. ``now`` is the trio clock."""

    now: float


# ------------------------------------------------------- strategy <-> ledger


@attrs.frozen
class Reserve:
    client_order_id: str
    strategy: str
    side: Side
    symbol: str
    base: str
    quote: str
    price: Decimal
    amount: Decimal
    #: The worst fee rate the order can pay; a buy reserves price * amount * (1 + fee_rate).
    fee_rate: Decimal
    reply_to: str
    #: Size a buy as this share (0 to 1) of the strategy's free capital instead of
    #: ``amount``: only the ledger knows it at the moment of reserving. The amount is rounded
    #: down to ``lot_size`` and must meet the market's minimums.
    share_of_free: Decimal | None = None
    lot_size: Decimal = Decimal(0)
    #: Instead of a lot: amounts keep this many significant digits (ccxt SIGNIFICANT_DIGITS).
    amount_digits: int | None = None
    min_amount: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)


class ReservationGranted(NamedTuple):
    """The ledger reserved the order's funds. A NamedTuple (as :class:`Send`): the ledger
    answers every reservation, and a tuple is several times cheaper to build than a frozen
    attrs class."""

    client_order_id: str
    #: The amount reserved for, when the ledger sized the order (share_of_free).
    amount: Decimal | None = None


@attrs.frozen
class ReservationDenied:
    client_order_id: str
    reason: str


@attrs.frozen
class Allocate:
    """A strategy added while the process runs (the operator edited the config): its
    exchange account and assets, and, if the journal does not know it yet, its allocation
    (quote capital, base inventory, what each base unit cost). A strategy the journal
    knows keeps its books: an allocation is journaled once."""

    strategy: str
    #: ``(account key, base, quote)``, as the ledger's ``accounts_of``.
    account: tuple[Any, str, str]
    quote: Decimal = Decimal(0)
    base: Decimal = Decimal(0)
    base_cost: Decimal | None = None
    #: False: its parameters failed, so nothing is journaled (as at a start).
    journal: bool = True


@attrs.frozen
class AccountQuery:
    strategy: str
    reply_to: str


@attrs.frozen
class AccountInfo:
    """A strategy's balances in the ledger: the only source of what a strategy holds.

    Sent on request (when it starts) and after every change to its account (a fill
    settled, a release, a correction), so a strategy never sums fills itself."""

    strategy: str
    quote_free: Decimal
    quote_reserved: Decimal
    base_free: Decimal
    base_reserved: Decimal
    #: What every strategy on the same exchange account holds now, per asset (pre-flight
    #: checks it against the account's balance). Empty if the ledger does not know.
    account_holdings: dict[str, Decimal] = attrs.field(factory=dict)
    #: What the inventory held cost, in quote (average-cost basis, fees included).
    cost_basis: Decimal = Decimal(0)
    #: Realized P&L in quote, and fees paid per currency.
    realized_pnl: Decimal = Decimal(0)
    fees_paid: dict[str, Decimal] = attrs.field(factory=dict)
    #: Trade ids the ledger has booked (or refused) since its last answer to this strategy.
    settled: tuple[str, ...] = ()


# ------------------------------------------- strategy <-> ledger: positions
#
# A strategy on a perpetual (swap) venue reserves through these; the ledger's answers are
# the same ReservationGranted / ReservationDenied as on spot. Fills, cancellations and
# rejections reach the ledger as for spot; it routes them by client order id.


@attrs.frozen
class PositionOrderRequest:
    """A strategy asks to reserve for one order on a perpetual market.

    ``reduce_only``: a close (reserves the position it reduces); otherwise an open
    (reserves initial margin: ``price x amount / leverage + price x amount x fee_rate``).
    ``oco_group``: closes of one group (take-profit, stop-loss) share one reservation.
    """

    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    leverage: Decimal
    fee_rate: Decimal
    reduce_only: bool = False
    oco_group: str | None = None


@attrs.frozen
class PositionReserve:
    """Reserve for ``order`` on a perpetual market (the position book's
    :class:`PositionOrderRequest`); the answer goes to ``reply_to``."""

    order: PositionOrderRequest
    reply_to: str


@attrs.frozen
class PositionInfo:
    """A strategy's collateral and its position on one symbol, as the ledger holds them:
    sent on request (an :class:`AccountQuery`) and after every change. ``size`` signed
    (long positive), base units; money in the settlement asset."""

    strategy: str
    symbol: str
    size: Decimal
    entry_price: Decimal | None
    realized_pnl: Decimal
    fees_paid: dict[str, Decimal]
    funding_paid: Decimal
    margin_used: Decimal
    wallet: Decimal
    free: Decimal
    #: Trade ids booked since the ledger's last answer to this strategy.
    settled: tuple[str, ...] = ()


@attrs.frozen
class FundingReport:
    """A funding payment of a perpetual position, as the exchange's income history lists
    it (connection -> ledger). ``paid`` positive: the position paid it; negative: received."""

    venue: str
    strategy: str
    symbol: str
    income_id: str
    paid: Decimal
    currency: str
    at: float


@attrs.frozen
class RecordPositionJournal:
    """The position book's entries and the fills they settle: one transaction."""

    entries: tuple["PositionEntry", ...]
    fills: tuple["FillReport", ...] = ()


@attrs.frozen
class Correct:
    """Change a strategy's free balances to match exchange truth (from the reconciler).

    Always with a reason; the ledger refuses a correction that would leave a balance
    negative (that difference cannot be explained by this strategy's books).
    """

    strategy: str
    quote_delta: Decimal
    base_delta: Decimal
    reason: str
    reply_to: str | None = None


@attrs.frozen
class CorrectionRefused:
    strategy: str
    reason: str


@attrs.frozen
class Release:
    """Free what an order still holds: it ended without filling the rest (or never left)."""

    client_order_id: str
    reason: str
    #: As in :class:`OrderCanceled`: the exchange's filled amount at the end, if known.
    filled: Decimal | None = None


@attrs.frozen
class LedgerRefused:
    """The ledger refused an entry that would break an invariant (a balance going
    negative): nothing of it was applied. Sent to the strategy concerned, which pauses:
    the difference needs an operator."""

    strategy: str
    client_order_id: str | None
    reason: str


# --------------------------------------------------- strategy <-> connection


@attrs.frozen
class Subscribe:
    strategy: str
    symbol: str


@attrs.frozen
class RecordKeys:
    """What of the order book of record a reconciliation needs besides the open orders: the
    orders and trades the exchange's and the ledger's snapshots name."""

    client_order_ids: frozenset[str] = frozenset()
    exchange_order_ids: frozenset[str] = frozenset()
    trade_ids: frozenset[str] = frozenset()


@attrs.frozen
class VenueFacts:
    """What the exchange connection knows, or why it does not: the basis of pre-flight."""

    venue: str
    #: None when the connection is up; otherwise what went wrong (e.g. bad credentials).
    connection_error: str | None
    markets: Mapping[str, MarketRules]
    #: The account's total balance per asset on the exchange.
    balances: Mapping[str, Decimal]
    #: The latest price per market, when known: used to check the order size.
    last_prices: Mapping[str, Decimal]
    #: Perpetual markets: the leverage set on the account per market (empty on spot).
    leverage: Mapping[str, Decimal] = attrs.field(factory=dict)
    #: Why a market may not be traded although it exists (a live perpetual's leverage or
    #: margin mode could not be set or reads back otherwise): symbol -> the reason.
    market_problems: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class VenueInfo:
    """What the connection knows of its exchange, sent to a strategy when it subscribes:
    the basis of its pre-flight checks."""

    facts: VenueFacts


@attrs.frozen
class CandleClosed:
    venue: str
    symbol: str
    candle: Candle
    #: Lockstep replay: answer with CandleDone once every order it caused is answered.
    ack: bool = False
    #: Trade ids of the recipient's fills this candle made (simulated venues): the strategy
    #: decides on the candle once the ledger has settled them, so it sees what it holds.
    fills: tuple[str, ...] = ()


@attrs.frozen
class Quote:
    """The best bid and ask, where the venue gives them."""

    venue: str
    symbol: str
    bid: Decimal
    ask: Decimal
    #: When the connection received it (wall-clock seconds): an old quote is not a price.
    at: float = 0.0


@attrs.frozen
class StopTriggered:
    """The exchange says our stop-limit ``client_order_id`` has triggered and its child
    order rests (Binance USD-M: the algo order is ``TRIGGERED`` and its child is listed
    open). Sent at every listing that shows it so: the strategy judges a gap now, not at
    the next candle's close. ``price``: the latest price the connection knows of the
    market (a closed candle's), None when it knows none."""

    client_order_id: str
    at: float
    price: Decimal | None = None


@attrs.frozen
class CandleDone:
    strategy: str
    symbol: str
    ts: int


@attrs.frozen
class StrategyReady:
    """The strategy has finished starting (active, or inactive with its reason)."""

    strategy: str


@attrs.frozen
class SubmitOrder:
    order: Order


@attrs.frozen
class CheckOrder:
    """Find out what became of an UNKNOWN order, from the exchange's evidence only."""

    order: Order


@attrs.frozen
class CancelOrder:
    client_order_id: str
    strategy: str
    reason: str


@attrs.frozen
class OrderAccepted:
    client_order_id: str
    exchange_order_id: str
    at: float
    #: What the exchange filled on arrival (a crossing order, as a taker), when the
    #: connection knows it: the fill reports of that amount follow this message.
    taken: Decimal = Decimal(0)


@attrs.frozen
class OrderRejected:
    client_order_id: str
    reason: str
    at: float


@attrs.frozen
class OrderCanceled:
    client_order_id: str
    reason: str
    at: float
    #: True when we cancelled it because its time-to-live ran out.
    expired: bool = False
    #: What the exchange says had filled when the order ended (None: it did not say).
    #: Trades up to this amount may still be reported after the cancel: exchanges report
    #: trades asynchronously. The ledger keeps their funds reserved until they arrive.
    filled: Decimal | None = None


@attrs.frozen
class CancelFailed:
    """The exchange refused or failed a cancel; the order stays as it was."""

    client_order_id: str
    reason: str
    at: float


@attrs.frozen
class OrderOutcomeUnknown:
    client_order_id: str
    reason: str
    at: float


@attrs.frozen
class FillReport:
    """One trade of one of our orders, as the exchange reported it."""

    venue: str
    client_order_id: str
    exchange_order_id: str
    trade_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    at: float
    #: The exchange says the order has nothing left to fill.
    order_complete: bool
    #: ``"taker"`` (the order crossed the market on arrival), ``"maker"`` (it rested), or
    #: None when the exchange does not say (ccxt's ``takerOrMaker``).
    taker_or_maker: str | None = None


# ------------------------------------------------------------- to the writer


@attrs.frozen
class RecordEvent:
    """One line of the activity feed."""

    kind: str
    actor: str
    at: float
    strategy: str | None = None
    client_order_id: str | None = None
    rule: str | None = None
    reason: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class RecordOrder:
    """The order book of record: insert or update one order's row.

    With ``durable_reply_to`` set, the writer commits with ``synchronous=FULL`` and then
    sends :class:`OrderDurable` to that address; nothing is sent to the exchange before.
    """

    order: Order
    durable_reply_to: str | None = None


@attrs.frozen
class OrderDurable:
    client_order_id: str


class JournalEntry(NamedTuple):
    """One ledger movement. The ledger's state is the fold of these, in order.

    Deltas are signed changes to the strategy's balances; a ``reserve`` creates the
    reservation, ``settle`` and ``release`` shrink it, and it is gone when nothing is left.

    A NamedTuple, not an attrs class (as :class:`Send`): the ledger makes one for every
    reservation, release and fill, and a frozen slotted attrs class sets each of its 17
    fields through ``object.__setattr__`` (about 1.5 us an entry against 0.3 for a tuple
    built by position, :func:`journal_entry`); just as immutable. The store's columns are
    its fields, in order (``store.rows.Columns``).
    """

    kind: str  # allocate | reserve | settle | release | correct
    strategy: str
    at: float
    client_order_id: str | None = None
    trade_id: str | None = None
    side: Side | None = None
    price: Decimal | None = None
    amount: Decimal | None = None
    fee: Decimal = Decimal(0)
    fee_currency: str | None = None
    quote_free: Decimal = Decimal(0)
    quote_reserved: Decimal = Decimal(0)
    base_free: Decimal = Decimal(0)
    base_reserved: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    #: Change in the quote-asset cost of the inventory held (for average-cost P&L).
    cost_basis: Decimal = Decimal(0)
    reason: str = ""


#: ``journal_entry((kind, strategy, at, ..., reason))``: a :class:`JournalEntry` of all 17
#: values in field order, without the keyword handling of its ``__new__`` (the ledger's hot
#: path: a fifth of the cost).
journal_entry = functools.partial(tuple.__new__, JournalEntry)


class RecordJournal(NamedTuple):
    """The ledger's movements and the fills they settle: one transaction, so a fill row
    never exists without its journal entries, nor the reverse. A NamedTuple (as
    :class:`Send`): the ledger sends one per batch it handles."""

    entries: tuple[JournalEntry, ...]
    fills: tuple[FillReport, ...] = ()


@attrs.frozen
class RecordLedgerCheckpoint:
    """The ledger's state after every journal entry sent to the writer before this message
    (``actors.ledger.core.LedgerCheckpoint``): written in the same transaction as those
    entries, with the last one's sequence number, so a rebuild folds only what follows.

    ``seq``: that number as the ledger counts (the journal's entries are numbered from 1
    without gaps, and the ledger's state is the fold of the first ``seq``). The writer
    writes the checkpoint only if the journal agrees: never a checkpoint that skips an
    entry the state does not hold (one a previous incarnation sent, say)."""

    checkpoint: Any
    seq: int


@attrs.frozen
class RecordSimulatedExchange:
    """A simulated account's state, as it changed, and how far its replay has gone.

    A connection sends it to the writer *before* it tells anyone what the change caused
    (an acceptance, a fill, a cancellation, a candle), so that the writer, committing its
    inbox in order, has it on disk no later than anything recorded because of it: after
    any crash the stored simulated exchange is at least as far as the ledger and the
    order book of record, and never gives a trade id twice.
    """

    venue: str
    state: ExchangeState | None
    #: market -> time of the last candle released (the markets whose replay moved).
    replay: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class RecordPerpetualAccount:
    """A simulated perpetuals account's changes, sent to the writer ahead of what they
    cause, as :class:`RecordSimulatedExchange`: an ``exchange.perpetuals.PerpetualState``
    whose account fields are whole and whose orders, conditional orders, trades and income
    are those that changed or are new since the last record."""

    venue: str
    state: Any


# ------------------------------------------------------ connection <-> shell


@attrs.frozen
class ExchangeCall:
    """An effect: run ``operation`` of the exchange adapter (``exchange.ccxt_adapter.OPERATIONS``)
    with these arguments on a worker thread."""

    call_id: int
    operation: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    #: A create or cancel: an unclear outcome makes the order UNKNOWN instead of failed.
    write: bool = False


@attrs.frozen
class CallDone:
    """The outcome of an :class:`ExchangeCall`, fed back into the connection's core."""

    call_id: int
    result: Any = None
    #: None on success; else the taxonomy's kind and the exchange's message.
    error_kind: str | None = None
    error: str = ""
    #: Seconds from a ``Retry-After`` header, when the exchange sent one.
    retry_after: float | None = None
    #: The exchange's own error code (Binance: -2019 ...) and what it means, when known.
    code: int | None = None
    reason: str | None = None


@attrs.frozen
class VenueStatus:
    """The venue was isolated (orders stop) or recovered (pre-flight runs again)."""

    venue: str
    isolated: bool
    reason: str


# ----------------------------------------------------- reconciler <-> others


@attrs.frozen
class SnapshotRequest:
    reply_to: str
    request_id: int = 0


@attrs.frozen
class ExchangeSnapshot:
    venue: str
    open_orders: tuple[ExchangeOrder, ...]
    balances: dict[str, Decimal]
    at: float
    #: The request this answers: a late answer to an earlier request is recognizable.
    request_id: int = 0
    #: Recent trades of the account on the markets we trade.
    trades: tuple[ExchangeTrade, ...] = ()
    #: A derivatives account's positions, orders of both kinds, trades and income
    #: (``actors.reconciler.positions_core.PositionsSnapshot``); None on spot.
    positions: Any = None


@attrs.frozen
class LedgerSnapshotRequest:
    reply_to: str
    request_id: int


@attrs.frozen
class LedgerSnapshot:
    request_id: int
    #: strategy -> (quote free + reserved, base free + reserved)
    holdings: dict[str, tuple[Decimal, Decimal]]
    #: client order id -> strategy, for every open reservation
    open_reservations: dict[str, str]
    #: strategy -> asset -> amount, for fees paid in a third currency (BNB) out of the
    #: account's balance of it: negative, the strategy's share of that balance
    others: dict[str, dict[str, Decimal]] = attrs.field(factory=dict)
    #: The position book's side (``actors.ledger.position_ledger_core.BookView``); None
    #: when no strategy trades perpetuals.
    positions: Any = None


@attrs.frozen
class PositionRepair:
    """A repair of a strategy's position from the reconciler (exchange truth wins), applied
    by the ledger's position book with its reason: ``action`` is one of
    ``actors.reconciler.positions_core``'s ``BookExternalTrade``, ``AdoptPosition`` or
    ``AdjustCollateral``."""

    strategy: str
    action: Any


@attrs.frozen
class ReconciledQuery:
    """A strategy asks whether its venue's first reconciliation is done."""

    venue: str
    reply_to: str


@attrs.frozen
class Reconciled:
    """The venue's state has been compared with the exchange (twice): orders may flow."""

    venue: str


@attrs.frozen
class Pause:
    """Stop placing orders until an operator resumes: something is unexplained."""

    strategy: str
    reason: str


@attrs.frozen
class Resume:
    strategy: str
    by: str


@attrs.frozen
class CancelOpenOrders:
    """An operator's request: cancel every open order of this strategy now. The strategy
    stays as it was (pause it first to stop new orders); an order whose outcome is not known
    yet (submitting, unknown) or already being cancelled is left to its own course."""

    strategy: str
    by: str

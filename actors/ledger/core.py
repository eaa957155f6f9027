"""The ledger's rules: allocations, reservations, settlement of fills, per strategy.

The ledger is the one owner of what a strategy holds, owes and has reserved, of its entry
cost, realized P&L and fees. Everyone else asks it: strategies get an :class:`AccountInfo`
after every change to their account and never sum fills themselves.

Every operation is decided first, as a list of :class:`JournalEntry` deltas, checked, and
then applied with :meth:`LedgerCore.apply`, the same function that rebuilds the state from
the journal on start-up. The state is therefore always the fold of the journal.

Invariants, checked where entries are applied (an entry that would break one is refused
with its reason and nothing of it is applied; ``python -O`` does not remove the checks):

- no balance is negative;
- what a strategy holds reserved equals the sum of its open reservations;
- one strategy never draws on another's allocation: every entry names one strategy.

Funds of an order the exchange ended (cancelled, expired) stay reserved for the part the
exchange says had filled until those trades are reported: a late fill never finds its
money handed to another order.

Memory stays bounded in a months-long run: of the closed reservations, the
:data:`exchange.retention.KEEP_FINISHED_ORDERS` most recently closed stay in memory (:class:`exchange.retention.Forgetting`,
applied in the fold, so a rebuild keeps the same ones); a fill naming an older one is settled after the shell reads that
order's entries back from the journal (:meth:`LedgerCore.unknown_orders`,
:meth:`LedgerCore.recall`). Open reservations are never dropped.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import AbstractSet, Any, Iterable, Mapping

import attrs

from actors.messages import (
    WRITER,
    AccountInfo,
    AccountQuery,
    Allocate,
    Correct,
    CorrectionRefused,
    FillReport,
    JournalEntry,
    LedgerRefused,
    LedgerSnapshot,
    LedgerSnapshotRequest,
    OrderCanceled,
    OrderRejected,
    RecordEvent,
    RecordJournal,
    Release,
    ReservationDenied,
    ReservationGranted,
    Reserve,
    Send,
    journal_entry,
    strategy_address,
)
from exchange.markets import round_to
from exchange.records import Side
from exchange.retention import KEEP_FINISHED_ORDERS, Forgetting

ZERO = Decimal(0)
#: ``Side.BUY`` read once: an enum member's lookup on its class costs about as much as a
#: Decimal multiplication, and the hot paths ask it for every reservation and fill.
BUY = Side.BUY
BALANCES = ("quote_free", "quote_reserved", "base_free", "base_reserved")


class LedgerInvariantError(Exception):
    """The ledger's state broke an invariant: a bug (entries are checked before they apply)."""


@attrs.define
class Reservation:
    client_order_id: str
    strategy: str
    side: Side
    price: Decimal
    amount: Decimal
    quote_reserved: Decimal = ZERO
    base_reserved: Decimal = ZERO
    #: Quote reserved per unit of amount when the buy was reserved (price, worst fee).
    unit_quote: Decimal = ZERO
    filled: Decimal = ZERO
    #: The trades booked; a set of its own from the first (most orders never fill).
    trade_ids: AbstractSet[str] = frozenset()
    open: bool = True
    #: The exchange ended the order having filled this much; trades up to it are still to
    #: be reported, and their funds stay reserved until they are.
    awaiting: Decimal | None = None


@attrs.define
class Account:
    strategy: str
    quote_free: Decimal = ZERO
    quote_reserved: Decimal = ZERO
    base_free: Decimal = ZERO
    base_reserved: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    cost_basis: Decimal = ZERO
    fees_paid: dict[str, Decimal] = attrs.Factory(dict)
    #: Other currencies this strategy's orders took from the account (fees in BNB): what it
    #: holds of them, negative; the reconciler counts them so no other strategy looks short.
    others: dict[str, Decimal] = attrs.Factory(dict)

    @property
    def inventory(self) -> Decimal:
        return self.base_free + self.base_reserved

    def snapshot(self) -> dict[str, Any]:
        return {
            "quote_free": str(self.quote_free),
            "quote_reserved": str(self.quote_reserved),
            "base_free": str(self.base_free),
            "base_reserved": str(self.base_reserved),
            "realized_pnl": str(self.realized_pnl),
            "cost_basis": str(self.cost_basis),
            "fees_paid": {k: str(v) for k, v in self.fees_paid.items()},
            "others": {k: str(v) for k, v in self.others.items()},
        }


@attrs.frozen
class LedgerCheckpoint:
    """The fold's state after some journal entry: what a rebuild continues from instead of
    folding the journal from its start (:meth:`LedgerCore.checkpoint`,
    :meth:`LedgerCore.from_checkpoint`; the store keeps it with the entry's sequence
    number). Copies, in the order the fold keeps them: accounts in the order they first
    appeared, reservations open and recently closed in the fold's order (the order in which
    :class:`exchange.retention.Forgetting` forgets), and when its next pass is due; the
    strategies that ever had a reservation open, in the order they first did (the order of
    :meth:`LedgerCore.open_reservations`)."""

    accounts: tuple[Account, ...]
    reservations: tuple[Reservation, ...]
    next_sweep: int
    open_strategies: tuple[str, ...] = ()


class _Answer:
    """What handling a batch of messages says, gathered as it goes: the journal and fill
    rows to record (one message to the writer), the replies, in order, and the balances
    each strategy hears after them (one :class:`AccountInfo` per address, as they were at
    its account's last change, naming every trade booked since its last answer)."""

    __slots__ = ("entries", "fills", "replies", "_balances")

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self.fills: list[FillReport] = []
        self.replies: list[Send] = []
        self._balances: dict[str, tuple[Any, ...]] = {}

    def balances(self, to: str, account: Account | None, strategy: str, settled: tuple[str, ...] = ()) -> None:
        """``to`` hears ``account``'s balances as they are now (after the batch's other
        replies), unless they change again in the batch."""
        a = account or Account(strategy)
        before = self._balances.pop(to, None)  # the last change orders the answers
        self._balances[to] = (
            strategy, a.quote_free, a.quote_reserved, a.base_free, a.base_reserved, a.cost_basis, a.realized_pnl,
            dict(a.fees_paid), before[-1] + settled if before is not None else settled,
        )

    def sends(self) -> list[Send]:
        """The batch's messages, in order (the answer is spent: its lists are reused)."""
        out = self.replies
        if self.entries or self.fills:
            out.insert(0, Send(WRITER, RecordJournal(tuple(self.entries), tuple(self.fills))))
        for to, (strategy, qf, qr, bf, br, cost_basis, pnl, fees, settled) in self._balances.items():
            out.append(Send(to, AccountInfo(strategy, qf, qr, bf, br, {}, cost_basis, pnl, fees, settled)))
        return out


class LedgerCore:
    """Handles one message at a time; returns the messages to send."""

    def __init__(self, accounts_of: Mapping[str, tuple[str, str, str]] | None = None) -> None:
        """``accounts_of``: each strategy's exchange account (venue and mode), base and
        quote asset; lets the ledger say what all strategies of one account hold."""
        self.accounts_of = dict(accounts_of or {})
        self.accounts: dict[str, Account] = {}
        #: The open reservations and the most recent closed ones, by client order id.
        self.reservations: dict[str, Reservation] = {}
        self._forgetting: Forgetting[str, Reservation] = Forgetting(KEEP_FINISHED_ORDERS)
        #: Closed reservations read back from the journal for a late fill (:meth:`recall`):
        #: apart from the fold's own, so that the state stays the fold of the journal (a
        #: checkpoint of it is what a rebuild from scratch would make).
        self.recalled: dict[str, Reservation] = {}
        self._forgetting_recalled: Forgetting[str, Reservation] = Forgetting(KEEP_FINISHED_ORDERS)
        #: The open ones, per strategy: what the invariants sum over (kept small and hot).
        self._open: dict[str, dict[str, Reservation]] = {}

    @classmethod
    def from_journal(
        cls, entries: Iterable[JournalEntry], accounts_of: Mapping[str, tuple[str, str, str]] | None = None
    ) -> "LedgerCore":
        core = cls(accounts_of)
        for entry in entries:
            core.apply(entry)
        return core

    def checkpoint(self) -> LedgerCheckpoint:
        """The fold's state now, as copies (the writer encodes them later, on its thread)."""
        return LedgerCheckpoint(
            tuple(_copy_account(a) for a in self.accounts.values()),
            tuple(_copy_reservation(r) for r in self.reservations.values()),
            self._forgetting._next_sweep,
            tuple(self._open),
        )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LedgerCheckpoint, accounts_of: Mapping[str, tuple[str, str, str]] | None = None
    ) -> "LedgerCore":
        """The ledger as the fold stood at ``checkpoint``: fold the entries after it next."""
        core = cls(accounts_of)
        for account in checkpoint.accounts:
            core.accounts[account.strategy] = _copy_account(account)
        for strategy in checkpoint.open_strategies:
            core._open[strategy] = {}
        for kept in checkpoint.reservations:
            reservation = core.reservations[kept.client_order_id] = _copy_reservation(kept)
            if reservation.open:
                core._open.setdefault(reservation.strategy, {})[reservation.client_order_id] = reservation
        core._forgetting._next_sweep = checkpoint.next_sweep
        return core

    # -------------------------------------------------------------- dispatch

    def unknown_orders(self, messages: Iterable[Any]) -> set[str]:
        """Client order ids of fills in ``messages`` whose reservation is not in memory: the
        shell reads their journal entries (:meth:`recall`) before handling the batch. A fill
        of an order the journal does not know either is recorded and not settled."""
        missing: set[str] = set()
        for m in messages:  # a loop, not a comprehension: this runs for every batch
            if isinstance(m, FillReport) and m.client_order_id not in self.reservations and m.client_order_id not in self.recalled:
                missing.add(m.client_order_id)
        return missing

    def recall(self, entries: Iterable[JournalEntry]) -> None:
        """Bring back closed reservations from their journal entries (in journal order),
        without touching any account: their entries were applied long ago."""
        recalled: dict[str, Reservation] = {}
        for entry in entries:
            cid = entry.client_order_id
            if cid is None or cid in self.reservations:
                continue
            if entry.kind == "reserve":
                recalled[cid] = _reservation(entry)
            elif cid in recalled:
                _advance(recalled[cid], entry)
        # Only closed reservations are ever forgotten, and a closed one holds nothing: so it
        # comes back closed and empty, whatever of its history the writer has committed yet
        # (a release not on disk must not bring back funds that are already free again).
        for cid, reservation in recalled.items():
            reservation.open, reservation.awaiting = False, None
            reservation.quote_reserved = reservation.base_reserved = ZERO
            self.recalled[cid] = reservation
        self._forgetting_recalled.sweep(self.recalled, _always)

    def reservation(self, client_order_id: str) -> Reservation | None:
        """The reservation of this order: in the fold, or read back for a late fill."""
        return self.reservations.get(client_order_id) or self.recalled.get(client_order_id)

    def handle_batch(self, messages: Iterable[Any], now: float) -> list[Send]:
        """Handle a drained inbox in order. The batch's journal and fill rows go to the
        writer as one message (one transaction; replies never wait for it: only order
        intents are durable), ahead of the replies; and each strategy whose account changed
        hears its balances once, after the batch's other replies to it, naming every trade
        booked for it in the batch."""
        answer = _Answer()
        handle = self._handle
        for message in messages:
            handle(message, now, answer)
        return answer.sends()

    def handle(self, message: Any, now: float) -> list[Send]:
        """Handle one message: a batch of one (see :meth:`handle_batch`)."""
        answer = _Answer()
        self._handle(message, now, answer)
        return answer.sends()

    def _handle(self, message: Any, now: float, answer: "_Answer") -> None:
        if isinstance(message, Reserve):
            self._reserve(message, now, answer)
        elif isinstance(message, (Release, OrderCanceled)):
            self._changed(self.release(message.client_order_id, message.reason, now, message.filled), answer)
        elif isinstance(message, FillReport):
            self._settle(message, now, answer)
        elif isinstance(message, OrderRejected):
            self._changed(self.release(message.client_order_id, message.reason, now), answer)
        elif isinstance(message, Correct):
            self._correct(message, now, answer)
        elif isinstance(message, LedgerSnapshotRequest):
            holdings = {
                name: (a.quote_free + a.quote_reserved, a.base_free + a.base_reserved) for name, a in self.accounts.items()
            }
            reservations = {r.client_order_id: r.strategy for r in self.open_reservations() if r.awaiting is None}
            others = {name: dict(a.others) for name, a in self.accounts.items() if a.others}
            answer.replies.append(Send(message.reply_to, LedgerSnapshot(message.request_id, holdings, reservations, others)))
        elif isinstance(message, AccountQuery):
            holdings = self.account_holdings(message.strategy)
            if holdings:
                answer.replies.append(Send(message.reply_to, self.account_info(message.strategy, with_holdings=True)))
            else:  # the same as the balances a change sends: one answer says both
                answer.balances(message.reply_to, self.accounts.get(message.strategy), message.strategy)
        elif isinstance(message, Allocate):
            self._add_strategy(message, now, answer)
        else:
            raise TypeError(f"the ledger does not handle {type(message).__name__}")

    def account_info(self, strategy: str, with_holdings: bool = False) -> AccountInfo:
        """``strategy``'s balances now; ``with_holdings``: and what its whole exchange
        account's strategies hold (for pre-flight)."""
        a = self.accounts.get(strategy) or Account(strategy)
        return AccountInfo(
            strategy, a.quote_free, a.quote_reserved, a.base_free, a.base_reserved,
            self.account_holdings(strategy) if with_holdings else {}, a.cost_basis, a.realized_pnl, dict(a.fees_paid),
        )

    def _changed(self, entries: list[JournalEntry], answer: "_Answer", fills: tuple[FillReport, ...] = ()) -> None:
        """The journal (and fill rows) to record, and the new balances of each strategy
        the entries touched, naming the trades just booked."""
        answer.entries += entries
        if fills:
            answer.fills += fills
        trade_ids = tuple([f.trade_id for f in fills]) if fills else ()
        # Almost always one entry (a release, a fill), so one strategy: no set to build.
        strategies = (entries[0].strategy,) if len(entries) == 1 else dict.fromkeys([e.strategy for e in entries])
        for strategy in strategies:
            answer.balances(strategy_address(strategy), self.accounts.get(strategy), strategy, trade_ids)

    # ------------------------------------------------------------ operations

    def allocate(
        self, strategy: str, quote: Decimal, base: Decimal, now: float, reason: str, base_cost: Decimal | None = None
    ) -> list[JournalEntry]:
        """Give ``strategy`` capital and inventory of its own. ``base_cost``: what each unit
        of the starting inventory cost, in quote (its entry price); without it, the starting
        inventory enters at cost 0 and selling it books the whole proceeds as profit."""
        if quote < 0 or base < 0 or (base_cost is not None and base_cost < 0):
            raise ValueError(f"allocation of {strategy} must not be negative")
        entry = JournalEntry(
            kind="allocate", strategy=strategy, at=now, quote_free=quote, base_free=base, reason=reason,
            price=base_cost, cost_basis=base * base_cost if base_cost is not None else ZERO,
        )
        self.apply(entry)
        return [entry]

    def _add_strategy(self, message: Allocate, now: float, answer: "_Answer") -> None:
        """A strategy added to the running process: its account, and its allocation unless
        the journal already has one (the same rule as at a start)."""
        self.accounts_of[message.strategy] = message.account
        if message.strategy in self.accounts or not message.journal:
            return
        answer.entries.extend(self.allocate(
            message.strategy, message.quote, message.base, now, "allocation from the config (added while running)",
            message.base_cost,
        ))

    def _reserve(self, request: Reserve, now: float, answer: "_Answer") -> None:
        sized = None
        amount = request.amount
        if request.share_of_free is not None:
            sized = self._size(request)
            if isinstance(sized, str):
                answer.replies.append(Send(request.reply_to, ReservationDenied(request.client_order_id, sized)))
                return
            amount = sized
        decision = self._decide_reserve(request, amount, now)
        if isinstance(decision, str):
            answer.replies.append(Send(request.reply_to, ReservationDenied(request.client_order_id, decision)))
            return
        self.apply(decision)
        answer.entries.append(decision)
        answer.replies.append(Send(request.reply_to, ReservationGranted(request.client_order_id, sized)))

    def _size(self, request: Reserve) -> Decimal | str:
        """The amount a share of what is free buys (a buy: of the capital) or sells (a sell:
        of the inventory), floored to the lot, or why it cannot."""
        account = self.accounts.get(request.strategy)
        if account is None:
            return f"no allocation: strategy {request.strategy} has no capital or inventory in the ledger"
        share = request.share_of_free or ZERO
        if request.price <= 0:
            return f"price must be greater than 0, got {request.price}"
        if request.side is BUY:
            amount = account.quote_free * share / (request.price * (1 + request.fee_rate))
        else:
            amount = account.base_free * share
        if request.lot_size > 0 or request.amount_digits is not None:
            amount = round_to(amount, request.lot_size, request.amount_digits, ROUND_DOWN)
        if amount > 0 and amount >= request.min_amount and amount * request.price >= request.min_notional:
            return amount
        minimum = f"({request.min_amount} {request.base}, {request.min_notional} {request.quote})"
        if request.side is BUY:
            return (
                f"sizing: {share * 100:f} % of free {_money(account.quote_free)} {request.quote} buys "
                f"{amount:f} {request.base} at {request.price}, below the market's minimum {minimum}"
            )
        if account.base_free <= 0:
            return f"nothing to sell: no free {request.base}"
        return (
            f"dust: {account.base_free} {request.base} free sells {amount:f} {request.base} at {request.price}, "
            f"below the market's minimum {minimum}; it is sold with the next position"
        )

    def _decide_reserve(self, request: Reserve, amount: Decimal, now: float) -> JournalEntry | str:
        """The ``reserve`` entry for ``amount`` of ``request`` (the ledger may have sized
        it), or why not."""
        account = self.accounts.get(request.strategy)
        if account is None:
            return f"no allocation: strategy {request.strategy} has no capital or inventory in the ledger"
        if request.client_order_id in self.reservations:
            return f"duplicate client order id {request.client_order_id}"
        price = request.price
        if price <= 0 or amount <= 0:
            return f"price and amount must be greater than 0, got {price} x {amount}"
        if request.side is BUY:
            needs = price * amount * (1 + request.fee_rate)
            if needs > account.quote_free:
                return (
                    f"insufficient capital: needs {_money(needs)} {request.quote}, "
                    f"free {_money(account.quote_free)} {request.quote}"
                )
            return journal_entry((
                "reserve", request.strategy, now, request.client_order_id, None, BUY, price, amount, ZERO, None,
                -needs, needs, ZERO, ZERO, ZERO, ZERO, "",
            ))
        if amount > account.base_free:
            return (
                f"insufficient inventory: needs {amount} {request.base}, "
                f"free {account.base_free} {request.base}"
            )
        return journal_entry((
            "reserve", request.strategy, now, request.client_order_id, None, request.side, price, amount, ZERO, None,
            ZERO, ZERO, -amount, amount, ZERO, ZERO, "",
        ))

    def _settle(self, fill: FillReport, now: float, answer: "_Answer") -> None:
        """Turn a fill into inventory or capital at its actual price and fee, in whatever
        currency the exchange charged it, and record the fill row with its entries."""
        reservation = self.reservations.get(fill.client_order_id) or self.recalled.get(fill.client_order_id)
        if reservation is None:
            # Not an order of ours (the reconciler classifies those): the row is kept.
            answer.fills.append(fill)
            return
        if fill.trade_id in reservation.trade_ids:
            return  # a duplicate report
        account = self.accounts[reservation.strategy]
        base, _, quote = fill.symbol.partition("/")
        cost = fill.price * fill.amount
        fee_quote = fill.fee if fill.fee_currency == quote else ZERO
        fee_base = fill.fee if fill.fee_currency == base else ZERO
        if reservation.side is BUY:
            spend = cost + fee_quote
            from_reserved = min(reservation.quote_reserved, spend)
            # quote_free, quote_reserved, base_free, base_reserved, realized_pnl, cost_basis
            deltas = (-(spend - from_reserved), -from_reserved, fill.amount - fee_base, ZERO, ZERO, spend)
        else:
            from_reserved = min(reservation.base_reserved, fill.amount)
            inventory = account.base_free + account.base_reserved
            cost_out = account.cost_basis * fill.amount / inventory if inventory else ZERO
            deltas = (
                cost - fee_quote, ZERO, -(fill.amount - from_reserved) - fee_base, -from_reserved,
                cost - fee_quote - cost_out, -cost_out,
            )
        entry = journal_entry((
            "settle", reservation.strategy, now, fill.client_order_id, fill.trade_id, reservation.side, fill.price,
            fill.amount, fill.fee, fill.fee_currency, *deltas, "",
        ))
        problem = self._violation(entry)
        if problem is not None:
            self._refuse(entry, problem, now, fill, answer)
            return
        self.apply(entry)
        entries = [entry]
        if fill.order_complete and reservation.filled < reservation.amount:
            # The exchange says the order is filled, but an earlier trade of it is not
            # reported yet (trades can arrive out of order): keep what that trade needs.
            entries += self.release(fill.client_order_id, "filled", now, filled=reservation.amount)
        elif fill.order_complete or (reservation.awaiting is not None and reservation.filled >= reservation.awaiting):
            entries += self.release(fill.client_order_id, "filled", now)
        self._changed(entries, answer, (fill,))

    def release(self, client_order_id: str, reason: str, now: float, filled: Decimal | None = None) -> list[JournalEntry]:
        """Give back what an order still holds once it can fill no further. ``filled``: what
        the exchange says had filled when the order ended; the funds of trades not yet
        reported stay reserved (the entry carries ``filled`` as its amount) until they are."""
        reservation = self.reservations.get(client_order_id)
        if reservation is None or not reservation.open:
            return []  # (a recalled reservation is closed)
        if filled is None:
            filled = reservation.awaiting  # already ended: still waiting for those trades
        keep_quote = keep_base = ZERO
        awaiting = None
        if filled is not None and filled > reservation.filled:
            outstanding = filled - reservation.filled
            awaiting = filled
            if reservation.side is BUY:
                keep_quote = min(reservation.quote_reserved, outstanding * reservation.unit_quote)
            else:
                keep_base = min(reservation.base_reserved, outstanding)
        quote_back = reservation.quote_reserved - keep_quote
        base_back = reservation.base_reserved - keep_base
        if not quote_back and not base_back and awaiting is not None and awaiting == reservation.awaiting:
            return []  # said again (a duplicate cancel): nothing changes, nothing to journal
        if awaiting is not None:
            reason = f"{reason}; {awaiting - reservation.filled} still to be reported"
        entry = journal_entry((
            "release", reservation.strategy, now, client_order_id, None, reservation.side, None, awaiting, ZERO, None,
            quote_back, -quote_back, base_back, -base_back, ZERO, ZERO, reason,
        ))
        self.apply(entry)
        return [entry]

    def _correct(self, message: Correct, now: float, answer: "_Answer") -> None:
        """Apply a correction from the reconciler, with its reason, unless it cannot hold."""
        account = self.accounts.get(message.strategy)
        problem = None
        if not message.reason:
            problem = "a correction needs a reason"
        elif account is None:
            problem = f"no account for strategy {message.strategy}"
        elif account.quote_free + message.quote_delta < 0 or account.base_free + message.base_delta < 0:
            problem = (
                f"correction would leave {message.strategy} negative: free {account.quote_free} quote"
                f" {message.quote_delta:+}, free {account.base_free} base {message.base_delta:+}"
            )
        if problem is not None:
            if message.reply_to:
                answer.replies.append(Send(message.reply_to, CorrectionRefused(message.strategy, problem)))
            return
        entry = JournalEntry(
            kind="correct",
            strategy=message.strategy,
            at=now,
            quote_free=message.quote_delta,
            base_free=message.base_delta,
            reason=message.reason,
        )
        self.apply(entry)
        self._changed([entry], answer)

    def _violation(self, entry: JournalEntry) -> str | None:
        """Why applying ``entry`` would break an invariant, or None."""
        account = self.accounts.get(entry.strategy) or Account(entry.strategy)
        afters = (
            account.quote_free + entry.quote_free, account.quote_reserved + entry.quote_reserved,
            account.base_free + entry.base_free, account.base_reserved + entry.base_reserved,
        )
        for field, after in zip(BALANCES, afters):
            if after < 0:
                return f"{entry.kind} of {entry.client_order_id or '-'} would leave {entry.strategy}.{field} at {after}"
        return None

    def _refuse(self, entry: JournalEntry, problem: str, now: float, fill: FillReport, answer: "_Answer") -> None:
        """Apply nothing of ``entry``; tell the strategy (it pauses) and the event log."""
        reason = f"ledger refused {problem}: the exchange's fill is recorded, the books are not changed"
        answer.fills.append(fill)
        address = strategy_address(entry.strategy)
        answer.replies += [
            Send(WRITER, RecordEvent(kind="ledger_refused", actor="ledger", at=now, strategy=entry.strategy,
                                     client_order_id=entry.client_order_id, reason=reason,
                                     payload={"trade_id": entry.trade_id})),
            Send(address, LedgerRefused(entry.strategy, entry.client_order_id, reason)),
        ]
        # The trade is answered for (refused): a candle waiting on it may be decided.
        answer.balances(address, self.accounts.get(entry.strategy), entry.strategy, (fill.trade_id,))

    # ------------------------------------------------------------------ fold

    def apply(self, entry: JournalEntry) -> None:
        """Apply one journal entry. Used live and when rebuilding from the store."""
        # Every field at once (a JournalEntry is a tuple): the fold runs for every entry.
        (kind, strategy, _, cid, _, side, _, _, fee, fee_currency,
         quote_free, quote_reserved, base_free, base_reserved, realized_pnl, cost_basis, _) = entry
        account = self.accounts.get(strategy)
        if account is None:
            account = self.accounts[strategy] = Account(strategy)
        account.quote_free += quote_free
        account.quote_reserved += quote_reserved
        account.base_free += base_free
        account.base_reserved += base_reserved
        account.realized_pnl += realized_pnl
        account.cost_basis += cost_basis
        if fee and fee_currency:
            account.fees_paid[fee_currency] = account.fees_paid.get(fee_currency, ZERO) + fee
            assets = self.accounts_of.get(strategy)
            if kind == "settle" and assets is not None and fee_currency not in assets[1:]:
                # A fee in a third currency comes out of the account's balance of it, which
                # may be another strategy's inventory: this strategy owes it.
                account.others[fee_currency] = account.others.get(fee_currency, ZERO) - fee
        if kind == "reserve":
            if cid is None or side is None:
                raise LedgerInvariantError(f"a reserve entry without a client order id or side: {entry}")
            reservation = self.reservations[cid] = _reservation(entry)
            open_ = self._open.get(strategy)
            if open_ is None:
                open_ = self._open[strategy] = {}
            open_[cid] = reservation
        elif (kind == "settle" or kind == "release") and cid in self.reservations:
            reservation = self.reservations[cid]
            was_open = reservation.open
            _advance(reservation, entry)
            if was_open and not reservation.open:
                del self._open[strategy][cid]
                # Closed ones are kept in the order they closed: the oldest to close is the
                # first forgotten, never one that closed just now (its late fill may be in
                # the same batch, and its entries not yet on disk).
                del self.reservations[cid]
                self.reservations[cid] = reservation
                self._forgetting.sweep(self.reservations, _closed)
        elif (kind == "settle" or kind == "release") and cid in self.recalled:
            _advance(self.recalled[cid], entry)  # a late fill of a recalled one: closed, it stays so

    # ------------------------------------------------------------- queries

    def account_holdings(self, strategy: str) -> dict[str, Decimal]:
        """What every strategy on ``strategy``'s exchange account holds now, per asset."""
        mine = self.accounts_of.get(strategy)
        if mine is None:
            return {}
        totals: dict[str, Decimal] = {}
        for name, (account_key, base, quote) in self.accounts_of.items():
            account = self.accounts.get(name)
            if account_key != mine[0] or account is None:
                continue
            totals[quote] = totals.get(quote, ZERO) + account.quote_free + account.quote_reserved
            totals[base] = totals.get(base, ZERO) + account.base_free + account.base_reserved
        return totals

    def open_reservations(self, strategy: str | None = None) -> list[Reservation]:
        if strategy is not None:
            return list(self._open.get(strategy, {}).values())
        return [r for by_cid in self._open.values() for r in by_cid.values()]

    def check_invariants(self, strategies: Iterable[str] | None = None) -> None:
        """Raise :class:`LedgerInvariantError` naming the first broken invariant (of every
        account by default)."""
        names = self.accounts if strategies is None else strategies
        for name in names:
            account = self.accounts[name]
            for field in BALANCES:
                value = getattr(account, field)
                if value < 0:
                    raise LedgerInvariantError(f"{name}.{field} is negative: {value}")
            open_ = self.open_reservations(name)
            if account.quote_reserved != sum((r.quote_reserved for r in open_), ZERO):
                raise LedgerInvariantError(f"{name}: quote reserved {account.quote_reserved} != sum of open reservations")
            if account.base_reserved != sum((r.base_reserved for r in open_), ZERO):
                raise LedgerInvariantError(f"{name}: base reserved {account.base_reserved} != sum of open reservations")

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {**account.snapshot(), "open_reservations": len(self.open_reservations(name))}
            for name, account in self.accounts.items()
        }


def _closed(_: str, reservation: Reservation) -> bool:
    return not reservation.open


def _always(_: str, __: Reservation) -> bool:
    return True


# Field by field (attrs.evolve takes three times as long): a checkpoint copies every
# reservation in memory on the event loop. A field added to these classes belongs here,
# and in store/checkpoint.py.


def _copy_account(a: Account) -> Account:
    return Account(
        strategy=a.strategy, quote_free=a.quote_free, quote_reserved=a.quote_reserved, base_free=a.base_free,
        base_reserved=a.base_reserved, realized_pnl=a.realized_pnl, cost_basis=a.cost_basis,
        fees_paid=dict(a.fees_paid), others=dict(a.others),
    )


def _copy_reservation(r: Reservation) -> Reservation:
    return Reservation(
        client_order_id=r.client_order_id, strategy=r.strategy, side=r.side, price=r.price, amount=r.amount,
        quote_reserved=r.quote_reserved, base_reserved=r.base_reserved, unit_quote=r.unit_quote, filled=r.filled,
        trade_ids=set(r.trade_ids) if r.trade_ids else frozenset(), open=r.open, awaiting=r.awaiting,
    )


def _reservation(entry: JournalEntry) -> Reservation:
    """The reservation a ``reserve`` entry opens."""
    _, strategy, _, cid, _, side, price, amount, _, _, _, quote_reserved, _, base_reserved, _, _, _ = entry
    amount = amount or ZERO
    return Reservation(
        cid or "", strategy, side or BUY, price or ZERO, amount, quote_reserved, base_reserved,
        quote_reserved / amount if amount else ZERO,
    )


def _advance(reservation: Reservation, entry: JournalEntry) -> None:
    """What a ``settle`` or ``release`` entry does to its reservation (not to the account)."""
    reservation.quote_reserved += entry.quote_reserved
    reservation.base_reserved += entry.base_reserved
    if entry.kind == "settle":
        reservation.filled += entry.amount or ZERO
        if entry.trade_id:
            if not isinstance(reservation.trade_ids, set):
                reservation.trade_ids = set()
            reservation.trade_ids.add(entry.trade_id)
    elif entry.amount is not None and reservation.filled < entry.amount:
        reservation.awaiting = entry.amount  # ended; trades up to this still to come
    else:
        reservation.open = False


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"

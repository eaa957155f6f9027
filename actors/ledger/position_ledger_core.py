"""The ledger's messages for positions on perpetual markets: the position book as an actor uses it.

The one ledger actor holds the spot :class:`actors.ledger.core.LedgerCore` and, beside it,
this core over one :class:`actors.ledger.positions_core.PositionBook` for the strategies
on perpetual (swap) venues. Both answer one message at a time in the same actor, so a
reservation race is impossible on either side. Which core a message is for:

- :class:`PositionReserve`, :class:`FundingReport`, and an :class:`AccountQuery` of a
  strategy on a swap venue;
- a fill, cancellation, rejection or release naming an order the position book holds
  (:meth:`PositionLedgerCore.owns`).

Everything else goes to the spot core. Every change is journaled as
:class:`RecordPositionJournal` (entries and the fill rows they settle, one transaction) and
the strategy concerned hears a :class:`PositionInfo` after it, naming the trades booked,
as spot strategies hear :class:`AccountInfo`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Mapping

import attrs

from actors.ledger.positions_core import PositionBook, PositionEntry
from actors.reconciler.positions_core import (
    AdjustCollateral,
    AdoptPosition,
    BookExternalTrade,
    BookInsuranceClear,
    RestoreCollateral,
)
from actors.messages import (
    WRITER,
    LedgerSnapshot,
    AccountQuery,
    FillReport,
    FundingReport,
    LedgerRefused,
    OrderCanceled,
    OrderRejected,
    PositionInfo,
    PositionRepair,
    PositionReserve,
    RecordPositionJournal,
    Release,
    ReservationDenied,
    ReservationGranted,
    Send,
    strategy_address,
)


@attrs.frozen
class BookView:
    """What the reconciler compares of the position book: each (strategy, symbol)'s size,
    entry price and leverage, the trade and income ids booked, each strategy's wallet."""

    positions: tuple[tuple[str, str, Decimal, Decimal | None, Decimal | None], ...]
    trade_ids: frozenset[str]
    income_ids: frozenset[str]
    collateral: dict[str, Decimal]
    #: What withdrawals outside cut from each strategy's collateral, not given back yet.
    withdrawn: dict[str, Decimal] = attrs.field(factory=dict)


class PositionLedgerCore:
    """``symbols``: each swap strategy's market (one symbol per strategy); ``settlement``:
    the settlement asset of their collateral."""

    def __init__(self, symbols: Mapping[str, str], settlement: str = "USDT", book: PositionBook | None = None) -> None:
        self.symbols = dict(symbols)
        self.book = book if book is not None else PositionBook(settlement)

    @classmethod
    def from_journal(
        cls, entries: Iterable[PositionEntry], symbols: Mapping[str, str], settlement: str = "USDT"
    ) -> "PositionLedgerCore":
        return cls(symbols, settlement, PositionBook.from_journal(entries, settlement))

    def allocate(self, allocations: Mapping[str, Decimal], now: float) -> list[PositionEntry]:
        """Collateral from the config for each strategy the journal does not know yet."""
        out: list[PositionEntry] = []
        for strategy, amount in allocations.items():
            if strategy not in self.book.collateral:
                out += self.book.allocate(strategy, amount, now, "allocation from the config")
        return out

    def owns(self, message: Any) -> bool:
        if isinstance(message, (PositionReserve, FundingReport, PositionRepair)):
            return True
        if isinstance(message, AccountQuery):
            return message.strategy in self.symbols
        if isinstance(message, (FillReport, OrderCanceled, OrderRejected, Release)):
            return message.client_order_id in self.book.orders
        return False

    def handle_batch(self, messages: Iterable[Any], now: float) -> list[Send]:
        entries: list[PositionEntry] = []
        fills: list[FillReport] = []
        replies: list[Send] = []
        changed: dict[str, list[str]] = {}  # strategy -> trade ids booked, in order
        for message in messages:
            if isinstance(message, PositionReserve):
                order = message.order
                result = self.book.reserve(order, now)
                if isinstance(result, str):
                    replies.append(Send(message.reply_to, ReservationDenied(order.client_order_id, result)))
                    changed.setdefault(order.strategy, [])  # what it holds, after the denial
                    continue
                entries += result
                replies.append(Send(message.reply_to, ReservationGranted(order.client_order_id)))
                changed.setdefault(order.strategy, [])
            elif isinstance(message, AccountQuery):
                changed.setdefault(message.strategy, [])
            elif isinstance(message, PositionRepair):
                repaired = self._repair(message, now)
                if isinstance(repaired, str):
                    replies.append(Send(strategy_address(message.strategy), LedgerRefused(message.strategy, None, repaired)))
                    continue
                entries += repaired
                changed.setdefault(message.strategy, [])
            elif isinstance(message, FundingReport):
                # Booked once per income id (of its venue); funding never touches realized P&L.
                booked = self.book.funding(message.strategy, message.symbol, f"{message.venue}:funding:{message.income_id}",
                                           message.paid, message.currency, now)
                entries += booked
                if booked:
                    changed.setdefault(message.strategy, [])
            elif isinstance(message, FillReport):
                order = self.book.orders[message.client_order_id]
                settled = self.book.settle(message, now)
                if isinstance(settled, str):
                    # Nothing applied: the book is out of step with the exchange; the
                    # strategy pauses until an operator (or the reconciler) explains it.
                    fills.append(message)
                    replies.append(Send(strategy_address(order.strategy), LedgerRefused(order.strategy, message.client_order_id, settled)))
                    continue
                entries += settled
                if settled:
                    fills.append(message)
                changed.setdefault(order.strategy, []).append(message.trade_id)
            else:  # an order ended: what it still holds goes back
                order = self.book.orders[message.client_order_id]
                entries += self.book.release(message.client_order_id, message.reason, now)
                changed.setdefault(order.strategy, [])
        out = [Send(WRITER, RecordPositionJournal(tuple(entries), tuple(fills)))] if entries or fills else []
        out += replies
        out += [Send(strategy_address(s), self.info(s, tuple(ids))) for s, ids in changed.items()]
        return out

    def _repair(self, message: PositionRepair, now: float) -> list[PositionEntry] | str:
        action = message.action
        if isinstance(action, BookExternalTrade):
            t = action.trade
            symbol = self.symbols.get(action.strategy, t.symbol)
            return self.book.book_external(action.strategy, symbol, t.side, t.price, t.amount, t.fee, t.fee_currency,
                                           t.trade_id, now, action.reason)
        if isinstance(action, AdoptPosition):
            return self.book.adopt(action.strategy, action.symbol, action.size, action.entry_price, action.leverage,
                                   now, action.reason)
        if isinstance(action, AdjustCollateral):
            return self.book.adjust_collateral(action.strategy, action.delta, now, action.reason)
        if isinstance(action, RestoreCollateral):
            return self.book.restore_collateral(action.strategy, action.income_id, action.amount, action.currency, now)
        if isinstance(action, BookInsuranceClear):
            return self.book.insurance_clear(action.strategy, action.symbol, action.income_id, action.amount,
                                             action.currency, now)
        raise TypeError(f"the position book does not apply {type(action).__name__}")

    def view(self) -> BookView:
        book = self.book
        trade_ids = set(book.booked_ids)
        for order in book.orders.values():
            trade_ids |= order.trade_ids
        return BookView(
            positions=tuple((s, sym, p.size, p.entry_price, p.leverage) for (s, sym), p in book.positions.items()),
            trade_ids=frozenset(trade_ids),
            income_ids=frozenset(i for i in book.booked_ids if ":funding:" in i or ":insurance:" in i or ":transfer:" in i),
            collateral={name: a.wallet for name, a in book.collateral.items()},
            withdrawn={name: a.withdrawn for name, a in book.collateral.items() if a.withdrawn},
        )

    def with_view(self, sends: list[Send]) -> list[Send]:
        """The spot ledger's snapshots for the reconciler, with the position book's side."""
        return [Send(s.to, attrs.evolve(s.message, positions=self.view())) if isinstance(s.message, LedgerSnapshot) else s
                for s in sends]

    def info(self, strategy: str, settled: tuple[str, ...] = ()) -> PositionInfo:
        symbol = self.symbols.get(strategy, "")
        position = self.book.position(strategy, symbol)
        account = self.book.account(strategy)
        return PositionInfo(
            strategy=strategy, symbol=symbol, size=position.size, entry_price=position.entry_price,
            realized_pnl=position.realized_pnl, fees_paid=dict(position.fees_paid), funding_paid=position.funding_paid,
            margin_used=position.margin_used, wallet=account.wallet, free=account.free, settled=settled,
        )

    def snapshot(self) -> dict[str, Any]:
        return self.book.snapshot()

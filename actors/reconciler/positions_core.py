"""Reconciliation of perpetual positions: the exchange's positions, orders, trades and
income against the ledger's positions and the order book of record.

:func:`classify` compares one venue and returns every difference with the actions that
apply it, as data (:class:`SettleTrade`, :class:`BookExternalTrade`, :class:`BookFunding`,
:class:`AdoptPosition`, :class:`AdjustCollateral`, :class:`CancelProtective`,
:class:`PauseStrategy`); like the spot reconciler, it never places an order, and repairs go
through the ledger. One-way position mode: one strategy per symbol of an account (pre-flight
refuses two), so a symbol names its strategy.

| class | what it is | action |
|---|---|---|
| ``closed_by_protection`` | a trade of one of our resting take-profits or stop-losses that the ledger has not booked (it filled between two cycles, or while limitline was down) | the trade is settled through the ledger; the other orders of its OCO group are cancelled when the position is closed |
| ``liquidated`` | a trade of the exchange's forced order (liquidation or auto-deleveraging: Binance's ``autoclose-`` / ``adl_autoclose`` client ids, or an id in its force-orders list) | booked as an outside trade with that reason (protection left open: ``orphaned_protection``); the strategy **paused**: its risk limits did not hold, an operator looks before it trades again |
| | the insurance fund's clearance of the liquidated position (income ``INSURANCE_CLEAR``: what was left of its margin after the forced order's fill; positive when the fund covered a loss beyond it) | booked on the strategy's collateral, once per income id, so its wallet is the exchange's |
| ``position_changed_outside`` | the exchange's size differs from the ledger's. *Explained*: trades no order of ours made (an operator's) account for the difference | those trades are booked as outside trades (P&L realized at their prices) and the position adopted, **with an event; the strategy carries on**: the books are exact again |
| | *unexplained*: the trades in view do not account for it (history out of reach, a manual adjustment) | the exchange's size and entry are **adopted** (no cycle acts on a position that no longer exists, and a close never reserves more than is held) **and the strategy paused**: its P&L of the difference is unknown, so an operator acknowledges it first |
| | the same size at another entry price | the entry is refreshed from the exchange, with an event |
| ``margin_changed`` | the exchange's leverage for the symbol (position or not) is not the one limitline set at start (or, without that, the ledger's position's) | the strategy **paused**: the risk per position is no longer the configured one |
| | the exchange's wallet in the settlement asset is less than the strategies' collateral together (margin withdrawn outside; the account may hold more than is allocated, so only a shortfall counts), or a transfer in the income history added margin | withdrawn: with one strategy on the account its collateral is cut by the shortfall, with the reason (its next open is denied by the ledger, naming the margin); with several it cannot be attributed: all are **paused**. Added: gives the one strategy an earlier withdrawal cut back up to the cut (:class:`RestoreCollateral`, once per transfer, never more than was cut); otherwise an event only (allocation is explicit configuration), the transfer booked as seen so that it never gives back a later cut |
| ``funding`` | a funding payment in the income history that the ledger has not booked | booked as its own entry (never in realized P&L) |
| ``orphaned_protection`` | a protective order still open while the exchange holds no position | cancelled (conditional orders outlive positions; a symbol has few slots) |

A symbol's size is judged only once the trades of our own entry and close orders are
booked (the spot reconciler's ``missed_fill`` repairs those), and balances only in a cycle
that repairs no trade and no funding (a difference being booked is never also reported as
an unexplained one). :func:`classify` judges one snapshot; the two-cycle rule of
:class:`actors.reconciler.core.ReconcilerCore` (a difference counts only when two
consecutive cycles show it) applies to its differences as to the spot ones:
:func:`compare_positions` is what ``on_cycle`` runs for a venue whose snapshot carries
positions (the simulated perpetuals account in shadow mode).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping, Union

import attrs

from actors.messages import (
    LEDGER,
    CancelOrder,
    ExchangeSnapshot,
    FillReport,
    FundingReport,
    LedgerSnapshot,
    Pause,
    PositionRepair,
    Send,
    connection_address,
    strategy_address,
)
from actors.orders import Order
from actors.reconciler.core import Difference
from exchange.records import ExchangeOrder, ExchangeTrade, Side

ZERO = Decimal(0)
#: Amounts closer than this are equal (ccxt hands them over as floats).
TOLERANCE = Decimal("0.00000001")
#: Client order id prefixes of Binance's forced orders (liquidation, auto-deleveraging).
FORCED_PREFIXES = ("autoclose-", "adl_autoclose")


# ------------------------------------------------------------- inputs


@attrs.frozen
class ExchangePosition:
    """One position as the exchange lists it (``fetch_positions``): signed size in base units."""

    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: Decimal | None = None


@attrs.frozen
class ExchangeIncome:
    """One entry of the exchange's income history (``/fapi/v1/income``): ``amount`` as the
    exchange gives it, positive when the account received it."""

    income_id: str
    symbol: str
    kind: str  # FUNDING_FEE | TRANSFER | REALIZED_PNL | COMMISSION | INSURANCE_CLEAR | ...
    amount: Decimal
    asset: str
    at: float = 0.0


@attrs.frozen
class PositionsSnapshot:
    """What the connection reports of one derivatives account."""

    venue: str
    positions: tuple[ExchangePosition, ...]
    #: Regular and conditional (trigger) orders open on the exchange.
    open_orders: tuple[ExchangeOrder, ...]
    trades: tuple[ExchangeTrade, ...]
    income: tuple[ExchangeIncome, ...]
    #: The account's wallet balance in the settlement asset (``totalWalletBalance``).
    wallet: Decimal
    at: float
    #: Exchange order ids of the account's forced orders (``fetch_my_liquidations``).
    forced_order_ids: frozenset[str] = frozenset()
    #: The leverage the exchange holds per symbol, position or not (Binance:
    #: ``/fapi/v1/symbolConfig``; its ``/fapi/v3/positionRisk`` carries none).
    leverage: Mapping[str, Decimal] = attrs.field(factory=dict)
    #: The leverage limitline set per symbol at start (what its reservations use).
    leverage_set: Mapping[str, Decimal] = attrs.field(factory=dict)


@attrs.frozen
class BookedPosition:
    """The ledger's position of one strategy on one symbol."""

    strategy: str
    symbol: str
    size: Decimal
    entry_price: Decimal | None
    leverage: Decimal | None


@attrs.frozen
class ProtectiveRecord:
    """One protective order of record. ``exchange_order_ids``: every id the exchange knows
    it by (Binance: the algo id, and once triggered the child order's ``actualOrderId``)."""

    client_order_id: str
    strategy: str
    symbol: str
    role: str  # take_profit | stop_loss | escalation
    group: str
    exchange_order_ids: frozenset[str]
    open: bool = True


@attrs.frozen
class PositionsRecord:
    """What the ledger and the order book of record say about one account."""

    positions: tuple[BookedPosition, ...]
    protective: tuple[ProtectiveRecord, ...]
    #: Exchange order ids of our other (entry, close) orders: their trades are missed
    #: fills, repaired by the spot reconciler's ``missed_fill``; here they explain a size.
    own_order_ids: frozenset[str]
    booked_trade_ids: frozenset[str]
    booked_income_ids: frozenset[str]
    #: Each strategy's collateral (wallet) in the ledger.
    collateral: Mapping[str, Decimal]
    #: What withdrawals outside cut from each strategy's collateral, not given back yet.
    withdrawn: Mapping[str, Decimal] = attrs.field(factory=dict)


# ------------------------------------------------------------ actions


@attrs.frozen
class SettleTrade:
    """Book a trade of one of our orders (the ledger's ``settle``)."""

    strategy: str
    client_order_id: str
    trade: ExchangeTrade


@attrs.frozen
class BookExternalTrade:
    """Book a trade no order of ours made (the ledger's ``book_external``)."""

    strategy: str
    trade: ExchangeTrade
    reason: str


@attrs.frozen
class BookFunding:
    strategy: str
    symbol: str
    income_id: str
    #: Positive: paid by the strategy (the exchange's amount, negated).
    paid: Decimal
    currency: str


@attrs.frozen
class AdoptPosition:
    strategy: str
    symbol: str
    size: Decimal
    entry_price: Decimal
    leverage: Decimal
    reason: str


@attrs.frozen
class AdjustCollateral:
    strategy: str
    delta: Decimal
    reason: str


@attrs.frozen
class RestoreCollateral:
    """A transfer into the account (``amount`` > 0, income ``income_id``) gives back up to
    what earlier withdrawals cut from the strategy's collateral (the ledger's
    ``restore_collateral``), booked once per income id."""

    strategy: str
    income_id: str
    amount: Decimal
    currency: str
    reason: str


@attrs.frozen
class BookInsuranceClear:
    """The insurance fund's clearance after a liquidation: ``amount`` as the exchange's
    income lists it (negative: taken from the strategy's collateral), booked once per id."""

    strategy: str
    symbol: str
    income_id: str
    amount: Decimal
    currency: str


@attrs.frozen
class CancelProtective:
    strategy: str
    client_order_id: str
    reason: str


@attrs.frozen
class PauseStrategy:
    strategy: str
    reason: str


PositionAction = Union[SettleTrade, BookExternalTrade, BookFunding, BookInsuranceClear, AdoptPosition, AdjustCollateral,
                       RestoreCollateral, CancelProtective, PauseStrategy]


# ------------------------------------------------------------ compare


def _signed(trade: ExchangeTrade) -> Decimal:
    return trade.amount if trade.side is Side.BUY else -trade.amount


def _forced(trade: ExchangeTrade, snapshot: PositionsSnapshot) -> bool:
    return trade.exchange_order_id in snapshot.forced_order_ids or trade.client_order_id.startswith(FORCED_PREFIXES)


def classify(
    record: PositionsRecord, exchange: PositionsSnapshot, strategy_of: Mapping[str, str],
    settlement: str = "USDT",
) -> list[tuple[Difference, list[PositionAction]]]:
    """Every difference on one derivatives account, each with the actions that apply it.
    ``strategy_of``: symbol -> the strategy trading it on this account."""
    venue = exchange.venue
    out: list[tuple[Difference, list[PositionAction]]] = []
    booked = {p.symbol: p for p in record.positions}
    listed = {p.symbol: p for p in exchange.positions if p.size}
    protective_by_id = {eid: p for p in record.protective for eid in p.exchange_order_ids}
    open_ids = {o.exchange_order_id for o in exchange.open_orders} | {o.client_order_id for o in exchange.open_orders}
    repairs = False

    for symbol in sorted(set(booked) | set(listed) | set(strategy_of)):
        strategy = strategy_of.get(symbol) or (booked[symbol].strategy if symbol in booked else None)
        ours = booked.get(symbol)
        theirs = listed.get(symbol)
        size = ours.size if ours else ZERO
        truth = theirs.size if theirs else ZERO
        if strategy is None:
            if theirs is not None:
                out.append((Difference("position_changed_outside", venue, symbol, None,
                                       f"{symbol}: a position of {truth} that no strategy trades (not ours)"), []))
            continue
        new = [t for t in exchange.trades if t.symbol == symbol and t.trade_id not in record.booked_trade_ids]
        new.sort(key=lambda t: (t.at, t.trade_id))
        expected = size
        outside: list[ExchangeTrade] = []
        flat = not truth
        for trade in new:
            expected += _signed(trade)
            protective = protective_by_id.get(trade.exchange_order_id)
            if protective is not None:
                repairs = True
                siblings = [
                    CancelProtective(strategy, p.client_order_id, f"one cancels the other: {protective.role} "
                                     f"{protective.client_order_id} closed the position")
                    for p in record.protective
                    if flat and p.open and p.group == protective.group and p.client_order_id != protective.client_order_id
                    and (p.client_order_id in open_ids or p.exchange_order_ids & open_ids)
                ]
                out.append((
                    Difference("closed_by_protection", venue, trade.trade_id, strategy,
                               f"{protective.role} {protective.client_order_id} traded {trade.side.value} {trade.amount} "
                               f"{symbol} @ {trade.price} between two cycles"),
                    [SettleTrade(strategy, protective.client_order_id, trade), *siblings],
                ))
            elif _forced(trade, exchange):
                repairs = True
                out.append((
                    Difference("liquidated", venue, trade.trade_id, strategy,
                               f"the exchange's forced order {trade.exchange_order_id} traded {trade.side.value} "
                               f"{trade.amount} {symbol} @ {trade.price}"),
                    [BookExternalTrade(strategy, trade, "liquidated by the exchange"),
                     PauseStrategy(strategy, f"{symbol} was liquidated by the exchange at {trade.price}: "
                                             "its risk limits did not hold; resume after review")],
                ))
            elif trade.exchange_order_id not in record.own_order_ids:
                outside.append(trade)
        if outside:
            repairs = True
            detail = ", ".join(f"{t.side.value} {t.amount} @ {t.price}" for t in outside)
            whole = "; they explain the exchange's position, adopted" if abs(expected - truth) <= TOLERANCE else ""
            out.append((
                Difference("position_changed_outside", venue, f"{symbol}:" + ",".join(t.trade_id for t in outside),
                           strategy, f"{symbol}: trades outside limitline ({detail}) booked{whole}"),
                [BookExternalTrade(strategy, t, "traded outside limitline") for t in outside],
            ))
        if any(t.exchange_order_id in record.own_order_ids for t in new):
            continue  # our own orders' trades are being repaired (missed_fill): judged after
        if abs(expected - truth) > TOLERANCE:
            leverage = (theirs.leverage if theirs and theirs.leverage else None) or (ours.leverage if ours else None) or Decimal(1)
            entry = theirs.entry_price if theirs else ZERO
            reason = (f"{symbol}: the exchange holds {truth}, the ledger {size}"
                      + (f" and the trades in view {expected - size:+}" if new else "")
                      + ": unexplained; the exchange's position is adopted and the strategy paused")
            out.append((
                Difference("position_changed_outside", venue, f"{symbol}:{truth}:{expected}", strategy, reason),
                [AdoptPosition(strategy, symbol, truth, entry, leverage, reason), PauseStrategy(strategy, reason)],
            ))
        elif theirs is not None and ours is not None and not new and ours.entry_price is not None \
                and abs(ours.entry_price - theirs.entry_price) > TOLERANCE * max(theirs.entry_price, Decimal(1)):
            leverage = theirs.leverage or ours.leverage or Decimal(1)
            reason = f"{symbol}: entry {ours.entry_price} in the ledger, {theirs.entry_price} on the exchange: refreshed"
            out.append((
                Difference("position_changed_outside", venue, f"{symbol}:entry:{theirs.entry_price}", strategy, reason),
                [AdoptPosition(strategy, symbol, truth, theirs.entry_price, leverage, reason)],
            ))
        held = exchange.leverage.get(symbol) or (theirs.leverage if theirs is not None else None)
        wanted = exchange.leverage_set.get(symbol) or (ours.leverage if ours is not None else None)
        if held is not None and wanted is not None and held != wanted:
            reason = (f"{symbol}: leverage changed outside limitline: {wanted} set by limitline, "
                      f"{held} on the exchange; paused until an operator resumes (restarting limitline sets "
                      f"{wanted} again)")
            out.append((Difference("margin_changed", venue, f"{symbol}:leverage:{held}", strategy, reason),
                        [PauseStrategy(strategy, reason)]))
        if flat:
            covered = {a.client_order_id for _, actions in out for a in actions if isinstance(a, CancelProtective)}
            for p in record.protective:
                if p.symbol != symbol or not p.open or p.client_order_id in covered:
                    continue
                if p.client_order_id in open_ids or p.exchange_order_ids & open_ids:
                    out.append((
                        Difference("orphaned_protection", venue, p.client_order_id, strategy,
                                   f"{p.role} {p.client_order_id} is open on {symbol} where the exchange holds no position"),
                        [CancelProtective(strategy, p.client_order_id, "no position left to protect")],
                    ))

    for income in sorted(exchange.income, key=lambda i: (i.at, i.income_id)):
        if income.kind != "FUNDING_FEE" or income.income_id in record.booked_income_ids:
            continue
        strategy = strategy_of.get(income.symbol)
        if strategy is None:
            continue
        repairs = True
        out.append((
            Difference("funding", venue, income.income_id, strategy,
                       f"funding {income.amount:+} {income.asset} on {income.symbol}"),
            [BookFunding(strategy, income.symbol, income.income_id, -income.amount, income.asset)],
        ))

    for income in sorted(exchange.income, key=lambda i: (i.at, i.income_id)):
        if income.kind != "INSURANCE_CLEAR" or income.income_id in record.booked_income_ids:
            continue
        strategy = strategy_of.get(income.symbol)
        if strategy is None:
            continue
        repairs = True
        out.append((
            Difference("liquidated", venue, f"insurance:{income.income_id}", strategy,
                       f"the insurance fund cleared {income.amount:+} {income.asset} of the liquidated {income.symbol} "
                       "position's margin"),
            [BookInsuranceClear(strategy, income.symbol, income.income_id, income.amount, income.asset)],
        ))

    strategies = sorted(set(strategy_of.values()))
    cut = [s for s in strategies if record.withdrawn.get(s, ZERO) > 0]
    for income in sorted(exchange.income, key=lambda i: (i.at, i.income_id)):
        if (income.kind != "TRANSFER" or income.amount <= 0 or income.asset != settlement
                or income.income_id in record.booked_income_ids):
            continue
        if len(cut) == 1:  # the one strategy a withdrawal was charged to gets it back, up to the cut
            strategy = cut[0]
            detail = (f"margin added outside limitline: {income.amount} {income.asset}; gives {strategy} back up to "
                      f"{record.withdrawn[strategy]} {income.asset} an earlier withdrawal cut from its collateral")
        else:
            strategy = strategies[0] if strategies else None
            detail = (f"margin added outside limitline: {income.amount} {income.asset}; not allocated to any strategy"
                      + ("; the earlier cuts of several strategies cannot be attributed" if cut else ""))
        if strategy is None:
            out.append((Difference("margin_changed", venue, income.income_id, None, detail), []))
            continue
        # Booked once, even with nothing to give back (seen: it never gives back a later cut).
        repairs = True
        out.append((Difference("margin_changed", venue, income.income_id, strategy if len(cut) == 1 else None, detail),
                    [RestoreCollateral(strategy, income.income_id, income.amount, income.asset, detail)]))
    if repairs:
        return out  # the wallet is judged once what is being repaired is booked
    ours_total = sum((record.collateral.get(s, ZERO) for s in strategies), ZERO)
    gap = exchange.wallet - ours_total
    if gap < -TOLERANCE:
        transfers = [i.income_id for i in exchange.income if i.kind == "TRANSFER" and i.amount < 0]
        reason = (f"margin withdrawn outside limitline: {venue} holds {exchange.wallet} {settlement}, the strategies "
                  f"{ours_total} {settlement}" + (f" (transfers {', '.join(transfers)})" if transfers else ""))
        holders = [s for s in strategies if record.collateral.get(s, ZERO) > 0]
        if len(holders) == 1:
            actions = [AdjustCollateral(holders[0], gap, reason)]
        else:
            actions = [PauseStrategy(s, reason + "; it cannot be attributed to one strategy") for s in holders]
        out.append((Difference("margin_changed", venue, f"{settlement}:{exchange.wallet}:{ours_total}", None, reason), actions))
    return out


# ------------------------------------------------------------- wiring


def compare_positions(
    orders: tuple[Order, ...], exchange: ExchangeSnapshot, ledger: LedgerSnapshot,
    perpetuals: Mapping[str, tuple[str, str]],
) -> list[tuple[Difference, list[Send]]]:
    """:func:`classify` as the reconciler actor runs it each cycle: the connection's
    derivatives snapshot (``exchange.positions``), the ledger's position book
    (``ledger.positions``) and the orders of record (a protective order's rule names its
    role and OCO group: ``protection:stop_loss@p1``); each action becomes the messages that
    apply it. ``perpetuals``: each strategy of positions -> (venue, symbol)."""
    snapshot, view = exchange.positions, ledger.positions
    venue = exchange.venue
    strategy_of = {symbol: name for name, (v, symbol) in perpetuals.items() if v == venue}
    if snapshot is None or view is None or not strategy_of:
        return []
    here = set(strategy_of.values())
    protective, own = [], set()
    for order in orders:
        role, at, group = order.rule.removeprefix("protection:").partition("@")
        ids = frozenset({order.exchange_order_id}) if order.exchange_order_id else frozenset()
        if order.rule.startswith("protection:") and at:
            protective.append(ProtectiveRecord(order.client_order_id, order.strategy, order.symbol, role, group, ids,
                                               open=not order.state.is_final))
        else:
            own |= ids
    prefixes = (f"{venue}:funding:", f"{venue}:insurance:", f"{venue}:transfer:")
    record = PositionsRecord(
        positions=tuple(BookedPosition(s, sym, size, entry, lev) for s, sym, size, entry, lev in view.positions if s in here),
        protective=tuple(protective),
        own_order_ids=frozenset(own),
        booked_trade_ids=view.trade_ids,
        booked_income_ids=frozenset(i.split(":", 2)[2] for i in view.income_ids if i.startswith(prefixes)),
        collateral={s: w for s, w in view.collateral.items() if s in here},
        withdrawn={s: w for s, w in view.withdrawn.items() if s in here},
    )
    settlement = next(iter(exchange.balances), "USDT")
    return [(difference, [send for action in actions for send in _sends(action, exchange)])
            for difference, actions in classify(record, snapshot, strategy_of, settlement)]


def _sends(action: PositionAction, exchange: ExchangeSnapshot) -> list[Send]:
    venue = exchange.venue
    if isinstance(action, SettleTrade):
        t = action.trade
        report = FillReport(venue, action.client_order_id, t.exchange_order_id, t.trade_id, t.symbol, t.side, t.price,
                            t.amount, t.fee, t.fee_currency, exchange.at, False)
        return [Send(LEDGER, report), Send(strategy_address(action.strategy), report)]
    if isinstance(action, (BookExternalTrade, AdoptPosition, AdjustCollateral)):
        return [Send(LEDGER, PositionRepair(action.strategy, action))]
    if isinstance(action, RestoreCollateral):
        return [Send(LEDGER, PositionRepair(action.strategy, attrs.evolve(action, income_id=f"{venue}:transfer:{action.income_id}")))]
    if isinstance(action, BookInsuranceClear):
        # Named by venue as funding is: income ids are per account.
        return [Send(LEDGER, PositionRepair(action.strategy, attrs.evolve(action, income_id=f"{venue}:insurance:{action.income_id}")))]
    if isinstance(action, BookFunding):
        return [Send(LEDGER, FundingReport(venue, action.strategy, action.symbol, action.income_id, action.paid,
                                           action.currency, exchange.at))]
    if isinstance(action, CancelProtective):
        return [Send(connection_address(venue), CancelOrder(action.client_order_id, action.strategy, action.reason))]
    return [Send(strategy_address(action.strategy), Pause(action.strategy, action.reason))]

"""Positions in USD-M linear perpetuals, per strategy and symbol: the ledger's rules for them.

A strategy on a perpetual market holds *collateral* in the settlement asset (USDT) and, per
symbol, a *position*: a signed size in base units (positive long, negative short), its
entry cost (size x average entry price, signed like the size), the realized P&L of what it
closed, the fees and funding it paid and the initial margin it uses.

Every operation is decided as a list of :class:`PositionEntry` deltas and applied with
:meth:`PositionBook.apply`, the one function that also rebuilds the book from its journal:
the book is always the fold of its entries, in order.

The rules (units: sizes in base units, money in the settlement asset):

- **A fill settles at its actual price and fee.** An opening fill adds
  ``size x price`` to the entry cost and ``size x price / leverage`` to the margin used. A
  reducing fill of ``q`` realizes ``(price - entry) x q x sign(position)``, computed as
  ``sign x q x price - cost_out`` where ``cost_out`` is the closed share of the entry cost
  (all of it when the position closes); the margin used shrinks by the same share. A fill
  that crosses zero (a flip in one fill) is a reduce of the whole position and an open of
  the rest, at the same price.
- **Realized P&L is gross of fees**, as Binance's ``realizedPnl`` of a trade is; fees are
  kept per currency beside it. A fee in the settlement asset comes out of the wallet; a
  fee in another currency (BNB) is recorded, not converted.
- **Funding** is an entry of its own: ``paid`` positive is paid by the strategy, negative
  received; it moves the wallet, never the realized P&L.
- **Unrealized P&L** (``size x mark - entry cost``) is computed from a mark price on
  request, never booked.
- **An open reserves initial margin** before anything is sent: ``price x amount /
  leverage + price x amount x worst fee rate``, out of the strategy's free collateral
  (``wallet - margin reserved - margin used``, less the unrealized losses at the marks
  given). A fill releases its share of it; the end of the order releases the rest.
- **A close (reduce-only) reserves the position it reduces**, never more than is held and
  not yet reserved by another close. The reduce-only orders of one OCO group share one
  reservation: the largest rest of the group's open orders, never more than is held
  beside the other groups. A position's group is its take-profit and stop-loss (only one
  of them fills), their replacements while a resize is under way, and a close the
  strategy sends while they rest: whatever of them fills, the exchange's reduce-only rule
  lets them close no more than is held together. A close's fee is taken from the wallet when it fills (the
  margin the close frees covers it); a close never needs free collateral, so a strategy
  can always reduce its risk.
- **Collateral moved outside** (the reconciler's ``margin_changed``): a withdrawal the
  strategy alone bears cuts its wallet by the shortfall (:meth:`PositionBook.adjust_collateral`);
  the cut is remembered (:attr:`Collateral.withdrawn`), and a later transfer into the
  account gives it back, up to what was cut and once per transfer
  (:meth:`PositionBook.restore_collateral`), so the collateral never exceeds what the
  allocation and the strategy's own P&L make it.
- Shares of the cost and the margin are rounded to :data:`QUANTUM`; the residue stays in
  the position (the closing fill takes all of it), so realized plus unrealized P&L equals
  the trades' cash flow exactly.

A reduce-only fill larger than the position cannot happen on the exchange (it trims or
rejects it): such an entry is refused whole, with its reason, and nothing is applied (the
book is then out of step with the exchange; the reconciler's business).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Mapping

import attrs

from actors.messages import FillReport, PositionOrderRequest
from exchange.records import Side

ZERO = Decimal(0)
#: Shares of the entry cost and of the margin are kept to this many decimals of the
#: settlement asset: exact sums of 12-decimal values stay inside Decimal's 28 digits.
QUANTUM = Decimal("1e-12")
ENTRY_KINDS = ("allocate", "adjust", "reserve", "fill", "release", "trim", "funding", "adopt")


def _q(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, ROUND_HALF_EVEN)


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def _signed(side: Side, amount: Decimal) -> Decimal:
    return amount if side is Side.BUY else -amount


class PositionInvariantError(Exception):
    """The book broke an invariant: a bug (entries are checked before they apply)."""


@attrs.frozen
class PositionEntry:
    """One movement of the position book; the book is the fold of these, in order.

    ``kind``: ``allocate`` / ``adjust`` (collateral given, or changed outside with a
    reason), ``reserve`` (an order's margin or closing size), ``fill`` (a trade settled),
    ``release`` (an order ended: what it still held), ``trim`` (a close's reservation cut
    to what is still held), ``funding`` (a funding payment), ``adopt`` (the position set to
    the exchange's, with a reason). Deltas are signed changes; facts (price, amount, fee,
    ids) say why.
    """

    kind: str
    strategy: str
    at: float
    symbol: str | None = None
    client_order_id: str | None = None
    #: The exchange's trade id (a fill) or income id (funding): booked once.
    trade_id: str | None = None
    side: Side | None = None
    price: Decimal | None = None
    amount: Decimal | None = None
    reduce_only: bool = False
    leverage: Decimal | None = None
    #: Close orders that share one size reservation (a take-profit and its stop-loss).
    oco_group: str | None = None
    fee: Decimal = ZERO
    fee_currency: str | None = None
    wallet: Decimal = ZERO
    margin_reserved: Decimal = ZERO
    margin_used: Decimal = ZERO
    size: Decimal = ZERO
    entry_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    funding: Decimal = ZERO
    size_reserved: Decimal = ZERO
    reason: str = ""


@attrs.define
class Position:
    strategy: str
    symbol: str
    size: Decimal = ZERO
    entry_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: dict[str, Decimal] = attrs.Factory(dict)
    funding_paid: Decimal = ZERO
    margin_used: Decimal = ZERO
    leverage: Decimal | None = None
    #: Size held by open closes (unsigned), and per OCO group (or lone close order).
    size_reserved: Decimal = ZERO
    groups: dict[str, Decimal] = attrs.Factory(dict)

    @property
    def entry_price(self) -> Decimal | None:
        """Average entry price of the open size, or None when flat."""
        return self.entry_cost / self.size if self.size else None

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        """``size x mark - entry cost``: shown, never booked."""
        return self.size * mark - self.entry_cost

    def snapshot(self) -> dict[str, Any]:
        entry = self.entry_price
        return {
            "size": str(self.size), "entry_price": None if entry is None else str(entry),
            "entry_cost": str(self.entry_cost), "realized_pnl": str(self.realized_pnl),
            "fees_paid": {k: str(v) for k, v in sorted(self.fees_paid.items())},
            "funding_paid": str(self.funding_paid), "margin_used": str(self.margin_used),
            "leverage": None if self.leverage is None else str(self.leverage),
            "size_reserved": str(self.size_reserved),
        }


@attrs.define
class Collateral:
    """A strategy's collateral in the settlement asset."""

    strategy: str
    #: Allocation + realized P&L - fees (settlement asset) - funding + adjustments.
    wallet: Decimal = ZERO
    margin_reserved: Decimal = ZERO
    margin_used: Decimal = ZERO
    #: What withdrawals outside limitline cut from the wallet and transfers in have not
    #: given back yet (adjustments without a symbol: a cut adds to it, a restoration takes).
    withdrawn: Decimal = ZERO

    @property
    def free(self) -> Decimal:
        return self.wallet - self.margin_reserved - self.margin_used


@attrs.define
class PositionOrder:
    """What one order of ours holds reserved."""

    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    reduce_only: bool
    leverage: Decimal
    group: str
    margin_reserved: Decimal = ZERO
    #: Margin reserved per unit of amount when the order was reserved.
    unit_margin: Decimal = ZERO
    filled: Decimal = ZERO
    trade_ids: set[str] = attrs.Factory(set)
    open: bool = True

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


class PositionBook:
    """Collateral, positions and the reservations of perpetual orders, per strategy.

    Methods decide entries, apply them and return them (to be journaled); a denial or a
    refusal is a string with its reason and changes nothing.
    """

    def __init__(self, settlement: str = "USDT") -> None:
        self.settlement = settlement
        self.collateral: dict[str, Collateral] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.orders: dict[str, PositionOrder] = {}
        #: Trade ids booked without an order of ours (external, liquidation), and funding ids.
        self.booked_ids: set[str] = set()
        #: The open closes of each (strategy, symbol, group): what a group's reservation
        #: follows (kept as an index: every order ever made stays in ``orders``).
        self._closing: dict[tuple[str, str, str], dict[str, PositionOrder]] = {}

    @classmethod
    def from_journal(cls, entries: Iterable[PositionEntry], settlement: str = "USDT") -> "PositionBook":
        book = cls(settlement)
        for entry in entries:
            book.apply(entry)
        return book

    # ----------------------------------------------------------- queries

    def position(self, strategy: str, symbol: str) -> Position:
        return self.positions.get((strategy, symbol)) or Position(strategy, symbol)

    def account(self, strategy: str) -> Collateral:
        return self.collateral.get(strategy) or Collateral(strategy)

    def unrealized_pnl(self, strategy: str, marks: Mapping[str, Decimal]) -> Decimal:
        """The strategy's unrealized P&L at ``marks`` (symbol -> mark price)."""
        return sum(
            (p.unrealized_pnl(marks[s]) for (name, s), p in self.positions.items() if name == strategy and p.size and s in marks),
            ZERO,
        )

    def open_orders(self, strategy: str | None = None) -> list[PositionOrder]:
        return [o for o in self.orders.values() if o.open and (strategy is None or o.strategy == strategy)]

    # -------------------------------------------------------- operations

    def allocate(self, strategy: str, amount: Decimal, now: float, reason: str) -> list[PositionEntry]:
        """Give ``strategy`` collateral of its own (settlement asset)."""
        if amount < 0:
            raise ValueError(f"allocation of {strategy} must not be negative, got {amount}")
        return self._do([PositionEntry("allocate", strategy, now, wallet=amount, reason=reason)])

    def adjust_collateral(self, strategy: str, delta: Decimal, now: float, reason: str) -> list[PositionEntry] | str:
        """Collateral changed outside limitline (margin withdrawn or added): adopt it, with
        its reason. Refused when it would leave the wallet negative."""
        if not reason:
            return "a collateral adjustment needs a reason"
        wallet = self.account(strategy).wallet
        if wallet + delta < 0:
            return f"adjustment {delta:+} would leave {strategy}'s wallet at {wallet + delta}"
        return self._do([PositionEntry("adjust", strategy, now, wallet=delta, reason=reason)])

    def restore_collateral(
        self, strategy: str, income_id: str, amount: Decimal, currency: str, now: float
    ) -> list[PositionEntry] | str:
        """A transfer into the account (``amount`` > 0, the exchange's income ``income_id``)
        gives back what earlier withdrawals cut from ``strategy``'s collateral, up to
        :attr:`Collateral.withdrawn`: never more than was cut, so never above what the
        allocation and the strategy's own P&L make it. Once per income id; a transfer with
        nothing to give back is booked at 0 (seen: it cannot restore a later cut)."""
        if income_id in self.booked_ids:
            return []
        if currency != self.settlement:
            return f"transfer {income_id} is in {currency}, the collateral in {self.settlement}"
        if amount <= 0:
            return f"transfer {income_id} of {amount} is not a transfer in"
        restored = min(amount, self.account(strategy).withdrawn)
        reason = (f"transfer in of {amount} {currency}: restores {restored} {currency} cut by an earlier withdrawal"
                  if restored else f"transfer in of {amount} {currency}: nothing cut to restore; not allocated")
        return self._do([PositionEntry("adjust", strategy, now, trade_id=income_id, amount=amount,
                                       fee_currency=currency, wallet=restored, reason=reason)])

    def reserve(
        self, request: PositionOrderRequest, now: float, marks: Mapping[str, Decimal] | None = None
    ) -> list[PositionEntry] | str:
        """Reserve for one order, or say why not. ``marks``: mark prices; the unrealized
        losses of the strategy's positions at them are not free collateral."""
        if request.strategy not in self.collateral:
            return f"no allocation: strategy {request.strategy} has no collateral in the ledger"
        if request.client_order_id in self.orders:
            return f"duplicate client order id {request.client_order_id}"
        if request.price <= 0 or request.amount <= 0:
            return f"price and amount must be greater than 0, got {request.price} x {request.amount}"
        if request.leverage <= 0:
            return f"leverage must be greater than 0, got {request.leverage}"
        common: dict[str, Any] = dict(
            symbol=request.symbol, client_order_id=request.client_order_id, side=request.side, price=request.price,
            amount=request.amount, reduce_only=request.reduce_only, leverage=request.leverage,
            oco_group=request.oco_group,
        )
        position = self.position(request.strategy, request.symbol)
        if request.reduce_only:
            if not position.size:
                return f"nothing to close: no position in {request.symbol}"
            if _sign(_signed(request.side, request.amount)) == _sign(position.size):
                held = "long" if position.size > 0 else "short"
                return f"a reduce-only {request.side.value} cannot close a {held} position in {request.symbol}"
            group = request.oco_group or request.client_order_id
            was = position.groups.get(group, ZERO)
            free = abs(position.size) - (position.size_reserved - was)
            if request.amount > free:
                return (
                    f"close too large: {request.amount} {request.symbol} to close, {free} of the "
                    f"{abs(position.size)} held is not already being closed"
                    + (f" (a close while protection rests joins its group: {', '.join(sorted(position.groups))})"
                       if position.groups else "")
                )
            # A replacement joins its group before the old order is cancelled: the group
            # holds the largest rest of its orders, never more than is held beside the others.
            members = self._members(request.strategy, request.symbol, group)
            wanted = min(max([request.amount] + [o.remaining for o in members]), free)
            entry = PositionEntry("reserve", request.strategy, now, size_reserved=wanted - was, **common)
            return self._do([entry])
        notional = request.price * request.amount
        needs = (notional / request.leverage + notional * request.fee_rate).quantize(QUANTUM, ROUND_CEILING)
        account = self.account(request.strategy)
        free = account.free + min(self.unrealized_pnl(request.strategy, marks or {}), ZERO)
        if needs > free:
            return (
                f"insufficient margin: needs {_money(needs)} {self.settlement} "
                f"(notional {_money(notional)} / leverage {request.leverage} + worst fee), "
                f"free {_money(free)} {self.settlement}"
            )
        return self._do([PositionEntry("reserve", request.strategy, now, margin_reserved=needs, **common)])

    def settle(self, fill: FillReport, now: float) -> list[PositionEntry] | str:
        """Book one trade of one of our orders at its actual price and fee. A duplicate
        (same trade id) books nothing; a trade of an order we do not hold is not ours
        (the reconciler classifies it)."""
        order = self.orders.get(fill.client_order_id)
        if order is None or fill.trade_id in order.trade_ids:
            return []
        if fill.side is not order.side:
            return f"fill {fill.trade_id} is a {fill.side.value}, order {order.client_order_id} a {order.side.value}"
        complete = fill.order_complete or order.filled + fill.amount >= order.amount
        released = order.margin_reserved if complete else min(order.margin_reserved, _q(order.unit_margin * fill.amount))
        entry = self._fill_entry(
            order.strategy, order.symbol, order.side, fill.price, fill.amount, fill.fee, fill.fee_currency, now,
            leverage=order.leverage, reduce_only=order.reduce_only, trade_id=fill.trade_id,
            client_order_id=order.client_order_id, margin_released=released,
        )
        if isinstance(entry, str):
            return entry
        entries = self._do([entry])
        if complete and self.orders[order.client_order_id].open:
            entries += self.release(order.client_order_id, "filled", now)
        entries += self._regroup(order.strategy, order.symbol, order.group, now)
        entries += self._trim(order.strategy, order.symbol, now)
        return entries

    def book_external(
        self, strategy: str, symbol: str, side: Side, price: Decimal, amount: Decimal, fee: Decimal,
        fee_currency: str, trade_id: str, now: float, reason: str, leverage: Decimal | None = None,
    ) -> list[PositionEntry] | str:
        """Book a trade of the strategy's position that no order of ours made (an operator's
        close, a liquidation), with its reason. Once per trade id."""
        if trade_id in self.booked_ids:
            return []
        lev = leverage or self.position(strategy, symbol).leverage or Decimal(1)
        entry = self._fill_entry(strategy, symbol, side, price, amount, fee, fee_currency, now, leverage=lev,
                                 reduce_only=False, trade_id=trade_id, client_order_id=None, reason=reason)
        if isinstance(entry, str):
            return entry
        return self._do([entry]) + self._trim(strategy, symbol, now)

    def release(self, client_order_id: str, reason: str, now: float) -> list[PositionEntry]:
        """The order can fill no further (cancelled, expired, rejected, filled): give back
        the margin it still holds and its share of a close reservation."""
        order = self.orders.get(client_order_id)
        if order is None or not order.open:
            return []
        entries = self._do([PositionEntry(
            "release", order.strategy, now, symbol=order.symbol, client_order_id=client_order_id, side=order.side,
            margin_reserved=-order.margin_reserved, reason=reason,
        )])
        return entries + self._regroup(order.strategy, order.symbol, order.group, now)

    def funding(
        self, strategy: str, symbol: str, income_id: str, paid: Decimal, currency: str, now: float
    ) -> list[PositionEntry]:
        """A funding payment (the exchange's income history): ``paid`` positive is paid by
        the strategy, negative received. Once per income id."""
        if income_id in self.booked_ids:
            return []
        wallet = -paid if currency == self.settlement else ZERO
        return self._do([PositionEntry(
            "funding", strategy, now, symbol=symbol, trade_id=income_id, amount=paid, fee_currency=currency,
            wallet=wallet, funding=paid, reason="funding",
        )])

    def insurance_clear(
        self, strategy: str, symbol: str, income_id: str, amount: Decimal, currency: str, now: float
    ) -> list[PositionEntry] | str:
        """The exchange's insurance fund took (``amount`` < 0) what was left of a liquidated
        position's margin, or covered (> 0) a loss beyond it: the collateral moves by it,
        as the exchange's wallet did. Once per income id; refused if it would leave the
        wallet negative."""
        if income_id in self.booked_ids:
            return []
        if currency != self.settlement:
            return f"insurance clearance {income_id} is in {currency}, the collateral in {self.settlement}"
        wallet = self.account(strategy).wallet
        if wallet + amount < 0:
            return f"insurance clearance {income_id} of {amount} would leave {strategy}'s wallet at {wallet + amount}"
        return self._do([PositionEntry("adjust", strategy, now, symbol=symbol, trade_id=income_id, amount=amount,
                                       fee_currency=currency, wallet=amount,
                                       reason="insurance fund: what the liquidation left of the position's margin")])

    def adopt(
        self, strategy: str, symbol: str, size: Decimal, entry_price: Decimal, leverage: Decimal, now: float, reason: str
    ) -> list[PositionEntry]:
        """Set the position to the exchange's size and entry price (a change no trade of
        ours explains), with its reason. Realized P&L is not touched: nothing is known of
        how the difference came about. The margin used is the new size's at ``leverage``."""
        position = self.position(strategy, symbol)
        cost = _q(size * entry_price)
        margin = _q(abs(cost) / leverage) if size else ZERO
        entry = PositionEntry(
            "adopt", strategy, now, symbol=symbol, price=entry_price, amount=size, leverage=leverage,
            size=size - position.size, entry_cost=cost - position.entry_cost,
            margin_used=margin - position.margin_used, reason=reason,
        )
        return self._do([entry]) + self._trim(strategy, symbol, now)

    # ---------------------------------------------------------- deciding

    def _fill_entry(
        self, strategy: str, symbol: str, side: Side, price: Decimal, amount: Decimal, fee: Decimal,
        fee_currency: str, now: float, *, leverage: Decimal, reduce_only: bool, trade_id: str,
        client_order_id: str | None, margin_released: Decimal = ZERO, reason: str = "",
    ) -> PositionEntry | str:
        """The deltas of one trade: the reducing part realizes P&L and frees margin, the
        opening part (a flip's rest) adds cost and margin."""
        if price <= 0 or amount <= 0:
            return f"fill {trade_id}: price and amount must be greater than 0, got {price} x {amount}"
        position = self.position(strategy, symbol)
        size = position.size
        delta = _signed(side, amount)
        reducing = size and _sign(delta) != _sign(size)
        closed = min(amount, abs(size)) if reducing else ZERO
        if reduce_only and (not reducing or amount > abs(size)):
            return (
                f"reduce-only fill {trade_id} of {amount} {symbol} ({side.value}) would cross or grow the position "
                f"of {size}: the exchange never does that; the book is out of step with it"
            )
        cost_out = margin_out = realized = ZERO
        if closed:
            whole = closed == abs(size)
            cost_out = position.entry_cost if whole else _q(position.entry_cost * closed / abs(size))
            margin_out = position.margin_used if whole else _q(position.margin_used * closed / abs(size))
            realized = _sign(size) * closed * price - cost_out
        opened = amount - closed
        cost_in = _sign(delta) * opened * price
        margin_in = _q(opened * price / leverage) if opened else ZERO
        fee_wallet = fee if fee_currency == self.settlement else ZERO
        return PositionEntry(
            "fill", strategy, now, symbol=symbol, client_order_id=client_order_id, trade_id=trade_id, side=side,
            price=price, amount=amount, reduce_only=reduce_only, leverage=leverage, fee=fee,
            fee_currency=fee_currency, wallet=realized - fee_wallet, margin_used=margin_in - margin_out,
            size=delta, entry_cost=cost_in - cost_out, realized_pnl=realized, margin_reserved=-margin_released,
            reason=reason,
        )

    def _members(self, strategy: str, symbol: str, group: str) -> list[PositionOrder]:
        return list(self._closing.get((strategy, symbol, group), {}).values())

    def _regroup(self, strategy: str, symbol: str, group: str, now: float) -> list[PositionEntry]:
        """A close group's reservation follows its open members: the largest rest of them
        (only one can fill), and never more than is held beside the other groups."""
        position = self.position(strategy, symbol)
        was = position.groups.get(group)
        if was is None:
            return []
        members = self._members(strategy, symbol, group)
        wanted = max([o.remaining for o in members], default=ZERO)
        wanted = max(min(wanted, abs(position.size) - (position.size_reserved - was)), ZERO)
        if wanted == was:
            return []
        return self._do([PositionEntry(
            "trim", strategy, now, symbol=symbol, oco_group=group, size_reserved=wanted - was,
            reason="close reservation follows its open orders",
        )])

    def _trim(self, strategy: str, symbol: str, now: float) -> list[PositionEntry]:
        """After a fill (or an adoption) shrank or flipped the position, cut the close
        reservations to what is held, in group order (deterministic)."""
        position = self.position(strategy, symbol)
        out: list[PositionEntry] = []
        excess = position.size_reserved - abs(position.size)
        if excess <= 0:
            return out
        for group in sorted(position.groups):
            if excess <= 0:
                break
            cut = min(position.groups[group], excess)
            if cut:
                excess -= cut
                out += self._do([PositionEntry(
                    "trim", strategy, now, symbol=symbol, oco_group=group, size_reserved=-cut,
                    reason=f"the position is now {position.size}: the close reserves no more than is held",
                )])
        return out

    def _do(self, entries: list[PositionEntry]) -> list[PositionEntry]:
        for entry in entries:
            self.apply(entry)
        return entries

    # -------------------------------------------------------------- fold

    def apply(self, entry: PositionEntry) -> None:
        """Apply one entry. Used live and to rebuild the book from its journal."""
        if entry.kind not in ENTRY_KINDS:
            raise PositionInvariantError(f"unknown position entry kind {entry.kind!r}")
        account = self.collateral.get(entry.strategy)
        if account is None:
            account = self.collateral[entry.strategy] = Collateral(entry.strategy)
        account.wallet += entry.wallet
        account.margin_reserved += entry.margin_reserved
        account.margin_used += entry.margin_used
        if entry.symbol is None:
            if entry.kind == "adjust":  # outside the strategy's positions: a cut, or its restoration
                account.withdrawn = max(ZERO, account.withdrawn - entry.wallet)
                if entry.trade_id:
                    self.booked_ids.add(entry.trade_id)  # a transfer's income id: once
            return
        key = (entry.strategy, entry.symbol)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = Position(entry.strategy, entry.symbol)
        position.size += entry.size
        position.entry_cost += entry.entry_cost
        position.realized_pnl += entry.realized_pnl
        position.funding_paid += entry.funding
        position.margin_used += entry.margin_used
        if entry.fee and entry.fee_currency:
            position.fees_paid[entry.fee_currency] = position.fees_paid.get(entry.fee_currency, ZERO) + entry.fee
        if entry.kind in ("fill", "adopt") and entry.leverage is not None and position.size and (entry.size or entry.kind == "adopt"):
            position.leverage = entry.leverage
        cid = entry.client_order_id
        known = self.orders.get(cid) if cid is not None else None
        group = entry.oco_group or (known.group if known is not None else cid)
        if entry.size_reserved and group is not None:
            position.size_reserved += entry.size_reserved
            position.groups[group] = position.groups.get(group, ZERO) + entry.size_reserved
        if entry.kind == "reserve":
            if cid is None or entry.side is None or entry.amount is None or entry.price is None:
                raise PositionInvariantError(f"a reserve entry without an order's id, side, amount or price: {entry}")
            order = self.orders[cid] = PositionOrder(
                client_order_id=cid, strategy=entry.strategy, symbol=entry.symbol, side=entry.side,
                price=entry.price, amount=entry.amount, reduce_only=entry.reduce_only,
                leverage=entry.leverage or Decimal(1), group=group or cid, margin_reserved=entry.margin_reserved,
                unit_margin=entry.margin_reserved / entry.amount,
            )
            if entry.reduce_only:
                position.groups.setdefault(order.group, ZERO)
                self._closing.setdefault((entry.strategy, entry.symbol, order.group), {})[cid] = order
        elif entry.kind == "fill":
            order = self.orders.get(cid) if cid is not None else None
            if order is not None:
                order.margin_reserved += entry.margin_reserved
                order.filled += entry.amount or ZERO
                if entry.trade_id:
                    order.trade_ids.add(entry.trade_id)
            elif entry.trade_id:
                self.booked_ids.add(entry.trade_id)
        elif entry.kind in ("funding", "adjust") and entry.trade_id:
            self.booked_ids.add(entry.trade_id)
        elif entry.kind == "release" and known is not None:
            known.margin_reserved += entry.margin_reserved
            known.open = False
            self._closing.get((entry.strategy, entry.symbol, known.group), {}).pop(known.client_order_id, None)
        if entry.kind in ("release", "trim") and group is not None and position.groups.get(group) == 0:
            key3 = (entry.strategy, entry.symbol, group)
            if not self._closing.get(key3):
                del position.groups[group]
                self._closing.pop(key3, None)

    # -------------------------------------------------------- invariants

    def check_invariants(self) -> None:
        """Raise :class:`PositionInvariantError` naming the first broken invariant."""
        reserved: dict[str, Decimal] = {}
        for order in self.orders.values():
            if order.margin_reserved < 0:
                raise PositionInvariantError(f"order {order.client_order_id} holds negative margin {order.margin_reserved}")
            if order.open:
                reserved[order.strategy] = reserved.get(order.strategy, ZERO) + order.margin_reserved
            elif order.margin_reserved:
                raise PositionInvariantError(f"ended order {order.client_order_id} still holds {order.margin_reserved}")
        closing = {(o.strategy, o.symbol, o.group, o.client_order_id) for o in self.orders.values() if o.open and o.reduce_only}
        indexed = {(*key, cid) for key, orders in self._closing.items() for cid in orders}
        if closing != indexed:
            raise PositionInvariantError(f"the index of open closes is not the open closes: {sorted(closing ^ indexed)}")
        for name, account in self.collateral.items():
            if account.margin_reserved != reserved.get(name, ZERO):
                raise PositionInvariantError(
                    f"{name}: margin reserved {account.margin_reserved} != sum of open orders {reserved.get(name, ZERO)}"
                )
            used = sum((p.margin_used for (s, _), p in self.positions.items() if s == name), ZERO)
            if account.margin_used != used:
                raise PositionInvariantError(f"{name}: margin used {account.margin_used} != sum of positions {used}")
        for (name, symbol), position in self.positions.items():
            if position.size_reserved < 0 or position.size_reserved > abs(position.size):
                raise PositionInvariantError(
                    f"{name} {symbol}: closes reserve {position.size_reserved} of a position of {position.size}"
                )
            if position.size_reserved != sum(position.groups.values(), ZERO):
                raise PositionInvariantError(f"{name} {symbol}: size reserved != sum of its close groups")
            if not position.size and (position.entry_cost or position.margin_used):
                raise PositionInvariantError(f"{name} {symbol}: flat but entry cost {position.entry_cost}, margin {position.margin_used}")

    def snapshot(self) -> dict[str, Any]:
        """Everything the fold holds, comparable between a live book and a rebuilt one."""
        return {
            "collateral": {
                n: {"wallet": str(a.wallet), "margin_reserved": str(a.margin_reserved), "margin_used": str(a.margin_used),
                    "withdrawn": str(a.withdrawn)}
                for n, a in sorted(self.collateral.items())
            },
            "positions": {f"{s}:{sym}": p.snapshot() | {"groups": {g: str(v) for g, v in sorted(p.groups.items())}}
                          for (s, sym), p in sorted(self.positions.items())},
            "orders": {
                cid: (o.open, str(o.filled), str(o.margin_reserved), o.group, sorted(o.trade_ids))
                for cid, o in sorted(self.orders.items())
            },
            "booked_ids": sorted(self.booked_ids),
        }


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"

"""An order's life. Every rule about order state lives in this module.

``INTENT → RESERVED → SUBMITTING → OPEN → PARTIALLY_FILLED → FILLED``, with the exits
``DENIED`` (the ledger said no), ``REJECTED`` (the exchange said no), ``CANCELING →
CANCELED``, ``EXPIRED`` (its time-to-live ran out and we cancelled it) and ``UNKNOWN`` (a
submit or cancel whose outcome we do not know; only evidence from the exchange leaves it).

The table is ``TRANSITIONS[state][trigger] -> state``. A pair missing from it is illegal:
:func:`transition` refuses it with :class:`IllegalTransition`, which is a bug to log, never
a state to invent.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import operator
import re
from decimal import Decimal

import attrs

from exchange.records import Side


class OrderState(enum.Enum):
    INTENT = "INTENT"
    RESERVED = "RESERVED"
    SUBMITTING = "SUBMITTING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    DENIED = "DENIED"
    REJECTED = "REJECTED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"

    # Members are singletons: hashed by identity in C, not by name in Python (Enum's own
    # __hash__), for the table lookups every transition makes.
    __hash__ = object.__hash__

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def on_exchange(self) -> bool:
        """The exchange may hold this order (so it may still fill)."""
        return self in {
            OrderState.SUBMITTING,
            OrderState.OPEN,
            OrderState.PARTIALLY_FILLED,
            OrderState.CANCELING,
            OrderState.UNKNOWN,
        }


FINAL_STATES = frozenset(
    {OrderState.FILLED, OrderState.DENIED, OrderState.REJECTED, OrderState.CANCELED, OrderState.EXPIRED}
)


class Trigger(enum.Enum):
    GRANTED = "granted"  # the ledger reserved the funds
    DENIED = "denied"  # the ledger refused
    SUBMIT = "submit"  # the intent is durable; the request leaves the process
    WITHDRAW = "withdraw"  # reserved but never sent (shut down before submitting)
    ACCEPTED = "accepted"  # the exchange acknowledged the order
    REJECTED = "rejected"  # the exchange refused it, or it was proven never placed
    FILL = "fill"  # a fill that leaves some amount open
    FILL_COMPLETE = "fill_complete"  # the fill that completes the amount
    CANCEL = "cancel"  # we ask the exchange to cancel
    CANCELED = "canceled"  # the exchange says it is cancelled
    EXPIRED = "expired"  # cancelled because its time-to-live ran out
    OUTCOME_UNKNOWN = "outcome_unknown"  # a submit or cancel timed out or lost its connection

    __hash__ = object.__hash__  # as OrderState's


S, T = OrderState, Trigger

TRANSITIONS: dict[OrderState, dict[Trigger, OrderState]] = {
    S.INTENT: {T.GRANTED: S.RESERVED, T.DENIED: S.DENIED},
    # After a crash, a durable intent may or may not have been sent: UNKNOWN until evidence.
    S.RESERVED: {T.SUBMIT: S.SUBMITTING, T.WITHDRAW: S.CANCELED, T.OUTCOME_UNKNOWN: S.UNKNOWN},
    S.SUBMITTING: {
        T.ACCEPTED: S.OPEN,
        T.REJECTED: S.REJECTED,
        # A fill can overtake the acknowledgement.
        T.FILL: S.PARTIALLY_FILLED,
        T.FILL_COMPLETE: S.FILLED,
        T.CANCELED: S.CANCELED,
        T.OUTCOME_UNKNOWN: S.UNKNOWN,
    },
    S.OPEN: {
        T.FILL: S.PARTIALLY_FILLED,
        T.FILL_COMPLETE: S.FILLED,
        T.CANCEL: S.CANCELING,
        # Cancelled outside limitline (an operator, or the exchange itself).
        T.CANCELED: S.CANCELED,
        T.EXPIRED: S.EXPIRED,
    },
    S.PARTIALLY_FILLED: {
        T.FILL: S.PARTIALLY_FILLED,
        T.FILL_COMPLETE: S.FILLED,
        T.CANCEL: S.CANCELING,
        T.CANCELED: S.CANCELED,
        T.EXPIRED: S.EXPIRED,
    },
    S.CANCELING: {
        # A fill after we asked to cancel is accepted: the exchange is the truth.
        T.FILL: S.CANCELING,
        T.FILL_COMPLETE: S.FILLED,
        T.CANCELED: S.CANCELED,
        T.EXPIRED: S.EXPIRED,
        T.OUTCOME_UNKNOWN: S.UNKNOWN,
    },
    S.UNKNOWN: {
        T.ACCEPTED: S.OPEN,
        T.FILL: S.PARTIALLY_FILLED,
        T.FILL_COMPLETE: S.FILLED,
        T.CANCELED: S.CANCELED,
        T.EXPIRED: S.EXPIRED,
        T.REJECTED: S.REJECTED,
    },
    # A fill reported after the cancel confirmation still happened on the exchange.
    S.CANCELED: {T.FILL: S.CANCELED},
    S.EXPIRED: {T.FILL: S.EXPIRED},
    # Trades can be reported out of order: one may arrive after the completing trade.
    S.FILLED: {T.FILL: S.FILLED},
    S.DENIED: {},
    S.REJECTED: {},
}


class IllegalTransition(Exception):
    """A trigger that the table does not allow in the order's state: a bug, refused."""


@attrs.frozen
class Order:
    """One limit order, as the strategy that owns it knows it."""

    client_order_id: str
    strategy: str
    venue: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    state: OrderState
    created_at: float
    updated_at: float
    rule: str = ""
    filled: Decimal = Decimal(0)
    exchange_order_id: str | None = None
    reason: str = ""
    trade_ids: frozenset[str] = frozenset()
    #: What the exchange said had filled when it ended the order (cancelled, expired);
    #: trades up to it may be reported later and still count.
    final_filled: Decimal | None = None
    #: The market time (candle timestamp) it was decided at: its time-to-live counts from
    #: it, across restarts too. None in rows written before it was kept.
    market_ts: int | None = None
    #: ``limit``, or ``stop_limit`` (a limit order the exchange places once the price
    #: reaches ``trigger_price``: a position's stop-loss). Never a market type.
    order_type: str = "limit"
    trigger_price: Decimal | None = None
    #: Perpetuals: the order can only reduce the position (a close, a protective order).
    reduce_only: bool = False
    #: ``order_type`` ``oco`` (a spot OCO sell list, :func:`oco_leg_ids`): ``price`` is the
    #: limit-maker take-profit's, ``trigger_price`` the stop-loss-limit's stop and this its
    #: limit. The list is one order of record: one reservation, its legs' trades its fills.
    stop_limit_price: Decimal | None = None

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


def transition(order: Order, trigger: Trigger, now: float, **changes: object) -> Order:
    """The order after ``trigger``, or :class:`IllegalTransition` if the table forbids it."""
    target = TRANSITIONS[order.state].get(trigger)
    if target is None:
        raise IllegalTransition(
            f"order {order.client_order_id}: {trigger.value} is not allowed in state {order.state.value}"
        )
    # Every field read at once and passed by position: a third of attrs.evolve's cost (the
    # Lab makes five transitions per order, and they were its largest single cost).
    values = list(_ORDER_VALUES(order))
    for name, value in changes.items():
        index = _ORDER_INDEX.get(name)
        if index is None:
            raise TypeError(f"an Order has no field {name!r}")
        values[index] = value
    values[_STATE] = target
    values[_UPDATED_AT] = now
    return Order(*values)


_ORDER_FIELDS = tuple(field.name for field in attrs.fields(Order))
_ORDER_VALUES = operator.attrgetter(*_ORDER_FIELDS)
_ORDER_INDEX = {name: index for index, name in enumerate(_ORDER_FIELDS)}
_STATE, _UPDATED_AT = _ORDER_INDEX["state"], _ORDER_INDEX["updated_at"]


_ID_CHARS = re.compile(r"[^A-Za-z0-9]")
CLIENT_ORDER_ID_MAX = 36


#: A store's client order id instance: 6 characters of ``[a-z0-9]``, or "" (stores made
#: before it existed, and the Lab, which has no store and reaches no exchange).
CLIENT_ID_INSTANCE = re.compile(r"[a-z0-9]{6}")


def client_order_id(strategy: str, sequence: int, instance: str = "") -> str:
    """The deterministic client order id of a strategy's ``sequence``-th order.

    At most 36 characters of ``[A-Za-z0-9_-]`` (Binance's ``newClientOrderId`` takes 1 to
    36 of ``.A-Z:/a-z0-9_-``; this narrower alphabet is one most exchanges accept): ``ll-``,
    the strategy's name cut to safe characters, 6 hex digits of a hash of the full name (so
    names that clean up alike never collide), the store's ``instance``, and the sequence.

    ``instance`` (:data:`CLIENT_ID_INSTANCE`, made at random with the store and kept in it):
    two stores pointed at one exchange account never make the same id, so an UNKNOWN
    outcome looked up by client order id finds only this store's order. With it the name
    keeps 10 characters (``ll-trend-2ab022-k3f9qz-17``, sequences up to 8 digits); without
    it (a store made before instances existed keeps its ids, so its open orders are still
    recognised) 16 (``ll-trend-2ab022-17``, up to 9 digits).

    Raises ValueError for a negative sequence, a malformed instance, or an id over 36."""
    if sequence < 0:
        raise ValueError(f"sequence must be >= 0, got {sequence}")
    cid = f"{_client_order_id_prefix(strategy, instance)}-{sequence}"
    if len(cid) > CLIENT_ORDER_ID_MAX:
        raise ValueError(f"sequence {sequence} makes a client order id longer than 36 characters")
    return cid


@functools.lru_cache(maxsize=1024)
def _client_order_id_prefix(strategy: str, instance: str = "") -> str:
    digest = hashlib.sha256(strategy.encode()).hexdigest()[:6]
    if not instance:
        return f"ll-{_ID_CHARS.sub('', strategy)[:16] or 's'}-{digest}"
    if not CLIENT_ID_INSTANCE.fullmatch(instance):
        raise ValueError(f"a client order id instance is 6 characters of [a-z0-9], got {instance!r}")
    return f"ll-{_ID_CHARS.sub('', strategy)[:10] or 's'}-{digest}-{instance}"


def oco_leg_ids(list_client_id: str) -> tuple[str, str]:
    """The client order ids of an OCO list's legs: (the limit-maker take-profit above,
    the stop-loss-limit below), made from the list's (Binance's ``listClientOrderId``,
    ``aboveClientOrderId``, ``belowClientOrderId``; each at most 36 characters)."""
    legs = (f"{list_client_id}-t", f"{list_client_id}-s")
    if len(legs[0]) > CLIENT_ORDER_ID_MAX:
        raise ValueError(f"OCO list {list_client_id}: its legs' ids would be longer than 36 characters")
    return legs


def oco_list_of(client_order_id: str) -> str | None:
    """The OCO list a leg's client order id (:func:`oco_leg_ids`) belongs to, else None."""
    head, _, tail = client_order_id.rpartition("-")
    return head if tail in ("t", "s") and parse_sequence(head) is not None else None


def parse_sequence(cid: str) -> int | None:
    """The sequence number inside a client order id made by :func:`client_order_id`."""
    head, _, tail = cid.rpartition("-")
    return int(tail) if head.startswith("ll-") and tail.isdigit() else None

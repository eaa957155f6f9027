"""The error taxonomy: every ccxt exception, one kind, one behaviour. This table is the rule.

| kind | ccxt classes | behaviour |
|---|---|---|
| ``fatal`` | AuthenticationError (PermissionDenied, AccountSuspended) | isolate the venue; its strategies fail pre-flight with the message |
| ``rate_limited`` | DDoSProtection, RateLimitExceeded (HTTP 429/418) | the whole venue pauses (``Retry-After`` honoured); never retried at once |
| ``transient`` | ExchangeNotAvailable (5xx, maintenance), InvalidNonce; any network error on a *read* | retry the read with back-off; counts toward the strategy's breaker when it was the strategy's operation |
| ``ambiguous`` | RequestTimeout, other NetworkError / OperationFailed on a *create or cancel* | the order goes to UNKNOWN, never to failed: the exchange may have acted |
| ``rejected`` | InsufficientFunds, InvalidOrder (OrderNotFound, ...), BadRequest, OperationRejected, other ExchangeError | the order is rejected with the exchange's message; reservation released; the breaker counts it |

Order matters: the first class that matches decides (subclasses before their bases).
"""

from __future__ import annotations

import enum

import ccxt


class ErrorKind(enum.Enum):
    FATAL = "fatal"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"


#: (class, kind on a read, kind on a create or cancel)
TAXONOMY: tuple[tuple[type[BaseException], ErrorKind, ErrorKind], ...] = (
    (ccxt.AuthenticationError, ErrorKind.FATAL, ErrorKind.FATAL),
    (ccxt.DDoSProtection, ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED),
    # Not a subclass of DDoSProtection: both derive from NetworkError.
    (ccxt.RateLimitExceeded, ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED),
    # The exchange said it is unavailable: it did not act on the request.
    (ccxt.ExchangeNotAvailable, ErrorKind.TRANSIENT, ErrorKind.TRANSIENT),
    (ccxt.InvalidNonce, ErrorKind.TRANSIENT, ErrorKind.TRANSIENT),
    # No answer in time, or the connection dropped: it may have acted.
    (ccxt.RequestTimeout, ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS),
    (ccxt.NetworkError, ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS),
    (ccxt.ExchangeError, ErrorKind.REJECTED, ErrorKind.REJECTED),
    # OperationFailed that is no NetworkError (e.g. Binance -1001 "internal error"): unknown.
    (ccxt.OperationFailed, ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS),
)


def classify(error: BaseException, *, write: bool) -> ErrorKind:
    """The kind of ``error`` raised by a read (``write=False``) or a create/cancel."""
    for cls, on_read, on_write in TAXONOMY:
        if isinstance(error, cls):
            return on_write if write else on_read
    # Anything else (a bug in parsing, an unexpected exception from the HTTP stack) is
    # treated like a dropped connection: never assume a write failed.
    return ErrorKind.AMBIGUOUS if write else ErrorKind.TRANSIENT

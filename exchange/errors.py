"""The error taxonomy: every ccxt exception, one kind, one behaviour. This table is the rule.

| kind | ccxt classes | behaviour |
|---|---|---|
| ``fatal`` | AuthenticationError (PermissionDenied, AccountSuspended) | isolate the venue; its strategies fail pre-flight with the message |
| ``rate_limited`` | DDoSProtection, RateLimitExceeded (HTTP 429/418) | the whole venue pauses (``Retry-After`` honoured); never retried at once |
| ``transient`` | ExchangeNotAvailable (5xx, maintenance), InvalidNonce; any network error on a *read* | retry the read with capped, jittered back-off |
| ``ambiguous`` | ExchangeNotAvailable (5xx: Binance documents the outcome as unknown), RequestTimeout, other NetworkError / OperationFailed on a *create or cancel* | a create's order goes to UNKNOWN (reservation kept, resolved by evidence); a cancel is asked again; never failed: the exchange may have acted |
| ``clock`` | InvalidNonce (Binance -1021: the request's timestamp is outside the exchange's window) | the clock is measured against the exchange's (ccxt's ``load_time_difference``) and the call made once more; if it persists, the venue is isolated and pre-flight names the clock and the offset |
| ``rejected`` | InsufficientFunds, InvalidOrder (OrderNotFound, ...), BadRequest, OperationRejected, other ExchangeError | the order is rejected with the exchange's message; reservation released; the breaker counts it |

The kinds are the exchange layer's vocabulary; :mod:`exchange.ccxt_adapter` (the only
module that knows ccxt) maps ccxt's exception classes to them.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    FATAL = "fatal"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    REJECTED = "rejected"
    CLOCK = "clock"

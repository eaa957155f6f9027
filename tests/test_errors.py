"""The error taxonomy: each ccxt exception class has exactly one kind per operation."""

from __future__ import annotations

import ccxt
import pytest

from exchange.ccxt_adapter import classify
from exchange.errors import ErrorKind

K = ErrorKind


@pytest.mark.parametrize(
    "error, on_read, on_write",
    [
        (ccxt.AuthenticationError("bad key"), K.FATAL, K.FATAL),
        (ccxt.PermissionDenied("no trading"), K.FATAL, K.FATAL),
        (ccxt.AccountSuspended("suspended"), K.FATAL, K.FATAL),
        (ccxt.DDoSProtection("429"), K.RATE_LIMITED, K.RATE_LIMITED),
        (ccxt.RateLimitExceeded("429"), K.RATE_LIMITED, K.RATE_LIMITED),
        (ccxt.ExchangeNotAvailable("503"), K.TRANSIENT, K.AMBIGUOUS),  # Binance: 5xx outcome UNKNOWN
        (ccxt.OnMaintenance("maintenance"), K.TRANSIENT, K.AMBIGUOUS),
        (ccxt.RequestTimeout("timed out"), K.TRANSIENT, K.AMBIGUOUS),
        (ccxt.NetworkError("connection reset"), K.TRANSIENT, K.AMBIGUOUS),
        (ccxt.OperationFailed("-1001 internal error"), K.TRANSIENT, K.AMBIGUOUS),
        (ccxt.InvalidNonce("-1021 timestamp outside recvWindow"), K.CLOCK, K.CLOCK),
        (ccxt.InsufficientFunds("no money"), K.REJECTED, K.REJECTED),
        (ccxt.InvalidOrder("PRICE_FILTER"), K.REJECTED, K.REJECTED),
        (ccxt.OrderNotFound("unknown order"), K.REJECTED, K.REJECTED),
        (ccxt.BadSymbol("no such market"), K.REJECTED, K.REJECTED),
        (ValueError("parse bug"), K.TRANSIENT, K.AMBIGUOUS),
    ],
)
def test_each_class_has_one_behaviour(error, on_read, on_write):
    assert classify(error, write=False) is on_read
    assert classify(error, write=True) is on_write

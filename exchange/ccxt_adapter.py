"""The one module that knows ccxt: the client, its errors, and what its answers mean.

Everything above the exchange layer speaks in :mod:`exchange.records`, market rules and
:class:`exchange.errors.ErrorKind`; this module turns ccxt's calls, dicts and exceptions
into those. The connection core names an *operation* (see :data:`OPERATIONS`); the shell
runs :func:`perform` on a worker thread, which calls ccxt and parses the answer there.

Building the client (synchronous API, called from worker threads):

- ``base_url``: rewrites the scheme and host of *every* REST URL of the exchange class and
  keeps the paths, so a testnet, a proxy or ``limitline sandbox`` can stand in for the
  exchange;
- ``sandbox``: ccxt's own sandbox (testnet) mode;
- spot only: markets are loaded from the spot endpoint alone, and currencies are not
  fetched (they need account-level endpoints that a spot API key may not have).

Credentials are passed in, never read here, and never put in a message or a log.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import ccxt

from exchange.candles import Candle
from exchange.errors import ErrorKind
from exchange.markets import MarketRules
from exchange.records import ExchangeOrder, ExchangeTrade, Side

_last_error_headers = threading.local()


def exchange_exists(exchange_id: str) -> bool:
    """ccxt has an exchange of this id (``binance``, ``kraken`` ...; not its base class)."""
    return exchange_id in ccxt.exchanges


def make_client(
    exchange_id: str,
    *,
    api_key: str | None = None,
    secret: str | None = None,
    password: str | None = None,
    base_url: str | None = None,
    sandbox: bool = False,
    timeout_ms: int = 10_000,
) -> ccxt.Exchange:
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    config: dict[str, Any] = {
        "enableRateLimit": False,  # our own limiter, in the connection core (ccxt's is not thread-safe)
        "timeout": timeout_ms,
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,  # margin pairs need account-level endpoints
            "fetchCurrencies": False,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    if password is not None:
        config["password"] = password
    client = cls(config)
    if sandbox:
        client.set_sandbox_mode(True)
    if base_url is not None:
        client.urls["api"] = rewrite_urls(client.urls["api"], base_url)
    _capture_error_headers(client)
    return client


def _capture_error_headers(client: ccxt.Exchange) -> None:
    """Keep each failed response's headers per thread: ``last_response_headers`` is shared
    by every thread calling this client, so another call could overwrite it first."""
    handle_errors = client.handle_errors

    def remembering(code: Any, reason: Any, url: Any, method: Any, headers: Any, *rest: Any) -> Any:
        _last_error_headers.value = headers or {}
        return handle_errors(code, reason, url, method, headers, *rest)

    client.handle_errors = remembering


def call(method: Callable[[], Any]) -> Any:
    """Run one ccxt call (in a worker thread); a failure carries ``retry_after`` (seconds
    from the failed response's ``Retry-After`` header, or None)."""
    _last_error_headers.value = {}
    try:
        return method()
    except Exception as error:
        headers = getattr(_last_error_headers, "value", {}) or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            error.retry_after = float(value) if value is not None else None  # type: ignore[attr-defined]
        except ValueError:
            error.retry_after = None  # type: ignore[attr-defined]
        raise


def rewrite_urls(urls: Any, base_url: str) -> Any:
    """Every URL in ccxt's (nested) ``urls['api']`` with the scheme and host of ``base_url``."""
    target = urlsplit(base_url)
    if target.scheme not in ("http", "https") or not target.netloc:
        raise ValueError(f"base_url must look like http://HOST:PORT, got {base_url!r}")
    if isinstance(urls, dict):
        return {key: rewrite_urls(value, base_url) for key, value in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        parts = urlsplit(urls)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))
    return urls


# ----------------------------------------------------------------- errors

#: (class, kind on a read, kind on a create or cancel)
TAXONOMY: tuple[tuple[type[BaseException], ErrorKind, ErrorKind], ...] = (
    (ccxt.AuthenticationError, ErrorKind.FATAL, ErrorKind.FATAL),
    (ccxt.DDoSProtection, ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED),
    # Not a subclass of DDoSProtection: both derive from NetworkError.
    (ccxt.RateLimitExceeded, ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED),
    # HTTP 5xx. Binance: "the execution status is UNKNOWN and could have been a success"
    # (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-api-information):
    # on a create or cancel the exchange may have acted.
    (ccxt.ExchangeNotAvailable, ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS),
    # Binance -1021: the timestamp is outside the receive window. Nothing was done.
    (ccxt.InvalidNonce, ErrorKind.CLOCK, ErrorKind.CLOCK),
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


# --------------------------------------------------------------- timeframes


def timeframes(exchange_id: str) -> tuple[str, ...]:
    """The candle timeframes the exchange offers, as ccxt describes it (no network)."""
    return tuple(getattr(ccxt, exchange_id)().timeframes or ())


def timeframe_seconds(timeframe: str, exchange_id: str | None = None) -> int:
    """Seconds in a ccxt timeframe (``1s``, ``3m``, ``1h``, ``1w``, ``1M`` ...), by ccxt's own
    rule. With ``exchange_id``, only a timeframe that exchange offers is accepted.

    Raises ValueError saying what is accepted."""
    offered = timeframes(exchange_id) if exchange_id is not None else ()
    if offered and timeframe not in offered:
        raise ValueError(f"{exchange_id} offers the timeframes {', '.join(offered)}")
    try:
        seconds = int(ccxt.Exchange.parse_timeframe(timeframe))
    except Exception:  # noqa: BLE001 - ccxt raises NotSupported or a parsing error
        seconds = 0
    if seconds <= 0:
        raise ValueError("a timeframe looks like 1m, 15m, 1h, 4h, 1d or 1w")
    return seconds


# ------------------------------------------------------------------ parsing


def _d(value: Any) -> Decimal:
    return Decimal(str(value))


def _precision(value: Any, mode: int) -> tuple[Decimal, int | None]:
    """ccxt's precision number as (step, significant digits), by the exchange's counting
    mode (``exchange.precisionMode``): TICK_SIZE gives the step itself, DECIMAL_PLACES a
    count of decimals (step 10^-n), SIGNIFICANT_DIGITS a count of significant digits."""
    if value is None:
        raise ValueError("the market gives no precision")
    if mode == ccxt.SIGNIFICANT_DIGITS:
        return Decimal(0), int(value)
    if mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value)), None
    return _d(value), None


def parse_markets(markets: dict[str, Any], precision_mode: int = ccxt.TICK_SIZE) -> dict[str, MarketRules]:
    """ccxt's loaded spot markets as our market rules (tick, lot, minimums, fees).
    A market without usable precision is left out (it cannot be traded safely)."""
    out = {}
    for symbol, m in markets.items():
        if not m.get("spot") or m.get("type") != "spot":
            continue
        precision, limits = m["precision"], m["limits"]
        try:
            tick, price_digits = _precision(precision.get("price"), precision_mode)
            lot, amount_digits = _precision(precision.get("amount"), precision_mode)
        except (ValueError, TypeError, ArithmeticError):
            continue
        out[symbol] = MarketRules.for_symbol(
            symbol,
            tick_size=tick,
            lot_size=lot,
            price_digits=price_digits,
            amount_digits=amount_digits,
            min_amount=_d(limits["amount"]["min"] or lot),
            min_notional=_d((limits.get("cost") or {}).get("min") or 0),
            maker_fee=_d(m.get("maker") or 0),
            taker_fee=_d(m.get("taker") or 0),
            active=bool(m.get("active", True)),
        )
    return out


def parse_balances(balance: dict[str, Any]) -> dict[str, Decimal]:
    """ccxt's ``fetch_balance`` as total per asset."""
    return {asset: _d(total) for asset, total in (balance.get("total") or {}).items() if total is not None}


def parse_order(order: dict[str, Any]) -> ExchangeOrder:
    """One ccxt order dict. Fields a lookup may leave out (price, amount) read as 0."""
    return ExchangeOrder(
        client_order_id=order.get("clientOrderId") or "",
        exchange_order_id=str(order["id"]),
        symbol=order.get("symbol") or "",
        side=Side(order["side"]),
        price=_d(order.get("price") or 0),
        amount=_d(order.get("amount") or 0),
        filled=_d(order.get("filled") or 0),
        status=order.get("status") or "open",
    )


def parse_trade(trade: dict[str, Any]) -> ExchangeTrade:
    """One ccxt trade dict; the fee in whatever currency the exchange charged it."""
    fee = trade.get("fee") or {}
    return ExchangeTrade(
        trade_id=str(trade["id"]),
        exchange_order_id=str(trade["order"]),
        symbol=trade["symbol"],
        side=Side(trade["side"]),
        price=_d(trade["price"]),
        amount=_d(trade["amount"]),
        fee=_d(fee.get("cost") or 0),
        fee_currency=fee.get("currency") or "",
        at=(trade.get("timestamp") or 0) / 1000,
        taker_or_maker=trade.get("takerOrMaker"),
    )


def parse_candle(row: list[Any]) -> Candle:
    """One OHLCV row (timestamp in ms) as a candle (timestamp in s)."""
    return Candle(int(row[0] // 1000), _d(row[1]), _d(row[2]), _d(row[3]), _d(row[4]), _d(row[5]))


# ---------------------------------------------------------------- operations


def _load_markets(client: ccxt.Exchange) -> dict[str, MarketRules]:
    return parse_markets(client.load_markets(), client.precisionMode)


def _fetch_balance(client: ccxt.Exchange) -> dict[str, Decimal]:
    return parse_balances(client.fetch_balance())


def _fetch_time(client: ccxt.Exchange) -> int:
    return int(client.fetch_time())


def _sync_clock(client: ccxt.Exchange) -> float:
    """Measure the exchange's clock against ours and make ccxt sign with the exchange's
    time from now on; returns the offset in seconds (exchange minus local)."""
    return -float(client.load_time_difference()) / 1000


def _fetch_quote(client: ccxt.Exchange, symbol: str) -> tuple[Decimal, Decimal] | None:
    ticker = client.fetch_ticker(symbol)
    bid, ask = ticker.get("bid"), ticker.get("ask")
    return (_d(bid), _d(ask)) if bid and ask else None  # None: no best bid and ask here


def _fetch_candles(client: ccxt.Exchange, symbol: str, timeframe: str, since_ms: int | None, limit: int) -> list[Candle]:
    return [parse_candle(row) for row in client.fetch_ohlcv(symbol, timeframe, since=since_ms, limit=limit)]


def _fetch_open_orders(client: ccxt.Exchange, symbol: str) -> list[ExchangeOrder]:
    return [parse_order(o) for o in client.fetch_open_orders(symbol)]


def _fetch_order(client: ccxt.Exchange, exchange_order_id: str, symbol: str) -> ExchangeOrder:
    return parse_order(client.fetch_order(exchange_order_id, symbol))


def _fetch_order_by_client_id(client: ccxt.Exchange, client_order_id: str, symbol: str) -> ExchangeOrder:
    # Binance's name for the lookup by client order id; ccxt passes it through.
    return parse_order(client.fetch_order(None, symbol, params={"origClientOrderId": client_order_id}))


def _fetch_trades(
    client: ccxt.Exchange, symbol: str, from_id: int | None = None, limit: int | None = None
) -> list[ExchangeTrade]:
    params = {} if from_id is None else {"fromId": from_id}
    kwargs: dict[str, Any] = {"params": params}
    if limit is not None:
        kwargs["limit"] = limit
    return [parse_trade(t) for t in client.fetch_my_trades(symbol, **kwargs)]


def _create_limit_order(
    client: ccxt.Exchange, symbol: str, side: Side, amount: Decimal, price: Decimal, client_order_id: str
) -> ExchangeOrder:
    order = client.create_order(
        symbol, "limit", side.value, float(amount), float(price), params={"clientOrderId": client_order_id}
    )
    return parse_order(order)


def _cancel_order(client: ccxt.Exchange, exchange_order_id: str, symbol: str) -> ExchangeOrder | None:
    """The order as the exchange ended it (its ``filled`` counts trades it may report
    later), or None when the answer says nothing of it."""
    order = client.cancel_order(exchange_order_id, symbol)
    if not order or order.get("id") is None or order.get("side") is None or order.get("filled") is None:
        return None  # the answer does not say what had filled: the order is looked up
    return parse_order(order)


#: What the connection core may ask of an exchange: operation -> function(client, *args).
#: Arguments and answers are our records, never ccxt's dicts.
OPERATIONS: dict[str, Callable[..., Any]] = {
    "load_markets": _load_markets,
    "fetch_balance": _fetch_balance,
    "fetch_time": _fetch_time,
    "sync_clock": _sync_clock,
    "fetch_quote": _fetch_quote,
    "fetch_candles": _fetch_candles,
    "fetch_open_orders": _fetch_open_orders,
    "fetch_order": _fetch_order,
    "fetch_order_by_client_id": _fetch_order_by_client_id,
    "fetch_trades": _fetch_trades,
    "create_limit_order": _create_limit_order,
    "cancel_order": _cancel_order,
}


def perform(client: ccxt.Exchange, operation: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
    """Run one operation on a worker thread: call ccxt, parse the answer into records.

    Raises what ccxt raised, with ``retry_after`` set (see :func:`call`)."""
    function = OPERATIONS[operation]
    return call(lambda: function(client, *args, **(kwargs or {})))

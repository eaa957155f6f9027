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
- ``market_type``: ``spot`` loads markets from the spot endpoint alone; ``swap`` loads the
  linear perpetuals alone (``binanceusdm``: ``/fapi/v1/exchangeInfo``). Currencies are not
  fetched (they need account-level endpoints that a trading API key may not have);
- ``https_proxy``: every HTTPS request goes through this proxy (ccxt's ``httpsProxy``), and
  ``ca_file``: TLS certificates are checked against this CA bundle (a corporate proxy that
  intercepts TLS signs with its own CA). Both keep the exchange's real URLs, so ccxt's
  error table for the production host still applies (:func:`classify` does not depend on it).

Credentials are passed in, never read here, and never put in a message or a log.
"""

from __future__ import annotations

import json
import os
import re
import threading
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import attrs
import ccxt
import requests.adapters

from exchange.candles import Candle
from exchange.errors import ErrorKind
from exchange.markets import MarketRules
from exchange.records import (
    ExchangeConditionalOrder,
    ExchangeIncome,
    ExchangeOrder,
    ExchangeOrderList,
    ExchangePosition,
    ExchangeTrade,
    MarginAccount,
    Side,
)

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
    market_type: str = "spot",
    https_proxy: str | None = None,
    ca_file: str | None = None,
) -> ccxt.Exchange:
    """A synchronous ccxt client. Raises ValueError naming a bad argument (an unknown
    exchange or market type, a proxy that is no URL, a CA file that cannot be read)."""
    cls = getattr(ccxt, exchange_id, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    if market_type not in MARKET_TYPES:
        raise ValueError(f"market_type must be one of {', '.join(MARKET_TYPES)}, got {market_type!r}")
    problem = proxy_problem(https_proxy) or ca_file_problem(ca_file)
    if problem is not None:
        raise ValueError(problem)
    config: dict[str, Any] = {
        "enableRateLimit": False,  # our own limiter, in the connection core (ccxt's is not thread-safe)
        "timeout": timeout_ms,
        "options": {
            "defaultType": market_type,
            # ccxt's names for the market families: spot, or linear perpetuals (USD-M).
            "fetchMarkets": {"types": ["spot"] if market_type == "spot" else ["linear"]},
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
    if https_proxy is not None:
        client.httpsProxy = https_proxy
    if ca_file is not None:
        client.session.mount("https://", _CaFileAdapter(ca_file))
    _capture_error_headers(client)
    return client


#: ``market_type`` values: ccxt's ``defaultType`` for spot and for linear perpetuals.
MARKET_TYPES = ("spot", "swap")


def proxy_problem(https_proxy: str | None) -> str | None:
    """Why ``https_proxy`` cannot be used, or None."""
    if https_proxy is None:
        return None
    parts = urlsplit(https_proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"https_proxy must look like http://HOST:PORT, got {https_proxy!r}"
    return None


def ca_file_problem(ca_file: str | None) -> str | None:
    """Why ``ca_file`` cannot be used as a CA bundle, or None."""
    if ca_file is None:
        return None
    if not os.path.isfile(ca_file):
        return f"ca_file {ca_file!r} does not exist; give the path of the PEM bundle of the CA that signs your proxy's certificates"
    if not os.access(ca_file, os.R_OK):
        return f"ca_file {ca_file!r} cannot be read by this user"
    return None


class _CaFileAdapter(requests.adapters.HTTPAdapter):
    """Checks TLS certificates against one CA bundle. (ccxt passes ``verify=True`` on every
    request, which would override a session-wide CA setting; the adapter is below it.)"""

    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("verify", True) is True:
            kwargs["verify"] = self.ca_file
        return super().send(request, *args, **kwargs)


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


#: Binance's own error codes, classified wherever the exchange is reached. ccxt maps them to
#: its classes only when the request went to Binance's production or testnet host
#: (``binance.get_exceptions_by_url``); behind any other host (a ``base_url`` rewrite, a
#: gateway) they arrive as a plain ``ExchangeError``. Code -> (kind on a read, kind on a
#: create or cancel, reason). Sources: Binance's error codes
#: (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code and
#: https://developers.binance.com/docs/binance-spot-api-docs/errors) and ccxt 4.5's
#: ``binance.exceptions['linear']['exact']`` for the classes it gives them on Binance's host.
EXCHANGE_CODES: dict[int, tuple[ErrorKind, ErrorKind, str]] = {
    # -1003 TOO_MANY_REQUESTS (ccxt: RateLimitExceeded); -1015 TOO_MANY_ORDERS.
    -1003: (ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED, "too many requests"),
    -1015: (ErrorKind.RATE_LIMITED, ErrorKind.RATE_LIMITED, "too many new orders"),
    # -1000 UNKNOWN, -1001 DISCONNECTED (ccxt: OperationFailed), -1006 UNEXPECTED_RESP and
    # -1007 TIMEOUT ("execution status unknown"), -1008 SERVER_BUSY (ccxt linear:
    # OperationFailed): the exchange may have acted on a create or cancel.
    -1000: (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, "unknown error"),
    -1001: (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, "internal error"),
    -1006: (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, "unexpected response, execution status unknown"),
    -1007: (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, "backend timeout, execution status unknown"),
    -1008: (ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, "server overloaded, outcome unknown"),
    # -1021 INVALID_TIMESTAMP (ccxt: InvalidNonce).
    -1021: (ErrorKind.CLOCK, ErrorKind.CLOCK, "timestamp outside the receive window"),
    # -1022 INVALID_SIGNATURE, -2014 BAD_API_KEY_FMT, -2015 REJECTED_MBX_KEY (ccxt:
    # AuthenticationError).
    -1022: (ErrorKind.FATAL, ErrorKind.FATAL, "signature not valid"),
    -2014: (ErrorKind.FATAL, ErrorKind.FATAL, "API key format invalid"),
    -2015: (ErrorKind.FATAL, ErrorKind.FATAL, "API key, IP or permissions invalid"),
    # Order rejections (nothing was done). -2019 MARGIN_NOT_SUFFICIENT (ccxt:
    # InsufficientFunds), -2021 ORDER_WOULD_IMMEDIATELY_TRIGGER, -2022 REDUCE_ONLY_REJECT,
    # -4016 / -4024 (PERCENT_PRICE: price beyond the mark's band), -4045 MAX_STOP_ORDER_EXCEEDED, -4116 DUPLICATED_CLIENT_ORDER_ID, -4120 (a conditional
    # type sent to /fapi/v1/order since 2025-12-09), -4164 MIN_NOTIONAL, -5022
    # GTX_ORDER_REJECT (ccxt: OperationRejected / InvalidOrder / OrderImmediatelyFillable /
    # OrderNotFillable).
    -2010: (ErrorKind.REJECTED, ErrorKind.REJECTED, "order rejected"),
    -2019: (ErrorKind.REJECTED, ErrorKind.REJECTED, "margin insufficient"),
    -2021: (ErrorKind.REJECTED, ErrorKind.REJECTED, "order would immediately trigger"),
    -2022: (ErrorKind.REJECTED, ErrorKind.REJECTED, "reduce-only order rejected"),
    -4016: (ErrorKind.REJECTED, ErrorKind.REJECTED, "limit price above the exchange's band"),
    -4024: (ErrorKind.REJECTED, ErrorKind.REJECTED, "limit price below the exchange's band"),
    -4045: (ErrorKind.REJECTED, ErrorKind.REJECTED, "too many conditional orders on the symbol"),
    -4116: (ErrorKind.REJECTED, ErrorKind.REJECTED, "duplicate client order id"),
    -4120: (ErrorKind.REJECTED, ErrorKind.REJECTED, "conditional order sent to the regular order endpoint"),
    -4164: (ErrorKind.REJECTED, ErrorKind.REJECTED, "below the minimum notional"),
    -5022: (ErrorKind.REJECTED, ErrorKind.REJECTED, "post-only order would take"),
}

_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


def exchange_error_code(error: BaseException) -> int | None:
    """The exchange's own error code in a ccxt error (ccxt puts the response body, with its
    ``{"code": -2019, "msg": ...}``, in the message), or None."""
    text = str(error)
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), int):
            return int(body["code"])
    found = _CODE.search(text)
    return int(found.group(1)) if found else None


def error_reason(error: BaseException) -> str | None:
    """What the exchange's own code says happened (``margin insufficient``, ...), or None."""
    code = exchange_error_code(error)
    return EXCHANGE_CODES[code][2] if code in EXCHANGE_CODES else None


def classify(error: BaseException, *, write: bool) -> ErrorKind:
    """The kind of ``error`` raised by a read (``write=False``) or a create/cancel.

    By the exchange's own error code first (:data:`EXCHANGE_CODES`: the same kind whichever
    host answered), then by ccxt's class (:data:`TAXONOMY`). ccxt's DDoSProtection stands:
    it also marks what ccxt knows from more than the code (HTTP 418/429; Binance's -2015
    after a successful login is a temporary ban)."""
    if isinstance(error, ccxt.BaseError) and not isinstance(error, ccxt.DDoSProtection):
        code = exchange_error_code(error)
        if code in EXCHANGE_CODES:
            on_read, on_write, _ = EXCHANGE_CODES[code]
            return on_write if write else on_read
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


def parse_markets(
    markets: dict[str, Any], precision_mode: int = ccxt.TICK_SIZE, market_type: str = "spot"
) -> dict[str, MarketRules]:
    """ccxt's loaded spot markets (or, with ``market_type="swap"``, linear perpetuals) as
    our market rules (tick, lot, minimums, fees). A market without usable precision is left
    out (it cannot be traded safely)."""
    out = {}
    for symbol, m in markets.items():
        if market_type == "swap":
            if not (m.get("swap") and m.get("linear")):
                continue
        elif not m.get("spot") or m.get("type") != "spot":
            continue
        precision, limits = m["precision"], m["limits"]
        try:
            tick, price_digits = _precision(precision.get("price"), precision_mode)
            lot, amount_digits = _precision(precision.get("amount"), precision_mode)
        except (ValueError, TypeError, ArithmeticError):
            continue
        out[symbol] = MarketRules(
            symbol=symbol,
            base=m.get("base") or symbol.partition("/")[0],
            quote=m.get("quote") or symbol.partition("/")[2],
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
    market_type = "swap" if client.options.get("defaultType") == "swap" else "spot"
    return parse_markets(client.load_markets(), client.precisionMode, market_type)


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
    client: ccxt.Exchange, symbol: str, side: Side, amount: Decimal, price: Decimal, client_order_id: str,
    *, reduce_only: bool = False, post_only: bool = False,
) -> ExchangeOrder:
    """A GTC limit order; ``reduce_only`` (derivatives: never increases the position) and
    ``post_only`` (rejected rather than taking) are sent only when set."""
    params: dict[str, Any] = {"clientOrderId": client_order_id}
    if reduce_only:
        params["reduceOnly"] = True
    if post_only:
        params["postOnly"] = True
    order = client.create_order(symbol, "limit", side.value, float(amount), float(price), params=params)
    return parse_order(order)


def _cancel_order(client: ccxt.Exchange, exchange_order_id: str, symbol: str) -> ExchangeOrder | None:
    """The order as the exchange ended it (its ``filled`` counts trades it may report
    later), or None when the answer says nothing of it."""
    order = client.cancel_order(exchange_order_id, symbol)
    if not order or order.get("id") is None or order.get("side") is None or order.get("filled") is None:
        return None  # the answer does not say what had filled: the order is looked up
    return parse_order(order)


# ------------------------------------------------------- spot OCO order lists (binance)


def _order_list(client: ccxt.Exchange, answer: dict[str, Any], symbol: str) -> ExchangeOrderList:
    """Binance's order list answer; its legs from ``orderReports`` when the answer has
    them (a placement, a cancel), else each looked up (a query lists only their ids)."""
    reports = answer.get("orderReports")
    if reports:
        legs = [client.parse_order(report, client.market(symbol)) for report in reports]
    else:
        legs = [client.fetch_order(str(o["orderId"]), symbol) for o in answer.get("orders") or []]
    return ExchangeOrderList(str(answer["orderListId"]), answer.get("listClientOrderId") or "", symbol,
                             tuple(parse_order(leg) for leg in legs))


def _create_oco_sell(
    client: ccxt.Exchange, symbol: str, amount: Decimal, take_profit_price: Decimal, stop_price: Decimal,
    stop_limit_price: Decimal, list_client_order_id: str, above_client_order_id: str, below_client_order_id: str,
) -> ExchangeOrderList:
    """``POST /api/v3/orderList/oco`` (ccxt 4.5 binance: ``privatePostOrderListOco``; its
    unified ``create_order`` has no OCO): a sell of ``amount``, a ``LIMIT_MAKER`` above at
    ``take_profit_price`` and a ``STOP_LOSS_LIMIT`` below, triggering at ``stop_price``
    with its limit at ``stop_limit_price``. Limit types only: never ``STOP_LOSS`` or
    ``TAKE_PROFIT`` (market)."""
    answer = client.privatePostOrderListOco({
        "symbol": client.market_id(symbol), "side": "SELL",
        "quantity": client.amount_to_precision(symbol, float(amount)),
        "listClientOrderId": list_client_order_id,
        "aboveType": "LIMIT_MAKER", "aboveClientOrderId": above_client_order_id,
        "abovePrice": client.price_to_precision(symbol, float(take_profit_price)),
        "belowType": "STOP_LOSS_LIMIT", "belowClientOrderId": below_client_order_id,
        "belowStopPrice": client.price_to_precision(symbol, float(stop_price)),
        "belowPrice": client.price_to_precision(symbol, float(stop_limit_price)), "belowTimeInForce": "GTC",
    })
    return _order_list(client, answer, symbol)


def _cancel_order_list(client: ccxt.Exchange, order_list_id: str, symbol: str) -> ExchangeOrderList:
    """``DELETE /api/v3/orderList``: both legs end; the answer says what each had filled."""
    answer = client.privateDeleteOrderList({"symbol": client.market_id(symbol), "orderListId": order_list_id})
    return _order_list(client, answer, symbol)


def _fetch_order_list(client: ccxt.Exchange, order_list_id: str, symbol: str) -> ExchangeOrderList:
    """``GET /api/v3/orderList`` by its id, each leg looked up."""
    return _order_list(client, client.privateGetOrderList({"orderListId": order_list_id}), symbol)


def _fetch_order_list_by_client_id(client: ccxt.Exchange, list_client_order_id: str, symbol: str) -> ExchangeOrderList:
    """``GET /api/v3/orderList`` by its ``listClientOrderId`` (Binance's ``origClientOrderId``)."""
    return _order_list(client, client.privateGetOrderList({"origClientOrderId": list_client_order_id}), symbol)


# ------------------------------------------------------- derivatives (swap)


def parse_position(position: dict[str, Any]) -> ExchangePosition:
    """One ccxt position dict (one-way mode) as a record; ``contracts`` signed by ``side``."""
    contracts = _d(position.get("contracts") or 0) * _d(position.get("contractSize") or 1)
    size = -contracts if position.get("side") == "short" else contracts
    leverage = position.get("leverage")

    def optional(name: str) -> Decimal | None:
        value = position.get(name)
        return None if value in (None, 0) else _d(value)

    return ExchangePosition(
        symbol=position["symbol"],
        size=size,
        entry_price=_d(position.get("entryPrice") or 0),
        margin_mode=position.get("marginMode") or "cross",
        leverage=_d(leverage) if leverage else None,
        mark_price=optional("markPrice"),
        unrealized_pnl=_d(position.get("unrealizedPnl") or 0),
        liquidation_price=optional("liquidationPrice"),
        isolated_margin=_d(position.get("collateral") or 0) if position.get("marginMode") == "isolated" else Decimal(0),
    )


def parse_conditional_order(order: dict[str, Any]) -> ExchangeConditionalOrder:
    """One ccxt conditional order dict (``params={'trigger': True}`` listings)."""
    base = parse_order(order)
    info = order.get("info") or {}
    kind = "take_profit" if order.get("takeProfitPrice") or str(info.get("orderType", "")).startswith("TAKE_PROFIT") else "stop"
    return ExchangeConditionalOrder(
        *attrs.astuple(base, recurse=False),
        trigger_price=_d(order.get("triggerPrice") or order.get("stopPrice") or 0),
        kind=kind,
        reduce_only=bool(order.get("reduceOnly")),
        child_order_id=str(info.get("actualOrderId") or ""),
        exchange_status=str(info.get("algoStatus") or info.get("status") or ""),
    )


def parse_income(entry: dict[str, Any], markets_by_id: dict[str, Any] | None = None) -> ExchangeIncome:
    """One ccxt ledger entry as signed income (ccxt gives the size and a direction). The
    exchange's own type and market id are read from the raw entry when it has them (ccxt's
    ledger keeps neither: FUNDING_FEE and COMMISSION are both its ``fee``)."""
    info = entry.get("info") or {}
    amount = _d(entry.get("amount") or 0)
    market = (markets_by_id or {}).get(info.get("symbol") or "")
    return ExchangeIncome(
        income_id=str(entry.get("id") or ""),
        symbol=entry.get("symbol") or (market[0]["symbol"] if isinstance(market, list) and market else ""),
        kind=str(info.get("incomeType") or entry.get("type") or ""),
        amount=-amount if entry.get("direction") == "out" else amount,
        asset=entry.get("currency") or "",
        at=(entry.get("timestamp") or 0) / 1000,
        trade_id=str(entry.get("referenceId") or ""),
    )


def _fetch_positions(client: ccxt.Exchange, symbols: list[str] | None = None) -> list[ExchangePosition]:
    """The open positions (flat ones are left out)."""
    return [p for p in map(parse_position, client.fetch_positions(symbols)) if p.size]


def _fetch_leverage(client: ccxt.Exchange, symbol: str) -> tuple[Decimal, str]:
    """(leverage, margin mode) set for ``symbol``."""
    answer = client.fetch_leverage(symbol)
    return _d(answer.get("longLeverage") or answer.get("shortLeverage")), answer.get("marginMode") or "cross"


def _set_leverage(client: ccxt.Exchange, symbol: str, leverage: int) -> None:
    client.set_leverage(leverage, symbol)


def _fetch_leverages(client: ccxt.Exchange, symbols: list[str]) -> dict[str, tuple[Decimal, str]]:
    """symbol -> (leverage, margin mode) set on the account, for every symbol in ``symbols``
    the exchange answers for. One request for them all (binanceusdm: ``GET
    /fapi/v1/symbolConfig``): Binance's ``/fapi/v3/positionRisk``, which ``fetch_positions``
    reads, carries no leverage, so a change made outside is seen only here."""
    out: dict[str, tuple[Decimal, str]] = {}
    for symbol, answer in client.fetch_leverages(symbols).items():
        leverage = answer.get("longLeverage") or answer.get("shortLeverage")
        if symbol in symbols and leverage:
            out[symbol] = (_d(leverage), answer.get("marginMode") or "cross")
    return out


def _set_margin_mode(client: ccxt.Exchange, symbol: str, margin_mode: str) -> tuple[Decimal, str]:
    """Set ``cross`` or ``isolated``; already so is no error. Answers the (leverage, margin
    mode) the account held just before (``fetch_leverage``), so that the connection can say
    what it changed at start."""
    found = _fetch_leverage(client, symbol)
    try:
        client.set_margin_mode(margin_mode, symbol)
    except ccxt.MarginModeAlreadySet:
        pass
    return found


def _create_conditional_order(
    client: ccxt.Exchange, symbol: str, side: Side, amount: Decimal, price: Decimal, trigger_price: Decimal,
    client_order_id: str, *, kind: str = "stop", reduce_only: bool = True,
) -> ExchangeConditionalOrder:
    """A stop-limit (``kind="stop"``) or take-profit-limit: type ``limit`` with ccxt's
    ``stopLossPrice`` / ``takeProfitPrice`` (binanceusdm sends STOP / TAKE_PROFIT to the algo
    order endpoint). Never a market type."""
    if kind not in ("stop", "take_profit"):
        raise ValueError(f"kind must be stop or take_profit, got {kind!r}")
    params: dict[str, Any] = {"clientOrderId": client_order_id,
                              "stopLossPrice" if kind == "stop" else "takeProfitPrice": float(trigger_price)}
    if reduce_only:
        params["reduceOnly"] = True
    return parse_conditional_order(client.create_order(symbol, "limit", side.value, float(amount), float(price), params=params))


def _fetch_open_conditional_orders(client: ccxt.Exchange, symbol: str) -> list[ExchangeConditionalOrder]:
    return [parse_conditional_order(o) for o in client.fetch_open_orders(symbol, params={"trigger": True})]


def _fetch_conditional_order(client: ccxt.Exchange, exchange_order_id: str, symbol: str) -> ExchangeConditionalOrder:
    return parse_conditional_order(client.fetch_order(exchange_order_id, symbol, params={"trigger": True}))


def _cancel_conditional_order(client: ccxt.Exchange, exchange_order_id: str, symbol: str) -> None:
    client.cancel_order(exchange_order_id, symbol, params={"trigger": True})


def _fetch_conditional_order_by_client_id(client: ccxt.Exchange, client_order_id: str, symbol: str) -> ExchangeConditionalOrder:
    # Binance looks a conditional order up by ``clientAlgoId``; ccxt passes it through.
    return parse_conditional_order(client.fetch_order(None, symbol, params={"trigger": True, "clientAlgoId": client_order_id}))


def parse_margin_accounts(balance: dict[str, Any]) -> dict[str, MarginAccount]:
    """ccxt's ``fetch_balance`` of a USD-M account as margin per asset, read from the raw
    ``/fapi/v3/account`` answer (ccxt's unified ``total`` is the margin balance, which counts
    unrealized P&L: the wallet is only in the raw ``assets``). An exchange whose answer has
    no such list falls back to ccxt's total and free."""
    info = balance.get("info") or {}
    assets = info.get("assets") if isinstance(info, dict) else None
    out: dict[str, MarginAccount] = {}
    if isinstance(assets, list) and assets:
        for entry in assets:
            asset = str(entry.get("asset") or "")
            if not asset:
                continue
            out[asset] = MarginAccount(
                asset, _d(entry.get("walletBalance") or 0), _d(entry.get("availableBalance") or 0),
                _d(entry.get("marginBalance") or entry.get("walletBalance") or 0),
            )
        return out
    for asset, total in (balance.get("total") or {}).items():
        if total is not None:
            free = (balance.get("free") or {}).get(asset)
            out[asset] = MarginAccount(asset, _d(total), _d(free if free is not None else total), _d(total))
    return out


def _fetch_margin_account(client: ccxt.Exchange) -> dict[str, MarginAccount]:
    return parse_margin_accounts(client.fetch_balance())


def _fetch_forced_order_ids(client: ccxt.Exchange, symbol: str) -> frozenset[str]:
    """Exchange order ids of the account's recent forced orders on ``symbol`` (liquidations;
    Binance's ``/fapi/v1/forceOrders``): their trades carry these ids."""
    ids = set()
    for liquidation in client.fetch_my_liquidations(symbol):
        order_id = (liquidation.get("info") or {}).get("orderId")
        if order_id is not None:
            ids.add(str(order_id))
    return frozenset(ids)


def _fetch_income(client: ccxt.Exchange, asset: str, since_ms: int | None = None, limit: int | None = None) -> list[ExchangeIncome]:
    return [parse_income(e, client.markets_by_id) for e in client.fetch_ledger(asset, since_ms, limit)]


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
    # spot OCO order lists (binance)
    "create_oco_sell": _create_oco_sell,
    "cancel_order_list": _cancel_order_list,
    "fetch_order_list": _fetch_order_list,
    "fetch_order_list_by_client_id": _fetch_order_list_by_client_id,
    # derivatives (market_type swap)
    "fetch_positions": _fetch_positions,
    "fetch_leverage": _fetch_leverage,
    "fetch_leverages": _fetch_leverages,
    "set_leverage": _set_leverage,
    "set_margin_mode": _set_margin_mode,
    "create_conditional_order": _create_conditional_order,
    "fetch_open_conditional_orders": _fetch_open_conditional_orders,
    "fetch_conditional_order": _fetch_conditional_order,
    "fetch_conditional_order_by_client_id": _fetch_conditional_order_by_client_id,
    "fetch_margin_account": _fetch_margin_account,
    "fetch_forced_order_ids": _fetch_forced_order_ids,
    "cancel_conditional_order": _cancel_conditional_order,
    "fetch_income": _fetch_income,
}


def perform(client: ccxt.Exchange, operation: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
    """Run one operation on a worker thread: call ccxt, parse the answer into records.

    Raises what ccxt raised, with ``retry_after`` set (see :func:`call`)."""
    function = OPERATIONS[operation]
    return call(lambda: function(client, *args, **(kwargs or {})))

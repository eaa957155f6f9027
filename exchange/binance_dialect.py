"""Binance's spot REST dialect, as ``ccxt.binance`` uses it, over the simulated exchange.

Sans-IO: a request (method, path, query, body, headers) and the time go in; a status,
headers and a JSON body come out. The sandbox server is the thin shell around it.

Endpoints: ``GET /api/v3/ping``, ``/time``, ``/exchangeInfo``, ``/ticker/24hr``,
``/klines``; signed: ``GET /api/v3/account``, ``POST|GET|DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``. Signed requests carry the API key in
``X-MBX-APIKEY`` and an HMAC-SHA256 of the query string followed by the body; errors are
Binance's codes and messages, so ccxt raises its real exceptions.

Candles come in two ways. By default the replay's historical candles are listed with their
own timestamps as they are released (closed ones only: their times have nothing to do with
the server's clock). With ``candles_on_server_clock``, candles live on the server's clock
as on a real exchange: each ``interval_ms`` long, opening at multiples of it, the replay's
next candle filling the next interval; klines list the forming candle last, with the values
it has so far, exactly as Binance does.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import parse_qsl

import attrs

from exchange.candles import Candle
from exchange.matching import Rejection, SimOrder, SimulatedExchange
from exchange.records import ExchangeTrade, Side
from exchange.replay import ReplayFeed

# Binance error codes used here (https://developers.binance.com/docs/binance-spot-api-docs/errors).
UNKNOWN = -1000
DISCONNECTED = -1001
TOO_MANY_REQUESTS = -1003
INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
BAD_PARAMETER = -1100
MANDATORY_PARAM_MISSING = -1102
BAD_SYMBOL = -1121
NO_SUCH_ORDER = -2013
REJECTED_MBX_KEY = -2015

RECV_WINDOW_MS = 5000


@attrs.frozen
class Request:
    method: str
    path: str
    query_string: str
    body: str
    api_key: str | None

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True)) | dict(
            parse_qsl(self.body, keep_blank_values=True)
        )


@attrs.frozen
class Response:
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, {"code": code, "msg": message}, headers)


class BinanceDialect:
    """One simulated Binance spot account behind Binance's REST paths."""

    #: What the sandbox's ``reject`` fault answers an order (a POST): Binance spot's
    #: -2010 NEW_ORDER_REJECTED with its most common message.
    REJECT_ORDER = (-2010, "Account has insufficient balance for requested action.")

    def __init__(
        self,
        exchange: SimulatedExchange,
        feeds: Mapping[str, ReplayFeed],
        api_key: str,
        secret: str,
        interval_ms: int = 3_600_000,
        candles_on_server_clock: bool = False,
    ) -> None:
        self.exchange = exchange
        self.feeds = dict(feeds)
        self.api_key = api_key
        self._secret = secret.encode()
        self.interval_ms = interval_ms
        self.candles_on_server_clock = candles_on_server_clock
        #: Server-clock candles: the opening time (ms) of each market's first candle.
        self._first_open_ms: dict[str, int] = {}
        # Binance ids: "BTCUSDT" <-> ccxt's "BTC/USDT".
        self.ids = {symbol.replace("/", ""): symbol for symbol in exchange.markets}
        self.closed: dict[str, list[Candle]] = {symbol: [] for symbol in exchange.markets}
        self.fills: list[ExchangeTrade] = []

    # ------------------------------------------------------------- the market

    def advance(self, clock: float, now_ms: int) -> list[ExchangeTrade]:
        """Close the candles due by ``clock`` and match resting orders against each."""
        fills = []
        for symbol, feed in self.feeds.items():
            due = self._due_on_server_clock(symbol, feed, now_ms) if self.candles_on_server_clock else feed.due(clock)
            for candle in due:
                self.closed[symbol].append(candle)
                fills += self.exchange.match(symbol, candle, now_ms / 1000)
        self.fills += fills
        return fills

    def _due_on_server_clock(self, symbol: str, feed: ReplayFeed, now_ms: int) -> list[Candle]:
        """The replay's candles whose interval of the server's clock has ended, stamped
        with their opening time on that clock."""
        first = self._first_open_ms.setdefault(symbol, now_ms - now_ms % self.interval_ms)
        ended = (now_ms - first) // self.interval_ms
        due = []
        while feed.cursor - feed.start_index < ended and not feed.finished:
            opened = first + (feed.cursor - feed.start_index) * self.interval_ms
            due.append(attrs.evolve(feed.candles[feed.cursor], ts=opened // 1000))
            feed.take_next()
        return due

    def _forming(self, symbol: str, now_ms: int) -> Candle | None:
        """The candle forming now on the server's clock, with the values it has so far: the
        replay's next candle, its close moved from the open toward the final close in
        proportion to the time gone (so it differs from the final candle until it ends)."""
        feed = self.feeds[symbol]
        first = self._first_open_ms.get(symbol)
        if first is None or feed.finished:
            return None
        opened = first + (feed.cursor - feed.start_index) * self.interval_ms
        if not opened <= now_ms < opened + self.interval_ms:
            return None
        final = feed.candles[feed.cursor]
        gone = Decimal(now_ms - opened) / self.interval_ms
        close = (final.open + (final.close - final.open) * gone).quantize(final.close)
        volume = (final.volume * gone).quantize(final.volume)
        return Candle(opened // 1000, final.open, max(final.open, close), min(final.open, close), close, volume)

    def fill_now(self, client_order_id: str, now_ms: int) -> ExchangeTrade | Rejection:
        """A counterparty takes all that is left of an open order now."""
        trade = self.exchange.fill_whole(client_order_id, now_ms / 1000)
        if isinstance(trade, ExchangeTrade):
            self.fills.append(trade)
        return trade

    #: (method, path) -> (handler, signed); set below the class (a dialect has its own).
    ROUTES: dict[tuple[str, str], tuple[Any, bool]] = {}

    @classmethod
    def is_signed(cls, method: str, path: str) -> bool:
        """The request must carry a timestamp and a signature."""
        route = cls.ROUTES.get((method, path))
        return route is not None and route[1]

    # ---------------------------------------------------------------- routing

    def handle(self, request: Request, now_ms: int) -> Response:
        route = self.ROUTES.get((request.method, request.path))
        if route is None:
            return error(404, UNKNOWN, f"Unknown endpoint {request.method} {request.path}.")
        handler, signed = route
        params = request.params
        if signed:
            problem = self._authenticate(request, params, now_ms)
            if problem is not None:
                return problem
        try:
            return handler(self, params, now_ms)
        except BadRequest as bad:
            return error(400, bad.code, bad.message)

    def _authenticate(self, request: Request, params: dict[str, str], now_ms: int) -> Response | None:
        if request.api_key is None or not hmac.compare_digest(request.api_key, self.api_key):
            return error(401, REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for action.")
        signature = params.get("signature")
        if not signature:
            return error(400, MANDATORY_PARAM_MISSING, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        # Binance signs the query string followed by the body, without the signature itself.
        query = "&".join(p for p in request.query_string.split("&") if p and not p.startswith("signature="))
        body = "&".join(p for p in request.body.split("&") if p and not p.startswith("signature="))
        expected = hmac.new(self._secret, (query + body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return error(400, INVALID_SIGNATURE, "Signature for this request is not valid.")
        try:
            timestamp = int(params.get("timestamp", ""))
        except ValueError:
            return error(400, MANDATORY_PARAM_MISSING, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        window = int(params.get("recvWindow", RECV_WINDOW_MS))
        if timestamp > now_ms + 1000 or now_ms - timestamp > window:
            return error(400, INVALID_TIMESTAMP, "Timestamp for this request is outside of the recvWindow.")
        return None

    # -------------------------------------------------------------- public

    def ping(self, params: dict[str, str], now_ms: int) -> Response:
        return Response(200, {})

    def time(self, params: dict[str, str], now_ms: int) -> Response:
        return Response(200, {"serverTime": now_ms})

    def exchange_info(self, params: dict[str, str], now_ms: int) -> Response:
        symbols = []
        for market_id, symbol in self.ids.items():
            m = self.exchange.markets[symbol]
            symbols.append(
                {
                    "symbol": market_id,
                    "status": "TRADING" if m.active else "BREAK",
                    "baseAsset": m.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": m.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER"],
                    "icebergAllowed": False,
                    "ocoAllowed": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": ["SPOT"],
                    "permissionSets": [["SPOT"]],
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": str(m.tick_size), "maxPrice": "10000000", "tickSize": str(m.tick_size)},
                        {"filterType": "LOT_SIZE", "minQty": str(m.min_amount), "maxQty": "100000", "stepSize": str(m.lot_size)},
                        {"filterType": "NOTIONAL", "minNotional": str(m.min_notional), "applyMinToMarket": True, "maxNotional": "100000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                    ],
                }
            )
        return Response(200, {"timezone": "UTC", "serverTime": now_ms, "rateLimits": [], "exchangeFilters": [], "symbols": symbols})

    def ticker_24hr(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        candles = self.closed[symbol][-24:] or [self.feeds[symbol].candles[self.feeds[symbol].cursor]]
        last, first = candles[-1], candles[0]
        return Response(
            200,
            {
                "symbol": params["symbol"],
                "priceChange": str(last.close - first.open),
                "priceChangePercent": str(round((last.close - first.open) / first.open * 100, 3)),
                "weightedAvgPrice": str(last.close),
                "prevClosePrice": str(first.open),
                "lastPrice": str(last.close),
                "lastQty": "0",
                "bidPrice": str(last.close),
                "bidQty": "0",
                "askPrice": str(last.close),
                "askQty": "0",
                "openPrice": str(first.open),
                "highPrice": str(max(c.high for c in candles)),
                "lowPrice": str(min(c.low for c in candles)),
                "volume": str(sum(c.volume for c in candles)),
                "quoteVolume": str(sum(c.volume * c.close for c in candles)),
                "openTime": first.ts * 1000,
                "closeTime": now_ms,
                "firstId": 0,
                "lastId": 0,
                "count": len(candles),
            },
        )

    def klines(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        limit = min(int(params.get("limit", 500)), 1000)
        candles = list(self.closed[symbol])
        forming = self._forming(symbol, now_ms) if self.candles_on_server_clock else None
        if forming is not None:
            candles.append(forming)
        if "startTime" in params:
            start = int(params["startTime"])
            candles = [c for c in candles if c.ts * 1000 >= start][:limit]
        else:
            candles = candles[-limit:]
        return Response(200, [self._kline_json(c) for c in candles])

    # -------------------------------------------------------------- private

    def account(self, params: dict[str, str], now_ms: int) -> Response:
        return Response(
            200,
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "updateTime": now_ms,
                "accountType": "SPOT",
                "balances": [
                    {"asset": asset, "free": str(b.free), "locked": str(b.used)}
                    for asset, b in sorted(self.exchange.balances.items())
                ],
                "permissions": ["SPOT"],
            },
        )

    def new_order(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        if params.get("type") not in ("LIMIT", "LIMIT_MAKER"):
            raise BadRequest(-1116, "Invalid orderType.")  # limitline's sandbox takes limit orders only
        side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", ""))
        if side is None:
            raise BadRequest(BAD_PARAMETER, "Illegal characters found in parameter 'side'; legal range is 'BUY', 'SELL'.")
        try:
            amount, price = Decimal(params["quantity"]), Decimal(params["price"])
        except (KeyError, ArithmeticError):
            raise BadRequest(MANDATORY_PARAM_MISSING, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, or malformed.") from None
        cid = params.get("newClientOrderId") or f"sandbox-{now_ms}"
        result = self.exchange.create_limit_order(
            symbol, side, amount, price, cid, now_ms / 1000, post_only=params.get("type") == "LIMIT_MAKER"
        )
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        self.fills += self.exchange.trades_of(result.exchange_order_id)  # it crossed: taken at once
        return Response(200, self._order_json(result, now_ms) | {"transactTime": now_ms, "fills": []})

    def query_order(self, params: dict[str, str], now_ms: int) -> Response:
        self._symbol(params)
        order = self.find(params)
        if order is None:
            return error(400, NO_SUCH_ORDER, "Order does not exist.")
        return Response(200, self._order_json(order, now_ms))

    def cancel_order(self, params: dict[str, str], now_ms: int) -> Response:
        self._symbol(params)
        order = self.find(params)
        if order is None:
            return error(400, -2011, "Unknown order sent.")
        result = self.exchange.cancel_order(order.client_order_id)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, self._order_json(result, now_ms))

    def new_oco_order_list(self, params: dict[str, str], now_ms: int) -> Response:
        """``POST /api/v3/orderList/oco``: the sell that protects held coins, a
        ``LIMIT_MAKER`` above and a ``STOP_LOSS_LIMIT`` below (limit orders only: the
        ``STOP_LOSS`` and ``TAKE_PROFIT`` market types are refused, as every market type is)."""
        symbol = self._symbol(params)
        if params.get("side") != "SELL":
            raise BadRequest(-1116, "Invalid orderType.")  # the sandbox offers the protective sell only
        if params.get("aboveType") != "LIMIT_MAKER" or params.get("belowType") != "STOP_LOSS_LIMIT":
            raise BadRequest(-1116, "Invalid orderType.")  # limitline's sandbox takes limit orders only
        if params.get("belowTimeInForce") not in (None, "GTC"):
            raise BadRequest(BAD_PARAMETER, "Illegal characters found in parameter 'belowTimeInForce'.")
        try:
            amount = Decimal(params["quantity"])
            above, below, stop = Decimal(params["abovePrice"]), Decimal(params["belowPrice"]), Decimal(params["belowStopPrice"])
        except (KeyError, ArithmeticError):
            raise BadRequest(MANDATORY_PARAM_MISSING, "Mandatory parameter 'quantity', 'abovePrice', 'belowPrice' or "
                             "'belowStopPrice' was not sent, was empty/null, or malformed.") from None
        list_id = params.get("listClientOrderId") or f"sandbox-list-{now_ms}"
        result = self.exchange.create_oco_sell(
            symbol, amount, above, stop, below, list_id, params.get("aboveClientOrderId") or f"{list_id}-above",
            params.get("belowClientOrderId") or f"{list_id}-below", now_ms / 1000,
        )
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, self._list_json(list_id, now_ms))

    def cancel_order_list(self, params: dict[str, str], now_ms: int) -> Response:
        """``DELETE /api/v3/orderList`` by ``orderListId`` or ``listClientOrderId``."""
        self._symbol(params)
        list_id = self._list_id(params)
        result = self.exchange.cancel_order_list(list_id) if list_id is not None else None
        if result is None or isinstance(result, Rejection):
            return error(400, -2011, "Order list does not exist.")
        return Response(200, self._list_json(list_id, now_ms))  # type: ignore[arg-type]

    def query_order_list(self, params: dict[str, str], now_ms: int) -> Response:
        """``GET /api/v3/orderList`` by ``orderListId`` or ``origClientOrderId``."""
        list_id = self._list_id(params, client_key="origClientOrderId")
        if list_id is None:
            return error(400, NO_SUCH_ORDER, "Order list does not exist.")
        body = self._list_json(list_id, now_ms)
        del body["orderReports"]
        return Response(200, body)

    def open_order_lists(self, params: dict[str, str], now_ms: int) -> Response:
        """``GET /api/v3/openOrderList``: the lists with a leg still open."""
        lists = dict.fromkeys(o.list_client_id for o in self.exchange.open_orders() if o.list_client_id)
        out = []
        for list_id in lists:
            body = self._list_json(list_id, now_ms)  # type: ignore[arg-type]
            del body["orderReports"]
            out.append(body)
        return Response(200, out)

    def _list_id(self, params: dict[str, str], client_key: str = "listClientOrderId") -> str | None:
        if "orderListId" in params:
            order = self.exchange.orders.get(params["orderListId"])  # a list's id is its above leg's
            return order.list_client_id if order is not None else None
        list_id = params.get(client_key)
        return list_id if list_id and self.exchange.order_list(list_id) else None

    def _list_json(self, list_id: str, now_ms: int) -> dict[str, Any]:
        legs = self.exchange.order_list(list_id)
        done = all(leg.status != "open" for leg in legs)
        symbol = legs[0].symbol.replace("/", "")
        return {
            "orderListId": int(legs[0].exchange_order_id),
            "contingencyType": "OCO",
            "listStatusType": "ALL_DONE" if done else "EXEC_STARTED",
            "listOrderStatus": "ALL_DONE" if done else "EXECUTING",
            "listClientOrderId": list_id,
            "transactionTime": now_ms,
            "symbol": symbol,
            # Binance lists the below (stop) leg first.
            "orders": [{"symbol": symbol, "orderId": int(leg.exchange_order_id), "clientOrderId": leg.client_order_id}
                       for leg in reversed(legs)],
            "orderReports": [self._order_json(leg, now_ms) for leg in reversed(legs)],
        }

    def open_orders(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params) if "symbol" in params else None
        return Response(200, [self._order_json(o, now_ms) for o in self.exchange.open_orders(symbol)])

    def my_trades(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        trades = [f for f in self.fills if f.symbol == symbol]
        if "fromId" in params:
            trades = [f for f in trades if int(f.trade_id) >= int(params["fromId"])]
        if "startTime" in params:
            trades = [f for f in trades if f.at * 1000 >= int(params["startTime"])]
        if "orderId" in params:
            trades = [f for f in trades if f.exchange_order_id == params["orderId"]]
        limit = min(int(params.get("limit", 500)), 1000)
        return Response(200, [self._trade_json(f) for f in trades[:limit]])

    # ------------------------------------------------------------- helpers

    def _symbol(self, params: dict[str, str]) -> str:
        symbol = self.ids.get(params.get("symbol", ""))
        if symbol is None:
            raise BadRequest(BAD_SYMBOL, "Invalid symbol.")
        return symbol

    def find(self, params: dict[str, str]) -> SimOrder | None:
        """The order a request names (``orderId`` or ``origClientOrderId``), or None."""
        if "orderId" in params:
            return self.exchange.orders.get(params["orderId"])
        cid = params.get("origClientOrderId")
        return self.exchange.order_by_client_id(cid) if cid else None

    def _order_json(self, order: SimOrder, now_ms: int) -> dict[str, Any]:
        status = {"open": "PARTIALLY_FILLED" if order.filled else "NEW", "closed": "FILLED", "canceled": "CANCELED",
                  "expired": "EXPIRED"}[order.status]
        return {
            "symbol": order.symbol.replace("/", ""),
            "orderId": int(order.exchange_order_id),
            "orderListId": self._order_list_id(order),
            "clientOrderId": order.client_order_id,
            "price": str(order.price),
            "origQty": str(order.amount),
            "executedQty": str(order.filled),
            "cummulativeQuoteQty": str(order.filled * order.price),
            "status": status,
            "timeInForce": "GTC",
            "type": "LIMIT" if order.list_client_id is None else "STOP_LOSS_LIMIT" if order.stop_price else "LIMIT_MAKER",
            "side": order.side.value.upper(),
            "stopPrice": str(order.stop_price or 0),
            "icebergQty": "0",
            "time": int(order.placed_at * 1000),
            "updateTime": now_ms,
            "isWorking": not order.waiting,
            "workingTime": int(order.placed_at * 1000),
            "origQuoteOrderQty": "0",
            "selfTradePreventionMode": "NONE",
        }

    def _order_list_id(self, order: SimOrder | None) -> int:
        """The ``orderListId`` Binance gives an order and its trades: its OCO list's, else -1."""
        if order is None or order.list_client_id is None:
            return -1
        return int(self.exchange.order_list(order.list_client_id)[0].exchange_order_id)

    def _kline_json(self, c: Candle) -> list[Any]:
        return [
            c.ts * 1000, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume),
            c.ts * 1000 + self.interval_ms - 1, str(c.volume * c.close), 0, "0", "0", "0",
        ]

    def _trade_json(self, fill: ExchangeTrade) -> dict[str, Any]:
        return {
            "symbol": fill.symbol.replace("/", ""),
            "id": int(fill.trade_id),
            "orderId": int(fill.exchange_order_id),
            "orderListId": self._order_list_id(self.exchange.orders.get(fill.exchange_order_id)),
            "price": str(fill.price),
            "qty": str(fill.amount),
            "quoteQty": str(fill.price * fill.amount),
            "commission": str(fill.fee),
            "commissionAsset": fill.fee_currency,
            "time": int(fill.at * 1000),
            "isBuyer": fill.side is Side.BUY,
            "isMaker": fill.taker_or_maker != "taker",
            "isBestMatch": True,
        }


class BadRequest(Exception):
    """A request refused with Binance's error ``code`` and ``message`` (HTTP 400)."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


_ROUTES = {
    ("GET", "/api/v3/ping"): (BinanceDialect.ping, False),
    ("GET", "/api/v3/time"): (BinanceDialect.time, False),
    ("GET", "/api/v3/exchangeInfo"): (BinanceDialect.exchange_info, False),
    ("GET", "/api/v3/ticker/24hr"): (BinanceDialect.ticker_24hr, False),
    ("GET", "/api/v3/klines"): (BinanceDialect.klines, False),
    ("GET", "/api/v3/account"): (BinanceDialect.account, True),
    ("POST", "/api/v3/order"): (BinanceDialect.new_order, True),
    ("GET", "/api/v3/order"): (BinanceDialect.query_order, True),
    ("DELETE", "/api/v3/order"): (BinanceDialect.cancel_order, True),
    ("GET", "/api/v3/openOrders"): (BinanceDialect.open_orders, True),
    ("GET", "/api/v3/myTrades"): (BinanceDialect.my_trades, True),
    ("POST", "/api/v3/orderList/oco"): (BinanceDialect.new_oco_order_list, True),
    ("DELETE", "/api/v3/orderList"): (BinanceDialect.cancel_order_list, True),
    ("GET", "/api/v3/orderList"): (BinanceDialect.query_order_list, True),
    ("GET", "/api/v3/openOrderList"): (BinanceDialect.open_order_lists, True),
}
BinanceDialect.ROUTES = _ROUTES

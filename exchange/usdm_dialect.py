"""Binance USD-M futures REST, as ``ccxt.binanceusdm`` 4.5 uses it, over the simulated
perpetuals engine (:mod:`exchange.perpetuals`).

Sans-IO like the spot dialect it extends (signatures, timestamps, candles and klines are
:class:`exchange.binance_dialect.BinanceDialect`'s). Endpoints (what ccxt 4.5's
``binance.py`` calls for each unified method; see ``/work/shared/notes/ccxt-binanceusdm.md``):

- public: ``GET /fapi/v1/ping``, ``/time``, ``/exchangeInfo``, ``/klines``,
  ``/ticker/24hr``, ``/premiumIndex``;
- account and settings (signed): ``GET /fapi/v3/account`` (``fetch_balance``),
  ``GET /fapi/v3/positionRisk`` and ``/fapi/v2/positionRisk`` (``fetch_positions``; v2
  also carries leverage and margin type), ``GET /fapi/v1/leverageBracket``,
  ``GET /fapi/v1/symbolConfig``, ``GET /fapi/v1/positionSide/dual``,
  ``GET /fapi/v1/commissionRate``, ``POST /fapi/v1/leverage``, ``POST /fapi/v1/marginType``,
  ``POST /fapi/v1/positionMargin``;
- orders (signed): ``POST|GET|DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``,
  ``GET /fapi/v1/allOrders``, ``DELETE /fapi/v1/allOpenOrders``; conditional orders on the
  algo endpoints (Binance moved them there on 2025-12-09; sent to ``/fapi/v1/order`` they get
  -4120): ``POST|GET|DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``,
  ``GET /fapi/v1/allAlgoOrders``, ``DELETE /fapi/v1/algoOpenOrders``;
- ``GET /fapi/v1/userTrades`` (with ``realizedPnl``; a liquidation's trades too),
  ``GET /fapi/v1/income``, ``GET /fapi/v1/forceOrders`` (liquidations).

Limit orders only: a ``MARKET``, ``STOP_MARKET``, ``TAKE_PROFIT_MARKET``,
``TRAILING_STOP_MARKET`` or ``closePosition`` order is refused with -1116 and recorded as a
violation; IOC and FOK are refused with -1115. Every order request is kept in
:attr:`UsdmDialect.order_requests` with its endpoint and type, so a test can show that no
market-type order was ever sent.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from exchange.binance_dialect import (
    BAD_PARAMETER,
    MANDATORY_PARAM_MISSING,
    NO_SUCH_ORDER,
    BadRequest,
    BinanceDialect,
    Response,
    error,
)
from exchange.perpetuals import (
    CODE_INVALID_ORDER_TYPE,
    MARKET_TYPES,
    ConditionalOrder,
    PerpetualExchange,
    PerpetualOrder,
    PerpetualTrade,
)
from exchange.matching import Rejection
from exchange.records import Side
from exchange.replay import ReplayFeed

CODE_INVALID_TIME_IN_FORCE = -1115
CODE_USE_ALGO_ENDPOINT = -4120
CODE_SERVER_BUSY = -1008
#: Binance's text for -1008 (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code).
SERVER_BUSY_MESSAGE = "Server is currently overloaded with other requests. Please try again in a few minutes."
CONDITIONAL_TYPES = ("STOP", "TAKE_PROFIT")
_ORDER_STATUS = {"open": "NEW", "closed": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED"}


def market_id(symbol: str) -> str:
    """Binance's id of a linear perpetual: ``BTC/USDT:USDT`` -> ``BTCUSDT``."""
    return symbol.partition(":")[0].replace("/", "")


def _decimal(params: dict[str, str], name: str) -> Decimal:
    try:
        value = Decimal(params[name])
    except (KeyError, ArithmeticError):
        raise BadRequest(MANDATORY_PARAM_MISSING, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.") from None
    if not value.is_finite():
        raise BadRequest(BAD_PARAMETER, f"Illegal characters found in parameter '{name}'.")
    return value


def _side(params: dict[str, str]) -> Side:
    side = {"BUY": Side.BUY, "SELL": Side.SELL}.get(params.get("side", ""))
    if side is None:
        raise BadRequest(BAD_PARAMETER, "Illegal characters found in parameter 'side'; legal range is 'BUY', 'SELL'.")
    return side


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() == "true"


class UsdmDialect(BinanceDialect):
    """One simulated Binance USD-M futures account behind Binance's ``/fapi`` paths."""

    exchange: PerpetualExchange  # type: ignore[assignment]

    #: The ``reject`` fault on USD-M: -2019 MARGIN_NOT_SUFFICIENT, a futures code that ccxt
    #: maps only on Binance's own host (elsewhere a plain ExchangeError): it exercises the
    #: classification by the exchange's code (``exchange.ccxt_adapter.EXCHANGE_CODES``).
    REJECT_ORDER = (-2019, "Margin is insufficient.")

    def __init__(self, exchange: PerpetualExchange, feeds: Mapping[str, ReplayFeed], api_key: str, secret: str, **candles: Any) -> None:
        super().__init__(exchange, feeds, api_key, secret, **candles)  # type: ignore[arg-type]
        self.ids = {market_id(symbol): symbol for symbol in exchange.markets}
        #: Every order request (regular and algo), accepted or not: endpoint, type, side,
        #: quantity, price, trigger price, reduceOnly, closePosition, the answer's code.
        self.order_requests: list[dict[str, Any]] = []

    # ---------------------------------------------------------- the market

    def fill_now(self, client_order_id: str, now_ms: int) -> PerpetualTrade | Rejection:
        """A counterparty takes all that is left of an open order now, at its price."""
        trade = self.exchange.fill_whole(client_order_id, now_ms / 1000)
        if not isinstance(trade, Rejection):
            self.fills.append(trade)
        return trade

    def find(self, params: dict[str, str]) -> PerpetualOrder | None:  # type: ignore[override]
        if "orderId" in params:
            return self.exchange.find_order(exchange_order_id=params["orderId"])
        cid = params.get("origClientOrderId")
        return self.exchange.find_order(client_order_id=cid) if cid else None

    def _find_algo(self, params: dict[str, str]) -> ConditionalOrder | None:
        if "algoId" in params:
            return self.exchange.find_conditional_order(algo_id=params["algoId"])
        cid = params.get("clientAlgoId")
        return self.exchange.find_conditional_order(client_algo_id=cid) if cid else None

    # --------------------------------------------------------------- public

    def exchange_info(self, params: dict[str, str], now_ms: int) -> Response:
        symbols = []
        for mid, symbol in self.ids.items():
            m = self.exchange.markets[symbol]
            symbols.append({
                "symbol": mid, "pair": mid, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "status": "TRADING" if m.active else "BREAK",
                "maintMarginPercent": str(self.exchange.maintenance_margin_rate * 100),
                "requiredMarginPercent": "5.0000", "baseAsset": m.base, "quoteAsset": m.quote,
                "marginAsset": self.exchange.margin_asset, "pricePrecision": 2, "quantityPrecision": 3,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                # Binance lists the market types too; this venue refuses them (and records it).
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": str(m.tick_size), "maxPrice": "4529764", "tickSize": str(m.tick_size)},
                    {"filterType": "LOT_SIZE", "minQty": str(m.min_amount), "maxQty": "1000", "stepSize": str(m.lot_size)},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": str(m.min_amount), "maxQty": "120", "stepSize": str(m.lot_size)},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": self.exchange.max_conditional_orders},
                    {"filterType": "MIN_NOTIONAL", "notional": str(m.min_notional)},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": str(self.exchange.percent_price[0]),
                     "multiplierDown": str(self.exchange.percent_price[1]), "multiplierDecimal": "4"},
                ],
            })
        return Response(200, {"timezone": "UTC", "serverTime": now_ms, "futuresType": "U_MARGINED", "rateLimits": [],
                              "exchangeFilters": [], "assets": [{"asset": self.exchange.margin_asset, "marginAvailable": True}],
                              "symbols": symbols})

    def premium_index(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        mark = self._mark(symbol)
        interval = self.exchange.funding_interval * 1000
        return Response(200, {
            "symbol": params["symbol"], "markPrice": str(mark), "indexPrice": str(mark), "estimatedSettlePrice": str(mark),
            "lastFundingRate": str(self.exchange.funding_rate), "interestRate": "0.00010000",
            "nextFundingTime": (now_ms // interval + 1) * interval, "time": now_ms,
        })

    def _mark(self, symbol: str) -> Decimal:
        mark = self.exchange.mark_price(symbol)
        if mark is not None:
            return mark
        feed = self.feeds[symbol]
        return feed.candles[min(feed.cursor, len(feed.candles) - 1)].open

    # ---------------------------------------------------- account, settings

    def account_v3(self, params: dict[str, str], now_ms: int) -> Response:
        x = self.exchange
        positions = [self._account_position(s, now_ms) for s, p in x.positions.items() if p.size]
        unrealized = sum((x.unrealized_pnl(s) for s, p in x.positions.items() if p.size), Decimal(0))
        cross_unrealized = sum((x.unrealized_pnl(s) for s, p in x.positions.items() if p.size and p.margin_mode == "cross"), Decimal(0))
        position_im = sum((x.position_initial_margin(s) for s, p in x.positions.items() if p.size), Decimal(0))
        maint = sum((x.maintenance_margin(s) for s, p in x.positions.items() if p.size), Decimal(0))
        order_im = x.order_margin()
        available = x.available_margin()
        asset = {
            "asset": x.margin_asset, "walletBalance": str(x.wallet), "unrealizedProfit": str(unrealized),
            "marginBalance": str(x.wallet + unrealized), "maintMargin": str(maint), "initialMargin": str(position_im + order_im),
            "positionInitialMargin": str(position_im), "openOrderInitialMargin": str(order_im),
            "crossWalletBalance": str(x.cross_wallet()), "crossUnPnl": str(cross_unrealized),
            "availableBalance": str(available), "maxWithdrawAmount": str(max(available, Decimal(0))), "updateTime": now_ms,
        }
        return Response(200, {
            "totalInitialMargin": asset["initialMargin"], "totalMaintMargin": asset["maintMargin"],
            "totalWalletBalance": asset["walletBalance"], "totalUnrealizedProfit": asset["unrealizedProfit"],
            "totalMarginBalance": asset["marginBalance"], "totalPositionInitialMargin": asset["positionInitialMargin"],
            "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"], "totalCrossWalletBalance": asset["crossWalletBalance"],
            "totalCrossUnPnl": asset["crossUnPnl"], "availableBalance": asset["availableBalance"],
            "maxWithdrawAmount": asset["maxWithdrawAmount"], "assets": [asset], "positions": positions,
        })

    def _account_position(self, symbol: str, now_ms: int) -> dict[str, Any]:
        x, pos = self.exchange, self.exchange.positions[symbol]
        return {
            "symbol": market_id(symbol), "positionSide": "BOTH", "positionAmt": str(pos.size),
            "unrealizedProfit": str(x.unrealized_pnl(symbol)),
            "isolatedMargin": str(pos.isolated_wallet + x.unrealized_pnl(symbol)) if pos.margin_mode == "isolated" else "0",
            "notional": str(pos.size * self._mark(symbol)),
            "isolatedWallet": str(pos.isolated_wallet) if pos.margin_mode == "isolated" else "0",
            "initialMargin": str(x.position_initial_margin(symbol)), "maintMargin": str(x.maintenance_margin(symbol)),
            "updateTime": int(pos.updated_at * 1000) or now_ms,
        }

    def position_risk(self, params: dict[str, str], now_ms: int, v2: bool = False) -> Response:
        x = self.exchange
        symbols = [self._symbol(params)] if "symbol" in params else list(x.positions)
        out = []
        for symbol in symbols:
            pos = x.positions[symbol]
            # v3 lists only symbols with a position or open orders; v2 lists every symbol.
            if not v2 and not pos.size and not x.open_orders(symbol):
                continue
            mark = self._mark(symbol)
            liquidation = x.liquidation_price(symbol)
            isolated = pos.margin_mode == "isolated"
            entry = {
                "symbol": market_id(symbol), "positionSide": "BOTH", "positionAmt": str(pos.size),
                "entryPrice": str(pos.entry_price), "breakEvenPrice": str(pos.entry_price), "markPrice": str(mark),
                "unRealizedProfit": str(x.unrealized_pnl(symbol, mark)),
                "liquidationPrice": str(liquidation or 0),
                "isolatedMargin": str(pos.isolated_wallet + x.unrealized_pnl(symbol, mark)) if isolated and pos.size else "0",
                "notional": str(pos.size * mark), "isolatedWallet": str(pos.isolated_wallet) if isolated else "0",
                "updateTime": int(pos.updated_at * 1000),
            }
            if v2:
                entry |= {"leverage": str(pos.leverage), "maxNotionalValue": "1000000", "marginType": pos.margin_mode,
                          "isAutoAddMargin": "false", "isolated": isolated, "adlQuantile": "0"}
            else:
                entry |= {"initialMargin": str(x.position_initial_margin(symbol)),
                          "maintMargin": str(x.maintenance_margin(symbol, mark)),
                          "positionInitialMargin": str(x.position_initial_margin(symbol)),
                          "openOrderInitialMargin": str(sum((o.margin for o in x.open_orders(symbol)), Decimal(0))),
                          "adl": 0, "bidNotional": "0", "askNotional": "0", "marginAsset": x.margin_asset}
            out.append(entry)
        return Response(200, out)

    def position_risk_v2(self, params: dict[str, str], now_ms: int) -> Response:
        return self.position_risk(params, now_ms, v2=True)

    def leverage_bracket(self, params: dict[str, str], now_ms: int) -> Response:
        symbols = [self._symbol(params)] if "symbol" in params else list(self.exchange.markets)
        rate = float(self.exchange.maintenance_margin_rate)
        return Response(200, [
            {"symbol": market_id(s), "notionalCoef": 1.0, "brackets": [
                {"bracket": 1, "initialLeverage": self.exchange.max_leverage, "notionalCap": 9_000_000_000,
                 "notionalFloor": 0, "maintMarginRatio": rate, "cum": 0.0}]}
            for s in symbols
        ])

    def symbol_config(self, params: dict[str, str], now_ms: int) -> Response:
        symbols = [self._symbol(params)] if "symbol" in params else list(self.exchange.markets)
        return Response(200, [
            {"symbol": market_id(s), "marginType": "ISOLATED" if p.margin_mode == "isolated" else "CROSSED",
             "isAutoAddMargin": "false", "leverage": p.leverage, "maxNotionalValue": "1000000"}
            for s in symbols for p in [self.exchange.positions[s]]
        ])

    def position_side(self, params: dict[str, str], now_ms: int) -> Response:
        return Response(200, {"dualSidePosition": False})  # one-way mode only

    def commission_rate(self, params: dict[str, str], now_ms: int) -> Response:
        m = self.exchange.markets[self._symbol(params)]
        return Response(200, {"symbol": params["symbol"], "makerCommissionRate": str(m.maker_fee), "takerCommissionRate": str(m.taker_fee)})

    def set_leverage(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        try:
            leverage = int(params["leverage"])
        except (KeyError, ValueError):
            raise BadRequest(MANDATORY_PARAM_MISSING, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.") from None
        result = self.exchange.set_leverage(symbol, leverage, now_ms / 1000)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": params["symbol"]})

    def set_margin_type(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        mode = {"ISOLATED": "isolated", "CROSSED": "cross", "CROSS": "cross"}.get(params.get("marginType", "").upper())
        if mode is None:
            raise BadRequest(MANDATORY_PARAM_MISSING, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.")
        result = self.exchange.set_margin_mode(symbol, mode, now_ms / 1000)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, {"code": 200, "msg": "success"})

    def position_margin(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        amount = _decimal(params, "amount")
        kind = params.get("type")
        if kind not in ("1", "2") or amount <= 0:
            raise BadRequest(BAD_PARAMETER, "Illegal characters found in parameter 'type'; legal range is '1', '2'.")
        result = self.exchange.adjust_isolated_margin(symbol, amount if kind == "1" else -amount, now_ms / 1000)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, {"amount": float(amount), "code": 200, "msg": "Successfully modify position margin.", "type": int(kind)})

    # --------------------------------------------------------------- orders

    def new_order(self, params: dict[str, str], now_ms: int) -> Response:
        response = self._new_order(params, now_ms)
        self._log_order("/fapi/v1/order", params, response)
        return response

    def _new_order(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        order_type = params.get("type", "")
        refused = self._refuse_market(order_type, symbol, params, now_ms)
        if refused is not None:
            return refused
        if order_type in CONDITIONAL_TYPES:
            return error(400, CODE_USE_ALGO_ENDPOINT, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        if order_type != "LIMIT":
            return error(400, CODE_INVALID_ORDER_TYPE, "Invalid orderType.")
        time_in_force = params.get("timeInForce", "")
        if time_in_force not in ("GTC", "GTX"):
            return error(400, CODE_INVALID_TIME_IN_FORCE, "Invalid timeInForce.")
        side = _side(params)
        amount, price = _decimal(params, "quantity"), _decimal(params, "price")
        cid = params.get("newClientOrderId") or f"sandbox-{now_ms}"
        result = self.exchange.create_limit_order(symbol, side, amount, price, cid, now_ms / 1000,
                                                  post_only=time_in_force == "GTX", reduce_only=_flag(params, "reduceOnly"))
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, self._order_json(result, now_ms))

    def _refuse_market(self, order_type: str, symbol: str, params: dict[str, str], now_ms: int) -> Response | None:
        market_like = order_type in MARKET_TYPES or _flag(params, "closePosition") or "callbackRate" in params
        if not market_like:
            return None
        detail = json.dumps({k: v for k, v in params.items() if k not in ("signature", "timestamp", "recvWindow")}, sort_keys=True)
        refusal = self.exchange.refuse_market_order(order_type or "?", symbol, detail, now_ms / 1000)
        return error(400, refusal.code, refusal.message)

    def new_algo_order(self, params: dict[str, str], now_ms: int) -> Response:
        response = self._new_algo_order(params, now_ms)
        self._log_order("/fapi/v1/algoOrder", params, response)
        return response

    def _new_algo_order(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        if params.get("algoType") != "CONDITIONAL":
            raise BadRequest(BAD_PARAMETER, "Illegal characters found in parameter 'algoType'; legal range is 'CONDITIONAL'.")
        order_type = params.get("type", "")
        refused = self._refuse_market(order_type, symbol, params, now_ms)
        if refused is not None:
            return refused
        if order_type not in CONDITIONAL_TYPES:
            return error(400, CODE_INVALID_ORDER_TYPE, "Invalid orderType.")
        if params.get("timeInForce", "GTC") != "GTC":
            return error(400, CODE_INVALID_TIME_IN_FORCE, "Invalid timeInForce.")
        side = _side(params)
        amount, price, trigger = _decimal(params, "quantity"), _decimal(params, "price"), _decimal(params, "triggerPrice")
        cid = params.get("clientAlgoId") or f"sandbox-algo-{now_ms}"
        result = self.exchange.create_conditional_order(symbol, side, order_type, amount, price, trigger, cid, now_ms / 1000,
                                                        reduce_only=_flag(params, "reduceOnly"))
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, self._algo_json(result, now_ms))

    def _log_order(self, endpoint: str, params: dict[str, str], response: Response) -> None:
        self.order_requests.append({
            "endpoint": endpoint, "type": params.get("type", ""), "side": params.get("side", ""),
            "quantity": params.get("quantity"), "price": params.get("price"), "triggerPrice": params.get("triggerPrice"),
            "timeInForce": params.get("timeInForce"), "reduceOnly": _flag(params, "reduceOnly"),
            "closePosition": _flag(params, "closePosition"),
            "code": response.body.get("code") if response.status != 200 and isinstance(response.body, dict) else None,
        })

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
        result = self.exchange.cancel_order(exchange_order_id=order.exchange_order_id, now=now_ms / 1000)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, self._order_json(result, now_ms))

    def cancel_all(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        for order in self.exchange.open_orders(symbol):
            self.exchange.cancel_order(exchange_order_id=order.exchange_order_id, now=now_ms / 1000)
        return Response(200, {"code": 200, "msg": "The operation of cancel all open order is done."})

    def open_orders(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params) if "symbol" in params else None
        return Response(200, [self._order_json(o, now_ms) for o in self.exchange.open_orders(symbol)])

    def all_orders(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        orders = [o for o in self.exchange.orders.values() if o.symbol == symbol]
        limit = min(int(params.get("limit", 500)), 1000)
        return Response(200, [self._order_json(o, now_ms) for o in orders[-limit:]])

    def query_algo(self, params: dict[str, str], now_ms: int) -> Response:
        algo = self._find_algo(params)
        if algo is None:
            return error(400, NO_SUCH_ORDER, "Order does not exist.")
        return Response(200, self._algo_json(algo, now_ms))

    def cancel_algo(self, params: dict[str, str], now_ms: int) -> Response:
        algo = self._find_algo(params)
        if algo is None:
            return error(400, -2011, "Unknown order sent.")
        result = self.exchange.cancel_conditional_order(algo_id=algo.algo_id, now=now_ms / 1000)
        if isinstance(result, Rejection):
            return error(400, result.code, result.message)
        return Response(200, {"algoId": int(algo.algo_id), "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"})

    def cancel_all_algo(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        for algo in self.exchange.open_conditional_orders(symbol):
            self.exchange.cancel_conditional_order(algo_id=algo.algo_id, now=now_ms / 1000)
        return Response(200, {"code": 200, "msg": "The operation of cancel all open order is done."})

    def open_algo_orders(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params) if "symbol" in params else None
        return Response(200, [self._algo_json(a, now_ms) for a in self.exchange.open_conditional_orders(symbol)])

    def all_algo_orders(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        algos = [a for a in self.exchange.algo_orders.values() if a.symbol == symbol]
        limit = min(int(params.get("limit", 500)), 1000)
        return Response(200, [self._algo_json(a, now_ms) for a in algos[-limit:]])

    def user_trades(self, params: dict[str, str], now_ms: int) -> Response:
        symbol = self._symbol(params)
        trades = [t for t in self.exchange.trades if t.symbol == symbol]
        if "fromId" in params:
            trades = [t for t in trades if int(t.trade_id) >= int(params["fromId"])]
        if "startTime" in params:
            trades = [t for t in trades if t.at * 1000 >= int(params["startTime"])]
        if "orderId" in params:
            trades = [t for t in trades if t.exchange_order_id == params["orderId"]]
        limit = min(int(params.get("limit", 500)), 1000)
        return Response(200, [self._trade_json(t) for t in trades[:limit]])

    def force_orders(self, params: dict[str, str], now_ms: int) -> Response:
        """The forced orders of liquidations (``autoCloseType`` LIQUIDATION; none for ADL)."""
        orders = self.exchange.liquidation_orders
        if "symbol" in params:
            symbol = self._symbol(params)
            orders = [o for o in orders if o.symbol == symbol]
        if params.get("autoCloseType", "LIQUIDATION") != "LIQUIDATION":
            orders = []
        limit = min(int(params.get("limit", 50)), 100)
        return Response(200, [self._order_json(o, now_ms) for o in orders[-limit:]])

    def income(self, params: dict[str, str], now_ms: int) -> Response:
        entries = self.exchange.income
        if "symbol" in params:
            symbol = self._symbol(params)
            entries = [e for e in entries if e.symbol == symbol]
        if "incomeType" in params:
            entries = [e for e in entries if e.income_type == params["incomeType"]]
        if "startTime" in params:
            entries = [e for e in entries if e.at * 1000 >= int(params["startTime"])]
        if "endTime" in params:
            entries = [e for e in entries if e.at * 1000 <= int(params["endTime"])]
        limit = min(int(params.get("limit", 100)), 1000)
        return Response(200, [
            {"symbol": market_id(e.symbol) if e.symbol else "", "incomeType": e.income_type, "income": str(e.amount),
             "asset": e.asset, "info": e.income_type, "time": int(e.at * 1000), "tranId": e.tran_id, "tradeId": e.trade_id}
            for e in entries[:limit]
        ])

    # -------------------------------------------------------------- helpers

    def _order_json(self, order: PerpetualOrder, now_ms: int) -> dict[str, Any]:  # type: ignore[override]
        status = _ORDER_STATUS[order.status]
        if status == "NEW" and order.filled:
            status = "PARTIALLY_FILLED"
        return {
            "orderId": int(order.exchange_order_id), "symbol": market_id(order.symbol), "status": status,
            "clientOrderId": order.client_order_id, "price": str(order.price), "avgPrice": str(order.average_price),
            "origQty": str(order.amount), "executedQty": str(order.filled), "cumQty": str(order.filled),
            "cumQuote": str(order.filled_cost), "timeInForce": order.time_in_force, "type": "LIMIT",
            "reduceOnly": order.reduce_only, "closePosition": False, "side": order.side.value.upper(),
            "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": order.origin_type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": int(order.placed_at * 1000), "updateTime": int(order.updated_at * 1000) or now_ms,
        }

    def _algo_json(self, algo: ConditionalOrder, now_ms: int) -> dict[str, Any]:
        child = self.exchange.find_order(exchange_order_id=algo.actual_order_id) if algo.actual_order_id else None
        return {
            "algoId": int(algo.algo_id), "clientAlgoId": algo.client_algo_id, "algoType": "CONDITIONAL",
            "orderType": algo.kind, "symbol": market_id(algo.symbol), "side": algo.side.value.upper(),
            "positionSide": "BOTH", "timeInForce": "GTC", "quantity": str(algo.amount), "algoStatus": algo.status,
            "actualOrderId": algo.actual_order_id, "actualPrice": str(child.average_price) if child else "0",
            "triggerPrice": str(algo.trigger_price), "price": str(algo.price), "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE",
            "closePosition": False, "priceProtect": False, "reduceOnly": algo.reduce_only, "activatePrice": "",
            "callbackRate": "", "createTime": int(algo.placed_at * 1000), "updateTime": int(algo.updated_at * 1000) or now_ms,
            "triggerTime": int(algo.triggered_at * 1000), "goodTillDate": 0,
        }

    def _trade_json(self, trade: PerpetualTrade) -> dict[str, Any]:  # type: ignore[override]
        return {
            "buyer": trade.side is Side.BUY, "commission": str(trade.fee), "commissionAsset": trade.fee_currency,
            "id": int(trade.trade_id), "maker": trade.maker, "orderId": int(trade.exchange_order_id),
            "price": str(trade.price), "qty": str(trade.amount), "quoteQty": str(trade.price * trade.amount),
            "realizedPnl": str(trade.realized_pnl), "side": trade.side.value.upper(), "positionSide": "BOTH",
            "symbol": market_id(trade.symbol), "time": int(trade.at * 1000),
        }

    # ---------------------------------------------------------------- admin

    def admin(self, method: str, path: str, data: dict[str, Any], now_ms: int) -> Response:
        """The sandbox's USD-M admin endpoints: state, and what an operator does by hand.

        - ``GET /admin/state``: wallet, available margin, positions, every order (with its
          type) and conditional order, trades, income, violations, and every order request;
        - ``POST /admin/operator/close`` ``{"symbol", "quantity"?}``: reduce (or close, no
          quantity) the position at the mark price on the market's tick, as a taker;
        - ``POST /admin/operator/transfer`` ``{"delta"}``: deposit (or withdraw, negative)
          collateral; a withdrawal beyond the available margin is refused (-2019);
        - ``POST /admin/operator/leverage`` ``{"symbol", "leverage"}``;
        - ``POST /admin/operator/margin`` ``{"symbol", "delta"}``: add (or remove) an isolated
          position's margin;
        - ``POST /admin/operator/cancel`` ``{"clientOrderId"}`` or ``{"clientAlgoId"}``;
        - ``POST /admin/operator/order`` ``{"symbol", "side", "price", "quantity",
          "reduceOnly"?}``: a limit order placed by hand.

        ``symbol`` is Binance's id (``BTCUSDT``) or ccxt's (``BTC/USDT:USDT``). A refusal is
        HTTP 400 with the exchange's ``code`` and message."""
        x, now = self.exchange, now_ms / 1000
        if (method, path) == ("GET", "/admin/state"):
            return Response(200, self.state())
        try:
            if (method, path) == ("POST", "/admin/operator/close"):
                symbol = self._admin_symbol(data)
                quantity = Decimal(str(data["quantity"])) if data.get("quantity") is not None else None
                result: Any = x.operator_reduce(symbol, quantity, now)
            elif (method, path) == ("POST", "/admin/operator/transfer"):
                result = x.transfer(Decimal(str(data["delta"])), now)
            elif (method, path) == ("POST", "/admin/operator/leverage"):
                result = x.set_leverage(self._admin_symbol(data), int(data["leverage"]), now)
            elif (method, path) == ("POST", "/admin/operator/margin"):
                result = x.adjust_isolated_margin(self._admin_symbol(data), Decimal(str(data["delta"])), now)
            elif (method, path) == ("POST", "/admin/operator/cancel"):
                if data.get("clientAlgoId"):
                    result = x.cancel_conditional_order(client_algo_id=str(data["clientAlgoId"]), now=now)
                else:
                    result = x.cancel_order(client_order_id=str(data.get("clientOrderId", "")), now=now)
            elif (method, path) == ("POST", "/admin/operator/order"):
                result = x.create_limit_order(self._admin_symbol(data), Side(str(data["side"]).lower()), Decimal(str(data["quantity"])),
                                              Decimal(str(data["price"])), str(data.get("clientOrderId") or f"operator-{now_ms}"), now,
                                              reduce_only=bool(data.get("reduceOnly", False)))
            else:
                return Response(404, {"error": f"no admin endpoint {method} {path}"})
        except (KeyError, ValueError, InvalidOperation, BadRequest) as bad:
            return Response(400, {"error": f"{path}: missing or bad field ({bad})"})
        if isinstance(result, Rejection):
            return Response(400, {"error": result.message, "code": result.code})
        return Response(200, {"done": path.rsplit("/", 1)[-1], "wallet": str(x.wallet), "available": str(x.available_margin())})

    def _admin_symbol(self, data: dict[str, Any]) -> str:
        name = str(data.get("symbol", ""))
        if name in self.exchange.markets:
            return name
        return self._symbol({"symbol": name})

    def state(self) -> dict[str, Any]:
        """Everything the account holds, for tests and tools (strings for money)."""
        x = self.exchange
        return {
            "wallet": str(x.wallet), "available": str(x.available_margin()),
            "positions": {s: {"size": str(p.size), "entryPrice": str(p.entry_price), "leverage": p.leverage,
                              "marginMode": p.margin_mode, "realizedPnl": str(p.realized_pnl), "fees": str(p.fees),
                              "funding": str(p.funding), "isolatedWallet": str(p.isolated_wallet),
                              "liquidationPrice": str(x.liquidation_price(s) or 0)}
                          for s, p in x.positions.items()},
            "orders": [{"orderId": o.exchange_order_id, "clientOrderId": o.client_order_id, "type": "LIMIT",
                        "origType": o.origin_type, "side": o.side.value, "price": str(o.price), "amount": str(o.amount),
                        "filled": str(o.filled), "status": o.status, "reduceOnly": o.reduce_only, "timeInForce": o.time_in_force}
                       for o in x.orders.values()],
            "algo_orders": [{"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "type": a.kind, "side": a.side.value,
                             "triggerPrice": str(a.trigger_price), "price": str(a.price), "amount": str(a.amount),
                             "status": a.status, "actualOrderId": a.actual_order_id, "reduceOnly": a.reduce_only}
                            for a in x.algo_orders.values()],
            "trades": [{"id": t.trade_id, "orderId": t.exchange_order_id, "side": t.side.value, "price": str(t.price),
                        "amount": str(t.amount), "fee": str(t.fee), "realizedPnl": str(t.realized_pnl), "maker": t.maker,
                        "liquidation": t.liquidation} for t in x.trades],
            "income": [{"type": e.income_type, "amount": str(e.amount), "symbol": e.symbol} for e in x.income],
            "violations": [{"type": v.order_type, "symbol": v.symbol, "detail": v.detail} for v in x.violations],
            "order_requests": list(self.order_requests),
        }


_ROUTES = {
    ("GET", "/fapi/v1/ping"): (BinanceDialect.ping, False),
    ("GET", "/fapi/v1/time"): (BinanceDialect.time, False),
    ("GET", "/fapi/v1/exchangeInfo"): (UsdmDialect.exchange_info, False),
    ("GET", "/fapi/v1/klines"): (BinanceDialect.klines, False),
    ("GET", "/fapi/v1/ticker/24hr"): (BinanceDialect.ticker_24hr, False),
    ("GET", "/fapi/v1/premiumIndex"): (UsdmDialect.premium_index, False),
    ("GET", "/fapi/v3/account"): (UsdmDialect.account_v3, True),
    ("GET", "/fapi/v3/positionRisk"): (UsdmDialect.position_risk, True),
    ("GET", "/fapi/v2/positionRisk"): (UsdmDialect.position_risk_v2, True),
    ("GET", "/fapi/v1/leverageBracket"): (UsdmDialect.leverage_bracket, True),
    ("GET", "/fapi/v1/symbolConfig"): (UsdmDialect.symbol_config, True),
    ("GET", "/fapi/v1/positionSide/dual"): (UsdmDialect.position_side, True),
    ("GET", "/fapi/v1/commissionRate"): (UsdmDialect.commission_rate, True),
    ("POST", "/fapi/v1/leverage"): (UsdmDialect.set_leverage, True),
    ("POST", "/fapi/v1/marginType"): (UsdmDialect.set_margin_type, True),
    ("POST", "/fapi/v1/positionMargin"): (UsdmDialect.position_margin, True),
    ("POST", "/fapi/v1/order"): (UsdmDialect.new_order, True),
    ("GET", "/fapi/v1/order"): (UsdmDialect.query_order, True),
    ("DELETE", "/fapi/v1/order"): (UsdmDialect.cancel_order, True),
    ("DELETE", "/fapi/v1/allOpenOrders"): (UsdmDialect.cancel_all, True),
    ("GET", "/fapi/v1/openOrders"): (UsdmDialect.open_orders, True),
    ("GET", "/fapi/v1/allOrders"): (UsdmDialect.all_orders, True),
    ("POST", "/fapi/v1/algoOrder"): (UsdmDialect.new_algo_order, True),
    ("GET", "/fapi/v1/algoOrder"): (UsdmDialect.query_algo, True),
    ("DELETE", "/fapi/v1/algoOrder"): (UsdmDialect.cancel_algo, True),
    ("DELETE", "/fapi/v1/algoOpenOrders"): (UsdmDialect.cancel_all_algo, True),
    ("GET", "/fapi/v1/openAlgoOrders"): (UsdmDialect.open_algo_orders, True),
    ("GET", "/fapi/v1/allAlgoOrders"): (UsdmDialect.all_algo_orders, True),
    ("GET", "/fapi/v1/userTrades"): (UsdmDialect.user_trades, True),
    ("GET", "/fapi/v1/income"): (UsdmDialect.income, True),
    ("GET", "/fapi/v1/forceOrders"): (UsdmDialect.force_orders, True),
}
UsdmDialect.ROUTES = _ROUTES

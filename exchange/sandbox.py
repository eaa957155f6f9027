"""``limitline sandbox``: a local exchange on 127.0.0.1 that speaks Binance's spot REST, or
(``market="usdm"``) Binance's USD-M futures REST.

The real ``ccxt.binance`` (or ``ccxt.binanceusdm``) client talks to it over HTTP (point an
exchange's ``base_url`` at it), so the whole live path can be run end to end before real
money. Backed by the same simulated matching engine and replay feed as shadow mode (spot),
or by the perpetuals engine (:mod:`exchange.perpetuals`, USD-M; its dialect and admin
endpoints are :mod:`exchange.usdm_dialect`'s: ``/admin/operator/close``, ``transfer``,
``leverage``, ``margin``, ``cancel``, ``order``).

Admin endpoints (local only, no auth: the server binds 127.0.0.1):

- ``GET /admin/state``: balances, open orders, fills, injected faults;
- ``POST /admin/faults``: JSON of :class:`exchange.faults.FaultSettings` (replaces them);
- ``POST /admin/operator/cancel``: ``{"clientOrderId": ...}`` cancels as an operator would;
- ``POST /admin/operator/order``: ``{"symbol", "side", "price", "quantity"}`` places one;
- ``POST /admin/operator/balance``: ``{"asset", "delta"}`` deposits (or withdraws);
- ``POST /admin/operator/expire``: ``{"clientOrderId"}`` the exchange expires an open order
  by its own rule (status ``EXPIRED``, as Binance's self-trade prevention does);
- ``POST /admin/market``: ``{"frozen": true}`` stops the market (no candle, no fill);
  ``{"frozen": true, "step": N}`` then closes the next N candles at once (a test moves the
  price one candle at a time, whatever the replay's clock).

hypercorn's trio worker serves it; trio's socket streams set TCP_NODELAY (without it,
Nagle's algorithm adds 40 ms to a small request/response exchange on loopback).
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Awaitable, Callable

import attrs
import cattrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from exchange.binance_dialect import BinanceDialect, Request, Response, error
from exchange.candles import load_candles
from exchange.faults import FaultPlan, FaultSettings
from exchange.markets import MarketRules
from exchange.matching import Rejection, SimulatedExchange
from exchange.perpetuals import PerpetualExchange, perpetual_rules
from exchange.records import Side
from exchange.replay import ReplayFeed
from exchange.usdm_dialect import SERVER_BUSY_MESSAGE, UsdmDialect

MARKETS = ("spot", "usdm")

DEFAULT_API_KEY = "sandbox-key"
DEFAULT_SECRET = "sandbox-secret"


@attrs.frozen
class SandboxSettings:
    data: str
    symbol: str = "BTC/USDT"
    port: int = 8790
    speed: float = 5.0
    balances: dict[str, Decimal] = attrs.Factory(lambda: {"USDT": Decimal("100000"), "BTC": Decimal("2")})
    api_key: str = DEFAULT_API_KEY
    secret: str = attrs.field(default=DEFAULT_SECRET, repr=False)
    volume_share: Decimal = Decimal("0.1")
    #: None: the historical candles, replayed at ``speed`` with their own timestamps. N:
    #: candles of N seconds on the server's clock, the forming one listed last by klines
    #: (as a real exchange does; for a client's ``timeframe`` of the same length).
    candle_seconds: int | None = None
    #: ``spot`` (Binance spot REST) or ``usdm`` (Binance USD-M futures REST; ``symbol``'s
    #: linear perpetual, ``BTC/USDT`` -> ``BTC/USDT:USDT``, margined in the quote asset,
    #: whose balance in ``balances`` is the futures wallet).
    market: str = "spot"
    #: USD-M: the funding rate charged every 8 hours.
    funding_rate: Decimal = Decimal("0.0001")

    def __attrs_post_init__(self) -> None:
        if self.market not in MARKETS:
            raise ValueError(f"market must be one of {', '.join(MARKETS)}, got {self.market!r}")


def default_perpetual_rules(symbol: str) -> MarketRules:
    """BTCUSDT perpetual's rules on Binance USD-M, for ``symbol``: tick 0.1, step 0.001, a
    minimum notional of 100 USDT (Binance's "USDⓈ-Margined Futures Contract Specifications",
    https://www.binance.com/en/support/faq/360033161972), fees 0.02 % maker and 0.05 % taker
    (the base tier)."""
    if ":" not in symbol:
        symbol = f"{symbol}:{symbol.partition('/')[2]}"
    return perpetual_rules(
        symbol,
        tick_size=Decimal("0.1"),
        lot_size=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        min_notional=Decimal("100"),
        maker_fee=Decimal("0.0002"),
        taker_fee=Decimal("0.0005"),
    )


def default_rules(symbol: str) -> MarketRules:
    return MarketRules.for_symbol(
        symbol,
        tick_size=Decimal("0.01"),
        lot_size=Decimal("0.00001"),
        min_amount=Decimal("0.00001"),
        min_notional=Decimal("5"),
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.001"),
    )


class Sandbox:
    """The server's state and its ASGI app."""

    def __init__(self, settings: SandboxSettings, faults: FaultSettings | None = None) -> None:
        feed = ReplayFeed(load_candles(settings.data), settings.speed)
        candles = {} if settings.candle_seconds is None else {"interval_ms": settings.candle_seconds * 1000, "candles_on_server_clock": True}
        self.market = settings.market
        self.dialect: BinanceDialect
        if settings.market == "usdm":
            rules = default_perpetual_rules(settings.symbol)
            futures = PerpetualExchange([rules], Decimal(settings.balances.get(rules.quote, 0)),
                                        margin_asset=rules.quote, volume_share=settings.volume_share,
                                        funding_rate=settings.funding_rate)
            # A market always has a last price: the replay's first open until a candle closes.
            futures.open_market(rules.symbol, feed.candles[feed.cursor])
            self.dialect = UsdmDialect(futures, {rules.symbol: feed}, settings.api_key, settings.secret, **candles)
        else:
            exchange = SimulatedExchange([default_rules(settings.symbol)], dict(settings.balances), settings.volume_share)
            self.dialect = BinanceDialect(exchange, {settings.symbol: feed}, settings.api_key, settings.secret, **candles)
        self.faults = FaultPlan(faults)
        self.requests = 0
        #: (trio time, method, path, status) of every /api/ request, for tests and tools.
        self.request_log: list[tuple[float, str, str, int]] = []
        self._request_seen = trio.Event()
        self.tick_seconds = min(0.1, 0.5 / settings.speed)
        #: A frozen market closes no candles and fills nothing (for comparing books).
        self.frozen = False
        self._filled = trio.Event()
        self._candle_closed = trio.Event()

    def advance(self) -> None:
        if self.frozen:
            return
        closed = sum(map(len, self.dialect.closed.values()))
        if self.dialect.advance(trio.current_time(), self.now_ms()):
            self._filled.set()
            self._filled = trio.Event()
        if sum(map(len, self.dialect.closed.values())) > closed:
            self._candle_closed.set()
            self._candle_closed = trio.Event()

    def step(self, count: int) -> int:
        """Close the next ``count`` candles of every market now, matching orders against
        each, whatever the replay's clock; returns how many closed."""
        closed = 0
        for _ in range(count):
            for symbol, feed in self.dialect.feeds.items():
                candle = feed.take_next()
                if candle is None:
                    continue
                self.dialect.closed[symbol].append(candle)
                self.dialect.fills += self.dialect.exchange.match(symbol, candle, self.now_ms() / 1000)
                closed += 1
        if closed:
            self._signal_fill()
            self._candle_closed.set()
            self._candle_closed = trio.Event()
        return closed

    async def move_market(self) -> None:
        """The market moves whether or not anyone asks, as on a real exchange."""
        while True:
            self.advance()
            await trio.sleep(self.tick_seconds)

    async def wait_for_fill(self) -> None:
        """Until the next fill (for tests and tools; no polling)."""
        await self._filled.wait()

    async def wait_for_candle(self) -> None:
        """Until the next candle closes."""
        await self._candle_closed.wait()

    def now_ms(self) -> int:
        """The exchange's clock: the host's, shifted by the fault settings' ``clock_offset_ms``."""
        return int(time.time() * 1000) + self.faults.settings.clock_offset_ms

    async def app(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if path.startswith("/admin/"):
            response = self._admin(method, path, body)
            if path.startswith("/admin/operator/") and response.status == 200:
                self._signal_fill()
        else:
            arrived = trio.current_time()
            response = await self._api(method, path, scope.get("query_string", b"").decode(), body.decode(), headers)
            self.request_log.append((arrived, method, path, response.status))
            self._request_seen.set()
            self._request_seen = trio.Event()
        await _respond(send, response)

    async def wait_for_request(self) -> None:
        """Until the next /api/ request has been answered."""
        await self._request_seen.wait()

    async def _api(self, method: str, path: str, query: str, body: str, headers: dict[str, str]) -> Response:
        self.requests += 1
        settings = self.faults.settings
        if settings.latency_ms:
            await trio.sleep(settings.latency_ms / 1000)
        fault = self.faults.decide(method, path, signed=self.dialect.is_signed(method, path))
        if fault == "server_error":
            # What Binance's gateway answers when the exchange is down: no JSON, just 503.
            return Response(503, "<html><body><h1>503 Service Unavailable</h1></body></html>")
        if fault == "rate_limit":
            return error(429, -1003, "Too many requests; current limit is 1200 request weight per 1 MINUTE.",
                         (("Retry-After", str(settings.retry_after_seconds)),))
        if fault == "timeout":
            await trio.sleep(settings.hold_seconds)
        if fault == "overloaded":
            return error(503, -1008, SERVER_BUSY_MESSAGE)
        if fault == "reject":
            if method == "POST":
                return error(400, *self.dialect.REJECT_ORDER)
            return error(400, -2011, "Unknown order sent.")
        if fault == "invalid_timestamp":
            return error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        self.advance()
        request = Request(method, path, query, body, headers.get("x-mbx-apikey"))
        if fault == "fill_before_cancel":
            # A counterparty's trade reaches the order just before the cancel does.
            target = self.dialect.find(request.params)
            if target is not None:
                self._fill_now(target.client_order_id)
        fills = len(self.dialect.fills)
        response = self.dialect.handle(request, self.now_ms())
        if len(self.dialect.fills) > fills:  # an order crossed the market: filled on arrival
            self._filled.set()
            self._filled = trio.Event()
        if fault == "fill_before_answer" and response.status == 200:
            # Filled at once; the trade is listed while the answer is still on its way.
            self._fill_now(str(response.body["clientOrderId"]))
            await trio.sleep(settings.hold_seconds)
        if settings.late_ms:
            await trio.sleep(settings.late(path))  # computed now, answered late
        if fault == "timeout_after_accept":
            # The exchange acted; the client hears nothing in time.
            await trio.sleep(settings.hold_seconds)
        if fault == "server_error_after_accept":
            # The exchange acted; the gateway answers 503 anyway.
            return Response(503, "<html><body><h1>503 Service Unavailable</h1></body></html>")
        return response

    def _fill_now(self, client_order_id: str) -> None:
        if isinstance(self.dialect.fill_now(client_order_id, self.now_ms()), Rejection):
            return
        self._signal_fill()

    def _signal_fill(self) -> None:
        self._filled.set()
        self._filled = trio.Event()

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError as bad:
            return Response(400, {"error": f"body: not JSON ({bad.msg})"})
        if (method, path) == ("POST", "/admin/faults"):
            return self._set_faults(data)
        if (method, path) == ("POST", "/admin/market"):
            self.frozen = bool(data.get("frozen", False))
            step = data.get("step", 0)
            if not isinstance(step, int) or step < 0:
                return Response(400, {"error": f"step: a number of candles (0 or more), got {step!r}"})
            return Response(200, {"frozen": self.frozen, "closed": self.step(step)})
        if isinstance(self.dialect, UsdmDialect):
            response = self.dialect.admin(method, path, data, self.now_ms())
            if (method, path) == ("GET", "/admin/state"):
                response.body.update({"requests": self.requests, "faults": self.faults.status()})
            return response
        exchange = self.dialect.exchange
        if (method, path) == ("GET", "/admin/state"):
            return Response(200, {
                "requests": self.requests,
                "faults": self.faults.status(),
                "balances": {a: {"free": str(b.free), "used": str(b.used)} for a, b in exchange.balances.items()},
                "open_orders": [o.client_order_id for o in exchange.open_orders()],
                "orders": [{"clientOrderId": o.client_order_id, "orderId": o.exchange_order_id, "status": o.status,
                            "side": o.side.value, "price": str(o.price), "amount": str(o.amount), "filled": str(o.filled)}
                           for o in exchange.orders.values()],
                "trades": [{"id": f.trade_id, "orderId": f.exchange_order_id, "clientOrderId": f.client_order_id,
                            "amount": str(f.amount), "price": str(f.price), "fee": str(f.fee)} for f in self.dialect.fills],
            })
        if (method, path) == ("POST", "/admin/operator/cancel"):
            result = exchange.cancel_order(str(data.get("clientOrderId", "")))
            if isinstance(result, Rejection):
                return Response(404, {"error": result.message})
            return Response(200, {"canceled": result.client_order_id})
        if (method, path) == ("POST", "/admin/operator/expire"):
            result = exchange.expire_order(str(data.get("clientOrderId", "")))
            if isinstance(result, Rejection):
                return Response(404, {"error": result.message})
            return Response(200, {"expired": result.client_order_id})
        if (method, path) == ("POST", "/admin/operator/order"):
            try:
                side = Side(str(data["side"]).lower())
                result = exchange.create_limit_order(
                    str(data["symbol"]), side, Decimal(str(data["quantity"])), Decimal(str(data["price"])),
                    str(data.get("clientOrderId") or f"operator-{self.now_ms()}"), self.now_ms() / 1000,
                )
            except (KeyError, ValueError, InvalidOperation) as bad:
                return Response(400, {"error": f"order: needs symbol, side, price, quantity ({bad})"})
            if isinstance(result, Rejection):
                return Response(400, {"error": result.message})
            return Response(200, {"placed": result.client_order_id, "orderId": int(result.exchange_order_id)})
        if (method, path) == ("POST", "/admin/operator/balance"):
            try:
                asset, delta = str(data["asset"]), Decimal(str(data["delta"]))
            except (KeyError, InvalidOperation) as bad:
                return Response(400, {"error": f"balance: needs asset and delta ({bad})"})
            balance = exchange.balances[asset]
            if balance.free + delta < 0:
                return Response(400, {"error": f"balance: {asset} free {balance.free} cannot go below 0"})
            balance.free += delta
            return Response(200, {"asset": asset, "free": str(balance.free)})
        return Response(404, {"error": f"no admin endpoint {method} {path}"})


    def _set_faults(self, data: Any) -> Response:
        try:
            settings = cattrs.structure(data, FaultSettings)
        except Exception as bad:  # noqa: BLE001 - any structuring problem is the caller's
            return Response(400, {"error": f"faults: {bad}"})
        problems = settings.problems()
        if problems:
            return Response(400, {"error": "; ".join(problems)})
        self.faults.update(settings)
        return Response(200, self.faults.status())


async def _respond(send: Callable[[dict], Awaitable[None]], response: Response) -> None:
    if isinstance(response.body, str):
        payload, kind = response.body.encode(), b"text/html"
    else:
        payload, kind = json.dumps(response.body).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def serve_sandbox(
    sandbox: Sandbox, port: int, *, tls: tuple[str, str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the base URL once listening. ``tls``: (certificate
    file, key file) to serve HTTPS (as a TLS-intercepting proxy or a gateway would)."""
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    if tls is not None:
        config.certfile, config.keyfile = tls
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75

    async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(sandbox.app, config, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sandbox.move_market)
        binds = await nursery.start(serving)
        task_status.started(binds[0])


def credentials_from_env() -> tuple[str, str]:
    """The sandbox's API key and secret: from LIMITLINE_SANDBOX_API_KEY / _SECRET, or the
    documented defaults (they protect nothing: the server holds no real money)."""
    return (
        os.environ.get("LIMITLINE_SANDBOX_API_KEY", DEFAULT_API_KEY),
        os.environ.get("LIMITLINE_SANDBOX_SECRET", DEFAULT_SECRET),
    )

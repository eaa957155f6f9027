"""The HTTP endpoints, on Starlette (served by hypercorn's trio worker; Starlette runs on
anyio, so it runs under trio; no asyncio-only middleware is used).

Read (open on loopback; elsewhere ``LIMITLINE_READ_TOKEN``, see :mod:`supervisors.web.access`):

- ``GET /``: the dashboard (static page and scripts from ``supervisors/web/static``);
- ``GET /status``: the summary (counts, P&L and fee totals, venues, the tree's health);
- ``GET /status/strategies?offset=0&limit=100&state=``: strategies, paged (``limit`` 1-500),
  each with its state and why, breaker, holdings, realized and unrealized P&L, open orders
  and last decision; ``GET /status/strategies/NAME``: one of them;
- ``GET /status/strategies/NAME/chart?candles=500``: its chart's data (the latest candles
  its venue replayed, its fills, its equity; :mod:`supervisors.web.strategy_chart`), and
  ``GET /assets/chart.js`` and ``/assets/lightweight-charts.js`` to draw it;
- ``GET /status/tree``: the supervision tree (states, restarts, mailbox depths);
- ``GET /events?strategy=&kind=a,b&limit=&after=SEQ``: the activity feed, newest first;
  with ``after``, the entries after that sequence number, oldest first (a live view polls it);
- ``GET /metrics``: Prometheus text format; ``GET /ready``: 200 when every venue is
  reconciled and none is isolated, else 503 with the reasons;
- ``GET /health``: 200 while the process serves (no data, never needs a token).

Control (``Authorization: Bearer $LIMITLINE_OPERATOR_TOKEN``): ``POST
/strategies/NAME/pause``, ``/resume``, ``/cancel-open-orders``; each answers 202 once the
message is in the strategy's mailbox (what it did is in the activity feed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, Sequence

import attrs
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from actors.connection.call_stats import CallStats
from actors.messages import CancelOpenOrders, Pause, Resume, strategy_address
from actors.runtime import ActorEnv
from exchange.candles import Candle
from store.access import SqliteReader
from store.codec import dumps
from supervisors.web import queries, views
from supervisors.web.access import Denied, check_operator, check_read
from supervisors.web.metrics import RuntimeCollector, registry_of
from supervisors.web.strategy_chart import DEFAULT_CANDLES, MAX_CANDLES, strategy_chart
from supervisors.web.views import StrategyFacts

STATIC = Path(__file__).parent / "static"
#: The chart component and its library, shared with the Lab's report (served as they are).
ASSETS = {
    "chart.js": Path(__file__).parent / "chart.js",
    "lightweight-charts.js": Path(__file__).parent / "vendor" / "lightweight-charts.standalone.production.js",
}
MAX_EVENTS = 1000
MAX_PAGE = 500
DEFAULT_PAGE = 100
#: Who the strategy's event names as having asked.
OPERATOR = "the operator over HTTP"


class Snapshotter(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


@attrs.frozen
class WebContext:
    """What the endpoints read and whom they may message."""

    root: Snapshotter
    env: ActorEnv
    store: SqliteReader
    #: Process facts shown in the summary (mode, armed_live, store path).
    facts: dict[str, Any]
    strategies: list[StrategyFacts]
    venues: list[str]
    call_stats: dict[str, CallStats] = attrs.field(factory=dict)
    #: Reading needs no token when only this machine can connect.
    loopback: bool = True
    #: The latest candles a venue's market has replayed (venue, symbol, how many), oldest
    #: first; empty where none are kept (an exchange venue's candles are not).
    candles: Callable[[str, str, int], Sequence[Candle]] | None = None


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


def make_web_app(context: WebContext) -> Starlette:
    def reading(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                check_read(request.headers.get("authorization"), context.loopback)
            except Denied as denied:
                return _error(denied.status, str(denied))
            return await handler(request)

        return guarded

    def whole_number(request: Request, field: str, default: int | None, low: int, high: int) -> int | None:
        text = request.query_params.get(field)
        if text is None or text == "":
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise HTTPException(400, f"{field}: must be a whole number from {low} to {high}, got {text[:40]!r}")
        return int(text)

    def strategy_facts(name: str) -> StrategyFacts:
        for facts in context.strategies:
            if facts.name == name:
                return facts
        raise HTTPException(404, f"no strategy is named {name[:80]!r}")

    async def index_page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def status(request: Request) -> Response:
        tree = context.root.snapshot()
        return json_response(views.summary(context.facts, tree, context.strategies, context.venues, time.time()))

    async def strategies(request: Request) -> Response:
        offset = whole_number(request, "offset", 0, 0, 10**9)
        limit = whole_number(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        assert offset is not None and limit is not None
        wanted = request.query_params.get("state") or None
        nodes = views.index(context.root.snapshot())
        rows = views.strategy_rows(context.strategies, nodes)
        if wanted is not None:
            rows = [row for row in rows if row["state"] == wanted]
        page = rows[offset : offset + limit]
        details = await context.store.read(queries.strategy_details, names=[row["name"] for row in page])
        return json_response({
            "total": len(rows),
            "offset": offset,
            "limit": limit,
            "next": f"/status/strategies?offset={offset + limit}&limit={limit}" if offset + limit < len(rows) else None,
            "strategies": [views.with_details(row, details[row["name"]]) for row in page],
        })

    async def one_strategy(request: Request) -> Response:
        facts = strategy_facts(request.path_params["name"])
        row = views.strategy_row(facts, views.index(context.root.snapshot()))
        details = await context.store.read(queries.strategy_details, names=[facts.name])
        return json_response(views.with_details(row, details[facts.name]))

    async def one_strategy_chart(request: Request) -> Response:
        facts = strategy_facts(request.path_params["name"])
        count = whole_number(request, "candles", DEFAULT_CANDLES, 1, MAX_CANDLES)
        assert count is not None
        candles = context.candles(facts.venue, facts.symbol, count) if context.candles is not None else []
        fills, journal = await context.store.read(queries.chart_rows, name=facts.name, fills=MAX_EVENTS)
        return json_response(strategy_chart(facts.symbol, candles, fills, journal))

    async def asset(request: Request) -> Response:
        return FileResponse(ASSETS[request.path_params["name"]], media_type="text/javascript")

    async def tree(request: Request) -> Response:
        return json_response(views.tree_view(context.root.snapshot()))

    async def events(request: Request) -> Response:
        limit = whole_number(request, "limit", 100, 1, MAX_EVENTS)
        after = whole_number(request, "after", None, 0, 2**62)
        kinds = tuple(k for k in (request.query_params.get("kind") or "").split(",") if k)
        found = await context.store.read(
            queries.feed, after=after, strategy=request.query_params.get("strategy") or None, kinds=kinds, limit=limit
        )
        return json_response({"events": views.plain_all(found)})

    async def metrics(request: Request) -> Response:
        counts = await context.store.read(queries.metric_counts)
        collector = RuntimeCollector(context.root.snapshot(), counts, context.strategies, context.venues, context.call_stats)
        return Response(generate_latest(registry_of(collector)), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        return json_response({"alive": True, "at": time.time()})

    async def ready(request: Request) -> Response:
        venues = views.venue_rows(context.venues, views.index(context.root.snapshot()))
        ok, problems = views.readiness(venues)
        return json_response({"ready": ok, "problems": problems}, 200 if ok else 503)

    async def control(request: Request) -> Response:
        try:
            check_operator(request.headers.get("authorization"))
        except Denied as denied:
            return _error(denied.status, str(denied))
        facts = strategy_facts(request.path_params["name"])
        action = request.path_params["action"]
        message: Any
        if action == "pause":
            message = Pause(facts.name, f"paused by {OPERATOR}")
        elif action == "resume":
            message = Resume(facts.name, OPERATOR)
        elif action == "cancel-open-orders":
            message = CancelOpenOrders(facts.name, OPERATOR)
        else:
            return _error(404, f"no action {action[:40]!r}; the actions are pause, resume and cancel-open-orders")
        mailbox = context.env.directory.get(strategy_address(facts.name))
        if mailbox is None:
            return _error(404, f"no strategy is named {facts.name!r}")
        await mailbox.send(message)
        return json_response({"strategy": facts.name, "action": action, "accepted": True}, 202)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404 and error.detail == "Not Found":
            return _error(404, f"no such endpoint {request.url.path[:80]}; try /, /status, /status/strategies, "
                               "/status/tree, /events, /metrics, /health or /ready")
        if error.status_code == 405:
            return _error(405, f"{request.method} is not served at {request.url.path[:80]}")
        return _error(error.status_code, str(error.detail))

    async def asset_or_404(request: Request) -> Response:
        if request.path_params["name"] not in ASSETS:
            return _error(404, f"no asset {request.path_params['name'][:80]!r}")
        return await asset(request)

    routes = [
        Route("/", index_page),
        Route("/status", reading(status)),
        Route("/status/strategies", reading(strategies)),
        Route("/status/strategies/{name}", reading(one_strategy)),
        Route("/status/strategies/{name}/chart", reading(one_strategy_chart)),
        Route("/assets/{name:str}", asset_or_404),
        Route("/status/tree", reading(tree)),
        Route("/events", reading(events)),
        Route("/metrics", reading(metrics)),
        Route("/health", health),
        Route("/ready", reading(ready)),
        Route("/strategies/{name}/{action}", control, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})

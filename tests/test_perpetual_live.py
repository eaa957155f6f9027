"""Live trading of USD-M perpetuals end to end: the real ``ccxt.binanceusdm`` against
``limitline sandbox --market usdm``, with the runtime armed for live trading (in-process, as
the spot live tests run it).

The sandbox's market is frozen and moved one candle at a time (``POST /admin/market``
``{"step": 1}``), and operator actions go through its admin API, so what each candle does
is known. Every wait is on an observable condition (an event, the exchange's state) with
the test's deadline; nothing sleeps.

The strategy: long when the close crosses 1000 upwards, short when it crosses 995
downwards, 0.5 BTC, a take-profit 5 % and a stop-loss 2 % from the entry (the stop's limit
0.5 % beyond its trigger), gapped stops escalated 1 % through the price; leverage 5.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from decimal import Decimal

import pytest
import trio
from helpers import KEY, SECRET, Watch, node, start_app

from exchange.perpetuals import MARKET_TYPES
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox

S = "BTC/USDT:USDT"
#: (open, high, low, close) per hour from 2024-01-01 00:00 UTC; the comments say what each does.
CANDLES = [
    (980, 980, 980, 980),       # -  history: seen at start, never decided on
    (980, 980, 980, 980),       # 0  the first close the triggers see
    (980, 1010, 980, 1010),     # 1  crosses 1000 up: open a long at 1010; protection TP 1060.5, SL 989.8 (limit 984.8)
    (1010, 1012, 985, 997),     # 2  the low reaches the stop: it triggers and closes the long; the take-profit goes
    (997, 1006, 996, 1005),     # 3  crosses 1000 up: a long at 1005
    (1005, 1006, 992, 993),     # 4  crosses 995 down: flip to a short at 993
    # here an operator closes the short on the exchange
    (993, 1100, 993, 1100),     # 5  crosses 1000 up: a long at 1100; protection TP 1155, SL 1078 (limit 1072.6)
    # here limitline restarts with that protection resting
    (1050, 1055, 1045, 1050),   # 6  opens below the stop's limit: triggered, its child rests unfilled: escalated
    (1050, 1050, 997, 997),     # 7  nothing fires
    # here margin is withdrawn from the account
    (997, 1010, 997, 1010),     # 8  crosses 1000 up: the open is refused for margin, never sent
] + [(1010, 1010, 1010, 1010)] * 8


#: The reconciler's interval after the restart: it still reconciles the restarted process
#: (its first cycles come at once), then never again within the test, so the margin
#: withdrawn before candle 8 is the connection's alone to find. At 1.5 s, a machine slow by
#: two cycles between the margin's read and candle 8 let the reconciler act first: it took
#: the margin from the strategy's collateral, and the ledger refused the open ("blocked",
#: not the connection's "order_rejected").
RESTARTED_RECONCILER_SECONDS = 3600

#: Candle 0's time (2024-01-01T01:00Z); candle n's is n hours later.
FIRST = 1704070800


def write_hourly_candles(path, candles, volume: int = 1000) -> str:
    """``candles`` ((open, high, low, close), ...) as a CSV of hourly candles from
    2024-01-01T00:00Z (the first is the history), each of ``volume``; its path."""
    lines = ["timestamp,open,high,low,close,volume"]
    for hour, (o, h, l, c) in enumerate(candles):  # noqa: E741
        lines.append(f"2024-01-{1 + hour // 24:02d}T{hour % 24:02d}:00:00Z,{o},{h},{l},{c},{volume}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_candles(path) -> str:
    return write_hourly_candles(path, CANDLES)


def frozen_usdm_sandbox(candles_csv: str, step: int = 1) -> Sandbox:
    """The USD-M sandbox on ``candles_csv`` with 10,000 USDT, its market frozen after
    ``step`` candles (the history the connection finds at start); a test moves it on."""
    sandbox = Sandbox(SandboxSettings(data=candles_csv, speed=1, api_key=KEY, secret=SECRET,
                                      market="usdm", balances={"USDT": Decimal(10000)}))
    sandbox.frozen = True
    sandbox.step(step)
    return sandbox


def perpetual_config(tmp_path, url: str) -> dict:
    return {
        "store": str(tmp_path / "perp.sqlite"),
        "status": {"port": 0},
        # Two cycles make a difference count (the operator's close). After the restart the
        # reconciler checks once an hour (RESTARTED_RECONCILER_SECONDS).
        "reconciler": {"interval_seconds": 1.5},
        "venues": [{
            "name": "usdm", "kind": "ccxt", "exchange": "binanceusdm", "market_type": "swap", "base_url": url,
            "api_key_env": "LL_TEST_KEY", "secret_env": "LL_TEST_SECRET", "poll_seconds": 0.1,
            "rate_limit_per_second": 500, "margin_max_age_seconds": 5,
            "markets": [{"symbol": S, "leverage": 5, "margin_mode": "cross"}],
        }],
        "strategies": [{
            "name": "trend", "venue": "usdm", "symbol": S, "mode": "live",
            "allocation": {"quote": 5000}, "sizing": {"base": 0.5},
            "buy": {"kind": "price_cross", "level": 1000, "direction": "up"},
            "sell": {"kind": "price_cross", "level": 995, "direction": "down"},
            "on_buy": "long", "on_sell": "short", "limit_offset_bps": -10, "ttl_seconds": 7200,
            "protection": {"take_profit_pct": 5, "stop_loss_pct": 2, "stop_limit_slippage_pct": 0.5, "gap_slippage_pct": 1},
            "breaker": {"threshold": 5, "cooldown_seconds": 1, "max_cooldown_seconds": 4},
        }],
    }


def admin(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


class Exchange:
    """The sandbox, seen and moved from the test (its admin API, on a worker thread)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def state(self) -> dict:
        return await trio.to_thread.run_sync(admin, self.url, "/admin/state")

    async def post(self, path: str, body: dict) -> dict:
        return await trio.to_thread.run_sync(admin, self.url, path, body)

    async def step(self) -> None:
        await self.post("/admin/market", {"frozen": True, "step": 1})


async def until(predicate, wake) -> None:
    """Wait (within the test's deadline) until ``predicate()`` holds, re-checking each time ``wake()`` returns."""
    while not await predicate():
        await wake()


def status(app, name: str) -> dict:
    return node(app.snapshot(), name)["status"]


async def history_read(app, sandbox: Sandbox) -> None:
    """Until the connection has read the market's history (the candle before candle 0)."""

    async def read() -> bool:
        return status(app, "connection:usdm")["last_candle"].get(S) == FIRST - 3600

    await until(read, sandbox.wait_for_request)


async def step_candle(exchange: Exchange, watch: Watch, n: int) -> None:
    """The frozen market closes candle ``n``; back once the strategy has decided on it."""
    await exchange.step()
    await watch.until(lambda events: any(e.kind == "evaluated" and e.payload["ts"] == FIRST + 3600 * n for e in events))


async def test_a_live_perpetual_strategy_through_binanceusdm(tmp_path, credentials):
    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"))  # candle 0: the history the connection finds at start
    watches = [Watch()]  # one per incarnation of the app
    try:
        await _scenario(tmp_path, sandbox, watches)
    except BaseException:
        for incarnation, watch in enumerate(watches):
            print(f"--- incarnation {incarnation}")
            for e in watch.events:
                if e.kind != "evaluated":
                    print(e.kind, e.strategy, e.client_order_id, e.reason, e.payload)
        raise


async def _scenario(tmp_path, sandbox, watches):
    [watch] = watches
    with trio.fail_after(90):  # about 13 s alone on the loaded 2-core machine; the whole suite runs beside others
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            raw = perpetual_config(tmp_path, url)
            running = await start_app(nursery, raw, watch)
            app = running.app
            await watch.until(lambda events: watch.count("strategy_active") >= 1)
            connection = status(app, "connection:usdm")
            assert connection["leverage"] == {S: "5"} and connection["market_problems"] == {}
            await history_read(app, sandbox)

            async def wait_event(predicate):
                await watch.until(lambda events: any(predicate(e) for e in events))

            async def candle(n: int) -> None:
                """Close candle ``n`` on the exchange; back once the strategy has decided on it."""
                await exchange.step()
                await wait_event(lambda e: e.kind == "evaluated" and e.payload["ts"] == FIRST + 3600 * n)

            await candle(0)
            # Candle 1: a long with its protection resting on the exchange.
            await candle(1)
            await wait_event(lambda e: e.kind == "closed_by_protection" or (e.kind == "order_placed" and e.payload.get("type") == "stop_limit"))

            async def resting() -> tuple[list, list]:
                """(take-profits open, stops waiting for their trigger) on the exchange."""
                state = await exchange.state()
                takes = [o for o in state["orders"] if o["status"] == "open" and o["reduceOnly"]]
                return takes, [a for a in state["algo_orders"] if a["status"] == "NEW"]

            async def protected() -> bool:
                takes, stops = await resting()
                return len(takes) == 1 and len(stops) == 1

            async def unprotected() -> bool:
                return await resting() == ([], [])

            def position(name: str = "trend") -> Decimal:
                return Decimal(status(app, f"strategy:{name}")["position"])

            await until(protected, sandbox.wait_for_request)
            state = await exchange.state()
            assert Decimal(state["positions"][S]["size"]) == Decimal("0.5") and position() == Decimal("0.5")
            [stop] = [a for a in state["algo_orders"] if a["status"] == "NEW"]
            assert (stop["triggerPrice"], stop["price"], stop["reduceOnly"]) == ("989.8", "984.8", True)

            # Candle 2 reaches the stop between two polls: it closes the long; the take-profit goes.
            placed = watch.count("order_placed")
            await candle(2)
            await wait_event(lambda e: e.kind == "closed_by_protection")
            await until(unprotected, sandbox.wait_for_request)
            await watch.until(lambda events: position() == 0)
            [closed] = watch.of("closed_by_protection")
            assert closed.client_order_id == stop["clientAlgoId"] and "stop-loss" in closed.reason
            take_cid = next(e.client_order_id for e in watch.of("order_placed") if e.payload.get("leg") == "take_profit")
            # The exchange has no order left; the cancel's answer may still be on its way.
            await watch.until(lambda events: order_state(app, take_cid) in ("CANCELED", "EXPIRED"))
            assert watch.count("order_placed") == placed, "nothing placed after the stop closed the position"
            await books_agree(app, exchange)

            # Candles 3 and 4: a long, then a flip to a short (the close first, then the open).
            await candle(3)
            await until(protected, sandbox.wait_for_request)
            await candle(4)
            await watch.until(lambda events: position() == Decimal("-0.5"))
            await until(protected, sandbox.wait_for_request)
            flip = [e for e in watch.of("order_placed") if e.payload.get("action") == "flip"]
            assert [(e.payload["leg"], e.payload["side"], e.payload["reduce_only"]) for e in flip] == [
                ("close", "sell", True), ("open", "sell", False)]

            # An operator closes the short on the exchange: classified, booked, protection gone.
            await exchange.post("/admin/operator/close", {"symbol": "BTCUSDT"})
            await watch.until(lambda events: "position_changed_outside" in classes(watch))
            await watch.until(lambda events: position() == 0)
            await until(unprotected, sandbox.wait_for_request)
            await books_agree(app, exchange)

            # Candle 5: a long at 1100 with its protection; then limitline stops and starts again.
            await candle(5)
            await until(protected, sandbox.wait_for_request)
            # An operator sets 10x on the exchange: Binance's positionRisk (v3) does not say so,
            # its symbolConfig does; the reconciler pauses the strategy (margin_changed).
            await exchange.post("/admin/operator/leverage", {"symbol": "BTCUSDT", "leverage": 10})
            await watch.until(lambda events: "margin_changed" in classes(watch) and watch.count("strategy_paused") >= 1)
            [changed] = [e for e in watch.of("reconcile_difference") if e.payload["class"] == "margin_changed"]
            assert "leverage changed outside limitline: 5 set by limitline, 10 on the exchange" in changed.reason
            assert status(app, "connection:usdm")["leverage_on_exchange"] == {S: "10"}
            assert status(app, "strategy:trend")["paused"].startswith(f"{S}: leverage changed outside limitline")
            requests_before = len((await exchange.state())["order_requests"])
            await running.stop()
            restarted = Watch()
            watches.append(restarted)
            raw = {**raw, "reconciler": {"interval_seconds": RESTARTED_RECONCILER_SECONDS}}
            running = await start_app(nursery, raw, restarted)
            app = running.app
            await restarted.until(lambda events: restarted.count("strategy_active") >= 1)
            watch = restarted
            assert position() == Decimal("0.5")
            # The restart sets the configured leverage again, and says so.
            [reset] = watch.of("market_settings_set")
            assert "the exchange held leverage 10 and margin mode cross; set to the configured leverage 5" in reset.reason
            assert (await exchange.state())["positions"][S]["leverage"] == 5
            assert status(app, "strategy:trend")["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}
            assert await protected()
            assert len((await exchange.state())["order_requests"]) == requests_before, "protection adopted, not placed again"
            assert watch.count("order_placed") == 0

            # Candle 6 opens below the stop's limit: the stop triggers and its child rests; escalated.
            await candle(6)
            await wait_event(lambda e: e.kind == "protection_escalated")
            await watch.until(lambda events: position() == 0)
            await until(unprotected, sandbox.wait_for_request)
            [escalated] = watch.of("protection_escalated")
            assert escalated.payload == {"price": "1050.0", "limit": "1039.5"}, escalated.payload
            assert "(trigger 1078.0, limit 1072.6) and rests unfilled" in escalated.reason
            [escalation] = [e for e in watch.of("order_placed") if e.payload.get("leg") == "escalation"]
            assert (escalation.payload["type"], escalation.payload["side"], escalation.payload["reduce_only"],
                    escalation.payload["price"]) == ("limit", "sell", True, "1039.5")
            await books_agree(app, exchange)

            # Candle 7, then margin is withdrawn: the open of candle 8 is refused, never sent.
            await candle(7)
            state = await exchange.state()

            def collateral() -> Decimal:
                return Decimal(node(app.snapshot(), "ledger")["status"]["collateral"]["trend"]["wallet"])

            allocated = collateral()
            withdrawn = Decimal(state["wallet"]) - 50
            await exchange.post("/admin/operator/transfer", {"delta": str(-withdrawn)})

            async def margin_seen() -> bool:
                margin = status(app, "connection:usdm")["margin"].get("USDT")
                return margin is not None and Decimal(margin["available"]) <= 50

            await until(margin_seen, sandbox.wait_for_request)
            requests_before = len((await exchange.state())["order_requests"])
            await candle(8)
            await wait_event(lambda e: e.kind in ("order_rejected", "blocked") and "margin" in (e.reason or ""))
            [refused] = [e for e in watch.events if e.kind in ("order_rejected", "blocked") and "margin" in (e.reason or "")]
            assert refused.kind == "order_rejected" and refused.reason.startswith(
                "insufficient margin on the exchange: needs 101.35 USDT (notional 505.50 / leverage 5 + worst fee), "
                "available 50"), refused.reason
            assert refused.reason.endswith("; not sent")
            assert len((await exchange.state())["order_requests"]) == requests_before

            # One more restart, with the reconciler checking every 1.5 s again: it cuts the
            # strategy's collateral by the shortfall; the money comes back: a transfer in
            # gives back what the withdrawal cut, never more.
            await running.stop()
            third = Watch()
            watches.append(third)
            raw = {**raw, "reconciler": {"interval_seconds": 1.5}}
            running = await start_app(nursery, raw, third)
            app = running.app
            await third.until(lambda events: third.count("strategy_active") >= 1)
            watch = third
            await watch.until(lambda events: collateral() < allocated)
            await exchange.post("/admin/operator/transfer", {"delta": str(withdrawn + 1000)})
            await watch.until(lambda events: collateral() == allocated)
            [restored] = [e for e in watch.of("reconcile_difference") if "gives trend back" in (e.reason or "")]
            assert restored.payload["class"] == "margin_changed"

            state = await exchange.state()
            assert state["violations"] == []
            assert all(r["type"] not in MARKET_TYPES and not r["closePosition"] for r in state["order_requests"])
            nursery.cancel_scope.cancel()


async def test_leverage_changed_outside_pauses_its_strategy_and_a_restart_sets_it_back_saying_so_in_its_feed(
        tmp_path, credentials):
    """Review finding F5: live at leverage 5, an operator sets 10 on the exchange (paused);
    limitline stops and starts again with its config. The restart sets 5 again with a
    ``market_settings_set`` event that names the strategy trading the market: in its own
    feed (the dashboard's strategy page, ``/events?strategy=``), on the terminal and in the
    log file, as the leverage's ``reconcile_difference`` and ``strategy_paused`` are."""
    from supervisors.console import event_line
    from supervisors.web.queries import feed

    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"))
    watch = Watch()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            raw = perpetual_config(tmp_path, url)
            raw["reconciler"] = {"interval_seconds": 0.3}
            running = await start_app(nursery, raw, watch)
            await watch.until(lambda events: watch.count("strategy_active") >= 1)
            await exchange.post("/admin/operator/leverage", {"symbol": "BTCUSDT", "leverage": 10})
            await watch.until(lambda events: watch.count("strategy_paused") >= 1)
            [changed] = [e for e in watch.of("reconcile_difference") if e.payload["class"] == "margin_changed"]
            [paused] = watch.of("strategy_paused")
            assert (changed.strategy, paused.strategy) == ("trend", "trend")
            await running.stop()

            restarted = Watch()
            running = await start_app(nursery, raw, restarted)
            await restarted.until(lambda events: restarted.count("strategy_active") >= 1)
            assert (await exchange.state())["positions"][S]["leverage"] == 5
            [reset] = restarted.of("market_settings_set")
            assert reset.strategy == "trend"
            assert reset.reason == ("BTC/USDT:USDT on usdm: the exchange held leverage 10 and margin mode cross; set to "
                                    "the configured leverage 5 and margin mode cross at start")
            line = event_line(reset)
            assert line is not None and "market_settings_set" in line and "  trend  " in line, line
            await running.stop()
            nursery.cancel_scope.cancel()
    with sqlite3.connect(raw["store"]) as store:
        own = feed(store, after=None, strategy="trend", kinds=("market_settings_set", "strategy_paused"), limit=10)
    # Newest first: the restart's, the pause, and the first start's (the sandbox starts at Binance's 20x).
    assert [e["kind"] for e in own] == ["market_settings_set", "strategy_paused", "market_settings_set"]
    assert own[0]["payload"] == {"symbol": S, "leverage": {"found": "10", "set": "5"},
                                 "margin_mode": {"found": "cross", "set": "cross"}}


def classes(watch: Watch) -> set[str]:
    return {e.payload.get("class") for e in watch.of("reconcile_difference")}


def order_state(app, cid: str) -> str | None:
    row = sqlite3.connect(app.config.store).execute("SELECT state FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
    return row[0] if row else None


async def books_agree(app, exchange: Exchange) -> None:
    """The ledger's realized P&L and fees of the strategy equal the exchange's."""
    state = await exchange.state()
    strategy = status(app, "strategy:trend")
    realized = sum((Decimal(t["realizedPnl"]) for t in state["trades"]), Decimal(0))
    fees = sum((Decimal(t["fee"]) for t in state["trades"]), Decimal(0))
    assert Decimal(strategy["realized_pnl"]) == realized, (strategy["realized_pnl"], realized)
    assert Decimal(strategy["fees_paid"].get("USDT", "0")) == fees, (strategy["fees_paid"], fees)


def test_a_ccxt_swap_venue_names_each_markets_leverage_and_trades_its_perpetuals_live(tmp_path):
    from supervisors.config import ConfigError, parse_config

    raw = perpetual_config(tmp_path, "http://127.0.0.1:1")
    config = parse_config(raw, live=True)
    assert config.venues[0].markets[0].leverage == 5 and config.venues[0].margin_max_age_seconds == 5
    raw["venues"][0]["markets"] = [{"symbol": "BTC/USDT", "leverage": 200, "margin_mode": "hedged"}]
    raw["venues"][0]["margin_max_age_seconds"] = 0
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, live=True)
    assert refused.value.problems == [
        "venues[0].margin_max_age_seconds: must be between 0.001 (1 ms) and 2592000 (30 days) seconds, got 0",
        "venues[0].markets[0].symbol: a linear perpetual is named BASE/QUOTE:SETTLE with SETTLE the quote (e.g. BTC/USDT:USDT), got 'BTC/USDT'",
        "venues[0].markets[0].leverage: a whole number from 1 to 125, got 200",
        "venues[0].markets[0].margin_mode: must be cross or isolated, got 'hedged'",
        "strategies[0].symbol: 'BTC/USDT:USDT' is not among the markets of venue 'usdm'; add {symbol: BTC/USDT:USDT, leverage: N, margin_mode: cross} to its markets",
    ]


async def test_limitline_check_reads_a_swap_venue_without_setting_anything(tmp_path, credentials):
    from supervisors.app import preflight_all
    from supervisors.config import parse_config

    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"), 2)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            config = parse_config(perpetual_config(tmp_path, url), live=True)
            problems = await trio.to_thread.run_sync(preflight_all, config)
            # The initial margin of one open at the last price (980) is checked as `run`
            # checks it: 30 BTC are 29400 USDT, 5880 of margin at leverage 5 > 5000.
            oversized = perpetual_config(tmp_path, url)
            oversized["strategies"][0]["sizing"] = {"base": 30}
            oversized_problems = await trio.to_thread.run_sync(preflight_all, parse_config(oversized, live=True))
            nursery.cancel_scope.cancel()
    assert problems == {"trend": []}
    [margin] = oversized_problems["trend"]
    assert margin.startswith("sizing.base: one open of 30 BTC at the last price 980") and "initial margin at leverage 5" in margin, margin
    assert not any(path in ("/fapi/v1/leverage", "/fapi/v1/marginType") for _, _, path, _ in sandbox.request_log)
    assert ("GET", "/fapi/v1/symbolConfig") in {(m, p) for _, m, p, _ in sandbox.request_log}


async def test_a_shadow_perpetual_strategy_on_the_real_candles_never_sends_an_order_and_continues_after_a_restart(tmp_path):
    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"))
    watch = Watch()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            raw = perpetual_config(tmp_path, url)
            raw["venues"][0].update(api_key_env=None, secret_env=None)  # public market data only
            raw["strategies"][0]["mode"] = "shadow"
            running = await start_app(nursery, raw, watch)
            app = running.app
            await watch.until(lambda events: watch.count("strategy_active") >= 1)

            await history_read(app, sandbox)

            async def candle(n: int) -> None:
                await step_candle(exchange, watch, n)

            for n in (0, 1):
                await candle(n)
            await watch.until(lambda events: watch.count("order_placed") >= 3)  # the open, then its protection
            await candle(2)
            await watch.until(lambda events: watch.count("closed_by_protection") == 1)
            await candle(3)
            await watch.until(lambda events: watch.count("order_placed") >= 6)
            placed = {e.client_order_id for e in watch.of("order_placed")}
            fills = [e for e in watch.of("fill")]
            assert fills and all(e.payload["trade_id"].startswith("shadow-") for e in fills)
            assert Decimal(status(app, "strategy:trend")["position"]) == Decimal("0.5")

            await running.stop()
            again = Watch()
            running = await start_app(nursery, raw, again)
            app = running.app
            # The strategy lost money before the restart: its collateral, not its first
            # allocation, must fit the simulated account.
            await again.until(lambda events: again.count("strategy_active") >= 1)
            assert Decimal(status(app, "strategy:trend")["position"]) == Decimal("0.5")
            assert status(app, "strategy:trend")["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}
            assert again.count("order_placed") == 0, "the simulated account kept the protection: adopted"
            state = await exchange.state()
            nursery.cancel_scope.cancel()
    assert state["order_requests"] == [] and state["orders"] == [] and state["algo_orders"] == []
    signed = {"/fapi/v3/account", "/fapi/v1/order", "/fapi/v1/algoOrder", "/fapi/v1/userTrades", "/fapi/v1/leverage"}
    assert not any(path in signed for _, _, path, _ in sandbox.request_log)
    assert len(placed) == 6


#: Review 13c, F3 and F5: (open, high, low, close) per hour from 2024-01-01 00:00 UTC.
PLAN_CANDLES = [
    (980, 980, 980, 980),       # -  history
    (980, 980, 980, 980),       # 0
    (980, 1010, 980, 1010),     # 1  crosses 1000 up: long 0.5, the buy rests at 979.7 (3 % below)
    # here limitline restarts, the buy resting
    (1010, 1010, 1008, 1010),   # 2  nothing fires
    (1010, 1010, 994, 994),     # 3  crosses 995 down: short 0.5 (the old buy never reached)
] + [(994, 994, 994, 994)] * 6


def plan_sandbox(tmp_path, candles) -> Sandbox:
    """The frozen USD-M sandbox on ``candles`` (hourly from 2024-01-01 00:00 UTC)."""
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"2024-01-01T{hour:02d}:00:00Z,{o},{h},{l},{c},1000" for hour, (o, h, l, c) in enumerate(candles)]  # noqa: E741
    (tmp_path / "plan.csv").write_text("\n".join(lines) + "\n")
    return frozen_usdm_sandbox(str(tmp_path / "plan.csv"))


def plan_config(tmp_path, url: str, **strategy) -> dict:
    """The base config with its one strategy named ``plan`` and updated with ``strategy``."""
    raw = perpetual_config(tmp_path, url)
    return {**raw, "strategies": [{**raw["strategies"][0], "name": "plan", **strategy}]}


async def test_after_a_restart_a_flip_cancels_the_buy_placed_before_it_first(tmp_path, credentials):
    """Review 13c, F3, through ``ccxt.binanceusdm``: a buy (long open leg) placed before
    limitline restarts, then a decision for a short. The restored buy is cancelled
    ("superseded") and the short's sell is placed only once it has ended; before, the sell
    went out beside the old buy, which kept resting (and filling) the wrong way."""
    sandbox = plan_sandbox(tmp_path, PLAN_CANDLES)
    watch = Watch()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            raw = plan_config(tmp_path, url, limit_offset_bps=300, ttl_seconds=36000, protection=None)
            running = await start_app(nursery, raw, watch)

            async def candle(n: int) -> None:
                await step_candle(exchange, watch, n)

            await watch.until(lambda events: watch.count("strategy_active") >= 1)
            await until(lambda: last_candle_is(running.app, FIRST - 3600), sandbox.wait_for_request)
            await candle(0)
            await candle(1)
            await watch.until(lambda events: watch.count("order_placed") >= 1)
            [buy] = [e for e in watch.of("order_placed") if e.payload["side"] == "buy"]
            assert buy.payload["price"] == "979.7"

            async def buy_open() -> bool:
                return any(o["clientOrderId"] == buy.client_order_id and o["status"] == "open"
                           for o in (await exchange.state())["orders"])

            await until(buy_open, sandbox.wait_for_request)
            await running.stop()
            watch = Watch()
            running = await start_app(nursery, raw, watch)
            await watch.until(lambda events: watch.count("strategy_active") >= 1)
            await candle(2)
            await candle(3)
            await watch.until(lambda events: any(
                e.kind == "order_placed" and e.payload["side"] == "sell" for e in events))
            [canceled] = [e for e in watch.of("order_canceled") if e.client_order_id == buy.client_order_id]
            assert "superseded by a decision for short 0.5" in canceled.reason
            [sell] = [e for e in watch.of("order_placed") if e.payload["side"] == "sell"]
            state = await exchange.state()
            [old] = [o for o in state["orders"] if o["clientOrderId"] == buy.client_order_id]
            assert (old["status"], old["filled"]) == ("canceled", "0")
            # The sell went out once the buy had ended (``order_canceled`` is the exchange's answer).
            assert watch.events.index(canceled) < watch.events.index(sell)
            assert (await exchange.state())["violations"] == []
            nursery.cancel_scope.cancel()


async def last_candle_is(app, ts: int) -> bool:
    """The connection has read the candle of ``ts`` (the history it finds at start)."""
    return status(app, "connection:usdm")["last_candle"].get(S) == ts


#: Review 13c, F5: a long at candle 1 (crossing: it fills at once), then nothing fires.
STOP_REFUSED_CANDLES = [
    (980, 980, 980, 980),       # -  history
    (980, 980, 980, 980),       # 0
    (980, 1010, 980, 1010),     # 1  crosses 1000 up: long 0.5, filled at once; its stop refused
] + [(1010, 1010, 1010, 1010)] * 6


async def test_a_refused_stop_is_said_unprotected_and_placed_again_within_seconds_not_at_the_next_candle(
        tmp_path, credentials):
    """Review 13c, F5, through ``ccxt.binanceusdm``: the exchange refuses every conditional
    order (as when the symbol's conditional-order slots are full). ``unprotected`` says the
    position has no stop; the stop is placed again after 1 s, then 2 s (the strategy
    shell's timer), not an hour later at the next candle; once the exchange takes it again
    it rests, the market never moved."""
    sandbox = plan_sandbox(tmp_path, STOP_REFUSED_CANDLES)
    watch = Watch()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            running = await start_app(nursery, plan_config(tmp_path, url), watch)
            await watch.until(lambda events: watch.count("strategy_active") >= 1)
            await until(lambda: last_candle_is(running.app, FIRST - 3600), sandbox.wait_for_request)
            for n in (0, 1):
                if n == 1:
                    await exchange.post("/admin/faults", {"seed": 1, "error_rates": {"reject": 1.0},
                                                          "paths": ["/fapi/v1/algoOrder"], "methods": ["POST"]})
                await exchange.step()
                await watch.until(lambda events: any(
                    e.kind == "evaluated" and e.payload["ts"] == FIRST + 3600 * n for e in events))
            await watch.until(lambda events: watch.count("protection_refused") >= 2)
            [unprotected] = watch.of("unprotected")
            assert "the position of 0.5 has no stop-loss resting" in unprotected.reason
            assert [e.payload["wait_seconds"] for e in watch.of("protection_refused")][:2] == ["1", "2"]
            await exchange.post("/admin/faults", {"seed": 1, "error_rates": {}})

            async def stop_rests() -> bool:
                return [a["triggerPrice"] for a in (await exchange.state())["algo_orders"] if a["status"] == "NEW"] \
                    == ["989.8"]

            await until(stop_rests, sandbox.wait_for_request)
            assert status(running.app, "strategy:plan")["protection"] == {"take_profit": "0.5", "stop_loss": "0.5"}
            assert not [e for e in watch.events if e.kind == "evaluated" and e.payload["ts"] > FIRST + 3600]
            assert len(watch.of("unprotected")) == 1
            nursery.cancel_scope.cancel()

"""Review 13's findings on protection, end to end: the real ``ccxt.binanceusdm`` against
``limitline sandbox --market usdm`` (in-process, the market frozen and stepped a candle at
a time, as ``tests/test_perpetual_live.py`` runs it).

A short of 0.5 BTC fills 0.1 a candle (the sandbox fills at most a tenth of a candle's
volume of 1). Candle 2 closes at 1009.5: between the first stop's trigger (1009.8, for the
entry 990) and the resized stop's (1009.4, for the entry 989.55), so the exchange refuses the
resized stop with -2021 "Order would immediately trigger". Before the fix the old stop was
cancelled anyway ("replaced by") and the open leg kept growing the short with no stop resting.
"""

from __future__ import annotations

from decimal import Decimal

import trio
from helpers import KEY, SECRET, Watch, start_app
from test_perpetual_live import (  # noqa: F401
    Exchange, admin, frozen_usdm_sandbox, history_read, status, step_candle, until, write_hourly_candles,
)

from exchange.perpetuals import MARKET_TYPES
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox

S = "BTC/USDT:USDT"
CANDLES = [
    (1000, 1000, 1000, 1000),     # -  history
    (1000, 1000, 1000, 1000),     # 0
    (1000, 1000, 990, 990),       # 1  crosses 995 down: short 0.5 at 989.1; 0.1 taken at 990; stop trigger 1009.8
    (990, 1009.6, 985, 1009.5),   # 2  0.1 more at 989.1 (entry 989.55): the resized stop (trigger 1009.4) is passed: -2021
    (1009.5, 1012, 1005, 1008),   # 3  what still rests fills here (the open leg would have: it was cancelled)
] + [(1008, 1009, 1007, 1008)] * 6
FIRST = 1704070800


def write_candles(path) -> str:
    return write_hourly_candles(path, CANDLES, volume=1)


def config(tmp_path, url: str) -> dict:
    return {
        "store": str(tmp_path / "perp.sqlite"), "status": {"port": 0}, "reconciler": {"interval_seconds": 1.5},
        "venues": [{
            "name": "usdm", "kind": "ccxt", "exchange": "binanceusdm", "market_type": "swap", "base_url": url,
            "api_key_env": "LL_TEST_KEY", "secret_env": "LL_TEST_SECRET", "poll_seconds": 0.1,
            "rate_limit_per_second": 500, "margin_max_age_seconds": 5,
            "markets": [{"symbol": S, "leverage": 5, "margin_mode": "cross"}],
        }],
        "strategies": [{
            "name": "trend", "venue": "usdm", "symbol": S, "mode": "live",
            "allocation": {"quote": 5000}, "sizing": {"base": 0.5},
            "buy": {"kind": "price_cross", "level": 1100, "direction": "up"},
            "sell": {"kind": "price_cross", "level": 995, "direction": "down"},
            "on_buy": "long", "on_sell": "short", "limit_offset_bps": -10, "ttl_seconds": 72000,
            "protection": {"take_profit_pct": 5, "stop_loss_pct": 2, "stop_limit_slippage_pct": 0.5, "gap_slippage_pct": 1},
            "breaker": {"threshold": 5, "cooldown_seconds": 1, "max_cooldown_seconds": 4},
        }],
    }


async def test_a_resized_stop_refused_minus_2021_escalates_at_once_and_the_short_stops_growing(tmp_path, credentials):
    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"))
    watch = Watch()
    try:
        await _scenario(tmp_path, sandbox, watch)
    except BaseException:
        for e in watch.events:
            if e.kind != "evaluated":
                print(e.kind, e.client_order_id, e.reason, e.payload)
        raise


async def _scenario(tmp_path, sandbox, watch):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            running = await start_app(nursery, config(tmp_path, url), watch)
            app = running.app
            await watch.until(lambda events: watch.count("strategy_active") >= 1)

            await history_read(app, sandbox)

            async def candle(n: int) -> None:
                await step_candle(exchange, watch, n)

            await candle(0)
            await candle(1)
            await watch.until(lambda events: any(e.payload.get("leg") == "stop_loss" for e in watch.of("order_placed")))
            await candle(2)
            await watch.until(lambda events: watch.count("protection_escalated") >= 1)
            for n in range(3, 6):
                await candle(n)

            async def flat() -> bool:
                state = await exchange.state()
                return Decimal(state["positions"][S]["size"]) == 0 and not [
                    o for o in state["orders"] if o["status"] == "open"]

            await until(flat, sandbox.wait_for_request)
            state = await exchange.state()
            nursery.cancel_scope.cancel()

    [refused] = [e for e in watch.of("order_rejected") if "(code -2021)" in e.reason]
    stops = [e.client_order_id for e in watch.of("order_placed") if e.payload.get("leg") == "stop_loss"]
    assert stops[-1] == refused.client_order_id and len(stops) == 2
    canceled = {e.client_order_id: e.reason for e in watch.of("order_canceled")}
    assert "replaced by" not in canceled[stops[0]] and "escalation" in canceled[stops[0]]
    # The short never grew past what it held when its stop could not rest.
    size, largest = Decimal(0), Decimal(0)
    for trade in state["trades"]:
        size += Decimal(trade["amount"]) * (1 if trade["side"] == "buy" else -1)
        largest = max(largest, -size)
    assert largest == Decimal("0.2") and size == 0
    [open_leg] = [e.client_order_id for e in watch.of("order_placed") if e.payload.get("leg") == "open"]
    assert "escalation" in canceled[open_leg]
    # One escalation: a crossing reduce-only buy 1 % beyond the price, nothing else closing then.
    [escalation] = [e for e in watch.of("order_placed") if e.payload.get("leg") == "escalation"]
    assert escalation.payload["side"] == "buy" and escalation.payload["reduce_only"] is True
    assert escalation.payload["amount"] == "0.2" and Decimal(escalation.payload["price"]) in (Decimal("1019.5"), Decimal("1019.6"))
    assert state["violations"] == []
    assert all(r["type"] not in MARKET_TYPES and not r["closePosition"] for r in state["order_requests"])


FLIP_CANDLES = [
    (980, 980, 980, 980),       # -  history
    (980, 980, 980, 980),       # 0
    (980, 1010, 980, 1010),     # 1  crosses 1000 up: a long of 0.5 at 1010, protected
    # here an operator closes the long on the exchange; limitline has not heard of it
    (1010, 1010, 993, 993),     # 2  crosses 995 down: a flip, whose close the exchange refuses (-2022)
] + [(993, 994, 992, 993)] * 6


async def test_a_close_refused_minus_2022_is_held_until_the_position_is_read_again(tmp_path, credentials):
    """Review 13, finding 3: a flip's close refused -2022 (the position was already gone
    on the exchange) was re-sent every few milliseconds until the fill was heard."""
    path = tmp_path / "c.csv"
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"2024-01-01T{hour:02d}:00:00Z,{o},{h},{l},{c},1000" for hour, (o, h, l, c) in enumerate(FLIP_CANDLES)]  # noqa: E741
    path.write_text("\n".join(lines) + "\n")
    sandbox = Sandbox(SandboxSettings(data=str(path), speed=1, api_key=KEY, secret=SECRET, market="usdm",
                                      balances={"USDT": Decimal(10000)}))
    sandbox.frozen = True
    sandbox.step(1)
    raw = config(tmp_path, "")
    raw["strategies"][0].update(buy={"kind": "price_cross", "level": 1000, "direction": "up"})
    watch = Watch()
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(serve_sandbox, sandbox, 0)
                raw["venues"][0]["base_url"] = url
                exchange = Exchange(url)
                app = (await start_app(nursery, raw, watch)).app
                await watch.until(lambda events: watch.count("strategy_active") >= 1)

                await history_read(app, sandbox)

                async def candle(n: int) -> None:
                    await step_candle(exchange, watch, n)

                await candle(0)
                await candle(1)
                await watch.until(lambda events: Decimal(status(app, "strategy:trend")["position"]) == Decimal("0.5"))
                await exchange.post("/admin/operator/close", {"symbol": "BTCUSDT"})
                await candle(2)
                await watch.until(lambda events: "position_changed_outside" in {
                    e.payload.get("class") for e in watch.of("reconcile_difference")})
                await watch.until(lambda events: Decimal(status(app, "strategy:trend")["position"]) == Decimal("-0.5"))
                state = await exchange.state()
                nursery.cancel_scope.cancel()
    except BaseException:
        for e in watch.events:
            if e.kind != "evaluated":
                print(e.kind, e.client_order_id, e.reason, e.payload)
        raise
    refused = [e for e in watch.of("order_rejected") if "(code -2022)" in e.reason]
    held = watch.of("close_held")
    # Each refusal held the closes (1 s, then 2 s ...) until the reconciler read the position:
    # a handful at most, never the burst of one every few milliseconds.
    assert 1 <= len(refused) <= 4 and len(held) == len(refused), [e.client_order_id for e in refused]
    assert "stale" in held[0].reason and held[0].payload["wait_seconds"] == "1"
    assert Decimal(state["positions"][S]["size"]) == Decimal("-0.5")  # the flip then opened the short
    assert state["violations"] == []

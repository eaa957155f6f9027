"""A stop gapped while limitline was down is escalated at start-up, not at the next candle's
close (review 13c, F2), also when the restarted strategy's pre-flight fails (F14: what is
held is still protected). End to end: the real ``ccxt.binanceusdm`` against ``limitline
sandbox --market usdm`` in-process, the market frozen and stepped a candle at a time.

A long of 0.5 opens at 1010 with its stop (trigger 989.8, limit 984.8) resting. limitline
stops; the market gaps to 950 (the stop triggers, its child sell at 984.8 rests unfilled far
above the price); limitline starts again. Before the fix nothing happened until the next
candle closed (an hour, live): the position sat 3.5 % past its stop. The market stays frozen
here until the escalation is placed, so only the start-up can have decided it.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
from helpers import Watch, start_app
from test_perpetual_live import (  # noqa: F401
    Exchange, frozen_usdm_sandbox, history_read, perpetual_config, write_hourly_candles, status, step_candle, until,
)

from exchange.perpetuals import MARKET_TYPES
from exchange.sandbox import serve_sandbox

S = "BTC/USDT:USDT"
CANDLES = [
    (980, 980, 980, 980),       # -  history
    (980, 980, 980, 980),       # 0
    (980, 1010, 980, 1010),     # 1  crosses 1000 up: a long of 0.5 at 1010, protected
    (1010, 1012, 1008, 1010),   # 2
    # here limitline stops
    (950, 955, 940, 950),       # 3  a gap through the stop (trigger 989.8, limit 984.8): its child rests unfilled
    # here limitline starts again
] + [(950, 951, 949, 950)] * 4
FIRST = 1704070800


def write_candles(path) -> str:
    return write_hourly_candles(path, CANDLES)


@pytest.mark.parametrize("margin_mode", ["cross", "isolated"], ids=[
    "restart (F2)", "restart whose pre-flight fails: the exchange refuses the margin mode with a position open (F14)"])
async def test_a_stop_gapped_while_limitline_was_down_is_escalated_at_start_up(tmp_path, credentials, margin_mode):
    sandbox = frozen_usdm_sandbox(write_candles(tmp_path / "c.csv"))
    first, again = Watch(), Watch()
    try:
        await _scenario(tmp_path, sandbox, first, again, margin_mode)
    except BaseException:
        for e in first.events + again.events:
            if e.kind != "evaluated":
                print(e.kind, e.client_order_id, e.reason, e.payload)
        raise


async def _scenario(tmp_path, sandbox, watch, again, margin_mode):
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            exchange = Exchange(url)
            raw = perpetual_config(tmp_path, url)
            running = await start_app(nursery, raw, watch)
            app = running.app
            await watch.until(lambda events: watch.count("strategy_active") >= 1)

            await history_read(app, sandbox)

            async def candle(n: int) -> None:
                await step_candle(exchange, watch, n)

            await candle(0)
            await candle(1)

            async def protected() -> bool:
                state = await exchange.state()
                return [a["status"] for a in state["algo_orders"]] == ["NEW"] and Decimal(
                    state["positions"][S]["size"]) == Decimal("0.5")

            await until(protected, sandbox.wait_for_request)
            await candle(2)
            await running.stop()

            await exchange.step()  # candle 3: the gap, while limitline is down
            state = await exchange.state()
            [stop] = state["algo_orders"]
            assert stop["status"] == "TRIGGERED" and (stop["triggerPrice"], stop["price"]) == ("989.8", "984.8")
            assert Decimal(state["positions"][S]["size"]) == Decimal("0.5")

            raw["venues"][0]["markets"][0]["margin_mode"] = margin_mode
            running = await start_app(nursery, raw, again)
            app = running.app
            # The market stays frozen: nothing but the start-up can decide this.
            await again.until(lambda events: again.count("protection_escalated") >= 1)
            strategy = status(app, "strategy:trend")
            if margin_mode == "isolated":
                assert strategy["active"] is False and again.count("preflight_failed") >= 1
                assert "margin" in strategy["inactive_reason"]
            else:
                assert strategy["active"] is True
            assert not [e for e in again.of("evaluated") if e.payload["ts"] > FIRST + 3600 * 3]

            await exchange.step()  # candle 4: the escalation's crossing sell fills

            async def flat() -> bool:
                state = await exchange.state()
                return Decimal(state["positions"][S]["size"]) == 0 and not [
                    o for o in state["orders"] if o["status"] == "open"]

            await until(flat, sandbox.wait_for_request)
            state = await exchange.state()
            nursery.cancel_scope.cancel()

    [escalating] = again.of("protection_escalating")
    assert "gap" in escalating.reason and Decimal(escalating.payload["price"]) == 950
    [escalation] = [e for e in again.of("order_placed") if e.payload.get("leg") == "escalation"]
    assert escalation.payload["side"] == "sell" and escalation.payload["reduce_only"] is True
    assert escalation.payload["amount"] == "0.5" and Decimal(escalation.payload["price"]) == Decimal("940.5")
    assert state["violations"] == []
    assert all(r["type"] not in MARKET_TYPES and not r["closePosition"] for r in state["order_requests"])


FILLED_AT_TRIGGER = CANDLES[:4] + [
    (1010, 1010, 940, 950),     # 3  the stop triggers at 989.8 and its child fills within the candle; it closes at 950
] + [(950, 951, 949, 950)] * 4


async def test_a_stop_that_filled_within_the_candle_is_not_escalated_and_no_gap_is_left_standing(tmp_path, credentials):
    """Review 13c, F6: the candle's close (950, beyond the stop's limit 984.8) reaches the
    strategy before the trade poll books the stop's fill: it decided a gap
    (``protection_escalating``) and said nothing more. Now that escalation, if decided, is
    dropped with an event once the fill is booked; no escalation order is ever sent."""
    path = tmp_path / "c.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(
        f"2024-01-01T{hour:02d}:00:00Z,{o},{h},{l},{c},1000" for hour, (o, h, l, c) in enumerate(FILLED_AT_TRIGGER)) + "\n")
    sandbox = frozen_usdm_sandbox(str(path))
    watch = Watch()
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(serve_sandbox, sandbox, 0)
                exchange = Exchange(url)
                running = await start_app(nursery, perpetual_config(tmp_path, url), watch)
                app = running.app
                await watch.until(lambda events: watch.count("strategy_active") >= 1)

                await history_read(app, sandbox)
                for n in range(3):
                    await exchange.step()
                    await watch.until(lambda events, n=n: any(
                        e.kind == "evaluated" and e.payload["ts"] == FIRST + 3600 * n for e in events))
                    if n == 1:
                        await watch.until(lambda events: watch.count("protection_placed") >= 2)
                await exchange.step()  # candle 3: the stop fills at its trigger inside it
                await watch.until(lambda events: watch.count("closed_by_protection") >= 1)
                await watch.until(lambda events: any(
                    e.kind == "evaluated" and e.payload["ts"] == FIRST + 3600 * 3 for e in events))
                await watch.until(lambda events: watch.count("protection_escalating") == watch.count(
                    "protection_escalation_dropped"))
                state = await exchange.state()
                nursery.cancel_scope.cancel()
    except BaseException:
        for e in watch.events:
            if e.kind != "evaluated":
                print(e.kind, e.client_order_id, e.reason, e.payload)
        raise
    [closed] = watch.of("closed_by_protection")
    assert "stop-loss" in closed.reason and "989.8" in closed.reason
    assert not [e for e in watch.of("order_placed") if e.payload.get("leg") == "escalation"]
    assert not watch.of("protection_escalated")
    for dropped in watch.of("protection_escalation_dropped"):
        assert "filled in full" in dropped.reason or "the position is closed" in dropped.reason
    assert Decimal(state["positions"][S]["size"]) == 0 and state["violations"] == []

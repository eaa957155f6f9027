"""The USD-M sandbox through the wire, with the real ccxt.binanceusdm client.

Each test starts ``limitline sandbox --market usdm``'s server on a free loopback port and
calls ccxt from a worker thread, as the connection actor does. The candles are a small CSV
written by the test, so what a candle does to an order is known; the market starts frozen
and is released when the test has placed what it needs.
"""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

import ccxt
import pytest
import trio

from exchange.ccxt_adapter import classify, error_reason, make_client
from exchange.errors import ErrorKind
from exchange.faults import FaultSettings
from exchange.perpetuals import MARKET_TYPES
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox

S = "BTC/USDT:USDT"


def write_candles(path, rows) -> str:
    """Hourly candles from 00:00 UTC: rows of (open, high, low, close)."""
    lines = ["timestamp,open,high,low,close,volume"]
    for hour, (o, h, l, c) in enumerate(rows):  # noqa: E741
        lines.append(f"2024-01-{1 + hour // 24:02d}T{hour % 24:02d}:00:00Z,{o},{h},{l},{c},100")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


FLAT = [(1000, 1000, 1000, 1000)] * 40


async def run_usdm(work, data: str, faults: FaultSettings | None = None, speed: float = 20.0, frozen: bool = True):
    sandbox = Sandbox(SandboxSettings(data=data, speed=speed, market="usdm", balances={"USDT": Decimal(10000)}), faults)
    sandbox.frozen = frozen
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        client = make_client("binanceusdm", api_key="sandbox-key", secret="sandbox-secret", base_url=url,
                             timeout_ms=3000, market_type="swap")
        await trio.to_thread.run_sync(client.load_markets)
        result = await trio.to_thread.run_sync(work, client, sandbox, url)
        nursery.cancel_scope.cancel()
    return result


def admin(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return {"status": refused.code} | json.loads(refused.read())


def release_market(url: str) -> None:
    admin(url, "/admin/market", {"frozen": False})


def no_market_order_was_sent(url: str) -> list[dict]:
    state = admin(url, "/admin/state")
    sent = state["order_requests"]
    assert sent, "no order reached the sandbox"
    assert all(r["type"] not in MARKET_TYPES and not r["closePosition"] for r in sent), sent
    assert state["violations"] == []
    return sent


@pytest.fixture
def flat(tmp_path) -> str:
    return write_candles(tmp_path / "flat.csv", FLAT)


async def test_settings_and_a_limit_orders_life_through_binanceusdm(flat):
    def work(client, sandbox, url):
        market = client.market(S)
        balance = client.fetch_balance()
        client.set_leverage(5, S)
        client.set_margin_mode("isolated", S)
        with pytest.raises(ccxt.MarginModeAlreadySet):  # ccxt reads Binance's -4046 by its message
            client.set_margin_mode("isolated", S)
        leverage = client.fetch_leverage(S)
        order = client.create_order(S, "limit", "buy", 0.2, 990, {"clientOrderId": "ll-u-1", "postOnly": True})
        listed = client.fetch_open_orders(S)
        fetched = client.fetch_order(order["id"], S)
        canceled = client.cancel_order(order["id"], S)
        return market, balance, leverage, order, listed, fetched, canceled, no_market_order_was_sent(url)

    market, balance, leverage, order, listed, fetched, canceled, sent = await run_usdm(work, flat)
    assert market["swap"] and market["linear"] and market["settle"] == "USDT" and market["limits"]["cost"]["min"] == 100
    assert balance["USDT"] == {"free": 10000.0, "used": 0.0, "total": 10000.0}
    assert leverage["longLeverage"] == 5 and leverage["marginMode"] == "isolated"
    assert (order["status"], order["type"], order["timeInForce"], order["postOnly"]) == ("open", "limit", "PO", True)
    assert [o["clientOrderId"] for o in listed] == ["ll-u-1"] and fetched["id"] == order["id"]
    assert canceled["status"] == "canceled"
    assert sent[-1]["code"] is None and sent[-1]["timeInForce"] == "GTX"


async def test_a_crossing_limit_takes_and_reads_back_as_a_position_trades_and_balance(flat):
    def work(client, sandbox, url):
        client.set_leverage(10, S)
        client.create_order(S, "limit", "buy", 0.5, 1010, {"clientOrderId": "ll-u-open"})
        [position] = client.fetch_positions([S])
        [trade] = client.fetch_my_trades(S)
        return position, trade, client.fetch_balance()["USDT"], client.fetch_positions([S], {"useV2": True})[0]

    position, trade, balance, v2 = await run_usdm(work, flat)
    assert (position["side"], position["contracts"], position["entryPrice"]) == ("long", 0.5, 1000)
    assert position["marginMode"] == "cross" and position["initialMargin"] == 50 and v2["leverage"] == 10
    assert trade["takerOrMaker"] == "taker" and trade["price"] == 1000 and trade["fee"] == {"cost": 0.25, "currency": "USDT"}
    assert balance["total"] == 10000 - 0.25 and balance["used"] == 50


async def test_rejections_come_back_as_plain_exchange_errors_and_are_classified_by_their_code(flat):
    def work(client, sandbox, url):
        errors = {}
        for name, call in {
            "reduce_only": lambda: client.create_order(S, "limit", "sell", 0.2, 1100, {"reduceOnly": True}),
            "min_notional": lambda: client.create_order(S, "limit", "buy", 0.05, 990),
            "margin": lambda: client.create_order(S, "limit", "buy", 300, 990),
        }.items():
            with pytest.raises(ccxt.ExchangeError) as caught:
                call()
            errors[name] = caught.value
        admin(url, "/admin/faults", {"error_rates": {"overloaded": 1.0}})
        with pytest.raises(ccxt.ExchangeError) as caught:
            client.create_order(S, "limit", "buy", 0.2, 990, {"clientOrderId": "ll-u-busy"})
        errors["overloaded"] = caught.value
        # The `reject` fault answers a futures code (-2019), not spot's -2010.
        admin(url, "/admin/faults", {"error_rates": {"reject": 1.0}})
        with pytest.raises(ccxt.ExchangeError) as caught:
            client.create_order(S, "limit", "buy", 0.2, 990, {"clientOrderId": "ll-u-refused"})
        errors["reject_fault"] = caught.value
        return errors

    errors = await run_usdm(work, flat)
    # Behind a base_url rewrite ccxt's futures table does not apply: plain ExchangeError ...
    assert all(type(e) is ccxt.ExchangeError for e in errors.values()), {k: type(e) for k, e in errors.items()}
    # ... and the exchange's own code still gives the right kind and reason.
    assert {k: (classify(e, write=True), error_reason(e)) for k, e in errors.items()} == {
        "reduce_only": (ErrorKind.REJECTED, "reduce-only order rejected"),
        "min_notional": (ErrorKind.REJECTED, "below the minimum notional"),
        "margin": (ErrorKind.REJECTED, "margin insufficient"),
        "overloaded": (ErrorKind.AMBIGUOUS, "server overloaded, outcome unknown"),
        "reject_fault": (ErrorKind.REJECTED, "margin insufficient"),
    }
    assert '"code":-2019' in str(errors["reject_fault"]).replace(" ", "")


async def test_market_orders_of_any_kind_are_refused_and_recorded(flat):
    def work(client, sandbox, url):
        client.create_order(S, "limit", "buy", 0.2, 1010)  # a long to protect
        attempts = [
            lambda: client.create_order(S, "market", "buy", 0.2),
            lambda: client.create_order(S, "market", "sell", 0.2, None, {"stopLossPrice": 900, "closePosition": True}),
            lambda: client.create_order(S, "market", "sell", 0.2, None, {"takeProfitPrice": 1100, "reduceOnly": True}),
            lambda: client.create_order(S, "market", "sell", 0.2, None, {"trailingPercent": 1, "reduceOnly": True}),
        ]
        for attempt in attempts:
            with pytest.raises(ccxt.ExchangeError):
                attempt()
        return admin(url, "/admin/state")

    state = await run_usdm(work, flat)
    assert [v["type"] for v in state["violations"]] == ["MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
    assert [r["type"] for r in state["order_requests"]] == ["LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"]
    assert len(state["orders"]) == 1 and state["algo_orders"] == []


async def test_a_stop_limit_rests_on_the_algo_endpoint_and_closes_the_position_when_a_candle_reaches_it(tmp_path):
    # Hour 1 falls through the trigger (970) but not the limit (965): the stop fills at 970.
    data = write_candles(tmp_path / "drop.csv", [(1000, 1000, 1000, 1000), (1000, 1002, 950, 960)] + [(960, 960, 960, 960)] * 40)

    def work(client, sandbox, url):
        client.set_leverage(10, S)
        client.create_order(S, "limit", "buy", 0.5, 1010, {"clientOrderId": "ll-u-entry"})
        stop = client.create_order(S, "limit", "sell", 0.5, 965, {"stopLossPrice": 970, "reduceOnly": True, "clientOrderId": "ll-u-sl"})
        take = client.create_order(S, "limit", "sell", 0.5, 1100, {"reduceOnly": True, "clientOrderId": "ll-u-tp"})
        regular = [o["clientOrderId"] for o in client.fetch_open_orders(S)]
        conditional = client.fetch_open_orders(S, params={"trigger": True})
        release_market(url)
        trio.from_thread.run(sandbox.wait_for_fill)
        return {
            "stop": stop, "regular": regular, "conditional": conditional,
            "algo": client.fetch_order(stop["id"], S, {"trigger": True}),
            "take": client.fetch_order(take["id"], S),
            "positions": client.fetch_positions([S]),
            "trades": client.fetch_my_trades(S),
            "income": client.fetch_ledger("USDT"),
            "balance": client.fetch_balance()["USDT"],
            "sent": no_market_order_was_sent(url),
        }

    seen = await run_usdm(work, data)
    # ccxt reads a STOP algo order as a limit order with a trigger price.
    stop = seen["stop"]
    assert (stop["type"], stop["info"]["orderType"], stop["triggerPrice"], stop["price"], stop["status"]) == ("limit", "STOP", 970, 965, "open")
    assert seen["regular"] == ["ll-u-tp"]  # a conditional order is listed only with trigger=True
    assert [(o["clientOrderId"], o["triggerPrice"], o["reduceOnly"]) for o in seen["conditional"]] == [("ll-u-sl", 970, True)]
    assert seen["algo"]["status"] == "closed" and seen["algo"]["info"]["algoStatus"] == "FINISHED"
    assert seen["take"]["status"] == "expired"  # reduce-only with nothing left to reduce
    assert seen["positions"] == []
    entry, exit_ = seen["trades"]
    assert (exit_["side"], exit_["price"], exit_["takerOrMaker"]) == ("sell", 970, "taker")
    assert float(exit_["info"]["realizedPnl"]) == -15.0
    fees = 0.5 * 1000 * 0.0005 + 0.5 * 970 * 0.0005
    assert sorted((e["info"]["incomeType"], float(e["info"]["income"]), e["direction"]) for e in seen["income"]) == sorted(
        [("COMMISSION", -0.25, "out"), ("REALIZED_PNL", -15.0, "out"), ("COMMISSION", -0.2425, "out")]
    )
    assert seen["balance"]["total"] == pytest.approx(10000 - 15 - fees)
    assert [r["endpoint"] for r in seen["sent"]] == ["/fapi/v1/order", "/fapi/v1/algoOrder", "/fapi/v1/order"]
    assert seen["sent"][1]["type"] == "STOP" and seen["sent"][1]["triggerPrice"] == "970"


async def test_a_gapped_stop_limit_triggers_and_its_child_rests_while_the_position_stays_open(tmp_path):
    data = write_candles(tmp_path / "gap.csv", [(1000, 1000, 1000, 1000), (940, 950, 930, 945)] + [(945, 950, 940, 945)] * 40)

    def work(client, sandbox, url):
        client.create_order(S, "limit", "buy", 0.5, 1010)
        stop = client.create_order(S, "limit", "sell", 0.5, 965, {"stopLossPrice": 970, "reduceOnly": True})
        release_market(url)
        trio.from_thread.run(sandbox.wait_for_candle)
        trio.from_thread.run(sandbox.wait_for_candle)
        algo = client.fetch_order(stop["id"], S, {"trigger": True})
        return algo, client.fetch_open_orders(S), client.fetch_positions([S])

    algo, open_orders, positions = await run_usdm(work, data)
    # ccxt reads TRIGGERED as closed although the child limit order has not filled.
    assert algo["status"] == "closed" and algo["info"]["algoStatus"] == "TRIGGERED"
    [child] = open_orders
    assert child["id"] == algo["info"]["actualOrderId"] and child["price"] == 965 and child["info"]["origType"] == "STOP"
    assert positions[0]["contracts"] == 0.5


async def test_operator_actions_are_visible_through_ccxt(flat):
    def work(client, sandbox, url):
        client.set_margin_mode("isolated", S)
        client.set_leverage(10, S)
        client.create_order(S, "limit", "buy", 1.0, 1010)
        seen = {"opened": client.fetch_positions([S])[0]}
        assert admin(url, "/admin/operator/margin", {"symbol": "BTCUSDT", "delta": "20"})["done"] == "margin"
        seen["margin_added"] = client.fetch_positions([S])[0]
        admin(url, "/admin/operator/leverage", {"symbol": "BTCUSDT", "leverage": 4})
        seen["leverage"] = client.fetch_leverage(S)
        admin(url, "/admin/operator/close", {"symbol": "BTCUSDT", "quantity": "0.4"})
        seen["reduced"] = client.fetch_positions([S])[0]
        seen["too_much"] = admin(url, "/admin/operator/transfer", {"delta": "-20000"})
        admin(url, "/admin/operator/transfer", {"delta": "-5000"})
        seen["withdrawn"] = client.fetch_balance()["USDT"]
        with pytest.raises(ccxt.ExchangeError) as caught:  # margin gone: the next open is refused
            client.create_order(S, "limit", "buy", 20, 990)
        seen["denied"] = error_reason(caught.value)
        admin(url, "/admin/operator/close", {"symbol": "BTCUSDT"})
        seen["closed"] = client.fetch_positions([S])
        seen["ledger"] = [e["info"]["incomeType"] for e in client.fetch_ledger("USDT")]
        return seen

    seen = await run_usdm(work, flat)
    assert seen["opened"]["contracts"] == 1 and seen["opened"]["collateral"] == 100
    assert seen["margin_added"]["collateral"] == 120
    assert seen["leverage"]["longLeverage"] == 4
    assert seen["reduced"]["contracts"] == 0.6
    assert seen["too_much"]["code"] == -2019
    assert seen["withdrawn"]["total"] < 5000
    assert seen["denied"] == "margin insufficient"
    assert seen["closed"] == []
    assert seen["ledger"].count("TRANSFER") == 1 and seen["ledger"].count("COMMISSION") == 3


async def test_funding_is_booked_as_income_every_eight_hours(flat):
    def work(client, sandbox, url):
        client.create_order(S, "limit", "buy", 1.0, 1010)
        release_market(url)
        while len(admin(url, "/admin/state")["income"]) < 2:
            trio.from_thread.run(sandbox.wait_for_candle)
        return client.fetch_funding_history(S)

    [funding] = await run_usdm(work, flat, speed=50)
    assert funding["amount"] == -0.1 and funding["code"] == "USDT"  # 1 BTC * 1000 * 0.0001, a long pays


async def test_the_sandboxs_faults_apply_to_the_futures_paths_and_the_algo_endpoint(flat):
    def work(client, sandbox, url):
        admin(url, "/admin/faults", {"burst_429": 1})
        with pytest.raises(ccxt.DDoSProtection):
            client.fetch_balance()
        client.create_order(S, "limit", "buy", 0.5, 1010)  # a long to protect
        admin(url, "/admin/faults", {"error_rates": {"timeout_after_accept": 1.0}, "hold_seconds": 5,
                                     "paths": ["/fapi/v1/algoOrder"]})
        with pytest.raises(ccxt.RequestTimeout):
            client.create_order(S, "limit", "sell", 0.5, 965, {"stopLossPrice": 970, "reduceOnly": True, "clientOrderId": "ll-u-late"})
        admin(url, "/admin/faults", {})
        placed = [o["clientOrderId"] for o in client.fetch_open_orders(S, params={"trigger": True})]
        order = client.create_order(S, "limit", "sell", 0.2, 1100, {"reduceOnly": True})
        admin(url, "/admin/faults", {"error_rates": {"fill_before_cancel": 1.0}})
        with pytest.raises(ccxt.OrderNotFound):  # -2011: the cancel lost the race with a fill
            client.cancel_order(order["id"], S)
        admin(url, "/admin/faults", {})
        return placed, client.fetch_order(order["id"], S), admin(url, "/admin/state")["faults"]["injected"]

    placed, filled, injected = await run_usdm(work, flat)
    assert placed == ["ll-u-late"]  # the exchange acted although the client timed out
    assert filled["status"] == "closed" and filled["filled"] == 0.2
    assert (injected["rate_limit"], injected["timeout_after_accept"], injected["fill_before_cancel"]) == (1, 1, 1)


async def test_the_adapters_derivatives_operations_read_the_exchange_as_records(tmp_path):
    from exchange.ccxt_adapter import perform
    from exchange.records import Side

    data = write_candles(tmp_path / "drop.csv", [(1000, 1000, 1000, 1000), (1000, 1002, 950, 960)] + [(960, 960, 960, 960)] * 40)

    def work(client, sandbox, url):
        def op(name, *args, **kwargs):
            return perform(client, name, args, kwargs)

        op("set_leverage", S, 10)
        op("set_margin_mode", S, "isolated")
        op("set_margin_mode", S, "isolated")  # already so: no error
        seen = {"leverage": op("fetch_leverage", S)}
        op("create_limit_order", S, Side.BUY, Decimal("0.5"), Decimal("1010"), "ll-a-entry")
        with pytest.raises(ccxt.ExchangeError) as caught:
            op("create_limit_order", S, Side.BUY, Decimal("0.1"), Decimal("900"), "ll-a-ro", reduce_only=True)
        seen["reduce_only"] = classify(caught.value, write=True), error_reason(caught.value)
        seen["stop"] = op("create_conditional_order", S, Side.SELL, Decimal("0.5"), Decimal("965"), Decimal("970"), "ll-a-sl")
        seen["take"] = op("create_conditional_order", S, Side.SELL, Decimal("0.5"), Decimal("1200"), Decimal("1190"), "ll-a-tp",
                          kind="take_profit")
        seen["open_conditional"] = op("fetch_open_conditional_orders", S)
        seen["positions"] = op("fetch_positions", [S])
        release_market(url)
        trio.from_thread.run(sandbox.wait_for_fill)
        seen["stop_after"] = op("fetch_conditional_order", seen["stop"].exchange_order_id, S)
        op("cancel_conditional_order", seen["take"].exchange_order_id, S)
        seen["open_after"] = op("fetch_open_conditional_orders", S)
        seen["positions_after"] = op("fetch_positions", [S])
        seen["income"] = op("fetch_income", "USDT")
        seen["wallet"] = Decimal(admin(url, "/admin/state")["wallet"])
        return seen

    seen = await run_usdm(work, data)
    assert seen["leverage"] == (10, "isolated")
    assert seen["reduce_only"] == (ErrorKind.REJECTED, "reduce-only order rejected")
    stop = seen["stop"]
    assert (stop.client_order_id, stop.kind, stop.trigger_price, stop.price, stop.reduce_only, stop.status) == (
        "ll-a-sl", "stop", Decimal(970), Decimal(965), True, "open")
    assert [o.kind for o in seen["open_conditional"]] == ["stop", "take_profit"]
    [position] = seen["positions"]
    assert (position.size, position.entry_price, position.margin_mode, position.isolated_margin) == (
        Decimal("0.5"), Decimal(1000), "isolated", Decimal(50))
    after = seen["stop_after"]
    assert (after.status, after.exchange_status) == ("closed", "FINISHED") and after.child_order_id
    assert seen["open_after"] == [] and seen["positions_after"] == []
    assert {(e.kind, e.symbol) for e in seen["income"]} == {("COMMISSION", S), ("REALIZED_PNL", S)}
    assert Decimal(10000) + sum(e.amount for e in seen["income"]) == seen["wallet"]


async def test_a_liquidation_is_listed_as_a_forced_order_with_its_trade_and_income(tmp_path):
    data = write_candles(tmp_path / "crash.csv", [(1000, 1000, 1000, 1000), (990, 995, 850, 870)] + [(870, 870, 870, 870)] * 40)

    def work(client, sandbox, url):
        client.set_margin_mode("isolated", S)
        client.set_leverage(10, S)
        client.create_order(S, "limit", "buy", 1.0, 1010)
        [before] = client.fetch_positions([S])
        release_market(url)
        trio.from_thread.run(sandbox.wait_for_fill)
        return before, client.fetch_my_liquidations(S), client.fetch_my_trades(S), client.fetch_positions([S]), client.fetch_ledger("USDT")

    before, liquidations, trades, after, ledger = await run_usdm(work, data)
    [liquidation] = liquidations
    assert liquidation["price"] == pytest.approx(before["liquidationPrice"], abs=0.1) and liquidation["contracts"] == 1
    forced = trades[-1]
    assert forced["order"] == str(liquidation["info"]["orderId"]) and forced["takerOrMaker"] == "taker"
    assert liquidation["info"]["clientOrderId"].startswith("autoclose-")
    assert after == []
    assert "INSURANCE_CLEAR" in [e["info"]["incomeType"] for e in ledger]


def test_limitline_sandbox_market_usdm_serves_binanceusdm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from helpers import Lines

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "LIMITLINE_SANDBOX_API_KEY": "k", "LIMITLINE_SANDBOX_SECRET": "s"}
    process = subprocess.Popen([sys.executable, "-m", "supervisors.cli", "sandbox", "--market", "usdm", "--port", "0",
                                "--balances", "USDT=2500"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = Lines(process.stderr).wait_for(r"USD-M futures REST on (http://127\.0\.0\.1:\d+)").group(1)
        client = make_client("binanceusdm", api_key="k", secret="s", base_url=url, market_type="swap")
        client.load_markets()
        assert client.fetch_balance()["USDT"]["total"] == 2500
        order = client.create_order(S, "limit", "buy", 0.1, 1000)
        assert order["status"] == "open" and admin(url, "/admin/state")["orders"][0]["type"] == "LIMIT"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

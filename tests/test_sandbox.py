"""The sandbox exchange through the wire, with the real ccxt.binance client.

Each test starts the server on a free loopback port and calls ccxt from a worker thread,
as the connection actor does. Every error kind arrives as ccxt's own exception class.
"""

from __future__ import annotations

import json
import urllib.request

import ccxt
import pytest
import trio

from exchange.candles import bundled_path
from exchange.ccxt_adapter import make_client, rewrite_urls
from exchange.faults import FaultSettings
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox


async def run_against_sandbox(work, faults: FaultSettings | None = None, speed: float = 50.0):
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=speed), faults)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        client = make_client("binance", api_key="sandbox-key", secret="sandbox-secret", base_url=url, timeout_ms=2000)
        await trio.to_thread.run_sync(client.load_markets)
        result = await trio.to_thread.run_sync(work, client, sandbox, url)
        nursery.cancel_scope.cancel()
    return result


def admin(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_base_url_rewrites_every_rest_url_and_keeps_paths():
    client = make_client("binance", base_url="http://127.0.0.1:9999")
    flat = json.dumps(client.urls["api"])
    assert "binance.com" not in flat
    assert client.urls["api"]["public"] == "http://127.0.0.1:9999/api/v3"
    assert client.urls["api"]["sapi"] == "http://127.0.0.1:9999/sapi/v1"
    with pytest.raises(ValueError, match="base_url must look like"):
        rewrite_urls({}, "127.0.0.1:9999")


async def test_markets_balance_and_an_orders_life_through_ccxt():
    def work(client, sandbox, url):
        market = client.market("BTC/USDT")
        balance = client.fetch_balance()
        order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-1"})
        fetched = client.fetch_order(order["id"], "BTC/USDT")
        open_ids = [o["clientOrderId"] for o in client.fetch_open_orders("BTC/USDT")]
        canceled = client.cancel_order(order["id"], "BTC/USDT")
        return market, balance, order, fetched, open_ids, canceled

    market, balance, order, fetched, open_ids, canceled = await run_against_sandbox(work)
    assert market["precision"]["price"] == 0.01 and market["limits"]["cost"]["min"] == 5
    assert balance["total"]["USDT"] == 100000 and balance["total"]["BTC"] == 2
    assert order["clientOrderId"] == "ll-t-1" and order["status"] == "open" and order["type"] == "limit"
    assert fetched["id"] == order["id"] and "ll-t-1" in open_ids
    assert canceled["status"] == "canceled"


async def test_a_crossing_order_fills_at_once_as_a_taker_and_a_post_only_one_is_refused():
    def work(client, sandbox, url):
        trio.from_thread.run(sandbox.wait_for_candle)  # the market has a last trade (about 2,500)
        # LIMIT_MAKER (ccxt's postOnly) that would cross: refused as Binance refuses it.
        with pytest.raises(ccxt.OrderImmediatelyFillable):
            client.create_order("BTC/USDT", "limit", "buy", 0.01, 3000, {"clientOrderId": "ll-t-po", "postOnly": True})
        order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 3000, {"clientOrderId": "ll-t-2"})
        closes = {float(c.close) for c in sandbox.dialect.closed["BTC/USDT"]}
        return order, client.fetch_my_trades("BTC/USDT"), closes

    order, [trade], closes = await run_against_sandbox(work)
    assert order["status"] == "closed" and order["filled"] == 0.01  # far above the market: taken on arrival
    assert trade["price"] in closes and trade["price"] < 3000 and trade["amount"] == 0.01  # at the last trade
    assert trade["takerOrMaker"] == "taker"
    assert trade["fee"] == {"currency": "BTC", "cost": 0.00001}  # a buy's fee in the coin received, as on Binance


@pytest.mark.parametrize(
    "call, exception",
    [
        (lambda c: c.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                         "quantity": "0.01", "price": "2000.001"}), ccxt.InvalidOrder),
        (lambda c: c.create_order("BTC/USDT", "limit", "buy", 1000, 2000), ccxt.InsufficientFunds),
        (lambda c: c.cancel_order("999", "BTC/USDT"), ccxt.OrderNotFound),
        (lambda c: c.fetch_order("999", "BTC/USDT"), ccxt.OrderNotFound),
    ],
)
async def test_rejections_raise_ccxts_own_exceptions(call, exception):
    def work(client, sandbox, url):
        with pytest.raises(exception):
            call(client)

    await run_against_sandbox(work)


async def test_a_wrong_key_or_secret_is_an_authentication_error():
    def work(client, sandbox, url):
        for key, secret in [("wrong", "sandbox-secret"), ("sandbox-key", "wrong")]:
            other = make_client("binance", api_key=key, secret=secret, base_url=url)
            other.load_markets()
            with pytest.raises(ccxt.AuthenticationError):
                other.fetch_balance()

    await run_against_sandbox(work)


async def test_injected_faults_arrive_as_their_ccxt_classes():
    def work(client, sandbox, url):
        admin(url, "/admin/faults", {"burst_429": 1, "retry_after_seconds": 2})
        with pytest.raises(ccxt.DDoSProtection):  # ccxt's class for HTTP 429 from binance
            client.fetch_balance()
        admin(url, "/admin/faults", {"error_rates": {"server_error": 1.0}})
        with pytest.raises(ccxt.ExchangeNotAvailable):
            client.fetch_balance()
        admin(url, "/admin/faults", {"error_rates": {"timeout_after_accept": 1.0}, "hold_seconds": 3})
        with pytest.raises(ccxt.RequestTimeout):
            client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-ambiguous"})
        admin(url, "/admin/faults", {})
        # The exchange acted although the client timed out: the order exists.
        return [o["clientOrderId"] for o in client.fetch_open_orders("BTC/USDT")]

    assert await run_against_sandbox(work) == ["ll-t-ambiguous"]


async def test_operator_actions_change_the_exchange():
    def work(client, sandbox, url):
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-3"})
        admin(url, "/admin/operator/cancel", {"clientOrderId": "ll-t-3"})
        admin(url, "/admin/operator/order", {"symbol": "BTC/USDT", "side": "sell", "price": "90000", "quantity": "0.5", "clientOrderId": "manual-1"})
        admin(url, "/admin/operator/balance", {"asset": "USDT", "delta": "-1000"})
        return client.fetch_open_orders("BTC/USDT"), client.fetch_balance()

    open_orders, balance = await run_against_sandbox(work)
    assert [o["clientOrderId"] for o in open_orders] == ["manual-1"]
    assert balance["total"]["USDT"] == 99000


async def test_a_server_clock_ahead_refuses_signed_requests_until_the_client_measures_it():
    def work(client, sandbox, url):
        admin(url, "/admin/faults", {"clock_offset_ms": 60_000})
        with pytest.raises(ccxt.InvalidNonce):  # Binance's -1021, through the rewritten base_url
            client.fetch_balance()
        measured = client.load_time_difference()  # what the connection's sync_clock calls
        balance = client.fetch_balance()
        admin(url, "/admin/faults", {"error_rates": {"invalid_timestamp": 1.0}})
        with pytest.raises(ccxt.InvalidNonce):
            client.fetch_balance()
        client.fetch_time()  # public: no timestamp to refuse
        return measured, balance

    measured, balance = await run_against_sandbox(work)
    assert -60_500 < measured <= -59_900  # ccxt's timeDifference: ours minus the exchange's
    assert balance["total"]["USDT"] == 100000


async def test_an_order_the_exchange_expires_is_expired_for_ccxt_and_its_funds_are_free():
    def work(client, sandbox, url):
        order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-stp"})
        assert admin(url, "/admin/operator/expire", {"clientOrderId": "ll-t-stp"}) == {"expired": "ll-t-stp"}
        return client.fetch_order(order["id"], "BTC/USDT"), client.fetch_open_orders("BTC/USDT"), client.fetch_balance()

    fetched, open_orders, balance = await run_against_sandbox(work)
    assert fetched["status"] == "expired" and fetched["filled"] == 0
    assert open_orders == [] and balance["used"]["USDT"] == 0


async def test_a_fill_can_reach_the_order_before_the_answer_or_before_the_cancel():
    def work(client, sandbox, url):
        admin(url, "/admin/faults", {"error_rates": {"fill_before_answer": 1.0}, "hold_seconds": 3})
        with pytest.raises(ccxt.RequestTimeout):  # the client waits 2 s
            client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-early"})
        early = client.fetch_my_trades("BTC/USDT")
        admin(url, "/admin/faults", {"error_rates": {"fill_before_cancel": 1.0}})
        order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 2000, {"clientOrderId": "ll-t-race"})
        with pytest.raises(ccxt.OrderNotFound):
            client.cancel_order(order["id"], "BTC/USDT")
        return early, client.fetch_order(order["id"], "BTC/USDT")

    early, raced = await run_against_sandbox(work)
    assert [(t["amount"], t["price"]) for t in early] == [(0.01, 2000)]
    assert raced["status"] == "closed" and raced["filled"] == 0.01


async def test_candles_on_the_server_clock_list_the_forming_one_last_and_answers_can_be_late():
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), candle_seconds=1))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sandbox, sandbox, 0)
        client = make_client("binance", base_url=url, timeout_ms=2000)
        await trio.to_thread.run_sync(client.load_markets)
        sandbox.faults.update(FaultSettings(late_ms={"/api/v3/klines": 300}))
        while not sandbox.dialect.closed["BTC/USDT"]:
            await sandbox.wait_for_candle()
        asked = sandbox.now_ms()
        rows = await trio.to_thread.run_sync(lambda: client.fetch_ohlcv("BTC/USDT", "1s"))
        answered = sandbox.now_ms()
        nursery.cancel_scope.cancel()
    closed = sandbox.dialect.closed["BTC/USDT"]
    *done, forming = rows
    assert answered - asked >= 300
    assert [r[0] for r in done] == [c.ts * 1000 for c in closed[: len(done)]]
    assert all(r[0] % 1000 == 0 for r in rows) and forming[0] - done[-1][0] == 1000
    # The candle forming when the request was computed, not when the answer arrived.
    assert asked < forming[0] + 1000 and forming[0] <= answered - 300

"""The live path end to end over HTTP: `limitline sandbox` and the real ccxt.binance client.

The runtime runs in-process with a ccxt venue whose base_url points at a sandbox on a free
loopback port; strategies are in live mode and armed. Waits are on events, never sleeps.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import urllib.error
import urllib.request
from collections import Counter

import trio
from prometheus_client.parser import text_string_to_metric_families
from helpers import KEY, SECRET, Watch, live_config, live_runtime, node
from helpers import open_reservations as _open_reservations
from helpers import order_state as _state

from exchange.candles import bundled_path
from exchange.faults import FaultSettings
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from supervisors.app import App
from supervisors.config import parse_config


async def run_live(tmp_path, until, **options):
    async with live_runtime(tmp_path, **options) as (watch, sandbox, app, _):
        await watch.until(until)
        snapshot = app.snapshot()
    return watch, sandbox, snapshot, app.config


async def test_live_orders_are_placed_partly_filled_filled_and_expired_through_the_wire(tmp_path, credentials):
    def seen_everything(events) -> bool:
        fills = [e for e in events if e.kind == "fill"]
        return (
            any(not e.payload["order_complete"] for e in fills)
            and any(e.payload["order_complete"] for e in fills)
            and any(e.kind == "order_expired" for e in events)
        )

    # A candle fills at most 0.005 % of its volume of our orders: partial fills are the rule.
    watch, sandbox, snapshot, config = await run_live(tmp_path, seen_everything, volume_share="0.00005")
    assert watch.count("strategy_active") == 1, [
        (e.kind, e.reason) for e in watch.events
        if e.kind in ("strategy_active", "strategy_inactive", "venue_isolated", "child_exited", "preflight_failed", "exchange_error")
    ]
    placed = [e for e in watch.events if e.kind == "order_placed"]
    assert placed and all(e.payload["type"] == "limit" for e in placed)
    # Every order the strategy placed is on the sandbox exchange under its client order id,
    # but one still on the wire when the run stopped: recorded SUBMITTING (sent, no answer),
    # or UNKNOWN (the stopping sandbox dropped the connection: it may have been placed).
    on_exchange = {o.client_order_id for o in sandbox.dialect.exchange.orders.values()}
    store = sqlite3.connect(config.store)
    states = dict(store.execute("SELECT client_order_id, state FROM orders").fetchall())
    in_flight = {e.client_order_id for e in placed} - on_exchange
    assert all(states[cid] in ("SUBMITTING", "UNKNOWN") for cid in in_flight), {cid: states[cid] for cid in in_flight}
    assert len(in_flight) <= 2  # max_open_orders: only the last decisions can be in flight
    kinds = Counter(dict(store.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()))
    assert kinds["fill"] >= 3 and kinds["evaluated"] > 0
    # Same books as in shadow mode: fills stored once each, and settled in the journal.
    fills = store.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert fills == store.execute("SELECT count(*) FROM journal WHERE kind = 'settle'").fetchone()[0]


async def test_a_wrong_secret_fails_preflight_with_the_reason_and_never_leaks(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, ccxt's and urllib3's included
    monkeypatch.setenv("LL_TEST_KEY", KEY)
    monkeypatch.setenv("LL_TEST_SECRET", "not-the-" + SECRET)
    watch, sandbox, snapshot, config = await run_live(
        tmp_path, lambda events: any(e.kind == "preflight_failed" for e in events)
    )
    [failed] = [e for e in watch.events if e.kind == "preflight_failed"]
    assert failed.reason == (
        "pre-flight failed: exchange binance: AuthenticationError: "
        "binance {\"code\": -1022, \"msg\": \"Signature for this request is not valid.\"}"
    )
    text = repr(snapshot) + repr([(e.reason, e.payload) for e in watch.events])
    store_dump = "\n".join(str(row) for row in sqlite3.connect(config.store).execute("SELECT * FROM events"))
    logs = caplog.text
    assert logs, "nothing was logged: the canary would prove nothing"
    for secret in (KEY, SECRET, "not-the-" + SECRET):
        assert secret not in text and secret not in store_dump and secret not in logs


async def test_missing_credentials_fail_preflight_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("LL_TEST_KEY", raising=False)
    monkeypatch.setenv("LL_TEST_SECRET", SECRET)
    # Wait for the reconciler to have asked the venue too: a venue without a client must
    # answer nothing (and not crash) rather than call ccxt.
    watch, *_ = await run_live(
        tmp_path,
        lambda events: {"preflight_failed", "reconcile_skipped"} <= {e.kind for e in events},
        reconciler={"snapshot_timeout_seconds": 1},
    )
    assert watch.count("child_exited") == 0
    [failed] = [e for e in watch.events if e.kind == "preflight_failed"]
    assert failed.reason == "pre-flight failed: exchange binance: credentials: environment variable LL_TEST_KEY (api_key) is not set"


async def test_a_429_with_retry_after_pauses_every_request_to_the_venue(tmp_path, credentials):
    async with live_runtime(tmp_path) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("evaluated") >= 2)
        sandbox.faults.update(FaultSettings(burst_429=1, retry_after_seconds=2))
        await watch.until(lambda events: watch.count("venue_rate_limited") >= 1)
        [limited] = [t for t, _, _, status in sandbox.request_log if status == 429]
        # Wait until requests flow again, then look at the gap.
        while not any(t > limited + 2 for t, *_ in sandbox.request_log):
            await sandbox.wait_for_request()
    [event] = watch.of("venue_rate_limited")
    assert event.reason == "pausing every request for 2s"
    # Calls already on the wire when the 429 came back may land right after it; nothing
    # sent later may reach the venue before Retry-After has passed.
    early = [t - limited for t, *_ in sandbox.request_log if limited + 0.2 < t < limited + 2]
    assert early == []


async def test_a_submit_that_times_out_after_the_exchange_accepted_is_unknown_then_resolved_once(tmp_path, credentials):
    async with live_runtime(tmp_path, timeout_seconds=1) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("strategy_active") >= 1)
        sandbox.faults.update(FaultSettings(error_rates={"timeout_after_accept": 1.0}, hold_seconds=3, paths=["/api/v3/order"]))
        await watch.until(lambda events: any(e.reason.startswith("create: ambiguous") for e in watch.of("exchange_error")))
        sandbox.faults.update(FaultSettings())
        unknown = sorted({e.client_order_id for e in watch.of("exchange_error") if e.reason.startswith("create: ambiguous")})
        # Resolved by evidence: the lookup by client order id finds each on the exchange.
        await watch.until(lambda events: all(_state(app, cid) not in (None, "UNKNOWN", "SUBMITTING") for cid in unknown))
        states = {cid: _state(app, cid) for cid in unknown}
    for cid in unknown:
        copies = [o for o in sandbox.dialect.exchange.orders.values() if o.client_order_id == cid]
        assert len(copies) == 1, f"{cid} was placed {len(copies)} times"
    # Evidence moved each out of UNKNOWN (what came after, e.g. a TTL cancel, is fine).
    assert "UNKNOWN" not in states.values()




async def test_a_rejection_releases_the_reservation_with_the_exchanges_message(tmp_path, credentials):
    async with live_runtime(tmp_path) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("strategy_active") >= 1)
        # An operator empties the account's USDT: the exchange refuses the next buy.
        sandbox.dialect.exchange.balances["USDT"].free *= 0
        await watch.until(lambda events: any("insufficient balance" in (e.reason or "") for e in watch.of("order_rejected")))
        rejected = next(e for e in watch.of("order_rejected") if "insufficient balance" in e.reason)
        # The ledger heard it too: that order holds nothing any more.
        await watch.until(lambda events: rejected.client_order_id not in _open_reservations(app))
        breaker = node(app.snapshot(), "strategy:dipper")["status"]["breaker"]
    assert rejected.reason == "rejected: InsufficientFunds: binance Account has insufficient balance for requested action."
    # The breaker counted it (a later success may already have reset the count).
    assert "InsufficientFunds" in breaker["last_failure"]




async def test_the_breaker_opens_on_server_errors_and_closes_after_a_good_probe(tmp_path, credentials):
    # The strategy's breaker (live_config): threshold 3, cooldown 1 s, capped at 4 s.
    async with live_runtime(tmp_path) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("strategy_active") >= 1)
        # Definite refusals count (a 5xx on a create is UNKNOWN instead: it may have been placed).
        sandbox.faults.update(FaultSettings(error_rates={"reject": 1.0}, paths=["/api/v3/order"]))
        await watch.until(lambda events: watch.count("breaker_open") >= 1)
        status = node(app.snapshot(), "strategy:dipper")["status"]["breaker"]
        assert status["state"] == "open" and status["consecutive_failures"] >= 3
        assert "insufficient balance" in status["last_failure"]
        sandbox.faults.update(FaultSettings())
        await watch.until(lambda events: watch.count("breaker_closed") >= 1)
        placed_before = watch.count("order_placed")
        await watch.until(lambda events: watch.count("order_placed") > placed_before)
    kinds = [e.kind for e in watch.events if e.kind.startswith("breaker_")]
    assert kinds[0] == "breaker_open" and "breaker_half_open" in kinds and kinds[-1] == "breaker_closed"


async def test_an_unreachable_venue_is_isolated_while_another_keeps_trading_and_recovers(tmp_path, credentials, fast_raw):
    import socket

    with socket.socket() as probe:  # a port to stop and restart the sandbox on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    raw = live_config(tmp_path, url, isolate_after_seconds=1, probe_max_seconds=1)
    raw["venues"].append(fast_raw["venues"][0])  # the simulated venue "sim"
    raw["strategies"].append(fast_raw["strategies"][1])  # dip-buyer, trading on "sim"
    config = parse_config(raw, live=True)
    watch = Watch()

    def sandbox() -> Sandbox:
        return Sandbox(SandboxSettings(data=str(bundled_path()), speed=20, api_key=KEY, secret=SECRET))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            exchange_up = trio.CancelScope()

            async def run_exchange(task_status=trio.TASK_STATUS_IGNORED):
                with exchange_up:
                    await serve_sandbox(sandbox(), port, task_status=task_status)

            await nursery.start(run_exchange)
            app = App(config, echo=watch, live=True)
            await nursery.start(app.run)
            await watch.until(lambda events: watch.count("strategy_active") == 2)

            exchange_up.cancel()  # the exchange goes away
            await watch.until(lambda events: watch.count("venue_isolated") == 1)
            isolated_at = len(watch.events)
            await watch.until(lambda events: any(e.kind == "order_placed" and e.strategy == "dip-buyer" for e in events[isolated_at:]))
            assert node(app.snapshot(), "connection:binance")["status"]["isolated"].startswith("no successful call")
            assert node(app.snapshot(), "strategy:dipper")["status"]["active"] is False
            assert node(app.snapshot(), "strategy:dip-buyer")["status"]["active"] is True
            status_url = node(app.snapshot(), "status")["status"]["url"]
            not_ready = await trio.to_thread.run_sync(_get, f"{status_url}/ready")
            assert not_ready[0] == 503 and any(p.startswith("venue binance is isolated") for p in json.loads(not_ready[1])["problems"])
            metrics = {f.name: f for f in text_string_to_metric_families((await trio.to_thread.run_sync(_get, f"{status_url}/metrics"))[1])}
            isolated = {s.labels["venue"]: s.value for s in metrics["limitline_venue_isolated"].samples}
            assert isolated == {"binance": 1.0, "sim": 0.0}
            calls = [s for s in metrics["limitline_exchange_call_seconds"].samples
                     if s.name.endswith("_count") and s.labels["venue"] == "binance"]
            assert sum(s.value for s in calls) > 0 and {"load_markets", "fetch_balance"} <= {s.labels["operation"] for s in calls}
            errors = {s.labels["kind"] for s in metrics["limitline_exchange_errors"].samples if s.labels["venue"] == "binance"}
            assert errors, "the failed calls are counted by kind"

            exchange_up = trio.CancelScope()
            await nursery.start(run_exchange)  # back, on the same address
            await watch.until(lambda events: watch.count("venue_recovered") == 1 and watch.count("strategy_active", "dipper") == 2)
            connection = node(app.snapshot(), "connection:binance")
            ready = await trio.to_thread.run_sync(_get, f"{status_url}/ready")
            nursery.cancel_scope.cancel()
    assert ready[0] == 200, ready
    assert connection["incarnation"] == 1, "recovery must not need a restart"
    assert connection["status"]["isolated"] is None
    inactive = [e for e in watch.of("strategy_inactive") if e.strategy == "dipper"]
    assert inactive and inactive[0].reason.startswith("venue binance isolated: no successful call for")


async def test_shadow_mode_on_a_reachable_exchange_uses_its_candles_and_never_sends_an_order(tmp_path):
    # Public market data only: no credentials, no order may reach the exchange.
    raw_venue = {"api_key_env": None, "secret_env": None}
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=20, api_key=KEY, secret=SECRET))
    watch = Watch()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = live_config(tmp_path, url, **raw_venue)
            raw["strategies"][0]["mode"] = "shadow"
            app = App(parse_config(raw), echo=watch)
            await nursery.start(app.run)
            await watch.until(lambda events: watch.count("fill") >= 2)
            nursery.cancel_scope.cancel()
    paths = {(method, path) for _, method, path, _ in sandbox.request_log}
    assert ("GET", "/api/v3/klines") in paths
    assert not any(path in ("/api/v3/order", "/api/v3/account", "/api/v3/openOrders", "/api/v3/myTrades") for _, path in paths)
    assert sandbox.dialect.exchange.orders == {}
    fill = watch.of("fill")[0]
    assert fill.payload["order_complete"] in (True, False) and fill.strategy == "dipper"


def admin(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def classes(watch: Watch) -> set[str]:
    return {e.payload.get("class") for e in watch.of("reconcile_difference")}


async def test_operator_actions_on_the_exchange_are_classified_and_applied(tmp_path, credentials, monkeypatch):
    monkeypatch.setenv("LIMITLINE_OPERATOR_TOKEN", "op-token-1")
    # Orders that rest (5 bp passive): one that crosses the market fills at once.
    async with live_runtime(tmp_path, sandbox_speed=5, strategy={"limit_offset_bps": 5}) as (watch, sandbox, app, _):
        url = f"http://127.0.0.1:{sandbox_port(sandbox, app)}"
        await watch.until(lambda events: watch.count("order_placed") >= 1)

        # An operator cancels one of our open orders.
        await watch.until(lambda events: bool(sandbox.dialect.exchange.open_orders()))
        victim = sandbox.dialect.exchange.open_orders()[0].client_order_id
        await trio.to_thread.run_sync(admin, url, "/admin/operator/cancel", {"clientOrderId": victim})
        await watch.until(lambda events: "canceled_outside" in classes(watch))
        await watch.until(lambda events: victim not in _open_reservations(app))  # its funds are released

        # An operator places an order of their own.
        await trio.to_thread.run_sync(admin, url, "/admin/operator/order",
                                      {"symbol": "BTC/USDT", "side": "sell", "price": "999999", "quantity": "0.01", "clientOrderId": "manual-1"})
        await watch.until(lambda events: "external_order" in classes(watch))

        # An operator withdraws funds the strategies hold: unexplained, the strategy pauses.
        await trio.to_thread.run_sync(admin, url, "/admin/operator/balance", {"asset": "USDT", "delta": "-99000"})
        await watch.until(lambda events: watch.count("strategy_paused") >= 1)
        assert node(app.snapshot(), "strategy:dipper")["status"]["paused"].startswith("balance changed outside limitline")
        blocked_before = watch.count("blocked", "dipper")
        await watch.until(lambda events: watch.count("blocked", "dipper") > blocked_before)
        assert watch.of("blocked")[-1].reason.startswith("paused until an operator resumes it")

        # Resume over HTTP: refused without the token, accepted with it.
        status_url = node(app.snapshot(), "status")["status"]["url"]
        denied = await trio.to_thread.run_sync(_post, f"{status_url}/strategies/dipper/resume", None)
        assert denied == 401
        accepted = await trio.to_thread.run_sync(_post, f"{status_url}/strategies/dipper/resume", "op-token-1")
        assert accepted == 202
        await watch.until(lambda events: watch.count("strategy_resumed") >= 1)
    assert {"canceled_outside", "external_order", "balance_changed"} <= classes(watch)


def sandbox_port(sandbox, app) -> int:
    venue = app.config.venue("binance")
    return int(venue.base_url.rsplit(":", 1)[1])


def _post(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_shadow_and_live_strategies_on_one_venue_never_share_an_order_or_trade_id(tmp_path, credentials):
    """The sandbox numbers its orders and trades from 1, and so does the simulated account of
    the shadow strategy beside the live one: every fill of both must be in the fills table."""
    paper = {
        "name": "paper", "venue": "binance", "symbol": "BTC/USDT", "mode": "shadow",
        "allocation": {"quote": 5000, "base": 0.5, "base_cost": 2500}, "sizing": {"quote": 200},
        "buy": {"kind": "change", "percent": -0.3, "lookback": 1},
        "sell": {"kind": "change", "percent": 0.3, "lookback": 1},
        "limit_offset_bps": -5, "ttl_seconds": 7200, "max_open_orders": 2,
    }

    def both_filled_twice(events) -> bool:
        fills = Counter(e.strategy for e in events if e.kind == "fill")
        return fills["dipper"] >= 2 and fills["paper"] >= 2

    async with live_runtime(tmp_path, extra_strategies=[paper]) as (watch, sandbox, app, _):
        await watch.until(both_filled_twice)
        store = sqlite3.connect(app.config.store, isolation_level=None)
        real_trades = {t.trade_id for t in sandbox.dialect.exchange.trades}
        # One read transaction: a fill row and its journal entries are committed together,
        # and trading goes on meanwhile.
        store.execute("BEGIN")
        ours = dict(store.execute("SELECT trade_id, client_order_id FROM fills").fetchall())
        settled = store.execute("SELECT trade_id FROM journal WHERE kind = 'settle'").fetchall()
        store.execute("COMMIT")
    assert sorted(tid for (tid,) in settled) == sorted(ours), "every settled trade has its fill row, once"
    shadow_ids = {tid for tid, cid in ours.items() if "-paper-" in cid}
    live_ids = {tid for tid, cid in ours.items() if "-dipper-" in cid}
    assert shadow_ids and all(tid.startswith("shadow-") for tid in shadow_ids)
    assert live_ids and live_ids <= real_trades
    exchange_ids = dict(store.execute("SELECT client_order_id, exchange_order_id FROM orders WHERE exchange_order_id IS NOT NULL").fetchall())
    assert all(eid.startswith("shadow-") for cid, eid in exchange_ids.items() if "-paper-" in cid)

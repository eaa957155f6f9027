"""The live path end to end over HTTP: `limitline sandbox` and the real ccxt.binance client.

The runtime runs in-process with a ccxt venue whose base_url points at a sandbox on a free
loopback port; strategies are in live mode and armed. Waits are on events, never sleeps.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
import trio

from actors.messages import RecordEvent
from exchange.candles import bundled_path
from exchange.sandbox import Sandbox, SandboxSettings, serve_sandbox
from supervisors.app import App
from supervisors.config import parse_config

KEY, SECRET = "canary-key-7f3a9", "canary-secret-b41c2"


class Watch:
    def __init__(self) -> None:
        self.events: list[RecordEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: RecordEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate) -> None:
        while not predicate(self.events):
            await self._changed.wait()

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.events)


def live_config(tmp_path, url: str, **venue) -> dict:
    return {
        "store": str(tmp_path / "live.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 0.5},
        "venues": [
            {"name": "binance", "kind": "ccxt", "exchange": "binance", "base_url": url,
             "api_key_env": "LL_TEST_KEY", "secret_env": "LL_TEST_SECRET",
             "poll_seconds": 0.1, "rate_limit_per_second": 200, **venue},
        ],
        "strategies": [
            {"name": "dipper", "venue": "binance", "symbol": "BTC/USDT", "mode": "live",
             "allocation": {"quote": 5000, "base": 0.5}, "sizing": {"quote": 200},
             "buy": {"kind": "change", "percent": -0.3, "lookback": 1},
             "sell": {"kind": "change", "percent": 0.3, "lookback": 1},
             "limit_offset_bps": -5, "ttl_seconds": 7200, "max_open_orders": 2},
        ],
    }


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("LL_TEST_KEY", KEY)
    monkeypatch.setenv("LL_TEST_SECRET", SECRET)


async def run_live(tmp_path, until, sandbox_speed=20.0, **venue):
    sandbox = Sandbox(SandboxSettings(data=str(bundled_path()), speed=sandbox_speed, api_key=KEY, secret=SECRET))
    watch = Watch()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            config = parse_config(live_config(tmp_path, url, **venue), live=True)
            app = App(config, echo=watch, live=True)
            await nursery.start(app.run)
            await watch.until(until)
            snapshot = app.snapshot()
            nursery.cancel_scope.cancel()
    return watch, sandbox, snapshot, config


async def test_live_orders_are_placed_and_filled_through_the_wire(tmp_path, credentials):
    watch, sandbox, snapshot, config = await run_live(
        tmp_path, lambda events: sum(e.kind == "fill" for e in events) >= 3
    )
    assert watch.count("strategy_active") == 1
    placed = [e for e in watch.events if e.kind == "order_placed"]
    assert placed and all(e.payload["type"] == "limit" for e in placed)
    # Every order the strategy placed is on the sandbox exchange under its client order id.
    on_exchange = {o.client_order_id for o in sandbox.dialect.exchange.orders.values()}
    assert {e.client_order_id for e in placed} <= on_exchange
    store = sqlite3.connect(config.store)
    kinds = Counter(dict(store.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()))
    assert kinds["fill"] >= 3 and kinds["evaluated"] > 0
    # Same books as in shadow mode: fills stored once each, and settled in the journal.
    fills = store.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert fills == store.execute("SELECT count(*) FROM journal WHERE kind = 'settle'").fetchone()[0]


async def test_a_wrong_secret_fails_preflight_with_the_reason_and_never_leaks(tmp_path, monkeypatch):
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
    for secret in (KEY, SECRET, "not-the-" + SECRET):
        assert secret not in text and secret not in store_dump


async def test_missing_credentials_fail_preflight_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("LL_TEST_KEY", raising=False)
    monkeypatch.setenv("LL_TEST_SECRET", SECRET)
    # Wait for the reconciler to have asked the venue too: a venue without a client must
    # answer nothing (and not crash) rather than call ccxt.
    watch, *_ = await run_live(
        tmp_path,
        lambda events: {"preflight_failed", "reconcile_skipped"} <= {e.kind for e in events},
    )
    assert watch.count("child_exited") == 0
    [failed] = [e for e in watch.events if e.kind == "preflight_failed"]
    assert failed.reason == "pre-flight failed: exchange binance: credentials: environment variable LL_TEST_KEY (api_key) is not set"

"""The HTTP surface of a running process (in-process runtime, real sockets, real store):
the summary and the paged strategies, the feed, metrics parsed by prometheus_client's own
parser, health, and who may read or act."""

from __future__ import annotations

import re
import sqlite3
from contextlib import asynccontextmanager
from decimal import Decimal

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from conftest import fast_config_raw
from helpers import Watch, node
from supervisors.app import App
from supervisors.config import parse_config
from supervisors.status import StatusAddressError, StatusListener

OPERATOR = "op-token-web-81d2"
READER = "read-token-web-3f7a"


@asynccontextmanager
async def running(raw: dict, deadline: float = 60):
    """The runtime of ``raw``; yields (app, watch, an HTTP client on its status server)."""
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    with trio.fail_after(deadline):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            url = node(app.snapshot(), "status")["status"]["url"]
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield app, watch, client
            nursery.cancel_scope.cancel()


def many_strategies(tmp_path, count: int) -> dict:
    """The default config with ``count`` copies of sma-cross sharing the simulated account."""
    raw = fast_config_raw(tmp_path)
    template = raw["strategies"][0]
    raw["strategies"] = [
        {**template, "name": f"s{i:03d}", "allocation": {"quote": 100}, "sizing": {"quote": 20}} for i in range(count)
    ]
    return raw


async def test_status_is_a_summary_and_the_strategies_are_paged(tmp_path):
    async with running(many_strategies(tmp_path, 30)) as (app, watch, client):
        await watch.until(lambda events: watch.count("strategy_active") == 30)
        summary = (await client.get("/status")).json()
        assert summary["strategies"]["total"] == 30 and summary["strategies"]["by_state"] == {"active": 30}
        assert summary["tree"]["state"] == "running" and summary["tree"]["actors"] == 30 + 6  # + writer, ledger, reconciler, status, notifier, connection
        assert summary["venues"][0]["name"] == "sim" and summary["venues"][0]["connected"] is True
        assert set(summary["realized_pnl"]) == {"USD"}
        assert "children" not in summary["tree"]  # the tree itself is at /status/tree

        first = (await client.get("/status/strategies", params={"limit": 10})).json()
        assert [row["name"] for row in first["strategies"]] == [f"s{i:03d}" for i in range(10)]
        assert first["total"] == 30 and first["next"] == "/status/strategies?offset=10&limit=10"
        last = (await client.get(first["next"].replace("offset=10", "offset=25"))).json()
        assert [row["name"] for row in last["strategies"]] == [f"s{i:03d}" for i in range(25, 30)] and last["next"] is None
        row = first["strategies"][0]
        assert row["state"] == "active" and row["mode"] == "shadow" and row["breaker"]["state"] == "closed"
        assert Decimal(row["quote_free"]) + Decimal(row["quote_reserved"]) <= 100
        for field in ("realized_pnl", "held", "quote_free", "quote_reserved", "base_reserved"):
            assert row[field] is not None and "E" not in row[field], (field, row[field])

        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "ten"}):
            answer = await client.get("/status/strategies", params=bad)
            assert answer.status_code == 400 and answer.json()["error"].split(":")[0] in ("limit", "offset")
        assert (await client.get("/status/strategies/nobody")).status_code == 404

        tree = (await client.get("/status/tree")).json()
        names = {n["name"] for n in _walk(tree)}
        assert {"writer", "ledger", "venue:sim", "connection:sim", "strategy:s029", "reconciler", "status"} <= names
        assert all("status" not in n for n in _walk(tree))  # what actors report is in the rows


async def test_decimals_are_plain_and_a_strategy_shows_its_decisions_orders_and_pnl(fast_raw):
    async with running(fast_raw) as (app, watch, client):
        await watch.until(lambda events: watch.count("fill", "dip-buyer") >= 2)
        body = (await client.get("/status")).text + (await client.get("/status/strategies")).text
        assert not re.search(r"\dE[+-]?\d", body), "a decimal in exponent notation"
        row = (await client.get("/status/strategies/dip-buyer")).json()
        assert row["last_decision"]["kind"] in ("evaluated", "blocked", "order_placed") and row["last_decision"]["summary"]
        assert Decimal(row["mark_price"]) > 0
        if Decimal(row["held"]) > 0 and row["entry_price"]:
            expected = (Decimal(row["mark_price"]) - Decimal(row["entry_price"])) * Decimal(row["held"])
            assert Decimal(row["unrealized_pnl"]) == expected
        stored_open = sqlite3.connect(app.config.store).execute(
            "SELECT count(*) FROM orders WHERE strategy = 'dip-buyer' AND state IN ('OPEN', 'PARTIALLY_FILLED')"
        ).fetchone()[0]
        assert stored_open <= 1 and all(o["state"] for o in row["orders"])

        # The feed: newest first; with ``after``, what came since, oldest first, filtered.
        newest = (await client.get("/events", params={"limit": 5})).json()["events"]
        assert [e["seq"] for e in newest] == sorted((e["seq"] for e in newest), reverse=True)
        since = newest[-1]["seq"]
        later = (await client.get("/events", params={"after": since, "kind": "fill,order_placed", "limit": 50})).json()["events"]
        assert all(e["seq"] > since and e["kind"] in ("fill", "order_placed") for e in later)
        assert [e["seq"] for e in later] == sorted(e["seq"] for e in later)
        assert (await client.get("/events", params={"limit": 1001})).status_code == 400


async def test_metrics_parse_with_prometheus_clients_own_parser(fast_raw):
    async with running(fast_raw) as (app, watch, client):
        await watch.until(lambda events: watch.count("fill") >= 3 and watch.count("venue_reconciled") >= 1)
        store = sqlite3.connect(app.config.store)
        before = store.execute("SELECT count(*) FROM fills").fetchone()[0]
        answer = await client.get("/metrics")
        after = store.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert answer.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}

    def samples(name: str, **labels) -> list:
        return [s for s in families[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]

    fills = sum(s.value for s in samples("limitline_fills") if s.name == "limitline_fills_total")
    assert before <= fills <= after and fills >= 3
    assert families["limitline_fills"].type == "counter"
    assert sum(s.value for s in samples("limitline_orders", strategy="dip-buyer")) >= 1
    for strategy in ("sma-cross", "dip-buyer"):
        assert samples("limitline_realized_pnl", strategy=strategy, currency="USD")
        assert [s.value for s in samples("limitline_breaker_state", strategy=strategy, state="closed")] == [1.0]
        assert [s.value for s in samples("limitline_strategy_active", strategy=strategy)] == [1.0]
    assert [s.value for s in samples("limitline_venue_isolated", venue="sim")] == [0.0]
    assert [s.value for s in samples("limitline_venue_reconciled", venue="sim")] == [1.0]
    assert [s.value for s in samples("limitline_mailbox_capacity", actor="writer")] == [8192.0]
    assert samples("limitline_mailbox_depth", actor="strategy:dip-buyer")
    assert [s.value for s in samples("limitline_restarts", child="ledger") if s.name.endswith("_total")] == [0.0]
    for family in ("limitline_reservations_denied", "limitline_reconcile_differences", "limitline_fees_paid",
                   "limitline_exchange_call_seconds", "limitline_exchange_errors"):
        assert family in families, family


async def test_health_and_ready(fast_raw):
    async with running(fast_raw) as (app, watch, client):
        assert (await client.get("/health")).json()["alive"] is True
        await watch.until(lambda events: watch.count("venue_reconciled") >= 1)
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": []}
        [venue] = (await client.get("/status")).json()["venues"]
        assert venue["reconciled"] is True and abs(venue["last_reconciled_at"] - app.env.clock.now()) < 30


async def test_control_needs_the_operator_token_and_pauses_resumes_and_cancels(fast_raw, monkeypatch):
    monkeypatch.setenv("LIMITLINE_OPERATOR_TOKEN", OPERATOR)
    # dip-buyer's buys rest 5 % under the close for a day: an order rests for the cancel.
    fast_raw["strategies"][1].update(limit_offset_bps=500, ttl_seconds=86400, max_open_orders=2)
    async with running(fast_raw) as (app, watch, client):
        refused = await client.post("/strategies/dip-buyer/pause")
        assert refused.status_code == 401 and OPERATOR not in refused.text
        wrong = await client.post("/strategies/dip-buyer/pause", headers={"Authorization": "Bearer not-it-1234"})
        assert wrong.status_code == 401 and "not-it-1234" not in wrong.text
        auth = {"Authorization": f"Bearer {OPERATOR}"}
        assert (await client.post("/strategies/nobody/pause", headers=auth)).status_code == 404
        assert (await client.post("/strategies/dip-buyer/explode", headers=auth)).status_code == 404
        assert (await client.get("/strategies/dip-buyer/pause")).status_code == 405

        await watch.until(lambda events: _resting(app, "dip-buyer"))
        cancel = await client.post("/strategies/dip-buyer/cancel-open-orders", headers=auth)
        assert cancel.status_code == 202
        await watch.until(lambda events: watch.count("cancel_requested", "dip-buyer") == 1)
        [asked] = [e.payload["orders"] for e in watch.of("cancel_requested")]
        assert asked
        await watch.until(lambda events: all(_state(app, cid) in ("CANCELED", "FILLED") for cid in asked))
        assert any(e.reason == "cancelled by the operator over HTTP" for e in watch.of("order_canceled"))

        assert (await client.post("/strategies/sma-cross/pause", headers=auth)).status_code == 202
        await watch.until(lambda events: watch.count("strategy_paused", "sma-cross") == 1)
        row = (await client.get("/status/strategies/sma-cross")).json()
        assert row["state"] == "paused" and row["why"] == "paused by the operator over HTTP"
        assert (await client.post("/strategies/sma-cross/resume", headers=auth)).status_code == 202
        await watch.until(lambda events: watch.count("strategy_resumed", "sma-cross") == 1)
        assert (await client.get("/status/strategies/sma-cross")).json()["state"] == "active"


async def test_control_is_disabled_without_an_operator_token(fast_raw, monkeypatch):
    monkeypatch.delenv("LIMITLINE_OPERATOR_TOKEN", raising=False)
    async with running(fast_raw) as (app, watch, client):
        answer = await client.post("/strategies/dip-buyer/pause", headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 403 and "LIMITLINE_OPERATOR_TOKEN" in answer.json()["error"]


def test_listening_beyond_loopback_needs_a_read_token(monkeypatch):
    monkeypatch.delenv("LIMITLINE_READ_TOKEN", raising=False)
    monkeypatch.delenv("LIMITLINE_OPERATOR_TOKEN", raising=False)
    with pytest.raises(StatusAddressError, match="set LIMITLINE_READ_TOKEN"):
        StatusListener("0.0.0.0", 0).open()


async def test_beyond_loopback_reading_needs_the_read_token_and_control_the_operator_token(fast_raw, monkeypatch):
    monkeypatch.setenv("LIMITLINE_READ_TOKEN", READER)
    monkeypatch.setenv("LIMITLINE_OPERATOR_TOKEN", OPERATOR)
    fast_raw["status"]["host"] = "0.0.0.0"
    app = App(parse_config(fast_raw), echo=Watch())
    assert any(notice.startswith("WARNING: the status server listens on 0.0.0.0") for notice in app.notices)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            port = node(app.snapshot(), "status")["status"]["url"].rsplit(":", 1)[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                for path in ("/status", "/status/strategies", "/status/tree", "/events", "/metrics", "/ready"):
                    denied = await client.get(path)
                    assert denied.status_code == 401, path
                    assert READER not in denied.text and OPERATOR not in denied.text
                    assert (await client.get(path, headers={"Authorization": f"Bearer {READER}"})).status_code in (200, 503)
                    assert (await client.get(path, headers={"Authorization": f"Bearer {OPERATOR}"})).status_code in (200, 503)
                assert (await client.get("/health")).status_code == 200
                page = await client.get("/")  # the page holds no data; what it shows needs the token
                assert page.status_code == 200 and "dashboard.js" in page.text
                reader = {"Authorization": f"Bearer {READER}"}
                assert (await client.post("/strategies/sma-cross/pause", headers=reader)).status_code == 401
            nursery.cancel_scope.cancel()


def _walk(tree):
    yield tree
    for child in tree.get("children", []):
        yield from _walk(child)


def _resting(app: App, strategy: str) -> bool:
    return bool(sqlite3.connect(app.config.store).execute(
        "SELECT 1 FROM orders WHERE strategy = ? AND state IN ('OPEN', 'PARTIALLY_FILLED')", (strategy,)
    ).fetchone())


def _state(app: App, cid: str) -> str | None:
    row = sqlite3.connect(app.config.store).execute("SELECT state FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
    return row[0] if row else None

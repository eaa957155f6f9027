"""Venue truth through the wire: every exchange answer has one meaning, every order reaches
a final state, no request storms.

Each test runs the runtime in-process, live and armed, with the real ``ccxt.binance``
client against ``limitline sandbox`` on a loopback port, injects one kind of trouble, and
asserts the order's final state in the order book of record, the ledger's view of it (the
journal), and how often the exchange was asked (``Sandbox.request_log``). Waits are on
events (the activity feed, the sandbox's requests and candles), never on sleeps.

The venue polls every 0.1 s, so its retries start at 0.2 s (twice the poll) and double,
with up to 20 % of jitter either way.
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.request

import pytest
import trio
from helpers import (
    Watch,
    live_config,
    live_runtime,
    new_sandbox,
    node,
    open_reservations,
    order_state,
    start_app,
)

from exchange.faults import FaultSettings
from exchange.sandbox import serve_sandbox

#: Strategy fields for orders that rest: 5 % away from the close, one at a time.
RESTING = {"limit_offset_bps": 500, "max_open_orders": 1}
#: A market that fills none of our orders (a candle may fill 1e-9 of its volume: less
#: than a lot), so that an order rests for as long as a test needs, whatever the prices do.
NO_FILLS = "0.000000001"
#: The first retry of a failed call (2 x poll_seconds), and the jitter's lower bound.
FIRST_RETRY, JITTER_LOW = 0.2, 0.8
#: Two requests sent in order may arrive this much out of step (threads, loopback).
SLACK = 0.05


# ----------------------------------------------------------------- helpers


def requests(sandbox, method: str | None = None, path: str | None = None, *, status: int | None = None,
             since: float = float("-inf"), until: float = float("inf")) -> list[float]:
    """Arrival times of the sandbox's /api/ requests that match."""
    return [
        t for t, m, p, s in sandbox.request_log
        if (method is None or m == method) and (path is None or p == path)
        and (status is None or s == status) and since <= t <= until
    ]


async def requests_seen(sandbox, count: int, method: str | None = None, path: str | None = None, **match) -> list[float]:
    """Waits until ``count`` matching requests have been answered; their arrival times."""
    while len(found := requests(sandbox, method, path, **match)) < count:
        await sandbox.wait_for_request()
    return found


def assert_backs_off(times: list[float], first: float = FIRST_RETRY, cap: float = 60.0) -> None:
    """Each retry waited at least its back-off: doubling from ``first``, less the jitter."""
    for k, (before, after) in enumerate(zip(times, times[1:])):
        least = JITTER_LOW * min(first * 2**k, cap) - SLACK
        assert after - before >= least, f"retry {k + 1} came {after - before:.3f}s after the failure (back-off >= {least:.3f}s): {times}"


def events_of(watch: Watch, kind: str, cid: str | None = None) -> list:
    return [e for e in watch.events if e.kind == kind and (cid is None or e.client_order_id == cid)]


def first_placed(watch: Watch, after: int = 0) -> str | None:
    placed = [e.client_order_id for e in watch.events[after:] if e.kind == "order_placed"]
    return placed[0] if placed else None


def errors(watch: Watch, prefix: str, cid: str | None = None) -> list:
    """The connection's ``exchange_error`` events: ``prefix`` is the call (``create``,
    ``cancel``, ``balance``, ``probe``, ``snapshot_balance`` ...) then the error's kind."""
    return [e for e in events_of(watch, "exchange_error", cid) if e.reason.startswith(prefix)]


def refused_for_the_clock(watch: Watch) -> list:
    return [e for e in watch.of("exchange_error") if ": clock: InvalidNonce" in e.reason]


def journal(app, cid: str) -> list[str]:
    rows = sqlite3.connect(app.config.store).execute(
        "SELECT kind FROM journal WHERE client_order_id = ? ORDER BY seq", (cid,)).fetchall()
    return [kind for (kind,) in rows]


def fills(app, cid: str) -> list[str]:
    rows = sqlite3.connect(app.config.store).execute("SELECT trade_id FROM fills WHERE client_order_id = ?", (cid,)).fetchall()
    return [trade_id for (trade_id,) in rows]


def copies_on_exchange(sandbox, cid: str) -> int:
    return sum(o.client_order_id == cid for o in sandbox.dialect.exchange.orders.values())


def differences(watch: Watch, cls: str) -> list:
    return [e for e in watch.of("reconcile_difference") if e.payload.get("class") == cls]


def breaker(app) -> dict:
    return node(app.snapshot(), "strategy:dipper")["status"]["breaker"]


def admin(app, path: str, body: dict) -> dict:
    url = app.config.venue("binance").base_url
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


# ------------------------------------------ 1. orders always reach a final state


@pytest.mark.parametrize("failure, status, kind", [("server_error", 503, "ambiguous"), ("rate_limit", 429, "rate_limited")])
async def test_a_cancel_that_fails_for_a_passing_reason_is_retried_with_back_off_until_the_exchange_cancels(
        tmp_path, credentials, failure, status, kind):
    cancels_fail = FaultSettings(error_rates={failure: 1.0}, paths=["/api/v3/order"], methods=["DELETE"], retry_after_seconds=1)
    async with live_runtime(tmp_path, strategy={**RESTING, "ttl_seconds": 7200}, faults=cancels_fail, volume_share=NO_FILLS) as (watch, sandbox, app, _):
        await watch.until(lambda events: len(errors(watch, f"cancel: {kind}")) >= 3)
        cid = errors(watch, f"cancel: {kind}")[0].client_order_id
        assert order_state(app, cid) == "CANCELING" and cid in open_reservations(app)  # funds still locked
        sandbox.faults.update(FaultSettings())
        await watch.until(lambda events: bool(events_of(watch, "order_expired", cid)))
        expired_at = len(watch.events)
        # max_open_orders is 1: the strategy trades again once the order is final.
        await watch.until(lambda events: first_placed(watch, expired_at) is not None)
        failed = requests(sandbox, "DELETE", "/api/v3/order", status=status)
        cancelled = requests(sandbox, "DELETE", "/api/v3/order", status=200)
        state, held = order_state(app, cid), open_reservations(app)
        failures = breaker(app)["consecutive_failures"]
    assert state == "EXPIRED" and cid not in held and journal(app, cid)[-1] == "release"
    assert len(failed) >= 3 and cancelled, (failed, cancelled)
    # Every retry waited its back-off: 0.2, 0.4, 0.8 s ... (the failing ones, and the one
    # that worked; a 429's Retry-After of 1 s only makes them later).
    assert_backs_off(failed + cancelled[:1])
    assert len(failed) <= 4  # a storm would be one per tick (0.1 s)
    assert failures == 0 and not watch.of("cancel_failed")


async def test_a_cancel_asked_before_a_restart_is_asked_again_after_it(tmp_path, credentials):
    cancels_fail = FaultSettings(error_rates={"server_error": 1.0}, paths=["/api/v3/order"], methods=["DELETE"])
    sandbox = new_sandbox(faults=cancels_fail, volume_share=NO_FILLS)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = live_config(tmp_path, url)
            raw["strategies"][0].update(RESTING, ttl_seconds=7200)
            watch = Watch()
            running = await start_app(nursery, raw, watch)
            await watch.until(lambda events: bool(errors(watch, "cancel: ambiguous")))
            cid = errors(watch, "cancel: ambiguous")[0].client_order_id
            await running.stop()  # the process ends with the order CANCELING
            assert order_state(running.app, cid) == "CANCELING"
            sandbox.faults.update(FaultSettings())
            restarted = len(sandbox.request_log)
            watch = Watch()
            app = (await start_app(nursery, raw, watch)).app
            await watch.until(lambda events: bool(events_of(watch, "order_expired", cid)))
            await watch.until(lambda events: first_placed(watch) not in (None, cid))
            cancels_after = [s for _, m, p, s in sandbox.request_log[restarted:] if (m, p) == ("DELETE", "/api/v3/order")]
            nursery.cancel_scope.cancel()
    assert order_state(app, cid) == "EXPIRED" and cid not in open_reservations(app)
    assert sandbox.dialect.exchange.order_by_client_id(cid).status == "canceled"
    assert cancels_after[0] == 200  # asked again at once, and only until the exchange said so


async def test_an_order_the_exchange_expires_is_closed_and_its_reservation_released(tmp_path, credentials):
    async with live_runtime(tmp_path, strategy={**RESTING, "ttl_seconds": 2_592_000}, volume_share=NO_FILLS) as (watch, sandbox, app, _):
        await watch.until(lambda events: first_placed(watch) is not None and order_state(app, first_placed(watch)) == "OPEN")
        cid = first_placed(watch)
        assert cid in open_reservations(app)
        # The exchange's own rule ends it (self-trade prevention): status EXPIRED.
        assert await trio.to_thread.run_sync(admin, app, "/admin/operator/expire", {"clientOrderId": cid}) == {"expired": cid}
        expired_at = trio.current_time()
        await watch.until(lambda events: bool(events_of(watch, "order_canceled", cid)))
        [closed] = events_of(watch, "order_canceled", cid)
        after = len(watch.events)
        await watch.until(lambda events: first_placed(watch, after) is not None)  # trades again
        lookups = requests(sandbox, "GET", "/api/v3/order", since=expired_at)
        state, held, paused = order_state(app, cid), open_reservations(app), node(app.snapshot(), "strategy:dipper")["status"]["paused"]
    assert closed.reason == "expired on the exchange"
    assert state == "CANCELED" and cid not in held and journal(app, cid) == ["reserve", "release"]
    assert not differences(watch, "canceled_outside") and paused is None  # the exchange's rule, not an operator
    assert 1 <= len(lookups) <= 2


async def test_an_order_restored_after_a_restart_keeps_its_time_to_live(tmp_path, credentials):
    ttl_candles = 10
    sandbox = new_sandbox(speed=10, volume_share=NO_FILLS)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, 0)
            raw = live_config(tmp_path, url)
            raw["strategies"][0].update(RESTING, ttl_seconds=ttl_candles * 3600)
            watch = Watch()
            running = await start_app(nursery, raw, watch)
            app = running.app
            await watch.until(lambda events: first_placed(watch) is not None and order_state(app, first_placed(watch)) == "OPEN")
            cid = first_placed(watch)
            placed = next(i for i, e in enumerate(watch.events) if e.kind == "order_placed")
            placed_ts = [e.payload["ts"] for e in watch.events[:placed] if e.kind == "evaluated"][-1]  # decided on
            await running.stop()
            # Down while the market moves on past the order's time-to-live.
            while sandbox.dialect.closed["BTC/USDT"][-1].ts < placed_ts + ttl_candles * 3600:
                await sandbox.wait_for_candle()
            watch = Watch()
            app = (await start_app(nursery, raw, watch)).app
            await watch.until(lambda events: bool(events_of(watch, "order_expired", cid)))
            decided = [e.payload["ts"] for e in watch.of("evaluated")]
            nursery.cancel_scope.cancel()
    assert order_state(app, cid) == "EXPIRED" and cid not in open_reservations(app)
    # Cancelled at the first candles decided after the restart, not a fresh time-to-live later.
    assert len(decided) <= 3, decided
    assert sandbox.dialect.exchange.order_by_client_id(cid).status == "canceled"


async def test_an_unknown_order_that_rests_on_the_book_is_resolved_once(tmp_path, credentials):
    answers_lost = FaultSettings(error_rates={"timeout_after_accept": 1.0}, hold_seconds=2, paths=["/api/v3/order"], methods=["POST"])
    async with live_runtime(tmp_path, strategy={**RESTING, "ttl_seconds": 2_592_000}, faults=answers_lost,
                            volume_share=NO_FILLS, timeout_seconds=1) as (watch, sandbox, app, _):
        await watch.until(lambda events: bool(errors(watch, "create: ambiguous")))
        cid = errors(watch, "create: ambiguous")[0].client_order_id
        unknown_at = trio.current_time()
        # Lookups by client order id answered late: the open orders list it first, and the
        # lookup's answer, with the same news, comes after.
        sandbox.faults.update(FaultSettings(late_ms={"/api/v3/order": 400}))
        await watch.until(lambda events: bool(events_of(watch, "order_resolved", cid)))
        # More evidence comes (the lookup's late answer, open orders): it must not resolve
        # it again. Five more polls of the open orders take longer than the lookup's delay.
        await requests_seen(sandbox, 5, "GET", "/api/v3/openOrders", since=trio.current_time())
        lookups = requests(sandbox, "GET", "/api/v3/order", since=unknown_at)
        creates = await requests_seen(sandbox, 1, "POST", "/api/v3/order")  # its answer was held 2 s
        state, held = order_state(app, cid), open_reservations(app)
    [resolved] = events_of(watch, "order_resolved", cid)
    assert resolved.reason == "UNKNOWN -> OPEN on the exchange's evidence"
    assert state == "OPEN" and cid in held and journal(app, cid) == ["reserve"]  # resting: its funds stay locked
    assert copies_on_exchange(sandbox, cid) == 1 and len(creates) == 1  # never sent again
    assert not watch.of("illegal_transition") and len(lookups) <= 3


async def test_a_cancel_that_loses_the_race_with_a_fill_is_no_failure(tmp_path, credentials):
    fill_wins = FaultSettings(error_rates={"fill_before_cancel": 1.0}, paths=["/api/v3/order"], methods=["DELETE"])
    async with live_runtime(tmp_path, strategy={**RESTING, "ttl_seconds": 7200}, faults=fill_wins) as (watch, sandbox, app, _):
        # The refused cancel (-2011: the order filled just before) is no exchange_error line
        # (an order that ended is looked up, not an error): the sandbox's record shows it.
        await watch.until(lambda events: bool(requests(sandbox, "DELETE", "/api/v3/order", status=400)))
        sandbox.faults.update(FaultSettings())
        [cid] = [o.client_order_id for o in sandbox.dialect.exchange.orders.values() if o.status == "closed"]
        await watch.until(lambda events: order_state(app, cid) == "FILLED")
        after = len(watch.events)
        await watch.until(lambda events: first_placed(watch, after) is not None)  # trades again
        cancels = requests(sandbox, "DELETE", "/api/v3/order")
        status = breaker(app)
    assert [e.payload["order_complete"] for e in events_of(watch, "fill", cid)] == [True]
    assert len(fills(app, cid)) == 1 and cid not in open_reservations(app) and "settle" in journal(app, cid)
    assert not watch.of("cancel_failed") and status["consecutive_failures"] == 0 and status["last_failure"] is None
    assert not errors(watch, "cancel")
    assert cancels[0] < min(requests(sandbox, "DELETE", "/api/v3/order", status=200) or [float("inf")])
    assert len(requests(sandbox, "DELETE", "/api/v3/order", status=400)) == 1  # not asked again


# -------------------------------------------------------- 2. ambiguous is ambiguous


async def test_a_5xx_on_a_create_or_a_cancel_the_exchange_carried_out_is_ambiguous(tmp_path, credentials):
    def after_accept(method: str) -> FaultSettings:
        return FaultSettings(error_rates={"server_error_after_accept": 1.0}, paths=["/api/v3/order"], methods=[method])

    async with live_runtime(tmp_path, strategy={**RESTING, "ttl_seconds": 7200}, faults=after_accept("POST"),
                            volume_share=NO_FILLS) as (watch, sandbox, app, _):
        await watch.until(lambda events: bool(errors(watch, "create: ambiguous: ExchangeNotAvailable")))
        cid = errors(watch, "create: ambiguous")[0].client_order_id
        sandbox.faults.update(after_accept("DELETE"))
        assert order_state(app, cid) in ("SUBMITTING", "UNKNOWN") and cid in open_reservations(app)
        await watch.until(lambda events: bool(errors(watch, "cancel: ambiguous: ExchangeNotAvailable", cid)))
        sandbox.faults.update(FaultSettings())
        await watch.until(lambda events: bool(events_of(watch, "order_expired", cid)))
        creates = requests(sandbox, "POST", "/api/v3/order")
        cancels = [s for _, m, p, s in sandbox.request_log if (m, p) == ("DELETE", "/api/v3/order")]
        state = order_state(app, cid)
    [resolved] = events_of(watch, "order_resolved", cid)
    assert resolved.reason == "UNKNOWN -> OPEN on the exchange's evidence"
    assert copies_on_exchange(sandbox, cid) == 1 and len(creates) == 1
    # The cancel's 503 came after the exchange had cancelled it: the order is not failed but
    # asked about (its absence from the open orders, a lookup, or the cancel asked again,
    # whichever comes first) and found cancelled: expired, as we asked, not "outside".
    assert cancels[0] == 503 and len(cancels) <= 2
    assert state == "EXPIRED" and journal(app, cid) == ["reserve", "release"]
    assert not differences(watch, "canceled_outside") and not watch.of("cancel_failed")


# -------------------------------------------------------- 3. no trade is skipped


@pytest.mark.parametrize("create", ["in_flight", "unknown"])
async def test_a_trade_listed_before_the_creates_answer_is_reported_once(tmp_path, credentials, create):
    # The create is filled at once; its answer comes 0.6 s later (within the client's 2 s),
    # or 2 s later (after the client's 1 s: the order is UNKNOWN meanwhile).
    hold, timeout = (0.6, 2) if create == "in_flight" else (2, 1)
    early_fill = FaultSettings(error_rates={"fill_before_answer": 1.0}, hold_seconds=hold, paths=["/api/v3/order"], methods=["POST"])
    async with live_runtime(tmp_path, strategy={"max_open_orders": 1}, faults=early_fill,
                            timeout_seconds=timeout) as (watch, sandbox, app, _):
        [created] = await requests_seen(sandbox, 1, "POST", "/api/v3/order")
        sandbox.faults.update(FaultSettings())
        cid = first_placed(watch)
        await watch.until(lambda events: order_state(app, cid) == "FILLED")
        filled_at = trio.current_time()
        # Two more reconciliations: none may take the trade for a missed one.
        await requests_seen(sandbox, 2, "GET", "/api/v3/account", since=filled_at)
        trades_polls = requests(sandbox, "GET", "/api/v3/myTrades")
        paused = node(app.snapshot(), "strategy:dipper")["status"]["paused"]
    assert sandbox.dialect.exchange.order_by_client_id(cid).status == "closed"
    [trade] = [t.trade_id for t in sandbox.dialect.fills if t.client_order_id == cid]
    assert fills(app, cid) == [trade] and journal(app, cid).count("settle") == 1
    assert [e.payload["trade_id"] for e in events_of(watch, "fill", cid)] == [trade]
    # The connection reported it itself: the reconciler found nothing to repair or to pause for.
    assert not differences(watch, "missed_fill") and not differences(watch, "balance_changed") and paused is None
    # The trade was listed while the create's answer was still on its way.
    assert requests(sandbox, "GET", "/api/v3/myTrades", since=created, until=created + min(hold, timeout) - 0.1)
    # No faster than the poll (0.1 s) plus the reconciler's snapshots (0.2 s until reconciled, then 0.5 s).
    span = trades_polls[-1] - trades_polls[0]
    assert len(trades_polls) <= span / 0.1 + span / 0.2 + 2
    if create == "unknown":
        assert len(events_of(watch, "order_resolved", cid)) == 1


# --------------------------------------------------- 4. back-off everywhere, bounded


async def test_the_balance_at_start_up_is_asked_again_with_back_off_not_in_a_storm(tmp_path, credentials):
    account_down = FaultSettings(error_rates={"server_error": 1.0}, paths=["/api/v3/account"])
    async with live_runtime(tmp_path, faults=account_down) as (watch, sandbox, app, _):
        await watch.until(lambda events: len(errors(watch, "balance: transient")) >= 4)
        sandbox.faults.update(FaultSettings())
        await watch.until(lambda events: watch.count("strategy_active") == 1)
        refused = requests(sandbox, "GET", "/api/v3/account", status=503)
    failed = [e.at for e in errors(watch, "balance: transient")]
    snapshots = errors(watch, "snapshot_balance: transient")
    # The connection's own asks back off, 0.2, 0.4, 0.8 s (jittered) while candles, tickers
    # and the other reads go through: four 503s take about 1.4 s, not 0.4 s.
    assert_backs_off(failed)
    # Every account read of the window: those, and the reconciler's snapshots (one a cycle:
    # 0.2 s pause + 1 s waiting for an answer that did not come).
    window = refused[-1] - refused[0]
    assert len(snapshots) <= window / 1.2 + 2
    assert len(refused) == len(failed) + len(snapshots) <= 4 + 1 + window / 1.2 + 2, refused
    assert not watch.of("venue_isolated")


async def test_a_venue_unreachable_from_the_start_is_isolated_then_recovers(tmp_path, credentials):
    down = FaultSettings(error_rates={"server_error": 1.0})
    async with live_runtime(tmp_path, faults=down, isolate_after_seconds=1, probe_max_seconds=1) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("strategy_inactive", "dipper") >= 1)
        isolated_at = trio.current_time()
        await requests_seen(sandbox, 2, status=503, since=isolated_at)  # probed while isolated
        sandbox.faults.update(FaultSettings())
        back_at = trio.current_time()
        await watch.until(lambda events: watch.count("venue_recovered") == 1 and watch.count("strategy_active") == 1)
        outage = requests(sandbox, status=503)
        connection = node(app.snapshot(), "connection:binance")
    [inactive] = [e for e in watch.of("strategy_inactive") if e.strategy == "dipper"]
    assert inactive.reason.startswith("venue binance isolated: no successful call for")
    assert connection["status"]["isolated"] is None and connection["incarnation"] == 1
    # Probes double from 0.2 s up to probe_max_seconds (1 s): a few requests, not a storm.
    assert {p for _, _, p, s in sandbox.request_log if s == 503} == {"/api/v3/exchangeInfo"}
    assert len(outage) <= 2 + (back_at - outage[0]) / (JITTER_LOW * 1.0) + 1, outage
    assert_backs_off(outage[:4])


# ------------------------------------------------------------------- 5. clock


async def test_an_exchange_clock_ahead_or_jumping_is_measured_and_the_refused_call_made_again(tmp_path, credentials):
    ahead = FaultSettings(clock_offset_ms=60_000)  # past ccxt's recvWindow (10 s): refused until measured
    async with live_runtime(tmp_path, faults=ahead) as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("strategy_active") == 1)
        await watch.until(lambda events: first_placed(watch) is not None and order_state(app, first_placed(watch)) not in ("SUBMITTING", "UNKNOWN", None))
        refused_at_start = len(refused_for_the_clock(watch))
        jumped_at = trio.current_time()
        sandbox.faults.update(FaultSettings(clock_offset_ms=-5_000))  # now behind: our times are ahead
        await watch.until(lambda events: len(refused_for_the_clock(watch)) > refused_at_start)
        # Signed calls go through again (the reconciler's account reads, every 0.5 s).
        await requests_seen(sandbox, 3, "GET", "/api/v3/account", status=200, since=jumped_at)
        refused_after_jump = len(refused_for_the_clock(watch)) - refused_at_start
        measured = requests(sandbox, "GET", "/api/v3/time")
        isolated = node(app.snapshot(), "connection:binance")["status"]["isolated"]
    # Refused: the calls signed before each measurement came back (at most those on the wire).
    assert 1 <= refused_at_start <= 4 and 1 <= refused_after_jump <= 4, (refused_at_start, refused_after_jump)
    assert len(measured) == 2  # at start-up, and after the jump: once each
    assert isolated is None and not watch.of("venue_isolated") and not watch.of("preflight_failed")
    assert watch.count("strategy_inactive") == 0


async def test_a_clock_refused_even_after_measuring_fails_pre_flight_naming_the_clock_and_the_offset(tmp_path, credentials):
    refused = FaultSettings(error_rates={"invalid_timestamp": 1.0}, clock_offset_ms=3_000)
    async with live_runtime(tmp_path, faults=refused, probe_max_seconds=1) as (watch, sandbox, app, _):
        await watch.until(lambda events: bool(watch.of("preflight_failed")))
        await watch.until(lambda events: len(errors(watch, "probe: clock")) >= 4)  # probed, signed
        measured = requests(sandbox, "GET", "/api/v3/time")
        signed = requests(sandbox, "GET", "/api/v3/account")
    [failed] = watch.of("preflight_failed")
    assert failed.reason.startswith(
        "pre-flight failed: exchange binance: clock: binance refuses this host's request times even after measuring its clock")
    offset = int(re.search(r"the exchange's clock minus ours: ([+-]\d+) ms", failed.reason).group(1))
    assert 2_800 <= offset <= 3_000 and "synchronise this host's clock (NTP)" in failed.reason
    assert len(measured) == 2  # at start-up, then once more before giving up
    # Isolated, it is probed with a signed call, doubling from poll_seconds (0.1 s) to 1 s.
    assert_backs_off([e.at for e in errors(watch, "probe: clock")], first=0.1, cap=1.0)
    assert watch.count("venue_isolated") == 1 and not watch.of("venue_recovered") and not watch.of("order_placed")
    assert len(signed) <= 12, len(signed)


# ------------------------------------------------------------- 6. closed candles


async def test_a_candle_answered_late_is_closed_by_the_exchanges_clock_not_at_arrival(tmp_path, credentials):
    # One-second candles on the sandbox's clock; klines answered 0.6 s after they were read:
    # an answer read just before a candle's end arrives after it, the candle still forming.
    late = FaultSettings(late_ms={"/api/v3/klines": 600})
    async with live_runtime(tmp_path, faults=late, candle_seconds=1, timeframe="1s") as (watch, sandbox, app, _):
        await watch.until(lambda events: watch.count("evaluated") >= 4)
        decided = [(e.payload["ts"], e.payload["close"]) for e in watch.of("evaluated")]
        klines = requests(sandbox, "GET", "/api/v3/klines")
    final = {c.ts: str(c.close) for c in sandbox.dialect.closed["BTC/USDT"]}
    # Every candle decided on is the closed one, with its final close, once and in order.
    assert [close for _, close in decided] == [final.get(ts) for ts, _ in decided], (decided, final)
    assert [ts for ts, _ in decided] == list(range(decided[0][0], decided[0][0] + len(decided)))
    # One klines request at a time: no more than one per answer's delay (0.6 s).
    assert len(klines) <= (klines[-1] - klines[0]) / 0.6 + 2

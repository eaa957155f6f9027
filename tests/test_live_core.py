"""The live connection core with plain calls: what it asks ccxt for, and what it makes of
the answers. (The wire itself is tested in test_live.py against the sandbox.)"""

from __future__ import annotations

from decimal import Decimal as D

from actors.connection.live_core import LiveConnectionCore, LiveSettings
from actors.messages import (
    LEDGER,
    CallDone,
    ExchangeCall,
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderRejected,
    Quote,
    SubmitOrder,
    Subscribe,
    Tick,
    VenueInfo,
    VenueStatus,
)
from actors.orders import Order, OrderState
from exchange.ccxt_adapter import parse_balances, parse_markets, parse_order
from exchange.records import Side

MARKETS = parse_markets({
    "BTC/USDT": {
        "spot": True, "type": "spot", "active": True, "maker": 0.001, "taker": 0.001,
        "precision": {"price": 0.01, "amount": 0.00001},
        "limits": {"amount": {"min": 0.00001}, "cost": {"min": 5}},
    }
})
SETTINGS = LiveSettings(poll_seconds=1, rate_limit_per_second=100, isolate_after_seconds=10, probe_max_seconds=8)


def calls(effects):
    return [e for e in effects if isinstance(e, ExchangeCall)]


def sends(effects, cls):
    return [e for e in effects if hasattr(e, "message") and isinstance(e.message, cls)]


def started() -> tuple[LiveConnectionCore, list]:
    core = LiveConnectionCore("binance", SETTINGS, now=0.0)
    [load] = calls(core.start(0.0))
    assert load.operation == "load_markets"
    assert core.handle(Subscribe("s", "BTC/USDT"), 0.0) == []  # answered once the facts are known
    [balance] = calls(core.handle(CallDone(load.call_id, MARKETS), 0.1))
    assert balance.operation == "fetch_balance"
    out = core.handle(CallDone(balance.call_id, parse_balances({"total": {"USDT": 1000.0, "BTC": 0.5}})), 0.2)
    [info] = sends(out, VenueInfo)
    assert info.message.facts.connection_error is None
    assert info.message.facts.markets["BTC/USDT"].tick_size == D("0.01")
    assert info.message.facts.balances == {"USDT": D("1000.0"), "BTC": D("0.5")}
    return core, out


def order(cid="c1") -> Order:
    return Order(cid, "s", "binance", "BTC/USDT", Side.BUY, D("100"), D("0.1"), OrderState.SUBMITTING, 0.0, 0.0)


def test_markets_load_alone_before_anything_else():
    core = LiveConnectionCore("binance", SETTINGS, now=0.0)
    effects = core.start(0.0)
    assert [c.operation for c in calls(effects)] == ["load_markets"]
    assert calls(core.handle(Tick(0.5), 5.0)) == []  # nothing else while markets load


def test_a_failed_read_is_retried_later_each_time_then_the_venue_is_isolated():
    core, _ = started()
    delays = []
    now = 1.0
    for _ in range(3):
        [candles] = [c for c in calls(core.handle(Tick(now), now)) if c.operation == "fetch_candles"]
        core.handle(CallDone(candles.call_id, error_kind="transient", error="ExchangeNotAvailable: 503"), now)
        delays.append(core.next_poll - now)
        now = core.next_poll
    # Doubling from 2 s (2 x poll_seconds), each with at most 20 % of jitter.
    for delay, expected in zip(delays, [2, 4, 8]):
        assert expected * 0.8 <= delay <= expected * 1.2
    # Over 10 s without a successful call, past isolate_after_seconds (10): isolated, probed.
    out = core.handle(Tick(now), now)
    assert sends(out, VenueStatus)[0].message.isolated
    assert [c.operation for c in calls(out)] == ["fetch_time"]
    [probe] = calls(out)
    recovered = core.handle(CallDone(probe.call_id, 1_700_000_000_000), now + 0.1)
    assert not sends(recovered, VenueStatus)[0].message.isolated


def test_the_ticker_becomes_a_quote_for_subscribers():
    core, _ = started()
    [ticker] = [c for c in calls(core.handle(Tick(1.0), 1.0)) if c.operation == "fetch_quote"]
    [quote] = sends(core.handle(CallDone(ticker.call_id, (D("100.5"), D("100.7"))), 1.1), Quote)
    assert quote.to == "strategy:s" and (quote.message.bid, quote.message.ask) == (D("100.5"), D("100.7"))


def test_a_429_pauses_every_call_for_retry_after():
    core, _ = started()
    [_, candles] = calls(core.handle(Tick(1.0), 1.0))
    core.handle(CallDone(candles.call_id, error_kind="rate_limited", error="DDoSProtection: 429", retry_after=2.0), 1.0)
    core.handle(SubmitOrder(order()), 1.5)
    assert calls(core.handle(Tick(2.9), 2.9)) == []  # queued, not sent
    assert [c.operation for c in calls(core.handle(Tick(3.0), 3.0))][0] == "create_limit_order"


def test_an_ambiguous_submit_is_unknown_and_looked_up_by_client_order_id():
    core, _ = started()
    [create] = calls(core.handle(SubmitOrder(order()), 1.0))
    out = core.handle(CallDone(create.call_id, error_kind="ambiguous", error="RequestTimeout"), 2.0)
    [unknown] = sends(out, OrderOutcomeUnknown)
    assert unknown.to == "strategy:s"
    assert not [s for s in out if getattr(s, "to", None) == LEDGER]  # the reservation stays
    lookup = [c for c in calls(core.handle(Tick(3.0), 3.0)) if c.operation == "fetch_order_by_client_id"]
    assert lookup[0].args == ("c1", "BTC/USDT")
    out = core.handle(CallDone(lookup[0].call_id, parse_order({"id": "77", "side": "buy", "status": "open"})), 3.1)
    assert sends(out, OrderAccepted)[0].message.exchange_order_id == "77"


def test_a_rejected_submit_releases_and_an_unavailable_one_is_not_unknown():
    core, _ = started()
    for error_kind in ("rejected", "transient"):
        [create] = calls(core.handle(SubmitOrder(order(error_kind)), 1.0))
        out = core.handle(CallDone(create.call_id, error_kind=error_kind, error="x"), 1.1)
        assert {s.to for s in sends(out, OrderRejected)} == {"strategy:s", LEDGER}


def test_a_fatal_error_isolates_the_venue_and_tells_its_strategies():
    core, _ = started()
    [_, candles] = calls(core.handle(Tick(1.0), 1.0))
    out = core.handle(CallDone(candles.call_id, error_kind="fatal", error="AuthenticationError: key revoked"), 1.0)
    [status] = sends(out, VenueStatus)
    assert status.message.isolated and "key revoked" in status.message.reason
    rejected = sends(core.handle(SubmitOrder(order()), 2.0), OrderRejected)
    assert rejected and "isolated" in rejected[0].message.reason

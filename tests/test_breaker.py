"""The circuit breaker's rules, with plain calls and wall time passed in."""

from __future__ import annotations

from actors.strategy.breaker import BreakerSettings, BreakerState, CircuitBreaker


def test_three_consecutive_failures_open_it():
    breaker = CircuitBreaker()
    assert breaker.failure(0, "HTTP 500") == []
    assert breaker.failure(1, "HTTP 500") == []
    [change] = breaker.failure(2, "HTTP 503")
    assert (change.old, change.new) == (BreakerState.CLOSED, BreakerState.OPEN)
    reason, _ = breaker.blocked_reason(3)
    assert reason == "circuit breaker open until 1970-01-01 00:00:32 UTC after 3 consecutive exchange failures (last: HTTP 503)"


def test_a_success_before_the_third_failure_resets_the_count():
    breaker = CircuitBreaker()
    breaker.failure(0, "x")
    breaker.failure(1, "x")
    breaker.success(2)
    assert breaker.failure(3, "x") == [] and breaker.failure(4, "x") == []
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 2


def test_after_the_cooldown_exactly_one_probe_goes():
    breaker = CircuitBreaker(BreakerSettings(threshold=3, cooldown_seconds=30))
    for t in range(3):
        breaker.failure(t, "x")
    assert breaker.blocked_reason(31)[0] is not None  # opened at t=2: until 32
    reason, [change] = breaker.blocked_reason(32)
    assert reason is None and change.new is BreakerState.HALF_OPEN
    breaker.sent("probe-1")
    assert breaker.blocked_reason(33)[0] == "circuit breaker half-open: waiting for probe probe-1"
    assert breaker.success(33.5, "an-older-order") == []  # not the probe: still half-open
    [closed] = breaker.success(34, "probe-1")
    assert closed.new is BreakerState.CLOSED
    assert breaker.blocked_reason(35) == (None, [])
    assert breaker.failures == 0


def test_a_failed_probe_reopens_with_a_capped_longer_cooldown():
    breaker = CircuitBreaker(BreakerSettings(threshold=1, cooldown_seconds=10, max_cooldown_seconds=35))
    now = 0.0
    breaker.failure(now, "x")
    cooldowns = []
    for _ in range(4):
        now = breaker.open_until
        breaker.blocked_reason(now)
        breaker.sent("probe")
        [change] = breaker.failure(now, "still down")
        assert change.old is BreakerState.HALF_OPEN and change.new is BreakerState.OPEN
        cooldowns.append(breaker.open_until - now)
    assert cooldowns == [20, 35, 35, 35]
    breaker.blocked_reason(breaker.open_until)
    breaker.sent("probe")
    breaker.success(breaker.open_until, "probe")
    assert breaker.cooldown == 10  # closed again: back to the base cooldown


def test_an_unrelated_success_neither_ends_the_cooldown_nor_closes_a_half_open_breaker():
    breaker = CircuitBreaker(BreakerSettings(threshold=3, cooldown_seconds=30))
    for t in range(3):
        breaker.failure(t, "x")
    assert breaker.success(3, "resting-order-cancelled") == []  # open: the cooldown stands
    assert breaker.state is BreakerState.OPEN and breaker.blocked_reason(10)[0] is not None

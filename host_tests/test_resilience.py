"""Portable tests for firmware/apigw/resilience.py.

A fake clock (a list holding the tick) is injected as now_fn, and a fake sleep moves it on, so
call_with_breaker() and retry_with_backoff() run without waiting. The spec's smoke test is here:
open a circuit, half-open it, close it. The allocation test runs on MicroPython only.
"""

from apigw.backoff import RetryBudget
from apigw.compat import micropython, ticks_add
from apigw.resilience import (
    ACQUIRED,
    MUST_WAIT,
    REJECTED,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    FailureReason,
    ResilienceError,
    ResilienceManager,
    RetryPolicy,
    enforce_timeout,
    failure_reason,
)
from check import raises, requires_micropython

BASES = (0, (1 << 30) - 300, ticks_add(0, -300))


class Clock:
    def __init__(self, t=0):
        self.t = t
        self.slept = []

    def now(self):
        return self.t

    def sleep(self, ms):
        self.slept.append(ms)
        self.t = ticks_add(self.t, ms)


class Failure(Exception):
    def __init__(self, reason=None, retry_after_s=None, nothing_sent=None):
        super().__init__("upstream failed")
        if reason is not None:
            self.reason = reason
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s
        if nothing_sent is not None:
            self.nothing_sent = nothing_sent


class TimeoutError(Exception):  # noqa: A001 - as asyncio's, found by name (MicroPython has no builtin)
    pass


def _failing(clock, ms, exc=None, value=200):
    """fn for call_with_breaker(): takes ms on the clock, then raises exc or returns value."""

    def fn():
        clock.t = ticks_add(clock.t, ms)
        if exc is not None:
            raise exc
        return value

    return fn


def test_failure_reasons():
    cases = (
        (OSError(110), FailureReason.TIMEOUT),  # ETIMEDOUT
        (OSError(111), FailureReason.CONNECTION_ERROR),  # ECONNREFUSED
        (OSError(104), FailureReason.CONNECTION_ERROR),  # ECONNRESET
        (TimeoutError(), FailureReason.TIMEOUT),
        (ValueError("bad json"), FailureReason.RESPONSE_ERROR),
        (Failure(FailureReason.RATE_LIMITED), FailureReason.RATE_LIMITED),
        (Failure(7), FailureReason.RESPONSE_ERROR),  # not a reason: ignored
    )
    for exc, want in cases:
        assert failure_reason(exc) == want, (exc, failure_reason(exc), want)


def test_open_half_open_close():
    """The spec's smoke test: open a circuit, half-open it, close it."""
    for base in BASES:
        clock = Clock(base)
        m = ResilienceManager(4, 2, 20, 2)
        cfg = CircuitBreakerConfig(failure_threshold=2, reset_timeout=5000, half_open_calls=1, success_threshold=1)
        bid = m.create_circuit_breaker("sensors", cfg)
        assert m.find_breaker("sensors") == bid and m.find_breaker("x") == -1
        assert m.call_with_breaker(bid, _failing(clock, 3), clock.now) == 200
        for _ in range(2):
            assert raises(OSError, m.call_with_breaker, bid, _failing(clock, 3, OSError(111)), clock.now)
        assert m.get_state(bid) == CircuitState.OPEN and m.is_circuit_open(bid, clock.t)
        e = raises(CircuitOpenError, m.call_with_breaker, bid, _failing(clock, 3), clock.now)
        assert e.name == "sensors" and e.retry_after_ms == 5000 and "open" in str(e)
        assert not m.attempt_reset(bid, ticks_add(clock.t, 4999))
        clock.t = ticks_add(clock.t, 5000)
        assert m.attempt_reset(bid, clock.t) and m.get_state(bid) == CircuitState.HALF_OPEN
        assert m.call_with_breaker(bid, _failing(clock, 3, value=204), clock.now) == 204
        assert m.get_state(bid) == CircuitState.CLOSED and not m.is_circuit_open(bid, clock.t)
        mt = m.get_metrics(bid)
        assert (mt["calls"], mt["successes"], mt["connection_error"], mt["rejected"]) == (4, 2, 2, 1)
        assert (mt["times_opened"], mt["transitions"], mt["state"]) == (1, 3, "closed")
        assert "retry_after_ms" not in mt and m.get_metrics(bid, clock.t)["retry_after_ms"] == 0


class Cancelled(BaseException):
    pass


def test_a_cancelled_probe_gives_its_place_back():
    clock = Clock(0)
    m = ResilienceManager(1, 1, 20, 1)
    cfg = CircuitBreakerConfig(failure_threshold=1, reset_timeout=100, half_open_calls=1, success_threshold=1)
    bid = m.create_circuit_breaker("a", cfg)
    assert raises(OSError, m.call_with_breaker, bid, _failing(clock, 1, OSError(111)), clock.now)
    clock.t = 200
    assert raises(Cancelled, m.call_with_breaker, bid, _failing(clock, 1, Cancelled()), clock.now)
    assert m.get_state(bid) == CircuitState.HALF_OPEN and not m.is_circuit_open(bid, clock.t)
    assert m.call_with_breaker(bid, _failing(clock, 1), clock.now) == 200 and m.get_state(bid) == CircuitState.CLOSED
    assert m.get_metrics(bid)["calls"] == 2  # the cancelled call has no outcome
    assert "no breaker" in str(raises(ResilienceError, m.call_with_breaker, -1, _failing(clock, 1), clock.now))


def test_call_with_breaker_maps_results():
    clock = Clock(1000)
    m = ResilienceManager(2, 1, 20, 1)
    cfg = CircuitBreakerConfig(failure_threshold=0, window_size=20, minimum_calls=20, timeout_duration=100)
    bid = m.create_circuit_breaker("api", cfg)
    calls = (
        (_failing(clock, 5, value=503), 503),  # a 5xx status: RESPONSE_ERROR
        (_failing(clock, 5, value=429), 429),  # RATE_LIMITED: metrics only
        (_failing(clock, 5, value=404), 404),  # the client's fault: success
        (_failing(clock, 5, value=True), True),  # not a status: success
        (_failing(clock, 5, value="body"), "body"),
        (_failing(clock, 100, value=200), 200),  # slower than timeout_duration: TIMEOUT
    )
    for fn, want in calls:
        assert m.call_with_breaker(bid, fn, clock.now) == want
    assert raises(Failure, m.call_with_breaker, bid, _failing(clock, 1, Failure(FailureReason.TIMEOUT)), clock.now)
    assert raises(ValueError, m.call_with_breaker, bid, _failing(clock, 1, ValueError("x")), clock.now)
    mt = m.get_metrics(bid)
    want = {"calls": 8, "successes": 3, "failures": 5, "response_error": 2, "rate_limited": 1, "timeout": 2}
    for k in want:
        assert mt[k] == want[k], (k, mt[k], want[k])
    assert m.get_failure_rate(bid) == 57  # 4 counted failures of 7 (the 429 is not in the window)


def test_record_and_errors():
    m = ResilienceManager(1, 1, 10, 1)
    bid = m.create_circuit_breaker("a", CircuitBreakerConfig(failure_threshold=1, window_size=10, minimum_calls=5))
    assert m.record_success(bid, 5, 0) == CircuitState.CLOSED
    assert m.record_failure(bid, FailureReason.CONNECTION_ERROR, 5, 0) == CircuitState.OPEN
    assert m.get_failure_rate(bid) == 50 and m.call_timeout_ms(bid) == 10000
    for reason in (-1, 4, "timeout", None):
        assert "reason" in str(raises(ResilienceError, m.record_failure, bid, reason, 5, 0))
    m.force_closed(bid)
    assert m.record_failure(bid, FailureReason.TIMEOUT, 5, 0) == CircuitState.CLOSED
    m.force_open(bid, 0)
    assert m.is_circuit_open(bid, 10**6) and m.get_breaker(bid).forced
    m.reset(bid)
    assert m.get_state(bid) == CircuitState.CLOSED and not m.get_breaker(bid).forced
    for f, args in (
        (m.record_success, (1, 5, 0)),
        (m.is_circuit_open, (1, 0)),
        (m.get_failure_rate, (1,)),
        (m.get_metrics, (-1,)),
        (m.acquire_permit, (0,)),
        (m.release_permit, (-1,)),
    ):
        assert "no " in str(raises(ResilienceError, f, *args))
    assert "table full" in str(raises(ResilienceError, m.create_circuit_breaker, "b"))
    assert "window_size" in str(raises(ResilienceError, ResilienceManager(1, 1, 10).create_circuit_breaker, "x"))


def test_bulkheads_through_the_manager():
    m = ResilienceManager(1, 2)
    b = m.create_bulkhead("db", 1, 1, 100)
    assert m.find_bulkhead("db") == b and m.find_bulkhead("x") == -1
    assert [m.acquire_permit(b) for _ in range(3)] == [ACQUIRED, MUST_WAIT, REJECTED]
    assert m.release_permit(b) and not m.release_permit(b)
    assert m.get_bulkhead(b).in_use == 0 and m.get_bulkhead_metrics(b)["acquired"] == 2


def _flaky(clock, failures, exc_fn, took=10):
    state = {"calls": 0}

    def fn():
        state["calls"] += 1
        clock.t = ticks_add(clock.t, took)
        if state["calls"] <= failures:
            raise exc_fn()
        return "ok"

    return fn, state


def test_retry_with_backoff():
    for base in BASES:
        m = ResilienceManager(1, 1, 10, 4)
        policy = m.create_retry_policy("default", max_attempts=4, base_ms=100, cap_ms=1000, seed=7)
        assert m.find_retry_policy("default") is policy and m.find_retry_policy("x") is None
        assert "taken" in str(raises(ResilienceError, m.create_retry_policy, "default"))

        clock = Clock(base)
        clock.slept = []
        fn, st = _flaky(clock, 3, lambda: OSError(111))
        assert m.retry_with_backoff(fn, "default", clock.sleep, clock.now) == "ok" and st["calls"] == 4
        assert len(clock.slept) == 3 and all(0 <= d <= 100 << k for k, d in enumerate(clock.slept))

        clock.slept = []
        fn, st = _flaky(clock, 9, lambda: OSError(111))
        assert raises(OSError, m.retry_with_backoff, fn, policy, clock.sleep, clock.now) and st["calls"] == 4

        # not idempotent: retried only when nothing was sent
        fn, st = _flaky(clock, 1, lambda: Failure())
        assert raises(Failure, m.retry_with_backoff, fn, policy, clock.sleep, clock.now, False) and st["calls"] == 1
        fn, st = _flaky(clock, 1, lambda: Failure(nothing_sent=True))
        assert m.retry_with_backoff(fn, policy, clock.sleep, clock.now, False) == "ok" and st["calls"] == 2

        # Retry-After honoured; one past max_total_ms ends the retries
        clock.slept = []
        fn, st = _flaky(clock, 1, lambda: Failure(retry_after_s=3))
        assert m.retry_with_backoff(fn, policy, clock.sleep, clock.now) == "ok" and clock.slept == [3000]
        fn, st = _flaky(clock, 1, lambda: Failure(retry_after_s=60))
        assert raises(Failure, m.retry_with_backoff, fn, policy, clock.sleep, clock.now) and st["calls"] == 1

        # an open circuit is not retried
        fn, st = _flaky(clock, 1, lambda: CircuitOpenError("x", 100))
        assert raises(CircuitOpenError, m.retry_with_backoff, fn, policy, clock.sleep, clock.now) and st["calls"] == 1

        # the retry budget of service 2: 10% of 10 requests plus no reserve: one retry in all
        m = ResilienceManager(1, 1, 10, budget=RetryBudget(4, budget_percent=10, min_retries_per_s=0))
        for _ in range(9):
            m.budget.note_request(2, clock.t)
        fn, st = _flaky(clock, 5, lambda: OSError(111))
        assert raises(
            OSError, m.retry_with_backoff, fn, RetryPolicy(max_attempts=5, seed=1), clock.sleep, clock.now, True, 2
        )
        assert st["calls"] == 2 and m.budget.state(2, clock.t) == (10, 1, 1)


def test_enforce_timeout():
    m = ResilienceManager(1, 1)
    for base in BASES:
        assert m.enforce_timeout(base, 500, base) == 500
        assert enforce_timeout(base, 500, ticks_add(base, 499)) == 1
        assert enforce_timeout(base, 500, ticks_add(base, 500)) == 0  # expired
        assert enforce_timeout(base, 500, ticks_add(base, 100000)) == 0
        assert enforce_timeout(base, 500, ticks_add(base, -50)) == 500  # a lagging clock: nothing passed


@micropython.native  # this frame must not come from the heap either
def _exercise(m, t0):
    n = 0
    br = m.breakers
    bh = m.bulkheads
    for i in range(30):
        now = ticks_add(t0, i * 400)
        if br.admit(0, now):
            n += bh.acquire_permit(0)
            n += br.record(0, -1 if i % 4 == 0 else 1, 20, now)
            n += bh.release_permit(0)
        n += enforce_timeout(t0, 5000, now)
    return n


def test_request_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    def setup():
        m = ResilienceManager(2, 2, 20, 2)
        m.create_circuit_breaker("a", CircuitBreakerConfig(failure_threshold=3, reset_timeout=1000))
        m.create_bulkhead("a", 2)
        return m

    for t0 in ((1 << 30) - 5000, ticks_add(0, -5000)):
        want = _exercise(setup(), t0)
        m = setup()
        before = mp.mem_total()
        got = _exercise(m, t0)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want and m.get_metrics(0)["times_opened"] > 0
        m = setup()
        mp.heap_lock()
        try:
            got = _exercise(m, t0)
        finally:
            mp.heap_unlock()
        assert got == want

"""Portable tests for firmware/apigw/backoff.py.

Delays are checked against their jitter bounds for many attempts and seeds; next_delay() and the
retry budget are tables of cases with injected times, the budget's at three bases (0, just before
2**30 and just before the runtime's own ticks wrap). The allocation test runs on MicroPython only.
"""

from apigw import backoff, httpparse
from apigw.backoff import IDEMPOTENT_METHODS, RetryBudget, RetryPolicy, bound, delay, may_retry
from apigw.breaker import ResilienceError
from apigw.compat import micropython, ticks_add
from check import raises, requires_micropython

BASES = (0, (1 << 30) - 300, ticks_add(0, -300))

# (attempt, base_ms, multiplier, cap_ms, bound)
BOUNDS = (
    (0, 100, 2, 10000, 100),
    (1, 100, 2, 10000, 200),
    (6, 100, 2, 10000, 6400),
    (7, 100, 2, 10000, 10000),  # 12800 capped
    (1000, 100, 2, 10000, 10000),
    (3, 50, 3, 100000, 1350),
    (5, 7, 1, 100, 7),  # multiplier 1: constant
    (0, 500, 2, 100, 100),  # base above the cap
    (28, 1, 2, (1 << 29) - 1, 1 << 28),  # the largest powers stay below 2**30
    (30, 1, 2, (1 << 29) - 1, (1 << 29) - 1),
    (9, 3, 16, (1 << 29) - 1, (1 << 29) - 1),
    (-1, 100, 2, 10000, 100),
    (4, 0, 2, 1000, 0),
)


def test_bounds():
    for attempt, base, mult, cap, want in BOUNDS:
        got = bound(attempt, base, mult, cap)
        assert got == want, (attempt, base, mult, cap, got, want)
        assert delay(attempt, base, mult, cap, (1 << 30) - 1) <= want and delay(attempt, base, mult, cap, 0) == 0


def test_delays_stay_within_their_jitter_bounds():
    for seed in range(0, 4000, 97):
        p = RetryPolicy(max_attempts=12, base_ms=50, multiplier=2, cap_ms=20000, seed=seed)
        for attempt in range(12):
            d = p.delay(attempt)
            assert 0 <= d <= min(20000, 50 << attempt), (seed, attempt, d)
    p = RetryPolicy(base_ms=1000, cap_ms=1000, seed=5)
    got = [p.delay(0) for _ in range(2000)]
    assert min(got) < 20 and max(got) > 980  # the whole range is used
    assert 450 < sum(got) // len(got) < 550  # and evenly: the mean is near the middle
    counts = [0] * 10
    for d in got:
        counts[d * 10 // 1001] += 1
    assert min(counts) > 150, counts


def test_random_source_is_seeded_and_30_bit():
    a = RetryPolicy(seed=42)
    b = RetryPolicy(seed=42)
    c = RetryPolicy(seed=43)
    xs = [a.random() for _ in range(500)]
    assert xs == [b.random() for _ in range(500)]
    assert xs != [c.random() for _ in range(500)]
    assert all(0 <= x < 1 << 30 for x in xs) and len(set(xs)) == 500
    assert len(set(backoff._mix(x) for x in range(4096))) == 4096  # a bijection
    assert 0 <= backoff._mix((1 << 30) - 1) < 1 << 30
    assert 0 <= RetryPolicy().random() < 1 << 30  # seeded from os.urandom()


# (policy settings, attempts made, elapsed ms, retry_after_s, lowest, highest); -1, -1: no retry
NEXT = (
    ({}, 1, 0, -1, 0, 100),
    ({}, 2, 0, -1, 0, 200),
    ({}, 3, 0, -1, -1, -1),  # max_attempts 3: the call and two retries
    ({"max_attempts": 1}, 1, 0, -1, -1, -1),
    ({"max_total_ms": 1000, "base_ms": 5000, "cap_ms": 5000}, 1, 0, -1, -1, 1000),  # a delay past it: refused
    ({"max_total_ms": 1000}, 1, 1000, -1, -1, 0),  # nothing left but a retry right now
    ({"max_total_ms": 1000}, 1, 1001, -1, -1, -1),
    ({"max_total_ms": 1000}, 1, -5, -1, 0, 100),  # a lagging clock counts as 0
    ({}, 1, 0, 2, 2000, 2000),  # Retry-After longer than the jitter: waited for in full
    ({"base_ms": 9000, "cap_ms": 9000}, 1, 0, 0, 0, 9000),  # shorter: the jittered delay
    ({"max_total_ms": 5000}, 1, 3500, 2, -1, -1),  # past the deadline: no retry
    ({"max_total_ms": 5000}, 1, 3000, 2, 2000, 2000),
    ({}, 1, 0, 31, -1, -1),  # longer than max_total_ms
    ({}, 1, 0, 1 << 40, -1, -1),  # absurd: no overflow, no retry
)


def test_next_delay():
    for settings, attempts, elapsed, ra, lo, hi in NEXT:
        for seed in range(40):
            p = RetryPolicy(seed=seed, **settings)
            got = p.next_delay(attempts, elapsed, ra)
            assert lo <= got <= hi, (settings, attempts, elapsed, ra, got)
            if ra >= 0 and lo == hi:
                assert got == lo
    p = RetryPolicy(max_total_ms=1000, base_ms=5000, cap_ms=5000, seed=3)
    got = [p.next_delay(1, 0) for _ in range(200)]
    assert 20 < got.count(-1) < 200 and all(d <= 1000 for d in got)  # refused, never shortened


def test_may_retry_and_idempotent_methods():
    for idem, nothing_sent, want in (
        (True, True, True),
        (True, False, True),
        (False, True, True),
        (False, False, False),
    ):
        assert may_retry(idem, nothing_sent) is want
    for bit in (httpparse.METHOD_GET, httpparse.METHOD_HEAD, httpparse.METHOD_PUT, httpparse.METHOD_DELETE):
        assert IDEMPOTENT_METHODS & bit
    assert IDEMPOTENT_METHODS & httpparse.METHOD_OPTIONS
    assert not IDEMPOTENT_METHODS & (httpparse.METHOD_POST | httpparse.METHOD_PATCH)


def _allowed(bg, sid, now):
    """How many retries sid may send at now (each counted)."""
    n = 0
    while bg.budget_allows(sid, now):
        bg.note_retry(sid, now)
        n += 1
        assert n < 10000
    return n


def test_budget():
    for base in BASES:

        def at(dt):
            return ticks_add(base, dt)

        bg = RetryBudget(4, budget_percent=20, min_retries_per_s=0, window_ms=10000, buckets=10)
        assert not bg.budget_allows(1, at(0))  # no traffic, no reserve: no retries
        for _ in range(100):
            bg.note_request(1, at(0))
        assert _allowed(bg, 1, at(0)) == 20 and bg.state(1, at(0)) == (100, 20, 20)
        assert _allowed(bg, 1, at(9999)) == 0  # the first bucket is still in the window
        assert bg.state(1, at(10000)) == (0, 0, 0)  # all of it has left
        assert _allowed(bg, 0, at(0)) == 0 and bg.state(0, at(0)) == (0, 0, 0)  # services apart
        for k in range(10):  # 10 requests a second for 10 s: a steady 20% of 100
            for _ in range(10):
                bg.note_request(2, at(20000 + 1000 * k))
        assert _allowed(bg, 2, at(29500)) == 20
        assert bg.state(2, at(30500)) == (90, 20, 18)  # the oldest second left; the retries are recent
        assert _allowed(bg, 2, at(30500)) == 0

        bg = RetryBudget(2, budget_percent=10, min_retries_per_s=3, window_ms=5000, buckets=5)
        assert _allowed(bg, 0, at(0)) == 15  # the reserve: 3 a second over 5 s
        for _ in range(50):
            bg.note_request(0, at(100))
        assert _allowed(bg, 0, at(100)) == 5
        assert _allowed(bg, 0, at(-1000)) == 0  # a lagging clock: the same window
        assert _allowed(bg, 0, at(100000)) == 15  # long idle: an empty window again
        assert bg.budget_allows(-1, at(0)) and bg.budget_allows(2, at(0))  # no such service: allowed
        bg.note_request(99, at(0))
        bg.note_retry(-1, at(0))


def test_settings_are_checked():
    for kw, field in (
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_ms": -1}, "base_ms"),
        ({"multiplier": 0}, "multiplier"),
        ({"multiplier": 17}, "multiplier"),
        ({"cap_ms": 1 << 29}, "cap_ms"),
        ({"max_total_ms": -1}, "max_total_ms"),
    ):
        assert field in str(raises(ResilienceError, RetryPolicy, **kw))
    for kw, field in (
        ({"max_services": 0}, "max_services"),
        ({"budget_percent": 101}, "budget_percent"),
        ({"min_retries_per_s": 1001}, "min_retries_per_s"),
        ({"buckets": 0}, "buckets"),
        ({"window_ms": 5, "buckets": 10}, "window_ms"),
        ({"window_ms": 600001}, "window_ms"),
    ):
        assert field in str(raises(ResilienceError, RetryBudget, **kw))
    assert "service id" in str(raises(ResilienceError, RetryBudget(2).state, 2, 0))


@micropython.native  # this frame must not come from the heap either
def _exercise(p, bg, t0):
    n = 0
    for i in range(60):
        now = ticks_add(t0, i * 700)
        n += p.delay(i & 15) + p.random() + bound(i, 100, 2, 30000) + delay(i, 10, 3, 5000, i * 12345)
        n += p.next_delay(1 + (i & 3), i * 50, (i % 5) - 1)
        n += may_retry(i & 1, i & 2)
        for sid in range(3):
            bg.note_request(sid, now)
            if bg.budget_allows(sid, now):
                bg.note_retry(sid, now)
                n += 1
    return n


def test_hot_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    for t0 in ((1 << 30) - 20000, ticks_add(0, -20000)):
        want = _exercise(RetryPolicy(max_attempts=4, seed=9), RetryBudget(4, min_retries_per_s=1), t0)
        p = RetryPolicy(max_attempts=4, seed=9)
        bg = RetryBudget(4, min_retries_per_s=1)
        before = mp.mem_total()
        got = _exercise(p, bg, t0)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want
        p = RetryPolicy(max_attempts=4, seed=9)
        bg = RetryBudget(4, min_retries_per_s=1)
        mp.heap_lock()
        try:
            got = _exercise(p, bg, t0)
        finally:
            mp.heap_unlock()
        assert got == want

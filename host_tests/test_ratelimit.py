"""Portable tests for firmware/apigw/ratelimit.py.

The clock is injected: every check() gets its now_ms from the table. Steps are
(now_ms, expected result) or (now_ms, result, remaining, reset_s, retry_after_s). A model of the
limiter (a dict and a list) is run against it over a long pseudo-random sequence. The allocation
test runs on MicroPython only.
"""

from apigw import ratelimit
from apigw.compat import micropython, ticks_add
from apigw.ratelimit import MAX_HEADER_BYTES, RateLimiter
from check import raises, requires_micropython

FULL_MS = 65535000  # ratelimit._FULL_MS: a bucket idle this long is full (and dropped)


def _steps(rl, key, rate, burst, steps):
    for step in steps:
        got = rl.check(key, rate, burst, step[0])
        assert got == step[1], (rate, burst, step, got)
        if len(step) > 2:
            attrs = (rl.remaining, rl.reset_s, rl.retry_after_s)
            assert attrs == step[2:], (rate, burst, step, attrs)
        assert rl.limit == burst
        assert 0 <= rl.remaining <= burst
        assert (rl.retry_after_s >= 1) == (got < 0)


def _drain(rl, key, rate, burst, now):
    for left in range(burst - 1, -1, -1):
        assert rl.check(key, rate, burst, now) == left


# (rate, burst, steps): refill over time, exact remaining counts and rounding of the waits.
REFILL = (
    # burst, then refusal; a refusal takes nothing (the token still comes at 1000 ms)
    (1, 3, ((0, 2, 2, 1, 0), (0, 1, 1, 2, 0), (0, 0, 0, 3, 0), (0, -1000, 0, 3, 1), (1, -999, 0, 3, 1))),
    (1, 2, ((0, 1), (0, 0), (0, -1000), (400, -600), (999, -1), (1000, 0), (1999, -1), (2000, 0, 0, 2, 0))),
    (10, 10, ((0, 9), (0, 8)) + tuple((0, k) for k in range(7, -1, -1)) + ((0, -100), (50, -50), (100, 0), (350, 1))),
    (1000, 5, tuple((0, k) for k in range(4, -1, -1)) + ((0, -1, 0, 1, 1), (1, 0), (3, 1), (3, 0), (3, -1), (9000, 4))),
    (3, 5, tuple((0, k) for k in range(4, -1, -1)) + ((0, -334, 0, 2, 1), (333, -1, 0, 2, 1), (334, 0, 0, 2, 0))),
    (7, 3, ((0, 2, 2, 1, 0), (0, 1), (0, 0, 0, 1, 0), (0, -143, 0, 1, 1))),
    (2, 4, ((0, 3, 3, 1, 0), (0, 2, 2, 1, 0), (0, 1, 1, 2, 0), (0, 0, 0, 2, 0), (1, -499, 0, 2, 1))),
    (1, 10, ((0, 9, 9, 1, 0), (0, 8, 8, 2, 0), (1, 7, 7, 3, 0))),  # room 2999 milli-tokens: 3 s
    (1, 65535, ((0, 65534, 65534, 1, 0), (500, 65533, 65533, 2, 0), (1000, 65533, 65533, 2, 0))),
    (100000, 1, ((0, 0, 0, 1, 0), (0, -1, 0, 1, 1), (1, 0, 0, 1, 0))),  # a wait is at least 1 ms
    # never more than burst after a long idle: clamped before multiplying, expired, ticks aliased
    (
        100000,
        5,
        ((0, 4), (0, 3), (10**7, 4), (10**7, 3), (10**7, 2), (10**7, 1), (10**7, 0), (10**7 + (1 << 29) + 7, 4)),
    ),
    (1, 3, ((0, 2), (0, 1), (0, 0), (FULL_MS - 1, 2, 2, 1, 0), (2 * FULL_MS, 2))),
)


def test_refill_and_rounding():
    for rate, burst, steps in REFILL:
        _steps(RateLimiter(4), 1, rate, burst, steps)


def test_fast_rate_refills_per_millisecond():
    rl = RateLimiter(2)
    _drain(rl, 5, 100000, 100, 0)
    _steps(rl, 5, 100000, 100, ((0, -1), (1, 99), (1, 98), (2, 99)))


def test_out_of_range_rate_and_burst_are_clamped():
    rl = RateLimiter(2)
    assert rl.check(1, 0, 0, 0) == 0 and rl.limit == 1  # rate 1/s, burst 1
    assert rl.check(1, 0, 0, 0) == -1000
    assert rl.check(2, 10**6, 10**6, 0) == 65534 and rl.limit == 65535
    _drain(rl, 3, 10**6, 200, 0)
    assert rl.check(3, 10**6, 200, 1) == 99  # 100 tokens per ms, not 1000


def test_lowered_burst_caps_a_full_bucket():
    rl = RateLimiter(2)
    assert rl.check(9, 1, 10, 0) == 9
    assert rl.check(9, 1, 3, 0) == 2 and rl.limit == 3 and rl.reset_s == 1


def test_now_older_than_the_last_refill_gives_nothing():
    rl = RateLimiter(2)
    _steps(rl, 1, 1, 1, ((1000, 0), (990, -1000), (1500, -500), (2000, 0)))


def test_ticks_wraparound():
    # (1 << 30) - 300: the period of compat's ticks under CPython and of a board's, and where the
    # 30-bit stamps wrap on the unix port; ticks_add(0, -300): just before the runtime's own wrap.
    for base in ((1 << 30) - 300, ticks_add(0, -300)):
        rl = RateLimiter(2)
        steps = ((0, 1), (0, 0), (0, -100), (100, 0), (300, 1), (350, 0), (350, -50), (600, 1))
        _steps(rl, 3, 10, 2, tuple((ticks_add(base, dt), want) for dt, want in steps))
        assert rl.check(3, 10, 2, ticks_add(base, 600 + FULL_MS)) == 1 and rl.bucket_count() == 1


def test_keys_are_independent():
    rl = RateLimiter(8)
    _drain(rl, 1, 1, 2, 0)
    assert rl.check(1, 1, 2, 0) == -1000
    assert rl.check(2, 1, 2, 0) == 1
    assert rl.check((7 << 20) | 1, 1, 2, 0) == 1  # same principal, another policy
    assert rl.check(1 << 29, 1, 2, 0) == 1
    assert rl.bucket_count() == 4


def test_keys_with_the_same_index_slot_do_not_share_a_bucket():
    rl = RateLimiter(4)
    mask = rl._mask
    home = ratelimit._home(100, mask)
    same = [k for k in range(101, 5000) if ratelimit._home(k, mask) == home][:3]
    assert len(same) == 3
    _drain(rl, 100, 1, 2, 0)
    for k in same:
        assert rl.check(k, 1, 2, 0) == 1
    assert rl.check(100, 1, 2, 0) == -1000
    assert rl.forget(same[0]) and rl.check(same[1], 1, 2, 0) == 0 and rl.check(100, 1, 2, 0) == -1000


def test_full_table_evicts_the_least_recently_used():
    rl = RateLimiter(3)
    for key in (1, 2, 3):
        assert rl.check(key, 1, 5, 0) == 4
    assert rl.check(1, 1, 5, 1) == 3  # touching 1 makes 2 the least recently used
    assert rl.check(4, 1, 5, 2) == 4 and rl.bucket_count() == 3
    assert rl.check(1, 1, 5, 3) == 2 and rl.check(3, 1, 5, 3) == 3 and rl.check(4, 1, 5, 3) == 3
    assert rl.check(2, 1, 5, 4) == 4  # 2 was evicted: a new, full bucket (evicts 1)
    assert rl.check(1, 1, 5, 5) == 4  # evicts 3
    assert rl.check(4, 1, 5, 5) == 2 and rl.bucket_count() == 3


def test_forget_clear_and_bucket_count():
    rl = RateLimiter(4)
    assert rl.bucket_count() == 0 and not rl.forget(1)
    for key in (1, 2, 3):
        _drain(rl, key, 1, 2, 0)
    assert rl.bucket_count() == 3
    assert rl.forget(2) and not rl.forget(2) and rl.bucket_count() == 2
    assert rl.check(2, 1, 2, 0) == 1 and rl.check(1, 1, 2, 0) == -1000
    rl.clear()
    assert rl.bucket_count() == 0
    for key in (1, 2, 3, 4, 5):
        assert rl.check(key, 1, 2, 0) == 1
    assert rl.bucket_count() == 4
    assert raises(ValueError, RateLimiter, 0)


def test_idle_buckets_are_dropped_from_the_tail():
    rl = RateLimiter(4)
    for key, now in ((1, 0), (2, 10), (3, 20)):
        rl.check(key, 1, 2, now)
    assert rl.check(4, 1, 2, FULL_MS + 10) == 1 and rl.bucket_count() == 2  # 1 and 2 were full
    assert rl.check(3, 1, 2, FULL_MS + 10) == 1  # 3 refilled, not new: the same answer


def _model_check(model, order, cap_buckets, key, rate, burst, now):
    cap = burst * 1000
    if key in model:
        milli, stamp = model[key]
        milli = min(cap, min(milli, cap) + (now - stamp) * rate)
        order.remove(key)
    else:
        if len(order) == cap_buckets:
            del model[order.pop()]
        milli = cap
    order.insert(0, key)
    if milli >= 1000:
        milli -= 1000
        result = milli // 1000
    else:
        result = -((1000 - milli + rate - 1) // rate)
    model[key] = (milli, now)
    return result


def test_agrees_with_a_model_over_a_long_sequence():
    rl = RateLimiter(8)
    model = {}
    order = []
    x = 12345
    now = 0
    for step in range(3000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        key = (x >> 8) % 24
        if key >= 16:
            key = (key << 24) | 3  # large keys too
        now += (x >> 4) % 97
        if (x >> 16) % 13 == 0:
            assert rl.forget(key) == (key in model), step
            if key in model:
                del model[key]
                order.remove(key)
        else:
            rate = 1 + (x >> 12) % 40
            want = _model_check(model, order, 8, key, rate, 3, now)
            assert rl.check(key, rate, 3, now) == want, (step, key)
        assert rl.bucket_count() == len(order), step


def _headers(rl, pos=5):
    dst = bytearray(b"#" * (pos + MAX_HEADER_BYTES + 8))
    end = rl.write_headers(dst, pos)
    assert dst[:pos] == b"#" * pos and dst[end:] == b"#" * (len(dst) - end)
    return bytes(dst[pos:end])


def test_write_headers_allowed_and_refused():
    rl = RateLimiter(2)
    rl.check(1, 10, 20, 0)
    assert _headers(rl) == b"RateLimit-Limit: 20\r\nRateLimit-Remaining: 19\r\nRateLimit-Reset: 1\r\n"
    _drain(rl, 2, 1, 2, 0)
    assert rl.check(2, 1, 2, 0) == -1000
    want = b"RateLimit-Limit: 2\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 2\r\nRetry-After: 1\r\n"
    assert _headers(rl, 0) == want


def test_write_headers_fits_max_header_bytes():
    rl = RateLimiter(1)
    _drain(rl, 1, 1, 65535, 0)
    assert rl.check(1, 1, 65535, 0) == -1000
    assert (rl.limit, rl.remaining, rl.reset_s, rl.retry_after_s) == (65535, 0, 65535, 1)
    assert len(_headers(rl)) <= MAX_HEADER_BYTES
    rl.remaining = rl.reset_s = rl.retry_after_s = 65535  # every number at its widest
    assert len(_headers(rl)) == MAX_HEADER_BYTES


@micropython.native  # this frame must not come from the heap either
def _exercise(rl, dst, t0):
    n = 0
    for key in (1, 2, 1, 3, 4, 5, 6, 1, 1, 1, 1, 7):  # new keys, hits, refusals, evictions (4 buckets)
        n += rl.check(key, 2, 3, t0)
        n += rl.write_headers(dst, 0)
    rl.forget(5)
    n += rl.check(8, 100000, 65535, ticks_add(t0, 700))
    n += rl.check(9, 1, 1, ticks_add(t0, 2 * FULL_MS))  # idle buckets dropped from the tail
    n += rl.write_headers(dst, n & 7)
    return n


def test_check_and_write_headers_allocate_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    rl = RateLimiter(4)
    dst = bytearray(MAX_HEADER_BYTES + 8)
    t0 = ticks_add(0, -300)
    want = _exercise(rl, dst, t0)
    rl.clear()
    before = mp.mem_total()
    assert _exercise(rl, dst, t0) == want
    assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
    rl.clear()
    mp.heap_lock()
    try:
        got = _exercise(rl, dst, t0)
    finally:
        mp.heap_unlock()
    assert got == want

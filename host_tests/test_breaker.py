"""Portable tests for firmware/apigw/breaker.py.

The state machine is a table of cases: settings, then steps of (ms after the base tick, event,
expected result, expected state after it). Every case runs at three bases: 0, just before 2**30
(the board's and compat's ticks period, where the stored stamps wrap) and just before the
runtime's own wrap (2**62 on the unix port). The allocation test runs on MicroPython only.
"""

from apigw import breaker
from apigw.breaker import SUCCESS, BreakerTable, CircuitBreakerConfig, ResilienceError, classify
from apigw.breaker import CircuitState as S
from apigw.breaker import FailureReason as R
from apigw.compat import micropython, ticks_add
from check import raises, requires_micropython

BASES = (0, (1 << 30) - 300, ticks_add(0, -300))
C = S.CLOSED
O = S.OPEN
H = S.HALF_OPEN
Y = True
N = False

# Settings every case starts from; a case overrides some.
BASE = dict(
    failure_threshold=3,
    failure_rate_threshold=0,
    window_size=10,
    minimum_calls=5,
    reset_timeout=1000,
    half_open_calls=2,
    success_threshold=2,
    timeout_duration=500,
)
# events: A admit, ok (10 ms), slow (150 ms success), to / ce / 5xx / 429 failures (10 ms), rel
# release, try attempt_reset, ra retry_after_ms, fo force_open, fc force_closed, reset, open is_open.
# expected result: what the call returns (None: not checked).
TRIP = ((0, "to", O, O),)  # with failure_threshold=1
CASES = (
    # consecutive failures; a success starts the count again
    ({}, ((0, "to", C, C), (0, "ce", C, C), (0, "ok", C, C), (0, "5xx", C, C), (0, "to", C, C), (0, "ce", O, O))),
    ({"failure_threshold": 0}, tuple((0, "to", C, C) for _ in range(25))),  # every rule off
    # failure rate: nothing below minimum_calls, then rate >= threshold over the window
    (
        {"failure_threshold": 0, "failure_rate_threshold": 50},
        ((0, "to", C, C), (0, "to", C, C), (0, "to", C, C), (0, "to", C, C), (0, "ok", O, O)),
    ),
    (
        {"failure_threshold": 0, "failure_rate_threshold": 50, "window_size": 4, "minimum_calls": 4},
        ((0, "ok", C, C), (0, "ok", C, C), (0, "ok", C, C), (0, "to", C, C))  # 25%
        + ((0, "ok", C, C), (0, "5xx", O, O)),  # oldest ok left: ok ok to 5xx = 50%
    ),
    (
        {"failure_threshold": 0, "failure_rate_threshold": 75, "window_size": 4, "minimum_calls": 4},
        ((0, "to", C, C), (0, "to", C, C), (0, "ok", C, C), (0, "ok", C, C), (0, "ok", C, C))  # 50%, 25%
        + ((0, "to", C, C), (0, "to", C, C), (0, "to", O, O)),  # 25%, 50%, 75%
    ),
    # slow calls: a failure only with slow_is_failure; or their own rate
    ({"slow_call_ms": 100, "slow_is_failure": True, "failure_threshold": 2}, ((0, "slow", C, C), (0, "slow", O, O))),
    ({"slow_call_ms": 100, "slow_call_rate_threshold": 0, "failure_threshold": 2}, ((0, "slow", C, C),) * 6),
    ({"slow_call_ms": 0, "slow_call_rate_threshold": 1, "minimum_calls": 1}, ((0, "slow", C, C),) * 6),
    (
        {"slow_call_ms": 100, "slow_call_rate_threshold": 60, "window_size": 5, "failure_threshold": 0},
        ((0, "slow", C, C), (0, "slow", C, C), (0, "ok", C, C), (0, "slow", C, C), (0, "slow", O, O)),
    ),
    # which reasons count: 429 not by default
    ({"failure_threshold": 2}, ((0, "429", C, C), (0, "429", C, C), (0, "429", C, C), (0, "to", C, C))),
    ({"failure_threshold": 2, "count_mask": 15}, ((0, "429", C, C), (0, "429", O, O))),
    ({"failure_threshold": 1, "count_mask": 5}, ((0, "ce", C, C), (0, "5xx", O, O))),
    # OPEN until reset_timeout, then at most half_open_calls probes; success_threshold closes it
    (
        {"failure_threshold": 1},
        TRIP
        + ((999, "open", Y, O), (999, "A", N, O), (999, "ra", 1, O), (1000, "open", N, O), (1000, "A", Y, H))
        + ((1001, "A", Y, H), (1002, "A", N, H), (1002, "open", Y, H), (1010, "ok", H, H), (1011, "A", N, H))
        + ((1020, "ok", C, C), (1021, "A", Y, C), (1021, "ra", 0, C)),
    ),
    # a probe failure opens it again, for another reset_timeout from then
    (
        {"failure_threshold": 1},
        TRIP + ((1000, "A", Y, H), (1010, "to", O, O), (2009, "A", N, O), (2010, "A", Y, H), (2011, "ok", H, H)),
    ),
    (
        {"failure_threshold": 1, "half_open_calls": 3},
        TRIP
        + ((1000, "A", Y, H), (1000, "A", Y, H), (1000, "A", Y, H), (1000, "A", N, H), (1000, "ok", H, H))
        + ((1001, "ok", C, C),),  # 2 of 3 probes suffice
    ),
    # a probe whose outcome does not count, or that is released, gives its place back
    (
        {"failure_threshold": 1, "half_open_calls": 1, "success_threshold": 1},
        TRIP
        + ((1000, "A", Y, H), (1000, "A", N, H), (1001, "429", H, H), (1002, "A", Y, H), (1003, "A", N, H))
        + ((1004, "rel", None, H), (1005, "A", Y, H), (1006, "ok", C, C)),
    ),
    # outcomes with no probe out count for nothing: while OPEN, or before any probe in HALF_OPEN
    (
        {"failure_threshold": 1, "success_threshold": 1, "half_open_calls": 1},
        TRIP
        + ((10, "ok", O, O), (20, "to", O, O), (1000, "try", Y, H), (1001, "ok", H, H), (1002, "to", H, H))
        + ((1003, "A", Y, H), (1004, "ok", C, C)),
    ),
    # lost probes: none reported within timeout_duration, the next admit() reopens it
    (
        {"failure_threshold": 1, "half_open_calls": 1, "success_threshold": 1},
        TRIP
        + ((1000, "A", Y, H), (1400, "A", N, H), (1400, "ra", 100, H), (1500, "ra", 1000, H))
        + ((1500, "A", N, O), (1500, "ra", 1000, O), (2499, "A", N, O), (2500, "A", Y, H)),
    ),
    # attempt_reset() only once reset_timeout has passed
    (
        {"failure_threshold": 1},
        TRIP + ((999, "try", N, O), (1000, "try", Y, H), (1000, "try", N, H), (1000, "A", Y, H)),
    ),
    # retry_after_ms() counts down; a now that lags the stamp counts as no time passed
    (
        {"failure_threshold": 1},
        ((100, "to", O, O), (100, "ra", 1000, O), (350, "ra", 750, O), (1099, "ra", 1, O), (1100, "ra", 0, O))
        + ((50, "ra", 1000, O), (50, "A", N, O), (-1000, "open", Y, O), (1100, "A", Y, H)),
    ),
    # force_open() holds it open, force_closed() closed, until reset()
    (
        {"failure_threshold": 1},
        ((0, "fo", None, O), (100000, "A", N, O), (100000, "ra", 1000, O), (100000, "try", N, O), (0, "to", O, O))
        + ((0, "reset", None, C), (0, "A", Y, C), (0, "to", O, O), (0, "fo", None, O), (5000, "A", N, O)),
    ),
    (
        {"failure_threshold": 1},
        ((0, "fc", None, C), (0, "to", C, C), (0, "to", C, C), (0, "reset", None, C), (0, "to", O, O))
        + ((0, "fc", None, C), (0, "A", Y, C), (0, "reset", None, C), (0, "5xx", O, O)),
    ),
    # closing empties the window: the rate starts again from nothing
    (
        {"failure_threshold": 0, "failure_rate_threshold": 50, "window_size": 4, "minimum_calls": 4},
        ((0, "to", C, C), (0, "to", C, C), (0, "to", C, C), (0, "to", O, O), (1000, "A", Y, H), (1000, "A", Y, H))
        + ((1000, "ok", H, H), (1000, "ok", C, C), (1000, "to", C, C), (1000, "to", C, C), (1000, "to", C, C))
        + ((1000, "ok", O, O),),  # 3 of 4 failed: 75%
    ),
)
FAILURES = {"to": R.TIMEOUT, "ce": R.CONNECTION_ERROR, "5xx": R.RESPONSE_ERROR, "429": R.RATE_LIMITED}


def _step(br, bid, now, ev):
    if ev == "A":
        return br.admit(bid, now)
    if ev == "ok":
        return br.record(bid, SUCCESS, 10, now)
    if ev == "slow":
        return br.record(bid, SUCCESS, 150, now)
    if ev in FAILURES:
        return br.record(bid, FAILURES[ev], 10, now)
    if ev == "rel":
        return br.release(bid)
    if ev == "try":
        return br.attempt_reset(bid, now)
    if ev == "ra":
        return br.retry_after_ms(bid, now)
    if ev == "fo":
        return br.force_open(bid, now)
    if ev == "fc":
        return br.force_closed(bid)
    if ev == "reset":
        return br.reset(bid)
    if ev == "open":
        return br.is_open(bid, now)
    raise ValueError(ev)


def test_state_machine_cases():
    for base in BASES:
        for k, (settings, steps) in enumerate(CASES):
            kw = dict(BASE)
            kw.update(settings)
            br = BreakerTable(4, 20)
            br.create("other")  # ids other than 0, and a neighbour that must not change
            bid = br.create("svc", CircuitBreakerConfig(**kw))
            for n, (dt, ev, want, state) in enumerate(steps):
                got = _step(br, bid, ticks_add(base, dt), ev)
                where = (base, k, n, dt, ev, got, want, S.NAMES[br.state(bid)], S.NAMES[state])
                assert want is None or got == want, where
                assert br.state(bid) == state, where
            assert br.state(0) == C and br.metrics(0, 0)["calls"] == 0


def test_classify():
    cases = ((200, SUCCESS), (101, SUCCESS), (304, SUCCESS), (400, SUCCESS), (404, SUCCESS), (499, SUCCESS))
    cases += ((429, R.RATE_LIMITED), (500, R.RESPONSE_ERROR), (503, R.RESPONSE_ERROR), (599, R.RESPONSE_ERROR))
    cases += ((0, R.RESPONSE_ERROR), (99, R.RESPONSE_ERROR), (600, R.RESPONSE_ERROR), (-1, R.RESPONSE_ERROR))
    for status, want in cases:
        assert classify(status) == want, (status, classify(status), want)


def test_failure_rate_metrics_and_view():
    br = BreakerTable(2, 20)
    cfg = CircuitBreakerConfig(failure_threshold=0, window_size=8, minimum_calls=8, slow_call_ms=100)
    bid = br.create("api", cfg)
    assert br.failure_rate(bid) == 0 and br.slow_call_rate(bid) == 0  # an empty window
    for outcome, took in ((SUCCESS, 10), (R.TIMEOUT, 600), (SUCCESS, 120), (R.RATE_LIMITED, 5)):
        br.record(bid, outcome, took, 0)
    assert br.failure_rate(bid) == 33 and br.slow_call_rate(bid) == 66  # 429: metrics only
    for _ in range(10):
        br.record(bid, SUCCESS, 1, 0)
    assert br.failure_rate(bid) == 0 and br.state(bid) == C
    m = br.metrics(bid, 0)
    want = {"calls": 14, "successes": 12, "failures": 2, "timeout": 1, "rate_limited": 1, "slow_calls": 2}
    want.update({"rejected": 0, "times_opened": 0, "transitions": 0, "window_calls": 8, "state": "closed"})
    want.update({"connection_error": 0, "response_error": 0, "name": "api", "forced": False})
    for key in want:
        assert m[key] == want[key], (key, m[key], want[key])
    br.force_open(bid, 7)
    assert not br.admit(bid, 8) and not br.admit(bid, 9)
    m = br.metrics(bid, 8)
    assert (m["state"], m["forced"], m["rejected"], m["times_opened"], m["retry_after_ms"]) == (
        "open",
        True,
        2,
        1,
        30000,
    )
    v = br.get(bid)
    assert (v.id, v.name, v.state, v.config, v.opened_at, v.forced, v.window_calls) == (bid, "api", O, cfg, 7, True, 8)
    assert br.state_name(bid) == "open" and br.find("api") == bid and br.find("nope") == -1
    assert br.get(br.create("b")).opened_at is None and br.call_timeout_ms(bid) == 10000


def test_reconfigure_keeps_state_and_empties_a_resized_window():
    br = BreakerTable(1, 50)
    bid = br.create("a", CircuitBreakerConfig(failure_threshold=0, window_size=10, minimum_calls=10))
    for _ in range(5):
        br.record(bid, R.TIMEOUT, 1, 0)
    br.configure(bid, CircuitBreakerConfig(failure_threshold=0, window_size=10, minimum_calls=5))
    assert br.state(bid) == C and br.failure_rate(bid) == 100  # same window, kept
    assert br.record(bid, R.TIMEOUT, 1, 0) == O  # judged on all 6
    br.reset(bid)
    br.configure(bid, CircuitBreakerConfig(failure_threshold=0, window_size=10, minimum_calls=10))
    for _ in range(5):
        br.record(bid, R.TIMEOUT, 1, 0)
    br.configure(bid, CircuitBreakerConfig(failure_threshold=0, window_size=50, minimum_calls=5))
    assert br.metrics(bid, 0)["window_calls"] == 0 and br.state(bid) == C
    for k in range(200):  # the full ring of 50 wraps several times; counts stay exact
        br.record(bid, R.TIMEOUT if k % 5 == 0 else SUCCESS, 1, 0)
        assert br.failure_rate(bid) == (20 if k >= 49 else br.failure_rate(bid))
    assert br.metrics(bid, 0)["window_calls"] == 50 and br.state(bid) == C


def test_ids_not_in_use_admit_everything():
    br = BreakerTable(2)
    for bid in (-1, 0, 1, 99):
        assert br.admit(bid, 0) and br.record(bid, R.TIMEOUT, 1, 0) == -1 and not br.is_open(bid, 0)
        assert br.retry_after_ms(bid, 0) == 0 and br.state(bid) == C and br.failure_rate(bid) == 0
        br.release(bid)
        for f in (br.reset, br.force_closed, br.get, br.name, br.call_timeout_ms):
            assert "no breaker" in str(raises(ResilienceError, f, bid))
        assert raises(ResilienceError, br.attempt_reset, bid, 0) and raises(ResilienceError, br.metrics, bid, 0)


def test_settings_and_tables_are_checked():
    br = BreakerTable(2, 20)
    bad = (
        ("failure_threshold", -1),
        ("failure_threshold", 65536),
        ("half_open_calls", 0),
        ("success_threshold", 4),  # above half_open_calls (3)
        ("timeout_duration", 0),
        ("reset_timeout", 1 << 29),
        ("failure_rate_threshold", 101),
        ("window_size", 21),  # above the table's max_window
        ("minimum_calls", 21),  # above window_size (20)
        ("slow_call_ms", -1),
        ("slow_call_rate_threshold", -1),
        ("count_mask", 16),
        ("window_size", "20"),
    )
    for name, value in bad:
        kw = {name: value}
        if name == "minimum_calls":
            kw["window_size"] = 20
        e = raises(ResilienceError, br.create, "x", CircuitBreakerConfig(**kw))
        assert name in str(e), (name, str(e))
    assert "no setting" in str(raises(ResilienceError, CircuitBreakerConfig, window=5))
    assert isinstance(raises(ValueError, br.create, "x", CircuitBreakerConfig(window_size=0)), ResilienceError)
    br.create("a", CircuitBreakerConfig(reset_timeout=(1 << 29) - 1, window_size=20, minimum_calls=20))
    assert "taken" in str(raises(ResilienceError, br.create, "a"))
    br.create("b")
    assert "table full" in str(raises(ResilienceError, br.create, "c"))
    assert br.count == 2
    assert raises(ResilienceError, BreakerTable, 0) and raises(ResilienceError, BreakerTable, 4, 256)


def test_counters_wrap_below_2_30():
    from array import array

    c = array("i", [(1 << 30) - 2, 5])
    breaker._bump(c, 0)
    assert c[0] == (1 << 30) - 1
    breaker._bump(c, 0)
    assert c[0] == 0 and c[1] == 5


def test_ticks_since():
    for base in BASES:
        for dt in (0, 1, 999, (1 << 29) - 1, (1 << 30) - (1 << 20) - 1):
            assert breaker.ticks_since(ticks_add(base, dt), base) == dt
            assert breaker.ticks_since(ticks_add(base, dt), base & 0x3FFFFFFF) == dt  # a stored stamp
        for dt in (1, 1000, (1 << 20) - 1):
            assert breaker.ticks_since(ticks_add(base, -dt), base) == 0  # now lags the stamp


@micropython.native  # this frame must not come from the heap either
def _exercise(br, t0):
    n = 0
    for i in range(40):
        now = ticks_add(t0, i * 300)
        for bid in range(4):
            if br.admit(bid, now):
                n += br.record(bid, -1 if (i + bid) % 3 == 0 else (i + bid) & 3, (i * 37) & 255, ticks_add(now, 5))
            else:
                n += br.retry_after_ms(bid, now)
            n += br.is_open(bid, now) + br.state(bid) + br.failure_rate(bid)
            if i % 7 == bid:
                br.release(bid)
        n += br.admit(-1, now) + br.record(-1, 0, 1, now)
    return n


def _setup():
    br = BreakerTable(4, 20)
    br.create("a", CircuitBreakerConfig(failure_threshold=2, reset_timeout=700, half_open_calls=2, success_threshold=1))
    br.create("b", CircuitBreakerConfig(failure_rate_threshold=40, window_size=5, minimum_calls=3, slow_call_ms=100))
    br.create("c", CircuitBreakerConfig(slow_call_ms=50, slow_is_failure=True, count_mask=15, timeout_duration=100))
    br.create("d", CircuitBreakerConfig(failure_threshold=0, slow_call_ms=200, slow_call_rate_threshold=50))
    return br


def test_hot_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    for t0 in ((1 << 30) - 5000, ticks_add(0, -5000)):
        want = _exercise(_setup(), t0)
        br = _setup()
        assert br.metrics(0, 0)["transitions"] == 0
        before = mp.mem_total()
        got = _exercise(br, t0)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want and br.metrics(0, 0)["times_opened"] > 0 and br.metrics(1, 0)["times_opened"] > 0
        br = _setup()
        mp.heap_lock()
        try:
            got = _exercise(br, t0)
        finally:
            mp.heap_unlock()
        assert got == want

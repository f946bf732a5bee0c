"""Portable tests for firmware/apigw/health.py.

The clock is injected. Active checks are tables of (ok, elapsed_ms, expected health) steps;
timing and ejection tests build their times with ticks_add() near both wraps (2**30, the board's
and compat's period and where the stored stamps wrap, and the runtime's own). The allocation test
runs on MicroPython only.
"""

from apigw.compat import micropython, ticks_add
from apigw.health import DEGRADED, HEALTHY, UNHEALTHY, UNKNOWN, HealthChecker
from check import raises, requires_micropython

BASES = (0, (1 << 30) - 300, ticks_add(0, -300))
Y = True
N = False

# (configure kwargs, steps of (ok, elapsed_ms, health after)); every case starts UNKNOWN.
ACTIVE = (
    ({}, ((Y, 10, UNKNOWN), (Y, 10, HEALTHY), (Y, 10, HEALTHY))),  # rise 2
    ({}, ((N, 10, UNKNOWN), (N, 10, UNKNOWN), (N, 10, UNHEALTHY), (Y, 10, UNHEALTHY), (Y, 10, HEALTHY))),
    ({}, ((Y, 10, UNKNOWN), (Y, 10, HEALTHY), (N, 10, HEALTHY), (N, 10, HEALTHY), (N, 10, UNHEALTHY))),  # fall 3
    # a success between failures restarts the count, and a failure restarts the rise
    ({}, ((Y, 1, UNKNOWN), (Y, 1, HEALTHY), (N, 1, HEALTHY), (N, 1, HEALTHY), (Y, 1, HEALTHY), (N, 1, HEALTHY))),
    ({}, ((Y, 1, UNKNOWN), (N, 1, UNKNOWN), (Y, 1, UNKNOWN), (Y, 1, HEALTHY))),
    ({"rise": 1, "fall": 1}, ((Y, 1, HEALTHY), (N, 1, UNHEALTHY), (Y, 1, HEALTHY))),
    ({"rise": 3}, ((Y, 1, UNKNOWN), (Y, 1, UNKNOWN), (Y, 1, HEALTHY))),
    ({"fall": 5}, tuple((N, 1, UNKNOWN) for _ in range(4)) + ((N, 1, UNHEALTHY),)),
    # slow (> slow_ms, 500) is DEGRADED, fast again is HEALTHY; exactly slow_ms is fast
    ({}, ((Y, 600, UNKNOWN), (Y, 600, DEGRADED), (Y, 500, HEALTHY), (Y, 501, DEGRADED), (Y, 600, DEGRADED))),
    ({}, ((Y, 1, UNKNOWN), (Y, 1, HEALTHY), (Y, 900, DEGRADED), (Y, 2, HEALTHY))),
    ({}, ((Y, 1, UNKNOWN), (Y, 700, DEGRADED), (N, 1, DEGRADED), (N, 1, DEGRADED), (N, 1, UNHEALTHY))),
    ({}, ((N, 1, UNKNOWN), (N, 1, UNKNOWN), (N, 1, UNHEALTHY), (Y, 800, UNHEALTHY), (Y, 800, DEGRADED))),
    # an answer later than timeout_ms (1000) is a failure; exactly timeout_ms is not
    ({}, ((Y, 1001, UNKNOWN), (Y, 1001, UNKNOWN), (Y, 1001, UNHEALTHY), (Y, 1000, UNHEALTHY), (Y, 1000, DEGRADED))),
    ({"slow_ms": 0}, ((Y, 0, UNKNOWN), (Y, 0, HEALTHY), (Y, 900, HEALTHY))),  # 0: never slow
)


def test_rise_fall_and_degraded():
    for kw, steps in ACTIVE:
        hc = HealthChecker(4)
        hc.configure(2, **kw)
        assert hc.health(2) == UNKNOWN
        for i, (ok, elapsed, want) in enumerate(steps):
            hc.probe_started(2, i * 5000)
            got = hc.probe_result(2, ok, elapsed, i * 5000 + elapsed)
            assert got == want and hc.health(2) == want, (kw, i, steps[i], got)
        assert hc.health(1) == UNKNOWN  # others untouched


def test_slow_ms_zero_turns_degraded_off():
    hc = HealthChecker(2)
    hc.configure(0, slow_ms=0)
    hc.configure(1, slow_ms=100)
    for iid in (0, 1):
        for _ in range(2):
            hc.probe_result(iid, Y, 900, 0)
    assert hc.health(0) == HEALTHY and hc.health(1) == DEGRADED
    hc.probe_result(0, Y, 1000, 0)  # at timeout_ms: still a pass, never slow
    assert hc.health(0) == HEALTHY


def test_due_and_probe_timing_across_the_wrap():
    for base in BASES:
        hc = HealthChecker(2)
        hc.configure(1, interval_ms=5000, timeout_ms=1000)

        def at(dt):
            return ticks_add(base, dt)

        assert hc.due(1, at(0))  # never probed
        hc.probe_started(1, at(0))
        # in flight: held back until both the interval and the timeout have passed
        assert not hc.due(1, at(0)) and not hc.due(1, at(4999)) and hc.due(1, at(5000))
        hc.probe_result(1, True, 300, at(300))
        assert not hc.due(1, at(4999)) and hc.due(1, at(5000)) and hc.due(1, at(400000))
        assert not hc.due(1, at(-1))  # now before the last probe
        st = hc.state(1)
        assert st["last_probe_ms"] == at(0) & 0x3FFFFFFF and st["last_elapsed_ms"] == 300
        assert not st["probing"]
        hc.probe_started(1, at(5000))
        assert hc.state(1)["probing"]
        assert not hc.due(1, at(9999)) and hc.due(1, at(10000))

        # timeout longer than the interval: a probe in flight holds due() until its timeout
        hc.configure(0, interval_ms=1000, timeout_ms=3000)
        hc.probe_started(0, at(100))
        assert not hc.due(0, at(1100)) and not hc.due(0, at(3099)) and hc.due(0, at(3100))
        hc.probe_result(0, False, 3000, at(3100))
        assert not hc.due(0, at(1099)) and hc.due(0, at(1100))  # interval counts from the start

        # a result without probe_started() counts as a probe started at now
        hc.forget(0)
        hc.probe_result(0, True, 5, at(20))
        assert not hc.due(0, at(5019)) and hc.due(0, at(5020))


def _fail(hc, iid, n, now):
    """n failures; the number of them that ejected."""
    k = 0
    for _ in range(n):
        k += hc.record(iid, False, now)
    return k


def test_ejection_after_consecutive_failures():
    for base in BASES:
        hc = HealthChecker(4)
        t0 = ticks_add(base, 1000)
        assert _fail(hc, 1, 4, t0) == 0 and not hc.ejected(1, t0)
        assert not hc.record(1, True, t0)  # a success resets the count
        assert _fail(hc, 1, 4, t0) == 0 and not hc.ejected(1, t0)
        assert hc.record(1, False, t0) and hc.ejected(1, t0)
        st = hc.state(1)
        assert st["times_ejected"] == 1 and st["ejected_until"] == ticks_add(t0, 30000) & 0x3FFFFFFF
        assert _fail(hc, 1, 10, ticks_add(t0, 100)) == 0  # ignored while ejected
        assert hc.ejected(1, ticks_add(t0, 29999)) and not hc.ejected(1, ticks_add(t0, 30000))
        assert not hc.ejected(1, ticks_add(t0, 29999))  # cleared once over
        assert hc.state(1)["ejected_until"] is None
        assert hc.health(1) == UNKNOWN  # active health is separate
        assert not hc.ejected(0, t0) and not hc.ejected(2, t0)


def test_ejection_time_grows_and_is_capped():
    hc = HealthChecker(2)
    hc.set_outlier(consecutive_errors=2, base_ejection_ms=1000, max_ejection_factor=3)
    now = ticks_add(0, -10000)
    for times in (1, 2, 3, 3, 3):
        assert _fail(hc, 0, 2, now) == 1
        assert hc.state(0)["times_ejected"] == times
        end = ticks_add(now, 1000 * times)
        assert hc.ejected(0, ticks_add(end, -1)) and not hc.ejected(0, end)
        now = ticks_add(end, 500)


def test_ejection_count_decays_after_a_quiet_period():
    hc = HealthChecker(2)
    hc.set_outlier(consecutive_errors=1, base_ejection_ms=1000, max_ejection_factor=4)
    assert hc.decay_ms == 4000
    now = (1 << 30) - 5000
    for _ in range(3):
        assert hc.record(0, False, now)
        now = ticks_add(now, 4000)  # each ejection is over after at most 3000 ms
    assert hc.state(0)["times_ejected"] == 3
    end = hc.state(0)["ejected_until"]
    assert not hc.record(0, True, ticks_add(end, 3999)) and hc.state(0)["times_ejected"] == 3
    assert not hc.record(0, True, ticks_add(end, 4000)) and hc.state(0)["times_ejected"] == 2
    assert not hc.record(0, True, ticks_add(end, 7999)) and hc.state(0)["times_ejected"] == 2
    assert hc.record(0, False, ticks_add(end, 8000))  # one more decay step, then this ejection
    assert hc.state(0)["times_ejected"] == 2
    end = hc.state(0)["ejected_until"]
    assert hc.record(0, False, ticks_add(end, 100000)) and hc.state(0)["times_ejected"] == 1


def test_max_ejected_percent_per_pool():
    hc = HealthChecker(8)
    hc.set_outlier(consecutive_errors=1, base_ejection_ms=1000)
    for iid in (0, 1, 2, 3):
        hc.set_pool(iid, 0)
    hc.set_pool(4, 1)  # a pool of one is never ejected at 50%
    assert hc.record(0, False, 0) and hc.record(1, False, 0)
    assert not hc.record(2, False, 0) and not hc.ejected(2, 0)
    assert not hc.record(4, False, 0)
    assert hc.record(5, False, 0)  # no pool: no cap
    assert hc.record(2, False, 1000)  # 0 and 1 are back: room again (the count was kept)
    hc.set_outlier(consecutive_errors=1, base_ejection_ms=1000, max_ejected_percent=100)
    assert hc.record(4, False, 2000)
    hc.set_pool(4, -1)
    assert hc.state(4)["pool"] == -1 and hc.state(0)["pool"] == 0


def test_forget():
    hc = HealthChecker(2)
    hc.configure(1, interval_ms=100, rise=1, fall=1)
    hc.probe_started(1, 10)
    hc.probe_result(1, True, 900, 20)
    assert hc.health(1) == DEGRADED
    hc.set_outlier(consecutive_errors=1)
    assert hc.record(1, False, 20)
    hc.set_pool(1, 3)
    hc.forget(1)
    want = {
        "health": UNKNOWN,
        "successes": 0,
        "failures": 0,
        "errors": 0,
        "ejected_until": None,
        "times_ejected": 0,
        "last_probe_ms": None,
        "last_elapsed_ms": 0,
        "probing": False,
        "pool": -1,
    }
    assert hc.state(1) == want
    assert not hc.ejected(1, 20) and hc.due(1, 20)
    hc.probe_started(1, 20)
    assert not hc.due(1, 4999 + 20) and hc.due(1, 5020)  # default interval again
    assert hc.probe_result(1, True, 1, 30) == UNKNOWN  # default rise again


def test_settings_are_checked():
    hc = HealthChecker(2)
    assert raises(ValueError, HealthChecker, 0)
    assert raises(ValueError, hc.configure, 0, interval_ms=0)
    assert raises(ValueError, hc.configure, 0, timeout_ms=1 << 29)
    assert raises(ValueError, hc.configure, 0, rise=0)
    assert raises(ValueError, hc.configure, 0, fall=256)
    assert raises(ValueError, hc.set_outlier, consecutive_errors=0)
    assert raises(ValueError, hc.set_outlier, base_ejection_ms=1 << 27, max_ejection_factor=4)
    assert raises(ValueError, hc.set_outlier, max_ejected_percent=101)
    assert raises(ValueError, hc.set_pool, 0, 255)
    hc.set_outlier(base_ejection_ms=(1 << 27) - 1, max_ejection_factor=4)  # the longest: < 2**29


@micropython.native  # this frame must not come from the heap either
def _exercise(hc, t0):
    n = 0
    for i in range(12):
        now = ticks_add(t0, i * 5000)
        for iid in range(4):
            if hc.due(iid, now):
                hc.probe_started(iid, now)
                n += hc.probe_result(iid, (i + iid) % 5 > 2, (iid * 400) & 1023, ticks_add(now, 10))
            for k in range(6):
                n += hc.record(iid, (i * k + iid) % 7 != 0 and iid & 1 == 0, now)
                n += hc.ejected(iid, ticks_add(now, k))
            n += hc.health(iid)
    hc.forget(2)
    return n


def _setup(hc):
    for iid in range(hc.max_instances):
        hc.forget(iid)
    hc.set_outlier(consecutive_errors=2, base_ejection_ms=7000, max_ejection_factor=3)
    hc.decay_ms = 9000
    for iid in range(6):
        hc.set_pool(iid, iid & 1)
    return hc


def test_hot_paths_allocate_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    for t0 in ((1 << 30) - 20000, ticks_add(0, -20000)):
        hc = _setup(HealthChecker(8))
        want = _exercise(hc, t0)
        assert hc.state(3)["times_ejected"] + hc.state(1)["times_ejected"] >= 2
        _setup(hc)
        before = mp.mem_total()
        got = _exercise(hc, t0)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want
        _setup(hc)
        mp.heap_lock()
        try:
            got = _exercise(hc, t0)
        finally:
            mp.heap_unlock()
        assert got == want

"""Portable tests for firmware/apigw/monitor.py.

Latency sets come from a deterministic generator (uniform, long-tailed, bimodal) and are compared
with exact nearest-rank percentiles computed here: over the ring the monitor must be exact, from a
service's histogram within loghist.MAX_REL_ERROR. The throughput window runs on an injected clock at
three bases: 0, just before 2**30 (the board's ticks period) and just before the runtime's own
wrap. The allocation tests run on MicroPython only.
"""

import math
from array import array

from apigw import loghist
from apigw import monitor as mon
from apigw.compat import micropython, ticks_add
from apigw.monitor import ApiMonitor, ErrorType, LatencyBucket, MonitorError
from check import lcg, raises, requires_micropython

BASES = (0, (1 << 30) - 2500, ticks_add(0, -2500))
PERCENTS = (0, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)
MASK = (1 << 30) - 1


def _uniform(n, seed=1):
    rnd = lcg(seed)
    return [1000 + rnd() % 49000 for _ in range(n)]  # 1 .. 50 ms


def _long_tailed(n, seed=2):
    """Log-normal-ish: exp of a sum of four uniforms (median 3 ms, tail to seconds)."""
    rnd = lcg(seed)
    out = []
    for _ in range(n):
        z = (rnd() + rnd() + rnd() + rnd()) / (1 << 31) - 2.0  # about normal, sd 0.58
        v = int(3000 * math.exp(2.2 * z))
        out.append(65 if v < 65 else v)
    return out


def _bimodal(n, seed=3):
    """70 % around 2 ms (a cache), 30 % around 200 ms (the upstream)."""
    rnd = lcg(seed)
    return [1500 + rnd() % 1000 if rnd() % 10 < 7 else 150000 + rnd() % 100000 for _ in range(n)]


def _exact(values, p):
    """Nearest-rank percentile p (percent, at most one decimal) of values, computed independently."""
    s = sorted(values)
    rank = -(-(int(p * 10 + 0.5) * len(s)) // 1000)
    return s[max(rank, 1) - 1]


def test_percentiles_are_exact_over_the_ring():
    m = ApiMonitor(4, 4, ring_size=200)
    assert m.calculate_percentile(50) == 0 and m.get_p99_latency() == 0  # no samples
    values = _long_tailed(300, seed=9)
    for k, v in enumerate(values[:150]):
        m.record_response(0, k & 3, 200, v, 0, 0)
    for p in PERCENTS:
        assert m.calculate_percentile(p) == _exact(values[:150], p), p  # ring not full yet
    for k, v in enumerate(values[150:]):
        m.record_response(-1, -1, 200, v, 0, 0)
    last = values[100:]  # the ring keeps the last 200
    for p in PERCENTS:
        assert m.calculate_percentile(p) == _exact(last, p), p
    assert m.get_p95_latency() == _exact(last, 95) and m.get_p99_latency() == _exact(last, 99)
    assert m.latency_stat(LatencyBucket.P50) == _exact(last, 50)
    assert m.calculate_percentile(0) == min(last) and m.calculate_percentile(100) == max(last)
    for bad in (-1, 100.5, 101):
        assert "out of range" in str(raises(MonitorError, m.calculate_percentile, bad))
    assert "no service" in str(raises(MonitorError, m.calculate_percentile, 50, 4))


def test_histogram_percentiles_are_within_the_documented_bound():
    for name, values in (("uniform", _uniform(2000)), ("long", _long_tailed(2000)), ("bimodal", _bimodal(2000))):
        m = ApiMonitor(3, 2, ring_size=16)
        for k, v in enumerate(values):
            m.record_response(1, 1, 200, v, v // 2, k)
            m.record_response(0, 0, 200, 40, 0, k)  # another service: must not mix in
        for p in PERCENTS:
            got = m.calculate_percentile(p, 1)
            want = _exact(values, p)
            assert abs(got - want) <= want * loghist.MAX_REL_ERROR, (name, p, got, want)
        s = m.get_service_metrics(1)
        assert (s.min_us, s.max_us, s.response_count) == (min(values), max(values), len(values)), name
        assert s.avg_us == sum(values) // len(values) and s.latency_sum_us == sum(values), name
        assert s.upstream_sum_us == sum(v // 2 for v in values), name
        assert s.latency_us == (s.p50_us, s.p95_us, s.p99_us, s.max_us, s.min_us, s.avg_us)
        assert s.p95_us == m.get_p95_latency(1) and s.p99_us == m.get_p99_latency(1)
        assert m.calculate_percentile(100, 0) == 40 and m.calculate_percentile(0, 0) == 40  # clamped


def test_counts_statuses_and_error_rates():
    m = ApiMonitor(4, 4, 64)
    for _ in range(20):
        m.record_request(1, 0, 0)
    for status in (200, 200, 200, 201, 204, 304, 404, 401, 503, 502):
        m.record_response(1, 0, status, 1000, 800, 0)
    for status in (200, 200, 301):
        m.record_response(2, 1, status, 2000, 1500, 0)
    m.record_request(-1, -1, 0)
    m.record_response(-1, -1, 404, 50, 0, 0)  # answered by the gateway itself
    m.record_request(99, 99, 0)
    m.record_response(99, 99, 500, 70, 0, 0)  # ids out of range: global only
    for status in (0, 99, 600, -1):
        m.record_response(3, 3, status, 100, 0, 0)  # not a status: 5xx
    assert m.get_error_rate(0) == 40.0 and m.get_error_rate(1) == 0.0 and m.get_error_rate(2) == 0.0
    assert m.get_error_rate(3) == 100.0 and m.get_error_rate() == 10 * 100 / 19
    a = m.get_api_metrics()
    assert (a.total_requests, a.successful_requests, a.failed_requests) == (22, 9, 10)
    assert a.status_classes == [0, 7, 2, 3, 7] and a.in_flight == 3 and m.get_total_requests() == 22
    assert (a.min_latency, a.max_latency) == (50, 2000)
    assert a.latency_sum_us == 10 * 1000 + 3 * 2000 + 50 + 70 + 400 and a.avg_latency == a.latency_sum_us // 19
    assert a.upstream_sum_us == 10 * 800 + 3 * 1500 and a.gateway_sum_us == a.latency_sum_us - a.upstream_sum_us
    s = m.get_service_metrics(0)
    assert (s.service_id, s.request_count, s.response_count, s.error_count) == (0, 20, 10, 4)
    assert s.status_classes == [0, 5, 1, 2, 2] and s.errors == [0] * 5
    assert m.route_counter(1, mon.R_REQUESTS) == 20 and m.route_counter(2, mon.R_CLASS + 2) == 1
    assert m.route_counter(1, mon.R_CLASS + 4) == 2 and m.route_counter(-1, 0) == 0 and m.route_counter(4, 0) == 0
    # in flight never goes below 0
    for _ in range(40):
        m.record_response(-1, -1, 200, 1, 0, 0)
    assert m.global_counter(mon.G_IN_FLIGHT) == 0
    m.record_request(0, 0, 0)
    assert m.global_counter(mon.G_IN_FLIGHT) == 1
    # errors by type: per service and global; unknown types ignored
    m.record_error(0, ErrorType.TIMEOUT)
    m.record_error(0, ErrorType.TIMEOUT)
    m.record_error(-1, ErrorType.AUTH_ERROR)
    m.record_error(9, ErrorType.CLIENT_ERROR)
    m.record_error(0, 5)
    m.record_error(0, -1)
    assert m.get_service_metrics(0).errors == [0, 0, 2, 0, 0]
    assert m.get_api_metrics().errors == [1, 0, 2, 1, 0] and m.service_counter(0, mon.F_ERRORS + 2) == 2
    m.record_refused()
    assert m.get_api_metrics().refused == 1 and m.get_total_requests() == 23
    d = m.get_api_metrics().as_dict()
    assert d["refused"] == 1 and d["total_requests"] == 23 and len(d) == 13
    assert m.get_service_metrics(0).as_dict()["error_count"] == 4
    for bad in (-1, 4, "0"):
        assert "no service" in str(raises(MonitorError, m.get_service_metrics, bad))


def test_histogram_views_and_accessors():
    m = ApiMonitor(2, 1, 32)
    values = _long_tailed(500, seed=5) + [10, 64, 65, (1 << 26) + 1, 1 << 31]
    for v in values:
        m.record_response(0, 1, 200, v, 0, 0)
    clamped = [v if v <= MASK else MASK for v in values]
    for svc in (-1, 1):
        h = m.get_latency_histogram(svc)
        assert sum(c for _, c in h) == len(values) == m.responses(svc)
        assert [u for u, _ in h] == sorted(set(loghist.upper_us(loghist.bucket_of(v)) for v in clamped))
        cum = m.cumulative_buckets(svc)
        assert [le for le, _ in cum] == list(loghist.POW2_LES)
        for le, c in cum:
            assert c == len([v for v in clamped if v <= le]), le
        assert m.cumulative_buckets(svc, (MASK,)) == [(MASK, len(values))]
    assert m.get_latency_histogram(0) == [] and m.cumulative_buckets(0, (64,)) == [(64, 0)]
    assert m.hist_base(-1) == 0 and m.hist_base(1) == 2 * loghist.NBUCKETS and m.hist_base(7) == 0
    assert loghist.total(m.hist, m.hist_base(1)) == len(values)
    assert m.service_counter(1, mon.F_MIN) == 10 and m.service_counter(1, mon.F_MAX) == MASK
    assert m.service_counter(0, mon.F_MIN) == 0 and m.service_counter(5, mon.F_REQUESTS) == 0
    assert m.global_counter(mon.G_MIN) == 10 and m.latency_stat(LatencyBucket.MAX, 1) == MASK
    total = sum(clamped)
    assert m.sum_us(1, mon.F_LAT_MS) == total == m.sum_us(-1, mon.G_LAT_MS)
    assert m.service_counter(1, mon.F_LAT_MS) == (total // 1000) & MASK
    assert m.rem_us(1, mon.F_LAT_MS) == total % 1000 == m.rem_us(-1, mon.G_LAT_MS)
    assert m.sum_us(-1, mon.G_GW_MS) == total and m.sum_us(1, mon.F_UP_MS) == 0
    assert m.latency_stat(LatencyBucket.MIN) == 10 and m.latency_stat(LatencyBucket.AVG, 1) == total // len(values)
    assert "no latency statistic" in str(raises(MonitorError, m.latency_stat, 6))


def test_time_sums_wrap_and_stay_exact():
    c = array("I", [MASK - 1])
    rem = array("H", [999])
    mon._add_us_py(c, 0, rem, 0, 2002)  # 0.999 + 2.002 ms past 2**30 - 2 ms
    assert c[0] == 1 and rem[0] == 1024 + 1
    m = ApiMonitor(1, 1, 4)
    m._sc[mon.F_LAT_MS] = MASK - 5  # as if 12.4 days of latency had been summed
    m._g[mon.G_LAT_MS] = MASK
    m.record_response(0, 0, 200, 7500, 0, 0)
    assert m.sum_us(0, mon.F_LAT_MS) == (MASK - 5) * 1000 + 7500
    assert m.sum_us(-1, mon.G_LAT_MS) == MASK * 1000 + 7500
    assert m.service_counter(0, mon.F_LAT_MS) == 1 and m.rem_us(0, mon.F_LAT_MS) == 500
    for i, v in ((mon.F_REQUESTS, MASK), (mon.F_CLASS + 1, MASK - 1)):
        m._sc[i] = v
    m.record_request(0, 0, 0)
    m.record_response(0, 0, 200, 1, 0, 0)
    assert m.service_counter(0, mon.F_REQUESTS) == 0 and m.service_counter(0, mon.F_CLASS + 1) == MASK


def test_throughput_window_on_an_injected_clock():
    for base in BASES:
        m = ApiMonitor(1, 1, 4, window_s=5)

        def t(ms, base=base):
            return ticks_add(base, ms)

        def req(ms, n, m=m, t=t):
            for _ in range(n):
                m.record_request(0, 0, t(ms))

        req(0, 3)  # second 0 starts at the first request
        req(999, 2)
        req(1000, 4)
        assert m.get_throughput(t(1500)) == 5.0  # one complete second so far
        req(2500, 6)
        assert m.get_throughput(t(1500)) == 4.5  # a now behind the window's: as of its current second
        assert m.get_throughput(t(2999)) == 4.5 and m.get_throughput(t(3000)) == 5.0, base
        assert m.get_throughput(t(3000), 1) == 6.0 and m.get_throughput(t(3000), 2) == 5.0
        req(2990, 1)  # a now that lags the current second's start counts in it
        req(3500, 1)
        assert m.get_throughput(t(4000), 2) == 4.0 and m.get_throughput(t(4000), 99) == 17 / 4
        req(100000, 7)  # a jump far past the window: everything before is stale
        assert m.get_throughput(t(100000)) == 0.0 and m.get_throughput(t(101000)) == 7 / 5
        for s in range(101, 107):  # reuse every bucket of the ring
            req(s * 1000 + 10, s - 100)
        assert m.get_throughput(t(107000)) == (2 + 3 + 4 + 5 + 6) / 5, base
        assert m.get_throughput(t(107000), 1) == 6.0
        far = 107000 + (1 << 29)  # 6 days idle
        req(far, 2)
        assert m.get_throughput(t(far + 1000), 1) == 2.0 and m.get_throughput(t(far + 1000)) == 2 / 5
        assert m.get_total_requests() == 3 + 2 + 4 + 6 + 1 + 1 + 7 + 21 + 2
        m.reset_metrics()
        assert m.get_throughput(t(far + 5000)) == 0.0  # the window restarts at the first now it sees
        req(far + 6000, 3)
        assert m.get_throughput(t(far + 7000)) == 1.5 and m.get_throughput(t(far + 7000), 1) == 3.0


def test_reset_metrics_empties_everything_but_in_flight():
    m = ApiMonitor(2, 2, 8)
    for k in range(10):
        m.record_request(k & 1, k & 1, k * 100)
        m.record_response(k & 1, k & 1, 200 if k & 2 else 500, 1000 + k, 10, k * 100)
        m.record_error(k & 1, k % 5)
    m.record_request(0, 0, 0)
    m.record_request(0, 0, 0)
    m.record_refused()
    m.reset_metrics()
    a = m.get_api_metrics()
    assert a.in_flight == 2
    assert (a.total_requests, a.successful_requests, a.failed_requests, a.refused, a.avg_latency) == (0, 0, 0, 0, 0)
    assert a.status_classes == [0] * 5 and a.errors == [0] * 5 and a.latency_sum_us == 0
    assert (a.min_latency, a.max_latency) == (0, 0) and m.calculate_percentile(50) == 0
    for svc in (0, 1):
        s = m.get_service_metrics(svc)
        assert (s.request_count, s.response_count, s.min_us, s.max_us, s.p99_us) == (0, 0, 0, 0, 0)
    assert sum(m.hist) == 0 and m.get_latency_histogram() == [] and m.route_counter(0, mon.R_REQUESTS) == 0
    m.record_response(0, 0, 200, 300, 0, 0)
    assert m.service_counter(0, mon.F_MIN) == 300 and m.global_counter(mon.G_MIN) == 300


def test_capacities_are_checked():
    for args in ((-1,), (4096,), (4, -1), (4, 65536), (4, 4, 0), (4, 4, 65536), (4, 4, 4, 0), (4, 4, 4, 3601)):
        assert "out of range" in str(raises(MonitorError, ApiMonitor, *args)), args
    m = ApiMonitor(0, 0, 1, 1)  # global figures only
    m.record_request(0, 0, 0)
    m.record_response(0, 0, 200, 5, 0, 0)
    m.record_error(0, 0)
    assert m.get_total_requests() == 1 and m.calculate_percentile(50) == 5 and m.get_error_rate() == 0.0
    assert isinstance(raises(ValueError, m.get_service_metrics, 0), MonitorError)


# (route, svc, status, latency_us, upstream_us, error_type): ids in and out of range, statuses in and
# out of 100 .. 599, latencies and upstream times to clamp, error types to ignore.
RECORDS = (
    (0, 0, 200, 1500, 700, -1),
    (1, 2, 404, 65, 0, 0),
    (-1, -1, 404, 40, 0, 0),
    (3, 1, 503, 2500000, 2400000, 1),
    (9, 9, 504, 70000000, 1 << 30, 2),
    (2, 3, 0, 1 << 31, 5, 4),
    (1, 0, 301, -5, -5, 5),
    (0, 2, 401, 999, 1999, 3),
    (1, 3, 99, 64, 63, -2),
    (2, 1, 204, 1000000, 999999, -1),
)


def _tables(m):
    return list(m._a), list(m._srem)


def test_record_counts_what_the_four_calls_count():
    for base in BASES:
        fused = ApiMonitor(4, 3, 8, 5)
        split = ApiMonitor(4, 3, 8, 5)
        for k in range(60):
            route, svc, status, lat, up, err = RECORDS[k % len(RECORDS)]
            now = ticks_add(base, k * 350)
            fused.record_started()
            fused.record(route, svc, status, lat, up, now, err)
            split.record_request(route, svc, now)
            split.record_response(route, svc, status, lat, up, now)
            split.record_error(svc, err)
            assert _tables(fused) == _tables(split), (base, k)
        assert fused.get_api_metrics().as_dict() == split.get_api_metrics().as_dict()
        assert fused.get_throughput(ticks_add(base, 21000)) == split.get_throughput(ticks_add(base, 21000)) > 0
        fused.record_started()  # in flight until answered; counted in the requests already
        a = fused.get_api_metrics()
        assert a.in_flight == 1 and a.total_requests == 61 and fused.responses() == 60


def test_native_record_agrees_with_its_twin():
    for base in BASES:
        m = ApiMonitor(4, 3, 8, 5)
        twin = ApiMonitor(4, 3, 8, 5)
        for k in range(60):
            route, svc, status, lat, up, err = RECORDS[k % len(RECORDS)]
            now = ticks_add(base, k * 450)
            h = m.record(route, svc, status, lat, up, now, err)
            assert h == mon._record_py(twin, route, svc, status, lat, up, now, err), (base, k)
            m.record_request(route, svc, now)
            mon._record_py(twin, route, svc, 0, 0, 0, now, (mon.W_ARRIVE | mon.W_ROUTED) << mon.W_SHIFT | 15)
            m.record_response(route, svc, status, lat, up, now)
            mon._record_py(twin, route, svc, status, lat, up, now, mon.W_RESPONSE << mon.W_SHIFT | 15)
            m.record_started()
            mon._started_py(twin)
            assert _tables(m) == _tables(twin), (base, k)


@micropython.native  # this frame must not come from the heap either
def _exercise(m, t0, lat):
    n = 0
    for i in range(300):
        now = ticks_add(t0, i * 37)
        svc = (i % 6) - 1  # -1 .. 4, 4 out of range
        m.record_request(i & 3, svc, now)
        m.record_response(i & 3, svc, 200 + (i % 4) * 100, lat[i & 63], lat[(i + 1) & 63] >> 1, now)
        if i % 5 == 0:
            m.record_error(svc, i % 6)
        if i % 50 == 0:
            m.record_refused()
        m.record_started()  # the server's pair
        m.record(i & 3, svc, 500 - (i % 4) * 100, lat[(i + 2) & 63], lat[(i + 3) & 63] >> 2, now, i % 7 - 1)
        n += m.service_counter(1, mon.F_REQUESTS) + m.route_counter(2, mon.R_CLASS + 1)
        n += m.global_counter(mon.G_OK) + m.rem_us(-1, mon.G_LAT_MS) + m.hist_base(svc)
    return n


def test_hot_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    lat = _long_tailed(62) + [-5, (1 << 30) + 5]  # one below 0, one above 2**30 - 1: clamped
    for t0 in ((1 << 30) - 5000, ticks_add(0, -5000)):
        want = _exercise(ApiMonitor(4, 4, 64, 5), t0, lat)
        m = ApiMonitor(4, 4, 64, 5)
        before = mp.mem_total()
        got = _exercise(m, t0, lat)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want and m.get_total_requests() == 600 and m.responses() == 600
        m = ApiMonitor(4, 4, 64, 5)
        mp.heap_lock()
        try:
            got = _exercise(m, t0, lat)
        finally:
            mp.heap_unlock()
        assert got == want and m.get_throughput(ticks_add(t0, 11100), 5) > 0


def test_memory_is_as_documented():
    requires_micropython()
    import gc

    for args, most in (((16, 32, 256, 60), 9800), ((256, 512, 1024, 60), 118600)):
        gc.collect()
        before = gc.mem_free()  # type: ignore[attr-defined]
        m = ApiMonitor(*args)
        gc.collect()
        used = before - gc.mem_free()  # type: ignore[attr-defined]
        assert used <= most, (args, used)
        del m

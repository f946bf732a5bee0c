"""API monitoring: request, response, error, latency and throughput counters in fixed tables.

Services and routes are the gateway's small integer ids; -1 (or any id out of range) means none,
such as a request the gateway answered itself (404): it is counted in the global figures only.
Latencies are microseconds (the caller measures with ticks_us) clamped to 0 .. 2**30 - 1; now_ms is
a ticks_ms() value.

What is counted:
- record_request(): requests (global, service, route), in-flight + 1, the current second of the
  throughput window.
- record_started() and record(), the server's pair (monio.py): record_started() when a request has
  been read counts it in the global requests and in flight; record(), when it has been answered,
  does what record_routed(), record_response() and record_error() do, and counts the request in
  the throughput window's second of its answer. So over the server the window counts answered
  requests, by the second they were answered in.
- record_response(): in-flight - 1 (never below 0); responses by status class 1xx .. 5xx (global,
  service, route; a status outside 100 .. 599 counts as 5xx); successes (status < 400) and
  failures (4xx and 5xx: the client did not get what it asked for); latency into the global and
  the service's log histogram (loghist.py), the ring of the last ring_size exact latencies, min,
  max and sums; upstream_us (clamped to 0 .. latency_us) into the upstream time sums and
  latency_us - upstream_us into the gateway time sum.
- record_error(): errors by ErrorType (global and service): the caller's classification of a
  failure (a timeout, a refused token), independent of the status classes.
- record_refused(): requests turned away before record_request() (no free connection slot).
total_requests counts requests; successful + failed count responses (the difference is in flight).

record() is one @micropython.viper function (_record) over one 'I' table holding every counter
(the views _g, _sc, _rc, hist, _ring, _tp_n, _tp_sec are memoryviews into it; the words _G_SC ..
of _g say where each starts) and the 'H' time-sum remainders: measured on the unix port (x64),
record_started() + record() cost about 0.35 us where record_request() + record_routed() +
record_response() + record_error() cost 3 us as native code. _record_py is its pure-Python twin:
the CPython version and the reference the tests hold the viper one to. record_request(),
record_response() and the window's move call the same function with fewer figures selected.

Time sums are kept as whole ms in an 'I' counter that wraps at 2**30 ms (12.4 days of summed time:
a counter reset to whoever reads it raw) and, in an 'H' of _srem, the us below a ms (10 bits) and
how often the ms counter wrapped (6 bits): sum_us() is exact to the us until 64 wraps (2.2 years
of summed time). Every counter wraps from 2**30 - 1 to 0 (never holding 2**30, a big int on a
board). The throughput window is window_s + 1 one-second buckets (window_s complete seconds and
the current one): a ring of request counts with the second number each stands for, advanced
lazily from now_ms: a bucket whose second is not among the last ones is stale. Ticks compare as
ticks_since() in restypes.py does: a now less than 2**20 ms behind the current second's start
counts in that second; an idle gap of 2**30 - 2**20 ms (12 days) can alias.

Percentiles: calculate_percentile(p) takes p in percent (0 .. 100, int or float: 99.9 works) and
returns the sample of nearest rank ceil(p * n / 100) (at least 1). Over all services (svc -1) it is
exact over the ring (the last ring_size responses); for a service it comes from the service's
histogram, within loghist.MAX_REL_ERROR (9.09 %) for latencies of 65 us .. 67.1 s, clamped to the
service's min and max. min, max and avg are over everything since reset_metrics().

Memory (ApiMonitor(256, 512, 1024, 60)): per service 392 bytes (15 'I' counters, 2 'H' time-sum
remainders, an 82-counter histogram of 328 bytes), per route 24 bytes (6 'I' counters), plus 4 bytes
per ring sample, 8 per window second and 478 of global figures, layout words, remainders and
histogram: 117,702 bytes of arrays (100,352 for services). Measured on the unix port with
gc.mem_free() around the constructor: 118,336 bytes; ApiMonitor(16, 32, 256, 60): 9,696. The
histograms are 72 % of the default: size max_services to the services configured.

__init__ allocates every table; record_started(), record(), record_request(), record_response(),
record_error(), record_refused() and the counter accessors allocate nothing (viper and native
code; a latency handed to record() must be a small int, as a ticks_diff() is). The get_*() reads and
reset_metrics() allocate and belong off the request path. This module owns the figures only: it
does no I/O, reads no clock, writes no Prometheus text and parses no configuration.
"""

from . import loghist
from .compat import IS_MICROPYTHON, const, micropython
from .loghist import NBUCKETS
from .strtab import table

_MASK = const(0x3FFFFFFF)
_LATE = const(0x100000)  # 2**20 ms: a now this far behind the window counts as no time passed
_NB = const(82)  # loghist.NBUCKETS, as a constant the viper code can fold (checked at import)

# Per-service counters, _NSF of them per service in _sc (the exporter reads them by these names).
F_REQUESTS = const(0)
F_CLASS = const(1)  # + 0 .. 4: responses 1xx .. 5xx
F_ERRORS = const(6)  # + ErrorType
F_LAT_MS = const(11)  # latency sum, whole ms (the us below: rem_us())
F_UP_MS = const(12)  # upstream time sum, whole ms
F_MIN = const(13)  # smallest and largest latency, us (F_MIN reads 0 before the first response)
F_MAX = const(14)
_NSF = const(15)
# Per-route counters, _NRF per route in _rc.
R_REQUESTS = const(0)
R_CLASS = const(1)  # + 0 .. 4
_NRF = const(6)
# Global figures in _g.
G_REQUESTS = const(0)
G_OK = const(1)
G_FAILED = const(2)
G_IN_FLIGHT = const(3)
G_REFUSED = const(4)
G_CLASS = const(5)  # + 0 .. 4
G_ERRORS = const(10)  # + ErrorType
G_LAT_MS = const(15)  # time sums, whole ms: latency, upstream, gateway (latency - upstream)
G_UP_MS = const(16)
G_GW_MS = const(17)
G_MIN = const(18)
G_MAX = const(19)
_G_RPOS = const(20)  # ring: next slot, samples held
_G_RN = const(21)
_G_TP_ON = const(22)  # window: started, tick its current second began at, that second's number,
_G_TP_START = const(23)  # its bucket
_G_TP_SEC = const(24)
_G_TP_HEAD = const(25)
_G_FIGURES = const(26)  # the words above are figures (reset_metrics() zeroes them); below, the layout
_G_SC = const(26)  # where _sc, _rc, hist, _ring, _tp_n, _tp_sec start in _a
_G_RC = const(27)
_G_HIST = const(28)
_G_RING = const(29)
_G_TPN = const(30)
_G_TPS = const(31)
_G_NS = const(32)  # max_services, max_routes, ring_size, window_s + 1
_G_NR = const(33)
_G_RSIZE = const(34)
_G_NWIN = const(35)
_NG = const(36)
# What one call of _record() does (its `what`; public for the tests, not for callers: record() and
# the record_*() methods select them).
W_ARRIVE = const(1)  # requests (global) + 1, in flight + 1
W_ROUTED = const(2)  # requests (service, route) + 1, the window's current second + 1
W_RESPONSE = const(4)  # in flight - 1, the response's figures
W_MOVE = const(8)  # none of the above: the window's move only (every call moves it)
W_SHIFT = const(4)  # record()'s error_type may carry W_* bits << W_SHIFT (see _record_py)
W_ERR = const(16)
W_NOERR = const(15)


class ErrorType:
    CLIENT_ERROR = 0
    SERVER_ERROR = 1
    TIMEOUT = 2
    AUTH_ERROR = 3
    VALIDATION_ERROR = 4
    NAMES = ("client_error", "server_error", "timeout", "auth_error", "validation_error")


class LatencyBucket:
    """The latency statistics by name (latency_stat(), ServiceMetrics.latency_us)."""

    P50 = 0
    P95 = 1
    P99 = 2
    MAX = 3
    MIN = 4
    AVG = 5
    NAMES = ("p50", "p95", "p99", "max", "min", "avg")


STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class MonitorError(ValueError):
    """A capacity, service id or percentile out of range."""


_API_FIELDS = tuple(
    "total_requests successful_requests failed_requests avg_latency min_latency max_latency in_flight refused"
    " status_classes errors latency_sum_us upstream_sum_us gateway_sum_us".split()
)
_SVC_FIELDS = tuple(
    "service_id request_count response_count error_count errors status_classes p50_us p95_us p99_us min_us"
    " max_us avg_us latency_sum_us upstream_sum_us".split()
)


class ApiMetrics:
    """Global figures (built on request; not on the hot path). Latencies and sums in us;
    status_classes: responses 1xx .. 5xx; errors: counts by ErrorType."""

    def __init__(self):
        self.total_requests = self.successful_requests = self.failed_requests = 0
        self.avg_latency = self.min_latency = self.max_latency = 0
        self.in_flight = self.refused = 0
        self.status_classes = [0] * 5
        self.errors = [0] * 5
        self.latency_sum_us = self.upstream_sum_us = self.gateway_sum_us = 0

    def as_dict(self):
        return {k: getattr(self, k) for k in _API_FIELDS}


class ServiceMetrics:
    """One service's figures (built on request). error_count: responses >= 400; errors: counts by
    ErrorType; latency_us: (p50, p95, p99, max, min, avg) in LatencyBucket order, us."""

    def __init__(self, service_id):
        self.service_id = service_id
        self.request_count = self.response_count = self.error_count = 0
        self.errors = [0] * 5
        self.status_classes = [0] * 5
        self.p50_us = self.p95_us = self.p99_us = self.min_us = self.max_us = self.avg_us = 0
        self.latency_us = tuple([0] * 6)
        self.latency_sum_us = self.upstream_sum_us = 0

    def as_dict(self):
        return {k: getattr(self, k) for k in _SVC_FIELDS}


@micropython.native
def _bump(a, i):
    """a[i] += 1, wrapping at 2**30 without ever holding 2**30."""
    v = a[i]
    a[i] = v + 1 if v < _MASK else 0


def _wrap_py(v, n):
    """(v + n) mod 2**30 for v, n in 0 .. 2**30 - 1, every intermediate below 2**30."""
    m = _MASK - n
    return v + n if v <= m else v - m - 1


def _add_us_py(a, i, rem, j, us):
    """Add us (0 .. 2**30 - 1) to the time sum a[i] (whole ms, mod 2**30) with rem[j]: the us below
    a ms in its low 10 bits, the times a[i] wrapped (mod 64) in the 6 above."""
    ms = us // 1000
    x = rem[j]
    r = (x & 1023) + (us - ms * 1000)  # < 2000 (us - ms * 1000 first: us may be near 2**30)
    if r >= 1000:
        r -= 1000
        ms += 1
    v = a[i]
    m = _MASK - ms
    if v <= m:
        a[i] = v + ms
    else:
        a[i] = v - m - 1
        x += 1024
    rem[j] = (x & 0xFC00) | r


def _record_py(self, route, svc, status, lat, up, now, err):
    """ApiMonitor.record(): the whole hot path over self._a, the one table (its layout in the words
    _G_SC .. of _g), and self._srem, the time sums' us below a ms. err is an ErrorType to count
    (others: none), or W_* bits << W_SHIFT | an ErrorType (15: none) to record less than the
    default W_ROUTED | W_RESPONSE (record_request(), record_response(), the window's move use
    that). Moves the window to now and returns its current bucket. The reference for the viper
    version below."""
    a = self._a
    rem = self._srem
    what = W_ROUTED | W_RESPONSE
    if err >= W_ERR:
        what = err >> W_SHIFT
        err &= W_ERR - 1
    if svc < 0 or svc >= a[_G_NS]:
        svc = -1
    if route < 0 or route >= a[_G_NR]:
        route = -1
    sb = a[_G_SC] + svc * _NSF
    rb = a[_G_RC] + route * _NRF
    if what & W_ARRIVE:
        _bump(a, G_REQUESTS)
        v = a[G_IN_FLIGHT]
        if v < _MASK:
            a[G_IN_FLIGHT] = v + 1
    now &= _MASK
    h = a[_G_TP_HEAD]
    if not a[_G_TP_ON]:
        a[_G_TP_ON] = 1
        a[_G_TP_START] = now
    else:
        d = (now - a[_G_TP_START]) & _MASK
        if 1000 <= d <= _MASK - _LATE:  # not the same second, and now does not lag its start
            k = d // 1000
            a[_G_TP_START] = _wrap_py(a[_G_TP_START], k * 1000)
            sec = _wrap_py(a[_G_TP_SEC], k)
            a[_G_TP_SEC] = sec
            nw = a[_G_NWIN]
            h = (h + k % nw) % nw
            a[_G_TP_HEAD] = h
            a[a[_G_TPS] + h] = sec  # the buckets skipped keep older seconds: stale, never cleared
            a[a[_G_TPN] + h] = 0
    if what & W_ROUTED:
        if svc >= 0:
            _bump(a, sb + F_REQUESTS)
        if route >= 0:
            _bump(a, rb + R_REQUESTS)
        _bump(a, a[_G_TPN] + h)
    if what & W_RESPONSE:
        if lat < 0:
            lat = 0
        elif lat > _MASK:
            lat = _MASK
        if up < 0:
            up = 0
        elif up > lat:
            up = lat
        cls = status // 100 - 1 if 100 <= status <= 599 else 4
        v = a[G_IN_FLIGHT]
        if v > 0:
            a[G_IN_FLIGHT] = v - 1
        _bump(a, G_FAILED if cls >= 3 else G_OK)
        _bump(a, G_CLASS + cls)
        gr = a[_G_NS] * 2
        _add_us_py(a, G_LAT_MS, rem, gr, lat)
        _add_us_py(a, G_UP_MS, rem, gr + 1, up)
        _add_us_py(a, G_GW_MS, rem, gr + 2, lat - up)
        if lat < a[G_MIN]:
            a[G_MIN] = lat
        if lat > a[G_MAX]:
            a[G_MAX] = lat
        k = loghist.bucket_of(lat)
        hb = a[_G_HIST]
        _bump(a, hb + k)
        n = a[_G_RSIZE]
        p = a[_G_RPOS]
        a[a[_G_RING] + p] = lat
        p += 1
        a[_G_RPOS] = p if p < n else 0
        if a[_G_RN] < n:
            a[_G_RN] += 1
        if route >= 0:
            _bump(a, rb + R_CLASS + cls)
        if svc >= 0:
            _bump(a, sb + F_CLASS + cls)
            _add_us_py(a, sb + F_LAT_MS, rem, svc * 2, lat)
            _add_us_py(a, sb + F_UP_MS, rem, svc * 2 + 1, up)
            if lat < a[sb + F_MIN]:
                a[sb + F_MIN] = lat
            if lat > a[sb + F_MAX]:
                a[sb + F_MAX] = lat
            _bump(a, hb + (svc + 1) * NBUCKETS + k)
    if 0 <= err < 5:
        _bump(a, G_ERRORS + err)
        if svc >= 0:
            _bump(a, sb + F_ERRORS + err)
    return h


def _started_py(self):
    """ApiMonitor.record_started()."""
    _bump(self._a, G_REQUESTS)
    v = self._a[G_IN_FLIGHT]
    if v < _MASK:
        self._a[G_IN_FLIGHT] = v + 1


if IS_MICROPYTHON:

    @micropython.viper
    def _started(self):
        a = ptr32(self._a)  # type: ignore  # noqa: F821  (a viper cast)
        v = a[G_REQUESTS]
        a[G_REQUESTS] = v + 1 if v < _MASK else 0
        v = a[G_IN_FLIGHT]
        if v < _MASK:
            a[G_IN_FLIGHT] = v + 1

    @micropython.viper
    def _record(self, route: int, svc: int, status: int, lat: int, up: int, now: int, err: int) -> int:
        # _record_py as machine code, the helpers written out. Viper ints are machine words (32 bits
        # on a board): every value stored stays below 2**30 as in the twin, every intermediate
        # below 2**31.
        a = ptr32(self._a)  # type: ignore  # noqa: F821  (a viper cast)
        rem = ptr16(self._srem)  # type: ignore  # noqa: F821
        what = W_ROUTED | W_RESPONSE
        if err >= W_ERR:
            what = err >> W_SHIFT
            err = err & (W_ERR - 1)
        if svc < 0 or svc >= a[_G_NS]:
            svc = -1
        if route < 0 or route >= a[_G_NR]:
            route = -1
        sb = a[_G_SC] + svc * _NSF
        rb = a[_G_RC] + route * _NRF
        v = 0
        if what & W_ARRIVE:
            v = a[G_REQUESTS]
            a[G_REQUESTS] = v + 1 if v < _MASK else 0
            v = a[G_IN_FLIGHT]
            if v < _MASK:
                a[G_IN_FLIGHT] = v + 1
        now = now & _MASK
        h = a[_G_TP_HEAD]
        if a[_G_TP_ON] == 0:
            a[_G_TP_ON] = 1
            a[_G_TP_START] = now
        else:
            d = (now - a[_G_TP_START]) & _MASK
            if d >= 1000 and d <= _MASK - _LATE:  # the second changed: divide once a second only
                k = d // 1000
                v = a[_G_TP_START]
                m = _MASK - k * 1000
                a[_G_TP_START] = v + k * 1000 if v <= m else v - m - 1
                v = a[_G_TP_SEC]
                m = _MASK - k
                sec = v + k if v <= m else v - m - 1
                a[_G_TP_SEC] = sec
                nw = a[_G_NWIN]
                h = (h + k % nw) % nw
                a[_G_TP_HEAD] = h
                a[a[_G_TPS] + h] = sec
                a[a[_G_TPN] + h] = 0
        i = 0
        if what & W_ROUTED:
            if svc >= 0:
                i = sb + F_REQUESTS
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
            if route >= 0:
                i = rb + R_REQUESTS
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
            i = a[_G_TPN] + h
            v = a[i]
            a[i] = v + 1 if v < _MASK else 0
        if what & W_RESPONSE:
            if lat < 0:
                lat = 0
            elif lat > _MASK:
                lat = _MASK
            if up < 0:
                up = 0
            elif up > lat:
                up = lat
            cls = 4
            if status >= 100 and status <= 599:
                cls = status // 100 - 1
            v = a[G_IN_FLIGHT]
            if v > 0:
                a[G_IN_FLIGHT] = v - 1
            i = G_FAILED if cls >= 3 else G_OK
            v = a[i]
            a[i] = v + 1 if v < _MASK else 0
            i = G_CLASS + cls
            v = a[i]
            a[i] = v + 1 if v < _MASK else 0
            # The time sums: global latency, upstream, gateway; then the service's latency, upstream.
            gr = a[_G_NS] * 2
            nsum = 5 if svc >= 0 else 3
            j = 0
            us = 0
            ri = 0
            while j < nsum:
                if j == 0:
                    i = G_LAT_MS
                    ri = gr
                    us = lat
                elif j == 1:
                    i = G_UP_MS
                    ri = gr + 1
                    us = up
                elif j == 2:
                    i = G_GW_MS
                    ri = gr + 2
                    us = lat - up
                elif j == 3:
                    i = sb + F_LAT_MS
                    ri = svc * 2
                    us = lat
                else:
                    i = sb + F_UP_MS
                    ri = svc * 2 + 1
                    us = up
                ms = us // 1000
                x = rem[ri]
                r = (x & 1023) + (us - ms * 1000)
                if r >= 1000:
                    r -= 1000
                    ms += 1
                v = a[i]
                m = _MASK - ms
                if v <= m:
                    a[i] = v + ms
                else:
                    a[i] = v - m - 1
                    x += 1024
                rem[ri] = (x & 0xFC00) | r
                j += 1
            if lat < a[G_MIN]:
                a[G_MIN] = lat
            if lat > a[G_MAX]:
                a[G_MAX] = lat
            # loghist.bucket_of(lat), inline.
            k = 0
            if lat > 0x4000000:
                k = 81
            elif lat > 64:
                w = lat - 1
                x = w >> 6
                e = 6
                if x >> 16:
                    x = x >> 16
                    e += 16
                if x >> 8:
                    x = x >> 8
                    e += 8
                if x >> 4:
                    x = x >> 4
                    e += 4
                if x >> 2:
                    x = x >> 2
                    e += 2
                if x >> 1:
                    e += 1
                m = w >> (e - 5)
                q = 0
                if m >= 54:
                    q = 3
                elif m >= 45:
                    q = 2
                elif m >= 38:
                    q = 1
                k = ((e - 6) << 2) + q + 1
            hb = a[_G_HIST]
            i = hb + k
            v = a[i]
            a[i] = v + 1 if v < _MASK else 0
            n = a[_G_RSIZE]
            p = a[_G_RPOS]
            a[a[_G_RING] + p] = lat
            p += 1
            a[_G_RPOS] = p if p < n else 0
            if a[_G_RN] < n:
                a[_G_RN] = a[_G_RN] + 1
            if route >= 0:
                i = rb + R_CLASS + cls
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
            if svc >= 0:
                i = sb + F_CLASS + cls
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
                if lat < a[sb + F_MIN]:
                    a[sb + F_MIN] = lat
                if lat > a[sb + F_MAX]:
                    a[sb + F_MAX] = lat
                i = hb + (svc + 1) * _NB + k
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
        if err >= 0 and err < 5:
            i = G_ERRORS + err
            v = a[i]
            a[i] = v + 1 if v < _MASK else 0
            if svc >= 0:
                i = sb + F_ERRORS + err
                v = a[i]
                a[i] = v + 1 if v < _MASK else 0
        return h

else:
    _started = _started_py
    _record = _record_py

if NBUCKETS != _NB:
    raise ImportError("monitor: loghist.NBUCKETS changed")


@micropython.native
def _zero(a, start, end, value):
    i = start
    while i < end:
        a[i] = value
        i += 1


def _rank(p, n):
    """1-based nearest rank of percentile p (percent, int or float) among n samples."""
    if not 0 <= p <= 100:
        raise MonitorError("percentile %r out of range 0..100" % (p,))
    q = int(p * 1000 + 0.5)  # thousandths of a percent
    r = (q * n + 99999) // 100000
    return r if r > 0 else 1


class ApiMonitor:
    """Figures for up to max_services services and max_routes routes. All memory is allocated in
    __init__."""

    def __init__(self, max_services=256, max_routes=512, ring_size=1024, window_s=60):
        for name, v, hi in (("max_services", max_services, 4095), ("max_routes", max_routes, 0xFFFF)):
            if not isinstance(v, int) or not 0 <= v <= hi:
                raise MonitorError("monitor: %s %r out of range 0..%d" % (name, v, hi))
        if not isinstance(ring_size, int) or not 1 <= ring_size <= 0xFFFF:
            raise MonitorError("monitor: ring_size %r out of range 1..65535" % (ring_size,))
        if not isinstance(window_s, int) or not 1 <= window_s <= 3600:
            raise MonitorError("monitor: window_s %r out of range 1..3600" % (window_s,))
        self.max_services = max_services
        self.max_routes = max_routes
        self.ring_size = ring_size
        self.window_s = window_s
        self._nwin = window_s + 1
        # One 'I' table holds every counter, so that _record() reaches them all through one
        # pointer; the views below are memoryviews into it (made here, once).
        sizes = (_NG, max_services * _NSF, max_routes * _NRF, (max_services + 1) * NBUCKETS, ring_size)
        sizes += (self._nwin, self._nwin)
        a = table("I", sum(sizes))
        self._a = a
        mv = memoryview(a)
        views = []
        at = 0
        for k, n in enumerate(sizes):
            views.append(mv[at : at + n])
            if k:
                a[_G_SC + k - 1] = at
            at += n
        self._g, self._sc, self._rc, self.hist, self._ring, self._tp_n, self._tp_sec = views
        # Histograms: the global one at base 0, service s's at hist_base(s) = (s + 1) * NBUCKETS.
        a[_G_NS] = max_services
        a[_G_NR] = max_routes
        a[_G_RSIZE] = ring_size
        a[_G_NWIN] = self._nwin
        # The us below a ms of the time sums: service s's F_LAT_MS, F_UP_MS at 2 * s, 2 * s + 1; the
        # global G_LAT_MS, G_UP_MS, G_GW_MS after them.
        self._srem = table("H", max_services * 2 + 3)
        self.reset_metrics()

    # -- the hot path (no allocation) ------------------------------------------------------------

    # record_started(self): a request arrived, not yet routed (the server's case): requests
    # (global) + 1, in flight + 1; record() counts the rest when it is answered. No allocation.
    record_started = _started

    # record(self, route, svc, status, latency_us, upstream_us, now_ms, error_type): a request begun
    # with record_started() was answered: record_routed()'s counts, the request in the throughput
    # window's second of now_ms (the second it was answered in), record_response()'s and, for an
    # ErrorType error_type (-1: none), record_error()'s, in one native call. No allocation.
    record = _record

    @micropython.native
    def record_request(self, route, svc, now_ms):
        """A request arrived (route, svc: ids or -1). No allocation."""
        _record(self, route, svc, 0, 0, 0, now_ms, (W_ARRIVE | W_ROUTED) << W_SHIFT | W_NOERR)

    @micropython.native
    def record_routed(self, route, svc):
        """The route and service of a request recorded with record_request(-1, -1, ...) before it
        was routed: their request counters. No allocation."""
        if 0 <= svc < self.max_services:
            _bump(self._sc, svc * _NSF + F_REQUESTS)
        if 0 <= route < self.max_routes:
            _bump(self._rc, route * _NRF + R_REQUESTS)

    @micropython.native
    def record_response(self, route, svc, status, latency_us, upstream_us, now_ms):
        """A request was answered with status after latency_us, upstream_us of it waiting for the
        upstream (0 if none). now_ms moves the throughput window. No allocation."""
        _record(self, route, svc, status, latency_us, upstream_us, now_ms, W_RESPONSE << W_SHIFT | W_NOERR)

    @micropython.native
    def record_error(self, svc, error_type):
        """An error of ErrorType error_type (others are ignored) for svc (or -1). No allocation."""
        if 0 <= error_type < 5:
            _bump(self._g, G_ERRORS + error_type)
            if 0 <= svc < self.max_services:
                _bump(self._sc, svc * _NSF + F_ERRORS + error_type)

    @micropython.native
    def record_refused(self):
        """A request turned away before record_request() (count only). No allocation."""
        _bump(self._g, G_REFUSED)

    def _advance(self, now):
        """Move the window to the second holding now; return that second's bucket."""
        return _record(self, -1, -1, 0, 0, 0, now, W_MOVE << W_SHIFT | W_NOERR)

    # -- accessors for the exporter (no allocation) ----------------------------------------------

    def service_counter(self, svc, field):
        """Service svc's counter F_*: requests, responses of a class, errors of a type, sums in
        whole ms, min and max latency (us). 0 for ids out of range. No allocation."""
        if not 0 <= svc < self.max_services:
            return 0
        v = self._sc[svc * _NSF + field]
        return 0 if field == F_MIN and v == _MASK else v

    def route_counter(self, route, field):
        """Route route's counter R_*; 0 for ids out of range. No allocation."""
        return self._rc[route * _NRF + field] if 0 <= route < self.max_routes else 0

    def global_counter(self, field):
        """The global figure G_* (G_MIN reads 0 before the first response). No allocation."""
        v = self._g[field]
        return 0 if field == G_MIN and v == _MASK else v

    def rem_us(self, svc, field):
        """The us below a whole ms of a time sum: svc's F_LAT_MS / F_UP_MS, or with svc -1 the
        global G_LAT_MS / G_UP_MS / G_GW_MS. No allocation."""
        return self._rem(svc, field) & 1023

    def _rem(self, svc, field):
        if svc < 0:
            return self._srem[self.max_services * 2 + field - G_LAT_MS]
        return self._srem[svc * 2 + field - F_LAT_MS] if svc < self.max_services else 0

    def hist_base(self, svc=-1):
        """Where svc's histogram (-1: the global one) starts in self.hist, for the loghist
        functions. No allocation."""
        return (svc + 1) * NBUCKETS if 0 <= svc < self.max_services else 0

    # -- reads (allocate) --------------------------------------------------------------------------

    def _svc(self, svc):
        if not isinstance(svc, int) or not -1 <= svc < self.max_services:
            raise MonitorError("monitor: no service %r" % (svc,))
        return svc

    def sum_us(self, svc, field):
        """A time sum in us (see rem_us() for the fields), exact until it has wrapped 64 times
        2**30 ms (2.2 years of summed time). Above 2**30 us it is a big int on a board."""
        c = self._g[field] if svc < 0 else self.service_counter(svc, field)
        x = self._rem(svc, field)
        return (((x >> 10) << 30) + c) * 1000 + (x & 1023)

    def calculate_percentile(self, p, svc=-1):
        """Latency (us) at percentile p (percent, 0 .. 100) by nearest rank; 0 with no samples.
        svc -1: exact over the ring's samples; else from svc's histogram (see the module doc)."""
        if self._svc(svc) < 0:
            n = self._g[_G_RN]
            if n == 0:
                return 0
            return sorted(self._ring[:n])[_rank(p, n) - 1]
        base = self.hist_base(svc)
        n = loghist.total(self.hist, base)
        if n == 0:
            return 0
        v = loghist.at_rank(self.hist, base, _rank(p, n))
        lo = self.service_counter(svc, F_MIN)
        hi = self.service_counter(svc, F_MAX)
        return lo if v < lo else hi if v > hi else v

    def get_p95_latency(self, svc=-1):
        return self.calculate_percentile(95, svc)

    def get_p99_latency(self, svc=-1):
        return self.calculate_percentile(99, svc)

    def latency_stat(self, which, svc=-1):
        """The LatencyBucket statistic which of svc (-1: all), in us."""
        if which == LatencyBucket.P50 or which == LatencyBucket.P95 or which == LatencyBucket.P99:
            return self.calculate_percentile((50, 95, 99)[which], svc)
        glob = self._svc(svc) < 0
        if which == LatencyBucket.MIN:
            return self.global_counter(G_MIN) if glob else self.service_counter(svc, F_MIN)
        if which == LatencyBucket.MAX:
            return self.global_counter(G_MAX) if glob else self.service_counter(svc, F_MAX)
        if which == LatencyBucket.AVG:
            n = self.responses(svc)
            return self.sum_us(svc, G_LAT_MS if glob else F_LAT_MS) // n if n else 0
        raise MonitorError("monitor: no latency statistic %r" % (which,))

    def responses(self, svc=-1):
        """Responses recorded for svc (-1: all)."""
        if self._svc(svc) < 0:
            return sum(self._g[G_CLASS + c] for c in range(5))
        return sum(self._sc[svc * _NSF + F_CLASS + c] for c in range(5))

    def get_service_metrics(self, svc):
        if self._svc(svc) < 0:
            raise MonitorError("monitor: no service -1")
        m = ServiceMetrics(svc)
        b = svc * _NSF
        m.request_count = self._sc[b + F_REQUESTS]
        m.status_classes = [self._sc[b + F_CLASS + c] for c in range(5)]
        m.errors = [self._sc[b + F_ERRORS + t] for t in range(5)]
        m.response_count = sum(m.status_classes)
        m.error_count = m.status_classes[3] + m.status_classes[4]
        m.latency_us = tuple(self.latency_stat(w, svc) for w in range(6))
        m.p50_us, m.p95_us, m.p99_us, m.max_us, m.min_us, m.avg_us = m.latency_us
        m.latency_sum_us = self.sum_us(svc, F_LAT_MS)
        m.upstream_sum_us = self.sum_us(svc, F_UP_MS)
        return m

    def get_api_metrics(self):
        g = self._g
        m = ApiMetrics()
        m.total_requests = g[G_REQUESTS]
        m.successful_requests = g[G_OK]
        m.failed_requests = g[G_FAILED]
        m.in_flight = g[G_IN_FLIGHT]
        m.refused = g[G_REFUSED]
        m.status_classes = [g[G_CLASS + c] for c in range(5)]
        m.errors = [g[G_ERRORS + t] for t in range(5)]
        m.avg_latency = self.latency_stat(LatencyBucket.AVG)
        m.min_latency = self.global_counter(G_MIN)
        m.max_latency = self.global_counter(G_MAX)
        m.latency_sum_us = self.sum_us(-1, G_LAT_MS)
        m.upstream_sum_us = self.sum_us(-1, G_UP_MS)
        m.gateway_sum_us = self.sum_us(-1, G_GW_MS)
        return m

    def get_latency_histogram(self, svc=-1):
        """[(upper_us, count)] of svc's (-1: the global) non-empty histogram buckets, in order."""
        base = self.hist_base(self._svc(svc))
        h = self.hist
        return [(loghist.upper_us(k), h[base + k]) for k in range(NBUCKETS) if h[base + k]]

    def cumulative_buckets(self, svc=-1, les=loghist.POW2_LES):
        """[(le_us, samples <= le_us)] for each le_us in les, Prometheus-style (exact at bucket
        upper bounds: every POW2_LES value). The +Inf bucket is responses(svc)."""
        base = self.hist_base(self._svc(svc))
        return [(le, loghist.cumulative(self.hist, base, le)) for le in les]

    def get_error_rate(self, svc=-1):
        """Percent of svc's (-1: all) responses that failed (status >= 400); 0.0 with none."""
        n = self.responses(svc)
        if n == 0:
            return 0.0
        if svc < 0:
            failed = self._g[G_FAILED]
        else:
            failed = self._sc[svc * _NSF + F_CLASS + 3] + self._sc[svc * _NSF + F_CLASS + 4]
        return failed * 100 / n

    def get_throughput(self, now_ms, seconds=60):
        """Requests per second over the last `seconds` (1 .. window_s) complete seconds before the
        one holding now_ms; over fewer while the window has not seen that many. Moves the window
        to now_ms, as a record_request() would."""
        h = self._advance(now_ms)
        seconds = 1 if seconds < 1 else self.window_s if seconds > self.window_s else seconds
        cur = self._tp_sec[h]
        span = cur if cur < seconds else seconds
        if span == 0:
            return 0.0
        n = 0
        for i in range(self._nwin):
            if 1 <= (cur - self._tp_sec[i]) & _MASK <= span:
                n += self._tp_n[i]
        return n / span

    def get_total_requests(self):
        return self._g[G_REQUESTS]

    def reset_metrics(self):
        """Every counter, sum, histogram, the ring and the window back to empty (a scraper sees
        counter resets). The in-flight count stays: those requests are still being answered."""
        inflight = self._g[G_IN_FLIGHT]
        _zero(self._a, 0, _G_FIGURES, 0)  # the figures, not the layout words after them
        _zero(self._a, _NG, len(self._a), 0)
        _zero(self._srem, 0, len(self._srem), 0)
        for s in range(self.max_services):
            self._sc[s * _NSF + F_MIN] = _MASK
        self._g[G_MIN] = _MASK
        self._g[G_IN_FLIGHT] = inflight

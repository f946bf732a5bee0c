"""API monitoring: request, response, error, latency and throughput counters in fixed tables.

Services and routes are the gateway's small integer ids; -1 (or any id out of range) means none,
such as a request the gateway answered itself (404): it is counted in the global figures only.
Latencies are microseconds (the caller measures with ticks_us) clamped to 0 .. 2**30 - 1; now_ms is
a ticks_ms() value.

What is counted:
- record_request(): requests (global, service, route), in-flight + 1, the current second of the
  throughput window.
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

Time sums are kept as whole ms in an 'I' counter that wraps at 2**30 ms (12.4 days of summed time:
a counter reset to whoever reads it raw) and, beside it in an 'H', the us below a ms (10 bits) and
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
per ring sample, 8 per window second and 444 of global figures and histogram: 117,668 bytes of
arrays (100,352 for services). Measured on the unix port with gc.mem_free() around the
constructor: 118,336 bytes; ApiMonitor(16, 32, 256, 60): 9,632. The histograms are 72 % of the
default: size max_services to the services configured.

__init__ allocates every table; record_request(), record_response(), record_error(),
record_refused() and the counter accessors allocate nothing (native code). The get_*() reads and
reset_metrics() allocate and belong off the request path. This module owns the figures only: it
does no I/O, reads no clock, writes no Prometheus text and parses no configuration.
"""

from . import loghist
from .compat import const, micropython
from .loghist import NBUCKETS
from .strtab import table

_MASK = const(0x3FFFFFFF)
_LATE = const(0x100000)  # 2**20 ms: a now this far behind the window counts as no time passed

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
_G_REM = const(20)  # + (G_*_MS - G_LAT_MS): the us below a ms of each sum
_G_RPOS = const(23)  # ring: next slot, samples held
_G_RN = const(24)
_G_TP_ON = const(25)  # window: started, tick its current second began at, that second's number,
_G_TP_START = const(26)  # its bucket
_G_TP_SEC = const(27)
_G_TP_HEAD = const(28)
_NG = const(29)


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
def _bump(c, i):
    """c[i] += 1, wrapping at 2**30 without ever holding 2**30."""
    v = c[i]
    c[i] = v + 1 if v < _MASK else 0


@micropython.native
def _wrap(v, n):
    """(v + n) mod 2**30 for v, n in 0 .. 2**30 - 1, every intermediate below 2**30."""
    m = _MASK - n
    return v + n if v <= m else v - m - 1


@micropython.native
def _add_us(c, i, rem, j, us):
    """Add us (0 .. 2**30 - 1) to the time sum c[i] (whole ms, mod 2**30) with rem[j]: the us below
    a ms in its low 10 bits, the times c[i] wrapped (mod 64) in the 6 above."""
    ms = us // 1000
    x = rem[j]
    r = (x & 1023) + (us - ms * 1000)  # < 2000 (us - ms * 1000 first: us may be near 2**30)
    if r >= 1000:
        r -= 1000
        ms += 1
    v = c[i]
    m = _MASK - ms
    if v <= m:
        c[i] = v + ms
    else:
        c[i] = v - m - 1
        x += 1024
    rem[j] = (x & 0xFC00) | r


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
        self._sc = table("I", max_services * _NSF)
        self._srem = table("H", max_services * 2)  # us below a ms of F_LAT_MS, F_UP_MS
        self._rc = table("I", max_routes * _NRF)
        self._g = table("I", _NG)
        # Histograms: the global one at base 0, service s's at hist_base(s) = (s + 1) * NBUCKETS.
        self.hist = table("I", (max_services + 1) * NBUCKETS)
        self._ring = table("I", ring_size)  # the last ring_size latencies, us
        self._nwin = window_s + 1
        self._tp_n = table("I", self._nwin)  # requests in each second of the window
        self._tp_sec = table("I", self._nwin)  # the second number each bucket stands for
        self.reset_metrics()

    # -- the hot path (no allocation) ------------------------------------------------------------

    @micropython.native
    def record_request(self, route, svc, now_ms):
        """A request arrived (route, svc: ids or -1). No allocation."""
        g = self._g
        _bump(g, G_REQUESTS)
        v = g[G_IN_FLIGHT]
        if v < _MASK:
            g[G_IN_FLIGHT] = v + 1
        if 0 <= svc < self.max_services:
            _bump(self._sc, svc * _NSF + F_REQUESTS)
        if 0 <= route < self.max_routes:
            _bump(self._rc, route * _NRF + R_REQUESTS)
        _bump(self._tp_n, self._advance(now_ms))

    @micropython.native
    def record_routed(self, route, svc):
        """The route and service of a request recorded with record_request(-1, -1, ...) before it
        was routed (the server's case): their request counters. No allocation."""
        if 0 <= svc < self.max_services:
            _bump(self._sc, svc * _NSF + F_REQUESTS)
        if 0 <= route < self.max_routes:
            _bump(self._rc, route * _NRF + R_REQUESTS)

    @micropython.native
    def record_response(self, route, svc, status, latency_us, upstream_us, now_ms):
        """A request was answered with status after latency_us, upstream_us of it waiting for the
        upstream (0 if none). now_ms moves the throughput window. No allocation."""
        if latency_us < 0:
            latency_us = 0
        elif latency_us > _MASK:
            latency_us = _MASK
        if upstream_us < 0:
            upstream_us = 0
        elif upstream_us > latency_us:
            upstream_us = latency_us
        cls = status // 100 - 1 if 100 <= status <= 599 else 4
        g = self._g
        v = g[G_IN_FLIGHT]
        if v > 0:
            g[G_IN_FLIGHT] = v - 1
        _bump(g, G_FAILED if cls >= 3 else G_OK)
        _bump(g, G_CLASS + cls)
        _add_us(g, G_LAT_MS, g, _G_REM, latency_us)
        _add_us(g, G_UP_MS, g, _G_REM + 1, upstream_us)
        _add_us(g, G_GW_MS, g, _G_REM + 2, latency_us - upstream_us)
        if latency_us < g[G_MIN]:
            g[G_MIN] = latency_us
        if latency_us > g[G_MAX]:
            g[G_MAX] = latency_us
        k = loghist.bucket_of(latency_us)
        hist = self.hist
        _bump(hist, k)
        ring = self._ring
        p = g[_G_RPOS]
        ring[p] = latency_us
        p += 1
        g[_G_RPOS] = p if p < self.ring_size else 0
        if g[_G_RN] < self.ring_size:
            g[_G_RN] += 1
        if 0 <= route < self.max_routes:
            _bump(self._rc, route * _NRF + R_CLASS + cls)
        if 0 <= svc < self.max_services:
            sc = self._sc
            b = svc * _NSF
            _bump(sc, b + F_CLASS + cls)
            _add_us(sc, b + F_LAT_MS, self._srem, svc * 2, latency_us)
            _add_us(sc, b + F_UP_MS, self._srem, svc * 2 + 1, upstream_us)
            if latency_us < sc[b + F_MIN]:
                sc[b + F_MIN] = latency_us
            if latency_us > sc[b + F_MAX]:
                sc[b + F_MAX] = latency_us
            _bump(hist, (svc + 1) * NBUCKETS + k)
        self._advance(now_ms)

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

    @micropython.native
    def _advance(self, now):
        """Move the window to the second holding now; return that second's bucket."""
        g = self._g
        now &= _MASK
        if not g[_G_TP_ON]:
            g[_G_TP_ON] = 1
            g[_G_TP_START] = now
            return g[_G_TP_HEAD]
        d = (now - g[_G_TP_START]) & _MASK
        if d < 1000 or d > _MASK - _LATE:  # the same second, or now lags its start
            return g[_G_TP_HEAD]
        k = d // 1000
        g[_G_TP_START] = _wrap(g[_G_TP_START], k * 1000)
        sec = _wrap(g[_G_TP_SEC], k)
        g[_G_TP_SEC] = sec
        nw = self._nwin
        h = (g[_G_TP_HEAD] + k % nw) % nw
        g[_G_TP_HEAD] = h
        self._tp_sec[h] = sec  # the buckets skipped keep older seconds: stale, never cleared
        self._tp_n[h] = 0
        return h

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
            return self._g[_G_REM + field - G_LAT_MS]
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
        for a in (self._sc, self._srem, self._rc, self._g, self.hist, self._ring, self._tp_n, self._tp_sec):
            _zero(a, 0, len(a), 0)
        for s in range(self.max_services):
            self._sc[s * _NSF + F_MIN] = _MASK
        self._g[G_MIN] = _MASK
        self._g[G_IN_FLIGHT] = inflight

"""GET /_gw/metrics: the gateway's figures as Prometheus text exposition format 0.0.4, in pieces.

exposition(srv) is a generator of str pieces (a family's HELP and TYPE lines, then one sample line,
the few lines of one label set, or one histogram at a time: 1.3 KB at most with short names);
monendpoints.py packs them into the slot's I/O buffer and sends each full buffer as an HTTP chunk,
so the document is never whole in memory.
write_exposition(srv, write) hands every piece to write() (benchmarks, tools).

Format (https://prometheus.io/docs/instrumenting/exposition_formats/): every family has one
`# HELP` and one `# TYPE` line and its samples right after them; names start with `apigw_` and
end in base units (`_seconds`, `_bytes`) and, for counters, `_total`; label values escape
backslash, double quote and newline. Integers are written as integers; seconds are exact decimal
text of the integer microseconds ("%d.%06d": no float, whose 24-bit mantissa on a board would
round a long sum). Counters are the monitor's, which wrap from 2**30 - 1 to 0 (a scraper sees a
counter reset), never negative.

What is exported:
- always: build info, uptime, requests, responses by status class, errors by ErrorType, in
  flight, the global latency histogram (`le` at every power of two of loghist.POW2_LES, 64 us ..
  67.1 s: exact bucket edges), upstream and gateway time sums, throughput over the monitor's
  window, connection slots and connection counters, parse errors, timeouts, upstream errors, and
  the heap (free, used, least free seen; left out where the runtime does not tell, CPython);
- per service (label service = its name; services configured and inside the monitor's table):
  responses by class, errors by type, and a latency histogram with every second power of two
  only (64 us, 256 us, 1.024 ms .. 67.1 s: 11 edges, 14 lines a service instead of 24; still exact
  edges of the service's log histogram);
- per route (label route = its name, else its path; a label already taken gets " #<id>"):
  responses by class;
- with a resilience section: each guarded service's breaker state (0 closed, 1 open, 2 half-open)
  and rejected calls, its bulkhead's permits in use and rejected calls, and retries;
- with pools: each instance (labels pool, instance = "host:port") in rotation or not, and its
  active connections;
- with a response cache: hits, misses, stale hits;
- with an auth section: refusals by reason (unauthorized 401, forbidden 403) and rate-limited
  requests (429).
A series of a service or route is written whether or not it has counted anything yet (a series
that appears late loses its first increase in rate()).

Per-request figures come from monitor.ApiMonitor's accessors (no allocation). Other requests go on
between pieces (the server sends a buffer's worth at a time), so each histogram is one piece, its
buckets read in ascending order, then +Inf, _sum and _count: nothing runs in between, the buckets
are cumulative and +Inf equals _count. The lines repeated per service and route are filled into
templates made at import (one % per piece). The generator allocates its pieces, a list of the
service names and a set of route labels: measured on the unix port (`make bench`), 256 services
and 512 routes (624 KB of text) take about 43 ms and 2.5 MB of short-lived allocations. It runs off the request path. This module owns
the text format only: it records nothing and changes no figure (get_throughput() moves the window
to now, as a request would).
"""

from . import __version__, loghist
from .compat import mem_alloc, mem_free, ticks_ms
from .monitor import (
    F_CLASS,
    F_ERRORS,
    F_REQUESTS,
    F_LAT_MS,
    G_CLASS,
    G_ERRORS,
    G_GW_MS,
    G_IN_FLIGHT,
    G_LAT_MS,
    G_REQUESTS,
    G_UP_MS,
    R_CLASS,
    R_REQUESTS,
    STATUS_CLASSES,
    ErrorType,
)

GLOBAL_LES = loghist.POW2_LES  # 21 edges, 64 us .. 2**26 us
SERVICE_LES = tuple(GLOBAL_LES[i] for i in range(0, len(GLOBAL_LES), 2))  # 11 edges: every second one
_ERRORS = ErrorType.NAMES


def escape(value):
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if '"' in value:
        value = value.replace('"', '\\"')
    if "\n" in value:
        value = value.replace("\n", "\\n")
    return value


def seconds(us):
    """Microseconds (an int >= 0) as exact seconds text: 1500 -> "0.001500"."""
    return "%d.%06d" % (us // 1000000, us % 1000000)


def _head(name, kind, text):
    return "# HELP %s %s\n# TYPE %s %s\n" % (name, text, name, kind)


def _one(name, kind, text, value):
    """A family of one unlabelled sample."""
    return "# HELP %s %s\n# TYPE %s %s\n%s %s\n" % (name, text, name, kind, name, value)


# Templates of the lines repeated per service and route, made once: one % per service or route
# then fills in a whole piece (one string, one tuple: the line-by-line way made a string and a
# tuple per line and a list to join them).


def _lines(name, label, key, values):
    """name{label="%s",key="v"} %d, a line per v."""
    return "".join('%s{%s="%%s",%s="%s"} %%d\n' % (name, label, key, v) for v in values)


def _hist_lines(name, label, les):
    """A histogram's lines: buckets at les, +Inf, _sum (seconds text), _count; with a label (its
    value a %s before each count) or without (label None)."""
    lab = label + '="%s",' if label else ""
    out = ['%s_bucket{%sle="%s"} %%d\n' % (name, lab, seconds(le)) for le in les]
    out.append('%s_bucket{%sle="+Inf"} %%d\n' % (name, lab))
    lab = "{" + label + '="%s"}' if label else ""
    out.append("%s_sum%s %%s\n%s_count%s %%d\n" % (name, lab, name, lab))
    return "".join(out)


_SVC_CLASSES = _lines("apigw_service_responses_total", "service", "class", STATUS_CLASSES)
_SVC_ERRORS = _lines("apigw_service_errors_total", "service", "type", _ERRORS)
_ROUTE_CLASSES = _lines("apigw_route_responses_total", "route", "class", STATUS_CLASSES)
_GLOBAL_HIST = _hist_lines("apigw_request_duration_seconds", None, GLOBAL_LES)
_SVC_HIST = _hist_lines("apigw_service_request_duration_seconds", "service", SERVICE_LES)


def _hist_args(mon, svc, les, label):
    """The values of _hist_lines() for svc's histogram (-1: the global one), label its value or
    None. The buckets are read in ascending order, then +Inf, _sum and _count."""
    hist = mon.hist
    base = mon.hist_base(svc)
    args = []
    for le in les:
        if label is not None:
            args.append(label)
        args.append(loghist.cumulative(hist, base, le))
    n = mon.responses(svc)
    total = seconds(mon.sum_us(svc, F_LAT_MS if svc >= 0 else G_LAT_MS))
    if label is None:
        args += (n, total, n)
    else:
        args += (label, n, label, total, label, n)
    return tuple(args)


def _counts(label, get, key, first):
    """(label, get(key, first), label, get(key, first + 1), ...) for the 5 lines of a _lines()."""
    return (
        label,
        get(key, first),
        label,
        get(key, first + 1),
        label,
        get(key, first + 2),
        label,
        get(key, first + 3),
        label,
        get(key, first + 4),
    )


def _service_names(gw, mon):
    """[escaped name or None] per service id inside the monitor's table (allocates: once)."""
    n = mon.max_services if mon.max_services < gw.max_services else gw.max_services
    names = [None] * n
    for sid in range(n):
        ep = gw.get_service(sid)
        if ep is not None:
            names[sid] = escape(ep.name)
    return names


def _route_label(gw, r):
    d = gw.get_route(r)
    if d is None:
        return None
    return d["name"] if d["name"] is not None else d["path"]


def exposition(srv):
    """The exposition of server srv (with a monitoring section), as a generator of str pieces."""
    m = srv.monitoring
    mon = m.mon
    gw = srv.gw
    g = mon.global_counter
    yield _head("apigw_build_info", "gauge", "The gateway's version; always 1.")
    yield 'apigw_build_info{version="%s"} 1\n' % escape(__version__)
    up = srv.monitoring.uptime_s()
    yield _one("apigw_uptime_seconds", "gauge", "Seconds since the gateway started.", up if up > 0 else 0)
    yield _one("apigw_requests_total", "counter", "Requests received (parsed).", g(G_REQUESTS))
    yield _head("apigw_responses_total", "counter", "Responses sent, by status class.")
    for c in range(5):
        yield 'apigw_responses_total{class="%s"} %d\n' % (STATUS_CLASSES[c], g(G_CLASS + c))
    yield _head("apigw_errors_total", "counter", "Failed requests by error type (timeout, auth_error, ...).")
    for t in range(5):
        yield 'apigw_errors_total{type="%s"} %d\n' % (_ERRORS[t], g(G_ERRORS + t))
    yield _one("apigw_requests_in_flight", "gauge", "Requests received and not yet answered.", g(G_IN_FLIGHT))

    yield _head(
        "apigw_request_duration_seconds", "histogram", "Time from a request's arrival to the end of its answer."
    )
    yield _GLOBAL_HIST % _hist_args(mon, -1, GLOBAL_LES, None)
    yield _one(
        "apigw_upstream_time_seconds_total",
        "counter",
        "Time spent waiting for and relaying upstream answers, summed over requests.",
        seconds(mon.sum_us(-1, G_UP_MS)),
    )
    yield _one(
        "apigw_gateway_time_seconds_total",
        "counter",
        "Time spent in the gateway itself (latency less upstream time), summed over requests.",
        seconds(mon.sum_us(-1, G_GW_MS)),
    )
    yield _one(
        "apigw_throughput_requests_per_second",
        "gauge",
        "Requests per second over the last %d complete seconds." % mon.window_s,
        "%.3f" % mon.get_throughput(ticks_ms(), mon.window_s),
    )

    # -- per service and per route ---------------------------------------------------------------
    names = _service_names(gw, mon)
    yield _head("apigw_service_requests_total", "counter", "Requests routed to a service.")
    for sid in range(len(names)):
        s = names[sid]
        if s is not None:
            yield 'apigw_service_requests_total{service="%s"} %d\n' % (s, mon.service_counter(sid, F_REQUESTS))
    yield _head("apigw_service_responses_total", "counter", "Responses to requests routed to a service, by class.")
    for sid in range(len(names)):
        s = names[sid]
        if s is not None:
            yield _SVC_CLASSES % _counts(s, mon.service_counter, sid, F_CLASS)
    yield _head("apigw_service_errors_total", "counter", "Failed requests routed to a service, by error type.")
    for sid in range(len(names)):
        s = names[sid]
        if s is not None:
            yield _SVC_ERRORS % _counts(s, mon.service_counter, sid, F_ERRORS)
    yield _head(
        "apigw_service_request_duration_seconds",
        "histogram",
        "Latency of requests routed to a service (every second power-of-two edge).",
    )
    for sid in range(len(names)):
        s = names[sid]
        if s is not None:
            yield _SVC_HIST % _hist_args(mon, sid, SERVICE_LES, s)

    n = mon.max_routes if mon.max_routes < gw.max_routes else gw.max_routes
    labels = [None] * n  # the label of each route in use (escaped)
    seen = set()
    for r in range(n):
        label = _route_label(gw, r)
        if label is None:
            continue
        if label in seen:  # two unnamed routes on one path (different methods): keep series apart
            label = "%s #%d" % (label, r)
        seen.add(label)
        labels[r] = escape(label)
    seen = None
    yield _head("apigw_route_requests_total", "counter", "Requests matched by a route.")
    for r in range(n):
        if labels[r] is not None:
            yield 'apigw_route_requests_total{route="%s"} %d\n' % (labels[r], mon.route_counter(r, R_REQUESTS))
    yield _head("apigw_route_responses_total", "counter", "Responses to requests matched by a route, by class.")
    for r in range(n):
        if labels[r] is not None:
            yield _ROUTE_CLASSES % _counts(labels[r], mon.route_counter, r, R_CLASS)
    labels = None

    # -- the server --------------------------------------------------------------------------------
    st = srv.stats
    pool = srv.pool
    yield _one("apigw_slots", "gauge", "Connection slots.", len(pool))
    yield _one("apigw_slots_in_use", "gauge", "Connection slots serving a connection now.", pool.in_use())
    yield _one("apigw_slots_peak", "gauge", "Most connection slots in use at once.", pool.peak)
    yield _one("apigw_connections_total", "counter", "Connections accepted.", st.connections)
    yield _one("apigw_connections_waiting", "gauge", "Connections waiting for a free slot now.", len(srv.waiters))
    yield _one("apigw_connections_queued_total", "counter", "Connections that had to wait for a slot.", st.queued)
    yield _one(
        "apigw_connections_refused_total", "counter", "Connections answered 503: no slot came free.", st.rejected
    )
    yield _one("apigw_parse_errors_total", "counter", "Requests refused as malformed.", st.parse_errors)
    yield _one("apigw_timeouts_total", "counter", "Requests answered 408 or 504 by the gateway's timers.", st.timeouts)
    yield _one(
        "apigw_upstream_errors_total", "counter", "Requests answered 502: the upstream failed.", st.upstream_errors
    )
    free = mem_free()
    if free >= 0:  # -1: the runtime does not tell (CPython)
        low = m.heap_low if 0 <= m.heap_low < free else free
        yield _one("apigw_heap_free_bytes", "gauge", "Free heap.", free)
        yield _one("apigw_heap_used_bytes", "gauge", "Heap in use.", mem_alloc())
        yield _one("apigw_heap_min_free_bytes", "gauge", "Least free heap seen (checked every second).", low)

    # -- the optional stages -------------------------------------------------------------------------
    guard = srv.guard
    if guard is not None:
        for piece in _resilience(guard, names):
            yield piece
    if srv.balancer is not None:
        for piece in _balancer(srv.balancer.lb):
            yield piece
    med = srv.mediator
    cache = med.cache if med is not None else None
    if cache is not None:
        yield _one("apigw_cache_hits_total", "counter", "Answers served from the response cache.", cache.hits)
        yield _one("apigw_cache_misses_total", "counter", "Cacheable requests not found in the cache.", cache.misses)
        yield _one(
            "apigw_cache_stale_hits_total",
            "counter",
            "Expired cached answers served as a fallback.",
            cache.stale_hits,
        )
    gate = srv.gate
    if gate is not None:
        yield _head("apigw_auth_failures_total", "counter", "Requests refused by the auth stage, by reason.")
        yield 'apigw_auth_failures_total{reason="unauthorized"} %d\n' % gate.unauthorized
        yield 'apigw_auth_failures_total{reason="forbidden"} %d\n' % gate.forbidden
        yield _one("apigw_rate_limited_total", "counter", "Requests refused 429 by a rate limit.", gate.limited)


def _resilience(guard, names):
    brk = guard.breakers
    bh = guard.bulkheads
    now = ticks_ms()
    sb = guard.s_breaker
    sh = guard.s_bulkhead
    n = len(names) if len(names) < len(sb) else len(sb)
    yield _head("apigw_circuit_breaker_state", "gauge", "A service's circuit breaker: 0 closed, 1 open, 2 half-open.")
    for sid in range(n):
        if names[sid] is not None and sb[sid] >= 0:
            yield 'apigw_circuit_breaker_state{service="%s"} %d\n' % (names[sid], brk.state(sb[sid]))
    yield _head("apigw_circuit_breaker_rejected_total", "counter", "Calls a service's open breaker refused.")
    for sid in range(n):
        if names[sid] is not None and sb[sid] >= 0:
            rej = brk.metrics(sb[sid], now)["rejected"]
            yield 'apigw_circuit_breaker_rejected_total{service="%s"} %d\n' % (names[sid], rej)
    yield _head("apigw_bulkhead_in_use", "gauge", "Calls a service's bulkhead lets run now.")
    for sid in range(n):
        if names[sid] is not None and sh[sid] >= 0:
            yield 'apigw_bulkhead_in_use{service="%s"} %d\n' % (names[sid], bh.in_use(sh[sid]))
    yield _head("apigw_bulkhead_rejected_total", "counter", "Calls a service's full bulkhead refused.")
    for sid in range(n):
        if names[sid] is not None and sh[sid] >= 0:
            yield 'apigw_bulkhead_rejected_total{service="%s"} %d\n' % (names[sid], bh.metrics(sh[sid])["rejected"])
    yield _one("apigw_retries_total", "counter", "Upstream calls repeated by a retry policy.", guard.retries)


def _balancer(lb):
    pools = [escape(p.name) for p in lb.pools()]
    labels = 'pool="%s",instance="%s:%d"'
    yield _head("apigw_lb_instance_up", "gauge", "1 if a pool's instance is in rotation (up, not drained or ejected).")
    for iid in range(lb.max_instances):
        p = lb.pool_of(iid)
        if p >= 0:
            lab = labels % (pools[p], escape(lb.host(iid).decode()), lb.port(iid))
            yield "apigw_lb_instance_up{%s} %d\n" % (lab, 1 if lb.health_check(iid) else 0)
    yield _head("apigw_lb_instance_connections", "gauge", "Requests in flight to a pool's instance.")
    for iid in range(lb.max_instances):
        p = lb.pool_of(iid)
        if p >= 0:
            lab = labels % (pools[p], escape(lb.host(iid).decode()), lb.port(iid))
            yield "apigw_lb_instance_connections{%s} %d\n" % (lab, lb.get_connection_count(None, iid))


def write_exposition(srv, write):
    """Hand every piece of exposition(srv) to write(piece)."""
    for piece in exposition(srv):
        write(piece)

"""GET /_gw/stats: the gateway's figures as one JSON object for the status page, in pieces.

pieces(srv) is a generator of str pieces whose concatenation is one JSON object (json.loads reads
it whole); monendpoints.py sends them as they fill the I/O buffer. Each piece is a key with a small
value, or one element of a list, made by json.dumps of a small dict: the document is never whole
in memory. The object:

    {"version": "0.1.0", "uptime_s": 12, "requests": 40, "in_flight": 1,
     "throughput_rps": 0.5,          requests per second over the monitor's window
     "error_rate": 2.5,              percent of responses that failed (status >= 400)
     "latency_us": {"p50": .., "p95": .., "p99": ..},   exact, over the last ring_size responses
     "status_classes": {"1xx": 0, "2xx": 39, ...}, "errors": {"client_error": 0, ...},
     "slots": {"total": 4, "in_use": 1, "peak": 2, "waiting": 0},
     "heap": {"free": .., "min_free": .., "used": ..},  (null where the runtime does not tell)
     "services": [{"id", "name", "responses", "errors", "error_rate", "p50_us", "p95_us", "p99_us",
                   "breaker": "closed" / "open" / "half_open" or null}, ...],
     "routes": [{"id", "name", "path", "responses", "errors"}, ...],
     and with the stages configured:
     "instances": [{"pool", "instance": "host:port", "up", "connections", "health"}, ...],
     "breakers": [breaker.BreakerTable.metrics() + "services": [names]], "bulkheads": [...],
     "cache": respcache stats(), "auth": authgate stats()}

A service's "errors" are its failed responses (status >= 400), as error_rate counts them; its
percentiles come from its log histogram (within loghist.MAX_REL_ERROR). Services are those
configured and inside the monitor's table. This module owns the document's shape only: it
records nothing (get_throughput() moves the monitor's window to now, as a request would).
Allocates: off the request path.
"""

import json

from . import __version__
from .compat import mem_alloc, mem_free, ticks_ms
from .monitor import F_CLASS, G_CLASS, G_ERRORS, G_IN_FLIGHT, G_REQUESTS, R_CLASS, STATUS_CLASSES, ErrorType

_BREAKER_STATES = ("closed", "open", "half_open")


def _key(first, name, value):
    """One member of an object: ', "name": value' (no comma before the first)."""
    return '%s"%s": %s' % ("" if first else ", ", name, json.dumps(value))


def _rate(failed, n):
    return round(failed * 100 / n, 2) if n else 0.0


def pieces(srv):
    """The /_gw/stats document of server srv (with a monitoring section), in str pieces."""
    m = srv.monitoring
    mon = m.mon
    gw = srv.gw
    g = mon.global_counter
    up = srv.monitoring.uptime_s()
    yield "{" + _key(True, "version", __version__)
    yield _key(False, "uptime_s", up if up > 0 else 0)
    yield _key(False, "requests", g(G_REQUESTS))
    yield _key(False, "in_flight", g(G_IN_FLIGHT))
    yield _key(False, "throughput_rps", round(mon.get_throughput(ticks_ms(), mon.window_s), 3))
    yield _key(False, "error_rate", round(mon.get_error_rate(-1), 2))
    lat = {
        "p50": mon.calculate_percentile(50),
        "p95": mon.calculate_percentile(95),
        "p99": mon.calculate_percentile(99),
    }
    yield _key(False, "latency_us", lat)
    lat = None
    yield _key(False, "status_classes", {STATUS_CLASSES[c]: g(G_CLASS + c) for c in range(5)})
    yield _key(False, "errors", {ErrorType.NAMES[t]: g(G_ERRORS + t) for t in range(5)})
    pool = srv.pool
    yield _key(
        False, "slots", {"total": len(pool), "in_use": pool.in_use(), "peak": pool.peak, "waiting": len(srv.waiters)}
    )
    free = mem_free()
    if free >= 0:
        low = m.heap_low if 0 <= m.heap_low < free else free
        heap = {"free": free, "min_free": low, "used": mem_alloc()}
    else:  # the runtime does not tell (CPython)
        heap = {"free": None, "min_free": None, "used": None}
    yield _key(False, "heap", heap)
    heap = None

    guard = srv.guard
    yield ', "services": ['
    n = mon.max_services if mon.max_services < gw.max_services else gw.max_services
    sep = ""
    for sid in range(n):
        ep = gw.get_service(sid)
        if ep is None:
            continue
        resp = mon.responses(sid)
        failed = mon.service_counter(sid, F_CLASS + 3) + mon.service_counter(sid, F_CLASS + 4)  # 4xx, 5xx
        bid = guard.s_breaker[sid] if guard is not None else -1
        d = {
            "id": sid,
            "name": ep.name,
            "responses": resp,
            "errors": failed,
            "error_rate": _rate(failed, resp),
            "p50_us": mon.calculate_percentile(50, sid),
            "p95_us": mon.calculate_percentile(95, sid),
            "p99_us": mon.calculate_percentile(99, sid),
            "breaker": _BREAKER_STATES[guard.breakers.state(bid)] if bid >= 0 else None,  # type: ignore
        }
        yield sep + json.dumps(d)
        sep = ", "
    yield "]"

    yield ', "routes": ['
    n = mon.max_routes if mon.max_routes < gw.max_routes else gw.max_routes
    sep = ""
    for r in range(n):
        d = gw.get_route(r)
        if d is None:
            continue
        resp = 0
        for c in range(5):
            resp += mon.route_counter(r, R_CLASS + c)
        failed = mon.route_counter(r, R_CLASS + 3) + mon.route_counter(r, R_CLASS + 4)
        e = {"id": r, "name": d["name"], "path": d["path"], "responses": resp, "errors": failed}
        d = None
        yield sep + json.dumps(e)
        sep = ", "
    yield "]"

    b = srv.balancer
    if b is not None:
        from .lb import HealthStatus  # loaded already where there are pools

        lb = b.lb
        pools = [p.name for p in lb.pools()]
        yield ', "instances": ['
        sep = ""
        for iid in range(lb.max_instances):
            p = lb.pool_of(iid)
            if p < 0:
                continue
            d = {
                "pool": pools[p],
                "instance": "%s:%d" % (lb.host(iid).decode(), lb.port(iid)),
                "up": lb.health_check(iid),
                "connections": lb.get_connection_count(None, iid),
                "health": HealthStatus.NAMES[lb.health(iid)],
            }
            yield sep + json.dumps(d)
            sep = ", "
        yield "]"

    if guard is not None:
        for piece in _guard(guard, gw):
            yield piece
    med = srv.mediator
    if med is not None and med.cache is not None:
        yield _key(False, "cache", med.cache.stats())
    if srv.gate is not None:
        yield _key(False, "auth", srv.gate.stats())
    yield "}"


def _guard(guard, gw):
    """The breakers and bulkheads, each with the services that use it."""
    now = ticks_ms()
    for key, table, of in (
        ("breakers", guard.breakers, guard.s_breaker),
        ("bulkheads", guard.bulkheads, guard.s_bulkhead),
    ):
        yield ', "%s": [' % key
        for k in range(table.count):
            d = table.metrics(k, now) if key == "breakers" else table.metrics(k)
            d["services"] = [
                ep.name for ep in (gw.get_service(s) for s in range(len(of)) if of[s] == k) if ep is not None
            ]
            yield (", " if k else "") + json.dumps(d)
        yield "]"

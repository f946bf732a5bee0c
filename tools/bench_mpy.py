"""Micro-benchmarks of the request path's pure parts, run ON the MicroPython unix port.

    MICROPYPATH=firmware:tools:.frozen .venv/bin/micropython -X heapsize=4M tools/bench_mpy.py [--quick]

(4 MB: tools/bench.py's MICRO_HEAP; at the default 2 MB the monitor of the last figure, the
exposition of 256 services, no longer finds a piece of the heap for its histograms.)

Measures, in one process:

- the route decision (`ApiGateway.route_request`) over a 512-route mixed table (40 % exact,
  40 % prefix, 15 % wildcard, 5 % regex; 256 services), for a mix of requests that hit every
  kind plus some 404s and a 405, and the same decisions made by the linear scan of
  tools/linear_router.py over the same routes (the baseline the index is measured against);
- the parse of a 1 KB request with 10 headers (`httpparse.parse_request` after
  `slot.clear_request()`);
- bytes allocated per decision and per parse (`micropython.mem_total()` deltas), and the heap
  the 512-route table holds;
- the auth stage's checks (tools/bench_auth_mpy.py): a full and a cached JWT check, an API key
  check, a rate-limit check, and what each allocates;
- the mediation stage (tools/bench_med_mpy.py): protobuf encode / encode_into / decode of a
  10-field message and its JSON value, a schema check of the same object, a JSON request body
  converted to protobuf, the steps of a response-cache hit (route, lookup, compose, send) beside
  the direct route's, and what each allocates;
- the load balancer's choice (tools/bench_lb_mpy.py): select_instance for each strategy over 256
  and 8 instances, and what it allocates;
- the circuit breaker (tools/bench_res_mpy.py): an admit() + record() pair on a closed breaker
  with a full window of 20, admit() alone on a closed and on an open one, and what the pair
  allocates;
- the monitoring stage (tools/bench_mon_mpy.py): ApiMonitor.record_response() and
  record_request() on a monitor of 16 services and 32 routes, the server's hooks for one request
  (monio.Monitoring begin() + upstream() + end()), what they allocate, and the Prometheus
  exposition of a gateway of 256 services and 512 routes (promexport.write_exposition: its time,
  bytes and short-lived allocation).

Each figure is the median of batch means (time.ticks_us around a batch of calls). Human-readable
lines go first; the last line is one JSON object that tools/bench.py reads. This file times
things and asserts nothing about speed.
"""

import gc
import json
import sys
import time

import micropython  # type: ignore

from apigw import httpparse as hp
from apigw.gateway import ApiGateway
from apigw.slot import Slot
from bench_auth_mpy import run as run_auth
from bench_lb_mpy import run as run_lb
from bench_med_mpy import run as run_med
from bench_mon_mpy import run as run_mon
from bench_res_mpy import run as run_res
from linear_router import linear_order, linear_route

ROUTES = 512
SERVICES = 256
N_EXACT = 205  # 40 %
N_PREFIX = 205  # 40 %
N_WILDCARD = 77  # 15 %
N_REGEX = ROUTES - N_EXACT - N_PREFIX - N_WILDCARD  # 25, 5 %


def build_table(gw):
    """Fill gw with SERVICES services and ROUTES mixed routes (some method- or header-bound)."""
    for i in range(SERVICES):
        gw.register_service("svc%d" % i, "10.%d.%d.%d" % (i // 64, i % 64, i % 7 + 1), 8000 + i)
    svc = 0
    for i in range(N_EXACT):
        r = i % 5
        if r == 0:
            path = "/api/v1/users/%d/profile" % i
        elif r == 1:
            path = "/static/js/app%d.js" % i
        elif r == 2:
            path = "/health/check%d" % i
        elif r == 3:
            path = "/v1/items/%d/detail" % i
        else:
            path = "/docs/page%d" % i
        methods = ["GET", "HEAD"] if i % 10 == 3 else None
        gw.add_route(path, "exact", methods=methods, service=svc % SERVICES)
        svc += 1
    for i in range(N_PREFIX):
        r = i % 4
        if r == 0:
            gw.add_route("/api/svc%d" % i, service=svc % SERVICES, strip_prefix=True)
        elif r == 1:
            gw.add_route("/api/svc%d/v2" % (i - 1), service=svc % SERVICES, rewrite="/v2")
        elif r == 2:
            gw.add_route("/media/%d" % i, methods=["GET", "PUT"], service=svc % SERVICES)
        else:
            gw.add_route(
                "/tenant/t%d/api" % i, headers={"X-Api-Version": "2"} if i % 8 == 3 else None, service=svc % SERVICES
            )
        svc += 1
    for i in range(N_WILDCARD):
        r = i % 3
        if r == 0:
            gw.add_route("/devices/%d/*/status" % i, "wildcard", service=svc % SERVICES)
        elif r == 1:
            gw.add_route("/files/%d/**" % i, "wildcard", service=svc % SERVICES)
        else:
            gw.add_route("/org/o%d/*/members/*" % i, "wildcard", service=svc % SERVICES)
        svc += 1
    for i in range(N_REGEX):
        gw.add_route("^/legacy/r%d/[0-9]+$" % i, "regex", service=svc % SERVICES, rewrite="/echo")
        svc += 1
    return gw.get_route_count()


# (kind, method, path, extra header lines): 20 decisions, weighted like the table, with misses.
MIX = (
    ("exact", "GET", "/api/v1/users/100/profile", ""),
    ("exact", "GET", "/static/js/app6.js", ""),
    ("exact", "HEAD", "/v1/items/13/detail", ""),
    ("exact", "GET", "/health/check12", ""),
    ("exact", "GET", "/v1/items/153/detail", ""),
    ("exact", "GET", "/docs/page204", ""),
    ("exact", "GET", "/api/v1/users/5/profile", ""),
    ("prefix", "GET", "/api/svc8/users/12/orders", ""),
    ("prefix", "POST", "/api/svc120/v2/orders", ""),
    ("prefix", "GET", "/media/6/photo.jpg", ""),
    ("prefix", "GET", "/tenant/t3/api/items", "X-Api-Version: 2\r\n"),
    ("prefix", "GET", "/tenant/t7/api", ""),
    ("prefix", "GET", "/api/svc200", ""),
    ("prefix", "GET", "/api/svc44/v2", ""),
    ("wildcard", "GET", "/devices/30/abc123/status", ""),
    ("wildcard", "GET", "/files/40/a/b/c.txt", ""),
    ("wildcard", "GET", "/org/o71/u9/members/12", ""),
    ("regex", "GET", "/legacy/r17/12345", ""),
    ("miss", "GET", "/nothing/here/at/all", ""),
    ("miss", "DELETE", "/media/10/x", ""),  # path matches, method does not: 405
)


def make_slot(i, method, path, extra, size=512):
    slot = Slot(i, size, 64, 16)
    raw = ("%s %s HTTP/1.1\r\nHost: gw.local\r\nAccept: */*\r\n%s\r\n" % (method, path, extra)).encode()
    slot.buf[0 : len(raw)] = raw
    slot.n = len(raw)
    r = hp.parse_request(slot)
    if r != hp.DONE:
        raise ValueError("request did not parse: %r -> %d" % (raw, r))
    return slot


def request_1k():
    """A 1024-byte GET with 10 headers (a long cookie pads it to size)."""
    head = [
        "GET /api/svc8/users/12345/orders?limit=50&offset=100 HTTP/1.1",
        "Host: gateway.example.local:8080",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Accept: application/json, text/plain, */*",
        "Accept-Language: en-GB,en;q=0.8,de;q=0.5",
        "Accept-Encoding: gzip, deflate, br",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "X-Request-Id: 5f1c2a9e-4b7d-4c1a-9f0e-2d3b6a7c8e91",
        "Cache-Control: no-cache",
        "Connection: keep-alive",
        "Cookie: session=",
    ]
    text = "\r\n".join(head)
    pad = 1024 - len(text) - 4
    raw = (text + "x" * pad + "\r\n\r\n").encode()
    assert len(raw) == 1024
    return raw


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _route_batch(gw, slots, reps):
    """Mean µs per decision over reps passes of slots (index router)."""
    t0 = time.ticks_us()
    for _ in range(reps):
        for s in slots:
            gw.route_request(s)
    return time.ticks_diff(time.ticks_us(), t0) / (reps * len(slots))


def _linear_batch(gw, slots, order, reps):
    t0 = time.ticks_us()
    for _ in range(reps):
        for s in slots:
            linear_route(gw, s, order)
    return time.ticks_diff(time.ticks_us(), t0) / (reps * len(slots))


def _loop_batch(slots, reps):
    """The loop alone (what each batch costs besides the calls)."""
    t0 = time.ticks_us()
    for _ in range(reps):
        for s in slots:
            pass
    return time.ticks_diff(time.ticks_us(), t0) / (reps * len(slots))


def _parse_batch(slot, reps, parse):
    t0 = time.ticks_us()
    if parse:
        for _ in range(reps):
            slot.clear_request()
            hp.parse_request(slot)
    else:
        for _ in range(reps):
            slot.clear_request()
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _route_alloc(gw, slot, reps):
    """Bytes allocated per route_request(slot) (mem_total delta, loop cost taken off)."""
    gc.collect()
    m0 = micropython.mem_total()
    for _ in range(reps):
        pass
    m1 = micropython.mem_total()
    for _ in range(reps):
        gw.route_request(slot)
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def _parse_alloc(slot, reps):
    """Bytes allocated per clear_request() + parse_request(slot)."""
    gc.collect()
    m0 = micropython.mem_total()
    for _ in range(reps):
        pass
    m1 = micropython.mem_total()
    for _ in range(reps):
        slot.clear_request()
        hp.parse_request(slot)
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def run(batches):
    gc.collect()
    heap0 = gc.mem_alloc()  # type: ignore[attr-defined]
    gw = ApiGateway(max_services=SERVICES, max_routes=ROUTES, strtab_bytes=16384)
    nroutes = build_table(gw)
    gc.collect()
    table_heap = gc.mem_alloc() - heap0  # type: ignore[attr-defined]
    slots = [make_slot(i, m, p, x) for i, (_, m, p, x) in enumerate(MIX)]
    order = linear_order(gw)

    # Both routers must agree before their times mean anything.
    mismatches = 0
    for s in slots:
        a = gw.route_request(s)
        b = linear_route(gw, s, order)
        if a != b:
            mismatches += 1
            print("MISMATCH", bytes(s.buf[s.path_start : s.path_end]), a, b)

    out = {
        "routes": nroutes,
        "services": gw.get_service_count(),
        "route_mismatches": mismatches,
        "route_table_heap_bytes": table_heap,
    }

    # Route decisions over the whole mix.
    idx = []
    lin = []
    loop = []
    for _ in range(batches):
        idx.append(_route_batch(gw, slots, 50))
        lin.append(_linear_batch(gw, slots, order, 2))
        loop.append(_loop_batch(slots, 50))
    out["route_decision_us_median"] = median(idx)
    out["linear_scan_us_median"] = median(lin)
    out["route_vs_linear_scan_speedup"] = median(lin) / median(idx)
    out["route_loop_overhead_us"] = median(loop)

    # Per kind: median of batch means over the requests of that kind (index router).
    kinds = []
    for k, _, _, _ in MIX:
        if k not in kinds:
            kinds.append(k)
    for k in kinds:
        sub = [slots[i] for i in range(len(MIX)) if MIX[i][0] == k]
        out["route_us_" + k] = median([_route_batch(gw, sub, 100) for _ in range(batches)])
        out["linear_us_" + k] = median([_linear_batch(gw, sub, order, 2) for _ in range(max(3, batches // 3))])

    # Bytes allocated per decision (regex and miss decisions copy the path for the regex scan).
    for k in kinds:
        sub = [slots[i] for i in range(len(MIX)) if MIX[i][0] == k]
        total = 0
        for s in sub:
            total += _route_alloc(gw, s, 100)
        out["route_alloc_bytes_" + k] = total / len(sub)

    # Parse of a 1 KB request with 10 headers.
    raw = request_1k()
    ps = Slot(0, 2048, 64, 32)
    ps.buf[0 : len(raw)] = raw
    ps.n = len(raw)
    ps.clear_request()
    r = hp.parse_request(ps)
    if r != hp.DONE or ps.nhdr != 10:
        raise ValueError("1 KB request: parse %d, %d headers" % (r, ps.nhdr))
    both = []
    clear = []
    for _ in range(batches):
        both.append(_parse_batch(ps, 200, True))
        clear.append(_parse_batch(ps, 200, False))
    out["parse_1k_with_clear_us"] = median(both)
    out["clear_request_us"] = median(clear)
    out["parse_1k_us"] = median(both) - median(clear)
    out["parse_alloc_bytes"] = _parse_alloc(ps, 100)

    out.update(run_auth(batches))
    out.update(run_med(batches))
    out.update(run_lb(batches))
    out.update(run_res(batches))
    out.update(run_mon(batches))

    out["micropython_version"] = sys.version + " (" + ".".join(str(v) for v in sys.implementation.version[:3]) + ")"
    out["batches"] = batches
    return out


def main():
    quick = "--quick" in sys.argv
    out = run(7 if quick else 31)
    for k in sorted(out):
        print("%-32s %s" % (k, out[k]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

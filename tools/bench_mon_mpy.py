"""Micro-benchmarks of the monitoring stage, run ON the MicroPython unix port (by tools/bench.py).

    MICROPYPATH=firmware:tools:.frozen .venv/bin/micropython tools/bench_mon_mpy.py [--quick]

Measures, in one process:

- `record_response_us`: one ApiMonitor.record_response() on the monitor of small_config() (16
  services, 32 routes, ring 1024, window 60 s: tools/gen_config.py's services and routes with a
  `monitoring` section, loaded with the firmware's config loader). The calls vary: route i & 31,
  service i & 15, status STATUS[i & 7] (one 4xx and one 5xx in eight), latency LAT[i & 63]
  (40 us .. 1.75 s: most of the histogram's buckets), upstream time UP[i & 63] (3/4 of it on
  every other entry, else 0), now_ms advancing one ms per call (the window moves every 1,000);
  `record_request_us` likewise for record_request(route, service, now_ms);
- `record_response_alloc_bytes`: bytes allocated per record_response() (`micropython.mem_total()`
  before and after ALLOC_CALLS calls, the bare loop's delta taken off; expected 0);
- `monitoring_hooks_us`: what the server adds to each request: monio.Monitoring's begin(),
  upstream() and end() on a FakeSlot (the three attributes the hooks read; slot i & 3 of four,
  route i & 31, status STATUS[i & 7]), and `monitoring_hooks_alloc_bytes` per such triple. The
  latencies recorded are then the few us between the calls;
- `export_prometheus_ms_256_services`: promexport.write_exposition(srv, write) for an
  apigw.server.Server (never started) of export_config(): gen_config's 256 services and 512
  routes with a `monitoring` section (a row for each service and route). Before it, traffic on
  every route (TRAFFIC answers each, with its service) and on every service (those only respond
  routes reach get answers of route -1): every series has figures. write() only counts the
  bytes: `export_prometheus_bytes_256_services`, and what one export allocates in all
  (`export_prometheus_alloc_bytes_256_services`, short-lived: the collections it causes are in
  its time, so they depend on the free heap: `export_prometheus_heap_free_bytes`, before the
  first). Each export starts after gc.collect(); the figure is the median of 7 runs (3 with
  --quick).

The bare loop with the same indexing is taken off the per-call figures, so they include the
method lookups and calls. Each per-call figure is the median of batch means. tools/bench_mpy.py
calls run() and puts the figures with its own; run alone, it prints them. This file times things
and asserts nothing about speed; it raises if the monitor did not count what was recorded (a
figure for calls that did nothing would mean nothing). Under CPython only small_config() and
export_config() are of use (the smoke test loads them with the firmware's loader).
"""

import gc
import json
import sys
import time

try:
    import micropython  # type: ignore
except ImportError:  # CPython: the config functions only
    micropython = None

import gen_config

ALLOC_CALLS = 1000
EXPORT_SERVICES = 256
EXPORT_ROUTES = 512
TRAFFIC = 4  # answers recorded on each route of the export's gateway, statuses TRAFFIC_STATUS
TRAFFIC_STATUS = (200, 201, 404, 503)
# Eight statuses (indexed with i & 7): one 4xx, one 5xx, a 304.
STATUS = (200, 200, 201, 200, 304, 404, 200, 503)
# 64 latencies (indexed with i & 63), 40 us .. 1.75 s, and the upstream's part of each.
LAT = tuple(40 + 7 * k * k * k for k in range(64))
UP = tuple(LAT[k] * 3 // 4 if k & 1 else 0 for k in range(64))


def small_config():
    """16 services and 32 routes (tools/gen_config.py) with a monitoring section sized to them."""
    cfg = gen_config.make_config(16, 32)
    cfg["monitoring"] = {"services": 16, "routes": 32, "ring": 1024, "window_s": 60}
    return cfg


def export_config():
    """256 services and 512 routes (tools/gen_config.py) with a monitoring section (a row for each
    service and route: the section's default)."""
    cfg = gen_config.make_config(EXPORT_SERVICES, EXPORT_ROUTES)
    cfg["monitoring"] = {"ring": 1024, "window_s": 60}
    return cfg


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


class FakeSlot:
    """What monio.Monitoring reads of a connection slot."""

    def __init__(self, index):
        self.index = index
        self.route = -1
        self.status = 0


class ByteCount:
    """write() for write_exposition(): counts the bytes and pieces, keeps nothing."""

    def __init__(self):
        self.bytes = 0
        self.pieces = 0
        self.biggest = 0

    def write(self, piece):
        n = len(piece)
        self.bytes += n
        self.pieces += 1
        if n > self.biggest:
            self.biggest = n


def _load(cfg):
    from apigw.config import load_config_text

    return load_config_text(json.dumps(cfg))


# -- per call -------------------------------------------------------------------------------------


def _responses(mon, t0, reps):
    """Mean us per record_response() at now_ms = t0 .. t0 + reps - 1."""
    st = STATUS
    lat = LAT
    up = UP
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        k = i & 63
        mon.record_response(i & 31, i & 15, st[i & 7], lat[k], up[k], i)
    return time.ticks_diff(time.ticks_us(), s) / reps


def _requests(mon, t0, reps):
    """Mean us per record_request() (the same indexing as the responses' loop)."""
    st = STATUS
    lat = LAT
    up = UP
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        k = i & 63
        mon.record_request(i & 31, i & 15, i)
        st[i & 7]
        lat[k]
        up[k]
    return time.ticks_diff(time.ticks_us(), s) / reps


def _loop(t0, reps):
    """The bare loop with the same indexing."""
    st = STATUS
    lat = LAT
    up = UP
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        k = i & 63
        i & 31
        i & 15
        st[i & 7]
        lat[k]
        up[k]
    return time.ticks_diff(time.ticks_us(), s) / reps


def _hooks(m, slots, t0, reps):
    """Mean us per begin() + upstream() + end() (one request's hooks) on the fake slots."""
    st = STATUS
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        sl = slots[i & 3]
        sl.route = i & 31
        sl.status = st[i & 7]
        m.begin(sl)
        m.upstream(sl)
        m.end(sl)
    return time.ticks_diff(time.ticks_us(), s) / reps


def _hooks_loop(slots, t0, reps):
    """The hooks' loop without the calls."""
    st = STATUS
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        sl = slots[i & 3]
        sl.route = i & 31
        sl.status = st[i & 7]
    return time.ticks_diff(time.ticks_us(), s) / reps


def _alloc_responses(mon, t0, reps):
    """Bytes allocated per record_response() (mem_total delta, the bare loop's delta taken off)."""
    st = STATUS
    lat = LAT
    up = UP
    gc.collect()
    m0 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        k = i & 63
        i & 31
        i & 15
        st[i & 7]
        lat[k]
        up[k]
    m1 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        k = i & 63
        mon.record_response(i & 31, i & 15, st[i & 7], lat[k], up[k], i)
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def _alloc_hooks(m, slots, t0, reps):
    """Bytes allocated per begin() + upstream() + end() (the loop without the calls taken off)."""
    st = STATUS
    gc.collect()
    m0 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        sl = slots[i & 3]
        sl.route = i & 31
        sl.status = st[i & 7]
    m1 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        sl = slots[i & 3]
        sl.route = i & 31
        sl.status = st[i & 7]
        m.begin(sl)
        m.upstream(sl)
        m.end(sl)
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def run_calls(batches):
    """The per-call figures as a flat dict (keys as in build/bench.json)."""
    from apigw.monitor import G_REQUESTS

    cfg = _load(small_config())
    m = cfg.monitoring
    mon = m.mon
    if (mon.max_services, mon.max_routes, mon.ring_size, mon.window_s) != (16, 32, 1024, 60):
        raise ValueError("small_config(): a monitor of %d services, %d routes" % (mon.max_services, mon.max_routes))
    reps = 200
    now = 1000  # ms: advances by reps after each batch (far below 2**30 at the end)
    resp = []
    reqs = []
    loop = []
    for _ in range(batches):
        loop.append(_loop(now, reps))
        reqs.append(_requests(mon, now, reps))
        resp.append(_responses(mon, now, reps))
        now += reps
    alloc = _alloc_responses(mon, now, ALLOC_CALLS)
    now += ALLOC_CALLS
    answered = mon.responses()
    if answered != batches * reps + ALLOC_CALLS or mon.get_total_requests() != batches * reps:
        raise ValueError("the monitor counted %d responses, %d requests" % (answered, mon.get_total_requests()))

    slots = [FakeSlot(i) for i in range(4)]
    if cfg.listen.slots < len(slots):
        raise ValueError("small_config(): %d slots" % cfg.listen.slots)
    hooks = []
    hloop = []
    r0 = mon.global_counter(G_REQUESTS)
    for _ in range(batches):
        hloop.append(_hooks_loop(slots, 0, reps))
        hooks.append(_hooks(m, slots, 0, reps))
    halloc = _alloc_hooks(m, slots, 0, ALLOC_CALLS)
    if mon.global_counter(G_REQUESTS) - r0 != batches * reps + ALLOC_CALLS:
        raise ValueError("the hooks recorded %d requests" % (mon.global_counter(G_REQUESTS) - r0))
    lo = median(loop)
    return {
        "record_response_us": median(resp) - lo,
        "record_request_us": median(reqs) - lo,
        "record_response_alloc_bytes": alloc,
        "record_loop_overhead_us": lo,
        "monitoring_hooks_us": median(hooks) - median(hloop),
        "monitoring_hooks_alloc_bytes": halloc,
        "monitoring_hooks_loop_overhead_us": median(hloop),
    }


# -- the exposition ---------------------------------------------------------------------------------


def export_server():
    """A Server of export_config() (never started) with traffic on every route and service."""
    from apigw.monitor import F_REQUESTS
    from apigw.server import Server

    gc.collect()
    srv = Server(_load(export_config()))
    gc.collect()
    gw = srv.gw
    mon = srv.monitoring.mon
    if mon.max_services != EXPORT_SERVICES or mon.max_routes != EXPORT_ROUTES:
        raise ValueError("export_config(): a monitor of %d services, %d routes" % (mon.max_services, mon.max_routes))
    now = 0
    for r in range(gw.get_route_count()):
        svc = gw.route_service(r)
        for k in range(TRAFFIC):
            mon.record_request(r, svc, now)
            mon.record_response(r, svc, TRAFFIC_STATUS[k], LAT[(r + 17 * k) & 63], UP[(r + 17 * k) & 63], now)
            now += 1
    for s in range(gw.get_service_count()):
        if mon.service_counter(s, F_REQUESTS) == 0:  # reached by respond routes only
            for k in range(TRAFFIC):
                mon.record_request(-1, s, now)
                mon.record_response(-1, s, TRAFFIC_STATUS[k], LAT[(s + 17 * k) & 63], UP[(s + 17 * k) & 63], now)
                now += 1
    quiet = [s for s in range(gw.get_service_count()) if mon.service_counter(s, F_REQUESTS) == 0]
    if gw.get_service_count() != EXPORT_SERVICES or gw.get_route_count() != EXPORT_ROUTES or quiet:
        raise ValueError(
            "export gateway: %d services, %d routes, %d without traffic"
            % (gw.get_service_count(), gw.get_route_count(), len(quiet))
        )
    return srv


def run_export(runs):
    """The exposition's figures as a flat dict (keys as in build/bench.json)."""
    from apigw.promexport import write_exposition

    srv = export_server()
    gc.collect()
    free = gc.mem_free()  # type: ignore[attr-defined]  # the room its collections have
    times = []
    count = None
    alloc = 0
    for _ in range(runs):
        count = ByteCount()
        gc.collect()
        m0 = micropython.mem_total()
        t0 = time.ticks_us()
        write_exposition(srv, count.write)
        dt = time.ticks_diff(time.ticks_us(), t0)
        alloc = micropython.mem_total() - m0
        times.append(dt / 1000)
    srv = None
    gc.collect()
    return {
        "export_prometheus_ms_256_services": median(times),
        "export_prometheus_bytes_256_services": count.bytes,
        "export_prometheus_pieces_256_services": count.pieces,
        "export_prometheus_biggest_piece_bytes": count.biggest,
        "export_prometheus_alloc_bytes_256_services": alloc,
        "export_prometheus_runs": runs,
        "export_prometheus_heap_free_bytes": free,
    }


def run(batches):
    """Every figure of this file as a flat dict."""
    out = run_calls(batches)
    gc.collect()
    out.update(run_export(3 if batches < 15 else 7))
    return out


if __name__ == "__main__":
    for k, v in sorted(run(7 if "--quick" in sys.argv else 31).items()):
        print("%-44s %s" % (k, v))

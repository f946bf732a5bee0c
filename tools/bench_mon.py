"""The benchmark's monitoring phase: what recording every request costs the direct route's throughput.

tools/bench.py calls run() after the resilience phase (no other gateway runs then). Two gateways,
"gateway-mon-off" and "gateway-mon-on", have the same config, mon_config(): a `respond` route
/direct (as the main gateway's) and nothing else; the second has a `monitoring` section too
(MONITORING: ring 1024, window 60 s; no auth section, so its endpoints are open). They never run
at once: before each load (benchproc.measure_loads' settle) the running one is stopped and the
one the load is for boots anew and gets a warm-up (the first round's is measure_loads' own), so
every load meets a gateway in the same state. Loads of /direct, monitoring off and on, in
alternating rounds with the same tool and connections as the other phases, medians reported:
`rps_direct_mon_off`, `rps_direct_mon_on`, their p50/p99 and CPU per request, and
`monitoring_on_vs_off_rps_ratio` (target >= 0.95: timing and counting every request costs at most
5 % of the cheapest route's throughput). The heap in use after each one's first boot
(`heap_after_boot_mon_off_bytes`, `_on_`) shows what the section's tables take.

Checks (BenchError when one fails, the figures would be of something else): the gateway without
the section answers GET /_gw/stats with no document (not a 200); after the rounds, one more load
of /direct (the same tool, the loads' duration but CHECK_S at most) at the gateway with the
section must have grown its /_gw/stats `requests` by more than the answers the load tool
counted, and its 2xx responses by at least as many (`mon_check_load_requests`,
`mon_counted_requests`, `mon_counted_2xx`).
"""

import http.client
import json

from benchproc import (
    CONNECTIONS,
    BenchError,
    first_health,
    free_port,
    load,
    measure_loads,
    start_firmware,
    stop,
    tail,
)

import loadgen

PATH = "/direct"
MONITORING = {"ring": 1024, "window_s": 60}
NAMES = ("direct_mon_off", "direct_mon_on")  # the phases, in each round's order
CHECK_S = 2.0  # the counted load's length at most (the loads' duration if shorter)


def mon_config(port, monitoring):
    """The direct route /direct and nothing else; with monitoring, the `monitoring` section."""
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port, "slots": CONNECTIONS, "queue_max": 8},
        "limits": {"services": 4, "routes": 4, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [],
        "routes": [{"path": PATH, "match": "exact", "respond": {"status": 200, "body": {"ok": True}}}],
    }
    if monitoring:
        cfg["monitoring"] = dict(MONITORING)
    return cfg


def stats(port):
    """GET /_gw/stats on a connection of its own (http.client: the document comes chunked):
    (status, the document, or None unless 200)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/_gw/stats")
        r = conn.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException) as e:
        raise BenchError("GET /_gw/stats: %s" % e)
    finally:
        conn.close()
    if r.status != 200:
        return r.status, None
    try:
        return r.status, json.loads(body)
    except ValueError:
        raise BenchError("/_gw/stats is not JSON: %r" % body[:200])


class Running:
    """measure_loads' server of a phase: pid is that of gateway i of gws at the time it is read."""

    def __init__(self, gws, i):
        self.gws = gws
        self.i = i

    @property
    def pid(self):
        return self.gws.procs[self.i].pid


class OneAtATime:
    """The two gateways (index 0: monitoring off, 1: on), at most one running."""

    def __init__(self, tmp, firmware):
        self.tmp = tmp
        self.firmware = firmware
        self.ports = (free_port(), free_port())
        self.procs = [None, None]
        self.logs = [None, None]
        self.boots = [0, 0]

    def url(self, i):
        return "http://127.0.0.1:%d%s" % (self.ports[i], PATH)

    def stop(self, i):
        p = self.procs[i]
        if p is not None and p.poll() is not None:
            raise BenchError("%s exited; log:\n%s" % (NAMES[i], tail(self.logs[i])))
        stop(p)
        self.procs[i] = None

    def boot(self, i):
        """Stop both, then start gateway i; returns whether it is its first boot."""
        self.stop(0)
        self.stop(1)
        name = "gateway-mon-" + ("on" if i else "off")
        self.procs[i], self.logs[i] = start_firmware(
            self.tmp, name, mon_config(self.ports[i], i == 1), self.ports[i], self.firmware
        )
        self.boots[i] += 1
        return self.boots[i] == 1

    def close(self):
        for p in self.procs:
            stop(p)
        self.procs = [None, None]


def run(res, tool, duration, rounds, warm, firmware, tmp):
    """The monitoring phase, figures into res. Raises BenchError; every process it started is
    stopped."""
    gws = OneAtATime(tmp, firmware)
    try:
        print("monitoring: loads of %s, monitoring off and on (one gateway at a time) ..." % PATH, flush=True)
        loads = [0]  # measure_loads calls settle before each load: the phases in order, round by round

        def settle():
            i = loads[0] % 2
            first = gws.boot(i)
            if first:
                h = first_health(gws.ports[i])
                res["heap_after_boot_mon_%s_bytes" % ("on" if i else "off")] = h["heap_used"]
                status, doc = stats(gws.ports[i])
                if (status == 200) != (i == 1) or (i == 1 and "requests" not in doc):
                    raise BenchError("%s: GET /_gw/stats answered %d" % (NAMES[i], status))
            if loads[0] >= 2:  # measure_loads warms the first round's loads itself
                loadgen.run(gws.url(i), CONNECTIONS, warm)
            loads[0] += 1

        phases = tuple((NAMES[i], gws.url(i), Running(gws, i), ()) for i in (0, 1))
        measure_loads(res, tool, duration, rounds, warm, phases, [], (), None, settle)
        res["monitoring_on_vs_off_rps_ratio"] = res["rps_direct_mon_on"] / res["rps_direct_mon_off"]

        # The gateway with monitoring runs (the last load was its): did it count every request?
        port = gws.ports[1]
        print("monitoring: one more load of %s, counted by /_gw/stats ..." % PATH, flush=True)
        _, s0 = stats(port)
        r = load(tool, gws.url(1), min(duration, CHECK_S))
        _, s1 = stats(port)
        if s0 is None or s1 is None:
            raise BenchError("%s: GET /_gw/stats did not answer 200" % NAMES[1])
        n = r.get("requests") or 0
        res["mon_check_load_requests"] = n
        res["mon_counted_requests"] = s1["requests"] - s0["requests"]
        res["mon_counted_2xx"] = s1["status_classes"]["2xx"] - s0["status_classes"]["2xx"]
        if not n or res["mon_counted_requests"] <= n or res["mon_counted_2xx"] < n:
            raise BenchError(
                "the load had %d answers; the monitoring gateway counted %d requests, %d 2xx"
                % (n, res["mon_counted_requests"], res["mon_counted_2xx"])
            )
        gws.stop(1)  # raises if it exited on its own
    finally:
        gws.close()
    return res

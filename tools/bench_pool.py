"""The benchmark's load-balancing phase: throughput through a pool of 3 instances against a pool
of 1, and how many upstream connections the gateway opens for them.

tools/bench.py calls run() after its own gateway is stopped (the two never share the CPU). A
gateway of its own ("gateway-pool") starts with pool_config(): services pool1 and pool3, routed
at /pool1 and /pool3, send to the round-robin pools "one" (instance A) and "three" (A, B, C),
three new bare servers (tools/bare_server.py); no health checks, so nothing but the benchmark's
requests reaches them. Idle upstream connections are capped at CONNECTIONS per instance and
3 x CONNECTIONS in all (POOL_SIZE), so four client connections can keep one upstream
connection busy per instance and slot.

1. From the freshly booted gateway, exactly POOL_REQUESTS requests to /pool3 over CONNECTIONS
   concurrent keep-alive client connections; the gateway's own count of the upstream
   connections it opened (/_gw/health lb.upstream.connects, a delta; it includes the first
   connects) is `upstream_connections_per_1000_requests` (target: at most POOL_SIZE), and the
   answers each instance wrote (/proc/PID/io) show the requests were spread.
2. Loads of /pool1 and /pool3 in rounds (benchproc.measure_loads, as the main loads):
   `rps_pooled_1`, `rps_pooled_3`, their p50/p99, and `pooled_3_vs_1_rps_ratio` (target >= 0.90:
   spreading over three instances costs at most 10%), and the upstream connections opened
   during each phase's loads (`upstream_connects_pooled_1`, `_3`). Pool "one"'s instance is a
   target of its own (another instance id than A in "three"), so four targets share the 12 idle
   places: one phase's idle connections would hold places into the next until idle_ms closes
   them, the table would fill, connections given back would be closed and the next request to
   that instance would connect again (the pool of 1 would pay for what the pool of 3 left). So
   each load starts once the gateway keeps no idle upstream connection (up to ~5 s of waiting).
3. The gateway's final connects count, then the gateway stops and then the bare servers: the
   connections they accepted in all (`upstream_connections_accepted_pool`) must be the same
   number, or the count above is not to be trusted and BenchError is raised. The bare servers
   are started without a probe connection, so they count the gateway's connections only.
"""

import threading
import time

from benchproc import (
    CONNECTIONS,
    BenchError,
    answers,
    first_health,
    free_port,
    measure_loads,
    start_bare,
    start_firmware,
    stop,
    stop_bare,
    tail,
    upstream_answers,
)

import bare_server
import loadgen

POOL_INSTANCES = 3
POOL_SIZE = POOL_INSTANCES * CONNECTIONS  # idle upstream connections the gateway may keep
POOL_REQUESTS = 1000
PATHS = ("/pool1", "/pool3")
IDLE_MS = 4000  # balancer.idle_ms (its default): idle upstream connections are closed after this


def pool_config(port, instance_ports):
    """A gateway whose service pool1 (/pool1) sends to pool "one" (the first instance) and pool3
    (/pool3) to pool "three" (all of them), round robin, no health checks; idle upstream
    connections: CONNECTIONS per instance and, in all, CONNECTIONS per instance of "three"."""
    instances = [{"host": "127.0.0.1", "port": p} for p in instance_ports]
    return {
        "listen": {"host": "127.0.0.1", "port": port, "slots": CONNECTIONS, "queue_max": 8},
        "limits": {"services": 4, "routes": 4, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [{"name": "pool1", "pool": "one"}, {"name": "pool3", "pool": "three"}],
        "routes": [
            {"path": PATHS[0], "match": "prefix", "service": "pool1"},
            {"path": PATHS[1], "match": "prefix", "service": "pool3"},
        ],
        "pools": [
            {"name": "one", "strategy": "round_robin", "instances": instances[:1]},
            {"name": "three", "strategy": "round_robin", "instances": instances},
        ],
        "balancer": {
            "pools": 2,
            "instances": len(instances) + 1,
            "max_idle_per_instance": CONNECTIONS,
            "max_idle": len(instances) * CONNECTIONS,
            "idle_ms": IDLE_MS,
        },
    }


def upstream_stats(port):
    """/_gw/health lb.upstream of the gateway: connects (opened since boot), reuses, idle, ..."""
    lb = first_health(port).get("lb")
    if not lb or not lb.get("upstream"):
        raise BenchError("/_gw/health has no lb.upstream section: the gateway did not load its pools")
    return lb["upstream"]


def connects(port):
    """The upstream connections the gateway has opened since boot."""
    return upstream_stats(port)["connects"]


def wait_no_idle(port, timeout=IDLE_MS / 1000.0 + 4.0):
    """Wait until the gateway has closed every idle upstream connection (idle_ms, then the reaper's
    sweep, once a second). Before each load: the other pool's idle connections would otherwise
    take places of the shared cap, and connections given back beyond it are closed."""
    end = time.time() + timeout
    while True:
        idle = upstream_stats(port)["idle"]
        if idle == 0:
            return
        if time.time() > end:
            raise BenchError("the pool gateway still keeps %d idle upstream connections after %g s" % (idle, timeout))
        time.sleep(0.2)


def requests_over(port, path, n, connections):
    """GET path n times over `connections` concurrent keep-alive connections (n / connections
    each, the remainder on the first); every answer must be the bare server's 200 on a kept
    connection."""
    failures = []

    def client(count):
        c = loadgen.Connection("127.0.0.1", port)
        try:
            c.open()
            for _ in range(count):
                status, body, keep = c.get(path)
                if status != 200 or not keep or body != bare_server.BODY:
                    failures.append("%d (keep-alive %s): %r" % (status, keep, body[:200]))
                    return
        except (OSError, ValueError) as e:
            failures.append(repr(e))
        finally:
            c.close()

    share = [n // connections + (n % connections if i == 0 else 0) for i in range(connections)]
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise BenchError("GET %s: %s" % (path, failures[0]))


def run(res, tool, duration, rounds, warm, firmware, tmp):
    """The pool phase, figures into res. Raises BenchError; every process it started is stopped."""
    bares = []
    gw = None
    try:
        ports = [free_port() for _ in range(POOL_INSTANCES)]
        for i, p in enumerate(ports):
            bares.append(start_bare(tmp, p, "pool-instance-%d" % i, probe=False))
        port = free_port()
        cfg = pool_config(port, ports)
        gw, gw_log = start_firmware(tmp, "gateway-pool", cfg, port, firmware)
        procs = [p for p, _ in bares]
        res["upstream_pool_size"] = len(cfg["pools"][1]["instances"]) * cfg["balancer"]["max_idle_per_instance"]
        if res["upstream_pool_size"] != POOL_SIZE or cfg["balancer"]["max_idle"] != POOL_SIZE:
            raise BenchError("pool_config: the idle connection cap is not POOL_SIZE")  # the table's target

        print("pool: %d requests to %s over %d connections ..." % (POOL_REQUESTS, PATHS[1], CONNECTIONS), flush=True)
        c0 = connects(port)
        a0 = [upstream_answers(p.pid) for p in procs]
        requests_over(port, PATHS[1], POOL_REQUESTS, CONNECTIONS)
        c1 = connects(port)
        a1 = [upstream_answers(p.pid) for p in procs]
        res["upstream_connections_per_1000_requests"] = c1 - c0  # POOL_REQUESTS is 1000
        res["pool_answers_per_instance"] = " ".join(str(y - x) for x, y in zip(a0, a1))
        if min(a0) >= 0 and sum(a1) - sum(a0) != POOL_REQUESTS:
            raise BenchError("the instances answered %d requests, not %d" % (sum(a1) - sum(a0), POOL_REQUESTS))

        url = "http://127.0.0.1:%d%s"
        phases = (("pooled_1", url % (port, PATHS[0]), gw, ()), ("pooled_3", url % (port, PATHS[1]), gw, ()))
        measure_loads(
            res,
            tool,
            duration,
            rounds,
            warm,
            phases,
            procs,
            ("pooled_1", "pooled_3"),
            connects=lambda: connects(port),
            settle=lambda: wait_no_idle(port),
        )
        res["pooled_3_vs_1_rps_ratio"] = res["rps_pooled_3"] / res["rps_pooled_1"]
        res["upstream_requests_pool"] = answers(procs)  # every request of the phase, warm-ups included

        if gw.poll() is not None:
            raise BenchError("the pool gateway exited; log:\n" + tail(gw_log))
        final = connects(port)
        stop(gw)
        gw = None
        accepted = [stop_bare(p, log) for p, log in bares]
        bares = []
        res["upstream_connections_pool"] = final
        res["upstream_connections_accepted_pool"] = sum(accepted)
        if sum(accepted) != final:
            raise BenchError(
                "the pool gateway counts %d upstream connections, its instances accepted %d (%s)"
                % (final, sum(accepted), " + ".join(str(a) for a in accepted))
            )
    finally:
        stop(gw)
        for p, log in bares:
            stop_bare(p, log)
    return res

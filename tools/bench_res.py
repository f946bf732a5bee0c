"""The benchmark's resilience phase: what an open circuit breaker costs a refused request, and what a
hung upstream costs the requests of another route.

tools/bench.py calls run() after the pool phase (no other gateway runs then). A gateway of its
own ("gateway-res") starts with res_config(), four routes:
- /direct, a `respond` route (as the main gateway's);
- /open, service "down": a port where nothing listens, with a breaker that opens on the first
  failure (failure_threshold 1, failure_rate_threshold 0) and stays open for an hour
  (reset_timeout RESET_MS, longer than any run);
- /healthy, service "healthy": a bare server (tools/bare_server.py);
- /hung, service "hung": HungUpstream, a TCP server in this process that accepts connections and
  never answers, behind a bulkhead of one call and no queue (max_concurrent 1, max_waiting 0)
  and a first-byte timeout of HUNG_TIMEOUT_MS, so hung calls hold at most one of the gateway's
  slots at a time.
listen.slots is CONNECTIONS for the loads plus NEIGHBOURS for the clients of /hung.

1. One GET /open trips the breaker (a 502: connection refused); the next must be a 503 with error
   circuit_open and a Retry-After, or BenchError. Then loads of /open and /direct in rounds
   (benchproc.measure_loads, as the main loads; the 503s of /open are its answers, not errors):
   `rps_open_breaker`, `rps_direct_res`, their p50/p99 and `open_breaker_vs_direct_rps_ratio`
   (target >= 0.90: a refusal costs about what a direct answer does). Every answer of /open must
   have been non-2xx and the gateway's count of circuit_open refusals (/_gw/health
   resilience.refused_open) must have grown by at least the answers the load tool counted, or
   BenchError (the figure would be of something else). Then the bytes allocated per refusal
   (`alloc_bytes_per_open_breaker_request`: alloc_total of /_gw/health before and after
   ALLOC_REQUESTS requests to /open over one keep-alive connection, as bench.py's alloc figures).
2. Loads of /healthy in rounds, alone (`healthy_alone`) and then with the hung neighbour
   (`healthy_hung`): before each load with it (and its warm-up) NEIGHBOURS client threads start
   sending GET /hung back to back over keep-alive connections; one call at a time hangs in the
   bulkhead's permit until the gateway's timeout answers 504 gateway_timeout, the other clients
   get 503 bulkhead_full at once and wait NEIGHBOUR_PAUSE_S before the next (they stand for
   clients of a failing service, not for a flood of refusals competing for the CPU). Before each
   load without it the clients are stopped, each after its call in flight ended (so the gateway
   holds no hung call). `p99_ms_healthy_alone`, `p99_ms_healthy_hung` and
   `healthy_p99_with_hung_neighbour_ratio` (target <= 1.5). The neighbours' answers are counted
   (`hung_neighbour_504`, `hung_neighbour_503`); any other answer, or none of either kind, is a
   BenchError (the hung call or the bulkhead did not do what the figure is about).
"""

import http.client
import json
import socket
import threading
import time

from benchproc import (
    CONNECTIONS,
    BenchError,
    first_health,
    free_port,
    gateway_connection,
    health,
    measure_loads,
    start_bare,
    start_firmware,
    stop,
    stop_bare,
    tail,
)

import loadgen

RESET_MS = 3600000  # the breaker's reset_timeout: it stays open for the whole run
HUNG_TIMEOUT_MS = 2000  # first_byte_ms of the hung service: a hung call ends with a 504 after this
NEIGHBOURS = 2  # clients of /hung: one holds the bulkhead's permit, the other is refused
NEIGHBOUR_PAUSE_S = 0.02  # a refused neighbour's wait before its next request
SLOTS = CONNECTIONS + NEIGHBOURS
ALLOC_REQUESTS = 1000
PATHS = ("/direct", "/open", "/healthy", "/hung")


def res_config(port, healthy_port, down_port, hung_port):
    """The resilience gateway: /direct answers itself, /open goes to a service nobody listens for
    behind a breaker that opens on the first failure and stays open, /healthy to a bare server,
    /hung to a server that never answers, behind a bulkhead of one call and a first-byte timeout."""
    breaker = {"failure_threshold": 1, "failure_rate_threshold": 0, "reset_timeout": RESET_MS}
    hung = {
        "bulkhead": {"max_concurrent": 1, "max_waiting": 0},
        "timeouts": {"first_byte_ms": HUNG_TIMEOUT_MS},
    }
    return {
        "listen": {"host": "127.0.0.1", "port": port, "slots": SLOTS, "queue_max": 8},
        "limits": {"services": 4, "routes": 4, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [
            {"name": "down", "host": "127.0.0.1", "port": down_port, "resilience": {"breaker": breaker}},
            {"name": "healthy", "host": "127.0.0.1", "port": healthy_port},
            {"name": "hung", "host": "127.0.0.1", "port": hung_port, "resilience": hung},
        ],
        "routes": [
            {"path": PATHS[0], "match": "exact", "respond": {"status": 200, "body": {"ok": True}}},
            {"path": PATHS[1], "service": "down"},
            {"path": PATHS[2], "service": "healthy"},
            {"path": PATHS[3], "service": "hung"},
        ],
    }


class HungUpstream:
    """A TCP server on loopback that accepts connections, reads what comes and never answers; a
    thread per connection, until the peer closes it or stop()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    def _drain(self, c):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        self.thread.join(5)


class Neighbour:
    """NEIGHBOURS client threads sending GET /hung back to back between start() and stop(); the
    answers are counted by (status, error) in self.answers, failures kept in self.failures."""

    def __init__(self, port):
        self.port = port
        self.answers = {}
        self.failures = []
        self.lock = threading.Lock()
        self.running = False
        self.threads = []

    def start(self):
        if self.running:
            return
        self.running = True
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(NEIGHBOURS)]
        for t in self.threads:
            t.start()
            time.sleep(0.05)  # the first one takes the permit

    def stop(self):
        """Stop the clients, each after its request in flight is answered (a hung one by the
        gateway's timeout): the gateway holds no call to /hung afterwards."""
        self.running = False
        for t in self.threads:
            t.join(HUNG_TIMEOUT_MS / 1000.0 + 5.0)
            if t.is_alive():
                self.failures.append("a client of %s got no answer in %g s" % (PATHS[3], HUNG_TIMEOUT_MS / 1000.0 + 5))
        self.threads = []

    def _client(self):
        c = loadgen.Connection("127.0.0.1", self.port)
        try:
            while self.running:
                if c.sock is None:
                    c.open()
                status, body, keep = c.get(PATHS[3])
                try:
                    error = json.loads(body).get("error", "")
                except ValueError:
                    error = body[:40].decode("latin-1")
                key = "%d %s" % (status, error)
                with self.lock:
                    self.answers[key] = self.answers.get(key, 0) + 1
                if not keep:
                    c.close()
                if status == 503:
                    time.sleep(NEIGHBOUR_PAUSE_S)
        except (OSError, ValueError, IndexError) as e:
            with self.lock:
                self.failures.append(repr(e))
        finally:
            c.close()


def check_open_route(port):
    """Trip the breaker of /open with one request (the connection is refused: 502), then one more
    must be refused by the open breaker: 503, error circuit_open, Retry-After of about an hour."""
    got = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", PATHS[1])
            r = conn.getresponse()
            got.append((r.status, r.getheader("Retry-After"), r.read()))
        except (OSError, http.client.HTTPException) as e:
            raise BenchError("GET %s: %s" % (PATHS[1], e))
        finally:
            conn.close()
    (s1, _, b1), (s2, ra, b2) = got
    if s1 != 502:
        raise BenchError("GET %s (nothing listens upstream) answered %d: %r" % (PATHS[1], s1, b1[:200]))
    try:
        error = json.loads(b2).get("error")
    except ValueError:
        error = None
    if s2 != 503 or error != "circuit_open" or not ra or not ra.isdigit():
        raise BenchError("GET %s with the breaker open answered %d (Retry-After %s): %r" % (PATHS[1], s2, ra, b2[:200]))
    if not RESET_MS // 1000 - 60 <= int(ra) <= RESET_MS // 1000:
        raise BenchError("GET %s: Retry-After %s, not the breaker's reset_timeout" % (PATHS[1], ra))


def alloc_per_refusal(port, n):
    """Bytes allocated per request the open breaker refuses: (alloc_total delta over n requests to
    /open on one keep-alive connection) less one health request's own (two back-to-back)."""
    c = gateway_connection(port)
    try:
        for _ in range(20):
            c.get(PATHS[1])
        h1 = health(c)["alloc_total"]
        h2 = health(c)["alloc_total"]
        for _ in range(n):
            status, _, keep = c.get(PATHS[1])
            if status != 503 or not keep:
                raise BenchError("GET %s answered %d (keep-alive %s), not a kept 503" % (PATHS[1], status, keep))
        h3 = health(c)["alloc_total"]
    finally:
        c.close()
    return ((h3 - h2) - (h2 - h1)) / n


def resilience_stats(port):
    r = first_health(port).get("resilience")
    if not r:
        raise BenchError("/_gw/health has no resilience section: the gateway did not load its resilience settings")
    return r


def run(res, tool, duration, rounds, warm, firmware, tmp):
    """The resilience phase, figures into res. Raises BenchError; every process and thread it
    started is stopped."""
    bare = gw = hung = neighbour = None
    try:
        hung = HungUpstream()
        healthy_port, port = free_port(), free_port()
        bare, bare_log = start_bare(tmp, healthy_port, "res-healthy")
        cfg = res_config(port, healthy_port, free_port(), hung.port)  # nothing listens at the second
        gw, gw_log = start_firmware(tmp, "gateway-res", cfg, port, firmware)
        url = "http://127.0.0.1:%d%s"

        print(
            "resilience: trip the breaker of %s, then loads of %s and %s ..." % (PATHS[1], PATHS[1], PATHS[0]),
            flush=True,
        )
        check_open_route(port)
        r0 = resilience_stats(port)
        phases = (("open_breaker", url % (port, PATHS[1]), gw, ()), ("direct_res", url % (port, PATHS[0]), gw, ()))
        measure_loads(res, tool, duration, rounds, warm, phases, [], answered=("open_breaker",))
        r1 = resilience_stats(port)
        res["open_breaker_vs_direct_rps_ratio"] = res["rps_open_breaker"] / res["rps_direct_res"]
        res["refused_open_breaker"] = r1["refused_open"] - r0["refused_open"]  # warm-up included
        if r1["open"] != 1 or res["non_2xx_open_breaker"] != res["requests_open_breaker"]:
            raise BenchError(
                "the loads of %s: %d of %d answers non-2xx, %d breaker(s) open"
                % (PATHS[1], res["non_2xx_open_breaker"], res["requests_open_breaker"], r1["open"])
            )
        if res["refused_open_breaker"] < res["requests_open_breaker"]:
            raise BenchError(
                "the loads of %s had %d answers, the breaker refused %d"
                % (PATHS[1], res["requests_open_breaker"], res["refused_open_breaker"])
            )
        res["alloc_bytes_per_open_breaker_request"] = alloc_per_refusal(port, ALLOC_REQUESTS)

        print(
            "resilience: loads of %s alone, then with clients of %s (it never answers) ..." % (PATHS[2], PATHS[3]),
            flush=True,
        )
        neighbour = Neighbour(port)
        loads = [0]  # measure_loads calls settle before each load: the phases in order, round by round

        def settle():
            if loads[0] % 2:
                neighbour.start()  # before healthy_hung
            else:
                neighbour.stop()  # before healthy_alone
            loads[0] += 1

        phases = (
            ("healthy_alone", url % (port, PATHS[2]), gw, ()),
            ("healthy_hung", url % (port, PATHS[2]), gw, ()),
        )
        r0 = resilience_stats(port)
        measure_loads(
            res, tool, duration, rounds, warm, phases, [bare], ("healthy_alone", "healthy_hung"), None, settle
        )
        neighbour.stop()
        r1 = resilience_stats(port)
        res["healthy_p99_with_hung_neighbour_ratio"] = res["p99_ms_healthy_hung"] / res["p99_ms_healthy_alone"]
        answers = neighbour.answers
        res["hung_neighbour_504"] = answers.get("504 gateway_timeout", 0)
        res["hung_neighbour_503"] = answers.get("503 bulkhead_full", 0)
        res["hung_neighbour_refused_full"] = r1["refused_full"] - r0["refused_full"]
        res["hung_upstream_connections"] = hung.accepted
        other = dict((k, v) for k, v in answers.items() if k not in ("504 gateway_timeout", "503 bulkhead_full"))
        if neighbour.failures or other or not res["hung_neighbour_504"] or not res["hung_neighbour_503"]:
            raise BenchError(
                "the clients of %s: answers %s, failures %s" % (PATHS[3], answers or "none", neighbour.failures[:3])
            )

        if gw.poll() is not None:
            raise BenchError("the resilience gateway exited; log:\n" + tail(gw_log))
        stop(gw)
        gw = None
        stop_bare(bare, bare_log)
        bare = None
    finally:
        if neighbour is not None:
            neighbour.running = False  # daemon threads: they end with their connection or the process
        stop(gw)
        if bare is not None:
            stop_bare(bare, bare_log)
        if hung is not None:
            hung.stop()
    return res

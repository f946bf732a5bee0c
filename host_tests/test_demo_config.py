"""The demo config (boards/unix/gateway.json) loads, on both runtimes, and routes as the README says.

Apart from test_config.py: it loads every optional section (auth, mediation, pools, resilience), whose code compiled
from source takes a large part of the test interpreter's heap; a fresh interpreter keeps that out
of the loader's own heap tests.
"""

# mpy_run: heapsize=1024k  (every optional section's code, compiled here from source; a board loads it
# precompiled, and the demo config is the unix board's, not a small board's)

from apigw.config import load_config
from check import root


def test_demo_config_loads():
    cfg = load_config(root() + "/boards/unix/gateway.json")
    gw = cfg.gateway
    assert cfg.listen.host == "127.0.0.1" and cfg.listen.port == 8080 and cfg.listen.slots == 4
    assert gw.get_service_count() == 7 and gw.get_service("slow").timeout_ms == 1000
    assert gw.get_service("sensor-pool").pool == 0 and cfg.balancer.lb.pools()[0].instances == [0, 1, 2]
    assert gw.get_service("sensors").port == 9001 and gw.get_service("flaky").port == 9004
    g = cfg.guard  # resilience: a breaker and retries on guarded-flaky, a bulkhead on guarded-slow
    flaky = gw.get_service("guarded-flaky").id
    slow = gw.get_service("guarded-slow").id
    assert g.breakers.find("guarded-flaky") == g.s_breaker[flaky] >= 0 and g.s_retry[flaky] >= 0
    assert g.bulkheads.find("guarded-slow") == g.s_bulkhead[slow] >= 0 and g.s_timeouts[1][slow] == 1500
    r, allow = gw.route("GET", "/health/ping")
    assert gw.respond_parts(r)[0] == 200 and gw.respond_parts(r)[1] == b"application/json"
    expect = (
        ("GET", "/api/sensors/t1", None, "sensors", b"/t1"),
        ("GET", "/api/controller/x", None, "controller", b"/v1/x"),
        ("GET", "/devices/7/status", None, "controller", b"/devices/7/status"),
        ("GET", "/legacy/42", None, "sensors", b"/echo"),
        ("GET", "/api/config", None, "controller", b"/api/config"),
        ("GET", "/api/other", {"X-Api-Version": "2"}, "controller", b"/v2/other"),
        ("GET", "/slow", None, "slow", b"/slow"),
        ("GET", "/flaky/x", None, "flaky", b"/flaky/x"),
    )
    for method, path, headers, service, upstream in expect:
        r, allow = gw.route(method, path, headers)
        assert r >= 0, path
        sid = gw.dispatch_request(gw._scratch)
        assert gw.get_service(sid).name == service and gw.upstream_path(gw._scratch) == upstream, path
    assert gw.route("POST", "/api/config") == (-405, 1)
    assert gw.route("GET", "/api/other")[0] == -404
    assert cfg.gate is not None and cfg.mediator is not None
    assert gw.route_transform(gw.route_id("cached")) == cfg.mediator.transform_id("cached")

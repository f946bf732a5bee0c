"""Reference router: the same decision as ApiGateway.route_request, by scanning every route.

linear_route(gw, slot, order) tries the routes in precedence order (order =
gw.precedence_order(), computed once) with the same byte compares as the gateway, and no
index. Tests use it to check the index gives the same answers; the benchmark uses it as the
baseline the index is measured against. Like route_request it returns a route id, -404 or -405
and sets slot.route and slot.allow. It allocates only for regex routes.
"""

from apigw.gateway import RoutePattern, match_segments
from apigw.native import mem_eq

_EXACT = RoutePattern.EXACT
_PREFIX = RoutePattern.PREFIX
_WILDCARD = RoutePattern.WILDCARD


def linear_order(gw):
    """Route ids in precedence order (allocates; compute once per table)."""
    return gw.precedence_order()


def _path_matches(gw, r, slot, path_bytes):
    buf = slot.buf
    ps = slot.path_start
    pe = slot.path_end
    st = gw.strtab
    pid = gw._pat[r]
    o = st.off[pid]
    kind = gw._kind[r]
    n = gw._lit[r]
    if kind == _EXACT:
        return n == pe - ps and mem_eq(st.buf, o, buf, ps, n)
    if kind == _PREFIX or kind == _WILDCARD:
        if n > pe - ps or not mem_eq(st.buf, o, buf, ps, n):
            return False
        e = ps + n  # the literal must end at a segment boundary
        if e < pe and buf[e] != 47:
            return False
        if kind == _PREFIX:
            return True
        return match_segments(st.buf, o + n, o + st.size[pid], buf, e, pe)
    rx = gw._rx[gw._rx_ids.index(r)]
    return rx.match(path_bytes) is not None


def linear_route(gw, slot, order):
    """Scan the routes in order; same answer as gw.route_request(slot)."""
    allow = 0
    path_bytes = None
    for r in order:
        if gw._kind[r] == RoutePattern.REGEX and path_bytes is None:
            path_bytes = bytes(slot.buf[slot.path_start : slot.path_end])
        if not _path_matches(gw, r, slot, path_bytes):
            continue
        c = gw._hc[r]
        if c >= 0 and not gw._headers_ok(c, slot):
            continue
        m = gw._methods[r]
        if m == 0 or m & slot.method:
            slot.route = r
            slot.allow = 0
            return r
        allow |= m
    slot.route = -1
    slot.allow = allow
    return -405 if allow else -404


def mixed_table(gw, services=32):
    """Fill gw with the standard 512-route mixed table (benchmarks and tests)."""
    for i in range(services):
        gw.register_service("svc%d" % i, "10.0.%d.%d" % (i // 250, i % 250 + 1), 8000 + i)
    n = 0
    for i in range(160):  # exact
        path = "/static/page%d" % i if i % 2 else "/v1/items/%d/detail" % i
        gw.add_route(path, "exact", service=i % services)
        n += 1
    for i in range(100):  # prefix, two depths
        gw.add_route("/api/svc%d" % i, service=i % services, strip_prefix=True)
        gw.add_route("/api/svc%d/v2" % i, service=(i + 1) % services, rewrite="/v2")
        n += 2
    for i in range(64):  # wildcard
        gw.add_route("/devices/%d/*/status" % i, "wildcard", service=i % services)
        gw.add_route("/files/%d/**" % i, "wildcard", service=i % services)
        n += 2
    for i in range(8):  # method- and header-conditioned routes
        gw.add_route("/admin/%d" % i, methods=["POST", "PUT"], service=i)
        gw.add_route("/admin/%d" % i, headers={"X-Api-Version": "2"}, service=i + 1)
        n += 2
    for i in range(8):  # regex
        gw.add_route("^/legacy/%d/[0-9]+$" % i, "regex", service=i, rewrite="/echo")
        n += 1
    assert n == 512
    return n


# (method, path, headers) requests over mixed_table: hits of every kind, 405s and 404s.
MIXED_REQUESTS = (
    ("GET", "/static/page17", None),
    ("GET", "/v1/items/42/detail", None),
    ("GET", "/api/svc7/users/12", None),
    ("POST", "/api/svc93/v2/orders", None),
    ("GET", "/api/svc55", None),
    ("GET", "/devices/12/abc/status", None),
    ("GET", "/files/40/a/b/c.txt", None),
    ("POST", "/admin/3/users", None),
    ("GET", "/admin/5", (("X-Api-Version", "2"),)),
    ("GET", "/admin/6/x", (("Accept", "*/*"), ("x-api-version", "2"))),
    ("DELETE", "/admin/2", None),
    ("GET", "/nothing/here/at/all", None),
    ("GET", "/static/page170", None),
    ("GET", "/api/svc7x/users", None),
    ("GET", "/devices/12/abc/other", None),
    ("GET", "/v1/items/42/detail/more", None),
)

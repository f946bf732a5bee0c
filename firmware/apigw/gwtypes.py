"""The gateway's value types and the checks that turn caller values into table values.

Owns: the spec's component classes (GatewayError, RoutePattern, HealthStatus, ServiceEndpoint,
ApiRequest, ApiResponse), the METHOD_* bits and their names, the STRIP route flag, and the
argument checks add_route uses (method lists, paths, header conditions, respond parts). Must not
hold tables or state, import the other gateway modules, or run on the hot path: everything here
allocates and is used when tables change or for display.

apigw.gateway re-exports the spec classes, METHOD_BITS, METHOD_NAMES, STRIP, method_bits and
method_names; callers import them from there.
"""

from .native import normalize_path

METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
METHOD_BITS = {"GET": 1, "HEAD": 2, "POST": 4, "PUT": 8, "DELETE": 16, "PATCH": 32, "OPTIONS": 64}
STRIP = 1  # route flag: strip the literal prefix from the forwarded path


class GatewayError(ValueError):
    """A refused change to the tables. `field` names the argument at fault, if any."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


class RoutePattern:
    """Route kinds, as small ints (the spec's RoutePattern enum)."""

    EXACT = 0
    PREFIX = 1
    WILDCARD = 2
    REGEX = 3
    NAMES = ("exact", "prefix", "wildcard", "regex")

    @staticmethod
    def parse(name):
        if name in RoutePattern.NAMES:
            return RoutePattern.NAMES.index(name)
        raise GatewayError("must be one of exact, prefix, wildcard, regex", "match")


class HealthStatus:
    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2
    NAMES = ("unknown", "healthy", "unhealthy")


class ServiceEndpoint:
    """A service as seen from outside the tables (built on request; not on the hot path)."""

    def __init__(self, sid, name, host, port, health_status, timeout_ms, keepalive, routes=0):
        self.id = sid
        self.name = name
        self.host = host
        self.port = port
        self.health_status = health_status
        self.timeout_ms = timeout_ms
        self.keepalive = keepalive
        self.routes = routes  # how many routes forward to it
        self.pool = -1  # the load-balancer pool it sends to, or -1: its own host and port

    def __repr__(self):
        return "<ServiceEndpoint %d %s %s:%d %s>" % (
            self.id,
            self.name,
            self.host,
            self.port,
            HealthStatus.NAMES[self.health_status],
        )


class ApiRequest:
    """A request as plain values (shell, tests). The server works on slots instead."""

    def __init__(self, method="GET", path="/", headers=None, body=b""):
        self.method = method
        self.path = path
        self.headers = headers or {}
        self.body = body


class ApiResponse:
    def __init__(self, status=200, headers=None, body=b""):
        self.status = status
        self.headers = headers or {}
        self.body = body


# -- method bits ---------------------------------------------------------------------------------


def method_bits(methods):
    """None, "*", an int of bits, or a list of names -> bits (0 = any method)."""
    if methods is None or methods == "*":
        return 0
    if type(methods) is int:
        if methods < 0 or methods > 127:
            raise GatewayError("bad method bits %r" % methods, "methods")
        return methods
    if isinstance(methods, str):
        methods = (methods,)
    bits = 0
    for m in methods:
        if type(m) is int:
            b = m if 0 < m <= 64 and not m & (m - 1) else 0  # one METHOD_* bit
        else:
            b = METHOD_BITS.get(m.upper(), 0) if isinstance(m, str) else 0
        if not b:
            raise GatewayError("unknown method %r (known: %s)" % (m, ", ".join(METHOD_NAMES)), "methods")
        bits |= b
    if not bits:
        raise GatewayError("empty method list", "methods")
    return bits


def method_names(bits):
    return [METHOD_NAMES[i] for i in range(7) if bits & (1 << i)]


# -- route argument checks (add_route; allocate) ------------------------------------------------


def check_path(kind, path):
    """Check a non-regex path; return (pattern to store, literal length)."""
    b = path.encode()
    if not path.startswith("/") or "?" in path:
        raise GatewayError("must be a path starting with '/' (no query)", "path")
    buf = bytearray(b)
    end = normalize_path(buf, 0, len(buf))
    if end < 0:
        raise GatewayError("invalid character or escape in path", "path")
    if buf[:end] != b:
        raise GatewayError("not a normalized path (would be %r)" % bytes(buf[:end]).decode(), "path")
    if path == "/_gw" or path.startswith("/_gw/"):
        raise GatewayError("/_gw/ is reserved for the gateway", "path")
    segs = path.split("/")[1:]
    lit = -1
    pos = 0
    for j in range(len(segs)):
        s = segs[j]
        if "*" in s:
            if s != "*" and s != "**":
                raise GatewayError("'*' must be a whole segment ('*' or '**')", "path")
            if kind != RoutePattern.WILDCARD:
                raise GatewayError("'%s' segments need match wildcard" % s, "path")
            if s == "**" and j != len(segs) - 1:
                raise GatewayError("'**' must be the last segment", "path")
            if lit < 0:
                lit = pos
        pos += 1 + len(s)
    if kind == RoutePattern.WILDCARD:
        if lit < 0:
            raise GatewayError("a wildcard route needs a '*' or '**' segment", "path")
    elif kind == RoutePattern.EXACT:
        lit = len(path)
    else:
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # "/api/" is the prefix "/api"
        lit = len(path) if path != "/" else 0
    if kind != RoutePattern.EXACT and path[:lit].count("/") > 31:
        raise GatewayError("more than 31 segments before the end of the literal part", "path")
    return path, lit


def check_headers(headers):
    """{name: "value" | True} -> [(lower-case name, value or None)]."""
    if headers is None:
        return []
    if not isinstance(headers, dict):
        raise GatewayError("must be an object of name: value or name: true", "headers")
    out = []
    for name, value in headers.items():
        if not isinstance(name, str) or not name or " " in name or ":" in name:
            raise GatewayError("bad header name %r" % (name,), "headers")
        if value is True:
            out.append((name.lower(), None))
        elif isinstance(value, str):
            out.append((name.lower(), value))
        else:
            raise GatewayError("%s: value must be a string or true" % name, "headers")
    return out


def check_respond(respond):
    """{status, content_type, body} -> (status, content_type bytes, body bytes)."""
    if not isinstance(respond, dict):
        raise GatewayError("must be an object {status, content_type, body}", "respond")
    for key in respond:
        if key not in ("status", "content_type", "body"):
            raise GatewayError("unknown key", "respond." + str(key))
    status = respond.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise GatewayError("must be an integer 100-599", "respond.status")
    ctype = respond.get("content_type", "text/plain")
    body = respond.get("body", "")
    if not isinstance(ctype, str) or "\r" in ctype or "\n" in ctype:
        raise GatewayError("must be a string", "respond.content_type")
    if not isinstance(body, (str, bytes)):
        raise GatewayError("must be a string", "respond.body")
    return status, ctype.encode(), body.encode() if isinstance(body, str) else body

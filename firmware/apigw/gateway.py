"""ApiGateway: the service and route tables, the route index, and route decisions.

Owns: the service registry (ids, hosts, ports, timeouts, health), the route table (kind, pattern,
method bits, header conditions, action), and the index that finds a request's route without
scanning every route. Must not do I/O, parse HTTP, or hold per-route Python objects in the hot
tables: patterns and strings live in one StrTable, everything else in arrays indexed by id.

Route decision (route_request) reads slot.method, the normalized path span, the headers and
the scratch arrays slot.bhash/slot.bend, and allocates nothing for exact, prefix and wildcard
routes. The index is one open-addressing hash table keyed by the 24-bit hash of each route's
literal part (whole path for exact routes, text before the first wildcard segment for wildcard
routes, the prefix for prefix routes); each key heads a chain of route ids in precedence order.
Regex routes are kept apart, tried in declared order only when nothing else matched, and
allocate (the path is copied to bytes for `re`).

Precedence: 1) exact; 2) prefix and wildcard by literal length, longest first; at equal literal
wildcard before prefix; 3) regex; ties in declared order. A route whose path matches but whose
methods do not adds its method bits to slot.allow (-405 if nothing matched fully, else -404).
"""

from array import array

from .compat import micropython
from .native import hash_boundaries, hash_span, mem_eq, mem_eq_lower, normalize_path
from .strtab import StrTable, StrTableError, spread, table

METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
METHOD_BITS = {"GET": 1, "HEAD": 2, "POST": 4, "PUT": 8, "DELETE": 16, "PATCH": 32, "OPTIONS": 64}
STRIP = 1  # route flag: strip the literal prefix from the forwarded path
_KEY = 1 << 24  # marks a used index key (hashes are 24-bit); stays a small int on a board
_FREE = 255  # route kind of an unused route id


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

    def __repr__(self):
        return "<ServiceEndpoint %d %s %s:%d %s>" % (
            self.id, self.name, self.host, self.port, HealthStatus.NAMES[self.health_status])


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


@micropython.native
def match_segments(p, pi, pend, s, si, send):
    """True if the path tail s[si:send] matches the wildcard pattern tail p[pi:pend].

    Both tails are empty or start with '/'. A '*' segment matches one non-empty segment; a final
    '**' matches the rest (zero or more segments). No allocation.
    """
    while pi < pend:
        if pend - pi == 3 and p[pi + 1] == 42 and p[pi + 2] == 42:
            return True  # '/**' at the end
        if si >= send:
            return False
        pi += 1
        si += 1
        pe = pi
        while pe < pend and p[pe] != 47:
            pe += 1
        se = si
        while se < send and s[se] != 47:
            se += 1
        n = pe - pi
        if n == 1 and p[pi] == 42:
            if se == si:
                return False
        elif se - si != n or not mem_eq(p, pi, s, si, n):
            return False
        pi = pe
        si = se
    return si == send


class ApiGateway:
    """Service registry and router with every table allocated up front."""

    def __init__(self, max_services=256, max_routes=512, strtab_bytes=16384, strtab_entries=0,
                 max_header_conds=0):
        self.max_services = S = max_services
        self.max_routes = R = max_routes
        self.strtab = StrTable(strtab_bytes, strtab_entries or 2 * (R + S))
        # Services: name id -1 marks a free id.
        self._s_name = table("h", S, -1)
        self._s_host = table("h", S, -1)
        self._s_port = table("H", S)
        self._s_timeout = table("I", S)
        self._s_keep = bytearray(S)
        self._s_health = bytearray(S)
        self._s_refs = table("H", S)  # routes forwarding to the service
        self._nsvc = 0
        # Routes.
        self._kind = bytearray(R)
        for i in range(R):
            self._kind[i] = _FREE
        self._methods = bytearray(R)  # METHOD_* bits; 0 = any
        self._flags = bytearray(R)
        self._lit = table("H", R)  # literal length (prefix of the pattern)
        self._pat = table("h", R, -1)  # pattern string id
        self._rw = table("h", R, -1)  # rewrite string id
        self._svc = table("h", R, -1)
        self._resp = table("h", R, -1)  # respond id (index in _responses)
        self._hc = table("h", R, -1)  # first header condition
        self._name = table("h", R, -1)
        self._seq = table("I", R)  # declared order
        self._next = array("h", range(1, R + 1))  # chain link; free list link for free ids
        self._next[R - 1] = -1
        self._rfree = 0
        self._nroutes = 0
        self._counter = 0
        self._responses = []  # (status, content_type bytes, body bytes), respond routes only
        self._rx_ids = []  # regex route ids in declared order
        self._rx = []  # their compiled patterns
        # Header conditions: name id (lower case), value id or -1 (presence), next.
        H = max_header_conds or R
        self.max_header_conds = H
        self._hc_name = table("h", H, -1)
        self._hc_val = table("h", H, -1)
        self._hc_next = array("h", range(1, H + 1))
        self._hc_next[H - 1] = -1
        self._hc_free = 0
        self._nhc = 0  # conditions in use
        # Index: key = hash | _KEY (0 = empty), head = first route of the chain.
        n = 8
        while n < 2 * R:
            n <<= 1
        self._kmask = n - 1
        self._keys = table("I", n)
        self._heads = table("h", n, -1)
        self._nkeys = 0

    # -- services -------------------------------------------------------------------------------

    def service_id(self, name):
        """Id of the service called name, or -1 (allocates: encodes name)."""
        sid = self.strtab.find(name.encode(), 0, len(name.encode())) if isinstance(name, str) else -1
        if sid < 0:
            return -1
        names = self._s_name
        for i in range(self.max_services):
            if names[i] == sid:
                return i
        return -1

    def _service(self, name_or_id):
        if type(name_or_id) is int:
            if 0 <= name_or_id < self.max_services and self._s_name[name_or_id] >= 0:
                return name_or_id
            return -1
        return self.service_id(name_or_id)

    def register_service(self, name, host, port, timeout_ms=10000, keepalive=True):
        """Add a service and return its id. Raises GatewayError (full, duplicate, bad value)."""
        if not isinstance(name, str) or not name:
            raise GatewayError("must be a non-empty string", "name")
        if self.service_id(name) >= 0:
            raise GatewayError("service %r already registered" % name, "name")
        if not isinstance(host, str) or not host:
            raise GatewayError("must be a non-empty string", "host")
        if type(port) is not int or not 0 < port < 65536:
            raise GatewayError("must be an integer 1-65535", "port")
        if type(timeout_ms) is not int or not 0 < timeout_ms < 1 << 30:
            raise GatewayError("must be a positive integer", "timeout_ms")
        if self._nsvc >= self.max_services:
            raise GatewayError("service table full (%d)" % self.max_services)
        i = 0
        while self._s_name[i] >= 0:  # a free id exists: the count is below capacity
            i += 1
        st = self.strtab
        try:
            nid = st.add(name)
        except StrTableError as e:
            raise GatewayError(str(e), "name")
        try:
            hid = st.add(host)
        except StrTableError as e:
            st.remove(nid)
            raise GatewayError(str(e), "host")
        self._s_name[i] = nid
        self._s_host[i] = hid
        self._s_port[i] = port
        self._s_timeout[i] = timeout_ms
        self._s_keep[i] = 1 if keepalive else 0
        self._s_health[i] = HealthStatus.UNKNOWN
        self._s_refs[i] = 0
        self._nsvc += 1
        return i

    def unregister_service(self, name_or_id):
        i = self._service(name_or_id)
        if i < 0:
            raise GatewayError("no service %r" % (name_or_id,))
        if self._s_refs[i]:
            raise GatewayError("service %r is used by %d route(s)" % (
                self.strtab.get_str(self._s_name[i]), self._s_refs[i]))
        self.strtab.remove(self._s_name[i])
        self.strtab.remove(self._s_host[i])
        self._s_name[i] = -1
        self._s_host[i] = -1
        self._nsvc -= 1

    def get_service(self, name_or_id):
        """A ServiceEndpoint for the service, or None (allocates)."""
        i = self._service(name_or_id)
        if i < 0:
            return None
        st = self.strtab
        return ServiceEndpoint(i, st.get_str(self._s_name[i]), st.get_str(self._s_host[i]),
                               self._s_port[i], self._s_health[i], self._s_timeout[i],
                               bool(self._s_keep[i]), self._s_refs[i])

    def service_port(self, sid):
        return self._s_port[sid]

    def service_timeout(self, sid):
        return self._s_timeout[sid]

    def service_keepalive(self, sid):
        return bool(self._s_keep[sid])

    def service_host_id(self, sid):
        """StrTable id of the service's host (no allocation)."""
        return self._s_host[sid]

    def is_service_healthy(self, name_or_id):
        """False only when the service is known to be down (UNKNOWN counts as healthy)."""
        i = self._service(name_or_id)
        return i >= 0 and self._s_health[i] != HealthStatus.UNHEALTHY

    def set_service_health(self, name_or_id, status):
        i = self._service(name_or_id)
        if i < 0:
            raise GatewayError("no service %r" % (name_or_id,))
        if type(status) is not int or not 0 <= status <= 2:
            raise GatewayError("bad health status %r" % (status,))
        self._s_health[i] = status

    def get_service_count(self):
        return self._nsvc

    def list_services(self):
        for i in range(self.max_services):
            if self._s_name[i] >= 0:
                yield self.get_service(i)

    # -- routes: changes (allocate; off the hot path) ------------------------------------------

    def add_route(self, path, match="prefix", methods=None, headers=None, service=None,
                  strip_prefix=False, rewrite=None, respond=None, name=None):
        """Add a route and return its id. Raises GatewayError naming the field at fault.

        match: "exact", "prefix", "wildcard" or "regex" (or a RoutePattern int). methods: None
        (any), a list of names or METHOD_* bits. headers: {name: "value"} (equal) or
        {name: True} (present). Exactly one action: service (name or id) to forward to, or
        respond = {"status": 200, "content_type": "text/plain", "body": "..."}.
        """
        kind = RoutePattern.parse(match) if isinstance(match, str) else match
        if type(kind) is not int or not 0 <= kind <= 3:
            raise GatewayError("must be one of exact, prefix, wildcard, regex", "match")
        if not isinstance(path, str) or not path:
            raise GatewayError("must be a non-empty string", "path")
        bits = method_bits(methods)
        if (service is None) == (respond is None):
            raise GatewayError("needs exactly one of service or respond", "service")
        svc = -1
        resp = None
        if service is not None:
            svc = self._service(service)
            if svc < 0:
                raise GatewayError("unknown service %r" % (service,), "service")
        else:
            resp = _respond_parts(respond)
            if rewrite is not None or strip_prefix:
                raise GatewayError("respond routes do not forward", "rewrite" if rewrite is not None else "strip_prefix")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise GatewayError("must be a non-empty string", "name")
            if self.route_id(name) >= 0:
                raise GatewayError("route name %r already used" % name, "name")
        rx = None
        if kind == RoutePattern.REGEX:
            if strip_prefix:
                raise GatewayError("not allowed on regex routes", "strip_prefix")
            if path.lstrip("^").startswith("/_gw/"):
                raise GatewayError("/_gw/ is reserved for the gateway", "path")
            try:
                import re

                src = path if path.endswith("$") and not path.endswith("\\$") else path + "$"
                rx = re.compile(src.encode())  # bytes pattern: matched against the path bytes
            except Exception as e:  # CPython raises re.error, MicroPython ValueError
                raise GatewayError("regex does not compile: %s" % e, "path")
            pat, lit = path, 0
        else:
            pat, lit = _pattern(kind, path)
        if rewrite is not None:
            if not isinstance(rewrite, str) or not rewrite.startswith("/") or "?" in rewrite or " " in rewrite:
                raise GatewayError("must be a path starting with '/'", "rewrite")
            if kind == RoutePattern.PREFIX or kind == RoutePattern.WILDCARD:
                rewrite = rewrite.rstrip("/")  # the forwarded rest starts with '/'
                if not rewrite:
                    rewrite = None
                    strip_prefix = True
        conds = _header_conds(headers)
        if self._nroutes >= self.max_routes:
            raise GatewayError("route table full (%d)" % self.max_routes)
        if len(conds) > self.max_header_conds - self._nhc:
            raise GatewayError("header condition table full (%d)" % self.max_header_conds, "headers")
        st = self.strtab
        added = []
        field = "path"
        try:
            pid = st.add(pat)
            added.append(pid)
            field = "rewrite"
            rw = -1 if rewrite is None else st.add(rewrite)
            added.append(rw)
            field = "name"
            nid = -1 if name is None else st.add(name)
            added.append(nid)
            field = "headers"
            first = -1
            for hname, hval in conds:
                c = self._hc_free
                self._hc_free = self._hc_next[c]
                self._nhc += 1
                self._hc_name[c] = -1
                self._hc_val[c] = -1
                self._hc_next[c] = first
                first = c
                self._hc_name[c] = st.add(hname)
                if hval is not None:
                    self._hc_val[c] = st.add(hval)
        except StrTableError as e:
            for sid in added:
                if sid >= 0:
                    st.remove(sid)
            if field == "headers":
                self._free_conds(first)
            raise GatewayError(str(e), field)
        if self._nkeys + 1 > (self._kmask + 1) * 3 // 4:
            self._rebuild_index()
        r = self._rfree
        self._rfree = self._next[r]
        self._kind[r] = kind
        self._methods[r] = bits
        self._flags[r] = STRIP if strip_prefix else 0
        self._lit[r] = lit
        self._pat[r] = pid
        self._rw[r] = rw
        self._svc[r] = svc
        self._hc[r] = first
        self._name[r] = nid
        self._seq[r] = self._counter
        self._counter += 1
        self._resp[r] = -1
        if resp is not None:
            for other in self._responses:  # share one bytes object per content type
                if other is not None and other[1] == resp[1]:
                    resp = (resp[0], other[1], resp[2])
                    break
            if None in self._responses:
                k = self._responses.index(None)
                self._responses[k] = resp
            else:
                k = len(self._responses)
                self._responses.append(resp)
            self._resp[r] = k
        if svc >= 0:
            self._s_refs[svc] += 1
        if rx is not None:
            self._rx_ids.append(r)
            self._rx.append(rx)
        else:
            self._index_add(r)
        self._nroutes += 1
        return r

    def remove_route(self, route_id_or_name):
        """Remove a route by id or name; its strings, conditions and index entry go with it."""
        r = self._route(route_id_or_name)
        if self._kind[r] == RoutePattern.REGEX:
            k = self._rx_ids.index(r)
            self._rx_ids.pop(k)
            self._rx.pop(k)
        else:
            self._index_remove(r)
        st = self.strtab
        for sid in (self._pat[r], self._rw[r], self._name[r]):
            if sid >= 0:
                st.remove(sid)
        self._free_conds(self._hc[r])
        if self._resp[r] >= 0:
            self._responses[self._resp[r]] = None
            while self._responses and self._responses[-1] is None:
                self._responses.pop()
        if self._svc[r] >= 0:
            self._s_refs[self._svc[r]] -= 1
        self._kind[r] = _FREE
        self._pat[r] = self._rw[r] = self._name[r] = self._svc[r] = self._resp[r] = self._hc[r] = -1
        self._next[r] = self._rfree
        self._rfree = r
        self._nroutes -= 1

    def route_id(self, name):
        """Id of the route called name, or -1 (allocates: encodes name)."""
        b = name.encode()
        sid = self.strtab.find(b, 0, len(b))
        if sid >= 0:
            for r in range(self.max_routes):
                if self._name[r] == sid and self._kind[r] != _FREE:
                    return r
        return -1

    def _route(self, route_id_or_name):
        r = route_id_or_name
        if isinstance(r, str):
            r = self.route_id(r)
        if type(r) is not int or not 0 <= r < self.max_routes or self._kind[r] == _FREE:
            raise GatewayError("no route %r" % (route_id_or_name,))
        return r

    def get_route(self, route_id):
        """The route as a dict for display (allocates), or None if the id is unused."""
        r = route_id
        if not 0 <= r < self.max_routes or self._kind[r] == _FREE:
            return None
        st = self.strtab
        d = {"id": r, "name": None if self._name[r] < 0 else st.get_str(self._name[r]),
             "match": RoutePattern.NAMES[self._kind[r]], "path": st.get_str(self._pat[r]),
             "methods": method_names(self._methods[r]) if self._methods[r] else "*"}
        headers = {}
        c = self._hc[r]
        while c >= 0:
            v = self._hc_val[c]
            headers[st.get_str(self._hc_name[c])] = True if v < 0 else st.get_str(v)
            c = self._hc_next[c]
        d["headers"] = headers
        d["service"] = None if self._svc[r] < 0 else st.get_str(self._s_name[self._svc[r]])
        d["strip_prefix"] = bool(self._flags[r] & STRIP)
        d["rewrite"] = None if self._rw[r] < 0 else st.get_str(self._rw[r])
        d["respond"] = None
        if self._resp[r] >= 0:
            status, ctype, body = self._responses[self._resp[r]]
            d["respond"] = {"status": status, "content_type": ctype.decode(), "body": body.decode()}
        return d

    def get_route_count(self):
        return self._nroutes

    def precedence_order(self):
        """Live route ids in the order route_request tries them (allocates)."""
        ids = [r for r in range(self.max_routes) if self._kind[r] != _FREE]
        kind, lit, seq = self._kind, self._lit, self._seq
        ids.sort(key=lambda r: (0 if kind[r] == 0 else 2 if kind[r] == 3 else 1,
                                -lit[r], 0 if kind[r] != 1 else 1, seq[r]))
        return ids

    def list_routes(self):
        """Routes as dicts in precedence order (a generator; allocates)."""
        for r in self.precedence_order():
            yield self.get_route(r)

    def _free_conds(self, c):
        st = self.strtab
        while c >= 0:
            nxt = self._hc_next[c]
            if self._hc_name[c] >= 0:
                st.remove(self._hc_name[c])
            if self._hc_val[c] >= 0:
                st.remove(self._hc_val[c])
            self._hc_name[c] = self._hc_val[c] = -1
            self._hc_next[c] = self._hc_free
            self._hc_free = c
            self._nhc -= 1
            c = nxt

    # -- the index --------------------------------------------------------------------------

    def _lit_hash(self, r):
        st = self.strtab
        o = st.off[self._pat[r]]
        return hash_span(st.buf, o, o + self._lit[r])

    def _key_slot(self, h, create):
        keys = self._keys
        mask = self._kmask
        want = h | _KEY
        i = spread(h) & mask
        while keys[i]:
            if keys[i] == want:
                return i
            i = (i + 1) & mask
        if not create:
            return -1
        keys[i] = want
        self._heads[i] = -1
        self._nkeys += 1
        return i

    def _precedes(self, a, b):
        """True if route a is tried before route b (both in one chain)."""
        kind, lit = self._kind, self._lit
        ka = kind[a]
        kb = kind[b]
        if (ka == 0) != (kb == 0):
            return ka == 0  # exact routes first
        if ka != 0:
            if lit[a] != lit[b]:
                return lit[a] > lit[b]
            if ka != kb:
                return ka == RoutePattern.WILDCARD
        return self._seq[a] < self._seq[b]

    def _index_add(self, r):
        i = self._key_slot(self._lit_hash(r), True)
        heads, nxt = self._heads, self._next
        prev = -1
        cur = heads[i]
        while cur >= 0 and self._precedes(cur, r):
            prev = cur
            cur = nxt[cur]
        nxt[r] = cur
        if prev < 0:
            heads[i] = r
        else:
            nxt[prev] = r

    def _index_remove(self, r):
        i = self._key_slot(self._lit_hash(r), False)
        heads, nxt = self._heads, self._next
        prev = -1
        cur = heads[i]
        while cur != r:
            prev = cur
            cur = nxt[cur]
        if prev < 0:
            heads[i] = nxt[r]
        else:
            nxt[prev] = nxt[r]

    def _rebuild_index(self):
        """Drop keys whose chains emptied (routes removed) and re-insert every live route."""
        for i in range(self._kmask + 1):
            self._keys[i] = 0
            self._heads[i] = -1
        self._nkeys = 0
        for r in range(self.max_routes):
            k = self._kind[r]
            if k != _FREE and k != RoutePattern.REGEX:
                self._index_add(r)

    # -- route decision (the hot path) ------------------------------------------------------------

    @micropython.native
    def route_request(self, slot):
        """Find the route for the parsed request in slot; set slot.route and slot.allow.

        Returns the route id, -404 (no route for the path) or -405 (the path has routes, none
        for this method; slot.allow holds their method bits). No allocation unless a regex
        route has to be tried (the path is then copied to bytes).
        """
        buf = slot.buf
        ps = slot.path_start
        pe = slot.path_end
        bh = slot.bhash
        be = slot.bend
        nb = hash_boundaries(buf, ps, pe, bh, be)
        method = slot.method
        keys = self._keys
        heads = self._heads
        mask = self._kmask
        kind = self._kind
        lit = self._lit
        nxt = self._next
        meths = self._methods
        hcs = self._hc
        pat = self._pat
        sbuf = self.strtab.buf
        soff = self.strtab.off
        allow = 0
        plen = pe - ps
        k = nb - 1
        exact = True  # first pass: exact routes on the whole path's hash
        while k >= 0:
            h = bh[k]
            want = h | _KEY
            i = (((((h ^ (h >> 14)) & 0x3FFF) * 0x9E5) >> 3) ^ h) & mask  # spread(h), inlined
            r = -1
            while True:
                kv = keys[i]
                if kv == want:
                    r = heads[i]
                    break
                if kv == 0:
                    break
                i = (i + 1) & mask
            n = be[k] - ps
            while r >= 0:
                kr = kind[r]
                if exact:
                    if kr != 0:
                        break  # exact routes head each chain
                    ok = lit[r] == plen and mem_eq(sbuf, soff[pat[r]], buf, ps, plen)
                else:
                    ok = kr != 0 and lit[r] == n and mem_eq(sbuf, soff[pat[r]], buf, ps, n)
                    if ok and kr == 2:
                        o = soff[pat[r]]
                        ok = match_segments(sbuf, o + n, o + self.strtab.size[pat[r]], buf, be[k], pe)
                if ok:
                    m = meths[r]
                    c = hcs[r]
                    if m == 0 or m & method:
                        if c < 0 or self._headers_ok(c, slot):
                            slot.route = r
                            slot.allow = 0
                            return r
                    elif c < 0 or self._headers_ok(c, slot):
                        allow |= m
                r = nxt[r]
            if exact:
                exact = False
            else:
                k -= 1
        if self._rx_ids:
            r = self._regex_route(slot, method)
            if r >= 0:
                slot.route = r
                slot.allow = 0
                return r
            allow |= -r - 1
        slot.route = -1
        slot.allow = allow
        return -405 if allow else -404

    def _regex_route(self, slot, method):
        """Regex routes in declared order: route id, or -1 - (allowed bits). Allocates."""
        path = bytes(slot.mv[slot.path_start : slot.path_end])  # one copy (a memoryview slice)
        allow = 0
        for j in range(len(self._rx_ids)):
            if self._rx[j].match(path):
                r = self._rx_ids[j]
                m = self._methods[r]
                c = self._hc[r]
                if c < 0 or self._headers_ok(c, slot):
                    if m == 0 or m & slot.method:
                        return r
                    allow |= m
        return -1 - allow

    @micropython.native
    def _headers_ok(self, c, slot):
        """True if the request has every header of condition chain c. No allocation."""
        buf = slot.buf
        hdr = slot.hdr
        nh = slot.nhdr
        st = self.strtab
        sbuf = st.buf
        soff = st.off
        ssize = st.size
        while c >= 0:
            nid = self._hc_name[c]
            vid = self._hc_val[c]
            nl = ssize[nid]
            no = soff[nid]
            j = 0
            while j < nh:
                a = hdr[4 * j]
                if hdr[4 * j + 1] - a == nl and mem_eq_lower(buf, a, sbuf, no, nl):
                    if vid < 0:
                        break
                    v = hdr[4 * j + 2]
                    vl = hdr[4 * j + 3] - v
                    if vl == ssize[vid] and mem_eq(buf, v, sbuf, soff[vid], vl):
                        break
                j += 1
            if j == nh:
                return False
            c = self._hc_next[c]
        return True

    @micropython.native
    def dispatch_request(self, slot):
        """Decide what to do with the routed request in slot (route_request returned >= 0).

        Returns -1 for a respond route (see respond_parts), else the service id, with the
        upstream path set as strtab[slot.fwd_prefix] (if >= 0) + buf[fwd_rest_start:fwd_rest_end];
        when both are empty the upstream path is "/". No allocation.
        """
        r = slot.route
        slot.fwd_prefix = -1
        if r < 0 or self._resp[r] >= 0:
            return -1
        ps = slot.path_start
        pe = slot.path_end
        rw = self._rw[r]
        slot.fwd_rest_end = pe
        if rw < 0 and not self._flags[r] & STRIP:
            slot.fwd_rest_start = ps  # the whole path, unchanged
        elif self._kind[r] == RoutePattern.EXACT or self._kind[r] == RoutePattern.REGEX:
            slot.fwd_prefix = rw  # the rewrite replaces the whole path
            slot.fwd_rest_start = pe
        else:
            slot.fwd_prefix = rw  # the rewrite (or nothing) replaces the literal prefix
            slot.fwd_rest_start = ps + self._lit[r]
        return self._svc[r]

    def respond_parts(self, route_id):
        """(status, content_type bytes, body bytes) of a respond route; None for a forward route."""
        k = self._resp[route_id]
        return None if k < 0 else self._responses[k]

    def upstream_path(self, slot):
        """The path dispatch_request chose, as bytes (allocates; for the shell and tests)."""
        rest = bytes(slot.buf[slot.fwd_rest_start : slot.fwd_rest_end])
        p = (self.strtab.get(slot.fwd_prefix) if slot.fwd_prefix >= 0 else b"") + rest
        return p or b"/"

    def route(self, method_name, path, headers=None):
        """Route a request given as values: (route id or -404/-405/-400, allow bits).

        Builds a scratch slot (allocates): for the shell's `gateway route METHOD PATH` and tests.
        The path is normalized as the parser would; -400 means it is not a valid path.
        """
        from .slot import Slot

        method = METHOD_BITS.get(method_name.upper(), 0)
        if not method:
            raise GatewayError("unknown method %r" % method_name, "methods")
        p = path.encode() if isinstance(path, str) else bytes(path)
        q = p.find(b"?")
        if q >= 0:
            p = p[:q]
        items = list(headers.items()) if headers else []
        size = len(p) + 4 + sum(len(str(a)) + len(str(b)) for a, b in items)
        slot = self._scratch = Slot(0, max(size, 64), 16, max(1, len(items)))
        buf = slot.buf
        buf[0 : len(p)] = p
        end = normalize_path(buf, 0, len(p))
        if end < 0:
            return -400, 0
        slot.method = method
        slot.path_start = 0
        slot.path_end = end
        o = len(p)
        for j in range(len(items)):
            for t, s in enumerate((str(items[j][0]).encode(), str(items[j][1]).encode())):
                buf[o : o + len(s)] = s
                slot.hdr[4 * j + 2 * t] = o
                slot.hdr[4 * j + 2 * t + 1] = o + len(s)
                o += len(s)
        slot.nhdr = len(items)
        r = self.route_request(slot)
        return r, slot.allow


# -- validation helpers (add_route; allocate) ---------------------------------------------------


def _pattern(kind, path):
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


def _header_conds(headers):
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


def _respond_parts(respond):
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

"""RouteTable: the route table and its index, kept up to date as routes come and go.

Owns: the route arrays indexed by route id (kind, pattern, method bits, flags, literal length,
rewrite, service, respond, header conditions, name, declared order), the header condition chains,
the regex route list, the open-addressing index (keys, chain heads, chain links) and the display
of routes. Adding a route checks every argument first (gwtypes.check_*) and changes nothing when
it refuses. Must not decide routes for requests (gateway.py does, reading these tables), do I/O,
or keep per-route Python objects outside the respond and regex lists. Everything here allocates
and runs off the hot path.

Index: key = 24-bit hash of a route's literal part | KEY_USED (0 = empty slot); each key heads a
chain of route ids (linked through _next) in precedence order: exact routes first, then longer
literals, then wildcard before prefix at equal length, then declared order. Regex routes are not
indexed. A full index (3/4 of its keys used) is rebuilt, which drops keys whose chains emptied.
"""

from array import array

from .gwtypes import (
    STRIP,
    GatewayError,
    RoutePattern,
    check_headers,
    check_path,
    check_respond,
    method_bits,
    method_names,
)
from .native import hash_span
from .services import ServiceTable
from .strtab import StrTableError, spread, table

KEY_USED = 1 << 24  # marks a used index key (hashes are 24-bit); stays a small int on a board
_FREE = 255  # route kind of an unused route id
NO_POLICY = 255  # a route without an auth/rate-limit policy


class RouteTable(ServiceTable):
    """Services plus routes, with every table allocated up front."""

    def __init__(self, strtab, max_services, max_routes, max_header_conds):
        super().__init__(strtab, max_services)
        self.max_routes = R = max_routes
        # Routes.
        self._kind = bytearray(R)
        for i in range(R):
            self._kind[i] = _FREE
        self._methods = bytearray(R)  # METHOD_* bits; 0 = any
        self._flags = bytearray(R)
        self._policy = bytearray(b"\xff" * R)  # auth/rate-limit policy id (authgate); NO_POLICY = none
        self._transform = None  # mediation transform ids (array "h", -1 = none), made by the first set
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
        # Index: key = hash | KEY_USED (0 = empty), head = first route of the chain.
        n = 8
        while n < 2 * R:
            n <<= 1
        self._kmask = n - 1
        self._keys = table("I", n)
        self._heads = table("h", n, -1)
        self._nkeys = 0

    # -- routes: changes (allocate; off the hot path) ------------------------------------------

    def add_route(
        self,
        path,
        match="prefix",
        methods=None,
        headers=None,
        service=None,
        strip_prefix=False,
        rewrite=None,
        respond=None,
        name=None,
    ):
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
            resp = check_respond(respond)
            if rewrite is not None or strip_prefix:
                raise GatewayError(
                    "respond routes do not forward", "rewrite" if rewrite is not None else "strip_prefix"
                )
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
            pat, lit = check_path(kind, path)
        if rewrite is not None:
            if not isinstance(rewrite, str) or not rewrite.startswith("/") or "?" in rewrite or " " in rewrite:
                raise GatewayError("must be a path starting with '/'", "rewrite")
            if kind == RoutePattern.PREFIX or kind == RoutePattern.WILDCARD:
                rewrite = rewrite.rstrip("/")  # the forwarded rest starts with '/'
                if not rewrite:
                    rewrite = None
                    strip_prefix = True
        conds = check_headers(headers)
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
        self._policy[r] = NO_POLICY
        if self._transform is not None:
            self._transform[r] = -1
        self._pat[r] = self._rw[r] = self._name[r] = self._svc[r] = self._resp[r] = self._hc[r] = -1
        self._next[r] = self._rfree
        self._rfree = r
        self._nroutes -= 1

    def route_policy(self, route_id):
        """The route's policy id (authgate), or NO_POLICY. No allocation."""
        return self._policy[route_id]

    def set_route_policy(self, route_id, policy_id):
        r = self._route(route_id)
        if type(policy_id) is not int or not 0 <= policy_id <= NO_POLICY:
            raise GatewayError("policy id must be 0-254 (255: none)", "policy")
        self._policy[r] = policy_id

    def route_transform(self, route_id):
        """The route's mediation transform id, or -1. No allocation."""
        t = self._transform
        return -1 if t is None else t[route_id]

    def set_route_transform(self, route_id, transform_id):
        r = self._route(route_id)
        if type(transform_id) is not int or not -1 <= transform_id < 0x7FFF:
            raise GatewayError("transform id must be an int (-1: none)", "transform")
        if self._transform is None:  # a config without mediation never pays for the table
            self._transform = table("h", self.max_routes, -1)
        self._transform[r] = transform_id

    def route_service(self, route_id):
        """The service id a route forwards to, or -1 (a respond route). No allocation."""
        return self._svc[route_id]

    # -- routes: lookup and display (allocate) ----------------------------------------------------

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
        d = {
            "id": r,
            "name": None if self._name[r] < 0 else st.get_str(self._name[r]),
            "match": RoutePattern.NAMES[self._kind[r]],
            "path": st.get_str(self._pat[r]),
            "methods": method_names(self._methods[r]) if self._methods[r] else "*",
        }
        headers = {}
        c = self._hc[r]
        while c >= 0:
            v = self._hc_val[c]
            headers[st.get_str(self._hc_name[c])] = True if v < 0 else st.get_str(v)
            c = self._hc_next[c]
        d["headers"] = headers
        d["service"] = None if self._svc[r] < 0 else st.get_str(self._s_name[self._svc[r]])
        d["strip_prefix"] = bool(self._flags[r] & STRIP)
        d["policy"] = None if self._policy[r] == NO_POLICY else self._policy[r]
        t = self.route_transform(r)
        d["transform"] = None if t < 0 else t
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
        ids.sort(
            key=lambda r: (0 if kind[r] == 0 else 2 if kind[r] == 3 else 1, -lit[r], 0 if kind[r] != 1 else 1, seq[r])
        )
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
        want = h | KEY_USED
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

"""ApiGateway: route decisions for parsed requests, on top of the service and route tables.

Owns: the constructor that allocates every table (the StrTable, then ServiceTable and RouteTable
in services.py and routetable.py), the hot path that reads them (route_request, _headers_ok,
dispatch_request, match_segments), and the off-path helpers around it (respond_parts,
upstream_path, route). Must not do I/O, parse HTTP, change the tables (routetable.py does), or
allocate on the hot path. It is the module everyone imports: it re-exports the gwtypes names
(GatewayError, RoutePattern, HealthStatus, ServiceEndpoint, ApiRequest, ApiResponse, METHOD_BITS,
METHOD_NAMES, STRIP, method_bits, method_names).

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

from .compat import micropython
from .gwtypes import (  # noqa: F401 (re-exported: apigw.gateway is the public module)
    METHOD_BITS,
    METHOD_NAMES,
    STRIP,
    ApiRequest,
    ApiResponse,
    GatewayError,
    HealthStatus,
    RoutePattern,
    ServiceEndpoint,
    method_bits,
    method_names,
)
from .native import hash_boundaries, mem_eq, mem_eq_lower, normalize_path
from .routetable import KEY_USED, RouteTable
from .strtab import StrTable


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


class ApiGateway(RouteTable):
    """Service registry and router with every table allocated up front."""

    def __init__(self, max_services=256, max_routes=512, strtab_bytes=16384, strtab_entries=0, max_header_conds=0):
        strtab = StrTable(strtab_bytes, strtab_entries or 2 * (max_routes + max_services))
        super().__init__(strtab, max_services, max_routes, max_header_conds)

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
            want = h | KEY_USED
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

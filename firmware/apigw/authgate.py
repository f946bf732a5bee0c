"""AuthGate: the request-path stage after the route decision: credentials, permission, rate limit.

Owns: the policy table (per policy: the schemes it accepts, the permissions it needs or "by
method", its rate and burst and what the bucket is keyed on), finding the credential among a
slot's headers, the answer to a refused request (status, JSON error code, WWW-Authenticate or
RateLimit-* headers written into one buffer made at boot), and the counters. Must not verify
credentials itself (auth.py does), keep routes (the route table holds each route's policy id) or
do I/O, except introspect(), the one await (an opaque bearer token asks the introspection
endpoint).

check() on a cached JWT, a public route or a rate-limited route allocates nothing.
"""

from . import httpparse as hp
from .authtypes import EPOCH_BASE, AuthError, Permission, TokenType
from .compat import micropython, ticks_ms
from .errors import error_json
from .jwt import signature_start
from .native import hash_span, mem_eq_lower
from .ratelimit import RateLimiter
from .response import put
from .strtab import table

OK = 0
NEED_INTROSPECTION = -1

# Scheme bits of a policy.
S_JWT = 1 << TokenType.JWT
S_API_KEY = 1 << TokenType.API_KEY
S_BASIC = 1 << TokenType.BASIC
S_BEARER = 1 << TokenType.BEARER  # opaque tokens, checked by introspection
SCHEME_BITS = {"jwt": S_JWT, "api_key": S_API_KEY, "basic": S_BASIC, "bearer": S_BEARER}

BY_METHOD = 255  # policy permissions: Read for GET/HEAD/OPTIONS, Write for the others
PER_NONE = 0
PER_PRINCIPAL = 1
PER_CLIENT = 2
PER_NAMES = ("none", "principal", "client")

_BEARER = b"bearer "
_BASIC = b"basic "
W_BEARER = b'WWW-Authenticate: Bearer realm="apigw"\r\n'
W_BEARER_INVALID = b'WWW-Authenticate: Bearer realm="apigw", error="invalid_token"\r\n'
W_BEARER_SCOPE = b'WWW-Authenticate: Bearer realm="apigw", error="insufficient_scope"\r\n'
W_BASIC = b'WWW-Authenticate: Basic realm="apigw", charset="UTF-8"\r\n'
W_BEARER_BASIC = W_BEARER + W_BASIC
W_API_KEY = b'WWW-Authenticate: ApiKey realm="apigw", header="X-API-Key"\r\n'
MAX_POLICIES = 64


class AuthGate:
    def __init__(self, manager, max_buckets=256, introspector=None, max_policies=MAX_POLICIES):
        self.auth = manager
        self.admin_policy = -1  # the policy /_gw/auth asks for (authconfig adds it)
        self.gw = None  # the ApiGateway, for API keys bound to a service (set by whoever builds the gate)
        self.introspector = introspector
        self.limiter = RateLimiter(max_buckets)
        P = max_policies
        self.max_policies = P
        self.names = []  # policy names, index = policy id
        self._schemes = bytearray(P)
        self._perms = bytearray(P)
        self._per = bytearray(P)
        self._rate = table("I", P)
        self._burst = table("H", P)
        # What a refusal sends besides its status: extra header lines, and the error code.
        self.hdr = bytearray(256)
        self.hdr_len = 0
        self.error = ""
        self.status = 0
        self.allowed = 0
        self.unauthorized = 0
        self.forbidden = 0
        self.limited = 0

    def add_policy(self, name, schemes=(), permissions=None, rate=0, burst=0, per=None):
        """Add a named policy and return its id. schemes: names from SCHEME_BITS (empty: a public
        route, maybe rate-limited); permissions: names or None (by method); rate: requests per
        second (0: no limit), burst: bucket size (default max(rate, 1)); per: "principal" or
        "client" (default: principal when the policy authenticates, else client)."""
        if name in self.names:
            raise AuthError(400, "bad_request", "policy %r defined twice" % name)
        if len(self.names) >= self.max_policies:
            raise AuthError(507, "full", "more than %d policies" % self.max_policies)
        mask = 0
        for s in schemes:
            if s not in SCHEME_BITS:
                raise AuthError(400, "bad_request", "schemes: unknown scheme %r (jwt, api_key, basic, bearer)" % (s,))
            mask |= SCHEME_BITS[s]
        if mask & S_BEARER and self.introspector is None:
            raise AuthError(400, "bad_request", "schemes: bearer needs an introspection endpoint (auth.introspection)")
        if type(rate) is not int or not 0 <= rate <= 100000:
            raise AuthError(400, "bad_request", "rate: must be an integer 0-100000 (requests per second)")
        if burst == 0:
            burst = max(rate, 1)
        if type(burst) is not int or not 1 <= burst <= 65535:
            raise AuthError(400, "bad_request", "burst: must be an integer 1-65535")
        if per is None:
            p = PER_PRINCIPAL if mask else PER_CLIENT
        elif per in PER_NAMES[1:]:
            p = PER_NAMES.index(per)
            if p == PER_PRINCIPAL and not mask:
                raise AuthError(400, "bad_request", "per: a public policy can only limit per client")
        else:
            raise AuthError(400, "bad_request", 'per: must be "principal" or "client"')
        pid = len(self.names)
        self._schemes[pid] = mask
        self._perms[pid] = BY_METHOD if permissions is None else Permission.parse(permissions)
        self._per[pid] = p if rate else PER_NONE
        self._rate[pid] = rate
        self._burst[pid] = burst
        self.names.append(name)
        return pid

    def policy_id(self, name):
        return self.names.index(name) if name in self.names else -1

    def describe(self, pid):
        m = self._schemes[pid]
        return {
            "name": self.names[pid],
            "schemes": [n for n, b in SCHEME_BITS.items() if m & b],
            "permissions": "by method" if self._perms[pid] == BY_METHOD else Permission.names(self._perms[pid]),
            "rate": self._rate[pid],
            "burst": self._burst[pid],
            "per": PER_NAMES[self._per[pid]],
        }

    # -- the request path ---------------------------------------------------------------------

    @micropython.native
    def check(self, slot, pid):
        """OK, NEED_INTROSPECTION (await introspect()), or the status to answer with (401, 403,
        429, 503); on a refusal self.hdr[:hdr_len] holds the extra header lines. No allocation
        for public routes, cached credentials and the rate limit."""
        self.hdr_len = 0
        mask = self._schemes[pid]
        a = self.auth
        a.p_kind = -1
        if mask:
            st = self._authenticate(slot, mask)
            if st != OK:
                return st
            st = self._authorize(slot, pid)
            if st != OK:
                return st
        return self._limit(slot, pid)

    @micropython.native
    def _authenticate(self, slot, mask):
        buf = slot.buf
        hdr = slot.hdr
        kinds = slot.hkind
        for k in range(slot.nhdr):
            kind = kinds[k]
            if kind == hp.HDR_AUTHORIZATION:
                vs = hdr[4 * k + 2]
                ve = hdr[4 * k + 3]
                if mask & (S_JWT | S_BEARER) and ve - vs > 7 and mem_eq_lower(buf, vs, _BEARER, 0, 7):
                    return self._bearer(slot, vs + 7, ve, mask)
                if mask & S_BASIC and ve - vs > 6 and mem_eq_lower(buf, vs, _BASIC, 0, 6):
                    return self._basic(buf, vs + 6, ve)
            elif kind == hp.HDR_X_API_KEY and mask & S_API_KEY:
                if self.auth.check_api_key(buf, hdr[4 * k + 2], hdr[4 * k + 3]):
                    return OK
                return self._refuse(401, "invalid_key", W_API_KEY)
        # No credential this policy takes: say which scheme to use.
        if mask & (S_JWT | S_BEARER):
            # Both challenges when Basic is taken too: a browser then asks for a password.
            return self._refuse(401, "missing_credentials", W_BEARER_BASIC if mask & S_BASIC else W_BEARER)
        if mask & S_BASIC:
            return self._refuse(401, "missing_credentials", W_BASIC)
        return self._refuse(401, "missing_credentials", W_API_KEY)

    @micropython.native
    def _bearer(self, slot, start, end, mask):
        buf = slot.buf
        if mask & S_JWT and signature_start(buf, start, end) >= 0:  # three parts: a JWT
            try:
                self.auth.check_jwt(buf, start, end)
            except AuthError:
                return self._refuse(401, "invalid_token", W_BEARER_INVALID)
            return OK
        if mask & S_BEARER:
            self._token = (start, end)  # for introspect(); allocates (opaque tokens only)
            return NEED_INTROSPECTION
        return self._refuse(401, "invalid_token", W_BEARER_INVALID)

    def _basic(self, buf, start, end):
        try:
            self.auth.check_basic(buf, start, end)
        except AuthError:
            return self._refuse(401, "invalid_credentials", W_BASIC)
        return OK

    async def introspect(self, slot, pid):
        """The opaque-bearer path: ask the endpoint (cached), then authorize and limit as check()
        does. An endpoint that fails or times out fails closed with 503."""
        from .introspect import IntrospectionUnavailable, scope_permissions

        start, end = self._token
        token = bytes(slot.buf[start:end])
        a = self.auth
        ins = self.introspector
        if ins is None:
            return self._refuse(401, "invalid_token", W_BEARER_INVALID)
        try:
            ans = await ins.check(token, a.now + EPOCH_BASE if a.now > 0 else 0)
        except IntrospectionUnavailable:
            return self._refuse(503, "introspection_unavailable", b"Retry-After: 5\r\n")
        if not ans.active:
            return self._refuse(401, "invalid_token", W_BEARER_INVALID)
        a.p_kind = TokenType.BEARER
        a.p_principal = 8192 + (hash(ans.sub or "") & 0xFFF)
        a.p_role = 3
        a.p_perms = scope_permissions(ans.scope)
        a.p_service = None
        st = self._authorize(slot, pid)
        if st != OK:
            return st
        return self._limit(slot, pid)

    @micropython.native
    def _authorize(self, slot, pid):
        need = self._perms[pid]
        if need == BY_METHOD:
            m = slot.method
            need = Permission.READ if m & (hp.METHOD_GET | hp.METHOD_HEAD | hp.METHOD_OPTIONS) else Permission.WRITE
        a = self.auth
        if a.p_perms & need != need:
            return self._refuse(403, "forbidden", W_BEARER_SCOPE if a.p_kind == TokenType.JWT else b"")
        if a.p_service is not None and not self._service_ok(slot, a.p_service):
            return self._refuse(403, "forbidden", b"")
        return OK

    def _service_ok(self, slot, name):
        """An API key bound to a service opens only the routes that forward to it (allocates)."""
        gw = self.gw
        return gw is not None and slot.route >= 0 and gw.route_service(slot.route) == gw.service_id(name) >= 0

    @micropython.native
    def _limit(self, slot, pid):
        per = self._per[pid]
        if per == PER_NONE:
            self.allowed += 1
            return OK
        if per == PER_PRINCIPAL and self.auth.p_kind >= 0:
            key = (pid << 18) | (self.auth.p_principal & 0x1FFFF)
        else:  # per client address; a 17-bit hash: two clients rarely share a bucket on a LAN
            peer = slot.peer
            key = (pid << 18) | 0x20000 | (hash_span(peer, 0, len(peer)) & 0x1FFFF)
        lim = self.limiter
        if lim.check(key, self._rate[pid], self._burst[pid], ticks_ms()) >= 0:
            self.allowed += 1
            return OK
        self.limited += 1
        self.error = "rate_limited"
        self.status = 429
        self.hdr_len = lim.write_headers(self.hdr, 0)
        return 429

    @micropython.native
    def _refuse(self, status, code, header):
        if status == 403:
            self.forbidden += 1
        elif status == 401:
            self.unauthorized += 1
        self.error = code
        self.status = status
        self.hdr_len = put(self.hdr, 0, header)
        return status

    def error_body(self):
        """The JSON body of the last refusal (errors.py), made once per error code."""
        return error_json(self.status, self.error)

    def stats(self):
        return {
            "allowed": self.allowed,
            "unauthorized": self.unauthorized,
            "forbidden": self.forbidden,
            "rate_limited": self.limited,
            "cache_hits": self.auth.cache.hits,
            "cache_misses": self.auth.cache.misses,
            "buckets": self.limiter.bucket_count(),
        }

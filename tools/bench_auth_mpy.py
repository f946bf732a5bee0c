"""Micro-benchmarks of the auth stage's checks, run ON the MicroPython unix port (by bench_mpy.py).

Measures, in the bench_mpy.py process:

- a full HS256 JWT check (`AuthenticationManager.check_jwt` on a token the credential cache does
  not hold: the cache is cleared before each call and the cost of the clear alone is taken off)
  of a 246-byte token the manager issued itself (`issue_token`: sub, jti, iat, exp, role,
  permissions; kid in the header);
- the same check_jwt when the token is cached (the request path for a token seen before);
- `check_api_key` on a registered key (one SHA-256 per call);
- `AuthGate.check` (the request-path stage: find the Authorization header among the parsed ones,
  count the token's dots, the cached check_jwt, the permission) on a parsed GET carrying the
  token, for a policy that takes a JWT;
- `RateLimiter.check` on a known key (rate 100000/s and `now_ms` moving 1 ms per call, so the
  bucket never runs dry and every call takes the "allowed" path);
- bytes allocated per call of each (`micropython.mem_total()` deltas, loop cost taken off).

The credentials sit in a bytearray at an offset, as they do in a slot's buffer after
`Authorization: Bearer `. Each figure is the median of batch means, the bare loop's cost taken
off. This file times things and asserts nothing about speed; it raises if a check refuses the
credential it is given (a figure for a refused check would mean nothing).
"""

import gc
import os
import time

import micropython  # type: ignore

from apigw import authtypes
from apigw import httpparse as hp
from apigw.auth import AuthenticationManager
from apigw.authgate import OK, AuthGate
from apigw.authtypes import TokenType
from apigw.ratelimit import RateLimiter
from apigw.slot import Slot

_PREFIX = b"Authorization: Bearer "  # the credential starts where it would in a request head
_RATE = 100000
_BURST = 65535
_LIMIT_KEY = 12345


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _in_buffer(cred):
    """(bytearray holding cred after _PREFIX, start, end)."""
    raw = bytearray(_PREFIX + cred + b"\r\n")
    start = len(_PREFIX)
    return raw, start, start + len(cred)


def _loop(reps):
    """The bare loop (what each batch costs besides the calls)."""
    t0 = time.ticks_us()
    for _ in range(reps):
        pass
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _jwt(mgr, buf, start, end, reps):
    """Mean µs per check_jwt (a cache hit once the token was seen)."""
    check = mgr.check_jwt  # one bound method per batch, not per call
    t0 = time.ticks_us()
    for _ in range(reps):
        check(buf, start, end)
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _jwt_cold(mgr, buf, start, end, reps, verify):
    """Mean µs per cache.clear() + check_jwt (verify), or per cache.clear() alone."""
    check = mgr.check_jwt
    clear = mgr.cache.clear
    t0 = time.ticks_us()
    if verify:
        for _ in range(reps):
            clear()
            check(buf, start, end)
    else:
        for _ in range(reps):
            clear()
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _api_key(mgr, buf, start, end, reps):
    check = mgr.check_api_key
    t0 = time.ticks_us()
    for _ in range(reps):
        check(buf, start, end)
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _gate(gate, slot, pid, reps):
    check = gate.check
    t0 = time.ticks_us()
    for _ in range(reps):
        check(slot, pid)
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _limit(lim, reps, t):
    """Mean µs per RateLimiter.check; now_ms runs on from t (1 ms per call: the bucket refills)."""
    check = lim.check
    t0 = time.ticks_us()
    for i in range(t, t + reps):
        check(_LIMIT_KEY, _RATE, _BURST, i)
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _noop():
    pass


def _alloc(fn, reps):
    """Bytes allocated per fn() (mem_total delta; the cost of the loop and of calling a function
    that does nothing taken off)."""
    gc.collect()
    m0 = micropython.mem_total()
    for _ in range(reps):
        _noop()
    m1 = micropython.mem_total()
    for _ in range(reps):
        fn()
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def setup():
    """(manager, JWT span, API key span, limiter); every credential checked once to prove it valid."""
    mgr = AuthenticationManager(jwt_keys={"b1": os.urandom(32)}, signing_kid="b1")
    mgr.now = authtypes.clock_s()
    if mgr.now <= 0:
        raise ValueError("the clock is not set: the token's expiry cannot be checked")
    token, _ = mgr.issue_token("bench")
    jwt = _in_buffer(token.encode())
    mgr.check_jwt(*jwt)  # raises AuthError if refused
    if mgr.p_kind != TokenType.JWT or mgr.p_cache < 0:
        raise ValueError("the JWT was not cached (%d bytes)" % (jwt[2] - jwt[1]))
    key = _in_buffer(mgr.register_api_key("bench").secret.encode())
    if not mgr.check_api_key(*key):
        raise ValueError("the registered API key was refused")
    lim = RateLimiter(256)
    if lim.check(_LIMIT_KEY, _RATE, _BURST, 0) < 0:
        raise ValueError("the rate limiter refused a new key")
    return mgr, jwt, key, lim


def gate_setup(mgr, token):
    """(gate, slot holding a parsed GET with the token, policy id); the check is proved to pass."""
    gate = AuthGate(mgr)
    pid = gate.add_policy("jwt", ["jwt"])
    slot = Slot(0, 1024, 64, 16)
    raw = b"GET /authed HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n" + _PREFIX + token + b"\r\n\r\n"
    slot.buf[0 : len(raw)] = raw
    slot.n = len(raw)
    if hp.parse_request(slot) != hp.DONE:
        raise ValueError("the authed request did not parse")
    st = gate.check(slot, pid)
    if st != OK:
        raise ValueError("the gate refused the token: %d %s" % (st, gate.error))
    return gate, slot, pid


def run(batches):
    """The auth figures as a flat dict (keys as in build/bench.json)."""
    mgr, (jb, js, je), (kb, ks, ke), lim = setup()
    gate, slot, pid = gate_setup(mgr, bytes(jb[js:je]))
    cold_reps = 20
    warm_reps = 200
    loop, cold, clear, warm, key, limit, stage = [], [], [], [], [], [], []
    t = 1
    for _ in range(batches):
        loop.append(_loop(warm_reps))
        cold.append(_jwt_cold(mgr, jb, js, je, cold_reps, True))
        clear.append(_jwt_cold(mgr, jb, js, je, cold_reps, False))
        mgr.check_jwt(jb, js, je)  # cached again for the next batch
        warm.append(_jwt(mgr, jb, js, je, warm_reps))
        key.append(_api_key(mgr, kb, ks, ke, warm_reps))
        limit.append(_limit(lim, warm_reps, t))
        stage.append(_gate(gate, slot, pid, warm_reps))
        t += warm_reps
    lo = median(loop)
    out = {
        "jwt_token_bytes": je - js,
        "auth_loop_overhead_us": lo,
        "jwt_verify_us_uncached": median(cold) - median(clear),
        "jwt_cache_clear_us": median(clear),
        "jwt_verify_us_cached": median(warm) - lo,
        "api_key_verify_us": median(key) - lo,
        "rate_limit_check_us": median(limit) - lo,
        "auth_gate_check_us": median(stage) - lo,
    }
    if mgr.cache.find(jb, js, je, mgr.now) < 0:
        raise ValueError("the JWT fell out of the cache during the run")

    # Bytes per call. The cached check is meant to allocate nothing; a bytecode frame too big
    # for the C stack is put on the heap on every call, and only this figure shows it (under
    # heap_lock() the VM falls back to the C stack and such a test passes).
    def cold_check():
        mgr.cache.clear()
        mgr.check_jwt(jb, js, je)

    out["jwt_uncached_alloc_bytes"] = _alloc(cold_check, 20)
    mgr.check_jwt(jb, js, je)
    out["jwt_cached_alloc_bytes"] = _alloc(lambda: mgr.check_jwt(jb, js, je), 100)
    out["api_key_alloc_bytes"] = _alloc(lambda: mgr.check_api_key(kb, ks, ke), 100)
    out["rate_limit_alloc_bytes"] = _alloc(lambda: lim.check(_LIMIT_KEY, _RATE, _BURST, t), 100)
    out["auth_gate_alloc_bytes"] = _alloc(lambda: gate.check(slot, pid), 100)
    return out

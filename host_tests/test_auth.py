"""Portable tests for the auth stage: AuthenticationManager (auth.py), CredCache, AuthGate.

The clock is injected: manager.now is set by the tests (gateway seconds, authtypes.clock_s). On
MicroPython the cached-JWT check, a refused request and the rate-limit check run under heap_lock().
"""

from apigw import httpparse as hp
from apigw import jwt as jwtlib
from apigw.auth import KEY_BASE, AuthenticationManager
from apigw.authgate import NEED_INTROSPECTION, OK, AuthGate
from apigw.authtypes import EPOCH_BASE, AuthError, Permission, Role
from apigw.compat import mem_total, micropython
from apigw.crypto import b64url_encode
from apigw.gateway import ApiGateway
from apigw.slot import Slot
from check import raises, requires_micropython

KEY = b"k" * 32
NOW = 100000  # gateway seconds: a set clock
UNIX_NOW = NOW + EPOCH_BASE


def _mgr(**kw):
    m = AuthenticationManager(
        max_tokens=8, max_api_keys=8, max_users=4, max_revoked=4, jwt_keys={"k1": KEY}, signing_kid="k1", **kw
    )
    m.now = NOW
    return m


def test_issue_and_validate_token():
    m = _mgr()
    m.add_user("ada", "user")
    token, info = m.issue_token("ada")
    assert info.user_id == "ada" and info.role == Role.USER and info.expiry == UNIX_NOW + 3600
    got = m.validate_token(token)
    assert got.user_id == "ada" and got.token_id == info.token_id
    assert got.permissions == Permission.READ | Permission.WRITE
    assert m.get_token_count() == 1
    assert m.get_user_roles("ada") == ["user"]


def test_expired_and_revoked_and_refreshed_tokens_fail():
    m = _mgr()
    token, info = m.issue_token("svc", "service_account", ttl_s=60)
    m.now = NOW + 61 + 30  # past expiry and the default 30 s leeway
    e = raises(AuthError, m.validate_token, token)
    assert e.status == 401 and e.code == "invalid_token"
    m.now = NOW
    new, _ = m.refresh_token(token)
    raises(AuthError, m.validate_token, token)  # the old one is retired
    assert m.validate_token(new).user_id == "svc"
    m.revoke_token(new)
    assert raises(AuthError, m.validate_token, new).message == "token revoked"
    assert m.get_token_count() == 0


def test_no_clock_fails_closed():
    m = _mgr()
    token, _ = m.issue_token("ada")
    m.now = 0
    raises(AuthError, m.validate_token, token)
    raises(AuthError, m.issue_token, "ada")


def test_api_keys_are_kept_as_digests():
    m = _mgr()
    e = m.register_api_key("sensors", ["read"])
    assert e.secret.startswith(e.key + ".") and len(e.secret) == 8 + 1 + 32
    assert m.verify_api_key(e.secret).service_name == "sensors"
    assert e.secret.encode() not in bytes(m._k_digest)
    listed = m.list_api_keys()
    assert listed[0]["key"] == e.key and e.secret not in repr(listed)
    raises(AuthError, m.verify_api_key, e.secret[:-1] + ("A" if e.secret[-1] != "A" else "B"))
    raises(AuthError, m.verify_api_key, "nope")
    m.revoke_api_key(e.key)
    raises(AuthError, m.verify_api_key, e.secret)


def test_a_token_for_an_api_key_keeps_its_binding_and_dies_with_it():
    m = _mgr()
    e = m.register_api_key("sensors", ["read"])
    token, _ = m.issue_token(e.key, "service_account", ["read"])
    b = token.encode()
    for _ in range(2):  # the full check, then the cached one
        m.check_jwt(b, 0, len(b))
        assert m.p_service == "sensors" and m.p_perms == Permission.READ and m.p_principal == KEY_BASE + m._k_ids[e.key]
    m.revoke_api_key(e.key)
    assert "revoked" in raises(AuthError, m.check_jwt, b, 0, len(b)).message
    odd = jwtlib.encode({"sub": "x", "key": ["list"]}, KEY, "k1")
    raises(AuthError, m.check_jwt, odd, 0, len(odd))


def test_basic_users_with_pbkdf2():
    m = _mgr(pbkdf2_iterations=50)
    m.add_user("op", "admin", password="s3cret")
    assert m.verify_password("op", "s3cret") and not m.verify_password("op", "S3cret")
    rec = m.user_record("op")
    assert "s3cret" not in repr(rec) and len(rec["hash"]) == 64 and rec["iterations"] == 50
    m2 = _mgr()
    m2.add_user("op", rec["role"], None, None, rec["salt"], rec["hash"], rec["iterations"])
    assert m2.verify_password("op", "s3cret")


def test_grant_and_revoke_permission_apply_to_live_tokens():
    m = _mgr()
    m.add_user("ada", "user")
    token, _ = m.issue_token("ada")
    b = token.encode()
    m.check_jwt(b, 0, len(b))
    assert m.p_perms & Permission.WRITE
    m.revoke_permission("ada", ["write"])
    m.check_jwt(b, 0, len(b))
    assert not m.p_perms & Permission.WRITE and m.p_perms & Permission.READ
    assert m.grant_permission("ada", "write execute") == Permission.READ | Permission.WRITE | Permission.EXECUTE
    assert m.check_permission(Permission.ALL, Permission.ADMIN)
    assert not m.check_permission(Permission.READ, Permission.READ | Permission.WRITE)


def test_cache_is_keyed_on_the_whole_token():
    m = _mgr()
    token, _ = m.issue_token("ada", "user")
    b = token.encode()
    m.check_jwt(b, 0, len(b))
    assert m.p_cache >= 0
    m.check_jwt(b, 0, len(b))
    assert m.cache.hits == 1
    h, p, s = token.split(".")
    forged = (h + "." + b64url_encode(b'{"sub":"ada","role":"admin"}').decode() + "." + s).encode()
    raises(AuthError, m.check_jwt, forged, 0, len(forged))


def test_tokens_signed_elsewhere_map_claims():
    m = _mgr()
    tok = jwtlib.encode({"sub": "robot", "scope": "read execute", "exp": UNIX_NOW + 60}, KEY, "k1")
    m.check_jwt(tok, 0, len(tok))
    assert m.p_perms == Permission.READ | Permission.EXECUTE and m.p_role == Role.GUEST
    bad = jwtlib.encode({"sub": "robot", "role": "emperor"}, KEY, "k1")
    raises(AuthError, m.check_jwt, bad, 0, len(bad))


def test_state_file_keeps_runtime_changes(tmp=None):
    import os

    path = "auth_state_test.json"
    try:
        m = _mgr(state_path=path)
        e = m.register_api_key(None, ["read"])
        token, info = m.issue_token("ada")
        m.revoke_token(token)
        m2 = _mgr(state_path=path)
        m2.load_state()
        assert m2.verify_api_key(e.secret).key == e.key
        assert m2.is_revoked(info.token_id)
    finally:
        for p in (path, path + ".tmp"):
            try:
                os.remove(p)
            except OSError:
                pass


# -- the gate ---------------------------------------------------------------------------------------


def _gate():
    gw = ApiGateway(8, 16, 1024)
    gw.register_service("sensors", "10.0.0.2", 9001)
    gw.register_service("lights", "10.0.0.3", 9001)
    gw.add_route("/api/sensors", service="sensors")
    gw.add_route("/api/lights", service="lights")
    m = _mgr(pbkdf2_iterations=20)
    m.add_user("op", "admin", password="pw")
    g = AuthGate(m, max_buckets=8)
    g.gw = gw
    g.add_policy("jwt", ["jwt"])
    g.add_policy("any", ["jwt", "api_key", "basic"], ["read"], rate=2, burst=2)
    g.add_policy("public", [], None, rate=1, burst=1)
    g.add_policy("admin", ["jwt", "basic"], ["admin"])
    return gw, m, g


def _request(slot, gw, text):
    slot.clear_request()
    slot.n = len(text)
    slot.buf[: len(text)] = text
    assert hp.parse_request(slot) == hp.DONE
    assert gw.route_request(slot) >= 0


def _run(g, slot, gw, pid, text):
    _request(slot, gw, text)
    return g.check(slot, pid)


def test_gate_statuses():
    gw, m, g = _gate()
    slot = Slot(0, 2048, 256, 16)
    slot.peer = b"10.0.0.9"
    tok, _ = m.issue_token("op")
    get = b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\n"
    assert _run(g, slot, gw, 0, get + b"\r\n") == 401
    assert b'Bearer realm="apigw"' in bytes(g.hdr[: g.hdr_len]) and g.error == "missing_credentials"
    assert _run(g, slot, gw, 0, get + b"Authorization: Bearer " + tok.encode() + b"\r\n\r\n") == OK
    assert _run(g, slot, gw, 0, get + b"Authorization: Bearer a.b.c\r\n\r\n") == 401
    assert b'error="invalid_token"' in bytes(g.hdr[: g.hdr_len])
    assert _run(g, slot, gw, 0, get + b"Authorization: Bearer opaque\r\n\r\n") == 401
    basic = b"Authorization: Basic " + __import__("binascii").b2a_base64(b"op:pw").strip() + b"\r\n\r\n"
    assert _run(g, slot, gw, 3, get + basic) == OK
    assert _run(g, slot, gw, 3, get + b"Authorization: Basic b3A6bm8=\r\n\r\n") == 401  # op:no
    assert b"Basic realm" in bytes(g.hdr[: g.hdr_len])
    user_tok, _ = m.issue_token("guest1", "guest")
    assert _run(g, slot, gw, 3, get + b"Authorization: Bearer " + user_tok.encode() + b"\r\n\r\n") == 403
    post = b"POST /api/sensors/t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nAuthorization: Bearer "
    assert _run(g, slot, gw, 0, post + user_tok.encode() + b"\r\n\r\n") == 403  # by method: Write
    assert _run(g, slot, gw, 0, post + tok.encode() + b"\r\n\r\n") == OK


def test_gate_api_key_bound_to_a_service():
    gw, m, g = _gate()
    slot = Slot(0, 2048, 256, 16)
    slot.peer = b"10.0.0.9"
    e = m.register_api_key("sensors", ["read"])
    hdr = b"X-API-Key: " + e.secret.encode() + b"\r\n\r\n"
    assert _run(g, slot, gw, 1, b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\n" + hdr) == OK
    assert m.p_principal == KEY_BASE + m._k_ids[e.key]
    assert _run(g, slot, gw, 1, b"GET /api/lights/1 HTTP/1.1\r\nHost: x\r\n" + hdr) == 403
    assert _run(g, slot, gw, 1, b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\nX-API-Key: 0123abcd.x\r\n\r\n") == 401


def test_gate_rate_limit_429_headers():
    gw, m, g = _gate()
    slot = Slot(0, 2048, 256, 16)
    slot.peer = b"10.0.0.9"
    get = b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _run(g, slot, gw, 2, get) == OK
    assert _run(g, slot, gw, 2, get) == 429
    h = bytes(g.hdr[: g.hdr_len])
    assert b"RateLimit-Limit: 1\r\n" in h and b"RateLimit-Remaining: 0\r\n" in h and b"Retry-After: 1\r\n" in h
    assert g.error_body() == b'{"status":429,"error":"rate_limited","message":"too many requests: retry later"}'
    slot.peer = b"10.0.0.10"  # another client has its own bucket
    assert _run(g, slot, gw, 2, get) == OK


def test_gate_opaque_bearer_needs_introspection():
    gw, m, g = _gate()
    g.introspector = object()  # stands in: check() only says the endpoint must be asked
    g.add_policy("opaque", ["bearer"])
    slot = Slot(0, 2048, 256, 16)
    slot.peer = b"10.0.0.9"
    assert (
        _run(g, slot, gw, 4, b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer xyz\r\n\r\n")
        == NEED_INTROSPECTION
    )


def test_policy_errors_name_the_field():
    gw, m, g = _gate()
    assert "schemes" in raises(AuthError, g.add_policy, "x", ["magic"]).message
    assert "rate" in raises(AuthError, g.add_policy, "y", [], None, -1).message
    assert "bearer" in raises(AuthError, g.add_policy, "z", ["bearer"]).message
    assert "per" in raises(AuthError, g.add_policy, "w", [], None, 5, 5, "principal").message


@micropython.native
def _checks(g, slot, pid, out, n):
    for i in range(n):
        out[i] = g.check(slot, pid)


def test_cached_jwt_and_rate_limit_allocate_nothing():
    requires_micropython()
    gw, m, g = _gate()
    slot = Slot(0, 2048, 256, 16)
    slot.peer = b"10.0.0.9"
    tok, _ = m.issue_token("op")
    _run(
        g, slot, gw, 1, b"GET /api/sensors/t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok.encode() + b"\r\n\r\n"
    )
    out = [0] * 4
    _checks(g, slot, 1, out, 4)  # warm: every code path seen once
    g.limiter.clear()
    before = mem_total()
    micropython.heap_lock()  # catches allocations the code asks for...
    try:
        _checks(g, slot, 1, out, 4)  # the cached token each time
    finally:
        micropython.heap_unlock()
    # ...and mem_total catches bytecode frames, which heap_lock() silently moves to the C stack
    assert mem_total() == before, mem_total() - before
    assert out == [0, 0, 429, 429], out  # a fresh bucket: burst 2, then 429 with headers written

"""Portable tests for firmware/apigw/introspect.py: the request, the answer table (whole, byte by
byte, with trailing data), the cache, scope_permissions, and check() where no endpoint is needed."""

import asyncio

from apigw import introspect
from apigw.introspect import Introspection, IntrospectionUnavailable, Introspector, scope_permissions
from check import raises, requires_micropython

NOW = 1700000000
TOKEN = "ab+/c= d&e%f~g.h_i-j"


def make(**kw):
    return Introspector("127.0.0.1", 9400, **kw)


# -- the request ---------------------------------------------------------------------------------


def test_request_bytes_exact():
    ins = Introspector("127.0.0.1", 9400, "/oauth/introspect", "gw client", "s3cr:et+/")
    want = (
        b"POST /oauth/introspect HTTP/1.1\r\n"
        b"Host: 127.0.0.1:9400\r\n"
        # base64("gw+client:s3cr%3Aet%2B%2F"): id and secret form-encoded first (RFC 6749 2.3.1)
        b"Authorization: Basic Z3crY2xpZW50OnMzY3IlM0FldCUyQiUyRg==\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Accept: application/json\r\n"
        b"Connection: close\r\n"
        b"Content-Length: 65\r\n"
        b"\r\n"
        b"token=ab%2B%2Fc%3D+d%26e%25f~g.h_i-j&token_type_hint=access_token"
    )
    assert ins.request_bytes(TOKEN) == want
    assert ins.request_bytes(TOKEN.encode()) == want


def test_request_content_length_matches_body():
    ins = make(client_id="gateway", client_secret="secret")
    for token in ("t", "x" * 300, "\u00e9\u00e8/+", bytes(range(256))):
        req = ins.request_bytes(token)
        head, body = req.split(b"\r\n\r\n")
        length = [ln for ln in head.split(b"\r\n") if ln.startswith(b"Content-Length: ")][0]
        assert int(length[16:]) == len(body), token
        assert body.startswith(b"token=") and body.endswith(b"&token_type_hint=access_token")
        for c in body:
            assert 33 <= c < 127, c  # nothing raw: no CR, LF, space or 8-bit byte


def test_form_encode():
    enc = introspect.form_encode
    assert enc("AZaz09-._~") == b"AZaz09-._~"
    assert enc("a b") == b"a+b"
    assert enc("+/=&%?#:@\r\n") == b"%2B%2F%3D%26%25%3F%23%3A%40%0D%0A"
    assert enc("\u00e9") == b"%C3%A9"
    assert enc(b"\x00\xff") == b"%00%FF"


def test_host_header_forms():
    assert b"\r\nHost: idp\r\n" in Introspector("idp", 80).request_bytes("t")
    assert b"\r\nHost: [::1]:8443\r\n" in Introspector("::1", 8443).request_bytes("t")
    assert b"Authorization: Basic Og==\r\n" in Introspector("idp", 80).request_bytes("t")  # base64(":")


def test_constructor_refuses_bad_settings():
    for kw in (
        {"path": "introspect"},
        {"path": "/a b"},
        {"path": "/a\r\nX-Evil: 1"},
        {"timeout_ms": 0},
        {"cache_entries": -1},
        {"ttl_s": -1},
        {"max_response": 10},
    ):
        raises(ValueError, make, **kw)
    raises(ValueError, Introspector, "", 80)
    raises(ValueError, Introspector, "idp\r\n", 80)


# -- the answer ----------------------------------------------------------------------------------


def ok(body, extra=b""):
    """A 200 answer with body, framed by Content-Length unless extra says chunked."""
    framing = b"\r\n" if b"chunked" in extra else b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + framing + body


FULL = b'{"active":true,"sub":"alice","scope":"read write","exp":1700000100,"client_id":"app","iss":"x"}'
U = None  # IntrospectionUnavailable
# (name, answer bytes, expected (active, sub, scope, exp, client_id) or U)
ANSWERS = (
    ("active with fields", ok(FULL), (True, "alice", "read write", 1700000100, "app")),
    ("active only", ok(b'{"active": true}'), (True, None, "", None, None)),
    ("inactive", ok(b'{"active": false, "sub": "mallory", "scope": "admin"}'), (False, None, "", None, None)),
    ("missing active", ok(b'{"sub": "alice"}'), U),
    ('active "true"', ok(b'{"active": "true"}'), U),
    ("active 1", ok(b'{"active": 1}'), U),
    ("active null", ok(b'{"active": null}'), U),
    ("401", b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}", U),
    ("403", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", U),
    ("500", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", U),
    ("302", b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", U),
    ("bad JSON", ok(b'{"active": true, "sub": "x"'), U),
    ("JSON array", ok(b"[true]"), U),
    ("JSON string", ok(b'"active"'), U),
    ("empty body", ok(b""), U),
    (
        "no framing, read to close",
        b'HTTP/1.1 200 OK\r\n\r\n{"active": true, "sub": "bob"}',
        (True, "bob", "", None, None),
    ),
    ("HTTP/1.0", b'HTTP/1.0 200 OK\r\n\r\n{"active": false}', (False, None, "", None, None)),
    (
        "chunked",
        ok(
            b'b\r\n{"active": \r\n7;ext=1\r\ntrue, "\r\nc\r\nsub": "eve"}\r\n0\r\n\r\n',
            b"Transfer-Encoding: chunked\r\n",
        ),
        (True, "eve", "", None, None),
    ),
    (
        "chunked with trailer",
        ok(b'10\r\n{"active": false\r\n1\r\n}\r\n0\r\nX-T: 1\r\n\r\n', b"Transfer-Encoding: chunked\r\n"),
        (False, None, "", None, None),
    ),
    ("chunked cut short", ok(b'10\r\n{"active": false\r\n', b"Transfer-Encoding: chunked\r\n"), U),
    ("chunked bad size", ok(b'zz\r\n{"active": false}\r\n0\r\n\r\n', b"Transfer-Encoding: chunked\r\n"), U),
    ("chunked bad CRLF", ok(b"2\r\n{}XX0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"), U),
    ("gzip coding", ok(b'{"active": true}', b"Transfer-Encoding: gzip\r\n"), U),
    ("cut short", b'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{"active": true}', U),
    ("bad Content-Length", b'HTTP/1.1 200 OK\r\nContent-Length: +16\r\n\r\n{"active": true}', U),
    ("two lengths", ok(b'{"active": true}', b"Content-Length: 17\r\n"), U),
    ("same length twice", ok(b'{"active": true}', b"Content-Length: 16\r\n"), (True, None, "", None, None)),
    ("oversized", ok(b'{"active": true, "pad": "' + b"x" * 4096 + b'"}'), U),
    (
        "100 Continue first",
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"active": true, "sub": "c"}'),
        (True, "c", "", None, None),
    ),
    ("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n", U),
    ("bad status", b'HTTP/1.1 2000 OK\r\n\r\n{"active": true}', U),
    ("head only", b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n", U),
    ("nothing", b"", U),
    ("bad header line", b'HTTP/1.1 200 OK\r\nno colon\r\n\r\n{"active": true}', U),
    (
        "odd field types",
        ok(b'{"active": true, "sub": 7, "scope": ["read", "admin", 3], "exp": 1700000100.5, "client_id": false}'),
        (True, None, "read admin", 1700000100, None),
    ),
    ("exp as string", ok(b'{"active": true, "exp": "soon"}'), (True, None, "", None, None)),
)


def fields(a):
    return (a.active, a.sub, a.scope, a.exp, a.client_id)


def test_parse_response_table():
    ins = make()
    for name, data, want in ANSWERS:
        if want is U:
            e = raises(IntrospectionUnavailable, ins.parse_response, data)
            assert str(e).startswith("token introspection: "), name
        else:
            a = ins.parse_response(data)
            assert fields(a) == want, (name, fields(a))
            assert a.state == (introspect.ACTIVE if want[0] else introspect.INACTIVE)
            assert fields(ins.parse_response(bytearray(data))) == want, name
            assert fields(ins.parse_response(memoryview(data))) == want, name


def test_body_byte_by_byte_and_with_trailing_data():
    """The incremental framing check() uses: every prefix of a good answer is "need more" (None)
    or the final body; never an error. A complete body ignores what follows it."""
    body = introspect._body
    for name, data, want in ANSWERS:
        if want is U or b"Content-Length" not in data and b"chunked" not in data:
            continue
        final = bytes(body(data, True))
        for n in range(len(data)):
            got = body(data[:n], False)
            assert got is None or bytes(got) == final, (name, n)
        assert bytes(body(data, False)) == final, name
        assert bytes(body(data + b"HTTP/1.1 500 X\r\n\r\n", False)) == final, name


def test_parse_response_size_limit():
    data = ok(b'{"active": true, "sub": "' + b"s" * 100 + b'"}')
    assert make(max_response=len(data)).parse_response(data).sub == "s" * 100
    e = raises(IntrospectionUnavailable, make(max_response=len(data) - 1).parse_response, data)
    assert "larger than" in str(e)


# -- the cache -----------------------------------------------------------------------------------


def active(exp=None, sub="alice"):
    return Introspection(True, sub, "read", exp)


def test_cache_hit_before_expiry_miss_after_exp():
    ins = make(ttl_s=60)
    a = active(exp=NOW + 10)
    assert ins.cached(TOKEN, NOW) is None
    ins.store(TOKEN, a, NOW)
    assert ins.cached(TOKEN, NOW) is a
    assert ins.cached(TOKEN.encode(), NOW + 9) is a
    assert ins.cached(TOKEN, NOW + 10) is None  # exp: not valid at or after
    assert ins.cached("other", NOW) is None
    assert (ins.hits, ins.misses, ins.failures) == (2, 3, 0)


def test_cache_ttl_caps_a_late_exp():
    ins = make(ttl_s=60)
    a = active(exp=NOW + 3600)
    ins.store(TOKEN, a, NOW)
    assert ins.cached(TOKEN, NOW + 59) is a
    assert ins.cached(TOKEN, NOW + 60) is None
    b = active(exp=None)
    ins.store("noexp", b, NOW)
    assert ins.cached("noexp", NOW + 59) is b
    assert ins.cached("noexp", NOW + 60) is None


def test_inactive_answers_are_cached_for_ttl():
    ins = make(ttl_s=30)
    no = Introspection(False)
    ins.store("bad", no, NOW)
    assert ins.cached("bad", NOW + 29) is no
    assert ins.cached("bad", NOW + 30) is None


def test_expired_answer_is_not_cached_and_drops_the_old_one():
    ins = make()
    ins.store(TOKEN, active(exp=NOW + 100), NOW)
    ins.store(TOKEN, active(exp=NOW - 1), NOW + 1)
    assert ins.cached(TOKEN, NOW + 1) is None


def test_same_token_replaces_its_entry():
    ins = make(cache_entries=2)
    ins.store("a", active(sub="a1"), NOW)
    ins.store("b", active(sub="b"), NOW)
    ins.store("a", active(sub="a2"), NOW + 1)
    assert ins.cached("a", NOW + 1).sub == "a2"
    assert ins.cached("b", NOW + 1).sub == "b"


def test_full_cache_evicts_the_oldest():
    ins = make(cache_entries=4, ttl_s=60)
    for i in range(4):
        ins.store("t%d" % i, active(sub=str(i)), NOW + i)
    ins.store("t4", active(sub="4"), NOW + 4)
    assert ins.cached("t0", NOW + 4) is None
    for i in range(1, 5):
        assert ins.cached("t%d" % i, NOW + 4).sub == str(i)


def test_expired_entries_are_reused_before_live_ones():
    ins = make(cache_entries=3, ttl_s=60)
    ins.store("short", active(exp=NOW + 5, sub="short"), NOW + 2)
    ins.store("old", active(sub="old"), NOW)
    ins.store("mid", active(sub="mid"), NOW + 1)
    ins.store("new", active(sub="new"), NOW + 10)  # "short" expired: its entry goes, "old" stays
    assert ins.cached("old", NOW + 10).sub == "old"
    assert ins.cached("mid", NOW + 10).sub == "mid"
    assert ins.cached("new", NOW + 10).sub == "new"


def test_cache_never_holds_the_token():
    ins = make(cache_entries=4)
    tokens = ["opaque-token-%d-0123456789abcdef" % i for i in range(6)]
    for i, t in enumerate(tokens):
        ins.store(t, active(sub="s%d" % i), NOW)
    raw = bytes(ins._digests)
    for t in tokens:
        assert t.encode() not in raw
        assert t[:12].encode() not in raw
        for a in ins._answers:
            assert t not in repr(a)
    assert introspect.hashlib.sha256(tokens[-1].encode()).digest() in raw


def test_clock_jumps():
    ins = make()
    a = active()
    ins.store(TOKEN, a, NOW)
    assert ins.cached(TOKEN, NOW - 1) is None  # clock went back: nothing is trusted
    assert ins.cached(TOKEN, NOW + (1 << 29)) is None
    ins.store("late", a, NOW + (1 << 30))  # far ahead: the cache starts over
    assert ins.cached("late", NOW + (1 << 30)) is a
    assert ins.cached(TOKEN, NOW) is None


def test_no_cache():
    for kw in ({"cache_entries": 0}, {"ttl_s": 0}):
        ins = make(**kw)
        ins.store(TOKEN, active(), NOW)
        assert ins.cached(TOKEN, NOW) is None


def test_cached_hit_allocates_only_the_digest():
    requires_micropython()
    import gc

    from apigw.compat import mem_total

    ins = make()
    for i in range(32):
        ins.store("tok%d" % i, active(), NOW)
    token = b"tok31"
    sha256 = introspect.hashlib.sha256
    ins.cached(token, NOW)
    gc.collect()
    before = mem_total()
    for _ in range(10):
        sha256(token).digest()
    digest_cost = mem_total() - before  # the hash object and the 32-byte digest (189 bytes here)
    before = mem_total()
    for _ in range(10):
        assert ins.cached(token, NOW) is not None
    assert mem_total() - before <= digest_cost, (mem_total() - before, digest_cost)
    key = introspect.hashlib.sha256(token).digest()
    import micropython

    micropython.heap_lock()
    try:
        i = ins._find(key, 0)
    finally:
        micropython.heap_unlock()
    assert i == 31


# -- scope ---------------------------------------------------------------------------------------

SCOPES = (
    ("", 0),
    (None, 0),
    ("read", introspect.READ),
    ("write read", introspect.READ | introspect.WRITE),
    ("read write execute admin", 15),
    ("admin  openid profile", introspect.ADMIN),
    ("Read WRITE", 0),  # scope tokens are case-sensitive
    ("readwrite read:all", 0),
    ("execute execute", introspect.EXECUTE),
)


def test_scope_permissions_table():
    assert (introspect.READ, introspect.WRITE, introspect.EXECUTE, introspect.ADMIN) == (1, 2, 4, 8)
    for scope, want in SCOPES:
        assert scope_permissions(scope) == want, scope


# -- check() without an endpoint -----------------------------------------------------------------


def test_check_answers_from_cache_without_connecting():
    ins = Introspector("127.0.0.1", 1, timeout_ms=200)  # nothing listens on port 1
    a = active()
    ins.store(TOKEN, a, NOW)
    assert asyncio.run(ins.check(TOKEN, NOW)) is a
    assert (ins.hits, ins.misses, ins.failures) == (1, 0, 0)


def test_check_refused_is_unavailable():
    ins = Introspector("127.0.0.1", 1, timeout_ms=1000)
    e = raises(IntrospectionUnavailable, asyncio.run, ins.check(TOKEN, NOW))
    assert TOKEN not in str(e)
    assert (ins.hits, ins.misses, ins.failures) == (0, 1, 1)
    assert introspect.UNAVAILABLE == -1

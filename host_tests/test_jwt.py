"""Portable tests for firmware/apigw/jwt.py: the RFC 7515 example, round trips, key rotation and
a table of attacks, each fed as bytes, str, memoryview and as a span inside a larger buffer.

Tokens in the tables are built here from crypto primitives (not with jwt.encode), so a header or
payload can be anything, signed or not. The heap_lock test runs on MicroPython only.
"""

import json

from apigw import crypto, jwt
from check import raises, requires_micropython

# RFC 7515 appendix A.1: the HS256 example (header and payload contain CR LF, as published).
RFC_KEY = crypto.b64url_decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
RFC_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
RFC_CLAIMS = {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}

K1 = b"k1-secret-0123456789abcdef-0123456789"
K2 = b"k2-secret-fedcba9876543210-9876543210"
NOW = 1700000000
LEEWAY = 30
ISS = "https://issuer.example"
AUD = "apigw"
ACCEPT = None  # expected "code" of a token that verifies


def _verifier(**kw):
    """The table's verifier: two keys, no default kid, 30 s leeway, issuer and audience set."""
    cfg = {"keys": {"k1": K1, "k2": K2}, "leeway_s": LEEWAY, "issuer": ISS, "audience": AUD, "max_len": 1024}
    cfg.update(kw)
    return jwt.JwtVerifier(**cfg)


def _b64(data):
    return crypto.b64url_encode(data)


def _claims(**kw):
    c = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": NOW - 5, "exp": NOW + 300}
    c.update(kw)
    return c


def _raw(header, payload, key=K1):
    """header and payload as raw part texts (already base64url), signed with HMAC-SHA256."""
    signing_input = header + b"." + payload
    return signing_input + b"." + _b64(crypto.hmac_sha256(key, signing_input))


def _tok(header=b'{"alg":"HS256","typ":"JWT","kid":"k1"}', claims=None, key=K1):
    """A token with the given header JSON text (bytes) and claims (dict or JSON text)."""
    if claims is None:
        claims = _claims()
    payload = claims if type(claims) is bytes else json.dumps(claims).encode()
    return _raw(_b64(header), _b64(payload), key)


def _parts(tok):
    return tok.split(b".")


def _swap(tok, i, part):
    p = _parts(tok)
    p[i] = part
    return b".".join(p)


def _non_canonical(sig):
    """sig with its unused low bits set: the same 32 bytes spelled differently."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return sig[:-1] + alphabet[alphabet.index(sig[-1:]) + 1 :][:1]


GOOD = _tok()
NONE_HDR = _b64(b'{"alg":"none","typ":"JWT"}')
PAY = _b64(json.dumps(_claims()).encode())
SIG = _parts(GOOD)[2]

# (name, token or a function making it, expected code or ACCEPT[, verifier options, now_s])
ATTACKS = (
    ("good token", GOOD, ACCEPT),
    ("good token, typ lower case", lambda: _tok(b'{"alg":"HS256","typ":"jwt","kid":"k1"}'), ACCEPT),
    ("good token, no typ", lambda: _tok(b'{"alg":"HS256","kid":"k2"}', key=K2), ACCEPT),
    ("alg none, no signature", NONE_HDR + b"." + PAY + b".", jwt.MALFORMED),
    ("alg none, signed", lambda: _raw(NONE_HDR, PAY), jwt.ALG),
    ("alg none, any signature", NONE_HDR + b"." + PAY + b"." + SIG, jwt.ALG),
    ("alg None", lambda: _tok(b'{"alg":"None","kid":"k1"}'), jwt.ALG),
    ("alg NONE", lambda: _tok(b'{"alg":"NONE","kid":"k1"}'), jwt.ALG),
    ("alg missing", lambda: _tok(b'{"typ":"JWT","kid":"k1"}'), jwt.ALG),
    ("alg null", lambda: _tok(b'{"alg":null,"kid":"k1"}'), jwt.ALG),
    ("alg hs256", lambda: _tok(b'{"alg":"hs256","kid":"k1"}'), jwt.ALG),
    ("alg in a list", lambda: _tok(b'{"alg":["HS256"],"kid":"k1"}'), jwt.ALG),
    ("alg duplicated, last none", lambda: _tok(b'{"alg":"HS256","alg":"none","kid":"k1"}'), jwt.ALG),
    ("alg HS384", lambda: _tok(b'{"alg":"HS384","kid":"k1"}'), jwt.ALG),
    ("alg HS512", lambda: _tok(b'{"alg":"HS512","kid":"k1"}'), jwt.ALG),
    ("alg RS256", lambda: _tok(b'{"alg":"RS256","kid":"k1"}'), jwt.ALG),
    ("alg ES256", lambda: _tok(b'{"alg":"ES256","kid":"k1"}'), jwt.ALG),
    ("stripped signature", lambda: _swap(GOOD, 2, b""), jwt.MALFORMED),
    ("truncated signature", GOOD[:-1], jwt.SIGNATURE),
    ("half a signature", GOOD[:-22], jwt.SIGNATURE),
    ("signature padded", GOOD + b"=", jwt.SIGNATURE),
    ("signature of 31 bytes", lambda: _swap(GOOD, 2, _b64(b"\x00" * 31)), jwt.SIGNATURE),
    ("signature of 33 bytes", lambda: _swap(GOOD, 2, _b64(crypto.b64url_decode(SIG) + b"\x00")), jwt.SIGNATURE),
    ("signature of 64 bytes", lambda: _swap(GOOD, 2, _b64(b"\x01" * 64)), jwt.SIGNATURE),
    (
        "signature bit flipped",
        lambda: _swap(GOOD, 2, b"A" + SIG[1:] if SIG[:1] != b"A" else b"B" + SIG[1:]),
        jwt.SIGNATURE,
    ),
    ("signature non-canonical", lambda: _swap(GOOD, 2, _non_canonical(SIG)), jwt.SIGNATURE),
    ("signature with '+'", lambda: _swap(GOOD, 2, SIG[:-2] + b"+" + SIG[-1:]), jwt.SIGNATURE),
    (
        "payload changed after signing",
        lambda: _swap(GOOD, 1, _b64(json.dumps(_claims(sub="root")).encode())),
        jwt.SIGNATURE,
    ),
    (
        "header changed after signing",
        lambda: _swap(GOOD, 0, _b64(b'{"alg":"HS256","typ":"JWT","kid":"k1","x":1}')),
        jwt.SIGNATURE,
    ),
    ("wrong key", lambda: _tok(key=b"not the key"), jwt.SIGNATURE),
    ("kid of the other key", lambda: _tok(b'{"alg":"HS256","kid":"k2"}', key=K1), jwt.SIGNATURE),
    ("unknown kid", lambda: _tok(b'{"alg":"HS256","kid":"k9"}'), jwt.KID),
    ("kid not a str", lambda: _tok(b'{"alg":"HS256","kid":1}'), jwt.KID),
    ("kid a list", lambda: _tok(b'{"alg":"HS256","kid":["k1"]}'), jwt.KID),
    ("kid null", lambda: _tok(b'{"alg":"HS256","kid":null}'), jwt.KID),
    ("missing kid, no default", lambda: _tok(b'{"alg":"HS256","typ":"JWT"}'), jwt.KID),
    ("missing kid, default k1", lambda: _tok(b'{"alg":"HS256","typ":"JWT"}'), ACCEPT, {"default_kid": "k1"}),
    ("missing kid, default k2", lambda: _tok(b'{"alg":"HS256","typ":"JWT"}'), jwt.SIGNATURE, {"default_kid": "k2"}),
    ("expired", lambda: _tok(claims=_claims(exp=NOW - LEEWAY - 1)), jwt.EXPIRED),
    ("expired at exp + leeway", lambda: _tok(claims=_claims(exp=NOW - LEEWAY)), jwt.EXPIRED),
    ("expired within leeway", lambda: _tok(claims=_claims(exp=NOW - LEEWAY + 1)), ACCEPT),
    ("expired exactly at exp", lambda: _tok(claims=_claims(exp=NOW)), jwt.EXPIRED, {"leeway_s": 0}),
    ("one second before exp", lambda: _tok(claims=_claims(exp=NOW + 1)), ACCEPT, {"leeway_s": 0}),
    ("nbf in the future", lambda: _tok(claims=_claims(nbf=NOW + LEEWAY + 1)), jwt.NOT_YET_VALID),
    ("nbf within leeway", lambda: _tok(claims=_claims(nbf=NOW + LEEWAY)), ACCEPT),
    ("nbf now, no leeway", lambda: _tok(claims=_claims(nbf=NOW)), ACCEPT, {"leeway_s": 0}),
    ("iat in the future", lambda: _tok(claims=_claims(iat=NOW + LEEWAY + 1)), jwt.IAT),
    ("iat within leeway", lambda: _tok(claims=_claims(iat=NOW + LEEWAY)), ACCEPT),
    ("wrong iss", lambda: _tok(claims=_claims(iss="https://evil.example")), jwt.ISSUER),
    ("iss missing", lambda: _tok(claims={"aud": AUD}), jwt.ISSUER),
    ("iss in a list", lambda: _tok(claims=_claims(iss=[ISS])), jwt.ISSUER),
    ("iss not checked", lambda: _tok(claims=_claims(iss="x")), ACCEPT, {"issuer": None}),
    ("wrong aud", lambda: _tok(claims=_claims(aud="other")), jwt.AUDIENCE),
    ("aud list without ours", lambda: _tok(claims=_claims(aud=["other", "apigw2"])), jwt.AUDIENCE),
    ("aud list with ours", lambda: _tok(claims=_claims(aud=["other", AUD])), ACCEPT),
    ("aud missing", lambda: _tok(claims={"iss": ISS}), jwt.AUDIENCE),
    ("aud a dict", lambda: _tok(claims=_claims(aud={AUD: 1})), jwt.AUDIENCE),
    ("header padded", lambda: _raw(_b64(b'{"alg":"HS256","kid":"k1"}') + b"=", PAY), jwt.MALFORMED),
    ("header with '+'", lambda: _swap(GOOD, 0, b"+" + _parts(GOOD)[0][1:]), jwt.MALFORMED),
    ("header with '/'", lambda: _swap(GOOD, 0, b"/" + _parts(GOOD)[0][1:]), jwt.MALFORMED),
    ("header with a space", lambda: _swap(GOOD, 0, b" " + _parts(GOOD)[0]), jwt.MALFORMED),
    ("payload padded", lambda: _raw(_parts(GOOD)[0], _b64(b'{"a":1}') + b"="), jwt.MALFORMED),
    ("payload with '+'", lambda: _raw(_parts(GOOD)[0], b"+" + PAY[1:]), jwt.MALFORMED),
    ("payload with '/'", lambda: _raw(_parts(GOOD)[0], b"/" + PAY[1:]), jwt.MALFORMED),
    ("payload with a newline", lambda: _raw(_parts(GOOD)[0], PAY[:8] + b"\n" + PAY[8:]), jwt.MALFORMED),
    ("header JSON array", lambda: _tok(b'["HS256"]'), jwt.MALFORMED),
    ("header JSON string", lambda: _tok(b'"HS256"'), jwt.MALFORMED),
    ("header JSON null", lambda: _tok(b"null"), jwt.MALFORMED),
    ("header not JSON", lambda: _tok(b'{"alg":"HS256"'), jwt.MALFORMED),
    ("header not UTF-8", lambda: _tok(b'{"alg":"HS256","kid":"k\xff"}'), jwt.MALFORMED),
    ("header nested 1500 deep", lambda: _tok(b"[" * 1500 + b"]" * 1500), jwt.MALFORMED, {"max_len": 8192}),
    ("payload nested 1500 deep", lambda: _tok(claims=b"[" * 1500 + b"]" * 1500), jwt.MALFORMED, {"max_len": 8192}),
    ("payload JSON array", lambda: _tok(claims=b"[1,2]"), jwt.MALFORMED),
    ("payload JSON number", lambda: _tok(claims=b"42"), jwt.MALFORMED),
    ("payload not JSON", lambda: _tok(claims=b"{sub: alice}"), jwt.MALFORMED),
    ("payload not UTF-8", lambda: _tok(claims=b'{"sub":"\xff"}'), jwt.MALFORMED),
    ("payload with trailing data", lambda: _tok(claims=b'{"sub":"a"} {}'), jwt.MALFORMED),
    ("exp a string", lambda: _tok(claims=_claims(exp=str(NOW + 300))), jwt.MALFORMED),
    ("exp a float", lambda: _tok(claims=_claims(exp=NOW + 300.5)), jwt.MALFORMED),
    ("exp true", lambda: _tok(claims=_claims(exp=True)), jwt.MALFORMED),
    ("exp null", lambda: _tok(claims=_claims(exp=None)), jwt.MALFORMED),
    ("nbf a string", lambda: _tok(claims=_claims(nbf="0")), jwt.MALFORMED),
    ("iat a list", lambda: _tok(claims=_claims(iat=[NOW])), jwt.MALFORMED),
    ("two dots only", b"..", jwt.MALFORMED),
    ("empty header", b"." + PAY + b"." + SIG, jwt.MALFORMED),
    ("empty payload", _parts(GOOD)[0] + b".." + SIG, jwt.MALFORMED),
    ("two parts", _parts(GOOD)[0] + b"." + PAY, jwt.MALFORMED),
    ("one part", PAY, jwt.MALFORMED),
    ("empty", b"", jwt.MALFORMED),
    ("four parts", GOOD + b"." + SIG, jwt.MALFORMED),
    ("trailing dot", GOOD + b".", jwt.MALFORMED),
    ("oversized token", lambda: _tok(claims=_claims(pad="x" * 1024)), jwt.TOO_LONG),
    ("oversized junk", b"A" * 5000 + b".A.A", jwt.TOO_LONG),
    ("crit header", lambda: _tok(b'{"alg":"HS256","kid":"k1","crit":["exp"],"exp":1}'), jwt.MALFORMED),
    ("crit empty", lambda: _tok(b'{"alg":"HS256","kid":"k1","crit":[]}'), jwt.MALFORMED),
    ("typ not JWT", lambda: _tok(b'{"alg":"HS256","typ":"at+jwt","kid":"k1"}'), jwt.MALFORMED),
    ("typ not a str", lambda: _tok(b'{"alg":"HS256","typ":1,"kid":"k1"}'), jwt.MALFORMED),
    ("clock not set, exp", GOOD, jwt.CLOCK, {}, None),
    ("clock not set, nbf", lambda: _tok(claims={"iss": ISS, "aud": AUD, "nbf": 0}), jwt.CLOCK, {}, None),
    ("clock not set, no exp", lambda: _tok(claims={"iss": ISS, "aud": AUD, "iat": NOW}), ACCEPT, {}, None),
)


def _case(row):
    """(name, token bytes, expected code, verifier, now_s) from a table row."""
    name, tok, want = row[0], row[1], row[2]
    opts = row[3] if len(row) > 3 else {}
    now = row[4] if len(row) > 4 else NOW
    if callable(tok):
        tok = tok()
    return name, tok, want, _verifier(**opts), now


def _outcome(fn, *args):
    """The claims fn returns, or the JwtError code it raises (anything else propagates)."""
    try:
        return fn(*args)
    except jwt.JwtError as e:
        return e.code


def test_rfc7515_a1_example():
    v = jwt.JwtVerifier({"rfc": RFC_KEY}, default_kid="rfc")
    assert v.verify(RFC_TOKEN, 1300819379) == RFC_CLAIMS
    assert v.verify(RFC_TOKEN.encode(), 0) == RFC_CLAIMS
    assert raises(jwt.JwtError, v.verify, RFC_TOKEN, 1300819380).code == jwt.EXPIRED
    assert raises(jwt.JwtError, v.verify, RFC_TOKEN, 1700000000).code == jwt.EXPIRED
    assert jwt.JwtVerifier({"rfc": RFC_KEY}, default_kid="rfc", leeway_s=60).verify(RFC_TOKEN, 1300819400)
    assert jwt.JwtVerifier({"rfc": RFC_KEY}, default_kid="rfc", issuer="joe").verify(RFC_TOKEN, 0)["iss"] == "joe"
    assert raises(jwt.JwtError, jwt.JwtVerifier({"rfc": RFC_KEY}).verify, RFC_TOKEN, 0).code == jwt.KID


def test_encode_round_trip_without_kid():
    claims = {"sub": "bob", "exp": NOW + 60, "scope": ["read", "write"], "n": {"a": None, "b": 1.5}}
    tok = jwt.encode(claims, K1)
    assert type(tok) is bytes and tok.count(b".") == 2
    h, p, s = _parts(tok)
    assert crypto.b64url_decode(h) == b'{"alg":"HS256","typ":"JWT"}'
    assert b" " not in crypto.b64url_decode(p)  # compact JSON
    assert json.loads(crypto.b64url_decode(p)) == claims
    assert len(crypto.b64url_decode(s)) == 32
    assert jwt.JwtVerifier({"main": K1}, default_kid="main").verify(tok, NOW) == claims
    assert raises(jwt.JwtError, jwt.JwtVerifier({"main": K1}).verify, tok, NOW).code == jwt.KID


def test_encode_round_trip_with_kid():
    claims = {"sub": "caf\u00e9", "iat": NOW}
    tok = jwt.encode(claims, K2, kid="2025-01")
    header = json.loads(crypto.b64url_decode(_parts(tok)[0]))
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "2025-01"}
    assert b" " not in crypto.b64url_decode(_parts(tok)[0])
    assert jwt.JwtVerifier({"2025-01": K2}).verify(tok.decode(), NOW) == claims


def test_encode_refuses_bad_arguments():
    raises(TypeError, jwt.encode, [1], K1)
    raises(TypeError, jwt.encode, {}, K1, kid=3)


def test_key_rotation():
    old, new = b"old-key-" * 4, b"new-key-" * 4
    v = jwt.JwtVerifier({"2024": old, "2025": new}, default_kid="2025")
    t_old = jwt.encode({"sub": "a"}, old, kid="2024")
    t_new = jwt.encode({"sub": "b"}, new, kid="2025")
    assert v.verify(t_old, NOW) == {"sub": "a"}
    assert v.verify(t_new, NOW) == {"sub": "b"}
    assert v.verify(jwt.encode({"sub": "c"}, new), NOW) == {"sub": "c"}  # no kid: the default
    assert raises(jwt.JwtError, v.verify, jwt.encode({"sub": "d"}, old), NOW).code == jwt.SIGNATURE
    assert raises(jwt.JwtError, v.verify, jwt.encode({"sub": "e"}, old, kid="2025"), NOW).code == jwt.SIGNATURE
    assert raises(jwt.JwtError, v.verify, jwt.encode({"sub": "f"}, new, kid="2026"), NOW).code == jwt.KID
    retired = jwt.JwtVerifier({"2025": new})
    assert raises(jwt.JwtError, retired.verify, t_old, NOW).code == jwt.KID
    assert retired.verify(t_new, NOW) == {"sub": "b"}


def test_verifier_refuses_bad_configuration():
    raises(ValueError, jwt.JwtVerifier, {"a": K1}, default_kid="b")
    raises(ValueError, jwt.JwtVerifier, {"a": b""})
    raises(ValueError, jwt.JwtVerifier, {1: K1})
    raises(ValueError, jwt.JwtVerifier, {"a": K1}, leeway_s=-1)


def test_attack_table():
    for row in ATTACKS:
        name, tok, want, v, now = _case(row)
        got = _outcome(v.verify, tok, now)
        if want is ACCEPT:
            assert got == json.loads(crypto.b64url_decode(_parts(tok)[1])), (name, got)
        else:
            assert got == want, (name, got, want)


def test_attack_table_every_input_type_and_as_a_span():
    for row in ATTACKS:
        name, tok, want, v, now = _case(row)
        want = _outcome(v.verify, tok, now)
        assert _outcome(v.verify, bytearray(tok), now) == want, name
        assert _outcome(v.verify, memoryview(tok), now) == want, name
        if b"\xff" not in tok:
            assert _outcome(v.verify, tok.decode(), now) == want, name
        buf = bytearray(b"Authorization: Bearer " + tok + b"\r\nX-Next: 1.2.3\r\n")
        start = 22
        assert _outcome(v.verify_span, buf, start, start + len(tok), now) == want, name
        assert _outcome(v.verify_span, memoryview(buf), start, start + len(tok), now) == want, name


def test_signature_span():
    for row in ATTACKS:
        name, tok, want, v, now = _case(row)
        buf = bytearray(b"x.y." + tok + b".z")
        p = _parts(tok)
        if len(p) == 3 and p[0] and p[1] and p[2]:
            want_span = (4 + len(p[0]) + len(p[1]) + 2, 4 + len(tok))
        else:
            want_span = (-1, -1)
        assert jwt.JwtVerifier.signature_span(buf, 4, 4 + len(tok)) == want_span, name
        assert v.signature_span(memoryview(buf), 4, 4 + len(tok)) == want_span, name
        assert jwt.signature_start(tok, 0, len(tok)) == (want_span[0] - 4 if want_span[0] >= 0 else -1), name
        if want_span[0] >= 0:
            assert bytes(buf[want_span[0] : want_span[1]]) == p[2]
    # Offsets outside the buffer never reach the native scan.
    for start, end in ((0, len(GOOD) + 1), (-1, len(GOOD)), (5, 4), (0, 0)):
        assert jwt.JwtVerifier.signature_span(GOOD, start, end) == (-1, -1)


def test_signature_start_allocates_nothing():
    requires_micropython()
    import micropython  # type: ignore

    buf = bytearray(b"Bearer " + GOOD + b"\r\n")
    end = 7 + len(GOOD)
    bad = bytearray(b"a.b.c.d")
    start = jwt.signature_start
    span = jwt.JwtVerifier.signature_span
    micropython.heap_lock()
    try:
        s = start(buf, 7, end)
        n = start(bad, 0, len(bad))
        m = span(bad, 0, len(bad))  # the refusal is a constant tuple
    finally:
        micropython.heap_unlock()
    assert s == end - 43 and n == -1 and m == (-1, -1)


def test_messages_never_echo_token_or_key():
    secrets = (K1, K2, _b64(K1), _b64(K2))
    for row in ATTACKS:
        name, tok, want, v, now = _case(row)
        if want is ACCEPT:
            continue
        e = raises(jwt.JwtError, v.verify, tok, now)
        assert isinstance(e, ValueError) and e.code == want, name
        msg = e.message
        assert type(msg) is str and 0 < len(msg) < 80 and str(e) == msg, name
        assert getattr(e, "__context__", None) is None, name  # no chained parser error to quote
        for s in secrets:
            assert s.decode() not in msg, name
        for part in _parts(tok):
            if len(part) >= 4:
                assert part.decode("latin-1") not in msg, name


def test_every_single_byte_change_is_refused():
    # A one-byte change anywhere gives a JwtError (never another exception, never acceptance).
    v = _verifier()
    for i in range(len(GOOD)):
        for c in b"A.=\xff":
            if GOOD[i] == c:
                continue
            bad = GOOD[:i] + bytes((c,)) + GOOD[i + 1 :]
            assert type(_outcome(v.verify, bad, NOW)) is str, (i, c)
    for n in range(len(GOOD)):
        assert type(_outcome(v.verify, GOOD[:n], NOW)) is str, n

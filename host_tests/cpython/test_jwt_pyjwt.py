"""Interoperability of firmware/apigw/jwt.py with PyJWT, the reference HS256 implementation.

- tokens PyJWT signs (with and without kid, with every registered claim) verify to the same claims;
- tokens apigw.jwt.encode makes decode in PyJWT to the same claims and header;
- PyJWT tokens with another algorithm (HS384, HS512, none) are refused;
- over the portable attack table, PyJWT refuses what we refuse for the algorithm and the MAC, and
  accepts what we accept.

Module names clash: the firmware module is apigw.jwt, PyJWT is the top-level `jwt`.
"""

import time

import jwt as pyjwt
import pytest

import test_jwt as portable  # the portable suite's tables (host_tests/ is on sys.path)
from apigw import jwt as gwjwt

KEY = (b"interop-key-0123456789abcdef-" * 3)[:64]  # 64 bytes: PyJWT warns below that for HS512
ISS = "https://issuer.example"
AUD = "apigw"
NOW = int(time.time())  # at collection: expiries are an hour away, beyond any run of the suite

CLAIMS = (
    {"sub": "alice"},
    {"sub": "bob", "exp": NOW + 3600, "nbf": NOW - 10, "iat": NOW - 10, "iss": ISS, "aud": AUD},
    {"sub": "carol", "exp": NOW + 3600, "iss": ISS, "aud": ["other", AUD], "scope": ["read", "write"]},
    {"sub": "caf\u00e9 \u2603", "iat": NOW, "n": {"x": None, "f": 1.5, "t": True, "big": 2**53}, "e": ""},
)

# Attack-table rows PyJWT must refuse too (it ignores kid, so the kid rows are left out; it
# accepts padded and non-canonical base64url, which we refuse so that a MAC has one spelling).
SAME_REFUSAL = (
    "truncated signature",
    "half a signature",
    "signature of 31 bytes",
    "signature of 33 bytes",
    "signature of 64 bytes",
    "signature bit flipped",
    "payload changed after signing",
    "header changed after signing",
    "wrong key",
)


def test_pyjwt_is_the_pypi_package():
    assert hasattr(pyjwt, "PyJWT") and hasattr(pyjwt, "InvalidTokenError")
    assert "site-packages" in pyjwt.__file__
    assert gwjwt.__name__ == "apigw.jwt" and gwjwt is not pyjwt


def _verifier(claims, **kw):
    return gwjwt.JwtVerifier(
        {"k1": KEY, "k2": b"another-key-" * 3},
        issuer=ISS if "iss" in claims else None,
        audience=AUD if "aud" in claims else None,
        **kw,
    )


@pytest.mark.parametrize("claims", CLAIMS)
@pytest.mark.parametrize("kid", (None, "k1"))
def test_pyjwt_tokens_verify(claims, kid):
    tok = pyjwt.encode(claims, KEY, algorithm="HS256", headers={"kid": kid} if kid else None)
    v = _verifier(claims, default_kid="k1")
    assert v.verify(tok, NOW) == claims
    assert v.verify(tok.encode(), NOW) == claims
    if kid is None:
        assert pytest.raises(gwjwt.JwtError, _verifier(claims).verify, tok, NOW).value.code == gwjwt.KID


@pytest.mark.parametrize("claims", CLAIMS)
@pytest.mark.parametrize("kid", (None, "k1"))
def test_encoded_tokens_decode_in_pyjwt(claims, kid):
    tok = gwjwt.encode(claims, KEY, kid=kid)
    got = pyjwt.decode(
        tok,
        KEY,
        algorithms=["HS256"],
        audience=AUD if "aud" in claims else None,
        issuer=ISS if "iss" in claims else None,
    )
    assert got == claims
    want_header = {"alg": "HS256", "typ": "JWT"}
    if kid:
        want_header["kid"] = kid
    assert pyjwt.get_unverified_header(tok) == want_header


@pytest.mark.parametrize("alg", ("HS384", "HS512"))
@pytest.mark.parametrize("kid", (None, "k1"))
def test_pyjwt_other_hmac_algorithms_refused(alg, kid):
    tok = pyjwt.encode({"sub": "x"}, KEY, algorithm=alg, headers={"kid": kid} if kid else None)
    e = pytest.raises(gwjwt.JwtError, _verifier({}, default_kid="k1").verify, tok, NOW).value
    assert e.code == gwjwt.ALG


def test_pyjwt_none_token_refused():
    tok = pyjwt.encode({"sub": "admin"}, None, algorithm="none")
    v = _verifier({}, default_kid="k1")
    assert pytest.raises(gwjwt.JwtError, v.verify, tok, NOW).value.code == gwjwt.MALFORMED  # empty signature
    h, p, _ = tok.split(".")
    signed = gwjwt.encode({"sub": "admin"}, KEY).decode().rsplit(".", 1)[1]
    assert pytest.raises(gwjwt.JwtError, v.verify, h + "." + p + "." + signed, NOW).value.code == gwjwt.ALG


def test_pyjwt_expired_and_future_tokens_refused_alike():
    v = _verifier({}, default_kid="k1")
    now = int(time.time())  # PyJWT reads the clock: the test's own time, not the collection's
    for claims, code, exc in (
        ({"exp": now - 100}, gwjwt.EXPIRED, pyjwt.ExpiredSignatureError),
        ({"nbf": now + 100}, gwjwt.NOT_YET_VALID, pyjwt.ImmatureSignatureError),
        ({"iat": now + 100}, gwjwt.IAT, pyjwt.ImmatureSignatureError),
    ):
        tok = pyjwt.encode(claims, KEY, algorithm="HS256")
        assert pytest.raises(gwjwt.JwtError, v.verify, tok, now).value.code == code
        with pytest.raises(exc):
            pyjwt.decode(tok, KEY, algorithms=["HS256"])


def _pyjwt_decode(tok, opts):
    """PyJWT's answer for an attack-table token, with the table's keys and claim rules (exp, nbf
    and iat are left out: the table's clock is fixed, PyJWT reads the real one)."""
    kid = pyjwt.get_unverified_header(tok).get("kid", opts.get("default_kid"))
    key = {"k1": portable.K1, "k2": portable.K2}.get(kid, portable.K1)
    return pyjwt.decode(
        tok,
        key,
        algorithms=["HS256"],
        audience=portable.AUD,
        issuer=opts.get("issuer", portable.ISS),
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


def _rows(pred):
    return [r for r in portable.ATTACKS if pred(r)]


@pytest.mark.parametrize("row", _rows(lambda r: r[2] == gwjwt.ALG or r[0] in SAME_REFUSAL), ids=lambda r: r[0])
def test_attack_table_refusals_agree_with_pyjwt(row):
    name, tok, want, v, now = portable._case(row)
    assert portable._outcome(v.verify, tok, now) == want
    with pytest.raises(pyjwt.InvalidTokenError):
        _pyjwt_decode(tok, row[3] if len(row) > 3 else {})


@pytest.mark.parametrize("row", _rows(lambda r: r[2] is portable.ACCEPT), ids=lambda r: r[0])
def test_attack_table_acceptances_agree_with_pyjwt(row):
    name, tok, want, v, now = portable._case(row)
    assert portable._outcome(v.verify, tok, now) == _pyjwt_decode(tok, row[3] if len(row) > 3 else {})

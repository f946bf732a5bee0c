"""Portable tests for firmware/apigw/crypto.py: published test vectors on both runtimes."""

from apigw import crypto
from check import raises

# RFC 4231 HMAC-SHA256 test cases 1, 2, 3, 6 (key longer than the block), 7.
HMAC_CASES = (
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to"
        b" be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
)

# PBKDF2-HMAC-SHA256 ("password", "salt") vectors as published with RFC 7914's cross-checks.
PBKDF2_CASES = (
    (b"password", b"salt", 1, 32, "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"),
    (b"password", b"salt", 2, 32, "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"),
    (b"password", b"salt", 4096, 32, "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"),
    (
        b"passwd",
        b"salt",
        1,
        64,
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
    ),
)


def test_hmac_sha256_rfc4231():
    for key, msg, want in HMAC_CASES:
        assert crypto.hmac_sha256(key, msg).hex() == want, key


def test_hmac_key_digest_of_parts_equals_digest_of_whole():
    key = crypto.HmacKey(b"Jefe")
    assert key.digest(b"what do ya ", memoryview(b"want for"), bytearray(b" nothing?")).hex() == HMAC_CASES[1][2]


def test_pbkdf2_vectors():
    for pw, salt, n, dklen, want in PBKDF2_CASES:
        assert crypto.pbkdf2_hmac_sha256(pw, salt, n, dklen).hex() == want, (pw, n)


def test_pbkdf2_refuses_zero_iterations():
    raises(ValueError, crypto.pbkdf2_hmac_sha256, b"pw", b"salt", 0)


def test_b64url_round_trip_every_length():
    data = bytes(range(256))
    for n in range(70):
        enc = crypto.b64url_encode(data[n : n * 2])
        assert b"=" not in enc and b"+" not in enc and b"/" not in enc
        assert crypto.b64url_decode(enc) == data[n : n * 2]


def test_b64url_known_values():
    assert crypto.b64url_encode(b"\xfb\xff") == b"-_8"
    assert crypto.b64url_decode("eyJhbGciOiJIUzI1NiJ9") == b'{"alg":"HS256"}'


def test_b64url_refuses_bad_input():
    for bad in (b"a", b"ab=c", b"ab+c", b"ab/c", b"ab c", b"ab\nc", b"QR", b"====", "\u00e9abc"):
        raises(ValueError, crypto.b64url_decode, bad)


def test_ct_eq():
    assert crypto.ct_eq(b"abc", b"abc")
    assert not crypto.ct_eq(b"abc", b"abd")
    assert not crypto.ct_eq(b"abc", b"ab")
    assert crypto.ct_eq(bytearray(b""), b"")


def test_random_bytes_are_fresh():
    a = crypto.random_bytes(16)
    assert len(a) == 16 and a != crypto.random_bytes(16)

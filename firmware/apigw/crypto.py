"""The few primitives auth needs, on hashlib.sha256 and binascii (boards have no hmac module).

Owns: HMAC-SHA256 (RFC 2104), PBKDF2-HMAC-SHA256 (RFC 8018), base64url without padding
(RFC 4648 section 5, as JWT uses it), a constant-time comparison and random bytes. Must not know
tokens, keys tables or HTTP. Everything here allocates (hash objects, digests): it runs when a
token or password is checked for the first time, never on the cached path.
"""

import binascii
import hashlib
import os

from .native import xor_into

_BLOCK = 64  # SHA-256 block size: HMAC pads the key to it


def sha256(data):
    return hashlib.sha256(data).digest()


class HmacKey:
    """An HMAC-SHA256 key with its inner and outer pads computed once.

    hashlib on MicroPython cannot copy a hash state, so each digest hashes the 64-byte pads again;
    keeping them saves the key padding and XOR per call.
    """

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = sha256(key)
        k = bytearray(_BLOCK)
        k[: len(key)] = key
        ipad = bytearray(_BLOCK)
        opad = bytearray(_BLOCK)
        for i in range(_BLOCK):
            ipad[i] = k[i] ^ 0x36
            opad[i] = k[i] ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def digest(self, *parts):
        """HMAC-SHA256 of the concatenation of parts (bytes, bytearray or memoryview)."""
        h = hashlib.sha256(self._ipad)
        for p in parts:
            h.update(p)
        inner = h.digest()
        h = hashlib.sha256(self._opad)
        h.update(inner)
        return h.digest()


def hmac_sha256(key, msg):
    return HmacKey(key).digest(msg)


def pbkdf2_hmac_sha256(password, salt, iterations, dklen=32):
    """PBKDF2 with HMAC-SHA256 (RFC 8018 section 5.2). Cost: 2 * iterations SHA-256 blocks."""
    if iterations < 1 or dklen < 1:
        raise ValueError("iterations and dklen must be positive")
    mac = HmacKey(password)
    out = bytearray()
    block = 1
    while len(out) < dklen:
        u = mac.digest(salt, block.to_bytes(4, "big"))
        acc = bytearray(u)
        for _ in range(iterations - 1):
            u = mac.digest(u)
            xor_into(acc, u, 32)  # viper on MicroPython: the loop would cost as much as the hashing
        out.extend(acc)
        block += 1
    return bytes(out[:dklen])


def ct_eq(a, b):
    """a == b in a time that depends only on the lengths (for MACs and digests)."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def b64url_encode(data):
    """base64url of data, without padding, as bytes."""
    s = binascii.b2a_base64(data).rstrip(b"\n=")
    return s.replace(b"+", b"-").replace(b"/", b"_")


_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url_decode(data):
    """Bytes from unpadded base64url text (bytes or str). Raises ValueError on anything else:
    padding, the standard alphabet's + and /, whitespace, or an impossible length."""
    if isinstance(data, str):
        data = data.encode()
    n = len(data)
    if n % 4 == 1:
        raise ValueError("bad base64url length")
    for c in data:
        if c not in _B64URL:
            raise ValueError("bad base64url character")
    s = bytes(data).replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-n % 4)
    try:
        out = binascii.a2b_base64(s)
    except Exception:
        raise ValueError("bad base64url")
    # Non-canonical trailing bits (e.g. "QR" for "QQ"): refuse, so one value has one encoding.
    if b64url_encode(out) != bytes(data):
        raise ValueError("non-canonical base64url")
    return out


def random_bytes(n):
    return os.urandom(n)

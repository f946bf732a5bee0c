"""JSON Web Tokens (RFC 7519) in JWS compact form (RFC 7515), HS256 only: sign and verify.

Owns: the token layout (three base64url parts), the header rules (alg exactly HS256, kid names a
configured key, no crit, typ JWT), the signature check and the registered claims exp, nbf, iat,
iss and aud. Must not do I/O, read a clock, know HTTP or cache results: callers pass the token
(or a span of the slot buffer) and the wall-clock time in seconds, and a validated-token cache
elsewhere keys on `signature_span`.

Allocation: `encode` and `verify` allocate (base64, JSON, digests, the claims dict); they run
once per token the cache has not seen. `signature_start` allocates nothing; `signature_span`
allocates only the tuple it returns when it finds a signature.
"""

import json

from . import crypto
from .compat import micropython
from .native import span_in

# Error codes (JwtError.code).
MALFORMED = "malformed"
TOO_LONG = "too_long"
ALG = "alg"
KID = "kid"
SIGNATURE = "signature"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
IAT = "iat"
ISSUER = "issuer"
AUDIENCE = "audience"
CLOCK = "clock"

_DOT = 46  # '.'
_SIG_B64_LEN = 43  # base64url of a 32-byte HMAC-SHA256, unpadded
_NO_SPAN = (-1, -1)  # a constant tuple: returning it allocates nothing

# span_in() stops at the first byte whose entry is 0: this table makes it find the next '.'.
_NOT_DOT = bytearray(b"\x01" * 256)
_NOT_DOT[_DOT] = 0

# base64url of {"alg":"HS256","typ":"JWT"}: the header of every token encode() makes without kid.
_HEADER_B64 = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
_SEPARATORS = (",", ":")


class JwtError(ValueError):
    """A refused token. `code` is one of the module's error codes; `message` is a short constant
    text, safe to log or send: it never contains the token, a claim value or a key."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _dumps(obj):
    """Compact JSON text. Ports whose json.dumps has no separators keyword get ", " and ": "."""
    try:
        return json.dumps(obj, separators=_SEPARATORS)
    except TypeError:
        return json.dumps(obj)


def encode(claims, key, kid=None):
    """Sign claims (a dict of JSON values) with key (bytes) as an HS256 JWT: b"header.payload.sig".

    The header is {"alg":"HS256","typ":"JWT"}, plus "kid" when kid (a str) is given. Allocates.
    """
    if type(claims) is not dict:
        raise TypeError("claims must be a dict")
    if kid is None:
        header = _HEADER_B64
    elif type(kid) is str:
        header = crypto.b64url_encode(('{"alg":"HS256","typ":"JWT","kid":' + _dumps(kid) + "}").encode())
    else:
        raise TypeError("kid must be a str")
    signing_input = header + b"." + crypto.b64url_encode(_dumps(claims).encode())
    return signing_input + b"." + crypto.b64url_encode(crypto.HmacKey(key).digest(signing_input))


@micropython.native
def signature_start(buf, start, end):
    """Where the signature (third part) of the token buf[start:end] starts, or -1 unless the span
    is exactly three non-empty dot-separated parts. The signature ends at `end`.

    buf is bytes, bytearray or memoryview. Allocates nothing: the scan is span_in, native code on
    MicroPython; offsets outside buf give -1 (the native scan must never read past the buffer).
    """
    if start < 0 or end > len(buf) or end - start < 5:
        return -1
    d1 = span_in(buf, start, end, _NOT_DOT)
    if d1 == start or d1 >= end:
        return -1
    d2 = span_in(buf, d1 + 1, end, _NOT_DOT)
    if d2 == d1 + 1 or d2 >= end - 1:
        return -1
    if span_in(buf, d2 + 1, end, _NOT_DOT) != end:
        return -1
    return d2 + 1


def _json_object(part, message):
    """The JSON object in one base64url part (a memoryview); anything else is MALFORMED."""
    try:
        obj = json.loads(crypto.b64url_decode(part).decode())
    except (ValueError, RuntimeError):  # RuntimeError: CPython's RecursionError on deep nesting
        obj = None
    # Raised here, not in the except clause, so no chained exception can quote the input.
    if type(obj) is not dict:
        raise JwtError(MALFORMED, message)
    return obj


def _int_claim(claims, name):
    """claims[name] when present (it must be an int, and bool is not), else None."""
    if name not in claims:
        return None
    v = claims[name]
    if type(v) is not int:
        raise JwtError(MALFORMED, "exp, nbf and iat must be integers")
    return v


class JwtVerifier:
    """Verifies HS256 tokens against a fixed set of keys and the configured claim rules.

    keys: {kid (str): key (bytes)}, hashed into HMAC pads once here. default_kid: the key for
    tokens without a "kid" header (None: such tokens are refused with KID). leeway_s: seconds of
    clock skew allowed on exp, nbf and iat. issuer / audience: when set, iss must equal issuer
    and aud must equal audience or be a list holding it. max_len: longest token accepted.
    """

    def __init__(self, keys, default_kid=None, leeway_s=0, issuer=None, audience=None, max_len=2048):
        self._keys = {}
        for kid in keys:
            key = keys[kid]
            if type(kid) is not str or not key:
                raise ValueError("key ids must be str and keys non-empty bytes")
            self._keys[kid] = crypto.HmacKey(key)
        if default_kid is not None and default_kid not in self._keys:
            raise ValueError("default_kid is not a configured key id")
        if type(leeway_s) is not int or leeway_s < 0:
            raise ValueError("leeway_s must be an int >= 0")
        self._default = self._keys[default_kid] if default_kid is not None else None
        self.leeway_s = leeway_s
        self.issuer = issuer
        self.audience = audience
        self.max_len = max_len

    @staticmethod
    def signature_span(buf, start, end):
        """(sig_start, sig_end) of the token buf[start:end], or (-1, -1) as signature_start says.
        Allocates only the returned tuple when it finds a signature (signature_start allocates
        nothing at all, for callers where even that matters)."""
        s = signature_start(buf, start, end)
        if s < 0:
            return _NO_SPAN
        return s, end

    def verify(self, token, now_s):
        """Claims (a dict) of token (bytes, bytearray, memoryview or str), or JwtError.

        now_s: wall-clock unix seconds (int), or None while the clock is not set, which refuses
        any token carrying exp or nbf with CLOCK. Allocates (see the module docstring).
        """
        if type(token) is str:
            if len(token) > self.max_len:  # characters <= UTF-8 bytes: refuse before copying
                raise JwtError(TOO_LONG, "token too long")
            token = token.encode()
        return self.verify_span(token, 0, len(token), now_s)

    def verify_span(self, buf, start, end, now_s):
        """verify() of the token buf[start:end] (bytes, bytearray or memoryview), without a copy
        of the token: parts are decoded from memoryview slices and the MAC hashes the span."""
        if end - start > self.max_len:
            raise JwtError(TOO_LONG, "token too long")
        sig = signature_start(buf, start, end)
        if sig < 0:
            raise JwtError(MALFORMED, "token must be three non-empty base64url parts")
        mv = memoryview(buf)
        d1 = span_in(buf, start, end, _NOT_DOT)

        header = _json_object(mv[start:d1], "header is not a base64url JSON object")
        if header.get("alg") != "HS256":
            raise JwtError(ALG, "alg must be HS256")
        if "crit" in header:
            raise JwtError(MALFORMED, "crit header not supported")
        if "typ" in header:
            typ = header["typ"]
            if type(typ) is not str or typ.upper() != "JWT":
                raise JwtError(MALFORMED, "typ must be JWT")
        if "kid" in header:
            kid = header["kid"]
            key = self._keys.get(kid) if type(kid) is str else None  # a list kid is unhashable
        else:
            key = self._default
        if key is None:
            raise JwtError(KID, "unknown key id")

        # The MAC covers "header.payload", which is contiguous in buf: hash the span as it is.
        mac = None
        if end - sig == _SIG_B64_LEN:
            try:
                mac = crypto.b64url_decode(mv[sig:end])
            except ValueError:
                pass
        if mac is None or not crypto.ct_eq(mac, key.digest(mv[start : sig - 1])):
            raise JwtError(SIGNATURE, "bad signature")

        claims = _json_object(mv[d1 + 1 : sig - 1], "payload is not a base64url JSON object")
        exp = _int_claim(claims, "exp")
        nbf = _int_claim(claims, "nbf")
        iat = _int_claim(claims, "iat")
        if now_s is None:
            if exp is not None or nbf is not None:
                raise JwtError(CLOCK, "clock not set: cannot check exp or nbf")
        else:
            leeway = self.leeway_s
            if exp is not None and now_s >= exp + leeway:
                raise JwtError(EXPIRED, "token expired")
            if nbf is not None and now_s + leeway < nbf:
                raise JwtError(NOT_YET_VALID, "token not yet valid")
            if iat is not None and iat > now_s + leeway:
                raise JwtError(IAT, "token issued in the future")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise JwtError(ISSUER, "wrong issuer")
        want = self.audience
        if want is not None:
            aud = claims.get("aud")
            if aud != want and not (type(aud) is list and want in aud):
                raise JwtError(AUDIENCE, "wrong audience")
        return claims

"""OAuth 2.0 token introspection (RFC 7662) for opaque bearer tokens, with a cache of the answers.

Owns: the introspection request (request_bytes), the reading of the endpoint's answer
(parse_response), a fixed-size cache of answers keyed on the SHA-256 of the token (cached, store),
check(), the one coroutine here that does I/O, and the mapping of an OAuth scope string to
permission bits. Must not: know routes, slots or the gateway's parser, answer clients, or keep a
token: the cache holds its digest only, and no message or exception carries the token.

The gateway fails closed. check() answers an Introspection (active or not) or raises
IntrospectionUnavailable: the auth module sends 401 for an inactive token and 503 when the
endpoint cannot say (refused, reset, timeout, non-200, no JSON object, no boolean "active").

Clocks: now_s and the endpoint's "exp" are Unix times in seconds, so the caller passes
time.time() from a board whose clock is set (NTP). Cache times are kept as small offsets from a
base time so that the lookup compares small ints (a Unix time is above 2**30: a big int on a board).
"""

import asyncio
import binascii
import hashlib
import json

from . import sockio
from .compat import IS_MICROPYTHON, const, micropython
from .native import mem_eq, mem_move
from .strtab import table

# Outcome codes for callers that keep the result of a check as an int.
ACTIVE = 1
INACTIVE = 0
UNAVAILABLE = -1

# Permission bits. The auth module owns them; until it exists they live here, and it will either
# import them from here or replace them (scope_permissions then follows its definitions).
READ = 1
WRITE = 2
EXECUTE = 4
ADMIN = 8
_SCOPE_BITS = {"read": READ, "write": WRITE, "execute": EXECUTE, "admin": ADMIN}

_DIGEST = const(32)  # SHA-256
_SPAN = const(1 << 29)  # cache times stay within this many seconds of the base (small ints)
_READ_PIECE = const(1024)


class IntrospectionUnavailable(Exception):
    """The endpoint gave no usable answer: the request must fail closed (503)."""


class Introspection:
    """One answer of the endpoint. Inactive answers carry no other fields (RFC 7662 section 2.2)."""

    def __init__(self, active, sub=None, scope="", exp=None, client_id=None):
        self.active = active
        self.state = ACTIVE if active else INACTIVE
        self.sub = sub
        self.scope = scope
        self.exp = exp
        self.client_id = client_id

    def __repr__(self):
        a = (self.active, self.sub, self.scope, self.exp, self.client_id)
        return "Introspection(active=%r, sub=%r, scope=%r, exp=%r, client_id=%r)" % a


def scope_permissions(scope):
    """Permission bits of a space-separated scope string ("read write"); unknown words are ignored.
    Scope tokens are case-sensitive (RFC 6749 section 3.3). Allocates (split)."""
    bits = 0
    if scope:
        for word in scope.split():
            bits |= _SCOPE_BITS.get(word, 0)
    return bits


def _as_bytes(s):
    return s.encode() if isinstance(s, str) else bytes(s)


_HEX = b"0123456789ABCDEF"
_HEXDIGITS = b"0123456789ABCDEFabcdef"


def form_encode(data):
    """application/x-www-form-urlencoded encoding of one value (RFC 6749 appendix B): RFC 3986
    unreserved bytes as they are, space as "+", every other byte as %XX. Returns bytes."""
    out = bytearray()
    for c in _as_bytes(data):
        if 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"-._~":
            out.append(c)
        elif c == 32:
            out.append(43)  # "+"
        else:
            out.append(37)  # "%"
            out.append(_HEX[c >> 4])
            out.append(_HEX[c & 15])
    return bytes(out)


def _check_field(name, value):
    for c in value:
        if c <= 32 or c >= 127:
            raise ValueError("introspection " + name + " must be printable ASCII without spaces")


def _unavailable(msg):
    return IntrospectionUnavailable("token introspection: " + msg)


def _number(s, what, digits=b"0123456789", base=10):
    """Up to 7 digits to an int, else IntrospectionUnavailable (int() alone takes "+1", " 1", "1_0")."""
    if not s or len(s) > 7:
        raise _unavailable("bad " + what)
    for c in s:
        if c not in digits:
            raise _unavailable("bad " + what)
    return int(s, base)


def _dechunk(data, pos, eof):
    """The body of a chunked message starting at data[pos], or None if incomplete (and not eof).
    Chunk extensions are skipped; the body is complete at the last chunk, trailers or not. Raises IntrospectionUnavailable when malformed."""
    body = bytearray()
    n = len(data)
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        size = _number(bytes(data[pos:eol]).split(b";")[0].strip(), "chunk size", _HEXDIGITS, 16)
        if size == 0:
            return body  # trailers need not be read: the connection closes
        pos = eol + 2
        if pos + size + 2 > n:
            break
        body.extend(data[pos : pos + size])
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise _unavailable("bad chunked body")
        pos += size + 2
    if eof:
        raise _unavailable("chunked body cut short")
    return None


def _body(data, eof):
    """The body of the final (non-1xx) answer in data, or None when more bytes are needed.
    Raises IntrospectionUnavailable for a status other than 200 or a broken message."""
    start = 0
    while True:
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            if eof:
                raise _unavailable("no complete answer" if data else "connection closed without an answer")
            return None
        head = bytes(data[start:end]).split(b"\r\n")
        parts = head[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise _unavailable("not an HTTP answer")
        status = _number(parts[1], "status")
        start = end + 4
        if status >= 200 or status == 101:
            break
    if status != 200:
        if status == 401 or status == 403:
            raise _unavailable("endpoint refused the client credentials (%d)" % status)
        raise _unavailable("endpoint answered %d" % status)
    length = -1
    chunked = False
    for line in head[1:]:
        i = line.find(b":")
        if i <= 0:
            raise _unavailable("bad header line")
        name = line[:i].strip().lower()
        if name == b"content-length":
            n = _number(line[i + 1 :].strip(), "Content-Length")
            if length >= 0 and n != length:
                raise _unavailable("conflicting Content-Length")
            length = n
        elif name == b"transfer-encoding":
            if line[i + 1 :].strip().lower() != b"chunked":
                raise _unavailable("unsupported Transfer-Encoding")
            chunked = True
    if chunked:
        return _dechunk(data, start, eof)
    if length >= 0:
        if len(data) - start >= length:
            return data[start : start + length]
        if eof:
            raise _unavailable("answer cut short")
        return None
    return data[start:] if eof else None  # no framing: the body runs to the close


def _answer(body):
    """An Introspection from the JSON body; IntrospectionUnavailable when "active" is not a bool."""
    try:
        doc = json.loads(bytes(body))
    except Exception:  # ValueError, UnicodeError: anything not JSON
        raise _unavailable("answer is not JSON")
    if not isinstance(doc, dict):
        raise _unavailable("answer is not a JSON object")
    active = doc.get("active")
    if active is not True and active is not False:
        raise _unavailable('answer has no boolean "active"')
    if not active:
        return Introspection(False)
    sub = doc.get("sub")
    scope = doc.get("scope")
    if isinstance(scope, list):  # not RFC 7662, but some servers send a list of strings
        scope = " ".join(w for w in scope if isinstance(w, str))
    exp = doc.get("exp")
    if isinstance(exp, float):
        try:
            exp = int(exp)
        except (ValueError, OverflowError):  # nan, inf
            exp = None
    elif not isinstance(exp, int) or isinstance(exp, bool):
        exp = None
    client_id = doc.get("client_id")
    return Introspection(
        True,
        sub if isinstance(sub, str) else None,
        scope if isinstance(scope, str) else "",
        exp,
        client_id if isinstance(client_id, str) else None,
    )


async def _close(conn):
    """Close what Introspector._exchange opened: conn is [stream or None, socket or None]."""
    w, s = conn
    if s is not None:
        sockio.close(s)  # drops its entry in the gateway's I/O queue first
    elif w is not None:
        w.close()
        try:
            await w.wait_closed()
        except Exception:  # already reset by the peer: closed either way
            pass


class Introspector:
    """Asks one introspection endpoint about tokens and caches the answers.

    The endpoint authenticates this client with HTTP Basic (RFC 7662 section 2.1): client_id and
    client_secret form-encoded, joined by ":" and base64-encoded (RFC 6749 section 2.3.1).
    A cached answer is good until min(exp, fetched + ttl_s); inactive answers are cached for ttl_s
    too, so a flood of bad tokens does not flood the endpoint. A full cache replaces its oldest
    entry. Stats: hits and misses count lookups (cached(), and check() once per call), failures
    the checks that raised IntrospectionUnavailable.
    """

    def __init__(
        self,
        host,
        port,
        path="/introspect",
        client_id="",
        client_secret="",
        timeout_ms=2000,
        cache_entries=32,
        ttl_s=60,
        max_response=4096,
    ):
        hb = _as_bytes(host)
        pb = _as_bytes(path)
        _check_field("host", hb)
        _check_field("path", pb)
        if not hb or pb[:1] != b"/":
            raise ValueError("introspection needs a host and a path starting with /")
        if timeout_ms <= 0 or cache_entries < 0 or not 0 <= ttl_s < _SPAN // 2 or max_response < 64:
            raise ValueError("introspection timeout, cache or size limit out of range")
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.ttl_s = ttl_s
        self.max_response = max_response
        if b":" in hb and hb[:1] != b"[":
            hb = b"[" + hb + b"]"  # an IPv6 literal in Host
        if port != 80:
            hb += b":" + str(port).encode()
        cred = binascii.b2a_base64(form_encode(client_id) + b":" + form_encode(client_secret))[:-1]
        # Everything but the length and the body, built once.
        self._head = (
            b"POST " + pb + b" HTTP/1.1\r\nHost: " + hb + b"\r\nAuthorization: Basic " + cred + b"\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
            b"Connection: close\r\nContent-Length: "
        )
        self._n = cache_entries
        self._digests = bytearray(cache_entries * _DIGEST)
        self._fetched = table("i", cache_entries, 0)  # seconds after self._base
        self._until = table("i", cache_entries, 0)  # good while fetched <= now < until; 0 = free
        self._answers = [None] * cache_entries
        self._base = None
        self.hits = 0
        self.misses = 0
        self.failures = 0

    # -- sans-IO ---------------------------------------------------------------------------------

    def request_bytes(self, token):
        """The whole introspection request for token (str or bytes). Allocates."""
        body = b"token=" + form_encode(token) + b"&token_type_hint=access_token"
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body

    def parse_response(self, data):
        """The Introspection in a complete answer (everything up to the close). Raises
        IntrospectionUnavailable: larger than max_response, status other than 200, broken framing,
        not a JSON object, "active" missing or not a JSON boolean. Allocates."""
        if len(data) > self.max_response:
            raise _unavailable("answer larger than %d bytes" % self.max_response)
        if isinstance(data, memoryview):
            data = bytes(data)  # for find()
        return _answer(_body(data, True))

    def cached(self, token, now_s):
        """The cached answer for token, or None. Allocates a SHA-256 object and its digest only."""
        return self._get(hashlib.sha256(_as_bytes(token)).digest(), now_s)

    def store(self, token, answer, now_s):
        """Cache answer for token, fetched at now_s. Allocates the digest."""
        self._put(hashlib.sha256(_as_bytes(token)).digest(), answer, now_s)

    def _get(self, key, now_s):
        base = self._base
        i = -1
        if base is not None:
            now = now_s - base
            if 0 <= now < _SPAN:
                i = self._find(key, now)
        if i < 0:
            self.misses += 1
            return None
        self.hits += 1
        return self._answers[i]

    @micropython.native  # keeps this frame off the heap on MicroPython
    def _find(self, key, now):
        """Index of the live entry for the digest key at time now (relative), or -1. No allocation."""
        digests = self._digests
        fetched = self._fetched
        until = self._until
        for i in range(self._n):  # times first: cheaper than the digest compare
            if fetched[i] <= now < until[i] and mem_eq(digests, i * _DIGEST, key, 0, _DIGEST):
                return i
        return -1

    def _put(self, key, answer, now_s):
        n = self._n
        if n == 0 or self.ttl_s == 0:
            return
        base = self._base
        if base is None or not 0 <= now_s - base < _SPAN:
            # First store, or the clock jumped (NTP set it, or it went back): start over.
            self._base = base = now_s
            for i in range(n):
                self._until[i] = 0
                self._answers[i] = None
        now = now_s - base
        until = now + self.ttl_s
        if answer.active and answer.exp is not None and answer.exp - base < until:
            until = answer.exp - base
        fetched = self._fetched
        dl = self._until
        slot = -1
        oldest = -1
        for i in range(n):
            if mem_eq(self._digests, i * _DIGEST, key, 0, _DIGEST):
                slot = i  # the same token again: replace its entry
                break
            if not fetched[i] <= now < dl[i]:
                if slot < 0:
                    slot = i  # free or expired
            elif oldest < 0 or fetched[i] < fetched[oldest]:
                oldest = i
        if until <= now:  # already expired: cache nothing, and drop an older answer
            if slot >= 0 and mem_eq(self._digests, slot * _DIGEST, key, 0, _DIGEST):
                dl[slot] = 0
                self._answers[slot] = None
            return
        if slot < 0:
            slot = oldest
        mem_move(self._digests, slot * _DIGEST, key, 0, _DIGEST)
        fetched[slot] = now
        dl[slot] = until
        self._answers[slot] = answer

    # -- I/O -------------------------------------------------------------------------------------

    async def check(self, token, now_s):
        """The answer for token: from the cache, or asked of the endpoint within timeout_ms.

        Returns an Introspection; answer.active False means 401 for the request. Raises
        IntrospectionUnavailable when the endpoint gives no usable answer (refused, reset,
        timeout, non-200, broken framing, no JSON object, no boolean "active", larger than
        max_response): the gateway fails closed with 503. The connection is closed in every case.
        The host should be an IP address: a name is resolved by a blocking getaddrinfo.
        Allocates on a miss (connection, request, answer, JSON); a hit allocates the coroutine
        and the digest only.
        """
        token = _as_bytes(token)
        key = hashlib.sha256(token).digest()
        answer = self._get(key, now_s)
        if answer is not None:
            return answer
        conn = [None, None]  # the stream, and on MicroPython its socket
        try:
            data = await asyncio.wait_for(self._exchange(token, conn), self.timeout_ms / 1000)
            answer = _answer(data)
        except IntrospectionUnavailable:
            self.failures += 1
            raise
        except asyncio.TimeoutError:  # before OSError: CPython's TimeoutError is one
            self.failures += 1
            raise _unavailable("no answer within %d ms" % self.timeout_ms)
        except OSError as e:  # refused, reset, unreachable, name not found
            self.failures += 1
            raise _unavailable("connection failed (%s)" % (e.args[0] if e.args else type(e).__name__))
        finally:
            await _close(conn)
        self._put(key, answer, now_s)
        return answer

    async def _exchange(self, token, conn):
        """Send the request, read until the body is complete or the peer closes; the body.
        conn gets the stream (and socket) so that check() closes it even when this is cancelled."""
        if IS_MICROPYTHON:
            # MicroPython's open_connection leaks its socket when a timeout cancels it while it
            # connects; sockio.connect closes it then, and hands it over once connected.
            s = await sockio.connect(sockio.IOWait(), self.host, self.port)
            conn[1] = s
            reader = asyncio.StreamReader(s)  # both are asyncio's one Stream class here
            writer = asyncio.StreamWriter(s)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        conn[0] = writer
        writer.write(self.request_bytes(token))
        await writer.drain()
        data = bytearray()
        limit = self.max_response
        while True:
            piece = await reader.read(min(_READ_PIECE, limit + 1 - len(data)))
            if not piece:
                return _body(data, True)
            data.extend(piece)
            if len(data) > limit:
                raise _unavailable("answer larger than %d bytes" % limit)
            body = _body(data, False)  # stop at the end of the body, even if the peer keeps it open
            if body is not None:
                return body

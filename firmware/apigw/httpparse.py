"""Sans-IO HTTP/1.x request parser over a Slot (RFC 9112).

`parse_request(slot)` reads `slot.buf[0:slot.n]` and answers with an int: NEED_MORE (0), DONE (1),
or the HTTP error status to send (>= 400; the server then closes the connection). It is called
again each time bytes arrive and resumes from `slot.scan`, so a head fed one byte at a time costs
O(n) in all. It records offsets in the slot (see docs/architecture.md, "Slot fields the parser
fills"); it builds no strings, dicts or events.

parse_request allocates nothing once this module is imported: no slicing, no bytes(), no int(),
no exceptions, no tuples; byte loops are `find()` with start/end or kernels from native.py, and
every bytes constant is made here at import. The functions with many locals are
`@micropython.native`: a bytecode frame bigger than about 11 words is taken from the heap (and
freed on return) whenever the heap is not locked, which mem_total() counts; a native function
keeps its frame on the C stack. Native code is also about 1.3x faster here.

Deliberately strict: bare LF, bare CR, obs-fold, whitespace before a header colon, Content-Length
lists ("5, 5") and Transfer-Encoding next to Content-Length are refused. Chunked request bodies
are not supported (411): the whole request must fit in the slot's buffer.

This module must not do I/O or know about routes.
"""

from .compat import const, micropython
from .native import bad_head_byte, mem_eq, mem_eq_lower, normalize_path, parse_uint, span_in

NEED_MORE = const(0)
DONE = const(1)

METHOD_GET = const(1)
METHOD_HEAD = const(2)
METHOD_POST = const(4)
METHOD_PUT = const(8)
METHOD_DELETE = const(16)
METHOD_PATCH = const(32)
METHOD_OPTIONS = const(64)

# Header kinds, stored in slot.hkind so later stages need not compare names.
HDR_OTHER = const(0)
HDR_HOST = const(1)
HDR_CONTENT_LENGTH = const(2)
HDR_TRANSFER_ENCODING = const(3)
HDR_CONNECTION = const(4)
HDR_HOP = const(5)  # keep-alive, proxy-connection, te, trailer, upgrade: dropped when forwarding
HDR_EXPECT = const(6)
HDR_X_FORWARDED_FOR = const(7)
HDR_X_FORWARDED_OTHER = const(8)  # x-forwarded-host, x-forwarded-proto, forwarded: replaced
HDR_AUTHORIZATION = const(9)
HDR_CONTENT_TYPE = const(10)
HDR_ACCEPT = const(11)
HDR_X_API_KEY = const(12)
HDR_COOKIE = const(13)

METHOD_NAMES = {
    "GET": METHOD_GET,
    "HEAD": METHOD_HEAD,
    "POST": METHOD_POST,
    "PUT": METHOD_PUT,
    "DELETE": METHOD_DELETE,
    "PATCH": METHOD_PATCH,
    "OPTIONS": METHOD_OPTIONS,
}

_BAD = const(400)
_LENGTH_REQUIRED = const(411)
_TOO_LARGE = const(413)
_EXPECTATION = const(417)
_HEAD_TOO_LARGE = const(431)
_NOT_IMPLEMENTED = const(501)
_BAD_VERSION = const(505)

_CR = const(13)
_SP = const(32)
_TAB = const(9)


def _table(chars, lo=0, hi=0):
    """256-byte membership table for native.span_in: chars plus the range lo..hi."""
    t = bytearray(256)
    for c in chars:
        t[c] = 1
    for c in range(lo, hi + 1):
        t[c] = 1
    return bytes(t)


# tchar (RFC 9110 5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA.
_TCHAR = _table(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Query and authority bytes: visible ASCII except '#' (no controls, space, DEL, obs-text).
_QCHAR = _table(b"!\"$%&'()*+,-./:;<=>?@[\\]^_`{|}~", 48, 126)
_DIGIT = _table(b"0123456789")

# Constant byte strings (made once here; find()/mem_eq never copy them).
_CRLF = b"\r\n"
_CRLFCRLF = b"\r\n\r\n"
_SPACE = b" "
_COLON = b":"
_QMARK = b"?"
_SLASH = b"/"
_COMMA = b","
_HTTP11 = b"HTTP/1.1"
_HTTP10 = b"HTTP/1.0"
_HTTP_SLASH = b"HTTP/"
_SCHEME = b"http://"
_GET = b"GET"
_PUT = b"PUT"
_HEAD = b"HEAD"
_POST = b"POST"
_PATCH = b"PATCH"
_DELETE = b"DELETE"
_OPTIONS = b"OPTIONS"
_CLOSE = b"close"
_KEEP_ALIVE = b"keep-alive"
_CONTINUE = b"100-continue"
_CHUNKED = b"chunked"
_N_TE = b"te"
_N_HOST = b"host"
_N_EXPECT = b"expect"
_N_ACCEPT = b"accept"
_N_COOKIE = b"cookie"
_N_TRAILER = b"trailer"
_N_UPGRADE = b"upgrade"
_N_FORWARDED = b"forwarded"
_N_X_API_KEY = b"x-api-key"
_N_CONNECTION = b"connection"
_N_CONTENT_TYPE = b"content-type"
_N_AUTHORIZATION = b"authorization"
_N_CONTENT_LENGTH = b"content-length"
_N_X_FORWARDED_FOR = b"x-forwarded-for"
_N_PROXY_CONNECTION = b"proxy-connection"
_N_X_FORWARDED_HOST = b"x-forwarded-host"
_N_TRANSFER_ENCODING = b"transfer-encoding"
_N_X_FORWARDED_PROTO = b"x-forwarded-proto"

# Bits of the Connection header's tokens.
_CONN_CLOSE = const(1)
_CONN_KEEP = const(2)
_CONN_OTHER = const(4)


def method_name(bit):
    """The name of one METHOD_* bit ("" if unknown). Off the hot path: allocates."""
    for name in METHOD_NAMES:
        if METHOD_NAMES[name] == bit:
            return name
    return ""


def method_bits(names):
    """OR of the METHOD_* bits for an iterable of method names (or one name); for config.

    Names are matched upper-cased; an unknown name raises ValueError. Allocates.
    """
    if isinstance(names, str):
        names = (names,)
    bits = 0
    for name in names:
        bit = METHOD_NAMES.get(name.upper(), 0)
        if not bit:
            raise ValueError("unknown method: " + name)
        bits |= bit
    return bits


def _method(buf, s, n):
    """METHOD_* bit of the token buf[s:s+n] (case-sensitive), or 0. No allocation."""
    if n == 3:
        if mem_eq(buf, s, _GET, 0, 3):
            return METHOD_GET
        if mem_eq(buf, s, _PUT, 0, 3):
            return METHOD_PUT
    elif n == 4:
        if mem_eq(buf, s, _POST, 0, 4):
            return METHOD_POST
        if mem_eq(buf, s, _HEAD, 0, 4):
            return METHOD_HEAD
    elif n == 6:
        if mem_eq(buf, s, _DELETE, 0, 6):
            return METHOD_DELETE
    elif n == 5:
        if mem_eq(buf, s, _PATCH, 0, 5):
            return METHOD_PATCH
    elif n == 7:
        if mem_eq(buf, s, _OPTIONS, 0, 7):
            return METHOD_OPTIONS
    return 0


@micropython.native
def header_kind(buf, s, n):
    """HDR_* kind of the header name buf[s:s+n], case-insensitive. No allocation."""
    # By length first: one int compare, then at most two native compares.
    if n == 4:
        if mem_eq_lower(buf, s, _N_HOST, 0, 4):
            return HDR_HOST
    elif n == 6:
        if mem_eq_lower(buf, s, _N_ACCEPT, 0, 6):
            return HDR_ACCEPT
        if mem_eq_lower(buf, s, _N_COOKIE, 0, 6):
            return HDR_COOKIE
        if mem_eq_lower(buf, s, _N_EXPECT, 0, 6):
            return HDR_EXPECT
    elif n == 10:
        if mem_eq_lower(buf, s, _N_CONNECTION, 0, 10):
            return HDR_CONNECTION
        if mem_eq_lower(buf, s, _KEEP_ALIVE, 0, 10):
            return HDR_HOP
    elif n == 12:
        if mem_eq_lower(buf, s, _N_CONTENT_TYPE, 0, 12):
            return HDR_CONTENT_TYPE
    elif n == 13:
        if mem_eq_lower(buf, s, _N_AUTHORIZATION, 0, 13):
            return HDR_AUTHORIZATION
    elif n == 14:
        if mem_eq_lower(buf, s, _N_CONTENT_LENGTH, 0, 14):
            return HDR_CONTENT_LENGTH
    elif n == 15:
        if mem_eq_lower(buf, s, _N_X_FORWARDED_FOR, 0, 15):
            return HDR_X_FORWARDED_FOR
    elif n == 9:
        if mem_eq_lower(buf, s, _N_X_API_KEY, 0, 9):
            return HDR_X_API_KEY
        if mem_eq_lower(buf, s, _N_FORWARDED, 0, 9):
            return HDR_X_FORWARDED_OTHER
    elif n == 17:
        if mem_eq_lower(buf, s, _N_TRANSFER_ENCODING, 0, 17):
            return HDR_TRANSFER_ENCODING
        if mem_eq_lower(buf, s, _N_X_FORWARDED_PROTO, 0, 17):
            return HDR_X_FORWARDED_OTHER
    elif n == 16:
        if mem_eq_lower(buf, s, _N_X_FORWARDED_HOST, 0, 16):
            return HDR_X_FORWARDED_OTHER
        if mem_eq_lower(buf, s, _N_PROXY_CONNECTION, 0, 16):
            return HDR_HOP
    elif n == 2:
        if mem_eq_lower(buf, s, _N_TE, 0, 2):
            return HDR_HOP
    elif n == 7:
        if mem_eq_lower(buf, s, _N_UPGRADE, 0, 7) or mem_eq_lower(buf, s, _N_TRAILER, 0, 7):
            return HDR_HOP
    return HDR_OTHER


@micropython.native
def _request_line(slot, buf, s, e):
    """Parse `method SP target SP version` in buf[s:e]; fill the slot. 0 or an error status.

    No allocation. The path is normalized in place.
    """
    sp = buf.find(_SPACE, s, e)
    if sp <= s or span_in(buf, s, sp, _TCHAR) != sp:
        return _BAD  # no SP, empty method, or not a token
    ts = sp + 1
    te = buf.find(_SPACE, ts, e)
    if te <= ts:
        return _BAD  # no second SP, or an empty target (double space)
    v = te + 1
    if e - v != 8:
        return _BAD
    if mem_eq(buf, v, _HTTP11, 0, 8):
        slot.version = 11
        slot.keep_alive = True
    elif mem_eq(buf, v, _HTTP10, 0, 8):
        slot.version = 10
        slot.keep_alive = False
    else:
        c = buf[v + 5]
        d = buf[v + 7]
        if mem_eq(buf, v, _HTTP_SLASH, 0, 5) and 48 <= c <= 57 and buf[v + 6] == 46 and 48 <= d <= 57:
            return _BAD_VERSION
        return _BAD
    m = _method(buf, s, sp - s)
    slot.method_start = s
    slot.method_end = sp
    slot.target_start = ts  # the raw target's span; normalization rewrites bytes inside it
    slot.target_end = te
    c = buf[ts]
    if c == 47:  # '/': origin-form
        ps = ts
    elif c == 42:  # '*': asterisk-form, OPTIONS only, not normalized
        if te != ts + 1 or m != METHOD_OPTIONS:
            return _BAD
        slot.path_start = ts
        slot.path_end = te
        slot.query_start = te
        slot.query_end = te
        slot.method = m
        return 0
    elif te - ts > 7 and mem_eq_lower(buf, ts, _SCHEME, 0, 7):
        # absolute-form: the path after the authority is used. The authority is only checked,
        # not recorded as Host (Host stays whatever header says it); kept simple on purpose.
        a = ts + 7
        ps = buf.find(_SLASH, a, te)
        q = buf.find(_QMARK, a, te)
        if ps < 0 or 0 <= q < ps:
            ps = -1  # empty path: it becomes "/"
            ae = q if q >= 0 else te
        else:
            ae = ps
        if ae == a or span_in(buf, a, ae, _QCHAR) != ae:
            return _BAD
        if ps < 0:
            # no allocation: the "/" is the second slash of "http://" already in buf
            slot.path_start = ts + 6
            slot.path_end = ts + 7
            if q < 0:
                q = te
            if span_in(buf, q, te, _QCHAR) != te:
                return _BAD
            slot.query_start = q
            slot.query_end = te
            if not m:
                return _NOT_IMPLEMENTED
            slot.method = m
            return 0
    else:
        return _BAD
    q = buf.find(_QMARK, ps, te)
    if q < 0:
        q = te
    elif span_in(buf, q, te, _QCHAR) != te:
        return _BAD
    pe = normalize_path(buf, ps, q)
    if pe < 0:
        return _BAD
    slot.path_start = ps
    slot.path_end = pe
    slot.query_start = q
    slot.query_end = te
    if not m:
        return _NOT_IMPLEMENTED
    slot.method = m
    return 0


@micropython.native
def _connection(buf, s, e):
    """_CONN_* bits for the comma-separated tokens in buf[s:e], case-insensitive. No allocation."""
    f = 0
    while s < e:
        c = buf.find(_COMMA, s, e)
        if c < 0:
            c = e
        b = c
        while s < b and (buf[s] == _SP or buf[s] == _TAB):
            s += 1
        while b > s and (buf[b - 1] == _SP or buf[b - 1] == _TAB):
            b -= 1
        n = b - s
        if n == 5 and mem_eq_lower(buf, s, _CLOSE, 0, 5):
            f |= _CONN_CLOSE
        elif n == 10 and mem_eq_lower(buf, s, _KEEP_ALIVE, 0, 10):
            f |= _CONN_KEEP
        elif n:
            f |= _CONN_OTHER
        s = c + 1
    return f


def _te_status(buf, s, e):
    """411 if the last transfer coding in buf[s:e] is chunked, else 501. No allocation."""
    b = s
    i = e
    while i > s:
        if buf[i - 1] == 44:  # ','
            b = i
            break
        i -= 1
    while b < e and (buf[b] == _SP or buf[b] == _TAB):
        b += 1
    while e > b and (buf[e - 1] == _SP or buf[e - 1] == _TAB):
        e -= 1
    if e - b == 7 and mem_eq_lower(buf, b, _CHUNKED, 0, 7):
        return _LENGTH_REQUIRED
    return _NOT_IMPLEMENTED


@micropython.native
def _headers(slot, buf, i, end, maxh):
    """Parse the header lines in buf[i:end] (each ends in CRLF); fill the slot. 0 or a status.

    No allocation.
    """
    hdr = slot.hdr
    hkind = slot.hkind
    nh = 0
    cl = -1
    te = -1
    host = -1
    conn = 0
    expect = False
    while i < end:
        le = buf.find(_CRLF, i, end)
        colon = buf.find(_COLON, i, le)
        # colon <= i: no colon, or an empty name; a line starting with SP/HTAB (obs-fold) or a
        # name with whitespace before the colon fails the token check.
        if colon <= i or span_in(buf, i, colon, _TCHAR) != colon:
            return _BAD
        if nh >= maxh:
            return _HEAD_TOO_LARGE
        v = colon + 1
        while v < le and (buf[v] == _SP or buf[v] == _TAB):
            v += 1
        ve = le
        while ve > v and (buf[ve - 1] == _SP or buf[ve - 1] == _TAB):
            ve -= 1
        k = nh << 2
        hdr[k] = i
        hdr[k + 1] = colon
        hdr[k + 2] = v
        hdr[k + 3] = ve
        kind = header_kind(buf, i, colon - i)
        hkind[nh] = kind
        if kind == HDR_OTHER or kind > HDR_EXPECT:
            pass
        elif kind == HDR_HOST:
            if host >= 0:
                return _BAD
            host = nh
        elif kind == HDR_CONTENT_LENGTH:
            x = parse_uint(buf, v, ve)
            if x < 0:
                if ve > v and span_in(buf, v, ve, _DIGIT) == ve:
                    return _TOO_LARGE  # all digits, just beyond 2**30
                return _BAD  # not digits; lists like "5, 5" are refused too (strict)
            if cl >= 0 and x != cl:
                return _BAD
            cl = x
        elif kind == HDR_TRANSFER_ENCODING:
            te = nh
        elif kind == HDR_CONNECTION:
            conn |= _connection(buf, v, ve)
        elif kind == HDR_EXPECT:
            if ve - v != 12 or not mem_eq_lower(buf, v, _CONTINUE, 0, 12):
                return _EXPECTATION
            expect = True
        nh += 1
        i = le + 2
    slot.nhdr = nh
    slot.host = host
    if te >= 0:
        if cl >= 0:
            return _BAD  # Content-Length with Transfer-Encoding: request smuggling
        k = te << 2
        return _te_status(buf, hdr[k + 2], hdr[k + 3])
    if host < 0 and slot.version == 11:
        return _BAD
    if cl < 0:
        cl = 0
    slot.content_length = cl
    if conn & _CONN_CLOSE:
        slot.keep_alive = False
    elif conn & _CONN_KEEP:
        slot.keep_alive = True
    slot.conn_extra = conn & _CONN_OTHER != 0
    # RFC 9110 10.1.1: a server ignores 100-continue from an HTTP/1.0 client.
    slot.expect_continue = expect and slot.version == 11
    return 0


@micropython.native
def parse_request(slot, max_headers=None):
    """Parse the request in slot.buf[0:slot.n]: NEED_MORE, DONE, or an error status (>= 400).

    Call again as bytes arrive; work resumes at slot.scan. Allocates nothing.
    """
    he = slot.head_end
    if he:
        return DONE if slot.n >= slot.body_end else NEED_MORE
    buf = slot.buf
    n = slot.n
    ms = slot.method_start
    scan = slot.scan
    if scan == ms:
        # Nothing of the request line seen yet: skip empty lines before it (RFC 9112 2.2).
        while scan + 1 < n and buf[scan] == _CR and buf[scan + 1] == 10:
            scan += 2
        ms = scan
        slot.method_start = ms
    old = scan
    # The end of the head may straddle what was already scanned: look 3 bytes back.
    p = buf.find(_CRLFCRLF, scan - 3 if scan - 3 > ms else ms, n)
    end = p + 4 if p >= 0 else n
    bad = bad_head_byte(buf, scan, end)
    if bad < 0:
        scan = end
    elif bad == n - 1 and buf[bad] == _CR:
        scan = bad  # a CR at the very end may be the start of a CRLF: check it again later
    else:
        return _BAD
    slot.scan = scan
    if not slot.method:
        le = buf.find(_CRLF, old, scan)
        if le >= 0:
            r = _request_line(slot, buf, ms, le)
            if r:
                return r
    if p < 0:
        return _HEAD_TOO_LARGE if n >= len(buf) else NEED_MORE
    maxh = slot.max_headers
    if max_headers is not None and max_headers < maxh:
        maxh = max_headers
    # The request line ends 9 bytes after the target (" HTTP/1.x"), then CRLF.
    r = _headers(slot, buf, slot.target_end + 11, p + 2, maxh)
    if r:
        return r
    he = p + 4
    end = he + slot.content_length
    if end > len(buf):
        return _TOO_LARGE
    slot.head_end = he
    slot.body_end = end
    return DONE if n >= end else NEED_MORE

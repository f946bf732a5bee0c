"""The request as forwarded to a service, written piece by piece into a fixed buffer.

RequestWriter.start() lists the pieces of the forwarded request once: `METHOD SP path [?query]
SP version CRLF`, `Host` for the service, the client's headers minus hop-by-hop ones (RFC 9110
7.6.1) and the ones the gateway replaces, `X-Forwarded-For` (appended to the client's),
`X-Forwarded-Host`, `X-Forwarded-Proto`, `Via`, `Content-Length`, then the body. Each piece is a
span of the request buffer or of a constant, kept as (source, start, end) in tables made at
boot. fill(dst) copies as much as fits and resumes where it stopped, so any request, however its
bytes are split, goes out through a small buffer. Sans-IO, and no allocation.
"""

from array import array

from . import httpparse as hp
from .compat import micropython
from .native import mem_eq_lower, mem_move
from .response import put_uint

SP = b" "
CRLF = b"\r\n"
SLASH = b"/"
COMMA_SP = b", "
H_XFF = b"X-Forwarded-For: "
H_CL = b"Content-Length: "

# Header kinds the gateway drops (hop-by-hop) or replaces when forwarding a request.
DROP_KINDS = bytearray(32)
for _k in (
    hp.HDR_HOST,
    hp.HDR_CONTENT_LENGTH,
    hp.HDR_TRANSFER_ENCODING,
    hp.HDR_CONNECTION,
    hp.HDR_HOP,
    hp.HDR_EXPECT,
    hp.HDR_X_FORWARDED_FOR,
    hp.HDR_X_FORWARDED_OTHER,
):
    DROP_KINDS[_k] = 1

_BODY_METHODS = hp.METHOD_POST | hp.METHOD_PUT | hp.METHOD_PATCH

# Constants that go out together are one piece: fewer pieces, less work per request.
VERSION_HOST_11 = b" HTTP/1.1\r\nHost: "
VERSION_HOST_10 = b" HTTP/1.0\r\nHost: "
CRLF_XFH = b"\r\nX-Forwarded-Host: "
TAIL_11 = b"\r\nX-Forwarded-Proto: http\r\nVia: 1.1 apigw\r\n"
TAIL_10 = b"\r\nX-Forwarded-Proto: http\r\nVia: 1.0 apigw\r\n"
CRLF_CRLF = b"\r\n\r\n"


@micropython.native
def listed_in_connection(slot, k):
    """True if header k's name is a token of the request's Connection header (hop-by-hop by
    declaration). Slow path: only when the parser saw tokens other than close/keep-alive."""
    buf = slot.buf
    hdr = slot.hdr
    ns = hdr[4 * k]
    n = hdr[4 * k + 1] - ns
    for c in range(slot.nhdr):
        if slot.hkind[c] != hp.HDR_CONNECTION:
            continue
        i = hdr[4 * c + 2]
        end = hdr[4 * c + 3]
        while i < end:
            while i < end and (buf[i] == 32 or buf[i] == 44 or buf[i] == 9):
                i += 1
            t = i
            while i < end and buf[i] != 44 and buf[i] != 32 and buf[i] != 9:
                i += 1
            if i - t == n:
                j = 0
                while j < n and (buf[t + j] | 32) == (buf[ns + j] | 32):
                    j += 1
                if j == n:
                    return True
    return False


class Forwarded:
    """What mediation changes in a forwarded request (slot.fwd_med): the body, its Content-Type,
    headers dropped (lower-case names) and added (CRLF-ended lines), and for gRPC-Web the method
    and path. Made per mediated request (allocates; plain requests never see one)."""

    def __init__(self, body, ctype=None, drop=(), add=b"", path=None):
        self.body = body
        self.ctype = ctype  # a media type (bytes) replacing the client's Content-Type, or None
        self.drop = drop
        self.add = add
        self.path = path  # b"/package.Service/Method": POST there, no query


H_CT = b"Content-Type: "
POST = b"POST"


def _dropped(med, buf, s, e):
    n = e - s
    for name in med.drop:
        if len(name) == n and mem_eq_lower(buf, s, name, 0, n):
            return True
    return False


class RequestWriter:
    """Writes one forwarded request; one per slot, made at boot."""

    def __init__(self, max_headers=32):
        # Pieces: request line and Host (8), at most 2 per client header, the gateway's headers
        # and the body (8), mediation's headers (4).
        pieces = 2 * max_headers + 20
        self.digits = bytearray(16)  # Content-Length value and the blank line, made at start()
        self.port = bytearray(8)  # ":port" CRLF of the Host line, made at start()
        # Piece k is src[k][start[k]:end[k]]; made once, reused for every request.
        self.src = [b""] * pieces
        self.start_at = array("H", bytes(2 * pieces))
        self.end_at = array("H", bytes(2 * pieces))
        self.count = 0  # pieces listed
        self.k = 0  # the piece being copied
        self.pos = 0  # where in it

    @micropython.native
    def _add(self, src, a, b):
        if b > a:
            k = self.count
            self.src[k] = src
            self.start_at[k] = a
            self.end_at[k] = b
            self.count = k + 1

    @micropython.native
    def start(self, slot, hbuf, hoff, hlen, port, pbuf, poff, plen):
        """List the pieces of slot's request to the service at hbuf[hoff:hoff+hlen]:port; the
        route's rewrite pbuf[poff:poff+plen] goes before the rest of the path (plen 0: none).
        The client's address for X-Forwarded-For is slot.peer. No allocation."""
        buf = slot.buf
        hdr = slot.hdr
        nh = slot.nhdr
        kinds = slot.hkind
        med = slot.fwd_med
        self.count = 0
        if med is not None and med.path is not None:  # gRPC-Web: POST to the method's path
            self._add(POST, 0, 4)
            self._add(SP, 0, 1)
            self._add(med.path, 0, len(med.path))
        else:
            self._add(buf, slot.method_start, slot.method_end)
            self._add(SP, 0, 1)
            self._add(pbuf, poff, poff + plen)
            if plen == 0 and slot.fwd_rest_end <= slot.fwd_rest_start:
                self._add(SLASH, 0, 1)
            else:
                self._add(buf, slot.fwd_rest_start, slot.fwd_rest_end)
            self._add(buf, slot.query_start, slot.query_end)
        v11 = slot.version == 11
        self._add(VERSION_HOST_11 if v11 else VERSION_HOST_10, 0, 17)
        self._add(hbuf, hoff, hoff + hlen)
        p = self.port
        p[0] = 58  # ':'
        n = put_uint(p, 1, port)
        p[n] = 13
        p[n + 1] = 10
        self._add(p, 0, n + 2)
        # The client's headers, minus hop-by-hop ones and the ones replaced below. A line is
        # taken with its CRLF when no whitespace trails the value (the usual case): one piece.
        for k in range(nh):
            if DROP_KINDS[kinds[k]] or (slot.conn_extra and listed_in_connection(slot, k)):
                continue
            if med is not None and (
                (med.ctype is not None and kinds[k] == hp.HDR_CONTENT_TYPE)
                or _dropped(med, buf, hdr[4 * k], hdr[4 * k + 1])
            ):
                continue
            e = hdr[4 * k + 3]
            if buf[e] == 13:
                self._add(buf, hdr[4 * k], e + 2)
            else:
                self._add(buf, hdr[4 * k], e)
                self._add(CRLF, 0, 2)
        self._add(H_XFF, 0, len(H_XFF))
        for k in range(nh):  # every X-Forwarded-For the client sent, in order
            if kinds[k] == hp.HDR_X_FORWARDED_FOR:
                self._add(buf, hdr[4 * k + 2], hdr[4 * k + 3])
                self._add(COMMA_SP, 0, 2)
        self._add(slot.peer, 0, len(slot.peer))
        h = slot.host
        if h >= 0:
            self._add(CRLF_XFH, 0, len(CRLF_XFH))
            self._add(buf, hdr[4 * h + 2], hdr[4 * h + 3])
        self._add(TAIL_11 if v11 else TAIL_10, 0, len(TAIL_11))
        body = slot.body_end - slot.head_end
        if med is not None:
            self._add(med.add, 0, len(med.add))
            if med.ctype is not None:
                self._add(H_CT, 0, len(H_CT))
                self._add(med.ctype, 0, len(med.ctype))
                self._add(CRLF, 0, 2)
            body = len(med.body)
        if body > 0 or (slot.method & _BODY_METHODS) != 0 or (med is not None and med.path is not None):
            self._add(H_CL, 0, len(H_CL))
            d = self.digits
            n = put_uint(d, 0, body)
            mem_move(d, n, CRLF_CRLF, 0, 4)
            self._add(d, 0, n + 4)
        else:
            self._add(CRLF, 0, 2)
        if med is not None:
            self._add(med.body, 0, len(med.body))
        else:
            self._add(buf, slot.head_end, slot.body_end)
        self.k = 0
        self.pos = self.start_at[0]

    def done(self):
        return self.k >= self.count

    @micropython.native
    def fill(self, dst):
        """Copy the next bytes of the request into dst; returns how many (0 when all is out).
        No allocation."""
        size = len(dst)
        n = 0
        k = self.k
        pos = self.pos
        count = self.count
        ends = self.end_at
        while n < size and k < count:
            end = ends[k]
            take = end - pos
            if take > size - n:
                take = size - n
            mem_move(dst, n, self.src[k], pos, take)
            n += take
            pos += take
            if pos >= end:
                k += 1
                if k < count:
                    pos = self.start_at[k]
        self.k = k
        self.pos = pos
        return n

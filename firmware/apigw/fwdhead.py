"""The request as forwarded to a service, produced piece by piece into a fixed buffer.

RequestWriter walks the parsed request in a slot and yields the bytes to send upstream:
`METHOD SP path [?query] SP version CRLF`, `Host` for the service, the client's headers minus
hop-by-hop ones (RFC 9110 7.6.1) and the ones the gateway replaces, `X-Forwarded-For` (appended
to the client's), `X-Forwarded-Host`, `X-Forwarded-Proto`, `Via`, `Content-Length`, then the body.
fill(dst) copies as much as fits and resumes where it stopped, so any request, however its
bytes are split, goes out through a small buffer. Sans-IO, and no allocation after start().
"""

from . import httpparse as hp
from .compat import const, micropython
from .native import mem_move
from .response import put_uint

SP = b" "
CRLF = b"\r\n"
SLASH = b"/"
COMMA_SP = b", "
VERSION_11 = b" HTTP/1.1\r\n"
VERSION_10 = b" HTTP/1.0\r\n"
H_HOST = b"Host: "
H_XFF = b"X-Forwarded-For: "
H_XFH = b"X-Forwarded-Host: "
H_XFP = b"X-Forwarded-Proto: http\r\n"
H_VIA_11 = b"Via: 1.1 apigw\r\n"
H_VIA_10 = b"Via: 1.0 apigw\r\n"
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

# Steps of the walk, in order. Each names one piece; a step with nothing to send is skipped.
_METHOD = const(0)
_SP = const(1)
_PREFIX = const(2)
_REST = const(3)
_QUERY = const(4)
_VERSION = const(5)
_HOST_NAME = const(6)  # Host: the service's address, from the string table
_HOST_VALUE = const(7)
_HOST_PORT = const(8)
_HOST_CRLF = const(9)
_HDR_LINE = const(10)  # the next forwarded header line (repeats with _HDR_CRLF)
_HDR_CRLF = const(11)
_XFF_NAME = const(12)
_XFF_OLD = const(13)
_XFF_COMMA = const(14)
_XFF_PEER = const(15)
_XFF_CRLF = const(16)
_XFH_NAME = const(17)
_XFH_VALUE = const(18)
_XFH_CRLF = const(19)
_XFP = const(20)
_VIA = const(21)
_CL_NAME = const(22)
_CL_VALUE = const(23)
_CL_CRLF = const(24)
_END = const(25)
_BODY = const(26)
_DONE = const(27)


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


class RequestWriter:
    """Produces one forwarded request; one per slot, made at boot."""

    def __init__(self):
        self.digits = bytearray(12)  # Content-Length value, written at start()
        self.port = bytearray(7)  # ":port" of the Host line, written at start()
        self.nport = 0
        self.hbuf = b""
        self.hoff = 0
        self.hlen = 0
        # self.slot is set by start(); fill() does nothing before it (step is _DONE)
        self.peer = b""
        self.pbuf = b""
        self.poff = 0
        self.plen = 0
        self.send_length = False
        self.ndigits = 0
        self.k = 0
        self.xff = -1
        self.step = _DONE
        self.src = b""
        self.pos = 0
        self.end = 0

    @micropython.native
    def start(self, slot, hbuf, hoff, hlen, port):
        """Begin a request to the service at hbuf[hoff:hoff+hlen]:port (its Host line); the client's
        address for X-Forwarded-For is slot.peer. No allocation."""
        self.slot = slot
        self.hbuf = hbuf
        self.hoff = hoff
        self.hlen = hlen
        self.port[0] = 58  # ':'
        self.nport = put_uint(self.port, 1, port)
        self.peer = slot.peer
        self.pbuf = SP
        self.poff = 0
        self.plen = 0
        body = slot.body_end - slot.head_end
        self.send_length = body > 0 or (slot.method & _BODY_METHODS) != 0
        self.ndigits = put_uint(self.digits, 0, body)
        self.k = 0  # next header index
        self.xff = -1  # the client's X-Forwarded-For header last written
        self.step = _METHOD
        self.src = slot.buf
        self.pos = slot.method_start
        self.end = slot.method_end

    def path_prefix(self, pbuf, poff, plen):
        """The route's rewrite: pbuf[poff:poff+plen] goes before the rest of the path."""
        self.pbuf = pbuf
        self.poff = poff
        self.plen = plen

    def done(self):
        return self.step == _DONE

    @micropython.native
    def _advance(self):
        """Move to the next piece with something to send. No allocation."""
        slot = self.slot
        buf = slot.buf
        hdr = slot.hdr
        src = buf
        a = 0
        b = 0
        step = self.step
        while True:
            step += 1
            src = buf  # pieces from the request buffer unless the step says otherwise
            if step == _SP:
                src, a, b = SP, 0, 1
            elif step == _PREFIX:
                src, a, b = self.pbuf, self.poff, self.poff + self.plen
            elif step == _REST:
                if self.plen == 0 and slot.fwd_rest_end <= slot.fwd_rest_start:
                    src, a, b = SLASH, 0, 1
                else:
                    a, b = slot.fwd_rest_start, slot.fwd_rest_end
            elif step == _QUERY:
                a, b = slot.query_start, slot.query_end
            elif step == _VERSION:
                src, a, b = (VERSION_11 if slot.version == 11 else VERSION_10), 0, 11
            elif step == _HOST_NAME:
                src, a, b = H_HOST, 0, len(H_HOST)
            elif step == _HOST_VALUE:
                src, a, b = self.hbuf, self.hoff, self.hoff + self.hlen
            elif step == _HOST_PORT:
                src, a, b = self.port, 0, self.nport
            elif step == _HDR_LINE:
                k = self.k
                kinds = slot.hkind
                while k < slot.nhdr:
                    if DROP_KINDS[kinds[k]]:
                        pass
                    elif not slot.conn_extra or not listed_in_connection(slot, k):
                        break
                    k += 1
                if k >= slot.nhdr:
                    self.k = k
                    step = _XFF_NAME - 1
                    continue
                a, b = hdr[4 * k], hdr[4 * k + 3]  # name through value, as the client sent it
                self.k = k + 1
            elif step == _HDR_CRLF:
                src, a, b = CRLF, 0, 2
                step = _HDR_LINE - 1  # then the next header
            elif step == _XFF_NAME:
                src, a, b = H_XFF, 0, len(H_XFF)
            elif step == _XFF_OLD:  # every X-Forwarded-For the client sent, in order
                x = self.xff + 1
                kinds = slot.hkind
                while x < slot.nhdr and kinds[x] != hp.HDR_X_FORWARDED_FOR:
                    x += 1
                self.xff = x
                if x >= slot.nhdr:
                    step = _XFF_PEER - 1
                    continue
                a, b = hdr[4 * x + 2], hdr[4 * x + 3]
            elif step == _XFF_COMMA:
                src, a, b = COMMA_SP, 0, 2
                step = _XFF_OLD - 1  # then the next one, or the client's address
            elif step == _XFF_PEER:
                src, a, b = self.peer, 0, len(self.peer)
            elif step == _HOST_CRLF or step == _XFF_CRLF or step == _XFH_CRLF or step == _CL_CRLF or step == _END:
                src, a, b = CRLF, 0, 2
            elif step == _XFH_NAME:
                if slot.host < 0:
                    step = _XFP - 1
                    continue
                src, a, b = H_XFH, 0, len(H_XFH)
            elif step == _XFH_VALUE:
                a, b = hdr[4 * slot.host + 2], hdr[4 * slot.host + 3]
            elif step == _XFP:
                src, a, b = H_XFP, 0, len(H_XFP)
            elif step == _VIA:
                src, a, b = (H_VIA_11 if slot.version == 11 else H_VIA_10), 0, 16
            elif step == _CL_NAME:
                if not self.send_length:
                    step = _END - 1
                    continue
                src, a, b = H_CL, 0, len(H_CL)
            elif step == _CL_VALUE:
                src, a, b = self.digits, 0, self.ndigits
            elif step == _BODY:
                a, b = slot.head_end, slot.body_end
            else:
                step = _DONE
            if b > a or step == _DONE:
                break
        self.step = step
        self.src = src
        self.pos = a
        self.end = b

    @micropython.native
    def fill(self, dst):
        """Copy the next bytes of the request into dst; returns how many (0 when all is out).
        No allocation."""
        size = len(dst)
        n = 0
        while n < size:
            if self.pos >= self.end:
                if self.step == _DONE:
                    break
                self._advance()
                continue
            take = self.end - self.pos
            if take > size - n:
                take = size - n
            mem_move(dst, n, self.src, self.pos, take)
            n += take
            self.pos += take
        return n

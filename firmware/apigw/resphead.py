"""Reads an upstream's response head and rewrites it, in place, for the client.

Sans-IO: ResponseHead.parse() looks at bytes in a buffer and records what the relay needs (status,
framing, whether the upstream keeps the connection); rewrite() drops hop-by-hop header lines and
appends the gateway's own (Via, Connection) without a second buffer. No allocation.
"""

from .compat import micropython
from .httpparse import HDR_CONNECTION, HDR_CONTENT_LENGTH, HDR_HOP, HDR_TRANSFER_ENCODING, header_kind
from .native import mem_eq_lower, mem_move, parse_uint

CRLFCRLF = b"\r\n\r\n"
VIA_11 = b"Via: 1.1 apigw\r\n"
CONN_CLOSE = b"Connection: close\r\n"
CONN_KEEP_ALIVE = b"Connection: keep-alive\r\n"

# Header values the relay looks at (names are classified by httpparse.header_kind). Hop-by-hop
# headers are dropped (RFC 9110 7.6.1); Transfer-Encoding is kept: chunked bodies are relayed as
# they are.
_V_CLOSE = b"close"
_V_KEEP_ALIVE = b"keep-alive"
_V_CHUNKED = b"chunked"

# Room left in front of the head so rewrite() can add lines without overtaking unread bytes:
# Via and Connection (40 bytes at most) and one extra line (a sticky-session Set-Cookie, at most
# MAX_EXTRA bytes: 12 + a 32-byte name + 1 + a 21-byte value + 28).
RESERVE = 136
MAX_EXTRA = 94


class ResponseHead:
    """What the relay knows about one upstream response."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.status = 0
        self.version = 11
        self.head_end = 0
        self.length = -1  # Content-Length, or -1
        self.chunked = False
        self.close = False  # upstream will close after this response
        self.drop = 0  # bit k set: header line k is hop-by-hop (first 30 lines)

    def has_body(self, method_head):
        s = self.status
        return not (method_head or s == 204 or s == 304 or 100 <= s < 200)

    @micropython.native
    def parse(self, buf, start, end):
        """Find and read a response head in buf[start:end]. Returns head_end (> 0) when complete,
        0 when more bytes are needed, -1 when malformed. No allocation."""
        he = buf.find(CRLFCRLF, start, end)
        if he < 0:
            return 0
        he += 4
        self.clear()
        # Status line: HTTP/1.x SP ddd ...
        if end - start < 12 or buf[start] != 72 or buf[start + 4] != 47 or buf[start + 8] != 32:
            return -1
        if buf[start + 5] != 49 or buf[start + 6] != 46:
            return -1
        self.version = 10 if buf[start + 7] == 48 else 11
        status = parse_uint(buf, start + 9, start + 12)
        if status < 100 or status > 599:
            return -1
        self.status = status
        self.close = self.version == 10
        line = buf.find(b"\r\n", start, he) + 2
        k = 0
        while line < he - 2:
            eol = buf.find(b"\r\n", line, he)
            colon = buf.find(b":", line, eol)
            if colon <= line:
                return -1
            v = colon + 1
            while v < eol and (buf[v] == 32 or buf[v] == 9):
                v += 1
            ve = eol
            while ve > v and (buf[ve - 1] == 32 or buf[ve - 1] == 9):
                ve -= 1
            kind = header_kind(buf, line, colon - line)  # the request parser's name table
            hop = kind == HDR_HOP or kind == HDR_CONNECTION
            if kind == HDR_CONNECTION:
                if ve - v == 5 and mem_eq_lower(buf, v, _V_CLOSE, 0, 5):
                    self.close = True
                elif self.version == 10 and ve - v == 10 and mem_eq_lower(buf, v, _V_KEEP_ALIVE, 0, 10):
                    self.close = False
            elif kind == HDR_CONTENT_LENGTH:
                length = parse_uint(buf, v, ve)
                if length < 0 or (self.length >= 0 and length != self.length):
                    return -1
                self.length = length
            elif kind == HDR_TRANSFER_ENCODING:
                if ve - v >= 7 and mem_eq_lower(buf, ve - 7, _V_CHUNKED, 0, 7):
                    self.chunked = True
                else:
                    self.close = True  # another coding: the body ends when the upstream closes
            if hop:
                if k >= 30:
                    return -1  # more hop-by-hop lines than we track: refuse rather than leak them
                self.drop |= 1 << k
            k += 1
            line = eol + 2
        if self.chunked:
            self.length = -1  # RFC 9112 6.3: Transfer-Encoding overrides Content-Length
        self.head_end = he
        return he

    @micropython.native
    def rewrite(self, buf, start, client_close, client_version, extra=None, extra_len=0):
        """Rewrite the head parsed at buf[start:head_end] into buf[0:], dropping hop-by-hop lines
        and adding Via, Connection and extra[:extra_len] (header lines with their CRLF, at most
        MAX_EXTRA bytes). start must be >= RESERVE. Returns the new head length.
        Writes never overtake reads: the output starts RESERVE bytes behind the input and grows by
        less than that. No allocation."""
        he = self.head_end
        eol = buf.find(b"\r\n", start, he) + 2
        if he <= start or eol < start + 2:
            return 0  # nothing parsed: never write at offsets derived from a missing head
        mem_move(buf, 0, buf, start, eol - start)  # status line
        w = eol - start
        line = eol
        k = 0
        drop = self.drop
        while line < he - 2:
            eol = buf.find(b"\r\n", line, he) + 2
            if not (drop >> k) & 1:
                mem_move(buf, w, buf, line, eol - line)
                w += eol - line
            k += 1
            line = eol
        mem_move(buf, w, VIA_11, 0, len(VIA_11))
        w += len(VIA_11)
        if extra_len > 0 and extra is not None:
            mem_move(buf, w, extra, 0, extra_len)
            w += extra_len
        if client_close:
            mem_move(buf, w, CONN_CLOSE, 0, len(CONN_CLOSE))
            w += len(CONN_CLOSE)
        elif client_version == 10:
            mem_move(buf, w, CONN_KEEP_ALIVE, 0, len(CONN_KEEP_ALIVE))
            w += len(CONN_KEEP_ALIVE)
        buf[w] = 13
        buf[w + 1] = 10
        return w + 2

"""Tracks chunked transfer coding (RFC 9112 section 7.1) in a byte stream passing through.

The gateway relays a chunked upstream response byte for byte; this tracker only finds where the
message ends, so the upstream connection can be reused and the client connection kept alive.
Sans-IO: feed() takes a buffer and offsets and answers with an int. Chunk data is skipped in
bulk; only size lines and trailers are looked at byte by byte. No allocation.
"""

from .compat import const, micropython

_SIZE = const(0)  # reading hex digits of a chunk size
_EXT = const(1)  # chunk extension, skipped up to CR
_SIZE_LF = const(2)  # LF ending the size line
_DATA = const(3)  # chunk data, self.remaining bytes left
_DATA_CR = const(4)  # CR after chunk data
_DATA_LF = const(5)  # LF after chunk data
_TRAILER = const(6)  # start of a trailer line (or the final CRLF)
_TRAILER_LINE = const(7)  # inside a trailer field line
_TRAILER_LF = const(8)  # LF ending a trailer field line
_FINAL_LF = const(9)  # LF of the final CRLF
_DONE = const(10)

MORE = -1  # feed(): the message has not ended yet
ERROR = -2  # feed(): the framing is broken

_MAX_DIGITS = const(7)  # chunk sizes below 2**28: anything larger is refused on a microcontroller


class ChunkedTracker:
    def __init__(self):
        self.reset()

    def reset(self):
        self.state = _SIZE
        self.size = 0
        self.digits = 0
        self.remaining = 0

    def done(self):
        return self.state == _DONE

    @micropython.native
    def feed(self, buf, start, end):
        """Consume buf[start:end]. Returns the offset just past the end of the message, MORE if it
        has not ended within these bytes, or ERROR. No allocation."""
        st = self.state
        i = start
        while i < end:
            if st == _DATA:
                take = end - i
                if take > self.remaining:
                    take = self.remaining
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    st = _DATA_CR
                continue
            c = buf[i]
            i += 1
            if st == _SIZE:
                if 48 <= c <= 57:
                    v = c - 48
                elif 97 <= c <= 102:
                    v = c - 87
                elif 65 <= c <= 70:
                    v = c - 55
                else:
                    v = -1
                if v >= 0:
                    self.digits += 1
                    if self.digits > _MAX_DIGITS:
                        st = ERROR
                        break
                    self.size = self.size * 16 + v
                elif self.digits and (c == 59 or c == 32 or c == 9):  # ';', SP, HTAB
                    st = _EXT
                elif self.digits and c == 13:
                    st = _SIZE_LF
                else:
                    st = ERROR
                    break
            elif st == _EXT:
                if c == 13:
                    st = _SIZE_LF
            elif st == _SIZE_LF:
                if c != 10:
                    st = ERROR
                    break
                if self.size == 0:
                    st = _TRAILER
                else:
                    self.remaining = self.size
                    st = _DATA
                self.size = 0
                self.digits = 0
            elif st == _DATA_CR:
                if c != 13:
                    st = ERROR
                    break
                st = _DATA_LF
            elif st == _DATA_LF:
                if c != 10:
                    st = ERROR
                    break
                st = _SIZE
            elif st == _TRAILER:
                st = _FINAL_LF if c == 13 else _TRAILER_LINE
            elif st == _TRAILER_LINE:
                if c == 13:
                    st = _TRAILER_LF
            elif st == _TRAILER_LF:
                if c != 10:
                    st = ERROR
                    break
                st = _TRAILER
            elif st == _FINAL_LF:
                if c != 10:
                    st = ERROR
                    break
                self.state = _DONE
                return i
            else:  # done or error already
                break
        self.state = st
        if st == ERROR:
            return ERROR
        if st == _DONE:
            return start
        return MORE

"""Shared by the format converters (xmlconv, formconv): the error, scalar text, UTF-8, output.

Owns `ConvError` (one class for both converters), the JSON scalar <-> text rules (`scalar_text`
writes a scalar, `typed_value` reads "true"/"false" and JSON numbers back), strict UTF-8 decoding
(`utf8`: the same refusals on both runtimes) and the growing output buffer both write into
(`writer`, `put`, `written`). Must not know XML or form syntax, nor do I/O.

The per-token helpers are native code (no heap frame per call) and allocate only their result.
"""

from .compat import micropython
from .native import mem_move, span_in

_INF = float("inf")


def byte_table(ok, value=1):
    """256-byte class table for native.span_in, which stops at a 0 entry: entries for the bytes
    in ok are value, the others 1 - value."""
    t = bytearray(bytes([1 - value]) * 256)
    for c in ok:
        t[c] = value
    return t


_T_UTF8 = byte_table(b"\xc0\xc1\xe0\xed\xf0" + bytes(range(0xF4, 256)), 0)  # leads strict UTF-8 checks


class ConvError(ValueError):
    """Refused input for a format conversion; `offset` is the byte offset in the input, or -1."""

    def __init__(self, message, offset=-1):
        super().__init__(message if offset < 0 else "%s at byte %d" % (message, offset))
        self.offset = offset


def under(where):
    """The suffix naming a key in an error message; where is a str key, a bytes name or ""."""
    if not where:
        return ""
    return " under %r" % (str(where, "utf-8") if isinstance(where, bytes) else where)


def scalar_text(v, where):
    """The text of a JSON scalar: the string itself, "true"/"false", a number as JSON writes it.
    where (a key or element name) is only read for the error message."""
    if isinstance(v, str):
        return v
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v == _INF or v == -_INF:
            raise ConvError("NaN or Infinity" + under(where))
        return repr(v)
    raise ConvError("not a JSON scalar" + under(where))


def _digits(s, j, n):
    while j < n and "0" <= s[j] <= "9":
        j += 1
    return j


@micropython.native
def typed_value(s):
    """s as a bool or number when it is "true"/"false" or a JSON number, else s itself."""
    if s == "true" or s == "false":
        return s == "true"
    n = len(s)
    if n == 0 or not (s[0] == "-" or "0" <= s[0] <= "9"):
        return s
    i = 1 if s[0] == "-" else 0
    j = _digits(s, i, n)
    if j == i or (s[i] == "0" and j - i > 1):
        return s
    frac = False
    if j < n and s[j] == ".":
        k = _digits(s, j + 1, n)
        if k == j + 1:
            return s
        j, frac = k, True
    if j < n and (s[j] == "e" or s[j] == "E"):
        j += 1
        if j < n and (s[j] == "+" or s[j] == "-"):
            j += 1
        k = _digits(s, j, n)
        if k == j:
            return s
        j, frac = k, True
    if j != n:
        return s
    try:
        v = float(s) if frac else int(s)
    except ValueError:  # CPython's limit on digits of an int
        return s
    return s if v == _INF or v == -_INF else v


@micropython.native
def utf8(b, s, e, offset):
    """b[s:e] decoded; ConvError at offset when it is not strict UTF-8.

    MicroPython's decoder lets overlong forms, surrogates and code points above U+10FFFF through;
    the lead bytes that can start one are checked here, so both runtimes refuse the same input."""
    try:
        # the whole buffer as it is; a long span through a memoryview rather than a copy
        t = str(b if s == 0 and e == len(b) else b[s:e] if e - s < 64 else memoryview(b)[s:e], "utf-8")
    except UnicodeError:
        raise ConvError("invalid UTF-8", offset)
    j = span_in(b, s, e, _T_UTF8)
    while j < e:
        c = b[j]
        d = b[j + 1] if j + 1 < e else 0
        if c < 0xC2 or c > 0xF4 or (c == 0xE0 and d < 0xA0) or (c == 0xED and d > 0x9F) or (c == 0xF0 and d < 0x90):
            raise ConvError("invalid UTF-8", offset)
        if c == 0xF4 and d > 0x8F:
            raise ConvError("invalid UTF-8", offset)
        j = span_in(b, j + 1, e, _T_UTF8)
    return t


def writer(cap=256):
    """An output buffer for put() and written(): [bytearray, bytes in use]. One growing buffer
    keeps a long output's live memory near its size (a list of pieces keeps every piece alive)."""
    return [bytearray(cap), 0]


@micropython.native
def put(st, b):
    """Append the bytes-like b to the writer st, doubling its buffer when it is full."""
    n = len(b)
    w = st[1]
    buf = st[0]
    if w + n > len(buf):
        new = bytearray(max(2 * len(buf), w + n))
        mem_move(new, 0, buf, 0, w)
        st[0] = buf = new
    mem_move(buf, w, b, 0, n)
    st[1] = w + n


def written(st):
    """The bytes written to the writer st (one copy of them)."""
    return bytes(memoryview(st[0])[: st[1]])

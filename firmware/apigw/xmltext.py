"""XML 1.0's lexical rules for xmlconv: names, escaping, references, the prolog.

Owns name checks (`name_ok`, `name_at`, `name_bytes`: XML 1.0 5th edition names), escaping for
text and attribute values (`escape`), reference decoding with line-end and attribute-value
normalization (`unescape`), the XML declaration's encoding (`check_decl`), the extent of a
DOCTYPE (`doctype_end`, refusing an internal subset) and the byte class tables. Must not know
document structure (xmlconv), JSON values (xmltree) or do I/O.

Byte scans are native.span_in over 256-byte class tables (about 1.5 KB of RAM, made at import).
escape returns the encoded string itself when nothing needs escaping, else one bytearray of the
exact size; unescape writes into one bytearray of the input's size (decoding only shrinks).
"""

from .compat import micropython
from .convtext import ConvError, byte_table, under, utf8
from .native import mem_move, parse_hex, parse_uint, span_in

_CTL = bytes(range(9)) + b"\x0b\x0c" + bytes(range(14, 32))
_NAME_ASCII = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:.-"
_REPL = {38: b"&amp;", 60: b"&lt;", 62: b"&gt;", 34: b"&quot;", 9: b"&#9;", 10: b"&#10;", 13: b"&#13;"}
_ENTITIES = {b"amp": 38, b"lt": 60, b"gt": 62, b"quot": 34, b"apos": 39}
# Non-ASCII NameStartChar ranges of XML 1.0 5th edition, and the extra NameChar ranges.
_START = (0xC0, 0xD6, 0xD8, 0xF6, 0xF8, 0x2FF, 0x370, 0x37D, 0x37F, 0x1FFF, 0x200C, 0x200D, 0x2070, 0x218F)
_START += (0x2C00, 0x2FEF, 0x3001, 0xD7FF, 0xF900, 0xFDCF, 0xFDF0, 0xFFFD, 0x10000, 0xEFFFF)
_MORE = (0xB7, 0xB7, 0x300, 0x36F, 0x203F, 0x2040)

# span_in stops at a 0 entry. ED/EF lead bytes are checked for surrogates and U+FFFE/U+FFFF.
T_TEXT = byte_table(_CTL + b"&<>\r\xed\xef", 0)
T_ATTR = byte_table(_CTL + b'&<>"\t\n\r\xed\xef', 0)
T_CDATA = byte_table(_CTL + b"\r\xed\xef", 0)
T_NAME = byte_table(_NAME_ASCII + bytes(range(128, 256)))  # bytes a name may hold (checked after)
_T_NAMEA = byte_table(_NAME_ASCII)
T_WS = byte_table(b" \t\r\n")


def _in(o, ranges):
    """True if o lies in one of the (first, last) pairs of the flat tuple ranges."""
    for i in range(0, len(ranges), 2):
        if ranges[i] <= o <= ranges[i + 1]:
            return True
    return False


@micropython.native
def name_ok(b, s, e):
    """True if b[s:e] (UTF-8) is an XML name."""
    if e <= s:
        return False
    if span_in(b, s, e, _T_NAMEA) == e:  # ASCII: the common case, no allocation
        c = b[s]
        return not (48 <= c <= 57 or c == 45 or c == 46)
    try:
        name = utf8(b, s, e, s)
    except ConvError:
        return False
    first = True
    for ch in name:
        o = ord(ch)
        if o < 128:
            if not _T_NAMEA[o] or (first and (48 <= o <= 57 or o == 45 or o == 46)):
                return False
        elif not (_in(o, _START) or (not first and _in(o, _MORE))):
            return False
        first = False
    return True


@micropython.native
def name_bytes(k, shown):
    """k encoded, checked to be an XML name; else ConvError showing the key as shown."""
    try:
        b = k.encode()
    except UnicodeError:  # CPython: a lone surrogate
        b = b""
    if not name_ok(b, 0, len(b)):
        raise ConvError("not an XML name: %r" % shown)
    return b


@micropython.native
def name_at(b, s, e):
    """The XML name b[s:e] as a str; ConvError at s when it is not one."""
    if not name_ok(b, s, e):
        raise ConvError("bad name", s)
    return str(b[s:e], "utf-8")


def _check_bad(b, j, n, where, offset):
    """Raise for the byte at b[j] that XML 1.0 forbids; return if it is an allowed ED/EF lead."""
    c = b[j]
    if c == 0xED and (j + 1 >= n or b[j + 1] < 0xA0):
        return
    if c == 0xEF and not (j + 2 < n and b[j + 1] == 0xBF and b[j + 2] >= 0xBE):
        return
    what = "character not allowed in XML" if c >= 0x80 else "control character 0x%02x" % c
    raise ConvError(what + under(where), offset)


@micropython.native
def escape(s, table, where):
    """s as escaped UTF-8 bytes: the encoded string itself when nothing needs escaping, else one
    bytearray of the exact size (a first pass measures it)."""
    try:
        b = s.encode()
    except UnicodeError:  # CPython: a lone surrogate
        raise ConvError("character not allowed in XML" + under(where))
    n = len(b)
    j = span_in(b, 0, n, table)
    if j == n:
        return b
    size = n
    k = j
    while k < n:
        rep = _REPL.get(b[k])
        if rep is None:
            _check_bad(b, k, n, where, -1)
        else:
            size += len(rep) - 1
        k = span_in(b, k + 1, n, table)
    out = bytearray(size)
    i = w = 0
    while j < n:
        mem_move(out, w, b, i, j - i)
        w += j - i
        rep = _REPL.get(b[j])
        if rep is None:
            out[w] = b[j]
            w += 1
        else:
            mem_move(out, w, rep, 0, len(rep))
            w += len(rep)
        i = j + 1
        j = span_in(b, i, n, table)
    mem_move(out, w, b, i, n - i)
    return out


@micropython.native
def unescape(b, s, e, table, attr):
    """Text of b[s:e]: references decoded (not for CDATA), line ends and attribute whitespace
    normalized, forbidden characters refused. The result never outgrows the input, so it is
    written into one bytearray of the input's size."""
    j = span_in(b, s, e, table)
    if j == e:
        return utf8(b, s, e, s)
    start = s
    out = bytearray(e - s)
    w = 0
    while True:
        mem_move(out, w, b, s, j - s)
        w += j - s
        if j >= e:
            return utf8(out, 0, w, start)
        c = b[j]
        s = j + 1
        if c == 38:  # &: a reference, at most "&#x10FFFF;"
            k = b.find(b";", s, min(e, s + 9))
            cp = -1 if k < 0 else _ENTITIES.get(b[s:k], -1)
            if cp < 0 and k > s + 1 and b[s] == 35:
                cp = parse_hex(b, s + 2, k) if b[s + 1] == 120 else parse_uint(b, s + 1, k)
                if not (cp in (9, 10, 13) or 32 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0xFFFF < cp < 0x110000):
                    cp = -1
            if cp < 0:
                raise ConvError("bad reference", j)
            if cp < 128:
                out[w] = cp
                w += 1
            else:
                u = chr(cp).encode()
                mem_move(out, w, u, 0, len(u))
                w += len(u)
            s = k + 1
        else:
            if c == 13:  # CRLF and CR become LF (a space in an attribute value)
                c = 32 if attr else 10
                if s < e and b[s] == 10:
                    s += 1
            elif c == 9 or c == 10:
                c = 32
            elif c == 60:
                raise ConvError("'<' in an attribute value", j)
            elif c != 62 and c != 34:
                _check_bad(b, j, e, "", j)
            out[w] = c
            w += 1
        j = span_in(b, s, e, table)


def check_decl(b, s, e):
    """Check the XML declaration b[s:e] ("<?xml ... ?>"): only UTF-8 (or its subset US-ASCII)."""
    k = b.find(b"encoding", s, e)
    if k < 0:
        return
    q = span_in(b, k + 8, e, T_WS)
    q = span_in(b, q + 1, e, T_WS) if q < e and b[q] == 61 else e
    if q >= e or b[q] not in (34, 39) or b.find(b[q : q + 1], q + 1, e) < 0:
        raise ConvError("bad XML declaration", s)
    enc = b[q + 1 : b.find(b[q : q + 1], q + 1, e)].lower()
    if enc not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
        raise ConvError("unsupported encoding", k)


def doctype_end(b, i, n):
    """End of the DOCTYPE starting at b[i] ('<'); refuses an internal subset."""
    p = i + 9
    while p < n:
        c = b[p]
        if c == 34 or c == 39:
            p = b.find(b[p : p + 1], p + 1)
            if p < 0:
                break
        elif c == 91:
            raise ConvError("DOCTYPE with an internal subset refused", p)
        elif c == 62:
            return p + 1
        p += 1
    raise ConvError("unterminated DOCTYPE", i)

"""JSON objects <-> application/x-www-form-urlencoded for the mediation stage.

Owns `dumps`, `loads` and the mapping below; ConvError and the scalar rules (number text, typed
values) are convtext's, shared with xmlconv. Must not do I/O or know HTTP: the caller checks the
Content-Type and bounds the input (the 8 KB slot).

JSON -> form, `dumps(obj, sort_keys=False) -> bytes`:
- obj must be an object. Pairs are key=value joined by '&', in the dict's order (MicroPython
  dicts do not keep insertion order: sort_keys=True gives a stable one).
- Values: strings as they are; numbers as JSON writes them (NaN/Infinity raise ConvError);
  true/false; null as an empty value (k=); an array of scalars as the key repeated once per item
  (an empty array writes nothing). A nested object, or an array holding objects or arrays,
  raises ConvError naming the key: no bracket notation (a[b]=, a[]=), which frameworks read
  differently.
- Encoding per the WHATWG urlencoded serializer: UTF-8; ASCII letters, digits and *-._ kept;
  space as '+'; every other byte as %XX (upper-case hex). urllib.parse.urlencode differs only in
  keeping '~' and escaping '*'.

Form -> JSON, `loads(data, typed=False, list_keys=(), max_fields=256) -> dict`:
- Like urllib.parse.parse_qsl(keep_blank_values=True, strict_parsing=False): pairs split on '&'
  only, empty pieces skipped, the first '=' splits key from value, a piece without '=' is a key
  with value "", '+' is a space, %XX is decoded and a '%' not followed by two hex digits is kept.
- Decoded bytes must be UTF-8, else ConvError (parse_qsl would put U+FFFD in their place).
- A repeated key gives a list in order; a key in list_keys is always a list.
- typed=False: values are strings. typed=True: "true"/"false" and JSON numbers become
  bool/int/float; "" stays "".
- More than max_fields pairs: ConvError. Errors carry `.offset`, the byte offset in data.

Round trip: loads(dumps(x), typed=True) == x except: strings that read as numbers or true/false
come back typed, null comes back as "", an empty array vanishes, a one-item array comes back as
its item unless its key is in list_keys.

Allocation: both directions allocate (pieces, strings, the dict); an escape-free key or value
costs only its encoded bytes (dumps) or its str (loads). Unix port, a 10-field object: dumps
about 27 us (1.6 KB allocated), loads about 21 us (2.3 KB), 31 us typed.
"""

from .convtext import ConvError, put, scalar_text, typed_value, utf8, writer, written
from .compat import micropython
from .native import mem_move, parse_hex, span_in

__all__ = ("ConvError", "dumps", "loads")

_HEX = b"0123456789ABCDEF"
_ARRAY = (list, tuple)  # built once: a tuple literal in isinstance() would be built per call
_NESTED = (dict, list, tuple)
_T_KEEP = bytearray(256)  # span_in stops at a 0 entry: the bytes the serializer escapes
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._":
    _T_KEEP[_c] = 1
_T_PLAIN = bytearray(b"\x01" * 256)  # and the bytes loads decodes: '+' and '%'
_T_PLAIN[43] = 0
_T_PLAIN[37] = 0


@micropython.native
def _quote(s, key):
    """s percent-encoded: its UTF-8 bytes themselves when nothing needs escaping, else one
    bytearray of the exact size (a first pass measures it)."""
    try:
        b = s.encode()
    except UnicodeError:  # CPython: a lone surrogate
        raise ConvError("not UTF-8 encodable under %r" % (key,))
    n = len(b)
    j = span_in(b, 0, n, _T_KEEP)
    if j == n:
        return b
    size = n
    k = j
    while k < n:
        if b[k] == 0xED and k + 1 < n and b[k + 1] > 0x9F:  # MicroPython encodes a lone surrogate
            raise ConvError("not UTF-8 encodable under %r" % (key,))
        if b[k] != 32:
            size += 2
        k = span_in(b, k + 1, n, _T_KEEP)
    out = bytearray(size)
    i = w = 0
    while j < n:
        mem_move(out, w, b, i, j - i)
        w += j - i
        c = b[j]
        if c == 32:
            out[w] = 43  # '+'
            w += 1
        else:
            out[w] = 37  # '%'
            out[w + 1] = _HEX[c >> 4]
            out[w + 2] = _HEX[c & 15]
            w += 3
        i = j + 1
        j = span_in(b, i, n, _T_KEEP)
    mem_move(out, w, b, i, n - i)
    return out


@micropython.native
def _pair(out, ek, v, key):
    if out[1]:
        put(out, b"&")
    put(out, ek)
    put(out, b"=")
    if v is not None:
        put(out, _quote(scalar_text(v, key), key))


def dumps(obj, sort_keys=False):
    """The form encoding of a flat JSON object (see the module docstring for the mapping)."""
    if not isinstance(obj, dict):
        raise ConvError("a form needs a JSON object")
    out = writer(256)
    for k in sorted(obj) if sort_keys else obj:
        if not isinstance(k, str):
            raise ConvError("key is not a string: %r" % (k,))
        v = obj[k]
        if isinstance(v, dict):
            raise ConvError("nested object under %r" % k)
        if isinstance(v, _ARRAY):
            ek = _quote(k, k) if v else b""
            for e in v:
                if isinstance(e, _NESTED):
                    raise ConvError("array of objects or arrays under %r" % k)
                _pair(out, ek, e, k)
        else:
            _pair(out, _quote(k, k), v, k)
    return written(out)


@micropython.native
def _unquote(b, s, e):
    """b[s:e] form-decoded to a str (decoding only shrinks: one bytearray of the input's size)."""
    j = span_in(b, s, e, _T_PLAIN)
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
        if c == 43:
            c = 32  # '+' is a space
        else:
            h = parse_hex(b, j + 1, j + 3) if j + 3 <= e else -1
            if h >= 0:  # else a '%' without two hex digits stays
                c = h
                s = j + 3
        out[w] = c
        w += 1
        j = span_in(b, s, e, _T_PLAIN)


def unquote(data):
    """One form-encoded value (bytes) as a str; raises ConvError when it is not UTF-8."""
    return _unquote(data, 0, len(data))


def loads(data, typed=False, list_keys=(), max_fields=256):
    """A dict of the pairs in form-encoded data (see the module docstring)."""
    b = data.encode() if isinstance(data, str) else bytes(data)
    n = len(b)
    out = {}
    lists = None  # key -> the list that collects it
    count = 0
    i = 0
    while i < n:
        amp = b.find(b"&", i)
        if amp < 0:
            amp = n
        if amp > i:
            count += 1
            if count > max_fields:
                raise ConvError("more than %d fields" % max_fields, i)
            eq = b.find(b"=", i, amp)
            k = _unquote(b, i, amp if eq < 0 else eq)
            v = "" if eq < 0 else _unquote(b, eq + 1, amp)
            if typed:
                v = typed_value(v)
            if lists is not None and k in lists:
                lists[k].append(v)
            elif k in out or k in list_keys:
                v = [out[k], v] if k in out else [v]
                out[k] = v
                if lists is None:
                    lists = {}
                lists[k] = v
            else:
                out[k] = v
        i = amp + 1
    return out

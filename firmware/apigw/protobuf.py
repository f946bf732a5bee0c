"""Protobuf codec of the mediation stage: proto3 wire format <-> the canonical JSON mapping.

Owns: compiling message definitions (the config's JSON form of .proto files) into integer-indexed
tables; encode()/encode_into() of a JSON-shaped object; decode() into the dict that
json_format.MessageToDict(msg, preserving_proto_field_name=True) gives for the same bytes.
Must not: do I/O, parse JSON text, know HTTP, gRPC framing or the mediator's config.

Not minipb 2.0.0: it needs logging, bisect and re, has no JSON mapping (int64 strings, enum names,
base64, NaN strings, omitted defaults), reads a group's body as fields, takes varints of any length,
refuses the other packing of a repeated field, and allocates 3.5 KB per encode and 11 KB per decode
of a 10-field message on the unix port (this module: 32 bytes, and 0.9 KB with the result).

Memory: encode_into() allocates nothing but a 32-byte view per str or bytes value; encode() copies
the result out of a scratch buffer it keeps (not shared across threads). decode() allocates the
result, a view per call and per str/bytes field, and for a float field the few strings of the
shortest-decimal search. Varints of 2**30 and more are big ints on a board (2**62 on the unix
port). A double round-trips exactly on the unix port and CPython, to float precision on a board
with 32-bit floats (ESP32).
"""

from array import array
from binascii import b2a_base64
from math import copysign
from struct import pack_into, unpack_from

from .compat import IS_MICROPYTHON, const, micropython
from .native import mem_move

_INT32 = const(0)
_INT64 = const(1)
_UINT32 = const(2)
_UINT64 = const(3)
_SINT32 = const(4)
_SINT64 = const(5)
_BOOL = const(6)
_ENUM = const(7)
_FIXED32 = const(8)
_SFIXED32 = const(9)
_FLOAT = const(10)
_FIXED64 = const(11)
_SFIXED64 = const(12)
_DOUBLE = const(13)
_STRING = const(14)
_BYTES = const(15)
_MESSAGE = const(16)
_MAX_NUMBER = const(536870911)

TYPES = ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum", "fixed32", "sfixed32", "float")
TYPES += ("fixed64", "sfixed64", "double", "string", "bytes", "message")  # index = type code
_WIRE = b"\x00\x00\x00\x00\x00\x00\x00\x00\x05\x05\x05\x01\x01\x01\x02\x02\x02"
_BITS32 = b"\x01\x00\x01\x00\x01\x00\x00\x01"  # varint types that keep only the low 32 bits
_LO = (-(2**31), -(2**63), 0, 0, -(2**31), -(2**63), 0, -(2**31), 0, -(2**31), 0, 0, -(2**63))
_HI = (2**31 - 1, 2**63 - 1, 2**32 - 1, 2**64 - 1, 2**31 - 1, 2**63 - 1, 1, 2**31 - 1, 2**32 - 1, 2**31 - 1, 0)
_HI += (2**64 - 1, 2**63 - 1)
_PACK = ("<I", "<i", "<f", "<Q", "<q", "<d")  # index = type code - _FIXED32
_KEYS = ("number", "type", "repeated", "packed", "message", "enum")
_INF = float("inf")
_NINF = -_INF  # a constant: negating in a function would allocate a float
_SPECIAL = {"NaN": float("nan"), "Infinity": _INF, "-Infinity": _NINF}
_OVER = 3.4028235677973366e38  # 0x1.ffffffp+127: this and above round to float32 infinity
_UNDER = -_OVER
_G = ("%.6g", "%.7g", "%.8g", "%.9g", "%.10g")
_HALF_EVEN = "%.1g" % 0.25 == "0.2"  # CPython rounds exact ties to even, MicroPython away from 0
_F32 = array("f", [0.0])  # rounds a double to float precision without a tuple
_F64 = array("d", [0.0])
_ABSENT = object()
_END = array("i", [0])  # _var's second result (a tuple would allocate)
_SEQ = (list, tuple)  # built once: a tuple display in native code is built per call
_B64 = bytearray(256)  # base64 digit value + 1 for both alphabets, 0 = not a digit
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"):
    _B64[_c] = (_i if _i < 64 else _i - 2) + 1  # "-" and "_" are "+" and "/"

try:
    memoryview("")  # type: ignore[arg-type]
    _utf8 = memoryview  # MicroPython: a str is its UTF-8 bytes; a view, not a copy
except TypeError:
    _utf8 = str.encode


class ProtoError(ValueError):
    """A bad definition, value or wire input. .path says where ("pkg.Reading.values[3]"), .message what."""

    def __init__(self, message, path=""):
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self):
        return self.path + ": " + self.message if self.path else self.message


class _Full(ProtoError):
    """The output buffer is too small (encode() grows its scratch buffer and tries again)."""


def _room(end, cap):
    if end > cap:
        raise _Full("does not fit")


@micropython.native
def _var(d, pos, end):
    """The varint at d[pos] as a signed 64-bit value, its end in _END[0]; ProtoError if it is cut
    short or longer than 10 bytes. A negative one sums its inverted bits, so small magnitudes of
    either sign stay small ints (no allocation). Bits past 64 are dropped."""
    q = pos
    while q >= end or d[q] >= 0x80:
        if q >= end or q - pos == 9:
            raise ProtoError("varint %s at byte %d" % ("cut short" if q >= end else "over 10 bytes", pos))
        q += 1
    _END[0] = q + 1
    neg = q - pos == 9 and d[q] & 1
    if q - pos < 9:  # else the 10th byte adds only bit 63, the sign
        q += 1
    v = 0
    s = 0
    while pos < q:
        v |= ((d[pos] & 0x7F) ^ 0x7F if neg else d[pos] & 0x7F) << s
        s += 7
        pos += 1
    return -v - 1 if neg else v


@micropython.native
def _wvar(buf, pos, cap, n):
    """Write n (-2**63 <= n < 2**64) as a varint, a negative one as 10 bytes of two's complement
    made by shifting n itself (no 2**64 big int). Returns the end."""
    k = 10 if n < 0 else 1
    x = n >> 7
    while x > 0:
        k += 1
        x >>= 7
    if pos + k > cap:  # not _room(): a call into bytecode costs more than the varint
        raise _Full("does not fit")
    while k > 1:
        buf[pos] = (n & 0x7F) | 0x80
        n >>= 7
        pos += 1
        k -= 1
    buf[pos] = 1 if n < 0 else n
    return pos + 1


@micropython.native
def _patch(buf, at, pos, cap):
    """buf[at] was reserved for the length of buf[at + 1:pos]: write it, moving the body right when
    the length takes more than one byte. Returns the new end."""
    n = pos - at - 1
    if n < 0x80:
        buf[at] = n
        return pos
    k = 2 if n < 0x4000 else (3 if n < 0x200000 else 4)
    _room(pos + k - 1, cap)
    mem_move(buf, at + k, buf, at + 1, n)
    _wvar(buf, at, cap, n)
    return pos + k - 1


# Bytecode on purpose: there a slice takes no slice object (native code allocates one), and no
# try block (a bytecode frame with one is allocated on the heap).
def _text(d, p, q):
    return str(d[p:q], "utf-8")


def _b64(d, p, q):
    return b2a_base64(d[p:q], newline=False).decode()


def _head(mv, n):
    return bytes(mv[:n])


def _short(x):
    """json_format's value of float32 x: the shortest of 6..9 significant digits that reads back
    as x, an exact tie (2357719.25 to 8 digits) rounded to even as CPython's formatting does."""
    for p in range(4):
        r = float(_G[p] % x)
        _F32[0] = r
        if _F32[0] == x:
            if not _HALF_EVEN and r != x:
                t = _G[p + 1] % x
                if float(t) == x:  # p + 1 digits are exact: a tie if the last one is 5
                    d = t.split("e")[0].replace("-", "").replace(".", "").lstrip("0")
                    if len(d) == p + 7 and d[-1] == "5" and d[-2] in "02468":
                        r = float(_G[p] % (2 * x - r))  # the lower neighbour, not the upper
            return r
    return x


@micropython.native
def _isdef(t, w, d, p, q):
    """Whether d[p:q] holds the default of type t (proto3 then leaves the field out)."""
    if w == 2:
        return p == q
    if w == 0:
        v = _var(d, p, q)  # a 32-bit type sees the low 32 bits; 16-bit steps keep small ints
        return v == 0 or (_BITS32[t] and not v & 0xFFFF and not (v >> 16) & 0xFFFF)
    while p < q:
        if d[p]:
            return False
        p += 1
    return True


@micropython.native
def _int(v, t):
    """A JSON integer for type t: a number with an integral value or a decimal string, in range."""
    tv = type(v)
    n = v
    if tv is str:
        if not v or not (v[1:] if v[0] == "-" else v).isdigit():
            raise ProtoError("not an integer: %r" % v)
        n = int(v)
    elif tv is float:
        if v != v or v == _INF or v == _NINF or v != int(v):
            raise ProtoError("not an integer: %r" % v)
        n = int(v)
    elif tv is not int:
        raise ProtoError("expected an integer for %s, got %s" % (TYPES[t], type(v).__name__))
    if n < _LO[t] or n > _HI[t]:
        raise ProtoError("%d is out of range for %s" % (n, TYPES[t]))
    return n


@micropython.native
def _float(v, t):
    """A JSON number for float or double: a number, "NaN", "Infinity" or "-Infinity"."""
    tv = type(v)
    if tv is str:
        x = _SPECIAL.get(v)
        if x is None:
            raise ProtoError("expected a number for %s, got %r" % (TYPES[t], v))
    elif tv is float or tv is int:
        try:
            x = v if tv is float else float(v)  # float(a float) would allocate a copy
        except OverflowError:
            x = _INF
        if tv is int and (x == _INF or x == _NINF):
            raise ProtoError("%d is out of range for %s" % (v, TYPES[t]))
    else:
        raise ProtoError("expected a number for %s, got %s" % (TYPES[t], type(v).__name__))
    if t == _FLOAT and (_OVER <= x < _INF or _NINF < x <= _UNDER):  # comparisons: no float made
        raise ProtoError("%r is out of range for float" % x)
    return x


@micropython.native
def _b64_into(s, buf, pos, cap):
    """Base64 text s (standard or URL-safe alphabet, padded or not) decoded into buf after its
    length. Returns the end."""
    b = _utf8(s)
    n = len(b)
    while n and b[n - 1] == 61 and len(b) - n < 2:  # '='
        n -= 1
    if n % 4 == 1:
        raise ProtoError("bad base64 length")
    pos = _wvar(buf, pos, cap, n * 3 // 4)
    _room(pos + n * 3 // 4, cap)
    acc = 0
    bits = 0
    for i in range(n):
        v = _B64[b[i]] - 1
        if v < 0:
            raise ProtoError("bad base64 character at %d" % i)
        acc = ((acc << 6) | v) & 0xFFFF  # 16 bits: a small int everywhere
        bits += 6
        if bits >= 8:
            bits -= 8
            buf[pos] = (acc >> bits) & 0xFF
            pos += 1
    return pos


class MessageSet:
    """Compiled definitions: encode() and decode() by message name. Limits are plain attributes."""

    max_depth = 32  # nesting of messages, both ways
    max_size = 65536  # the largest message encode() builds

    def __init__(self, defs):
        msgs = defs.get("messages") if isinstance(defs, dict) else None
        enums = defs.get("enums", {}) if isinstance(defs, dict) else None
        if not isinstance(msgs, dict) or not isinstance(enums, dict) or len(defs) > 1 + ("enums" in defs):
            raise ProtoError('definitions must be {"messages": {...}, "enums": {...}}')
        self._enames = sorted(enums)
        self._eid = {n: i for i, n in enumerate(self._enames)}
        self._ebyname, self._ebynum = [], []  # per enum: name -> number, number -> name
        for ename in self._enames:
            vals, bynum = enums[ename], {}
            for vname, num in vals.items() if isinstance(vals, dict) else ():
                if type(num) is not int or not -(2**31) <= num < 2**31 or num in bynum:
                    raise ProtoError("must be an int32 that no other value of the enum has", ename + "." + vname)
                bynum[num] = vname
            if 0 not in bynum:
                raise ProtoError("must be an object of names to numbers, one of them 0 (proto3)", ename)
            self._ebyname.append(dict(vals))
            self._ebynum.append(bynum)
        self._mnames = sorted(msgs)
        self._mid = {n: i for i, n in enumerate(self._mnames)}
        self._mnum = []  # per message: field number -> field index
        first, names, types, reps, refs, tags = [0], [], [], [], [], []
        for mname in self._mnames:
            spec = msgs[mname]
            fields = spec.get("fields", {}) if isinstance(spec, dict) else None
            if not isinstance(fields, dict) or len(spec) > ("fields" in spec):
                raise ProtoError('must be {"fields": {...}}', mname)
            bynum = {}
            for num, fname, t, rep, ref in sorted(self._field(mname + "." + k, k, fields[k]) for k in fields):
                if num in bynum:
                    raise ProtoError("number %d is %s's too" % (num, names[bynum[num]]), mname + "." + fname)
                bynum[num] = len(names)
                names.append(fname)
                types.append(t)
                reps.append(rep)  # 0 singular, 1 repeated, 2 repeated packed
                refs.append(ref)  # message or enum index
                tags.append(num << 3 | (2 if rep == 2 else _WIRE[t]))
            first.append(len(names))
            self._mnum.append(bynum)
        self._mfirst = array("I", first)  # message m has fields first[m] .. first[m + 1] - 1
        self._fname, self._ftag = names, tags
        self._ftype, self._frep, self._fref = bytearray(types), bytearray(reps), array("i", refs)
        self._scratch = bytearray(256)
        self._smv = memoryview(self._scratch)

    def _field(self, path, fname, fs):
        if not isinstance(fs, dict) or [k for k in fs if k not in _KEYS]:
            raise ProtoError("must be an object of " + ", ".join(_KEYS), path)
        num, t, rep, packed = fs.get("number"), fs.get("type"), fs.get("repeated", False), fs.get("packed")
        if type(num) is not int or not 0 < num <= _MAX_NUMBER or 19000 <= num <= 19999:
            raise ProtoError("number must be in 1..536870911 and not in 19000..19999", path)
        if t not in TYPES:
            raise ProtoError("unknown type %r" % (t,), path)
        t = TYPES.index(t)
        if type(rep) is not bool or (packed is not None and (type(packed) is not bool or not rep or t > _DOUBLE)):
            raise ProtoError("repeated is true or false; packed too, for repeated scalar numbers only", path)
        ref = -1
        for key, kind, ids in (("message", _MESSAGE, self._mid), ("enum", _ENUM, self._eid)):
            if (key in fs) != (t == kind):
                raise ProtoError('type %s needs "%s", and only it' % (key, key), path)
            if t == kind:
                ref = ids.get(fs[key], -1) if type(fs[key]) is str else -1
                if ref < 0:
                    raise ProtoError("unknown %s %r" % (key, fs[key]), path)
        return num, fname, t, ((2 if packed is not False and t <= _DOUBLE else 1) if rep else 0), ref

    def has(self, name):
        return name in self._mid

    def names(self):
        return list(self._mnames)

    def _msg(self, name):
        m = self._mid.get(name, -1)
        if m < 0:
            raise ProtoError("unknown message")
        return m

    # -- encode ------------------------------------------------------------------------------------

    @micropython.native
    def encode(self, name, obj, ignore_unknown=False):
        """obj (JSON mapping) -> bytes. Allocates the result and a view; the scratch buffer doubles
        (up to max_size) when a message does not fit in it."""
        while True:
            try:
                return _head(self._smv, self.encode_into(name, obj, self._scratch, 0, ignore_unknown))
            except _Full as e:
                if len(self._scratch) >= self.max_size:
                    e.message = "larger than max_size (%d bytes)" % self.max_size
                    raise e
                self._scratch = bytearray(min(2 * len(self._scratch), self.max_size))
                self._smv = memoryview(self._scratch)

    @micropython.native
    def encode_into(self, name, obj, buf, pos=0, ignore_unknown=False):
        """obj (JSON mapping) -> buf[pos:end]; returns end. ProtoError "... does not fit" when buf is
        too small (the bytes after pos are then undefined). Allocates only per str/bytes value."""
        try:
            return self._enc(self._msg(name), obj, buf, pos, len(buf), 0, ignore_unknown)
        except ProtoError as e:
            if isinstance(e, _Full):
                e.message = "does not fit in %d bytes from byte %d" % (len(buf) - pos, pos)
            e.path = name + e.path
            raise e

    @micropython.native
    def _enc(self, m, obj, buf, pos, cap, depth, ignore):
        if not isinstance(obj, dict):
            raise ProtoError("expected an object, got " + type(obj).__name__)
        if depth >= self.max_depth:
            raise ProtoError("nested deeper than %d" % self.max_depth)
        f0 = self._mfirst[m]
        f1 = self._mfirst[m + 1]
        seen = 0
        for f in range(f0, f1):  # field-number order
            v = obj.get(self._fname[f], _ABSENT)
            if v is not _ABSENT:
                seen += 1
                if v is not None:
                    try:
                        pos = self._enc_field(f, v, buf, pos, cap, depth, ignore)
                    except ProtoError as e:
                        e.path = "." + self._fname[f] + e.path
                        raise e
        if seen != len(obj) and not ignore:
            for k in obj:
                if k not in self._fname[f0:f1]:
                    raise ProtoError("unknown field %r" % (k,))
        return pos

    @micropython.native
    def _enc_field(self, f, v, buf, pos, cap, depth, ignore):
        t = self._ftype[f]
        tag = self._ftag[f]
        if not self._frep[f]:
            if t == _MESSAGE:
                return self._enc_msg(f, v, tag, buf, pos, cap, depth, ignore)
            return self._put(t, f, v, tag, buf, pos, cap, True)
        if not isinstance(v, _SEQ):
            raise ProtoError("expected a list, got " + type(v).__name__)
        at = -1
        if self._frep[f] == 2 and v:  # packed: one tag and length, then the bare values
            pos = _wvar(buf, pos, cap, tag)
            _room(pos + 1, cap)
            at = pos
            pos += 1
            tag = -1
        i = 0
        try:
            while i < len(v):
                if t == _MESSAGE:
                    pos = self._enc_msg(f, v[i], tag, buf, pos, cap, depth, ignore)
                else:
                    pos = self._put(t, f, v[i], tag, buf, pos, cap, False)
                i += 1
        except ProtoError as e:
            e.path = "[%d]" % i + e.path
            raise e
        return pos if at < 0 else _patch(buf, at, pos, cap)

    @micropython.native
    def _enc_msg(self, f, v, tag, buf, pos, cap, depth, ignore):
        pos = _wvar(buf, pos, cap, tag)
        _room(pos + 1, cap)  # one byte reserved for the length; _patch makes more room if needed
        return _patch(buf, pos, self._enc(self._fref[f], v, buf, pos + 1, cap, depth + 1, ignore), cap)

    @micropython.native
    def _put(self, t, f, v, tag, buf, pos, cap, skip0):
        """One scalar: its tag (unless -1) and value; nothing when skip0 and v is the default."""
        if t >= _STRING:
            if type(v) is not str:
                raise ProtoError("expected a string, got " + type(v).__name__)
            if skip0 and not v:
                return pos
            if tag >= 0:
                pos = _wvar(buf, pos, cap, tag)
            if t == _BYTES:
                return _b64_into(v, buf, pos, cap)
            try:
                b = _utf8(v)  # type: ignore[arg-type]
            except UnicodeError:
                raise ProtoError("not valid Unicode")
            pos = _wvar(buf, pos, cap, len(b))
            _room(pos + len(b), cap)
            mem_move(buf, pos, b, 0, len(b))
            return pos + len(b)
        if v is None:
            raise ProtoError("null in a list")
        if t == _BOOL:
            if type(v) is not bool:
                raise ProtoError("expected true or false, got " + type(v).__name__)
            n = 1 if v else 0
        elif t == _FLOAT or t == _DOUBLE:
            n = _float(v, t)
        elif t == _ENUM and type(v) is str:
            n = self._ebyname[self._fref[f]].get(v)
            if n is None:
                raise ProtoError("%r is not a value of %s" % (v, self._enames[self._fref[f]]))
        else:
            n = _int(v, t)
            if t == _SINT32 or t == _SINT64:
                n = n << 1 if n >= 0 else ((-n) << 1) - 1  # zigzag: 0 stays 0
        if skip0 and n == 0 and (type(n) is int or copysign(1.0, n) > 0):  # -0.0 is written
            return pos
        if tag >= 0:
            pos = _wvar(buf, pos, cap, tag)
        if t >= _FIXED32:
            k = 8 if t >= _FIXED64 else 4
            _room(pos + k, cap)
            pack_into(_PACK[t - _FIXED32], buf, pos, n)
            return pos + k
        return _wvar(buf, pos, cap, n)

    # -- decode ------------------------------------------------------------------------------------

    @micropython.native
    def decode(self, name, data, start=0, end=None):
        """data[start:end] (bytes, bytearray, memoryview) -> dict as MessageToDict gives it."""
        try:
            if isinstance(data, str):
                raise ProtoError("data must be bytes, not str")
            if end is None:
                end = len(data)
            if not 0 <= start <= end <= len(data):
                raise ProtoError("bad span %d..%d of %d bytes" % (start, end, len(data)))
            return self._dec(self._msg(name), memoryview(data), start, end, 0, {})
        except ProtoError as e:
            e.path = name + e.path
            raise e

    @micropython.native
    def _dec(self, m, d, pos, end, depth, out):
        if depth >= self.max_depth:
            raise ProtoError("nested deeper than %d" % self.max_depth)
        bynum = self._mnum[m]
        while pos < end:
            at = pos
            key = d[pos]
            pos += 1
            if key >= 0x80:
                key = _var(d, at, end)
                pos = _END[0]
            wt = key & 7
            num = key >> 3
            if num < 1 or num > _MAX_NUMBER or wt == 3 or wt == 4 or wt > 5:
                raise ProtoError("field %d, wire type %d at byte %d: refused (groups too)" % (num, wt, at))
            if wt == 2:
                n = _var(d, pos, end)
                pos = _END[0]
                q = pos + n if n >= 0 else end + 1
            elif wt == 0:
                _var(d, pos, end)
                q = _END[0]
            else:
                q = pos + (8 if wt == 1 else 4)
            if q > end:
                raise ProtoError("field %d at byte %d runs past the end" % (num, at))
            f = bynum.get(num, -1)  # unknown fields are skipped
            if f >= 0:
                try:
                    self._dec_field(f, wt, d, pos, q, depth, out)
                except ProtoError as e:
                    i = len(out.get(self._fname[f]) or ()) if self._frep[f] else -1
                    e.path = "." + self._fname[f] + ("[%d]" % i if i >= 0 else "") + e.path
                    raise e
            pos = q
        return out

    @micropython.native
    def _dec_field(self, f, wt, d, p, q, depth, out):
        """One occurrence of field f; a wire type that does not match is skipped as protobuf does."""
        t = self._ftype[f]
        name = self._fname[f]
        w = _WIRE[t]
        packed = wt == 2 and w != 2 and self._frep[f]
        if wt != w and not packed:
            return
        if not self._frep[f]:
            if t == _MESSAGE:  # another occurrence merges into the first
                out[name] = self._dec(self._fref[f], d, p, q, depth + 1, out.get(name) or {})
            elif _isdef(t, w, d, p, q):
                if name in out:
                    del out[name]
            else:
                out[name] = self._val(t, f, d, p, q)
            return
        if packed and p == q:
            return
        lst = out.get(name)
        if lst is None:
            lst = out[name] = []
        if t == _MESSAGE:
            lst.append(self._dec(self._fref[f], d, p, q, depth + 1, {}))
        elif not packed:
            lst.append(self._val(t, f, d, p, q))
        else:
            k = 0 if w == 0 else (4 if w == 5 else 8)
            if k and (q - p) % k:
                raise ProtoError("packed length %d is not a multiple of %d" % (q - p, k))
            while p < q:
                if k == 0:
                    _var(d, p, q)
                e = _END[0] if k == 0 else p + k
                lst.append(self._val(t, f, d, p, e))
                p = e

    @micropython.native
    def _val(self, t, f, d, p, q):
        """The JSON value of one scalar in d[p:q]."""
        if t <= _ENUM:
            v = _var(d, p, q)
            if t == _BOOL:
                return v != 0
            if t == _INT64:
                return str(v)
            if t == _UINT32 or t == _SINT32:
                v &= 0xFFFFFFFF
            elif _BITS32[t] and (v < -(2**31) or v >= 2**31):
                v = ((v + 2**31) & 0xFFFFFFFF) - 2**31
            elif v < 0 and not _BITS32[t]:
                v += 2**64
            if t == _SINT32 or t == _SINT64:
                v = (v >> 1) ^ -(v & 1)
            if t == _ENUM:
                s = self._ebynum[self._fref[f]].get(v)
                return v if s is None else s
            return str(v) if t == _UINT64 or t == _SINT64 else v
        if t >= _STRING:
            try:
                return _text(d, p, q) if t == _STRING else _b64(d, p, q)
            except UnicodeError:
                raise ProtoError("invalid UTF-8")
        if t == _FLOAT or t == _DOUBLE:
            if IS_MICROPYTHON:  # the raw bytes into an array: no tuple (all targets are little-endian)
                a = _F32 if t == _FLOAT else _F64
                mem_move(a, 0, d, p, q - p)
                x = a[0]
            else:
                x = unpack_from(_PACK[t - _FIXED32], d, p)[0]
            if x != x:
                return "NaN"
            if x == _INF or x == _NINF:
                return "Infinity" if x > 0 else "-Infinity"
            return _short(x) if t == _FLOAT else x
        v = 0  # fixed32/64, little-endian
        i = q - 1
        while i >= p:
            v = (v << 8) | d[i]
            i -= 1
        if t == _SFIXED32 and v >= 2**31:
            v -= 2**32
        elif t == _SFIXED64 and v >= 2**63:
            v -= 2**64
        return v if t <= _SFIXED32 else str(v)

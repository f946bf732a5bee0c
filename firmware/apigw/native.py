"""Byte loops that run on every request, as native code.

Each kernel has a pure-Python twin (`*_py`). On MicroPython the name without suffix is the
`@micropython.viper` version, compiled to machine code (on a board too, when the .mpy is built
with mpy-cross -march); under CPython it is the twin. Tests check that both agree.

All kernels take a buffer plus start/end offsets and return small ints: none allocates.
Hashes stay below 2**24 so that every intermediate (h * 33 < 2**30) is a small int on a
32-bit board, where anything at or above 2**30 would be a heap-allocated big int.

This module must not import anything but compat: no sockets, no asyncio.
"""

from .compat import IS_MICROPYTHON

HASH_SEED = 5381
HASH_MASK = 0xFFFFFF  # 24 bits: h * 33 stays below 2**30 (small int on a board)

_SLASH = 47  # '/'
_DOT = 46  # '.'
_PCT = 37  # '%'


# ---------------------------------------------------------------------------------------------
# Pure-Python twins (CPython, and the reference the viper versions are tested against).


def hash_span_py(buf, start, end):
    """24-bit djb2-xor hash of buf[start:end]."""
    h = HASH_SEED
    for i in range(start, end):
        h = ((h * 33) ^ buf[i]) & HASH_MASK
    return h


def hash_boundaries_py(buf, start, end, hashes, ends):
    """Hash every segment-boundary prefix of the path buf[start:end] (which starts with '/').

    Writes shortest first: hashes[0] is the empty prefix (the root), then the prefix before each
    later '/', then the whole path. ends[k] is where prefix k ends. Past len(ends) - 1 entries the
    deeper boundaries are dropped but the whole path is always the last entry. Returns the count.
    """
    cap = len(ends) - 1
    h = HASH_SEED
    hashes[0] = h
    ends[0] = start
    k = 1
    i = start
    while i < end:
        c = buf[i]
        if c == _SLASH and i > start and k < cap:
            hashes[k] = h
            ends[k] = i
            k += 1
        h = ((h * 33) ^ c) & HASH_MASK
        i += 1
    if end > start:
        hashes[k] = h
        ends[k] = end
        k += 1
    return k


def mem_eq_py(a, ao, b, bo, n):
    """True if a[ao:ao+n] == b[bo:bo+n]."""
    for i in range(n):
        if a[ao + i] != b[bo + i]:
            return False
    return True


def mem_eq_lower_py(a, ao, b, bo, n):
    """True if a[ao:ao+n], ASCII-lowercased, equals b[bo:bo+n] (b is already lowercase)."""
    for i in range(n):
        c = a[ao + i]
        if 65 <= c <= 90:
            c += 32
        if c != b[bo + i]:
            return False
    return True


def mem_move_py(dst, do, src, so, n):
    """Copy src[so:so+n] to dst[do:do+n]; overlapping ranges in one buffer are safe."""
    if do > so:
        i = n - 1
        while i >= 0:
            dst[do + i] = src[so + i]
            i -= 1
    else:
        for i in range(n):
            dst[do + i] = src[so + i]


def xor_into_py(dst, src, n):
    """dst[i] ^= src[i] for i < n (PBKDF2's running XOR)."""
    for i in range(n):
        dst[i] ^= src[i]


def parse_uint_py(buf, start, end):
    """Decimal digits in buf[start:end] as an int; -1 if empty, not all digits, or >= 2**30."""
    if end <= start:
        return -1
    v = 0
    for i in range(start, end):
        c = buf[i] - 48
        if c < 0 or c > 9 or v > 107374181:  # 107374181 * 10 + 9 < 2**30
            return -1
        v = v * 10 + c
    return v


def parse_hex_py(buf, start, end):
    """Hex digits in buf[start:end] as an int; -1 if empty, not hex, or >= 2**28."""
    if end <= start or end - start > 7:
        return -1
    v = 0
    for i in range(start, end):
        c = buf[i]
        if 48 <= c <= 57:
            c -= 48
        elif 97 <= c <= 102:
            c -= 87
        elif 65 <= c <= 70:
            c -= 55
        else:
            return -1
        v = v * 16 + c
    return v


def bad_head_byte_py(buf, start, end):
    """Index of the first byte in a request head that is not allowed there, else -1.

    Allowed: visible ASCII, SP, HTAB, obs-text (0x80-0xFF in header values), and CR only as
    part of CRLF. A bare LF, a bare CR, NUL, other controls and DEL are refused.
    """
    i = start
    while i < end:
        c = buf[i]
        if c < 32 or c == 127:
            if c == 13:
                if i + 1 >= end or buf[i + 1] != 10:
                    return i
                i += 2
                continue
            if c != 9:
                return i
        i += 1
    return -1


def span_in_py(buf, start, end, table):
    """Index of the first byte in buf[start:end] whose entry in table (256 bytes) is 0, else end."""
    i = start
    while i < end:
        if table[buf[i]] == 0:
            return i
        i += 1
    return end


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


def _unreserved(c):
    # ALPHA / DIGIT / "-" / "." / "_" / "~"  (RFC 3986 section 2.3)
    return (97 <= c <= 122) or (65 <= c <= 90) or (48 <= c <= 57) or c == 45 or c == 46 or c == 95 or c == 126


def normalize_path_py(buf, start, end):
    """Normalize the path buf[start:end] in place; return its new end, or -1 if it is invalid.

    RFC 3986: percent-encoded unreserved characters are decoded (6.2.2.2), other escapes get
    upper-case hex (6.2.2.1), dot segments are removed (5.2.4), repeated slashes collapse.
    '..' above the root stays at the root. Controls, space, DEL, '#', bytes >= 0x80 and broken
    escapes are invalid. Writes never overtake reads, so working in place is safe.
    """
    if end <= start or buf[start] != _SLASH:
        return -1
    w = start + 1  # output cursor; buf[start] is the leading '/'
    seg = w  # where the segment being written starts
    r = start + 1
    while r <= end:
        slash = 0
        if r < end:
            c = buf[r]
            r += 1
            if c == _PCT:
                if r + 2 > end:
                    return -1
                x1 = buf[r]
                x2 = buf[r + 1]
                h1 = _hexval(x1)
                h2 = _hexval(x2)
                if h1 < 0 or h2 < 0:
                    return -1
                r += 2
                c = h1 * 16 + h2
                if not _unreserved(c):
                    buf[w] = _PCT
                    buf[w + 1] = x1 - 32 if x1 >= 97 else x1  # upper-case hex digit
                    buf[w + 2] = x2 - 32 if x2 >= 97 else x2
                    w += 3
                    continue
            elif c <= 32 or c >= 127 or c == 35:
                return -1
            if c != _SLASH:
                buf[w] = c
                w += 1
                continue
            slash = 1
        else:
            r += 1  # past the end: close the last segment, then leave the loop
        n = w - seg  # close the segment buf[seg:w]
        if n == 1 and buf[seg] == _DOT:
            w = seg
        elif n == 2 and buf[seg] == _DOT and buf[seg + 1] == _DOT:
            w = seg
            if w > start + 1:
                w -= 1  # step back over the '/' before the dropped segment
                while buf[w - 1] != _SLASH:
                    w -= 1
        if slash and buf[w - 1] != _SLASH:
            buf[w] = _SLASH
            w += 1
        seg = w
    return w


# ---------------------------------------------------------------------------------------------
# Native versions: the same algorithms as machine code. Viper ints are machine words, so the
# hash masks to 24 bits exactly as the twin does and the results agree on every platform.

if IS_MICROPYTHON:
    import micropython  # type: ignore

    @micropython.viper
    def hash_span(buf: ptr8, start: int, end: int) -> int:
        h = 5381
        i = start
        while i < end:
            h = ((h * 33) ^ buf[i]) & 0xFFFFFF
            i += 1
        return h

    @micropython.viper
    def _hash_boundaries(buf: ptr8, start: int, end: int, hashes: ptr32, ends: ptr16, cap: int) -> int:
        h = 5381
        hashes[0] = h
        ends[0] = start
        k = 1
        i = start
        while i < end:
            c = buf[i]
            if c == 47 and i > start and k < cap:
                hashes[k] = h
                ends[k] = i
                k += 1
            h = ((h * 33) ^ c) & 0xFFFFFF
            i += 1
        if end > start:
            hashes[k] = h
            ends[k] = end
            k += 1
        return k

    @micropython.native  # a bytecode frame this size would come from the heap on every call
    def hash_boundaries(buf, start, end, hashes, ends):
        return _hash_boundaries(buf, start, end, hashes, ends, len(ends) - 1)

    @micropython.viper
    def mem_eq(a: ptr8, ao: int, b: ptr8, bo: int, n: int) -> bool:
        i = 0
        while i < n:
            if a[ao + i] != b[bo + i]:
                return False
            i += 1
        return True

    @micropython.viper
    def mem_eq_lower(a: ptr8, ao: int, b: ptr8, bo: int, n: int) -> bool:
        i = 0
        while i < n:
            c = a[ao + i]
            if c >= 65 and c <= 90:
                c += 32
            if c != b[bo + i]:
                return False
            i += 1
        return True

    @micropython.viper
    def mem_move(dst: ptr8, do: int, src: ptr8, so: int, n: int):
        if do > so:
            i = n - 1
            while i >= 0:
                dst[do + i] = src[so + i]
                i -= 1
        else:
            i = 0
            while i < n:
                dst[do + i] = src[so + i]
                i += 1

    @micropython.viper
    def xor_into(dst: ptr8, src: ptr8, n: int):
        i = 0
        while i < n:
            dst[i] = dst[i] ^ src[i]
            i += 1

    @micropython.viper
    def parse_uint(buf: ptr8, start: int, end: int) -> int:
        if end <= start:
            return -1
        v = 0
        i = start
        while i < end:
            c = buf[i] - 48
            if c < 0 or c > 9 or v > 107374181:
                return -1
            v = v * 10 + c
            i += 1
        return v

    @micropython.viper
    def parse_hex(buf: ptr8, start: int, end: int) -> int:
        if end <= start or end - start > 7:
            return -1
        v = 0
        i = start
        while i < end:
            c = buf[i]
            if c >= 48 and c <= 57:
                c -= 48
            elif c >= 97 and c <= 102:
                c -= 87
            elif c >= 65 and c <= 70:
                c -= 55
            else:
                return -1
            v = v * 16 + c
            i += 1
        return v

    @micropython.viper
    def bad_head_byte(buf: ptr8, start: int, end: int) -> int:
        i = start
        while i < end:
            c = buf[i]
            if c < 32 or c == 127:
                if c == 13:
                    if i + 1 >= end or buf[i + 1] != 10:
                        return i
                    i += 2
                    continue
                if c != 9:
                    return i
            i += 1
        return -1

    @micropython.viper
    def span_in(buf: ptr8, start: int, end: int, table: ptr8) -> int:
        i = start
        while i < end:
            if table[buf[i]] == 0:
                return i
            i += 1
        return end

    @micropython.viper
    def normalize_path(buf: ptr8, start: int, end: int) -> int:
        if end <= start or buf[start] != 47:
            return -1
        w = start + 1
        seg = w
        r = start + 1
        c = 0
        while r <= end:
            slash = 0
            if r < end:
                c = buf[r]
                r += 1
                if c == 37:
                    if r + 2 > end:
                        return -1
                    x1 = buf[r]
                    x2 = buf[r + 1]
                    h1 = -1
                    if x1 >= 48 and x1 <= 57:
                        h1 = x1 - 48
                    elif x1 >= 97 and x1 <= 102:
                        h1 = x1 - 87
                    elif x1 >= 65 and x1 <= 70:
                        h1 = x1 - 55
                    h2 = -1
                    if x2 >= 48 and x2 <= 57:
                        h2 = x2 - 48
                    elif x2 >= 97 and x2 <= 102:
                        h2 = x2 - 87
                    elif x2 >= 65 and x2 <= 70:
                        h2 = x2 - 55
                    if h1 < 0 or h2 < 0:
                        return -1
                    r += 2
                    c = h1 * 16 + h2
                    if not (
                        (c >= 97 and c <= 122)
                        or (c >= 65 and c <= 90)
                        or (c >= 48 and c <= 57)
                        or c == 45
                        or c == 46
                        or c == 95
                        or c == 126
                    ):
                        buf[w] = 37
                        if x1 >= 97:
                            x1 -= 32
                        if x2 >= 97:
                            x2 -= 32
                        buf[w + 1] = x1
                        buf[w + 2] = x2
                        w += 3
                        continue
                elif c <= 32 or c >= 127 or c == 35:
                    return -1
                if c != 47:
                    buf[w] = c
                    w += 1
                    continue
                slash = 1
            else:
                r += 1
            n = w - seg
            if n == 1 and buf[seg] == 46:
                w = seg
            elif n == 2 and buf[seg] == 46 and buf[seg + 1] == 46:
                w = seg
                if w > start + 1:
                    w -= 1
                    while buf[w - 1] != 47:
                        w -= 1
            if slash and buf[w - 1] != 47:
                buf[w] = 47
                w += 1
            seg = w
        return w

else:
    hash_span = hash_span_py
    hash_boundaries = hash_boundaries_py
    mem_eq = mem_eq_py
    mem_eq_lower = mem_eq_lower_py
    mem_move = mem_move_py
    xor_into = xor_into_py
    parse_uint = parse_uint_py
    parse_hex = parse_hex_py
    bad_head_byte = bad_head_byte_py
    span_in = span_in_py
    normalize_path = normalize_path_py

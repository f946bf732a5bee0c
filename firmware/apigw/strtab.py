"""StrTable: many short byte strings in one bytearray, found by content without allocating.

Route literals, rewrite strings, header names and values, service names and hosts live here.
Each string gets a small integer id; its bytes are `buf[off[id]:off[id] + size[id]]`. Identical
content is stored once (add() returns the existing id and counts a reference); remove() drops a
reference and, at zero, frees the id and compacts the bytes, so a table that sees routes come and
go does not fill up. Ids of live strings never change (compaction only moves offsets).

Lookup by content goes through an open-addressing index of ids keyed by `native.hash_span`
(linear probing, -1 = empty, -2 = deleted). find(), find_hash(), eq() allocate nothing; add(),
get(), get_str() and remove() allocate and belong off the hot path.

This module owns the table only: it knows nothing about routes or services and does no I/O.
"""

from array import array

from .native import hash_span, mem_eq, mem_move

_EMPTY = -1
_DELETED = -2
_END = 0xFFFF  # end of the free-id list (max_entries stays below it)


def spread(h):
    """Mix a 24-bit hash before masking it to a table size.

    djb2 puts a path's last bytes in the low bits, so "/api/svc1", "/api/svc2"... would sit in
    neighbouring slots and form long probe runs. Every intermediate stays below 2**26 (small int
    on a board). No allocation.
    """
    return ((((h ^ (h >> 14)) & 0x3FFF) * 0x9E5) >> 3) ^ h


class StrTableError(ValueError):
    """The table is full (bytes or entries), or an id is not in use."""


def table(code, n, value=0):
    """array(code) of n items equal to value, built without a temporary of the same size
    (array(code, range(n)) is sized from len(); a bytes(n) initializer would be copied)."""
    a = array(code, range(n))
    for i in range(n):
        a[i] = value
    return a


def _as_bytes(data):
    if isinstance(data, str):
        return data.encode()
    return bytes(data)


class StrTable:
    """Fixed-capacity string table. All memory is allocated in __init__."""

    def __init__(self, max_bytes=16384, max_entries=1024):
        if max_entries >= _END:
            raise StrTableError("string table: at most %d strings" % (_END - 1))
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.buf = bytearray(max_bytes)
        self.used = 0  # bytes of buf in use (strings are packed, no holes)
        self.count = 0  # live strings
        code = "H" if max_bytes <= 0xFFFF else "I"
        self.off = table(code, max_entries)
        self.size = table(code, max_entries)
        self.refs = table("H", max_entries)  # 0 = id is free
        # Free ids form a list linked through off[] (unused while an id is free), lowest first.
        for i in range(max_entries):
            self.off[i] = i + 1
        self._free = 0 if max_entries else _END
        if max_entries:
            self.off[max_entries - 1] = _END
        n = 8
        while n < max_entries + max_entries // 3:  # load factor stays at or below 3/4
            n <<= 1
        self._mask = n - 1
        self._index = table("i" if n > 0x7FFF else "h", n, _EMPTY)
        self._deleted = 0

    # -- lookups (no allocation) ------------------------------------------------------------

    def find_hash(self, h, buf, start, end):
        """Id of the string equal to buf[start:end] whose hash_span is h, or -1. No allocation."""
        n = end - start
        index = self._index
        mask = self._mask
        size = self.size
        i = spread(h) & mask
        while True:
            v = index[i]
            if v == _EMPTY:
                return -1
            if v >= 0 and size[v] == n and mem_eq(self.buf, self.off[v], buf, start, n):
                return v
            i = (i + 1) & mask

    def find(self, buf, start, end):
        """Id of the string equal to buf[start:end], or -1. No allocation."""
        return self.find_hash(hash_span(buf, start, end), buf, start, end)

    def eq(self, sid, buf, start, end):
        """True if string sid equals buf[start:end]. No allocation."""
        n = end - start
        return self.size[sid] == n and mem_eq(self.buf, self.off[sid], buf, start, n)

    def length(self, sid):
        return self.size[sid]

    def offset(self, sid):
        return self.off[sid]

    # -- changes and copies (allocate: off the hot path) --------------------------------------

    def get(self, sid):
        """The bytes of string sid (allocates)."""
        o = self.off[sid]
        return bytes(self.buf[o : o + self.size[sid]])

    def get_str(self, sid):
        """String sid decoded as UTF-8 (allocates)."""
        return self.get(sid).decode()

    def add(self, data):
        """Store data (bytes or str) and return its id; identical content returns the same id.

        Every add() counts one reference that a remove() gives back. Raises StrTableError when
        the bytes or the entries run out (the table is left unchanged).
        """
        b = _as_bytes(data)
        n = len(b)
        h = hash_span(b, 0, n)
        sid = self.find_hash(h, b, 0, n)
        if sid >= 0:
            if self.refs[sid] == 0xFFFF:
                raise StrTableError("string table: too many references to one string")
            self.refs[sid] += 1
            return sid
        if self.used + n > self.max_bytes:
            raise StrTableError("string table full (%d bytes)" % self.max_bytes)
        if self._free == _END:
            raise StrTableError("string table full (%d strings)" % self.max_entries)
        if self.count + self._deleted + 1 > self._mask - self._mask // 4:
            self._rebuild()
        sid = self._free
        self._free = self.off[sid]
        o = self.used
        self.buf[o : o + n] = b
        self.used = o + n
        self.off[sid] = o
        self.size[sid] = n
        self.refs[sid] = 1
        self.count += 1
        index = self._index
        i = spread(h) & self._mask
        while index[i] >= 0:
            i = (i + 1) & self._mask
        if index[i] == _DELETED:
            self._deleted -= 1
        index[i] = sid
        return sid

    def remove(self, sid):
        """Drop one reference to sid; at zero the id is freed and its bytes reclaimed."""
        if sid < 0 or sid >= self.max_entries or self.refs[sid] == 0:
            raise StrTableError("string table: no string %d" % sid)
        self.refs[sid] -= 1
        if self.refs[sid]:
            return
        o = self.off[sid]
        n = self.size[sid]
        # Unhook from the index first: it compares bytes that are about to move.
        index = self._index
        i = spread(hash_span(self.buf, o, o + n)) & self._mask
        while index[i] != sid:
            i = (i + 1) & self._mask
        index[i] = _DELETED
        self._deleted += 1
        # Compact: strings after this one move down by n; only their offsets change.
        tail = self.used - (o + n)
        if tail > 0 and n > 0:
            mem_move(self.buf, o, self.buf, o + n, tail)
            off = self.off
            refs = self.refs
            for k in range(self.max_entries):
                if refs[k] and off[k] > o:
                    off[k] -= n
        self.used -= n
        self.size[sid] = 0
        self.count -= 1
        # Back on the free list: in id order, so the lowest free id is reused first.
        prev = -1
        nxt = self._free
        while nxt != _END and nxt < sid:
            prev = nxt
            nxt = self.off[nxt]
        self.off[sid] = nxt
        if prev < 0:
            self._free = sid
        else:
            self.off[prev] = sid

    def _rebuild(self):
        """Re-insert every live id into a clean index (drops deleted markers)."""
        index = self._index
        mask = self._mask
        for i in range(mask + 1):
            index[i] = _EMPTY
        for sid in range(self.max_entries):
            if self.refs[sid]:
                o = self.off[sid]
                i = spread(hash_span(self.buf, o, o + self.size[sid])) & mask
                while index[i] != _EMPTY:
                    i = (i + 1) & mask
                index[i] = sid
        self._deleted = 0

    def __len__(self):
        return self.count

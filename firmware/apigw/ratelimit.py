"""Token-bucket rate limiting: one bucket per key, in fixed tables made at start-up.

A bucket holds integer milli-tokens (a refill of elapsed_ms * rate_per_s milli-tokens is exact
without floats) and the 30-bit tick of its last refill. Buckets are found by key through an
open-addressing index (linear probing, -1 = empty, backward-shift deletion: no tombstones) and kept
on a doubly linked LRU list threaded through two arrays, most recent at the head; a full table
evicts the tail in O(1). A bucket idle for _FULL_MS is full whatever its rate and burst, the same
as a new one, so check() drops such buckets from the tail (each at most once: amortized O(1)).
Only a limiter that saw no check() at all for 2**30 - 2 * _FULL_MS ms (10.9 days) can miss one:
its stamp then looks recent again and it refills from where it was instead of starting full.
__init__ allocates every table; check(), write_headers() and forget() allocate nothing.

This module owns the buckets only: it does not parse requests, build keys or choose policies (the
caller passes rate and burst per call), and it does no I/O and reads no clock (now_ms is passed in).
"""

from .compat import const, micropython
from .response import put_uint
from .strtab import table

_NONE = const(-1)  # empty index slot; no bucket in a link
# Stamps are stored modulo 2**30 (array("i") and a board's small ints hold that). The period of
# ticks_ms() is 2**30 on a board and in compat under CPython but 2**62 on the 64-bit unix port, so
# compat.ticks_diff() cannot compare a masked stamp with a raw tick there. Every period is a
# multiple of 2**30, so ((now - stamp) & _MASK), taken as signed, is ticks_diff() on all of them
# (on a board now and stamp are below 2**30, so now - stamp is a small int too).
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_PERIOD = const(0x40000000)
_MAX_RATE = const(100000)
_MAX_BURST = const(65535)
_FULL_MS = const(65535000)  # the longest refill: 65535 tokens at 1/s

H_LIMIT = b"RateLimit-Limit: "
H_REMAINING = b"RateLimit-Remaining: "
H_RESET = b"RateLimit-Reset: "
H_RETRY_AFTER = b"Retry-After: "

# Longest write_headers() output, 96 bytes: four lines, each number at most 5 digits (limit and
# remaining <= 65535, reset <= 65535 s at 65535 tokens and 1/s, retry-after is 1 s at rates >= 1/s).
MAX_HEADER_BYTES = len(H_LIMIT) + len(H_REMAINING) + len(H_RESET) + len(H_RETRY_AFTER) + 4 * (5 + 2)


@micropython.native
def _home(key, mask):
    """Index slot a key starts probing at. Keys below 2**30 keep every intermediate below 2**30
    ((h & 0x7FFF) * 0x5BD1 < 2**30): small ints on a board. No allocation."""
    h = key ^ (key >> 15)
    p = (h & 0x7FFF) * 0x5BD1
    return (p ^ (p >> 13) ^ (h >> 15)) & mask


def _line(dst, pos, name, value):
    """Write b"<name><value>\\r\\n" at dst[pos:]; return the new position. No allocation.

    Bytecode on purpose: native code puts the slice object of a slice assignment on the heap, the
    VM keeps it on its stack, and this frame stays off the heap (one more local and it would not)."""
    n = len(name)
    dst[pos : pos + n] = name
    pos = put_uint(dst, pos + n, value)
    dst[pos] = 13
    dst[pos + 1] = 10
    return pos + 2


class RateLimiter:
    """Token buckets for up to max_buckets keys. All memory is allocated in __init__."""

    def __init__(self, max_buckets=256):
        if max_buckets < 1 or max_buckets > 0x3FFF:
            raise ValueError("rate limiter: 1..16383 buckets")
        self.max_buckets = max_buckets
        self._keys = table("i", max_buckets)
        self._tokens = table("i", max_buckets)  # milli-tokens, <= 65,535,000
        self._stamp = table("i", max_buckets)  # tick of the last refill, modulo 2**30
        self._prev = table("h", max_buckets, _NONE)  # LRU links (the free list uses _next)
        self._next = table("h", max_buckets, _NONE)
        n = 8
        while n < 2 * max_buckets:  # load factor stays at or below 1/2: short probe runs
            n <<= 1
        self._mask = n - 1
        self._index = table("h", n, _NONE)
        # The last check()'s result, for the headers (made here: check() only rebinds them).
        self.limit = 0
        self.remaining = 0
        self.reset_s = 0
        self.retry_after_s = 0
        self.clear()

    def clear(self):
        """Forget every bucket."""
        index = self._index
        for i in range(len(index)):
            index[i] = _NONE
        nxt = self._next
        for b in range(self.max_buckets):
            nxt[b] = b + 1
        nxt[self.max_buckets - 1] = _NONE
        self._free = 0
        self._head = _NONE
        self._tail = _NONE
        self._count = 0

    def bucket_count(self):
        return self._count

    def forget(self, key):
        """Drop key's bucket (its next check starts full); False if it had none. No allocation."""
        b = self._find(key)
        if b < 0:
            return False
        self._drop(b)
        return True

    @micropython.native
    def check(self, key, rate_per_s, burst, now_ms):
        """Take one token from key's bucket: >= 0 tokens left (allowed), or -(ms until a token is
        available) <= -1 (refused, nothing taken). Sets limit, remaining, reset_s, retry_after_s.
        key: an int in 0..2**30-1, stored and compared (distinct keys never share a bucket).
        rate_per_s and burst are clamped to 1..100000 and 1..65535. No allocation."""
        rate_per_s = 1 if rate_per_s < 1 else (_MAX_RATE if rate_per_s > _MAX_RATE else rate_per_s)
        burst = 1 if burst < 1 else (_MAX_BURST if burst > _MAX_BURST else burst)
        now = now_ms & _MASK
        stamp = self._stamp
        t = self._tail
        if t >= 0 and _FULL_MS <= ((now - stamp[t]) & _MASK) <= _PERIOD - _FULL_MS:
            self._expire(now)
        cap = burst * 1000  # <= 65,535,000 < 2**26
        b = self._find(key)
        if b < 0:
            b = self._new(key)
            tokens = cap
            stamp[b] = now
        else:
            if b != self._head:
                self._unlink(b)
                self._push(b)
            tokens = self._tokens[b]
            if tokens > cap:  # burst lowered since the last call
                tokens = cap
            age = (now - stamp[b]) & _MASK
            if age < _HALF:  # else now_ms is older than the stamp: no refill, keep the stamp
                stamp[b] = now
                room = cap - tokens
                # age * rate_per_s can pass 2**30 after a long idle (a big int on a board): compare
                # age with room // rate_per_s first; past it the bucket is simply full.
                if age > room // rate_per_s:
                    tokens = cap
                else:
                    tokens += age * rate_per_s  # <= room < 2**26
        rate_ms = rate_per_s * 1000  # <= 10**8 < 2**27
        if tokens >= 1000:
            tokens -= 1000
            result = tokens // 1000
            self.retry_after_s = 0
        else:
            result = -((1000 - tokens + rate_per_s - 1) // rate_per_s)  # ms until 1000 milli-tokens
            self.retry_after_s = (999 - result) // 1000
        self._tokens[b] = tokens
        self.limit = burst
        self.remaining = tokens // 1000
        self.reset_s = (cap - tokens + rate_ms - 1) // rate_ms  # < 2**28
        return result

    @micropython.native
    def write_headers(self, dst, pos):
        """Write the RateLimit-* lines (and Retry-After after a refusal) for the last check() into
        dst at pos; return the new position. dst needs MAX_HEADER_BYTES from pos. No allocation."""
        pos = _line(dst, pos, H_LIMIT, self.limit)
        pos = _line(dst, pos, H_REMAINING, self.remaining)
        pos = _line(dst, pos, H_RESET, self.reset_s)
        if self.retry_after_s > 0:
            pos = _line(dst, pos, H_RETRY_AFTER, self.retry_after_s)
        return pos

    # -- tables (no allocation) -----------------------------------------------------------------

    @micropython.native
    def _find(self, key):
        """key's bucket, or -1."""
        index = self._index
        keys = self._keys
        mask = self._mask
        i = _home(key, mask)
        while True:
            b = index[i]
            if b < 0 or keys[b] == key:  # the key is compared: equal hashes never share a bucket
                return b
            i = (i + 1) & mask

    @micropython.native
    def _new(self, key):
        """A bucket for key (not present) at the head of the LRU list, evicting the tail if full."""
        b = self._free
        if b >= 0:
            self._free = self._next[b]
            self._count += 1
        else:
            b = self._tail
            self._unindex(b)
            self._unlink(b)
        self._keys[b] = key
        self._push(b)
        index = self._index
        mask = self._mask
        i = _home(key, mask)
        while index[i] >= 0:
            i = (i + 1) & mask
        index[i] = b
        return b

    @micropython.native
    def _drop(self, b):
        """Remove bucket b and put it on the free list."""
        self._unindex(b)
        self._unlink(b)
        self._next[b] = self._free
        self._free = b
        self._count -= 1

    @micropython.native
    def _expire(self, now):
        """Drop buckets from the tail while they have been idle long enough to be full."""
        stamp = self._stamp
        b = self._tail
        while b >= 0 and _FULL_MS <= ((now - stamp[b]) & _MASK) <= _PERIOD - _FULL_MS:
            self._drop(b)
            b = self._tail

    @micropython.native
    def _unindex(self, b):
        """Delete b from the index, shifting later entries of its probe run back into the hole."""
        index = self._index
        keys = self._keys
        mask = self._mask
        i = _home(keys[b], mask)
        while index[i] != b:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            v = index[j]
            if v < 0:
                break
            h = _home(keys[v], mask)
            # v may fill the hole at i unless its home lies cyclically in (i, j]
            if (j > i and (h <= i or h > j)) or (j < i and h <= i and h > j):
                index[i] = v
                i = j
        index[i] = _NONE

    @micropython.native
    def _unlink(self, b):
        prev = self._prev
        nxt = self._next
        p = prev[b]
        n = nxt[b]
        if p >= 0:
            nxt[p] = n
        else:
            self._head = n
        if n >= 0:
            prev[n] = p
        else:
            self._tail = p

    @micropython.native
    def _push(self, b):
        """Link b in as the most recently used."""
        h = self._head
        self._prev[b] = _NONE
        self._next[b] = h
        if h >= 0:
            self._prev[h] = b
        else:
            self._tail = b
        self._head = b

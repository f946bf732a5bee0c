"""ResponseCache: upstream answers to GET requests, kept in fixed-size entries and served again.

Owns one bytearray of `entries * entry_bytes` (fixed-size entries: no fragmentation, no compaction)
and per-entry tables, all made in __init__. An entry holds the key (path + query; per Vary name: its
length, the name lower-cased, the request's value as length + bytes or 255 if absent), the head as
the gateway sends it (no final CRLF; Connection, Age, X-Cache dropped), the body. Only GET answers
are stored and HEAD is served from them, so the method is not in the key.

lookup() compares a 30-bit hash (hash_span of path + query, route in the top six bits), the route
and the key bytes: a collision cannot serve a wrong answer. A hit heads the LRU list (two "h"
arrays). A fill runs beside the relay: begin() takes a free, else expired, else the least recently
used entry not being filled; set_head() decides; append() copies; commit() publishes. A handle is
(generation << 8) | entry, so one whose entry was purged and taken again is refused. Only
parse_cache_control() and stats() allocate after __init__ (the tests prove the hit and fill paths).

Only 200 is stored. no-store, private, no-cache (no revalidation here), Set-Cookie, Vary: *, more
than max_vary names, Transfer-Encoding or no Content-Length refuse it; s-maxage, else max-age, caps
the route's ttl, less the upstream's Age. Expires, Pragma and the request's Cache-Control are not
read (as nginx's proxy_cache: clients cannot force a refill). Ticks are kept mod 2**30 and compared
as ((now - stamp) & _MASK), signed (see ratelimit.py); an expired entry not looked up for 2**29 ms
(6.2 days) would look fresh again, so call sweep() now and then.

Must not: do I/O, read the clock (now_ms is passed in), parse requests (slots come parsed), or know
routes beyond the id and the flags the caller passes.
"""

from array import array

from . import httpparse as hp
from .compat import const, micropython
from .native import hash_span, mem_eq, mem_eq_lower, mem_move, parse_uint, span_in
from .response import put, put_uint
from .strtab import table

X_CACHE_HIT = b"X-Cache: HIT\r\n"
X_CACHE_MISS = b"X-Cache: MISS\r\n"
TTL_MAX_MS = const(0x10000000)  # 2**28 ms (3.1 days): far inside the signed 30-bit tick range
SECONDS_MAX = const(268435)  # TTL_MAX_MS // 1000: max-age and Age are capped here (RFC 9111 1.2.2)
CC_NO_STORE = const(1)  # Cache-Control flags, acc[0] of _cc_parse()
CC_PRIVATE = const(2)
CC_NO_CACHE = const(4)

_MASK = const(0x3FFFFFFF)  # ticks modulo 2**30
_HALF = const(0x20000000)
_FREE = const(0)
_BEGUN = const(1)  # begin() done, no head yet
_FILLING = const(2)  # head accepted, body arriving
_READY = const(3)  # visible to lookup()
_ABSENT = const(255)  # Vary value of a request without that header


def _table(chars):
    t = bytearray(256)
    for c in chars:
        t[c] = 1
    return bytes(t)


_OWS = _table(b" \t")
_SEPS = _table(b" \t,")
_TOKEN = _table(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_K_AUTH = bytes((hp.HDR_AUTHORIZATION,))  # for hkind.find(): no allocation
_K_COOKIE = bytes((hp.HDR_COOKIE,))
_CRLF = b"\r\n"
_AGE = b"Age: "
_STATS = ("hits", "misses", "bypass", "stores", "evictions", "expired", "abandoned", "stale_hits")


@micropython.native
def _since(now, stamp):
    """Signed ms from stamp (mod 2**30) to now_ms, whatever the ticks period. No allocation."""
    d = ((now & _MASK) - stamp) & _MASK  # both below 2**30: a small int on a board
    return d - _HALF - _HALF if d >= _HALF else d  # 2**30 itself would be a big int there


@micropython.native
def _seconds(buf, s, e):
    """delta-seconds in buf[s:e], capped at SECONDS_MAX; 0 if not digits (RFC 9111 4.2.1: an
    invalid max-age means stale). No allocation."""
    v = 0 if s < e else -1
    while s < e and v >= 0:
        c = buf[s] - 48
        v = -1 if c < 0 or c > 9 else min(v * 10 + c, SECONDS_MAX)  # v * 10 stays below 2**22
        s += 1
    return v if v > 0 else 0


@micropython.native
def _cc_parse(buf, i, e, acc):
    """Fold the directives of one Cache-Control value buf[i:e] into acc (array "i": flags, max-age,
    s-maxage; -1 absent). Names are case-insensitive; values a token or a quoted-string; a repeated
    max-age keeps the smallest; private="x" and no-cache="x" count as the bare directive (stricter).
    No allocation."""
    while i < e:
        ns = span_in(buf, i, e, _SEPS)
        i = span_in(buf, ns, e, _TOKEN)
        n = i - ns
        i = span_in(buf, i, e, _OWS)
        vs = ve = i
        if i < e and buf[i] == 61:  # '='
            vs = span_in(buf, i + 1, e, _OWS)
            if vs < e and buf[vs] == 34:  # '"': a backslash escapes the next byte
                vs += 1
                i = vs
                while i < e and buf[i] != 34:
                    i += 2 if buf[i] == 92 else 1
                ve = i if i < e else e
            else:
                ve = i = span_in(buf, vs, e, _TOKEN)
        c = buf.find(b",", i, e)
        i = e if c < 0 else c
        k = 0
        if n == 8:
            if mem_eq_lower(buf, ns, b"no-store", 0, 8):
                acc[0] |= CC_NO_STORE
            elif mem_eq_lower(buf, ns, b"no-cache", 0, 8):
                acc[0] |= CC_NO_CACHE
            elif mem_eq_lower(buf, ns, b"s-maxage", 0, 8):
                k = 2
        elif n == 7:
            if mem_eq_lower(buf, ns, b"private", 0, 7):
                acc[0] |= CC_PRIVATE
            elif mem_eq_lower(buf, ns, b"max-age", 0, 7):
                k = 1
        if k:
            v = _seconds(buf, vs, ve)
            if acc[k] < 0 or v < acc[k]:
                acc[k] = v


def parse_cache_control(buf, start, end):
    """(no_store, private, no_cache, max_age) of one Cache-Control value; max_age is s-maxage if
    given (this is a shared cache), else max-age, else -1. Allocates: for tests and tools."""
    acc = array("i", (0, -1, -1))
    _cc_parse(buf, start, end, acc)
    f = acc[0]
    return f & CC_NO_STORE != 0, f & CC_PRIVATE != 0, f & CC_NO_CACHE != 0, acc[2] if acc[2] >= 0 else acc[1]


@micropython.native
def _key_hash(buf, ps, pe, qs, qe):
    """24-bit hash of the path buf[ps:pe] followed by the query buf[qs:qe]. No allocation."""
    h = hash_span(buf, ps, pe)
    if qe > qs:
        h = (h * 33 + hash_span(buf, qs, qe)) & 0xFFFFFF  # h < 2**24: the product stays below 2**30
    return h


@micropython.native
def _credentials(slot):
    """True if the request carries Authorization or Cookie. No allocation."""
    kinds = slot.hkind
    return kinds.find(_K_AUTH, 0, slot.nhdr) >= 0 or kinds.find(_K_COOKIE, 0, slot.nhdr) >= 0


@micropython.native
def _req_value(slot, name, off, n):
    """Index k of the request header named name[off:off+n] (lower case; its value is at
    slot.hdr[4k+2:4k+4]), -1 if absent, -2 if sent twice (a list is not compared). No allocation."""
    hdr = slot.hdr
    found = -1
    for k in range(slot.nhdr):
        s = hdr[k << 2]
        if hdr[(k << 2) + 1] - s == n and mem_eq_lower(slot.buf, s, name, off, n):
            if found >= 0:
                return -2
            found = k
    return found


class ResponseCache:
    """Fixed-capacity response store. All memory is allocated in __init__."""

    def __init__(self, entries=16, entry_bytes=4096, max_vary=2, max_key=256):
        if not (0 < entries <= 256 and 64 <= entry_bytes <= 0xFFFF and 0 <= max_vary <= 8 and max_key > 0):
            raise ValueError("response cache: 1..256 entries of 64..65535 bytes, max_vary 0..8")
        self.entries = entries
        self.entry_bytes = entry_bytes
        self.max_vary = max_vary
        self.max_key = min(max_key, entry_bytes)
        self.buf = bytearray(entries * entry_bytes)
        self.kbuf = bytearray(self.max_key)  # path + query of the request at hand
        self.hash = table("I", entries)
        self.route = table("h", entries, -1)
        self.plen = table("H", entries)  # path + query bytes at the entry's start
        self.klen = table("H", entries)  # the whole key, Vary fields included
        self.hlen = table("H", entries)
        self.blen = table("H", entries)
        self.clen = table("H", entries)  # Content-Length of the head
        self.ttl = table("i", entries)
        self.born = table("i", entries)  # tick of begin() less the upstream's Age, mod 2**30
        self.expiry = table("i", entries)
        self.gen = table("H", entries)  # bumped when begin() takes the entry
        self.prev = table("h", entries, -1)  # LRU list of ready entries, most recent first
        self.next = table("h", entries, -1)
        self.state = bytearray(entries)
        self.nvary = bytearray(entries)
        self.cc = array("i", (0, -1, -1))  # set_head's Cache-Control accumulator
        self.mru = self.lru = -1
        self.hits = self.misses = self.bypass = self.stores = 0
        self.evictions = self.expired = self.abandoned = 0
        # Expired entries are kept this long as stale answers (lookup(stale=True): a resilience
        # fallback while the upstream's breaker is open, RFC 5861's stale-if-error); fresh lookups
        # miss them. Below 2**29 ms.
        self.keep_stale_ms = 0
        self.stale_hits = 0

    @micropython.native
    def _unlink(self, i):
        p = self.prev[i]
        n = self.next[i]
        if p >= 0:
            self.next[p] = n
        else:
            self.mru = n
        if n >= 0:
            self.prev[n] = p
        else:
            self.lru = p

    @micropython.native
    def _push(self, i):
        m = self.mru
        self.prev[i] = -1
        self.next[i] = m
        if m >= 0:
            self.prev[m] = i
        else:
            self.lru = i
        self.mru = i

    def _drop(self, i):
        self._unlink(i)
        self.state[i] = _FREE

    @micropython.native
    def _primary(self, slot):
        """Path + query into kbuf: their length, or -1 if over max_key. No allocation."""
        ps = slot.path_start
        pn = slot.path_end - ps
        qn = slot.query_end - slot.query_start
        if pn + qn > self.max_key:
            return -1
        mem_move(self.kbuf, 0, slot.buf, ps, pn)
        mem_move(self.kbuf, pn, slot.buf, slot.query_start, qn)
        return pn + qn

    @micropython.native
    def _vary_match(self, i, slot):
        """True if the request has entry i's Vary values. No allocation."""
        d = self.buf
        p = i * self.entry_bytes + self.plen[i]
        e = i * self.entry_bytes + self.klen[i]
        while p < e:
            n = d[p]
            k = _req_value(slot, d, p + 1, n)
            p += 1 + n
            vs = slot.hdr[(k << 2) + 2] if k >= 0 else 0
            n = slot.hdr[(k << 2) + 3] - vs if k >= 0 else _ABSENT
            if k == -2 or d[p] != n or (k >= 0 and (n > 254 or not mem_eq(d, p + 1, slot.buf, vs, n))):
                return False
            p += 1 if k < 0 else 1 + n
        return True

    @micropython.native
    def lookup(self, slot, route, now_ms, credentials_ok=False, stale=False):
        """Entry index for the GET or HEAD request in slot on route, or -1. A request with a body,
        or with Authorization or Cookie unless credentials_ok, bypasses the cache. Expired entries
        met are dropped unless kept as stale (keep_stale_ms); stale: those are found too (a
        fallback answer). A hit becomes most recently used. No allocation."""
        m = slot.method
        n = -1
        if (m == hp.METHOD_GET or m == hp.METHOD_HEAD) and not slot.content_length:
            if credentials_ok or not _credentials(slot):
                n = slot.path_end - slot.path_start + slot.query_end - slot.query_start
        if n < 0 or n > self.max_key:
            self.bypass += 1
            return -1
        # The key (path, then query) is hashed and compared where it is: no copy per lookup.
        sb = slot.buf
        ps = slot.path_start
        pn = slot.path_end - ps
        qs = slot.query_start
        h = _key_hash(sb, ps, slot.path_end, qs, slot.query_end) | ((route & 63) << 24)  # below 2**30
        hashes = self.hash
        state = self.state
        routes = self.route  # locals: one attribute lookup each, not one per entry
        plen = self.plen
        d = self.buf
        eb = self.entry_bytes
        for i in range(self.entries):
            if hashes[i] != h or state[i] != _READY or routes[i] != route or plen[i] != n:
                continue
            if not (mem_eq(d, i * eb, sb, ps, pn) and mem_eq(d, i * eb + pn, sb, qs, n - pn)):
                continue
            age = _since(now_ms, self.expiry[i])
            if age >= 0 and (not stale or age >= self.keep_stale_ms):
                if age >= self.keep_stale_ms:
                    self._drop(i)
                    self.expired += 1
            elif self.klen[i] == n or self._vary_match(i, slot):
                if i != self.mru:
                    self._unlink(i)
                    self._push(i)
                if stale:
                    self.stale_hits += 1
                else:
                    self.hits += 1
                return i
        if not stale:
            self.misses += 1
        return -1

    def entry_head(self, i):
        """Offset in self.buf of entry i's head; it ends at entry_body(i), without the final CRLF
        (the server adds X-Cache, Age, Connection, CRLF). No allocation."""
        return i * self.entry_bytes + self.klen[i]

    def entry_body(self, i):
        """Offset in self.buf of entry i's body, the end of its head. No allocation."""
        return i * self.entry_bytes + self.klen[i] + self.hlen[i]

    def entry_end(self, i):
        """Offset in self.buf of the end of entry i's body. No allocation."""
        return i * self.entry_bytes + self.klen[i] + self.hlen[i] + self.blen[i]

    def entry_gen(self, i):
        """Entry i's generation: if it changes while a hit is sent, begin() took the entry and the
        bytes not yet sent are gone (end that connection). No allocation."""
        return self.gen[i]

    @micropython.native
    def age_s(self, i, now_ms):
        """Entry i's Age in whole seconds (upstream Age counted). No allocation."""
        a = _since(now_ms, self.born[i])
        return a // 1000 if a > 0 else 0

    @micropython.native
    def write_age(self, i, now_ms, dst, pos):
        """b"Age: N\\r\\n" for entry i at dst[pos:]; returns the new position. No allocation."""
        a = _since(now_ms, self.born[i])
        return put(dst, put_uint(dst, put(dst, pos, _AGE), a // 1000 if a > 0 else 0), _CRLF)

    @micropython.native
    def _victim(self, now_ms):
        """A free or expired entry (a stale one kept for fallbacks last), else the LRU tail (never
        one being filled), or -1."""
        keep = self.keep_stale_ms
        while True:
            for i in range(self.entries):
                st = self.state[i]
                if st == _FREE or (st == _READY and _since(now_ms, self.expiry[i]) >= keep):
                    if st:
                        self._drop(i)
                        self.expired += 1
                    return i
            if keep == 0:
                break
            keep = 0  # none: a stale one, then
        i = self.lru
        if i >= 0:
            self._drop(i)
            self.evictions += 1
        return i

    @micropython.native
    def begin(self, slot, route, ttl_ms, now_ms, credentials_ok=False):
        """A fill handle for the answer to the request in slot, or -1: not GET, a body, Authorization
        or Cookie (unless credentials_ok), key over max_key, ttl_ms <= 0, route outside 0..32767, or
        every entry being filled. No allocation."""
        if slot.method != hp.METHOD_GET or slot.content_length or ttl_ms <= 0 or not 0 <= route <= 0x7FFF:
            return -1
        n = self._primary(slot) if credentials_ok or not _credentials(slot) else -1
        i = self._victim(now_ms) if n >= 0 else -1
        if i < 0:
            return -1
        g = (self.gen[i] + 1) & 0x3FFF
        self.gen[i] = g
        mem_move(self.buf, i * self.entry_bytes, self.kbuf, 0, n)
        pn = slot.path_end - slot.path_start
        self.hash[i] = _key_hash(self.kbuf, 0, pn, pn, n) | ((route & 63) << 24)  # as lookup() does
        self.route[i] = route
        self.plen[i] = self.klen[i] = n
        self.nvary[i] = 0
        self.ttl[i] = min(ttl_ms, TTL_MAX_MS)
        self.born[i] = now_ms & _MASK
        self.state[i] = _BEGUN
        return (g << 8) | i

    def _fill(self, h, st):
        """Entry of fill handle h if it is in state st, else -1. No allocation."""
        i = h & 0xFF
        return i if h >= 0 and i < self.entries and self.gen[i] == h >> 8 and self.state[i] == st else -1

    def _give_up(self, i):
        self.state[i] = _FREE
        self.abandoned += 1
        return False

    @micropython.native
    def _vary_add(self, i, buf, s, e, slot, q):
        """Stage a key field in kbuf[q:] for each name of the Vary value buf[s:e]; the new q, or -1:
        "*", more than max_vary names, a name or value over 254 bytes, a request header sent twice,
        fields over max_key bytes. No allocation."""
        d = self.kbuf
        while s < e:
            s = span_in(buf, s, e, _SEPS)
            t = span_in(buf, s, e, _TOKEN)
            if t == s or (t == s + 1 and buf[s] == 42):
                return q if s >= e else -1  # "*" (or a non-token): not storable
            n = t - s
            if self.nvary[i] >= self.max_vary or n > 254 or q + 2 + n > self.max_key:
                return -1
            d[q] = n
            for k in range(n):  # the name, lower-cased
                c = buf[s + k]
                d[q + 1 + k] = c + 32 if 65 <= c <= 90 else c
            k = _req_value(slot, d, q + 1, n)
            q += 1 + n
            vs = slot.hdr[(k << 2) + 2] if k >= 0 else 0
            vn = slot.hdr[(k << 2) + 3] - vs if k >= 0 else 0
            if k == -2 or vn > 254 or q + 1 + vn > self.max_key:
                return -1
            d[q] = vn if k >= 0 else _ABSENT
            mem_move(d, q + 1, slot.buf, vs, vn)
            q += 1 + vn if k >= 0 else 1
            self.nvary[i] += 1
            s = t
        return q

    @micropython.native
    def set_head(self, h, buf, start, end, status, slot):
        """The head the gateway sends for fill h (buf[start:end], with or without the final blank
        line), its status, and the request's slot (for the Vary values). False: not stored (the fill
        is abandoned; relaying goes on regardless). No allocation."""
        i = self._fill(h, _BEGUN)
        if i < 0:
            return False
        if status != 200 or end - start < 4 or buf[end - 2] != 13 or buf[end - 1] != 10:
            return self._give_up(i)
        if buf[end - 4] == 13 and buf[end - 3] == 10:
            end -= 2  # stored without the final CRLF
        cc = self.cc
        cc[0] = 0
        cc[1] = cc[2] = -1
        clen = -1
        age = 0
        q = 0  # bytes of Vary fields staged in kbuf
        base = i * self.entry_bytes
        lim = base + self.entry_bytes
        k = base + self.plen[i]  # the head goes here for now: the Vary fields are not known yet
        w = k
        line = start
        while line < end:
            eol = buf.find(_CRLF, line, end) + 2
            colon = buf.find(b":", line, eol)
            n = colon - line
            keep = ok = True
            if line != start:  # a header line (the first is the status line)
                v = span_in(buf, colon + 1, eol, _OWS)
                ve = eol - 2
                while ve > v and (buf[ve - 1] == 32 or buf[ve - 1] == 9):
                    ve -= 1
                kind = hp.header_kind(buf, line, n)
                ok = n > 0 and kind != hp.HDR_TRANSFER_ENCODING
                keep = kind != hp.HDR_CONNECTION and kind != hp.HDR_HOP
                if kind == hp.HDR_CONTENT_LENGTH:
                    x = parse_uint(buf, v, ve)
                    ok = x >= 0 and (clen < 0 or x == clen)
                    clen = x
                elif kind == hp.HDR_OTHER:
                    if n == 13 and mem_eq_lower(buf, line, b"cache-control", 0, 13):
                        _cc_parse(buf, v, ve, cc)
                    elif n == 10 and mem_eq_lower(buf, line, b"set-cookie", 0, 10):
                        ok = False
                    elif n == 4 and mem_eq_lower(buf, line, b"vary", 0, 4):
                        q = self._vary_add(i, buf, v, ve, slot, q)
                        ok = q >= 0
                    elif n == 3 and mem_eq_lower(buf, line, b"age", 0, 3):
                        age = _seconds(buf, v, ve)
                        keep = False  # write_age() sends the Age
                    elif n == 7 and mem_eq_lower(buf, line, b"x-cache", 0, 7):
                        keep = False
            if not ok or (keep and w + eol - line > lim):
                return self._give_up(i)
            if keep:
                mem_move(self.buf, w, buf, line, eol - line)
                w += eol - line
            line = eol
        ttl = self.ttl[i]
        ma = cc[2] if cc[2] >= 0 else cc[1]
        if ma >= 0 and ma * 1000 < ttl:  # ma <= SECONDS_MAX: ma * 1000 < 2**28
            ttl = ma * 1000
        if clen < 0 or cc[0] or ttl <= age * 1000 or w + q + clen > lim:  # cc[0]: no-store, private, no-cache
            return self._give_up(i)
        mem_move(self.buf, k + q, self.buf, k, w - k)  # the head moves up behind the Vary fields
        mem_move(self.buf, k, self.kbuf, 0, q)
        self.klen[i] = k + q - base
        self.hlen[i] = w - k
        self.blen[i] = 0
        self.clen[i] = clen
        born = (self.born[i] - age * 1000) & _MASK  # Age counts the upstream's part too
        self.born[i] = born
        self.expiry[i] = (born - _HALF - _HALF + ttl) & _MASK  # each step a small int on a board
        self.state[i] = _FILLING
        return True

    @micropython.native
    def append(self, h, buf, start, end):
        """Body bytes buf[start:end] as they pass. False: the fill is gone (bytes beyond its
        Content-Length abandon it). No allocation."""
        i = self._fill(h, _FILLING)
        if i < 0:
            return False
        b = self.blen[i]
        if b + end - start > self.clen[i]:
            return self._give_up(i)
        mem_move(self.buf, self.entry_body(i) + b, buf, start, end - start)
        self.blen[i] = b + end - start
        return True

    @micropython.native
    def commit(self, h, now_ms):
        """The body is complete: the entry becomes visible (an entry with the same key goes).
        False: incomplete, expired already, or the fill is gone. No allocation."""
        i = self._fill(h, _FILLING)
        if i < 0:
            return False
        if self.blen[i] != self.clen[i] or _since(now_ms, self.expiry[i]) >= 0:
            return self._give_up(i)
        w = self.entry_bytes
        k = self.klen[i]
        for e in range(self.entries):
            if e != i and self.state[e] == _READY and self.hash[e] == self.hash[i] and self.klen[e] == k:
                if self.route[e] == self.route[i] and mem_eq(self.buf, e * w, self.buf, i * w, k):
                    self._drop(e)
        self.state[i] = _READY
        self._push(i)
        self.stores += 1
        return True

    def abandon(self, h):
        """Give up fill h (the upstream failed, the client left). Stale handles and -1 are ignored."""
        if self._fill(h, _BEGUN) >= 0 or self._fill(h, _FILLING) >= 0:
            self._give_up(h & 0xFF)

    def purge(self, route=-1):
        """Drop every stored entry (route -1) or one route's, abandoning their fills in progress.
        Returns how many stored entries went."""
        n = 0
        for i in range(self.entries):
            st = self.state[i]
            if st != _FREE and (route < 0 or self.route[i] == route):
                if st == _READY:
                    self._drop(i)
                    n += 1
                else:
                    self._give_up(i)
        return n

    def sweep(self, now_ms):
        """Drop expired entries (kept stale ones once keep_stale_ms has passed too); returns how
        many. No allocation."""
        n = 0
        keep = self.keep_stale_ms
        for i in range(self.entries):
            if self.state[i] == _READY and _since(now_ms, self.expiry[i]) >= keep:
                self._drop(i)
                n += 1
        self.expired += n
        return n

    def stats(self):
        """Counters and occupancy as a dict (allocates)."""
        d = {k: getattr(self, k) for k in _STATS}
        d["entries_in_use"] = d["bytes_in_use"] = d["filling"] = 0
        for i in range(self.entries):
            if self.state[i] == _READY:
                d["entries_in_use"] += 1
                d["bytes_in_use"] += self.klen[i] + self.hlen[i] + self.blen[i]
            elif self.state[i] != _FREE:
                d["filling"] += 1
        return d

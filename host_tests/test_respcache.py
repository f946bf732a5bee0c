"""Portable tests for firmware/apigw/respcache.py.

Requests are real bytes parsed into a Slot by httpparse.parse_request; answers are heads as the
relay hands them over (rewritten, ending in the blank line) plus body bytes. The clock is a plain
int passed in, so expiry, Age and ticks wraparound are exact. On MicroPython the hit and miss paths
(lookup, entry_*, write_age) and the fill path run under heap_lock() with mem_total() unchanged.
"""

from apigw import httpparse as hp
from apigw.compat import micropython, ticks_add
from apigw.respcache import SECONDS_MAX, X_CACHE_HIT, X_CACHE_MISS, ResponseCache, parse_cache_control
from apigw.response import put
from apigw.slot import Slot
from check import raises, requires_micropython

TTL = 60000


def _req(target, method=b"GET", headers=b""):
    return method + b" " + target + b" HTTP/1.1\r\nHost: gw.local\r\n" + headers + b"\r\n"


def _slot(raw):
    s = Slot(0, 1024, 64, 16)
    s.buf[: len(raw)] = raw
    s.n = len(raw)
    assert hp.parse_request(s) == hp.DONE
    return s


def _get(target, headers=b"", method=b"GET"):
    return _slot(_req(target, method, headers))


def _head(body=b"hello", extra=b"", status=b"200 OK", length=True):
    h = b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
    if length:
        h += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return h + extra + b"Via: 1.1 apigw\r\n\r\n"


def _store(c, slot, body=b"hello", extra=b"", route=1, now=0, ttl=TTL, status=200, head=None):
    """begin + set_head + append (in two pieces) + commit; True if the answer was stored."""
    h = c.begin(slot, route, ttl, now)
    if h < 0:
        return False
    head = _head(body, extra) if head is None else head
    if not c.set_head(h, head, 0, len(head), status, slot):
        return False
    half = len(body) // 2
    if not (c.append(h, body, 0, half) and c.append(h, body, half, len(body))):
        return False
    return c.commit(h, now)


def _hit(c, slot, route=1, now=0):
    """(head, body) of the entry lookup() finds, or None."""
    i = c.lookup(slot, route, now)
    if i < 0:
        return None
    return bytes(c.buf[c.entry_head(i) : c.entry_body(i)]), bytes(c.buf[c.entry_body(i) : c.entry_end(i)])


def test_miss_fill_hit():
    c = ResponseCache(4, 1024)
    s = _get(b"/api/items?page=2")
    assert c.lookup(s, 1, 0) == -1
    assert _store(c, s, b"[1,2,3]")
    head, body = _hit(c, _get(b"/api/items?page=2"), 1, 5)
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nVia: 1.1 apigw\r\n"
    assert body == b"[1,2,3]"
    st = c.stats()
    assert (st["hits"], st["misses"], st["stores"], st["entries_in_use"]) == (1, 1, 1, 1)


def test_head_request_hits_the_get_entry_and_is_never_stored():
    c = ResponseCache(4, 1024)
    assert c.begin(_get(b"/doc", method=b"HEAD"), 1, TTL, 0) == -1
    assert _store(c, _get(b"/doc"))
    assert _hit(c, _get(b"/doc", method=b"HEAD"))[1] == b"hello"


def test_path_query_and_route_distinguish():
    c = ResponseCache(8, 512)
    assert _store(c, _get(b"/a"), b"A")
    assert _store(c, _get(b"/a?x=1"), b"A1")
    assert _store(c, _get(b"/b"), b"B")
    assert _store(c, _get(b"/a"), b"A on 2", route=2)
    for target, route, want in (
        (b"/a", 1, b"A"),
        (b"/a?x=1", 1, b"A1"),
        (b"/b", 1, b"B"),
        (b"/a", 2, b"A on 2"),
        (b"/x/../a", 1, b"A"),  # the normalized path is the key
        (b"/a/./", 1, None),
        (b"/a?x=2", 1, None),
        (b"/a?", 1, None),
        (b"/A", 1, None),
        (b"/b", 2, None),
        (b"/a", 3, None),
    ):
        got = _hit(c, _get(target), route)
        assert (got[1] if got else None) == want, (target, route)


def test_vary_accept_encoding_and_a_custom_header():
    c = ResponseCache(8, 1024)
    gz = b"Accept-Encoding: gzip\r\n"
    assert _store(c, _get(b"/v", gz), b"gz", b"Vary: Accept-Encoding\r\n")
    assert _store(c, _get(b"/v", b"Accept-Encoding: br\r\n"), b"br", b"Vary: Accept-Encoding\r\n")
    assert _hit(c, _get(b"/v", gz))[1] == b"gz"
    assert _hit(c, _get(b"/v", b"accept-encoding: gzip\r\n"))[1] == b"gz"  # names are case-insensitive
    assert _hit(c, _get(b"/v", b"Accept-Encoding: br\r\n"))[1] == b"br"
    assert _hit(c, _get(b"/v", b"Accept-Encoding: gzip, br\r\n")) is None
    assert _hit(c, _get(b"/v")) is None
    # Two names, one a custom header; the stored head keeps its Vary line.
    t1 = gz + b"X-Tenant: t1\r\n"
    assert _store(c, _get(b"/t", t1), b"t1", b"Vary: accept-encoding, X-Tenant\r\n")
    head, body = _hit(c, _get(b"/t", b"X-Tenant: t1\r\n" + gz))
    assert body == b"t1" and b"Vary: accept-encoding, X-Tenant\r\n" in head
    assert _hit(c, _get(b"/t", gz + b"X-Tenant: t2\r\n")) is None
    assert _hit(c, _get(b"/t", gz)) is None
    # Stored from a request without the header: matches requests without it only.
    assert _store(c, _get(b"/n"), b"none", b"Vary: X-Tenant\r\n")
    assert _hit(c, _get(b"/n"))[1] == b"none"
    assert _hit(c, _get(b"/n", b"X-Tenant: \r\n")) is None  # present but empty is not absent
    assert _hit(c, _get(b"/n", b"X-Tenant: t1\r\n")) is None


def test_vary_refusals():
    c = ResponseCache(4, 1024, max_vary=2)
    s = _get(b"/v", b"A: 1\r\nB: 2\r\nC: 3\r\n")
    assert not _store(c, s, extra=b"Vary: *\r\n")
    assert not _store(c, s, extra=b"Vary: A, B, C\r\n")
    assert not _store(c, s, extra=b"Vary: A\r\nVary: B, C\r\n")
    assert not _store(c, _get(b"/v", b"A: 1\r\nA: 2\r\n"), extra=b"Vary: A\r\n")  # a list: not compared
    assert _store(c, s, extra=b"Vary: A\r\nVary: C\r\n")
    assert _hit(c, _get(b"/v", b"C: 3\r\nA: 1\r\n")) is not None
    assert not _store(ResponseCache(2, 1024, max_vary=0), s, extra=b"Vary: A\r\n")
    assert c.stats()["abandoned"] == 4


def test_expiry_age_and_ticks_wraparound():
    # 30-bit stamps wrap at 2**30; ticks_add(0, -300) is just before the runtime's own wrap.
    for base in ((1 << 30) - 300, ticks_add(0, -300), 12345):
        c = ResponseCache(4, 512)
        s = _get(b"/e")
        assert _store(c, s, now=base, ttl=1000)
        i = c.lookup(s, 1, ticks_add(base, 999))
        assert i >= 0
        dst = bytearray(32)
        assert bytes(dst[: c.write_age(i, ticks_add(base, 999), dst, 0)]) == b"Age: 0\r\n"
        assert c.lookup(s, 1, ticks_add(base, 1000)) == -1
        assert c.stats()["expired"] == 1 and c.stats()["entries_in_use"] == 0
        assert _store(c, s, now=base, ttl=10000)
        i = c.lookup(s, 1, ticks_add(base, 2500))
        assert bytes(dst[: c.write_age(i, ticks_add(base, 2500), dst, 0)]) == b"Age: 2\r\n"
        assert c.sweep(ticks_add(base, 9999)) == 0 and c.sweep(ticks_add(base, 10000)) == 1
        h = c.begin(s, 1, 1000, base)  # expired before it was complete: not stored
        head = _head()
        assert c.set_head(h, head, 0, len(head), 200, s) and c.append(h, b"hello", 0, 5)
        assert not c.commit(h, ticks_add(base, 1000))


def test_expired_answers_kept_stale_for_a_fallback():
    for base in ((1 << 30) - 300, ticks_add(0, -300), 12345):
        c = ResponseCache(4, 512)
        c.keep_stale_ms = 5000
        s = _get(b"/s")
        assert _store(c, s, b"old", now=base, ttl=1000)
        assert c.lookup(s, 1, ticks_add(base, 999), stale=True) >= 0  # fresh is fine too
        assert c.lookup(s, 1, ticks_add(base, 1000)) == -1  # a fresh lookup misses it...
        assert c.stats()["entries_in_use"] == 1 and c.sweep(ticks_add(base, 5999)) == 0  # ...but it stays
        i = c.lookup(s, 1, ticks_add(base, 5999), stale=True)
        assert i >= 0 and bytes(c.buf[c.entry_body(i) : c.entry_end(i)]) == b"old"
        assert c.stats()["stale_hits"] == 2 and c.stats()["hits"] == 0
        assert c.lookup(s, 1, ticks_add(base, 6000), stale=True) == -1  # kept long enough: dropped
        assert c.stats()["entries_in_use"] == 0
        assert _store(c, s, b"old", now=base, ttl=1000)
        assert _store(c, s, b"new", now=ticks_add(base, 2000), ttl=1000)  # a fresh answer replaces it
        i = c.lookup(s, 1, ticks_add(base, 2000), stale=True)
        assert bytes(c.buf[c.entry_body(i) : c.entry_end(i)]) == b"new" and c.stats()["entries_in_use"] == 1
        assert c.sweep(ticks_add(base, 8000)) == 1


def test_lru_eviction_keeps_the_touched_entry():
    c = ResponseCache(3, 512)
    for p in (b"/a", b"/b", b"/c"):
        assert _store(c, _get(p), p)
    assert _hit(c, _get(b"/a"))  # /b is now the least recently used
    assert _store(c, _get(b"/d"), b"/d")
    assert _hit(c, _get(b"/b")) is None
    assert _store(c, _get(b"/e"), b"/e")  # then /c
    assert [_hit(c, _get(p)) is not None for p in (b"/a", b"/c", b"/d", b"/e")] == [True, False, True, True]
    assert c.stats()["evictions"] == 2


def test_an_entry_being_filled_is_invisible_and_not_evicted():
    c = ResponseCache(2, 512)
    assert _store(c, _get(b"/a"), b"A")
    sb = _get(b"/b")
    hb = c.begin(sb, 1, TTL, 0)  # takes the free entry
    assert hb >= 0 and c.lookup(sb, 1, 0) == -1
    head = _head(b"B")
    assert c.set_head(hb, head, 0, len(head), 200, sb) and c.append(hb, b"B", 0, 1)
    assert c.lookup(sb, 1, 0) == -1  # complete but not committed
    hc = c.begin(_get(b"/c"), 1, TTL, 0)  # the victim is /a, not the fill in progress
    assert hc >= 0 and (hc & 0xFF) != (hb & 0xFF) and _hit(c, _get(b"/a")) is None
    assert c.begin(_get(b"/d"), 1, TTL, 0) == -1  # every entry is being filled
    assert c.commit(hb, 0) and _hit(c, sb)[1] == b"B"
    assert c.stats()["filling"] == 1
    c.abandon(hc)
    assert c.stats()["filling"] == 0


CACHE_CONTROL = (
    # value, (no_store, private, no_cache, max_age)
    (b"", (False, False, False, -1)),
    (b"public", (False, False, False, -1)),
    (b"no-store", (True, False, False, -1)),
    (b"private", (False, True, False, -1)),
    (b"no-cache", (False, False, True, -1)),
    (b"max-age=0", (False, False, False, 0)),
    (b"max-age=60", (False, False, False, 60)),
    (b"public, max-age=60, s-maxage=30", (False, False, False, 30)),
    (b"s-maxage=30,max-age=60", (False, False, False, 30)),
    (b'max-age="120"', (False, False, False, 120)),
    (b"MAX-AGE=5, No-Store", (True, False, False, 5)),
    (b'private="Set-Cookie", max-age=5', (False, True, False, 5)),
    (b'no-cache="a, b", max-age=3', (False, False, True, 3)),
    (b'ext="x\\"y, max-age=9", max-age=4', (False, False, False, 4)),
    (b"max-age=abc", (False, False, False, 0)),
    (b"max-age=", (False, False, False, 0)),
    (b"max-age=99999999999999", (False, False, False, SECONDS_MAX)),
    (b"max-age=60, max-age=10", (False, False, False, 10)),
    (b" , ,max-age = 7 ,", (False, False, False, 7)),
    (b"must-revalidate, proxy-revalidate, max-age=8", (False, False, False, 8)),
    (b"no-storex, privatex, max-agex=1", (False, False, False, -1)),
)


def test_parse_cache_control_table():
    for value, want in CACHE_CONTROL:
        buf = b"##" + value + b"\r\n"  # at an offset, with bytes after it
        assert parse_cache_control(buf, 2, 2 + len(value)) == want, value


def _expires_at(extra, ttl=300000):
    """ms after the store at which the entry stops hitting (of 5000, 10000, 60000, 300000), None
    if it was not stored, -1 if it expired somewhere else."""
    c = ResponseCache(2, 1024)
    s = _get(b"/cc")
    if not _store(c, s, extra=extra, ttl=ttl):
        return None
    for ms in (5000, 10000, 60000, 300000):
        if c.lookup(s, 1, ms - 1) < 0:
            return -1
        if c.lookup(s, 1, ms) < 0:
            return ms
    return -1


def test_cache_control_decides_and_caps_the_ttl():
    for extra, want in (
        (b"", 300000),
        (b"Cache-Control: public\r\n", 300000),
        (b"Cache-Control: no-store\r\n", None),
        (b"Cache-Control: private, max-age=60\r\n", None),
        (b"Cache-Control: no-cache\r\n", None),  # no revalidation here: not stored
        (b"Cache-Control: max-age=0\r\n", None),
        (b"Cache-Control: max-age=60\r\n", 60000),
        (b'cache-control: Max-Age="10"\r\n', 10000),
        (b"Cache-Control: max-age=60, s-maxage=5\r\n", 5000),
        (b"Cache-Control: public\r\nCache-Control: max-age=10\r\n", 10000),
        (b"Cache-Control: max-age=60\r\nCache-Control: no-store\r\n", None),
        (b"Cache-Control: max-age=60\r\nAge: 50\r\n", 10000),
        (b"Cache-Control: max-age=60\r\nAge: 60\r\n", None),
    ):
        got = _expires_at(extra)
        assert got == want, (extra, got)
    assert _expires_at(b"Cache-Control: max-age=60\r\n", ttl=5000) == 5000  # the route's ttl is shorter


def test_answers_that_are_not_stored():
    c = ResponseCache(4, 1024)
    s = _get(b"/n")
    assert not _store(c, s, extra=b"Set-Cookie: id=1\r\n")
    assert not _store(c, s, status=404, head=_head(status=b"404 Not Found"))
    assert not _store(c, s, head=_head(length=False))
    assert not _store(c, s, head=_head(length=False, extra=b"Transfer-Encoding: chunked\r\n"))
    assert not _store(c, s, head=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nBroken line\r\n\r\n")
    assert c.stats()["entries_in_use"] == 0 and c.stats()["abandoned"] == 5
    assert not _store(ResponseCache(2, 128), s, extra=b"X-Long: " + b"l" * 100 + b"\r\n")  # the head does not fit


def test_requests_that_bypass_the_cache():
    c = ResponseCache(4, 1024, max_key=32)
    for raw in (
        _req(b"/p", b"POST", b"Content-Length: 0\r\n"),
        _req(b"/p", b"GET", b"Content-Length: 2\r\n") + b"{}",
        _req(b"/p", b"GET", b"Authorization: Bearer x\r\n"),
        _req(b"/p", b"GET", b"Cookie: a=1\r\n"),
        _req(b"/" + b"k" * 40),
    ):
        s = _slot(raw)
        assert c.begin(s, 1, TTL, 0) == -1 and c.lookup(s, 1, 0) == -1
    assert c.stats()["bypass"] == 5 and c.stats()["misses"] == 0
    assert c.begin(_get(b"/p"), 1, 0, 0) == -1 and c.begin(_get(b"/p"), -1, TTL, 0) == -1
    auth = _get(b"/p", b"Authorization: Bearer x\r\nCookie: a=1\r\n")
    h = c.begin(auth, 1, TTL, 0, True)  # the route says its answers do not depend on them
    head = _head()
    assert c.set_head(h, head, 0, len(head), 200, auth) and c.append(h, b"hello", 0, 5) and c.commit(h, 0)
    assert c.lookup(auth, 1, 0) == -1 and c.lookup(auth, 1, 0, True) >= 0


def test_the_stored_head_drops_connection_age_and_x_cache():
    c = ResponseCache(2, 1024)
    s = _get(b"/h")
    extra = b'X-Cache: MISS\r\nAge: 3\r\nConnection: close\r\nETag: "v1"\r\n'
    head = _head(b"hi", extra)
    for end in (len(head), len(head) - 2):  # with and without the final blank line
        assert _store(c, s, b"hi", head=head[:end])
        got = _hit(c, s)[0]
        assert (
            got
            == b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nETag: "v1"\r\nVia: 1.1 apigw\r\n'
        )
    assert c.stats()["entries_in_use"] == 1  # the second store replaced the first
    buf = bytearray(b"junk" + head + b"hi" + b"more")  # head and body inside a bigger buffer
    h = c.begin(s, 1, TTL, 0)
    hl = len(head)
    assert c.set_head(h, buf, 4, 4 + hl, 200, s) and c.append(h, buf, 4 + hl, 6 + hl) and c.commit(h, 0)
    assert _hit(c, s) == (got, b"hi")


def test_oversized_body_is_abandoned_and_the_store_unchanged():
    c = ResponseCache(4, 256)
    assert _store(c, _get(b"/keep"), b"kept")
    before = c.stats()
    big = _get(b"/big")
    assert not _store(c, big, b"x" * 300)  # Content-Length beyond the entry: set_head says no
    h = c.begin(big, 1, TTL, 0)
    head = _head(b"12345")  # announces 5 bytes, sends more
    assert c.set_head(h, head, 0, len(head), 200, big) and c.append(h, b"1234", 0, 4)
    assert not c.append(h, b"567", 0, 3)
    assert not c.append(h, b"", 0, 0) and not c.commit(h, 0)  # the handle is dead
    h = c.begin(big, 1, TTL, 0)
    assert c.set_head(h, head, 0, len(head), 200, big) and c.append(h, b"1234", 0, 4)
    assert not c.commit(h, 0)  # short body
    after = c.stats()
    assert after["abandoned"] == before["abandoned"] + 3
    for k in ("entries_in_use", "bytes_in_use", "stores", "filling"):
        assert after[k] == before[k], k
    assert _hit(c, _get(b"/keep"))[1] == b"kept" and _hit(c, big) is None


def test_a_stale_handle_is_refused():
    c = ResponseCache(1, 512)
    s = _get(b"/s")
    h = c.begin(s, 1, TTL, 0)
    assert c.purge() == 0 and c.stats()["filling"] == 0  # a fill in progress is abandoned, not counted
    h2 = c.begin(s, 1, TTL, 0)
    assert h2 != h and (h2 & 0xFF) == (h & 0xFF)
    head = _head()
    assert not c.set_head(h, head, 0, len(head), 200, s)
    c.abandon(h)  # ignored: h2 goes on
    assert c.set_head(h2, head, 0, len(head), 200, s) and c.append(h2, b"hello", 0, 5) and c.commit(h2, 0)
    c.abandon(-1)
    assert _hit(c, s)[1] == b"hello"


def test_purge_all_and_by_route_and_stats():
    c = ResponseCache(8, 512)
    for p in (b"/1", b"/2", b"/3"):
        assert _store(c, _get(p), p, route=1)
    for p in (b"/1", b"/9"):
        assert _store(c, _get(p), p, route=2)
    st = c.stats()
    assert st["entries_in_use"] == 5 and st["stores"] == 5
    one = _head(b"/1")[:-2]  # what is stored for "/1": key, head without the last CRLF, body
    assert st["bytes_in_use"] == 3 * (2 + len(one) + 2) + 2 * (2 + len(one) + 2)
    assert c.purge(1) == 3
    assert _hit(c, _get(b"/1"), 1) is None and _hit(c, _get(b"/1"), 2)[1] == b"/1"
    assert c.purge(7) == 0 and c.purge() == 2
    st = c.stats()
    assert (st["entries_in_use"], st["bytes_in_use"], st["hits"], st["misses"]) == (0, 0, 1, 1)


def test_constants_limits_and_generation():
    assert X_CACHE_HIT == b"X-Cache: HIT\r\n" and X_CACHE_MISS == b"X-Cache: MISS\r\n"
    for bad in ((0, 512), (257, 512), (4, 32), (4, 0x10000), (4, 512, 9)):
        raises(ValueError, ResponseCache, *bad)
    c = ResponseCache(1, 512)
    assert _store(c, _get(b"/g"))
    i = c.lookup(_get(b"/g"), 1, 0)
    g = c.entry_gen(i)
    assert c.begin(_get(b"/h"), 1, TTL, 0) >= 0 and c.entry_gen(i) != g  # a hit being sent would stop here


# --- allocation -------------------------------------------------------------------------------


class _Run:
    """A cache with Vary entries, and slots for a hit and a miss, made before the heap is locked."""

    def __init__(self):
        self.c = ResponseCache(8, 1024)
        self.hit = _get(b"/api/items?page=2", b"Accept-Encoding: gzip\r\nUser-Agent: probe\r\n")
        self.miss = _get(b"/api/items?page=3", b"Accept-Encoding: gzip\r\n")
        assert _store(self.c, self.hit, b"[1,2,3]", b"Vary: Accept-Encoding\r\n", now=100)
        assert _store(self.c, _get(b"/other"), b"x", now=100)
        self.fill = _get(b"/fill", b"Accept-Encoding: br\r\n")
        self.head = _head(b"filled", b"Cache-Control: public, max-age=30\r\nVary: Accept-Encoding\r\n")
        self.body = b"filled"
        self.dst = bytearray(64)
        self.res = [0] * 6


@micropython.native  # the pass's own frame must not come from the heap either
def _serve(t, slot, now):
    c = t.c
    i = c.lookup(slot, 1, now)
    if i < 0:
        t.res[0] = put(t.dst, 0, X_CACHE_MISS)
        return i
    t.res[1] = c.entry_head(i)
    t.res[2] = c.entry_body(i)
    t.res[3] = c.entry_end(i)
    t.res[4] = c.entry_gen(i)
    t.res[0] = c.write_age(i, now, t.dst, put(t.dst, 0, X_CACHE_HIT))
    return i


@micropython.native
def _fill(t, now):
    c = t.c
    h = c.begin(t.fill, 1, 60000, now)
    ok = c.set_head(h, t.head, 0, len(t.head), 200, t.fill)
    ok = ok and c.append(h, t.body, 0, 3) and c.append(h, t.body, 3, 6) and c.commit(h, now)
    t.res[5] = 1 if ok else 0


def test_hit_and_miss_allocate_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    t = _Run()
    assert _serve(t, t.hit, 2100) >= 0 and _serve(t, t.miss, 2100) == -1  # first pass: caches settle
    for slot in (t.hit, t.miss):
        before = mp.mem_total()
        _serve(t, slot, 2100)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        mp.heap_lock()
        try:
            i = _serve(t, slot, 2100)
        finally:
            mp.heap_unlock()
        assert (i >= 0) == (slot is t.hit)
        want = b"X-Cache: HIT\r\nAge: 2\r\n" if i >= 0 else b"X-Cache: MISS\r\n"
        assert bytes(t.dst[: t.res[0]]) == want
    assert bytes(t.c.buf[t.res[2] : t.res[3]]) == b"[1,2,3]"


def test_fill_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    t = _Run()
    _fill(t, 0)
    before = mp.mem_total()
    _fill(t, 10)
    assert mp.mem_total() - before == 0
    mp.heap_lock()
    try:
        _fill(t, 20)
    finally:
        mp.heap_unlock()
    assert t.res[5] == 1 and _hit(t.c, t.fill, 1, 30)[1] == b"filled"

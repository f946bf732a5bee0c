"""Retries: exponential backoff with full jitter, the retry policy, and per-service retry budgets.

delay(attempt, base_ms, multiplier, cap_ms, r) is AWS's "full jitter": uniform in
[0, min(cap_ms, base_ms * multiplier**attempt)], the power built up step by step and stopped at
the cap so no intermediate passes 2**30 (a big int on a board). r is a 30-bit random number.

RetryPolicy holds the settings of one kind of retry and its own random source: a 29-bit Weyl
sequence (a counter plus an odd step, masked) through a 30-bit Feistel mix, seeded from
os.urandom() unless a seed is given (tests). It is for jitter, not for secrets. next_delay() is
the whole decision: no retry after max_attempts attempts (the first call counts), an upstream's
Retry-After (seconds) replaces a shorter jittered delay, and a delay that would carry the retry past
max_total_ms since the first attempt began is refused. may_retry() is the rule for whether a
request may be sent again at all: if nothing of it reached the upstream, or its method is
idempotent (RFC 9110 9.2.2: GET, HEAD, OPTIONS, PUT, DELETE; IDEMPOTENT_METHODS holds
httpparse's bits for them).

RetryBudget keeps retries to a share of recent traffic, per service id, like Finagle's and
Envoy's budgets, so retries cannot multiply the load of an upstream that is already failing. Each
service has a ring of `buckets` counters of requests and of retries covering window_ms; a retry is
allowed while the retries in the window stay below budget_percent of the requests in it plus
min_retries_per_s * window_ms / 1000 (so a quiet service may still retry). note_request() counts
first attempts only; note_retry() counts each retry sent. Bucket stamps are ticks modulo 2**30,
compared with breaker.ticks_since().

__init__ allocates every table; delay(), bound(), next_delay(), random(), may_retry(),
budget_allows(), note_request() and note_retry() allocate nothing.

This module owns the arithmetic and the budget counters only: it does no I/O, never sleeps, reads
no clock (now and elapsed times are passed in) and parses no configuration.
"""

import os

from .restypes import ResilienceError, ticks_since
from .compat import const, micropython
from .httpparse import METHOD_DELETE, METHOD_GET, METHOD_HEAD, METHOD_OPTIONS, METHOD_PUT
from .strtab import table

_MASK = const(0x3FFFFFFF)
_MAX_MS = const(0x1FFFFFFF)
_WEYL = const(0x1FFFFFFF)  # the counter is 29 bits, so counter + step < 2**30
_STEP = const(0x13C6EF37)  # odd, below 2**29: the golden ratio's bits, shifted

IDEMPOTENT_METHODS = METHOD_GET | METHOD_HEAD | METHOD_OPTIONS | METHOD_PUT | METHOD_DELETE


@micropython.native
def _mix(x):
    """Four Feistel rounds over the two 15-bit halves of a 30-bit x: a bijection on 0..2**30-1.
    Each product is 15 bits times a 15-bit constant, below 2**30. No allocation."""
    lo = x & 0x7FFF
    hi = (x >> 15) & 0x7FFF
    hi ^= ((lo * 0x5D2B) >> 8) & 0x7FFF
    lo ^= ((hi * 0x6C8F) >> 9) & 0x7FFF
    hi ^= ((lo * 0x4A7D) >> 7) & 0x7FFF
    lo ^= ((hi * 0x79B1) >> 10) & 0x7FFF
    return (hi << 15) | lo


@micropython.native
def bound(attempt, base_ms, multiplier, cap_ms):
    """min(cap_ms, base_ms * multiplier**attempt) for attempt >= 0 (0: the first retry), without
    an intermediate above cap_ms. No allocation."""
    b = base_ms if base_ms < cap_ms else cap_ms
    if multiplier < 2:
        return b
    while attempt > 0 and b < cap_ms:
        if b > cap_ms // multiplier:
            return cap_ms
        b *= multiplier  # <= cap_ms
        attempt -= 1
    return b


@micropython.native
def delay(attempt, base_ms, multiplier, cap_ms, r):
    """Full-jitter delay in ms: r (30 random bits) reduced to 0..bound(). The modulo's bias is below
    bound / 2**30 (2**-15 at a 30 s cap). No allocation."""
    return (r & _MASK) % (bound(attempt, base_ms, multiplier, cap_ms) + 1)


@micropython.native
def may_retry(method_is_idempotent, nothing_sent):
    """True if a failed request may be sent again: nothing of it reached the upstream (a refused
    connection), or repeating it is harmless (an idempotent method). No allocation."""
    return bool(nothing_sent or method_is_idempotent)


def _field(who, name, v, lo, hi):
    if not isinstance(v, int) or not lo <= v <= hi:
        raise ResilienceError("%s: %s must be %d..%d, not %r" % (who, name, lo, hi, v))


class RetryPolicy:
    """max_attempts counts every try (3: the call and two retries). Times in ms."""

    def __init__(self, max_attempts=3, base_ms=100, multiplier=2, cap_ms=10000, max_total_ms=30000, seed=None):
        _field("retry policy", "max_attempts", max_attempts, 1, 255)
        _field("retry policy", "base_ms", base_ms, 0, _MAX_MS)
        _field("retry policy", "multiplier", multiplier, 1, 16)
        _field("retry policy", "cap_ms", cap_ms, 0, _MAX_MS)
        _field("retry policy", "max_total_ms", max_total_ms, 0, _MAX_MS)
        self.max_attempts = max_attempts
        self.base_ms = base_ms
        self.multiplier = multiplier
        self.cap_ms = cap_ms
        self.max_total_ms = max_total_ms
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "big")
        self._state = seed & _WEYL

    @micropython.native
    def random(self):
        """The next 30 random bits. No allocation."""
        s = (self._state + _STEP) & _WEYL  # both below 2**29
        self._state = s
        return _mix(s)

    @micropython.native
    def delay(self, attempt):
        """A full-jitter delay for retry number attempt (0: the first retry). No allocation."""
        return delay(attempt, self.base_ms, self.multiplier, self.cap_ms, self.random())

    @micropython.native
    def next_delay(self, attempts, elapsed_ms, retry_after_s=-1):
        """ms to wait before the next try, or -1: no retry. attempts: tries made so far (>= 1);
        elapsed_ms: since the first began; retry_after_s: the last answer's Retry-After in seconds
        (-1: none), waited for in full when longer than the jittered delay. No allocation."""
        if attempts >= self.max_attempts:
            return -1
        d = self.delay(attempts - 1 if attempts > 0 else 0)
        total = self.max_total_ms
        if retry_after_s >= 0:
            if retry_after_s > total // 1000:
                return -1  # longer than the whole budget (and retry_after_s * 1000 could pass 2**30)
            ra = retry_after_s * 1000
            if ra > d:
                d = ra
        if elapsed_ms < 0:
            elapsed_ms = 0
        if elapsed_ms > total or d > total - elapsed_ms:
            return -1
        return d


class RetryBudget:
    """Retry budgets of service ids 0..max_services-1, all with the same settings. All memory is
    allocated in __init__."""

    def __init__(self, max_services=64, budget_percent=20, min_retries_per_s=3, window_ms=10000, buckets=10):
        who = "retry budget"
        _field(who, "max_services", max_services, 1, 4096)
        _field(who, "budget_percent", budget_percent, 0, 100)
        _field(who, "min_retries_per_s", min_retries_per_s, 0, 1000)
        _field(who, "buckets", buckets, 1, 60)
        _field(who, "window_ms", window_ms, buckets, 600000)
        self.max_services = n = max_services
        self.budget_percent = budget_percent
        self.min_retries_per_s = min_retries_per_s
        self.window_ms = window_ms
        self.buckets = buckets
        self._bucket_ms = window_ms // buckets
        self._reserve = min_retries_per_s * window_ms // 1000  # <= 1000 * 600000 < 2**30
        self._req = table("H", n * buckets)  # per bucket, saturating at 65535
        self._ret = table("H", n * buckets)
        self._sreq = table("i", n)  # sums over the window: <= 60 * 65535 < 2**22
        self._sret = table("i", n)
        self._cur = bytearray(n)  # the bucket now being filled
        self._start = table("i", n)  # when it began, modulo 2**30
        self._seen = bytearray(n)  # 0 until the service's first call

    @micropython.native
    def budget_allows(self, sid, now):
        """True if service sid may send one more retry at now (count it with note_retry()). Ids
        outside the table are always allowed. No allocation."""
        if sid < 0 or sid >= self.max_services:
            return True
        self._advance(sid, now)
        allowed = self._sreq[sid] * self.budget_percent // 100 + self._reserve  # product < 2**22 * 100
        return self._sret[sid] < allowed

    @micropython.native
    def note_request(self, sid, now):
        """One first attempt of a request to sid. No allocation."""
        if 0 <= sid < self.max_services:
            self._advance(sid, now)
            self._add(self._req, self._sreq, sid)

    @micropython.native
    def note_retry(self, sid, now):
        """One retry sent to sid. No allocation."""
        if 0 <= sid < self.max_services:
            self._advance(sid, now)
            self._add(self._ret, self._sret, sid)

    def state(self, sid, now):
        """(requests, retries, retries allowed) in sid's window at now, for display."""
        _field("retry budget", "service id", sid, 0, self.max_services - 1)
        self._advance(sid, now)
        allowed = self._sreq[sid] * self.budget_percent // 100 + self._reserve
        return self._sreq[sid], self._sret[sid], allowed

    @micropython.native
    def _add(self, counts, sums, sid):
        k = sid * self.buckets + self._cur[sid]
        if counts[k] < 0xFFFF:
            counts[k] += 1
            sums[sid] += 1

    @micropython.native
    def _advance(self, sid, now):
        """Move sid's ring to the bucket that now falls in, emptying the buckets passed over."""
        if not self._seen[sid]:
            self._seen[sid] = 1
            self._start[sid] = now & _MASK
            return
        bm = self._bucket_ms
        el = ticks_since(now, self._start[sid])
        if el < bm:
            return
        steps = el // bm
        nb = self.buckets
        base = sid * nb
        i = self._cur[sid]
        k = steps if steps < nb else nb
        req = self._req
        ret = self._ret
        while k > 0:
            i += 1
            if i == nb:
                i = 0
            self._sreq[sid] -= req[base + i]
            self._sret[sid] -= ret[base + i]
            req[base + i] = 0
            ret[base + i] = 0
            k -= 1
        self._cur[sid] = i
        d = steps * bm  # <= el < 2**30; start + d could pass 2**30, so subtract the complement:
        self._start[sid] = (self._start[sid] - (_MASK - d) - 1) & _MASK

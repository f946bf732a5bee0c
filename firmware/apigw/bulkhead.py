"""Bulkheads: a fixed number of concurrent calls per pool, and a bounded queue of waiters, sans-IO.

A bulkhead has max_concurrent permits, a queue of at most max_waiting waiters and the time a
waiter may wait, queue_timeout_ms. This module keeps the counts only; the waiting itself (one
asyncio Event per waiter in a FIFO the I/O layer owns) is done by the caller:

    r = bulkheads.acquire_permit(b)
    if r == REJECTED: answer 503
    if r == MUST_WAIT:                 # the caller is now counted as a waiter
        append an Event to b's FIFO; wait for it at most queue_timeout_ms(b)
        if it timed out and the Event is not set:
            remove it from the FIFO; bulkheads.leave_queue(b, True); answer 503
        # set (even if the timeout fired too): a permit was handed to it, it holds it now
    ... the call ...
    if bulkheads.release_permit(b): pop the oldest Event off b's FIFO and set it

release_permit() hands the freed permit straight to the oldest waiter when there is one (in_use
stays, waiting drops by one) instead of putting it back, so a newcomer cannot take it first and a
permit is never lost between the release and the waiter waking. A waiter leaves the count exactly
once: through the release that hands it a permit, or through leave_queue(). acquire_permit() takes
a free permit only when nobody waits (first come, first served) and queues the caller itself: there
is no separate enter-the-queue call, so no await can come between the decision and the count.
queue_timeout_ms 0 or max_waiting 0 means no queue: a full bulkhead refuses at once.

Metrics per bulkhead: permits acquired (directly or handed over), calls rejected, waiters queued,
waiters that timed out, and the most permits ever in use at once. Counters wrap at 2**30 (small
ints on a board). __init__ allocates every table; acquire_permit(), release_permit(),
leave_queue() and the counts allocate nothing; create(), configure(), get() and metrics() allocate.

This module owns the permit and waiter counts only: it does no I/O, reads no clock, holds no
Events and parses no configuration.
"""

from .restypes import ResilienceError
from .compat import const, micropython
from .strtab import table

_MASK = const(0x3FFFFFFF)
_MAX_MS = const(0x1FFFFFFF)
_C_ACQ = const(0)  # metrics counters, _NC per bulkhead
_C_REJ = const(1)
_C_QUEUED = const(2)
_C_TIMEOUTS = const(3)
_C_PEAK = const(4)
_NC = const(5)

ACQUIRED = 0  # acquire_permit(): the caller holds a permit
MUST_WAIT = 1  # the caller is queued: it waits for a handed permit, or leave_queue()s
REJECTED = 2  # no permit and no room to wait (counted)


@micropython.native
def _bump(counters, i):
    """counters[i] += 1, wrapping at 2**30 without ever holding 2**30 (a big int on a board)."""
    v = counters[i]
    counters[i] = v + 1 if v < _MASK else 0


def _field(name, v, lo, hi):
    if not isinstance(v, int) or not lo <= v <= hi:
        raise ResilienceError("bulkhead: %s must be %d..%d, not %r" % (name, lo, hi, v))


class BulkheadPool:
    """One bulkhead as seen from outside the tables (built on request; not on the hot path)."""

    def __init__(self, b, name, max_concurrent, max_waiting, queue_timeout_ms, in_use, waiting):
        self.id = b
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.queue_timeout_ms = queue_timeout_ms
        self.in_use = in_use
        self.waiting = waiting


class BulkheadTable:
    """Up to max_bulkheads bulkheads. All memory is allocated in __init__."""

    def __init__(self, max_bulkheads=128):
        _field("max_bulkheads", max_bulkheads, 1, 4096)
        self.max_bulkheads = n = max_bulkheads
        self.count = 0  # ids 0..count-1 are in use
        self._names = []
        self._by_name = {}
        self._max = table("H", n)
        self._maxq = table("H", n)
        self._qto = table("i", n)
        self._in = table("H", n)  # permits held, including ones handed to a waiter not yet awake
        self._wait = table("H", n)  # waiters counted and not yet handed a permit
        self._cnt = table("i", n * _NC)

    # -- configuration (allocates) ---------------------------------------------------------------

    def create(self, name, max_concurrent, max_waiting=0, queue_timeout_ms=0):
        """A new bulkhead's id. Raises ResilienceError for a taken name, a bad setting (named) or a
        full table."""
        if not isinstance(name, str) or name in self._by_name:
            raise ResilienceError("bulkhead %r: name taken or not a str" % (name,))
        if self.count >= self.max_bulkheads:
            raise ResilienceError("bulkhead table full (%d bulkheads)" % self.max_bulkheads)
        self._limits(max_concurrent, max_waiting, queue_timeout_ms)
        b = self.count
        self._names.append(name)
        self._by_name[name] = b
        self.count = b + 1
        self.configure(b, max_concurrent, max_waiting, queue_timeout_ms)
        return b

    def configure(self, b, max_concurrent, max_waiting=0, queue_timeout_ms=0):
        """New limits for b (a reload). Permits held above a lowered max_concurrent end as their
        calls do. Returns how many waiters were handed a permit that a raised max_concurrent
        freed: the caller wakes that many, oldest first."""
        self._check(b)
        self._limits(max_concurrent, max_waiting, queue_timeout_ms)
        self._max[b] = max_concurrent
        self._maxq[b] = max_waiting
        self._qto[b] = queue_timeout_ms
        woken = 0
        while self._wait[b] and self._in[b] < max_concurrent:
            self._in[b] += 1
            self._wait[b] -= 1
            _bump(self._cnt, b * _NC + _C_ACQ)
            woken += 1
        self._peak(b)
        return woken

    def find(self, name):
        """The id of the bulkhead called name, or -1."""
        return self._by_name.get(name, -1)

    def name(self, b):
        self._check(b)
        return self._names[b]

    # -- the hot path (no allocation) ------------------------------------------------------------

    @micropython.native
    def acquire_permit(self, b):
        """ACQUIRED (the caller holds a permit), MUST_WAIT (none free; the caller is now counted
        as a waiter) or REJECTED (none free and the queue full). Ids not in use (-1: no bulkhead)
        always give ACQUIRED. No allocation."""
        if b < 0 or b >= self.count:
            return ACQUIRED
        w = self._wait[b]
        u = self._in[b]
        if u < self._max[b] and w == 0:
            self._in[b] = u + 1
            _bump(self._cnt, b * _NC + _C_ACQ)
            self._peak(b)
            return ACQUIRED
        if w < self._maxq[b] and self._qto[b] > 0:
            self._wait[b] = w + 1
            _bump(self._cnt, b * _NC + _C_QUEUED)
            return MUST_WAIT
        _bump(self._cnt, b * _NC + _C_REJ)
        return REJECTED

    @micropython.native
    def release_permit(self, b):
        """Give back a permit. True: it was handed to the oldest waiter, which the caller must wake
        (the waiter holds it now); False: it went back to the pool. No allocation."""
        if b < 0 or b >= self.count:
            return False
        u = self._in[b]
        if u == 0:
            return False  # more releases than permits: ignored
        w = self._wait[b]
        if w and u <= self._max[b]:
            self._wait[b] = w - 1
            _bump(self._cnt, b * _NC + _C_ACQ)
            return True
        self._in[b] = u - 1
        return False

    @micropython.native
    def leave_queue(self, b, timed_out=True):
        """A waiter gives up without a permit (timed_out: its queue_timeout_ms passed, counted;
        else cancelled). Not for a waiter that was handed a permit. No allocation."""
        if 0 <= b < self.count and self._wait[b] > 0:
            self._wait[b] -= 1
            if timed_out:
                _bump(self._cnt, b * _NC + _C_TIMEOUTS)

    def in_use(self, b):
        """Permits held (with the ones handed to waiters not yet awake). No allocation."""
        return self._in[b] if 0 <= b < self.count else 0

    def waiting(self, b):
        return self._wait[b] if 0 <= b < self.count else 0

    def available(self, b):
        """Permits free now (0 while anyone waits). No allocation."""
        if b < 0 or b >= self.count or self._wait[b]:
            return 0
        left = self._max[b] - self._in[b]
        return left if left > 0 else 0

    def queue_timeout_ms(self, b):
        return self._qto[b] if 0 <= b < self.count else 0

    # -- display (allocates) ---------------------------------------------------------------------

    def get(self, b):
        """A BulkheadPool snapshot of b."""
        self._check(b)
        limits = (self._max[b], self._maxq[b], self._qto[b])
        return BulkheadPool(b, self._names[b], *limits, in_use=self._in[b], waiting=self._wait[b])

    def metrics(self, b):
        """A dict of b's limits, counts and counters, for the shell and monitoring."""
        self._check(b)
        c = self._cnt
        k = b * _NC
        return {
            "name": self._names[b],
            "max_concurrent": self._max[b],
            "max_waiting": self._maxq[b],
            "queue_timeout_ms": self._qto[b],
            "in_use": self._in[b],
            "waiting": self._wait[b],
            "acquired": c[k + _C_ACQ],
            "rejected": c[k + _C_REJ],
            "queued": c[k + _C_QUEUED],
            "queue_timeouts": c[k + _C_TIMEOUTS],
            "max_in_use": c[k + _C_PEAK],
        }

    # -- internals ---------------------------------------------------------------------------------

    def _check(self, b):
        if not isinstance(b, int) or not 0 <= b < self.count:
            raise ResilienceError("bulkhead: no bulkhead %r" % (b,))

    def _limits(self, max_concurrent, max_waiting, queue_timeout_ms):
        _field("max_concurrent", max_concurrent, 1, 0xFFFF)
        _field("max_waiting", max_waiting, 0, 0xFFFF)
        _field("queue_timeout_ms", queue_timeout_ms, 0, _MAX_MS)

    @micropython.native
    def _peak(self, b):
        """Keep the most permits ever in use."""
        k = b * _NC + _C_PEAK
        if self._in[b] > self._cnt[k]:
            self._cnt[k] = self._in[b]

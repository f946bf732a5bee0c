"""Resilience on the request path: circuit breakers, bulkheads, retries and timeouts per service.

Guard puts breaker.py, bulkhead.py and backoff.py together for the server. A guarded service has a
profile: its breaker, bulkhead, retry policy and timeouts (connect, first byte, total); a route
may override the timeouts and the retry policy (or turn retries off) and give a fallback answer.
For each proxied request the server calls:
- enter(): the service's breaker must admit the call (else -1: 503 with Retry-After, or the
  route's fallback) and its bulkhead give a permit (else -2, or 0: wait in its queue, queue());
  sets the relay's connect timeout and overall deadline; returns the time-to-first-byte timeout.
- the relay asks retry_answer() when an answer head arrives: a status the retry policy names, for
  a request that may be repeated, within attempts, total time and the retry budget, is recorded
  as a failure and dropped (relay.RETRY) instead of relayed.
- after(): records the attempt's outcome in the breaker; the ms to wait before trying again (a
  connection failure, or RETRY), or -1: done (the permit goes back). again() after the wait:
  admitted again (a breaker that opened meanwhile refuses), counted against the retry budget.
- cancelled() when the reaper cut the call short (a timeout: FailureReason.TIMEOUT), release()
  in every case when the connection ends (nothing is held twice or lost).
enter(), retry_answer(), after(), again(), cancelled() and release() allocate nothing; queue()
does (a waiter's timeout), as do the refusal bodies, made once per service at boot.

This module owns that glue and the per-slot call state. The state machines, counts and delays are
the other modules'; configuration is resconfig.py's.
"""

import asyncio

from .backoff import IDEMPOTENT_METHODS
from .breaker import SUCCESS, BreakerTable, CircuitState, FailureReason, classify
from .bulkhead import ACQUIRED, MUST_WAIT, BulkheadTable
from .compat import micropython, ticks_add, ticks_diff, ticks_ms
from .errors import error_json
from .relay import FAIL, RETRY
from .resphead import RESERVE
from .strtab import table

_CONN = FailureReason.CONNECTION_ERROR
_RETRY_AFTER = b"retry-after:"


class Guard:
    """Every table is made in __init__ and by the set_*() calls at boot."""

    def __init__(self, gw, slots, max_breakers, max_bulkheads, max_window, budget):
        self.gw = gw
        self.breakers = BreakerTable(max_breakers, max_window)
        self.bulkheads = BulkheadTable(max_bulkheads)
        self.budget = budget
        ns = gw.max_services
        self.s_breaker = table("h", ns, -1)
        self.s_bulkhead = table("h", ns, -1)
        self.s_retry = table("h", ns, -1)  # index in policies, or -1
        self.s_timeouts = (table("i", ns), table("i", ns), table("i", ns))  # connect, first byte, total
        self.guarded = bytearray(ns)  # 1: enter() has work to do for the service
        self.refusals: list = [None] * ns  # (circuit open body, bulkhead full body) per service
        self.policies: list = []  # RetryPolicy
        self.statuses: list = []  # the answer statuses each policy retries (a tuple of ints)
        self._r = None  # route -> override index (table "h"), once a route has settings
        self.r_timeouts = ([], [], [])
        self.r_retry: list = []  # override index -> policy index, -1 the service's, -2 none
        self.fallbacks: list = []  # override index -> (status, content type, body) or None
        # Per slot: the call in flight.
        self._svc = [-1] * slots
        self._rid = [-1] * slots
        self._bid = [-1] * slots  # breaker admitted and not yet told the outcome
        self._bh = [-1] * slots  # bulkhead permit held
        self._pol = [-1] * slots  # retry policy of this request
        self._tries = [0] * slots
        self._t0: list = [0] * slots  # first attempt began (ticks)
        self._ts: list = [0] * slots  # this attempt began
        self._delay = [0] * slots  # retry_answer()'s chosen wait
        self._first = [0] * slots  # the first-byte timeout enter() chose
        self._wait_on = [-1] * slots  # bulkhead whose queue the slot is in
        self._seq = [0] * slots  # its place in that queue
        self._next_seq = 0
        self.events = None  # an asyncio.Event per slot, made when a bulkhead has a queue
        self.stale_tag = None  # medio.STALE_AGE, when a route's fallback is its cached answer
        self.refused_open = 0
        self.refused_full = 0
        self.retries = 0
        self.budget_exhausted = 0
        self.timeouts = 0

    # -- configuration (allocates: boot) ---------------------------------------------------------

    def attach(self, upstream):
        """The server's relays ask retry_answer(); their per-request timeouts exist from boot."""
        for rl in upstream.relays:
            rl.guard = self
            rl.connect_ms = 0
            rl.end_by = None

    def set_breaker(self, sid, bid):
        self.s_breaker[sid] = bid
        self.guarded[sid] = 1

    def set_bulkhead(self, sid, b):
        self.s_bulkhead[sid] = b
        self.guarded[sid] = 1
        if self.events is None and self.bulkheads.queue_timeout_ms(b) > 0:
            self.events = [asyncio.Event() for _ in self._svc]

    def add_policy(self, policy, statuses):
        if len(self.policies) >= 127:
            raise ValueError("resilience: at most 127 retry policies")
        self.policies.append(policy)
        self.statuses.append(statuses)
        return len(self.policies) - 1

    def prepare_service(self, sid, name):
        """After the service's settings: the refusal bodies that name it."""
        if self.s_retry[sid] >= 0 or any(t[sid] for t in self.s_timeouts):
            self.guarded[sid] = 1
        self.refusals[sid] = (
            error_json(503, "circuit_open", "service %r: circuit open" % name),
            error_json(503, "bulkhead_full", "service %r: too many requests in flight" % name),
        )

    def route_override(self, rid):
        """The override index of route rid, made on first use (allocates)."""
        if self._r is None:
            self._r = table("h", self.gw.max_routes, -1)
        k = self._r[rid]
        if k < 0:
            k = self._r[rid] = len(self.r_retry)
            for t in self.r_timeouts:
                t.append(0)
            self.r_retry.append(-1)
            self.fallbacks.append(None)
        return k

    def override_of(self, rid):
        """Route rid's override index, or -1 when it has no settings of its own."""
        return self._r[rid] if self._r is not None else -1

    def set_fallback(self, rid, status, ctype, body, cached=False):
        """Route rid's answer when its service refuses: its cached answer (cached), else status
        (0: none) with body."""
        self.fallbacks[self.route_override(rid)] = (status, ctype, body, cached)

    # -- the request path (no allocation) ----------------------------------------------------------

    @micropython.native
    def enter(self, slot, rl, svc, rid, timeout_ms):
        """Before the first attempt: the first-byte timeout to give relay.begin() (> 0), 0 when the
        request must wait in the bulkhead's queue (queue()), -1 refused by the breaker, -2 by the
        bulkhead (then refuse()). Sets rl's connect timeout and deadline."""
        i = slot.index
        self._svc[i] = svc
        self._rid[i] = rid
        rl.connect_ms = 0
        rl.end_by = None
        self._pol[i] = -1
        if not self.guarded[svc]:
            return timeout_ms
        now = ticks_ms()
        self._t0[i] = now
        self._tries[i] = 1
        bid = self.s_breaker[svc]
        if bid >= 0:
            if not self.breakers.admit(bid, now):
                self.refused_open += 1
                return -1
            self._bid[i] = bid
        k = self._r[rid] if self._r is not None else -1
        pol = self.s_retry[svc]
        if k >= 0 and self.r_retry[k] != -1:
            pol = self.r_retry[k]
        self._pol[i] = pol if pol >= 0 else -1
        if pol >= 0:
            self.budget.note_request(svc, now)
        total = self._timeout(svc, k, 2)
        if total:
            rl.end_by = ticks_add(now, total)
        rl.connect_ms = self._timeout(svc, k, 0)
        first = self._timeout(svc, k, 1)
        if first:
            timeout_ms = first
        self._first[i] = timeout_ms
        b = self.s_bulkhead[svc]
        if b >= 0:
            r = self.bulkheads.acquire_permit(b)
            if r == ACQUIRED:
                self._bh[i] = b
            elif r == MUST_WAIT:
                self._wait_on[i] = b
                return 0
            else:
                self._drop_call(i)
                self.refused_full += 1
                return -2
        self._ts[i] = now
        return timeout_ms

    @micropython.native
    def _timeout(self, svc, k, which):
        v = self.r_timeouts[which][k] if k >= 0 else 0
        return v if v else self.s_timeouts[which][svc]

    @micropython.native
    def retry_answer(self, rl, he):
        """The relay has an answer head: True if the request is to be tried again instead (the
        failure is recorded, the wait chosen); the relay then drops the answer. No allocation."""
        slot = rl.slot
        i = slot.index
        pol = self._pol[i]
        if pol < 0:
            return False
        status = rl.head.status
        if status not in self.statuses[pol] or not slot.method & IDEMPOTENT_METHODS:
            return False
        ra = _retry_after(slot.io, RESERVE, he)
        d = self._next_delay(i, pol, ra)
        if d < 0:
            return False
        self._record(i, classify(status))
        self._delay[i] = d
        return True

    @micropython.native
    def _next_delay(self, i, pol, retry_after_s):
        now = ticks_ms()
        d = self.policies[pol].next_delay(self._tries[i], ticks_diff(now, self._t0[i]), retry_after_s)
        if d >= 0 and not self.budget.budget_allows(self._svc[i], now):
            self.budget_exhausted += 1
            return -1
        return d

    @micropython.native
    def after(self, slot, rl, w):
        """An attempt ended with relay code w: its outcome goes to the breaker. Returns the ms to
        wait before the next attempt (then again()), or -1: the request is done with the upstream."""
        i = slot.index
        if w == RETRY:
            d = self._delay[i]
            rl._until(d + 1000)  # the reaper leaves the wait alone (the deadline still holds)
            return d
        if w == FAIL:
            pol = self._pol[i]
            if pol >= 0 and (not rl.sent or slot.method & IDEMPOTENT_METHODS):
                d = self._next_delay(i, pol, -1)
                if d >= 0:
                    self._record(i, _CONN)
                    rl._until(d + 1000)
                    return d
            self._record(i, _CONN)
        elif not rl.complete:  # cut off mid-answer (reset, closed early, garbled framing)
            self._record(i, _CONN)
        else:
            self._record(i, classify(rl.head.status) if rl.head.status else SUCCESS)
        self.release(slot)
        return -1

    @micropython.native
    def again(self, slot):
        """After the wait: True if the next attempt may go (the breaker admits it); False: refuse()
        with -1. No allocation."""
        i = slot.index
        svc = self._svc[i]
        now = ticks_ms()
        bid = self.s_breaker[svc]
        if bid >= 0:
            if not self.breakers.admit(bid, now):
                self.refused_open += 1
                return False
            self._bid[i] = bid
        self._tries[i] += 1
        self._ts[i] = now
        self.retries += 1
        self.budget.note_retry(svc, now)
        return True

    @micropython.native
    def _record(self, i, outcome):
        bid = self._bid[i]
        if bid >= 0:
            self._bid[i] = -1
            self.breakers.record(bid, outcome, ticks_diff(ticks_ms(), self._ts[i]), ticks_ms())

    @micropython.native
    def _drop_call(self, i):
        """A call admitted but never made: the breaker's probe place goes back."""
        bid = self._bid[i]
        if bid >= 0:
            self._bid[i] = -1
            self.breakers.release(bid)

    @micropython.native
    def cancelled(self, slot):
        """The reaper cut the request short while it waited for the upstream: a timeout."""
        i = slot.index
        svc = self._svc[i]
        if svc >= 0 and self.guarded[svc]:
            self.timeouts += 1
        if self._bid[i] >= 0:
            self._record(i, FailureReason.TIMEOUT)
        self.release(slot)

    @micropython.native
    def release(self, slot):
        """The request is over (or the connection is): give back whatever it holds. Idempotent."""
        i = slot.index
        self._drop_call(i)
        b = self._wait_on[i]
        if b >= 0:  # cancelled while queued
            self._wait_on[i] = -1
            self.bulkheads.leave_queue(b, False)
        b = self._bh[i]
        if b >= 0:
            self._bh[i] = -1
            if self.bulkheads.release_permit(b):
                self._wake(b)

    @micropython.native
    def _wake(self, b):
        """The freed permit went to b's oldest waiter: wake that slot's request."""
        best = -1
        wait_on = self._wait_on
        seq = self._seq
        for j in range(len(wait_on)):
            if wait_on[j] == b and (best < 0 or seq[j] - seq[best] < 0):
                best = j
        if best >= 0:
            wait_on[best] = -1
            self._bh[best] = b
            self.events[best].set()  # type: ignore

    # -- waiting and refusing (allocate: off the common path) -----------------------------------

    async def queue(self, slot):
        """Wait in the bulkhead's queue (enter() returned 0): the first-byte timeout once a permit
        came, or -2 when the queue timeout passed first."""
        i = slot.index
        b = self._wait_on[i]
        ev = self.events[i]  # type: ignore
        ev.clear()
        self._next_seq = (self._next_seq + 1) & 0x3FFFFFFF
        self._seq[i] = self._next_seq
        qto = self.bulkheads.queue_timeout_ms(b)
        slot.deadline = ticks_add(ticks_ms(), qto + 1000)  # the queue's own timeout comes first
        try:
            await asyncio.wait_for_ms(ev.wait(), qto)
        except asyncio.TimeoutError:
            pass
        if self._bh[i] == b:  # handed a permit (even if the timeout fired as well)
            self._ts[i] = ticks_ms()
            return self._first[i]
        self._wait_on[i] = -1
        self.bulkheads.leave_queue(b, True)
        self._drop_call(i)
        self.refused_full += 1
        return -2

    @micropython.native  # as bytecode its frame came from the heap: 248 B per refusal
    def refuse(self, srv, slot, sock, code):
        """Answer a refused request (code -1: circuit open, -2: bulkhead full): the route's fallback,
        (its cached answer, else a static one), else 503 naming the service, with Retry-After (the time the breaker stays open). Returns
        0 or 1 as server._send() does (resconfig made sure every refusal fits the I/O buffer), or 3
        when a cached answer's body is still to be sent (medio.send_cached_body())."""
        i = slot.index
        svc = self._svc[i]
        rid = self._rid[i]
        k = self._r[rid] if self._r is not None else -1
        fb = self.fallbacks[k] if k >= 0 else None
        if fb is not None:
            if fb[3]:  # the route's last cached answer, fresh or stale
                mio = srv.medio
                cache = mio.med.cache
                now = ticks_ms()
                e = cache.lookup(slot, rid, now, False, True)
                if e >= 0 and cache.hlen[e] + 128 <= len(slot.io):
                    mio.entry[slot.index] = e
                    return mio._send_cached(slot, sock, e, now, self.stale_tag)
            if fb[0]:
                return srv._send(slot, sock, fb[0], fb[1], fb[2])
        ra = 1
        if code == -1:
            bid = self.s_breaker[svc]
            ra = (self.breakers.retry_after_ms(bid, ticks_ms()) + 999) // 1000
            ra = ra if ra > 0 else 1
        return srv._send(slot, sock, 503, None, self.refusals[svc][0 if code == -1 else 1], None, ra)

    # -- display (allocates) ------------------------------------------------------------------------

    def stats(self):
        return {
            "breakers": self.breakers.count,
            "open": sum(1 for b in range(self.breakers.count) if self.breakers.state(b) == CircuitState.OPEN),
            "refused_open": self.refused_open,
            "refused_full": self.refused_full,
            "retries": self.retries,
            "budget_exhausted": self.budget_exhausted,
            "timeouts": self.timeouts,
        }


@micropython.native
def _retry_after(buf, start, end):
    """Retry-After in whole seconds from the head in buf[start:end], or -1 (absent, or an HTTP
    date: then the policy's own delay applies). No allocation."""
    n = len(_RETRY_AFTER)
    i = start
    while i < end:
        if buf[i] == 10:  # a line starts after each LF
            k = 0
            while k < n and i + 1 + k < end and (buf[i + 1 + k] | 32) == _RETRY_AFTER[k]:
                k += 1
            if k == n:
                j = i + 1 + n
                while j < end and (buf[j] == 32 or buf[j] == 9):  # optional whitespace
                    j += 1
                if j == end or not 48 <= buf[j] <= 57:
                    return -1
                v = 0
                while j < end and 48 <= buf[j] <= 57 and v < 100000:  # stays below 2**30
                    v = v * 10 + buf[j] - 48
                    j += 1
                return v
        i += 1
    return -1

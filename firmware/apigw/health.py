"""Health of upstream instances: active probe state and passive outlier ejection, sans-IO.

Active checks: the shell asks due(iid, now) for each instance, sends a probe when it answers True,
calls probe_started() as it goes out and probe_result() when it ends (or fails, or times out).
Settings are per instance (configure(); an instance never configured uses the defaults), so a pool
configures its members one by one. Health starts UNKNOWN; `rise` consecutive successes make an
UNKNOWN or UNHEALTHY instance HEALTHY, `fall` consecutive failures make any instance UNHEALTHY. A
success slower than slow_ms (0: off) is DEGRADED (up; the balancer gives it half its weight); the
next fast success is HEALTHY again. An answer later than timeout_ms counts as a failure. A probe
in flight holds due() back until both its interval and its timeout have passed (a lost probe is
then replaced; the shell should report it with probe_result(iid, False, ...)).

Passive checks (outlier detection, like Envoy's): record() takes every real request's outcome
(False for a connection failure or a 5xx). consecutive_errors failures in a row eject the instance
for base_ejection_ms * times_ejected, times_ejected growing by one per ejection up to
max_ejection_factor; a success resets the count. Results recorded while ejected are ignored.
After an ejection ends, every decay_ms without a new one takes one off times_ejected (decay_ms is
base_ejection_ms * max_ejection_factor, the longest ejection, unless set after set_outlier()).
The decay is applied lazily by record(). Ejection is separate from health(): the balancer routes
to an instance only if it is up (HEALTHY/DEGRADED, or UNKNOWN by its own policy) and not ejected().
max_ejected_percent needs pool membership: set_pool(iid, pool) gives it; an instance without a
pool is never held back by it. An ejection is refused if it would put more than that share of the
pool's members out (so a pool of one is never ejected at 50%).

Ticks are stored modulo 2**30, compared as in ratelimit.py (every intermediate below 2**30:
small ints on a board). Intervals and ejections are below 2**29 ms; an instance nobody asks about
for 2**29 ms (6.2 days) can see an old stamp as recent again. __init__ allocates every table;
due(), probe_started(), probe_result(), record(), ejected(), health() and forget()
allocate nothing; configure(), set_outlier() and state() do.

This module owns per-instance health state only: it does no I/O, reads no clock, sends no probes
and does not know the balancer's tables (instance ids and pool ids are plain ints).
"""

from .compat import const, micropython
from .strtab import table

HEALTHY = 0
UNHEALTHY = 1
UNKNOWN = 2
DEGRADED = 3

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_PROBED = const(1)  # flags: a probe was started at least once
_INFLIGHT = const(2)  # a probe is out
_EJECTED = const(4)  # ejected until _until[iid]
_NO_POOL = const(255)


def _check(name, v, lo, hi):
    if not lo <= v <= hi:
        raise ValueError("health: %s must be %d..%d" % (name, lo, hi))


class HealthChecker:
    """Health of up to max_instances instances (ids 0..max_instances-1). Memory made in __init__."""

    def __init__(self, max_instances=256):
        _check("max_instances", max_instances, 1, 4096)
        self.max_instances = n = max_instances
        self._health = bytearray(n)
        self._succ = bytearray(n)  # consecutive probe successes / failures (saturate at 255)
        self._fail = bytearray(n)
        self._flags = bytearray(n)
        self._rise = bytearray(n)
        self._fall = bytearray(n)
        self._interval = table("i", n)
        self._timeout = table("i", n)
        self._slow = table("i", n)
        self._probe_at = table("i", n)  # start of the last probe, modulo 2**30
        self._elapsed = table("i", n)  # duration of the last probe
        self._errs = bytearray(n)  # consecutive failures seen in traffic (saturate at 255)
        self._times = bytearray(n)  # times_ejected
        self._until = table("i", n)  # end of the (last) ejection, modulo 2**30; then decay stamp
        self._pool = bytearray(n)
        self.set_outlier()
        for iid in range(n):
            self.forget(iid)

    # -- settings (allocate: off the hot path) --------------------------------------------------

    def configure(self, iid, interval_ms=5000, timeout_ms=1000, rise=2, fall=3, slow_ms=500):
        """Active check settings of instance iid (kept until forget())."""
        _check("interval_ms", interval_ms, 1, _HALF - 1)
        _check("timeout_ms", timeout_ms, 1, _HALF - 1)
        _check("slow_ms", slow_ms, 0, _HALF - 1)
        _check("rise", rise, 1, 255)
        _check("fall", fall, 1, 255)
        self._interval[iid] = interval_ms
        self._timeout[iid] = timeout_ms
        self._slow[iid] = slow_ms
        self._rise[iid] = rise
        self._fall[iid] = fall

    def set_outlier(self, consecutive_errors=5, base_ejection_ms=30000, max_ejection_factor=10, max_ejected_percent=50):
        """Passive check settings, the same for every instance. Also sets decay_ms."""
        _check("consecutive_errors", consecutive_errors, 1, 255)
        _check("max_ejection_factor", max_ejection_factor, 1, 255)
        _check("base_ejection_ms", base_ejection_ms, 1, (_HALF - 1) // max_ejection_factor)
        _check("max_ejected_percent", max_ejected_percent, 0, 100)
        self.consecutive_errors = consecutive_errors
        self.base_ejection_ms = base_ejection_ms
        self.max_ejection_factor = max_ejection_factor
        self.max_ejected_percent = max_ejected_percent
        self.decay_ms = base_ejection_ms * max_ejection_factor  # < 2**29

    def set_pool(self, iid, pool):
        """Put iid in pool 0..254 (for max_ejected_percent), or in none with -1."""
        _check("pool", pool, -1, _NO_POOL - 1)
        self._pool[iid] = _NO_POOL if pool < 0 else pool

    def forget(self, iid):
        """Instance iid was removed: default settings, UNKNOWN, never probed, not ejected, no pool."""
        self._health[iid] = UNKNOWN
        self._succ[iid] = 0
        self._fail[iid] = 0
        self._flags[iid] = 0
        self._rise[iid] = 2
        self._fall[iid] = 3
        self._interval[iid] = 5000
        self._timeout[iid] = 1000
        self._slow[iid] = 500
        self._probe_at[iid] = 0
        self._elapsed[iid] = 0
        self._errs[iid] = 0
        self._times[iid] = 0
        self._until[iid] = 0
        self._pool[iid] = _NO_POOL

    # -- active checks (no allocation) ------------------------------------------------------------

    @micropython.native
    def due(self, iid, now_ms):
        """True when instance iid should be probed at now_ms. No allocation."""
        f = self._flags[iid]
        if not f & _PROBED:
            return True
        age = ((now_ms & _MASK) - self._probe_at[iid]) & _MASK
        if age >= _HALF:  # now_ms is older than the last probe
            return False
        if f & _INFLIGHT and age < self._timeout[iid]:
            return False
        return age >= self._interval[iid]

    def probe_started(self, iid, now_ms):
        """A probe of iid went out at now_ms. No allocation."""
        self._probe_at[iid] = now_ms & _MASK
        self._flags[iid] |= _PROBED | _INFLIGHT

    @micropython.native
    def probe_result(self, iid, ok, elapsed_ms, now_ms):
        """A probe of iid ended after elapsed_ms (ok: it answered as expected); the new health.
        Without probe_started() the probe counts as started at now_ms. No allocation."""
        flags = self._flags
        f = flags[iid]
        if not f & _INFLIGHT:
            self._probe_at[iid] = now_ms & _MASK
        flags[iid] = (f | _PROBED) & ~_INFLIGHT
        if elapsed_ms < 0:
            elapsed_ms = 0
        elif elapsed_ms >= _HALF:
            elapsed_ms = _HALF - 1
        self._elapsed[iid] = elapsed_ms
        h = self._health[iid]
        if ok and elapsed_ms <= self._timeout[iid]:
            self._fail[iid] = 0
            s = self._succ[iid]
            if s < 255:
                s += 1
                self._succ[iid] = s
            slow = 0 < self._slow[iid] < elapsed_ms
            if h == HEALTHY or h == DEGRADED or s >= self._rise[iid]:
                h = DEGRADED if slow else HEALTHY
        else:
            self._succ[iid] = 0
            s = self._fail[iid]
            if s < 255:
                s += 1
                self._fail[iid] = s
            if s >= self._fall[iid]:
                h = UNHEALTHY
        self._health[iid] = h
        return h

    def health(self, iid):
        """HEALTHY, UNHEALTHY, UNKNOWN or DEGRADED (active checks only). No allocation."""
        return self._health[iid]

    def timeout_ms(self, iid):
        return self._timeout[iid]

    # -- passive checks (no allocation) -----------------------------------------------------------

    @micropython.native
    def ejected(self, iid, now_ms):
        """True while iid's ejection lasts (an ended one is cleared here). No allocation."""
        flags = self._flags
        f = flags[iid]
        if not f & _EJECTED:
            return False
        left = (self._until[iid] - (now_ms & _MASK)) & _MASK
        if 0 < left < _HALF:
            return True
        flags[iid] = f & ~_EJECTED
        return False

    @micropython.native
    def record(self, iid, ok, now_ms):
        """Outcome of one real request to iid; True when this failure ejects it. No allocation."""
        if self.ejected(iid, now_ms):
            return False
        now = now_ms & _MASK
        times = self._times
        t = times[iid]
        if t:  # decay: one off times_ejected per decay_ms since the last ejection ended
            until = self._until
            quiet = (now - until[iid]) & _MASK
            d = self.decay_ms
            if d <= quiet < _HALF:
                steps = quiet // d
                t = 0 if steps >= t else t - steps
                times[iid] = t
                # stamp + steps * d could pass 2**30 (a big int on a board): subtract the complement
                until[iid] = (until[iid] - (_MASK - steps * d) - 1) & _MASK  # steps * d <= quiet < 2**29
        if ok:
            self._errs[iid] = 0
            return False
        e = self._errs[iid]
        if e < 255:
            e += 1
            self._errs[iid] = e
        if e < self.consecutive_errors:
            return False
        pool = self._pool[iid]
        if pool != _NO_POOL and not self._room(pool, now):
            return False  # the count stays: the next failure tries again
        if t < self.max_ejection_factor:
            t += 1
            times[iid] = t
        d = self.base_ejection_ms * t  # < 2**29 (set_outlier); now + d could pass 2**30, so:
        self._until[iid] = (now - (_MASK - d) - 1) & _MASK
        self._flags[iid] |= _EJECTED
        self._errs[iid] = 0
        return True

    @micropython.native
    def _room(self, pool, now):
        """True if one more member of pool may be ejected under max_ejected_percent."""
        pools = self._pool
        members = 0
        out = 0
        for k in range(self.max_instances):
            if pools[k] == pool:
                members += 1
                if self.ejected(k, now):
                    out += 1
        return (out + 1) * 100 <= self.max_ejected_percent * members  # <= 100 * 4096

    # -- display (allocates) ----------------------------------------------------------------------

    def state(self, iid):
        """A dict of iid's state for display (allocates). Stamps are ticks modulo 2**30;
        ejected_until is None unless the instance was ejected when last asked."""
        f = self._flags[iid]
        return {
            "health": self._health[iid],
            "successes": self._succ[iid],
            "failures": self._fail[iid],
            "errors": self._errs[iid],
            "ejected_until": self._until[iid] if f & _EJECTED else None,
            "times_ejected": self._times[iid],
            "last_probe_ms": self._probe_at[iid] if f & _PROBED else None,
            "last_elapsed_ms": self._elapsed[iid],
            "probing": bool(f & _INFLIGHT),
            "pool": -1 if self._pool[iid] == _NO_POOL else self._pool[iid],
        }

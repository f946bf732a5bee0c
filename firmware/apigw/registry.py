"""Self-registration of upstream instances (service discovery), sans-IO.

An instance announces itself with register(pool, host, port, weight, ttl_ms, now_ms) and keeps
itself alive by registering again or by heartbeat() before its ttl runs out; expire(now_ms), run
about once a second, removes the instances whose ttl has passed. A pool takes registrations only
after allow(pool) (pools opt in from configuration). Registered instances live in the balancer's
tables like configured ones (they start UNKNOWN and are selectable as register_instance() says);
this module marks which ids came from a registration and when each one expires. An address that
is configured statically in a pool is never taken over, refreshed or removed from here (409).
Hosts are compared without regard to ASCII case; the balancer keeps them as given.

Per-instance state is a bytearray flag and an array of expiry stamps indexed by instance id, both
made in __init__. Stamps are ticks modulo 2**30, compared as in health.py and ratelimit.py (every
intermediate below 2**30: small ints on a board); a ttl is at most max_ttl_ms (< 2**29). An expired
instance that expire() does not see for 2**29 ms (6.2 days) would look alive again: call it often.
expire() with nothing due, is_dynamic(), remaining_ms() and count() allocate nothing; register(),
heartbeat(), deregister(), expire() when it removes an instance, allow() and entries() do.

Errors are RegistryError, carrying the HTTP status the endpoint answers with.

This module owns the registration bookkeeping only. It must not read a clock (callers pass now_ms
= ticks_ms()), do I/O, parse HTTP or JSON, authenticate callers (the endpoint does), or probe
instances (health.py holds their health; the caller configures probes for a new instance).
"""

from .compat import const, micropython
from .lb import LbError
from .strtab import table

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_MAX_HOST = const(253)
_MIN_TTL = const(1000)
_HEALTH_POOLS = const(255)  # health.set_pool() takes pools 0..254


class RegistryError(ValueError):
    """A refused registration: .status is the HTTP status to answer with, .message says why.
    400 bad value (the message names the field), 403 the pool takes no registrations, 404 no such
    pool or registered instance, 409 the address is configured statically, 503 instance table full."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_host(host):
    if not isinstance(host, str) or not 1 <= len(host) <= _MAX_HOST:
        raise RegistryError(400, "host must be 1..253 characters")
    for c in host:
        o = ord(c)
        if o <= 0x20 or o >= 0x7F or c == "/":  # spaces, controls, non-ASCII (an IDNA name is ASCII)
            raise RegistryError(400, "host must be printable ASCII without spaces or '/'")


def _check_range(name, v, lo, hi):
    if not _is_int(v) or not lo <= v <= hi:
        raise RegistryError(400, "%s must be %d..%d" % (name, lo, hi))


class Registry:
    """Dynamic instances of the pools of lb (a lb.LoadBalancer). health: an optional
    health.HealthChecker told of arrivals and departures; on_remove(iid): an optional callback run
    after an instance has left (drops idle connections to it). All tables are made here."""

    def __init__(self, lb, health=None, on_remove=None, default_ttl_ms=30000, max_ttl_ms=86400000):
        if not _is_int(max_ttl_ms) or not _MIN_TTL <= max_ttl_ms < _HALF:
            raise ValueError("registry: max_ttl_ms must be %d..%d" % (_MIN_TTL, _HALF - 1))
        if not _is_int(default_ttl_ms) or not _MIN_TTL <= default_ttl_ms <= max_ttl_ms:
            raise ValueError("registry: default_ttl_ms must be %d..max_ttl_ms" % _MIN_TTL)
        self.lb = lb
        self.health = health
        self.on_remove = on_remove
        self.default_ttl_ms = default_ttl_ms
        self.max_ttl_ms = max_ttl_ms
        self._n = lb.max_instances
        self._dyn = bytearray(self._n)  # 1: the instance came from register()
        self._exp = table("i", self._n)  # its expiry, ticks modulo 2**30
        self._count = 0
        self.accepts = bytearray(lb.max_pools)  # 1: the pool takes registrations

    # -- configuration and registration (allocate: off the hot path) ----------------------------

    def allow(self, pool, on=True):
        """Let pool (a name or an id) take registrations, or stop it with on=False. Instances
        already registered stay until they expire or deregister."""
        self.accepts[self._pool_id(pool)] = 1 if on else 0

    def register(self, pool, host, port, weight=1, ttl_ms=None, now_ms=0):
        """(iid, created): a new instance of pool (a name or an id), or, when host:port is already
        registered there, the same one with its expiry and weight refreshed (created False).
        Raises RegistryError: 404 no pool, 403 pool not open, 400 bad field, 409 host:port is
        configured statically in the pool, 503 instance table full. Checked in that order."""
        pid = self._pool_id(pool)
        if not self.accepts[pid]:
            raise RegistryError(403, "pool %r does not accept registrations" % (pool,))
        _check_host(host)
        _check_range("port", port, 1, 0xFFFF)
        _check_range("weight", weight, 1, 255)
        ttl = self._ttl(ttl_ms)
        lb = self.lb
        m = lb.find_instance(pid, host, port)
        if m >= 0:
            if not self._dyn[m]:
                raise RegistryError(409, "%s:%d is configured statically in pool %r" % (host, port, pool))
            lb.set_weight(m, weight)
            self._stamp(m, now_ms, ttl)
            return m, False
        try:
            iid = lb.register_instance(pid, host, port, weight)
        except LbError:  # pool and fields are checked above: only a full table is left
            raise RegistryError(503, "instance table full (%d instances)" % self._n)
        self._dyn[iid] = 1
        self._count += 1
        self._stamp(iid, now_ms, ttl)
        h = self.health
        if h is not None and iid < h.max_instances:
            h.forget(iid)
            h.set_pool(iid, pid if pid < _HEALTH_POOLS else -1)
        return iid, True

    def heartbeat(self, iid, now_ms, ttl_ms=None):
        """Extend iid's life to ttl_ms (default_ttl_ms if None) from now_ms; returns that ttl.
        RegistryError 404 if iid is not a registered instance, 400 for a bad ttl_ms."""
        self._check_dynamic(iid)
        ttl = self._ttl(ttl_ms)
        self._stamp(iid, now_ms, ttl)
        return ttl

    def deregister(self, iid):
        """Remove registered instance iid now, open connections or not (RegistryError 404 if iid
        is not a registered instance)."""
        self._check_dynamic(iid)
        self._drop(iid)

    # -- the periodic sweep and queries (no allocation) -----------------------------------------

    @micropython.native
    def expire(self, now_ms):
        """Remove every registered instance whose ttl has passed at now_ms; how many went.
        No allocation unless one is removed (native: the frame is not taken from the heap)."""
        if not self._count:
            return 0
        dyn = self._dyn
        exp = self._exp
        now = now_ms & _MASK
        removed = 0
        for iid in range(self._n):
            if dyn[iid]:
                left = (exp[iid] - now) & _MASK
                if left == 0 or left >= _HALF:
                    self._drop(iid)
                    removed += 1
        return removed

    def is_dynamic(self, iid):
        """True if iid is an instance that came from register(). No allocation."""
        return _is_int(iid) and 0 <= iid < self._n and self._dyn[iid] == 1

    def remaining_ms(self, iid, now_ms):
        """Milliseconds iid has left at now_ms; 0 if expired or not registered. No allocation."""
        if not self.is_dynamic(iid):
            return 0
        left = (self._exp[iid] - (now_ms & _MASK)) & _MASK
        return left if left < _HALF else 0

    def count(self):
        """Number of registered instances. No allocation."""
        return self._count

    # -- display (allocates) --------------------------------------------------------------------

    def entries(self, now_ms):
        """A dict per registered instance, in id order, for display (allocates)."""
        lb = self.lb
        out = []
        for iid in range(self._n):
            if self._dyn[iid]:
                inst = lb.get_instance(iid)
                out.append(
                    {
                        "id": iid,
                        "pool": lb.get_pool(inst.pool).name,
                        "host": inst.address,
                        "port": inst.port,
                        "weight": inst.weight,
                        "ttl_ms_left": self.remaining_ms(iid, now_ms),
                    }
                )
        return out

    # -- internals ------------------------------------------------------------------------------

    def _pool_id(self, pool):
        lb = self.lb
        if isinstance(pool, str):
            pid = lb.pool_id(pool)
        elif _is_int(pool):
            pid = pool if 0 <= pool < len(lb._names) else -1  # ids are 0..pools registered - 1
        else:
            raise RegistryError(400, "pool must be a name or an id")
        if pid < 0:
            raise RegistryError(404, "no pool %r" % (pool,))
        return pid

    def _ttl(self, ttl_ms):
        if ttl_ms is None:
            return self.default_ttl_ms
        _check_range("ttl_ms", ttl_ms, _MIN_TTL, self.max_ttl_ms)
        return ttl_ms

    def _check_dynamic(self, iid):
        if not self.is_dynamic(iid):
            raise RegistryError(404, "no registered instance %r" % (iid,))

    def _stamp(self, iid, now_ms, ttl):
        # now + ttl could pass 2**30 (a big int on a board): subtract the complement instead
        self._exp[iid] = ((now_ms & _MASK) - (_MASK - ttl) - 1) & _MASK  # ttl < 2**29

    def _drop(self, iid):
        """Take iid out of the balancer and out of these tables, then tell health and on_remove."""
        self.lb.remove_instance(iid, force=True)
        self._dyn[iid] = 0
        self._exp[iid] = 0
        self._count -= 1
        h = self.health
        if h is not None and iid < h.max_instances:
            h.forget(iid)
        if self.on_remove is not None:
            self.on_remove(iid)

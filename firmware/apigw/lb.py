"""Load balancing: pools of upstream instances in fixed tables, and the choice of one per request.

Instances and pools get small integer ids when registered. Every per-instance fact lives in an
array indexed by instance id (pool, weight, health, drained/ejected flags, active connections, WRR
current weight, the next instance of the same pool); a pool is a linked list through `_next`, in
registration order, with its head, size, strategy and round-robin cursor in per-pool arrays.
__init__ allocates every table; select_instance(), increment_connections() and
decrement_connections() allocate nothing (native code, every intermediate below 2**30).

Which instances are selectable: HEALTHY, DEGRADED and UNKNOWN ones (a new instance is UNKNOWN and
counts as up until a health check says otherwise), unless drained or ejected. Strategies:
- ROUND_ROBIN: cycles through the pool in registration order.
- LEAST_CONNECTIONS: fewest active connections; ties go round robin (the scan starts at the cursor).
- Both treat DEGRADED instances as a fallback: one is chosen only when no HEALTHY/UNKNOWN one is.
- WEIGHTED_ROUND_ROBIN: nginx's smooth weighted round robin (weights 5,1,1 give a a b a c a a).
  A DEGRADED instance counts with half its weight, rounded up. Every change of a pool's selectable
  set or weights restarts its sequence (all current weights back to 0), so they sum to 0 and each
  stays below the pool's total weight in magnitude (at most 255 * 16383 < 2**22).
- IP_HASH: rendezvous (highest random weight) hashing of (client_hash, instance id): a client keeps
  its instance while that instance is selectable; when one of N leaves only its clients move, spread
  over the rest. DEGRADED instances keep their clients (moving them would defeat the hash).
Weights are 1..255; 0 is refused: drain() takes an instance out of rotation.

This module owns the pool and instance tables and the choice only. It must not do I/O, read a clock,
run health checks or parse configuration: callers report health, connections and client addresses.
"""

from .compat import const, micropython
from .native import hash_span
from .strtab import table

_NONE = const(-1)
_DRAINED = const(1)
_EJECTED = const(2)
_SKIPPED = const(4)  # failover: tried already for the request being placed (skip())
_MAX_WEIGHT = const(255)


class BalancingStrategy:
    ROUND_ROBIN = 0
    LEAST_CONNECTIONS = 1
    WEIGHTED_ROUND_ROBIN = 2
    IP_HASH = 3
    NAMES = ("round_robin", "least_connections", "weighted_round_robin", "ip_hash")


class HealthStatus:
    """An instance's health as the balancer sees it (not gwtypes.HealthStatus, which is a service's)."""

    HEALTHY = 0
    UNHEALTHY = 1
    UNKNOWN = 2
    DEGRADED = 3
    NAMES = ("healthy", "unhealthy", "unknown", "degraded")


class LbError(ValueError):
    """A table is full, a name is taken, an id is not in use, or a value is out of range."""


class ServiceInstance:
    """An instance as seen from outside the tables (built on request; not on the hot path)."""

    def __init__(self, iid, address, port, weight, health, connections, drained=False, pool=-1):
        self.id = iid
        self.address = address
        self.port = port
        self.weight = weight
        self.health = health
        self.connections = connections
        self.drained = drained
        self.pool = pool


class ServicePool:
    """A pool as seen from outside the tables; current_index is the position the next round-robin
    scan starts at."""

    def __init__(self, pid, name, instances, current_index, strategy, connection_count):
        self.id = pid
        self.name = name
        self.instances = instances
        self.current_index = current_index
        self.strategy = strategy
        self.connection_count = connection_count


@micropython.native
def _mix(x):
    """Four Feistel rounds over the two 15-bit halves of a 30-bit x: a bijection on 0..2**30-1.
    Each product is 15 bits times a 15-bit constant, below 2**30 (a small int on a board)."""
    lo = x & 0x7FFF
    hi = (x >> 15) & 0x7FFF
    hi ^= ((lo * 0x6B43) >> 9) & 0x7FFF
    lo ^= ((hi * 0x5BD1) >> 7) & 0x7FFF
    hi ^= ((lo * 0x4F1B) >> 8) & 0x7FFF
    lo ^= ((hi * 0x7A6D) >> 10) & 0x7FFF
    return (hi << 15) | lo


@micropython.native
def _score(client, iid):
    """Rendezvous weight of instance iid for a 30-bit client hash. No allocation."""
    return _mix(_mix(client & 0x3FFFFFFF) ^ _mix(iid * 0x9E3))


class LoadBalancer:
    """Up to max_pools pools sharing max_instances instances. All memory is allocated in __init__."""

    def __init__(self, max_pools=128, max_instances=256):
        if not 1 <= max_pools <= 0x7FFF or not 1 <= max_instances <= 0x3FFF:
            raise LbError("load balancer: 1..32767 pools and 1..16383 instances")
        self.max_pools = max_pools
        self.max_instances = max_instances
        self._pool = table("h", max_instances, _NONE)  # owning pool; -1 = id is free
        self._next = table("h", max_instances, _NONE)  # next instance of the same pool
        self._weight = bytearray(max_instances)  # configured, 1..255
        self._ew = bytearray(max_instances)  # effective weight: 0 when not selectable
        self._tier = bytearray(max_instances)  # 0 not selectable, 1 degraded, 2 up
        self._health = bytearray(max_instances)
        self._flags = bytearray(max_instances)  # _DRAINED | _EJECTED | _SKIPPED
        self._gen = bytearray(max_instances)  # +1 (mod 256) each time the id is freed
        self._conns = table("i", max_instances)
        self._cur = table("i", max_instances)  # smooth WRR current weight
        self._port = table("H", max_instances)
        self._key = table("i", max_instances)  # _mix() of each id for IP_HASH, fixed per id
        for i in range(max_instances):
            self._key[i] = _mix(i * 0x9E3)  # < 16384 * 2531 < 2**26
        self._hosts: list = [None] * max_instances  # host per instance, as bytes
        self._head = table("h", max_pools, _NONE)
        self._size = table("H", max_pools)
        self._strategy = bytearray(max_pools)
        self._cursor = table("h", max_pools, _NONE)  # where the next RR/LC scan starts; -1 = head
        self._names = []
        self._by_name = {}

    # -- registration (allocates: configuration time) --------------------------------------------

    def register_pool(self, name, strategy=BalancingStrategy.ROUND_ROBIN):
        """A new pool's id. Raises LbError when the name is taken, the strategy unknown or the
        pool table full."""
        if name in self._by_name:
            raise LbError("load balancer: pool %r already registered" % name)
        if not 0 <= strategy < len(BalancingStrategy.NAMES):
            raise LbError("load balancer: unknown strategy %r" % strategy)
        pid = len(self._names)
        if pid >= self.max_pools:
            raise LbError("load balancer: pool table full (%d pools)" % self.max_pools)
        self._names.append(name)
        self._by_name[name] = pid
        self._strategy[pid] = strategy
        return pid

    def pool_id(self, name):
        """The id of the pool called name, or -1."""
        return self._by_name.get(name, _NONE)

    def register_instance(self, pool, host, port, weight=1):
        """A new instance's id (lowest free), appended to pool's rotation; health starts UNKNOWN."""
        self._check_pool(pool)
        if not 1 <= port <= 0xFFFF:
            raise LbError("load balancer: port %r out of range 1..65535" % port)
        self._check_weight(weight)
        iid = 0
        while iid < self.max_instances and self._pool[iid] != _NONE:
            iid += 1
        if iid == self.max_instances:
            raise LbError("load balancer: instance table full (%d instances)" % self.max_instances)
        self._pool[iid] = pool
        self._next[iid] = _NONE
        self._hosts[iid] = host if isinstance(host, bytes) else host.encode()  # bytes: the relay copies it
        self._port[iid] = port
        self._weight[iid] = weight
        self._health[iid] = HealthStatus.UNKNOWN
        self._flags[iid] = 0
        self._conns[iid] = 0
        last = self._head[pool]
        if last == _NONE:
            self._head[pool] = iid
        else:
            while self._next[last] != _NONE:
                last = self._next[last]
            self._next[last] = iid
        self._size[pool] += 1
        self._refresh(iid)  # from not selectable to UNKNOWN (up): restarts the pool's WRR
        return iid

    def remove_instance(self, iid, force=False):
        """Take iid out of its pool and free its id. Drain it and wait for its connections to end
        first: with connections open it raises LbError unless force (their counts are dropped, and
        a late decrement_connections() could land on a new instance given the same id)."""
        self._check_instance(iid)
        if self._conns[iid] and not force:
            raise LbError("load balancer: instance %d has %d connections" % (iid, self._conns[iid]))
        pool = self._pool[iid]
        nxt = self._next[iid]
        if self._cursor[pool] == iid:
            self._cursor[pool] = nxt
        if self._head[pool] == iid:
            self._head[pool] = nxt
        else:
            p = self._head[pool]
            while self._next[p] != iid:
                p = self._next[p]
            self._next[p] = nxt
        self._size[pool] -= 1
        self._pool[iid] = _NONE
        self._next[iid] = _NONE
        self._hosts[iid] = None
        self._conns[iid] = 0
        self._ew[iid] = self._tier[iid] = 0
        self._gen[iid] = (self._gen[iid] + 1) & 0xFF
        self._restart(pool)

    # -- state changes (no allocation unless an id is invalid) -----------------------------------

    def drain(self, iid, on=True):
        """Drained: never selected, keeps counting its connections."""
        self._set_flag(iid, _DRAINED, on)

    def eject(self, iid, on=True):
        """Ejected (passive checks, circuit breaker): never selected until eject(iid, False)."""
        self._set_flag(iid, _EJECTED, on)

    def set_weight(self, iid, weight):
        """Weight 1..255 (LbError otherwise; drain() is the way to stop traffic)."""
        self._check_instance(iid)
        self._check_weight(weight)
        self._weight[iid] = weight
        self._refresh(iid)

    def mark_healthy(self, iid):
        self._set_health(iid, HealthStatus.HEALTHY)

    def mark_unhealthy(self, iid):
        self._set_health(iid, HealthStatus.UNHEALTHY)

    def mark_degraded(self, iid):
        self._set_health(iid, HealthStatus.DEGRADED)

    def health(self, iid):
        self._check_instance(iid)
        return self._health[iid]

    def reset_index(self, pool):
        """Restart the pool's round robin at its first instance and its WRR sequence."""
        self._check_pool(pool)
        self._cursor[pool] = _NONE
        self._restart(pool)

    @micropython.native
    def increment_connections(self, iid):
        """One more active connection on iid (ignored for ids not in use). No allocation."""
        if 0 <= iid < self.max_instances and self._pool[iid] >= 0:
            self._conns[iid] += 1

    @micropython.native
    def decrement_connections(self, iid):
        """One active connection fewer on iid; never below 0. No allocation."""
        if 0 <= iid < self.max_instances and self._conns[iid] > 0:
            self._conns[iid] -= 1

    def get_connection_count(self, pool_or_none, iid=None):
        """Active connections of instance iid if given, else of the pool, else (None) of all."""
        if iid is not None:
            self._check_instance(iid)
            return self._conns[iid]
        if pool_or_none is None:
            return sum(self._conns)
        return sum(self._conns[i] for i in self._members(pool_or_none))

    # -- selection (no allocation) ---------------------------------------------------------------

    @micropython.native
    def select_instance(self, pool, client_hash=0, exclude=_NONE):
        """The instance to send a request to, or -1 if the pool has no selectable instance (or no
        such pool). client_hash (from client_hash()) is used by IP_HASH only; exclude is an
        instance not to choose this time (the one that just failed: failover). No allocation."""
        if pool < 0 or pool >= len(self._names) or self._head[pool] < 0:
            return _NONE
        s = self._strategy[pool]
        if s == BalancingStrategy.WEIGHTED_ROUND_ROBIN:
            return self._select_wrr(pool, exclude)
        if s == BalancingStrategy.IP_HASH:
            return self._select_hash(pool, client_hash, exclude)
        return self._select_scan(pool, s == BalancingStrategy.LEAST_CONNECTIONS, exclude)

    @micropython.native
    def select_any(self, pool, exclude=_NONE):
        """Panic mode, when select_instance() found nothing: the next instance in round-robin order
        whatever its health or ejection (drained ones still excluded), or -1. No allocation."""
        if pool < 0 or pool >= len(self._names) or self._head[pool] < 0:
            return _NONE
        nxt = self._next
        flags = self._flags
        head = self._head[pool]
        i = self._cursor[pool]
        if i < 0:
            i = head
        k = self._size[pool]
        while k > 0:
            if i != exclude and not flags[i] & (_DRAINED | _SKIPPED):
                self._cursor[pool] = nxt[i]
                return i
            i = nxt[i]
            if i < 0:
                i = head
            k -= 1
        return _NONE

    @micropython.native
    def health_check(self, iid):
        """True if iid is in rotation: up (HEALTHY, DEGRADED or UNKNOWN), not drained, not ejected.
        False for ids not in use. No allocation."""
        return 0 <= iid < self.max_instances and self._pool[iid] >= 0 and self._tier[iid] > 0

    @micropython.native
    def _select_scan(self, pool, least, exclude):
        """Round robin, or least connections with ties by round robin, from the cursor."""
        nxt = self._next
        tier = self._tier
        conns = self._conns
        head = self._head[pool]
        i = self._cursor[pool]
        if i < 0:
            i = head
        best = _NONE
        bt = 0
        bc = 0
        k = self._size[pool]
        while k > 0:
            t = tier[i] if i != exclude else 0
            if t > bt or (t == bt and t > 0 and least and conns[i] < bc):
                best = i
                bt = t
                bc = conns[i]
                if t == 2 and not least:
                    break
            i = nxt[i]
            if i < 0:
                i = head
            k -= 1
        if best >= 0:
            self._cursor[pool] = nxt[best]
        return best

    @micropython.native
    def _select_wrr(self, pool, exclude):
        """nginx's smooth weighted round robin over the selectable instances, in list order."""
        nxt = self._next
        ew = self._ew
        cur = self._cur
        best = _NONE
        bw = 0
        total = 0
        i = self._head[pool]
        while i >= 0:
            w = ew[i]
            if w and i != exclude:
                c = cur[i] + w
                cur[i] = c
                total += w
                if best < 0 or c > bw:
                    best = i
                    bw = c
            i = nxt[i]
        if best >= 0:
            cur[best] = bw - total
        return best

    @micropython.native
    def _select_hash(self, pool, client, exclude):
        """Highest rendezvous score among the selectable instances; ties to the first in the list."""
        nxt = self._next
        tier = self._tier
        key = self._key
        client = _mix(client & 0x3FFFFFFF)
        best = _NONE
        bs = -1
        i = self._head[pool]
        while i >= 0:
            if tier[i] and i != exclude:
                s = _mix(client ^ key[i])  # = _score(client, i)
                if s > bs:
                    best = i
                    bs = s
            i = nxt[i]
        return best

    def peek(self, pool, client_hash=0):
        """(what select_instance() would choose now, what select_any() would in panic mode or -1)
        without moving the pool's round-robin cursor or WRR weights: a dry run (allocates)."""
        self._check_pool(pool)
        members = self._members(pool)
        cursor = self._cursor[pool]
        cur = [self._cur[i] for i in members]
        try:
            iid = self.select_instance(pool, client_hash)
            alt = self.select_any(pool) if iid < 0 else -1
        finally:
            self._cursor[pool] = cursor
            for k, i in enumerate(members):
                self._cur[i] = cur[k]
        return iid, alt

    @staticmethod
    def client_hash(buf, start, end):
        """30-bit hash of a client address buf[start:end] (e.g. the peer IP as text). No allocation."""
        return _mix(hash_span(buf, start, end))

    # -- lookups (no allocation unless said) -------------------------------------------------------

    def pool_of(self, iid):
        """The pool id of instance iid, or -1 if the id is not in use."""
        return self._pool[iid] if 0 <= iid < self.max_instances else _NONE

    def generation(self, iid):
        """A byte that changes each time iid is freed: a holder of an id made before that can tell
        the id now names another instance (or none). No allocation."""
        return self._gen[iid] if 0 <= iid < self.max_instances else 0

    @micropython.native
    def skip(self, iid, on):
        """Failover: leave iid out of every choice (on) until skip(iid, False), without restarting
        the pool's WRR sequence (it is out for one choice, as select_instance's exclude is). An id
        not in use is ignored. No allocation."""
        if not 0 <= iid < self.max_instances or self._pool[iid] < 0:
            return
        if on:
            self._flags[iid] |= _SKIPPED
            self._tier[iid] = 0
            self._ew[iid] = 0
        else:
            self._flags[iid] &= ~_SKIPPED
            t = self._tier_of(iid)
            self._tier[iid] = t
            self._ew[iid] = self._ew_of(t, iid)

    def ejected(self, iid):
        """True if iid is in use and ejected (eject()). No allocation."""
        return 0 <= iid < self.max_instances and self._pool[iid] >= 0 and bool(self._flags[iid] & _EJECTED)

    def strategy(self, pool):
        return self._strategy[pool]

    def host(self, iid):
        """iid's host as bytes (the relay writes it into the Host header without a copy)."""
        return self._hosts[iid]

    def port(self, iid):
        return self._port[iid]

    def find_instance(self, pool, host, port):
        """The id of pool's instance at host:port (host str or bytes; names compare without regard
        to ASCII case, RFC 4343), or -1 (allocates: encodes)."""
        hb = (host if isinstance(host, bytes) else host.encode()).lower()
        for i in self._members(pool):
            if self._port[i] == port and self._hosts[i].lower() == hb:
                return i
        return _NONE

    # -- display (allocates) ---------------------------------------------------------------------

    def get_pool(self, pool):
        self._check_pool(pool)
        members = self._members(pool)
        cur = self._cursor[pool]
        index = members.index(cur) if cur >= 0 else 0
        conns = sum(self._conns[i] for i in members)
        return ServicePool(pool, self._names[pool], members, index, self._strategy[pool], conns)

    def get_instance(self, iid):
        self._check_instance(iid)
        drained = bool(self._flags[iid] & _DRAINED)
        args = (
            self._hosts[iid].decode(),
            self._port[iid],
            self._weight[iid],
            self._health[iid],
            self._conns[iid],
            drained,
        )
        return ServiceInstance(iid, *args, pool=self._pool[iid])

    def pools(self):
        return [self.get_pool(p) for p in range(len(self._names))]

    def instances(self, pool):
        return [self.get_instance(i) for i in self._members(pool)]

    # -- internals ---------------------------------------------------------------------------------

    def _members(self, pool):
        self._check_pool(pool)
        out = []
        i = self._head[pool]
        while i >= 0:
            out.append(i)
            i = self._next[i]
        return out

    def _check_pool(self, pool):
        if not isinstance(pool, int) or not 0 <= pool < len(self._names):
            raise LbError("load balancer: no pool %r" % (pool,))

    def _check_instance(self, iid):
        if not isinstance(iid, int) or not 0 <= iid < self.max_instances or self._pool[iid] < 0:
            raise LbError("load balancer: no instance %r" % (iid,))

    def _check_weight(self, weight):
        if not isinstance(weight, int) or not 1 <= weight <= _MAX_WEIGHT:
            raise LbError("load balancer: weight %r out of range 1..255" % (weight,))

    def _set_flag(self, iid, flag, on):
        self._check_instance(iid)
        self._flags[iid] = (self._flags[iid] | flag) if on else (self._flags[iid] & ~flag)
        self._refresh(iid)

    def _set_health(self, iid, status):
        self._check_instance(iid)
        self._health[iid] = status
        self._refresh(iid)

    @micropython.native
    def _tier_of(self, iid):
        h = self._health[iid]
        if h == HealthStatus.UNHEALTHY or self._flags[iid]:
            return 0
        return 1 if h == HealthStatus.DEGRADED else 2

    @micropython.native
    def _ew_of(self, tier, iid):
        """Effective weight for a tier: a DEGRADED instance counts with half its weight, rounded up."""
        return 0 if tier == 0 else (self._weight[iid] if tier == 2 else (self._weight[iid] + 1) >> 1)

    def _refresh(self, iid):
        """Recompute iid's tier and effective weight; restart its pool's WRR if either changed."""
        tier = self._tier_of(iid)
        ew = self._ew_of(tier, iid)
        if tier != self._tier[iid] or ew != self._ew[iid]:
            self._tier[iid] = tier
            self._ew[iid] = ew
            self._restart(self._pool[iid])

    def _restart(self, pool):
        """Every current weight of the pool back to 0 (their sum is 0 again)."""
        i = self._head[pool]
        while i >= 0:
            self._cur[i] = 0
            i = self._next[i]

"""Load balancing on the request path and in the background: the choice of an instance per request,
what real traffic says about instances, failover, and the tasks that probe, re-resolve and expire.

Balancer puts lb.py (the pools and the choice), health.py (probe state and outlier ejection),
sticky.py (cookies) and registry.py (self-registration) together for the server:
- pick(slot, pool, relay): the instance for a request: the one its sticky cookie names if that one
  is in rotation, else the pool's strategy's choice (IP hash over the client address), else in
  panic mode any instance not drained; counts the connection; writes the Set-Cookie line into the
  relay when the pool is sticky and the client needs a (new) cookie. -1: 503.
- passive(iid, ok): every request's outcome (a connection failure, a timeout or a 5xx is not ok);
  consecutive failures eject the instance for a time that grows with repeated ejections.
- failover(relay): the next instance for a request whose instance failed (relay.py decides when
  that is safe), at most max_tries instances per request.
- start()/stop(): two tasks. The prober sends each instance of a pool with a health check an HTTP
  GET every interval, one probe at a time (one small buffer; a dead host costs its timeout). The
  keeper, every second: ends ejections that ran out, expires registrations, and re-resolves host
  names every resolve_interval_ms (getaddrinfo blocks the loop while it asks DNS: on a board a
  name is best given as an IP address; a new address drops the idle connections to the old one).
pick(), passive() and failover() allocate nothing (sticky pools included). The tasks allocate
(a probe's socket and request), off the request path.

This module owns that glue and the tasks' I/O. Pool tables, strategies, health rules and cookie
values are the other modules'; configuration is lbconfig.py's.
"""

import socket

import asyncio

from .compat import const, micropython, ticks_diff, ticks_ms
from .errors import error_json
from .health import HealthChecker
from .lb import BalancingStrategy, HealthStatus, LoadBalancer
from .relay import FAIL, INSTANCE_KEY, Relay
from .resphead import MAX_EXTRA
from .sockio import IOWait, connect, send_all
from .sockio import close as close_socket
from .strtab import table

_IP_HASH = BalancingStrategy.IP_HASH
_IDEMPOTENT = const(1 | 2 | 8 | 16 | 64)  # GET HEAD PUT DELETE OPTIONS (httpparse METHOD_* bits)


class Balancer:
    """Every table is made in __init__ (sizes from balancer.pools and balancer.instances)."""

    def __init__(self, max_pools=128, max_instances=256):
        self.lb = LoadBalancer(max_pools, max_instances)
        self.health = HealthChecker(max_instances)
        self.sticky = None  # sticky.StickyCookies, when a pool is sticky
        self.registry = None  # registry.Registry, when registration is configured
        self.registry_policy = -1  # the auth policy a registration must pass
        self.upstream = None  # upstream.Upstream (set by the server)
        self.cookie: list = [None] * max_pools  # sticky cookie name (bytes) per pool, or None
        self.panic = bytearray(max_pools)  # 1: all down, try any instance that is not drained
        self.check_path: list = [None] * max_pools  # active health check path (bytes), or None
        self.check_status = table("H", max_pools)  # the status a probe expects; 0: any 2xx or 3xx
        self.addr: list = [None] * max_instances  # getaddrinfo() entry per instance, or None
        self._probe_cfg: list = [None] * max_pools  # (interval, timeout, rise, fall, slow) or None
        self.max_tries = 3  # instances tried per request (failover)
        self.max_idle_per_instance = 4
        self.idle_ms = 4000
        self.max_idle = 0  # idle connections in all; 0: two per slot
        self.resolve_interval_ms = 30000  # 0: resolve once
        self._wait = IOWait()  # the prober's (one probe at a time)
        self._buf = bytearray(64)  # a probe answer's status line lands here
        self._tasks: list = []
        self.clock = ticks_ms  # passive checks' time (a test's clock instead)
        # The 503 when a pool has no instance in rotation (made once: no allocation per refusal).
        self.unavailable = error_json(503, "no_healthy_instance", "no instance of the service is in rotation")
        self.retry_after = b"Retry-After: 1\r\n"
        self.no_instance = 0
        self.failovers = 0
        self.ejections = 0
        self.probes = 0
        self.probe_failures = 0

    # -- the request path (no allocation) -------------------------------------------------------

    @micropython.native
    def pick(self, slot, pool, rl):
        """The instance for the slot's request to pool, its connection counted, or -1."""
        lb = self.lb
        name = self.cookie[pool]
        rl.extra_len = 0
        if name is not None:
            sticky = self.sticky
            iid = sticky.find(slot, name)  # type: ignore
            if iid >= 0 and lb.pool_of(iid) == pool and lb.health_check(iid):
                lb.increment_connections(iid)
                return iid  # the client's cookie is right: nothing to set
        iid = self._choose(rl, pool, -1)
        if iid < 0:
            self.no_instance += 1
        return iid

    @micropython.native
    def _choose(self, rl, pool, exclude):
        """The strategy's choice in pool other than exclude (panic mode: any instance not drained),
        its connection counted and, for a sticky pool, its Set-Cookie line written; or -1."""
        lb = self.lb
        h = 0
        if lb.strategy(pool) == _IP_HASH:
            p = rl.slot.peer
            h = lb.client_hash(p, 0, len(p))
        iid = lb.select_instance(pool, h, exclude)
        if iid < 0 and self.panic[pool]:
            iid = lb.select_any(pool, exclude)
        if iid >= 0:
            lb.increment_connections(iid)
            name = self.cookie[pool]
            if name is not None:
                rl.extra_len = self.sticky.set_cookie_line(rl.extra, name, iid)  # type: ignore
        return iid

    @micropython.native
    def passive(self, iid, ok):
        """One real request's outcome on iid (-1: none, the instance left); enough failures in a
        row eject it."""
        if iid >= 0 and self.health.record(iid, ok, self.clock()):
            self.lb.eject(iid)
            self.ejections += 1

    def failed(self, rl):
        """rl's instance failed (refused, reset, garbled; rl closed the connection): report it, and
        go on with another instance when that is safe: before the answer started, and only if
        nothing was sent yet or the method is idempotent. Else FAIL. Returns what rl.step() would."""
        self.passive(rl.current(), False)
        slot = rl.slot
        if not slot.resp_started and (not rl.sent or slot.method & _IDEMPOTENT):
            nxt = self.failover(rl)
            if nxt >= 0:
                return rl.switch(nxt)
        rl._release()
        return FAIL

    @micropython.native
    def failover(self, rl):
        """Another instance of rl's pool for its request, one not tried for it yet, its connection
        counted and the old one's dropped, or -1 (tries used up, or none left)."""
        n = rl.tries
        if n >= self.max_tries:
            return -1
        lb = self.lb
        tried = rl.tried
        for k in range(n):
            lb.skip(tried[k], True)
        iid = self._choose(rl, rl.pool, -1)
        for k in range(n):
            lb.skip(tried[k], False)
        if iid >= 0:
            rl._release()
            self.failovers += 1
        return iid

    # -- instances coming and going (allocate) ------------------------------------------------------

    def added(self, iid):
        """A new instance (config or registration): probe settings of its pool, sticky value."""
        lb = self.lb
        pool = lb.pool_of(iid)
        self.health.set_pool(iid, pool if pool < 255 else -1)
        cfg = self._probe_cfg[pool]
        if cfg is not None:
            self.health.configure(iid, *cfg)
        if self.cookie[pool] is not None:
            self.sticky.set_instance(iid, pool, lb.host(iid), lb.port(iid))  # type: ignore

    def removed(self, iid):
        """An instance left (registration expired or withdrawn): forget its address, cookie
        value and idle connections."""
        self.addr[iid] = None
        if self.sticky is not None:
            self.sticky.forget(iid)
        self.drop_idle(iid)

    def drop_idle(self, iid):
        """Close the idle upstream connections to iid (it left, or its address changed). Here, not in
        upstream.py: a gateway without pools does not load it."""
        up = self.upstream
        if up is not None:
            for k in range(len(up.pool_key)):
                if up.pool_key[k] == INSTANCE_KEY + iid:
                    up._drop(k)

    def set_health_check(self, pool, path, expect_status, interval_ms, timeout_ms, rise, fall, slow_ms):
        """Active checks for pool's instances (those added after this call: config order)."""
        self._probe_cfg[pool] = (interval_ms, timeout_ms, rise, fall, slow_ms)
        self.check_path[pool] = path if isinstance(path, bytes) else path.encode()
        self.check_status[pool] = expect_status

    # -- the tasks ------------------------------------------------------------------------------

    def relay_class(self):
        return PoolRelay

    def attach(self, upstream, secure=False):
        """The server's Upstream: its idle connections, and its relays' failover lists and Set-Cookie
        buffers. secure: the listener has TLS (cookies get the Secure attribute)."""
        self.upstream = upstream
        upstream.balancer = self
        if self.sticky is not None:
            self.sticky.set_secure(secure)
        for rl in upstream.relays:
            rl.tried = table("h", self.max_tries, -1)
            if self.sticky is not None:
                rl.extra = bytearray(MAX_EXTRA)  # one Set-Cookie line

    def start(self):
        self._tasks = [asyncio.create_task(self._keeper())]
        if any(p is not None for p in self.check_path):
            self._tasks.append(asyncio.create_task(self._prober()))

    def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    async def _keeper(self):
        """Every second: end ejections, expire registrations; re-resolve names on the interval."""
        resolved_at = None
        try:
            while True:
                now = ticks_ms()
                self.tick(now)
                if resolved_at is None or (
                    self.resolve_interval_ms and ticks_diff(now, resolved_at) >= self.resolve_interval_ms
                ):
                    resolved_at = now
                    self.resolve_all()
                await asyncio.sleep_ms(1000)
        except asyncio.CancelledError:
            pass

    def tick(self, now):
        """Ejections that ran out end; registrations that ran out expire. No allocation unless one
        does."""
        lb = self.lb
        for iid in range(lb.max_instances):
            if lb.ejected(iid) and not self.health.ejected(iid, now):
                lb.eject(iid, False)
        if self.registry is not None:
            self.registry.expire(now)

    def resolve_all(self):
        lb = self.lb
        for iid in range(lb.max_instances):
            if lb.pool_of(iid) >= 0:
                self.resolve(iid)

    def resolve(self, iid):
        """Look iid's host up again; a new address drops the idle connections to the old one. A
        failed lookup keeps the last address (or none: connect() then asks at each connection)."""
        lb = self.lb
        try:
            ai = socket.getaddrinfo(lb.host(iid).decode(), lb.port(iid), 0, socket.SOCK_STREAM)[0]
        except (OSError, IndexError):
            return
        old = self.addr[iid]
        if old is not None and old[-1] != ai[-1]:
            self.drop_idle(iid)
        self.addr[iid] = ai

    async def _prober(self):
        try:
            while True:
                now = ticks_ms()
                lb = self.lb
                for iid in range(lb.max_instances):
                    pool = lb.pool_of(iid)
                    if pool >= 0 and self.check_path[pool] is not None and self.health.due(iid, now):
                        await self.health_check(iid)
                        now = ticks_ms()
                await asyncio.sleep_ms(250)
        except asyncio.CancelledError:
            pass

    async def health_check(self, iid):
        """Probe iid now (GET of its pool's check path) and apply the result; the new health."""
        lb = self.lb
        pool = lb.pool_of(iid)
        hc = self.health
        start = ticks_ms()
        hc.probe_started(iid, start)
        self.probes += 1
        ok = False
        try:
            ok = await asyncio.wait_for_ms(self._probe(iid, pool), hc.timeout_ms(iid))
        except (OSError, asyncio.TimeoutError):
            pass
        now = ticks_ms()
        if not ok:
            self.probe_failures += 1
        h = hc.probe_result(iid, ok, ticks_diff(now, start), now)
        if lb.pool_of(iid) == pool:  # still the same instance (a registration may have gone)
            if h == HealthStatus.HEALTHY:
                lb.mark_healthy(iid)
            elif h == HealthStatus.UNHEALTHY:
                lb.mark_unhealthy(iid)
            elif h == HealthStatus.DEGRADED:
                lb.mark_degraded(iid)
        return h

    async def _probe(self, iid, pool):
        """One probe: connect, send the GET, read the status line. True if it is the expected one."""
        lb = self.lb
        host = lb.host(iid)
        req = b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: apigw-health\r\nConnection: close\r\n\r\n" % (
            self.check_path[pool],
            host,
            lb.port(iid),
        )
        wait = self._wait
        s = await connect(wait, host.decode(), lb.port(iid), self.addr[iid])
        try:
            await send_all(wait, s, req, 0, len(req))
            buf = self._buf
            n = 0
            while n < 12:
                await wait.readable(s)  # type: ignore
                k = s.readinto(memoryview(buf)[n:])
                if not k:
                    if k == 0:
                        return False  # closed before a status line
                    continue
                n += k
            if buf[0:5] != b"HTTP/" or buf[8] != 32:
                return False
            status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + buf[11] - 48
            while k != 0:  # read to the end (Connection: close): closing with bytes unread resets
                await wait.readable(s)  # type: ignore
                k = s.readinto(buf)
            want = self.check_status[pool]
            return status == want if want else 200 <= status < 400
        finally:
            close_socket(s)

    # -- display (allocates) --------------------------------------------------------------------

    def stats(self):
        lb = self.lb
        up = self.upstream
        return {
            "pools": len(lb._names),
            "instances": sum(1 for i in range(lb.max_instances) if lb.pool_of(i) >= 0),
            "no_instance": self.no_instance,
            "failovers": self.failovers,
            "ejections": self.ejections,
            "probes": self.probes,
            "probe_failures": self.probe_failures,
            "registered": self.registry.count() if self.registry is not None else 0,
            "upstream": None
            if up is None
            else {
                "connects": up.connects,
                "reuses": up.reuses,
                "idle": up.idle_count(),
                "closed_idle": up.closed_idle,
            },
        }


class PoolRelay(Relay):
    """A Relay whose target may be an instance of the service's pool (iid >= 0; the balancer's
    pick() chose it and counted its connection): Host is the instance's; every outcome goes to
    the balancer's passive checks; a failure may go on with another instance (Balancer.failed);
    the answer carries the Set-Cookie line the balancer wrote, if any. No allocation."""

    def __init__(self, upstream, slot):
        super().__init__(upstream, slot)
        self.iid = -1
        self.pool = -1
        self.gen = 0  # lb.generation(iid) when iid was chosen (current())
        self.tries = 0  # instances tried for this request, their ids in tried[] (attach())
        self.tried = None
        self.extra_len = 0

    @micropython.native
    def begin(self, svc, client, timeout_ms, iid=-1):
        self.tries = 0
        self.iid = -1
        if iid < 0:
            self.extra_len = 0  # (pick() writes it for an instance)
        else:
            self._take(iid)
        return Relay.begin(self, svc, client, timeout_ms)

    @micropython.native
    def _take(self, iid):
        lb = self.upstream.balancer.lb
        self.iid = iid
        self.pool = lb.pool_of(iid)
        self.gen = lb.generation(iid)
        self.tried[self.tries] = iid  # type: ignore
        self.tries += 1

    @micropython.native
    def current(self):
        """iid, or -1 if that id was freed since (a registration left mid-request). No allocation."""
        iid = self.iid
        if iid >= 0 and self.upstream.balancer.lb.generation(iid) != self.gen:
            return -1
        return iid

    def key(self):
        iid = self.iid
        return self.svc if iid < 0 else INSTANCE_KEY + iid

    @micropython.native
    def start_writer(self, slot, sbuf, poff, plen):
        """The request head for instance iid: Host is the instance's host and port."""
        iid = self.iid
        lb = self.upstream.balancer.lb
        hb = lb.host(iid)
        self.writer.start(slot, hb, 0, len(hb), lb.port(iid), sbuf, poff, plen)

    def fail(self):
        if self.iid < 0:
            return Relay.fail(self)
        self._close()
        return self.upstream.balancer.failed(self)

    def switch(self, iid):
        """Go on with instance iid (failover): a kept-alive connection to it, or CONNECT."""
        self._take(iid)
        return self._attach(self.upstream.take_idle(self.key()))

    def target(self):
        iid = self.iid
        if iid < 0:
            return Relay.target(self)
        b = self.upstream.balancer
        return b.lb.host(iid).decode(), b.lb.port(iid), b.addr[iid]

    def _release(self):
        """The instance's active-connection count drops, once (not another's given the same id)."""
        iid = self.current()
        self.iid = -1
        if iid >= 0:
            self.upstream.balancer.lb.decrement_connections(iid)

    def answered(self, status):
        """A 5xx counts against the instance (passive checks)."""
        iid = self.iid
        if iid < 0:
            Relay.answered(self, status)
        else:
            self.upstream.balancer.passive(self.current(), status < 500)

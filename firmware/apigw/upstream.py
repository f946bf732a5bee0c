"""The gateway's upstream connections: one fixed pool of idle keep-alive connections for all
services, and one Relay per slot that carries a proxied request (relay.py).

A connection is taken from the pool for a request and given back when the answer ended where
its framing says; stale ones (idle longer than idle_ms) are closed by the reaper's sweep.
Route decisions are not made here. MicroPython only (raw non-blocking sockets).
"""

from array import array

from .compat import micropython, ticks_diff, ticks_ms
from .relay import Relay
from .sockio import close as close_socket


class Upstream:
    """Idle upstream connections for all services, and the slots' relays."""

    def __init__(self, gateway, slots, max_idle_per_service=2, idle_ms=4000, connect_timeout_ms=3000, max_idle=0):
        self.gw = gateway
        self.max_idle = max_idle_per_service
        self.idle_ms = idle_ms
        self.connect_timeout_ms = connect_timeout_ms
        # Idle keep-alive connections of all services in one fixed pool (each holds a socket;
        # 2 per slot unless given): entry k is pool_sock[k] of service pool_svc[k] (-1: free),
        # idle since pool_since[k]. Made at boot, so serving many services grows nothing.
        n = max_idle or 2 * len(slots)
        self.pool_svc = array("h", [-1] * n)
        self.pool_sock = [None] * n
        self.pool_since = [0] * n  # ticks are small ints: storing one allocates nothing
        self.relays = [Relay(self, s) for s in slots]  # one proxied request per slot, made at boot
        self.connects = 0  # new upstream connections opened
        self.reuses = 0  # requests sent on a kept-alive connection

    # -- idle connections ------------------------------------------------------------------------

    def _drop(self, k):
        close_socket(self.pool_sock[k])
        self.pool_sock[k] = None
        self.pool_svc[k] = -1

    @micropython.native
    def take_idle(self, svc):
        """The most recently idled fresh connection to svc, or None. No allocation."""
        now = ticks_ms()
        svcs = self.pool_svc
        while True:
            best = -1
            for k in range(len(svcs)):
                if svcs[k] == svc and (best < 0 or ticks_diff(self.pool_since[k], self.pool_since[best]) > 0):
                    best = k
            if best < 0:
                return None
            if ticks_diff(now, self.pool_since[best]) < self.idle_ms:
                s = self.pool_sock[best]
                self.pool_sock[best] = None
                svcs[best] = -1
                return s
            self._drop(best)  # stale: the upstream may have closed it already

    @micropython.native
    def give_back(self, svc, sock):
        """Keep sock for the next request to svc, if the pool has room. No allocation."""
        svcs = self.pool_svc
        free = -1
        mine = 0
        for k in range(len(svcs)):
            if svcs[k] == svc:
                mine += 1
            elif svcs[k] < 0 and free < 0:
                free = k
        if free < 0 or mine >= self.max_idle or not self.gw.service_keepalive(svc):
            close_socket(sock)
            return
        svcs[free] = svc
        self.pool_sock[free] = sock
        self.pool_since[free] = ticks_ms()  # type: ignore  # the stubs give ticks a class of their own

    def sweep(self):
        """Close idle connections older than idle_ms (the server's reaper calls this)."""
        now = ticks_ms()
        for k in range(len(self.pool_svc)):
            if self.pool_svc[k] >= 0 and ticks_diff(now, self.pool_since[k]) >= self.idle_ms:
                self._drop(k)

    def close_all(self):
        for k in range(len(self.pool_svc)):
            if self.pool_svc[k] >= 0:
                self._drop(k)

    def idle_count(self):
        n = 0
        for k in range(len(self.pool_svc)):
            if self.pool_svc[k] >= 0:
                n += 1
        return n

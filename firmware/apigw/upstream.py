"""The gateway's upstream connections: one fixed pool of idle keep-alive connections for every
upstream target, and one Relay per slot that carries a proxied request (relay.py).

A target is a service's own host and port (key = service id) or a load-balancer instance (key =
INSTANCE_KEY + instance id). A connection is taken from the pool for a request and given back
when the answer ended where its framing says. Before one is reused it is checked without waiting:
a connection the upstream closed (or that has bytes nobody asked for) is closed, never used. Stale
ones (idle longer than idle_ms) are closed by the reaper's sweep. Route and instance decisions are
not made here. MicroPython only (raw non-blocking sockets).
"""

from array import array

from .compat import micropython, ticks_diff, ticks_ms
from .relay import Relay
from .sockio import close as close_socket


class Upstream:
    """Idle upstream connections for all targets, and the slots' relays."""

    balancer = None  # lbio.Balancer, when the config has pools (then set on the instance)

    def __init__(
        self, gateway, slots, max_idle_per_target=2, idle_ms=4000, connect_timeout_ms=3000, max_idle=0, relay=Relay
    ):
        self.gw = gateway
        self.max_idle = max_idle_per_target
        self.idle_ms = idle_ms
        self.connect_timeout_ms = connect_timeout_ms
        # Idle keep-alive connections in one fixed pool (each holds a socket; 2 per slot unless
        # given): entry k is pool_sock[k] to target pool_key[k] (-1: free), idle since
        # pool_since[k]. Made at boot, so serving many targets grows nothing.
        n = max_idle or 2 * len(slots)
        self.pool_key = array("h", [-1] * n)
        self.pool_sock = [None] * n
        self.pool_since = [0] * n  # ticks are small ints: storing one allocates nothing
        self._peek = bytearray(1)  # the liveness check's read lands here
        self.relays = [relay(self, s) for s in slots]  # one proxied request per slot, made at boot
        self.connects = 0  # new upstream connections opened
        self.reuses = 0  # requests sent on a kept-alive connection
        self.closed_idle = 0  # idle connections found closed (or with stray bytes) when taken

    # -- idle connections ------------------------------------------------------------------------

    def _drop(self, k):
        close_socket(self.pool_sock[k])
        self.pool_sock[k] = None
        self.pool_key[k] = -1

    @micropython.native
    def take_idle(self, key):
        """The most recently idled live connection to target key, or None. No allocation."""
        now = ticks_ms()
        keys = self.pool_key
        while True:
            best = -1
            for k in range(len(keys)):
                if keys[k] == key and (best < 0 or ticks_diff(self.pool_since[k], self.pool_since[best]) > 0):
                    best = k
            if best < 0:
                return None
            if ticks_diff(now, self.pool_since[best]) < self.idle_ms:
                s = self.pool_sock[best]
                self.pool_sock[best] = None
                keys[best] = -1
                if self._alive(s):
                    return s
                self.closed_idle += 1
                close_socket(s)
            else:
                self._drop(best)  # stale: the upstream may have closed it already

    def _alive(self, sock):
        """An idle connection has nothing to read: EOF (the upstream closed it), an error or stray
        bytes mean it must not carry a request. One non-blocking read; no allocation."""
        try:
            return sock.readinto(self._peek) is None
        except OSError:
            return False

    @micropython.native
    def give_back(self, key, sock):
        """Keep sock for the next request to target key, if the pool has room. No allocation."""
        keys = self.pool_key
        free = -1
        mine = 0
        for k in range(len(keys)):
            if keys[k] == key:
                mine += 1
            elif keys[k] < 0 and free < 0:
                free = k
        if free < 0 or mine >= self.max_idle:
            close_socket(sock)
            return
        keys[free] = key
        self.pool_sock[free] = sock
        self.pool_since[free] = ticks_ms()  # type: ignore  # the stubs give ticks a class of their own

    def sweep(self):
        """Close idle connections older than idle_ms (the server's reaper calls this)."""
        now = ticks_ms()
        for k in range(len(self.pool_key)):
            if self.pool_key[k] >= 0 and ticks_diff(now, self.pool_since[k]) >= self.idle_ms:
                self._drop(k)

    def close_all(self):
        for k in range(len(self.pool_key)):
            if self.pool_key[k] >= 0:
                self._drop(k)

    def idle_count(self):
        n = 0
        for k in range(len(self.pool_key)):
            if self.pool_key[k] >= 0:
                n += 1
        return n

"""Monitoring on the request path: the server's hooks into monitor.ApiMonitor, and the heap watch.

The server calls begin(slot) when a request has been read, upstream(slot) when its relay to the
upstream starts, and end(slot) when its answer has gone out (the status is slot.status, set
wherever an answer starts; the route slot.route). A request the connection's end cut short (a
timeout's 408 or 504, the client gone, an error) is ended by abandoned(slot), from the server's
cleanup: with its status, or 499 (nginx's "client closed request") when nothing was answered. The latency is from begin to end, in µs (ticks_us); the upstream part
from upstream() to end (the upstream's answer relayed included), the rest is the gateway's own.
An answer with status >= 400 is also an error of its ErrorType (errors_of()). The server's reaper
calls tick() every second: the heap's free and least-free figures.

begin(), upstream() and end() allocate nothing. This module owns the per-slot timing only: the
tables are monitor.py's, the endpoints monendpoints.py's, the config monconfig.py's.
"""

from .compat import mem_free, micropython, ticks_diff, ticks_ms, ticks_us
from .monitor import ErrorType

_TIMEOUT = ErrorType.TIMEOUT
_AUTH = ErrorType.AUTH_ERROR
_VALIDATION = ErrorType.VALIDATION_ERROR
_CLIENT = ErrorType.CLIENT_ERROR
_SERVER = ErrorType.SERVER_ERROR


@micropython.native
def errors_of(status):
    """The ErrorType of an answer's status (>= 400): 408/504 a timeout, 401/403 an auth error, 400
    and 422 a validation error (the request or its body did not pass), other 4xx the client's, 5xx
    the server side's. No allocation."""
    if status == 408 or status == 504:
        return _TIMEOUT
    if status == 401 or status == 403:
        return _AUTH
    if status == 422 or status == 400:
        return _VALIDATION
    return _CLIENT if status < 500 else _SERVER


class Monitoring:
    """The monitor of a config with a `monitoring` section, and its per-slot clocks."""

    def __init__(self, monitor, gateway, slots):
        self.mon = monitor
        self.gw = gateway
        self._t0: list = [0] * slots  # ticks_us: the request was read
        self._tu: list = [0] * slots  # ticks_us: its relay began
        self._up = bytearray(slots)  # 1: the request went upstream
        self._busy = bytearray(slots)  # 1: begun, not yet ended
        self.policy = -1  # the auth policy the endpoints need (-1: none, open)
        self.status_page = True
        self.heap_free = 0
        self.heap_low = -1  # the least free heap seen by tick(), -1 before the first
        self.started = ticks_ms()
        self._last = self.started  # tick()'s last reading
        self._up_ms = 0  # uptime, summed tick by tick: ticks alone wrap after 6.2 days on a board

    @micropython.native
    def begin(self, slot):
        i = slot.index
        self._t0[i] = ticks_us()
        self._up[i] = 0
        self._busy[i] = 1
        self.mon.record_request(-1, -1, ticks_ms())

    @micropython.native
    def upstream(self, slot):
        i = slot.index
        if not self._up[i]:  # the first attempt: retries stay upstream time
            self._up[i] = 1
            self._tu[i] = ticks_us()

    @micropython.native
    def end(self, slot):
        """The answer to the slot's request went out."""
        i = slot.index
        if not self._busy[i]:
            return
        self._busy[i] = 0
        route = slot.route
        now = ticks_us()
        lat = ticks_diff(now, self._t0[i])
        up = ticks_diff(now, self._tu[i]) if self._up[i] else 0
        svc = self.gw.route_service(route) if route >= 0 else -1
        st = slot.status if slot.status else 499
        mon = self.mon
        mon.record_routed(route, svc)
        mon.record_response(route, svc, st, lat, up, ticks_ms())
        if st >= 400:
            mon.record_error(svc, errors_of(st))

    def abandoned(self, slot):
        """The connection ended during a request (see the module docstring)."""
        self.end(slot)

    def uptime_s(self):
        """Seconds since the gateway started (summed in tick(), so the ticks' wrap does not show)."""
        return (self._up_ms + ticks_diff(ticks_ms(), self._last)) // 1000

    def tick(self):
        """Every second (the reaper): the uptime, the heap's free and least-free figures."""
        now = ticks_ms()
        self._up_ms += ticks_diff(now, self._last)
        self._last = now
        f = mem_free()
        self.heap_free = f
        if self.heap_low < 0 or f < self.heap_low:
            self.heap_low = f

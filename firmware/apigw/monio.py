"""Monitoring on the request path: the server's hooks into monitor.ApiMonitor, and the heap watch.

The server calls begin(slot) when a request has been read, upstream(slot) when its relay to the
upstream starts, and end(slot) when its answer has gone out (the status is slot.status, set
wherever an answer starts; the route slot.route). A request the connection's end cut short (a
timeout's 408 or 504, the client gone, an error) is ended by abandoned(slot), from the server's
cleanup: with its status, or 499 (nginx's "client closed request") when nothing was answered. The latency is from begin to end, in µs (ticks_us); the upstream part
from upstream() to end (the upstream's answer relayed included), the rest is the gateway's own.
An answer with status >= 400 is also an error of its ErrorType (errors_of()). The server's reaper
calls tick() every second: the heap's free and least-free figures.

begin() counts the request (global) and in flight (ApiMonitor.record_started()); end() records
everything else in one ApiMonitor.record() call, so the throughput window counts a request in the
second it was answered. begin(), upstream() and end() allocate nothing: viper on MicroPython (the
per-slot flags a ptr8, a ticks value a small int), plain twins under CPython.

This module owns the per-slot timing only: the tables are monitor.py's, the endpoints
monendpoints.py's, the config monconfig.py's.
"""

from .compat import IS_MICROPYTHON, const, mem_free, micropython, ticks_diff, ticks_ms, ticks_us
from .monitor import ErrorType

_TIMEOUT = ErrorType.TIMEOUT
_AUTH = ErrorType.AUTH_ERROR
_VALIDATION = ErrorType.VALIDATION_ERROR
_CLIENT = ErrorType.CLIENT_ERROR
_SERVER = ErrorType.SERVER_ERROR
_BUSY = const(1)  # a slot's flags
_UP = const(2)


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
        self._route_service = gateway.route_service  # bound once here, not looked up per request
        self._t0: list = [0] * slots  # ticks_us: the request was read
        self._tu: list = [0] * slots  # ticks_us: its relay began
        self._flags = bytearray(slots)  # _BUSY: begun, not yet ended; _UP: it went upstream
        self.policy = -1  # the auth policy the endpoints need (-1: none, open)
        self.status_page = True
        self.heap_free = 0
        self.heap_low = -1  # the least free heap seen by tick(), -1 before the first
        self.started = ticks_ms()
        self._last = self.started  # tick()'s last reading
        self._up_ms = 0  # uptime, summed tick by tick: ticks alone wrap after 6.2 days on a board

    # The hooks, as viper on MicroPython (a viper call costs less than a native one, and the
    # per-slot flags are a ptr8); the twins below them are the reference and CPython's.
    if IS_MICROPYTHON:

        @micropython.viper
        def begin(self, slot):
            i = int(slot.index)
            self._t0[i] = ticks_us()  # a small int: no allocation
            f = ptr8(self._flags)  # type: ignore  # noqa: F821  (a viper cast)
            f[i] = _BUSY  # and not yet upstream
            self.mon.record_started()

        @micropython.viper
        def upstream(self, slot):
            i = int(slot.index)
            f = ptr8(self._flags)  # type: ignore  # noqa: F821  (a viper cast)
            if f[i] & _UP == 0:  # the first attempt: retries stay upstream time
                f[i] = f[i] | _UP
                self._tu[i] = ticks_us()

        @micropython.viper
        def end(self, slot):
            """The answer to the slot's request went out."""
            i = int(slot.index)
            f = ptr8(self._flags)  # type: ignore  # noqa: F821  (a viper cast)
            fl = f[i]
            if fl & _BUSY == 0:
                return
            f[i] = 0
            route = int(slot.route)
            now = ticks_us()
            lat = int(ticks_diff(now, self._t0[i]))
            up = 0
            if fl & _UP:
                up = int(ticks_diff(now, self._tu[i]))
            svc = -1
            if route >= 0:
                svc = int(self._route_service(route))
            st = int(slot.status)
            if st == 0:
                st = 499
            err = -1
            if st >= 400:
                err = int(errors_of(st))
            self.mon.record(route, svc, st, lat, up, ticks_ms(), err)

    else:

        def begin(self, slot):
            i = slot.index
            self._t0[i] = ticks_us()
            self._flags[i] = _BUSY
            self.mon.record_started()

        def upstream(self, slot):
            i = slot.index
            if not self._flags[i] & _UP:
                self._flags[i] |= _UP
                self._tu[i] = ticks_us()

        def end(self, slot):
            """The answer to the slot's request went out."""
            i = slot.index
            fl = self._flags[i]
            if not fl & _BUSY:
                return
            self._flags[i] = 0
            route = slot.route
            now = ticks_us()
            lat = ticks_diff(now, self._t0[i])
            up = ticks_diff(now, self._tu[i]) if fl & _UP else 0
            svc = self._route_service(route) if route >= 0 else -1
            st = slot.status if slot.status else 499
            self.mon.record(route, svc, st, lat, up, ticks_ms(), errors_of(st) if st >= 400 else -1)

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

"""Forwarding a request to a service and relaying its answer: the gateway's upstream I/O.

Upstream keeps idle keep-alive connections per service, sends the request through the slot's
I/O buffer (fwdhead.RequestWriter composes it), reads the response head into the same buffer,
rewrites it in place (resphead) and relays head and body to the client in buffer-sized pieces,
so a response of any size passes through a 2 KB buffer. The request bytes in the slot stay
untouched until the response starts.

One coroutine per proxied request (forward); waits go through the slot's IOWait, so the relay
allocates little beyond asyncio's own poll entries. Route decisions are not made here, and
timeouts are the server reaper's: it cancels the task and `finally` closes the connection.
MicroPython only (raw non-blocking sockets and asyncio's I/O queue).
"""

from array import array

from . import httpparse as hp
from .chunked import ERROR as CHUNK_ERROR
from .chunked import MORE as CHUNK_MORE
from .chunked import ChunkedTracker
from .compat import micropython, ticks_add, ticks_diff, ticks_ms
from .fwdhead import RequestWriter
from .gateway import HealthStatus
from .native import mem_move
from .resphead import RESERVE, ResponseHead
from .slot import STREAM, UPSTREAM
from .sockio import close as close_socket
from .sockio import connect, send_all, send_now


class UpstreamError(Exception):
    """The upstream could not be reached or answered badly; .status is what the client gets."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Upstream:
    """Upstream connections for all services, and the relay of one request per forward()."""

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
        # Per slot, made at boot: response head reader, chunk tracker, request writer, and the
        # view of the I/O buffer after the head reserve (reads land there without slicing).
        self.heads = [ResponseHead() for _ in slots]
        self.chunks = [ChunkedTracker() for _ in slots]
        self.writers = [RequestWriter() for _ in slots]
        self.io_tail = [s.iomv[RESERVE:] for s in slots]
        self.connects = 0  # new upstream connections opened
        self.reuses = 0  # requests sent on a kept-alive connection

    # -- idle connections ------------------------------------------------------------------------

    def _drop(self, k):
        close_socket(self.pool_sock[k])
        self.pool_sock[k] = None
        self.pool_svc[k] = -1

    @micropython.native
    def _take_idle(self, svc):
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
    def _give_back(self, svc, sock):
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

    def forget(self, svc):
        """Close a service's idle connections (its address changed or it was removed)."""
        for k in range(len(self.pool_svc)):
            if self.pool_svc[k] == svc:
                self._drop(k)

    def idle_count(self):
        n = 0
        for k in range(len(self.pool_svc)):
            if self.pool_svc[k] >= 0:
                n += 1
        return n

    # -- one request -----------------------------------------------------------------------------

    async def forward(self, slot, svc, client, wait, timeout_ms):
        """Send slot's request to service svc and relay the answer to the client socket.

        Returns True if the client connection may carry another request. Raises UpstreamError
        (with the status for the client) while nothing has been sent to the client; after the
        response has started, a failure ends the connection (returns False).
        """
        gw = self.gw
        i = slot.index
        head = self.heads[i]
        writer = self.writers[i]
        io = slot.io
        iomv = slot.iomv
        st = gw.strtab
        host = gw.service_host_id(svc)
        pre = slot.fwd_prefix
        up = None
        n = he = 0
        attempt = 0
        try:
            while True:  # a second attempt only when a kept-alive connection turned out stale
                up = self._take_idle(svc) if attempt == 0 else None
                reused = up is not None
                slot.phase = UPSTREAM
                if reused:
                    self.reuses += 1
                else:
                    slot.deadline = ticks_add(ticks_ms(), self.connect_timeout_ms)
                    try:
                        up = await connect(wait, st.get_str(host), gw.service_port(svc))
                    except OSError:
                        gw.note_health(svc, HealthStatus.UNHEALTHY)
                        raise UpstreamError(502, "connect failed")
                    self.connects += 1
                assert up is not None
                slot.deadline = ticks_add(ticks_ms(), timeout_ms)
                try:
                    writer.start(slot, st.buf, st.offset(host), st.length(host), gw.service_port(svc))
                    if pre >= 0:
                        writer.path_prefix(st.buf, st.offset(pre), st.length(pre))
                    k = writer.fill(io)
                    while k:
                        sent = send_now(up, io, 0, k)
                        if sent < k:
                            await send_all(wait, up, io, sent, k)
                        k = writer.fill(io)
                    n = RESERVE
                    while True:
                        await wait.readable(up)
                        k = up.readinto(self.io_tail[i] if n == RESERVE else iomv[n:])
                        if k is None:
                            continue
                        if k == 0:
                            raise OSError(104)  # closed before answering
                        n += k
                        he = head.parse(io, RESERVE, n)
                        if he < 0:
                            raise UpstreamError(502, "bad response head")
                        if he > 0:
                            if head.status >= 200:
                                break
                            mem_move(io, RESERVE, io, he, n - he)  # 1xx interim answer: skip it
                            n = RESERVE + n - he
                        elif n >= len(io):
                            raise UpstreamError(502, "response head too large")
                    break
                except OSError:
                    if up is not None:
                        close_socket(up)
                    up = None
                    if reused and attempt == 0:
                        attempt = 1
                        continue
                    gw.note_health(svc, HealthStatus.UNHEALTHY)
                    raise UpstreamError(502, "upstream closed the connection")
            gw.note_health(svc, HealthStatus.HEALTHY)
            assert up is not None
            has_body = head.has_body(slot.method == hp.METHOD_HEAD)
            delimited = (not has_body) or head.length >= 0 or head.chunked
            client_close = (not slot.keep_alive) or not delimited
            hl = head.rewrite(io, RESERVE, client_close, slot.version)
            extra = n - he if has_body else 0  # body bytes that came with the head
            if head.length >= 0 and extra > head.length:
                extra = head.length
            mem_move(io, hl, io, he, extra)
            slot.phase = STREAM
            slot.deadline = ticks_add(ticks_ms(), timeout_ms)
            slot.resp_started = True
            k = hl + extra
            sent = send_now(client, io, 0, k)
            if sent < k:
                await send_all(wait, client, io, sent, k)
            if has_body:
                # The body: count it down (Content-Length), track its chunks, or read to close.
                size = len(io)
                left = head.length - extra
                chunks = self.chunks[i]
                broken = False
                if head.chunked:
                    chunks.reset()
                    r = chunks.feed(io, hl, hl + extra)
                    broken = r == CHUNK_ERROR
                    left = 1 if r == CHUNK_MORE else 0
                elif head.length < 0:
                    left = 1  # no framing: the body ends when the upstream closes
                while left > 0:
                    await wait.readable(up)
                    if head.length >= 0 and left < size:
                        k = up.readinto(io, left)
                    else:
                        k = up.readinto(io)
                    if k is None:
                        continue
                    if k == 0:
                        break  # upstream closed: the end, or a truncated body
                    out = k
                    if head.chunked:
                        r = chunks.feed(io, 0, k)
                        if r == CHUNK_ERROR:
                            broken = True
                            break
                        if r != CHUNK_MORE:
                            out = r
                            left = 0
                    elif head.length >= 0:
                        left -= k
                    sent = send_now(client, io, 0, out)
                    if sent < out:
                        await send_all(wait, client, io, sent, out)
                    slot.deadline = ticks_add(ticks_ms(), timeout_ms)
                if broken or left > 0 or not delimited:
                    close_socket(up)  # body ended by close, cut short or garbled: neither side goes on
                    up = None
                    return False
            if head.close:
                close_socket(up)
            else:
                self._give_back(svc, up)
            up = None
            return not client_close
        except OSError:
            if slot.resp_started:
                return False
            gw.note_health(svc, HealthStatus.UNHEALTHY)
            raise UpstreamError(502, "upstream error")
        finally:
            if up is not None:  # cancelled (a timeout) or failed midway
                close_socket(up)

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

from . import httpparse as hp
from .chunked import ERROR as CHUNK_ERROR
from .chunked import MORE as CHUNK_MORE
from .chunked import ChunkedTracker
from .compat import ticks_add, ticks_diff, ticks_ms
from .fwdhead import RequestWriter
from .gateway import HealthStatus
from .native import mem_move
from .resphead import RESERVE, ResponseHead
from .slot import STREAM, UPSTREAM
from .sockio import close as close_socket
from .sockio import connect, send_all, send_now

CRLF = b"\r\n"
H_HOST = b"Host: "


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
        # Idle connections over all services (each holds a socket): 2 per slot unless given.
        self.max_idle_total = max_idle or 2 * len(slots)
        self.n_idle = 0
        self.idle_ms = idle_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.idle_socks = {}  # service id -> stack of idle sockets
        self.idle_since = {}  # service id -> when each went idle (ticks_ms), same order
        self.host_lines = {}  # service id -> b"Host: h:p\r\n", made on first use
        self.addrs = {}  # service id -> (host, port)
        # Per slot, made at boot: response head reader, chunk tracker, request writer, and the
        # view of the I/O buffer after the head reserve (reads land there without slicing).
        self.heads = [ResponseHead() for _ in slots]
        self.chunks = [ChunkedTracker() for _ in slots]
        self.writers = [RequestWriter() for _ in slots]
        self.io_tail = [s.iomv[RESERVE:] for s in slots]
        self.connects = 0  # new upstream connections opened
        self.reuses = 0  # requests sent on a kept-alive connection

    # -- idle connections ------------------------------------------------------------------------

    def _take_idle(self, svc):
        socks = self.idle_socks.get(svc)
        if not socks:
            return None
        since = self.idle_since[svc]
        now = ticks_ms()
        while socks:
            s = socks.pop()
            self.n_idle -= 1
            if ticks_diff(now, since.pop()) < self.idle_ms:
                return s
            close_socket(s)
        return None

    def _give_back(self, svc, sock):
        socks = self.idle_socks.get(svc)
        if socks is None:
            socks = self.idle_socks[svc] = []
            self.idle_since[svc] = []
        full = len(socks) >= self.max_idle or self.n_idle >= self.max_idle_total
        if full or not self.gw.service_keepalive(svc):
            close_socket(sock)
            return
        self.n_idle += 1
        socks.append(sock)  # lists keep their capacity: no allocation after the first few
        self.idle_since[svc].append(ticks_ms())

    def sweep(self):
        """Close idle connections older than idle_ms (the server's reaper calls this)."""
        now = ticks_ms()
        for svc in self.idle_socks:
            socks = self.idle_socks[svc]
            since = self.idle_since[svc]
            i = 0
            while i < len(socks):
                if ticks_diff(now, since[i]) >= self.idle_ms:
                    close_socket(socks.pop(i))
                    since.pop(i)
                    self.n_idle -= 1
                else:
                    i += 1

    def close_all(self):
        for svc in self.idle_socks:
            socks = self.idle_socks[svc]
            while socks:
                close_socket(socks.pop())
            self.idle_since[svc].clear()
        self.n_idle = 0

    def forget(self, svc):
        """Drop what is cached about a service (its address changed or it was removed)."""
        socks = self.idle_socks.pop(svc, None)
        while socks:
            close_socket(socks.pop())
            self.n_idle -= 1
        self.idle_since.pop(svc, None)
        self.host_lines.pop(svc, None)
        self.addrs.pop(svc, None)

    def idle_count(self):
        n = 0
        for socks in self.idle_socks.values():
            n += len(socks)
        return n

    def _address(self, svc):
        """(host, port) and the Host line for a service; made once per service (allocates)."""
        addr = self.addrs.get(svc)
        if addr is None:
            ep = self.gw.get_service(svc)
            addr = self.addrs[svc] = (ep.host, ep.port)
            self.host_lines[svc] = H_HOST + (ep.host + ":" + str(ep.port)).encode() + CRLF
        return addr

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
        addr = self._address(svc)
        st = gw.strtab
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
                        up = await connect(wait, addr[0], addr[1])
                    except OSError:
                        gw.set_service_health(svc, HealthStatus.UNHEALTHY)
                        raise UpstreamError(502, "connect failed")
                    self.connects += 1
                assert up is not None
                slot.deadline = ticks_add(ticks_ms(), timeout_ms)
                try:
                    if pre >= 0:
                        writer.start(slot, self.host_lines[svc], slot.peer, st.buf, st.offset(pre), st.length(pre))
                    else:
                        writer.start(slot, self.host_lines[svc], slot.peer, io, 0, 0)
                    k = writer.fill(io)
                    while k:
                        sent = send_now(up, io, iomv, 0, k)
                        if sent < k:
                            await send_all(wait, up, io, iomv, sent, k)
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
                    gw.set_service_health(svc, HealthStatus.UNHEALTHY)
                    raise UpstreamError(502, "upstream closed the connection")
            gw.set_service_health(svc, HealthStatus.HEALTHY)
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
            sent = send_now(client, io, iomv, 0, k)
            if sent < k:
                await send_all(wait, client, io, iomv, sent, k)
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
                    sent = send_now(client, io, iomv, 0, out)
                    if sent < out:
                        await send_all(wait, client, io, iomv, sent, out)
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
            gw.set_service_health(svc, HealthStatus.UNHEALTHY)
            raise UpstreamError(502, "upstream error")
        finally:
            if up is not None:  # cancelled (a timeout) or failed midway
                close_socket(up)

"""One proxied request, as a state machine that never waits: send the request upstream, read
the response head, rewrite it, relay head and body to the client.

Relay.step() does every non-blocking socket call it can and then says what it waits for
(WAIT_UP_READ, WAIT_UP_WRITE, WAIT_CLIENT_WRITE), or that it needs a new upstream connection
(CONNECT), or how it ended (DONE_KEEP, DONE_CLOSE, or FAIL: answer 502). The
server's connection loop does the awaiting, so a proxied request creates no coroutine: on the
heap of a board a 460-byte generator per request is the biggest allocation there is.

One Relay per slot, made at boot. Idle connections are the Upstream pool's; timeouts are the
server reaper's (it cancels the connection task, and the server calls abort()).

The target is a service's own host and port here. With pools, lbio.PoolRelay (a subclass, so a
config without pools loads none of its code) sends to a pool's instance, reports every outcome to
the balancer and fails over to another instance when that is safe.
"""

from . import httpparse as hp
from .chunked import ERROR as CHUNK_ERROR
from .chunked import MORE as CHUNK_MORE
from .chunked import ChunkedTracker
from .compat import const, micropython, ticks_add, ticks_diff, ticks_ms
from .fwdhead import RequestWriter
from .gwtypes import HealthStatus
from .native import mem_move
from .resphead import RESERVE, ResponseHead
from .slot import STREAM, UPSTREAM
from .sockio import close as close_socket
from .sockio import send_now

INSTANCE_KEY = const(4096)  # upstream pool keys: service ids below, load-balancer instances from here

# What step() asks of the caller.
WAIT_UP_READ = const(1)
WAIT_UP_WRITE = const(2)
WAIT_CLIENT_WRITE = const(3)
CONNECT = const(4)  # open a connection to host():port(), then call connected(sock)
DONE_KEEP = const(5)  # answered; the client connection may carry another request
DONE_CLOSE = const(6)  # answered (or cut short): close the client connection
FAIL = const(7)  # the upstream failed before anything went to the client: answer 502
COLLECTED = const(8)  # collect mode: the whole answer is in the collect buffer (head_len, collected)
TOO_BIG = const(9)  # collect mode: the answer does not fit the collect buffer (nothing was sent)
RETRY = const(10)  # the answer was dropped to try again (resio.Guard.retry_answer): after()

_SEND = const(0)  # writing the request upstream: io[pos:end], then the writer's next bytes
_HEAD = const(1)  # reading the response head into io[RESERVE:]
_OUT = const(2)  # writing io[pos:end] to the client
_BODY = const(3)  # reading the next piece of the body into io
PHASE_COLLECT = const(4)  # reading the body into the collect buffer (medio.Collector: mediation)


class Relay:
    """A proxied request to a service's own host and port. lbio.PoolRelay, used when the config
    has pools, sends to a pool's instances instead; these class attributes are its fields, so a
    plain relay holds nothing for them."""

    iid = -1  # the load-balancer instance in use (PoolRelay), or -1
    extra = None  # a header line for the answer (PoolRelay: a sticky-session Set-Cookie)
    extra_len = 0
    # Timeouts a resilience config sets per request (class defaults: the gateway's own): the
    # connect timeout (0: the upstream's), and the ticks by which the whole exchange must be over.
    connect_ms = 0
    end_by = None
    guard = None  # resio.Guard, when a config has resilience settings (set on the instance then)

    def __init__(self, upstream, slot):
        self.upstream = upstream
        self.slot = slot
        self.io_tail = slot.iomv[RESERVE:]  # reads land after the head reserve without slicing
        self.head = ResponseHead()
        self.chunks = ChunkedTracker()
        self.writer = RequestWriter(slot.max_headers)
        self.sock = None  # the upstream connection in use
        self.client = None
        self.svc = -1
        self.sent = False  # bytes of the request went upstream on this attempt
        self.timeout_ms = 0
        self.reused = False
        self.retried = False
        self.phase = _SEND
        self.pos = 0
        self.end = 0
        self.n = 0  # bytes of io holding the response head (from RESERVE)
        self.left = 0  # body still to come: bytes (Content-Length), or 1 while chunked / to close
        self.client_close = False
        self.reusable = False
        self.complete = True  # the last answer ended where its framing says (not cut off)
        # Collect mode (a route whose answer is converted or cached): the whole answer, head then
        # body, goes into this buffer instead of to the client; the server takes it from there.
        self.collect = None  # type: bytearray | None
        self.collector = None  # medio.Collector: collect mode's code, loaded only with mediation
        self.head_len = 0
        self.collected = 0

    @micropython.native
    def begin(self, svc, client, timeout_ms, iid=-1):
        """Start relaying the slot's request to service svc (iid: PoolRelay's). Returns what step()
        would."""
        self.svc = svc
        self.client = client
        self.timeout_ms = timeout_ms
        self.retried = False
        self.complete = True
        return self._attach(self.upstream.take_idle(self.key()))

    def key(self):
        """The target's key in the upstream pool of idle connections (PoolRelay: its instance's)."""
        return self.svc

    @micropython.native
    def _attach(self, sock):
        slot = self.slot
        slot.phase = UPSTREAM
        self.sent = False
        if sock is None:
            self.reused = False
            self._until(self.connect_ms or self.upstream.connect_timeout_ms)
            return CONNECT
        self.reused = True
        self.upstream.reuses += 1
        return self.connected(sock)

    @micropython.native
    def connected(self, sock):
        """The upstream connection to use (new or kept alive): send the request."""
        slot = self.slot
        up = self.upstream
        self.sock = sock
        self._until(self.timeout_ms)  # the time to the first byte of the answer
        st = up.gw.strtab
        pre = slot.fwd_prefix
        poff = st.offset(pre) if pre >= 0 else 0
        plen = st.length(pre) if pre >= 0 else 0
        if self.iid >= 0:
            self.start_writer(slot, st.buf, poff, plen)  # type: ignore  # lbio.PoolRelay's: Host is the instance's
        else:
            host = up.gw.service_host_id(self.svc)
            self.writer.start(
                slot, st.buf, st.offset(host), st.length(host), up.gw.service_port(self.svc), st.buf, poff, plen
            )
        self.phase = _SEND
        self.pos = self.end = 0
        return self.step()

    def _until(self, ms):
        """The slot's deadline: ms from now, or end_by if that comes first. No allocation."""
        d = ticks_add(ticks_ms(), ms)
        e = self.end_by
        if e is not None and ticks_diff(d, e) > 0:
            d = e
        self.slot.deadline = d

    def fail(self):
        """The upstream cannot answer (refused, closed, garbled): FAIL (502), and note the service
        down."""
        self._close()
        self.upstream.gw.note_health(self.svc, HealthStatus.UNHEALTHY)
        return FAIL

    def target(self):
        """(host, port, getaddrinfo entry or None) to connect to (allocates: new connections)."""
        gw = self.upstream.gw
        return gw.strtab.get_str(gw.service_host_id(self.svc)), gw.service_port(self.svc), None

    def abort(self):
        """Drop the upstream connection (a timeout cancelled the request, or the client left)."""
        self._close()
        self._release()

    def _close(self):
        if self.sock is not None:
            close_socket(self.sock)
            self.sock = None

    def _release(self):
        """The request is done with its target (PoolRelay: the instance's connection count)."""

    def answered(self, status):
        """A response head came from the target: it is up."""
        self.upstream.gw.note_health(self.svc, HealthStatus.HEALTHY)

    def finished(self, sock, keep):
        """The answer ended: keep sock for the target's next request (keep, and the service keeps
        connections alive) or close it. No allocation."""
        up = self.upstream
        if keep and up.gw.service_keepalive(self.svc):
            up.give_back(self.key(), sock)
        else:
            close_socket(sock)
        self._release()

    @micropython.native
    def step(self):
        """Go as far as the sockets allow without waiting. No allocation, except a memoryview
        slice when a response head arrives in more than one piece."""
        slot = self.slot
        io = slot.io
        sock = self.sock
        if sock is None:
            return self._failed()
        try:
            while True:
                ph = self.phase
                if ph == _SEND:
                    if self.pos < self.end:
                        k = send_now(sock, io, self.pos, self.end)
                        if k:
                            self.sent = True
                        self.pos += k
                        if self.pos < self.end:
                            return WAIT_UP_WRITE
                    k = self.writer.fill(io)
                    if k:
                        self.pos = 0
                        self.end = k
                        continue
                    self.phase = _HEAD
                    self.n = RESERVE
                    return WAIT_UP_READ  # the answer cannot be there yet: no read to try
                if ph == _HEAD:
                    # Parse what is in the buffer first (an interim answer may have brought the
                    # final one with it); read only when the head is not complete yet.
                    n = self.n
                    head = self.head
                    he = head.parse(io, RESERVE, n) if n > RESERVE else 0
                    if he == 0:
                        if n >= len(io):
                            return self.fail()
                        k = sock.readinto(self.io_tail if n == RESERVE else slot.iomv[n:])
                        if k is None:
                            return WAIT_UP_READ
                        if k == 0:
                            raise OSError(104)  # closed before answering
                        self.n = n + k
                        continue
                    if he < 0:
                        return self.fail()
                    if head.status < 200:  # an interim answer (1xx): skip it
                        mem_move(io, RESERVE, io, he, n - he)
                        self.n = RESERVE + n - he
                        continue
                    g = self.guard
                    if g is not None and g.retry_answer(self, he):
                        self.answered(head.status)
                        self._close()  # its body unread: the connection cannot be reused
                        self._release()
                        return RETRY
                    col = self.collector
                    if self.collect is not None and col is not None:
                        r = col.start(self, he)
                        if r:
                            return r
                        continue
                    self._start_answer(he)
                    continue
                if ph == PHASE_COLLECT:
                    col = self.collector
                    r = col.more(self) if col is not None else FAIL
                    if r:
                        return r
                    continue
                if ph == _OUT:
                    self.pos += send_now(self.client, io, self.pos, self.end)
                    if self.pos < self.end:
                        return WAIT_CLIENT_WRITE
                    self._until(self.timeout_ms)  # the longest wait for more of the answer
                    if self.left <= 0:
                        return self._finish(True)
                    self.phase = _BODY
                    return WAIT_UP_READ
                # _BODY
                head = self.head
                left = self.left
                if head.length >= 0 and left < len(io):
                    k = sock.readinto(io, left)
                else:
                    k = sock.readinto(io)
                if k is None:
                    return WAIT_UP_READ
                if k == 0:
                    return self._finish(head.length < 0 and not head.chunked)  # closed: the end?
                out = k
                if head.chunked:
                    r = self.chunks.feed(io, 0, k)
                    if r == CHUNK_ERROR:
                        return self._finish(False)
                    if r != CHUNK_MORE:
                        out = r
                        self.left = 0
                elif head.length >= 0:
                    self.left = left - k
                self.pos = 0
                self.end = out
                self.phase = _OUT
        except OSError:
            return self._failed()

    @micropython.native
    def _start_answer(self, he):
        """The response head is in: rewrite it and queue head plus the body bytes that came
        with it for the client."""
        slot = self.slot
        io = slot.io
        head = self.head
        self.answered(head.status)
        has_body = head.has_body(slot.method == hp.METHOD_HEAD)
        delimited = (not has_body) or head.length >= 0 or head.chunked
        self.client_close = (not slot.keep_alive) or not delimited
        self.reusable = delimited and not head.close
        hl = head.rewrite(io, RESERVE, self.client_close, slot.version, self.extra, self.extra_len)
        extra = self.n - he if has_body else 0
        if head.length >= 0 and extra > head.length:
            extra = head.length
        mem_move(io, hl, io, he, extra)
        if not has_body:
            self.left = 0
        elif head.chunked:
            self.chunks.reset()
            r = self.chunks.feed(io, hl, hl + extra)
            if r == CHUNK_ERROR:  # garbled framing: relay what came, then close both sides
                self.client_close = True
                self.reusable = False
            self.left = 1 if r == CHUNK_MORE else 0
        elif head.length >= 0:
            self.left = head.length - extra
        else:
            self.left = 1  # no framing: the body ends when the upstream closes
        slot.phase = STREAM
        slot.resp_started = True
        slot.status = head.status
        self.pos = 0
        self.end = hl + extra
        self.phase = _OUT

    @micropython.native
    def _finish(self, complete):
        """The answer ended (complete: where its framing says). Keep the upstream connection
        if it can carry another request; say whether the client connection can."""
        sock = self.sock
        self.sock = None
        self.complete = complete
        self.finished(sock, complete and self.reusable)
        if not complete or self.client_close:
            return DONE_CLOSE
        return DONE_KEEP

    def _failed(self):
        """A socket error. Before the answer started: retry once on a fresh connection when a
        kept-alive one turned out stale, else fail() (another instance, or 502). After: end the
        client connection."""
        if self.slot.resp_started:
            self.complete = False  # cut off: the client has part of an answer
            self.abort()
            return DONE_CLOSE
        self._close()
        if self.reused and not self.retried:
            self.retried = True
            return self._attach(None)
        return self.fail()

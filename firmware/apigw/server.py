"""The gateway's listener: connections, slots, queueing, timeouts, its own endpoints, shutdown.

A connection gets a slot from the SlotPool (or waits a bounded time for one, then 503 with
Retry-After), reads into the slot's buffer with readinto, and runs each request through
parse -> route -> dispatch -> a direct answer, or the slot's Relay, whose waits this loop does
(one coroutine per connection, none per request). One reaper task enforces every timeout by
cancelling the connection's task when its slot's deadline passes (no wait_for per read), and
closes idle keep-alive connections early when others are queued for a slot.

Route semantics live in ApiGateway; this module only moves bytes and keeps counters.
"""

import asyncio
import json
import socket
import sys

from . import __version__, relay
from . import httpparse as hp
from . import response as rsp
from .compat import micropython, mem_alloc, mem_free, mem_total, ticks_add, ticks_diff, ticks_ms
from .native import mem_eq, mem_move
from .routetable import NO_POLICY
from .slot import BODY, FREE, HEAD, IDLE, UPSTREAM, SlotPool
from .sockio import IOWait, connect, install, pin, send_all, send_now
from .sockio import close as close_socket
from .upstream import Upstream

GW_PREFIX = b"/_gw/"
GW_HEALTH = b"/_gw/health"
GW_TOKEN = b"/_gw/token"
GW_AUTH = b"/_gw/auth"
X_CACHE_HIT = b"X-Cache: HIT\r\n"
X_CACHE_MISS = b"X-Cache: MISS\r\n"
_REAP_MS = 100
# (level, option) for TCP_NODELAY; the unix port's socket module lacks the names (Linux values).
_NODELAY = (getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1))


def no_delay(sock):
    """Turn Nagle off: an answer goes out in several writes (head, body pieces), and with Nagle
    each write after the first waits for the client's delayed ACK (up to 40 ms)."""
    try:
        sock.setsockopt(_NODELAY[0], _NODELAY[1], 1)
    except (OSError, AttributeError):
        pass


def peer_ip(addr):
    """The client's IP as bytes, from what accept() returned (a tuple on boards, a raw sockaddr on
    the unix port). Allocates; once per connection."""
    try:
        if isinstance(addr, tuple):
            return str(addr[0]).encode()
        family, raw, _ = socket.sockaddr(addr)  # type: ignore[attr-defined]
        return socket.inet_ntop(family, raw).encode()  # type: ignore[attr-defined]
    except Exception:
        return b"unknown"


class Stats:
    """Counters kept by the server (the monitoring module builds on these)."""

    def __init__(self):
        self.connections = 0
        self.requests = 0
        self.by_class = [0] * 6  # responses per status class: index 1..5
        self.parse_errors = 0
        self.queued = 0  # connections that waited for a slot
        self.rejected = 0  # connections answered 503 because no slot came free
        self.timeouts = 0  # 408 and 504
        self.upstream_errors = 0  # 502

    def count(self, status):
        self.by_class[status // 100] += 1


class Server:
    def __init__(self, config, log=print, on_tick=None, pool=None):
        self.config = config
        self.gw = config.gateway
        lc = config.listen
        self.listen = lc
        self.log = log
        self.on_tick = on_tick  # called every reaper round (a board feeds its watchdog there)
        # The slots: made here unless the caller made them earlier (main.py does, before the
        # tables, so the 8 KB buffers get an unfragmented heap).
        self.pool = pool or SlotPool(lc.slots, lc.request_buffer, lc.io_buffer, lc.max_headers)
        self.waits = [IOWait() for _ in range(lc.slots)]  # one per slot, made at boot
        self.upstream = Upstream(
            self.gw,
            self.pool.slots,
            max_idle_per_service=lc.slots,  # as many as can be busy at once: no connection churn
            idle_ms=4000,  # below the 5 s keep-alive timeout common in HTTP servers
            connect_timeout_ms=lc.connect_timeout_ms,
        )
        self.stats = Stats()
        self.waiters = []  # [event, slot] per queued connection, oldest first
        self.started = ticks_ms()
        self.stopping = False
        self.listener = None
        self.reaper = None
        self.stopped = asyncio.Event()
        self.tls = None  # tls.ServerTLS, made in start() when listen.tls_cert is set
        # Mediation: the RequestMediator, and the buffers collected answers go into (made at boot).
        self.mediator = getattr(config, "mediator", None)
        self.med_free = []
        self.med_held = [None] * lc.slots  # the buffer each slot holds, to give back however it ends
        self.med_tid = [0] * lc.slots  # the transform of the request each slot is mediating
        self.med_entry = [0] * lc.slots  # the cache entry a slot is answering from
        self.med_accept = [-1] * lc.slots  # the ContentType the client asked for, or -1
        if self.mediator is not None:
            m = self.mediator
            self.med_free = [bytearray(m.buffer_bytes) for _ in range(m.buffers)]
        self.gate = getattr(config, "gate", None)  # the auth stage (authgate.AuthGate), or None: every route is public
        self._tick_clock()

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self):
        lc = self.listen
        install()  # asyncio's I/O queue, minus its allocation per wait on the gateway's sockets
        if lc.tls_cert:
            from .tls import ServerTLS  # only a TLS listener loads ssl (about 1 KB of heap)

            self.tls = ServerTLS(lc)
        self.listener = await asyncio.start_server(self._on_connect, lc.host, lc.port, backlog=lc.slots + lc.queue_max)
        self.reaper = asyncio.create_task(self._reap())
        self.log("apigw " + __version__ + " listening on " + lc.host + ":" + str(lc.port))

    async def stop(self, deadline_ms=None):
        """Stop accepting, let requests in flight finish until the deadline, close everything."""
        if deadline_ms is None:
            deadline_ms = self.listen.shutdown_timeout_ms
        self.stopping = True
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for w in self.waiters:
            w[0].set()
        end = ticks_add(ticks_ms(), deadline_ms)
        while self.pool.in_use() and ticks_diff(end, ticks_ms()) > 0:
            self._cancel_idle()
            await asyncio.sleep_ms(20)
        for slot in self.pool.slots:
            if slot.task is not None:
                slot.task.cancel()
        await asyncio.sleep_ms(0)
        self.upstream.close_all()
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        self.stopped.set()
        self.log("apigw stopped")

    def _cancel_idle(self):
        """Close connections with no request in flight: idle keep-alive ones, and new ones that
        have sent nothing yet."""
        for slot in self.pool.slots:
            if slot.task is not None and (slot.phase == IDLE or (slot.phase == HEAD and slot.n == 0)):
                slot.task.cancel()
                slot.task = None

    async def _reap(self):
        """Every 100 ms: cancel connections past their deadline; reclaim idle ones if others wait."""
        tick = 0
        try:
            while True:
                await asyncio.sleep_ms(_REAP_MS)
                now = ticks_ms()
                for slot in self.pool.slots:
                    if slot.phase == FREE or slot.task is None:
                        continue
                    late = ticks_diff(now, slot.deadline) >= 0
                    if late or (slot.phase == IDLE and self.waiters):
                        slot.timed_out = slot.phase
                        slot.task.cancel()
                        slot.task = None
                if self.on_tick is not None:
                    self.on_tick()
                tick += 1
                if tick % 10 == 0:
                    self.upstream.sweep()
                    self._tick_clock()
                    cache = self.mediator.cache if self.mediator is not None else None
                    if cache is not None:
                        cache.sweep(now)  # expired answers go (ticks wrap)
        except asyncio.CancelledError:
            pass

    def _tick_clock(self):
        """The auth stage reads the time in whole seconds from here (reading the clock per request
        would allocate a float on the unix port)."""
        if self.gate is not None:
            from .authtypes import clock_s

            self.gate.auth.now = clock_s()

    # -- connections -----------------------------------------------------------------------------

    async def _wait_slot(self):
        """Queue for a slot; None when none came free in time (or the queue is full)."""
        lc = self.listen
        if len(self.waiters) >= lc.queue_max or self.stopping:
            return None
        waiter = [asyncio.Event(), None]
        self.waiters.append(waiter)
        self.stats.queued += 1
        try:
            await asyncio.wait_for_ms(waiter[0].wait(), lc.queue_timeout_ms)
        except asyncio.TimeoutError:
            pass
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        return waiter[1]

    def _release(self, slot):
        slot.task = None
        while self.waiters and not self.stopping:  # hand the slot straight to the oldest waiter
            waiter = self.waiters.pop(0)
            slot.reset()
            waiter[1] = slot
            waiter[0].set()
            return
        self.pool.release(slot)

    async def _on_connect(self, reader, writer):
        self.stats.connections += 1
        raw = sock = writer.s  # the raw socket behind asyncio's Stream: the request path uses it directly
        no_delay(sock)
        slot = self.pool.acquire()
        if slot is None:
            slot = await self._wait_slot()
            if slot is None:
                self._refuse(sock)
                sock.close()
                return
        slot.attach(asyncio.current_task(), peer_ip(writer.get_extra_info("peername")))
        wait = self.waits[slot.index]
        try:
            if self.tls is not None:
                sock = self.tls.wrap(raw)  # only now: a queued connection holds no TLS session
            pin(sock, raw)  # its waits allocate nothing from here on
            await self._serve(slot, sock, wait)
        except asyncio.CancelledError:
            self._on_cancel(slot, sock)
        except OSError:
            pass  # the client went away
        except Exception as e:  # never a traceback to the client; log it and keep serving
            self.log("apigw: internal error: " + repr(e))
            sys.print_exception(e)  # type: ignore[attr-defined]
            if not slot.resp_started:
                self._reply_error(slot, sock, 500, False, 0)
        finally:
            self.upstream.relays[slot.index].abort()  # a request cut short leaves no upstream socket
            self._release_med(slot)
            close_socket(sock)
            if sock is not raw:
                raw.close()  # after a failed TLS handshake, closing the TLS stream leaves it open
            self._release(slot)

    def _refuse(self, sock):
        """503 with Retry-After for a connection that got no slot (rare path: allocates)."""
        self.stats.rejected += 1
        if self.tls is not None:
            return  # a 503 over TLS needs a session, the memory this refusal saves: just close
        self.stats.count(503)
        buf = bytearray(256)
        n = rsp.compose_error(buf, 503, False, 11, 0, 1, False)
        try:
            send_now(sock, buf, 0, n)
        except OSError:
            pass

    def _on_cancel(self, slot, sock):
        """The reaper cancelled the connection (a deadline passed) or the gateway is stopping:
        answer 408 or 504 if nothing was answered yet, without waiting on the client."""
        phase = slot.timed_out
        status = 0
        if (phase == HEAD or phase == BODY) and slot.n > 0:
            status = 408
        elif phase == UPSTREAM and not slot.resp_started:
            status = 504
        if status:
            self.stats.timeouts += 1
            try:
                self._reply_error(slot, sock, status, False, 0)
            except OSError:
                pass

    @micropython.native
    def _reply_error(self, slot, sock, status, keep_alive, allow):
        """Compose the JSON error for status in the slot's I/O buffer and send what the socket
        takes now. True if some is left (slot.out_start:out_end) for send_all. No allocation."""
        self.stats.count(status)
        n = rsp.compose_error(slot.io, status, keep_alive, slot.version, allow, -1, slot.method == hp.METHOD_HEAD)
        slot.resp_started = True
        slot.out_start = send_now(sock, slot.io, 0, n)
        slot.out_end = n
        return slot.out_start < n

    async def _serve(self, slot, sock, wait):
        """Serve requests on one connection until it closes. A keep-alive request allocates
        nothing here, proxied or not: only pipelined bytes (a memoryview slice), a new upstream
        connection, or an answer the socket does not take at once do."""
        lc = self.listen
        gw = self.gw
        stats = self.stats
        relays = self.upstream.relays
        buf = slot.buf
        io = slot.io
        size = len(buf)
        slot.phase = HEAD
        slot.deadline = ticks_add(ticks_ms(), lc.header_timeout_ms)
        full = False  # the last read filled the buffer: a TLS stream may hold more (sockio.py)
        while True:
            r = hp.parse_request(slot) if slot.n else hp.NEED_MORE
            while r == hp.NEED_MORE:
                if slot.expect_continue and slot.head_end and not slot.continue_sent:
                    slot.continue_sent = True
                    send_now(sock, rsp.CONTINUE_100, 0, len(rsp.CONTINUE_100))
                if not full:
                    await wait.readable(sock)
                k = sock.readinto(buf if slot.n == 0 else slot.mv[slot.n : size])
                if k is None:
                    full = False
                    continue
                if k == 0:
                    return  # the client closed
                if slot.phase == IDLE:
                    slot.phase = HEAD
                    slot.deadline = ticks_add(ticks_ms(), lc.header_timeout_ms)
                slot.n += k
                full = slot.n == size
                r = hp.parse_request(slot)
                if r == hp.NEED_MORE and slot.head_end and slot.phase == HEAD:
                    slot.phase = BODY
                    slot.deadline = ticks_add(ticks_ms(), lc.header_timeout_ms)
            if r != hp.DONE:
                stats.parse_errors += 1
                if self._reply_error(slot, sock, r, False, 0):
                    await send_all(wait, sock, io, slot.out_start, slot.out_end)
                return
            stats.requests += 1
            keep = slot.keep_alive
            left = False
            if slot.path_end - slot.path_start >= 5 and mem_eq(buf, slot.path_start, GW_PREFIX, 0, 5):
                keep = await self._gateway_endpoint(slot, sock, wait)
            else:
                rid = gw.route_request(slot)
                if rid < 0:
                    if rid == -405:
                        left = self._reply_error(slot, sock, 405, keep, slot.allow)
                    else:
                        left = self._reply_error(slot, sock, 404, keep, 0)
                else:
                    svc = gw.dispatch_request(slot)
                    pid = gw.route_policy(rid)
                    if pid != NO_POLICY and self.gate is not None:
                        st = self.gate.check(slot, pid)
                        if st == -1:  # authgate.NEED_INTROSPECTION: an opaque bearer token
                            st = await self.gate.introspect(slot, pid)
                        if st:
                            svc = -2  # refused: answered below
                            left = self._reply_refused(slot, sock, st, keep)
                    if svc == -2:
                        pass
                    elif svc < 0:
                        status, ctype, body = gw.respond_parts(rid)
                        more = self._send(slot, sock, status, ctype, body)
                        if more:
                            await self._send_rest(slot, sock, wait, body, more)
                    else:
                        tid = gw.route_transform(rid) if self.mediator is not None else -1
                        done = self._mediate_request(slot, sock, rid, tid, svc) if tid >= 0 else 0
                        if done:  # answered from the cache, or refused: io[out_start:out_end] is left
                            keep = keep and done == 1
                            left = slot.out_start < slot.out_end
                            if done == 3:  # a cached body bigger than the I/O buffer
                                await self._send_cached_body(slot, sock, wait)
                                left = False
                            svc = -2
                    if svc >= 0:
                        # The relay does the work and says what it waits for; this loop does the
                        # waiting, so a proxied request creates no coroutine of its own.
                        rl = relays[slot.index]
                        w = rl.begin(svc, sock, gw.service_timeout(svc))
                        while w < relay.DONE_KEEP:
                            if w == relay.WAIT_UP_READ:
                                await wait.readable(rl.sock)
                            elif w == relay.WAIT_CLIENT_WRITE:
                                await wait.writable(sock)
                            elif w == relay.WAIT_UP_WRITE:
                                await wait.writable(rl.sock)
                            else:  # relay.CONNECT
                                try:
                                    conn = await connect(wait, rl.host(), rl.port())  # new connections only
                                except OSError:
                                    w = rl.fail()
                                    continue
                                self.upstream.connects += 1
                                w = rl.connected(conn)
                                continue
                            w = rl.step()
                        if rl.collect is not None:  # mediation: the answer is converted, then sent
                            keep = await self._mediate_response(slot, sock, wait, rid, w, keep)
                            left = slot.out_start < slot.out_end  # an error answer not all sent yet
                        elif w == relay.FAIL:
                            stats.upstream_errors += 1
                            keep = False
                            left = self._reply_error(slot, sock, 502, False, 0)
                        else:
                            stats.count(200)  # relayed (per-status counts come with monitoring)
                            keep = keep and w == relay.DONE_KEEP
            if left:  # the socket did not take the whole answer at once
                await send_all(wait, sock, io, slot.out_start, slot.out_end)
            if not keep or self.stopping:
                return
            slot.consume()
            if slot.n:
                slot.phase = HEAD
                slot.deadline = ticks_add(ticks_ms(), lc.header_timeout_ms)
            else:
                slot.phase = IDLE
                slot.deadline = ticks_add(ticks_ms(), lc.idle_timeout_ms)

    @micropython.native
    def _reply_refused(self, slot, sock, status, keep_alive):
        """401/403/429/503 from the auth stage: its JSON error and its header lines
        (WWW-Authenticate, RateLimit-*). No allocation once each error code was sent once."""
        self.stats.count(status)
        g = self.gate
        assert g is not None
        body = g.error_body()
        n = rsp.compose(
            slot.io,
            status,
            None,
            body,
            len(body),
            keep_alive,
            slot.version,
            0,
            -1,
            slot.method == hp.METHOD_HEAD,
            g.hdr,
            g.hdr_len,
        )
        slot.resp_started = True
        slot.out_start = send_now(sock, slot.io, 0, n)
        slot.out_end = n
        return slot.out_start < n

    # -- mediation (routes with a transform) ----------------------------------------------------

    def _mediate_request(self, slot, sock, rid, tid, svc):
        """Before forwarding a request on a route with a transform: answer a cached GET/HEAD (no
        allocation), or convert and check the body, and arrange for the answer to be collected.
        Returns 0 to forward, 1 (keep-alive) or 2 (close) when answered here, 3 when a cached
        answer's body still has to be sent (_send_cached_body)."""
        med = self.mediator
        assert med is not None
        t = med.transforms[tid]
        cache = med.cache
        if t.policy.cache_ttl and cache is not None and slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
            i = cache.lookup(slot, rid, ticks_ms())
            if i >= 0 and cache.entry_body(i) - cache.entry_head(i) + 128 <= len(slot.io):  # else: a miss
                self.med_entry[slot.index] = i
                return self._send_cached(slot, sock, i)
        return self._prepare_forward(slot, sock, tid, t)

    @micropython.native
    def _send_cached(self, slot, sock, i):
        """A cache hit: the stored head, X-Cache and Age, the connection's own header, the body
        (when it fits the I/O buffer with the head). No allocation."""
        med = self.mediator
        assert med is not None
        cache = med.cache
        assert cache is not None
        io = slot.io
        cb = cache.buf
        hs = cache.entry_head(i)
        bs = cache.entry_body(i)
        be = cache.entry_end(i)
        n = bs - hs
        mem_move(io, 0, cb, hs, n)  # the stored head ends with its last header line's CRLF
        pos = rsp.put(io, n, X_CACHE_HIT)
        pos = cache.write_age(i, ticks_ms(), io, pos)
        if not slot.keep_alive:
            pos = rsp.put(io, pos, rsp.H_CLOSE)
        elif slot.version == 10:
            pos = rsp.put(io, pos, rsp.H_KEEP_ALIVE)
        pos = rsp.put(io, pos, rsp.H_END)
        self.stats.count(200)
        slot.resp_started = True
        more = 0
        if slot.method != hp.METHOD_HEAD:
            if pos + be - bs <= len(io):
                mem_move(io, pos, cb, bs, be - bs)
                pos += be - bs
            else:
                more = 3
        slot.out_start = send_now(sock, io, 0, pos)
        slot.out_end = pos
        if more:
            return 3
        return 1 if slot.keep_alive else 2

    async def _send_cached_body(self, slot, sock, wait):
        """The rest of a cache hit whose body did not fit the I/O buffer (allocates: rare)."""
        med = self.mediator
        assert med is not None
        cache = med.cache
        assert cache is not None
        i = self.med_entry[slot.index]
        gen = cache.entry_gen(i)
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        if cache.entry_gen(i) != gen:  # the entry was taken for another answer meanwhile
            raise OSError(104)
        await send_all(wait, sock, cache.buf, cache.entry_body(i), cache.entry_end(i))

    def _prepare_forward(self, slot, sock, tid, t):
        """Convert and check the request body; set what is forwarded; take a buffer for the
        answer when it is converted or cached. Allocates (mediated routes only)."""
        from .fwdhead import Forwarded
        from .mediator import ContentType, MediationError

        med = self.mediator
        assert med is not None
        buf = slot.buf
        body = slot.mv[slot.head_end : slot.body_end]
        ctype = -1
        accept = -1
        for k in range(slot.nhdr):
            kind = slot.hkind[k]
            if kind == hp.HDR_CONTENT_TYPE:
                ctype = ContentType.from_media(buf[slot.hdr[4 * k + 2] : slot.hdr[4 * k + 3]])
            elif kind == hp.HDR_ACCEPT:
                accept = ContentType.from_media(buf[slot.hdr[4 * k + 2] : slot.hdr[4 * k + 3]].split(b",")[0])
        self.med_accept[slot.index] = accept
        try:
            if t.converts_request() and (slot.body_end > slot.head_end or t.grpc is not None):
                out, to = med.transform_request(tid, ctype, bytes(body))
                media = b"application/grpc-web+proto" if t.grpc is not None else ContentType.MEDIA[to]
            else:
                out, media = bytes(body), None
        except MediationError as e:
            med.refused += 1
            return self._reply_mediation_error(slot, sock, e.status, e.code, e.message)
        add = t.req_headers_add + (b"X-Grpc-Web: 1\r\n" if t.grpc is not None else b"")
        if media is not None or t.req_headers_remove or add or t.grpc is not None:
            slot.fwd_med = Forwarded(out, media, t.req_headers_remove, add, t.grpc)
        if t.converts_response() or t.policy.cache_ttl:
            if not self.med_free:
                return self._reply_mediation_error(
                    slot, sock, 503, "service_unavailable", "every mediation buffer is in use"
                )
            b = self.med_free.pop()
            self.med_held[slot.index] = b
            self.upstream.relays[slot.index].collect = b
            self.med_tid[slot.index] = tid
        return 0

    def _reply_mediation_error(self, slot, sock, status, code, message):
        from .errors import error_json

        body = error_json(status, code, message)
        self.stats.count(status)
        n = rsp.compose(
            slot.io, status, None, body, len(body), slot.keep_alive, slot.version, 0, -1, slot.method == hp.METHOD_HEAD
        )
        slot.resp_started = True
        if n < 0:  # a long message: the head only
            n = -n
        slot.out_start = send_now(sock, slot.io, 0, n)
        slot.out_end = n
        return 1 if slot.keep_alive else 2

    async def _mediate_response(self, slot, sock, wait, rid, w, keep):
        """The collected answer: convert it, check it, cache it, send it. Returns keep-alive."""
        from . import httpmsg
        from .mediator import ContentType, MediationError

        rl = self.upstream.relays[slot.index]
        med = self.mediator
        assert med is not None
        tid = self.med_tid[slot.index]
        t = med.transforms[tid]
        buf = rl.collect
        try:
            if w == relay.TOO_BIG:
                self.stats.upstream_errors += 1
                return self._answer_error(
                    slot,
                    sock,
                    502,
                    "bad_gateway",
                    "the service's answer is larger than mediation.limits.buffer_bytes",
                    keep,
                )
            if w != relay.COLLECTED:
                self.stats.upstream_errors += 1
                return self._answer_error(slot, sock, 502, "bad_gateway", None, keep)
            hl = rl.head_len
            end = rl.collected
            status, reason, headers = httpmsg.parse_head(buf, hl)
            if rl.head.chunked:
                end = httpmsg.dechunk(buf, hl, end)
                if end < 0:
                    return self._answer_error(slot, sock, 502, "bad_gateway", "broken chunked framing", keep)
            body = bytes(buf[hl:end])
            up_ctype = httpmsg.header(headers, b"content-type")
            ctype = ContentType.from_media(up_ctype) if up_ctype is not None else -1
            if t.grpc is not None and httpmsg.header(headers, b"grpc-status") is not None:
                from .grpcweb import trailers_frame  # a trailers-only answer: the status is in the head

                body = body + trailers_frame(headers)
            media = None
            extra = b""
            if t.converts_response():
                st, to, body, extra = med.transform_response(tid, status, ctype, body, self.med_accept[slot.index])
                if st != status:
                    status, reason = st, rsp.REASONS.get(st, "OK").encode()
                media = ContentType.MEDIA[to] if to >= 0 else None
            head = httpmsg.compose_head(
                status, reason, headers, t.resp_headers_remove, media, len(body), extra, True, 11
            )
            if (
                t.policy.cache_ttl
                and med.cache is not None
                and status == 200
                and slot.method & (hp.METHOD_GET | hp.METHOD_HEAD)
            ):
                med.cache_set(slot, rid, t.policy.cache_ttl * 1000, head[:-2], body, ticks_ms())
            head = head[:-2] + X_CACHE_MISS if t.policy.cache_ttl else head[:-2]
            if not keep:
                head += rsp.H_CLOSE
            elif slot.version == 10:
                head += rsp.H_KEEP_ALIVE
            head += rsp.H_END
            self.stats.count(status)
            slot.resp_started = True
            await send_all(wait, sock, head, 0, len(head))
            if slot.method != hp.METHOD_HEAD:
                await send_all(wait, sock, body, 0, len(body))
            return keep
        except MediationError as e:
            return self._answer_error(slot, sock, e.status, e.code, e.message, keep)
        finally:
            self._release_med(slot)

    def _answer_error(self, slot, sock, status, code, message, keep):
        """An error for a mediated route, written now (the rest, if any, goes with `left`)."""
        self._reply_mediation_error(slot, sock, status, code, message)
        return keep and slot.keep_alive

    def _release_med(self, slot):
        rl = self.upstream.relays[slot.index]
        rl.collect = None
        b = self.med_held[slot.index]
        if b is not None:
            self.med_held[slot.index] = None
            self.med_free.append(b)

    @micropython.native
    def _send(self, slot, sock, status, ctype, body, extra=None):
        """A direct answer (respond routes, gateway endpoints), sent as far as the socket takes it
        now. Returns 0 when all went out, 1 when io[out_start:out_end] is left, 2 when the body
        did not fit the I/O buffer and goes after the head: then await _send_rest. No allocation."""
        self.stats.count(status)
        io = slot.io
        n = rsp.compose(
            io,
            status,
            ctype,
            body,
            len(body),
            slot.keep_alive,
            slot.version,
            0,
            -1,
            slot.method == hp.METHOD_HEAD,
            extra,
            0 if extra is None else len(extra),
        )
        slot.resp_started = True
        if n < 0:
            slot.out_start = 0
            slot.out_end = -n
            return 2
        slot.out_start = send_now(sock, io, 0, n)
        slot.out_end = n
        return 1 if slot.out_start < n else 0

    async def _send_rest(self, slot, sock, wait, body, left):
        """What _send could not write at once (allocates a coroutine: the uncommon case)."""
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        if left == 2:
            await send_all(wait, sock, body, 0, len(body))

    async def _gateway_endpoint(self, slot, sock, wait):
        """The /_gw/ prefix belongs to the gateway: /_gw/health here, more in later modules."""
        buf = slot.buf
        left = False
        n = slot.path_end - slot.path_start
        if n == len(GW_HEALTH) and mem_eq(buf, slot.path_start, GW_HEALTH, 0, n):
            if not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
                left = self._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
            else:
                body = json.dumps(self.health()).encode()
                more = self._send(slot, sock, 200, None, body)
                if more:
                    await self._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        elif self.gate is not None and (self._is(slot, GW_TOKEN) or self._is(slot, GW_AUTH)):
            return await self._auth_endpoint(slot, sock, wait)
        else:
            left = self._reply_error(slot, sock, 404, slot.keep_alive, 0)
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive

    @staticmethod
    def _is(slot, path):
        n = slot.path_end - slot.path_start
        return n == len(path) and mem_eq(slot.buf, slot.path_start, path, 0, n)

    async def _auth_endpoint(self, slot, sock, wait):
        """POST /_gw/token (client credentials -> JWT) and GET /_gw/auth (the auth stage's figures,
        for an Admin). Allocate; not on the proxy path."""
        g = self.gate
        assert g is not None
        if self._is(slot, GW_TOKEN):
            if slot.method != hp.METHOD_POST:
                left = self._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_POST)
            else:
                from .tokenendpoint import issue

                authz = None
                for k in range(slot.nhdr):
                    if slot.hkind[k] == hp.HDR_AUTHORIZATION:
                        authz = bytes(slot.buf[slot.hdr[4 * k + 2] : slot.hdr[4 * k + 3]])
                status, body, extra = issue(g.auth, authz, bytes(slot.buf[slot.head_end : slot.body_end]))
                more = self._send(slot, sock, status, None, body, extra)
                if more:
                    await self._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        elif not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
            left = self._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
        else:
            st = g.check(slot, g.admin_policy)
            if st:
                left = self._reply_refused(slot, sock, st, slot.keep_alive)
            else:
                body = json.dumps(self.auth_status()).encode()
                more = self._send(slot, sock, 200, None, body)
                if more:
                    await self._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive

    def auth_status(self):
        """The /_gw/auth document: counters, table use, the clock (no secret, no token)."""
        g = self.gate
        assert g is not None
        a = g.auth
        d = g.stats()
        d["clock_synced"] = a.now > 0
        d["tokens"] = a.get_token_count()
        d["api_keys"] = len(a._k_ids)
        d["users"] = len(a._u_ids)
        d["revoked"] = len(a._revoked)
        d["policies"] = [g.describe(p) for p in range(len(g.names))]
        return d

    def health(self):
        """The /_gw/health document (allocates; not on the proxy path)."""
        return {
            "status": "stopping" if self.stopping else "ok",
            "version": __version__,
            "uptime_s": ticks_diff(ticks_ms(), self.started) // 1000,
            "heap_free": mem_free(),
            "heap_used": mem_alloc(),
            "alloc_total": mem_total(),
            "slots": len(self.pool),
            "slots_in_use": self.pool.in_use(),
            "slots_peak": self.pool.peak,
            "queued": len(self.waiters),
            "services": self.gw.get_service_count(),
            "routes": self.gw.get_route_count(),
            "requests": self.stats.requests,
            "auth": None if self.gate is None else {"clock_synced": self.gate.auth.now > 0},
        }

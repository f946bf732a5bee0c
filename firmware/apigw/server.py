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
import socket
import sys

from . import __version__, relay
from . import httpparse as hp
from . import response as rsp
from .compat import micropython, mem_alloc, mem_free, mem_total, ticks_add, ticks_diff, ticks_ms
from .endpoints import GatewayEndpoints
from .native import mem_eq
from .routetable import NO_POLICY
from .slot import BODY, FREE, HEAD, IDLE, STREAM, UPSTREAM, SlotPool
from .sockio import IOWait, connect, install, pin, send_all, send_now
from .sockio import close as close_socket
from .relay import Relay
from .upstream import Upstream

GW_PREFIX = b"/_gw/"
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
        c = status // 100
        if 0 < c < 6:  # an upstream's odd status (600-999) is relayed, not counted
            self.by_class[c] += 1


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
        # Load balancing: the pools' balancer (lbio.Balancer), when the config has pools.
        self.balancer = b = getattr(config, "balancer", None)
        self.upstream = Upstream(
            self.gw,
            self.pool.slots,
            # as many as can be busy at once: no connection churn
            max_idle_per_target=b.max_idle_per_instance if b is not None else lc.slots,
            idle_ms=b.idle_ms if b is not None else 4000,  # below the 5 s keep-alive common in servers
            connect_timeout_ms=lc.connect_timeout_ms,
            max_idle=b.max_idle if b is not None else 0,
            relay=b.relay_class() if b is not None else Relay,
        )
        if b is not None:
            b.attach(self.upstream, bool(lc.tls_cert))
        self.monitoring = getattr(config, "monitoring", None)  # monio.Monitoring, with a monitoring section
        self.guard = g = getattr(config, "guard", None)  # resio.Guard, with resilience settings
        if g is not None:
            g.attach(self.upstream)
        self.stats = Stats()
        self.waiters = []  # [event, slot] per queued connection, oldest first
        self.started = ticks_ms()
        self.stopping = False
        self.listener = None
        self.reaper = None
        self.stopped = asyncio.Event()
        self.tls = None  # tls.ServerTLS, made in start() when listen.tls_cert is set
        # Mediation: the RequestMediator, and its I/O (the buffers answers are collected into).
        self.mediator = getattr(config, "mediator", None)
        self.medio = None  # medio.MediationIO, when the config has a mediation section
        if self.mediator is not None:
            from .medio import MediationIO

            self.medio = MediationIO(self, self.mediator, lc.slots)
        self.endpoints = GatewayEndpoints(self)
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
        if self.balancer is not None:
            self.balancer.start()  # health probes, re-resolution, registry expiry
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
        if self.balancer is not None:
            self.balancer.stop()
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
                    if self.monitoring is not None:
                        self.monitoring.tick()
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
            try:
                self.upstream.relays[slot.index].abort()  # a request cut short leaves no upstream socket
                if self.guard is not None:
                    self.guard.release(slot)  # nor a bulkhead permit or a breaker's probe place
                if self.monitoring is not None:
                    self.monitoring.abandoned(slot)  # a request cut short is counted too
                if self.medio is not None:
                    self.medio.release(slot)
                close_socket(sock)
                if sock is not raw:
                    raw.close()  # after a failed TLS handshake, closing the TLS stream leaves it open
            finally:
                self._release(slot)  # even when Ctrl-C lands in the cleanup: stop() waits for every slot

    def _refuse(self, sock):
        """503 with Retry-After for a connection that got no slot (rare path: allocates)."""
        self.stats.rejected += 1
        if self.monitoring is not None:
            self.monitoring.mon.record_refused()
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
            rl = self.upstream.relays[slot.index]
            if rl.iid >= 0 and self.balancer is not None:
                self.balancer.passive(rl.current(), False)  # too slow counts against the instance
        if (phase == UPSTREAM or phase == STREAM) and self.guard is not None:
            self.guard.cancelled(slot)  # a timeout, before or during the answer: against the breaker
        if status:
            self.stats.timeouts += 1
            try:
                self._reply_error(slot, sock, status, False, 0)
            except OSError:
                pass

    def _instance(self, slot, sock, svc, rl):
        """Load balancing: the instance of svc's pool for the request (lbio.Balancer.pick), or, with
        none in rotation, the 503 (with Retry-After) sent as far as the socket takes it: -2, or -3
        when some of it is left. No allocation."""
        b = self.balancer
        assert b is not None
        iid = b.pick(slot, self.gw.service_pool(svc), rl)
        if iid >= 0:
            return iid
        return -3 if self._send(slot, sock, 503, None, b.unavailable, b.retry_after) == 1 else -2

    @micropython.native
    def _reply_error(self, slot, sock, status, keep_alive, allow):
        """Compose the JSON error for status in the slot's I/O buffer and send what the socket
        takes now. True if some is left (slot.out_start:out_end) for send_all. No allocation."""
        self.stats.count(status)
        slot.status = status
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
        rl = self.upstream.relays[slot.index]
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
            mon = self.monitoring
            if mon is not None:
                mon.begin(slot)
            keep = slot.keep_alive
            left = False
            if slot.path_end - slot.path_start >= 5 and mem_eq(buf, slot.path_start, GW_PREFIX, 0, 5):
                keep = await self.endpoints.serve(slot, sock, wait)
            else:
                rid = gw.route_request(slot)
                if rid < 0:
                    if rid == -405:
                        left = self._reply_error(slot, sock, 405, keep, slot.allow)
                    else:
                        left = self._reply_error(slot, sock, 404, keep, 0)
                else:
                    svc = 0  # -2: answered here (refused, or from the cache); else set by dispatch
                    pid = gw.route_policy(rid)
                    if pid != NO_POLICY and self.gate is not None:
                        st = self.gate.check(slot, pid)
                        if st == -1:  # authgate.NEED_INTROSPECTION: an opaque bearer token
                            st = await self.gate.introspect(slot, pid)
                        if st:
                            svc = -2
                            left = self._reply_refused(slot, sock, st, keep)
                    mio = self.medio
                    if svc == 0 and mio is not None:
                        tid = gw.route_transform(rid)
                        done = mio.before(slot, sock, rid, tid) if tid >= 0 and gw.route_service(rid) >= 0 else 0
                        if done:  # answered from the cache, or refused: io[out_start:out_end] is left
                            keep = keep and done == 1
                            left = slot.out_start < slot.out_end
                            if done == 3:  # a cached body bigger than the I/O buffer
                                await mio.send_cached_body(slot, sock, wait)
                                left = False
                            svc = -2
                    if svc == 0:
                        svc = gw.dispatch_request(slot)  # after the cache: a hit needs no upstream path
                        if svc < 0:
                            status, ctype, body = gw.respond_parts(rid)
                            more = self._send(slot, sock, status, ctype, body)
                            if more:
                                await self._send_rest(slot, sock, wait, body, more)
                    g = self.guard
                    tmo = 0
                    if svc >= 0:
                        tmo = gw.service_timeout(svc)
                        if g is not None:  # resilience: breaker, bulkhead, timeouts (resio.Guard)
                            tmo = g.enter(slot, rl, svc, rid, tmo)
                            if tmo == 0:
                                tmo = await g.queue(slot)  # the bulkhead is full: wait in its queue
                    while svc >= 0 and tmo > 0:  # once, or again for each retry
                        if mon is not None:
                            mon.upstream(slot)
                        iid = self._instance(slot, sock, svc, rl) if gw.service_pool(svc) >= 0 else -1
                        if iid < -1:  # no instance in rotation: 503 sent (-3: part of it is left)
                            left = iid == -3
                            if g is not None:
                                g.release(slot)
                            break
                        # The relay does the work and says what it waits for; this loop does the
                        # waiting, so a proxied request creates no coroutine of its own.
                        w = rl.begin(svc, sock, tmo, iid)
                        while w < relay.DONE_KEEP:
                            if w == relay.WAIT_UP_READ:
                                await wait.readable(rl.sock)
                            elif w == relay.WAIT_CLIENT_WRITE:
                                await wait.writable(sock)
                            elif w == relay.WAIT_UP_WRITE:
                                await wait.writable(rl.sock)
                            else:  # relay.CONNECT
                                try:
                                    conn = await connect(wait, *rl.target())  # new connections only
                                except OSError:
                                    w = rl.fail()
                                    continue
                                self.upstream.connects += 1
                                w = rl.connected(conn)
                                continue
                            w = rl.step()
                        if g is not None:
                            d = g.after(slot, rl, w)  # the outcome to the breaker; retry?
                            if d >= 0:
                                await asyncio.sleep_ms(d)
                                if g.again(slot):
                                    continue
                                tmo = -1  # the breaker opened meanwhile
                                break
                        if rl.collect is not None and self.medio is not None:  # mediation: converted, then sent
                            keep = await self.medio.after(slot, sock, wait, rid, w, keep)
                            left = slot.out_start < slot.out_end  # an error answer not all sent yet
                        elif w == relay.FAIL:
                            stats.upstream_errors += 1
                            keep = False
                            left = self._reply_error(slot, sock, 502, False, 0)
                        else:
                            stats.count(slot.status)  # relayed: the upstream's status
                            keep = keep and w == relay.DONE_KEEP
                        break
                    if tmo < 0:  # refused by the breaker (-1) or the bulkhead (-2): 503 or a fallback
                        if g.refuse(self, slot, sock, tmo) == 3:  # type: ignore  # a cached body left to send
                            await self.medio.send_cached_body(slot, sock, wait)  # type: ignore
                        else:
                            left = slot.out_start < slot.out_end
            if left:  # the socket did not take the whole answer at once
                await send_all(wait, sock, io, slot.out_start, slot.out_end)
            if mon is not None:
                mon.end(slot)
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
        slot.status = status
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

    @micropython.native
    def _send(self, slot, sock, status, ctype, body, extra=None, retry_after=-1):
        """A direct answer (respond routes, gateway endpoints), sent as far as the socket takes it
        now. Returns 0 when all went out, 1 when io[out_start:out_end] is left, 2 when the body
        did not fit the I/O buffer and goes after the head: then await _send_rest. No allocation."""
        self.stats.count(status)
        slot.status = status
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
            retry_after,
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

    def health(self):
        """The /_gw/health document (allocates; not on the proxy path). clock: the board module's
        clock_synced (main.py sets server.board; NTP on a board, always on the unix port), else
        the auth stage's clock; "not synced" when neither says so."""
        board = getattr(self, "board", None)
        if board is not None:
            synced = getattr(board, "clock_synced", False)
        else:
            synced = self.gate is not None and self.gate.auth.now > 0
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
            "clock": "synced" if synced else "not synced",
            "auth": None if self.gate is None else {"clock_synced": self.gate.auth.now > 0},
            "lb": None if self.balancer is None else self.balancer.stats(),
            "resilience": None if self.guard is None else self.guard.stats(),
        }

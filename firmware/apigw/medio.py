"""The I/O side of mediation: what the server does on a route with a transform.

Owns: the buffers answers are collected into (made at boot, one per request in flight at most),
answering a cached GET/HEAD (no allocation), converting and checking a request body before it is
forwarded, and converting, caching and sending a collected answer. The conversions themselves are
mediator.py's; the waiting is the server's connection loop. Allocates on mediated routes, except a
cache hit.
"""

from . import httpparse as hp
from . import relay
from .chunked import ERROR as CHUNK_ERROR
from .chunked import MORE as CHUNK_MORE
from .resphead import RESERVE
from . import response as rsp
from .compat import micropython, ticks_ms
from .native import mem_move
from .sockio import send_all, send_now

X_CACHE_HIT = b"X-Cache: HIT\r\n"
HIT_AGE = b"X-Cache: HIT\r\nAge: "  # one piece: a hit's answer is written in as few copies as it can
STALE_AGE = b"X-Cache: STALE\r\nAge: "  # a stale answer given as a resilience fallback
CRLF_CRLF = b"\r\n\r\n"
X_CACHE_MISS = b"X-Cache: MISS\r\n"


class MediationIO:
    def __init__(self, server, mediator, slots):
        self.server = server
        self.med = mediator
        self.free = [bytearray(mediator.buffer_bytes) for _ in range(mediator.buffers)]
        self.held = [None] * slots  # type: list # the buffer each slot holds, to give back however it ends
        self.tid = [0] * slots  # the transform of the request each slot is mediating
        self.entry = [0] * slots  # the cache entry a slot is answering from
        self.accept = [-1] * slots  # the ContentType the client asked for, or -1
        # 1 for each transform that caches: the hit path reads a byte, not two attributes.
        self.caches = bytearray(1 if t.policy.cache_ttl else 0 for t in mediator.transforms)

    @micropython.native  # as bytecode its frame came from the heap: 160 B per cache hit
    def before(self, slot, sock, rid, tid):
        """Before forwarding a request on a route with a transform: answer a cached GET/HEAD (no
        allocation), or convert and check the body, and arrange for the answer to be collected.
        Returns 0 to forward, 1 (keep-alive) or 2 (close) when answered here, 3 when a cached
        answer's body still has to be sent (_send_cached_body)."""
        cache = self.med.cache
        if cache is not None and self.caches[tid] and slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
            now = ticks_ms()
            i = cache.lookup(slot, rid, now)
            if i >= 0 and cache.hlen[i] + 128 <= len(slot.io):  # a head too big for io: answered as a miss
                self.entry[slot.index] = i
                return self._send_cached(slot, sock, i, now)
        return self._prepare_forward(slot, sock, tid, self.med.transforms[tid])

    @micropython.native
    def _send_cached(self, slot, sock, i, now, tag=HIT_AGE):
        """A cache hit: the stored head, X-Cache and Age, the connection's own header, the body
        (when it fits the I/O buffer with the head). No allocation."""
        med = self.med
        cache = med.cache
        assert cache is not None
        io = slot.io
        cb = cache.buf
        hs = i * cache.entry_bytes + cache.klen[i]  # entry_head/body/end, without three calls
        bs = hs + cache.hlen[i]
        be = bs + cache.blen[i]
        n = bs - hs
        mem_move(io, 0, cb, hs, n)  # the stored head ends with its last header line's CRLF
        pos = rsp.put(io, n, tag)
        pos = rsp.put_uint(io, pos, cache.age_s(i, now))
        if slot.keep_alive and slot.version == 11:  # the usual case: the blank line follows at once
            pos = rsp.put(io, pos, CRLF_CRLF)
        else:
            pos = rsp.put(io, pos, rsp.CRLF)
            pos = rsp.put(io, pos, rsp.H_CLOSE if not slot.keep_alive else rsp.H_KEEP_ALIVE)
            pos = rsp.put(io, pos, rsp.H_END)
        self.server.stats.count(200)
        slot.status = 200
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

    async def send_cached_body(self, slot, sock, wait):
        """The rest of a cache hit whose body did not fit the I/O buffer (allocates: rare)."""
        med = self.med
        cache = med.cache
        assert cache is not None
        i = self.entry[slot.index]
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

        med = self.med
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
        self.accept[slot.index] = accept
        try:
            # A body, or a method that carries one (an empty POST is checked, and refused, too).
            sends_body = slot.body_end > slot.head_end or slot.method & (
                hp.METHOD_POST | hp.METHOD_PUT | hp.METHOD_PATCH
            )
            if t.req_converts and (sends_body or t.grpc is not None):
                out, to = med.transform_request(tid, ctype, bytes(body))
                media = b"application/grpc-web+proto" if t.grpc is not None else ContentType.MEDIA[to]
            else:
                out, media = bytes(body), None
        except MediationError as e:
            med.refused += 1
            return self.reply_error(slot, sock, e.status, e.code, e.message)
        add = t.req_headers_add
        drop = t.req_headers_remove
        for old, new in t.req_headers_rename:  # the value goes on under the new name
            for k in range(slot.nhdr):
                ns = slot.hdr[4 * k]
                if bytes(buf[ns : slot.hdr[4 * k + 1]]).lower() == old:
                    add += new + b": " + bytes(buf[slot.hdr[4 * k + 2] : slot.hdr[4 * k + 3]]) + b"\r\n"
            drop += (old,)
        if t.grpc is not None:  # the service answers in the framing the Accept header asks for
            add += b"X-Grpc-Web: 1\r\nAccept: application/grpc-web+proto\r\n"
            drop += (b"accept",)
        if media is not None or drop or add:
            slot.fwd_med = Forwarded(out, media, drop, add, t.grpc)
        if t.resp_converts or t.policy.cache_ttl:
            if not self.free:
                return self.reply_error(slot, sock, 503, "service_unavailable", "every mediation buffer is in use")
            b = self.free.pop()
            self.held[slot.index] = b
            rl = self.server.upstream.relays[slot.index]
            rl.collect = b
            rl.collector = COLLECTOR
            self.tid[slot.index] = tid
        return 0

    def reply_error(self, slot, sock, status, code, message):
        from .errors import error_json

        body = error_json(status, code, message)
        self.server.stats.count(status)
        slot.status = status
        n = rsp.compose(
            slot.io, status, None, body, len(body), slot.keep_alive, slot.version, 0, -1, slot.method == hp.METHOD_HEAD
        )
        slot.resp_started = True
        if n < 0:  # a long message: the head only
            n = -n
        slot.out_start = send_now(sock, slot.io, 0, n)
        slot.out_end = n
        return 1 if slot.keep_alive else 2

    async def after(self, slot, sock, wait, rid, w, keep):
        """The collected answer: convert it, check it, cache it, send it. Returns keep-alive."""
        from . import httpmsg
        from .mediator import ContentType, MediationError

        rl = self.server.upstream.relays[slot.index]
        med = self.med
        tid = self.tid[slot.index]
        t = med.transforms[tid]
        buf = rl.collect
        try:
            if w == relay.TOO_BIG:
                self.server.stats.upstream_errors += 1
                return self._answer_error(
                    slot,
                    sock,
                    502,
                    "bad_gateway",
                    "the service's answer is larger than mediation.limits.buffer_bytes",
                    keep,
                )
            if w != relay.COLLECTED:
                self.server.stats.upstream_errors += 1
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
            if t.resp_converts:
                st, to, body, extra = med.transform_response(tid, status, ctype, body, self.accept[slot.index])
                if st != status:
                    status, reason = st, rsp.REASONS.get(st, "OK").encode()
                media = ContentType.MEDIA[to] if to >= 0 else None
            length = len(body)
            if slot.method == hp.METHOD_HEAD:  # no body came: say what GET would, if known
                cl = httpmsg.header(headers, b"content-length") if not t.resp_converts else None
                length = int(cl) if cl is not None and cl.isdigit() else -1
            if t.resp_headers_rename:
                names = dict(t.resp_headers_rename)
                headers = [(names[n].lower(), names[n], v) if n in names else (n, m, v) for n, m, v in headers]
            head = httpmsg.compose_head(status, reason, headers, t.resp_headers_remove, media, length, extra, True, 11)
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
            self.server.stats.count(status)
            slot.status = status
            slot.resp_started = True
            await send_all(wait, sock, head, 0, len(head))
            if slot.method != hp.METHOD_HEAD:
                await send_all(wait, sock, body, 0, len(body))
            return keep
        except MediationError as e:
            return self._answer_error(slot, sock, e.status, e.code, e.message, keep)
        finally:
            self.release(slot)

    def _answer_error(self, slot, sock, status, code, message, keep):
        """An error for a mediated route, written now (the rest, if any, goes with `left`)."""
        self.reply_error(slot, sock, status, code, message)
        return keep and slot.keep_alive

    def release(self, slot):
        rl = self.server.upstream.relays[slot.index]
        rl.collect = None
        b = self.held[slot.index]
        if b is not None:
            self.held[slot.index] = None
            self.free.append(b)


class Collector:
    """The relay's collect mode (relay.Relay.collect set): the whole answer goes into a buffer for
    mediation instead of to the client. Here, not in relay.py, so plain routes do not load it."""

    def start(self, rl, he):
        """Collect mode: the head and the body bytes that came with it go to the collect buffer."""
        io = rl.slot.io
        buf = rl.collect
        assert buf is not None
        head = rl.head
        hl = he - RESERVE
        extra = rl.n - he if head.has_body(rl.slot.method == hp.METHOD_HEAD) else 0
        if head.length >= 0 and extra > head.length:
            extra = head.length
        if hl + extra > len(buf) or (head.length >= 0 and hl + head.length > len(buf)):
            rl.abort()
            return relay.TOO_BIG
        mem_move(buf, 0, io, RESERVE, hl + extra)
        rl.head_len = hl
        rl.collected = hl + extra
        has_body = head.has_body(rl.slot.method == hp.METHOD_HEAD)
        rl.reusable = ((not has_body) or head.length >= 0 or head.chunked) and not head.close
        if not has_body:
            rl.left = 0
        elif head.chunked:
            rl.chunks.reset()
            r = rl.chunks.feed(buf, hl, hl + extra)
            if r == CHUNK_ERROR:
                rl.abort()
                return relay.FAIL
            rl.left = 1 if r == CHUNK_MORE else 0
            if r != CHUNK_MORE:
                rl.collected = r
        elif head.length >= 0:
            rl.left = head.length - extra
        else:
            rl.left = 1  # no framing: to the close
        if rl.left <= 0:
            return self.done(rl, True)
        rl.phase = relay.PHASE_COLLECT
        return 0

    def more(self, rl):
        buf = rl.collect
        sock = rl.sock
        assert buf is not None and sock is not None
        c = rl.collected
        if c >= len(buf):
            rl.abort()
            return relay.TOO_BIG
        head = rl.head
        k = sock.readinto(memoryview(buf)[c:])  # mediated routes allocate (the slice)
        if k is None:
            return relay.WAIT_UP_READ
        if k == 0:
            if head.length < 0 and not head.chunked:
                return self.done(rl, True)  # the close is the end
            rl.abort()
            return relay.FAIL
        if head.chunked:
            r = rl.chunks.feed(buf, c, c + k)
            if r == CHUNK_ERROR:
                rl.abort()
                return relay.FAIL
            if r != CHUNK_MORE:
                rl.collected = r
                return self.done(rl, True)
        rl.collected = c + k
        if head.length >= 0:
            rl.left -= k
            if rl.left <= 0:
                return self.done(rl, True)
        return 0

    def done(self, rl, complete):
        sock = rl.sock
        rl.sock = None
        rl.answered(rl.head.status)
        rl.finished(sock, complete and rl.reusable)
        return relay.COLLECTED


COLLECTOR = Collector()

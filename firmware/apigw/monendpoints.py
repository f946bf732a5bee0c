"""GET /_gw/metrics (Prometheus text), /_gw/stats (JSON) and /_gw/ (the status page).

Loaded with the first such request of a config with a `monitoring` section. The figures are behind
the section's auth policy (or the Admin permission when the config has an auth section). The two
documents are written in pieces as they are made (promexport.py and statsdoc.py yield them): the
I/O buffer is filled and sent as one chunk of a chunked answer (HTTP/1.1), or as they come with
the connection closed at the end (HTTP/1.0), so no document is ever whole in memory. Allocates:
not on the proxy path.
"""

from . import httpparse as hp
from .endpoints import GW_METRICS, GW_ROOT, is_path
from .sockio import send_all

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = b"application/json"
HTML_TYPE = b"text/html; charset=utf-8"


async def serve_monitoring(srv, slot, sock, wait):
    """Answer one of the three paths; returns whether the connection stays open."""
    m = srv.monitoring
    left = False
    root = is_path(slot, GW_ROOT)
    if not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
        left = srv._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
    elif root and not m.status_page:
        left = srv._reply_error(slot, sock, 404, slot.keep_alive, 0)
    else:
        st = 0
        g = srv.gate
        if m.policy >= 0 and g is not None:
            st = g.check(slot, m.policy)
            if st == -1:  # authgate.NEED_INTROSPECTION
                st = await g.introspect(slot, m.policy)
        if st:
            left = srv._reply_refused(slot, sock, st, slot.keep_alive)
        elif root:
            from .statuspage import PAGE

            more = srv._send(slot, sock, 200, HTML_TYPE, PAGE)
            if more:
                await srv._send_rest(slot, sock, wait, PAGE, more)
            return slot.keep_alive
        elif is_path(slot, GW_METRICS):
            from .promexport import exposition

            return await _stream(srv, slot, sock, wait, PROMETHEUS_TYPE, exposition(srv))
        else:
            from .statsdoc import pieces

            return await _stream(srv, slot, sock, wait, JSON_TYPE, pieces(srv))
    if left:
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
    return slot.keep_alive


async def _stream(srv, slot, sock, wait, ctype, parts):
    """A 200 whose body is the str/bytes pieces of parts, sent as they fill the I/O buffer."""
    chunked = slot.version == 11
    keep = slot.keep_alive and chunked
    head = b"HTTP/1.1 200 OK\r\nServer: apigw\r\nContent-Type: %s\r\nCache-Control: no-store\r\n%s\r\n" % (
        ctype,
        b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n",
    )
    srv.stats.count(200)
    slot.status = 200
    slot.resp_started = True
    await send_all(wait, sock, head, 0, len(head))
    if slot.method == hp.METHOD_HEAD:
        return keep
    io = slot.io
    cap = len(io)
    n = 0
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        k = len(b)
        if n + k > cap and n:
            await _chunk(wait, sock, io, n, chunked)
            n = 0
        if k > cap:  # a piece bigger than the buffer goes as a chunk of its own
            await _chunk(wait, sock, b, k, chunked)
            continue
        io[n : n + k] = b
        n += k
    if n:
        await _chunk(wait, sock, io, n, chunked)
    if chunked:
        await send_all(wait, sock, b"0\r\n\r\n", 0, 5)
    return keep


async def _chunk(wait, sock, data, n, chunked):
    if chunked:
        size = b"%x\r\n" % n
        await send_all(wait, sock, size, 0, len(size))
    await send_all(wait, sock, data, 0, n)
    if chunked:
        await send_all(wait, sock, b"\r\n", 0, 2)

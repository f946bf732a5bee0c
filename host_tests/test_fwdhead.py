"""The forwarded request as the upstream receives it (fwdhead.RequestWriter). Portable."""

from apigw import httpparse as hp
from apigw.compat import micropython
from apigw.fwdhead import RequestWriter
from apigw.slot import Slot
from check import requires_micropython

HOST = b"10.0.0.5"
HOST_LINE = b"Host: 10.0.0.5:9001\r\n"
PEER = b"192.168.1.20"


def _slot(raw, rest_from=0, size=8192):
    s = Slot(0, size=size)
    s.buf[: len(raw)] = raw
    s.n = len(raw)
    assert hp.parse_request(s) == hp.DONE, raw
    s.fwd_rest_start = s.path_start + rest_from
    s.fwd_rest_end = s.path_end
    s.peer = PEER
    return s


def _forward(s, prefix=b"", chunk=2048):
    w = RequestWriter()
    w.start(s, HOST, 0, len(HOST), 9001, prefix, 0, len(prefix))
    out = bytearray()
    dst = bytearray(chunk)
    while True:
        n = w.fill(dst)
        if not n:
            break
        out += dst[:n]
    assert w.done()
    return bytes(out)


def test_plain_get():
    s = _slot(b"GET /a/b?x=1 HTTP/1.1\r\nHost: gw.local\r\nAccept: */*\r\n\r\n")
    assert _forward(s) == (
        b"GET /a/b?x=1 HTTP/1.1\r\n" + HOST_LINE + b"Accept: */*\r\n"
        b"X-Forwarded-For: 192.168.1.20\r\nX-Forwarded-Host: gw.local\r\n"
        b"X-Forwarded-Proto: http\r\nVia: 1.1 apigw\r\n\r\n"
    )


def test_prefix_rewrite_and_strip_to_root():
    s = _slot(b"GET /api/temp HTTP/1.1\r\nHost: h\r\n\r\n", rest_from=4)
    assert _forward(s, b"/v1").startswith(b"GET /v1/temp HTTP/1.1\r\n")
    s = _slot(b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n", rest_from=4)
    assert _forward(s).startswith(b"GET / HTTP/1.1\r\n")


def test_hop_by_hop_dropped_and_xff_appended():
    raw = (
        b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
        b"Keep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: evil\r\n"
        b"Forwarded: for=x\r\nContent-Length: 5\r\nX-Keep: 1\r\n\r\nhello"
    )
    out = _forward(_slot(raw))
    head, body = out.split(b"\r\n\r\n")
    assert body == b"hello"
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /p HTTP/1.1"
    assert b"X-Keep: 1" in lines
    assert b"X-Forwarded-For: 1.2.3.4, 192.168.1.20" in lines
    assert b"X-Forwarded-Host: h" in lines
    assert b"Content-Length: 5" in lines
    for gone in (b"X-Secret", b"Keep-Alive", b"Connection", b"Forwarded: for=x", b"X-Forwarded-Host: evil"):
        assert not any(line.startswith(gone) for line in lines), gone


def test_http10_client_without_host():
    out = _forward(_slot(b"GET / HTTP/1.0\r\n\r\n"))
    assert out.startswith(b"GET / HTTP/1.0\r\n" + HOST_LINE)
    assert b"X-Forwarded-Host" not in out
    assert b"Via: 1.0 apigw\r\n" in out


def test_empty_post_sends_length():
    out = _forward(_slot(b"POST /p HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert out.endswith(b"Content-Length: 0\r\n\r\n")
    out = _forward(_slot(b"DELETE /p HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert b"Content-Length" not in out


def test_any_buffer_size_gives_the_same_bytes():
    raw = b"PUT /x/y?q=2 HTTP/1.1\r\nHost: h\r\nX-A: " + b"a" * 300 + b"\r\nContent-Length: 700\r\n\r\n" + b"b" * 700
    s = _slot(raw, rest_from=2)
    whole = _forward(s, b"/pre", 4096)
    for chunk in (1, 2, 7, 64, 300, 1000):
        assert _forward(s, b"/pre", chunk) == whole, chunk


@micropython.native  # keeps this helper's own frame off the heap
def _fill_all(w, s, dst, counts):
    w.start(s, HOST, 0, len(HOST), 9001, b"/v1", 0, 3)
    n = w.fill(dst)
    while n:
        counts[0] += n
        n = w.fill(dst)


def test_writer_allocates_nothing():
    requires_micropython()
    raw = b"POST /api/x?q=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-S\r\nX-S: 1\r\nX-Forwarded-For: 1.1.1.1\r\nContent-Length: 3\r\n\r\nabc"
    s = _slot(raw, rest_from=4)
    w = RequestWriter()
    dst = bytearray(64)
    counts = [0]
    _fill_all(w, s, dst, counts)
    before = micropython.mem_total()
    _fill_all(w, s, dst, counts)
    assert micropython.mem_total() - before == 0
    micropython.heap_lock()
    try:
        _fill_all(w, s, dst, counts)
    finally:
        micropython.heap_unlock()
    assert counts[0] > 0


def test_every_x_forwarded_for_line_kept():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\nX-A: 1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n"
    out = _forward(_slot(raw))
    assert b"X-Forwarded-For: 203.0.113.7, 10.0.0.1, 10.0.0.2, 192.168.1.20\r\n" in out
    assert out.count(b"X-Forwarded-For") == 1

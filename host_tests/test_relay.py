"""Tests of the sans-IO pieces of the response relay: chunked framing, response heads, composed
answers. Portable: run under pytest and under the MicroPython runner."""

from apigw import response as rsp
from apigw.chunked import ERROR, MORE, ChunkedTracker
from apigw.resphead import RESERVE, ResponseHead
from check import requires_micropython

# (stream bytes, offset where the message ends or ERROR)
CHUNKED_CASES = [
    (b"5\r\nhello\r\n0\r\n\r\n", 15),
    (b"5;ext=1\r\nhello\r\n0\r\n\r\n", 21),
    (b"A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", 26),
    (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", 29),
    (b"0\r\n\r\n", 5),
    (b"5\r\nhello\r\n0\r\n\r\nEXTRA", 15),
    (b"Z\r\n", ERROR),
    (b"5\r\nhelloXX", ERROR),
    (b"\r\n", ERROR),
    (b"12345678\r\n", ERROR),  # chunk size too large for a microcontroller
]


def test_chunked_whole():
    for data, want in CHUNKED_CASES:
        t = ChunkedTracker()
        assert t.feed(data, 0, len(data)) == want, data


def test_chunked_byte_by_byte():
    for data, want in CHUNKED_CASES:
        t = ChunkedTracker()
        got = MORE
        for i in range(len(data)):
            got = t.feed(data, i, i + 1)
            if got != MORE:
                break
        if want == ERROR:
            assert got == ERROR, data
        else:
            assert got == want, (data, got)
            assert t.done()


def test_chunked_split_in_data():
    data = b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    t = ChunkedTracker()
    assert t.feed(data, 0, 10) == MORE
    assert t.feed(data, 10, len(data)) == len(data)


def _head(raw):
    buf = bytearray(RESERVE) + bytearray(raw) + bytearray(64)
    return buf, RESERVE + len(raw)


def test_response_head_fields():
    buf, n = _head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    h = ResponseHead()
    he = h.parse(buf, RESERVE, n)
    assert he == n - 5
    assert h.status == 200 and h.length == 5 and h.close and not h.chunked


def test_response_head_chunked_overrides_length():
    buf, n = _head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
    h = ResponseHead()
    assert h.parse(buf, RESERVE, n) == n
    assert h.chunked and h.length == -1 and not h.close


def test_response_head_incomplete_and_bad():
    h = ResponseHead()
    buf, n = _head(b"HTTP/1.1 200 OK\r\nContent-Le")
    assert h.parse(buf, RESERVE, n) == 0
    buf, n = _head(b"SMTP/1.1 200 OK\r\n\r\n")
    assert h.parse(buf, RESERVE, n) == -1
    buf, n = _head(b"HTTP/1.1 2x0 OK\r\n\r\n")
    assert h.parse(buf, RESERVE, n) == -1
    buf, n = _head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
    assert h.parse(buf, RESERVE, n) == -1


def test_response_head_http10_closes():
    buf, n = _head(b"HTTP/1.0 200 OK\r\n\r\n")
    h = ResponseHead()
    h.parse(buf, RESERVE, n)
    assert h.close and h.version == 10
    buf, n = _head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    h.parse(buf, RESERVE, n)
    assert not h.close


def test_response_head_rewrite_drops_hop_by_hop():
    raw = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n"
    buf, n = _head(raw)
    h = ResponseHead()
    h.parse(buf, RESERVE, n)
    hl = h.rewrite(buf, RESERVE, False, 11)
    out = bytes(buf[:hl])
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nVia: 1.1 apigw\r\n\r\n", out


def test_response_head_rewrite_adds_connection():
    raw = b"HTTP/1.1 204 No Content\r\n\r\n"
    buf, n = _head(raw)
    h = ResponseHead()
    h.parse(buf, RESERVE, n)
    hl = h.rewrite(buf, RESERVE, True, 11)
    assert bytes(buf[:hl]) == b"HTTP/1.1 204 No Content\r\nVia: 1.1 apigw\r\nConnection: close\r\n\r\n"
    assert not h.has_body(False)
    buf, n = _head(raw)
    h.parse(buf, RESERVE, n)
    hl = h.rewrite(buf, RESERVE, False, 10)
    assert bytes(buf[:hl]).endswith(b"Connection: keep-alive\r\n\r\n")


def test_compose_error_and_allow():
    dst = bytearray(512)
    n = rsp.compose_error(dst, 405, keep_alive=True, version=11, allow=1 | 2 | 4)
    out = bytes(dst[:n])
    assert out.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET, HEAD, POST\r\n" in out
    assert out.endswith(
        b'\r\n\r\n{"status":405,"error":"method_not_allowed","message":"the route does not take this method"}'
    )
    assert b"Connection: close" not in out
    n = rsp.compose_error(dst, 503, keep_alive=False, retry_after=1)
    out = bytes(dst[:n])
    assert b"Retry-After: 1\r\n" in out and b"Connection: close\r\n" in out


def test_compose_direct_body_too_large():
    dst = bytearray(128)
    body = b"x" * 200
    n = rsp.compose(dst, 200, b"text/plain", body, len(body), True, 11)
    assert n < 0
    assert bytes(dst[:-n]).endswith(b"Content-Length: 200\r\n\r\n")


def test_put_uint():
    dst = bytearray(16)
    for v in (0, 7, 10, 8192, 1073741823):
        n = rsp.put_uint(dst, 0, v)
        assert bytes(dst[:n]) == str(v).encode()


def _relay_pieces(t, h, data, buf, n, dst, res):
    t.reset()
    res[0] = t.feed(data, 0, len(data))
    res[1] = h.parse(buf, RESERVE, n)
    res[2] = h.rewrite(buf, RESERVE, False, 11)
    res[3] = rsp.compose_error(dst, 404, True, 11)


def test_relay_pieces_allocate_nothing():
    requires_micropython()
    import micropython  # type: ignore

    data = b"5\r\nhello\r\n0\r\n\r\n"
    t = ChunkedTracker()
    h = ResponseHead()
    raw = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n"
    buf = bytearray(RESERVE) + bytearray(raw) + bytearray(64)
    n = RESERVE + len(raw)
    dst = bytearray(512)
    res = [0, 0, 0, 0]
    _relay_pieces(t, h, data, buf, n, dst, res)  # warm up: first calls may intern names
    micropython.heap_lock()
    try:
        _relay_pieces(t, h, data, buf, n, dst, res)
    finally:
        micropython.heap_unlock()
    assert res[0] == len(data) and res[1] == n and res[2] > 0 and res[3] > 0

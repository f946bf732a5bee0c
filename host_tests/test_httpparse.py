"""Portable tests for firmware/apigw/httpparse.py.

Cases are data: (raw request, expected result, expected fields, at). Each is fed whole, one byte
at a time (NEED_MORE until the request is complete; an error no later than byte `at`), and with
a second pipelined request after it, which must parse after slot.consume(). The heap_lock test
runs on MicroPython only.
"""

from apigw import httpparse as hp
from apigw import native
from apigw.slot import Slot
from check import requires_micropython

NEXT = b"GET /next?n=1 HTTP/1.1\r\nHost: n\r\n\r\n"
LINE = -1  # `at`: the error shows once the request line's CRLF has arrived

H = b"Host: a\r\n"
P = b"POST / HTTP/1.1\r\nHost: a\r\n"

# fmt: off
# (raw, result, fields, at). fields: name -> expected value (see _check); at: None, LINE or a
# byte count after which the error must already be reported.
CASES = (
    # --- valid requests -------------------------------------------------------------------
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", hp.DONE,
     {"method": hp.METHOD_GET, "path": b"/", "query": b"", "version": 11, "keep_alive": True,
      "nhdr": 1, "host": 0, "kinds": [hp.HDR_HOST], "headers": [(b"Host", b"a")], "body": b""}, None),
    (b"GET /x HTTP/1.0\r\n\r\n", hp.DONE,
     {"version": 10, "keep_alive": False, "nhdr": 0, "host": -1, "path": b"/x"}, None),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", hp.DONE,
     {"version": 10, "keep_alive": True, "conn_extra": False, "kinds": [hp.HDR_CONNECTION]}, None),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nConnection: close\r\n\r\n", hp.DONE,
     {"keep_alive": False}, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", hp.DONE, {"keep_alive": False}, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE , keep-alive\r\n\r\n", hp.DONE,
     {"keep_alive": False, "conn_extra": False}, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Trace,,\r\n\r\n", hp.DONE,
     {"keep_alive": True, "conn_extra": True}, None),
    (b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", hp.DONE,
     {"method": hp.METHOD_POST, "content_length": 5, "body": b"hello"}, None),
    (b"PUT /p HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nContent-Length: 003\r\n\r\nabc", hp.DONE,
     {"method": hp.METHOD_PUT, "content_length": 3, "body": b"abc",
      "kinds": [hp.HDR_HOST, hp.HDR_CONTENT_LENGTH, hp.HDR_CONTENT_LENGTH]}, None),
    (b"DELETE /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", hp.DONE,
     {"method": hp.METHOD_DELETE, "content_length": 0, "body": b""}, None),
    (b"HEAD / HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"method": hp.METHOD_HEAD}, None),
    (b"PATCH /r HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"method": hp.METHOD_PATCH}, None),
    (b"OPTIONS /r HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"method": hp.METHOD_OPTIONS, "path": b"/r"}, None),
    (b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", hp.DONE,
     {"method": hp.METHOD_OPTIONS, "path": b"*", "query": b""}, None),
    # normalization and query split
    (b"GET /public/../admin HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/admin"}, None),
    (b"GET /a/./b//c/%7euser/%2f HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/a/b/c/~user/%2F"}, None),
    (b"GET /../../x HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/x"}, None),
    (b"GET /search?q=a/../b&x=%20 HTTP/1.1\r\n" + H + b"\r\n", hp.DONE,
     {"path": b"/search", "query": b"?q=a/../b&x=%20"}, None),
    (b"GET /p/..??x? HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/", "query": b"??x?"}, None),
    (b"GET /? HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/", "query": b"?"}, None),
    # absolute-form: the path after the authority; the authority is not taken as Host
    (b"GET http://example.com:8080/a/../b?x=1 HTTP/1.1\r\n" + H + b"\r\n", hp.DONE,
     {"path": b"/b", "query": b"?x=1", "host": 0, "headers": [(b"Host", b"a")]}, None),
    (b"GET HTTP://example.com HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/", "query": b""}, None),
    (b"GET http://example.com?q=/x HTTP/1.0\r\n\r\n", hp.DONE, {"path": b"/", "query": b"?q=/x"}, None),
    # headers: kinds, OWS, empty values, obs-text, colons in values
    (b"GET / HTTP/1.1\r\nhOST: a\r\nx-forwarded-for: 1.2.3.4\r\nX-Forwarded-Host: h\r\n"
     b"X-Forwarded-Proto: https\r\nForwarded: for=x\r\nAuthorization: Bearer t\r\n"
     b"Content-Type: text/plain\r\nAccept: */*\r\nX-API-Key: k\r\nCookie: c=1\r\nKeep-Alive: 5\r\n"
     b"Proxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nX-Other: o\r\n"
     b"Content-Lengthy: 1\r\n\r\n", hp.DONE,
     {"nhdr": 17, "host": 0, "kinds": [
         hp.HDR_HOST, hp.HDR_X_FORWARDED_FOR, hp.HDR_X_FORWARDED_OTHER, hp.HDR_X_FORWARDED_OTHER,
         hp.HDR_X_FORWARDED_OTHER, hp.HDR_AUTHORIZATION, hp.HDR_CONTENT_TYPE, hp.HDR_ACCEPT,
         hp.HDR_X_API_KEY, hp.HDR_COOKIE, hp.HDR_HOP, hp.HDR_HOP, hp.HDR_HOP, hp.HDR_HOP, hp.HDR_HOP,
         hp.HDR_OTHER, hp.HDR_OTHER]}, None),
    (b"GET / HTTP/1.1\r\nHost:a\r\nX-A:   v w \t \r\nX-E:\r\nX-F: \t\r\nX-T:\tt\tu\r\n"
     b"X-C: a:b\r\nX-O: caf\xc3\xa9\xff\r\n\r\n", hp.DONE,
     {"headers": [(b"Host", b"a"), (b"X-A", b"v w"), (b"X-E", b""), (b"X-F", b""), (b"X-T", b"t\tu"),
                  (b"X-C", b"a:b"), (b"X-O", b"caf\xc3\xa9\xff")]}, None),
    (b"\r\n\r\nGET /lead HTTP/1.1\r\n" + H + b"\r\n", hp.DONE, {"path": b"/lead", "method_start": 4}, None),
    (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", hp.DONE, {"host": 0, "headers": [(b"Host", b"")]}, None),
    (P + b"Expect: 100-Continue\r\nContent-Length: 2\r\n\r\nok", hp.DONE,
     {"expect_continue": True, "body": b"ok",
      "kinds": [hp.HDR_HOST, hp.HDR_EXPECT, hp.HDR_CONTENT_LENGTH]}, None),
    (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", hp.DONE,
     {"expect_continue": False}, None),
    # --- 400: bytes that may not appear in a head (reported as soon as they arrive) --------
    (b"GET / HTTP/1.1\n\n", 400, None, 15),
    (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400, None, 24),
    (b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, None, 16),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, None, 30),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400, None, 30),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400, None, 29),
    (b"\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400, None, 1),
    # --- 400: request line ------------------------------------------------------------------
    (b"GET / http/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET / HTTP/1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /  HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET\r\n" + H + b"\r\n", 400, None, LINE),
    (b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"G\xc9T / HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET a/b HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"OPTIONS *x HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"OPTIONS *?x HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /a#f HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /%4 HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /a?b\x80 HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /a?b\tc HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET /a?b#c HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET http://?x HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET http://a\tb/ HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET http://a/b?\x80 HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET https://a/b HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    (b"GET http: HTTP/1.1\r\n" + H + b"\r\n", 400, None, LINE),
    # --- 400: header lines ----------------------------------------------------------------
    (b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n  folded\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tfolded\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX(y: b\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", 400, None, None),
    # --- 400: framing and Host ---------------------------------------------------------------
    (P + b"Content-Length: abc\r\n\r\n", 400, None, None),
    (P + b"Content-Length: -1\r\n\r\n", 400, None, None),
    (P + b"Content-Length: +1\r\n\r\n", 400, None, None),
    (P + b"Content-Length: 1 2\r\n\r\n", 400, None, None),
    (P + b"Content-Length:\r\n\r\n", 400, None, None),
    (P + b"Content-Length: 5, 5\r\n\r\nhello", 400, None, None),
    (P + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, None, None),
    (P + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, None, None),
    (P + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400, None, None),
    # --- other statuses --------------------------------------------------------------------
    (P + b"Transfer-Encoding: chunked\r\n\r\n", 411, None, None),
    (P + b"Transfer-Encoding: gzip , Chunked \r\n\r\n", 411, None, None),
    (P + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 411, None, None),
    (P + b"Transfer-Encoding: gzip\r\n\r\n", 501, None, None),
    (P + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 501, None, None),
    (P + b"Transfer-Encoding: xchunked\r\n\r\n", 501, None, None),
    (b"FOO / HTTP/1.1\r\n" + H + b"\r\n", 501, None, LINE),
    (b"TRACE / HTTP/1.1\r\n" + H + b"\r\n", 501, None, LINE),
    (b"CONNECT /x HTTP/1.1\r\n" + H + b"\r\n", 501, None, LINE),
    (b"get / HTTP/1.1\r\n" + H + b"\r\n", 501, None, LINE),  # methods are case-sensitive
    (b"GETS http://a/ HTTP/1.1\r\n" + H + b"\r\n", 501, None, LINE),
    (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, None, LINE),
    (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505, None, LINE),
    (b"GET / HTTP/0.9\r\n\r\n", 505, None, LINE),
    (P + b"Expect: 200-ok\r\n\r\n", 417, None, None),
    (P + b"Expect: 100-continue, x\r\n\r\n", 417, None, None),
    # 413 is decided when the head ends, before the body arrives
    (P + b"Content-Length: 8192\r\n\r\n", 413, None, None),
    (P + b"Content-Length: 99999999999999999999\r\n\r\n", 413, None, None),
    # more headers than the slot holds (32)
    (b"GET / HTTP/1.1\r\n" + H + b"X: y\r\n" * 32 + b"\r\n", 431, None, None),
)
# fmt: on


def _slot(size=8192, max_headers=32):
    return Slot(0, size, 256, max_headers)


def _load(slot, data):
    """Copy data into the slot as if it had just been read."""
    n = slot.n
    slot.buf[n : n + len(data)] = data
    slot.n = n + len(data)


def _text(slot, a, b):
    return bytes(slot.buf[a:b])


def _check(slot, raw, fields):
    assert slot.head_end > 0 and slot.body_end == slot.head_end + slot.content_length
    for name in fields:
        want = fields[name]
        if name == "path":
            got = _text(slot, slot.path_start, slot.path_end)
        elif name == "query":
            got = _text(slot, slot.query_start, slot.query_end)
        elif name == "body":
            got = _text(slot, slot.head_end, slot.body_end)
        elif name == "kinds":
            got = list(slot.hkind[: slot.nhdr])[: len(want)]
        elif name == "headers":
            h = slot.hdr
            got = []
            for k in range(slot.nhdr):
                got.append((_text(slot, h[4 * k], h[4 * k + 1]), _text(slot, h[4 * k + 2], h[4 * k + 3])))
            got = got[: len(want)]
        else:
            got = getattr(slot, name)
        assert got == want, (raw, name, got, want)
    m = slot.method
    assert _text(slot, slot.method_start, slot.method_end) == hp.method_name(m).encode(), raw
    assert slot.path_end <= slot.query_start <= slot.query_end <= slot.head_end, raw


def test_cases_whole():
    for raw, want, fields, _ in CASES:
        slot = _slot()
        _load(slot, raw)
        r = hp.parse_request(slot)
        assert r == want, (raw, r, want)
        if r == hp.DONE:
            _check(slot, raw, fields)
            assert slot.body_end == len(raw), raw
            assert hp.parse_request(slot) == hp.DONE  # asking again changes nothing


def test_cases_byte_by_byte():
    for raw, want, fields, at in CASES:
        if at == LINE:
            at = raw.find(b"\r\n") + 2
        elif at is None:
            at = len(raw)
        slot = _slot()
        r = hp.NEED_MORE
        i = 0
        while r == hp.NEED_MORE and i < len(raw):
            _load(slot, raw[i : i + 1])
            i += 1
            r = hp.parse_request(slot)
        assert r == want, (raw, i, r, want)
        if want == hp.DONE:
            assert i == len(raw), (raw, i)
            _check(slot, raw, fields)
        else:
            assert i <= at, (raw, "error reported late", i, at)


def test_cases_with_pipelined_request():
    for raw, want, fields, _ in CASES:
        slot = _slot()
        _load(slot, raw + NEXT)
        r = hp.parse_request(slot)
        assert r == want, (raw, r, want)
        if r != hp.DONE:
            continue
        _check(slot, raw, fields)
        assert slot.body_end == len(raw)
        assert _text(slot, slot.body_end, slot.n) == NEXT  # untouched
        slot.consume()
        assert slot.n == len(NEXT)
        assert hp.parse_request(slot) == hp.DONE, raw
        assert _text(slot, slot.path_start, slot.path_end) == b"/next"
        assert _text(slot, slot.query_start, slot.query_end) == b"?n=1"
        assert slot.method == hp.METHOD_GET and slot.nhdr == 1 and slot.body_end == len(NEXT)


def test_pipelined_requests_in_pieces():
    reqs = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
        b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\nGET /c HTTP/1.0\r\n\r\n",
    )
    data = reqs[0] + reqs[1] + reqs[2]
    for step in (1, 2, 3, 7, 50, len(data)):
        slot = _slot()
        pos = 0
        paths = []
        while pos < len(data) or slot.n:
            r = hp.parse_request(slot) if slot.n else hp.NEED_MORE
            if r == hp.NEED_MORE:
                assert pos < len(data), (step, paths)
                _load(slot, data[pos : pos + step])
                pos += step
                continue
            assert r == hp.DONE, (step, r)
            paths.append(_text(slot, slot.path_start, slot.path_end))
            slot.consume()
        assert paths == [b"/a", b"/b", b"/c"], (step, paths)


def test_head_too_large_when_buffer_fills():
    slot = _slot(size=64)
    _load(slot, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 36)
    assert slot.n == 64
    assert hp.parse_request(slot) == 431
    # one byte at a time: NEED_MORE until the last byte fills the buffer
    slot = _slot(size=64)
    raw = b"GET /" + b"a" * 59
    for i in range(len(raw)):
        _load(slot, raw[i : i + 1])
        r = hp.parse_request(slot)
        assert r == (431 if i == len(raw) - 1 else hp.NEED_MORE), (i, r)
    # a head that ends exactly at the end of the buffer is fine
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 29 + b"\r\n\r\n"
    slot = _slot(size=len(raw))
    _load(slot, raw)
    assert hp.parse_request(slot) == hp.DONE


def test_body_too_large_for_buffer():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
    for cl, want in ((10, hp.NEED_MORE), (64 - 48, hp.NEED_MORE), (64 - 47, 413), (1 << 29, 413)):
        raw = head % cl
        slot = _slot(size=64)
        _load(slot, raw)
        assert hp.parse_request(slot) == want, (cl, len(raw))


def test_max_headers_argument():
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"
    for limit, want in ((3, hp.DONE), (2, 431), (0, 431), (99, hp.DONE)):
        slot = _slot()
        _load(slot, raw)
        assert hp.parse_request(slot, limit) == want, limit
    slot = _slot(max_headers=3)
    _load(slot, raw)
    assert hp.parse_request(slot) == hp.DONE and slot.nhdr == 3
    slot = _slot(max_headers=2)
    _load(slot, raw)
    assert hp.parse_request(slot) == 431


def test_resumes_where_it_stopped():
    slot = _slot()
    _load(slot, b"GET /abc HTTP/1.1\r\nHost: a\r")
    assert hp.parse_request(slot) == hp.NEED_MORE
    assert slot.scan == slot.n - 1  # a trailing CR is looked at again with the next byte
    assert slot.method == hp.METHOD_GET  # the request line is parsed as soon as it is complete
    _load(slot, b"\nX: 1")
    assert hp.parse_request(slot) == hp.NEED_MORE and slot.scan == slot.n
    _load(slot, b"\r\n\r\n")
    assert hp.parse_request(slot) == hp.DONE and slot.nhdr == 2


def test_body_bytes_are_not_checked():
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n\x00\r\n\n\x7f\r"
    slot = _slot()
    _load(slot, raw)
    assert hp.parse_request(slot) == hp.DONE
    assert _text(slot, slot.head_end, slot.body_end) == b"\x00\r\n\n\x7f\r"


def test_body_arrives_later():
    slot = _slot()
    _load(slot, b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert hp.parse_request(slot) == hp.NEED_MORE
    assert slot.head_end == slot.n and slot.expect_continue and slot.body_end == slot.n + 3
    _load(slot, b"ab")
    assert hp.parse_request(slot) == hp.NEED_MORE
    _load(slot, b"c")
    assert hp.parse_request(slot) == hp.DONE


def test_method_helpers():
    assert hp.NEED_MORE == 0 and hp.DONE == 1
    bits = 0
    for name in hp.METHOD_NAMES:
        bit = hp.METHOD_NAMES[name]
        assert hp.method_name(bit) == name
        assert bits & bit == 0
        bits |= bit
    assert bits == 127
    assert (hp.METHOD_GET, hp.METHOD_HEAD, hp.METHOD_POST, hp.METHOD_PUT) == (1, 2, 4, 8)
    assert (hp.METHOD_DELETE, hp.METHOD_PATCH, hp.METHOD_OPTIONS) == (16, 32, 64)
    assert hp.method_name(0) == "" and hp.method_name(3) == ""
    assert hp.method_bits(["GET", "head"]) == 3
    assert hp.method_bits("POST") == hp.METHOD_POST
    assert hp.method_bits([]) == 0
    try:
        hp.method_bits(["GET", "TRACE"])
    except ValueError:
        pass
    else:
        raise AssertionError("unknown method accepted")


def test_span_in_agrees_with_twin():
    table = hp._TCHAR
    for data in (b"", b"Host", b"Host:", b"Ho st", b"x-api-key", bytes(range(256))):
        buf = bytearray(b"::" + data + b"::")
        for s in range(len(buf)):
            for e in range(s, min(len(buf), s + 12) + 1):
                assert native.span_in(buf, s, e, table) == native.span_in_py(buf, s, e, table), (data, s, e)


STATUSES = (hp.NEED_MORE, hp.DONE, 400, 411, 413, 417, 431, 501, 505)
SEEDS = (
    b"GET /a/../b?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
)
MUTANTS = b"\r\n :?/*#%.\t\x00\x7f\x80,0A"


def test_mutations_never_crash_and_agree_when_fed_in_pieces():
    # "It parses or answers with a status, never anything else", over a deterministic
    # sequence of one- and two-byte mutations (replace, insert, delete) of valid requests.
    x = 12345
    for i in range(600):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        raw = bytearray(SEEDS[i % len(SEEDS)])
        for _ in range(1 + (x >> 20) % 2):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            pos = (x >> 8) % len(raw)
            c = MUTANTS[(x >> 4) % len(MUTANTS)]
            op = x % 3
            if op == 0:
                raw[pos] = c
            elif op == 1:
                raw[pos:pos] = bytes((c,))
            else:
                raw[pos : pos + 1] = b""
        raw = bytes(raw)
        slot = _slot()
        _load(slot, raw)
        whole = hp.parse_request(slot)
        assert whole in STATUSES, (raw, whole)
        fields = None
        if whole == hp.DONE:
            fields = (slot.method, slot.path_end - slot.path_start, slot.nhdr, slot.body_end)
        slot = _slot()
        r = hp.NEED_MORE
        k = 0
        while r == hp.NEED_MORE and k < len(raw):
            _load(slot, raw[k : k + 1])
            k += 1
            r = hp.parse_request(slot)
        assert r in STATUSES, (raw, r)
        assert (r == hp.DONE) == (whole == hp.DONE), (raw, whole, r)
        assert (r == hp.NEED_MORE) == (whole == hp.NEED_MORE), (raw, whole, r)
        if fields is not None:
            assert fields == (slot.method, slot.path_end - slot.path_start, slot.nhdr, slot.body_end)


# A realistic request: 10 headers and a body.
REALISTIC = (
    b"POST /api/v1/orders/../items?limit=10&sort=desc HTTP/1.1\r\n"
    b"Host: gateway.local:8080\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 27\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"X-Request-Id: 7d3c7c1e-2f8a-4b6c-9d51-0a1b2c3d4e5f\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b'{"item": "widget", "n": 1}\n'
)


def _parse_locked(slot, data, out):
    """Parse whole, then byte by byte; results into out. Must not allocate."""
    out[0] = hp.parse_request(slot)
    out[1] = slot.nhdr
    slot.clear_request()
    n = slot.n
    slot.n = 0
    r = 0
    while slot.n < n:
        slot.n += 1
        r = hp.parse_request(slot)
    out[2] = r
    slot.consume()
    out[3] = slot.n


def test_parse_allocates_nothing():
    requires_micropython()
    import micropython  # type: ignore

    slot = _slot()
    _load(slot, REALISTIC)
    out = [0, 0, 0, 0]
    _parse_locked(slot, REALISTIC, out)  # warm-up: first calls may intern or cache
    assert out == [hp.DONE, 10, hp.DONE, 0], out
    slot = _slot()
    _load(slot, REALISTIC)
    out = [-1, -1, -1, -1]
    micropython.heap_lock()
    try:
        _parse_locked(slot, REALISTIC, out)
    finally:
        micropython.heap_unlock()
    assert out == [hp.DONE, 10, hp.DONE, 0], out


def _measure(slot, out):
    """mem_total() around one parse (a function, so its frame exists before the first read)."""
    import micropython  # type: ignore

    m0 = micropython.mem_total()  # type: ignore[attr-defined]
    out[0] = hp.parse_request(slot)
    out[1] = micropython.mem_total() - m0  # type: ignore[attr-defined]


def test_every_case_allocates_zero_bytes():
    # heap_lock only proves nothing *must* allocate: with a free heap, a bytecode frame larger
    # than a few words is taken from the heap (and freed on return). mem_total sees that too.
    requires_micropython()
    import micropython  # type: ignore

    if not hasattr(micropython, "mem_total"):
        return
    out = [0, 0]
    _measure(_slot(), out)
    for raw, want, _, _ in CASES:
        slot = _slot()
        _load(slot, raw + NEXT)
        _measure(slot, out)
        assert out == [want, 0], (raw, out)

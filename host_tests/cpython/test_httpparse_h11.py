"""Interoperability of apigw.httpparse with h11 (python-hyper/h11), CPython only.

The same requests go to both parsers; they must agree on accept / reject. Where apigw differs on
purpose, the case sits in DIFFER with the reason, and the test checks that the difference is
still exactly the documented one.
"""

import pytest

h11 = pytest.importorskip("h11")

from apigw import httpparse as hp  # noqa: E402
from apigw.slot import Slot  # noqa: E402

H = b"Host: a\r\n"


def ours(raw):
    """ "accept", "incomplete", or the error status."""
    slot = Slot(0)
    slot.buf[0 : len(raw)] = raw
    slot.n = len(raw)
    r = hp.parse_request(slot)
    if r == hp.DONE:
        return "accept"
    if r == hp.NEED_MORE:
        return "incomplete"
    return r


def theirs(raw):
    """ "accept" (the whole request read), "incomplete", or h11's error status hint."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                return "incomplete"
            if isinstance(ev, h11.EndOfMessage):
                return "accept"
    except h11.RemoteProtocolError as e:
        return e.error_status_hint


AGREE_ACCEPT = (
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",
    b"GET /a/b/../c?x=1&y=%20 HTTP/1.1\r\n" + H + b"\r\n",
    b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"DELETE /r HTTP/1.1\r\n" + H + b"\r\n",
    b"PATCH /r HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\n{}",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"GET http://example.com/a?b HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A:   v w \t\r\nX-E:\r\nX-T: a\tb\r\nX-O: caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHOST: a\r\nx-api-key: k\r\nAUTHORIZATION: Bearer t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
)

AGREE_REJECT = (
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
    b"GET /\tx HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /\x80 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a?\x80 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET\r\n" + H + b"\r\n",
    b"G(T / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / http/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.x\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX\x80: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
)

# (raw, our status, h11's outcome, why apigw differs)
# fmt: off
DIFFER = (
    (b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", "accept", 400,
     "RFC 9112 2.2: a server SHOULD ignore empty lines before the request line"),
    (b"GET / HTTP/1.1\n" + H + b"\n", 400, "accept", "bare LF is refused: strict framing"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400, "accept",
     "obs-fold is refused (RFC 9112 5.2 allows 400)"),
    # h11 takes any byte but NUL and whitespace as a field-vchar (its _abnf.py says it deviates)
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400, "accept", "DEL is not a field-vchar"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400, "accept", "controls are not field-vchars"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400, "accept",
     "Content-Length lists are refused: strict, no smuggling ambiguity"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
     400, "accept", "Transfer-Encoding with Content-Length is refused as smuggling"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "accept",
     "chunked request bodies are not supported: the slot must hold the whole request"),
    (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505, "accept", "only HTTP/1.0 and HTTP/1.1 are spoken"),
    (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505, "accept", "only HTTP/1.0 and HTTP/1.1 are spoken"),
    (b"TRACE / HTTP/1.1\r\n" + H + b"\r\n", 501, "accept", "only the seven routed methods exist"),
    (b"get / HTTP/1.1\r\n" + H + b"\r\n", 501, "accept", "methods are case-sensitive; get is unknown"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417, "accept",
     "RFC 9110 10.1.1: an unmet expectation gets 417"),
    (b"GET a/b HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "only origin-form, absolute-form and *"),
    (b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "asterisk-form only with OPTIONS"),
    (b"GET https://a/b HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "absolute-form only for http:"),
    (b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "absolute-form needs an authority"),
    (b"GET /a#f HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "a fragment is never sent"),
    (b"GET /%zz HTTP/1.1\r\n" + H + b"\r\n", 400, "accept", "the path is normalized; bad escapes fail"),
    (b"GET / HTTP/1.1\r\n" + H + b"X: y\r\n" * 32 + b"\r\n", 431, "accept", "a slot holds 32 headers"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9000\r\n\r\n", 413, "incomplete",
     "the body must fit in the slot's 8 KB buffer"),
)
# fmt: on


def test_both_accept():
    for raw in AGREE_ACCEPT:
        assert theirs(raw) == "accept", raw
        assert ours(raw) == "accept", raw


def test_both_reject_with_the_same_status():
    for raw in AGREE_REJECT:
        t = theirs(raw)
        assert isinstance(t, int), (raw, t)
        assert ours(raw) == t, (raw, ours(raw), t)


def test_documented_differences():
    for raw, want_ours, want_theirs, why in DIFFER:
        assert ours(raw) == want_ours, (raw, why)
        assert theirs(raw) == want_theirs, (raw, why)


NAMES = (b"X", b"X-Y", b"x_y", b"X Y", b"", b"X\x80", b"X(", b"X\t", b"!#$%&'*+-.^_`|~")
VALUES = (b"", b"v", b" v ", b"\tv\t", b"a\x00", b"a\x0bb", b"\x80\xff", b"a:b", b"a\rb", b"a, b")
LINES = (
    b"GET / HTTP/1.1",
    b"POST /a?b=c HTTP/1.1",
    b"GET /a b HTTP/1.1",
    b"GET / HTTP/1.0",
    b"GET /\x7f HTTP/1.1",
    b"GET / HTTP/1.1\t",
    b"GET /a?b c HTTP/1.1",
    b"GET  HTTP/1.1",
    b"GET HTTP/1.1",
)


def test_grid_of_header_lines_agrees():
    n = 0
    for line in LINES:
        for name in NAMES:
            for value in VALUES:
                raw = line + b"\r\nHost: h\r\n" + name + b":" + value + b"\r\n\r\n"
                a = ours(raw)
                t = theirs(raw)
                assert (a == "accept") == (t == "accept"), (raw, a, t)
                n += 1
    assert n == len(LINES) * len(NAMES) * len(VALUES)

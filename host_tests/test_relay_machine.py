"""The relay's state machine (relay.Relay) driven by hand with stand-in sockets, on both runtimes:
what it sends upstream, what it asks to wait for, what reaches the client, and what happens to
the upstream connection afterwards.
"""

from apigw import httpparse as hp
from apigw import relay as R
from apigw.gateway import ApiGateway
from apigw.slot import Slot
from apigw.upstream import Upstream


class FakeSock:
    """A non-blocking socket: readinto() hands out scripted pieces (None: would block, b"": the
    peer closed); write() takes at most `take` bytes a call (None: all)."""

    def __init__(self, pieces=(), take=None):
        self.pieces = list(pieces)
        self.take = take
        self.sent = bytearray()
        self.closed = False

    def readinto(self, buf, n=-1):
        if not self.pieces:
            return None
        p = self.pieces[0]
        if p is None:
            self.pieces.pop(0)
            return None
        if p == b"":
            return 0
        m = len(buf) if n < 0 else min(n, len(buf))
        k = min(m, len(p))
        buf[:k] = p[:k]
        if k == len(p):
            self.pieces.pop(0)
        else:
            self.pieces[0] = p[k:]
        return k

    def write(self, buf, off=0, n=-1):
        if n < 0:
            n = len(buf) - off
        if self.take is not None:
            n = min(n, self.take)
        self.sent += bytes(buf[off : off + n])
        return n

    def close(self):
        self.closed = True


def _setup(request=b"GET /api/x HTTP/1.1\r\nHost: gw\r\n\r\n", io=256):
    gw = ApiGateway(4, 8, 512)
    gw.register_service("svc", "10.0.0.9", 9000)
    gw.add_route("/api", service="svc", strip_prefix=True)
    slot = Slot(0, 1024, io, 8)
    slot.buf[: len(request)] = request
    slot.n = len(request)
    slot.peer = b"10.0.0.1"
    assert hp.parse_request(slot) == hp.DONE
    assert gw.route_request(slot) >= 0
    svc = gw.dispatch_request(slot)
    up = Upstream(gw, [slot])
    return gw, slot, svc, up, up.relays[0]


def _drive(rl, upstream_sock, limit=100):
    """step() until the relay ends; returns the end state. Waits are simply retried."""
    w = rl.connected(upstream_sock)
    for _ in range(limit):
        if w >= R.DONE_KEEP:
            return w
        w = rl.step()
    raise AssertionError("relay did not finish")


def test_plain_answer_is_relayed_and_the_connection_kept():
    gw, slot, svc, up, rl = _setup()
    client = FakeSock()
    assert rl.begin(svc, client, 1000) == R.CONNECT  # no idle connection yet
    upstream = FakeSock([None, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"])
    assert _drive(rl, upstream) == R.DONE_KEEP
    assert bytes(upstream.sent).startswith(b"GET /x HTTP/1.1\r\nHost: 10.0.0.9:9000\r\n")
    assert bytes(client.sent) == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 apigw\r\n\r\nhello"
    assert not upstream.closed and up.idle_count() == 1  # back in the pool for the next request
    assert up.take_idle(svc) is upstream


def test_body_larger_than_the_buffer_in_pieces_and_slow_client():
    body = bytes(range(256)) * 8  # 2 KB through a 256-byte I/O buffer
    gw, slot, svc, up, rl = _setup(io=256)
    client = FakeSock(take=100)  # the client socket takes 100 bytes a call
    rl.begin(svc, client, 1000)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n"
    upstream = FakeSock([head + body[:100], None, body[100:1500], body[1500:]])
    assert _drive(rl, upstream, 1000) == R.DONE_KEEP
    sent = bytes(client.sent)
    assert sent.endswith(b"\r\n\r\n" + body)


def test_chunked_answer_split_anywhere():
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    gw, slot, svc, up, rl = _setup()
    client = FakeSock()
    rl.begin(svc, client, 1000)
    upstream = FakeSock(pieces)
    assert _drive(rl, upstream, 1000) == R.DONE_KEEP
    assert bytes(client.sent).endswith(b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    assert up.idle_count() == 1


def test_interim_answer_skipped_even_when_the_final_one_came_with_it():
    gw, slot, svc, up, rl = _setup()
    client = FakeSock()
    rl.begin(svc, client, 1000)
    upstream = FakeSock([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    assert _drive(rl, upstream) == R.DONE_KEEP
    assert bytes(client.sent) == b"HTTP/1.1 204 No Content\r\nVia: 1.1 apigw\r\n\r\n"


def test_stale_kept_alive_connection_asks_for_a_new_one():
    gw, slot, svc, up, rl = _setup()
    stale = FakeSock([b""])  # the upstream closed it while it was idle
    up.give_back(svc, stale)
    client = FakeSock()
    w = rl.begin(svc, client, 1000)  # takes the idle one and sends the request
    while w < R.DONE_KEEP and w != R.CONNECT:
        w = rl.step()
    assert w == R.CONNECT and stale.closed  # retried once, on a fresh connection
    fresh = FakeSock([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert _drive(rl, fresh) == R.DONE_KEEP
    assert bytes(client.sent).endswith(b"ok")


def test_closed_before_answering_on_a_fresh_connection_fails_for_502():
    gw, slot, svc, up, rl = _setup()
    rl.begin(svc, FakeSock(), 1000)
    upstream = FakeSock([b""])
    assert _drive(rl, upstream) == R.FAIL and upstream.closed


def test_cut_short_and_unframed_bodies_close_both_sides():
    gw, slot, svc, up, rl = _setup()
    client = FakeSock()
    rl.begin(svc, client, 1000)
    upstream = FakeSock([b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly-this", b""])
    assert _drive(rl, upstream) == R.DONE_CLOSE and upstream.closed
    gw, slot, svc, up, rl = _setup()
    client = FakeSock()
    rl.begin(svc, client, 1000)
    upstream = FakeSock([b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the end", b""])
    assert _drive(rl, upstream) == R.DONE_CLOSE and upstream.closed
    assert b"Connection: close\r\n" in bytes(client.sent) and bytes(client.sent).endswith(b"until the end")


def test_garbage_answer_fails_for_502():
    gw, slot, svc, up, rl = _setup()
    rl.begin(svc, FakeSock(), 1000)
    upstream = FakeSock([b"SMTP ready\r\n\r\n"])
    assert _drive(rl, upstream) == R.FAIL and upstream.closed

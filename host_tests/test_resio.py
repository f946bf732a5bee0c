"""Portable tests for resilience on the request path (resio.Guard), built from a config as the server
builds it, with relays on slots but no sockets: admission and refusal, the timeouts a relay gets,
the retry decision for an answer and for a connection failure, bulkhead permits handed to waiters,
Retry-After parsing, and no allocation on the request path."""

from apigw import httpparse as hp
from apigw import resio
from apigw.breaker import CircuitState
from apigw.compat import micropython, ticks_diff, ticks_ms
from apigw.config import load_config_text
from apigw.relay import DONE_KEEP, FAIL, RETRY, Relay
from apigw.resphead import RESERVE
from apigw.slot import Slot
from apigw.upstream import Upstream
from check import requires_micropython

CONFIG = """{"limits": {"services": 4, "routes": 4, "strtab_bytes": 512},
 "services": [
  {"name": "api", "host": "10.0.0.1", "port": 80, "timeout_ms": 5000, "resilience": {
    "breaker": {"failure_threshold": 2, "failure_rate_threshold": 0, "reset_timeout": 60000,
                "half_open_calls": 1, "success_threshold": 1},
    "bulkhead": {"max_concurrent": 1, "max_waiting": 1, "queue_timeout_ms": 100},
    "retry": {"attempts": 3, "base_ms": 10, "cap_ms": 40, "on_status": [502, 503]},
    "timeouts": {"connect_ms": 700, "first_byte_ms": 900, "total_ms": 3000}}},
  {"name": "plain", "host": "10.0.0.2", "port": 80}],
 "routes": [{"path": "/api", "service": "api"},
            {"path": "/once", "service": "api", "resilience": {"retry": false, "timeouts": {"first_byte_ms": 50}}},
            {"path": "/plain", "service": "plain"}]}"""


def _setup():
    cfg = load_config_text(CONFIG)
    g = cfg.guard
    up = Upstream(cfg.gateway, [Slot(i, 1024, 512, 16) for i in range(2)], relay=Relay)
    g.attach(up)
    return cfg.gateway, g, up.relays


def _request(gw, rl, head):
    slot = rl.slot
    slot.clear_request()
    slot.buf[0 : len(head)] = head
    slot.n = len(head)
    assert hp.parse_request(slot) == hp.DONE
    rid = gw.route_request(slot)
    return rid, gw.dispatch_request(slot)


GET = b"GET /api HTTP/1.1\r\nHost: gw\r\n\r\n"
POST = b"POST /api HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"


def _answer(rl, text):
    """An upstream answer head in the relay's buffer, as the relay would have it: its end."""
    raw = text.encode() if isinstance(text, str) else text
    io = rl.slot.io
    io[RESERVE : RESERVE + len(raw)] = raw
    rl.head.clear()
    he = rl.head.parse(io, RESERVE, RESERVE + len(raw))
    assert he > 0
    return he


def test_timeouts_and_a_plain_service():
    gw, g, (rl, _) = _setup()
    rid, svc = _request(gw, rl, GET)
    assert g.enter(rl.slot, rl, svc, rid, 5000) == 900  # first_byte_ms over the service's timeout_ms
    assert rl.connect_ms == 700 and ticks_diff(rl.end_by, ticks_ms()) > 2900
    g.after(rl.slot, rl, DONE_KEEP)  # done: the permit goes back
    rid, svc = _request(gw, rl, b"GET /once HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert g.enter(rl.slot, rl, svc, rid, 5000) == 50  # the route's override
    g.release(rl.slot)
    rid, svc = _request(gw, rl, b"GET /plain HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert g.enter(rl.slot, rl, svc, rid, 1234) == 1234  # not guarded: as it was
    assert rl.connect_ms == 0 and rl.end_by is None


def test_retry_decisions():
    gw, g, (rl, _) = _setup()
    slot = rl.slot
    rid, svc = _request(gw, rl, GET)
    assert g.enter(slot, rl, svc, rid, 5000) > 0
    assert not g.retry_answer(rl, _answer(rl, "HTTP/1.1 500 Oops\r\n\r\n"))  # not in on_status
    assert g.retry_answer(rl, _answer(rl, "HTTP/1.1 503 Busy\r\n\r\n"))
    d = g.after(slot, rl, RETRY)
    assert 0 <= d <= 10
    assert g.again(slot)
    assert g.retry_answer(rl, _answer(rl, "HTTP/1.1 502 Bad\r\nretry-after: 2\r\n\r\n"))
    assert g.after(slot, rl, RETRY) == 2000  # Retry-After over the jittered delay
    assert not g.again(slot)  # two failures opened the breaker meanwhile
    assert g.breakers.state(g.s_breaker[svc]) == CircuitState.OPEN
    g.release(slot)
    assert g.bulkheads.in_use(g.s_bulkhead[svc]) == 0


def test_what_may_be_repeated():
    gw, g, (rl, _) = _setup()
    slot = rl.slot
    g.breakers.force_closed(0)  # held closed: these tests fail on purpose
    rid, svc = _request(gw, rl, POST)
    g.enter(slot, rl, svc, rid, 5000)
    assert not g.retry_answer(rl, _answer(rl, "HTTP/1.1 503 Busy\r\n\r\n"))  # a POST that was sent
    rl.sent = False
    assert g.after(slot, rl, FAIL) >= 0  # refused before a byte went: may go again
    assert g.again(slot)
    rl.sent = True
    assert g.after(slot, rl, FAIL) == -1  # sent: not repeated
    rid, svc = _request(gw, rl, b"GET /once HTTP/1.1\r\nHost: gw\r\n\r\n")
    g.enter(slot, rl, svc, rid, 5000)
    assert not g.retry_answer(rl, _answer(rl, "HTTP/1.1 503 Busy\r\n\r\n"))  # retry: false
    assert g.after(slot, rl, FAIL) == -1
    rid, svc = _request(gw, rl, GET)
    g.enter(slot, rl, svc, rid, 5000)
    n = 1
    while g.retry_answer(rl, _answer(rl, "HTTP/1.1 503 Busy\r\n\r\n")):
        g.after(slot, rl, RETRY)
        assert g.again(slot)
        n += 1
    assert n == 3  # attempts
    g.after(slot, rl, DONE_KEEP)


def test_breaker_refusal_and_the_bulkhead_queue():
    gw, g, (a, b) = _setup()
    rid, svc = _request(gw, a, GET)
    _request(gw, b, GET)
    assert g.enter(a.slot, a, svc, rid, 5000) > 0  # holds the one permit
    assert g.enter(b.slot, b, svc, rid, 5000) == 0  # must wait
    bh = g.s_bulkhead[svc]
    assert g.bulkheads.waiting(bh) == 1
    g.after(a.slot, a, DONE_KEEP)  # a is done: its permit goes to b
    assert g.events[b.slot.index].is_set() and g._bh[b.slot.index] == bh
    assert g.bulkheads.in_use(bh) == 1 and g.bulkheads.waiting(bh) == 0
    g.release(b.slot)
    assert g.bulkheads.in_use(bh) == 0
    bid = g.s_breaker[svc]
    g.breakers.force_open(bid, ticks_ms())
    assert g.enter(a.slot, a, svc, rid, 5000) == -1
    assert g.bulkheads.in_use(bh) == 0  # refused before the bulkhead: nothing held
    g.breakers.reset(bid)


def test_retry_after_header():
    for head, want in (
        (b"HTTP/1.1 503 x\r\nRetry-After: 7\r\n\r\n", 7),
        (b"HTTP/1.1 503 x\r\nRETRY-AFTER:12\r\n\r\n", 12),
        (b"HTTP/1.1 503 x\r\nX-Retry-After: 7\r\n\r\n", -1),
        (b"HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n", -1),
        (b"HTTP/1.1 503 x\r\n\r\n", -1),
        (b"HTTP/1.1 503 x\r\nRetry-After: 99999999999\r\n\r\n", 1000000),
    ):
        buf = bytearray(8) + bytearray(head)
        got = resio._retry_after(buf, 8, len(buf))
        assert got == want or (want == 1000000 and 100000 <= got < 1 << 30), (head, got)


class _Srv:
    """What refuse() asks of the server: _send() (here it only counts)."""

    def __init__(self):
        self.sent = 0

    @micropython.native
    def _send(self, slot, sock, status, ctype, body, extra=None, retry_after=-1):
        self.sent += 1
        return 0


@micropython.native  # this frame must not come from the heap either
def _refusals(g, srv, slot, rounds):
    for i in range(rounds):
        g.refuse(srv, slot, None, -1 - (i & 1))


@micropython.native  # this frame must not come from the heap either
def _traffic(g, rl, svc, rid, he, rounds):
    slot = rl.slot
    n = 0
    for i in range(rounds):
        t = g.enter(slot, rl, svc, rid, 5000)
        if t > 0:
            if g.retry_answer(rl, he):
                n += g.after(slot, rl, RETRY)
                if g.again(slot):
                    n += g.after(slot, rl, DONE_KEEP)
            else:
                n += g.after(slot, rl, FAIL if i & 1 else DONE_KEEP)
        else:
            g.release(slot)
        g.cancelled(slot)
    return n


def test_request_path_allocates_nothing():
    requires_micropython()
    gw, g, (rl, _) = _setup()
    rid, svc = _request(gw, rl, GET)
    he = _answer(rl, "HTTP/1.1 503 Busy\r\nRetry-After: 0\r\n\r\n")
    _traffic(g, rl, svc, rid, he, 8)  # warm: first calls of native code
    g.breakers.reset(g.s_breaker[svc])
    micropython.heap_lock()
    try:
        _traffic(g, rl, svc, rid, he, 40)
    finally:
        micropython.heap_unlock()
    assert g.bulkheads.in_use(g.s_bulkhead[svc]) == 0
    srv = _Srv()
    _refusals(g, srv, rl.slot, 4)
    micropython.heap_lock()
    try:
        _refusals(g, srv, rl.slot, 20)  # a 503 naming the service, Retry-After from the breaker
    finally:
        micropython.heap_unlock()
    assert srv.sent == 24
    # A bytecode frame too big for the C stack comes from the heap, but heap_lock() makes it fall
    # back to the stack: only the allocation count shows it.
    before = micropython.mem_total()
    _traffic(g, rl, svc, rid, he, 10)
    _refusals(g, srv, rl.slot, 10)
    assert micropython.mem_total() - before == 0

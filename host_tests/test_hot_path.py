"""The request path as one piece, without sockets: parse a request in a slot, decide its route,
dispatch it, write the forwarded request, read and rewrite the upstream's answer head, and
compose the gateway's own answers. On MicroPython all of it runs under heap_lock() and
mem_total() does not move. Portable: under CPython the same steps are checked for their results.
"""

from apigw import httpparse as hp
from apigw import response as rsp
from apigw.compat import micropython
from apigw.fwdhead import RequestWriter
from apigw.gateway import ApiGateway
from apigw.native import mem_move
from apigw.resphead import RESERVE, ResponseHead
from apigw.slot import Slot
from check import requires_micropython

REQUEST = (
    b"POST /api/sensors/temp?unit=c HTTP/1.1\r\nHost: gw.local\r\nUser-Agent: probe\r\n"
    b"Accept: */*\r\nX-Forwarded-For: 10.0.0.7\r\nContent-Type: application/json\r\n"
    b'Content-Length: 11\r\n\r\n{"on":true}'
)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n{}"


def _gateway():
    gw = ApiGateway(16, 32, 2048)
    gw.register_service("sensors", "10.0.0.20", 9001)
    gw.register_service("lights", "10.0.0.21", 9001)
    gw.add_route("/api/sensors", service="sensors", strip_prefix=True)
    gw.add_route("/api/lights/*/state", match="wildcard", service="lights")
    gw.add_route("/ping", match="exact", respond={"status": 200, "content_type": "text/plain", "body": "pong"})
    return gw


class _Run:
    """Everything one pass needs, made before the heap is locked."""

    def __init__(self):
        self.gw = _gateway()
        self.slot = Slot(0, 1024, 512, 16)
        self.slot.peer = b"192.168.1.5"
        self.writer = RequestWriter(16)
        self.head = ResponseHead()
        self.out = bytearray(1024)
        self.answer = bytearray(512)
        self.results = [0] * 8


@micropython.native  # the pass's own frame must not come from the heap either
def _one_pass(t):
    slot = t.slot
    gw = t.gw
    st = gw.strtab
    slot.clear_request()
    slot.n = len(REQUEST)
    t.results[0] = hp.parse_request(slot)
    t.results[1] = gw.route_request(slot)
    svc = gw.dispatch_request(slot)
    t.results[2] = svc
    host = gw.service_host_id(svc)
    t.writer.start(slot, st.buf, st.offset(host), st.length(host), gw.service_port(svc), st.buf, 0, 0)
    n = 0
    k = t.writer.fill(t.out)
    while k:
        n += k
        k = t.writer.fill(t.out)
    t.results[3] = n
    mem_move(t.answer, RESERVE, ANSWER, 0, len(ANSWER))  # the upstream's answer, as read (rewrite works in place)
    t.results[4] = t.head.parse(t.answer, RESERVE, RESERVE + len(ANSWER))
    t.results[5] = t.head.rewrite(t.answer, RESERVE, False, 11)
    t.results[6] = rsp.compose_error(t.out, 404, True, 11, 0, -1, False)


def _prepare():
    t = _Run()
    t.slot.buf[: len(REQUEST)] = REQUEST
    return t


def test_the_request_path_gives_the_right_results():
    t = _prepare()
    _one_pass(t)
    assert t.results[0] == hp.DONE
    assert t.gw.get_route(t.results[1])["path"] == "/api/sensors"
    assert t.results[2] == t.gw.service_id("sensors")
    t.writer.start(t.slot, b"10.0.0.20", 0, 9, 9001, b"", 0, 0)
    n = t.writer.fill(t.out)
    head = bytes(t.out[:n])
    assert head.startswith(b"POST /temp?unit=c HTTP/1.1\r\nHost: 10.0.0.20:9001\r\n")
    assert b"X-Forwarded-For: 10.0.0.7, 192.168.1.5\r\n" in head and head.endswith(b'\r\n\r\n{"on":true}')
    assert bytes(t.answer[: t.results[5]]) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nVia: 1.1 apigw\r\n\r\n"
    )


def test_the_request_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    t = _prepare()
    _one_pass(t)  # first pass: names and caches settle
    before = mp.mem_total()
    _one_pass(t)
    assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
    mp.heap_lock()
    try:
        _one_pass(t)
    finally:
        mp.heap_unlock()
    assert t.results[0] == hp.DONE and t.results[1] >= 0 and t.results[3] > 0 and t.results[6] > 0

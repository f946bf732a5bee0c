"""Portable tests for monitoring's request-path hooks (monio.Monitoring) on a config with a
`monitoring` section: what begin(), upstream() and end() record, errors by type from the status,
a request cut short (499), and no allocation on the request path."""

from apigw import httpparse as hp
from apigw.compat import micropython
from apigw.config import load_config_text
from apigw.monio import errors_of
from apigw.monitor import F_CLASS, F_REQUESTS, G_LAT_MS, G_UP_MS, R_REQUESTS, ErrorType
from apigw.slot import Slot
from check import requires_micropython

CONFIG = """{"limits": {"services": 4, "routes": 8, "strtab_bytes": 512},
 "services": [{"name": "api", "host": "10.0.0.1", "port": 80}, {"name": "kv", "host": "10.0.0.2", "port": 80}],
 "routes": [{"path": "/api", "service": "api"}, {"path": "/kv", "service": "kv"},
            {"path": "/ping", "match": "exact", "respond": {"status": 200, "body": "pong"}}],
 "monitoring": {"ring": 64, "window_s": 10}}"""


def _setup():
    cfg = load_config_text(CONFIG)
    return cfg.gateway, cfg.monitoring, Slot(0, 1024, 512, 16)


def _request(gw, slot, path):
    head = b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n\r\n"
    slot.clear_request()
    slot.buf[0 : len(head)] = head
    slot.n = len(head)
    assert hp.parse_request(slot) == hp.DONE
    return gw.route_request(slot)


def test_errors_of_statuses():
    for status, want in (
        (400, ErrorType.VALIDATION_ERROR),
        (401, ErrorType.AUTH_ERROR),
        (403, ErrorType.AUTH_ERROR),
        (404, ErrorType.CLIENT_ERROR),
        (408, ErrorType.TIMEOUT),
        (422, ErrorType.VALIDATION_ERROR),
        (429, ErrorType.CLIENT_ERROR),
        (499, ErrorType.CLIENT_ERROR),
        (500, ErrorType.SERVER_ERROR),
        (502, ErrorType.SERVER_ERROR),
        (504, ErrorType.TIMEOUT),
    ):
        assert errors_of(status) == want, status


def test_a_request_is_recorded_by_route_service_and_status():
    gw, m, slot = _setup()
    mon = m.mon
    api = gw.get_service("api").id
    rid = _request(gw, slot, b"/api/x")
    m.begin(slot)
    a = mon.get_api_metrics()
    assert a.in_flight == 1 and a.total_requests == 1  # counted when read, routed when answered
    assert mon.service_counter(api, F_REQUESTS) == 0
    m.upstream(slot)
    slot.status = 503
    m.end(slot)
    m.end(slot)  # once only
    a = mon.get_api_metrics()
    assert a.total_requests == 1 and a.in_flight == 0 and a.failed_requests == 1
    assert mon.service_counter(api, F_REQUESTS) == 1 and mon.service_counter(api, F_CLASS + 4) == 1
    assert mon.get_service_metrics(api).errors[ErrorType.SERVER_ERROR] == 1
    assert rid >= 0
    _request(gw, slot, b"/ping")
    m.begin(slot)
    m.abandoned(slot)  # the client left before an answer: 499
    a = mon.get_api_metrics()
    assert a.total_requests == 2 and a.in_flight == 0 and a.status_classes[3] == 1
    assert a.errors[ErrorType.CLIENT_ERROR] == 1 and mon.route_counter(rid, R_REQUESTS) == 1
    assert mon.get_latency_histogram() and mon.sum_us(-1, G_LAT_MS) >= mon.sum_us(-1, G_UP_MS) >= 0


@micropython.native  # this frame must not come from the heap either
def _traffic(m, slot, rounds):
    for i in range(rounds):
        m.begin(slot)
        if i & 1:
            m.upstream(slot)
        slot.status = 200 if i % 3 else 502
        m.end(slot)


def test_hooks_allocate_nothing():
    requires_micropython()
    gw, m, slot = _setup()
    _request(gw, slot, b"/kv/y")
    _traffic(m, slot, 8)
    micropython.heap_lock()
    try:
        _traffic(m, slot, 50)
    finally:
        micropython.heap_unlock()
    before = micropython.mem_total()  # a bytecode frame off the heap shows here only
    _traffic(m, slot, 50)
    assert micropython.mem_total() - before == 0
    assert m.mon.get_total_requests() == 108

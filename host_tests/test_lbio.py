"""Portable tests for the balancer on the request path (lbio.Balancer and lbio.PoolRelay), built from
a config as the server builds it, with relays on slots but no sockets: the choice per request, sticky
cookies, failover (each instance tried once per request), passive ejection with an injected clock,
an instance removed mid-request, host names re-resolved, and no allocation on the request path."""

from apigw import httpparse as hp
from apigw.compat import micropython, ticks_add
from apigw.config import load_config_text
from apigw.relay import CONNECT, FAIL, INSTANCE_KEY
from apigw.slot import Slot
from apigw.upstream import Upstream
from check import requires_micropython

CONFIG = """{"limits": {"services": 4, "routes": 4, "strtab_bytes": 512},
 "services": [{"name": "web", "pool": "web"}, {"name": "kv", "pool": "kv"}, {"name": "local", "pool": "local"}],
 "balancer": {"pools": 4, "instances": 8, "max_tries": %d,
              "outlier": {"consecutive_errors": 2, "base_ejection_ms": 1000, "max_ejection_factor": 3,
                          "max_ejected_percent": 100}},
 "pools": [
  {"name": "web", "sticky_cookie": "srv", "instances": [
    {"host": "10.0.0.1", "port": 80}, {"host": "10.0.0.2", "port": 80}, {"host": "10.0.0.3", "port": 80}]},
  {"name": "kv", "strategy": "ip_hash", "instances": [{"host": "10.0.1.1", "port": 81}, {"host": "10.0.1.2", "port": 81}]},
  {"name": "local", "instances": [{"host": "localhost", "port": 8080}]}
 ]}"""


class _Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


def _setup(max_tries=3, slots=2):
    cfg = load_config_text(CONFIG % max_tries)
    b = cfg.balancer
    up = Upstream(cfg.gateway, [Slot(i, 1024, 512, 16) for i in range(slots)], relay=b.relay_class())
    b.attach(up)
    b.clock = _Clock()
    return b, up.relays


def _request(rl, head=b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n", peer=b"192.168.1.5"):
    slot = rl.slot
    slot.clear_request()
    slot.buf[0 : len(head)] = head
    slot.n = len(head)
    slot.peer = peer
    assert hp.parse_request(slot) == hp.DONE
    slot.resp_started = False


def _pool(b, name):
    return b.lb.pool_id(name)


def _start(b, rl, pool):
    """pick() and begin(), as the server does: the chosen instance."""
    iid = b.pick(rl.slot, pool, rl)
    assert iid >= 0
    assert rl.begin(0, None, 1000, iid) == CONNECT  # no idle connection: connect next
    return iid


def test_round_robin_and_connection_counts():
    b, (rl, _) = _setup()
    web = _pool(b, "web")
    got = []
    for _ in range(6):
        _request(rl)
        got.append(_start(b, rl, web))
        assert b.lb.get_connection_count(None, got[-1]) == 1
        rl._release()
        rl._release()  # once only
        assert b.lb.get_connection_count(web) == 0
    assert got == [0, 1, 2, 0, 1, 2]


def test_sticky_cookie_keeps_the_client_and_a_forged_one_is_replaced():
    b, (rl, _) = _setup()
    web = _pool(b, "web")
    _request(rl)
    first = _start(b, rl, web)
    line = bytes(rl.extra[: rl.extra_len])
    assert line.startswith(b"Set-Cookie: srv=%d." % first) and line.endswith(b"; Path=/; HttpOnly\r\n"), line
    value = line[len(b"Set-Cookie: ") : line.index(b";")]
    rl._release()
    for _ in range(4):  # the cookie wins over round robin, and nothing new is set
        _request(rl, b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: a=b; " + value + b"\r\n\r\n")
        assert _start(b, rl, web) == first and rl.extra_len == 0
        rl._release()
    forged = value[: value.index(b".") + 1] + b"0" * 16
    _request(rl, b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: " + forged + b"\r\n\r\n")
    _start(b, rl, web)
    assert rl.extra_len > 0  # not believed: the client gets a real cookie
    rl._release()
    b.lb.drain(first)
    _request(rl, b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: " + value + b"\r\n\r\n")
    moved = _start(b, rl, web)
    assert moved != first and bytes(rl.extra[: rl.extra_len]).startswith(b"Set-Cookie: srv=%d." % moved)
    rl._release()


def test_secure_cookies_on_a_tls_listener():
    b, (rl, _) = _setup()
    b.sticky.set_secure(True)
    _request(rl)
    _start(b, rl, _pool(b, "web"))
    assert bytes(rl.extra[: rl.extra_len]).endswith(b"; HttpOnly; Secure\r\n")
    assert rl.extra_len <= len(rl.extra)
    rl._release()


def test_failover_tries_each_instance_once_then_fails():
    b, (rl, _) = _setup(max_tries=5)
    web = _pool(b, "web")
    _request(rl)
    tried = [_start(b, rl, web)]
    while True:
        step = b.failed(rl)  # refused: failover while nothing was sent
        if step == FAIL:
            break
        assert step == CONNECT
        tried.append(rl.iid)
        assert b.lb.get_connection_count(web) == 1  # the old one's connection was dropped
    assert sorted(tried) == [0, 1, 2], tried  # max_tries 5, but three instances: each once
    assert b.lb.get_connection_count(web) == 0 and b.failovers == 2


def test_failover_stops_at_max_tries_and_for_a_sent_post():
    b, (rl, _) = _setup(max_tries=2)
    web = _pool(b, "web")
    _request(rl)
    _start(b, rl, web)
    assert b.failed(rl) == CONNECT and b.failed(rl) == FAIL
    _request(rl, b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
    _start(b, rl, web)
    rl.sent = True  # the body may have reached the instance: not repeated
    assert b.failed(rl) == FAIL
    _request(rl, b"PUT / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
    _start(b, rl, web)
    rl.sent = True
    assert b.failed(rl) == CONNECT  # idempotent
    rl._release()
    assert b.lb.get_connection_count(web) == 0


def test_passive_ejection_time_grows_with_repeated_ejections():
    b, (rl, _) = _setup()
    web = _pool(b, "web")
    clock = b.clock
    lb = b.lb
    lengths = []
    for _ in range(4):
        b.passive(1, False)
        b.passive(1, False)  # consecutive_errors 2: out
        assert lb.ejected(1) and not lb.health_check(1)
        start = clock.now
        while lb.ejected(1):
            clock.now = ticks_add(clock.now, 100)
            b.tick(clock.now)
        lengths.append(clock.now - start)
        assert lb.health_check(1)
    assert lengths == [1000, 2000, 3000, 3000], lengths  # base * times, up to max_ejection_factor
    assert b.ejections == 4
    got = set()
    for _ in range(3):
        _request(rl)
        got.add(_start(b, rl, web))
        rl._release()
    assert got == {0, 1, 2}


def test_a_removed_instance_does_not_touch_the_one_given_its_id():
    b, (rl, _) = _setup()
    web = _pool(b, "web")
    lb = b.lb
    _request(rl)
    old = _start(b, rl, web)
    lb.remove_instance(old, True)  # a registration expired mid-request
    new = lb.register_instance(web, "10.0.0.9", 80)
    assert new == old
    lb.increment_connections(new)  # the new instance has a request of its own
    rl.answered(503)  # would count against the new instance
    rl.answered(503)
    assert not lb.ejected(new)
    rl._release()
    assert lb.get_connection_count(None, new) == 1


class _Sock:
    closed = False

    def close(self):
        self.closed = True


def test_host_names_are_resolved_and_a_new_address_drops_idle_connections():
    b, (rl, _) = _setup()
    local = _pool(b, "local")
    iid = b.lb.instances(local)[0].id
    assert b.addr[iid] is None  # not yet: connect() would ask at each connection
    b.resolve_all()
    ai = b.addr[iid]
    assert ai is not None
    _request(rl)
    _start(b, rl, local)
    assert rl.target() == ("localhost", 8080, ai)
    rl._release()
    up = b.upstream
    kept = _Sock()
    up.give_back(INSTANCE_KEY + iid, kept)
    b.resolve(iid)  # the same address: the idle connection stays
    assert not kept.closed and up.idle_count() == 1
    b.addr[iid] = ("an", "old", "address")
    b.resolve(iid)  # it changed: connections to the old one go
    assert kept.closed and up.idle_count() == 0 and b.addr[iid] == ai


@micropython.native  # this frame must not come from the heap either
def _traffic(b, rl, web, kv, rounds):
    n = 0
    for i in range(rounds):
        iid = b.pick(rl.slot, web if i & 1 else kv, rl)
        rl.begin(0, None, 1000, iid)
        n += rl.current()
        rl.answered(200 if i % 3 else 502)
        b.passive(iid, i % 5 != 0)
        if b.failed(rl) != FAIL:
            n += rl.iid
        rl._release()
    return n


def test_request_path_allocates_nothing():
    requires_micropython()
    b, (rl, _) = _setup()
    web = _pool(b, "web")
    kv = _pool(b, "kv")
    _request(rl, b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: srv=1.00\r\n\r\n")
    _traffic(b, rl, web, kv, 12)  # warm: first calls of native code
    micropython.heap_lock()
    try:
        _traffic(b, rl, web, kv, 60)
    finally:
        micropython.heap_unlock()
    assert b.lb.get_connection_count(None) == 0
    before = micropython.mem_total()  # what heap_lock() cannot show: a bytecode frame off the heap
    _traffic(b, rl, web, kv, 20)
    assert micropython.mem_total() - before == 0

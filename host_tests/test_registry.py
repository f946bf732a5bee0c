"""Portable tests for firmware/apigw/registry.py.

The clock is injected: times are built with ticks_add() from bases near both wraps (2**30, where
the stored stamps and a board's ticks wrap, and the runtime's own). Refusals are tables of
(call, status, words the message must hold). The allocation test runs on MicroPython only.
"""

from apigw.compat import micropython, ticks_add
from apigw.health import HealthChecker
from apigw.lb import BalancingStrategy as S
from apigw.lb import HealthStatus as H
from apigw.lb import LoadBalancer
from apigw.registry import Registry, RegistryError
from check import raises, requires_micropython

BASES = (0, 1, (1 << 30) - 1, (1 << 30) - 1000, (1 << 29) - 1, 1 << 29, ticks_add(0, -1), ticks_add(0, -700))
MAX_TTL = 86400000


def _setup(max_pools=4, max_instances=16, **kw):
    """A balancer with pools "web" (open, one static instance 10.0.0.1:8080) and "closed"."""
    lbr = LoadBalancer(max_pools, max_instances)
    web = lbr.register_pool("web", S.ROUND_ROBIN)
    lbr.register_pool("closed")
    static = lbr.register_instance(web, "10.0.0.1", 8080)
    hc = HealthChecker(max_instances)
    removed = []
    reg = Registry(lbr, hc, removed.append, **kw)
    reg.allow("web")
    return lbr, reg, hc, removed, web, static


def _status(fn, *args, **kw):
    return raises(RegistryError, fn, *args, **kw).status


def _picks(lbr, pool, n):
    return sorted(set(lbr.select_instance(pool) for _ in range(n)))


def test_register_then_register_again_is_a_heartbeat():
    lbr, reg, hc, removed, web, static = _setup()
    hc.set_outlier(consecutive_errors=1)
    assert hc.record(1, False, 0)  # stale health state on the id about to be given out
    iid, created = reg.register("web", "10.0.0.2", 8081, weight=3, ttl_ms=5000, now_ms=100)
    assert created and iid != static and reg.is_dynamic(iid) and not reg.is_dynamic(static)
    assert reg.count() == 1 and reg.remaining_ms(iid, 100) == 5000
    inst = lbr.get_instance(iid)
    assert (inst.address, inst.port, inst.weight, inst.health, inst.pool) == ("10.0.0.2", 8081, 3, H.UNKNOWN, web)
    assert _picks(lbr, web, 4) == sorted((static, iid))  # UNKNOWN counts as up
    st = hc.state(iid)
    assert st["pool"] == web and st["times_ejected"] == 0 and st["ejected_until"] is None

    # the same host and port again: same id, new weight and expiry; host case does not matter
    assert reg.register("web", "10.0.0.2", 8081, weight=7, ttl_ms=9000, now_ms=2000) == (iid, False)
    assert lbr.get_instance(iid).weight == 7 and reg.remaining_ms(iid, 2000) == 9000
    a, created = reg.register(web, "Api.Local", 80, now_ms=0)  # pool by id
    assert created and reg.register("web", "api.LOCAL", 80, now_ms=0) == (a, False)
    assert reg.remaining_ms(a, 0) == 30000  # default_ttl_ms
    # another port, or the same address in another pool, is another instance
    b, created = reg.register("web", "10.0.0.2", 8082, now_ms=0)
    assert created and b not in (iid, a)
    reg.allow("closed")
    c, created = reg.register("closed", "10.0.0.2", 8081, now_ms=0)
    assert created and lbr.get_instance(c).pool == lbr.pool_id("closed")
    assert reg.count() == 4 and lbr.get_pool(web).instances == [static, iid, a, b]
    assert removed == []


def test_heartbeat_and_expiry_across_the_wrap():
    for base in BASES:
        for ttl in (1000, 5000, MAX_TTL):
            lbr, reg, hc, removed, web, static = _setup()

            def at(dt):
                return ticks_add(base, dt)

            iid = reg.register("web", "10.0.0.2", 8081, ttl_ms=ttl, now_ms=at(0))[0]
            assert reg.remaining_ms(iid, at(0)) == ttl and reg.remaining_ms(iid, at(ttl - 1)) == 1
            assert reg.expire(at(ttl - 1)) == 0 and reg.is_dynamic(iid)
            assert reg.heartbeat(iid, at(ttl - 1)) == 30000  # default ttl from now
            assert reg.remaining_ms(iid, at(ttl - 1)) == 30000
            assert reg.expire(at(ttl + 29998)) == 0
            assert reg.heartbeat(iid, at(ttl + 29998), 2000) == 2000
            assert reg.remaining_ms(iid, at(ttl + 31997)) == 1 and reg.remaining_ms(iid, at(ttl + 31998)) == 0
            assert reg.expire(at(ttl + 31998)) == 1 and removed == [iid], (base, ttl)
            assert not reg.is_dynamic(iid) and reg.count() == 0
            assert _status(reg.heartbeat, iid, at(ttl + 31998)) == 404


def test_a_late_sweep_still_expires():
    lbr, reg, hc, removed, web, static = _setup()
    ids = [reg.register("web", "10.0.0.%d" % k, 80, ttl_ms=1000 * k, now_ms=(1 << 30) - 1)[0] for k in (2, 3, 4)]
    assert reg.expire(ticks_add((1 << 30) - 1, 3500)) == 2 and removed == ids[:2]
    assert reg.expire(ticks_add((1 << 30) - 1, 1000000)) == 1 and removed == ids
    assert reg.expire(ticks_add((1 << 30) - 1, 1000001)) == 0


def test_expiry_leaves_the_pool_and_calls_on_remove():
    lbr, reg, hc, removed, web, static = _setup()
    seen = []

    def on_remove(iid):  # runs once the instance has left the balancer
        seen.append((iid, reg.is_dynamic(iid), iid in lbr.get_pool(web).instances, hc.state(iid)["pool"]))

    reg.on_remove = on_remove
    a = reg.register("web", "10.0.0.2", 80, ttl_ms=1000, now_ms=0)[0]
    b = reg.register("web", "10.0.0.3", 80, ttl_ms=2000, now_ms=0)[0]
    lbr.mark_healthy(a)
    lbr.increment_connections(a)  # open connections do not keep an expired instance
    assert _picks(lbr, web, 6) == sorted((static, a, b))
    assert reg.expire(999) == 0
    assert reg.expire(1000) == 1 and seen == [(a, False, False, -1)]
    assert _picks(lbr, web, 6) == sorted((static, b))
    assert reg.expire(2000) == 1 and seen[1] == (b, False, False, -1)
    assert _picks(lbr, web, 4) == [static] and lbr.get_pool(web).instances == [static]
    assert reg.count() == 0 and reg.remaining_ms(a, 0) == 0
    c, created = reg.register("web", "10.0.0.9", 80, now_ms=0)
    assert created and c == a  # the lowest free id is given out again
    assert lbr.get_instance(c).connections == 0 and lbr.health(c) == H.UNKNOWN


def test_deregister():
    lbr, reg, hc, removed, web, static = _setup()
    a = reg.register("web", "10.0.0.2", 80, now_ms=0)[0]
    lbr.increment_connections(a)
    reg.deregister(a)  # connections or not
    assert removed == [a] and not reg.is_dynamic(a) and reg.count() == 0
    assert lbr.get_pool(web).instances == [static] and lbr.get_connection_count(web) == 0
    assert _status(reg.deregister, a) == 404
    assert reg.expire(10**6) == 0 and removed == [a]


def test_no_health_and_no_callback():
    lbr = LoadBalancer(2, 4)
    pool = lbr.register_pool("p")
    reg = Registry(lbr, default_ttl_ms=1000)
    reg.allow(pool)
    reg.register("p", "h", 1, now_ms=5)
    assert reg.expire(1005) == 1 and lbr.get_pool(pool).instances == []


# (method, args, kwargs, status, words in the message)
REFUSED = (
    ("register", ("nope", "10.0.0.2", 80), {}, 404, "no pool 'nope'"),
    ("register", (2, "10.0.0.2", 80), {}, 404, "no pool 2"),  # an id < max_pools not registered
    ("register", (-1, "10.0.0.2", 80), {}, 404, "no pool"),
    ("register", (True, "10.0.0.2", 80), {}, 400, "pool"),
    ("register", (None, "10.0.0.2", 80), {}, 400, "pool"),
    ("register", ("closed", "10.0.0.2", 80), {}, 403, "does not accept"),
    ("register", ("closed", "", 0), {}, 403, "does not accept"),  # before the fields are looked at
    ("register", ("web", "10.0.0.1", 8080), {}, 409, "statically"),
    ("register", ("web", "10.0.0.9", 9), {}, 409, "statically"),  # lb holding the host as bytes
    ("register", ("web", "10.0.0.1", 0), {}, 400, "port"),  # fields before the 409
    ("allow", ("nope",), {}, 404, "no pool"),
    ("heartbeat", (0, 0), {}, 404, "no registered instance"),  # the static one
    ("heartbeat", (15, 0), {}, 404, "no registered instance"),
    ("heartbeat", (16, 0), {}, 404, "no registered instance"),
    ("heartbeat", (-1, 0), {}, 404, "no registered instance"),
    ("heartbeat", ("1", 0), {}, 404, "no registered instance"),
    ("heartbeat", (2, 0, 999), {}, 400, "ttl_ms"),  # a registered one with a bad ttl
    ("deregister", (0,), {}, 404, "no registered instance"),
    ("deregister", (None,), {}, 404, "no registered instance"),
)


def test_refusals():
    for method, args, kw, status, words in REFUSED:
        lbr, reg, hc, removed, web, static = _setup()
        lbr.register_instance(web, b"10.0.0.9", 9)
        assert reg.register("web", "10.0.0.2", 8081, now_ms=0) == (2, True)
        e = raises(RegistryError, getattr(reg, method), *args, **kw)
        assert isinstance(e, ValueError) and e.status == status, (method, args, e.status)
        assert words in e.message and str(e) == e.message, (method, args, e.message)
        assert reg.count() == 1 and len(lbr.get_pool(web).instances) == 3 and removed == []


# (field, bad values); every other argument is good
BAD_FIELDS = (
    ("host", ("", "a" * 254, "a b", "a\tb", "a\nb", "a\x00", "a\x7f", "a/b", "caf\xe9", b"10.0.0.2", None, 5)),
    ("port", (0, 65536, -1, True, False, "80", 80.0, None)),
    ("weight", (0, 256, -1, True, 1.5, "1", None)),
    ("ttl_ms", (0, 999, MAX_TTL + 1, True, "1000", 1000.0)),
)
GOOD = {"host": "10.0.0.2", "port": 8081, "weight": 1, "ttl_ms": None}


def test_every_bad_field_is_a_400_naming_it():
    lbr, reg, hc, removed, web, static = _setup()
    for field, values in BAD_FIELDS:
        for v in values:
            kw = dict(GOOD)
            kw[field] = v
            e = raises(RegistryError, reg.register, "web", now_ms=0, **kw)
            assert e.status == 400 and e.message.startswith(field + " must be"), (field, v, e.message)
    assert reg.count() == 0 and lbr.get_pool(web).instances == [static]
    # the edges are good
    for host, port, weight, ttl in (("a" * 253, 1, 255, 1000), ("x", 65535, 1, MAX_TTL), ("[::1]", 2, 2, 5000)):
        assert reg.register("web", host, port, weight, ttl, 0)[1]
    iid = reg.register("web", "x", 65535, now_ms=0)[0]
    for v in (999, MAX_TTL + 1, True, "5"):
        e = raises(RegistryError, reg.heartbeat, iid, 0, v)
        assert e.status == 400 and e.message.startswith("ttl_ms must be"), (v, e.message)
    assert reg.count() == 3


def test_instance_table_full():
    lbr = LoadBalancer(2, 3)
    web = lbr.register_pool("web")
    lbr.register_instance(web, "10.0.0.1", 80)
    reg = Registry(lbr)
    reg.allow(web)
    a = reg.register("web", "10.0.0.2", 80, now_ms=0)[0]
    b = reg.register("web", "10.0.0.3", 80, now_ms=0)[0]
    e = raises(RegistryError, reg.register, "web", "10.0.0.4", 80, now_ms=0)
    assert e.status == 503 and "full" in e.message and reg.count() == 2
    assert reg.register("web", "10.0.0.3", 80, now_ms=0) == (b, False)  # a heartbeat still works
    reg.deregister(a)
    assert reg.register("web", "10.0.0.4", 80, now_ms=0) == (a, True)


def test_closing_a_pool_keeps_its_instances():
    lbr, reg, hc, removed, web, static = _setup()
    a = reg.register("web", "10.0.0.2", 80, ttl_ms=1000, now_ms=0)[0]
    reg.allow("web", False)
    assert reg.accepts[web] == 0
    assert _status(reg.register, "web", "10.0.0.2", 80, now_ms=0) == 403
    assert reg.heartbeat(a, 500) == 30000 and reg.is_dynamic(a)
    reg.deregister(a)
    assert removed == [a]


def test_entries():
    lbr, reg, hc, removed, web, static = _setup()
    reg.allow(1)
    a = reg.register("web", "10.0.0.2", 80, weight=4, ttl_ms=3000, now_ms=(1 << 30) - 1000)[0]
    b = reg.register("closed", "svc.local", 8443, now_ms=(1 << 30) - 1000)[0]
    now = ticks_add((1 << 30) - 1000, 2000)
    want = [
        {"id": a, "pool": "web", "host": "10.0.0.2", "port": 80, "weight": 4, "ttl_ms_left": 1000},
        {"id": b, "pool": "closed", "host": "svc.local", "port": 8443, "weight": 1, "ttl_ms_left": 28000},
    ]
    assert reg.entries(now) == want
    assert reg.entries(ticks_add(now, 1000))[0]["ttl_ms_left"] == 0  # expired, not yet swept


def test_settings_are_checked():
    lbr = LoadBalancer(1, 2)
    for kw in (
        {"default_ttl_ms": 999},
        {"max_ttl_ms": 999},
        {"max_ttl_ms": 1 << 29},
        {"default_ttl_ms": 5000, "max_ttl_ms": 4000},
    ):
        assert raises(ValueError, Registry, lbr, **kw)
    # the longest ttl allowed, registered just before the 2**30 wrap
    reg = Registry(lbr, max_ttl_ms=(1 << 29) - 1)
    reg.allow(lbr.register_pool("p"))
    iid = reg.register("p", "h", 1, ttl_ms=(1 << 29) - 1, now_ms=(1 << 30) - 1)[0]
    assert reg.remaining_ms(iid, (1 << 30) - 1) == (1 << 29) - 1
    assert reg.expire(ticks_add((1 << 30) - 1, (1 << 29) - 2)) == 0
    assert reg.expire(ticks_add((1 << 30) - 1, (1 << 29) - 1)) == 1


@micropython.native  # this frame must not come from the heap either
def _sweep(reg, t0):
    n = 0
    for i in range(50):
        now = ticks_add(t0, i * 20)
        n += reg.expire(now)
        for iid in range(8):
            n += reg.remaining_ms(iid, now) + reg.is_dynamic(iid)
        n += reg.count()
    return n


def test_expire_with_nothing_due_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    for t0 in ((1 << 30) - 500, ticks_add(0, -500), 0):
        lbr, reg, hc, removed, web, static = _setup(max_instances=8)
        for k in range(5):
            reg.register("web", "10.0.0.%d" % (k + 2), 80, ttl_ms=5000 + k, now_ms=t0)
        want = _sweep(reg, t0)
        assert reg.count() == 5 and removed == []
        before = mp.mem_total()
        got = _sweep(reg, t0)
        assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
        assert got == want
        mp.heap_lock()
        try:
            got = _sweep(reg, t0)
        finally:
            mp.heap_unlock()
        assert got == want
        assert reg.expire(ticks_add(t0, 5004)) == 5  # and the removing sweep still works
    empty = Registry(LoadBalancer(1, 4))
    mp.heap_lock()
    try:
        got = empty.expire(123)
    finally:
        mp.heap_unlock()
    assert got == 0

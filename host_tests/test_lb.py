"""Portable tests for firmware/apigw/lb.py.

Pools are built from a table of weights; instances are named a, b, c... by registration order and
sequences of choices are compared as strings ("-" for no instance). Each case lists changes to
make (state, instance letter) and the sequence expected after them. The allocation test runs on
MicroPython only.
"""

from apigw import lb
from apigw.compat import micropython
from apigw.lb import BalancingStrategy as S
from apigw.lb import HealthStatus as H
from apigw.lb import LbError, LoadBalancer
from check import raises, requires_micropython

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _pool(strategy, weights, lbr=None):
    lbr = lbr or LoadBalancer(4, 32)
    pool = lbr.register_pool("p%d" % len(lbr.pools()), strategy)
    ids = [lbr.register_instance(pool, "10.0.0.%d" % (k + 1), 8000 + k, w) for k, w in enumerate(weights)]
    return lbr, pool, ids


def _apply(lbr, ids, changes):
    for what, letter in changes:
        iid = ids[LETTERS.index(letter)]
        if what == "drain":
            lbr.drain(iid)
        elif what == "undrain":
            lbr.drain(iid, False)
        elif what == "eject":
            lbr.eject(iid)
        elif what == "remove":
            lbr.remove_instance(iid)
        elif what == "conn":
            lbr.increment_connections(iid)
        elif what == "done":
            lbr.decrement_connections(iid)
        elif what.startswith("weight"):
            lbr.set_weight(iid, int(what[6:]))
        else:
            getattr(lbr, "mark_" + what)(iid)


def _seq(lbr, pool, ids, n, hold=False):
    out = ""
    for _ in range(n):
        i = lbr.select_instance(pool)
        out += "-" if i < 0 else LETTERS[ids.index(i)]
        if hold and i >= 0:
            lbr.increment_connections(i)
    return out


# (strategy, weights, changes, expected sequence)
SEQUENCES = (
    (S.ROUND_ROBIN, (1, 1, 1), (), "abcabca"),
    (S.ROUND_ROBIN, (1, 1, 1), (("unhealthy", "b"),), "acacac"),
    (S.ROUND_ROBIN, (1, 1, 1), (("drain", "a"),), "bcbcbc"),
    (S.ROUND_ROBIN, (1, 1, 1), (("drain", "a"), ("undrain", "a")), "abcabc"),
    (S.ROUND_ROBIN, (1, 1, 1), (("eject", "c"), ("healthy", "a")), "ababab"),
    (S.ROUND_ROBIN, (1, 1, 1, 1), (("degraded", "b"), ("healthy", "c")), "acdacd"),  # degraded: fallback
    (S.ROUND_ROBIN, (1, 1, 1, 1), (("degraded", "b"), ("degraded", "d"), ("unhealthy", "a"), ("drain", "c")), "bdbd"),
    (S.ROUND_ROBIN, (5, 1), (), "abab"),  # weights do not matter to plain round robin
    (S.ROUND_ROBIN, (1, 1, 1), (("remove", "b"),), "acac"),
    (S.ROUND_ROBIN, (1, 1), (("unhealthy", "a"), ("unhealthy", "b")), "---"),
    (S.ROUND_ROBIN, (1, 1), (("unhealthy", "a"), ("healthy", "a")), "abab"),  # unknown counts as up
    (S.WEIGHTED_ROUND_ROBIN, (5, 1, 1), (), "aabacaa" * 3),
    (S.WEIGHTED_ROUND_ROBIN, (3, 2, 1), (), "abacba" * 3),
    (S.WEIGHTED_ROUND_ROBIN, (1, 1, 1), (), "abcabc"),
    (S.WEIGHTED_ROUND_ROBIN, (5, 1, 1), (("weight1", "a"),), "abcabc"),
    (S.WEIGHTED_ROUND_ROBIN, (1, 1, 1), (("weight5", "a"),), "aabacaa" * 2),
    (S.WEIGHTED_ROUND_ROBIN, (4, 2), (("degraded", "a"),), "abab"),  # half weight: 2 and 2
    (S.WEIGHTED_ROUND_ROBIN, (3, 1), (("degraded", "a"),), "abaaba"),  # ceil(3 / 2) = 2 against 1
    (S.WEIGHTED_ROUND_ROBIN, (1, 5, 1, 1), (("unhealthy", "a"),), "bbcbdbb"),
    (S.WEIGHTED_ROUND_ROBIN, (5, 1, 1), (("drain", "a"), ("drain", "b"), ("drain", "c")), "---"),
    (S.WEIGHTED_ROUND_ROBIN, (255, 255), (), "abab"),
    (S.LEAST_CONNECTIONS, (1, 1, 1), (), "abcabc"),  # all equal: round robin
    (S.LEAST_CONNECTIONS, (1, 1, 1), (("conn", "a"), ("conn", "a"), ("conn", "b")), "cccc"),  # not held: c stays lowest
    (S.LEAST_CONNECTIONS, (1, 1, 1), (("conn", "b"), ("conn", "b"), ("done", "b"), ("done", "b")), "abcabc"),
    (S.LEAST_CONNECTIONS, (1, 1, 1), (("done", "a"), ("conn", "c")), "ababab"),  # never below 0
    (S.LEAST_CONNECTIONS, (1, 1, 1), (("degraded", "a"), ("conn", "b"), ("conn", "c")), "bcbcbc"),
    (S.LEAST_CONNECTIONS, (1, 1), (("unhealthy", "a"), ("conn", "b")), "bbb"),
    (S.IP_HASH, (1, 1), (("unhealthy", "a"), ("unhealthy", "b")), "--"),
)


def test_sequences():
    for strategy, weights, changes, want in SEQUENCES:
        lbr, pool, ids = _pool(strategy, weights)
        _apply(lbr, ids, changes)
        got = _seq(lbr, pool, ids, len(want))
        assert got == want, (S.NAMES[strategy], weights, changes, got, want)


def test_weighted_round_robin_gives_each_its_weight_per_cycle():
    for weights in ((7, 3, 1), (1, 2, 3, 4, 5, 6, 7, 8), (255, 1, 128, 64), (2, 2, 2, 9)):
        lbr, pool, ids = _pool(S.WEIGHTED_ROUND_ROBIN, weights)
        total = sum(weights)
        for _ in range(3):
            got = _seq(lbr, pool, ids, total)
            assert [got.count(LETTERS[k]) for k in range(len(weights))] == list(weights), (weights, got)
            assert all(abs(lbr._cur[i]) < total for i in ids)  # bounded: no drift cycle to cycle


def test_least_connections_with_held_connections():
    lbr, pool, ids = _pool(S.LEAST_CONNECTIONS, (1, 1, 1))
    assert _seq(lbr, pool, ids, 6, hold=True) == "abcabc"  # each pick holds a connection
    for _ in range(2):
        lbr.decrement_connections(ids[1])
    # b drops to 0 and takes two; the 2-2-2 tie then goes to c, next in round-robin order after b
    assert _seq(lbr, pool, ids, 3, hold=True) == "bbc"
    assert [lbr.get_connection_count(None, i) for i in ids] == [2, 2, 3]
    assert lbr.get_connection_count(pool) == 7 and lbr.get_connection_count(None) == 7


def test_round_robin_keeps_its_place_across_changes():
    lbr, pool, ids = _pool(S.ROUND_ROBIN, (1, 1, 1, 1))
    assert _seq(lbr, pool, ids, 2) == "ab"
    lbr.remove_instance(ids[2])  # the cursor's instance: it moves on to d
    assert _seq(lbr, pool, ids, 3) == "dab"
    c = lbr.register_instance(pool, "10.0.0.9", 80)
    assert c == ids[2]  # the lowest free id comes back, at the end of the rotation
    assert _seq(lbr, pool, ids, 4) == "dcab"
    lbr.reset_index(pool)
    assert _seq(lbr, pool, ids, 2) == "ab" and lbr.get_pool(pool).current_index == 2


def test_pools_are_independent():
    lbr, p1, ids1 = _pool(S.ROUND_ROBIN, (1, 1))
    lbr, p2, ids2 = _pool(S.WEIGHTED_ROUND_ROBIN, (2, 1), lbr)
    assert _seq(lbr, p1, ids1, 1) + _seq(lbr, p2, ids2, 1) + _seq(lbr, p1, ids1, 1) == "aab"
    assert ids2 == [2, 3] and lbr.pool_id("p1") == p2 and lbr.pool_id("zz") == -1


def _clients(n):
    out = []
    for k in range(n):
        addr = b"192.168.%d.%d" % (k >> 8, k & 255)
        out.append(LoadBalancer.client_hash(addr, 0, len(addr)))
    return out


def test_client_hash_is_30_bit_and_spreads():
    hs = _clients(1000)
    assert all(0 <= h < 1 << 30 for h in hs)
    assert len(set(hs)) == 1000
    buf = bytearray(b"xx10.1.2.3yy")
    assert LoadBalancer.client_hash(buf, 2, 10) == LoadBalancer.client_hash(b"10.1.2.3", 0, 8)
    for x in (0, 1, 0x3FFFFFFF, 12345678):
        assert 0 <= lb._mix(x) < 1 << 30
    assert len(set(lb._mix(x) for x in range(4096))) == 4096  # a bijection


def _assign(lbr, pool, clients):
    return [lbr.select_instance(pool, h) for h in clients]


def test_ip_hash_is_stable_and_moves_only_the_clients_of_a_removed_instance():
    lbr, pool, ids = _pool(S.IP_HASH, (1, 1, 1, 1, 1))
    clients = _clients(1000)
    before = _assign(lbr, pool, clients)
    assert _assign(lbr, pool, clients) == before
    assert before == [max(ids, key=lambda i: lb._score(h, i)) for h in clients]
    for iid in ids:
        assert 140 <= before.count(iid) <= 260, [before.count(i) for i in ids]
    for leave in ("remove", "unhealthy", "drain"):
        lbr2, pool2, ids2 = _pool(S.IP_HASH, (1, 1, 1, 1, 1))
        _apply(lbr2, ids2, ((leave, "c"),))
        after = _assign(lbr2, pool2, clients)
        gone = ids[2]
        kept = [k for k in range(1000) if before[k] != gone]
        assert all(after[k] == before[k] for k in kept)  # nobody else's client moves
        moved = [after[k] for k in range(1000) if before[k] == gone]
        assert 140 <= len(moved) <= 260  # about 1/N of all clients
        for iid in ids:
            if iid != gone:
                assert 25 <= moved.count(iid) <= 90, [moved.count(i) for i in ids]  # spread over the rest
    lbr.mark_degraded(ids[0])  # degraded instances keep their clients
    lbr.set_weight(ids[1], 9)  # weights do not matter to the hash
    assert _assign(lbr, pool, clients) == before


def test_all_down_and_bad_pools_give_minus_one():
    lbr = LoadBalancer(8, 8)
    for s in range(4):
        pool = lbr.register_pool("s%d" % s, s)
        assert lbr.select_instance(pool, 7) == -1  # empty pool
        a = lbr.register_instance(pool, "h", 1)
        assert lbr.select_instance(pool, 7) == a
        lbr.mark_unhealthy(a)
        assert lbr.select_instance(pool, 7) == -1
        lbr.mark_degraded(a)
        assert lbr.select_instance(pool, 7) == a
        lbr.eject(a)
        assert lbr.select_instance(pool, 7) == -1
    for bad in (-1, 4, 8, 1000):
        assert lbr.select_instance(bad) == -1


def test_registration_limits_and_errors():
    lbr = LoadBalancer(2, 3)
    p = lbr.register_pool("api")
    assert "already" in str(raises(LbError, lbr.register_pool, "api"))
    assert "strategy" in str(raises(LbError, lbr.register_pool, "x", 4))
    lbr.register_pool("web", S.IP_HASH)
    assert "pool table full" in str(raises(LbError, lbr.register_pool, "more"))
    assert "no pool" in str(raises(LbError, lbr.register_instance, 2, "h", 80))
    assert "port" in str(raises(LbError, lbr.register_instance, p, "h", 0))
    assert "port" in str(raises(LbError, lbr.register_instance, p, "h", 65536))
    for w in (0, 256, -1):
        assert "weight" in str(raises(LbError, lbr.register_instance, p, "h", 80, w))
    ids = [lbr.register_instance(p, "h%d" % k, 80, 255) for k in range(3)]
    assert ids == [0, 1, 2]
    assert "instance table full" in str(raises(LbError, lbr.register_instance, p, "h", 80))
    assert "weight" in str(raises(LbError, lbr.set_weight, 0, 0))
    lbr.increment_connections(1)
    assert "connections" in str(raises(LbError, lbr.remove_instance, 1))
    lbr.remove_instance(1, force=True)
    for f in (lbr.remove_instance, lbr.mark_healthy, lbr.drain, lbr.health, lbr.get_instance):
        assert "no instance" in str(raises(LbError, f, 1))
    lbr.increment_connections(1)  # a late count for a freed id is ignored
    lbr.decrement_connections(1)
    lbr.increment_connections(99)
    assert lbr.register_instance(p, "new", 81) == 1 and lbr.get_connection_count(None, 1) == 0
    assert raises(LbError, LoadBalancer, 0, 8) and raises(LbError, LoadBalancer, 8, 0x4000)
    assert raises(ValueError, lbr.reset_index, 5)


def test_display_objects():
    lbr, pool, ids = _pool(S.LEAST_CONNECTIONS, (1, 2))
    lbr.mark_healthy(ids[0])
    lbr.mark_degraded(ids[1])
    lbr.drain(ids[1])
    lbr.increment_connections(ids[1])
    assert lbr.select_instance(pool) == ids[0]
    p = lbr.get_pool(pool)
    assert (p.id, p.name, p.instances, p.current_index, p.strategy, p.connection_count) == (
        pool,
        "p0",
        ids,
        1,
        S.LEAST_CONNECTIONS,
        1,
    )
    i = lbr.get_instance(ids[1])
    assert (i.id, i.address, i.port, i.weight, i.health, i.connections, i.drained, i.pool) == (
        ids[1],
        "10.0.0.2",
        8001,
        2,
        H.DEGRADED,
        1,
        True,
        pool,
    )
    assert lbr.health(ids[0]) == H.HEALTHY and H.NAMES[H.UNKNOWN] == "unknown"
    assert [x.address for x in lbr.instances(pool)] == ["10.0.0.1", "10.0.0.2"]
    assert [x.name for x in lbr.pools()] == ["p0"]


@micropython.native  # this frame must not come from the heap either
def _exercise(lbr, pools, clients):
    n = 0
    for p in pools:
        for h in clients:
            i = lbr.select_instance(p, h)
            lbr.increment_connections(i)
            n += i
        for h in clients:
            lbr.decrement_connections(n & 7)
    n += lbr.select_instance(99, 1)
    return n


def test_select_instance_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    lbr = LoadBalancer(8, 32)
    pools = []
    for s in range(4):
        lbr, pool, ids = _pool(s, (5, 1, 3, 2, 1, 4, 7), lbr)
        lbr.mark_healthy(ids[0])
        lbr.mark_degraded(ids[1])
        lbr.mark_unhealthy(ids[2])
        lbr.drain(ids[3])
        pools.append(pool)
    pools = tuple(pools)
    clients = tuple(_clients(16))
    want = _exercise(lbr, pools, clients)
    for p in pools:
        lbr.reset_index(p)
    before = mp.mem_total()
    got = _exercise(lbr, pools, clients)
    assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
    assert got == want
    mp.heap_lock()
    try:
        _exercise(lbr, pools, clients)
    finally:
        mp.heap_unlock()

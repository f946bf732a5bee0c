"""Portable tests for firmware/apigw/bulkhead.py.

Sequences are tables of (operation, expected result, expected in_use, expected waiting). A
simulated I/O layer (a FIFO of waiters, as the asyncio shell will keep) checks over many seeded
random runs that a permit is never lost or doubled. The allocation test runs on MicroPython only.
"""

from apigw.bulkhead import ACQUIRED, MUST_WAIT, REJECTED, BulkheadTable, ResilienceError
from apigw.compat import micropython
from check import raises, requires_micropython

A = ACQUIRED
W = MUST_WAIT
X = REJECTED

# (max_concurrent, max_waiting, queue_timeout_ms, steps of (op, result, in_use, waiting));
# op: "acq", "rel", "timeout" (leave_queue timed out), "cancel" (leave_queue not timed out).
SEQUENCES = (
    # N acquire, then wait while the queue has room, then refuse
    (2, 2, 100, (("acq", A, 1, 0), ("acq", A, 2, 0), ("acq", W, 2, 1), ("acq", W, 2, 2), ("acq", X, 2, 2))),
    # a release hands the permit to the oldest waiter: in_use stays, waiting drops
    (
        2,
        2,
        100,
        (("acq", A, 1, 0), ("acq", A, 2, 0), ("acq", W, 2, 1), ("acq", W, 2, 2), ("rel", True, 2, 1))
        + (("rel", True, 2, 0), ("rel", False, 1, 0), ("rel", False, 0, 0), ("rel", False, 0, 0)),
    ),
    # no queue: refused at once (max_waiting 0, or no time to wait)
    (1, 0, 100, (("acq", A, 1, 0), ("acq", X, 1, 0), ("rel", False, 0, 0), ("acq", A, 1, 0))),
    (1, 5, 0, (("acq", A, 1, 0), ("acq", X, 1, 0))),
    # a waiter that gives up leaves the count; the next release goes back to the pool
    (
        1,
        2,
        100,
        (("acq", A, 1, 0), ("acq", W, 1, 1), ("acq", W, 1, 2), ("timeout", None, 1, 1), ("cancel", None, 1, 0))
        + (("timeout", None, 1, 0), ("rel", False, 0, 0), ("acq", A, 1, 0)),
    ),
    # first come, first served: while anyone waits a newcomer queues even as permits move
    (1, 3, 100, (("acq", A, 1, 0), ("acq", W, 1, 1), ("rel", True, 1, 0), ("acq", W, 1, 1), ("rel", True, 1, 0))),
)


def _op(bh, b, op):
    if op == "acq":
        return bh.acquire_permit(b)
    if op == "rel":
        return bh.release_permit(b)
    return bh.leave_queue(b, op == "timeout")


def test_sequences():
    for k, (conc, wait, qto, steps) in enumerate(SEQUENCES):
        bh = BulkheadTable(4)
        bh.create("other", 1)
        b = bh.create("pool", conc, wait, qto)
        for n, (op, want, in_use, waiting) in enumerate(steps):
            got = _op(bh, b, op)
            where = (k, n, op, got, want, bh.in_use(b), bh.waiting(b))
            assert want is None or got == want, where
            assert (bh.in_use(b), bh.waiting(b)) == (in_use, waiting), where
        assert bh.in_use(0) == 0 and bh.waiting(0) == 0  # the neighbour saw nothing


def test_metrics_and_view():
    bh = BulkheadTable(2)
    b = bh.create("db", 2, 1, 250)
    assert bh.available(b) == 2 and bh.queue_timeout_ms(b) == 250
    ops = ("acq", "acq", "acq", "acq", "rel", "acq", "timeout", "rel", "rel")
    assert [_op(bh, b, op) for op in ops] == [A, A, W, X, True, W, None, False, False]
    m = bh.metrics(b)
    want = {"name": "db", "max_concurrent": 2, "max_waiting": 1, "queue_timeout_ms": 250, "in_use": 0}
    want.update({"waiting": 0, "acquired": 3, "rejected": 1, "queued": 2, "queue_timeouts": 1, "max_in_use": 2})
    assert m == want, m
    v = bh.get(b)
    assert (v.id, v.name, v.max_concurrent, v.max_waiting, v.queue_timeout_ms, v.in_use, v.waiting) == (
        b,
        "db",
        2,
        1,
        250,
        0,
        0,
    )
    assert bh.find("db") == b and bh.find("x") == -1 and bh.name(b) == "db"


def test_reconfigure_hands_freed_permits_to_waiters():
    bh = BulkheadTable(1)
    b = bh.create("p", 1, 4, 100)
    assert [bh.acquire_permit(b) for _ in range(4)] == [A, W, W, W]
    assert bh.configure(b, 3, 4, 100) == 2  # two more permits: the two oldest waiters get them
    assert (bh.in_use(b), bh.waiting(b), bh.available(b)) == (3, 1, 0)
    assert bh.configure(b, 1, 4, 100) == 0  # lowered: held permits end as their calls do
    assert [bh.release_permit(b) for _ in range(3)] == [False, False, True]  # 3 > 1, 2 > 1, then hand over
    assert (bh.in_use(b), bh.waiting(b)) == (1, 0)
    assert bh.metrics(b)["max_in_use"] == 3


def _simulate(seed, conc, wait):
    """A random mix of arrivals, completions and waiter timeouts against a model of the I/O layer."""
    bh = BulkheadTable(1)
    b = bh.create("p", conc, wait, 10)
    fifo = []  # waiters, oldest first (the asyncio shell's Events)
    holders = 0  # calls holding a permit, as the I/O layer sees them
    granted = timeouts = 0
    x = seed
    for _ in range(400):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        r = (x >> 16) % 10
        if r < 5:
            got = bh.acquire_permit(b)
            if got == A:
                holders += 1
                granted += 1
            elif got == W:
                fifo.append(x)
            else:
                assert holders == conc and len(fifo) == wait
        elif r < 9 and holders:
            holders -= 1
            if bh.release_permit(b):
                fifo.pop(0)  # woken: it holds the permit now
                holders += 1
                granted += 1
        elif fifo:
            fifo.pop((x >> 8) % len(fifo))
            bh.leave_queue(b, True)
            timeouts += 1
        assert bh.in_use(b) == holders <= conc, (seed, holders, bh.in_use(b))
        assert bh.waiting(b) == len(fifo) <= wait
        assert not fifo or holders == conc  # nobody waits while a permit is free
    m = bh.metrics(b)
    assert (m["acquired"], m["queue_timeouts"], m["max_in_use"]) == (granted, timeouts, conc), (seed, m)


def test_permits_are_never_lost_or_doubled():
    for seed in range(60):
        _simulate(seed, 1 + seed % 4, seed % 5)


def test_ids_not_in_use_and_errors():
    bh = BulkheadTable(2)
    for b in (-1, 0, 5):
        assert bh.acquire_permit(b) == A and bh.release_permit(b) is False
        bh.leave_queue(b)
        assert bh.in_use(b) == 0 and bh.waiting(b) == 0 and bh.available(b) == 0 and bh.queue_timeout_ms(b) == 0
        for f in (bh.get, bh.metrics, bh.name):
            assert "no bulkhead" in str(raises(ResilienceError, f, b))
    for kw, field in (
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 65536}, "max_concurrent"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"queue_timeout_ms": 1 << 29}, "queue_timeout_ms"),
    ):
        args = {"max_concurrent": 1}
        args.update(kw)
        assert field in str(raises(ResilienceError, bh.create, "x", **args))
    b = bh.create("a", 1)
    assert bh.release_permit(b) is False and bh.in_use(b) == 0  # more releases than permits
    assert "taken" in str(raises(ResilienceError, bh.create, "a", 1))
    bh.create("b", 65535, 65535, (1 << 29) - 1)
    assert "table full" in str(raises(ResilienceError, bh.create, "c", 1))
    assert raises(ResilienceError, BulkheadTable, 0)


@micropython.native  # this frame must not come from the heap either
def _exercise(bh):
    n = 0
    for i in range(50):
        for b in range(3):
            r = bh.acquire_permit(b)
            n += r
            if i % 3 == 0:
                n += bh.release_permit(b)
            if r == MUST_WAIT and i % 4 == 0:
                bh.leave_queue(b, i & 1 == 0)
            n += bh.in_use(b) + bh.waiting(b) + bh.available(b)
        n += bh.acquire_permit(-1) + bh.release_permit(-1)
    return n


def _setup():
    bh = BulkheadTable(3)
    bh.create("a", 2, 3, 100)
    bh.create("b", 1, 0, 0)
    bh.create("c", 5, 10, 50)
    return bh


def test_hot_path_allocates_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    want = _exercise(_setup())
    bh = _setup()
    before = mp.mem_total()
    got = _exercise(bh)
    assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
    assert got == want and bh.metrics(0)["rejected"] > 0 and bh.metrics(0)["queue_timeouts"] > 0
    bh = _setup()
    mp.heap_lock()
    try:
        got = _exercise(bh)
    finally:
        mp.heap_unlock()
    assert got == want

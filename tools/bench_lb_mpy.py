"""Micro-benchmarks of the load balancer's choice, run ON the MicroPython unix port (by tools/bench.py).

    MICROPYPATH=firmware:tools:.frozen .venv/bin/micropython tools/bench_lb_mpy.py [--quick]

Measures `LoadBalancer.select_instance` for each strategy, in one process:

- over one pool of 256 instances, each in a LoadBalancer(128, 256) of its own (the strategy is
  the pool's), every instance UNKNOWN (a new instance: selectable) with weights 1..4:
  - ROUND_ROBIN: the scan stops at the first up instance after the cursor (one step here);
  - LEAST_CONNECTIONS: i % 4 connections held on instance i (increment_connections), so the scan
    of all 256 finds a new best now and then; it picks the first idle one after the cursor;
  - WEIGHTED_ROUND_ROBIN: nginx's smooth WRR, one pass over all 256 (current weights updated);
  - IP_HASH: one rendezvous score (two Feistel mixes) per instance, all 256; the client hash
    changes on every call (LoadBalancer.client_hash of b"192.168.1.0" .. b"192.168.1.255",
    computed once into a list the loop indexes with `i & 255`: a small int, no allocation);
- the same over a pool of 8 instances (four pools in one LoadBalancer(128, 256)), for context;
- bytes allocated per call (`micropython.mem_total()` before and after 1,000 calls, the bare
  loop's delta taken off; expected 0).

Every strategy is called the same way, `lb.select_instance(pool, hashes[i & 255])` (the others
ignore the hash); the bare loop with the same indexing is taken off, so each figure includes the
method lookup and call. Each figure is the median of batch means. tools/bench_mpy.py calls run()
and puts the figures with its own; run alone, it prints them. This file times things and asserts
nothing about speed; it raises if a selection is wrong (a figure for a broken choice would mean
nothing).
"""

import gc
import sys
import time

import micropython  # type: ignore

from apigw.lb import BalancingStrategy, LoadBalancer

S = BalancingStrategy
STRATEGIES = (
    ("round_robin", S.ROUND_ROBIN),
    ("least_connections", S.LEAST_CONNECTIONS),
    ("weighted", S.WEIGHTED_ROUND_ROBIN),
    ("ip_hash", S.IP_HASH),
)
INSTANCES = 256
SMALL = 8
CLIENTS = 256  # a power of 2: the loops index the client hashes with i & (CLIENTS - 1)
ALLOC_CALLS = 1000


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def client_hashes():
    """The 30-bit hashes of CLIENTS client addresses (made once; the loops only index the list)."""
    out = []
    for i in range(CLIENTS):
        ip = ("192.168.1.%d" % i).encode()
        out.append(LoadBalancer.client_hash(ip, 0, len(ip)))
    return out


def add_pool(lb, name, strategy, n):
    """Pool of n instances, weights 1..4; for LEAST_CONNECTIONS i % 4 connections held on each."""
    pid = lb.register_pool(name, strategy)
    for i in range(n):
        iid = lb.register_instance(pid, "10.0.%d.%d" % (i >> 8, i & 255), 8000 + i, 1 + i % 4)
        if strategy == S.LEAST_CONNECTIONS:
            for _ in range(i % 4):
                lb.increment_connections(iid)
    return pid


def check(lb, pool, strategy, hashes):
    """Raise ValueError unless the pool's choices are what its strategy promises."""
    members = lb.get_pool(pool).instances
    n = len(members)
    name = S.NAMES[strategy]
    if strategy == S.ROUND_ROBIN:
        got = [lb.select_instance(pool) for _ in range(n)]
        if sorted(got) != sorted(members):
            raise ValueError("%s: %d calls did not visit the %d instances once each" % (name, n, n))
    elif strategy == S.LEAST_CONNECTIONS:
        for _ in range(n):
            iid = lb.select_instance(pool)
            if iid < 0 or lb.get_connection_count(pool, iid) != 0:
                raise ValueError("%s: chose %d, not an idle instance" % (name, iid))
    elif strategy == S.WEIGHTED_ROUND_ROBIN:
        lb.reset_index(pool)
        weights = {i: lb.get_instance(i).weight for i in members}
        counts = {i: 0 for i in members}
        for _ in range(sum(weights.values())):
            counts[lb.select_instance(pool)] += 1  # KeyError on -1 or a stranger
        if counts != weights:
            raise ValueError("%s: one cycle did not follow the weights" % name)
    else:
        got = [lb.select_instance(pool, h) for h in hashes]
        if got != [lb.select_instance(pool, h) for h in hashes] or min(got) < 0:
            raise ValueError("%s: a client did not keep its instance" % name)
        if len(set(got)) < min(n, 4):
            raise ValueError("%s: %d clients went to %d instances" % (name, len(hashes), len(set(got))))


def _batch(lb, pool, hashes, reps, call):
    """Mean µs per select_instance (call) or per pass of the bare loop with the same indexing."""
    mask = CLIENTS - 1
    t0 = time.ticks_us()
    if call:
        for i in range(reps):
            lb.select_instance(pool, hashes[i & mask])
    else:
        for i in range(reps):
            hashes[i & mask]
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _alloc(lb, pool, hashes, reps):
    """Bytes allocated per select_instance (mem_total delta, the bare loop's delta taken off)."""
    mask = CLIENTS - 1
    gc.collect()
    m0 = micropython.mem_total()
    for i in range(reps):
        hashes[i & mask]
    m1 = micropython.mem_total()
    for i in range(reps):
        lb.select_instance(pool, hashes[i & mask])
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def run(batches):
    """The load balancer figures as a flat dict (keys as in build/bench.json)."""
    hashes = client_hashes()
    cases = []  # (key suffix, lb, pool)
    for name, strategy in STRATEGIES:
        lb = LoadBalancer(128, INSTANCES)
        pool = add_pool(lb, name, strategy, INSTANCES)
        check(lb, pool, strategy, hashes)
        cases.append((name, lb, pool))
    small = LoadBalancer(128, INSTANCES)
    for name, strategy in STRATEGIES:
        pool = add_pool(small, name, strategy, SMALL)
        check(small, pool, strategy, hashes)
        cases.append((name + "_%d" % SMALL, small, pool))
    lb0 = cases[0][1]

    reps = 200
    loop = []
    times = [[] for _ in cases]
    for _ in range(batches):
        loop.append(_batch(lb0, 0, hashes, reps, False))
        for k in range(len(cases)):
            _, lb, pool = cases[k]
            times[k].append(_batch(lb, pool, hashes, reps, True))
    lo = median(loop)
    out = {
        "lb_instances": INSTANCES,
        "lb_small_instances": SMALL,
        "lb_connections_held": cases[1][1].get_connection_count(None),
        "lb_loop_overhead_us": lo,
        "lb_batches": batches,
    }
    worst = 0.0
    for k in range(len(cases)):
        suffix, lb, pool = cases[k]
        out["select_instance_us_" + suffix] = median(times[k]) - lo
        a = _alloc(lb, pool, hashes, ALLOC_CALLS)
        out["select_instance_alloc_bytes_" + suffix] = a
        worst = max(worst, a)
    out["select_instance_alloc_bytes"] = worst  # the most any strategy allocates, 256 or 8 instances
    return out


if __name__ == "__main__":
    for k, v in sorted(run(7 if "--quick" in sys.argv else 31).items()):
        print("%-44s %s" % (k, v))

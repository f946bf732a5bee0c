"""Portable tests for firmware/apigw/loghist.py.

The layout is checked bucket by bucket (bounds contain exactly the values that map there, in
order, powers of two on boundaries), then value by value: every value up to 2**18 and a
deterministic spread of larger ones. The error bound is checked at every bucket's ends (where the
relative error of mid_us() is largest) and through percentile() for single values. The allocation
test runs on MicroPython only.
"""

from array import array

from apigw import loghist as lh
from apigw.compat import micropython
from check import lcg, requires_micropython

NB = lh.NBUCKETS
MAX = (1 << 30) - 1


def _spread(n, seed=7):
    """n values spread evenly over octaves 0 .. 30 (a log-uniform-ish set), all in 0 .. MAX."""
    rnd = lcg(seed)
    out = []
    for _ in range(n):
        e = rnd() % 31
        out.append((1 << e) + rnd() % (1 << e) if e < 30 else MAX - rnd() % 1000)
    return out


def _within(got, want):
    """|got - want| <= want * MAX_REL_ERROR (1/11), in integers."""
    return abs(got - want) * 11 <= want


def test_layout_is_contiguous_and_ordered():
    assert NB == 82 and lh.lower_us(0) == 0 and lh.upper_us(NB - 1) == MAX
    for k in range(NB):
        lo = lh.lower_us(k)
        hi = lh.upper_us(k)
        assert lo <= hi, (k, lo, hi)
        assert lh.bucket_of(lo) == k and lh.bucket_of(hi) == k, (k, lo, hi)
        if k + 1 < NB:
            assert lh.lower_us(k + 1) == hi + 1, k
    assert [lh.upper_us(k) for k in range(9)] == [64, 76, 90, 108, 128, 152, 180, 216, 256]
    assert lh.upper_us(80) == 1 << 26 and lh.lower_us(81) == (1 << 26) + 1


def test_every_value_maps_into_its_buckets_bounds():
    for v in range(1 << 18):
        k = lh.bucket_of(v)
        assert lh.lower_us(k) <= v <= lh.upper_us(k), (v, k)
    prev = 0
    for v in sorted(_spread(3000)):
        k = lh.bucket_of(v)
        assert lh.lower_us(k) <= v <= lh.upper_us(k), (v, k)
        assert k >= prev  # monotonic
        prev = k
    for v in (-1, -(1 << 29), 0, 64):
        assert lh.bucket_of(v) == 0
    for v in ((1 << 26) + 1, MAX, 1 << 30):
        assert lh.bucket_of(v) == NB - 1


def test_powers_of_two_are_bucket_upper_bounds():
    uppers = [lh.upper_us(k) for k in range(NB)]
    assert lh.POW2_LES == tuple(1 << e for e in range(6, 27))
    for le in lh.POW2_LES:
        assert le in uppers and lh.bucket_of(le) != lh.bucket_of(le + 1), le


def test_mid_error_is_within_the_bound_at_every_bucket_end():
    worst_num, worst_den = 0, 1
    for k in range(1, NB - 1):
        lo = lh.lower_us(k)
        hi = lh.upper_us(k)
        mid = lh.mid_us(k)
        assert lo <= mid <= hi, k
        for v in (lo, hi):
            err = abs(mid - v)
            assert _within(mid, v), (k, v, mid)
            if err * worst_den > worst_num * v:
                worst_num, worst_den = err, v
    assert 0.09 < worst_num / worst_den <= lh.MAX_REL_ERROR  # the bound is reached, not loose
    assert lh.mid_us(0) == 32 and lh.lower_us(NB - 1) <= lh.mid_us(NB - 1) <= MAX


def test_percentile_of_single_values_is_within_the_bound():
    counts = array("I", [0] * (3 * NB))
    rnd = lcg(11)
    for _ in range(400):
        v = 65 + rnd() % ((1 << 26) - 64)
        for k in range(NB, 2 * NB):
            counts[k] = 0
        lh.add(counts, NB, v)
        assert lh.total(counts, NB) == 1
        for p in (0, 500, 999, 1000):
            got = lh.percentile(counts, NB, p)
            assert got == lh.mid_us(lh.bucket_of(v)) and _within(got, v), (v, p, got)
    assert sum(counts[:NB]) == 0 and sum(counts[2 * NB :]) == 0  # neighbours untouched


def test_percentile_ranks_and_empty():
    counts = array("I", [0] * NB)
    assert lh.percentile(counts, 0, 500) == 0 and lh.at_rank(counts, 0, 1) == 0 and lh.total(counts, 0) == 0
    for _ in range(90):
        lh.add(counts, 0, 1000)
    for _ in range(10):
        lh.add(counts, 0, 100000)
    low = lh.mid_us(lh.bucket_of(1000))
    high = lh.mid_us(lh.bucket_of(100000))
    # nearest rank: ceil(p * 100 / 1000); rank 90 is the last low sample
    assert lh.percentile(counts, 0, 0) == low and lh.percentile(counts, 0, 900) == low
    assert lh.percentile(counts, 0, 901) == high and lh.percentile(counts, 0, 1000) == high
    assert lh.at_rank(counts, 0, 0) == low and lh.at_rank(counts, 0, 500) == high


def test_cumulative_is_exact_at_powers_of_two():
    values = _spread(5000, seed=3)
    counts = array("I", [0] * (2 * NB))
    for v in values:
        lh.add(counts, NB, v)
    assert lh.total(counts, NB) == len(values)
    for le in lh.POW2_LES + (MAX,):
        want = 0
        for v in values:
            if v <= le:
                want += 1
        assert lh.cumulative(counts, NB, le) == want, le
    assert lh.cumulative(counts, NB, 63) == 0  # no bucket lies wholly at or below 63
    assert lh.cumulative(counts, NB, 100) == lh.cumulative(counts, NB, 90)  # below a non-boundary


def test_counters_wrap_below_2_30():
    counts = array("I", [0] * NB)
    k = lh.bucket_of(500)
    counts[k] = MAX - 1
    lh.add(counts, 0, 500)
    assert counts[k] == MAX
    lh.add(counts, 0, 500)
    assert counts[k] == 0 and lh.total(counts, 0) == 0


@micropython.native  # this frame must not come from the heap either
def _exercise(counts, values):
    n = 0
    for v in values:
        lh.add(counts, NB, v)
        k = lh.bucket_of(v)
        n += k + lh.upper_us(k)
    for le in lh.POW2_LES:
        n += lh.cumulative(counts, NB, le)
    return n


def test_hot_functions_allocate_nothing():
    requires_micropython()
    import micropython as mp  # type: ignore

    values = _spread(300)
    want = _exercise(array("I", [0] * (2 * NB)), values)
    counts = array("I", [0] * (2 * NB))
    before = mp.mem_total()
    got = _exercise(counts, values)
    assert mp.mem_total() - before == 0  # heap frames would show here (heap_lock cannot see them)
    assert got == want
    mp.heap_lock()
    try:
        got = _exercise(counts, values)
    finally:
        mp.heap_unlock()
    assert got > want

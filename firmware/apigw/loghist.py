"""Log-bucketed latency histograms: the bucket layout, and functions over caller-owned counters.

A histogram is NBUCKETS counters at counts[base:base + NBUCKETS] of an array("I") the caller made
(one array holds many: base = index * NBUCKETS). Values are integer microseconds, clamped to
0..2**30 - 1. Buckets include their upper bound, as a Prometheus `le` bucket does:

    bucket 0                 0 .. 64 us (underflow)
    buckets 1 .. 80          20 octaves (2**e, 2**(e+1)] for e = 6 .. 25, four buckets each,
                             split at 2**e * (1, 38/32, 45/32, 54/32, 2): the octave's values
                             v - 1 have a 5-bit mantissa (v - 1) >> (e - 5) of 32..63, and the
                             bucket is where it falls among 38, 45, 54
    bucket 81                2**26 + 1 .. 2**30 - 1 us (overflow: 67.1 s .. 17.9 min)

so bucket k's values are lower_us(k) .. upper_us(k), lower_us(k + 1) == upper_us(k) + 1, and every
power of two from 64 us to 2**26 us (0.000064 s .. 67.108864 s, POW2_LES) is some bucket's upper
bound: cumulative() at those `le` values is exact.

Why not plain quarters (next two bits: splits at 1, 1.25, 1.5, 1.75)? Its widest bucket spans a
ratio of 1.25, and no single value stands for all of [a, 1.25a] with less than 1/9 = 11.1 %
relative error. The splits at 38, 45, 54 (of 32..64) are within 1/32 of the quarter powers of two
(2**0.25 = 38.05/32, 2**0.5 = 45.25/32, 2**0.75 = 53.82/32): the widest ratio is 54/45 = 1.2.

A bucket is reported by mid_us(k) = ceil(2ab / (a + b)) for its ends a = 2**s * A, b = 2**s * B (the
point with equal relative error at both ends). For any value v in buckets 1 .. 80 (65 us .. 67.1 s)
|mid_us(bucket_of(v)) - v| <= v * (B - A) / (B + A) <= v / 11: MAX_REL_ERROR = 9.09 %. (The
geometric midpoint sqrt(ab) would give 9.5 %, interpolating linearly by rank up to 20 %.) So a
percentile() whose rank falls on a sample in that range is within 9.09 % of it. Bucket 0 reports
32 us (off by at most 32 us); bucket 81 reports mid_us(81) = 126 s, with no bound (the caller
clamps to the largest value it saw).

Counters wrap from 2**30 - 1 to 0 (never holding 2**30, a big int on a board); a histogram stays
exact until one bucket has seen 2**30 samples. bucket_of(), add(), upper_us() and cumulative()
allocate nothing (native, every intermediate below 2**30; cumulative's sum can exceed 2**30 only
when the histogram holds more than 2**30 samples); percentile(), at_rank() and total() are reads:
they allocate only for such counts.

This module owns the layout and the arithmetic only: it keeps no state, makes no arrays and
knows nothing of services, requests or clocks.
"""

from .compat import const, micropython

NBUCKETS = const(82)
MAX_US = const(0x3FFFFFFF)  # values clamp to 0 .. MAX_US
MAX_REL_ERROR = 1 / 11  # worst relative error of mid_us() for values in buckets 1 .. 80
POW2_LES = tuple(1 << e for e in range(6, 27))  # 64 us .. 2**26 us: bucket upper bounds

_FIRST = const(64)  # upper bound of bucket 0
_TOP = const(0x4000000)  # 2**26: upper bound of bucket 80
_OVER = const(81)  # overflow bucket
_MASK = const(0x3FFFFFFF)
_SPLITS = (32, 38, 45, 54, 64)  # bucket ends within an octave, as 5-bit mantissas (ends over 32)


@micropython.native
def bucket_of(us):
    """The bucket of a value in microseconds (below 0 counts as 0, above MAX_US as MAX_US).
    No allocation: every intermediate is below 2**27."""
    if us <= _FIRST:
        return 0
    if us > _TOP:
        return _OVER
    w = us - 1  # 64 .. 2**26 - 1: the octave is w's top bit, e in 6 .. 25
    x = w >> 6  # 1 .. 2**20 - 1
    e = 6
    if x >> 16:
        x >>= 16
        e += 16
    if x >> 8:
        x >>= 8
        e += 8
    if x >> 4:
        x >>= 4
        e += 4
    if x >> 2:
        x >>= 2
        e += 2
    if x >> 1:
        e += 1
    m = w >> (e - 5)  # 32 .. 63
    if m < 45:
        q = 0 if m < 38 else 1
    else:
        q = 2 if m < 54 else 3
    return ((e - 6) << 2) + q + 1


@micropython.native
def upper_us(k):
    """The largest value in bucket k (a power of two at k = 0, 4, 8, ... 80). No allocation."""
    if k <= 0:
        return _FIRST
    if k >= _OVER:
        return MAX_US
    j = k - 1
    return _SPLITS[(j & 3) + 1] << ((j >> 2) + 1)


def lower_us(k):
    """The smallest value in bucket k. No allocation."""
    return 0 if k <= 0 else upper_us(k - 1) + 1


def mid_us(k):
    """The value that stands for bucket k in percentile(): ceil(2ab / (a + b)) for the bucket's
    ends a, b taken as 2**s times a mantissa, computed without any intermediate of 2**30 or more.
    Bucket 0: 32."""
    if k <= 0:
        return 32
    if k >= _OVER:
        a, b, s = 1, 16, 26  # (2**26, 2**30]
    else:
        j = k - 1
        a = _SPLITS[j & 3]
        b = _SPLITS[(j & 3) + 1]
        s = (j >> 2) + 1
    q, r = divmod(2 * a * b, a + b)  # 2ab < 2**13
    return (q << s) + ((r << s) + a + b - 1) // (a + b)  # r << s < 2**7 * 2**26


@micropython.native
def add(counts, base, us):
    """counts[base + bucket_of(us)] += 1, wrapping from 2**30 - 1 to 0. No allocation."""
    i = base + bucket_of(us)
    v = counts[i]
    counts[i] = v + 1 if v < _MASK else 0


def total(counts, base):
    """Samples in the histogram at base."""
    n = 0
    for i in range(base, base + NBUCKETS):
        n += counts[i]
    return n


@micropython.native
def cumulative(counts, base, le_us):
    """Samples in the buckets whose every value is <= le_us: exactly the samples <= le_us when
    le_us is a bucket's upper bound (every POW2_LES value is), fewer otherwise. No allocation
    (unless the sum reaches 2**30)."""
    n = 0
    k = 0
    while k < NBUCKETS and upper_us(k) <= le_us:
        n += counts[base + k]
        k += 1
    return n


def at_rank(counts, base, rank):
    """mid_us() of the bucket holding the rank-th smallest sample (1-based; clamped to 1 ..
    total), or 0 for an empty histogram."""
    if rank < 1:
        rank = 1
    seen = 0
    last = -1
    for k in range(NBUCKETS):
        c = counts[base + k]
        if c:
            seen += c
            last = k
            if seen >= rank:
                return mid_us(k)
    return mid_us(last) if last >= 0 else 0


def percentile(counts, base, p_permille):
    """The value (us) at the p_permille / 1000 quantile by nearest rank: the sample of rank
    ceil(p_permille * n / 1000) (at least 1) reported as its bucket's mid_us(); 0 when empty.
    p_permille is an int 0 .. 1000 (500: median, 990: p99)."""
    n = total(counts, base)
    if n == 0:
        return 0
    return at_rank(counts, base, (p_permille * n + 999) // 1000)

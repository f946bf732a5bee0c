"""Micro-benchmarks of the circuit breaker's hot path, run ON the MicroPython unix port (by tools/bench.py).

    MICROPYPATH=firmware:tools:.frozen .venv/bin/micropython tools/bench_res_mpy.py [--quick]

Measures, in one process, one breaker of a BreakerTable(4, WINDOW) (the settings a service gets
by default but for the window: WINDOW outcomes, failure_threshold 5, failure_rate_threshold 50 %,
minimum_calls 10):

- `breaker_admit_record_us`: one admit(bid, now) and one record(bid, outcome, duration_ms, now),
  the pair the gateway makes for each proxied request, on a CLOSED breaker. The outcomes follow
  PATTERN (7 successes, then a connection error: 12.5 % of the window fails and never two in a
  row), so it stays CLOSED while every record() pushes an outcome into the full window ring and
  drops the oldest; now advances by one ms per call;
- `breaker_admit_us`: admit() alone on that CLOSED breaker, and `breaker_admit_open_us`: admit()
  on an OPEN one (a rejection, counted: what an open breaker costs each refused request);
- `breaker_alloc_bytes`: bytes allocated per admit() + record() pair (`micropython.mem_total()`
  before and after ALLOC_PAIRS pairs, the bare loop's delta taken off; expected 0).

The bare loop with the same indexing (`PATTERN[i & 7]`) is taken off each figure, so it includes
the method lookups and calls. Each figure is the median of batch means. tools/bench_mpy.py calls
run() and puts the figures with its own; run alone, it prints them. This file times things and
asserts nothing about speed; it raises if the breaker is not in the state a figure is about (a
figure for the wrong state would mean nothing).
"""

import gc
import sys
import time

import micropython  # type: ignore

from apigw.breaker import SUCCESS, BreakerTable, CircuitBreakerConfig, CircuitState, FailureReason

WINDOW = 20
ALLOC_PAIRS = 1000
DURATION_MS = 3  # each call's duration: below any slow-call limit (none is set)
# One failure in eight, never two in a row: below both trip rules. 8 entries: indexed with i & 7.
PATTERN = (SUCCESS,) * 7 + (FailureReason.CONNECTION_ERROR,)


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def make_table():
    """A table with a CLOSED breaker (id 0, window full of PATTERN) and an OPEN one (id 1, held
    open by reset_timeout of one hour)."""
    bt = BreakerTable(4, WINDOW)
    cfg = CircuitBreakerConfig(window_size=WINDOW, minimum_calls=10, failure_threshold=5, failure_rate_threshold=50)
    closed = bt.create("closed", cfg)
    opened = bt.create(
        "open", CircuitBreakerConfig(failure_threshold=1, failure_rate_threshold=0, reset_timeout=3600000)
    )
    for i in range(2 * WINDOW):  # fill the window: from here on every record() drops the oldest
        bt.admit(closed, i)
        bt.record(closed, PATTERN[i & 7], DURATION_MS, i)
    bt.admit(opened, 0)
    bt.record(opened, FailureReason.CONNECTION_ERROR, DURATION_MS, 0)
    return bt, closed, opened


def check(bt, closed, opened, now):
    """Raise ValueError unless the breakers are in the states the figures are about."""
    if bt.state(closed) != CircuitState.CLOSED or bt.get(closed).window_calls != WINDOW:
        raise ValueError(
            "breaker %r: %s with %d outcomes, not closed with a full window"
            % (bt.name(closed), bt.state_name(closed), bt.get(closed).window_calls)
        )
    if not 0 < bt.failure_rate(closed) < bt.config(closed).failure_rate_threshold:
        raise ValueError("breaker %r: failure rate %d %%" % (bt.name(closed), bt.failure_rate(closed)))
    if not bt.is_open(opened, now):
        raise ValueError("breaker %r is %s, not open" % (bt.name(opened), bt.state_name(opened)))


def _pairs(bt, bid, t0, reps):
    """Mean µs per admit() + record() at now = t0 .. t0 + reps - 1."""
    p = PATTERN
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        bt.admit(bid, i)
        bt.record(bid, p[i & 7], DURATION_MS, i)
    return time.ticks_diff(time.ticks_us(), s) / reps


def _admits(bt, bid, t0, reps):
    """Mean µs per admit() (the pattern indexed too, as in the pair loop)."""
    p = PATTERN
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        bt.admit(bid, i)
        p[i & 7]
    return time.ticks_diff(time.ticks_us(), s) / reps


def _loop(t0, reps):
    """The bare loop with the same indexing."""
    p = PATTERN
    s = time.ticks_us()
    for i in range(t0, t0 + reps):
        p[i & 7]
    return time.ticks_diff(time.ticks_us(), s) / reps


def _alloc(bt, bid, t0, reps):
    """Bytes allocated per admit() + record() (mem_total delta, the bare loop's delta taken off)."""
    p = PATTERN
    gc.collect()
    m0 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        p[i & 7]
    m1 = micropython.mem_total()
    for i in range(t0, t0 + reps):
        bt.admit(bid, i)
        bt.record(bid, p[i & 7], DURATION_MS, i)
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


def run(batches):
    """The breaker figures as a flat dict (keys as in build/bench.json)."""
    bt, closed, opened = make_table()
    reps = 200
    now = 1000  # ticks: advances by reps after each batch (ms; far below 2**30 at the end)
    pairs = []
    admits = []
    admits_open = []
    loop = []
    for _ in range(batches):
        loop.append(_loop(now, reps))
        pairs.append(_pairs(bt, closed, now, reps))
        now += reps
        admits.append(_admits(bt, closed, now, reps))
        admits_open.append(_admits(bt, opened, now, reps))
        now += reps
    check(bt, closed, opened, now)
    alloc = _alloc(bt, closed, now, ALLOC_PAIRS)
    now += ALLOC_PAIRS
    check(bt, closed, opened, now)
    lo = median(loop)
    m = bt.metrics(closed, now)
    return {
        "breaker_admit_record_us": median(pairs) - lo,
        "breaker_admit_us": median(admits) - lo,
        "breaker_admit_open_us": median(admits_open) - lo,
        "breaker_alloc_bytes": alloc,
        "breaker_window": WINDOW,
        "breaker_failure_rate": bt.failure_rate(closed),
        "breaker_calls_recorded": m["calls"],
        "breaker_loop_overhead_us": lo,
        "breaker_batches": batches,
    }


if __name__ == "__main__":
    for k, v in sorted(run(7 if "--quick" in sys.argv else 31).items()):
        print("%-36s %s" % (k, v))

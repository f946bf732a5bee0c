"""Circuit breakers: the Closed / Open / Half-open state machine of each upstream, in fixed tables.

Breakers get small integer ids when created; names are looked up at configuration time only. Each
has its settings, state, the tick it opened at, a count-based sliding window of its last
window_size outcomes (two bits each, failed and slow, in a ring in one bytearray shared by all
breakers) whose failure and slow counts are kept as outcomes enter and leave, its consecutive
failures, its half-open probe counts and its metrics counters.

Semantics (resilience4j's where the spec leaves a choice):
- CLOSED trips to OPEN when consecutive failures reach failure_threshold, or when the window holds
  at least minimum_calls outcomes of which failure_rate_threshold percent failed or
  slow_call_rate_threshold percent were slow (took slow_call_ms or more). 0 turns each rule off.
  With slow_is_failure a slow success is a failure. Which FailureReasons count is count_mask; by
  default all but RATE_LIMITED (a 429 says the upstream is alive). Others go to the metrics only.
- OPEN refuses every call until reset_timeout ms have passed; the next admit() (or attempt_reset())
  then moves it to HALF_OPEN, which admits half_open_calls probes in all. success_threshold probe
  successes close it (with an empty window); a probe failure opens it again. A probe whose outcome
  does not count gives its place back, as release() does for a call that never ended. If every
  probe is out and none has reported for timeout_duration ms (the call timeout), they are taken as
  lost: the next admit() reopens the breaker rather than wait forever.
- Outcomes recorded while OPEN, or in HALF_OPEN with no probe out (calls admitted before it
  opened), go to the metrics only.
- force_open() / force_closed() hold a breaker OPEN / CLOSED (counting, never tripping) until
  reset(), which closes it with an empty window. Counters are never reset: they wrap from
  2**30 - 1 to 0, which monitoring reads as a counter reset.

Ticks are stored modulo 2**30 and compared by ticks_since(), which is ticks_diff on every runtime
(the unix port's ticks period is 2**62, a board's and compat's 2**30). A now less than 2**20 ms
behind a stamp (a task that read the clock before another recorded) counts as no time passed; a
breaker nobody calls for 2**30 - 2**20 ms (12 days) can alias. Every intermediate stays below 2**30
(small ints on a board). __init__ allocates every table; admit(), record(), release(), is_open(),
retry_after_ms(), state() and failure_rate() allocate nothing; create(), configure(), get() and
metrics() allocate.

The states, reasons, settings and classify() are restypes.py's. This module owns the breaker
tables only: it does no I/O, reads no clock (now is passed in) and
parses no configuration (the caller builds each CircuitBreakerConfig).
"""

from .compat import const, micropython
from .restypes import (  # noqa: F401  (SUCCESS, CircuitState, FailureReason, classify: this module's API too)
    SETTINGS,
    SUCCESS,
    CircuitBreakerConfig,
    CircuitState,
    FailureReason,
    ResilienceError,
    check_field,
    classify,
    ticks_since,
)
from .strtab import table

_MASK = const(0x3FFFFFFF)
_CLOSED = const(0)
_OPEN = const(1)
_HALF_OPEN = const(2)
_HELD = const(1)  # _flags: force_open() / force_closed(); no automatic transitions
_R_FAIL = const(1)  # ring bits of one outcome: failed, slow
_R_SLOW = const(2)
# metrics counters, _NC per breaker: calls, successes, failures by reason (4), rejected, slow,
# times opened, state transitions
_C_CALLS = const(0)
_C_OK = const(1)
_C_FAIL = const(2)
_C_REJ = const(6)
_C_SLOW = const(7)
_C_OPENED = const(8)
_C_TRANS = const(9)
_NC = const(10)


@micropython.native
def _bump(counters, i):
    """counters[i] += 1, wrapping at 2**30 without ever holding 2**30 (a big int on a board)."""
    v = counters[i]
    counters[i] = v + 1 if v < _MASK else 0


_S_FTHR = const(0)
_S_PROBES = const(1)
_S_STHR = const(2)
_S_TIMEOUT = const(3)
_S_RESET = const(4)
_S_RATE = const(5)
_S_WIN = const(6)
_S_MINC = const(7)
_S_SLOW_MS = const(8)
_S_SRATE = const(9)
_S_SLOW_FAILS = const(10)
_S_MASK = const(11)


class CircuitBreaker:
    """One breaker as seen from outside the tables (built on request; not on the hot path).
    opened_at is the tick (modulo 2**30) it last opened or admitted a probe at, None if CLOSED."""

    def __init__(self, bid, name, state, config, failure_rate, window_calls, consecutive_failures, opened_at, forced):
        self.id = bid
        self.name = name
        self.state = state
        self.config = config
        self.failure_rate = failure_rate
        self.window_calls = window_calls
        self.consecutive_failures = consecutive_failures
        self.opened_at = opened_at
        self.forced = forced


class BreakerTable:
    """Up to max_breakers breakers with windows of up to max_window outcomes. All memory is
    allocated in __init__."""

    def __init__(self, max_breakers=256, max_window=100):
        check_field("max_breakers", max_breakers, 1, 4096)
        check_field("max_window", max_window, 1, 255)
        self.max_breakers = n = max_breakers
        self.max_window = max_window
        self.count = 0  # ids 0..count-1 are in use
        self._names = []
        self._by_name = {}
        self._configs = []
        # settings, copied from each CircuitBreakerConfig (the hot path reads arrays): _s[_S_*][bid]
        self._s = tuple(table(f[3], n) for f in SETTINGS)
        # state
        self._state = bytearray(n)
        self._flags = bytearray(n)
        self._at = table("i", n)  # OPEN: when it opened; HALF_OPEN: last probe admitted (mod 2**30)
        self._consec = table("H", n)  # consecutive failures, saturating at 65535
        self._hadm = bytearray(n)  # HALF_OPEN: probes admitted, probes reported, successes
        self._hdone = bytearray(n)
        self._hsucc = bytearray(n)
        self._stride = (max_window + 3) >> 2  # ring bytes per breaker: 4 outcomes a byte
        self._ring = bytearray(n * self._stride)
        self._wpos = bytearray(n)  # where the next outcome goes
        self._wn = bytearray(n)  # outcomes in the window, failed ones, slow ones
        self._wfail = bytearray(n)
        self._wslow = bytearray(n)
        self._cnt = table("i", n * _NC)

    # -- configuration (allocates) ---------------------------------------------------------------

    def create(self, name, config=None):
        """A new breaker's id, CLOSED. Raises ResilienceError for a taken name, a bad setting or
        a full table."""
        if not isinstance(name, str) or name in self._by_name:
            raise ResilienceError("circuit breaker %r: name taken or not a str" % (name,))
        if self.count >= self.max_breakers:
            raise ResilienceError("circuit breaker table full (%d breakers)" % self.max_breakers)
        config = (config or CircuitBreakerConfig()).check(self.max_window)
        bid = self.count
        self._names.append(name)
        self._configs.append(None)
        self._by_name[name] = bid
        self.count = bid + 1
        self.configure(bid, config)
        return bid

    def configure(self, bid, config):
        """New settings for a breaker (a reload). Its state stays; a new window_size empties the
        window."""
        self._check(bid)
        config.check(self.max_window)
        self._configs[bid] = config
        w = self._s[_S_WIN][bid]
        for k in range(len(SETTINGS)):
            self._s[k][bid] = int(getattr(config, SETTINGS[k][0]))
        if w != config.window_size:
            self._clear(bid)

    def find(self, name):
        """The id of the breaker called name, or -1."""
        return self._by_name.get(name, -1)

    def name(self, bid):
        self._check(bid)
        return self._names[bid]

    def config(self, bid):
        self._check(bid)
        return self._configs[bid]

    # -- the hot path (no allocation) ------------------------------------------------------------

    @micropython.native
    def admit(self, bid, now):
        """True if a call may go to bid's upstream at now (False counts a rejection). Moves an OPEN
        breaker whose reset_timeout has passed to HALF_OPEN, and counts the probes it lets through.
        Ids not in use (-1: no breaker) admit everything. No allocation."""
        if bid < 0 or bid >= self.count:
            return True
        st = self._state[bid]
        if st == _CLOSED:
            return True
        if st == _OPEN:
            if self._flags[bid] & _HELD or ticks_since(now, self._at[bid]) < self._s[_S_RESET][bid]:
                _bump(self._cnt, bid * _NC + _C_REJ)
                return False
            self._to_half_open(bid)
        a = self._hadm[bid]
        if a < self._s[_S_PROBES][bid]:
            self._hadm[bid] = a + 1
            self._at[bid] = now & _MASK
            return True
        if a > self._hdone[bid] and ticks_since(now, self._at[bid]) >= self._s[_S_TIMEOUT][bid]:
            self._to_open(bid, now)  # lost probes: a timeout, and another reset_timeout to wait
        _bump(self._cnt, bid * _NC + _C_REJ)
        return False

    @micropython.native
    def record(self, bid, outcome, duration_ms, now):
        """The outcome of one admitted call: SUCCESS (< 0) or a FailureReason; duration_ms is how
        long it took. Returns the breaker's state after it (-1 for ids not in use). No allocation."""
        if bid < 0 or bid >= self.count:
            return -1
        cnt = self._cnt
        k = bid * _NC
        _bump(cnt, k + _C_CALLS)
        sm = self._s[_S_SLOW_MS][bid]
        slow = sm > 0 and duration_ms >= sm
        if slow:
            _bump(cnt, k + _C_SLOW)
        st = self._state[bid]
        if outcome < 0:
            _bump(cnt, k + _C_OK)
            failed = slow and self._s[_S_SLOW_FAILS][bid]
        else:
            outcome &= 3
            _bump(cnt, k + _C_FAIL + outcome)
            if not (self._s[_S_MASK][bid] >> outcome) & 1:  # a reason that does not count: metrics only
                if st == _HALF_OPEN and self._hadm[bid] > self._hdone[bid]:
                    self._hadm[bid] -= 1  # the probe gives its place back
                return st
            failed = True
        if st == _CLOSED:
            self._push(bid, failed, slow)
            if failed:
                c = self._consec[bid]
                if c < 0xFFFF:
                    self._consec[bid] = c + 1
            else:
                self._consec[bid] = 0
            if not self._flags[bid] & _HELD and self._tripped(bid):
                self._to_open(bid, now)
                return _OPEN
        elif st == _HALF_OPEN and self._hadm[bid] > self._hdone[bid]:
            self._hdone[bid] += 1
            if failed:
                self._to_open(bid, now)
                return _OPEN
            s = self._hsucc[bid] + 1
            self._hsucc[bid] = s
            if s >= self._s[_S_STHR][bid]:
                self._to_closed(bid)
                return _CLOSED
        return st

    @micropython.native
    def release(self, bid):
        """An admitted call ended with no outcome to record (cancelled before it was sent): a
        HALF_OPEN probe gives its place back; otherwise nothing. No allocation."""
        if 0 <= bid < self.count and self._state[bid] == _HALF_OPEN and self._hadm[bid] > self._hdone[bid]:
            self._hadm[bid] -= 1

    @micropython.native
    def is_open(self, bid, now):
        """True if admit() would refuse a call at now; changes nothing. No allocation."""
        if bid < 0 or bid >= self.count:
            return False
        st = self._state[bid]
        if st == _OPEN:
            return self._flags[bid] & _HELD != 0 or ticks_since(now, self._at[bid]) < self._s[_S_RESET][bid]
        return st == _HALF_OPEN and self._hadm[bid] >= self._s[_S_PROBES][bid]

    @micropython.native
    def retry_after_ms(self, bid, now):
        """ms until bid may admit a call again, for a Retry-After header: what is left of
        reset_timeout while OPEN (all of it if held open), what is left of the probes' timeout
        while every HALF_OPEN probe is out, else 0. No allocation."""
        if bid < 0 or bid >= self.count:
            return 0
        st = self._state[bid]
        if st == _OPEN:
            if self._flags[bid] & _HELD:
                return self._s[_S_RESET][bid]
            left = self._s[_S_RESET][bid] - ticks_since(now, self._at[bid])
            return left if left > 0 else 0
        if st == _HALF_OPEN and self._hadm[bid] >= self._s[_S_PROBES][bid]:
            left = self._s[_S_TIMEOUT][bid] - ticks_since(now, self._at[bid])
            return left if left > 0 else self._s[_S_RESET][bid]  # the next admit() reopens it
        return 0

    def state(self, bid):
        """CircuitState as last changed (an OPEN breaker stays OPEN until admit() or attempt_reset()
        sees its time is up). No allocation."""
        return self._state[bid] if 0 <= bid < self.count else _CLOSED

    def state_name(self, bid):
        return CircuitState.NAMES[self.state(bid)]

    def failure_rate(self, bid):
        """Percent of the outcomes in the window that failed (0 for an empty window). No allocation."""
        n = self._wn[bid] if 0 <= bid < self.count else 0
        return self._wfail[bid] * 100 // n if n else 0

    def slow_call_rate(self, bid):
        n = self._wn[bid] if 0 <= bid < self.count else 0
        return self._wslow[bid] * 100 // n if n else 0

    def call_timeout_ms(self, bid):
        """The breaker's timeout_duration: how long the I/O layer lets one call run."""
        self._check(bid)
        return self._s[_S_TIMEOUT][bid]

    # -- operator actions (no allocation unless an id is bad) -------------------------------------

    def attempt_reset(self, bid, now):
        """Move an OPEN breaker to HALF_OPEN if its reset_timeout has passed and it is not held;
        True if it moved."""
        self._check(bid)
        if (
            self._state[bid] != _OPEN
            or self._flags[bid] & _HELD
            or ticks_since(now, self._at[bid]) < self._s[_S_RESET][bid]
        ):
            return False
        self._to_half_open(bid)
        return True

    def force_open(self, bid, now):
        """Hold bid OPEN (every call refused) until reset()."""
        self._check(bid)
        if self._state[bid] != _OPEN:
            self._to_open(bid, now)
        self._flags[bid] = _HELD

    def force_closed(self, bid):
        """Hold bid CLOSED (every call admitted; outcomes still counted, never trips) until reset()."""
        self._check(bid)
        if self._state[bid] != _CLOSED:
            self._to_closed(bid)
        self._flags[bid] = _HELD

    def reset(self, bid):
        """Back to CLOSED, not held, with an empty window. Metrics counters are kept."""
        self._check(bid)
        self._flags[bid] = 0
        if self._state[bid] != _CLOSED:
            self._to_closed(bid)
        self._clear(bid)

    # -- display (allocates) -----------------------------------------------------------------------

    def get(self, bid):
        """A CircuitBreaker snapshot of bid."""
        self._check(bid)
        st = self._state[bid]
        at = self._at[bid] if st != _CLOSED else None
        args = (self.failure_rate(bid), self._wn[bid], self._consec[bid], at, bool(self._flags[bid]))
        return CircuitBreaker(bid, self._names[bid], st, self._configs[bid], *args)

    def metrics(self, bid, now):
        """A dict of bid's state and counters, for the shell and monitoring; the failures of each
        reason are under its FailureReason.NAMES entry."""
        self._check(bid)
        c = self._cnt
        k = bid * _NC
        fails = [c[k + _C_FAIL + r] for r in range(4)]
        out = {
            "name": self._names[bid],
            "state": CircuitState.NAMES[self._state[bid]],
            "forced": bool(self._flags[bid]),
            "failure_rate": self.failure_rate(bid),
            "slow_call_rate": self.slow_call_rate(bid),
            "window_calls": self._wn[bid],
            "consecutive_failures": self._consec[bid],
            "retry_after_ms": self.retry_after_ms(bid, now),
            "half_open_probes": self._hadm[bid] if self._state[bid] == _HALF_OPEN else 0,
            "calls": c[k + _C_CALLS],
            "successes": c[k + _C_OK],
            "failures": sum(fails),
            "rejected": c[k + _C_REJ],
            "slow_calls": c[k + _C_SLOW],
            "times_opened": c[k + _C_OPENED],
            "transitions": c[k + _C_TRANS],
        }
        for r in range(4):
            out[FailureReason.NAMES[r]] = fails[r]
        return out

    # -- internals ---------------------------------------------------------------------------------

    def _check(self, bid):
        if not isinstance(bid, int) or not 0 <= bid < self.count:
            raise ResilienceError("circuit breaker: no breaker %r" % (bid,))

    @micropython.native
    def _tripped(self, bid):
        """True if CLOSED bid's consecutive failures or window rates call for OPEN."""
        ft = self._s[_S_FTHR][bid]
        if ft and self._consec[bid] >= ft:
            return True
        n = self._wn[bid]
        if n < self._s[_S_MINC][bid]:
            return False
        r = self._s[_S_RATE][bid]
        if r and self._wfail[bid] * 100 >= r * n:  # <= 255 * 100
            return True
        r = self._s[_S_SRATE][bid]
        return r > 0 and self._s[_S_SLOW_MS][bid] > 0 and self._wslow[bid] * 100 >= r * n

    @micropython.native
    def _push(self, bid, failed, slow):
        """Put one outcome in bid's window ring, dropping the oldest when the window is full."""
        w = self._s[_S_WIN][bid]
        p = self._wpos[bid]
        ring = self._ring
        o = bid * self._stride + (p >> 2)  # < 4096 * 64
        sh = (p & 3) << 1
        byte = ring[o]
        n = self._wn[bid]
        if n == w:
            old = byte >> sh
            if old & _R_FAIL:
                self._wfail[bid] -= 1
            if old & _R_SLOW:
                self._wslow[bid] -= 1
        else:
            self._wn[bid] = n + 1
        bits = 0
        if failed:
            bits = _R_FAIL
            self._wfail[bid] += 1
        if slow:
            bits |= _R_SLOW
            self._wslow[bid] += 1
        ring[o] = (byte & (0xFF ^ (3 << sh))) | (bits << sh)
        p += 1
        self._wpos[bid] = 0 if p >= w else p

    @micropython.native
    def _clear(self, bid):
        """An empty window (the ring's old bits are never read: _wn says how many are live)."""
        self._wpos[bid] = self._wn[bid] = self._wfail[bid] = self._wslow[bid] = 0
        self._consec[bid] = 0

    @micropython.native
    def _to_open(self, bid, now):
        self._state[bid] = _OPEN
        self._at[bid] = now & _MASK
        self._hadm[bid] = self._hdone[bid] = self._hsucc[bid] = 0
        _bump(self._cnt, bid * _NC + _C_OPENED)
        _bump(self._cnt, bid * _NC + _C_TRANS)

    @micropython.native
    def _to_half_open(self, bid):
        self._state[bid] = _HALF_OPEN
        self._hadm[bid] = self._hdone[bid] = self._hsucc[bid] = 0
        _bump(self._cnt, bid * _NC + _C_TRANS)

    @micropython.native
    def _to_closed(self, bid):
        self._state[bid] = _CLOSED
        self._clear(bid)
        _bump(self._cnt, bid * _NC + _C_TRANS)

"""What the resilience modules share: the states, the failure reasons, the error, the outcome of an
HTTP status, tick arithmetic, and a breaker's settings (CircuitBreakerConfig).

This module owns those definitions only: no tables, no I/O, no clock reads.
"""

from .compat import const, micropython

_MASK = const(0x3FFFFFFF)
_LATE = const(0x3FEFFFFF)  # an elapsed time above this is a now that lags the stamp (by < 2**20 ms)
_MAX_MS = const(0x1FFFFFFF)  # the longest duration a setting may have (2**29 - 1 ms, 6.2 days)
_RESPONSE_ERROR = const(2)  # FailureReason's, for classify()
_RATE_LIMITED = const(3)

SUCCESS = -1  # record()'s outcome for a call that succeeded (any negative value is one)


class CircuitState:
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2
    NAMES = ("closed", "open", "half_open")


class FailureReason:
    TIMEOUT = 0
    CONNECTION_ERROR = 1
    RESPONSE_ERROR = 2  # a 5xx (or no valid status line)
    RATE_LIMITED = 3  # a 429
    NAMES = ("timeout", "connection_error", "response_error", "rate_limited")


DEFAULT_COUNT_MASK = 7  # TIMEOUT, CONNECTION_ERROR and RESPONSE_ERROR count; RATE_LIMITED does not


class ResilienceError(ValueError):
    """A table is full, a name is taken, an id is not in use, or a setting is out of range (the
    message names it). Shared by bulkhead.py and backoff.py."""


@micropython.native
def classify(status):
    """The outcome of an upstream answer with this HTTP status: SUCCESS, RESPONSE_ERROR (5xx, or a
    number that is no status at all) or RATE_LIMITED (429). Other 4xx are the client's fault, never
    the upstream's: SUCCESS. No allocation."""
    if status == 429:
        return _RATE_LIMITED
    if 100 <= status < 500:
        return SUCCESS
    return _RESPONSE_ERROR


@micropython.native
def ticks_since(now, stamp):
    """ms from stamp to now, both ticks (raw or modulo 2**30): 0 when now lags stamp by less than
    2**20 ms. No allocation."""
    d = ((now & _MASK) - (stamp & _MASK)) & _MASK
    return 0 if d > _LATE else d


# The settings of a breaker: (name, lowest, highest, array type code). A highest of None is another
# setting's value (checked after it) or, for window_size, the table's max_window. The order is that
# of the arrays in breaker.BreakerTable._s: its _S_* constants index both.
SETTINGS = (
    ("failure_threshold", 0, 0xFFFF, "H"),  # consecutive failures that trip it; 0 = off
    ("half_open_calls", 1, 255, "B"),  # probes admitted per HALF_OPEN period
    ("success_threshold", 1, "half_open_calls", "B"),  # probe successes that close it
    ("timeout_duration", 1, _MAX_MS, "i"),  # call timeout; also when probes count as lost
    ("reset_timeout", 1, _MAX_MS, "i"),  # time OPEN before a probe is let through
    ("failure_rate_threshold", 0, 100, "B"),  # percent of the window; 0 = off
    ("window_size", 1, None, "B"),  # outcomes in the sliding window
    ("minimum_calls", 1, "window_size", "B"),  # outcomes in the window before a rate may trip it
    ("slow_call_ms", 0, _MAX_MS, "i"),  # a call this long or longer is slow; 0 = off
    ("slow_call_rate_threshold", 0, 100, "B"),  # percent of the window; 0 = off
    ("slow_is_failure", 0, 1, "B"),  # a slow success counts as a failure
    ("count_mask", 0, 15, "B"),  # bit (1 << reason) set: that FailureReason counts
)


def check_field(name, v, lo, hi):
    if not isinstance(v, int) or not lo <= v <= hi:
        raise ResilienceError("circuit breaker: %s must be %d..%d, not %r" % (name, lo, hi, v))


class CircuitBreakerConfig:
    """Settings of one breaker (times in ms), as keyword arguments; the defaults are below.
    check() raises ResilienceError naming a bad field."""

    failure_threshold = 5
    half_open_calls = 3
    success_threshold = 2
    timeout_duration = 10000
    reset_timeout = 30000
    failure_rate_threshold = 50
    window_size = 20
    minimum_calls = 10
    slow_call_ms = 0
    slow_call_rate_threshold = 100
    slow_is_failure = False
    count_mask = DEFAULT_COUNT_MASK

    def __init__(self, **settings):
        for name in settings:
            if not any(f[0] == name for f in SETTINGS):
                raise ResilienceError("circuit breaker: no setting %r" % name)
            setattr(self, name, settings[name])

    def check(self, max_window=255):
        for name, lo, hi, _ in SETTINGS:
            if hi is None:
                hi = max_window
            elif isinstance(hi, str):
                hi = getattr(self, hi)
            v = getattr(self, name)
            check_field(name, int(v) if v is True or v is False else v, lo, hi)  # a bool is no int here
        return self

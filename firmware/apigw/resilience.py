"""ResilienceManager: circuit breakers, bulkheads and retries behind the spec's method names.

The manager holds one BreakerTable (breaker.py), one BulkheadTable (bulkhead.py), one RetryBudget
and the named RetryPolicy objects (backoff.py), and gives them the spec's names
(create_circuit_breaker, call_with_breaker, record_success, ... get_metrics). Names map to ids when
things are created; every other call takes the id.

Two kinds of caller use it:
- The asynchronous request path uses the tables directly (manager.breakers.admit() / record(),
  manager.bulkheads.acquire_permit() / release_permit(), manager.budget, a RetryPolicy's
  next_delay()), all allocation-free, and enforces timeouts with enforce_timeout().
- Tools, tests and synchronous code use call_with_breaker() and retry_with_backoff(), which call a
  function and map its return value or exception to an outcome (failure_reason()). They allocate
  (exceptions, closures) and are not for the request path.

Mapping for call_with_breaker(): a call the breaker refuses raises CircuitOpenError (fn is not
called). fn's exception is recorded with failure_reason(exc) and re-raised: an exception's own
`reason` attribute (a FailureReason) if it has one; TIMEOUT for a TimeoutError (asyncio's too) or
an OSError with errno ETIMEDOUT; CONNECTION_ERROR for any other OSError; RESPONSE_ERROR for
anything else. A return value that is an int is taken as an HTTP status (breaker.classify()); any
other value is a success. A call that returns after the breaker's timeout_duration counts as a
TIMEOUT (its value is still returned: a synchronous call cannot be cut short).

This module wires the parts together only: it does no I/O, reads no clock itself (now_fn and
sleep_ms_fn are passed in), keeps no state of its own beyond the tables and parses no configuration.
"""

from .backoff import RetryBudget, RetryPolicy, may_retry
from .breaker import (
    SUCCESS,
    BreakerTable,
    CircuitBreakerConfig,
    CircuitState,
    FailureReason,
    ResilienceError,
    classify,
    ticks_since,
)
from .bulkhead import ACQUIRED, MUST_WAIT, REJECTED, BulkheadTable
from .compat import const, micropython

_ETIMEDOUT = const(110)

# What callers import from here: the manager and the names its methods take and return.
__all__ = (
    "ACQUIRED",
    "MUST_WAIT",
    "REJECTED",
    "SUCCESS",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "CircuitState",
    "FailureReason",
    "ResilienceError",
    "ResilienceManager",
    "RetryPolicy",
    "enforce_timeout",
    "failure_reason",
)


class CircuitOpenError(Exception):
    """call_with_breaker() refused a call: the breaker is open (or its probes are all out).
    retry_after_ms says when to try again."""

    def __init__(self, name, retry_after_ms):
        super().__init__("circuit breaker %s is open: retry in %d ms" % (name, retry_after_ms))
        self.name = name
        self.retry_after_ms = retry_after_ms


@micropython.native
def enforce_timeout(start, timeout_ms, now):
    """ms left of a timeout_ms budget that began at tick start; 0 when it has run out (expired).
    No allocation."""
    left = timeout_ms - ticks_since(now, start)
    return left if left > 0 else 0


def failure_reason(exc):
    """The FailureReason an exception stands for (see the module docstring)."""
    r = getattr(exc, "reason", None)
    if isinstance(r, int) and 0 <= r < len(FailureReason.NAMES):
        return r
    if type(exc).__name__ == "TimeoutError":
        return FailureReason.TIMEOUT
    if isinstance(exc, OSError):
        code = exc.errno if exc.errno is not None else (exc.args[0] if exc.args else None)  # OSError(110)
        return FailureReason.TIMEOUT if code == _ETIMEDOUT else FailureReason.CONNECTION_ERROR
    return FailureReason.RESPONSE_ERROR


class ResilienceManager:
    """Breakers, bulkheads, a retry budget and named retry policies. The tables are allocated
    here; budget, if given, is a RetryBudget to use instead of a default one of max_services."""

    def __init__(self, max_breakers=256, max_bulkheads=128, max_window=100, max_services=64, budget=None):
        self.breakers = BreakerTable(max_breakers, max_window)
        self.bulkheads = BulkheadTable(max_bulkheads)
        self.budget = budget if budget is not None else RetryBudget(max_services)
        self.policies = {}

    # -- circuit breakers --------------------------------------------------------------------------

    def create_circuit_breaker(self, name, config=None):
        """A new breaker's id (CircuitBreakerConfig() defaults when config is None)."""
        return self.breakers.create(name, config)

    def find_breaker(self, name):
        """The id of the breaker called name, or -1."""
        return self.breakers.find(name)

    def call_with_breaker(self, bid, fn, now_fn):
        """fn() under breaker bid: CircuitOpenError if refused, else fn's value (its exception is
        recorded and re-raised; a BaseException such as a cancellation only releases the call).
        now_fn() gives ticks in ms."""
        self._breaker(bid)
        br = self.breakers
        start = now_fn()
        if not br.admit(bid, start):
            raise CircuitOpenError(br.name(bid), br.retry_after_ms(bid, start))
        try:
            result = fn()
        except Exception as e:
            end = now_fn()
            br.record(bid, failure_reason(e), ticks_since(end, start), end)
            raise
        except BaseException:  # cancelled (or interrupted): no outcome, but a probe gives its place back
            br.release(bid)
            raise
        end = now_fn()
        took = ticks_since(end, start)
        outcome = classify(result) if type(result) is int else SUCCESS
        if outcome < 0 and took >= br.call_timeout_ms(bid):
            outcome = FailureReason.TIMEOUT
        br.record(bid, outcome, took, end)
        return result

    def record_success(self, bid, duration_ms, now):
        """A call through bid succeeded; the breaker's state after it."""
        self._breaker(bid)
        return self.breakers.record(bid, SUCCESS, duration_ms, now)

    def record_failure(self, bid, reason, duration_ms, now):
        """A call through bid failed for reason (a FailureReason); the breaker's state after it."""
        self._breaker(bid)
        if not isinstance(reason, int) or not 0 <= reason < len(FailureReason.NAMES):
            raise ResilienceError("circuit breaker: reason must be a FailureReason, not %r" % (reason,))
        return self.breakers.record(bid, reason, duration_ms, now)

    def is_circuit_open(self, bid, now):
        """True if bid would refuse a call at now (OPEN, or every HALF_OPEN probe out)."""
        self._breaker(bid)
        return self.breakers.is_open(bid, now)

    def attempt_reset(self, bid, now):
        """OPEN to HALF_OPEN if reset_timeout has passed; True if it moved."""
        return self.breakers.attempt_reset(bid, now)

    def get_state(self, bid):
        self._breaker(bid)
        return self.breakers.state(bid)

    def get_failure_rate(self, bid):
        """Percent of failures among the outcomes in bid's window (0 when empty)."""
        self._breaker(bid)
        return self.breakers.failure_rate(bid)

    def get_metrics(self, bid, now=None):
        """A dict of bid's state and counters (allocates); with now, also retry_after_ms."""
        m = self.breakers.metrics(bid, 0 if now is None else now)
        if now is None:
            del m["retry_after_ms"]
        return m

    def get_breaker(self, bid):
        """A CircuitBreaker snapshot of bid."""
        return self.breakers.get(bid)

    def force_open(self, bid, now):
        self.breakers.force_open(bid, now)

    def force_closed(self, bid):
        self.breakers.force_closed(bid)

    def reset(self, bid):
        self.breakers.reset(bid)

    # -- bulkheads ---------------------------------------------------------------------------------

    def create_bulkhead(self, name, max_concurrent, max_waiting=0, queue_timeout_ms=0):
        """A new bulkhead's id."""
        return self.bulkheads.create(name, max_concurrent, max_waiting, queue_timeout_ms)

    def find_bulkhead(self, name):
        return self.bulkheads.find(name)

    def acquire_permit(self, b):
        """ACQUIRED, MUST_WAIT (queued: see bulkhead.py) or REJECTED."""
        self._bulkhead(b)
        return self.bulkheads.acquire_permit(b)

    def release_permit(self, b):
        """True if the permit went to a waiter the caller must wake."""
        self._bulkhead(b)
        return self.bulkheads.release_permit(b)

    def get_bulkhead(self, b):
        return self.bulkheads.get(b)

    def get_bulkhead_metrics(self, b):
        return self.bulkheads.metrics(b)

    # -- retries and timeouts ----------------------------------------------------------------------

    def create_retry_policy(self, name, **settings):
        """A new RetryPolicy kept under name (settings as RetryPolicy's arguments)."""
        if not isinstance(name, str) or name in self.policies:
            raise ResilienceError("retry policy %r: name taken or not a str" % (name,))
        policy = RetryPolicy(**settings)
        self.policies[name] = policy
        return policy

    def find_retry_policy(self, name):
        """The RetryPolicy called name, or None."""
        return self.policies.get(name)

    def retry_with_backoff(self, fn, policy, sleep_ms_fn, now_fn, idempotent=True, sid=-1):
        """fn() until it returns, retried under policy after each exception: its value, or the last
        exception once no retry is left. An exception is retried only if may_retry(idempotent,
        exc.nothing_sent) (attribute missing: False) and never if it is a CircuitOpenError; its
        retry_after_s attribute, if any, is honoured. With sid >= 0 the service's retry budget is
        kept (note_request() once, budget_allows() and note_retry() per retry). policy is a
        RetryPolicy or the name of one made by create_retry_policy()."""
        if isinstance(policy, str):
            policy = self.policies[policy]
        budget = self.budget
        start = now_fn()
        budget.note_request(sid, start)
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except CircuitOpenError:
                raise
            except Exception as e:
                now = now_fn()
                if not may_retry(idempotent, getattr(e, "nothing_sent", False)):
                    raise
                ra = getattr(e, "retry_after_s", -1)
                d = policy.next_delay(attempts, ticks_since(now, start), ra if isinstance(ra, int) else -1)
                if d < 0 or not budget.budget_allows(sid, now):
                    raise
                budget.note_retry(sid, now)
                sleep_ms_fn(d)

    def enforce_timeout(self, start, timeout_ms, now):
        """ms left of timeout_ms since tick start; 0: expired."""
        return enforce_timeout(start, timeout_ms, now)

    def call_timeout_ms(self, bid):
        """The timeout the I/O layer should give one call through bid (its timeout_duration)."""
        return self.breakers.call_timeout_ms(bid)

    # -- internals ---------------------------------------------------------------------------------

    def _breaker(self, bid):
        if not isinstance(bid, int) or not 0 <= bid < self.breakers.count:
            raise ResilienceError("circuit breaker: no breaker %r" % (bid,))

    def _bulkhead(self, b):
        if not isinstance(b, int) or not 0 <= b < self.bulkheads.count:
            raise ResilienceError("bulkhead: no bulkhead %r" % (b,))

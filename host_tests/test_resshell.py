"""Portable tests for the `resilience` shell command (resshell.py) on a Guard built from a config."""

from apigw.breaker import SUCCESS, FailureReason
from apigw.compat import ticks_ms
from apigw.config import load_config_text
from apigw.shell import Shell

CONFIG = """{"limits": {"services": 4, "routes": 4, "strtab_bytes": 512},
 "services": [
  {"name": "orders", "host": "10.0.0.1", "port": 80, "resilience": {
    "breaker": {"failure_threshold": 3, "window_size": 10, "minimum_calls": 5, "reset_timeout": 20000},
    "bulkhead": {"max_concurrent": 2, "max_waiting": 1, "queue_timeout_ms": 500},
    "retry": {"attempts": 3, "base_ms": 50, "on_status": [502, 503]}}},
  {"name": "stock", "host": "10.0.0.2", "port": 81, "resilience": {
    "breaker": {"slow_call_ms": 800, "failure_on": ["timeout", "response_error"]},
    "bulkhead": {"max_concurrent": 4}, "timeouts": {"total_ms": 3000}}},
  {"name": "static", "host": "10.0.0.3", "port": 82}],
 "routes": [
  {"path": "/orders", "service": "orders"},
  {"path": "/stock", "service": "stock", "resilience": {"retry": {"attempts": 2, "on_status": [503]}}},
  {"path": "/orders/pay", "service": "orders", "resilience": {"retry": false}},
  {"path": "/s", "service": "static"}]}"""

SUBS = ("breakers", "breaker NAME|ID", "bulkheads", "retries", "reset NAME|ID", "trip NAME|ID", "close NAME|ID")

# (command line, the error it gives)
BAD = (
    ("resilience bogus", "error: unknown sub-command 'resilience bogus' (try 'help resilience')"),
    ("resilience breaker", "error: usage: resilience breaker NAME|ID"),
    ("resilience breaker orders stock", "error: usage: resilience breaker NAME|ID"),
    ("resilience breakers 0", "error: usage: resilience breakers"),
    ("resilience bulkheads x", "error: usage: resilience bulkheads"),
    ("resilience retries x", "error: usage: resilience retries"),
    ("resilience stats x", "error: usage: resilience stats"),
    ("resilience trip", "error: usage: resilience trip NAME|ID"),
    ("resilience close", "error: usage: resilience close NAME|ID"),
    ("resilience reset a b", "error: usage: resilience reset NAME|ID"),
    ("resilience breaker static", "error: no breaker 'static' (see 'resilience breakers')"),
    ("resilience breaker nope", "error: no breaker 'nope' (see 'resilience breakers')"),
    ("resilience breaker 2", "error: no breaker '2' (see 'resilience breakers')"),
    ("resilience trip -1", "error: no breaker '-1' (see 'resilience breakers')"),
    ("resilience close 99", "error: no breaker '99' (see 'resilience breakers')"),
    ("resilience reset Orders", "error: no breaker 'Orders' (see 'resilience breakers')"),
)


class _Server:
    """What Shell reads from a running server."""

    gate = None
    mediator = None
    balancer = None

    def __init__(self, guard):
        self.guard = guard


def _shell():
    g = load_config_text(CONFIG).guard
    return Shell(g.gw, _Server(g)), g


def _row(out, first):
    """The table row whose first column is first, split into cells."""
    for line in out.split("\n"):
        cells = line.split()
        if cells and cells[0] == str(first):
            return cells
    raise AssertionError("no row %r in:\n%s" % (first, out))


def _fail(g, bid, n):
    now = ticks_ms()
    for _ in range(n):
        g.breakers.record(bid, FailureReason.RESPONSE_ERROR, 5, now)


def test_registered_only_with_a_guard():
    sh, g = _shell()
    out = sh.execute("help resilience")
    assert out.startswith("resilience - ")
    for sub in SUBS:
        assert "resilience " + sub + "  -- " in out, sub
    assert sh.execute("resilience") == out
    assert "resilience" in Shell(g.gw, guard=g).commands
    assert "resilience" not in Shell(g.gw, _Server(None)).commands
    assert "resilience" not in Shell(g.gw).commands
    plain = load_config_text('{"services": [{"name": "a", "host": "h", "port": 1}]}')
    assert getattr(plain, "guard", None) is None
    assert "resilience" not in Shell(plain.gateway, guard=getattr(plain, "guard", None)).commands
    assert sh.execute("resilience breakers").startswith("id  name")


def test_breakers_table():
    sh, g = _shell()
    out = sh.execute("resilience breakers")
    assert len(out.split("\n")) == 3  # header and the two guarded services
    assert _row(out, "id")[:3] == ["id", "name", "state"]
    assert _row(out, 0) == ["0", "orders", "closed", "0", "0", "0/10", "0", "-", "0", "0"]
    assert _row(out, 1) == ["1", "stock", "closed", "0", "0", "0/20", "0", "-", "0", "0"]
    now = ticks_ms()
    g.breakers.record(1, SUCCESS, 900, now)  # slow
    g.breakers.record(1, FailureReason.CONNECTION_ERROR, 5, now)  # not counted by its failure_on
    g.breakers.record(1, FailureReason.TIMEOUT, 5, now)
    assert _row(sh.execute("resilience breakers"), 1) == [
        "1",
        "stock",
        "closed",
        "50",
        "50",
        "2/20",
        "1",
        "-",
        "0",
        "0",
    ]
    assert "static" not in sh.execute("resilience breakers")


def test_a_breaker_driven_open():
    sh, g = _shell()
    _fail(g, 0, 2)
    assert _row(sh.execute("resilience breakers"), 0)[2:7] == ["closed", "100", "0", "2/10", "2"]
    _fail(g, 0, 1)  # failure_threshold 3
    assert g.breakers.state(0) == 1
    assert not g.breakers.admit(0, ticks_ms())
    r = _row(sh.execute("resilience breakers"), 0)
    assert r[:7] == ["0", "orders", "open", "100", "0", "3/10", "3"]
    assert r[7].endswith("s") and 19.0 <= float(r[7][:-1]) <= 20.0
    assert r[8:] == ["1", "1"]  # opened once, one call rejected
    assert "open: 1" in sh.execute("resilience stats").split("\n")
    assert _row(sh.execute("resilience breakers"), 1)[2] == "closed"


def test_breaker_detail_by_name_and_id():
    sh, g = _shell()
    _fail(g, 0, 3)
    out = sh.execute("resilience breaker orders")
    lines = out.split("\n")
    assert lines[0].startswith("breaker 0 orders: open, retry in ")
    assert lines[0].endswith("; window 3/10, failure rate 100%")
    assert lines[1] == "services: orders"
    for line in ("state: open", "forced: no", "failure_rate: 100", "window_calls: 3", "consecutive_failures: 3"):
        assert "  " + line in lines, line
    for line in ("calls: 3", "response_error: 3", "timeout: 0", "rejected: 0", "times_opened: 1"):
        assert "  " + line in lines, line
    m = g.breakers.metrics(0, ticks_ms())
    assert lines.index("metrics:") == 2 and lines.index("settings:") == 3 + len(m)
    for line in ("failure_threshold: 3", "window_size: 10", "minimum_calls: 5", "reset_timeout: 20000"):
        assert "  " + line in lines, line
    assert "  slow_call_ms: 0 (off)" in lines and "  slow_is_failure: no" in lines
    assert "  failure_on: timeout,connection_error,response_error" in lines
    by_id = sh.execute("resilience breaker 0").split("\n")
    assert [x for x in by_id if "retry" not in x] == [x for x in lines if "retry" not in x]  # time passes
    one = sh.execute("resilience breaker 1").split("\n")
    assert one[0] == "breaker 1 stock: closed; window 0/20, failure rate 0%"
    assert "  failure_on: timeout,response_error" in one and "  slow_call_ms: 800" in one
    assert "  timeout_duration: 3000" in one  # the service's total timeout


def test_trip_close_and_reset():
    sh, g = _shell()
    br = g.breakers
    out = sh.execute("resilience trip stock")
    assert out == "breaker 1 stock: open(held), every call refused until reset; window 0/20, failure rate 0%"
    assert br.state(1) == 1 and not br.admit(1, ticks_ms() + 600000)  # held past reset_timeout
    assert _row(sh.execute("resilience breakers"), 1)[2:8] == ["open(held)", "0", "0", "0/20", "0", "held"]
    assert sh.execute("resilience reset 1") == "breaker 1 stock: closed; window 0/20, failure rate 0%"
    assert br.state(1) == 0 and br.admit(1, ticks_ms())

    _fail(g, 0, 3)
    assert br.state(0) == 1
    out = sh.execute("resilience close orders")
    assert out == "breaker 0 orders: closed(held), every call admitted until reset; window 0/10, failure rate 0%"
    _fail(g, 0, 5)  # counted, never trips
    assert br.state(0) == 0 and br.admit(0, ticks_ms())
    assert _row(sh.execute("resilience breakers"), 0)[2:7] == ["closed(held)", "100", "0", "5/10", "5"]
    assert sh.execute("resilience trip 0").startswith("breaker 0 orders: open(held)")
    assert br.state(0) == 1 and not br.admit(0, ticks_ms())
    assert sh.execute("resilience reset orders") == "breaker 0 orders: closed; window 0/10, failure rate 0%"
    assert br.state(0) == 0 and not br.metrics(0, ticks_ms())["forced"]
    _fail(g, 0, 3)  # not held any more: trips again
    assert _row(sh.execute("resilience breakers"), 0)[2] == "open"
    assert _row(sh.execute("resilience breakers"), 0)[8] == "3"  # times opened: failures, trip, failures again


def test_bulkheads_table():
    sh, g = _shell()
    bh = g.bulkheads
    out = sh.execute("resilience bulkheads")
    assert len(out.split("\n")) == 3
    assert _row(out, 0) == ["0", "orders", "2", "0", "0/1", "0.5s", "0", "0", "0", "0", "0"]
    assert _row(out, 1) == ["1", "stock", "4", "0", "0/0", "-", "0", "0", "0", "0", "0"]
    for _ in range(4):  # two permits, one waiter, one refused
        bh.acquire_permit(0)
    assert _row(sh.execute("resilience bulkheads"), 0) == [
        "0",
        "orders",
        "2",
        "2",
        "1/1",
        "0.5s",
        "2",
        "1",
        "1",
        "0",
        "2",
    ]
    bh.leave_queue(0, True)
    bh.release_permit(0)
    assert _row(sh.execute("resilience bulkheads"), 0)[3:] == ["1", "0/1", "0.5s", "2", "1", "1", "1", "2"]


def test_retries():
    sh, g = _shell()
    out = sh.execute("resilience retries")
    lines = out.split("\n")
    assert _row(out, "id")[:3] == ["id", "service", "policy"]
    assert _row(out, 0) == ["0", "orders", "0", "3", "50", "2", "2000", "10000", "502,503", "0", "0", "30"]
    assert _row(out, 1) == ["1", "stock"] + ["-"] * 7 + ["0", "0", "30"]  # its route's policy only
    assert "static" not in out
    assert (
        "route 1 /stock (stock): policy 1: 2 attempts, base 100 ms x2, cap 2000 ms, max total 10000 ms, on 503" in lines
    )
    assert "route 2 /orders/pay (orders): no retries" in lines
    assert "budget: 20% of the requests + 3 retries/s in a 10.0s window (per service)" in lines
    assert lines[-2:] == ["retries: 0", "budget_exhausted: 0"]
    now = ticks_ms()
    for _ in range(10):
        g.budget.note_request(0, now)
    g.budget.note_retry(0, now)
    g.retries = 1
    g.budget_exhausted = 2
    out = sh.execute("resilience retries")
    assert _row(out, 0)[-3:] == ["10", "1", "32"]
    assert out.split("\n")[-2:] == ["retries: 1", "budget_exhausted: 2"]


def test_stats():
    sh, g = _shell()
    out = sh.execute("resilience stats").split("\n")
    st = g.stats()
    assert len(out) == len(st)
    for k in st:
        assert k + ": " + str(st[k]) in out, k
    assert "breakers: 2" in out and "open: 0" in out
    g.refused_open = 4
    assert "refused_open: 4" in sh.execute("resilience stats").split("\n")


def test_bad_input_gets_a_usage_error():
    sh, g = _shell()
    for line, err in BAD:
        assert sh.execute(line) == err, line
    assert g.breakers.state(0) == 0 and g.breakers.state(1) == 0


def test_a_guard_with_retries_only():
    text = """{"limits": {"services": 2, "routes": 2, "strtab_bytes": 256},
     "services": [{"name": "a", "host": "h", "port": 1, "resilience": {"retry": {}}}]}"""
    g = load_config_text(text).guard
    sh = Shell(g.gw, guard=g)
    assert sh.execute("resilience breakers") == "no circuit breakers"
    assert sh.execute("resilience bulkheads") == "no bulkheads"
    assert _row(sh.execute("resilience retries"), 0)[:9] == [
        "0",
        "a",
        "0",
        "3",
        "100",
        "2",
        "2000",
        "10000",
        "502,503,504",
    ]
    assert sh.execute("resilience trip a") == "error: no breaker 'a' (see 'resilience breakers')"
    assert sh.execute("resilience reset 0") == "error: no breaker '0' (see 'resilience breakers')"

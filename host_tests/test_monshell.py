"""Portable tests for the `apimon` shell command (monshell.py) on the monitor of a config.

Responses are recorded straight into the config's monitor.ApiMonitor (cfg.monitoring.mon), as
monio.Monitoring would record them. `apimon prometheus` runs against a stand-in promexport module
put in sys.modules (the real exporter reads a whole server), and against one without
exposition() (a build without the exporter).
"""

import sys

from apigw import loghist
from apigw.compat import ticks_ms
from apigw.config import load_config_text
from apigw.monitor import ErrorType
from apigw.monshell import ms
from apigw.shell import Shell
from check import skip

CONFIG = """{"limits": {"services": 4, "routes": 4, "strtab_bytes": 512},
 "services": [{"name": "orders", "host": "10.0.0.1", "port": 80}, {"name": "stock", "host": "10.0.0.2", "port": 81}],
 "routes": [{"path": "/orders", "service": "orders"}, {"path": "/stock", "service": "stock"}],
 "monitoring": {"ring": 16, "window_s": 10%s}}"""

SUBS = ("summary", "service NAME|ID", "latency [NAME|ID]", "errors [NAME|ID]", "throughput [SECONDS]")
SUBS += ("prometheus", "reset")

# (route, service, status, latency us, upstream us, ErrorType or -1)
ORDERS = [(0, 0, 200, 1000 * k, 600 * k, -1) for k in range(1, 9)]
ORDERS += [(0, 0, 502, 9000, 8000, ErrorType.SERVER_ERROR), (0, 0, 404, 10000, 0, ErrorType.CLIENT_ERROR)]
STOCK = [(1, 1, 200, 40000, 30000, -1), (1, 1, 200, 50000, 30000, -1), (1, 1, 401, 150, 0, ErrorType.AUTH_ERROR)]
GATEWAY = [(-1, -1, 504, 5000000, 0, ErrorType.TIMEOUT)]  # answered by the gateway itself

USAGE = "usage: apimon [summary|service|latency|errors|throughput|prometheus|reset] (try 'help apimon')"
NO_SERVICE = "error: no service '%s' (see 'gateway services'); usage: apimon %s"
SECONDS = "error: SECONDS must be 1..10 (monitoring.window_s); usage: apimon throughput [SECONDS]"

# (command line, the error it gives)
BAD = (
    ("apimon bogus", "error: unknown sub-command 'apimon bogus'; " + USAGE),
    ("apimon Summary", "error: unknown sub-command 'apimon Summary'; " + USAGE),
    ("apimon summary x", "error: usage: apimon summary"),
    ("apimon service", "error: usage: apimon service NAME|ID"),
    ("apimon service orders stock", "error: usage: apimon service NAME|ID"),
    ("apimon service nope", NO_SERVICE % ("nope", "service NAME|ID")),
    ("apimon service Orders", NO_SERVICE % ("Orders", "service NAME|ID")),
    ("apimon service 2", NO_SERVICE % ("2", "service NAME|ID")),
    ("apimon service -1", NO_SERVICE % ("-1", "service NAME|ID")),
    ("apimon service 99999999999", NO_SERVICE % ("99999999999", "service NAME|ID")),
    ("apimon latency 7", NO_SERVICE % ("7", "latency [NAME|ID]")),
    ("apimon latency a b", "error: usage: apimon latency [NAME|ID]"),
    ("apimon errors nope", NO_SERVICE % ("nope", "errors [NAME|ID]")),
    ("apimon errors 0 1", "error: usage: apimon errors [NAME|ID]"),
    ("apimon throughput x", SECONDS),
    ("apimon throughput 0", SECONDS),
    ("apimon throughput 11", SECONDS),
    ("apimon throughput -5", SECONDS),
    ("apimon throughput 1 2", "error: usage: apimon throughput [SECONDS]"),
    ("apimon prometheus now", "error: usage: apimon prometheus"),
    ("apimon reset all", "error: usage: apimon reset"),
)

# (us, what ms() shows: three significant digits)
MS = (
    (0, "0"),
    (7, "0.007"),
    (45, "0.045"),
    (150, "0.150"),
    (999, "0.999"),
    (1000, "1.00"),
    (1234, "1.23"),
    (1235, "1.24"),
    (9994, "9.99"),
    (9995, "10.0"),
    (12345, "12.3"),
    (99949, "99.9"),
    (99950, "100"),
    (123456, "123"),
    (5000000, "5000"),
    ((1 << 30) - 1, "1073742"),
)


class _Server:
    """What Shell reads from a running server."""

    gate = None
    mediator = None
    balancer = None
    guard = None

    def __init__(self, monitoring):
        self.monitoring = monitoring


class _Exporter:
    """A stand-in promexport: str and bytes pieces, as the real one may yield."""

    seen = []

    @staticmethod
    def exposition(srv):
        _Exporter.seen.append(srv)
        yield "# TYPE apigw_requests_total counter\n"
        yield b"apigw_requests_total 14\n"


class _NoExporter:
    """A promexport without exposition(): `from .promexport import exposition` fails to import."""


def _config(extra=""):
    return load_config_text(CONFIG % extra)


def _shell(server=True):
    cfg = _config()
    m = cfg.monitoring
    sh = Shell(cfg.gateway, _Server(m)) if server else Shell(cfg.gateway, monitoring=m)
    return sh, m


def _record(mon, rows, now):
    for route, svc, status, lat, up, err in rows:
        mon.record_request(route, svc, now)
        mon.record_response(route, svc, status, lat, up, now)
        if err >= 0:
            mon.record_error(svc, err)


def _traffic(m):
    now = ticks_ms()
    _record(m.mon, ORDERS + STOCK + GATEWAY, now)


def _line(out, start):
    """The line of out that starts with start."""
    for line in out.split("\n"):
        if line.startswith(start):
            return line
    raise AssertionError("no line %r in:\n%s" % (start, out))


def _row(out, first):
    """The table row whose first column is first, split into cells."""
    for line in out.split("\n"):
        cells = line.split()
        if cells and cells[0] == str(first):
            return cells
    raise AssertionError("no row %r in:\n%s" % (first, out))


def _has_row(out, first):
    for line in out.split("\n"):
        cells = line.split()
        if cells and cells[0] == str(first):
            return True
    return False


def _bars(out):
    """(lower, upper, count, percent, bar) of each histogram line of `apimon latency`."""
    lines = out.split("\n")
    i = lines.index("histogram, (lower, upper] ms:")
    rows = []
    for line in lines[i + 1 :]:
        left, bar = line.split("|")
        lo, dash, hi, count, pct = left.split()
        assert dash == "-" and bar == "#" * len(bar), line
        rows.append((lo, hi, int(count), pct, bar))
    return rows


def _with_exporter(module, fn):
    """fn() with module standing for apigw.promexport in sys.modules; the real one is put back."""
    key = "apigw.promexport"
    old = sys.modules.get(key)
    sys.modules[key] = module
    try:
        return fn()
    finally:
        if old is None:
            del sys.modules[key]
        else:
            sys.modules[key] = old


def test_ms_shows_three_significant_digits():
    for us, text in MS:
        assert ms(us) == text, us


def test_registered_only_with_monitoring():
    sh, m = _shell()
    out = sh.execute("help apimon")
    assert out.startswith("apimon - ")
    for sub in SUBS:
        assert "apimon " + sub + "  -- " in out, sub
    assert len(out.split("\n")) == 1 + len(SUBS)
    assert "apimon - " in sh.execute("help")
    assert sh.execute("apimon").startswith("requests: 0 (in flight 0, refused 0)")
    cfg = _config()
    assert "apimon" in Shell(cfg.gateway, monitoring=cfg.monitoring).commands
    assert "apimon" not in Shell(cfg.gateway).commands
    assert "apimon" not in Shell(cfg.gateway, _Server(None)).commands
    plain = load_config_text('{"services": [{"name": "a", "host": "h", "port": 1}]}')
    assert getattr(plain, "monitoring", None) is None
    sh = Shell(plain.gateway, monitoring=getattr(plain, "monitoring", None))
    assert "apimon" not in sh.commands
    assert sh.execute("apimon") == "error: unknown command 'apimon' (try 'help')"
    assert sh.execute("help apimon") == "error: unknown command 'apimon'"


def test_summary():
    sh, m = _shell()
    empty = sh.execute("apimon")
    assert sh.execute("apimon summary") == empty
    assert empty.split("\n")[-1] == "no service has traffic yet"
    assert "latency: p50 0, p95 0, p99 0 ms (exact, last 0 responses); min 0, avg 0, max 0 ms" in empty
    assert _line(empty, "heap: ") == "heap: - (no reading yet)"
    _record(m.mon, ORDERS, ticks_ms())
    out = sh.execute("apimon")
    assert _row(out, 0)[:9] == ["0", "orders", "10", "0", "8", "0", "1", "1", "20.0%"]
    assert not _has_row(out, 1)  # stock has no traffic yet
    _traffic(m)
    m.heap_free = 81234
    m.heap_low = 60100
    out = sh.execute("apimon summary")
    lines = out.split("\n")
    assert lines[0] == "requests: 24 (in flight 0, refused 0)"
    assert lines[1] == "responses: 24 (1xx 0, 2xx 18, 3xx 0, 4xx 3, 5xx 3)"
    assert lines[2] == "error rate: 25.0% (4xx and 5xx)"
    assert lines[3].startswith("throughput: ") and lines[3].endswith(" req/s over the last 10 s")
    assert (
        lines[4]
        == "latency: p50 7.00, p95 5000, p99 5000 ms (exact, last 16 responses); min 0.150, avg 217, max 5000 ms"
    )
    assert lines[5] == "time per response: upstream 4.97 ms, gateway 212 ms"
    assert lines[6] == "heap: free 81234, min free 60100 bytes"
    assert lines[8].split() == "id service responses 1xx 2xx 3xx 4xx 5xx errors p50 ms p95 ms p99 ms".split()
    mon = m.mon
    for sid, cells in ((0, ["20", "0", "16", "0", "2", "2", "20.0%"]), (1, ["3", "0", "2", "0", "1", "0", "33.3%"])):
        r = _row(out, sid)
        assert r[1] == ("orders", "stock")[sid] and r[2:9] == cells, r
        assert r[9:] == [ms(mon.calculate_percentile(p, sid)) for p in (50, 95, 99)]
    assert len(lines) == 11


def test_service_by_name_and_id():
    sh, m = _shell()
    _traffic(m)
    out = sh.execute("apimon service orders")
    assert sh.execute("apimon service 0") == out
    mon = m.mon
    p = [ms(mon.calculate_percentile(q, 0)) for q in (50, 95, 99)]
    assert out.split("\n") == [
        "service 0 orders",
        "requests: 10",
        "responses: 10 (1xx 0, 2xx 8, 3xx 0, 4xx 1, 5xx 1)",
        "error rate: 20.0% (4xx and 5xx)",
        "errors: client_error 1, server_error 1, timeout 0, auth_error 0, validation_error 0",
        "latency: p50 %s, p95 %s, p99 %s ms (histogram, within 9.1%%); min 1.00, avg 5.50, max 10.0 ms" % tuple(p),
        "upstream time: 2.96 ms per response, 53.8% of the latency (total 29.6 ms)",
    ]
    assert p == ["5.28", "10.0", "10.0"]  # 5 ms's bucket (4.86, 5.76] reported at its mid, within 9.09 %
    out = sh.execute("apimon service stock").split("\n")
    assert out[0] == "service 1 stock" and out[1] == "requests: 3"
    assert out[4] == "errors: client_error 0, server_error 0, timeout 0, auth_error 1, validation_error 0"
    assert out[5].endswith("; min 0.150, avg 30.1, max 50.0 ms")
    assert out[6] == "upstream time: 20.0 ms per response, 66.6% of the latency (total 60.0 ms)"
    assert sh.execute("apimon service 1").split("\n") == out


def test_a_service_without_traffic_or_past_the_monitor():
    sh, m = _shell()
    out = sh.execute("apimon service stock").split("\n")
    assert out[2] == "responses: 0 (1xx 0, 2xx 0, 3xx 0, 4xx 0, 5xx 0)"
    assert out[5] == "latency: p50 0, p95 0, p99 0 ms (histogram, within 9.1%); min 0, avg 0, max 0 ms"
    assert out[6] == "upstream time: -"
    cfg = _config(', "services": 1')  # a row for orders only
    sh = Shell(cfg.gateway, monitoring=cfg.monitoring)
    err = "error: service 'stock' (id 1) has no figures: the monitor keeps services 0..0 (monitoring.services)"
    for line in ("apimon service stock", "apimon latency 1", "apimon errors stock"):
        assert sh.execute(line) == err, line
    assert sh.execute("apimon service orders").startswith("service 0 orders\n")
    _record(cfg.monitoring.mon, ORDERS + STOCK, ticks_ms())  # stock's figures: the totals only
    out = sh.execute("apimon")
    assert _has_row(out, 0) and not _has_row(out, 1)
    assert _line(out, "responses: ") == "responses: 13 (1xx 0, 2xx 10, 3xx 0, 4xx 2, 5xx 1)"


def test_latency_percentiles_and_histogram():
    sh, m = _shell()
    assert sh.execute("apimon latency").split("\n") == [
        "latency of all services: 0 responses since reset",
        "p50 0, p90 0, p95 0, p99 0, p99.9 0 ms (exact, last 0 responses)",
        "min 0, avg 0, max 0 ms",
    ]
    _traffic(m)
    out = sh.execute("apimon latency")
    lines = out.split("\n")
    assert lines[0] == "latency of all services: 14 responses since reset"
    assert lines[1] == "p50 6.00, p90 50.0, p95 5000, p99 5000, p99.9 5000 ms (exact, last 14 responses)"
    assert lines[2] == "min 0.150, avg 368, max 5000 ms"
    bars = _bars(out)
    h = m.mon.get_latency_histogram()
    assert len(bars) == len(h) == 14 - 1  # one line a bucket: 7 ms and 8 ms share (6.91, 8.19]
    assert [b[2] for b in bars] == [c for _, c in h]
    assert [b[1] for b in bars] == [ms(u) for u, _ in h]
    assert bars[0][:4] == ("0.128", "0.152", 1, "7.1%") and bars[-1][:2] == ("4981", "5898")
    widest = max(b[2] for b in bars)
    for lo, hi, c, pct, bar in bars:
        assert len(bar) == c * 40 // widest and (c == widest) == (len(bar) == 40)
    out = sh.execute("apimon latency stock")
    assert sh.execute("apimon latency 1") == out
    lines = out.split("\n")
    assert lines[0] == "latency of service 1 stock: 3 responses since reset"
    assert lines[1].endswith(" ms (histogram, within 9.1%)") and lines[1].startswith("p50 ")
    assert lines[2] == "min 0.150, avg 30.1, max 50.0 ms"
    bars = _bars(out)
    assert [(b[0], b[1], b[2], b[3]) for b in bars] == [
        ("0.128", "0.152", 1, "33.3%"),
        ("38.9", "46.1", 1, "33.3%"),
        ("46.1", "55.3", 1, "33.3%"),
    ]
    assert [len(b[4]) for b in bars] == [40, 40, 40]


def test_a_wide_histogram_merges_adjacent_buckets():
    sh, m = _shell()
    now = ticks_ms()
    lat = 40
    n = 0
    while lat < 200000000:  # every bucket, 0 .. 81
        m.mon.record_response(0, 0, 200, lat, 0, now)
        lat = lat * 11 // 10 + 1
        n += 1
    for line in ("apimon latency", "apimon latency orders"):
        bars = _bars(sh.execute(line))
        assert len(bars) <= 20, line
        assert sum(b[2] for b in bars) == n
        assert bars[0][0] == "0" and bars[-1][1] == "inf"
        for k in range(1, len(bars)):  # every bucket has samples: the merged runs are contiguous
            assert bars[k][0] == bars[k - 1][1], line
    assert len(m.mon.get_latency_histogram()) == loghist.NBUCKETS


def test_errors():
    sh, m = _shell()
    out = sh.execute("apimon errors").split("\n")
    assert out[-1] == "no service has errors"
    _traffic(m)
    out = sh.execute("apimon errors")
    assert out.split("\n")[:7] == [
        "errors of all services, by type:",
        "  client_error      1",
        "  server_error      1",
        "  timeout           1",
        "  auth_error        1",
        "  validation_error  0",
        "responses 4xx 2, 5xx 2 of 14 (error rate 28.6%)",
    ]
    assert _row(out, "id")[2:] == list(ErrorType.NAMES)
    assert _row(out, 0) == ["0", "orders", "1", "1", "0", "0", "0"]
    assert _row(out, 1) == ["1", "stock", "0", "0", "0", "1", "0"]
    out = sh.execute("apimon errors stock")
    assert sh.execute("apimon errors 1") == out
    assert out.split("\n") == [
        "errors of service 1 stock, by type:",
        "  client_error      0",
        "  server_error      0",
        "  timeout           0",
        "  auth_error        1",
        "  validation_error  0",
        "responses 4xx 1, 5xx 0 of 3 (error rate 33.3%)",
    ]


def test_throughput():
    sh, m = _shell()
    mon = m.mon
    t0 = ticks_ms() - 3300  # the window starts 3.3 s ago: seconds 0, 1, 2 complete, 3 current
    for _ in range(12):
        mon.record_request(0, 0, t0)
    out = sh.execute("apimon throughput")
    assert out == "throughput: 4.00 req/s over the last 10 s (12 requests since reset; window 10 s)"
    assert sh.execute("apimon throughput 3").startswith("throughput: 4.00 req/s over the last 3 s (")
    assert sh.execute("apimon throughput 2").startswith("throughput: 0.00 req/s over the last 2 s (")
    assert sh.execute("apimon throughput 10") == out
    assert _line(sh.execute("apimon"), "throughput: ") == "throughput: 4.00 req/s over the last 10 s"
    assert mon.get_total_requests() == 12


def test_reset():
    sh, m = _shell()
    _traffic(m)
    m.mon.record_request(0, 0, ticks_ms())  # still in flight
    assert _line(sh.execute("apimon"), "requests: ") == "requests: 15 (in flight 1, refused 0)"
    out = sh.execute("apimon reset")
    assert out == "monitoring figures reset (counters, histograms, latency ring, throughput window); 1 in flight"
    out = sh.execute("apimon")
    assert out.split("\n")[:3] == [
        "requests: 0 (in flight 1, refused 0)",
        "responses: 0 (1xx 0, 2xx 0, 3xx 0, 4xx 0, 5xx 0)",
        "error rate: 0.0% (4xx and 5xx)",
    ]
    assert out.split("\n")[-1] == "no service has traffic yet"
    assert "histogram" not in sh.execute("apimon latency")
    assert sh.execute("apimon errors").split("\n")[1] == "  client_error      0"


def test_prometheus_needs_a_server():
    err = "error: apimon prometheus needs a running gateway (the exposition reads the server)"
    sh, m = _shell(server=False)
    _traffic(m)
    for module in (_Exporter, _NoExporter):
        assert _with_exporter(module, lambda: sh.execute("apimon prometheus")) == err
    assert sh.execute("apimon prometheus") == err  # the real module, if this build has it
    cfg = _config()
    assert Shell(cfg.gateway, monitoring=cfg.monitoring).execute("apimon prometheus") == err


def test_prometheus_joins_the_exposition():
    sh, m = _shell()
    _Exporter.seen = []
    out = _with_exporter(_Exporter, lambda: sh.execute("apimon prometheus"))
    assert out == "# TYPE apigw_requests_total counter\napigw_requests_total 14"
    assert _Exporter.seen == [sh.server]
    out = _with_exporter(_NoExporter, lambda: sh.execute("apimon prometheus"))
    assert out == "error: this build has no Prometheus exporter (apigw/promexport)"


def test_bad_input_gets_a_usage_error():
    sh, m = _shell()
    _traffic(m)
    before = sh.execute("apimon errors")
    for line, err in BAD:
        assert sh.execute(line) == err, line
    assert sh.execute("apimon errors") == before  # nothing reset or changed


def test_prometheus_of_a_server_with_the_real_exporter():
    try:
        from apigw.promexport import exposition  # noqa: F401
    except ImportError:
        skip("this build has no apigw/promexport.py")
    from apigw.server import Server

    cfg = load_config_text(CONFIG.replace('"limits"', '"listen": {"slots": 2}, "limits"') % "")
    srv = Server(cfg)
    _traffic(srv.monitoring)
    out = Shell(srv.gw, srv).execute("apimon prometheus")
    assert out.startswith("# HELP apigw_"), out[:200]
    assert not out.endswith("\n") and len(out.split("\n")) > 20

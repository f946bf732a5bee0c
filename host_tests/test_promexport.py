"""Portable tests for the monitoring documents: promexport.py (Prometheus text 0.0.4) and statsdoc.py
(the /_gw/stats JSON), on a real apigw.server.Server built from a config (never started) whose
monitor is fed with record_*() calls.

The exposition is read back by a small parser written here from the format's grammar: every line
is a HELP, TYPE or sample line, every family has HELP and TYPE once and its samples right after,
no series twice, counters never negative, histogram buckets cumulative with +Inf equal to _count
(also while figures change between pieces), label values escaped (a service named with a quote and
a backslash, a regex route with a backslash) and the values the monitor counted. The JSON must
load whole with the same figures. Both documents come in small pieces from a generator.
"""

# mpy_run: heapsize=1024k  (the 256-service test: its monitor's histograms are one 84 KB array, which
# a 512 KB heap holding the firmware compiled from source has no longer in one piece; a board
# loads the firmware precompiled and makes its tables at boot. The other tests pass in 512k.)

import json

from apigw import lbconfig, loghist, medconfig, monconfig, promexport, resconfig, statsdoc  # noqa: F401
from apigw.compat import IS_MICROPYTHON, mem_free
from apigw.config import load_config_text
from apigw.monitor import ErrorType
from apigw.server import Server

# lbconfig, medconfig, monconfig, resconfig: the config's sections load them; imported here they are
# compiled once for the module (mpy_run drops what a test loads, and compiling from source again
# each test fragments the heap).

ODD = 'we"ird\\name'  # a service name the label escaping must carry
CONFIG = r"""{"listen": {"slots": 3, "request_buffer": 1024, "io_buffer": 512},
 "limits": {"services": 6, "routes": 10, "strtab_bytes": 1024},
 "services": [
  {"name": "api", "host": "10.0.0.1", "port": 80, "resilience": {
    "breaker": {"failure_threshold": 2, "failure_rate_threshold": 0, "reset_timeout": 60000},
    "bulkhead": {"max_concurrent": 2}}},
  {"name": "we\"ird\\name", "host": "10.0.0.2", "port": 80},
  {"name": "web", "pool": "web"}],
 "pools": [{"name": "web", "instances": [{"host": "10.0.0.5", "port": 80}, {"host": "10.0.0.6", "port": 81}]}],
 "routes": [
  {"path": "/api", "service": "api", "transform": "cached"},
  {"name": "odd", "path": "/odd", "service": "we\"ird\\name"},
  {"path": "/m", "methods": ["GET"], "service": "web"},
  {"path": "/m", "methods": ["POST"], "service": "web"},
  {"path": "^/r/\\d+$", "match": "regex", "respond": {"status": 200, "body": "r"}}],
 "mediation": {"limits": {"buffers": 1, "buffer_bytes": 1024, "cache_entries": 2, "cache_entry_bytes": 512},
               "transforms": {"cached": {"cache": {"ttl_s": 5}}}},
 "monitoring": {"ring": 64}}"""

# (route, service, status, latency us, upstream us): what the tests record
ANSWERS = (
    (0, 0, 200, 1500, 1000),
    (0, 0, 200, 3000, 2500),
    (0, 0, 503, 70000, 69000),
    (1, 1, 404, 100, 0),
    (1, 1, 200, 2000000, 1999000),
    (2, 2, 200, 64, 0),
    (-1, -1, 404, 40, 0),
)


class _Gate:
    """What the exporter reads of an auth stage (authgate.AuthGate's counters)."""

    unauthorized = 3
    forbidden = 2
    limited = 1

    def stats(self):
        return {"unauthorized": self.unauthorized, "forbidden": self.forbidden, "rate_limited": self.limited}


def _server(answers=ANSWERS, gate=False):
    srv = Server(load_config_text(CONFIG))
    mon = srv.monitoring.mon
    for route, svc, status, lat, up in answers:
        mon.record_request(route, svc, 0)
        mon.record_response(route, svc, status, lat, up, 0)
        if status >= 400:
            mon.record_error(svc, ErrorType.CLIENT_ERROR if status < 500 else ErrorType.SERVER_ERROR)
    if gate:
        srv.gate = _Gate()
    return srv


# -- a reader of the text format ------------------------------------------------------------------


def _labels(text, i):
    """Parse '{k="v",...}' from text[i] == '{'; returns (labels as a tuple of pairs, index after)."""
    out = []
    i += 1
    while text[i] != "}":
        eq = text.index("=", i)
        name = text[i:eq]
        assert name and text[eq + 1] == '"', text
        j = eq + 2
        value = []
        while text[j] != '"':
            c = text[j]
            if c == "\\":
                nxt = text[j + 1]
                assert nxt in '\\"n', "bad escape in " + text
                value.append("\n" if nxt == "n" else nxt)
                j += 2
            else:
                assert c != "\n"
                value.append(c)
                j += 1
        out.append((name, "".join(value)))
        i = j + 1
        if text[i] == ",":
            i += 1
    return tuple(out), i + 1


def _lines(pieces):
    """The lines of a document given in pieces (a line may span pieces); it must end with a newline."""
    if isinstance(pieces, str):
        pieces = (pieces,)
    rest = ""
    for p in pieces:
        rest += p
        i = rest.find("\n")
        while i >= 0:
            yield rest[:i]
            rest = rest[i + 1 :]
            i = rest.find("\n")
    assert rest == "", "the document does not end with a newline"


def _number(v):
    if v in ("+Inf", "-Inf", "NaN"):
        return float(v)
    return int(v) if "." not in v and "e" not in v else float(v)


def parse(pieces):
    """{family: {"help", "type", "samples": [(name, labels, value)]}} from the exposition's pieces
    (a str is one piece), read line by line as a scraper reads the stream, checking the grammar."""
    fams = {}
    order = []
    current = None
    series = set()
    for line in _lines(pieces):
        assert line, "empty line"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in fams, "HELP twice: " + name
            assert help_text and "\\" not in help_text, line
            fams[name] = {"help": help_text, "type": None, "samples": []}
            order.append(name)
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and fams[name]["type"] is None and not fams[name]["samples"], line
            assert kind in ("counter", "gauge", "histogram"), line
            fams[name]["type"] = kind
        else:
            assert not line.startswith("#"), line
            i = 0
            while i < len(line) and line[i] not in "{ ":
                i += 1
            name = line[:i]
            labels = ()
            if line[i] == "{":
                labels, i = _labels(line, i)
            assert line[i] == " " and " " not in line[i + 1 :], line
            value = _number(line[i + 1 :])
            fam = fams[current]
            assert fam["type"] is not None, "sample before TYPE: " + line
            if fam["type"] == "histogram":
                assert name in (current + "_bucket", current + "_sum", current + "_count"), line
            else:
                assert name == current, line
            key = (name, labels)
            assert key not in series, "duplicate series: " + line
            series.add(key)
            fam["samples"].append((name, labels, value))
    for name in order:
        f = fams[name]
        assert name.startswith("apigw_") and f["type"] is not None and f["samples"], name
        if f["type"] == "counter":
            assert name.endswith("_total"), name
            assert all(v >= 0 for _, _, v in f["samples"]), name
        else:
            assert not name.endswith("_total"), name
    return fams


def _value(fams, name, **labels):
    fam = fams.get(name) or fams[name.rsplit("_", 1)[0]]
    want = sorted(labels.items())
    for n, lab, v in fam["samples"]:
        if n == name and sorted(lab) == want:
            return v
    raise AssertionError("no sample %s %r" % (name, labels))


def _histograms(fam, base):
    """{labels but le: ([(le, count)], +Inf, sum, count)} of a histogram family."""
    out = {}
    for n, lab, v in fam["samples"]:
        rest = tuple(p for p in lab if p[0] != "le")
        h = out.setdefault(rest, [[], None, None, None])
        if n == base + "_bucket":
            le = [p[1] for p in lab if p[0] == "le"][0]
            if le == "+Inf":
                h[1] = v
            else:
                h[0].append((float(le), v))
        elif n == base + "_sum":
            h[2] = v
        else:
            h[3] = v
    return out


def _check_histogram(fam, base, les):
    hs = _histograms(fam, base)
    for rest, (buckets, inf, total, count) in hs.items():
        assert [le for le, _ in buckets] == [le / 1e6 for le in les], rest
        for k in range(1, len(buckets)):
            assert buckets[k - 1][1] <= buckets[k][1], (rest, buckets)
        assert buckets[-1][1] <= inf == count and total is not None, rest
    return hs


# -- the exposition -------------------------------------------------------------------------------


def test_the_document_reads_back_by_the_grammar():
    fams = parse(promexport.exposition(_server(gate=True)))
    for name in (
        "apigw_build_info",
        "apigw_uptime_seconds",
        "apigw_requests_total",
        "apigw_responses_total",
        "apigw_errors_total",
        "apigw_requests_in_flight",
        "apigw_request_duration_seconds",
        "apigw_upstream_time_seconds_total",
        "apigw_gateway_time_seconds_total",
        "apigw_throughput_requests_per_second",
        "apigw_service_responses_total",
        "apigw_service_errors_total",
        "apigw_service_request_duration_seconds",
        "apigw_route_responses_total",
        "apigw_slots",
        "apigw_slots_in_use",
        "apigw_connections_queued_total",
        "apigw_connections_refused_total",
        "apigw_parse_errors_total",
        "apigw_circuit_breaker_state",
        "apigw_circuit_breaker_rejected_total",
        "apigw_bulkhead_in_use",
        "apigw_lb_instance_up",
        "apigw_lb_instance_connections",
        "apigw_cache_hits_total",
        "apigw_cache_misses_total",
        "apigw_cache_stale_hits_total",
        "apigw_auth_failures_total",
        "apigw_rate_limited_total",
    ):
        assert name in fams, name
    heap = ("apigw_heap_free_bytes", "apigw_heap_used_bytes", "apigw_heap_min_free_bytes")
    for name in heap:
        assert (name in fams) == (mem_free() >= 0), name  # CPython does not tell
    if IS_MICROPYTHON:
        assert 0 < _value(fams, "apigw_heap_min_free_bytes") <= _value(fams, "apigw_heap_free_bytes")


def test_figures_are_the_monitors():
    srv = _server(gate=True)
    fams = parse(promexport.exposition(srv))
    assert _value(fams, "apigw_build_info", version="0.1.0") == 1
    assert _value(fams, "apigw_requests_total") == len(ANSWERS)
    assert _value(fams, "apigw_requests_in_flight") == 0
    want = {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 2, "5xx": 1}
    for cls, n in want.items():
        assert _value(fams, "apigw_responses_total", **{"class": cls}) == n, cls
    assert _value(fams, "apigw_errors_total", type="client_error") == 2
    assert _value(fams, "apigw_errors_total", type="server_error") == 1
    assert _value(fams, "apigw_errors_total", type="timeout") == 0
    total = sum(a[3] for a in ANSWERS)
    upstream = sum(a[4] for a in ANSWERS)
    assert _value(fams, "apigw_request_duration_seconds_sum") == total / 1e6
    assert _value(fams, "apigw_request_duration_seconds_count") == len(ANSWERS)
    assert _value(fams, "apigw_upstream_time_seconds_total") == upstream / 1e6
    assert _value(fams, "apigw_gateway_time_seconds_total") == (total - upstream) / 1e6
    # buckets: exact at the power-of-two edges
    lat = [a[3] for a in ANSWERS]
    for le in loghist.POW2_LES:
        got = _value(fams, "apigw_request_duration_seconds_bucket", le=promexport.seconds(le))
        assert got == sum(1 for v in lat if v <= le), le
    # per service
    assert _value(fams, "apigw_service_responses_total", service="api", **{"class": "2xx"}) == 2
    assert _value(fams, "apigw_service_responses_total", service="api", **{"class": "5xx"}) == 1
    assert _value(fams, "apigw_service_responses_total", service=ODD, **{"class": "4xx"}) == 1
    assert _value(fams, "apigw_service_errors_total", service="api", type="server_error") == 1
    assert _value(fams, "apigw_service_request_duration_seconds_count", service=ODD) == 2
    assert _value(fams, "apigw_service_request_duration_seconds_sum", service=ODD) == 2.0001
    assert _value(fams, "apigw_service_request_duration_seconds_bucket", service="web", le="0.000064") == 1
    # per route: the name, else the path; a second unnamed route on the same path keeps apart
    assert _value(fams, "apigw_route_responses_total", route="/api", **{"class": "5xx"}) == 1
    assert _value(fams, "apigw_route_responses_total", route="odd", **{"class": "2xx"}) == 1
    assert _value(fams, "apigw_route_responses_total", route="/m", **{"class": "2xx"}) == 1
    assert _value(fams, "apigw_route_responses_total", route="/m #3", **{"class": "2xx"}) == 0
    assert _value(fams, "apigw_route_responses_total", route="^/r/\\d+$", **{"class": "2xx"}) == 0
    # the server, the stages
    assert _value(fams, "apigw_slots") == 3 and _value(fams, "apigw_slots_in_use") == 0
    assert _value(fams, "apigw_circuit_breaker_state", service="api") == 0
    assert _value(fams, "apigw_bulkhead_in_use", service="api") == 0
    assert _value(fams, "apigw_lb_instance_up", pool="web", instance="10.0.0.6:81") == 1
    assert _value(fams, "apigw_auth_failures_total", reason="unauthorized") == 3
    assert _value(fams, "apigw_auth_failures_total", reason="forbidden") == 2
    assert _value(fams, "apigw_rate_limited_total") == 1
    assert "apigw_circuit_breaker_state" in fams and len(fams["apigw_circuit_breaker_state"]["samples"]) == 1


def test_stage_state_changes_show():
    srv = _server()
    g = srv.guard
    bid = g.s_breaker[0]
    g.breakers.force_open(bid, 0)
    assert not g.breakers.admit(bid, 1)  # a refusal, counted
    bh = g.s_bulkhead[0]
    assert g.bulkheads.acquire_permit(bh) == 0
    lb = srv.balancer.lb
    iid = lb.find_instance(lb.pool_id("web"), "10.0.0.5", 80)
    lb.drain(iid)
    lb.increment_connections(lb.find_instance(lb.pool_id("web"), "10.0.0.6", 81))
    srv.stats.rejected = 4
    srv.stats.queued = 5
    srv.stats.parse_errors = 6
    fams = parse(promexport.exposition(srv))
    assert _value(fams, "apigw_circuit_breaker_state", service="api") == 1
    assert _value(fams, "apigw_circuit_breaker_rejected_total", service="api") == 1
    assert _value(fams, "apigw_bulkhead_in_use", service="api") == 1
    assert _value(fams, "apigw_lb_instance_up", pool="web", instance="10.0.0.5:80") == 0
    assert _value(fams, "apigw_lb_instance_connections", pool="web", instance="10.0.0.6:81") == 1
    assert _value(fams, "apigw_connections_refused_total") == 4
    assert _value(fams, "apigw_connections_queued_total") == 5
    assert _value(fams, "apigw_parse_errors_total") == 6
    doc = json.loads("".join(statsdoc.pieces(srv)))
    assert [s["breaker"] for s in doc["services"]] == ["open", None, None]
    ups = {i["instance"]: (i["up"], i["connections"]) for i in doc["instances"]}
    assert ups == {"10.0.0.5:80": (False, 0), "10.0.0.6:81": (True, 1)}


def test_histograms_are_cumulative_and_inf_is_count():
    fams = parse(promexport.exposition(_server()))
    hs = _check_histogram(fams["apigw_request_duration_seconds"], "apigw_request_duration_seconds", loghist.POW2_LES)
    assert list(hs) == [()]
    name = "apigw_service_request_duration_seconds"
    hs = _check_histogram(fams[name], name, promexport.SERVICE_LES)
    assert sorted(v[0][1] for v in hs) == sorted(["api", ODD, "web"])
    assert promexport.SERVICE_LES == tuple(1 << e for e in range(6, 27, 2))


def test_figures_changing_between_pieces_keep_histograms_consistent():
    """The server records answers while the document is being sent: each histogram stays whole."""
    srv = _server()
    mon = srv.monitoring.mon

    def interleaved():
        k = 0
        for piece in promexport.exposition(srv):
            yield piece
            k += 1
            mon.record_response(0, 0, 200, 50 << (k % 20), 0, 0)  # across every bucket

    fams = parse(interleaved())
    _check_histogram(fams["apigw_request_duration_seconds"], "apigw_request_duration_seconds", loghist.POW2_LES)
    name = "apigw_service_request_duration_seconds"
    _check_histogram(fams[name], name, promexport.SERVICE_LES)


def test_label_values_are_escaped():
    lines = list(_lines(promexport.exposition(_server())))
    assert 'apigw_service_responses_total{service="we\\"ird\\\\name",class="4xx"} 1' in lines
    assert 'apigw_route_responses_total{route="^/r/\\\\d+$",class="1xx"} 0' in lines
    assert promexport.escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert promexport.escape("plain") == "plain"
    assert promexport.seconds(0) == "0.000000" and promexport.seconds(67108864) == "67.108864"
    assert promexport.seconds(3 * 2**40 + 7) == "3298534.883335"  # a big sum stays exact


def test_pieces_are_small_and_come_from_a_generator():
    srv = _server()
    gen = promexport.exposition(srv)
    assert not isinstance(gen, (str, bytes, list, tuple)) and iter(gen) is gen
    sizes = [len(p) for p in gen]
    # the largest piece is a histogram (the global one: 24 lines), under the default I/O buffer (2048)
    assert len(sizes) > 30 and max(sizes) < 1600, max(sizes)
    got = []
    promexport.write_exposition(srv, lambda p: got.append(p[:20]))
    assert len(got) == len(sizes) and got[0] == "# HELP apigw_build_i"  # the same pieces
    gen = statsdoc.pieces(srv)
    assert iter(gen) is gen
    assert max(len(p) for p in gen) < 1024  # a service, a route, an instance: one piece each


def test_without_stages_their_families_are_absent():
    cfg = load_config_text(
        '{"listen": {"slots": 1, "request_buffer": 512, "io_buffer": 128}, "limits": {"strtab_bytes": 256},'
        ' "services": [{"name": "a", "host": "h", "port": 1}], "routes": [{"path": "/a", "service": "a"}],'
        ' "monitoring": {}}'
    )
    srv = Server(cfg)
    fams = parse(promexport.exposition(srv))
    for name in fams:
        for stage in ("circuit", "bulkhead", "lb_", "cache", "auth", "rate_limited", "retries"):
            assert stage not in name, name
    assert _value(fams, "apigw_request_duration_seconds_count") == 0
    assert _value(fams, "apigw_service_request_duration_seconds_bucket", service="a", le="+Inf") == 0
    doc = json.loads("".join(statsdoc.pieces(srv)))
    assert "instances" not in doc and "breakers" not in doc and "cache" not in doc
    assert doc["latency_us"] == {"p50": 0, "p95": 0, "p99": 0} and doc["error_rate"] == 0


# -- the JSON document ----------------------------------------------------------------------------


def test_stats_document_is_one_json_object_with_the_figures():
    srv = _server(gate=True)
    doc = json.loads("".join(statsdoc.pieces(srv)))
    assert doc["version"] == "0.1.0" and doc["uptime_s"] >= 0
    assert doc["requests"] == len(ANSWERS) and doc["in_flight"] == 0
    assert doc["error_rate"] == round(3 * 100 / len(ANSWERS), 2)
    lat = sorted(a[3] for a in ANSWERS)
    assert doc["latency_us"] == {"p50": lat[3], "p95": lat[6], "p99": lat[6]}  # nearest rank of 7
    assert doc["status_classes"] == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 2, "5xx": 1}
    assert doc["errors"]["client_error"] == 2 and doc["errors"]["server_error"] == 1
    assert doc["slots"] == {"total": 3, "in_use": 0, "peak": 0, "waiting": 0}
    assert set(doc["heap"]) == {"free", "min_free", "used"}
    assert (doc["heap"]["free"] is None) == (mem_free() < 0)
    svcs = {s["name"]: s for s in doc["services"]}
    assert sorted(svcs) == sorted(["api", ODD, "web"])
    api = svcs["api"]
    assert (api["id"], api["responses"], api["errors"], api["breaker"]) == (0, 3, 1, "closed")
    assert api["error_rate"] == round(100 / 3, 2)
    assert api["p50_us"] <= api["p95_us"] <= api["p99_us"] == 70000  # clamped to the largest seen
    assert svcs[ODD]["errors"] == 1 and svcs[ODD]["breaker"] is None and svcs["web"]["p50_us"] == 64
    routes = {(r["name"], r["path"], r["id"]): (r["responses"], r["errors"]) for r in doc["routes"]}
    assert routes[(None, "/api", 0)] == (3, 1) and routes[("odd", "/odd", 1)] == (2, 1)
    assert len(routes) == 5
    assert [(i["pool"], i["instance"], i["up"], i["health"]) for i in doc["instances"]] == [
        ("web", "10.0.0.5:80", True, "unknown"),
        ("web", "10.0.0.6:81", True, "unknown"),
    ]
    assert [(b["name"], b["state"], b["services"]) for b in doc["breakers"]] == [("api", "closed", ["api"])]
    assert [(b["name"], b["in_use"], b["services"]) for b in doc["bulkheads"]] == [("api", 0, ["api"])]
    assert doc["cache"]["hits"] == 0 and doc["auth"]["unauthorized"] == 3


# -- many services ----------------------------------------------------------------------------------


def _many(n):
    """A server with n services and a route to each, made through the gateway's API (the config
    text and its parsed form would take as much heap again)."""
    text = '{"listen": {"slots": 1, "request_buffer": 512, "io_buffer": 128},'
    text += ' "limits": {"services": %d, "routes": %d, "strtab_bytes": %d},' % (n, n, 40 * n)
    text += ' "monitoring": {"services": %d, "routes": %d, "ring": 16}}' % (n, n)
    cfg = load_config_text(text)
    gw = cfg.gateway
    for i in range(n):
        name = "s%03d" % i
        gw.register_service(name, "10.0.%d.%d" % (i >> 8, i & 255), 80)
        gw.add_route("/" + name, service=name)
    return Server(cfg)


def test_256_services_export_line_by_line():
    srv = _many(256)
    mon = srv.monitoring.mon
    for i in range(256):
        mon.record_response(i, i, 200, 1000 + i, 0, 0)
    lines = 0
    biggest = 0
    svc_lines = 0
    for piece in promexport.exposition(srv):
        lines += piece.count("\n")
        biggest = len(piece) if len(piece) > biggest else biggest
        if piece.startswith("apigw_service_"):
            svc_lines += piece.count("\n")
    assert svc_lines == 256 * (1 + 5 + 5 + 14), svc_lines
    assert lines > 256 * 29 and biggest < 1600, (lines, biggest)
    # The JSON, piece by piece (whole, 60 KB, it would not fit the unix port's heap beside the rest):
    # each service and each route is a piece of its own that loads alone.
    services = routes = size = 0
    for piece in statsdoc.pieces(srv):
        size += len(piece)
        item = piece[2:] if piece.startswith(", {") else piece
        if item.startswith("{") and not item.startswith('{"version"'):
            d = json.loads(item)
            if "p50_us" in d:
                assert d["name"] == "s%03d" % services and d["responses"] == 1 and d["p50_us"] == 1000 + services
                services += 1
            else:
                assert d["path"] == "/s%03d" % routes
                routes += 1
    assert services == 256 and routes == 256 and size > 256 * 150
    if not IS_MICROPYTHON:
        doc = json.loads("".join(statsdoc.pieces(srv)))
        assert len(doc["services"]) == 256 and doc["services"][255]["name"] == "s255"

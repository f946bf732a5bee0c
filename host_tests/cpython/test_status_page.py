"""The status page GET /_gw/ (firmware/apigw/statuspage.py) in a real browser: headless Chromium.

- The page itself: under 6 KB, ASCII, self-contained (no http:// or https://, no src/href/url()),
  a viewport meta, and it polls /_gw/stats with fetch(same origin, credentials "same-origin")
  every 2 s.
- Its script against the agreed /_gw/stats document, served by a stub on loopback: the figures
  show (latencies in us shown as ms, the status page's own escaping of names), an empty document
  shows "-" everywhere, and 401 (a Bearer challenge), 403, 500 and a body that is not JSON each
  show their message. No uncaught script error in any of them. (A Basic challenge makes the
  browser ask for a password, which a headless run would wait for: not tested here.)
- A running gateway on the unix port (monitoring, two services, one behind a breaker, a pool of
  two instances) after some requests: the page it serves is PAGE byte for byte, and the DOM after
  the script ran shows its services, their response counts and a request count > 0 that match
  GET /_gw/stats. The phone-sized (412 x 915) screenshot is kept as a test artifact in
  build/test-artifacts/status-page.png (the folder is created).
- monitoring.status_page false: GET /_gw/ is 404. With an auth section: 401 with
  WWW-Authenticate and no credentials, 403 for a user, 200 and the page for the demo's Admin; a
  monitoring policy of the basic scheme: the browser opening http://admin:admin-pass@.../_gw/
  signs in and its reads of /_gw/stats show the figures.

Chromium is the Debian package `chromium` (run as root it needs --no-sandbox); without it these
tests skip, with CI=true they fail. Each browser run is killed (its process group) after 60 s.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if os.path.join(ROOT, "firmware") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "firmware"))

from apigw.statuspage import PAGE  # noqa: E402  (firmware/ on sys.path first)

ARTIFACT = os.path.join(ROOT, "build", "test-artifacts", "status-page.png")
PHONE = (412, 915)
BROWSER_TIMEOUT = 60
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"admin:admin-pass").decode()}
USER = {"Authorization": "Basic " + base64.b64encode(b"demo:demo-pass").decode()}

# The agreed shape of GET /_gw/stats (statsdoc.py), with figures that test the formatting.
DOC = {
    "version": "1.2.0",
    "uptime_s": 3725,
    "requests": 1234,
    "in_flight": 1,
    "throughput_rps": 12.5,
    "error_rate": 3.25,
    "latency_us": {"p50": 1234, "p95": 23456, "p99": 345678},
    "status_classes": {"1xx": 0, "2xx": 1200, "3xx": 0, "4xx": 30, "5xx": 4},
    "errors": {"timeout": 2, "server_error": 2},
    "slots": {"total": 4, "in_use": 1},
    "heap": {"free": 81920, "min_free": 40960, "used": 10240},
    "services": [
        {
            "id": 0,
            "name": "sensors",
            "responses": 1000,
            "errors": 3,
            "error_rate": 0.3,
            "p50_us": 900,
            "p95_us": 5000,
            "p99_us": 9000,
            "breaker": None,
        },
        {
            "id": 1,
            "name": "<i>flaky</i>",
            "responses": 234,
            "errors": 31,
            "error_rate": 13.2,
            "p50_us": 1500,
            "p95_us": 150000,
            "breaker": "open",
        },
    ],
    "instances": [
        {"pool": "sensors", "instance": "127.0.0.1:9001", "up": True, "connections": 2, "health": "healthy"},
        {"pool": "sensors", "instance": "127.0.0.1:9005", "up": False, "connections": 0, "health": 1},
    ],
    "breakers": [{"name": "flaky", "state": "open", "failure_rate": 100, "rejected": 7}],
}


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture
def browser(e2e, tmp_path):
    """run(url, *flags) -> (stdout, stderr): one headless Chromium run, phone-sized, with a
    profile of its own; killed with its children after BROWSER_TIMEOUT seconds."""
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if not exe:
        e2e.missing("chromium not found: install it (apt-get install chromium)")
    runs = []

    def run(url, *flags):
        profile = tmp_path / ("chromium-%d" % len(runs))
        cmd = [
            exe,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--user-data-dir=%s" % profile,
            "--window-size=%d,%d" % PHONE,
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            url,
        ]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        runs.append(p)
        try:
            out, err = p.communicate(timeout=BROWSER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # its renderer and GPU processes too
            p.communicate()
            pytest.fail("chromium did not finish within %d s: %s" % (BROWSER_TIMEOUT, url))
        err = err.decode("utf-8", "replace")
        assert p.returncode == 0, "chromium exited with %d:\n%s" % (p.returncode, err[-3000:])
        uncaught = [line for line in err.splitlines() if "CONSOLE" in line and "Uncaught" in line]
        assert not uncaught, "script errors on %s:\n%s" % (url, "\n".join(uncaught))
        return out.decode("utf-8", "replace"), err

    yield run
    for p in runs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


class Dom(HTMLParser):
    """The parts of the page's DOM the tests read: each table's rows (cell texts) by table id,
    the figure cards as {label: value}, the text of the elements with an id, the hidden ids."""

    VOID = ("meta", "br", "hr", "img", "input", "link")

    def __init__(self, html):
        super().__init__()
        self.tables, self.cards, self.text, self.hidden = {}, {}, {}, set()
        self._open = []  # (tag, id or None) of the open elements
        self._table = None
        self._card = None  # [label, value] of the card being read
        self._part = 0  # 0: its label, 1: its value
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        i = a.get("id")
        if i is not None:
            self.text.setdefault(i, "")
            if "hidden" in a:
                self.hidden.add(i)
            if tag == "table":
                self._table = self.tables.setdefault(i, [])
        if tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1].append("")
        elif tag == "span" and a.get("class") == "l" and self._in("k"):
            self._card, self._part = ["", ""], 0
        elif tag == "b" and self._card is not None:
            self._part = 1
        if tag not in self.VOID:
            self._open.append((tag, i))

    def handle_endtag(self, tag):
        while self._open:
            t, i = self._open.pop()
            if t == "table" and i is not None:
                self._table = None
            if t == tag:
                break
        if tag == "b" and self._card is not None:
            self.cards[self._card[0]] = self._card[1].strip()
            self._card = None

    def handle_data(self, data):
        for _, i in self._open:
            if i is not None:
                self.text[i] += data
        if self._table and self._table[-1]:
            self._table[-1][-1] += data
        if self._card is not None:
            self._card[self._part] += data

    def _in(self, i):
        return any(x == i for _, x in self._open)

    def rows(self, table):
        """The data rows of a table (its header row left out)."""
        return self.tables.get(table, [])[1:]


def _png_size(path):
    """(width, height) of a PNG file, or fail."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# -- the page -------------------------------------------------------------------------------------


def test_page_is_small_self_contained_and_polls_the_stats():
    assert isinstance(PAGE, bytes) and len(PAGE) < 6 * 1024, len(PAGE)
    text = PAGE.decode("ascii")  # non-ASCII only as entities: the bytes need no charset guess
    low = text.lower()
    for ref in ("http://", "https://", "src=", "href=", "url(", "@import", "//cdn"):
        assert ref not in low, ref
    assert low.startswith("<!doctype html>") and "<meta charset=utf-8>" in low
    assert '<meta name=viewport content="width=device-width,initial-scale=1">' in text
    assert 'fetch(location.origin+U,{credentials:"same-origin"' in text and 'U="/_gw/stats"' in text
    assert "setTimeout(load,2e3)" in text
    assert "@media(max-width:640px)" in text  # one column on a phone


# -- the script against a stub of /_gw/stats ------------------------------------------------------


class Stub(ThreadingHTTPServer):
    """/_gw/ answers PAGE; /_gw/stats what the test set: (status, body bytes, extra headers)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.stats = (200, b"{}", {})
        self.seen = []  # (path, Authorization) of each request
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/_gw/" % self.server_address[1]


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/_gw/":
            status, body, extra, ctype = 200, PAGE, {}, "text/html; charset=utf-8"
        elif self.path == "/_gw/stats":
            status, body, extra = self.server.stats
            ctype = "application/json"
        else:
            status, body, extra, ctype = 404, b"{}", {}, "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.shutdown()
    s.server_close()


def test_the_agreed_document_shows_its_figures(browser, stub):
    stub.stats = (200, json.dumps(DOC).encode(), {})
    dom = Dom(browser(stub.url, "--dump-dom")[0])
    assert dom.text["m"].startswith("Updated "), dom.text["m"]
    assert dom.cards == {
        "Requests/s": "12.5",
        "Error rate": "3.3 %",
        "p50": "1.23 ms",  # 1234 us
        "p95": "23.5 ms",
        "p99": "346 ms",
        "Requests": "1234",
    }, dom.cards
    info = dom.text["i"]
    for part in ("v1.2.0", "up 1h 2m", "in flight 1", "slots 1/4", "heap 80 KB free, 40 KB least"):
        assert part in info, info
    assert dom.rows("s") == [
        ["sensors", "1000", "0.3", "0.90", "5.00", "9.00", "-"],
        ["<i>flaky</i>", "234", "13.2", "1.50", "150", "-", "open"],  # a name is text, never markup
    ]
    assert dom.rows("n") == [
        ["sensors", "127.0.0.1:9001", "up", "2", "healthy"],
        ["sensors", "127.0.0.1:9005", "down", "0", "unhealthy"],  # a HealthStatus number named
    ]
    assert dom.rows("b") == [["flaky", "open", "100", "7"]]
    answers = " ".join(dom.text["c"].split())
    assert "2xx 1200" in answers and "5xx 4" in answers and "timeout 2" in answers, answers
    assert len([p for p, _ in stub.seen if p == "/_gw/stats"]) >= 2, stub.seen  # polled every 2 s


def test_an_empty_document_shows_dashes_and_hides_the_absent_tables(browser, stub):
    stub.stats = (200, b"{}", {})
    dom = Dom(browser(stub.url, "--dump-dom")[0])
    assert dom.text["m"].startswith("Updated ")
    assert set(dom.cards.values()) == {"-"} and len(dom.cards) == 6, dom.cards
    assert "v- " in dom.text["i"] and "slots -/-" in dom.text["i"]
    assert {"s0"} <= dom.hidden  # no services list: its section is hidden (so are the others)
    assert dom.rows("n") == [] and dom.rows("b") == []


@pytest.mark.parametrize(
    "status, body, headers, says",
    [
        (401, b'{"error":"missing_credentials"}', {"WWW-Authenticate": 'Bearer realm="apigw"'}, "token or an API key"),
        (403, b'{"error":"insufficient_permissions"}', {}, "not allowed"),
        (500, b'{"error":"internal"}', {}, "answered HTTP 500"),
        (200, b"<html>not json</html>", {}, "Cannot read /_gw/stats"),
    ],
)
def test_a_refused_or_failed_read_says_so(browser, stub, status, body, headers, says):
    stub.stats = (status, body, headers)
    dom = Dom(browser(stub.url, "--dump-dom")[0])
    assert says in dom.text["m"], dom.text["m"]
    assert dom.cards == {}  # nothing made up


# -- a running gateway ----------------------------------------------------------------------------


def _gateway_config(e2e, upstreams, **monitoring):
    sensors, controller = upstreams["sensors"].port, upstreams["controller"].port
    breaker = {"failure_threshold": 3, "failure_rate_threshold": 0, "reset_timeout": 10000}
    return {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": 4, "queue_max": 8},
        "limits": {"services": 8, "routes": 8, "strtab_bytes": 1024},
        "shell": {"enabled": False},
        "services": [
            {"name": "sensors", "host": "127.0.0.1", "port": sensors},
            {"name": "controller", "host": "127.0.0.1", "port": controller, "resilience": {"breaker": breaker}},
            {"name": "sensor-pool", "pool": "readings"},
        ],
        "routes": [
            {"path": "/api/sensors", "service": "sensors", "strip_prefix": True},
            {"path": "/api/controller", "service": "controller", "rewrite": "/v1"},
            {"path": "/lb", "service": "sensor-pool", "strip_prefix": True},
        ],
        "pools": [
            {
                "name": "readings",
                "strategy": "round_robin",
                "instances": [
                    {"host": "127.0.0.1", "port": upstreams["sensors-b"].port},
                    {"host": "127.0.0.1", "port": upstreams["sensors-c"].port},
                ],
            }
        ],
        "balancer": {"pools": 2, "instances": 4},
        "monitoring": monitoring,
    }


def _traffic(gw):
    """Requests to each service (and one nobody routes), so that every figure is > 0."""
    for path, n, want in (("/api/sensors/temp", 8, 200), ("/api/controller/x", 5, 200), ("/lb/temp", 6, 200)):
        for _ in range(n):
            status, _, body = gw.request("GET", path)
            assert status == want, (path, status, body)
    assert gw.request("GET", "/nowhere")[0] == 404


def test_a_running_gateway_shows_its_own_figures(e2e, upstreams, browser, tmp_path):
    gw = e2e.Gateway(_gateway_config(e2e, upstreams), tmp_path, "status").start()
    try:
        _traffic(gw)
        status, hdrs, body = gw.request("GET", "/_gw/")
        assert status == 200 and hdrs["Content-Type"] == "text/html; charset=utf-8" and body == PAGE
        assert gw.request("HEAD", "/_gw/")[0] == 200
        status, hdrs, body = gw.request("GET", "/_gw/stats")
        assert status == 200, (status, body[:300], gw.output()[-2000:])
        stats = json.loads(body)
        assert stats["requests"] > 0, stats
        by_name = {s["name"]: s for s in stats["services"]}
        assert {"sensors", "controller", "sensor-pool"} <= set(by_name), by_name

        url = "http://127.0.0.1:%d/_gw/" % gw.port
        dom = Dom(browser(url, "--dump-dom")[0])
        assert dom.text["m"].startswith("Updated "), dom.text["m"]
        shown = {row[0]: row for row in dom.rows("s")}
        for name in ("sensors", "controller", "sensor-pool"):
            assert shown[name][1] == str(by_name[name]["responses"]), (shown[name], by_name[name])
        assert int(shown["sensors"][1]) >= 8 and int(shown["sensor-pool"][1]) >= 6
        requests = int(dom.cards["Requests"])  # the page's own requests and reads count too
        assert stats["requests"] < requests <= stats["requests"] + 20, (requests, stats["requests"])
        assert dom.cards["p50"].endswith(" ms") and dom.cards["p99"].endswith(" ms"), dom.cards
        assert [row[0] for row in dom.rows("n")] == ["readings", "readings"], dom.tables
        if "breakers" in stats:
            assert dom.rows("b") and dom.rows("b")[0][1] == "closed", dom.tables

        os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
        if os.path.exists(ARTIFACT):
            os.remove(ARTIFACT)
        browser(url, "--screenshot=%s" % ARTIFACT)
        assert _png_size(ARTIFACT) == PHONE
        assert 5_000 < os.path.getsize(ARTIFACT) < 5_000_000, os.path.getsize(ARTIFACT)
    finally:
        gw.stop()


def test_status_page_false_is_404_and_leaves_the_figures(e2e, upstreams, tmp_path):
    gw = e2e.Gateway(_gateway_config(e2e, upstreams, status_page=False), tmp_path, "nopage").start()
    try:
        status, _, body = gw.request("GET", "/_gw/")
        assert status == 404 and json.loads(body)["status"] == 404, body
        assert gw.request("GET", "/_gw/stats")[0] == 200
    finally:
        gw.stop()


def test_with_an_auth_section_the_page_is_an_admins(e2e, upstreams, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    cfg["monitoring"] = {}
    gw = e2e.Gateway(cfg, tmp_path, "authpage").start()
    try:
        for path in ("/_gw/", "/_gw/stats"):
            status, hdrs, body = gw.request("GET", path)
            assert status == 401 and hdrs["WWW-Authenticate"], (path, status, dict(hdrs), body)
            assert PAGE not in body
            status, _, body = gw.request("GET", path, headers=USER)  # a user, not an Admin
            assert status == 403, (path, status, body)
        status, hdrs, body = gw.request("GET", "/_gw/", headers=ADMIN)
        assert status == 200 and body == PAGE and hdrs["Content-Type"] == "text/html; charset=utf-8"
    finally:
        gw.stop()


def test_a_basic_policy_lets_the_browser_sign_in_and_read_the_figures(e2e, upstreams, browser, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    cfg["auth"]["policies"]["monitor"] = {"schemes": ["basic"], "permissions": ["admin"]}
    cfg["monitoring"] = {"policy": "monitor"}
    gw = e2e.Gateway(cfg, tmp_path, "basicpage").start()
    try:
        status, hdrs, _ = gw.request("GET", "/_gw/")
        assert status == 401 and hdrs["WWW-Authenticate"].startswith("Basic "), dict(hdrs)
        assert gw.request("GET", "/api/sensors/temp")[0] == 200
        # The browser answers the challenge with the URL's credentials, then sends them with the
        # page's own reads of /_gw/stats (same origin, under /_gw/).
        dom = Dom(browser("http://admin:admin-pass@127.0.0.1:%d/_gw/" % gw.port, "--dump-dom")[0])
        assert dom.text["m"].startswith("Updated "), dom.text["m"]
        shown = {row[0]: row for row in dom.rows("s")}
        assert int(shown["sensors"][1]) >= 1, shown
    finally:
        gw.stop()

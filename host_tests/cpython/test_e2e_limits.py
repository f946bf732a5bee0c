"""End to end, the limits: timeouts (408, idle keep-alive), slot exhaustion (queue, 503 with
Retry-After), a flood of hanging clients, malformed input, and shutdown with work in flight.

These run against their own gateway (2 slots, a queue of 2, short timeouts), so the waits do not
slow the main suite; the malformed-input checks use the main gateway (no waiting involved).
"""

import json
import os
import random
import socket
import threading
import time

import pytest

PARTIAL = b"GET /health/ping HTTP/1.1\r\nHost: t\r\n"  # a head without its final CRLF
HEADER_TIMEOUT = 1.5
IDLE_TIMEOUT = 1.0
QUEUE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def limited(upstreams, e2e, tmp_path_factory):
    cfg = e2e.e2e_config(
        upstreams,
        e2e.free_port(),
        slots=2,
        queue_max=2,
        queue_timeout_ms=int(QUEUE_TIMEOUT * 1000),
        header_timeout_ms=int(HEADER_TIMEOUT * 1000),
        idle_timeout_ms=int(IDLE_TIMEOUT * 1000),
    )
    gw = e2e.Gateway(cfg, tmp_path_factory.mktemp("limited"), "limited").start()
    try:
        yield gw
    finally:
        gw.stop()


def _wait_idle(gw, timeout=5.0):
    """Poll /_gw/health until no other connection holds a slot or waits for one."""
    end = time.monotonic() + timeout
    while True:
        h = gw.health()
        if (h["slots_in_use"] <= 1 and h["queued"] == 0) or time.monotonic() > end:
            return h
        time.sleep(0.05)


def _check_error(r, status):
    assert r.status == status, r
    assert r.header("Content-Type") == "application/json" and r.header("Connection") == "close"
    assert r.json()["status"] == status


# -- timeouts ----------------------------------------------------------------------------------


def test_408_for_a_slow_head(limited):
    _wait_idle(limited)
    with limited.raw() as c:
        t0 = time.monotonic()
        c.send(PARTIAL)
        r = c.read_response()
        took = time.monotonic() - t0
        _check_error(r, 408)
        assert c.closed_within(2)
    assert HEADER_TIMEOUT - 0.05 <= took < HEADER_TIMEOUT + 1.0, took


def test_408_for_a_slow_body(limited):
    _wait_idle(limited)
    with limited.raw() as c:
        t0 = time.monotonic()
        c.send(b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        r = c.read_response()
        took = time.monotonic() - t0
        _check_error(r, 408)
        assert c.closed_within(2)
    assert HEADER_TIMEOUT - 0.05 <= took < HEADER_TIMEOUT + 1.0, took


def test_silent_connection_closed_without_an_answer(limited):
    _wait_idle(limited)
    with limited.raw() as c:
        t0 = time.monotonic()
        assert c.closed_within(HEADER_TIMEOUT + 2)  # nothing was sent: nothing to answer
        assert time.monotonic() - t0 >= HEADER_TIMEOUT - 0.05


def test_idle_keepalive_closed_after_idle_timeout(limited):
    _wait_idle(limited)
    with limited.raw() as c:
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.closed_within(IDLE_TIMEOUT + 2)
        took = time.monotonic() - t0
    assert IDLE_TIMEOUT - 0.05 <= took < IDLE_TIMEOUT + 1.0, took


def test_slow_trickle_does_not_extend_the_head_deadline(limited):
    """One byte every 200 ms never completes a head: 408 at the header timeout all the same."""
    _wait_idle(limited)
    with limited.raw() as c:
        t0 = time.monotonic()
        c.sock.settimeout(0.2)
        data = b"GET /health/ping HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 100
        got = b""
        for i in range(len(data)):
            try:
                c.send(data[i : i + 1])
            except OSError:
                break
            try:
                got = c.sock.recv(4096)
                if got:
                    break
            except TimeoutError:
                pass
            if time.monotonic() - t0 > HEADER_TIMEOUT + 2:
                break
        took = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408 "), got
    assert took < HEADER_TIMEOUT + 1.0, took


# -- slots, queue, flood ------------------------------------------------------------------------


def test_queued_connection_gets_an_idle_keepalive_slot(limited):
    """Both slots held by idle keep-alive clients: a new client waits, and the gateway closes an
    idle one to serve it (well before the queue timeout)."""
    _wait_idle(limited)
    idle = [limited.raw(), limited.raw()]
    try:
        for c in idle:
            c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
            assert c.read_response().status == 200
        t0 = time.monotonic()
        with limited.raw() as c:
            c.send(b"GET /api/sensors/temp HTTP/1.1\r\nHost: t\r\n\r\n")
            r = c.read_response()
            assert r.status == 200
        assert time.monotonic() - t0 < QUEUE_TIMEOUT, "the queued client waited for the queue timeout"
        assert sum(c.closed_within(0.5) for c in idle) >= 1
    finally:
        for c in idle:
            c.close()


def _flood_one(port, results, i):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as e:
        results[i] = ("connect", repr(e), 0.0)
        return
    t0 = time.monotonic()
    data = b""
    try:
        s.sendall(PARTIAL)
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    except ConnectionResetError:
        pass
    except OSError as e:
        results[i] = ("error", repr(e), time.monotonic() - t0)
        return
    finally:
        s.close()
    results[i] = ("ok", data, time.monotonic() - t0)


def _status_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = dict((k.lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), hdrs, body


def _retrying_get(gw, path, give_up_s=6.0):
    """A well-behaved client: on 503 it honours Retry-After and tries again, for up to give_up_s."""
    t0 = time.monotonic()
    tries = 0
    while True:
        tries += 1
        status, hdrs, body = gw.request("GET", path)
        if status != 503:
            return status, body, tries, time.monotonic() - t0
        wait = float(hdrs.get("Retry-After", "1"))
        assert wait <= 5
        if time.monotonic() - t0 + wait > give_up_s:
            raise AssertionError("still 503 after %d tries in %.1f s" % (tries, time.monotonic() - t0))
        time.sleep(wait)


def test_flood_of_hanging_clients(limited):
    _wait_idle(limited)
    before = limited.health()
    n = 10
    results = [None] * n
    threads = [threading.Thread(target=_flood_one, args=(limited.port, results, i)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let the flood take the slots and the queue first
    status, body, tries, _ = _retrying_get(limited, "/health/ping")
    assert status == 200 and body == b'{"ok": true}'
    assert tries >= 2, "the flood should have refused the first try"
    for t in threads:
        t.join(HEADER_TIMEOUT + 5)
    statuses = []
    for res in results:
        assert res is not None and res[0] == "ok", res
        code, hdrs, body = _status_of(res[1])
        statuses.append(code)
        assert hdrs["content-type"] == "application/json" and hdrs["connection"] == "close"
        assert json.loads(body)["status"] == code
        if code == 503:
            assert int(hdrs["retry-after"]) >= 1
            assert res[2] < QUEUE_TIMEOUT + 1.0  # refused at once, or after the queue timeout
        else:
            assert code == 408 and res[2] < HEADER_TIMEOUT + 1.0, res
    # the two in slots time out; the rest are refused (a connection the kernel accepted late
    # may still queue, get a slot and time out too)
    assert statuses.count(408) >= 2 and statuses.count(503) >= n // 2, statuses
    after = _wait_idle(limited)
    assert after["status"] == "ok" and after["slots_in_use"] == 1 and after["queued"] == 0
    assert after["slots_peak"] == 2
    print("\nflood: heap_used before %d, after %d (no gc in between)" % (before["heap_used"], after["heap_used"]))


def test_serves_normally_after_the_flood(limited):
    _wait_idle(limited)
    c = limited.conn()
    for i in range(5):
        c.request("GET", "/api/controller/after%d" % i)
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["path"] == "/v1/after%d" % i
    c.close()


# -- malformed input -----------------------------------------------------------------------------

SEEDS = [
    b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /api/sensors/temp?x=1 HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\n",
    b"POST /api/controller/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"GET /p/a/b/c HTTP/1.0\r\n\r\n",
    b"HEAD /public/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"PUT /m/config HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nab",
]
ALPHABET = b"\r\n :/%?#.\x00\x7f\xff\t-0123456789aAzZ"


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:  # replace a byte
            data[min(i, len(data) - 1)] = rng.choice(ALPHABET)
        elif op == 1:  # insert bytes
            data[i:i] = bytes(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 4)))
        elif op == 2 and data:  # delete a run
            del data[i : i + rng.randrange(1, 5)]
        elif op == 3:  # duplicate a run
            data[i:i] = data[i : i + rng.randrange(1, 12)]
        else:  # truncate
            del data[i:]
    return bytes(data)


def _exchange(port, data):
    """Send data, half-close, read everything: (bytes, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    out = b""
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed (reset) before all was sent: read what came back
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out, time.monotonic() - t0


def test_malformed_requests_never_crash_the_gateway(gateway):
    rng = random.Random(20240601)
    seen = {}
    for i in range(300):
        data = _mutate(rng, rng.choice(SEEDS))
        out, took = _exchange(gateway.port, data)
        assert took < 3, (data, out, took)
        pos = 0
        while pos < len(out):  # every answer in the stream is well-formed and never a 500
            assert out.startswith(b"HTTP/1.1 ", pos), (data, out)
            code = int(out[pos + 9 : pos + 12])
            assert code != 500, (data, out)
            seen[code] = seen.get(code, 0) + 1
            end = out.find(b"\r\n\r\n", pos)
            assert end > 0, (data, out)
            head = out[pos:end].lower()
            if b"connection: close" in head or b"transfer-encoding: chunked" in head:
                break  # the last answer on this connection (or a relayed chunked one)
            cl = 0
            if b"content-length:" in head and not data.startswith(b"HEAD"):
                cl = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            pos = end + 4 + cl
    assert seen.get(400, 0) > 10 and seen.get(200, 0) > 10, seen
    assert gateway.request("GET", "/health/ping")[0] == 200
    out = gateway.output()
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS ClientHello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # the HTTP/2 preface
        b"\r\n\r\n\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host on HTTP/1.1
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",  # absolute form
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1e3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: \x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX:" + b"v" * 8500 + b"\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / http/1.1\r\nHost: t\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.10\r\nHost: t\r\n\r\n",
        b"GET / HTTP/0.9\r\nHost: t\r\n\r\n",
    ],
)
def test_malformed_request_gets_a_4xx_or_5xx_json_answer(gateway, data):
    out, took = _exchange(gateway.port, data)
    assert took < 3
    if not out:
        return  # closed without an answer: acceptable for input that is not HTTP at all
    code, hdrs, body = _status_of(out)
    assert 400 <= code < 600 and code != 500, out
    assert json.loads(body)["status"] == code, out
    if code != 404:  # a request the parser refused ends the connection
        assert hdrs.get("connection") == "close", out


# -- shutdown ----------------------------------------------------------------------------------


def test_shutdown_lets_a_request_in_flight_finish(upstreams, e2e, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), shutdown_timeout_ms=3000)
    for svc in cfg["services"]:
        if svc["name"] == "slow":
            svc["timeout_ms"] = 5000
    gw = e2e.Gateway(cfg, tmp_path, "shutdown").start()
    try:
        idle = gw.raw()  # an idle keep-alive client must not hold the shutdown up
        idle.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.read_response().status == 200
        e2e.count(upstreams["slow"], reset=True)
        busy = gw.raw()
        busy.send(b"GET /slow?ms=700 HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 3
        while e2e.count(upstreams["slow"])["requests"] == 0:
            assert time.monotonic() < deadline, "the slow request never reached the upstream"
            time.sleep(0.02)
    except BaseException:
        gw.kill()
        raise
    out = gw.stop()
    r = busy.read_response()
    assert r.status == 200 and r.json()["slept_ms"] == 700
    assert busy.closed_within(2) and idle.closed_within(2)
    assert gw.stop_seconds < 3.0, gw.stop_seconds
    assert "Traceback" not in out, out


def test_shell_stop_command_shuts_the_gateway_down(upstreams, e2e, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), shell_port=e2e.free_port())
    gw = e2e.Gateway(cfg, tmp_path, "stopcmd").start()
    try:
        with socket.create_connection(("127.0.0.1", gw.shell_port), timeout=5) as s:
            s.sendall(b"gateway stop\n")
            data = b""
            while b"stopping" not in data:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
        assert b"stopping" in data
        gw.proc.wait(10)
    except BaseException:
        gw.kill()
        raise
    out = gw.output()
    gw.kill()
    assert "apigw stopped" in out, out
    assert "Traceback" not in out, out


def test_bad_config_at_boot_runs_the_last_good_one(upstreams, e2e, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    gw = e2e.Gateway(cfg, tmp_path, "fallback").start()
    gw.stop()  # a good boot saved fallback.good.json beside the config
    assert os.path.exists(os.path.join(str(tmp_path), "fallback.good.json"))
    bad = json.loads(json.dumps(cfg))
    bad["routes"].append({"path": "/broken", "service": "no-such-service"})
    gw.config = bad
    gw.start()
    try:
        c = gw.conn()
        c.request("GET", "/health/ping")
        r = c.getresponse()
        assert r.status == 200, r.status
        r.read()
        c.request("GET", "/broken")
        r = c.getresponse()
        assert r.status == 404  # the bad file's route is not there: the last good config runs
        r.read()
    except BaseException:
        gw.kill()
        raise
    out = gw.stop()
    n = len(cfg["routes"])
    assert "config error: routes[%d].service: unknown service 'no-such-service'" % n in out, out
    assert "running the last good config" in out, out

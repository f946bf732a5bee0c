"""End to end over HTTPS: the firmware on the unix port with listen.tls_cert / tls_key, a
development certificate from tools/devcert.py, and curl and Python's http.client / ssl as clients.

Checked: direct and proxied routes (the upstream stays plain HTTP), keep-alive on one TLS
session, pipelining (also past one slot buffer, where mbedTLS holds decrypted bytes the socket no
longer shows), a 100 KB proxied body, a 6 MB one to a slow reader (stalled TLS writes resume with
the same bytes), the 408 of a slow head, a plain-HTTP request and silent clients on the TLS port
(closed, the gateway keeps serving), the slot queue, no allocation per request, shutdown with TLS
connections open, and config errors naming the listen field. tools/devcert.py is checked on its
own (the files it writes, DER that parses, PEM to DER), and what one TLS session costs in the
Python heap is measured (pytest -s prints it).
"""

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import devcert  # noqa: E402  (tools/ on sys.path first)
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

HEADER_TIMEOUT = 1.5
PARTIAL = b"GET /health/ping HTTP/1.1\r\nHost: t\r\n"  # a head without its final CRLF


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    return devcert.make(str(d), ["localhost", "127.0.0.1"])


def _tls_config(e2e, upstreams, cert, **listen):
    listen.setdefault("header_timeout_ms", int(HEADER_TIMEOUT * 1000))
    listen.setdefault("queue_max", 1)
    return e2e.e2e_config(
        upstreams, e2e.free_port(), tls_cert=cert["cert.der"], tls_key=cert["key.der"], slots=3, **listen
    )


@pytest.fixture(scope="module")
def tgw(upstreams, e2e, cert, tmp_path_factory):
    """A gateway serving HTTPS (3 slots, a queue of 1, 1.5 s header timeout); stopped cleanly at
    the end."""
    gw = e2e.Gateway(_tls_config(e2e, upstreams, cert), tmp_path_factory.mktemp("tls"), "tls", tls_ca=cert["cert.pem"])
    gw.start()
    try:
        yield gw
    finally:
        out = gw.stop()
        assert "Traceback" not in out and "internal error" not in out, out[-3000:]


def _curl(e2e, cert, *args):
    exe = e2e.curl_exe()
    p = subprocess.run(
        [exe, "-sS", "--cacert", cert["cert.pem"], "--max-time", "10", *args], capture_output=True, timeout=20
    )
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def _wait_idle(gw, timeout=5.0):
    """Until only the health request itself holds a slot (earlier tests' connections are gone)."""
    end = time.monotonic() + timeout
    while True:
        h = gw.health()
        if h["slots_in_use"] <= 1 or time.monotonic() > end:
            return h
        time.sleep(0.05)


# -- tools/devcert.py --------------------------------------------------------------------------


def test_devcert_writes_der_for_the_board_and_pem_for_clients(tmp_path):
    files = devcert.make(str(tmp_path), ["gw.local", "192.168.4.1"])
    assert sorted(files) == ["cert.der", "cert.pem", "key.der", "key.pem"]
    with open(files["cert.der"], "rb") as f:
        crt = x509.load_der_x509_certificate(f.read())
    with open(files["key.der"], "rb") as f:
        key = serialization.load_der_private_key(f.read(), None)
    with open(files["cert.pem"], "rb") as f:
        assert x509.load_pem_x509_certificate(f.read()) == crt
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert crt.public_key() == key.public_key()
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.168.4.1"]
    assert os.stat(files["key.der"]).st_mode & 0o077 == 0  # the key is not world-readable


def test_devcert_rsa_and_convert(tmp_path):
    files = devcert.make(str(tmp_path / "rsa"), ["localhost"], use_rsa=True)
    with open(files["key.der"], "rb") as f:
        assert serialization.load_der_private_key(f.read(), None).key_size == 2048
    assert devcert.main(["convert", files["cert.pem"], str(tmp_path / "c.der")]) == 0
    assert devcert.main(["convert", files["key.pem"], str(tmp_path / "k.der")]) == 0
    with open(files["cert.der"], "rb") as a, open(str(tmp_path / "c.der"), "rb") as b:
        assert a.read() == b.read()
    with open(files["key.der"], "rb") as a, open(str(tmp_path / "k.der"), "rb") as b:
        assert a.read() == b.read()
    assert devcert.main(["convert", files["cert.der"], str(tmp_path / "x.der")]) == 1  # DER in: refused


def test_devcert_command_line(tmp_path):
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "devcert.py"), "make", "--out", str(tmp_path)],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    crt = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


# -- HTTPS with curl and http.client -----------------------------------------------------------


def test_curl_direct_and_proxied(tgw, e2e, cert):
    url = "https://127.0.0.1:%d" % tgw.port
    assert json.loads(_curl(e2e, cert, url + "/health/ping")) == {"ok": True}
    out = json.loads(_curl(e2e, cert, url + "/api/sensors/temp"))
    assert out["sensor"] == "temp"


def test_curl_reuses_one_tls_connection(tgw, e2e, cert):
    url = "https://127.0.0.1:%d" % tgw.port
    out = _curl(e2e, cert, "-w", "[%{http_code} %{num_connects}]", url + "/health/ping", url + "/api/sensors/temp")
    assert out.count(b"[200 ") == 2 and b"[200 1]" in out and b"[200 0]" in out, out


def test_curl_refuses_an_untrusted_certificate(tgw, e2e, tmp_path):
    other = devcert.make(str(tmp_path), ["127.0.0.1"])  # a different self-signed certificate
    p = subprocess.run(
        [e2e.curl_exe(), "-sS", "--cacert", other["cert.pem"], "https://127.0.0.1:%d/health/ping" % tgw.port],
        capture_output=True,
        timeout=20,
    )
    assert p.returncode != 0  # the client checks the server's certificate: ours is the only one it takes


def test_http_client_keep_alive_on_one_tls_connection(tgw):
    c = tgw.conn()
    try:
        first = None
        for i in range(12):
            path = "/api/sensors/temp" if i % 2 else "/health/ping"
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, (path, body)
            first = first or c.sock
            assert c.sock is first  # no reconnect: every request went over the first session
        assert c.sock.version() == "TLSv1.2"
    finally:
        c.close()


def test_pipelined_requests(tgw):
    reqs = b"".join(
        b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p
        for p in (b"/health/ping", b"/api/sensors/temp", b"/health/ping", b"/api/controller/x", b"/nope")
    )
    with tgw.raw() as c:
        c.send(reqs)
        got = [c.read_response() for _ in range(5)]
    assert [r.status for r in got] == [200, 200, 200, 200, 404]
    assert got[1].json()["sensor"] == "temp" and got[3].json()["path"] == "/v1/x"


def test_post_body_relayed(tgw):
    status, _, body = tgw.request(
        "POST", "/api/controller/echo", body=b'{"on":true}', headers={"Content-Type": "application/json"}
    )
    assert status == 200 and json.loads(body)["body"] == '{"on":true}'


def test_100_kb_proxied_body_intact(tgw):
    size = 100 * 1024
    c = tgw.conn()
    try:
        for _ in range(2):  # twice on one connection: the stream ends where its framing says
            c.request("GET", "/api/controller/big?size=%d" % size)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200 and len(body) == size
            assert body == sys.modules["demo_upstreams"].pattern(size)
    finally:
        c.close()


def test_slow_reader_gets_a_large_body_intact(tgw):
    """A client with a 4 KB receive window that starts reading late: past what the kernel
    buffers (tcp_wmem tops out at 4 MB) the gateway's TLS writes stall with a record half sent
    ("want write") and must resume with the same bytes, or the body comes out garbled."""
    size = 6 * 1024 * 1024
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(20)
    raw.connect(("127.0.0.1", tgw.port))
    with tgw.tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /api/controller/big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        time.sleep(0.5)  # the gateway fills the kernel's buffers and stalls
        data = bytearray()
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        end = data.index(b"\r\n\r\n") + 4
        head = bytes(data[:end])
        assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % size in head, head
        body = data[end:]
        while len(body) < size:
            chunk = s.recv(65536)
            assert chunk, len(body)
            body += chunk
    assert body == sys.modules["demo_upstreams"].pattern(size)


def test_pipelined_requests_beyond_one_slot_buffer(tgw):
    """300 requests (12 KB) in one TLS record: more than the 8 KB slot buffer takes, so mbedTLS
    keeps decrypted bytes the socket no longer shows; the gateway must still see them as readable."""
    req = b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n"
    with tgw.raw() as c:
        c.send(req * 300)
        got = [c.read_response().status for _ in range(300)]
    assert got == [200] * 300


def test_408_for_a_slow_head_over_tls(tgw):
    _wait_idle(tgw)
    with tgw.raw() as c:
        t0 = time.monotonic()
        c.send(PARTIAL)
        r = c.read_response()
        took = time.monotonic() - t0
        assert r.status == 408 and r.header("Connection") == "close", r
        assert c.closed_within(2)
    assert HEADER_TIMEOUT - 0.05 <= took < HEADER_TIMEOUT + 1.0, took


def test_plain_http_to_the_tls_port_gets_no_answer(tgw):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", tgw.port), timeout=5) as s:
            s.sendall(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            assert b"HTTP/" not in data  # closed (a TLS alert at most), and quickly: no 5 s wait
    assert tgw.health()["status"] == "ok"


def test_silent_clients_are_reaped(tgw):
    """A TCP client that never starts the handshake, and one that completes it and then sends
    nothing: both closed at the header timeout; the gateway serves on meanwhile."""
    _wait_idle(tgw)
    quiet = socket.create_connection(("127.0.0.1", tgw.port), timeout=5)
    shy = tgw.raw()
    t0 = time.monotonic()
    try:
        assert tgw.request("GET", "/health/ping")[0] == 200
        assert shy.closed_within(HEADER_TIMEOUT + 2)
        quiet.settimeout(HEADER_TIMEOUT + 2)
        try:
            assert quiet.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 >= HEADER_TIMEOUT - 0.1
    finally:
        quiet.close()
        shy.close()
    assert tgw.request("GET", "/api/sensors/temp")[0] == 200


def test_queued_connection_is_served_and_one_too_many_closed(tgw, e2e, upstreams):
    """All 3 slots busy (upstream requests in flight): the next TLS client waits in the queue and
    is served when a slot frees; the one after finds the queue full and is closed without an
    answer (a 503 would need a TLS session, the very memory the refusal saves)."""
    _wait_idle(tgw)
    busy = [tgw.raw() for _ in range(3)]
    try:
        e2e.count(upstreams["slow"], reset=True)
        for c in busy:
            c.send(b"GET /slow?ms=600 HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 3
        while e2e.count(upstreams["slow"])["requests"] < 3:
            assert time.monotonic() < deadline, ("the slow requests never reached the upstream", tgw.proc.poll())
            time.sleep(0.02)
        queued = socket.create_connection(("127.0.0.1", tgw.port), timeout=10)
        time.sleep(0.1)  # accepted and queued before the next one comes
        with socket.create_connection(("127.0.0.1", tgw.port), timeout=5) as extra:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                tgw.tls.wrap_socket(extra, server_hostname="127.0.0.1")
        with tgw.tls.wrap_socket(queued, server_hostname="127.0.0.1") as s:  # waits for its slot
            s.sendall(b"GET /health/ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert [c.read_response().status for c in busy] == [504] * 3  # the slow service's 400 ms
    finally:
        for c in busy:
            c.close()


def test_tls_keep_alive_requests_allocate_next_to_nothing(tgw):
    """As for plain HTTP (test_e2e.py): a request over an established TLS session allocates
    nothing in the Python heap, proxied or not (mbedTLS works in its own buffers)."""
    for path in ("/health/ping", "/api/sensors/temp"):
        c = tgw.conn()

        def get(p):
            c.request("GET", p)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, (p, body)
            return body

        for _ in range(20):
            get(path)
        a = json.loads(get("/_gw/health"))["alloc_total"]
        b = json.loads(get("/_gw/health"))["alloc_total"]
        n = 300
        for _ in range(n):
            get(path)
        d = json.loads(get("/_gw/health"))["alloc_total"]
        c.close()
        assert (d - b - (b - a)) / n < 64, (path, (d - b - (b - a)) / n)


def test_no_tracebacks_so_far(tgw):
    out = tgw.output()
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]


# -- shutdown and config errors ----------------------------------------------------------------


def test_shutdown_with_tls_connections_open(upstreams, e2e, cert, tmp_path):
    gw = e2e.Gateway(_tls_config(e2e, upstreams, cert), tmp_path, "tlsstop", tls_ca=cert["cert.pem"]).start()
    try:
        idle = gw.raw()
        idle.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.read_response().status == 200
        silent = gw.raw()  # handshake done, no request yet
    except BaseException:
        gw.kill()
        raise
    out = gw.stop()
    assert idle.closed_within(2) and silent.closed_within(2)
    assert gw.stop_seconds < 3.0, gw.stop_seconds
    assert "Traceback" not in out, out


def _boot_fails(e2e, cfg, tmp_path, name):
    """Run the firmware on cfg, which must not come up: its output."""
    path = os.path.join(str(tmp_path), name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, MICROPYPATH=":".join([e2e.FIRMWARE, e2e.BOARD_UNIX, ".frozen"]))
    p = subprocess.run(
        [e2e.micropython_exe(), "main.py", "--config", path],
        cwd=e2e.FIRMWARE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0 and "listening on" not in out, out
    return out


def test_missing_cert_file_is_a_config_error(upstreams, e2e, cert, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), tls_cert="no-such-cert.der", tls_key=cert["key.der"])
    out = _boot_fails(e2e, cfg, tmp_path, "nocert")
    # a relative path is taken from the config file's folder
    assert "listen.tls_cert: cannot read %s/no-such-cert.der" % tmp_path in out, out


def test_cert_without_key_is_a_config_error(upstreams, e2e, cert, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), tls_cert=cert["cert.der"])
    out = _boot_fails(e2e, cfg, tmp_path, "nokey")
    assert "listen.tls_key: required with listen.tls_cert" in out, out


def test_unusable_key_names_the_field(upstreams, e2e, cert, tmp_path):
    (tmp_path / "key.der").write_bytes(b"\x30\x03\x02\x01\x00")  # DER, but no key
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), tls_cert=cert["cert.der"], tls_key="key.der")
    out = _boot_fails(e2e, cfg, tmp_path, "badkey")
    assert "listen.tls_key: %s/key.der is not a usable DER private key" % tmp_path in out, out


def test_tls_module_errors_name_the_field(e2e, cert, tmp_path):
    """tls.server_context on the unix port: unreadable, non-DER (PEM) and junk files each name
    the listen field at fault; the DER pair from devcert loads."""
    script = (
        "from apigw import tls\n"
        "def check(c, k):\n"
        "    try:\n"
        "        tls.server_context(c, k)\n"
        "        print('loaded')\n"
        "    except tls.TLSError as e:\n"
        "        print(e)\n"
        "check(%r, %r)\n"
        "check('/no/such.der', %r)\n"
        "check(%r, %r)\n"
        "check(%r, %r)\n"
        % (
            cert["cert.der"],
            cert["key.der"],
            cert["key.der"],
            cert["cert.der"],
            cert["key.pem"],
            cert["key.der"],
            cert["key.der"],
        )
    )
    env = dict(os.environ, MICROPYPATH=":".join([e2e.FIRMWARE, ".frozen"]))
    p = subprocess.run([e2e.micropython_exe(), "-c", script], env=env, capture_output=True, timeout=30)
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0 and len(lines) == 4, (p.stdout, p.stderr)
    assert lines[0] == "loaded"
    assert lines[1].startswith("listen.tls_cert: cannot read /no/such.der"), lines
    assert lines[2] == "listen.tls_key: %s is not a usable DER private key (invalid key)" % cert["key.pem"], lines
    assert lines[3] == "listen.tls_cert: %s is not a usable DER certificate (invalid cert)" % cert["key.der"], lines


def test_relative_paths_start_in_the_config_folder(upstreams, e2e, cert, tmp_path):
    for name in ("cert.der", "key.der"):
        with open(cert[name], "rb") as src:
            (tmp_path / name).write_bytes(src.read())
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), tls_cert="cert.der", tls_key="key.der")
    gw = e2e.Gateway(cfg, tmp_path, "relative", tls_ca=cert["cert.pem"]).start()
    try:
        assert gw.request("GET", "/health/ping")[0] == 200
    except BaseException:
        gw.kill()
        raise
    gw.stop()


def test_config_fields_default_to_plain_http():
    from apigw.config import ConfigError, load_config_text
    from apigw.settings import Listen

    lc = Listen()
    assert lc.tls_cert == "" and lc.tls_key == ""
    assert load_config_text('{"listen": {"port": 8443}}').listen.tls_cert == ""
    with pytest.raises(ConfigError, match="listen.tls_cert: required with listen.tls_key"):
        load_config_text('{"listen": {"tls_key": "k.der"}}')
    with pytest.raises(ConfigError, match="listen.tls_key: must be a string"):
        load_config_text('{"listen": {"tls_cert": "c.der", "tls_key": 1}}')


_SESSION_SCRIPT = """
import gc, json, socket, ssl, sys, micropython
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read())
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(socket.getaddrinfo("127.0.0.1", int(sys.argv[3]))[0][-1])
s.listen(1)
print("ready")
c = s.accept()[0]
buf = bytearray(27)  # one request, exactly
answer = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"
gc.collect()
m0 = gc.mem_alloc()
t0 = micropython.mem_total()
t = ctx.wrap_socket(c, server_side=True, do_handshake_on_connect=False)
t.readinto(buf)  # blocking: the handshake, then the first request
gc.collect()
m1 = gc.mem_alloc()
t1 = micropython.mem_total()
t.write(answer)


def serve(t, buf, answer, n):
    for _ in range(n):
        t.readinto(buf)
        t.write(answer)


serve(t, buf, answer, 0)  # the function's first call, out of the count
t2 = micropython.mem_total()
serve(t, buf, answer, 20)
t3 = micropython.mem_total()
print(json.dumps({"live": m1 - m0, "handshake": t1 - t0, "per_request": (t3 - t2) / 20}))
t.close()
"""


def test_tls_session_cost_in_the_python_heap(e2e, cert, tmp_path):
    """What one TLS session takes from the Python heap on the unix port (gc.mem_alloc across the
    wrap and the handshake) and what a request over it allocates; printed with -s. The mbedTLS
    buffers are outside the Python heap (the C heap here, the IDF heap on an ESP32)."""
    script = tmp_path / "session.py"
    script.write_text(_SESSION_SCRIPT)
    port = e2e.free_port()
    p = subprocess.Popen(
        [e2e.micropython_exe(), str(script), cert["cert.der"], cert["key.der"], str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert p.stdout.readline().strip() == b"ready"
        ctx = ssl.create_default_context(cafile=cert["cert.pem"])
        with ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
        ) as s:
            for _ in range(21):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100).endswith(b"ok")
        out, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    got = json.loads(out.decode().strip().splitlines()[-1])
    print(
        "\nTLS session on the unix port: %(live)d B live in the Python heap, %(handshake)d B allocated by the "
        "wrap and handshake, %(per_request).0f B per request" % got
    )
    assert got["live"] < 2048 and got["per_request"] == 0, got

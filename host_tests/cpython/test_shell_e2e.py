"""End to end, the command shell: the running gateway's TCP shell (loopback), changes made there
seen by HTTP clients, and tools/gwshell.py in its three modes (TCP, offline config, serial,
the last over a pseudo-terminal that plays the board's console).
"""

import os
import re
import socket
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GWSHELL = os.path.join(ROOT, "tools", "gwshell.py")
PROMPT = b"apigw> "


class ShellClient:
    """A session on the gateway's TCP shell: one command line in, text up to the prompt out."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert self._until_prompt() == ""

    def _until_prompt(self):
        data = b""
        while not data.endswith(PROMPT):
            chunk = self.sock.recv(4096)
            assert chunk, "shell closed the connection after %r" % data
            data += chunk
        return data[: -len(PROMPT)].decode()

    def run(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self._until_prompt().rstrip("\n")

    def close(self):
        self.sock.close()


@pytest.fixture
def sh(gateway):
    c = ShellClient(gateway.shell_port)
    try:
        yield c
    finally:
        c.close()


def test_shell_listens_on_loopback_only(gateway):
    assert gateway.config["shell"]["host"] == "127.0.0.1"
    assert "shell on tcp 127.0.0.1:%d" % gateway.shell_port in gateway.output()


def test_help_lists_gateway_and_its_sub_commands(sh):
    out = sh.run("help")
    assert re.search(r"^gateway - ", out, re.M) and re.search(r"^help - ", out, re.M)
    for sub in ("routes", "services", "route", "add-route", "remove-route", "stats", "stop"):
        assert re.search(r"^  gateway %s\b" % sub, out, re.M), sub
    assert sh.run("help gateway").startswith("gateway - ")
    assert sh.run("gateway") == sh.run("help gateway")


def test_unknown_commands(sh):
    assert sh.run("frobnicate").startswith("error: unknown command 'frobnicate'")
    assert sh.run("gateway frob").startswith("error: unknown sub-command")
    assert sh.run("") == ""


def test_gateway_routes(sh):
    out = sh.run("gateway routes")
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "match", "path", "methods", "headers", "action"]
    text = "\n".join(lines[1:])
    assert re.search(r"\bsensors\s+prefix\s+/api/sensors\b.*-> sensors strip", text)
    assert re.search(r"\bcontroller\s+prefix\s+/api/controller\b.*rewrite=/v1", text)
    assert re.search(r"\bping\s+exact\s+/health/ping\s+GET,HEAD\b.*respond 200", text)
    assert re.search(r"\bapi-v2\b.*X-Api-Version=2", text, re.I)
    assert re.search(r"regex\s+\^/legacy/\[0-9\]\+\$", text)


def test_gateway_services(sh, upstreams):
    out = sh.run("gateway services")
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "address", "health", "timeout_ms", "routes"]
    rows = {ln.split()[1]: ln.split() for ln in lines[1:]}
    assert set(rows) == {
        "sensors",
        "controller",
        "slow",
        "flaky",
        "closed",
        "sensor-pool",
        "guarded-flaky",
        "guarded-slow",
    }
    assert rows["sensors"][2] == "127.0.0.1:%d" % upstreams["sensors"].port
    assert rows["slow"][4] == "400"


def test_gateway_route_decisions(sh, upstreams):
    out = sh.run("gateway route GET /api/sensors/temp")
    assert "forward to sensors 127.0.0.1:%d GET /temp" % upstreams["sensors"].port in out, out
    assert "prefix /api/sensors" in out
    out = sh.run("gateway route POST /api/config")
    assert out.startswith("405") and "Allow: GET" in out, out
    assert sh.run("gateway route GET /nothing/here").startswith("404")
    out = sh.run("gateway route GET /api/x X-Api-Version=2")
    assert "forward to controller" in out and "GET /v2/x" in out, out
    assert "respond 200" in sh.run("gateway route GET /health/ping")
    assert sh.run("gateway route GET").startswith("error: usage")


def test_added_route_serves_then_removed_route_404s(sh, gateway):
    assert gateway.request("GET", "/added")[0] == 404
    out = sh.run("gateway add-route /added respond=201 body=hi name=added")
    assert out.startswith("added route "), out
    status, hdrs, body = gateway.request("GET", "/added/x")
    assert (status, body) == (201, b"hi") and hdrs["Content-Type"] == "text/plain"
    assert "added" in sh.run("gateway routes")
    assert sh.run("gateway remove-route added") == "removed route added"
    status, _, body = gateway.request("GET", "/added")
    assert status == 404 and b"not_found" in body
    assert sh.run("gateway remove-route added").startswith("error:")


def test_added_proxy_route_and_removal_by_id(sh, gateway):
    out = sh.run("gateway add-route /shellproxy controller strip")
    rid = out.split()[-1]
    assert out.startswith("added route ") and rid.isdigit(), out
    status, _, body = gateway.request("GET", "/shellproxy/a/b?q=1")
    assert status == 200 and b'"path": "/a/b"' in body
    assert sh.run("gateway remove-route " + rid) == "removed route " + rid
    assert gateway.request("GET", "/shellproxy/a")[0] == 404


def test_add_route_errors(sh):
    assert sh.run("gateway add-route /x").startswith("error:")
    assert sh.run("gateway add-route /x nosuchservice").startswith("error:")
    assert sh.run("gateway add-route /_gw/x respond=200").startswith("error:")
    assert sh.run("gateway add-route /y respond=200 methods=FETCH").startswith("error:")


def _stats(sh):
    out = sh.run("gateway stats")
    vals = {}
    for line in out.splitlines():
        m = re.match(r"([a-z_ ]+?) (\d+)", line)
        if m:
            vals[m.group(1)] = int(m.group(2))
    return out, vals


def test_gateway_stats(sh, gateway):
    out, before = _stats(sh)
    for key in ("services", "routes", "uptime_s", "heap_free", "connections", "requests", "parse_errors"):
        assert key in before, (key, out)
    assert before["services"] == 8
    assert re.search(r"^slots \d+/4 \(peak \d+\)$", out, re.M), out
    assert re.search(r"^responses 2xx \d+ 4xx \d+ 5xx \d+$", out, re.M), out
    assert re.search(r"^upstream connects \d+ reuses \d+ idle \d+$", out, re.M), out
    for _ in range(3):
        assert gateway.request("GET", "/health/ping")[0] == 200
    _, after = _stats(sh)
    assert after["requests"] == before["requests"] + 3
    assert after["connections"] == before["connections"] + 3


def test_two_shell_sessions_at_once(gateway):
    a, b = ShellClient(gateway.shell_port), ShellClient(gateway.shell_port)
    try:
        assert "gateway - " in a.run("help")
        assert "gateway - " in b.run("help")
    finally:
        a.close()
        b.close()


# -- tools/gwshell.py ---------------------------------------------------------------------------


def _gwshell(*args, stdin=None):
    p = subprocess.run(
        [sys.executable, GWSHELL] + list(args),
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=30,
        text=True,
    )
    return p.returncode, p.stdout, p.stderr


def test_gwshell_tcp_one_command(gateway, upstreams):
    rc, out, err = _gwshell(
        "--tcp", "127.0.0.1:%d" % gateway.shell_port, "gateway", "route", "GET", "/api/sensors/temp"
    )
    assert rc == 0, err
    assert "forward to sensors 127.0.0.1:%d GET /temp" % upstreams["sensors"].port in out


def test_gwshell_tcp_error_exit_status(gateway):
    rc, out, _ = _gwshell("--tcp", "127.0.0.1:%d" % gateway.shell_port, "gateway", "nope")
    assert rc == 1 and out.startswith("error:")


def test_gwshell_tcp_commands_from_stdin(gateway):
    rc, out, err = _gwshell("--tcp", "127.0.0.1:%d" % gateway.shell_port, stdin="help\ngateway services\nexit\n")
    assert rc == 0, err
    assert "gateway - " in out and "controller" in out


def test_gwshell_tcp_refused(e2e):
    rc, _, err = _gwshell("--tcp", "127.0.0.1:%d" % e2e.free_port(), "help")
    assert rc == 3 and err.startswith("gwshell: ")  # 3: cannot reach the gateway


def test_gwshell_offline_config(gateway):
    rc, out, err = _gwshell("--config", gateway.config_path, "gateway", "route", "GET", "/api/controller/x")
    assert rc == 0, err
    assert "forward to controller" in out and "GET /v1/x" in out
    rc, out, _ = _gwshell("--config", gateway.config_path, "gateway", "stats")
    assert rc == 0 and "routes " in out


def test_gwshell_offline_bad_config(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"listen": {"prot": 1}}')
    rc, _, err = _gwshell("--config", str(bad), "help")
    assert rc == 1 and "listen.prot: unknown key" in err


def test_gwshell_serial_against_a_console_on_a_pty(gateway):
    """The board's console, played on a pseudo-terminal: echo what is typed, run it with the
    firmware's own Shell, print the output and the prompt."""
    pytest.importorskip("serial", reason="pyserial not installed: pip install pyserial (mpremote brings it)")
    import pty
    import tty

    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from apigw.config import load_config
    from apigw.shell import Shell

    shell = Shell(load_config(gateway.config_path).gateway)
    master, slave = pty.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def console():
        line = b""
        while not stop.is_set():
            try:
                ch = os.read(master, 1)
            except OSError:
                return
            if ch in (b"\r", b"\n"):
                if ch == b"\r":
                    text = shell.execute(line.decode())
                    os.write(
                        master, b"\r\n" + (text.replace("\n", "\r\n").encode() + b"\r\n" if text else b"") + PROMPT
                    )
                line = b""
            else:
                os.write(master, ch)  # the REPL-style echo
                line += ch

    t = threading.Thread(target=console, daemon=True)
    t.start()
    try:
        rc, out, err = _gwshell("--serial", os.ttyname(slave), "gateway", "route", "GET", "/api/sensors/temp")
        assert rc == 0, err
        assert out.startswith("route ") and "forward to sensors" in out, out
        assert "apigw>" not in out and "gateway route GET" not in out  # echo and prompt stripped
    finally:
        stop.set()
        os.close(master)
        os.close(slave)

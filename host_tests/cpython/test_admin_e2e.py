"""End to end, the admin API (/_gw/admin/) on the unix port: the Admin permission in front of every
path (401 without credentials, 403 for a user, 403 for everyone without an auth section), the shell
over HTTP, the config file as it is on disk, a config checked (422 naming the field), saved
atomically (nothing written when it does not load), applied by a reload on the same port, and still
in force after the gateway process restarts on the same files.

The configs live under tmp_path. Their listener takes 16 KB requests, so the whole e2e config fits
in a PUT body written exactly as the harness writes its config file (json indent=1).
"""

import base64
import copy
import json
import os
import socket
import time

import pytest

ADMIN = ("admin", "admin-pass")
USER = ("demo", "demo-pass")
BUFFER = 16384
NEW_PATH = "/admin-added"


def basic(who):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % who).encode()).decode()}


def as_file(cfg):
    """The bytes e2e.Gateway.start writes for cfg."""
    return json.dumps(cfg, indent=1).encode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def call(gw, method, path, body=None, who=ADMIN, ctype="application/json"):
    headers = basic(who) if who else {}
    if body is not None:
        headers["Content-Type"] = ctype
    status, hdrs, data = gw.request(method, path, body=body, headers=headers)
    return status, hdrs, data


def shell(gw, command, who=ADMIN):
    status, _, data = call(gw, "POST", "/_gw/admin/shell", json.dumps({"command": command}), who)
    return status, json.loads(data)


def with_route(cfg):
    """cfg plus one respond route."""
    new = copy.deepcopy(cfg)
    new["routes"].append(
        {"name": "added", "path": NEW_PATH, "match": "exact", "respond": {"status": 200, "body": "added by PUT"}}
    )
    return new


def bad_service(cfg):
    """cfg with a route that names a service nobody defined; returns (config, its route index)."""
    bad = copy.deepcopy(cfg)
    bad["routes"].append({"path": "/nowhere", "service": "x"})
    return bad, len(bad["routes"]) - 1


def good_path(gw):
    return os.path.join(gw.workdir, gw.name + ".good.json")


@pytest.fixture(scope="module")
def gw(e2e, upstreams, tmp_path_factory):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), request_buffer=BUFFER)
    g = e2e.Gateway(cfg, tmp_path_factory.mktemp("admin"), "admin").start()
    try:
        yield g
    finally:
        g.stop()


# -- who may call it -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/_gw/admin/shell"),
        ("GET", "/_gw/admin/config"),
        ("PUT", "/_gw/admin/config"),
        ("POST", "/_gw/admin/config/validate"),
        ("POST", "/_gw/admin/reload"),
        ("GET", "/_gw/admin/nothing-here"),
    ],
)
def test_every_path_needs_credentials_then_the_admin_permission(gw, method, path):
    body = "{}" if method in ("POST", "PUT") else None
    status, hdrs, data = call(gw, method, path, body, who=None)
    assert status == 401 and hdrs["WWW-Authenticate"], data
    status, _, data = call(gw, method, path, body, who=USER)
    assert status == 403 and json.loads(data)["error"] == "forbidden", data
    assert gw.health()["status"] == "ok"  # a user's reload stopped nothing


def test_methods_and_unknown_paths(gw):
    for method, path, allow in (
        ("GET", "/_gw/admin/shell", "POST"),
        ("DELETE", "/_gw/admin/config", "GET, HEAD, PUT"),
        ("GET", "/_gw/admin/config/validate", "POST"),
        ("GET", "/_gw/admin/reload", "POST"),
    ):
        status, hdrs, _ = call(gw, method, path)
        assert (status, hdrs["Allow"]) == (405, allow), (method, path)
    for path in ("/_gw/admin/", "/_gw/admin/nothing-here", "/_gw/admin/config/other"):
        status, _, data = call(gw, "GET", path)
        doc = json.loads(data)
        assert (status, doc["status"], doc["error"]) == (404, 404, "not_found"), path


# -- the shell -------------------------------------------------------------------------------------


def test_shell_command_output(gw):
    status, doc = shell(gw, "gateway routes")
    assert status == 200
    lines = doc["output"].splitlines()
    assert lines[0].split()[:3] == ["id", "name", "match"]
    assert any(" ping " in line for line in lines) and any(" secure " in line for line in lines)
    status, _, data = call(gw, "POST", "/_gw/admin/shell", "help gateway\n", ctype="text/plain")
    assert status == 200 and json.loads(data)["output"].startswith("gateway - ")


def test_shell_keeps_its_state_and_changes_the_running_gateway(gw):
    status, doc = shell(gw, "gateway add-route /shell-added respond=200 body=hello name=shell-added")
    assert status == 200 and doc["output"].startswith("added route "), doc
    try:
        status, _, body = gw.request("GET", "/shell-added")
        assert (status, body) == (200, b"hello")
    finally:
        assert shell(gw, "gateway remove-route shell-added")[0] == 200
    assert gw.request("GET", "/shell-added")[0] == 404


@pytest.mark.parametrize(
    "body, ctype, words",
    [
        ('{"command": "gateway route GET"}', "application/json", "usage: gateway route"),
        ('{"command": "nosuch"}', "application/json", "unknown command 'nosuch'"),
        ('{"command": "   "}', "application/json", "empty"),
        ('{"cmd": "help"}', "application/json", '{"command"'),
        ("{not json", "application/json", "not valid JSON"),
        ("help\ngateway routes", "text/plain", "one command line"),
        ("", "text/plain", "empty"),
    ],
)
def test_shell_errors_are_400_with_the_message(gw, body, ctype, words):
    status, _, data = call(gw, "POST", "/_gw/admin/shell", body, ctype=ctype)
    doc = json.loads(data)
    assert (status, doc["status"], doc["error"]) == (400, 400, "bad_request"), data
    assert words in doc["message"]


def test_shell_may_not_stop_the_gateway(gw):
    status, doc = shell(gw, "gateway stop")
    assert status == 403 and doc["error"] == "forbidden" and "reload" in doc["message"]
    time.sleep(0.2)
    assert gw.health()["status"] == "ok"


# -- the config file -------------------------------------------------------------------------------


def test_config_get_is_the_file_on_disk(gw):
    on_disk = read(gw.config_path)
    assert len(on_disk) > 2048  # more than one I/O buffer: sent in pieces
    status, hdrs, data = call(gw, "GET", "/_gw/admin/config")
    assert status == 200 and data == on_disk
    assert hdrs["Content-Type"] == "application/json" and hdrs["Cache-Control"] == "no-store"
    status, hdrs, data = call(gw, "HEAD", "/_gw/admin/config")
    assert (status, data, int(hdrs["Content-Length"])) == (200, b"", len(on_disk))
    with gw.raw() as r:  # keep-alive: the next request on the same connection is answered
        auth = basic(ADMIN)["Authorization"]
        r.send(b"GET /_gw/admin/config HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % auth.encode())
        r.send(b"GET /_gw/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.read_response().body == on_disk
        assert r.read_response().json()["status"] == "ok"


def test_validate(gw):
    status, _, data = call(gw, "POST", "/_gw/admin/config/validate", read(gw.config_path))
    assert (status, json.loads(data)) == (200, {"valid": True})
    bad, i = bad_service(gw.config)
    status, _, data = call(gw, "POST", "/_gw/admin/config/validate", json.dumps(bad))
    doc = json.loads(data)
    assert (status, doc["status"], doc["error"]) == (422, 422, "invalid_config"), data
    assert doc["message"] == "routes[%d].service: unknown service 'x'" % i
    for body, field in (
        ('{"listen": {"port": 0}}', "listen.port"),
        ('{"listen": {"slots": 4}, "nonsense": 1}', "nonsense"),
        ('{"routes": [', "config: unexpected end of file"),
    ):
        status, _, data = call(gw, "POST", "/_gw/admin/config/validate", body)
        assert status == 422 and json.loads(data)["message"].startswith(field), data
    assert gw.health()["status"] == "ok"


def test_put_invalid_config_writes_nothing(gw):
    before, good_before = read(gw.config_path), read(good_path(gw))
    bad, i = bad_service(gw.config)
    status, _, data = call(gw, "PUT", "/_gw/admin/config", as_file(bad))
    assert status == 422 and json.loads(data)["message"].startswith("routes[%d].service" % i), data
    assert read(gw.config_path) == before and read(good_path(gw)) == good_before
    assert not os.path.exists(gw.config_path + ".tmp")


# -- save, reload, restart -------------------------------------------------------------------------


def wait_for(gw, path, timeout=10.0):
    """Poll until GET path is 200 (the gateway is down for a moment while it reloads)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = gw.request("GET", path, timeout=2)
            if last[0] == 200:
                return last
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError("%s did not answer 200 within %.0f s (last: %r)\n%s" % (path, timeout, last, gw.output()))


def test_put_reload_and_restart(e2e, upstreams, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), request_buffer=BUFFER)
    gw = e2e.Gateway(cfg, tmp_path, "saved").start()
    try:
        old = read(gw.config_path)
        assert read(good_path(gw)) == old  # the boot load kept the last good copy
        assert gw.request("GET", NEW_PATH)[0] == 404
        heap_before = gw.health()["heap_used"]

        new = with_route(cfg)
        status, _, data = call(gw, "PUT", "/_gw/admin/config", as_file(new))
        assert (status, json.loads(data)) == (200, {"saved": True, "reload": "POST /_gw/admin/reload to apply"})
        assert read(gw.config_path) == as_file(new)
        assert read(good_path(gw)) == old  # still the last config that loaded
        assert gw.request("GET", NEW_PATH)[0] == 404  # saved, not applied yet

        status, hdrs, data = call(gw, "POST", "/_gw/admin/reload")
        assert (status, json.loads(data)) == (202, {"reloading": True})
        assert hdrs["Connection"] == "close"
        assert wait_for(gw, NEW_PATH)[2] == b"added by PUT"  # the same port
        assert "apigw: reloading " in gw.output() and "config error" not in gw.output()
        assert read(good_path(gw)) == as_file(new)  # it loaded: now the last good copy
        h = gw.health()
        assert h["status"] == "ok" and h["routes"] == len(new["routes"])
        # The old server's slots and tables went before the new ones were made.
        assert h["heap_used"] < heap_before + 64 * 1024, (heap_before, h["heap_used"])
        status, doc = shell(gw, "gateway routes")  # the admin API on the new server
        assert status == 200 and " added " in doc["output"]
        assert gw.request("GET", "/health/ping")[0] == 200

        gw.stop()
        gw.config = new  # start() writes exactly the bytes the PUT saved: the file stays as it is
        gw.start()
        assert read(gw.config_path) == as_file(new)
        status, _, body = gw.request("GET", NEW_PATH)
        assert (status, body) == (200, b"added by PUT")
    finally:
        gw.stop()


def test_reload_twice_keeps_serving_and_the_tcp_shell_follows(e2e, upstreams, tmp_path):
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), shell_port=e2e.free_port())
    gw = e2e.Gateway(cfg, tmp_path, "twice").start()
    try:
        with socket.create_connection(("127.0.0.1", gw.shell_port), timeout=5) as sh:
            assert _prompt(sh) == ""
            for n in range(2):
                assert call(gw, "POST", "/_gw/admin/reload")[0] == 202
                time.sleep(0.3)
                wait_for(gw, "/health/ping")
                # The same shell session now drives the new server.
                sh.sendall(b"gateway add-route /from-shell-%d respond=200 body=shell%d\n" % (n, n))
                assert _prompt(sh).startswith("added route ")
                assert gw.request("GET", "/from-shell-%d" % n)[2] == b"shell%d" % n
        assert gw.output().count("apigw: reloading ") == 2
        assert gw.output().count("shell on tcp ") == 1  # started once, kept across reloads
    finally:
        gw.stop()


def _prompt(sock):
    data = b""
    while not data.endswith(b"apigw> "):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data[: -len(b"apigw> ")].decode().strip()


def test_without_an_auth_section_the_admin_api_is_closed(e2e, tmp_path):
    cfg = {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port()},
        "routes": [{"path": "/health/ping", "respond": {"status": 200, "body": "pong"}}],
    }
    gw = e2e.Gateway(cfg, tmp_path, "open").start()
    try:
        for method, path in (("POST", "/_gw/admin/shell"), ("GET", "/_gw/admin/config"), ("POST", "/_gw/admin/reload")):
            for who in (None, ADMIN):
                status, _, data = call(gw, method, path, "help" if method == "POST" else None, who, "text/plain")
                assert status == 403, (method, path, data)
                assert json.loads(data) == {
                    "status": 403,
                    "error": "forbidden",
                    "message": "the admin API needs an auth section",
                }
        assert gw.request("GET", "/health/ping")[0] == 200
    finally:
        gw.stop()

"""End to end, tools/gwshell.py against the admin API of the firmware on the unix port (--url):
each kind of Admin credential (Basic from a flag, the environment or not at all, a token, an API
key), what a refusal, a missing server and a usage error exit with, the config file fetched,
checked (the error names the field), saved and applied by a reload, --json for every kind of
command and failure, --help, interactive mode, and HTTPS with the development certificate.

The gateway runs boards/unix/gateway.json as test_admin_e2e.py starts it (its helpers are reused),
plus an API key with the admin role. gwshell runs as a subprocess, as a user runs it.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import test_admin_e2e as admin  # the admin API suite's helpers (this folder is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GWSHELL = os.path.join(ROOT, "tools", "gwshell.py")
ADMIN_KEY = "ad0ad0ad.admin-key-for-gwshell-tests-only"  # <8 hex>.<32 chars>
SECRETS = ("admin-pass", ADMIN_KEY)  # never in gwshell's output (and the token: checked where used)


def with_admin_key(cfg):
    cfg["auth"]["api_keys"].append(
        {
            "id": ADMIN_KEY[:8],
            "digest": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
            "role": "admin",
            "permissions": ["read", "write", "admin"],
        }
    )
    return cfg


def start(e2e, upstreams, workdir, name, **listen):
    cfg = with_admin_key(e2e.e2e_config(upstreams, e2e.free_port(), request_buffer=admin.BUFFER, **listen))
    return e2e.Gateway(cfg, workdir, name).start()


@pytest.fixture(scope="module")
def gw(e2e, upstreams, tmp_path_factory):
    g = start(e2e, upstreams, tmp_path_factory.mktemp("gwshell"), "cli")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def token(gw):
    """An Admin's access token from the gateway's token endpoint."""
    hdrs = dict(admin.basic(admin.ADMIN), **{"Content-Type": "application/x-www-form-urlencoded"})
    status, _, data = gw.request("POST", "/_gw/token", body="grant_type=client_credentials", headers=hdrs)
    assert status == 200, data
    return json.loads(data)["access_token"]


def gwshell(*args, env=None, stdin="", shows_config=False):
    """(exit code, stdout, stderr) of tools/gwshell.py; no APIGW_* variable from the caller.
    shows_config: stdout is the config file, whose comment names the demo passwords."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("APIGW_")}
    p = subprocess.run(
        [sys.executable, GWSHELL] + list(args),
        input=stdin,
        env=dict(base, **(env or {})),
        capture_output=True,
        timeout=60,
        text=True,
    )
    for secret in SECRETS:
        assert secret not in p.stderr and (shows_config or secret not in p.stdout)
    return p.returncode, p.stdout, p.stderr


def url(gw):
    return "http://127.0.0.1:%d" % gw.port


def as_admin(gw, *args, **kw):
    return gwshell("--url", url(gw), "--user", "admin", *args, env={"APIGW_PASSWORD": "admin-pass"}, **kw)


def json_doc(out):
    lines = out.splitlines()
    assert len(lines) == 1, out  # one document, one line
    return json.loads(lines[0])


def routes_table(out):
    return out.splitlines()[0].split()[:3] == ["id", "name", "match"] and " ping " in out


# -- credentials and exit codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["password-flag", "password-env", "token-flag", "token-env", "key-flag", "key-env"],
)
def test_each_credential_runs_a_shell_command(gw, token, how):
    args, env = {
        "password-flag": (["--user", "admin", "--password", "admin-pass"], {}),
        "password-env": (["--user", "admin"], {"APIGW_PASSWORD": "admin-pass"}),
        "token-flag": (["--token", token], {}),
        "token-env": ([], {"APIGW_TOKEN": token}),
        "key-flag": (["--key", ADMIN_KEY], {}),
        "key-env": ([], {"APIGW_KEY": ADMIN_KEY}),
    }[how]
    rc, out, err = gwshell("--url", url(gw), *args, "gateway", "routes", env=env)
    assert rc == 0, err
    assert routes_table(out), out
    assert token not in out + err


def test_the_output_is_the_consoles(gw):
    rc, out, _ = as_admin(gw, "gateway", "route", "GET", "/health/ping")
    assert rc == 0
    _, offline, _ = gwshell("--config", gw.config_path, "gateway", "route", "GET", "/health/ping")
    assert out == offline and "respond 200" in out


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["--user", "admin", "--password", "not-the-pass"], {}, "invalid_credentials"),
        (["--user", "demo"], {"APIGW_PASSWORD": "demo-pass"}, "forbidden"),  # a user, not an Admin
        (["--key", "de0de0de.demo-key-for-the-unix-board-only"], {}, "forbidden"),
        ([], {}, "needs --user, --token or --key"),
        (["--token", "not.a.token"], {}, "invalid_token"),
    ],
)
def test_refused_credentials_exit_4(gw, args, env, words):
    rc, out, err = gwshell("--url", url(gw), *args, "gateway", "routes", env=env)
    assert rc == 4 and out == "" and words in err, err
    assert "not-the-pass" not in err and "demo-pass" not in err


def test_gateway_stop_is_refused_and_the_gateway_keeps_serving(gw):
    rc, _, err = as_admin(gw, "gateway", "stop")
    assert rc == 4 and "reload" in err
    assert gw.health()["status"] == "ok"


def test_user_without_a_password_and_no_terminal_is_a_usage_error(gw):
    rc, out, err = gwshell("--url", url(gw), "--user", "admin", "gateway", "routes")  # stdin is a pipe
    assert rc == 2 and out == "" and "APIGW_PASSWORD" in err


def test_no_server_exits_3(e2e):
    port = e2e.free_port()
    for args in (
        ["--url", "http://127.0.0.1:%d" % port, "--key", ADMIN_KEY, "gateway", "routes"],
        ["--url", "http://127.0.0.1:%d" % port, "health"],
        ["--tcp", "127.0.0.1:%d" % port, "help"],
    ):
        rc, out, err = gwshell(*args)
        assert rc == 3 and out == "" and err.startswith("gwshell: ") and "refused" in err, (args, err)


def test_serial_port_missing_exits_3(tmp_path):
    pytest.importorskip("serial", reason="pyserial not installed: pip install pyserial (mpremote brings it)")
    rc, _, err = gwshell("--serial", str(tmp_path / "ttyNONE"), "help")
    assert rc == 3 and str(tmp_path / "ttyNONE") in err


def test_unknown_shell_command_exits_1(gw):
    rc, out, _ = as_admin(gw, "frobnicate")
    assert rc == 1 and out.startswith("error: unknown command 'frobnicate'")
    rc, out, _ = as_admin(gw, "gateway", "route", "GET")
    assert rc == 1 and out.startswith("error: usage: gateway route")


@pytest.mark.parametrize(
    "args",
    [
        [],  # no mode
        ["--url", "http://127.0.0.1:1", "--tcp", "127.0.0.1:1", "help"],  # two modes
        ["--url", "ftp://127.0.0.1:1", "help"],
        ["--url", "http://127.0.0.1:1/admin", "help"],
        ["--url", "http://127.0.0.1:1", "--password", "x", "help"],  # without --user
        ["--url", "http://127.0.0.1:1", "--user", "a", "--key", "k", "help"],  # two credentials
        ["--tcp", "127.0.0.1:1", "--user", "admin", "help"],  # credentials are for --url
        ["--url", "http://127.0.0.1:1", "--timeout", "zero", "health"],
        ["--url", "http://127.0.0.1:1", "config"],
        ["--url", "http://127.0.0.1:1", "config", "frob"],
        ["--url", "http://127.0.0.1:1", "config", "validate"],
        ["--url", "http://127.0.0.1:1", "config", "put", "a.json", "--force"],
        ["--url", "http://127.0.0.1:1", "config", "get", "-o"],
        ["--url", "http://127.0.0.1:1", "health", "now"],
    ],
)
def test_usage_errors_exit_2(args):
    rc, out, err = gwshell(*args)
    assert rc == 2 and out == "" and err, (args, rc, out, err)


def test_admin_api_commands_need_url(gw):
    rc, out, err = gwshell("--config", gw.config_path, "config", "get")
    assert rc == 2 and "--url" in err


def test_help_shows_every_mode_and_the_exit_codes():
    rc, out, _ = gwshell("--help")
    assert rc == 0
    for word in ("--tcp", "--serial", "--config", "--url", "--user", "--token", "--key", "--json", "--cacert"):
        assert word in out, word
    for word in ("config get", "config validate", "config put", "reload", "health", "APIGW_PASSWORD"):
        assert word in out, word
    for code in range(5):
        assert "\n  %d  " % code in out, code


# -- the config ------------------------------------------------------------------------------------


def test_config_get_is_the_file(gw, tmp_path):
    on_disk = admin.read(gw.config_path)
    p = subprocess.run(
        [sys.executable, GWSHELL, "--url", url(gw), "--key", ADMIN_KEY, "config", "get"],
        capture_output=True,
        timeout=30,
    )
    assert p.returncode == 0 and p.stdout == on_disk, p.stderr
    rc, out, err = gwshell("--url", url(gw), "--key", ADMIN_KEY, "config", "get", "-o", str(tmp_path / "got.json"))
    assert rc == 0 and "got.json" in out, err
    assert admin.read(str(tmp_path / "got.json")) == on_disk


def test_config_validate(gw, tmp_path):
    rc, out, err = as_admin(gw, "config", "validate", gw.config_path)
    assert rc == 0 and out.strip() == gw.config_path + ": valid", err
    bad, i = admin.bad_service(gw.config)
    f = tmp_path / "bad.json"
    f.write_bytes(admin.as_file(bad))
    rc, out, err = as_admin(gw, "config", "validate", str(f))
    assert rc == 1 and out == ""
    assert "routes[%d].service: unknown service 'x'" % i in err and "422" in err, err
    rc, _, err = as_admin(gw, "config", "validate", str(tmp_path / "missing.json"))
    assert rc == 1 and "cannot read" in err


def test_config_put_refused_names_the_field_and_writes_nothing(gw, tmp_path):
    before = admin.read(gw.config_path)
    bad, i = admin.bad_service(gw.config)
    f = tmp_path / "bad.json"
    f.write_bytes(admin.as_file(bad))
    rc, _, err = as_admin(gw, "config", "put", str(f), "--reload")
    assert rc == 1 and "routes[%d].service: unknown service 'x'" % i in err, err
    assert admin.read(gw.config_path) == before
    assert gw.health()["status"] == "ok"


def test_config_put_then_reload(e2e, upstreams, tmp_path):
    g = start(e2e, upstreams, tmp_path, "put")
    try:
        new = admin.with_route(g.config)
        f = tmp_path / "new.json"
        f.write_bytes(admin.as_file(new))
        rc, out, err = as_admin(g, "config", "put", str(f))
        assert rc == 0 and "reload" in out, err
        assert admin.read(g.config_path) == admin.as_file(new)
        assert g.request("GET", admin.NEW_PATH)[0] == 404  # saved, not applied
        rc, out, err = as_admin(g, "reload")
        assert rc == 0 and out.startswith("reloaded: %d routes" % len(new["routes"])), (out, err)
        assert g.request("GET", admin.NEW_PATH)[2] == b"added by PUT"  # answered at once: the CLI waited

        newer = admin.with_route(new)
        newer["routes"][-1].update(path="/added-by-cli", name="added-cli", respond={"status": 200, "body": "cli"})
        f.write_bytes(admin.as_file(newer))
        rc, out, err = as_admin(g, "config", "put", str(f), "--reload")
        assert rc == 0 and out.splitlines()[-1].startswith("reloaded: %d routes, " % len(newer["routes"])), (out, err)
        assert g.request("GET", "/added-by-cli")[2] == b"cli"
        assert g.output().count("apigw: reloading ") == 2 and "config error" not in g.output()
    finally:
        g.stop()


# -- --json ----------------------------------------------------------------------------------------


def test_json_shell(gw):
    rc, out, _ = as_admin(gw, "--json", "gateway", "routes")
    doc = json_doc(out)
    assert rc == 0 and doc["ok"] is True and doc["command"] == "gateway routes" and routes_table(doc["output"])
    rc, out, _ = as_admin(gw, "--json", "nosuch")
    doc = json_doc(out)
    assert rc == 1 and doc["ok"] is False and doc["error"] == "bad_request" and "nosuch" in doc["message"]
    for mode in (["--tcp", "127.0.0.1:%d" % 1], ["--config", gw.config_path]):
        rc, out, _ = gwshell(*mode, "--json", "gateway", "routes")
        doc = json_doc(out)
        if mode[0] == "--tcp":
            assert rc == 3 and doc == {"ok": False, "error": "unreachable", "message": doc["message"]}
        else:
            assert rc == 0 and doc["ok"] is True and routes_table(doc["output"])
    rc, out, _ = gwshell("--config", gw.config_path, "--json", "gateway", "frob")
    doc = json_doc(out)
    assert rc == 1 and (doc["ok"], doc["error"]) == (False, "command_failed") and doc["output"].startswith("error:")


def test_json_health_and_config(gw, tmp_path):
    rc, out, _ = gwshell("--url", url(gw), "--json", "health")  # public: no credentials
    doc = json_doc(out)
    assert rc == 0 and doc["ok"] is True and doc["status"] == "ok" and doc["routes"] == len(gw.config["routes"])
    rc, out, _ = as_admin(gw, "--json", "config", "get", shows_config=True)
    doc = json_doc(out)
    assert rc == 0 and doc["ok"] is True and doc["config"] == json.loads(admin.read(gw.config_path))
    rc, out, _ = as_admin(gw, "--json", "config", "validate", gw.config_path)
    assert rc == 0 and json_doc(out) == {"valid": True, "ok": True, "command": "config validate " + gw.config_path}
    bad, i = admin.bad_service(gw.config)
    f = tmp_path / "bad.json"
    f.write_bytes(admin.as_file(bad))
    for command in ("validate", "put"):
        rc, out, _ = as_admin(gw, "--json", "config", command, str(f))
        doc = json_doc(out)
        assert rc == 1 and (doc["ok"], doc["status"], doc["error"]) == (False, 422, "invalid_config"), doc
        assert doc["message"] == "routes[%d].service: unknown service 'x'" % i


def test_json_failures(gw, e2e):
    rc, out, _ = gwshell("--url", url(gw), "--user", "admin", "--password", "nope", "--json", "gateway", "routes")
    doc = json_doc(out)
    assert rc == 4 and (doc["ok"], doc["status"], doc["error"]) == (False, 401, "invalid_credentials")
    rc, out, _ = gwshell("--url", "http://127.0.0.1:%d" % e2e.free_port(), "--json", "health")
    doc = json_doc(out)
    assert rc == 3 and (doc["ok"], doc["error"]) == (False, "unreachable")
    rc, out, _ = gwshell("--url", url(gw), "--json", "config", "frob")
    doc = json_doc(out)
    assert rc == 2 and (doc["ok"], doc["error"]) == (False, "usage")
    rc, out, _ = gwshell("--json", "help")  # argparse's own usage error
    doc = json_doc(out)
    assert rc == 2 and (doc["ok"], doc["error"]) == (False, "usage") and "--url" in doc["message"]


# -- interactive, HTTPS ----------------------------------------------------------------------------


def test_interactive_over_url(gw):
    rc, out, err = as_admin(gw, stdin="gateway routes\n\nhealth\nnosuch\nexit\ngateway services\n")
    assert rc == 0, err
    assert routes_table(out) and "status: ok" in out and "error: unknown command 'nosuch'" in out
    assert "timeout_ms" not in out  # stopped at exit: no services table
    rc, out, _ = as_admin(gw, "--json", stdin="gateway routes\nhealth\n")
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [d["command"] for d in docs] == ["gateway routes", "health"]


def test_https_with_the_development_certificate(e2e, upstreams, tmp_path):
    pytest.importorskip("cryptography", reason="tools/devcert.py needs it: pip install -r requirements.txt")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import devcert

    cert = devcert.make(str(tmp_path / "cert"), ["localhost", "127.0.0.1"])
    g = start(e2e, upstreams, tmp_path, "tls", tls_cert=cert["cert.der"], tls_key=cert["key.der"])
    try:
        base = "https://127.0.0.1:%d" % g.port
        rc, out, err = gwshell("--url", base, "--cacert", cert["cert.pem"], "--key", ADMIN_KEY, "gateway", "routes")
        assert rc == 0 and routes_table(out), err
        rc, out, err = gwshell("--url", base, "--insecure", "health")
        assert rc == 0 and "status: ok" in out, err
        rc, out, err = gwshell("--url", base, "--key", ADMIN_KEY, "gateway", "routes")  # not trusted
        assert rc == 3 and "--cacert" in err, err
        rc, out, err = gwshell("--url", "http://127.0.0.1:%d" % g.port, "--timeout", "3", "health")  # http to https
        assert rc == 3, (out, err)
    finally:
        g.stop()

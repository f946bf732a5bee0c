"""Portable tests for the `auth` shell command (authshell.py) on a small gateway and auth stage."""

from apigw.auth import AuthenticationManager
from apigw.authgate import AuthGate
from apigw.gateway import ApiGateway
from apigw.shell import Shell

KEY = b"s" * 32


def _shell():
    gw = ApiGateway(4, 8, 512)
    gw.register_service("ctl", "10.0.0.2", 80)
    gw.add_route("/ctl", service="ctl", name="ctl")
    gw.add_route("/open", service="ctl", name="open")
    m = AuthenticationManager(8, 8, 4, 4, jwt_keys={"k1": KEY}, signing_kid="k1", pbkdf2_iterations=20)
    m.now = 100000
    m.add_user("op", "admin", password="pw")
    g = AuthGate(m, 8)
    g.gw = gw
    gw.set_route_policy(gw.route_id("ctl"), g.add_policy("signed-in", ["jwt", "api_key", "basic"]))
    return Shell(gw, gate=g), m


def test_help_lists_the_sub_commands():
    sh, _ = _shell()
    out = sh.execute("help auth")
    for sub in ("tokens issue", "keys add", "users add", "roles", "check", "policies"):
        assert "auth " + sub in out, sub


def test_keys_are_shown_once():
    sh, m = _shell()
    out = sh.execute("auth keys add service=ctl permissions=read")
    key = out.split("\n")[1]
    assert key.count(".") == 1 and len(key) == 41
    listed = sh.execute("auth keys")
    assert key.split(".")[0] in listed and key not in listed and key.split(".")[1] not in listed
    assert "allowed as API key" in sh.execute("auth check GET /ctl/x key=" + key)
    assert "403" in sh.execute("auth check POST /ctl/x key=" + key)  # read only
    assert sh.execute("auth keys revoke " + key.split(".")[0]).startswith("revoked")
    assert "401 invalid_key" in sh.execute("auth check GET /ctl/x key=" + key)
    assert sh.execute("auth keys add service=nope").startswith("error: unknown service")


def test_tokens_issue_list_refresh_revoke():
    sh, m = _shell()
    out = sh.execute("auth tokens issue op ttl=60")
    jti = out.split()[1]
    token = out.split("\n")[1]
    listed = sh.execute("auth tokens")
    assert jti in listed and token not in listed
    assert "allowed as user op" in sh.execute("auth check GET /ctl/x bearer=" + token)
    new = sh.execute("auth tokens refresh " + token).split("\n")[1]
    assert "401 invalid_token" in sh.execute("auth check GET /ctl/x bearer=" + token)
    assert sh.execute("auth tokens revoke " + new).startswith("revoked token")
    assert "401 invalid_token" in sh.execute("auth check GET /ctl/x bearer=" + new)


def test_users_roles_grants_and_decisions():
    sh, m = _shell()
    assert sh.execute("auth users add ada password=secret role=guest") == "added user ada"
    assert "secret" not in sh.execute("auth users")
    assert "403 forbidden" in sh.execute("auth check POST /ctl/x basic=ada:secret")
    assert sh.execute("auth grant ada write") == "ada: read,write"
    assert "allowed as user ada" in sh.execute("auth check POST /ctl/x basic=ada:secret")
    assert "401 invalid_credentials" in sh.execute("auth check GET /ctl/x basic=ada:wrong")
    assert "public (no policy)" in sh.execute("auth check GET /open/x")
    assert "404" in sh.execute("auth check GET /nowhere")
    assert "service_account" in sh.execute("auth roles")
    assert "signed-in" in sh.execute("auth policies")
    assert sh.execute("auth users remove ada") == "removed user ada"
    assert sh.execute("auth bogus").startswith("error: unknown sub-command")

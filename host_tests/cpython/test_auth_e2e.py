"""End to end, the auth stage: the firmware on the unix port with boards/unix/gateway.json's `auth`
section, real clients (http.client, raw sockets, curl, PyJWT) and the demo upstreams behind it.

Challenges and keep-alive after a refusal, Basic, API keys (and their service binding), the
client-credentials token endpoint, JWTs made by PyJWT (good and forged), permissions by method,
/_gw/auth, the per-client rate limit, revocation across a restart, opaque bearer tokens checked
by tools/demo_idp.py, and that no secret shows in the log or the gateway's own documents.
"""

import base64
import json
import os
import socket
import subprocess
import time

import demo_idp
import jwt as pyjwt
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SECRETS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "boards", "unix", "secrets.json")
DEMO = ("demo", "demo-pass")
ADMIN = ("admin", "admin-pass")
KEY_ID, KEY_SECRET = "de0de0de", "demo-key-for-the-unix-board-only"
API_KEY = KEY_ID + "." + KEY_SECRET
ISSUER = "apigw-demo"
with open(SECRETS) as _f:
    JWT_KEY_TEXT = json.load(_f)["jwt_keys"]["demo1"]
JWT_KEY = base64.urlsafe_b64decode(JWT_KEY_TEXT + "=" * (-len(JWT_KEY_TEXT) % 4))
IDP_CLIENT, IDP_SECRET = "apigw", "idp-client-secret-for-tests"
OPAQUE_ACTIVE, OPAQUE_INACTIVE = "opaque-active-token-0123", "opaque-revoked-token-4567"
ISSUED = []  # every access token the gateway issued in this module: none may leak (last test)

# -- helpers ------------------------------------------------------------------------------------


def basic(user, password):
    return "Basic " + base64.b64encode((user + ":" + password).encode()).decode()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def make_jwt(sub="robot", role="service_account", exp_in=3600, key=JWT_KEY, alg="HS256", **claims):
    """A token as another issuer sharing the demo key would sign it (PyJWT)."""
    now = int(time.time())
    payload = dict({"sub": sub, "role": role, "iss": ISSUER, "iat": now, "exp": now + exp_in}, **claims)
    return pyjwt.encode(payload, key, algorithm=alg, headers={"kid": "demo1"})


def unsigned_jwt(**claims):
    """`alg: none`, no signature: must never be accepted."""

    def part(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    payload = dict({"sub": "robot", "role": "admin", "iss": ISSUER, "exp": int(time.time()) + 3600}, **claims)
    return part({"alg": "none", "typ": "JWT"}) + "." + part(payload) + "."


def decode(token):
    return pyjwt.decode(token, JWT_KEY, algorithms=["HS256"], issuer=ISSUER)


def request(gw, method, path, headers=None, body=None):
    status, hdrs, data = gw.request(method, path, body=body, headers=headers)
    return status, hdrs, (json.loads(data) if data[:1] == b"{" else data)


def token_for(gw, form, auth=None):
    """POST /_gw/token: (status, headers, JSON body); a token issued is remembered."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth:
        headers["Authorization"] = basic(*auth)
    status, hdrs, doc = request(gw, "POST", "/_gw/token", headers, form.encode())
    if status == 200:
        ISSUED.append(doc["access_token"])
    return status, hdrs, doc


def issue(gw):
    """A token for the demo user from /_gw/token: (token, its claims)."""
    status, _, doc = token_for(gw, "grant_type=client_credentials", DEMO)
    assert status == 200, doc
    return doc["access_token"], decode(doc["access_token"])


def curl(e2e, gw, path, *args):
    """curl -i: (status, {lower-case name: value}, body bytes) of the final response."""
    exe = e2e.curl_exe()
    url = "http://127.0.0.1:%d%s" % (gw.port, path)
    p = subprocess.run([exe, "-sS", "-i", "--max-time", "10", *args, url], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout
    while True:
        head, _, out = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status >= 200:
            break
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, out


def shell(port, line):
    """One command on the gateway's TCP shell: its output (the text before the next prompt)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for cmd in (b"", line.encode() + b"\n"):  # the greeting's prompt, then the command's
            s.sendall(cmd)
            data = b""
            while not data.endswith(b"apigw> "):
                chunk = s.recv(4096)
                assert chunk, "shell closed after %r" % data
                data += chunk
    return data[:-7].decode().strip()


def auth_config(e2e, upstreams, tmp_path, idp_port=None, shell=False):
    """The demo config with a /secure/sensors route; with idp_port, an opaque-token policy and
    route whose tokens the in-process endpoint checks (its client secret in a tmp secrets file)."""
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), shell_port=e2e.free_port() if shell else None)
    cfg["routes"].append(dict(path="/secure/sensors", service="sensors", strip_prefix=True, policy="signed-in"))
    if idp_port:
        secrets = tmp_path / "secrets.json"
        secrets.write_text(json.dumps({"jwt_keys": {"demo1": JWT_KEY_TEXT}, "introspection_client_secret": IDP_SECRET}))
        a = cfg["auth"]
        a["secrets"] = str(secrets)
        a["introspection"] = {"host": "127.0.0.1", "port": idp_port, "client_id": IDP_CLIENT, "ttl_s": 60}
        a["policies"]["opaque"] = {"schemes": ["bearer"]}
        cfg["routes"].append({"name": "opaque", "path": "/opaque", "service": "controller", "policy": "opaque"})
    return cfg


@pytest.fixture(scope="module")
def idp():
    """tools/demo_idp.py in this process; its /introspect answers 500 while .failing is set."""
    tokens = {
        OPAQUE_ACTIVE: {"active": True, "sub": "opaque-client", "scope": "read write"},
        OPAQUE_INACTIVE: {"active": False, "sub": "mallory"},
    }
    server = demo_idp.DemoIdP(tokens, IDP_CLIENT, IDP_SECRET)
    server.failing = False

    class Handler(server.server.RequestHandlerClass):
        def do_POST(self):  # noqa: N802 (http.server's name)
            if server.failing:
                self.path = "/introspect-500"
            super().do_POST()

    server.server.RequestHandlerClass = Handler
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gw(e2e, upstreams, idp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    g = e2e.Gateway(auth_config(e2e, upstreams, tmp, idp.port), tmp, "auth").start()
    try:
        yield g
    finally:
        g.stop()


# -- challenges ---------------------------------------------------------------------------------


BOTH = 'Bearer realm="apigw", Basic realm="apigw", charset="UTF-8"'  # a policy taking tokens and Basic


def test_no_credential_is_401_with_bearer_and_basic_challenges_and_keeps_the_connection(gw):
    with gw.raw() as c:
        c.send(b"GET /secure/controller/x HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 401 and r.json()["error"] == "missing_credentials"
        assert r.header("WWW-Authenticate") == BOTH  # two header lines: a browser asks for a password
        assert r.header("Content-Type") == "application/json"
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200


def test_head_and_options_without_credentials(gw):
    with gw.raw() as c:
        c.send(b"HEAD /secure/controller/x HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 401 and r.header("WWW-Authenticate") == BOTH
        c.send(b"OPTIONS /secure/controller/x HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()  # a body after the HEAD answer would show up here as garbage
        assert r.status == 401 and r.json()["error"] == "missing_credentials"
        assert r.header("WWW-Authenticate") == BOTH
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200 and c.buf == b""


# -- Basic and API keys -------------------------------------------------------------------------


def test_curl_basic(e2e, gw):
    status, _, body = curl(e2e, gw, "/secure/controller/x", "-u", "%s:%s" % DEMO)
    assert status == 200 and json.loads(body)["path"] == "/v1/x"
    assert "authorization" in json.loads(body)["headers"]  # forwarded as the client sent it
    status, hdrs, body = curl(e2e, gw, "/secure/controller/x", "-u", "demo:wrong-pass")
    assert status == 401 and json.loads(body)["error"] == "invalid_credentials"
    assert hdrs["www-authenticate"] == 'Basic realm="apigw", charset="UTF-8"'
    assert curl(e2e, gw, "/secure/controller/x", "-u", "nobody:demo-pass")[0] == 401


def test_curl_api_key(e2e, gw):
    hdr = "X-API-Key: " + API_KEY
    status, _, body = curl(e2e, gw, "/secure/controller/x", "-H", hdr)
    assert status == 200 and json.loads(body)["path"] == "/v1/x"
    post = ["-H", hdr, "-H", "Content-Type: application/json", "--data-binary", '{"on": true}']
    status, _, body = curl(e2e, gw, "/secure/controller/x", *post)
    echo = json.loads(body)
    assert status == 200 and (echo["method"], echo["body"]) == ("POST", '{"on": true}')
    for bad in ("00000000." + KEY_SECRET, API_KEY[:-1] + "X", API_KEY + "x", KEY_ID):
        status, hdrs, body = curl(e2e, gw, "/secure/controller/x", "-H", "X-API-Key: " + bad)
        assert status == 401 and json.loads(body)["error"] == "invalid_key", bad
        assert hdrs["www-authenticate"] == 'ApiKey realm="apigw", header="X-API-Key"'


def test_api_key_bound_to_its_service(gw):
    status, _, body = request(gw, "GET", "/secure/sensors/temp", {"X-API-Key": API_KEY})
    assert status == 403 and body["error"] == "forbidden"
    status, _, body = request(gw, "GET", "/secure/sensors/temp", {"Authorization": basic(*DEMO)})
    assert status == 200 and body["sensor"] == "temp"  # the route itself serves


# -- the token endpoint -------------------------------------------------------------------------


def test_curl_token_endpoint(e2e, gw):
    status, hdrs, body = curl(e2e, gw, "/_gw/token", "-u", "%s:%s" % DEMO, "-d", "grant_type=client_credentials")
    doc = json.loads(body)
    assert status == 200 and hdrs["cache-control"] == "no-store" and hdrs["content-type"] == "application/json"
    assert (doc["token_type"], doc["expires_in"]) == ("Bearer", 3600)
    ISSUED.append(doc["access_token"])
    claims = decode(doc["access_token"])
    assert pyjwt.get_unverified_header(doc["access_token"])["kid"] == "demo1"
    assert (claims["sub"], claims["role"], claims["permissions"]) == ("demo", "user", ["read", "write"])
    assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 5 and claims["jti"]
    status, _, echo = request(gw, "GET", "/secure/controller/x", bearer(doc["access_token"]))
    assert status == 200 and echo["path"] == "/v1/x"


def test_token_for_api_key_client_credentials(gw):
    via_basic = token_for(gw, "grant_type=client_credentials", (KEY_ID, KEY_SECRET))
    via_form = token_for(gw, "grant_type=client_credentials&client_id=%s&client_secret=%s" % (KEY_ID, KEY_SECRET))
    for status, _, doc in (via_basic, via_form):
        assert status == 200, doc
        claims = decode(doc["access_token"])
        assert (claims["sub"], claims["role"], claims["permissions"]) == (KEY_ID, "service_account", ["read", "write"])
        assert request(gw, "POST", "/secure/controller/x", bearer(doc["access_token"]), b"{}")[0] == 200


def test_token_of_a_bound_key_keeps_the_binding(gw):
    """The key opens only routes to its service; the token it is exchanged for must not open more."""
    _, _, doc = token_for(gw, "grant_type=client_credentials", (KEY_ID, KEY_SECRET))
    status, _, body = request(gw, "GET", "/secure/sensors/temp", bearer(doc["access_token"]))
    assert status == 403, (status, body)


def test_token_endpoint_errors(gw):
    status, hdrs, doc = token_for(gw, "grant_type=client_credentials", ("demo", "wrong"))
    assert status == 401 and doc["error"] == "invalid_client"
    assert hdrs["WWW-Authenticate"].startswith("Basic ") and hdrs["Cache-Control"] == "no-store"
    status, _, doc = token_for(gw, "grant_type=client_credentials", (KEY_ID, KEY_SECRET[:-1] + "X"))
    assert status == 401 and doc["error"] == "invalid_client"
    status, _, doc = token_for(gw, "scope=read", DEMO)
    assert status == 400 and doc["error"] == "unsupported_grant_type"
    status, _, doc = token_for(gw, "grant_type=client_credentials&scope=admin", DEMO)
    assert status == 400 and doc["error"] == "invalid_scope"
    status, hdrs, _ = request(gw, "GET", "/_gw/token")
    assert status == 405 and hdrs["Allow"] == "POST"


def test_token_scope_narrowing(gw):
    status, _, doc = token_for(gw, "grant_type=client_credentials&scope=read", DEMO)
    assert status == 200 and doc["scope"] == "read" and decode(doc["access_token"])["permissions"] == ["read"]
    assert request(gw, "GET", "/secure/controller/x", bearer(doc["access_token"]))[0] == 200
    status, hdrs, body = request(gw, "POST", "/secure/controller/x", bearer(doc["access_token"]), b"{}")
    assert status == 403 and body["error"] == "forbidden"
    assert hdrs["WWW-Authenticate"] == 'Bearer realm="apigw", error="insufficient_scope"'


# -- JWTs from another signer -------------------------------------------------------------------


def test_pyjwt_token_accepted(gw):
    status, _, echo = request(gw, "POST", "/secure/controller/x", bearer(make_jwt()), b"on")
    assert status == 200 and (echo["method"], echo["body"]) == ("POST", "on")


BAD_JWTS = {
    "HS512": lambda: make_jwt(alg="HS512"),
    "wrong key": lambda: make_jwt(key=b"another key of at least thirty-two bytes"),
    "expired": lambda: make_jwt(exp_in=-3600),
    "wrong issuer": lambda: make_jwt(iss="someone-else"),
    "alg none": unsigned_jwt,
    "truncated signature": lambda: make_jwt()[:-2],
}


@pytest.mark.parametrize("name", list(BAD_JWTS))
@pytest.mark.filterwarnings("ignore:The HMAC key is 48 bytes long")
def test_bad_jwt_is_401_invalid_token(gw, name):
    status, hdrs, body = request(gw, "GET", "/secure/controller/x", bearer(BAD_JWTS[name]()))
    assert status == 401 and body["error"] == "invalid_token"
    assert hdrs["WWW-Authenticate"] == 'Bearer realm="apigw", error="invalid_token"'


def test_permissions_by_method(gw):
    user = bearer(issue(gw)[0])
    for method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        assert request(gw, method, "/secure/controller/x", user)[0] == 200, method
    guest = bearer(make_jwt(sub="visitor", role="guest"))  # a guest holds read only
    assert request(gw, "GET", "/secure/controller/x", guest)[0] == 200
    for method in ("POST", "PUT", "DELETE"):
        status, hdrs, body = request(gw, method, "/secure/controller/x", guest, b"x")
        assert status == 403 and body["error"] == "forbidden", method
        assert hdrs["WWW-Authenticate"] == 'Bearer realm="apigw", error="insufficient_scope"'


# -- /_gw/auth ----------------------------------------------------------------------------------


def test_gw_auth_needs_admin(gw):
    status, _, doc = request(gw, "GET", "/_gw/auth", {"Authorization": basic(*ADMIN)})
    assert status == 200, doc
    for key in ("allowed", "unauthorized", "forbidden", "rate_limited", "cache_hits", "tokens", "revoked"):
        assert isinstance(doc[key], int), key
    assert doc["clock_synced"] is True and doc["users"] == 2 and doc["api_keys"] == 2
    assert doc["unauthorized"] >= 1 and doc["allowed"] >= 1
    names = [p["name"] for p in doc["policies"]]
    assert {"signed-in", "per-client", "opaque"} <= set(names)
    status, _, body = request(gw, "GET", "/_gw/auth", {"Authorization": basic(*DEMO)})
    assert status == 403 and body["error"] == "forbidden"
    status, hdrs, body = request(gw, "GET", "/_gw/auth")
    assert status == 401 and body["error"] == "missing_credentials" and hdrs["WWW-Authenticate"]
    assert request(gw, "GET", "/_gw/health")[2]["auth"] == {"clock_synced": True}


# -- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_per_client(gw):
    """Burst 10, 5/s: ten pass, then 429 (one more per 200 ms the loop took); a second later, 200."""
    c = gw.conn()
    try:
        answers = []
        t0 = time.monotonic()
        for _ in range(12):
            c.request("GET", "/limited/sensors/temp")
            r = c.getresponse()
            answers.append((r.status, r.headers, r.read()))
        refill = int((time.monotonic() - t0) * 5)
        codes = [a[0] for a in answers]
        passed = codes.count(200)
        assert codes == [200] * passed + [429] * (12 - passed) and 10 <= passed <= min(10 + refill, 11), codes
        _, hdrs, body = answers[-1]
        assert json.loads(body)["error"] == "rate_limited"
        assert (hdrs["RateLimit-Limit"], hdrs["RateLimit-Remaining"]) == ("10", "0")
        assert int(hdrs["RateLimit-Reset"]) >= 1 and int(hdrs["Retry-After"]) >= 1
        time.sleep(1.0)
        c.request("GET", "/limited/sensors/temp")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["sensor"] == "temp"  # on the same connection
    finally:
        c.close()


# -- opaque tokens by introspection -------------------------------------------------------------


def test_opaque_bearer_by_introspection(gw, idp):
    idp.reset()
    for _ in range(2):
        status, _, echo = request(gw, "GET", "/opaque/x", bearer(OPAQUE_ACTIVE))
        assert status == 200 and echo["path"] == "/opaque/x"
    assert idp.requests == 1 and idp.received == [OPAQUE_ACTIVE]  # the second one was cached
    status, hdrs, body = request(gw, "GET", "/opaque/x", bearer(OPAQUE_INACTIVE))
    assert status == 401 and body["error"] == "invalid_token"
    assert hdrs["WWW-Authenticate"] == 'Bearer realm="apigw", error="invalid_token"'
    assert request(gw, "GET", "/opaque/x")[0] == 401
    assert request(gw, "GET", "/opaque/x", {"Authorization": basic(*DEMO)})[0] == 401  # bearer only here


def test_introspection_failure_is_503(gw, idp):
    idp.failing = True
    try:
        idp.reset()
        status, hdrs, body = request(gw, "GET", "/opaque/x", bearer("never-seen-before-token"))
        assert status == 503 and body["error"] == "introspection_unavailable" and hdrs["Retry-After"]
        assert idp.requests == 1
    finally:
        idp.failing = False
    assert request(gw, "GET", "/opaque/x", bearer("never-seen-before-token"))[0] == 401  # failures not cached


# -- revocation across a restart ----------------------------------------------------------------


def test_revocation_in_the_state_file_survives_a_restart(e2e, upstreams, tmp_path):
    """The gateway applies auth_state.json (next to its config) at boot: a token revoked there is
    refused after the restart, one issued before the restart and not revoked still works."""
    cfg = auth_config(e2e, upstreams, tmp_path)
    g = e2e.Gateway(cfg, tmp_path, "gw").start()
    try:
        kept, _ = issue(g)
        gone, claims = issue(g)
        assert request(g, "GET", "/secure/controller/x", bearer(gone))[0] == 200
    finally:
        g.stop()
    state = tmp_path / "auth_state.json"
    doc = json.loads(state.read_text()) if state.exists() else {}
    assert not doc.get("revoked")  # nothing was revoked at run time
    doc["revoked"] = [[claims["jti"], claims["exp"]]]  # as the gateway saves a revocation
    state.write_text(json.dumps(doc))
    g = e2e.Gateway(cfg, tmp_path, "gw").start()
    try:
        status, hdrs, body = request(g, "GET", "/secure/controller/x", bearer(gone))
        assert status == 401 and body["error"] == "invalid_token"
        assert request(g, "GET", "/secure/controller/x", bearer(kept))[0] == 200
        assert request(g, "GET", "/_gw/auth", {"Authorization": basic(*ADMIN)})[2]["revoked"] == 1
    finally:
        g.stop()


def test_shell_revocation_survives_a_restart(e2e, upstreams, tmp_path):
    """`auth tokens revoke JTI_OR_TOKEN` on the TCP shell: refused at once (even a token the
    cache holds), saved as ids only, refused after a restart; a token not revoked still works."""
    cfg = auth_config(e2e, upstreams, tmp_path, shell=True)
    g = e2e.Gateway(cfg, tmp_path, "gw").start()
    try:
        by_jti, claims = issue(g)
        by_token, _ = issue(g)
        kept, _ = issue(g)
        assert request(g, "GET", "/secure/controller/x", bearer(by_jti))[0] == 200  # now in the cache
        out = shell(g.shell_port, "auth tokens revoke " + claims["jti"])
        assert out == "revoked token " + claims["jti"], "the shell's auth command: " + out
        assert shell(g.shell_port, "auth tokens revoke " + by_token).startswith("revoked token ")
        for token in (by_jti, by_token):
            assert request(g, "GET", "/secure/controller/x", bearer(token))[0] == 401
    finally:
        log = g.stop()
    state = (tmp_path / "auth_state.json").read_text()
    assert len(json.loads(state)["revoked"]) == 2 and claims["jti"] in state
    for token in (by_jti, by_token, kept):
        assert token not in state and token not in log
    g = e2e.Gateway(cfg, tmp_path, "gw").start()
    try:
        for token in (by_jti, by_token):
            assert request(g, "GET", "/secure/controller/x", bearer(token))[0] == 401
        assert request(g, "GET", "/secure/controller/x", bearer(kept))[0] == 200
    finally:
        g.stop()


# -- secrets stay secret (last: it checks what the tests above made the gateway log) -------------


def test_no_secret_in_log_health_or_auth_status(gw):
    token, _ = issue(gw)  # besides those the tests before this one had issued
    assert request(gw, "GET", "/secure/controller/x", bearer(token))[0] == 200
    docs = [
        gw.output(),
        json.dumps(request(gw, "GET", "/_gw/health")[2]),
        json.dumps(request(gw, "GET", "/_gw/auth", {"Authorization": basic(*ADMIN)})[2]),
    ]
    secrets = [KEY_SECRET, "demo-pass", "admin-pass", JWT_KEY_TEXT, JWT_KEY.decode("latin-1"), IDP_SECRET]
    for text in docs:
        for s in secrets + ISSUED:
            assert s not in text, "secret %r... in %r" % (s[:6], text[:200])
        for token in ISSUED:
            assert token.split(".")[2] not in text  # not even the signature

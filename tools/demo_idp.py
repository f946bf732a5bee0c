"""A small OAuth 2.0 token introspection endpoint (RFC 7662) for tests and the demo (CPython, stdlib).

    POST /introspect       form body token=...; answers {"active": ...} from the token table
    POST /introspect-500   answers 500
    POST /introspect-slow  sleeps slow_s seconds, then answers like /introspect
    POST /introspect-bad   answers 200 with malformed JSON

Every path requires HTTP Basic client credentials, form-encoded before base64 as RFC 6749 section
2.3.1 says (401 otherwise). The table maps token -> {"active", "sub", "scope", "exp"}; an unknown
token is inactive. Counters: .requests (POSTs seen) and .received (the tokens received, in order).

    python tools/demo_idp.py --port 9400 --client-id gateway --client-secret secret \\
        --token abc123=alice:read,write [--tokens tokens.json] [--slow 5]

From tests: `idp = DemoIdP(tokens, ...).start()`, then idp.port, idp.stop().
"""

import argparse
import base64
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus


class DemoIdP:
    def __init__(self, tokens=None, client_id="gateway", client_secret="secret", port=0, slow_s=5.0, host="127.0.0.1"):
        self.tokens = dict(tokens or {})
        self.client_id = client_id
        self.client_secret = client_secret
        self.slow_s = slow_s
        self.requests = 0
        self.received = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.port = self.server.server_address[1]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def reset(self):
        with self.lock:
            self.requests = 0
            self.received = []

    def authorized(self, header):
        """True if an Authorization header carries this server's client id and secret."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            cid, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except ValueError:
            return False
        ok_id = hmac.compare_digest(unquote_plus(cid).encode(), self.client_id.encode())  # both compared, always
        return hmac.compare_digest(unquote_plus(secret).encode(), self.client_secret.encode()) and ok_id

    def answer(self, token):
        entry = self.tokens.get(token)
        if not entry or not entry.get("active", True) or (entry.get("exp") or 2**63) <= time.time():
            return {"active": False}  # unknown, revoked or expired
        doc = {"active": True}
        for k in ("sub", "scope", "exp", "client_id"):
            if entry.get(k) is not None:
                doc[k] = entry[k]
        return doc


def _handler(idp):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, body, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            path = self.path.split("?")[0]
            with idp.lock:
                idp.requests += 1
            if path not in ("/introspect", "/introspect-500", "/introspect-slow", "/introspect-bad"):
                return self.send(404, b'{"error":"not_found"}')
            if not idp.authorized(self.headers.get("Authorization")):
                return self.send(401, b'{"error":"invalid_client"}', [("WWW-Authenticate", 'Basic realm="idp"')])
            token = (form.get("token") or [""])[0]
            with idp.lock:
                idp.received.append(token)
            if path == "/introspect-500":
                return self.send(500, b'{"error":"server_error"}')
            if path == "/introspect-bad":
                return self.send(200, b'{"active": true, "sub": "x"')
            if path == "/introspect-slow":
                time.sleep(idp.slow_s)
            try:
                self.send(200, json.dumps(idp.answer(token)).encode())
            except OSError:
                pass  # the client gave up waiting

    return Handler


def _parse_token(spec):
    """TOKEN=SUB:SCOPE[:EXP], scope words separated by commas."""
    token, _, rest = spec.partition("=")
    sub, _, rest = rest.partition(":")
    scope, _, exp = rest.partition(":")
    return token, {"active": True, "sub": sub, "scope": scope.replace(",", " "), "exp": int(exp) if exp else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9400)
    ap.add_argument("--client-id", default="gateway")
    ap.add_argument("--client-secret", default="secret")
    ap.add_argument("--tokens", help="JSON file: token -> {active, sub, scope, exp}")
    ap.add_argument("--token", action="append", default=[], help="TOKEN=SUB:SCOPE[:EXP] (scope: read,write)")
    ap.add_argument("--slow", type=float, default=5.0, help="seconds /introspect-slow waits")
    args = ap.parse_args(argv)
    tokens = {}
    if args.tokens:
        with open(args.tokens) as f:
            tokens.update(json.load(f))
    tokens.update(_parse_token(t) for t in args.token)
    idp = DemoIdP(tokens, args.client_id, args.client_secret, args.port, args.slow, args.host)
    print("introspection endpoint on http://%s:%d/introspect (%d tokens)" % (args.host, idp.port, len(tokens)))
    try:
        idp.server.serve_forever()
    except KeyboardInterrupt:
        pass
    idp.server.server_close()


if __name__ == "__main__":
    main()

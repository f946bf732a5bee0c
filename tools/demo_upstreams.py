"""Demo upstream services for `make run` and end-to-end tests (CPython, stdlib only).

    python tools/demo_upstreams.py [--base-port 9001] [--only sensors,controller] [-v]

Services on 127.0.0.1, at base port + offset (HTTP/1.1, keep-alive):

  sensors    +0  GET /temp, GET /humidity (JSON readings); GET|POST /echo; else JSON 404
  controller +1  echoes any request with its name (an API version prefix /v1, /v2... is
                 accepted and dropped); GET /big?size=N (N bytes of pattern());
                 GET /chunked?n=K&size=S&delay_ms=D (chunked response); GET /status/NNN
  slow       +2  sleeps ?ms=N (default 3000), then echoes
  reset      +3  reads the request head, then resets the connection (SO_LINGER 0), no answer
  sensors-b  +4  two more instances of sensors (the demo config's load-balanced pool)
  sensors-c  +5

Every HTTP answer carries `X-Instance: NAME`, and every HTTP service answers GET /health with
{"ok": true, "instance": NAME} (the gateway's health checks; not counted below).

Every service answers GET /_count with {"requests": N, "connections": M}: requests served and
TCP connections that carried them (/_count itself is not counted; ?reset=1 zeroes both), so
tests can tell whether a client reused a keep-alive connection.

From Python (pytest fixtures): `servers, stop = start(base_port=0)` starts them on threads;
base_port=0 picks free ports (servers[name].port). stop() shuts them all down.
"""

import argparse
import json
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SERVICES = ("sensors", "controller", "slow", "reset", "sensors-b", "sensors-c")  # port offsets 0..5

READINGS = {
    "/temp": {"sensor": "temp", "value": 21.5, "unit": "C"},
    "/humidity": {"sensor": "humidity", "value": 40.0, "unit": "%"},
}

_PERIOD = 251  # prime, so a misplaced or repeated block of any power-of-two size shows
_BLOCK = bytes(i % _PERIOD for i in range(_PERIOD * 64))


def pattern(size, offset=0):
    """The deterministic body of GET /big?size=N: byte i is (offset + i) % 251."""
    out = bytearray()
    pos = offset % _PERIOD
    while len(out) < size:
        take = min(size - len(out), len(_BLOCK) - pos)
        out += _BLOCK[pos : pos + take]
        pos = 0
    return bytes(out)


class Stats:
    """Request and connection counters of one service (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0

    def count(self, handler):
        """Count one request; the first counted request on a connection counts the connection."""
        with self.lock:
            self.requests += 1
            if not getattr(handler, "_counted", False):
                handler._counted = True
                self.connections += 1

    def snapshot(self, reset=False):
        with self.lock:
            snap = {"requests": self.requests, "connections": self.connections}
            if reset:
                self.requests = 0
                self.connections = 0
        return snap


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler shared by sensors, controller and slow (server.name picks behaviour)."""

    protocol_version = "HTTP/1.1"
    server_version = "apigw-demo"
    sys_version = ""
    timeout = 60  # idle keep-alive connections close after this many seconds
    # TCP_NODELAY: the head and the body go out as two writes; with Nagle on, the body would wait
    # for the ACK of the head, which a keep-alive peer delays by 40 ms.
    disable_nagle_algorithm = True

    # -- plumbing --------------------------------------------------------------------------

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write("%s: %s\n" % (self.server.name, format % args))

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline(16)  # CRLF after the chunk
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("X-Instance", self.server.name)
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode())

    def _echo(self, body, extra=None):
        url = urlsplit(self.path)
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        obj = {
            "service": self.server.name,
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": headers,
            "raw_headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
            "body_len": len(body),
        }
        if extra:
            obj.update(extra)
        self._json(200, obj)

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._read_body()
        if url.path == "/_count":
            self._json(200, self.server.stats.snapshot(reset=query.get("reset") == ["1"]))
            return
        name = self.server.name
        if url.path == "/health" and self.command in ("GET", "HEAD"):
            self._json(200, {"ok": True, "instance": name})
            return
        self.server.stats.count(self)
        if name.startswith("sensors"):
            if self.command in ("GET", "HEAD") and url.path in READINGS:
                self._json(200, READINGS[url.path])
            elif url.path == "/echo" and self.command in ("GET", "POST", "HEAD"):
                self._echo(body)
            else:
                self._json(404, {"error": "not found", "service": name, "path": url.path})
        elif name == "controller":
            path = url.path
            m = re.match(r"/v[0-9]+(/.*)?$", path)  # the API version prefix routes may add
            if m:
                path = m.group(1) or "/"
            if path == "/big":
                self._big(int(query.get("size", ["65536"])[0]))
            elif path == "/chunked":
                self._chunked(
                    int(query.get("n", ["5"])[0]),
                    int(query.get("size", ["0"])[0]),
                    int(query.get("delay_ms", ["0"])[0]),
                )
            elif path.startswith("/status/"):
                code = int(path[8:] or 200)
                if code in (204, 304):
                    self._send(code)
                else:
                    self._json(code, {"service": name, "status": code})
            else:
                self._echo(body)
        elif name == "slow":
            ms = int(query.get("ms", ["3000"])[0])
            time.sleep(ms / 1000)
            self._echo(body, {"slept_ms": ms})

    def _big(self, size):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        while sent < size:  # stream in pieces: the body is never held whole
            piece = pattern(min(16384, size - sent), sent)
            self.wfile.write(piece)
            sent += len(piece)

    def _chunked(self, n, size, delay_ms):
        """n chunks; chunk k is b"chunk k\\n", or `size` bytes of pattern() when size > 0."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if size <= 0 else "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for k in range(n):
            data = pattern(size, k * size) if size > 0 else ("chunk %d\n" % k).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if delay_ms:
                time.sleep(delay_ms / 1000)
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class HttpService(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name, addr, verbose=False):
        self.name = name
        self.stats = Stats()
        self.verbose = verbose
        self.active = set()  # connections being served (kill() ends them)
        super().__init__(addr, Handler)

    @property
    def port(self):
        return self.server_address[1]

    def get_request(self):
        sock, addr = super().get_request()
        self.active.add(sock)
        return sock, addr

    def shutdown_request(self, request):
        self.active.discard(request)
        super().shutdown_request(request)

    def kill(self):
        """Stop as a crashed process would: no new connections, and the open ones reset."""
        self.shutdown()
        self.server_close()
        for sock in list(self.active):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ResetHandler(socketserver.BaseRequestHandler):
    """Read the request head, then reset the connection: the client sees ECONNRESET."""

    def handle(self):
        sock = self.request
        sock.settimeout(2)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = sock.recv(4096)
                if not data:
                    break
                head += data
        except OSError:
            pass
        if head.startswith(b"GET /_count"):
            reset = head.split(b" ", 2)[1].endswith(b"reset=1")
            body = json.dumps(self.server.stats.snapshot(reset=reset)).encode()
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            return
        if head:
            self.server.stats.count(self)
        if self.server.verbose:
            sys.stderr.write("reset: %r -> RST\n" % head.split(b"\r\n", 1)[0])
        # SO_LINGER on, 0 s: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


class ResetService(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name, addr, verbose=False):
        self.name = name
        self.stats = Stats()
        self.verbose = verbose
        super().__init__(addr, ResetHandler)

    @property
    def port(self):
        return self.server_address[1]

    def shutdown_request(self, request):
        if request.fileno() >= 0:  # not already reset by the handler
            super().shutdown_request(request)


def start(base_port=9001, names=None, host="127.0.0.1", verbose=False):
    """Start the services (all, or those in names) on threads. Returns (servers, stop).

    servers maps name -> server (.port, .stats); base_port=0 binds each to a free port.
    stop() shuts every server down and closes its socket.
    """
    names = list(SERVICES) if names is None else list(names)
    for n in names:
        if n not in SERVICES:
            raise ValueError("unknown service %r (have %s)" % (n, ", ".join(SERVICES)))
    servers = {}
    threads = []

    def stop():
        # shut down in parallel: each shutdown() waits for its serve_forever loop to notice
        closers = [threading.Thread(target=srv.shutdown) for srv in servers.values()]
        for t in closers:
            t.start()
        for t in closers + threads:
            t.join(5)
        for srv in servers.values():
            srv.server_close()

    try:
        for n in names:
            port = base_port + SERVICES.index(n) if base_port else 0
            cls = ResetService if n == "reset" else HttpService
            servers[n] = cls(n, (host, port), verbose)
    except OSError:
        for srv in servers.values():
            srv.server_close()
        raise
    for n, srv in servers.items():
        t = threading.Thread(target=srv.serve_forever, args=(0.1,), name="demo-" + n, daemon=True)
        t.start()
        threads.append(t)
    return servers, stop


def main(argv=None):
    ap = argparse.ArgumentParser(description="Demo upstream services for apigw.")
    ap.add_argument("--base-port", type=int, default=9001, help="port of the first service (default 9001)")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(SERVICES))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    try:
        servers, stop = start(args.base_port, names, args.host, args.verbose)
    except (OSError, ValueError) as e:
        print("demo upstreams: %s" % e, file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ready = " ".join("%s=%s:%d" % (n, args.host, s.port) for n, s in servers.items())
    print("demo upstreams ready: " + ready, flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

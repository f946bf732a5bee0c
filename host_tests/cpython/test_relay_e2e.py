"""The relay against an upstream that misbehaves on purpose: an interim 1xx before the answer, a
body cut short, a body with no framing, and a kept-alive connection the upstream closed while it
sat in the gateway's idle pool. The upstream is a scripted socket server in this process; the
gateway is the firmware on the unix port.
"""

import socket
import threading

import pytest

SCRIPT = {
    # path: (bytes to send after reading the request head, close the connection afterwards)
    "/interim": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
    ),
    "/cut": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, True),
    "/noframe": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 3000, True),
    # an answer that says nothing about closing, then a close: the connection goes stale in the pool
    "/then-close": (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone", True),
}


class ScriptedUpstream:
    """Answers each request by its path from SCRIPT; counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                answer, close = SCRIPT.get(path, (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", False))
                conn.sendall(answer)
                if close:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.running = False
        self.sock.close()


@pytest.fixture(scope="module")
def scripted(e2e, tmp_path_factory):
    up = ScriptedUpstream()
    cfg = {
        "listen": {"host": "127.0.0.1", "port": e2e.free_port(), "slots": 2},
        "services": [{"name": "odd", "host": "127.0.0.1", "port": up.port, "timeout_ms": 3000}],
        "routes": [{"path": "/odd", "service": "odd", "strip_prefix": True}],
    }
    gw = e2e.Gateway(cfg, str(tmp_path_factory.mktemp("relay")), "relay").start()
    yield gw, up
    out = gw.stop()
    up.stop()
    assert "Traceback" not in out, out


def test_interim_answer_is_skipped(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd/interim HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok"
        c.send(b"GET /odd/interim HTTP/1.1\r\nHost: t\r\n\r\n")  # and the connection goes on
        assert c.read_response().status == 200


def test_body_cut_short_closes_the_client_connection(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd/cut HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while True:
            chunk = c.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100" in head
    assert body == b"x" * 10  # what came, then the close: the client can tell it was cut short


def test_body_without_framing_ends_with_the_connection(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd/noframe HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while True:
            chunk = c.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and body == b"y" * 3000


def test_stale_kept_alive_connection_is_retried_on_a_fresh_one(scripted):
    gw, up = scripted
    c = gw.conn()
    for _ in range(3):  # each answer leaves a connection in the pool that the upstream has closed
        c.request("GET", "/odd/then-close")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"done"
    c.close()
    assert up.connections >= 3

"""The relay against an upstream that misbehaves on purpose: an interim 1xx before the answer, a
body cut short, a body with no framing, and a kept-alive connection the upstream closed while it
sat in the gateway's idle pool. The upstream is a scripted socket server in this process; the
gateway is the firmware on the unix port.
"""

import socket
import threading
import time

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
    "/garbage": (b"NOT HTTP AT ALL\r\n\r\n", True),
    "/bighead": (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 3000 + b"\r\nContent-Length: 0\r\n\r\n", True),
    "/silent": (b"", True),
    # a chunked body in pieces, split inside sizes and data, with a trailer
    "/chunks": (
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhel",
            b"lo\r\n1",
            b"0\r\n0123456789abcdef\r\n",
            b"0\r\nX-Trailer: 1\r\n\r\n",
        ],
        False,
    ),
    # HEAD: a length, no body
    "/head": (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", False),
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
                if isinstance(answer, list):
                    for piece in answer:  # in pieces, each its own TCP segment
                        conn.sendall(piece)
                        time.sleep(0.02)
                else:
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


def _read_to_close(c):
    """Everything the gateway sends until it closes the connection."""
    data = b""
    while True:
        chunk = c.sock.recv(4096)
        if not chunk:
            return data
        data += chunk


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
        data = _read_to_close(c)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100" in head
    assert body == b"x" * 10  # what came, then the close: the client can tell it was cut short


def test_body_without_framing_ends_with_the_connection(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd/noframe HTTP/1.1\r\nHost: t\r\n\r\n")
        data = _read_to_close(c)
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


@pytest.mark.parametrize("path", ["/garbage", "/bighead", "/silent"])
def test_unusable_answers_get_502(scripted, path):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd" + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
    assert r.status == 502 and r.json()["status"] == 502


def test_chunked_answer_in_pieces_then_the_connection_goes_on(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"GET /odd/chunks HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello0123456789abcdef"
        c.send(b"GET /odd/interim HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200


def test_head_answer_has_no_body_to_wait_for(scripted):
    gw, _ = scripted
    with gw.raw() as c:
        c.send(b"HEAD /odd/head HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200 and r.body == b""
        c.send(b"GET /odd/interim HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 200

"""An HTTP upstream on loopback whose behaviour a test sets (status, a script of statuses, delay,
a stall between head and body, extra headers, holding requests until released), counting what it
got: for the end-to-end suites that need an upstream to fail, hang or recover on cue."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Upstream(ThreadingHTTPServer):
    """An HTTP upstream whose answers a test sets: status (or a list of statuses to give first),
    delay, extra headers; it counts the requests it got by method."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 200
        self.script = []  # statuses to answer first, one per request
        self.delay = 0.0
        self.headers = {}
        self.count = 0
        self.methods = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # with hold: requests wait for it
        self.hold = False
        self.stall = 0.0  # seconds between the head and the body
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # a client that left (the gateway's timeout closed it) is expected here

    def close(self):
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        up = self.server
        with up.lock:
            up.count += 1
            up.methods.append(self.command)
            status = up.script.pop(0) if up.script else up.status
        if up.hold:
            up.release.wait(10)
        if up.delay:
            time.sleep(up.delay)
        body = json.dumps({"status": status, "n": up.count}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in up.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if up.stall:
            self.wfile.flush()
            time.sleep(up.stall)
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

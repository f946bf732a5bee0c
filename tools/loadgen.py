"""HTTP/1.1 load for the benchmark (CPython, stdlib only): wrk when installed, else a built-in generator.

    python tools/loadgen.py URL [--connections 4] [--duration 5] [-H "Name: value" ...]

The built-in generator: each of N threads holds one keep-alive TCP connection and sends
`GET path` (with any extra header lines given) back to back, reading each response by its Content-Length, and records every
request's latency. The result: requests per second over the run, p50 and p99 latency in ms,
errors. A connection the server closes is reopened (counted in `reconnects`). Threads share the
GIL, so at high rates the generator itself is a limit; wrk is the better tool when installed.

Also here: `Connection` (one keep-alive connection, used by the benchmark for /_gw/health) and
`run_wrk` / `parse_wrk` (wrk's `--latency` output to the same result fields).
"""

import argparse
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit


def request_bytes(host, port, path, headers=()):
    """A GET request head; headers: extra "Name: value" lines (e.g. an Authorization header)."""
    extra = "".join(h + "\r\n" for h in headers)
    return ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: */*\r\n%s\r\n" % (path, host, port, extra)).encode()


class Connection:
    """One keep-alive HTTP/1.1 client connection; responses are read by Content-Length."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.sock = None
        self.buf = b""

    def open(self):
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by server")
        self.buf += data

    def exchange(self, request):
        """Send request bytes, read one response. Returns (status, body, keep_alive)."""
        self.sock.sendall(request)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        total = end + 4 + length
        while len(self.buf) < total:
            self._fill()
        body = self.buf[end + 4 : total]
        self.buf = self.buf[total:]
        return status, body, keep

    def get(self, path, headers=()):
        return self.exchange(request_bytes(self.host, self.port, path, headers))


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def run(url, connections=4, duration=5.0, headers=()):
    """Load url for duration seconds over keep-alive connections (the built-in generator), each
    request carrying the extra "Name: value" header lines given.

    Returns {"rps", "p50_ms", "p99_ms", "requests", "errors", "non_2xx", "reconnects", "duration_s"}.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    req = request_bytes(host, port, path, headers)
    start_gate = threading.Barrier(connections + 1)
    stop_at = [time.perf_counter() + 3600.0]
    results = []
    lock = threading.Lock()

    def worker():
        lat = []
        errors = non_2xx = reconnects = 0
        conn = Connection(host, port)
        try:
            conn.open()
        except OSError:
            errors += 1
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                if conn.sock is None:
                    conn.open()
                    reconnects += 1
                status, _, keep = conn.exchange(req)
            except (OSError, ValueError, IndexError):
                errors += 1
                conn.close()
                continue
            lat.append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                non_2xx += 1
            if not keep:
                conn.close()
        conn.close()
        with lock:
            results.append((lat, errors, non_2xx, reconnects))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration  # connections are open; the clock starts now
    start_gate.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = sorted(x for r in results for x in r[0])
    return {
        "rps": len(lat) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000.0,
        "p99_ms": percentile(lat, 99) * 1000.0,
        "requests": len(lat),
        "errors": sum(r[1] for r in results),
        "non_2xx": sum(r[2] for r in results),
        "reconnects": sum(r[3] for r in results),
        "duration_s": elapsed,
    }


def _wrk_time_ms(text):
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text) * 1000.0


def parse_wrk(out):
    """Requests/sec, the 50 % / 99 % latency lines, request and error counts of `wrk --latency`."""
    r = {"errors": 0, "non_2xx": 0}
    for line in out.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] == "Requests/sec:":
            r["rps"] = float(w[1])
        elif w[0] == "50%":
            r["p50_ms"] = _wrk_time_ms(w[1])
        elif w[0] == "99%":
            r["p99_ms"] = _wrk_time_ms(w[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["non_2xx"] = int(w[-1])
        elif w[0] == "Socket" and w[1] == "errors:":
            r["errors"] = sum(int(x.strip(",")) for x in w[3::2])
        elif len(w) >= 4 and w[1] == "requests" and w[2] == "in":
            r["requests"] = int(w[0])
    for k in ("rps", "p50_ms", "p99_ms"):
        if k not in r:
            raise ValueError("wrk output without %s:\n%s" % (k, out))
    return r


def run_wrk(wrk, url, connections=4, duration=5.0, threads=2, headers=()):
    """`wrk -t2 -cN -dS --latency [-H "Name: value" ...] url`, parsed (same fields as run())."""
    cmd = [wrk, "-t%d" % threads, "-c%d" % connections, "-d%gs" % duration, "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if p.returncode != 0:
        raise ValueError("wrk failed: %s %s" % (p.stdout, p.stderr))
    return parse_wrk(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("--connections", "-c", type=int, default=4)
    ap.add_argument("--duration", "-d", type=float, default=5.0)
    ap.add_argument("--header", "-H", action="append", default=[], help='an extra header line, "Name: value"')
    a = ap.parse_args()
    r = run(a.url, a.connections, a.duration, a.header)
    print(
        "%.0f req/s  p50 %.3f ms  p99 %.3f ms  (%d requests, %d errors, %d non-2xx, %d reconnects)"
        % (r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], r["errors"], r["non_2xx"], r["reconnects"])
    )


if __name__ == "__main__":
    main()

"""The benchmark's processes: start and stop the servers, read what they used, drive loads at them.

Owns: the MicroPython unix port's processes tools/bench.py, bench_pool.py and bench_res.py run
(the bare server of tools/bare_server.py, the gateway firmware with a config dict written for the
run), their CPU time and written bytes from /proc, /_gw/health on a keep-alive connection, and one
load measured in rounds (wrk or tools/loadgen.py) with medians and CPU per request. It knows no
figure's target and builds no gateway config: those are bench.py's, bench_pool.py's and
bench_res.py's.
Linux only (/proc); CPython, stdlib only.
"""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bare_server  # noqa: E402  (its fixed answer: the upstream's requests are counted by it)
import loadgen  # noqa: E402

MPY = os.environ.get("MICROPYTHON", os.path.join(ROOT, ".venv", "bin", "micropython"))
WRK = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
CONNECTIONS = 4  # keep-alive client connections of every load, and the gateways' listen slots


class BenchError(Exception):
    pass


# -- processes -----------------------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tail(path, n=2000):
    """The last n characters of a log ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def wait_port(port, proc, log_path, timeout=10.0):
    """Connect to port until something listens there (one connection the server accepts)."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise BenchError("process exited (%s); log:\n%s" % (proc.returncode, tail(log_path)))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError("nothing listening on port %d after %.0f s; log:\n%s" % (port, timeout, tail(log_path)))


def wait_line(prefix, proc, log_path, timeout=10.0):
    """Wait until the log has a line starting with prefix (no connection to the server)."""
    end = time.time() + timeout
    while time.time() < end:
        if any(ln.startswith(prefix) for ln in tail(log_path).splitlines()):
            return
        if proc.poll() is not None:
            raise BenchError("process exited (%s); log:\n%s" % (proc.returncode, tail(log_path)))
        time.sleep(0.05)
    raise BenchError("no %r line after %.0f s; log:\n%s" % (prefix, timeout, tail(log_path)))


def stop(proc):
    """Terminate a server we started (no-op for None or an exited one)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(cmd, cwd, log, env=None):
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)


def start_bare(tmp, port, name="bare", probe=True):
    """A bare server on port; returns (process, log path). probe: wait by connecting (the server
    then counts that connection), else by its "bare listening" line (it counts none)."""
    log = os.path.join(tmp, name + ".log")
    proc = _spawn([MPY, os.path.join(HERE, "bare_server.py"), str(port)], ROOT, log)
    if probe:
        wait_port(port, proc, log)
    else:
        wait_line("bare listening", proc, log)
    return proc, log


def stop_bare(proc, log):
    """Interrupt a bare server; returns the connections it accepted (-1 if it did not say)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for line in tail(log).splitlines():
        if line.startswith("connections "):
            return int(line.split()[1])
    return -1


def start_firmware(tmp, name, cfg, port, firmware):
    """The gateway (firmware/main.py of the firmware folder) with config dict cfg, written to
    tmp/name.json, listening on port; returns (process, log path)."""
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log = os.path.join(tmp, name + ".log")
    env = dict(os.environ, MICROPYPATH=".:%s:.frozen" % os.path.join(ROOT, "boards", "unix"))
    proc = _spawn([MPY, "main.py", "--config", path, "--port", str(port)], firmware, log, env)
    wait_port(port, proc, log)
    return proc, log


def cpu_s(pid):
    """User + system CPU seconds used so far by process pid (Linux /proc), or 0.0."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def cpu_self_children():
    """CPU seconds of this process (loadgen threads) plus its waited-for children (wrk)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def upstream_answers(pid):
    """Answers a bare server (pid) has written so far: its written bytes (/proc/PID/io wchar; the
    unix port writes each answer with one write) over the size of its fixed answer; -1 if unknown."""
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1]) // len(bare_server.RESPONSE)
    except (OSError, ValueError):
        pass
    return -1


def answers(procs):
    """upstream_answers summed over several bare servers; -1 if any is unknown."""
    counts = [upstream_answers(p.pid) for p in procs]
    return -1 if any(c < 0 for c in counts) else sum(counts)


def add_count(total, before, after):
    """total + after - before: a count kept over several spans; -1 once a count was unknown."""
    return -1 if total < 0 or before < 0 or after < 0 else total + after - before


# -- the gateway's own figures -----------------------------------------------------------------------


def gateway_connection(port):
    conn = loadgen.Connection("127.0.0.1", port)
    conn.open()
    return conn


def health(conn):
    """GET /_gw/health on a keep-alive connection, as a dict."""
    status, body, keep = conn.get("/_gw/health")
    if status != 200 or not keep:
        raise BenchError("/_gw/health answered %d (keep-alive %s)" % (status, keep))
    return json.loads(body)


def first_health(port):
    """/_gw/health on a connection of its own (as the first request after boot, heap_used is
    then the heap after boot)."""
    c = gateway_connection(port)
    try:
        h = health(c)
    finally:
        c.close()
    if "alloc_total" not in h:
        raise BenchError("/_gw/health has no alloc_total field (micropython.mem_total())")
    return h


# -- load ------------------------------------------------------------------------------------------


def load(tool, url, duration, headers=()):
    if tool == "wrk":
        try:
            return loadgen.run_wrk(WRK, url, CONNECTIONS, duration, headers=headers)
        except ValueError as e:
            raise BenchError(str(e))
    return loadgen.run(url, CONNECTIONS, duration, headers)


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def measure_loads(
    res, tool, duration, rounds, warm, phases, upstreams, upstream_cpu=(), connects=None, settle=None, answered=()
):
    """Load each (name, url, server process, header lines) of phases in turn, rounds times (a
    warm-up of warm seconds before each in the first round); into res: rps_NAME, p50_ms_NAME,
    p99_ms_NAME (medians), the runs, errors, CPU per request of the server and the load tool, and
    the requests the upstreams (bare server processes) answered during the loads. The upstreams'
    CPU per request is reported for the names in upstream_cpu. connects: a function giving the
    upstream connections the gateway opened so far; its growth during the loads (warm-up
    included) of each phase goes to upstream_connects_NAME. settle: called before each load (and
    its warm-up), to let the gateway reach a state to start from. answered: names of phases whose
    non-2xx answers are the point (a refusal measured): errors_NAME then counts socket errors
    only, and non_2xx_NAME and requests_NAME (all rounds, warm-ups not included) say how many of
    the answers were non-2xx."""
    names = [p[0] for p in phases]
    runs = {name: [] for name in names}
    cpu = {name: [0.0, 0.0, 0.0, 0] for name in names}  # server, upstreams, load tool, requests
    upstream_requests = {name: 0 for name in names}  # answered by the upstreams, warm-up included
    opened = {name: 0 for name in names}

    def cpu_now(server):
        return (cpu_s(server.pid), sum(cpu_s(u.pid) for u in upstreams), cpu_self_children())

    for rnd in range(rounds):
        for name, url, server, headers in phases:
            print(
                "round %d/%d: %-12s %s, %s, %d connections, %g s ..."
                % (rnd + 1, rounds, name, url, tool, CONNECTIONS, duration),
                flush=True,
            )
            if settle is not None:
                settle()
            u0 = answers(upstreams)
            c0 = connects() if connects is not None else 0  # a request to the gateway: before the clock
            if rnd == 0:
                loadgen.run(url, CONNECTIONS, warm, headers)  # warm-up, not counted
            cpu0 = cpu_now(server)
            r = load(tool, url, duration, headers)
            cpu1 = cpu_now(server)
            upstream_requests[name] = add_count(upstream_requests[name], u0, answers(upstreams))
            opened[name] += (connects() if connects is not None else 0) - c0
            runs[name].append(r)
            acc = cpu[name]
            for i in range(3):
                acc[i] += cpu1[i] - cpu0[i]
            acc[3] += r.get("requests") or r["rps"] * duration
    for name in names:
        rs = runs[name]
        res["rps_" + name] = median([r["rps"] for r in rs])
        res["p50_ms_" + name] = median([r["p50_ms"] for r in rs])
        res["p99_ms_" + name] = median([r["p99_ms"] for r in rs])
        res["rps_%s_runs" % name] = " ".join("%.0f" % r["rps"] for r in rs)
        if name in answered:
            res["errors_" + name] = sum(r.get("errors", 0) for r in rs)
            res["non_2xx_" + name] = sum(r.get("non_2xx", 0) for r in rs)
            res["requests_" + name] = sum(r.get("requests") or round(r["rps"] * duration) for r in rs)
        else:
            res["errors_" + name] = sum(r.get("errors", 0) + r.get("non_2xx", 0) for r in rs)
        acc = cpu[name]
        res["cpu_us_per_request_server_" + name] = acc[0] * 1e6 / acc[3]
        res["cpu_us_per_request_loadgen_" + name] = acc[2] * 1e6 / acc[3]
        if name in upstream_cpu:
            res["cpu_us_per_request_upstream_" + name] = acc[1] * 1e6 / acc[3]
        res["upstream_requests_" + name] = upstream_requests[name]
        if connects is not None:
            res["upstream_connects_" + name] = opened[name]

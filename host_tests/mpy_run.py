"""Test runner for the portable suite on the MicroPython unix port.

Run from the repository root:

    MICROPYPATH=firmware:host_tests:.frozen .venv/bin/micropython host_tests/mpy_run.py [-v] [names...]

It imports every host_tests/test_*.py (top level only: host_tests/cpython/ is CPython-only),
calls each function whose name starts with `test_` (in name order), and ends with the line
`N passed, N failed` (plus `, N skipped`). The exit code is 1 if anything failed or nothing ran.

names select what runs: `test_native` or `native` (a module), `native.test_mem_move` (one test).
-v prints every test's name and outcome. --heap=SIZE runs each module in a fresh interpreter with
`-X heapsize=SIZE` (what `make test` does), as a board runs one program per boot. A module with
a line `# mpy_run: heapsize=SIZE` gets that heap instead (say why beside it).

Memory: `make test` runs this with `-X heapsize=512k --heap=512k` (the first is an option of the
micropython binary, given before the script name), so a test that allocates grossly fails with
MemoryError here.
Each test starts after gc.collect(); each test module, and every module its import loaded (the
firmware's too), is dropped from sys.modules when done, so the suite's size does not add up.
"""

import gc
import sys
import time

import check


def _print_exc(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)  # type: ignore[attr-defined]
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def _test_dir():
    script = sys.argv[0] if sys.argv and sys.argv[0] else "host_tests/mpy_run.py"
    i = script.rfind("/")
    return script[:i] if i >= 0 else "."


def _modules(test_dir):
    import os

    names = []
    for name in os.listdir(test_dir):
        if name.startswith("test_") and name.endswith(".py"):
            names.append(name[:-3])
    names.sort()
    return names


def _parse_selection(args):
    """Map module name -> None (all tests) or a list of test names."""
    sel = {}
    for a in args:
        if a.endswith(".py"):
            a = a[:-3]
        a = a.replace(":", ".")
        i = a.rfind("/")
        if i >= 0:
            a = a[i + 1 :]
        func = None
        if "." in a:
            a, func = a.split(".", 1)
        if not a.startswith("test_"):
            a = "test_" + a
        if func is not None and not func.startswith("test_"):
            func = "test_" + func
        if func is None:
            sel[a] = None
        elif a not in sel:
            sel[a] = [func]
        elif sel[a] is not None:
            sel[a].append(func)
    return sel


def _run_module(name, only, verbose, counts):
    """Import one test module and run its tests; counts is [passed, failed, skipped]."""
    gc.collect()
    loaded = list(sys.modules)  # what this module imports is dropped after it (the heap is small)
    try:
        mod = __import__(name)
    except Exception as e:
        print("ERROR importing", name)
        _print_exc(e)
        counts[1] += 1
        return
    tests = [t for t in dir(mod) if t.startswith("test_") and callable(getattr(mod, t))]
    tests.sort()
    if only is not None:
        missing = [t for t in only if t not in tests]
        for t in missing:
            print("ERROR", name + "." + t, "not found")
            counts[1] += 1
        tests = [t for t in tests if t in only]
    p0, f0, s0 = counts[0], counts[1], counts[2]
    t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else 0  # type: ignore[attr-defined]
    for t in tests:
        fn = getattr(mod, t)
        before = list(sys.modules)  # modules a test imports lazily go with it
        gc.collect()
        try:
            fn()
        except check.SkipTest as e:
            counts[2] += 1
            if verbose:
                print("  skip", t, "-", e)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            counts[1] += 1
            print("FAIL", name + "." + t)
            _print_exc(e)
        else:
            counts[0] += 1
            if verbose:
                print("  ok  ", t)
        for m in list(sys.modules):
            if m not in before:
                del sys.modules[m]
    ms = time.ticks_diff(time.ticks_ms(), t0) if t0 else 0  # type: ignore[attr-defined]
    line = "%s: %d passed, %d failed" % (name, counts[0] - p0, counts[1] - f0)
    if counts[2] - s0:
        line += ", %d skipped" % (counts[2] - s0)
    print(line, "(%d ms)" % ms)
    del mod
    for m in list(sys.modules):
        if m not in loaded:
            del sys.modules[m]


def _own_heap(test_dir, name, heap):
    """The heap a module asks for with a line `# mpy_run: heapsize=SIZE` (a test that compiles much
    of the firmware from source: a board loads it precompiled), else heap."""
    marker = "# mpy_run: heapsize="
    with open("%s/%s.py" % (test_dir, name)) as f:
        for line in f:
            if line.startswith(marker):
                return line[len(marker) :].split()[0]
    return heap


def _run_apart(name, heap, verbose, test_dir, counts):
    """Run one test module in a fresh interpreter with the given heap, as a board boots once per
    program: interned names and heap fragments of one module do not burden the next."""
    import os

    heap = _own_heap(test_dir, name, heap)

    out = "/tmp/mpy_run_%d.txt" % os.getpid() if hasattr(os, "getpid") else "/tmp/mpy_run.txt"
    cmd = "%s -X heapsize=%s %s/mpy_run.py %s%s > %s 2>&1" % (
        sys.executable,
        heap,
        test_dir,
        "-v " if verbose else "",
        name,
        out,
    )
    status = os.system(cmd)
    with open(out) as f:
        text = f.read()
    os.remove(out)
    lines = text.rstrip().split("\n")
    print("\n".join(lines[:-1]))  # the module's own lines; its total is added to ours
    got = [0, 0, 0]
    for part in lines[-1].split(","):
        words = part.split()
        if len(words) == 2 and words[1] in ("passed", "failed", "skipped"):
            got[("passed", "failed", "skipped").index(words[1])] = int(words[0])
    if status != 0 and got[1] == 0:
        print("ERROR", name, "exited with status", status)
        got[1] = 1
    for i in range(3):
        counts[i] += got[i]


def main(argv):
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    names = [a for a in args if not a.startswith("--")]
    test_dir = _test_dir()
    found = _modules(test_dir)
    sel = _parse_selection(names)
    counts = [0, 0, 0]
    if sel:
        for name in sel:
            if name not in found:
                print("ERROR no module", name, "in", test_dir)
                counts[1] += 1
        run = [m for m in found if m in sel]
    else:
        run = found
    heap = None
    for a in args:
        if a.startswith("--heap="):
            heap = a[7:]
    for name in run:
        if heap is None:
            _run_module(name, sel.get(name) if sel else None, verbose, counts)
        else:
            _run_apart(name, heap, verbose, test_dir, counts)
    line = "%d passed, %d failed" % (counts[0], counts[1])
    if counts[2]:
        line += ", %d skipped" % counts[2]
    print(line)
    if counts[1]:
        return 1
    if counts[0] + counts[2] == 0:
        print("no tests ran")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

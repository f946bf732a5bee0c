"""Helpers for portable tests: the same `def test_*()` runs under pytest and the unix port.

Portable test modules import only this (never pytest), so they load on MicroPython too.
Under CPython a skip is pytest.skip; under MicroPython it raises SkipTest, which
host_tests/mpy_run.py counts as skipped.
"""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


class SkipTest(Exception):
    """Raised by skip() on MicroPython; the runner counts the test as skipped."""


def skip(reason):
    """Skip the calling test with a reason, on either runtime."""
    if IS_MICROPYTHON:
        raise SkipTest(reason)
    import pytest

    pytest.skip(reason)


def requires_micropython():
    """Skip under CPython (tests of heap_lock, viper, mem_total); do nothing on MicroPython."""
    if not IS_MICROPYTHON:
        skip("needs MicroPython (heap_lock / viper); runs under host_tests/mpy_run.py")


def raises(exc_type, fn, *args, **kw):
    """Call fn(*args, **kw); return the exc_type it raised, or fail with AssertionError."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    name = getattr(fn, "__name__", "call")
    raise AssertionError("%s did not raise %r" % (name, exc_type))


def root():
    """The repository's folder (for boards/ and firmware/ files), from this file's path: the unix
    port has no os.path, and a test may run from the repository or from host_tests/."""
    f = __file__
    i = f.rfind("/")
    d = f[:i] if i >= 0 else "."
    j = d.rfind("/")
    return d[:j] if j >= 0 else (".." if d == "." else ".")


def lcg(seed):
    """A deterministic generator of 31-bit ints for generated test data (the random module is not
    on every MicroPython): returns a function giving the next one."""
    state = [seed & 0x7FFFFFFF]

    def nxt():
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0]

    return nxt

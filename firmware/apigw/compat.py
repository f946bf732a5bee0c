"""The one place that asks "am I on CPython?".

Hot functions are decorated `@micropython.native` (import `micropython` from here): a bytecode
function whose frame is bigger than about 11 words takes that frame from the heap on every call,
a native one keeps it on the C stack, so native hot paths allocate nothing.

Everything else imports ticks, const and the MicroPython-only helpers from here, so the same
modules run on a board, on the unix port and under CPython (host tests, tools).
This module must stay tiny: it is imported first on every board.
"""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    import micropython  # type: ignore
    import time

    def asyncio_core():
        """asyncio's core module, whose I/O queue sockio uses (imported when first asked for)."""
        from asyncio import core  # type: ignore[attr-defined]

        return core

    const = micropython.const
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_us = time.ticks_us  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]

    def mem_free():
        import gc

        return gc.mem_free()  # type: ignore[attr-defined]

    def mem_alloc():
        import gc

        return gc.mem_alloc()  # type: ignore[attr-defined]

    def mem_total():
        """Bytes allocated since boot, where the port counts them (the unix port does), else -1."""
        f = getattr(micropython, "mem_total", None)
        return f() if f is not None else -1

else:
    import time

    # Ticks wrap like a board's (30-bit period) so wraparound bugs show up on the host too.
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2
    _T0 = time.monotonic_ns()

    def const(x):
        return x

    def ticks_ms():
        return ((time.monotonic_ns() - _T0) // 1000000) % _TICKS_PERIOD

    def ticks_us():
        return ((time.monotonic_ns() - _T0) // 1000) % _TICKS_PERIOD

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF

    def ticks_add(a, delta):
        return (a + delta) % _TICKS_PERIOD

    def sleep_ms(ms):
        time.sleep(ms / 1000)

    def mem_free():
        return -1

    def mem_alloc():
        return -1

    def mem_total():
        return -1

    def asyncio_core():
        """None: CPython's asyncio has no such internals (sockio's queue is MicroPython's)."""
        return None

    class micropython:  # noqa: N801
        """Stand-in for the decorators: the MicroPython compiler reads `@micropython.native` and
        `@micropython.viper` by name; under CPython they leave the function as it is."""

        @staticmethod
        def native(f):
            return f

        @staticmethod
        def viper(f):
            return f

"""Boot entry: bring the board up, load gateway.json (or the last good one), serve until stopped.

On a board this runs at power-on; on the unix port `make run` starts it as
`micropython main.py --config ../boards/unix/gateway.json [--port N]`.
Ctrl-C on the console stops the gateway cleanly and returns to the REPL.
"""

import gc
import sys

import asyncio

from apigw.slot import SlotPool

try:
    import board  # type: ignore  # boards/<name>/board.py, copied next to main.py
except ImportError:
    board = None


def _args(argv):
    opts = {"config": "gateway.json", "port": None, "good": None}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "--port", "--good") and i + 1 < len(argv):
            opts[a[2:]] = argv[i + 1]
            i += 2
        else:
            print("usage: main.py [--config gateway.json] [--port N] [--good last-good.json]")
            raise SystemExit(2)
    path = opts["config"]
    cut = path.rfind(".json")
    stem = path[:cut] if cut > 0 else path
    if opts["good"] is None:
        opts["good"] = stem + ".good.json"
    opts["changes"] = stem + ".changes.json"  # run-time changes (apigw/runstate.py)
    return opts


async def _shells(shells, sc):
    """Start the console shell and, when the config's shell section asks, the TCP shell; once:
    shells becomes [Console, the console's task], and each server takes the Console over. Started
    from a coroutine of their own: a task started from one that holds a server would keep that
    server alive after a reload (measured on the unix port)."""
    try:
        from apigw.console import Console, console, serve_tcp
    except ImportError:
        return
    from apigw.sockio import install

    install()  # before the console waits on stdin: the queue is replaced only while nothing waits
    runner = Console(None)
    shells.append(runner)
    if sc.enabled:
        asyncio.create_task(serve_tcp(runner, sc.host, sc.port))
        print("shell on tcp " + sc.host + ":" + str(sc.port))
    shells.append(asyncio.create_task(console(runner)))
    await asyncio.sleep_ms(0)  # the shells start here, with no server in sight


async def _run(server, shells):
    """Serve until the server stops."""
    await server.start()
    if shells:
        shells[0].server = server  # the next command line builds its Shell on this server
    await server.stopped.wait()
    if getattr(server, "reload_requested", False):
        await asyncio.sleep_ms(20)  # the old server's cancelled tasks end and let go of it


def _load(opts, pools):
    """Load the config (or the last good one). The loader is needed only here: it is imported
    here and dropped after, so its code does not take heap while the gateway serves. The slot
    buffers are made as soon as the listen section is known, before the tables."""
    from apigw import config as loader

    def make_slots(listen):
        pools[:] = []  # a fallback config may size them differently
        gc.collect()
        pools.append(SlotPool(listen.slots, listen.request_buffer, listen.io_buffer, listen.max_headers))

    # Collect often while the config loads: otherwise its garbage fills the heap and the small
    # objects that stay end up spread over all of it, leaving no gap big enough for a slot buffer.
    gc.collect()
    gc.threshold(4096)
    try:
        config, error = loader.load_with_fallback(opts["config"], opts["good"], make_slots)
    finally:
        gc.threshold(-1)
    return config, (None if error is None else str(error))  # no ConfigError outlives the loader


def _drop_module(name):
    """Forget a module so the collector can reclaim its code."""
    sys.modules.pop(name, None)
    pkg = sys.modules.get("apigw")
    attr = name[name.rfind(".") + 1 :]
    if pkg is not None and attr in pkg.__dict__:
        delattr(pkg, attr)


def _boot(opts, pools, first):
    """Load the config (or the last good one) and build the Server for it."""
    config, error = _load(opts, pools)
    _drop_module("apigw.config")
    _drop_module("apigw.authconfig")  # the auth section is built: its checks are not needed again
    _drop_module("apigw.medconfig")  # so is the mediation section
    _drop_module("apigw.lbconfig")  # and the pools section
    _drop_module("apigw.resconfig")  # and the resilience settings
    _drop_module("apigw.monconfig")  # and the monitoring section
    _drop_module("apigw.sectioncheck")
    if error is not None:
        print("apigw: config error: " + str(error))
        print("apigw: running the last good config " + opts["good"])
    if opts["port"] is not None:
        config.listen.port = int(opts["port"])
    if board is not None and first:
        board.setup(config)  # Wi-Fi, clock, watchdog: once; a reload keeps them
    gc.collect()
    gc.threshold(2048)  # as while loading: the server's code goes in without leaving small gaps
    try:
        from apigw.server import Server  # imported after the loader is gone: a lower peak at boot

        pool = pools[0] if pools and len(pools[0]) == config.listen.slots else None
        server = Server(config, on_tick=board.feed_watchdog if board is not None else None, pool=pool)
    finally:
        gc.threshold(-1)
    # For the admin API (adminendpoints.py reads them with getattr; Server does not declare them).
    server.config_path = opts["config"]  # type: ignore
    server.good_path = opts["good"]  # type: ignore
    server.changes_path = opts["changes"]  # type: ignore
    _apply_changes(server, opts["changes"])
    return server


def _apply_changes(server, path):
    """Apply the run-time changes saved by the shells and the admin API (apigw/runstate.py). The
    module is imported only when there is a change file (or its previous copy) to apply."""
    import os

    for p in (path, path[:-5] + ".prev.json"):  # runstate.prev_path's rule, without loading it
        try:
            os.stat(p)
        except OSError:
            continue
        from apigw import runstate
        from apigw.compat import ticks_ms

        runstate.load(server, path, ticks_ms())  # type: ignore  # (the board stubs type ticks_ms apart)
        return


def _serve(opts, pools, shells, first):
    """Boot and serve until the server stops: the server, or None when a reload was asked for.
    Its own function, so the old server's last references go with its frame: the collector also
    scans stale slots of a live frame."""
    server = _boot(opts, pools, first)
    server.board = board  # type: ignore  # health() reports its clock_synced
    if first:
        asyncio.run(_shells(shells, server.config.shell))
    gc.collect()  # start serving with the boot garbage gone
    try:
        asyncio.run(_run(server, shells))
    except KeyboardInterrupt:
        print("apigw: stopping (Ctrl-C)")
        asyncio.run(server.stop())
        return server
    return None if getattr(server, "reload_requested", False) else server


def main(argv=None):
    if board is not None and getattr(board, "safe_mode", None) is not None and board.safe_mode():
        return None  # a held boot button or the file safemode: the board said why and how to leave
    opts = _args(argv if argv is not None else getattr(sys, "argv", ["main.py"]))
    pools = []
    shells = []  # [Console, its task] once started: they outlive a reload
    server = _serve(opts, pools, shells, True)
    while server is None:
        # POST /_gw/admin/reload stopped the server: load the file again and serve it on the same
        # port. Every reference to the old server goes first, so its slots and tables are free.
        print("apigw: reloading " + opts["config"])
        if shells:
            shells[0].server = shells[0].shell = None  # the console holds the old server too
            if len(shells) > 1 and shells[1].done():
                shells.pop()  # a finished task (no console input) still leads to the old server
        if board is not None:
            board.feed_watchdog()
        gc.collect()
        server = _serve(opts, pools, shells, False)
    if len(shells) > 1:
        shells[1].cancel()
    return server


if __name__ == "__main__":
    main()

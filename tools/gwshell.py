"""The gateway shell from the host (CPython).

    python tools/gwshell.py --tcp 127.0.0.1:8023 [COMMAND WORDS...]    a running gateway's TCP shell
    python tools/gwshell.py --serial /dev/ttyUSB0 [COMMAND WORDS...]   a board's serial console
    python tools/gwshell.py --config gateway.json [COMMAND WORDS...]   offline, against a config file

With command words it runs that one command and prints the output; without, it reads commands
from the terminal until EOF or `exit`. Offline mode loads the config with the firmware's own
modules, so `gateway route GET /path` shows the decision a board would make, before flashing.
"""

import argparse
import os
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = b"apigw> "


class TcpShell:
    def __init__(self, where, timeout=5.0):
        host, _, port = where.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        self._until_prompt()

    def _until_prompt(self):
        data = b""
        while not data.endswith(PROMPT):
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data[: -len(PROMPT)] if data.endswith(PROMPT) else data

    def run(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self._until_prompt().decode().rstrip("\n")

    def close(self):
        self.sock.close()


class SerialShell:
    """The console of a board running the gateway (the shell task reads lines there)."""

    def __init__(self, device, baud=115200, timeout=5.0):
        import serial  # pyserial, installed with mpremote

        self.port = serial.Serial(device, baud, timeout=0.1)
        self.timeout = timeout

    def run(self, line):
        self.port.reset_input_buffer()
        self.port.write(line.encode() + b"\r\n")
        data = b""
        end = time.monotonic() + self.timeout
        while not data.endswith(PROMPT) and time.monotonic() < end:
            data += self.port.read(4096)
        text = data.decode(errors="replace").replace("\r\n", "\n")
        if text.startswith(line):  # the console echoes what was typed
            text = text[len(line) :].lstrip("\n")
        if text.endswith(PROMPT.decode()):
            text = text[: -len(PROMPT)]
        return text.rstrip("\n")

    def close(self):
        self.port.close()


class OfflineShell:
    """The firmware's Shell over a config loaded in this process (no server: no stats)."""

    def __init__(self, config_path):
        sys.path.insert(0, os.path.join(ROOT, "firmware"))
        from apigw.config import load_config
        from apigw.shell import Shell

        cfg = load_config(config_path)
        self.shell = Shell(
            cfg.gateway,
            gate=cfg.gate,
            mediator=cfg.mediator,
            balancer=getattr(cfg, "balancer", None),
            guard=getattr(cfg, "guard", None),
            monitoring=getattr(cfg, "monitoring", None),
        )

    def run(self, line):
        return self.shell.execute(line)

    def close(self):
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="a gateway's TCP shell (shell.enabled in its config)")
    where.add_argument("--serial", metavar="DEVICE", help="a board's serial console")
    where.add_argument("--config", metavar="FILE", help="run offline against this gateway.json")
    ap.add_argument("command", nargs="*", help="one command to run (else read commands from stdin)")
    args = ap.parse_args(argv)
    try:
        if args.tcp:
            sh = TcpShell(args.tcp)
        elif args.serial:
            sh = SerialShell(args.serial)
        else:
            sh = OfflineShell(args.config)
    except (OSError, ValueError) as e:
        print("gwshell: " + str(e), file=sys.stderr)
        return 1
    try:
        if args.command:
            out = sh.run(" ".join(args.command))
            print(out)
            return 1 if out.startswith("error:") else 0
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                sys.stdout.write(PROMPT.decode())
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line or line.strip() in ("exit", "quit"):
                return 0
            if line.strip():
                print(sh.run(line.strip()))
    finally:
        sh.close()


if __name__ == "__main__":
    sys.exit(main())

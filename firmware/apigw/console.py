"""Where the shell runs: the console (serial on a board, the terminal on the unix port) and an
optional TCP port bound to loopback (off by default: nothing protects it yet).

The shell's commands (shell.py) are imported on the first command line, not at boot: until
someone types, their code takes no heap. Off the request path: allocates freely.
"""

import asyncio
import sys

PROMPT = "apigw> "


class Console:
    """Runs command lines against the server's gateway, loading the shell when first needed."""

    def __init__(self, server):
        self.server = server
        self.shell = None

    def execute(self, line):
        if not line.strip():
            return ""
        if self.shell is None:
            from .shell import Shell

            self.shell = Shell(self.server.gw, self.server)
        return self.shell.execute(line)


async def console(runner, stream=None, out=None):
    """Read command lines from the console (stdin) while the gateway serves."""
    reader = stream or asyncio.StreamReader(sys.stdin)  # type: ignore[arg-type]
    write = out or sys.stdout.write
    write(PROMPT)
    while True:
        line = await reader.readline()
        if not line:
            return  # console closed (no terminal): the gateway keeps serving
        text = runner.execute(line.decode() if isinstance(line, bytes) else line)
        write((text + "\n" if text else "") + PROMPT)


async def serve_tcp(runner, host, port):
    """The shell on a TCP port (bind it to loopback: it has no authentication yet)."""

    async def session(reader, writer):
        try:
            writer.write(PROMPT.encode())
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = runner.execute(line.decode())
                writer.write(((text + "\n" if text else "") + PROMPT).encode())
                await writer.drain()
        except OSError:
            pass
        finally:
            await writer.wait_closed()

    return await asyncio.start_server(session, host, port)


def start_shells(server):
    """Start the console shell and, when configured, the TCP shell. Returns the console task."""
    runner = Console(server)
    sc = getattr(server.config, "shell", None)
    if sc is not None and getattr(sc, "enabled", False):
        asyncio.create_task(serve_tcp(runner, sc.host, sc.port))
        server.log("shell on tcp " + sc.host + ":" + str(sc.port))
    return asyncio.create_task(console(runner))

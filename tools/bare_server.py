"""The "bare" reference server: MicroPython asyncio answering every request with one fixed response.

    .venv/bin/micropython tools/bare_server.py [PORT] [HOST]

The fair baseline for the gateway's throughput on the same VM: keep-alive connections, readinto
into a buffer made once per connection, the end of each request head found with one
`find(b"\\r\\n\\r\\n")`, and a pre-encoded `200` with a small JSON body and Content-Length. No
routing and no parsing beyond the head end (request bodies are not expected: GET only). The
benchmark also uses it as the gateway's upstream. Prints `bare listening on HOST:PORT` when ready
and, when stopped with SIGINT (Ctrl-C), `connections N`: the connections it accepted, so a client
can tell whether its connections were kept alive. No timer task runs (asyncio then polls once per
wake-up): this is the floor for a server on this VM.
"""

import sys

import asyncio

BODY = b'{"ok": true}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
END = b"\r\n\r\n"
BUF_SIZE = 4096


accepted = 0


async def serve(reader, writer):
    global accepted
    accepted += 1
    buf = bytearray(BUF_SIZE)  # once per connection
    mv = memoryview(buf)
    n = 0
    try:
        while True:
            k = await reader.readinto(mv[n:])
            if not k:
                break
            n += k
            start = 0
            p = buf.find(END, 0, n)
            while p >= 0:  # one answer per complete head (pipelined heads included)
                writer.write(RESPONSE)
                start = p + 4
                p = buf.find(END, start, n)
            if start:
                if start < n:
                    buf[0 : n - start] = buf[start:n]  # a partial next head: rare, allocates
                n -= start
                await writer.drain()
            elif n == BUF_SIZE:
                break  # a head larger than the buffer: give up on the connection
    except OSError:
        pass
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass


async def main(host, port):
    await asyncio.start_server(serve, host, port, backlog=16)
    print("bare listening on %s:%d" % (host, port))
    await asyncio.Event().wait()  # serve until interrupted


if __name__ == "__main__":
    _port = int(sys.argv[1]) if len(sys.argv) > 1 else 9100
    _host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    try:
        asyncio.run(main(_host, _port))
    except KeyboardInterrupt:
        print("connections %d" % accepted)

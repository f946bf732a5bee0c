"""Socket waits and writes for MicroPython asyncio that allocate (almost) nothing.

asyncio's Stream.readinto() and drain() are generator functions: each call allocates a generator.
On the request path the gateway instead talks to the raw non-blocking socket and awaits an
IOWait, one per slot made at boot: a reusable awaitable that parks the task on asyncio's I/O
queue until the socket is ready, the way asyncio's own SingletonGenerator parks it for sleep_ms.
(The I/O queue still allocates its small poll entry per wait; that is asyncio's cost and the
same for every server on this VM.)

MicroPython only: this module uses asyncio.core's I/O queue. It holds no protocol logic.
"""

from asyncio import core  # type: ignore[attr-defined]


class IOWait:
    """`await w.readable(sock)` / `await w.writable(sock)`: wait without allocating."""

    def __init__(self):
        self.sock = None
        self.mode = 0  # 1 = read, 2 = write, 0 = the wait is over
        self.done = StopIteration()  # raised to end the await; made once

    def readable(self, sock):
        self.sock = sock
        self.mode = 1
        return self

    def writable(self, sock):
        self.sock = sock
        self.mode = 2
        return self

    def __iter__(self):
        return self

    def __next__(self):
        mode = self.mode
        if mode:
            self.mode = 0
            if mode == 1:
                core._io_queue.queue_read(self.sock)
            else:
                core._io_queue.queue_write(self.sock)
            return None  # back to the scheduler until the socket is ready
        self.done.__traceback__ = None
        raise self.done


def send_now(sock, buf, mv, start, end):
    """Write buf[start:end] as far as the socket takes it now; returns the bytes written.
    Allocates only a memoryview slice when the span is not the whole buffer."""
    if start == 0 and end == len(buf):
        k = sock.write(buf)
    else:
        k = sock.write(mv[start:end])
    return k if k else 0


async def send_all(wait, sock, buf, mv, start, end):
    """Write buf[start:end] completely, waiting for the socket as needed (allocates a coroutine:
    call it only after send_now() could not write everything)."""
    while start < end:
        await wait.writable(sock)
        start += send_now(sock, buf, mv, start, end)


async def connect(wait, host, port):
    """A connected non-blocking TCP socket to host:port (allocates: socket, address). A refused
    connection shows as OSError on the first read or write."""
    import socket

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.errno != 115 and e.errno != 119:  # EINPROGRESS (115 Linux, 119 lwIP)
            s.close()
            raise
    await wait.writable(s)
    return s

"""Socket waits and writes for MicroPython asyncio that allocate nothing per request.

asyncio's Stream.readinto() and drain() are generator functions: each call allocates a generator.
On the request path the gateway instead talks to the raw non-blocking socket and awaits an
IOWait, one per slot made at boot: a reusable awaitable that parks the task on asyncio's I/O
queue until the socket is ready, the way asyncio's own SingletonGenerator parks it for sleep_ms.

asyncio's I/O queue itself allocates on every wait (a poll entry list, a poll registration, heap
frames): about 380 bytes. PinnedIOQueue replaces it, same interface, with one difference: a socket
the gateway pins keeps its entry and its poll registration (events switched off between waits)
for as long as it is open, so a wait on it allocates nothing. Unpinned sockets (the listener,
the console) behave exactly as before. Pinned sockets must be closed with close() here.

A TLS stream is pinned with its TCP socket, which the poller watches in its place: the poller
then holds file descriptors only, so it blocks in poll() instead of asking the TLS stream's ioctl
every millisecond, and it stays clear of select.poll's handling of objects without one (on the
unix port, growing its fd table corrupts their entries). The TCP socket's readiness misses what
the TLS layer already decrypted but not yet handed out: a reader that filled its buffer reads
again before it waits (server.py does).

The I/O queue and the waits use asyncio.core's internals (MicroPython); send_now() and close()
also work under CPython, where host tests drive the relay with stand-in sockets. No protocol
logic here.
"""

import select
import socket
from errno import EINPROGRESS

from .compat import asyncio_core, micropython

core = asyncio_core()

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLGONE = select.POLLERR | select.POLLHUP  # reported even with no events asked for


class PinnedIOQueue:
    """asyncio's IOQueue (map, queue_read, queue_write, remove, wait_io_event), keyed by the
    socket object, with persistent entries for pinned sockets. An entry is
    [reading task, writing task, what the poller watches, registered with the poller, pinned];
    a TLS stream's entry is in the map under the stream and under its TCP socket."""

    def __init__(self):
        self.poller = select.poll()
        self.map = {}  # socket -> entry; asyncio's loop only asks whether it is empty

    def pin(self, s, raw=None):
        """Keep s's entry and poll registration between waits (allocates once, here). raw: the
        TCP socket under s (a TLS stream), which the poller watches in s's place."""
        if s not in self.map:
            sm = [None, None, s if raw is None else raw, False, True]
            self.map[s] = sm
            if raw is not None and raw is not s:
                self.map[raw] = sm

    def forget(self, s):
        """Drop s's entry before s is closed."""
        sm = self.map.pop(s, None)
        if sm is not None:
            if sm[2] is not s:
                self.map.pop(sm[2], None)
            if sm[3]:
                self.poller.unregister(sm[2])

    @micropython.native
    def _enqueue(self, s, idx):
        sm = self.map.get(s)
        if sm is None:
            sm = [None, None, s, False, False]  # an unpinned socket: this entry lives for one wait
            self.map[s] = sm
        sm[idx] = core.cur_task
        mask = (_POLLIN if sm[0] is not None else 0) | (_POLLOUT if sm[1] is not None else 0)
        if sm[3]:
            self.poller.modify(sm[2], mask)
        else:
            self.poller.register(sm[2], mask)
            sm[3] = True
        core.cur_task.data = self  # lets Task.cancel() find the wait and remove it

    @micropython.native
    def _dequeue(self, s, sm, ev):
        """No task waits on s any more."""
        p = sm[2]
        if not sm[4]:
            del self.map[s]
            self.poller.unregister(p)
        elif ev & _POLLGONE:
            self.poller.unregister(p)  # closed or failed: stop the poller reporting it again
            sm[3] = False
        else:
            self.poller.modify(p, 0)  # parked: registered, no events asked for

    def queue_read(self, s):
        self._enqueue(s, 0)

    def queue_write(self, s):
        self._enqueue(s, 1)

    def remove(self, task):
        """Take a cancelled task off whatever it waits on."""
        for s in self.map:  # iterate without allocating
            sm = self.map[s]
            if sm[0] is task or sm[1] is task:
                if sm[0] is task:
                    sm[0] = None
                if sm[1] is task:
                    sm[1] = None
                if sm[0] is None and sm[1] is None:
                    self._dequeue(s, sm, 0)
                else:
                    self.poller.modify(sm[2], _POLLIN if sm[0] is not None else _POLLOUT)
                return

    @micropython.native
    def wait_io_event(self, dt):
        for s, ev in self.poller.ipoll(dt):
            sm = self.map.get(s)
            if sm is None:
                self.poller.unregister(s)
                continue
            if ev & ~_POLLOUT and sm[0] is not None:  # readable, or an error
                core._task_queue.push(sm[0])
                sm[0] = None
            if ev & ~_POLLIN and sm[1] is not None:  # writable, or an error
                core._task_queue.push(sm[1])
                sm[1] = None
            if sm[0] is None and sm[1] is None:
                self._dequeue(s, sm, ev)
            else:
                self.poller.modify(sm[2], _POLLIN if sm[0] is not None else _POLLOUT)


def install():
    """Put a PinnedIOQueue in asyncio's place; only while nothing waits on the old one. Returns
    True when installed (call at the start of the gateway's main task)."""
    q = core._io_queue
    if isinstance(q, PinnedIOQueue):
        return True
    if q.map:
        return False
    core._io_queue = PinnedIOQueue()
    return True


def pin(sock, raw=None):
    """Make waits on sock allocation-free; raw: its TCP socket if sock is a TLS stream."""
    if core is None:
        return
    q = core._io_queue
    if isinstance(q, PinnedIOQueue):
        q.pin(sock, raw)


def close(sock):
    """Close a socket, forgetting its pinned entry first."""
    if core is not None:
        q = core._io_queue
        if isinstance(q, PinnedIOQueue):
            q.forget(sock)
    sock.close()


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


@micropython.native
def send_now(sock, buf, start, end):
    """Write buf[start:end] as far as the socket takes it now; returns the bytes written.
    No allocation: the stream write takes an offset and a length, so no slice is made."""
    k = sock.write(buf, start, end - start)
    return k if k else 0


async def send_all(wait, sock, buf, start, end):
    """Write buf[start:end] completely, waiting for the socket as needed (allocates a coroutine:
    call it only after send_now() could not write everything)."""
    while start < end:
        await wait.writable(sock)
        start += send_now(sock, buf, start, end)


async def connect(wait, host, port, ai=None):
    """A connected non-blocking TCP socket to host:port (allocates: socket, address), or to ai, a
    getaddrinfo() entry resolved earlier. A refused connection shows as OSError on the first read
    or write. The imports are at module level: a built-in module imported inside a function is
    searched for on the filesystem every time."""
    if ai is None:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.errno != EINPROGRESS:
            s.close()
            raise
    pin(s)
    try:
        await wait.writable(s)
    except BaseException:  # cancelled (a timeout) while connecting: do not leak the socket
        close(s)
        raise
    return s

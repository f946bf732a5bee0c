"""Connection slots: the gateway's only per-request memory, all of it made at boot.

A Slot owns one request buffer (8 KB by default: request line + headers + body must fit), a
smaller I/O buffer for the upstream side, and integer fields the parser fills with offsets.
Nothing in a slot is sized by the client. The SlotPool hands slots out and takes them back;
it does no I/O and never blocks (waiting for a free slot is the server's job).
"""

from array import array

from .compat import const
from .native import mem_move

REQUEST_BUFFER = const(8192)
IO_BUFFER = const(2048)
MAX_HEADERS = const(32)

# Slot.phase: what a slot is doing, read by the server's timeout reaper.
FREE = const(0)
HEAD = const(1)  # waiting for / reading a request head (header timeout applies)
BODY = const(2)  # reading a request body
UPSTREAM = const(3)  # waiting for the upstream (upstream timeout applies)
STREAM = const(4)  # streaming a response to the client
IDLE = const(5)  # keep-alive, between requests (idle timeout applies)


class Slot:
    """One connection's buffers and the parser's offset tables. Allocates only in __init__."""

    def __init__(self, index, size=REQUEST_BUFFER, io_size=IO_BUFFER, max_headers=MAX_HEADERS):
        self.index = index
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.io = bytearray(io_size)
        self.iomv = memoryview(self.io)
        self.max_headers = max_headers
        # Header k: name in buf[hdr[4k]:hdr[4k+1]], value in buf[hdr[4k+2]:hdr[4k+3]].
        self.hdr = array("H", bytes(2 * 4 * max_headers))
        # Header k's kind (parser's HDR_* constants), so later stages need not compare names.
        self.hkind = bytearray(max_headers)
        # Router scratch: hashes and ends of the path's segment-boundary prefixes.
        self.bhash = array("I", bytes(4 * 33))
        self.bend = array("H", bytes(2 * 33))
        # Timing, for the reaper: phase and deadline (ticks_ms).
        self.phase = FREE
        self.deadline = 0
        self.task = None
        self.reset()

    def reset(self):
        """Forget everything about the connection (slot back to the pool). No allocation."""
        self.n = 0  # bytes of buf filled
        self.phase = FREE
        self.task = None
        self.requests = 0  # requests served on this connection
        self.peer = b""  # client IP as bytes, set by attach()
        self.timed_out = FREE  # the phase in which the reaper cancelled the connection
        self.clear_request()

    def clear_request(self):
        """Forget the parsed request, keep the bytes (parser starts over). No allocation."""
        self.scan = 0  # parser progress: head bytes already checked
        self.head_end = 0  # offset just past the blank line ending the head; 0 = not yet
        self.body_end = 0  # head_end + content length
        self.method_start = 0
        self.method_end = 0
        self.method = 0  # METHOD_* bit from the parser
        self.target_start = 0
        self.target_end = 0
        self.path_start = 0  # normalized path: buf[path_start:path_end]
        self.path_end = 0
        self.query_start = 0  # query incl. '?': buf[query_start:query_end]; empty if equal
        self.query_end = 0
        self.version = 11  # 10 or 11
        self.nhdr = 0
        self.content_length = 0
        self.keep_alive = True
        self.expect_continue = False
        self.continue_sent = False
        self.resp_started = False  # bytes of a response have gone to the client
        self.status = 0  # the status of the answer given (monitoring reads it)
        self.out_start = 0  # io[out_start:out_end]: composed but not yet taken by the socket
        self.out_end = 0
        self.host = -1  # header index of Host, or -1
        self.conn_extra = False  # Connection header names other headers (hop-by-hop)
        # Route decision (filled by ApiGateway.route_request / dispatch_request).
        self.route = -1
        self.allow = 0  # METHOD_* bits allowed on the path, for 405
        self.fwd_prefix = -1  # string-table id written before the rest of the path, or -1
        self.fwd_rest_start = 0  # rest of the path forwarded from buf
        self.fwd_rest_end = 0
        # Mediation (a route with a transform) changes what is forwarded; None: as the client sent it.
        self.fwd_med = None  # fwdhead.Forwarded

    def attach(self, task, peer):
        """Bind the slot to the connection task serving it (the reaper cancels that task)."""
        self.task = task
        self.peer = peer
        self.timed_out = FREE

    def consume(self):
        """Drop the finished request, keep pipelined bytes after it at the buffer's start."""
        end = self.body_end if self.body_end else self.n
        left = self.n - end
        if left > 0:
            mem_move(self.buf, 0, self.buf, end, left)
        self.n = left if left > 0 else 0
        self.requests += 1
        self.clear_request()


class SlotPool:
    """A fixed set of slots. acquire() returns a free Slot or None; release() gives it back."""

    def __init__(self, count, size=REQUEST_BUFFER, io_size=IO_BUFFER, max_headers=MAX_HEADERS):
        self.slots = [Slot(i, size, io_size, max_headers) for i in range(count)]
        self.free = list(range(count - 1, -1, -1))  # stack of free slot indexes
        self.peak = 0

    def acquire(self):
        if not self.free:
            return None
        slot = self.slots[self.free.pop()]
        used = len(self.slots) - len(self.free)
        if used > self.peak:
            self.peak = used
        return slot

    def release(self, slot):
        slot.reset()
        self.free.append(slot.index)

    def in_use(self):
        return len(self.slots) - len(self.free)

    def __len__(self):
        return len(self.slots)

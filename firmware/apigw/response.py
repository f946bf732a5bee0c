"""Responses the gateway writes itself: pre-encoded status lines, JSON errors, direct answers.

Everything per request is copied into a slot's I/O buffer from constants made at import time, and
numbers are written as digits into that buffer, so answering 404, 405 or a configured direct
response allocates nothing beyond the memoryview slice handed to the socket. No I/O here: the
functions return the number of bytes composed and the server writes them.
"""

from .compat import micropython
from .errors import error_json
from .native import mem_move

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

CRLF = b"\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
H_JSON = b"Content-Type: application/json\r\n"
H_CONTENT_TYPE = b"Content-Type: "
H_CONTENT_LENGTH = b"Content-Length: "
H_CLOSE = b"Connection: close\r\n"
H_KEEP_ALIVE = b"Connection: keep-alive\r\n"
H_ALLOW = b"Allow: "
H_RETRY_AFTER = b"Retry-After: "
H_SERVER = b"Server: apigw\r\n"
H_END = b"\r\n"

# The method bits of the parser, in the order an Allow header lists them.
ALLOW_NAMES = (
    (1, b"GET"),
    (2, b"HEAD"),
    (4, b"POST"),
    (8, b"PUT"),
    (16, b"DELETE"),
    (32, b"PATCH"),
    (64, b"OPTIONS"),
)

_status_lines = {}


def status_line(status):
    """b"HTTP/1.1 404 Not Found\\r\\n", made once per status (first use allocates, later ones do not)."""
    line = _status_lines.get(status)
    if line is None:
        line = b"HTTP/1.1 " + str(status).encode() + b" " + REASONS.get(status, "Unknown").encode() + CRLF
        _status_lines[status] = line
    return line


def error_body(status):
    """The JSON body for an error status (errors.py: one shape for every stage), made once."""
    return error_json(status)


for _s in (400, 404, 405, 408, 411, 413, 417, 431, 501, 502, 503, 504, 505):  # made at boot
    status_line(_s)
    error_body(_s)


@micropython.native
def put(dst, pos, src):
    """Copy bytes src to dst[pos:]; return the new position. No allocation."""
    n = len(src)
    mem_move(dst, pos, src, 0, n)
    return pos + n


@micropython.native
def put_uint(dst, pos, value):
    """Write a non-negative int as decimal digits at dst[pos:]; return the new position. No allocation."""
    if value == 0:
        dst[pos] = 48
        return pos + 1
    digits = 0
    v = value
    while v:
        digits += 1
        v //= 10
    end = pos + digits
    i = end - 1
    while value:
        dst[i] = 48 + value % 10
        value //= 10
        i -= 1
    return end


@micropython.native
def compose(
    dst,
    status,
    content_type,
    body,
    body_len,
    keep_alive,
    version,
    allow=0,
    retry_after=-1,
    head_only=False,
    extra=None,
    extra_len=0,
):
    """Compose a complete response into dst: status line, headers and (if it fits) the body.

    content_type is bytes including nothing but the media type (or None for JSON); body is bytes.
    extra[:extra_len], if given, is more header lines (each ending in CRLF), copied as they are.
    Returns (head+body bytes composed) as an int, or the negative head length when the body did not
    fit and must be written separately. No allocation.
    """
    pos = put(dst, 0, status_line(status))
    pos = put(dst, pos, H_SERVER)
    if content_type is None:
        pos = put(dst, pos, H_JSON)
    else:
        pos = put(dst, pos, H_CONTENT_TYPE)
        pos = put(dst, pos, content_type)
        pos = put(dst, pos, CRLF)
    pos = put(dst, pos, H_CONTENT_LENGTH)
    pos = put_uint(dst, pos, body_len)
    pos = put(dst, pos, CRLF)
    if allow:
        pos = put(dst, pos, H_ALLOW)
        first = True
        for bit, name in ALLOW_NAMES:  # a tuple of tuples: iterating allocates nothing
            if allow & bit:
                if not first:
                    dst[pos] = 44  # ','
                    dst[pos + 1] = 32
                    pos += 2
                pos = put(dst, pos, name)
                first = False
        pos = put(dst, pos, CRLF)
    if retry_after >= 0:
        pos = put(dst, pos, H_RETRY_AFTER)
        pos = put_uint(dst, pos, retry_after)
        pos = put(dst, pos, CRLF)
    if extra_len:
        mem_move(dst, pos, extra, 0, extra_len)
        pos += extra_len
    if not keep_alive:
        pos = put(dst, pos, H_CLOSE)
    elif version == 10:
        pos = put(dst, pos, H_KEEP_ALIVE)
    pos = put(dst, pos, H_END)
    if head_only or body_len == 0:
        return pos
    if pos + body_len > len(dst):
        return -pos
    mem_move(dst, pos, body, 0, body_len)
    return pos + body_len


@micropython.native
def compose_error(dst, status, keep_alive=False, version=11, allow=0, retry_after=-1, head_only=False):
    """Compose the gateway's JSON error for status into dst; returns its length. No allocation
    for the statuses made at boot."""
    body = error_body(status)
    return compose(dst, status, None, body, len(body), keep_alive, version, allow, retry_after, head_only)

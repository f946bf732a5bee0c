"""gRPC-Web framing, so a plain HTTP+JSON client can call a gRPC service through the gateway.

Owns: the 5-byte frame (flag, big-endian length) around a protobuf message, reading the answer's
data and trailers frames, and mapping grpc-status to an HTTP status by the table gRPC gateways
use (google.rpc.Code -> HTTP). Must not know messages (protobuf.py does) or do I/O. Allocates.
The request is POSTed as application/grpc-web+proto over HTTP/1.1 (mediator and server do that).
"""

TRAILER_FLAG = 0x80
CONTENT_TYPE = b"application/grpc-web+proto"

# grpc-status -> (HTTP status, error code for the JSON body)
STATUS = (
    (200, "ok"),
    (499, "grpc_cancelled"),
    (500, "grpc_unknown"),
    (400, "grpc_invalid_argument"),
    (504, "grpc_deadline_exceeded"),
    (404, "grpc_not_found"),
    (409, "grpc_already_exists"),
    (403, "grpc_permission_denied"),
    (429, "grpc_resource_exhausted"),
    (400, "grpc_failed_precondition"),
    (409, "grpc_aborted"),
    (400, "grpc_out_of_range"),
    (501, "grpc_unimplemented"),
    (500, "grpc_internal"),
    (503, "grpc_unavailable"),
    (500, "grpc_data_loss"),
    (401, "grpc_unauthenticated"),
)


def frame(message, flag=0):
    """One gRPC-Web frame around message bytes."""
    return bytes((flag,)) + len(message).to_bytes(4, "big") + message


def _unquote(b):
    """grpc-message is percent-encoded (gRPC over HTTP2 spec)."""
    out = bytearray()
    i = 0
    while i < len(b):
        c = b[i]
        if c == 37 and i + 2 < len(b):
            try:
                out.append(int(bytes(b[i + 1 : i + 3]).decode(), 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(c)
        i += 1
    return out.decode()


def parse_trailers(block):
    """{lower-case name: value bytes} from a trailers frame's text."""
    out = {}
    for line in bytes(block).split(b"\r\n"):
        i = line.find(b":")
        if i > 0:
            out[line[:i].strip().lower()] = line[i + 1 :].strip()
    return out


def trailers_frame(headers):
    """A trailers frame made of a head's grpc-status and grpc-message (a trailers-only answer).
    headers: [(lower-case name, name, value)] as httpmsg.parse_head gives them."""
    lines = b"".join(n + b": " + v + b"\r\n" for n, _, v in headers if n in (b"grpc-status", b"grpc-message"))
    return frame(lines, TRAILER_FLAG)


def unframe_response(http_status, body):
    """(HTTP status for the client, message bytes or None, error code, error message) of a gRPC-Web
    answer: the first data frame is the message, the trailers frame carries grpc-status."""
    if http_status != 200:
        return (502, None, "bad_gateway", "the gRPC-Web endpoint answered HTTP %d" % http_status)
    message = None
    trailers = None
    i = 0
    n = len(body)
    while i < n:
        if i + 5 > n:
            return (502, None, "bad_gateway", "a truncated gRPC-Web frame")
        flag = body[i]
        size = int.from_bytes(bytes(body[i + 1 : i + 5]), "big")
        if i + 5 + size > n:
            return (502, None, "bad_gateway", "a truncated gRPC-Web frame")
        part = body[i + 5 : i + 5 + size]
        if flag & TRAILER_FLAG:
            trailers = parse_trailers(part)
        elif flag == 0:
            if message is None:
                message = bytes(part)
        else:
            return (502, None, "bad_gateway", "a compressed gRPC-Web frame (not supported)")
        i += 5 + size
    if trailers is None or b"grpc-status" not in trailers:
        return (502, None, "bad_gateway", "the gRPC-Web answer has no grpc-status")
    try:
        code = int(trailers[b"grpc-status"])
    except ValueError:
        code = 2
    if code == 0:
        return (200, message if message is not None else b"", None, None)
    status, name = STATUS[code] if 0 <= code < len(STATUS) else STATUS[2]
    text = _unquote(trailers.get(b"grpc-message", b"")) or name
    return (status, None, name, text)

"""A whole upstream answer held in memory (mediation's collect mode): its head read into values,
its chunked body joined in place, and the head the gateway sends instead.

Owns: reading a response head into (status, [(name, value)]), removing chunked framing in place,
and writing a response head from a status and header lines. Must not do I/O. Allocates (bytes,
lists): it runs only on routes whose answers are converted or cached.
"""

# Response headers the gateway writes itself, or that lose their meaning once the body changes.
_HOP = (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding")
_REPLACED = (b"content-length", b"content-type", b"via")


def parse_head(buf, end):
    """(status, reason bytes, [(lower-case name, name, value)]) of the head in buf[:end] (the status
    line and header lines, the final blank line optional)."""
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else b""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        i = line.find(b":")
        if i <= 0:
            continue
        name = line[:i].strip()
        headers.append((name.lower(), name, line[i + 1 :].strip()))
    return status, reason, headers


def header(headers, lname):
    """The value of the first header called lname (lower-case bytes), or None."""
    for n, _, v in headers:
        if n == lname:
            return v
    return None


def dechunk(buf, start, end):
    """Remove chunked framing from buf[start:end] in place; returns the end of the joined body, or
    -1 when the framing is broken (the relay's tracker has checked it; this is a second guard)."""
    src = start
    dst = start
    while src < end:
        eol = buf.find(b"\r\n", src, end)
        if eol < 0:
            return -1
        size_text = bytes(buf[src:eol]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return -1
        src = eol + 2
        if size == 0:
            return dst
        if src + size + 2 > end:
            return -1
        buf[dst : dst + size] = buf[src : src + size]
        dst += size
        src += size + 2
    return -1


def compose_head(status, reason, headers, drop, ctype, length, extra, keep_alive, version):
    """The head the gateway sends for a collected answer: the status line, the upstream's headers
    minus hop-by-hop ones, the ones it replaces and the names in drop, Content-Type (ctype, or the
    upstream's when None), Content-Length, Via, the extra lines, Connection when needed. Ends with
    the blank line."""
    out = [b"HTTP/1.1 ", str(status).encode(), b" ", reason or b"OK", b"\r\n"]
    for lname, name, value in headers:
        if lname in _HOP or lname in _REPLACED or lname in drop:
            continue
        out += (name, b": ", value, b"\r\n")
    if ctype is not None:
        out += (b"Content-Type: ", ctype, b"\r\n")
    else:
        up = header(headers, b"content-type")
        if up is not None:
            out += (b"Content-Type: ", up, b"\r\n")
    if length >= 0:  # -1: unknown (a HEAD whose answer was converted)
        out += (b"Content-Length: ", str(length).encode(), b"\r\n")
    out += (b"Via: 1.1 apigw\r\n", extra)
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif version == 10:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)

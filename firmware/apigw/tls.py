"""HTTPS on the gateway's listener: the server's TLS context, and each accepted connection
wrapped as a TLS stream.

The context is made once, at start-up, from the DER files that `listen.tls_cert` and
`listen.tls_key` name (tools/devcert.py makes them). MicroPython's ssl (mbedTLS) serves TLS 1.2;
an EC P-256 key works and makes the handshake far cheaper than RSA on a board.

A wrapped connection takes the plain socket's place in the server's loop: readinto(buf) and
write(buf, off, n) return None when they would block (the handshake runs inside the first reads
and writes, which may say None too). What differs, and where it is handled (docs/tls.md):
- the poller watches the TCP socket under the stream (sockio.pin(stream, raw));
- decrypted bytes can wait inside mbedTLS: a read that filled its buffer reads again before it
  waits (server.py);
- a write that said None must be repeated with the same bytes (send_now / send_all, the relay);
- after a failed handshake the stream lets go of its TCP socket: the server closes that one too.

The TLS buffers (about 20 KB per connection on an ESP32) live outside the Python heap; the server
wraps a connection only once it holds a slot, so only the slots ever hold TLS state.
This module must not do HTTP or know about slots. The server imports it only when TLS is on.
"""

import ssl


class TLSError(ValueError):
    """The certificate or key cannot be used; the message names the listen field at fault."""


def _read(path, field):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSError("listen.%s: cannot read %s (%s)" % (field, path, e))


def server_context(cert_path, key_path):
    """An ssl.SSLContext for the server side, from a DER certificate and private key (PEM files
    do not load: tools/devcert.py converts them). Raises TLSError naming listen.tls_cert or
    listen.tls_key. A key that does not belong to the certificate loads; handshakes then fail."""
    cert = _read(cert_path, "tls_cert")
    key = _read(key_path, "tls_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ValueError, OSError) as e:  # mbedTLS says "invalid cert" or "invalid key"
        if "cert" in str(e):
            raise TLSError("listen.tls_cert: %s is not a usable DER certificate (%s)" % (cert_path, e))
        raise TLSError("listen.tls_key: %s is not a usable DER private key (%s)" % (key_path, e))
    return ctx


class ServerTLS:
    """The listener's TLS: the context, made once, and the wrap of each connection."""

    def __init__(self, listen):
        self.context = server_context(listen.tls_cert, listen.tls_key)

    def wrap(self, sock):
        """The accepted non-blocking socket as a server-side TLS stream; the handshake happens in
        its first reads and writes. Allocates the session: once per connection."""
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

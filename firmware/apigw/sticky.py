"""Sticky sessions: a cookie the gateway sets that names the instance a client stays on.

The value is "ID.MAC": the instance id and 16 hex digits of SHA-256 over a key made at boot, the
pool, the id, the host and the port. A client can send back only a value this gateway gave out, for
an instance that is still the same one (an id given to a new instance gets a new MAC): it cannot
pick an arbitrary instance. The key is random per boot, so a restart re-spreads sticky clients.
Values are computed once per instance (set_instance(), when a sticky pool gains it), so checking a
request's cookie is a scan of its Cookie headers and a constant-time compare: find() and
set_cookie_line() allocate nothing.

This module owns the cookie values and their format only: which pools are sticky, and whether the
named instance is still in rotation, are lbio.Balancer's questions.
"""

import binascii
import hashlib
import os

from .compat import const, micropython
from .httpparse import HDR_COOKIE
from .native import mem_eq, mem_move

MAX_NAME = const(32)  # cookie name length: the Set-Cookie line must fit resphead.MAX_EXTRA
_PREFIX = b"Set-Cookie: "
_SUFFIX = b"; Path=/; HttpOnly\r\n"
_SUFFIX_SECURE = b"; Path=/; HttpOnly; Secure\r\n"  # a TLS listener's: never sent over plain HTTP


class StickyCookies:
    """Cookie values of up to max_instances instances; memory made in __init__ and per value."""

    def __init__(self, max_instances, key=None):
        self.key = key if key is not None else os.urandom(16)
        self.values: list = [None] * max_instances  # b"ID.MAC" per instance of a sticky pool
        self.suffix = _SUFFIX

    def set_secure(self, on):
        """Cookies with the Secure attribute (the gateway listens with TLS)."""
        self.suffix = _SUFFIX_SECURE if on else _SUFFIX

    def set_instance(self, iid, pool, host, port):
        """Compute iid's value (allocates: when a sticky pool gains the instance)."""
        hb = host if isinstance(host, bytes) else host.encode()
        h = hashlib.sha256(self.key)
        h.update(b"%d|%d|%d|" % (pool, iid, port))
        h.update(hb)
        self.values[iid] = b"%d." % iid + binascii.hexlify(h.digest()[:8])

    def forget(self, iid):
        self.values[iid] = None

    @micropython.native
    def find(self, slot, name):
        """The instance named by the request's cookie `name` if its value is one this gateway set,
        else -1. No allocation."""
        buf = slot.buf
        hdr = slot.hdr
        kinds = slot.hkind
        n = len(name)
        for k in range(slot.nhdr):
            if kinds[k] != HDR_COOKIE:
                continue
            i = hdr[4 * k + 2]
            e = hdr[4 * k + 3]
            while i < e:
                while i < e and (buf[i] == 32 or buf[i] == 59):  # spaces and ';' between pairs
                    i += 1
                j = i
                while j < e and buf[j] != 59:
                    j += 1
                if j - i > n and buf[i + n] == 61 and mem_eq(buf, i, name, 0, n):
                    v = j
                    while v > i + n + 1 and buf[v - 1] == 32:
                        v -= 1
                    return self._check(buf, i + n + 1, v)
                i = j + 1
        return -1

    @micropython.native
    def _check(self, buf, s, e):
        """The id in buf[s:e] if buf[s:e] is exactly that id's value (constant time), else -1."""
        values = self.values
        iid = 0
        i = s
        while i < e and i - s < 5 and 48 <= buf[i] <= 57:
            iid = iid * 10 + buf[i] - 48
            i += 1
        if i == s or iid >= len(values):
            return -1
        v = values[iid]
        if v is None or len(v) != e - s:
            return -1
        diff = 0
        for k in range(len(v)):
            diff |= v[k] ^ buf[s + k]
        return iid if diff == 0 else -1

    @micropython.native
    def set_cookie_line(self, out, name, iid):
        """Write "Set-Cookie: NAME=VALUE; Path=/; HttpOnly[; Secure]\\r\\n" for iid into out; its
        length (0 when iid has no value). No allocation."""
        v = self.values[iid]
        if v is None:
            return 0
        w = len(_PREFIX)
        mem_move(out, 0, _PREFIX, 0, w)
        mem_move(out, w, name, 0, len(name))
        w += len(name)
        out[w] = 61
        w += 1
        mem_move(out, w, v, 0, len(v))
        w += len(v)
        sfx = self.suffix
        mem_move(out, w, sfx, 0, len(sfx))
        return w + len(sfx)

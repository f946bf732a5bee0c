"""CredCache: credentials already checked, so a repeated one costs a hash and a compare.

Owns: a fixed number of entries, each holding the credential's bytes (a JWT as sent, or the
SHA-256 digest of a Basic credential), its 24-bit hash, and what the check concluded: the kind,
the principal, its role, permissions, bound service and expiry (gateway seconds, authtypes.clock_s).
Must not verify anything itself (auth.py does, then stores the result here) or do I/O.

An entry is found by the hash of the whole credential and then compared byte for byte: keying on
the hash (or on a JWT's signature) alone would let a forged payload ride on a cached signature.
Credentials longer than the entry width are never cached; they are checked every time.
find() allocates nothing (a heap_lock test proves it); put() and clear() allocate nothing either.
"""

from .compat import micropython
from .native import hash_span, mem_eq, mem_move
from .strtab import table


class CredCache:
    def __init__(self, entries=16, width=512):
        self.entries = entries
        self.width = width
        self.data = bytearray(entries * width)
        self.hash = table("I", entries)
        self.size = table("H", entries)  # 0: the entry is empty
        self.kind = bytearray(entries)
        self.role = bytearray(entries)
        self.perms = bytearray(entries)
        self.principal = table("h", entries, -1)
        self.service = table("h", entries, -1)  # the service an API key is bound to, or -1
        self.token = table("h", entries, -1)  # the issued-token slot a JWT came from, or -1
        self.expiry = table("i", entries)  # gateway seconds; 0: does not expire
        self.next = 0  # the entry put() fills next (round robin: the oldest goes first)
        self.hits = 0
        self.misses = 0

    @micropython.native
    def find(self, buf, start, end, now):
        """Index of the live entry holding buf[start:end], or -1. An entry past its expiry is
        dropped. No allocation."""
        n = end - start
        if n <= 0 or n > self.width:
            self.misses += 1
            return -1
        h = hash_span(buf, start, end)
        size = self.size
        hashes = self.hash
        w = self.width
        for i in range(self.entries):
            if size[i] == n and hashes[i] == h and mem_eq(self.data, i * w, buf, start, n):
                e = self.expiry[i]
                if e != 0 and now >= e:
                    size[i] = 0
                    break
                self.hits += 1
                return i
        self.misses += 1
        return -1

    def put(self, buf, start, end, kind, principal, role, perms, service, expiry, token=-1):
        """Remember a checked credential; returns its index, or -1 when it is too long to cache."""
        n = end - start
        if n <= 0 or n > self.width:
            return -1
        i = self.next
        self.next = (i + 1) % self.entries
        mem_move(self.data, i * self.width, buf, start, n)
        self.hash[i] = hash_span(buf, start, end)
        self.size[i] = n
        self.kind[i] = kind
        self.principal[i] = principal
        self.role[i] = role
        self.perms[i] = perms
        self.service[i] = service
        self.expiry[i] = expiry
        self.token[i] = token
        return i

    def clear(self):
        """Forget everything (a revocation or a permission change: the next check is a full one)."""
        for i in range(self.entries):
            self.size[i] = 0

    def forget_token(self, token):
        """Drop the entries made from issued-token slot `token`."""
        for i in range(self.entries):
            if self.token[i] == token:
                self.size[i] = 0

    def used(self):
        return sum(1 for i in range(self.entries) if self.size[i])

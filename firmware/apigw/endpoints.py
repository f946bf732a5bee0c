"""The gateway's own endpoints under /_gw/: health, the token endpoint, the auth figures.

Owns: answering GET /_gw/health, POST /_gw/token (tokenendpoint.py makes the token) and GET
/_gw/auth (Admin only); anything else under /_gw/ is 404. Must not route or proxy. Allocates (JSON
documents): these are not on the proxy path.
"""

import json

from . import httpparse as hp
from .native import mem_eq
from .sockio import send_all

GW_HEALTH = b"/_gw/health"
GW_TOKEN = b"/_gw/token"
GW_AUTH = b"/_gw/auth"


class GatewayEndpoints:
    def __init__(self, server):
        self.server = server

    async def serve(self, slot, sock, wait):
        """Answer a request under /_gw/; returns whether the connection stays open."""
        srv = self.server
        buf = slot.buf
        left = False
        n = slot.path_end - slot.path_start
        if n == len(GW_HEALTH) and mem_eq(buf, slot.path_start, GW_HEALTH, 0, n):
            if not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
                left = srv._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
            else:
                body = json.dumps(srv.health()).encode()
                more = srv._send(slot, sock, 200, None, body)
                if more:
                    await srv._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        elif srv.gate is not None and (self._is(slot, GW_TOKEN) or self._is(slot, GW_AUTH)):
            return await self._auth(slot, sock, wait)
        else:
            left = srv._reply_error(slot, sock, 404, slot.keep_alive, 0)
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive

    @staticmethod
    def _is(slot, path):
        n = slot.path_end - slot.path_start
        return n == len(path) and mem_eq(slot.buf, slot.path_start, path, 0, n)

    async def _auth(self, slot, sock, wait):
        """POST /_gw/token (client credentials -> JWT) and GET /_gw/auth (the auth stage's figures,
        for an Admin). Allocate; not on the proxy path."""
        srv = self.server
        g = srv.gate
        assert g is not None
        if self._is(slot, GW_TOKEN):
            if slot.method != hp.METHOD_POST:
                left = srv._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_POST)
            else:
                from .tokenendpoint import issue

                authz = None
                for k in range(slot.nhdr):
                    if slot.hkind[k] == hp.HDR_AUTHORIZATION:
                        authz = bytes(slot.buf[slot.hdr[4 * k + 2] : slot.hdr[4 * k + 3]])
                status, body, extra = issue(g.auth, authz, bytes(slot.buf[slot.head_end : slot.body_end]))
                more = srv._send(slot, sock, status, None, body, extra)
                if more:
                    await srv._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        elif not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
            left = srv._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
        else:
            st = g.check(slot, g.admin_policy)
            if st:
                left = srv._reply_refused(slot, sock, st, slot.keep_alive)
            else:
                body = json.dumps(self.auth_status()).encode()
                more = srv._send(slot, sock, 200, None, body)
                if more:
                    await srv._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive

    def auth_status(self):
        """The /_gw/auth document: counters, table use, the clock (no secret, no token)."""
        srv = self.server
        g = srv.gate
        assert g is not None
        a = g.auth
        d = g.stats()
        d["clock_synced"] = a.now > 0
        d["tokens"] = a.get_token_count()
        d["api_keys"] = len(a._k_ids)
        d["users"] = len(a._u_ids)
        d["revoked"] = len(a._revoked)
        d["policies"] = [g.describe(p) for p in range(len(g.names))]
        return d

"""POST /_gw/token (client credentials -> JWT) and GET /_gw/auth (the auth stage's figures, Admin
only): the endpoints that exist when the config has an auth section, loaded only then.
Allocate: not on the proxy path.
"""

import json

from . import httpparse as hp
from .endpoints import GW_TOKEN, is_path
from .sockio import send_all


async def serve_auth(srv, slot, sock, wait):
    """POST /_gw/token (client credentials -> JWT) and GET /_gw/auth (the auth stage's figures,
    for an Admin). Allocate; not on the proxy path."""
    g = srv.gate
    assert g is not None
    if is_path(slot, GW_TOKEN):
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
            body = json.dumps(auth_status(srv)).encode()
            more = srv._send(slot, sock, 200, None, body)
            if more:
                await srv._send_rest(slot, sock, wait, body, more)
            return slot.keep_alive
    if left:
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
    return slot.keep_alive


def auth_status(srv):
    """The /_gw/auth document: counters, table use, the clock (no secret, no token)."""
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

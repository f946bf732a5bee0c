"""The gateway's own endpoints under /_gw/: health here; the token endpoint and the auth figures in
authendpoints.py, loaded only when the config has an auth section.

Owns: answering GET /_gw/health, POST /_gw/token (tokenendpoint.py makes the token) and GET
/_gw/auth (Admin only), /_gw/registry (self-registration, lbendpoints.py, loaded only when
the config has it), /_gw/metrics, /_gw/stats and /_gw/ (monendpoints.py, with a monitoring
section), and /_gw/admin/... (adminendpoints.py, loaded by the first such request); anything else
under /_gw/ is 404. Must not route or proxy. Allocates (JSON documents): these are not on the
proxy path.
"""

import json

from . import httpparse as hp
from .native import mem_eq
from .sockio import send_all

GW_HEALTH = b"/_gw/health"
GW_TOKEN = b"/_gw/token"
GW_AUTH = b"/_gw/auth"
GW_REGISTRY = b"/_gw/registry"
GW_METRICS = b"/_gw/metrics"  # these three: monendpoints.py, with a monitoring section
GW_STATS = b"/_gw/stats"
GW_ROOT = b"/_gw/"
GW_ADMIN = b"/_gw/admin/"


def is_path(slot, path):
    """True if the request's path is exactly path. No allocation."""
    n = slot.path_end - slot.path_start
    return n == len(path) and mem_eq(slot.buf, slot.path_start, path, 0, n)


class GatewayEndpoints:
    def __init__(self, server):
        self.server = server

    async def serve(self, slot, sock, wait):
        """Answer a request under /_gw/; returns whether the connection stays open."""
        srv = self.server
        left = False
        if is_path(slot, GW_HEALTH):
            if not slot.method & (hp.METHOD_GET | hp.METHOD_HEAD):
                left = srv._reply_error(slot, sock, 405, slot.keep_alive, hp.METHOD_GET | hp.METHOD_HEAD)
            else:
                body = json.dumps(srv.health()).encode()
                more = srv._send(slot, sock, 200, None, body)
                if more:
                    await srv._send_rest(slot, sock, wait, body, more)
                return slot.keep_alive
        elif srv.gate is not None and (is_path(slot, GW_TOKEN) or is_path(slot, GW_AUTH)):
            from .authendpoints import serve_auth  # only a config with an auth section loads it

            return await serve_auth(self.server, slot, sock, wait)
        elif srv.monitoring is not None and (
            is_path(slot, GW_METRICS) or is_path(slot, GW_STATS) or is_path(slot, GW_ROOT)
        ):
            from .monendpoints import serve_monitoring  # only a config with monitoring loads it

            return await serve_monitoring(srv, slot, sock, wait)
        elif srv.balancer is not None and mem_eq(slot.buf, slot.path_start, GW_REGISTRY, 0, len(GW_REGISTRY)):
            from .lbendpoints import serve_registry  # only a config with pools loads it (it checks the rest)

            return await serve_registry(srv, slot, sock, wait)
        elif slot.path_end - slot.path_start >= len(GW_ADMIN) and mem_eq(
            slot.buf, slot.path_start, GW_ADMIN, 0, len(GW_ADMIN)
        ):
            from .adminendpoints import serve_admin  # loaded by the first admin request

            return await serve_admin(srv, slot, sock, wait)
        else:
            left = srv._reply_error(slot, sock, 404, slot.keep_alive, 0)
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive

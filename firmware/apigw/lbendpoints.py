"""/_gw/registry: instances register themselves with a pool, keep alive, and leave.

    POST   /_gw/registry       {"pool": P, "port": N, "host": H, "weight": W, "ttl_ms": T}
                               201 {"id", "pool", "host", "port", "weight", "ttl_ms"}; 200 when the
                               instance was registered already (that counts as a heartbeat).
                               host defaults to the caller's address; weight to 1; ttl_ms to
                               balancer.registry.default_ttl_ms.
    PUT    /_gw/registry/ID    heartbeat, optional body {"ttl_ms": T}: 200 {"id", "ttl_ms"}
    DELETE /_gw/registry/ID    leave at once: 200 {"id", "removed": true}
    GET    /_gw/registry       200 {"instances": [...]} with each one's time left

Every call must pass the auth policy balancer.registry.policy (service-account credentials).
Errors are the gateway's JSON errors, with registry.RegistryError's status and message. Loaded only
when the config has registration; allocates (off the proxy path).
"""

import json

from . import httpparse as hp
from .compat import ticks_ms
from .endpoints import GW_REGISTRY
from .errors import BY_STATUS, error_json
from .registry import RegistryError
from .sockio import send_all

REGISTER_KEYS = ("pool", "host", "port", "weight", "ttl_ms")


async def serve_registry(srv, slot, sock, wait):
    """Answer one request under /_gw/registry; returns whether the connection stays open."""
    b = srv.balancer
    reg = b.registry
    g = srv.gate
    n = slot.path_end - slot.path_start
    m = len(GW_REGISTRY)
    if reg is None or g is None or n < m or (n > m and slot.buf[slot.path_start + m] != 47):
        left = srv._reply_error(slot, sock, 404, slot.keep_alive, 0)
        if left:
            await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
        return slot.keep_alive
    st = g.check(slot, b.registry_policy)
    if st == -1:  # authgate.NEED_INTROSPECTION
        st = await g.introspect(slot, b.registry_policy)
    if st:
        left = srv._reply_refused(slot, sock, st, slot.keep_alive)
    else:
        try:
            status, doc = _handle(b, reg, slot)
            body = json.dumps(doc).encode()
        except RegistryError as e:
            status = e.status
            body = error_json(status, BY_STATUS.get(status, "error"), e.message)
        if status == 405:
            left = srv._reply_error(slot, sock, 405, slot.keep_alive, doc)
        else:
            more = srv._send(slot, sock, status, None, body)
            if more:
                await srv._send_rest(slot, sock, wait, body, more)
            return slot.keep_alive
    if left:
        await send_all(wait, sock, slot.io, slot.out_start, slot.out_end)
    return slot.keep_alive


def _handle(b, reg, slot):
    """(status, JSON document) for the request; raises RegistryError. 405's document is the
    Allow bits."""
    now = ticks_ms()
    buf = slot.buf
    rest = bytes(buf[slot.path_start + len(GW_REGISTRY) : slot.path_end])
    m = slot.method
    if not rest:
        if m & (hp.METHOD_GET | hp.METHOD_HEAD):
            return 200, {"instances": reg.entries(now)}
        if m != hp.METHOD_POST:
            return 405, hp.METHOD_GET | hp.METHOD_HEAD | hp.METHOD_POST
        d = _body(slot, True)
        for k in d:
            if k not in REGISTER_KEYS:
                raise RegistryError(400, "%s: unknown field (known: %s)" % (k, ", ".join(REGISTER_KEYS)))
        if "pool" not in d or "port" not in d:
            raise RegistryError(400, "pool and port are required")
        host = d.get("host")
        if host is None:
            host = slot.peer.decode()
        iid, created = reg.register(d["pool"], host, d["port"], d.get("weight", 1), d.get("ttl_ms"), now)
        if created:
            b.added(iid)
        inst = b.lb.get_instance(iid)
        doc = {
            "id": iid,
            "pool": b.lb._names[inst.pool],
            "host": inst.address,
            "port": inst.port,
            "weight": inst.weight,
            "ttl_ms": reg.remaining_ms(iid, now),
        }
        return (201 if created else 200), doc
    iid = _id(rest)
    if m == hp.METHOD_PUT:
        d = _body(slot, False)
        ttl = reg.heartbeat(iid, now, d.get("ttl_ms"))
        return 200, {"id": iid, "ttl_ms": ttl}
    if m == hp.METHOD_DELETE:
        reg.deregister(iid)
        return 200, {"id": iid, "removed": True}
    return 405, hp.METHOD_PUT | hp.METHOD_DELETE


def _id(rest):
    """The instance id in "/ID"."""
    digits = rest[1:]
    if not digits or len(digits) > 5 or not all(48 <= c <= 57 for c in digits):
        raise RegistryError(404, "the path must be /_gw/registry/ID, ID an instance id")
    return int(digits)


def _body(slot, required):
    """The request body as a JSON object ({} when empty and not required)."""
    raw = bytes(slot.buf[slot.head_end : slot.body_end])
    if not raw.strip():
        if required:
            raise RegistryError(400, "the body must be a JSON object")
        return {}
    try:
        d = json.loads(raw)
    except ValueError:
        raise RegistryError(400, "the body is not valid JSON")
    if not isinstance(d, dict):
        raise RegistryError(400, "the body must be a JSON object")
    return d

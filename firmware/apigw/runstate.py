"""Changes made at run time through the shell or the admin API, kept so that they survive a reboot.

gateway.json is the configuration a board starts from; a route added with `gateway add-route`, an
instance drained with `lb drain` or a breaker held open with `resilience trip` changes only the
running tables. This module records each such change in a small JSON file beside the config
(gateway.json -> gateway.changes.json), written atomically with the previous copy kept
(gateway.changes.prev.json), and applies the file again after the config loads at boot.

Things are named, never numbered: route and instance ids are reused and differ after a reboot, so
a route is known by its name (or by match, path and methods when it has none), a service and a
breaker by name, an instance by "POOL HOST:PORT". A change that no longer applies (its service left
the config) is reported at boot and kept, so it applies again once the config has what it needs.
Auth keeps its own state file (auth.py: revoked tokens, keys, users, grants).

Loaded only when the file exists at boot or a change is made: a gateway that is never changed at
run time does not carry this code. Allocates freely; never on the request path.
"""

from .store import read_json_kept, write_json

VERSION = 1
_LISTS = ("routes_removed", "services_removed", "instances_removed")
_MAPS = ("services_added", "instances_added", "instances", "breakers")


def prev_path(path):
    """gateway.changes.json -> gateway.changes.prev.json: the copy before the last write."""
    return path[:-5] + ".prev.json" if path.endswith(".json") else path + ".prev"


def route_key(d):
    """A route's name, or "MATCH PATH METHODS" when it has none (d: GatewayCore.get_route())."""
    if d["name"]:
        return d["name"]
    m = d["methods"]
    return d["match"] + " " + d["path"] + " " + (m if isinstance(m, str) else ",".join(m))


def instance_key(lb, iid):
    """ "POOL HOST:PORT" of a balancer instance."""
    return lb.get_pool(lb.pool_of(iid)).name + " " + lb.host(iid).decode() + ":" + str(lb.port(iid))


def _split_instance(key):
    pool, _, addr = key.partition(" ")
    host, _, port = addr.rpartition(":")
    return pool, host, int(port)


class Changes:
    """The change file in memory: one document, rewritten whole on every change (it is small)."""

    def __init__(self, path):
        self.path = path
        doc = read_json_kept(path, prev_path(path))
        self.doc = self._shape(doc if isinstance(doc, dict) else {})

    @staticmethod
    def _shape(doc):
        for k in _LISTS + ("routes_added",):
            doc.setdefault(k, [])
        for k in _MAPS:
            doc.setdefault(k, {})
        doc["v"] = VERSION
        return doc

    def save(self):
        """Write the file (temporary file, then rename; the old one becomes the .prev copy).
        Raises OSError when the filesystem refuses."""
        write_json(self.path, self.doc, prev_path(self.path))

    def count(self):
        d = self.doc
        return sum(len(d[k]) for k in _LISTS + _MAPS + ("routes_added",))

    # -- recording (each saves) -------------------------------------------------------------------

    def _removed(self, kind, key):
        lst = self.doc[kind + "_removed"]
        if key not in lst:
            lst.append(key)

    def route_added(self, key, spec):
        d = self.doc
        d["routes_added"] = [s for s in d["routes_added"] if s["key"] != key]
        spec["key"] = key
        d["routes_added"].append(spec)
        self.save()

    def route_removed(self, key):
        d = self.doc
        kept = [s for s in d["routes_added"] if s["key"] != key]
        if len(kept) == len(d["routes_added"]):
            self._removed("routes", key)  # a route of the config
        d["routes_added"] = kept
        self.save()

    def service_added(self, name, host, port, timeout_ms):
        self.doc["services_added"][name] = {"host": host, "port": port, "timeout_ms": timeout_ms}
        self.save()

    def service_removed(self, name):
        self.doc["services_added"].pop(name, None)
        self._removed("services", name)  # removed first at boot: a config service of that name goes
        self.save()

    def instance_added(self, key, weight):
        self.doc["instances_added"][key] = weight
        self.save()

    def instance_removed(self, key):
        d = self.doc
        d["instances_added"].pop(key, None)
        d["instances"].pop(key, None)
        self._removed("instances", key)
        self.save()

    def instance_set(self, key, drained, weight):
        self.doc["instances"][key] = {"drained": drained, "weight": weight}
        self.save()

    def breaker_held(self, name, state):
        """state: "open" (trip), "closed" (close) or None (reset)."""
        if state is None:
            self.doc["breakers"].pop(name, None)
        else:
            self.doc["breakers"][name] = state
        self.save()

    def clear(self):
        """Forget every change (the running tables keep them until a reload or reboot)."""
        n = self.count()
        self.doc = self._shape({})
        self.save()
        return n

    def describe(self):
        """One line per change, in the order they apply at boot (names sorted within a kind: a dict
        read back from JSON on MicroPython keeps no order)."""
        d = self.doc
        out = []
        for k in d["routes_removed"]:
            out.append("route removed: " + k)
        for k in d["services_removed"]:
            out.append("service removed: " + k)
        for k, s in sorted(d["services_added"].items()):
            out.append("service added: %s %s:%d" % (k, s["host"], s["port"]))
        for s in d["routes_added"]:
            out.append("route added: " + s["key"] + " -> " + (s.get("service") or "respond"))
        for k in d["instances_removed"]:
            out.append("instance removed: " + k)
        for k, w in sorted(d["instances_added"].items()):
            out.append("instance added: %s weight %d" % (k, w))
        for k, s in sorted(d["instances"].items()):
            out.append("instance: %s weight %d%s" % (k, s["weight"], ", drained" if s["drained"] else ""))
        for k, s in sorted(d["breakers"].items()):
            out.append("breaker held %s: %s" % (s, k))
        return out

    # -- boot --------------------------------------------------------------------------------------

    def apply(self, server, now_ms=0, log=print):
        """Apply every change to a freshly loaded server; returns (applied, skipped). A change that
        does not apply is logged and kept."""
        d = self.doc
        gw = server.gw
        done = [0, 0]

        def skip(what, why):
            done[1] += 1
            log("apigw: change not applied: " + what + " (" + why + ")")

        def step(what, fn, *args):
            try:
                fn(*args)
                done[0] += 1
            except Exception as e:  # noqa: BLE001  (any table's error: report, keep booting)
                skip(what, str(e))

        routes = {}
        for r in gw.list_routes():
            routes[route_key(r)] = r["id"]
        for key in d["routes_removed"]:
            if key in routes:
                step("remove route " + key, gw.remove_route, routes[key])
        for name in d["services_removed"]:
            if gw.service_id(name) >= 0:
                step("remove service " + name, gw.unregister_service, name)
        for name, s in sorted(d["services_added"].items()):
            step("add service " + name, gw.register_service, name, s["host"], s["port"], s["timeout_ms"])
        for s in d["routes_added"]:
            step("add route " + s["key"], _add_route, gw, s)
        b = getattr(server, "balancer", None)
        if b is not None:
            self._apply_instances(b, step, skip)
        guard = getattr(server, "guard", None)
        for name, state in sorted(d["breakers"].items()):
            br = None if guard is None else guard.breakers
            bid = -1 if br is None else br.find(name)
            if bid < 0:
                skip("hold breaker " + name, "no such breaker")
            elif state == "open":
                step("trip breaker " + name, br.force_open, bid, now_ms)  # type: ignore
            else:
                step("close breaker " + name, br.force_closed, bid)  # type: ignore
        return done[0], done[1]

    def _apply_instances(self, b, step, skip):
        d = self.doc
        lb = b.lb
        for key in d["instances_removed"]:
            iid = _find(lb, key)
            if iid >= 0:
                step("remove instance " + key, remove_instance, b, iid)
        for key, w in sorted(d["instances_added"].items()):
            if _find(lb, key) < 0:
                step("add instance " + key, add_instance, b, key, w)
        for key, s in sorted(d["instances"].items()):
            iid = _find(lb, key)
            if iid < 0:
                skip("set instance " + key, "no such instance")
            else:
                step("set instance " + key, _set_instance, lb, iid, s)


def _add_route(gw, spec):
    kw = {}
    for k, v in spec.items():
        if k not in ("key", "path"):
            kw[k] = v
    gw.add_route(spec["path"], **kw)


def _find(lb, key):
    pool, host, port = _split_instance(key)
    pid = lb.pool_id(pool)
    return -1 if pid < 0 else lb.find_instance(pid, host, port)


def _set_instance(lb, iid, s):
    lb.set_weight(iid, s["weight"])
    lb.drain(iid, s["drained"])


def add_instance(b, key, weight):
    """Put POOL HOST:PORT into the running balancer (the shell's `lb add`); returns its id."""
    pool, host, port = _split_instance(key)
    pid = b.lb.pool_id(pool)
    if pid < 0:
        raise ValueError("no pool " + pool)
    iid = b.lb.register_instance(pid, host, port, weight)
    b.added(iid)
    return iid


def remove_instance(b, iid):
    """Take an instance out of the running balancer (the shell's `lb remove`). Refused while it
    has connections: drain it first."""
    b.lb.remove_instance(iid)
    h = b.health
    if h is not None and iid < h.max_instances:
        h.forget(iid)
    b.removed(iid)


def load(server, path, now_ms=0, log=print):
    """At boot: apply the change file at path to server when there is one; the Changes stay on
    server.changes for the shells."""
    c = Changes(path)
    server.changes = c
    n = c.count()
    if n:
        ok, bad = c.apply(server, now_ms, log)
        log("apigw: %d run-time change(s) applied from %s%s" % (ok, path, (", %d not" % bad) if bad else ""))
    return c


def of(server):
    """The server's Changes (made on first use), or None when it has no change file (offline)."""
    c = getattr(server, "changes", None)
    if c is None:
        path = getattr(server, "changes_path", None)
        if path is None:
            return None
        c = server.changes = Changes(path)
    return c

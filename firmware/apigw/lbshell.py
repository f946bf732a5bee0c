"""The shell's `lb` command: pools, instances, health, registrations, and what a pool would choose.

`lb select` is a dry run: it saves the pool's round-robin cursor and the weighted round-robin
current weights of its members, asks the strategy (and panic mode) for an instance, and puts them
back, so the next request is balanced as if nobody had asked. `lb drain`, `lb undrain` and
`lb weight` change the running balancer. Off the request path: allocates freely.
Registered by shell.Shell when the server (or the config) has a balancer (a `pools` section).
This module only reads and drives lbio.Balancer and its tables; it owns no state of its own.
"""

from .compat import ticks_ms
from .lb import BalancingStrategy, HealthStatus, LbError, LoadBalancer

LB_SUBS = [
    ("pools", "", "pools: strategy, instances in rotation, connections, sticky cookie, panic, health check"),
    ("instances", "[POOL]", "instances: address, weight, health, drained, ejected, connections, last probe"),
    ("select", "POOL [CLIENT]", "the instance the pool would choose now (a dry run; CLIENT: address for ip_hash)"),
    ("drain", "IID", "take an instance out of rotation (its connections finish)"),
    ("undrain", "IID", "put a drained instance back in rotation"),
    ("weight", "IID W", "set an instance's weight (1..255)"),
    ("add", "POOL HOST:PORT [weight=W]", "add an instance to a pool (probed like the others)"),
    ("remove", "IID", "take an instance out of its pool (drain it first: refused with connections)"),
    ("health", "[IID]", "active and passive health-check state, probe and ejection counters"),
    ("registry", "", "self-registered instances and the time each has left"),
    ("stats", "", "balancer counters"),
]

_MASK = 0x3FFFFFFF  # health.py keeps probe stamps modulo 2**30


def register(shell, balancer):
    """Add the `lb` command to shell for balancer (an lbio.Balancer)."""
    cmd = LbCommand(shell, balancer)
    shell.register("lb", cmd.run, "load balancing: pools, instances, health, drain, weights", LB_SUBS)
    return cmd


def _yes(v):
    return "yes" if v else "no"


def _text(v):
    """A bytes setting for display, or "-" when it is None."""
    return "-" if v is None else v.decode()


def _secs(ms):
    return "%d.%ds" % (ms // 1000, ms % 1000 // 100)


class LbCommand:
    def __init__(self, shell, balancer):
        self.shell = shell
        self.b = balancer
        self.lb = balancer.lb

    def run(self, words):
        from .shell import ShellError

        if not words:
            return self.shell._help(["lb"])
        sub, rest = words[0], words[1:]
        try:
            if sub == "pools" and not rest:
                return self._pools()
            if sub == "instances" and len(rest) <= 1:
                return self._instances(self._pool(rest[0]) if rest else -1)
            if sub == "select" and 1 <= len(rest) <= 2:
                return self._select(self._pool(rest[0]), rest[1] if len(rest) > 1 else None)
            if sub in ("drain", "undrain") and len(rest) == 1:
                iid = self._iid(rest[0])
                self.lb.drain(iid, sub == "drain")
                return self._state(iid) + self._saved(iid)
            if sub == "weight" and len(rest) == 2:
                iid = self._iid(rest[0])
                if not rest[1].isdigit():
                    raise ShellError("weight must be a number 1..255")
                self.lb.set_weight(iid, int(rest[1]))
                return self._state(iid) + self._saved(iid)
            if sub == "add" and 2 <= len(rest) <= 3:
                return self._add(rest)
            if sub == "remove" and len(rest) == 1:
                from .runstate import instance_key, remove_instance

                iid = self._iid(rest[0])
                key = instance_key(self.lb, iid)
                remove_instance(self.b, iid)
                return "removed instance " + key + self.shell.record("instance_removed", key)
            if sub == "health" and len(rest) <= 1:
                return self._health(self._iid(rest[0]) if rest else -1)
            if sub == "registry" and not rest:
                return self._registry()
            if sub == "stats" and not rest:
                return self._stats()
        except LbError as e:
            msg = str(e)
            raise ShellError(msg[15:] if msg.startswith("load balancer: ") else msg)
        for name, usage, _ in LB_SUBS:
            if name == sub:
                raise ShellError("usage: lb " + sub + (" " + usage if usage else ""))
        raise ShellError("unknown sub-command 'lb " + sub + "' (try 'help lb')")

    def _saved(self, iid):
        """Keep the instance's weight and drain state for the next boot (runstate.py)."""
        from .runstate import instance_key

        inst = self.lb.get_instance(iid)
        return self.shell.record("instance_set", instance_key(self.lb, iid), inst.drained, inst.weight)

    def _add(self, words):
        from .runstate import add_instance
        from .shell import ShellError

        host, _, port = words[1].rpartition(":")
        weight = "1"
        if len(words) == 3:
            weight = words[2][7:] if words[2].startswith("weight=") else ""
        if not host or not port.isdigit() or not weight.isdigit():
            raise ShellError("usage: lb add POOL HOST:PORT [weight=W]")
        pid = self._pool(words[0])
        if self.lb.find_instance(pid, host, int(port)) >= 0:
            raise ShellError(host + ":" + port + " is already in pool " + self._name(pid))
        key = self._name(pid) + " " + host + ":" + port
        iid = add_instance(self.b, key, int(weight))
        return self._state(iid) + self.shell.record("instance_added", key, int(weight))

    # -- arguments -------------------------------------------------------------------------------

    def _pool(self, word):
        """A pool id from its name (first) or its number; ShellError if there is no such pool."""
        from .shell import ShellError

        lb = self.lb
        pid = lb.pool_id(word)
        if pid < 0 and word.isdigit() and int(word) < len(lb.pools()):
            pid = int(word)
        if pid < 0:
            raise ShellError("no pool '" + word + "'")
        return pid

    def _iid(self, word):
        from .shell import ShellError

        if not word.isdigit() or self.lb.pool_of(int(word)) < 0:
            raise ShellError("no instance '" + word + "' (see 'lb instances')")
        return int(word)

    def _name(self, pid):
        return self.lb.get_pool(pid).name

    def _addr(self, iid):
        lb = self.lb
        return lb.host(iid).decode() + ":" + str(lb.port(iid))

    def _state(self, iid):
        lb = self.lb
        inst = lb.get_instance(iid)
        return "instance %d %s in %s: weight %d, %s%s, %s" % (
            iid,
            self._addr(iid),
            self._name(inst.pool),
            inst.weight,
            HealthStatus.NAMES[inst.health],
            ", drained" if inst.drained else "",
            "in rotation" if lb.health_check(iid) else "out of rotation",
        )

    # -- sub-commands ----------------------------------------------------------------------------

    def _pools(self):
        from .shell import table

        b = self.b
        lb = self.lb
        rows = []
        for p in lb.pools():
            up = sum(1 for i in p.instances if lb.health_check(i))
            row = [p.id, p.name, BalancingStrategy.NAMES[p.strategy], len(p.instances), up, p.connection_count]
            row += [_text(b.cookie[p.id]), "panic" if b.panic[p.id] else "fail", _text(b.check_path[p.id])]
            rows.append(row)
        if not rows:
            return "no pools"
        head = ["id", "name", "strategy", "instances", "in rotation", "connections", "sticky", "all down", "check"]
        return table(rows, head)

    def _instances(self, pool):
        from .shell import table

        b = self.b
        lb = self.lb
        hc = b.health
        reg = b.registry
        now = ticks_ms()
        rows = []
        for p in lb.pools():
            if pool >= 0 and p.id != pool:
                continue
            for iid in p.instances:
                inst = lb.get_instance(iid)
                st = hc.state(iid)
                probe = st["last_probe_ms"]
                dyn = "-"
                if reg is not None and reg.is_dynamic(iid):
                    dyn = "yes, " + _secs(reg.remaining_ms(iid, now)) + " left"
                ago = "-" if probe is None else str((now - probe) & _MASK)
                row = [iid, p.name, self._addr(iid), inst.weight, HealthStatus.NAMES[inst.health]]
                row += [_yes(lb.health_check(iid)), _yes(inst.drained), _yes(lb.ejected(iid))]
                rows.append(row + [inst.connections, st["times_ejected"], ago, dyn])
        if not rows:
            return "no instances"
        head = ["id", "pool", "address", "weight", "health", "in rotation", "drained", "ejected"]
        return table(rows, head + ["connections", "times ejected", "probe ms ago", "registered"])

    def _select(self, pool, client):
        """What select_instance() (then select_any() in panic mode) would choose: lb.peek()."""
        from .shell import ShellError

        b = self.b
        lb = self.lb
        s = lb.strategy(pool)
        if s == BalancingStrategy.IP_HASH and client is None:
            raise ShellError("pool '" + self._name(pool) + "' hashes the client address: give CLIENT")
        h = 0
        if client is not None:
            c = client.encode()
            h = LoadBalancer.client_hash(c, 0, len(c))
        iid, alt = lb.peek(pool, h)
        how = " (" + BalancingStrategy.NAMES[s] + ")"
        if iid >= 0:
            return "instance %d %s%s" % (iid, self._addr(iid), how)
        out = "no instance in rotation" + how + "; "
        if not b.panic[pool]:
            return out + "when_all_down is fail: the request gets a 503"
        if alt < 0:
            return out + "panic mode finds none either (no instance that is not drained): 503"
        return out + "panic mode would pick instance %d %s" % (alt, self._addr(alt))

    def _health(self, only):
        from .shell import table

        b = self.b
        lb = self.lb
        hc = b.health
        rows = []
        for p in lb.pools():
            for iid in p.instances:
                if only >= 0 and iid != only:
                    continue
                st = hc.state(iid)
                row = [iid, p.name, HealthStatus.NAMES[st["health"]], st["successes"], st["failures"]]
                rows.append(row + [st["errors"], st["times_ejected"], _yes(st["probing"])])
        head = ["id", "pool", "health", "successes", "failures", "errors", "times ejected", "probing"]
        out = [table(rows, head) if rows else "no instances"]
        st = b.stats()
        for k in ("probes", "probe_failures", "ejections", "failovers", "no_instance"):
            out.append(k + ": " + str(st[k]))
        out.append(
            "outlier: %d errors in a row eject for %d ms x times ejected (at most x%d, %d%% of a pool)"
            % (hc.consecutive_errors, hc.base_ejection_ms, hc.max_ejection_factor, hc.max_ejected_percent)
        )
        return "\n".join(out)

    def _registry(self):
        from .shell import table

        reg = self.b.registry
        if reg is None:
            return "registration is off"
        lb = self.lb
        open_ = ",".join(p.name for p in lb.pools() if reg.accepts[p.id]) or "none"
        rows = [
            [e["id"], e["pool"], e["host"] + ":" + str(e["port"]), e["weight"], _secs(e["ttl_ms_left"])]
            for e in reg.entries(ticks_ms())
        ]
        text = table(rows, ["id", "pool", "address", "weight", "ttl left"]) if rows else "no registered instances"
        return text + "\npools open to registration: " + open_

    def _stats(self):
        st = self.b.stats()
        out = []
        for k in sorted(st):
            v = st[k]
            if isinstance(v, dict):
                for k2 in sorted(v):
                    out.append(k + "." + k2 + ": " + str(v[k2]))
            else:
                out.append(k + ": " + str(v))
        return "\n".join(out)

"""The `pools` array and the `balancer` section of gateway.json: builds the lbio.Balancer.

Owns: checking every field (errors name it: "pools[1].instances[0].port: must be an integer
1-65535"), registering pools and their instances, their health checks, sticky cookies and panic
mode, the balancer-wide settings (connection pool, outlier detection, failover, re-resolution,
self-registration and the auth policy it needs), and giving each service that names a pool that
pool. Must not run after boot: config.py imports it only when the config has pools, and main.py
drops the loader with it.
"""

from .config import ConfigError, _all, _loads, _members
from .lb import BalancingStrategy, LbError
from .lbio import Balancer
from .sectioncheck import check_int as _int
from .sectioncheck import check_object as _obj
from .strtab import table

POOL_KEYS = ("name", "strategy", "instances", "health_check", "sticky_cookie", "when_all_down", "registration")
INSTANCE_KEYS = ("host", "port", "weight")
CHECK_KEYS = ("path", "expect_status", "interval_ms", "timeout_ms", "rise", "fall", "slow_ms")
BALANCER_KEYS = (
    "pools",
    "instances",
    "max_idle_per_instance",
    "idle_ms",
    "max_idle",
    "max_tries",
    "resolve_interval_ms",
    "outlier",
    "registry",
)
OUTLIER_KEYS = ("consecutive_errors", "base_ejection_ms", "max_ejection_factor", "max_ejected_percent")
REGISTRY_KEYS = ("policy", "default_ttl_ms", "max_ttl_ms")
STRATEGIES = {
    "round_robin": BalancingStrategy.ROUND_ROBIN,
    "least_connections": BalancingStrategy.LEAST_CONNECTIONS,
    "weighted_round_robin": BalancingStrategy.WEIGHTED_ROUND_ROBIN,
    "weighted": BalancingStrategy.WEIGHTED_ROUND_ROBIN,
    "ip_hash": BalancingStrategy.IP_HASH,
}
_H = (1 << 29) - 1  # ms fields: below 2**29 (health.py's stamps)


def _str(value, label, most=253):
    if not isinstance(value, str) or not value or len(value) > most:
        raise ConfigError("%s: must be a non-empty string of at most %d characters" % (label, most))
    return value


def _bool(value, label):
    if value is not True and value is not False:
        raise ConfigError("%s: must be true or false" % label)
    return value


def apply_pools(cfg, stream, start, settings):
    """Build the Balancer from the pools array (at offset start of stream, read one element at a
    time; None: no pools) and the balancer section (or None), resolve services[].pool, and leave
    it in cfg.balancer."""
    if start is None:
        if settings is not None:
            raise ConfigError("balancer: needs a pools section")
        raise ConfigError("%s.pool: pools need a pools section" % cfg.service_pools[0][2])
    d = _obj(settings if settings is not None else {}, "balancer", BALANCER_KEYS)
    b = Balancer(
        _int(d.get("pools", 128), 1, 254, "balancer.pools"),
        _int(d.get("instances", 256), 1, 4096, "balancer.instances"),
    )
    b.max_idle_per_instance = cfg.listen.slots
    registry = _settings(b, d, cfg)
    for i, text, at, first in _members(stream, start, False, _all, "pools"):
        label = "pools[%d]" % i
        _add_pool(b, _loads(text, label, at), label, registry)
    for sid, name, label, has_host in cfg.service_pools:
        if has_host:
            raise ConfigError("%s.pool: a service has a pool or a host and port, not both" % label)
        if not isinstance(name, str):
            raise ConfigError("%s.pool: must be a pool name" % label)
        pid = b.lb.pool_id(name)
        if pid < 0:
            raise ConfigError("%s.pool: no pool %r" % (label, name))
        gw = cfg.gateway
        if gw._s_pool is None:
            gw._s_pool = table("h", gw.max_services, -1)  # the gateway's table of service pools
        gw._s_pool[sid] = pid
    cfg.service_pools = []
    if b.registry is not None and not any(b.registry.accepts):
        raise ConfigError("balancer.registry: no pool has registration: true")
    cfg.balancer = b
    return b


def _settings(b, d, cfg):
    """The balancer section; returns the registry settings (or None)."""
    b.max_idle_per_instance = _int(
        d.get("max_idle_per_instance", b.max_idle_per_instance), 0, 64, "balancer.max_idle_per_instance"
    )
    b.idle_ms = _int(d.get("idle_ms", b.idle_ms), 1, _H, "balancer.idle_ms")
    b.max_idle = _int(d.get("max_idle", 0), 0, 1024, "balancer.max_idle")
    b.max_tries = _int(d.get("max_tries", b.max_tries), 1, 16, "balancer.max_tries")
    b.resolve_interval_ms = _int(
        d.get("resolve_interval_ms", b.resolve_interval_ms), 0, _H, "balancer.resolve_interval_ms"
    )
    o = _obj(d.get("outlier", {}), "balancer.outlier", OUTLIER_KEYS)
    errors = _int(o.get("consecutive_errors", 5), 1, 255, "balancer.outlier.consecutive_errors")
    factor = _int(o.get("max_ejection_factor", 10), 1, 255, "balancer.outlier.max_ejection_factor")
    base = _int(o.get("base_ejection_ms", 30000), 1, _H // factor, "balancer.outlier.base_ejection_ms")
    percent = _int(o.get("max_ejected_percent", 50), 0, 100, "balancer.outlier.max_ejected_percent")
    b.health.set_outlier(errors, base, factor, percent)
    if "registry" not in d:
        return None
    r = _obj(d["registry"], "balancer.registry", REGISTRY_KEYS)
    if "policy" not in r:
        raise ConfigError("balancer.registry.policy: required (an auth policy for the service accounts)")
    name = _str(r["policy"], "balancer.registry.policy", 64)
    gate = cfg.gate
    pid = gate.policy_id(name) if gate is not None else -1
    if gate is None:
        raise ConfigError("balancer.registry.policy: registration needs an auth section")
    if pid < 0:
        raise ConfigError("balancer.registry.policy: no policy %r in auth.policies" % name)
    max_ttl = _int(r.get("max_ttl_ms", 86400000), 1000, _H, "balancer.registry.max_ttl_ms")
    ttl = _int(r.get("default_ttl_ms", 30000), 1000, max_ttl, "balancer.registry.default_ttl_ms")
    from .registry import Registry  # only a config with registration loads it

    b.registry = Registry(b.lb, b.health, b.removed, ttl, max_ttl)
    b.registry_policy = pid
    return r


def _add_pool(b, d, label, registry):
    _obj(d, label, POOL_KEYS)
    if "name" not in d:
        raise ConfigError("%s.name: required" % label)
    name = _str(d["name"], label + ".name", 64)
    strategy = d.get("strategy", "round_robin")
    if strategy not in STRATEGIES:
        raise ConfigError("%s.strategy: must be one of %s" % (label, ", ".join(sorted(STRATEGIES))))
    try:
        pid = b.lb.register_pool(name, STRATEGIES[strategy])
    except LbError as e:
        raise ConfigError("%s: %s" % (label, str(e)[15:]))  # (without "load balancer: ")
    down = d.get("when_all_down", "fail")
    if down not in ("fail", "panic"):
        raise ConfigError('%s.when_all_down: must be "fail" (503 at once) or "panic" (try them all)' % label)
    b.panic[pid] = down == "panic"
    if "sticky_cookie" in d:
        from .sticky import MAX_NAME, StickyCookies

        ck = _str(d["sticky_cookie"], label + ".sticky_cookie", MAX_NAME)
        for c in ck:
            if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "-_."):
                raise ConfigError("%s.sticky_cookie: letters, digits, '-', '_' and '.' only" % label)
        if b.sticky is None:
            b.sticky = StickyCookies(b.lb.max_instances)
        b.cookie[pid] = ck.encode()
    if "health_check" in d:
        _health_check(b, pid, _obj(d["health_check"], label + ".health_check", CHECK_KEYS), label + ".health_check")
    if _bool(d.get("registration", False), label + ".registration"):
        if registry is None or b.registry is None:
            raise ConfigError("%s.registration: needs balancer.registry (its auth policy)" % label)
        b.registry.allow(pid)
    instances = d.get("instances", [])
    if not isinstance(instances, list):
        raise ConfigError("%s.instances: must be an array" % label)
    if not instances and (b.registry is None or not b.registry.accepts[pid]):
        raise ConfigError("%s.instances: a pool needs instances, or registration: true" % label)
    for k, inst in enumerate(instances):
        _add_instance(b, pid, inst, "%s.instances[%d]" % (label, k))


def _health_check(b, pid, h, label):
    path = _str(h.get("path", "/health"), label + ".path", 128)
    if not path.startswith("/") or " " in path:
        raise ConfigError("%s.path: must start with / and have no spaces" % label)
    expect = h.get("expect_status", 0)
    if expect != 0:
        _int(expect, 100, 599, label + ".expect_status")
    interval = _int(h.get("interval_ms", 5000), 100, _H, label + ".interval_ms")
    timeout = _int(h.get("timeout_ms", 1000), 1, _H, label + ".timeout_ms")
    rise = _int(h.get("rise", 2), 1, 255, label + ".rise")
    fall = _int(h.get("fall", 3), 1, 255, label + ".fall")
    slow = _int(h.get("slow_ms", 500), 0, _H, label + ".slow_ms")
    b.set_health_check(pid, path, expect, interval, timeout, rise, fall, slow)


def _add_instance(b, pid, d, label):
    _obj(d, label, INSTANCE_KEYS)
    for k in ("host", "port"):
        if k not in d:
            raise ConfigError("%s.%s: required" % (label, k))
    host = _str(d["host"], label + ".host")
    for c in host:
        if c <= " " or c in "/\\\"'" or c > "~":
            raise ConfigError("%s.host: a host name or IP address" % label)
    port = _int(d["port"], 1, 65535, label + ".port")
    weight = _int(d.get("weight", 1), 1, 255, label + ".weight")
    lb = b.lb
    if lb.find_instance(pid, host, port) >= 0:
        raise ConfigError("%s: %s:%d is already in the pool" % (label, host, port))
    try:
        iid = lb.register_instance(pid, host, port, weight)
    except LbError as e:
        raise ConfigError("%s: %s (balancer.instances)" % (label, str(e)[15:]))
    b.added(iid)

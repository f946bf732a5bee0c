"""The `monitoring` section of gateway.json: builds monitor.ApiMonitor and its monio.Monitoring.

Owns: checking every field (errors name it: "monitoring.ring: must be an integer 16-4096"), the
tables' sizes (a row per configured service and route, unless monitoring.services / routes say), who may read the figures (an auth policy; with an auth section and no policy
named, the Admin permission), and whether GET /_gw/ serves the status page. Must not run after
boot: config.py imports it only when the config has the section, and main.py drops it.
"""

from .config import ConfigError
from .monio import Monitoring
from .monitor import ApiMonitor
from .sectioncheck import check_int as _int
from .sectioncheck import check_object as _obj

SECTION_KEYS = ("ring", "window_s", "policy", "status_page", "services", "routes")


def apply_monitoring(cfg, section):
    d = _obj(section, "monitoring", SECTION_KEYS)
    gw = cfg.gateway
    # One row per service and per route: the config's own, and a few routes more for the shell's
    # add-route (ids past the table are counted in the totals only). A row of a service is 392
    # bytes (its latency histogram most of it), of a route 24.
    ns = gw.get_service_count()
    services = _int(d.get("services", max(ns, 1)), 1, min(gw.max_services, 4095), "monitoring.services")
    nr = min(gw.get_route_count() + 8, gw.max_routes)
    routes = _int(d.get("routes", max(nr, 1)), 1, gw.max_routes, "monitoring.routes")
    ring = _int(d.get("ring", 1024), 16, 4096, "monitoring.ring")
    window = _int(d.get("window_s", 60), 5, 600, "monitoring.window_s")
    page = d.get("status_page", True)
    if page is not True and page is not False:
        raise ConfigError("monitoring.status_page: must be true or false")
    gate = cfg.gate
    policy = -1
    if "policy" in d:
        name = d["policy"]
        if not isinstance(name, str) or not name:
            raise ConfigError("monitoring.policy: must be the name of an auth policy")
        if gate is None:
            raise ConfigError("monitoring.policy: policies need an auth section")
        policy = gate.policy_id(name)
        if policy < 0:
            raise ConfigError("monitoring.policy: no policy %r in auth.policies" % name)
    elif gate is not None:
        policy = gate.admin_policy  # the figures are an Admin's, like /_gw/auth
    m = Monitoring(ApiMonitor(services, routes, ring, window), gw, cfg.listen.slots)
    m.policy = policy
    m.status_page = page
    cfg.monitoring = m
    return m

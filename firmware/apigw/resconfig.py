"""The `resilience` section and the `resilience` objects of services and routes: builds resio.Guard.

Owns: checking every field (errors name it: "services[2].resilience.breaker.window_size: must be
an integer 1-100"), creating each guarded service's circuit breaker, bulkhead and retry policy,
its timeouts, each route's overrides (timeouts, retry) and fallback answer, and the table sizes and
retry budget of the section. Must not run after boot: config.py imports it only when the config
has resilience settings, and main.py drops it with the other loaders.
"""

import json

from .backoff import RetryBudget, RetryPolicy
from .breaker import CircuitBreakerConfig, FailureReason, ResilienceError
from .config import ConfigError
from .resio import Guard
from .sectioncheck import check_int as _int
from .sectioncheck import check_object as _obj

SECTION_KEYS = ("breakers", "bulkheads", "max_window", "retry_budget")
BUDGET_KEYS = ("percent", "min_per_s", "window_ms")
SERVICE_KEYS = ("breaker", "bulkhead", "retry", "timeouts")
ROUTE_KEYS = ("timeouts", "retry", "fallback")
BREAKER_KEYS = (
    "failure_threshold",
    "failure_rate_threshold",
    "window_size",
    "minimum_calls",
    "slow_call_ms",
    "slow_call_rate_threshold",
    "slow_is_failure",
    "reset_timeout",
    "half_open_calls",
    "success_threshold",
    "timeout_duration",
    "failure_on",
)
BULKHEAD_KEYS = ("max_concurrent", "max_waiting", "queue_timeout_ms")
RETRY_KEYS = ("attempts", "base_ms", "multiplier", "cap_ms", "max_total_ms", "on_status")
TIMEOUT_KEYS = ("connect_ms", "first_byte_ms", "total_ms")
FALLBACK_KEYS = ("cache", "max_stale_s", "status", "body", "content_type")
_MS = 3600000  # the longest timeout: one hour (as config.py's)
_H = (1 << 29) - 1  # the breaker's longest duration


def apply_resilience(cfg, section):
    """Build the Guard from the section (or None) and the (kind, id, value, label) entries config.py
    collected from services ("s") and routes ("r"); leave it in cfg.guard."""
    d = _obj(section if section is not None else {}, "resilience", SECTION_KEYS)
    items = cfg.resilience_items
    gw = cfg.gateway
    services = [it for it in items if it[0] == "s"]
    nb = sum(1 for it in services if "breaker" in it[2])
    nk = sum(1 for it in services if "bulkhead" in it[2])
    # Tables sized to what the config uses unless the section asks for more (256 and 128 at most).
    breakers = _int(d.get("breakers", max(nb, 1)), max(nb, 1), 256, "resilience.breakers")
    bulkheads = _int(d.get("bulkheads", max(nk, 1)), max(nk, 1), 128, "resilience.bulkheads")
    window = _int(d.get("max_window", 100), 1, 255, "resilience.max_window")
    b = _obj(d.get("retry_budget", {}), "resilience.retry_budget", BUDGET_KEYS)
    try:
        budget = RetryBudget(
            gw.max_services,
            _int(b.get("percent", 20), 0, 100, "resilience.retry_budget.percent"),
            _int(b.get("min_per_s", 3), 0, 1000, "resilience.retry_budget.min_per_s"),
            _int(b.get("window_ms", 10000), 1000, 600000, "resilience.retry_budget.window_ms"),
        )
    except ResilienceError as e:
        raise ConfigError("resilience.retry_budget: %s" % e)
    g = Guard(gw, cfg.listen.slots, breakers, bulkheads, window, budget)
    for kind, sid, value, label in items:
        if kind == "s":
            _service(g, gw, sid, _obj(value, label, SERVICE_KEYS), label, cfg.listen.io_buffer)
    for kind, rid, value, label in items:
        if kind == "r":
            _route(g, gw, rid, _obj(value, label, ROUTE_KEYS), label, cfg)
    cfg.resilience_items = []
    cfg.guard = g
    return g


def _fits(io_buffer, body, label):
    """A refusal is composed in the I/O buffer whole (head and body): it must fit."""
    if len(body) + 256 > io_buffer:
        raise ConfigError(
            "%s: its answer (%d bytes) does not fit listen.io_buffer (%d)" % (label, len(body), io_buffer)
        )


def _service(g, gw, sid, d, label, io_buffer):
    name = gw.get_service(sid).name
    if "timeouts" in d:
        _timeouts(g, sid, g.s_timeouts, d["timeouts"], label + ".timeouts")
    # The longest a call may take: a half-open probe out longer than that is taken as lost.
    longest = g.s_timeouts[2][sid] or g.s_timeouts[1][sid] or gw.service_timeout(sid)
    if "breaker" in d:
        c = _breaker(_obj(d["breaker"], label + ".breaker", BREAKER_KEYS), label + ".breaker", longest)
        try:
            g.set_breaker(sid, g.breakers.create(name, c))
        except ResilienceError as e:
            raise ConfigError("%s.breaker: %s" % (label, _msg(e)))
    if "bulkhead" in d:
        k = _obj(d["bulkhead"], label + ".bulkhead", BULKHEAD_KEYS)
        lab = label + ".bulkhead."
        conc = _int(k.get("max_concurrent", 4), 1, 255, lab + "max_concurrent")
        wait = _int(k.get("max_waiting", 0), 0, 255, lab + "max_waiting")
        qto = _int(k.get("queue_timeout_ms", 1000 if wait else 0), 0, _MS, lab + "queue_timeout_ms")
        if wait and not qto:
            raise ConfigError("%squeue_timeout_ms: must be above 0 when max_waiting is" % lab)
        g.set_bulkhead(sid, g.bulkheads.create(name, conc, wait, qto))
    if "retry" in d:
        g.s_retry[sid] = _retry(g, d["retry"], label + ".retry")
    g.prepare_service(sid, name)
    _fits(io_buffer, g.refusals[sid][1], label + ".name")


def _route(g, gw, rid, d, label, cfg):
    io_buffer = cfg.listen.io_buffer
    if gw.route_service(rid) < 0:
        raise ConfigError("%s: a route that answers itself has no upstream to protect" % label)
    sid = gw.route_service(rid)
    if g.refusals[sid] is None:  # the service has no settings of its own: the route's still apply
        g.prepare_service(sid, gw.get_service(sid).name)
    g.guarded[sid] = 1
    k = g.route_override(rid)
    if "timeouts" in d:
        _timeouts(g, k, g.r_timeouts, d["timeouts"], label + ".timeouts")
    if "retry" in d:
        g.r_retry[k] = -2 if d["retry"] is False else _retry(g, d["retry"], label + ".retry")
    if "fallback" in d:
        f = _obj(d["fallback"], label + ".fallback", FALLBACK_KEYS)
        if g.s_breaker[sid] < 0 and g.s_bulkhead[sid] < 0:
            raise ConfigError("%s.fallback: the service has no breaker or bulkhead to refuse a request" % label)
        if "cache" not in f and "status" not in f and "body" not in f:
            raise ConfigError("%s.fallback: give cache: true, or a status and a body" % label)
        cached = f.get("cache", False)
        if cached is not True and cached is not False:
            raise ConfigError("%s.fallback.cache: must be true or false" % label)
        if cached:
            _stale(g, cfg, gw, rid, _int(f.get("max_stale_s", 3600), 0, 86400, label + ".fallback.max_stale_s"), label)
        elif "max_stale_s" in f:
            raise ConfigError("%s.fallback.max_stale_s: only with cache: true" % label)
        status = _int(f.get("status", 0 if cached else 200), 0 if cached else 200, 599, label + ".fallback.status")
        if status and status < 200:
            raise ConfigError("%s.fallback.status: must be an integer 200-599" % label)
        body = f.get("body", "")
        ctype = f.get("content_type")
        if not isinstance(body, str):
            body = json.dumps(body)
            ctype = ctype or "application/json"
        elif ctype is None:
            ctype = "text/plain"  # as a respond route's text
        if ctype is not None and (not isinstance(ctype, str) or not ctype or "\r" in ctype or "\n" in ctype):
            raise ConfigError("%s.fallback.content_type: must be a media type" % label)
        body = body.encode()
        _fits(io_buffer, body, label + ".fallback.body")
        g.set_fallback(rid, status, None if ctype is None else ctype.encode(), body, cached)


def _stale(g, cfg, gw, rid, max_stale_s, label):
    """A cache fallback needs the route's answers cached: its transform caches them, which keeps
    expired ones max_stale_s longer (the longest any route asks for)."""
    med = cfg.mediator
    tid = gw.route_transform(rid)
    if med is None or med.cache is None or tid < 0 or not med.transforms[tid].policy.cache_ttl:
        raise ConfigError("%s.fallback.cache: the route needs a transform that caches its answers" % label)
    keep = max_stale_s * 1000
    if keep > med.cache.keep_stale_ms:
        med.cache.keep_stale_ms = keep
    from .medio import STALE_AGE  # mediation's I/O (the server loads it with the section anyway)

    g.stale_tag = STALE_AGE


def _timeouts(g, i, arrays, value, label):
    t = _obj(value, label, TIMEOUT_KEYS)
    for k, name in enumerate(TIMEOUT_KEYS):
        if name in t:
            arrays[k][i] = _int(t[name], 1, _MS, "%s.%s" % (label, name))
    return arrays[2][i]


def _breaker(d, label, total_ms):
    kw = {}
    for k in BREAKER_KEYS:
        if k in d and k != "failure_on":
            v = d[k]
            if k == "slow_is_failure":
                if v is not True and v is not False:
                    raise ConfigError("%s.%s: must be true or false" % (label, k))
            elif type(v) is not int:
                raise ConfigError("%s.%s: must be an integer" % (label, k))
            kw[k] = v
    if "timeout_duration" not in kw:
        kw["timeout_duration"] = total_ms  # probes count as lost after the request's own timeout
    if "failure_on" in d:
        reasons = d["failure_on"]
        if not isinstance(reasons, list) or not all(r in FailureReason.NAMES for r in reasons):
            raise ConfigError("%s.failure_on: a list of %s" % (label, ", ".join(FailureReason.NAMES)))
        mask = 0
        for r in reasons:
            mask |= 1 << FailureReason.NAMES.index(r)
        kw["count_mask"] = mask
    try:
        return CircuitBreakerConfig(**kw)
    except ResilienceError as e:
        raise ConfigError("%s: %s" % (label, _msg(e)))


def _retry(g, value, label):
    r = _obj(value, label, RETRY_KEYS)
    lab = label + "."
    statuses = r.get("on_status", [502, 503, 504])
    if not isinstance(statuses, list) or not all(type(s) is int and 500 <= s <= 599 or s == 429 for s in statuses):
        raise ConfigError("%son_status: a list of 5xx statuses (and 429)" % lab)
    try:
        p = RetryPolicy(
            _int(r.get("attempts", 3), 1, 10, lab + "attempts"),
            _int(r.get("base_ms", 100), 0, 60000, lab + "base_ms"),
            _int(r.get("multiplier", 2), 1, 16, lab + "multiplier"),
            _int(r.get("cap_ms", 2000), 0, 600000, lab + "cap_ms"),
            _int(r.get("max_total_ms", 10000), 0, _MS, lab + "max_total_ms"),
        )
    except ResilienceError as e:
        raise ConfigError("%s: %s" % (label, _msg(e)))
    return g.add_policy(p, tuple(statuses))


def _msg(e):
    """A ResilienceError's message without its "circuit breaker: " / "retry policy: " prefix."""
    m = str(e)
    k = m.find(": ")
    return m[k + 2 :] if 0 <= k < 20 else m

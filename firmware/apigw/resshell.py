"""The shell's `resilience` command: circuit breakers, bulkheads, retries, and a breaker's overrides.

`resilience breakers`, `bulkheads`, `retries` and `stats` read the running tables; `resilience
breaker` shows one breaker's metrics and settings. `resilience trip` holds a breaker open (every
call refused) and `resilience close` holds it closed (every call admitted, never trips) until
`resilience reset`, which closes it with an empty window. Breakers and bulkheads are named after
their service; a number is taken as an id when no breaker has that name.
Registered by shell.Shell when the server (or the config) has a Guard (resilience settings).
Off the request path: allocates freely. This module only reads and drives resio.Guard and its
tables; it owns no state of its own.
"""

from .compat import ticks_ms
from .restypes import SETTINGS, CircuitState, FailureReason, ResilienceError
from .shell import ShellError, table

RES_SUBS = [
    ("breakers", "", "circuit breakers: state, failure and slow rates, window, retry-after, counters"),
    ("breaker", "NAME|ID", "one breaker's metrics and settings"),
    ("bulkheads", "", "bulkheads: permits in use, waiters, queue timeout, counters"),
    ("retries", "", "retry policies per service, each service's retry budget now, retry counters"),
    ("reset", "NAME|ID", "close a breaker and empty its window (ends a trip or a close)"),
    ("trip", "NAME|ID", "force a breaker open: every call refused until reset"),
    ("close", "NAME|ID", "force a breaker closed: every call admitted, never trips, until reset"),
    ("stats", "", "resilience counters"),
]

# BreakerTable.metrics() keys in display order; any others follow, sorted.
_METRICS = (
    "name",
    "state",
    "forced",
    "failure_rate",
    "slow_call_rate",
    "window_calls",
    "consecutive_failures",
    "retry_after_ms",
    "half_open_probes",
    "calls",
    "successes",
    "failures",
) + FailureReason.NAMES
_OFF_AT_ZERO = ("failure_threshold", "failure_rate_threshold", "slow_call_ms", "slow_call_rate_threshold")


def register(shell, guard):
    """Add the `resilience` command to shell for guard (a resio.Guard)."""
    cmd = ResilienceCommand(shell, guard)
    shell.register("resilience", cmd.run, "circuit breakers, bulkheads and retries per service", RES_SUBS)
    return cmd


def _secs(ms):
    return "%d.%ds" % (ms // 1000, ms % 1000 // 100)


def _yes(v):
    return "yes" if v else "no"


class ResilienceCommand:
    def __init__(self, shell, guard):
        self.shell = shell
        self.g = guard
        self.br = guard.breakers
        self.bh = guard.bulkheads

    def run(self, words):
        if not words:
            return self.shell._help(["resilience"])
        sub, rest = words[0], words[1:]
        try:
            if sub == "breakers" and not rest:
                return self._breakers()
            if sub == "breaker" and len(rest) == 1:
                return self._breaker(self._bid(rest[0]))
            if sub == "bulkheads" and not rest:
                return self._bulkheads()
            if sub == "retries" and not rest:
                return self._retries()
            if sub in ("reset", "trip", "close") and len(rest) == 1:
                bid = self._bid(rest[0])
                if sub == "reset":
                    self.br.reset(bid)
                elif sub == "trip":
                    self.br.force_open(bid, ticks_ms())
                else:
                    self.br.force_closed(bid)
                held = None if sub == "reset" else "open" if sub == "trip" else "closed"
                return self._state(bid) + self.shell.record("breaker_held", self.br.name(bid), held)
            if sub == "stats" and not rest:
                return self._stats()
        except ResilienceError as e:
            raise ShellError(str(e))
        for name, usage, _ in RES_SUBS:
            if name == sub:
                raise ShellError("usage: resilience " + sub + (" " + usage if usage else ""))
        raise ShellError("unknown sub-command 'resilience " + sub + "' (try 'help resilience')")

    # -- arguments -------------------------------------------------------------------------------

    def _bid(self, word):
        """A breaker id from its name (its service's; first) or its number; ShellError if none."""
        br = self.br
        bid = br.find(word)
        if bid < 0 and word.isdigit() and int(word) < br.count:
            bid = int(word)
        if bid < 0:
            raise ShellError("no breaker '" + word + "' (see 'resilience breakers')")
        return bid

    def _state_text(self, m):
        """ "open", or "open(held)" while trip / close holds it."""
        return m["state"] + ("(held)" if m["forced"] else "")

    def _retry_text(self, m):
        """Time left before the breaker admits a call (a probe); "held" until reset; "-": now."""
        if m["state"] == CircuitState.NAMES[CircuitState.CLOSED]:
            return "-"
        ms = m["retry_after_ms"]
        if m["state"] == CircuitState.NAMES[CircuitState.OPEN]:
            return "held" if m["forced"] else _secs(ms)
        return _secs(ms) if ms else "-"  # half open: "-" while it has probes to let through

    def _state(self, bid):
        br = self.br
        m = br.metrics(bid, ticks_ms())
        text = "breaker %d %s: %s" % (bid, m["name"], self._state_text(m))
        retry = self._retry_text(m)
        if retry == "held":
            text += ", every call refused until reset"
        elif retry != "-":
            text += ", retry in " + retry
        elif m["forced"]:
            text += ", every call admitted until reset"
        return text + "; window %d/%d, failure rate %d%%" % (
            m["window_calls"],
            br.config(bid).window_size,
            m["failure_rate"],
        )

    def _services_of(self, ids, x):
        """Names of the services whose entry in ids (s_breaker, s_bulkhead) is x."""
        gw = self.g.gw
        return [gw.get_service(sid).name for sid in range(len(ids)) if ids[sid] == x and gw.get_service(sid)]

    # -- sub-commands ----------------------------------------------------------------------------

    def _breakers(self):
        br = self.br
        now = ticks_ms()
        rows = []
        for bid in range(br.count):
            m = br.metrics(bid, now)
            window = "%d/%d" % (m["window_calls"], br.config(bid).window_size)
            row = [bid, m["name"], self._state_text(m), m["failure_rate"], m["slow_call_rate"], window]
            rows.append(row + [m["consecutive_failures"], self._retry_text(m), m["times_opened"], m["rejected"]])
        if not rows:
            return "no circuit breakers"
        head = ["id", "name", "state", "failure %", "slow %", "window", "consecutive", "retry after", "opened"]
        return table(rows, head + ["rejected"])

    def _breaker(self, bid):
        br = self.br
        m = br.metrics(bid, ticks_ms())
        out = [self._state(bid)]
        svcs = self._services_of(self.g.s_breaker, bid)
        out.append("services: " + (", ".join(svcs) if svcs else "none"))
        out.append("metrics:")
        keys = [k for k in _METRICS if k in m] + sorted(k for k in m if k not in _METRICS)
        for k in keys:
            v = m[k]
            out.append("  " + k + ": " + (_yes(v) if v is True or v is False else str(v)))
        out.append("settings:")
        c = br.config(bid)
        for name, _, _, _ in SETTINGS:
            v = getattr(c, name)
            if name == "count_mask":
                names = [FailureReason.NAMES[r] for r in range(4) if (v >> r) & 1]
                out.append("  failure_on: " + (",".join(names) if names else "none"))
                continue
            if v is True or v is False:
                text = _yes(v)
            else:
                text = str(v) + (" (off)" if v == 0 and name in _OFF_AT_ZERO else "")
            out.append("  " + name + ": " + text)
        return "\n".join(out)

    def _bulkheads(self):
        bh = self.bh
        rows = []
        for b in range(bh.count):
            m = bh.metrics(b)
            q = m["queue_timeout_ms"]
            row = [b, m["name"], m["max_concurrent"], m["in_use"], "%d/%d" % (m["waiting"], m["max_waiting"])]
            row += [_secs(q) if q else "-", m["acquired"], m["queued"], m["rejected"], m["queue_timeouts"]]
            rows.append(row + [m["max_in_use"]])
        if not rows:
            return "no bulkheads"
        head = ["id", "name", "max", "in use", "waiting", "queue timeout", "acquired", "queued", "rejected"]
        return table(rows, head + ["queue timeouts", "peak"])

    def _retries(self):
        g = self.g
        gw = g.gw
        now = ticks_ms()
        overrides = self._route_overrides()
        with_route_policy = [sid for _, _, sid, pol in overrides if pol >= 0]
        rows = []
        for sid in range(len(g.s_retry)):
            pol = g.s_retry[sid]
            if pol < 0 and sid not in with_route_policy:
                continue
            ep = gw.get_service(sid)
            if ep is None:
                continue
            row = [sid, ep.name]
            if pol >= 0:
                p = g.policies[pol]
                row += [pol, p.max_attempts, p.base_ms, p.multiplier, p.cap_ms, p.max_total_ms]
                row.append(",".join(str(s) for s in g.statuses[pol]))
            else:
                row += ["-"] * 7
            rows.append(row + list(g.budget.state(sid, now)))
        out = []
        if rows:
            head = [
                "id",
                "service",
                "policy",
                "attempts",
                "base ms",
                "multiplier",
                "cap ms",
                "max total ms",
                "on status",
            ]
            out.append(table(rows, head + ["requests", "retries", "allowed"]))
        else:
            out.append("no retry policies")
        for rid, text, sid, pol in overrides:
            name = gw.get_service(sid).name
            what = "no retries" if pol == -2 else "policy %d: %s" % (pol, self._policy(pol))
            out.append("route %d %s (%s): %s" % (rid, text, name, what))
        b = g.budget
        out.append(
            "budget: %d%% of the requests + %d retries/s in a %s window (per service)"
            % (b.budget_percent, b.min_retries_per_s, _secs(b.window_ms))
        )
        out.append("retries: %d" % g.retries)
        out.append("budget_exhausted: %d" % g.budget_exhausted)
        return "\n".join(out)

    def _policy(self, pol):
        p = self.g.policies[pol]
        return "%d attempts, base %d ms x%d, cap %d ms, max total %d ms, on %s" % (
            p.max_attempts,
            p.base_ms,
            p.multiplier,
            p.cap_ms,
            p.max_total_ms,
            ",".join(str(s) for s in self.g.statuses[pol]),
        )

    def _route_overrides(self):
        """(route id, its path, its service, policy index or -2: none) of every route that sets its
        own retry policy."""
        g = self.g
        gw = g.gw
        out = []
        for rid in range(gw.max_routes):
            k = g.override_of(rid)
            if k < 0 or g.r_retry[k] == -1:
                continue
            d = gw.get_route(rid)
            if d is not None and gw.route_service(rid) >= 0:
                out.append((rid, d["path"], gw.route_service(rid), g.r_retry[k]))
        return out

    def _stats(self):
        st = self.g.stats()
        return "\n".join(k + ": " + str(st[k]) for k in sorted(st))

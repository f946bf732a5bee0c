"""The gateway's command shell: a small command framework and the `gateway` command set.

Commands take a list of words and return text. Where it runs (the serial console, a TCP port) is
console.py's concern; tools/gwshell.py runs it on the host.
Other modules add their commands with Shell.register(). Off the request path: allocates freely.
"""

from .gateway import METHOD_BITS, GatewayError, HealthStatus, method_names


class ShellError(Exception):
    """A command's usage error; the message is shown to the user."""


def _kv(words):
    """Split ["a", "k=v", "flag"] into positional words and a {k: v} dict (flags map to True)."""
    pos = []
    opts = {}
    for w in words:
        eq = w.find("=")
        if eq > 0:
            opts[w[:eq]] = w[eq + 1 :]
        elif w.startswith("--"):
            opts[w[2:]] = True
        else:
            pos.append(w)
    return pos, opts


def table(rows, header):
    """Format rows (lists of values) as aligned text columns."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in header]
    for r in rows:
        for i, c in enumerate(r):
            if len(c) > widths[i]:
                widths[i] = len(c)
    lines = []
    for r in [list(header)] + rows:
        lines.append("  ".join(c + " " * (widths[i] - len(c)) for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


class Shell:
    """Runs command lines against a gateway (and, on a board, its server)."""

    def __init__(self, gateway, server=None, gate=None, mediator=None, balancer=None, guard=None, monitoring=None):
        self.gw = gateway
        self.server = server
        self.commands = {}  # name -> (handler(words) -> str, summary, [(sub, usage, help)])
        self.register("help", self._help, "list commands and sub-commands", [("help [COMMAND]", "", "")])
        self.register("gateway", self._gateway, "API gateway: routes, services, route decisions", GATEWAY_SUBS)
        if gate is None and server is not None:
            gate = server.gate
        if gate is not None:  # the config has an auth section
            from .authshell import register

            register(self, gate)
        if mediator is None and server is not None:
            mediator = server.mediator
        if mediator is not None:  # the config has a mediation section
            from .medshell import register as register_mediator

            register_mediator(self, mediator)
        if balancer is None and server is not None:
            balancer = getattr(server, "balancer", None)
        if balancer is not None:  # the config has pools
            from .lbshell import register as register_lb

            register_lb(self, balancer)
        if guard is None and server is not None:
            guard = getattr(server, "guard", None)
        if guard is not None:  # the config has resilience settings
            from .resshell import register as register_resilience

            register_resilience(self, guard)
        if monitoring is None and server is not None:
            monitoring = getattr(server, "monitoring", None)
        if monitoring is not None:  # the config has a monitoring section
            from .monshell import register as register_monitoring

            register_monitoring(self, monitoring)

    def register(self, name, handler, summary, subs):
        """Add a command. handler(words) returns the text to show; subs documents its sub-commands."""
        self.commands[name] = (handler, summary, subs)

    def record(self, what, *args):
        """Persist a change with runstate.Changes.<what>(*args) when the shell runs on a gateway
        that keeps a change file; returns "" or a warning line for the command's output."""
        srv = self.server
        if srv is None or (getattr(srv, "changes", None) or getattr(srv, "changes_path", None)) is None:
            return ""
        from . import runstate

        try:
            getattr(runstate.of(srv), what)(*args)
        except OSError as e:
            return "\nwarning: not saved (" + str(e) + "): the change is lost at the next reboot"
        return ""

    def execute(self, line):
        """Run one command line; returns its output (errors are output too, never raised)."""
        words = line.split()
        if not words:
            return ""
        entry = self.commands.get(words[0])
        if entry is None:
            return "error: unknown command '" + words[0] + "' (try 'help')"
        try:
            return entry[0](words[1:])
        except (ShellError, GatewayError, ValueError) as e:
            return "error: " + str(e)

    # -- help ------------------------------------------------------------------------------------

    def _help(self, words):
        names = sorted(self.commands)
        if words:
            if words[0] not in self.commands:
                raise ShellError("unknown command '" + words[0] + "'")
            names = [words[0]]
        out = []
        for name in names:
            _, summary, subs = self.commands[name]
            out.append(name + " - " + summary)
            for sub, usage, text in subs:
                if name == "help":
                    continue
                out.append(
                    "  " + name + " " + sub + ((" " + usage) if usage else "") + ("  -- " + text if text else "")
                )
        return "\n".join(out)

    # -- gateway ---------------------------------------------------------------------------------

    def _gateway(self, words):
        if not words:
            return self._help(["gateway"])
        sub = words[0]
        rest = words[1:]
        if sub == "routes":
            return self._routes()
        if sub == "services":
            return self._services()
        if sub == "route":
            return self._route(rest)
        if sub == "add-route":
            return self._add_route(rest)
        if sub == "remove-route":
            if len(rest) != 1:
                raise ShellError("usage: gateway remove-route ID|NAME")
            r = int(rest[0]) if rest[0].isdigit() else rest[0]
            d = self.gw.get_route(r if isinstance(r, int) else self.gw.route_id(r))
            self.gw.remove_route(r)
            return "removed route " + rest[0] + (self._saved("route_removed", d) if d is not None else "")
        if sub == "add-service":
            return self._add_service(rest)
        if sub == "remove-service":
            if len(rest) != 1:
                raise ShellError("usage: gateway remove-service NAME")
            self.gw.unregister_service(rest[0])
            return "removed service " + rest[0] + self.record("service_removed", rest[0])
        if sub == "changes":
            return self._changes(rest)
        if sub == "stats":
            return self._stats()
        if sub == "stop":
            if self.server is None:
                raise ShellError("no running gateway to stop")
            import asyncio

            asyncio.create_task(self.server.stop())
            return "stopping"
        raise ShellError("unknown sub-command 'gateway " + sub + "' (try 'help gateway')")

    def _routes(self):
        rows = []
        for d in self.gw.list_routes():
            if d["respond"] is not None:
                action = "respond " + str(d["respond"]["status"])
            else:
                action = "-> " + str(d["service"])
                if d["strip_prefix"]:
                    action += " strip"
                if d["rewrite"] is not None:
                    action += " rewrite=" + d["rewrite"]
            hdrs = ",".join(k + ("" if v is True else "=" + v) for k, v in d["headers"].items())
            methods = d["methods"] if isinstance(d["methods"], str) else ",".join(d["methods"])
            rows.append([d["id"], d["name"] or "-", d["match"], d["path"], methods, hdrs or "-", action])
        if not rows:
            return "no routes"
        return table(rows, ["id", "name", "match", "path", "methods", "headers", "action"])

    def _services(self):
        rows = []
        for ep in self.gw.list_services():
            rows.append(
                [
                    ep.id,
                    ep.name,
                    _address(ep),
                    HealthStatus.NAMES[ep.health_status],
                    ep.timeout_ms,
                    ep.routes,
                ]
            )
        if not rows:
            return "no services"
        return table(rows, ["id", "name", "address", "health", "timeout_ms", "routes"])

    def _route(self, words):
        pos, opts = _kv(words)
        if len(pos) != 2:
            raise ShellError("usage: gateway route METHOD PATH [Header=value ...]")
        method, path = pos[0].upper(), pos[1]
        rid, allow = self.gw.route(method, path, opts or None)
        if rid == -400:
            return "400 bad request: invalid path"
        if rid == -404:
            return "404 no route matches " + path
        if rid == -405:
            return "405 method not allowed; Allow: " + ",".join(method_names(allow))
        d = self.gw.get_route(rid)
        text = "route " + str(rid) + " (" + d["match"] + " " + d["path"] + ")"
        if d["respond"] is not None:
            return text + ": respond " + str(d["respond"]["status"])
        svc = self.gw.dispatch_request(self.gw._scratch)
        up = self.gw.upstream_path(self.gw._scratch).decode()
        ep = self.gw.get_service(svc)
        return text + ": forward to " + ep.name + " " + _address(ep) + " " + method + " " + up

    def _add_route(self, words):
        pos, opts = _kv(words)
        if len(pos) > 1 and pos[-1] == "strip":  # the bare flag of the usage line
            pos.pop()
            opts["strip"] = True
        if len(pos) < 1 or len(pos) > 2:
            raise ShellError(
                "usage: gateway add-route PATH [SERVICE] [match=prefix] [methods=GET,POST] [strip] "
                "[rewrite=/p] [name=N] [respond=STATUS] [body=TEXT] [type=MEDIA]"
            )
        kw = {"match": opts.get("match", "prefix"), "name": opts.get("name")}
        if "methods" in opts:
            names = [m.upper() for m in str(opts["methods"]).split(",") if m]
            for m in names:
                if m not in METHOD_BITS:
                    raise ShellError("unknown method '" + m + "'")
            kw["methods"] = names
        if opts.get("strip"):
            kw["strip_prefix"] = True
        if "rewrite" in opts:
            kw["rewrite"] = opts["rewrite"]
        if "respond" in opts:
            kw["respond"] = {
                "status": int(opts["respond"]),
                "content_type": opts.get("type", "text/plain"),
                "body": opts.get("body", ""),
            }
        elif len(pos) == 2:
            kw["service"] = pos[1]
        else:
            raise ShellError("a route needs a SERVICE or respond=STATUS")
        rid = self.gw.add_route(pos[0], **kw)
        kw["path"] = pos[0]
        return "added route " + str(rid) + self._saved("route_added", self.gw.get_route(rid), kw)

    def _saved(self, what, route, *spec):
        """record() for a route change: routes are named by runstate.route_key, not by id."""
        if self.server is None:
            return ""
        from .runstate import route_key

        return self.record(what, route_key(route), *spec)

    def _add_service(self, words):
        pos, opts = _kv(words)
        host, _, port = pos[1].rpartition(":") if len(pos) == 2 else ("", "", "")
        if not host or not port.isdigit():
            raise ShellError("usage: gateway add-service NAME HOST:PORT [timeout_ms=N]")
        timeout = opts.get("timeout_ms", "10000")
        if not str(timeout).isdigit():
            raise ShellError("timeout_ms must be a number of milliseconds")
        sid = self.gw.register_service(pos[0], host, int(port), int(timeout))
        return "added service " + str(sid) + self.record("service_added", pos[0], host, int(port), int(timeout))

    def _changes(self, words):
        """gateway changes [clear]: the run-time changes kept for the next boot (runstate.py)."""
        from . import runstate

        c = None if self.server is None else runstate.of(self.server)
        if c is None:
            raise ShellError("no change file: changes are kept only on a running gateway")
        if words == ["clear"]:
            return "forgot %d change(s): the next boot starts from the config alone" % c.clear()
        if words:
            raise ShellError("usage: gateway changes [clear]")
        lines = c.describe()
        return "\n".join(lines) if lines else "no run-time changes (" + c.path + ")"

    def _stats(self):
        gw = self.gw
        lines = ["services " + str(gw.get_service_count()), "routes " + str(gw.get_route_count())]
        srv = self.server
        if srv is not None:
            st = srv.stats
            h = srv.health()
            lines += [
                "uptime_s " + str(h["uptime_s"]),
                "heap_free " + str(h["heap_free"]),
                "slots " + str(h["slots_in_use"]) + "/" + str(h["slots"]) + " (peak " + str(h["slots_peak"]) + ")",
                "connections " + str(st.connections),
                "requests " + str(st.requests),
                "responses 2xx " + str(st.by_class[2]) + " 4xx " + str(st.by_class[4]) + " 5xx " + str(st.by_class[5]),
                "parse_errors " + str(st.parse_errors),
                "queued " + str(st.queued) + " rejected " + str(st.rejected),
                "timeouts " + str(st.timeouts) + " upstream_errors " + str(st.upstream_errors),
                "upstream connects "
                + str(srv.upstream.connects)
                + " reuses "
                + str(srv.upstream.reuses)
                + " idle "
                + str(srv.upstream.idle_count()),
            ]
        return "\n".join(lines)


GATEWAY_SUBS = [
    ("routes", "", "list routes in precedence order"),
    ("services", "", "list services with health"),
    ("route", "METHOD PATH [Header=value ...]", "show the route decision for a request"),
    (
        "add-route",
        "PATH SERVICE|respond=STATUS [match=...] [methods=...] [strip] [rewrite=...] [name=...]",
        "add a route",
    ),
    ("remove-route", "ID|NAME", "remove a route"),
    ("add-service", "NAME HOST:PORT [timeout_ms=N]", "register a service"),
    ("remove-service", "NAME", "unregister a service (no route may use it)"),
    ("changes", "[clear]", "run-time changes kept for the next boot (clear: forget them)"),
    ("stats", "", "counters: requests, slots, queue, upstream connections"),
    ("stop", "", "stop the gateway cleanly (running board only)"),
]


def _address(ep):
    """host:port of a service, or "pool N" when it sends to a load-balancer pool (see lb pools)."""
    return "pool %d" % ep.pool if ep.host is None else ep.host + ":" + str(ep.port)

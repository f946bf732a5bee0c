"""The shell's `mediator` command: transforms, schemas, the response cache, and dry runs.

`mediator convert` runs a body through a transform without a request or a service, and
`mediator schemas validate` checks a sample against a schema, so a config can be tried on the
host (tools/gwshell.py --config) before it goes to a board. Off the request path: allocates.
Registered by shell.Shell when the config has a mediation section.
"""

from .mediator import ContentType, MediationError

MEDIATOR_SUBS = [
    ("transforms", "", "transforms: request and response formats, schemas, cache, gRPC method"),
    ("schemas", "[list]", "the compiled schemas"),
    ("schemas validate", "NAME JSON", "check a JSON sample against a schema"),
    ("convert", "TRANSFORM request|response FORMAT BODY", "run a body through a transform (a dry run)"),
    ("cache", "[stats]", "response cache: hits, misses, entries, bytes"),
    ("cache purge", "[ROUTE]", "drop every cached answer, or one route's"),
]


def register(shell, mediator):
    cmd = MediatorCommand(shell, mediator)
    shell.register("mediator", cmd.run, "format conversion, schemas, response cache", MEDIATOR_SUBS)
    return cmd


def _fmt(t, attr):
    v = getattr(t, attr)
    if isinstance(v, tuple):
        return ",".join(ContentType.NAMES[c] for c in v) or "any"
    return ContentType.NAMES[v] if v >= 0 else "-"


class MediatorCommand:
    def __init__(self, shell, mediator):
        self.shell = shell
        self.med = mediator

    def run(self, words):
        from .shell import ShellError, table

        med = self.med
        if not words:
            return self.shell._help(["mediator"])
        sub, rest = words[0], words[1:]
        if sub == "transforms":
            rows = []
            for i, t in enumerate(med.transforms):
                req = _fmt(t, "req_from") + "->" + _fmt(t, "req_to")
                resp = _fmt(t, "resp_from") + "->" + _fmt(t, "resp_to")
                schemas = "/".join(med.schema_names[s] if s >= 0 else "-" for s in (t.req_schema, t.resp_schema))
                extra = t.grpc.decode() if t.grpc is not None else ""
                cache = "%ds" % t.policy.cache_ttl if t.policy.cache_ttl else "-"
                rows.append([i, t.name, req, resp, schemas, cache, extra or "-"])
            return (
                table(rows, ["id", "name", "request", "response", "schemas", "cache", "grpc"])
                if rows
                else "no transforms"
            )
        if sub == "schemas":
            if not rest or rest[0] == "list":
                return "\n".join("%d %s" % (i, n) for i, n in enumerate(med.schema_names)) or "no schemas"
            if rest[0] == "validate" and len(rest) >= 3:
                sid = med.schema_id(rest[1])
                if sid < 0:
                    raise ShellError("no schema '" + rest[1] + "'")
                try:
                    value = med.unmarshal_json(" ".join(rest[2:]))
                except MediationError as e:
                    raise ShellError(e.message)
                err = med.schemas[sid].validate(value)
                return "valid" if err is None else "invalid at %s: %s" % (err[0] or "/", err[1])
            raise ShellError("usage: mediator schemas [list | validate NAME JSON]")
        if sub == "convert":
            return self._convert(rest)
        if sub == "cache":
            c = med.cache
            if c is None:
                return "no response cache (no transform sets cache.ttl_s)"
            if not rest or rest[0] == "stats":
                return "\n".join(k + " " + str(v) for k, v in sorted(c.stats().items()))
            if rest[0] == "purge":
                route = -1
                if len(rest) > 1:
                    route = int(rest[1]) if rest[1].isdigit() else self.shell.gw.route_id(rest[1])
                    if route < 0:
                        raise ShellError("no route '" + rest[1] + "'")
                return "purged %d entries" % c.purge(route)
            raise ShellError("usage: mediator cache [stats | purge [ROUTE]]")
        raise ShellError("unknown sub-command 'mediator " + sub + "' (try 'help mediator')")

    def _convert(self, words):
        from .shell import ShellError

        if len(words) < 4 or words[1] not in ("request", "response"):
            raise ShellError("usage: mediator convert TRANSFORM request|response FORMAT BODY")
        med = self.med
        tid = med.transform_id(words[0])
        if tid < 0:
            raise ShellError("no transform '" + words[0] + "'")
        try:
            ctype = ContentType.parse(words[2])
        except MediationError as e:
            raise ShellError(e.message)
        body = " ".join(words[3:]).encode()
        try:
            if words[1] == "request":
                out, to = med.transform_request(tid, ctype, body)
                status = 0
            else:
                status, to, out, _ = med.transform_response(tid, 200, ctype, body)
        except MediationError as e:
            return "%d %s: %s" % (e.status, e.code, e.message)
        shown = (
            out.hex() if to in (ContentType.PROTOBUF, ContentType.BINARY) or med.transforms[tid].grpc else out.decode()
        )
        return ("%d " % status if status else "") + ContentType.NAMES[to] + ": " + shown

"""The shell's `auth` command: tokens, API keys, users, roles, policies and `check`.

Lists show token ids, key ids and digest prefixes, never a token, key, secret or password; a new
token or key is printed once, by the sub-command that makes it. `check` runs a request you
describe through the parser, the router and the auth stage, and says what the gateway would do.
Off the request path: allocates freely. Registered by shell.Shell when the config has an auth section.
"""

from . import httpparse as hp
from .authtypes import AuthError, Permission, Role
from .slot import Slot

AUTH_SUBS = [
    ("tokens", "[list]", "issued tokens: id, user, role, permissions, expiry"),
    ("tokens issue", "USER [role=R] [permissions=read,write] [ttl=S]", "sign a token (printed once)"),
    ("tokens revoke", "JTI|TOKEN", "revoke a token (kept until it expires, across reboots)"),
    ("tokens refresh", "TOKEN", "a successor token; the old one is revoked"),
    ("keys", "[list]", "API keys: id, service, role, permissions, digest prefix"),
    ("keys add", "[service=S] [role=R] [permissions=read,write]", "make an API key (printed once)"),
    ("keys revoke", "ID", "revoke an API key"),
    ("users", "[list]", "users: name, role, permissions"),
    ("users add", "NAME password=PW [role=R] [permissions=...]", "add a user (salted PBKDF2 hash kept)"),
    ("users remove", "NAME", "remove a user"),
    ("roles", "", "roles and their default permissions"),
    ("grant", "USER|KEY_ID PERMISSIONS", "add permissions (comma-separated names)"),
    ("revoke-permission", "USER|KEY_ID PERMISSIONS", "take permissions away"),
    ("policies", "", "the policies routes name"),
    ("check", "METHOD PATH [bearer=TOKEN|key=KEY|basic=USER:PASS] [Header=value ...]", "the decision for a request"),
    ("stats", "", "allowed, refused, rate-limited, cache hits"),
]


def register(shell, gate):
    """Add the `auth` command to shell for gate (an authgate.AuthGate)."""
    cmd = AuthCommand(shell, gate)
    shell.register("auth", cmd.run, "authentication, API keys, tokens, rate limits", AUTH_SUBS)
    return cmd


def _kv(words):
    from .shell import _kv as kv

    return kv(words)


def _perms(opts):
    return opts["permissions"].split(",") if "permissions" in opts else None


class AuthCommand:
    def __init__(self, shell, gate):
        self.shell = shell
        self.gate = gate
        self.auth = gate.auth

    def run(self, words):
        from .shell import ShellError, table

        if not words:
            return self.shell._help(["auth"])
        sub, rest = words[0], words[1:]
        verb = rest[0] if rest else "list"
        a = self.auth
        try:
            if sub == "tokens":
                if verb == "list":
                    rows = [
                        [t["token_id"], t["user_id"], t["role"], ",".join(t["permissions"]), t["expiry"]]
                        for t in a.list_tokens()
                    ]
                    return table(rows, ["id", "user", "role", "permissions", "expiry"]) if rows else "no issued tokens"
                pos, opts = _kv(rest[1:])
                if verb == "issue" and len(pos) == 1:
                    ttl = int(opts["ttl"]) if "ttl" in opts else None
                    token, info = a.issue_token(pos[0], opts.get("role"), _perms(opts), ttl)
                    return "token " + info.token_id + " for " + pos[0] + " (shown once):\n" + token
                if verb == "revoke" and len(pos) == 1:
                    return "revoked token " + a.revoke_token(pos[0])
                if verb == "refresh" and len(pos) == 1:
                    token, info = a.refresh_token(pos[0])
                    return "token " + info.token_id + " replaces the old one (shown once):\n" + token
                raise ShellError("usage: auth tokens [list | issue USER ... | revoke JTI|TOKEN | refresh TOKEN]")
            if sub == "keys":
                if verb == "list":
                    rows = [
                        [k["key"], k["service"] or "*", k["role"], ",".join(k["permissions"]), k["digest"] + "..."]
                        for k in a.list_api_keys()
                    ]
                    return table(rows, ["id", "service", "role", "permissions", "sha256"]) if rows else "no API keys"
                pos, opts = _kv(rest[1:])
                if verb == "add" and not pos:
                    svc = opts.get("service")
                    if svc is not None and self.shell.gw.service_id(svc) < 0:
                        raise ShellError("unknown service '" + svc + "'")
                    e = a.register_api_key(svc, _perms(opts), opts.get("role", "service_account"))
                    return "API key " + e.key + " (shown once; only its SHA-256 digest is kept):\n" + str(e.secret)
                if verb == "revoke" and len(pos) == 1:
                    a.revoke_api_key(pos[0])
                    return "revoked API key " + pos[0]
                raise ShellError("usage: auth keys [list | add [service=S] [role=R] [permissions=...] | revoke ID]")
            if sub == "users":
                if verb == "list":
                    rows = [[u["name"], u["role"], ",".join(u["permissions"])] for u in a.list_users()]
                    return table(rows, ["name", "role", "permissions"]) if rows else "no users"
                pos, opts = _kv(rest[1:])
                if verb == "add" and len(pos) == 1 and "password" in opts:
                    a.add_user_saved(pos[0], opts.get("role", "user"), _perms(opts), opts["password"])
                    return "added user " + pos[0]
                if verb == "remove" and len(pos) == 1:
                    a.remove_user(pos[0])
                    return "removed user " + pos[0]
                raise ShellError("usage: auth users [list | add NAME password=PW [role=R] | remove NAME]")
            if sub == "roles":
                return table(
                    [[n, ",".join(Permission.names(Role.DEFAULTS[i]))] for i, n in enumerate(Role.NAMES)],
                    ["role", "permissions"],
                )
            if sub == "grant" or sub == "revoke-permission":
                if len(rest) != 2:
                    raise ShellError("usage: auth " + sub + " USER|KEY_ID read,write,...")
                f = a.grant_permission if sub == "grant" else a.revoke_permission
                return rest[0] + ": " + (",".join(Permission.names(f(rest[0], rest[1].split(",")))) or "none")
            if sub == "policies":
                rows = []
                for p in range(len(self.gate.names)):
                    d = self.gate.describe(p)
                    perms = d["permissions"] if isinstance(d["permissions"], str) else ",".join(d["permissions"])
                    rate = "-" if not d["rate"] else "%d/s burst %d per %s" % (d["rate"], d["burst"], d["per"])
                    rows.append([p, d["name"], ",".join(d["schemes"]) or "public", perms, rate])
                return table(rows, ["id", "name", "schemes", "permissions", "rate limit"])
            if sub == "check":
                return self._check(rest)
            if sub == "stats":
                return "\n".join(k + " " + str(v) for k, v in sorted(self.gate.stats().items()))
        except AuthError as e:
            raise ShellError(e.message)
        raise ShellError("unknown sub-command 'auth " + sub + "' (try 'help auth')")

    def _check(self, words):
        """Build the request, run it through parse, route and the gate (the rate limit too)."""
        from .shell import ShellError

        pos, opts = _kv(words)
        if len(pos) != 2:
            raise ShellError("usage: auth check METHOD PATH [bearer=TOKEN|key=KEY|basic=USER:PASS] [Header=value ...]")
        head = pos[0].upper() + " " + pos[1] + " HTTP/1.1\r\nHost: shell\r\n"
        for k, v in opts.items():
            if k == "bearer":
                head += "Authorization: Bearer " + v + "\r\n"
            elif k == "key":
                head += "X-API-Key: " + v + "\r\n"
            elif k == "basic":
                import binascii

                head += "Authorization: Basic " + binascii.b2a_base64(v.encode()).decode().strip() + "\r\n"
            else:
                head += k + ": " + str(v) + "\r\n"
        req = (head + "Content-Length: 0\r\n\r\n").encode()
        slot = Slot(0, max(1024, len(req) + 64), 256, 32)
        slot.peer = b"127.0.0.1"
        slot.buf[: len(req)] = req
        slot.n = len(req)
        st = hp.parse_request(slot)
        if st != hp.DONE:
            return "%d: the request does not parse" % st
        gw = self.shell.gw
        rid = gw.route_request(slot)
        if rid < 0:
            return "%d: no route" % -rid
        gw.dispatch_request(slot)
        pid = gw.route_policy(rid)
        name = gw.get_route(rid)["name"] or str(rid)
        if pid == 255:
            return "route " + name + ": public (no policy): allowed"
        g = self.gate
        st = g.check(slot, pid)
        if st == -1:
            return "route %s, policy %s: an opaque bearer token: asks the introspection endpoint" % (name, g.names[pid])
        a = self.auth
        who = ""
        if a.p_kind >= 0:
            who = " as %s (%s, %s)" % (
                a.principal_name(a.p_principal),
                Role.NAMES[a.p_role],
                ",".join(Permission.names(a.p_perms)) or "no permissions",
            )
        if st == 0:
            return "route %s, policy %s: allowed%s" % (name, g.names[pid], who)
        extra = bytes(g.hdr[: g.hdr_len]).decode().strip().replace("\r\n", "; ")
        return "route %s, policy %s: %d %s%s%s" % (
            name,
            g.names[pid],
            st,
            g.error,
            who,
            (" (" + extra + ")") if extra else "",
        )

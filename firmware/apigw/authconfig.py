"""The `auth` section of gateway.json and the secrets file it names: builds the AuthGate.

Owns: checking every field of the section (errors name the field, e.g. auth.policies.admin.rate),
reading the secrets file (JWT keys, the introspection client secret: never in gateway.json),
building the AuthenticationManager, its users and API keys (digests only), the introspection
client and the policies, applying the saved runtime state, and giving each route that names a
policy its id. Must not run after boot: config.py imports it only when the section is present,
and main.py drops the loader with it.
"""

from . import crypto
from .auth import AuthenticationManager
from .authgate import AuthGate
from .authtypes import AuthError
from .config import ConfigError as AuthConfigError  # the loader's error: main.py reports it
from .sectioncheck import check_int as _int
from .sectioncheck import check_object as _obj
from .sectioncheck import config_path

AUTH_KEYS = ("secrets", "state", "jwt", "limits", "pbkdf2_iterations", "users", "api_keys", "introspection", "policies")
JWT_KEYS = ("signing_kid", "issuer", "audience", "leeway_s", "ttl_s", "max_len")
LIMIT_KEYS = ("tokens", "api_keys", "users", "revoked", "cache_entries", "cache_bytes", "buckets", "policies")
LIMIT_DEFAULTS = {
    "tokens": (256, 1, 4096),
    "api_keys": (512, 1, 4096),
    "users": (32, 1, 1024),
    "revoked": (256, 1, 4096),
    "cache_entries": (16, 1, 256),
    "cache_bytes": (512, 64, 2048),
    "buckets": (256, 1, 4096),
    "policies": (32, 1, 254),
}
INTROSPECTION_KEYS = ("host", "port", "path", "client_id", "timeout_ms", "cache_entries", "ttl_s")
POLICY_KEYS = ("schemes", "permissions", "rate", "burst", "per")
USER_KEYS = ("name", "role", "permissions", "salt", "hash", "iterations")
KEY_KEYS = ("id", "digest", "service", "role", "permissions")


def _str(value, label, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise AuthConfigError("%s: must be a non-empty string" % label)
    return value


def read_secrets(path):
    """{"jwt_keys": {kid: base64url key}, "introspection_client_secret": str} -> (keys, secret).
    The file is the board's one secrets file: "wifi" and "ap" are the board module's (the Wi-Fi
    credentials), allowed here and not read."""
    from .store import read_json

    try:
        doc = read_json(path)
    except (ValueError, OSError):
        raise AuthConfigError("auth.secrets: %s is not readable JSON" % path)
    if doc is None:
        raise AuthConfigError("auth.secrets: no file %s" % path)
    doc = _obj(doc, "secrets", ("jwt_keys", "introspection_client_secret", "wifi", "ap"))
    keys = {}
    for kid, text in _obj(doc.get("jwt_keys", {}), "secrets.jwt_keys", list(doc.get("jwt_keys", {}))).items():
        try:
            key = crypto.b64url_decode(text)
        except (ValueError, TypeError):
            raise AuthConfigError("secrets.jwt_keys.%s: must be base64url" % kid)
        if len(key) < 32:
            raise AuthConfigError("secrets.jwt_keys.%s: at least 32 bytes for HS256" % kid)
        keys[kid] = key
    return keys, doc.get("introspection_client_secret", "")


def apply_auth(value, cfg):
    """config.py's handler for the section: builds cfg.gate and sets each route's policy."""
    try:
        _apply(value, cfg)
    except AuthError as e:
        raise AuthConfigError(e.message if e.message.startswith("auth") else "auth: " + e.message)


def _apply(value, cfg):
    a = _obj(value, "auth", AUTH_KEYS)
    jwt = _obj(a.get("jwt", {}), "auth.jwt", JWT_KEYS)
    lim = _obj(a.get("limits", {}), "auth.limits", LIMIT_KEYS)
    n = {}
    for k, (default, lo, hi) in LIMIT_DEFAULTS.items():
        n[k] = _int(lim.get(k, default), lo, hi, "auth.limits." + k)
    keys, client_secret = {}, ""
    if "secrets" in a:
        keys, client_secret = read_secrets(config_path(cfg.base_dir, _str(a["secrets"], "auth.secrets")))
    kid = _str(jwt.get("signing_kid"), "auth.jwt.signing_kid", True)
    if kid is not None and kid not in keys:
        raise AuthConfigError("auth.jwt.signing_kid: no key %r in the secrets file" % kid)
    if kid is None and len(keys) == 1:
        kid = list(keys)[0]
    mgr = AuthenticationManager(
        max_tokens=n["tokens"],
        max_api_keys=n["api_keys"],
        max_users=n["users"],
        max_revoked=n["revoked"],
        cache_entries=n["cache_entries"],
        cache_bytes=n["cache_bytes"],
        jwt_keys=keys,
        signing_kid=kid,
        issuer=_str(jwt.get("issuer"), "auth.jwt.issuer", True),
        audience=_str(jwt.get("audience"), "auth.jwt.audience", True),
        leeway_s=_int(jwt.get("leeway_s", 30), 0, 3600, "auth.jwt.leeway_s"),
        token_ttl_s=_int(jwt.get("ttl_s", 3600), 1, 30 * 86400, "auth.jwt.ttl_s"),
        max_token_len=_int(jwt.get("max_len", 2048), 128, 8192, "auth.jwt.max_len"),
        pbkdf2_iterations=_int(a.get("pbkdf2_iterations", 1000), 1, 1000000, "auth.pbkdf2_iterations"),
        state_path=config_path(cfg.base_dir, _str(a["state"], "auth.state")) if "state" in a else None,
    )
    users = a.get("users", [])
    if not isinstance(users, list):
        raise AuthConfigError("auth.users: must be an array")
    for i, u in enumerate(users):
        label = "auth.users[%d]" % i
        u = _obj(u, label, USER_KEYS)
        try:
            _str(u.get("name"), label + ".name")
            mgr.add_user_record(u)
        except AuthError as e:
            raise AuthConfigError("%s: %s" % (label, e.message))
    api_keys = a.get("api_keys", [])
    if not isinstance(api_keys, list):
        raise AuthConfigError("auth.api_keys: must be an array")
    for i, k in enumerate(api_keys):
        label = "auth.api_keys[%d]" % i
        k = _obj(k, label, KEY_KEYS)
        service = _str(k.get("service"), label + ".service", True)
        if service is not None and cfg.gateway.service_id(service) < 0:
            raise AuthConfigError("%s.service: unknown service %r" % (label, service))
        try:
            mgr.add_api_key_digest(
                k.get("id"),
                k.get("digest", ""),
                service,
                k.get("permissions", ["read"]),
                k.get("role", "service_account"),
            )
        except AuthError as e:
            raise AuthConfigError("%s: %s" % (label, e.message))
    introspector = None
    if "introspection" in a:
        introspector = _introspector(_obj(a["introspection"], "auth.introspection", INTROSPECTION_KEYS), client_secret)
    gate = AuthGate(mgr, n["buckets"], introspector, n["policies"])
    gate.gw = cfg.gateway
    policies = _obj(a.get("policies", {}), "auth.policies", list(a.get("policies", {})))
    for name, p in policies.items():
        label = "auth.policies." + name
        p = _obj(p, label, POLICY_KEYS)
        try:
            gate.add_policy(
                name, p.get("schemes", []), p.get("permissions"), p.get("rate", 0), p.get("burst", 0), p.get("per")
            )
        except AuthError as e:
            raise AuthConfigError("%s.%s" % (label, e.message))
    # /_gw/auth and other admin endpoints: any scheme the gateway knows, and the Admin permission.
    gate.admin_policy = gate.add_policy("_gw_admin", ["jwt", "api_key", "basic"], ["admin"])
    for rid, name, label in getattr(cfg, "route_policies", []):
        pid = gate.policy_id(name)
        if pid < 0:
            raise AuthConfigError("%s.policy: no policy %r in auth.policies" % (label, name))
        cfg.gateway.set_route_policy(rid, pid)
    mgr.load_state()
    from .authtypes import clock_s

    mgr.now = clock_s()  # the server's tick keeps it current from here
    cfg.gate = gate


def _introspector(d, client_secret):
    from .introspect import Introspector

    return Introspector(
        _str(d.get("host"), "auth.introspection.host") or "",
        _int(d.get("port", 80), 1, 65535, "auth.introspection.port"),
        _str(d.get("path", "/introspect"), "auth.introspection.path") or "/introspect",
        _str(d.get("client_id", ""), "auth.introspection.client_id", True) or "",
        client_secret,
        _int(d.get("timeout_ms", 2000), 10, 60000, "auth.introspection.timeout_ms"),
        _int(d.get("cache_entries", 32), 1, 1024, "auth.introspection.cache_entries"),
        _int(d.get("ttl_s", 60), 1, 86400, "auth.introspection.ttl_s"),
    )

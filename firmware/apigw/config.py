"""Reads gateway.json into an ApiGateway plus plain settings, one small piece at a time.

The loader never holds the whole document: a streaming splitter reads the file in 256-byte
chunks, tracks strings, escapes and nesting, and hands json.loads one top-level section, or one
element of the `services` / `routes` arrays, at a time. Pass 1 reads the small sections
(listen, limits, shell, registered extension sections) and notes where the two arrays start;
then the gateway is sized from `limits`; pass 2 registers services, pass 3 adds routes, so
services come first whatever their order in the file.

Every error is a ConfigError whose message starts with the path of the field at fault:
"routes[3].service: unknown service 'x'". Keys that start with "_" are comments (ignored).

This module owns reading and validating the file and the last-good copy; it must not keep the
parsed document, do network I/O, or know how routes are matched (gateway.py does).
"""

import json
import os

from .gateway import ApiGateway, GatewayError
from .settings import Config, Limits, Listen, ServiceDefaults, Shell

_CHUNK = 256
MAX_ELEMENT = 8192  # bytes of one section or array element
_MS = 3600000  # upper bound of any timeout: one hour


# Field ranges (name, lowest, highest); the type is the default's (bool, str or int).
LISTEN = (
    ("host", 0, 0),
    ("port", 1, 65535),
    ("slots", 1, 64),
    ("header_timeout_ms", 1, _MS),
    ("idle_timeout_ms", 1, _MS),
    ("queue_timeout_ms", 0, _MS),
    ("queue_max", 0, 1024),
    ("upstream_timeout_ms", 1, _MS),
    ("connect_timeout_ms", 1, _MS),
    ("shutdown_timeout_ms", 0, _MS),
    ("max_headers", 1, 255),
    ("request_buffer", 512, 65535),
    ("io_buffer", 128, 65535),
    ("tls_cert", 0, 0),
    ("tls_key", 0, 0),
)
LIMITS = (
    ("services", 1, 4096),
    ("routes", 1, 4096),
    ("strtab_bytes", 256, 1 << 20),
    ("strtab_entries", 0, 32000),
    ("header_conditions", 0, 8192),
)
SHELL = (("enabled", 0, 0), ("host", 0, 0), ("port", 1, 65535))
SCHEMAS = {"listen": (Listen, LISTEN), "limits": (Limits, LIMITS), "shell": (Shell, SHELL)}
SERVICE_KEYS = ("name", "host", "port", "pool", "timeout_ms", "keepalive", "resilience")
ARRAYS = ("services", "routes", "pools")  # top-level arrays read one element at a time
ROUTE_KEYS = (
    "path",
    "match",
    "methods",
    "headers",
    "service",
    "strip_prefix",
    "rewrite",
    "respond",
    "name",
    "policy",
    "transform",
    "resilience",
)

# Extension sections: name -> handler(value, config), called after routes are loaded.
SECTIONS = {}
# Sections whose code is loaded only when a config has them (authconfig, medconfig, lbconfig).
LAZY_SECTIONS = ("auth", "mediation", "balancer", "resilience", "monitoring")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field at fault."""


def register_section(name, handler):
    """Accept a top-level section `name`; handler(value, config) validates and applies it."""
    SECTIONS[name] = handler


# -- the streaming splitter -----------------------------------------------------------------------


def _members(stream, offset, obj, want, label):
    """Yield (key, text or None, start, first byte) for each member of the container at offset.

    obj: the container is an object (keys are str) or an array (keys are indexes). text is the
    member value's raw bytes when want(key) is true, else None (the value is skipped without
    being kept). Checks the container's own syntax; each value's inside is json.loads' job.
    """
    stream.seek(offset)
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    opening = 123 if obj else 91
    close = 125 if obj else 93
    acc = None  # value bytes being kept
    keybuf = bytearray()
    key = None
    index = 0
    depth = 0  # 0: before the opening bracket; 1: member level; >1: inside a member
    in_str = esc = comma = False
    phase = 0  # 0: member or close expected, 1: in a key, 2: ':' expected, 3: value expected, 4: in value
    start = first = 0
    pos = offset
    while True:
        n = stream.readinto(buf)
        if not n:
            raise ConfigError("%s: unexpected end of file at byte %d" % (label or "config", pos))
        cs = 0  # where kept bytes start in this chunk
        i = 0
        while i < n:
            c = buf[i]
            i += 1
            if in_str:
                if esc:
                    esc = False
                elif c == 92:
                    esc = True
                elif c == 34:
                    in_str = False
                    if phase == 1:
                        keybuf.append(34)
                        key = _loads(keybuf, label or "config", pos + i - 1)
                        phase = 2
                        continue
                if phase == 1:
                    keybuf.append(c)
                continue
            if c == 32 or c == 10 or c == 13 or c == 9:
                continue
            if depth == 0:
                if c != opening:
                    raise ConfigError("%s: must be a JSON %s" % (label or "config", "object" if obj else "array"))
                depth = 1
                continue
            if depth == 1:
                if phase == 4 and (c == 44 or c == close):
                    text = None
                    if acc is not None:
                        acc.extend(mv[cs : i - 1])
                        if len(acc) > MAX_ELEMENT:
                            raise ConfigError("%s: longer than %d bytes" % (_name(label, key), MAX_ELEMENT))
                        text = acc
                        acc = None
                    yield key, text, start, first
                    index += 1
                    if c == close:
                        if not obj:
                            return
                        _trailing(stream, buf, i, n, pos)
                        return
                    phase = 0
                    comma = True
                    continue
                if phase == 0 and c == close:
                    if comma:
                        raise ConfigError("%s: trailing comma at byte %d" % (label or "config", pos + i - 1))
                    if obj:
                        _trailing(stream, buf, i, n, pos)
                    return
                if phase == 0 and obj:
                    if c != 34:
                        raise ConfigError("%s: expected a key at byte %d" % (label or "config", pos + i - 1))
                    in_str = True
                    phase = 1
                    keybuf = bytearray(b'"')
                    continue
                if phase == 2:
                    if c != 58:
                        raise ConfigError("%s: expected ':' at byte %d" % (label or "config", pos + i - 1))
                    phase = 3
                    continue
                if phase == 0 or phase == 3:  # a value starts
                    if not obj:
                        key = index
                    phase = 4
                    comma = False
                    start = pos + i - 1
                    first = c
                    if want(key):
                        acc = bytearray()
                        cs = i - 1
            if c == 34:
                in_str = True
            elif c == 123 or c == 91:
                depth += 1
            elif c == 125 or c == 93:
                depth -= 1
                if depth < 1:
                    raise ConfigError("%s: unbalanced '%s' at byte %d" % (label or "config", chr(c), pos + i - 1))
        if acc is not None:
            acc.extend(mv[cs:n])
            if len(acc) > MAX_ELEMENT:
                raise ConfigError("%s: longer than %d bytes" % (_name(label, key), MAX_ELEMENT))
        pos += n


def _trailing(stream, buf, i, n, pos):
    """Only whitespace may follow the top-level object."""
    while True:
        while i < n:
            c = buf[i]
            if c != 32 and c != 10 and c != 13 and c != 9:
                raise ConfigError("config: unexpected data after the end at byte %d" % (pos + i))
            i += 1
        pos += n
        n = stream.readinto(buf)
        if not n:
            return
        i = 0


def _name(label, key):
    if type(key) is int:
        return "%s[%d]" % (label, key)
    return "%s.%s" % (label, key) if label else str(key)


def _loads(text, label, start):
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError("%s: invalid JSON near byte %d" % (label, start + getattr(e, "pos", 0)))


# -- validation -----------------------------------------------------------------------------------


def _check(value, default, lo, hi, label):
    if type(default) is bool:
        if type(value) is not bool:
            raise ConfigError("%s: must be true or false" % label)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError("%s: must be a string" % label)
    elif type(value) is not int or not lo <= value <= hi:
        raise ConfigError("%s: must be an integer %d-%d" % (label, lo, hi))
    return value


def _keys(d, label, known):
    if not isinstance(d, dict):
        raise ConfigError("%s: must be an object" % label)
    for k in d:
        if k not in known and not k.startswith("_"):
            raise ConfigError("%s.%s: unknown key" % (label, k))


def _section(name, value):
    cls, ranges = SCHEMAS[name]
    _keys(value, name, [f[0] for f in ranges])
    s = cls()
    for k, lo, hi in ranges:
        default = getattr(s, k)
        setattr(s, k, _check(value.get(k, default), default, lo, hi, name + "." + k))
    return s


def _gateway_error(e, label):
    msg = e.message
    where = "%s.%s" % (label, e.field) if e.field else label
    if msg.startswith("string table full"):
        return ConfigError("limits.strtab_bytes: %s, at %s" % (msg, where))
    return ConfigError("%s: %s" % (where, msg))


def _add_service(gw, d, label, defaults, pools, guarded):
    _keys(d, label, SERVICE_KEYS)
    pool = d.get("pool")  # instead of host and port (lbconfig checks it)
    for k in ("name",) if pool is not None else ("name", "host", "port"):
        if k not in d:
            raise ConfigError("%s.%s: required" % (label, k))
    name = _check(d["name"], "", 0, 0, label + ".name")
    host = _check(d["host"], "", 0, 0, label + ".host") if pool is None else None
    port = _check(d["port"], 1, 1, 65535, label + ".port") if pool is None else 0
    timeout = _check(d.get("timeout_ms", defaults.timeout_ms), 1, 1, _MS, label + ".timeout_ms")
    keep = _check(d.get("keepalive", defaults.keepalive), True, 0, 0, label + ".keepalive")
    try:
        sid = gw.register_service(name, host, port, timeout, keep, pool is not None)
    except GatewayError as e:
        raise _gateway_error(e, label)
    if pool is not None:
        pools.append((sid, pool, label, "host" in d or "port" in d))  # resolved by lbconfig
    if "resilience" in d:
        guarded.append(("s", sid, d["resilience"], label + ".resilience"))  # read by resconfig


def _add_route(gw, d, label, policies, transforms, guarded):
    _keys(d, label, ROUTE_KEYS)
    if "path" not in d:
        raise ConfigError("%s.path: required" % label)
    for k in ("path", "match", "service", "rewrite", "name", "policy", "transform"):
        if k in d:
            _check(d[k], "", 0, 0, label + "." + k)
    strip = _check(d.get("strip_prefix", False), False, 0, 0, label + ".strip_prefix")
    methods = d.get("methods")
    if methods is not None and methods != "*":
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ConfigError('%s.methods: must be a list of method names or "*"' % label)
    respond = d.get("respond")
    if isinstance(respond, dict) and "body" in respond and not isinstance(respond["body"], str):
        respond = dict(respond)  # a JSON body given as a value: encode it once, here
        respond["body"] = json.dumps(respond["body"])
        if "content_type" not in respond:
            respond["content_type"] = "application/json"
    try:
        rid = gw.add_route(
            d["path"],
            d.get("match", "prefix"),
            methods,
            d.get("headers"),
            d.get("service"),
            strip,
            d.get("rewrite"),
            respond,
            d.get("name"),
        )
    except GatewayError as e:
        raise _gateway_error(e, label)
    if "policy" in d:
        policies.append((rid, d["policy"], label))  # resolved by the auth section, read last
    if "transform" in d:
        transforms.append((rid, d["transform"], label))  # resolved by the mediation section
    if "resilience" in d:
        guarded.append(("r", rid, d["resilience"], label + ".resilience"))  # read by resconfig


def _board(d, cfg):
    """The `board` section: the Wi-Fi boards' settings. Checked here, so a typo fails the load;
    boards/common/wlan.py reads them from Config.extra["board"] (its DEFAULTS fill the gaps); the
    unix board ignores them."""
    _keys(d, "board", ("ap", "ntp_host", "watchdog_ms", "wifi_attempts", "ntp_retry_s"))
    if d.get("ap", "off") not in ("off", "fallback", "always"):
        raise ConfigError("board.ap: must be one of off, fallback, always")
    _check(d.get("ntp_host", ""), "", 0, 0, "board.ntp_host")
    wdt = d.get("watchdog_ms", 0)
    _check(wdt, 0, 0, _MS, "board.watchdog_ms")
    if 0 < wdt < 1000:
        raise ConfigError("board.watchdog_ms: must be 0 (off) or 1000-%d" % _MS)
    _check(d.get("wifi_attempts", 6), 0, 1, 100, "board.wifi_attempts")
    _check(d.get("ntp_retry_s", 60), 0, 10, 86400, "board.ntp_retry_s")


register_section("board", _board)


# -- loading --------------------------------------------------------------------------------------


def load_config_stream(stream, gateway=None, before_tables=None, base_dir=""):
    """Load from a seekable binary stream (a file opened "rb", io.BytesIO). Returns a Config.

    With a gateway given, services and routes are added to it (its own capacities apply and
    the limits section only sizes a gateway this function creates). before_tables(listen), if
    given, runs once the small sections are read and before any table is made: the place to
    allocate the slot buffers while the heap is still in one piece.
    """
    values = {}
    arrays = {}
    extra = {}
    for key, text, start, first in _members(stream, 0, True, _small_section, ""):
        if key.startswith("_"):
            continue
        if key in values or key in arrays or key in extra:
            raise ConfigError("%s: duplicate key" % key)
        if key in ARRAYS:
            if first != 91:
                raise ConfigError("%s: must be an array" % key)
            arrays[key] = start
        elif key in SCHEMAS:
            values[key] = _loads(text, key, start)
        elif key in SECTIONS or key in LAZY_SECTIONS:
            extra[key] = _loads(text, key, start)
        else:
            raise ConfigError("%s: unknown section" % key)
    listen = _section("listen", values.get("listen", {}))
    if listen.tls_cert or listen.tls_key:
        from .sectioncheck import tls_files  # only a TLS config loads the check

        tls_files(listen, base_dir)
    lim = _section("limits", values.get("limits", {}))
    shell = _section("shell", values.get("shell", {}))
    values = None
    if before_tables is not None:
        before_tables(listen)
    gw = gateway
    if gw is None:
        import gc

        gc.collect()  # the tables are the big allocation: give them an unfragmented heap
        gw = ApiGateway(lim.services, lim.routes, lim.strtab_bytes, lim.strtab_entries, lim.header_conditions)
    defaults = ServiceDefaults(listen.upstream_timeout_ms, True)
    cfg = Config(gw, listen, lim, shell, defaults)
    cfg.base_dir = base_dir
    if "services" in arrays:
        for i, text, start, first in _members(stream, arrays["services"], False, _all, "services"):
            if i >= gw.max_services:
                raise ConfigError("services: more than limits.services (%d)" % gw.max_services)
            label = "services[%d]" % i
            _add_service(gw, _loads(text, label, start), label, defaults, cfg.service_pools, cfg.resilience_items)
            defaults.count += 1
    if "routes" in arrays:
        for i, text, start, first in _members(stream, arrays["routes"], False, _all, "routes"):
            if i >= gw.max_routes:
                raise ConfigError("routes: more than limits.routes (%d)" % gw.max_routes)
            label = "routes[%d]" % i
            _add_route(
                gw, _loads(text, label, start), label, cfg.route_policies, cfg.route_transforms, cfg.resilience_items
            )
    for name in extra:
        if name in LAZY_SECTIONS:
            continue
        SECTIONS[name](extra[name], cfg)
        cfg.extra[name] = extra[name]
    if "auth" in extra:
        from .authconfig import apply_auth  # only a config with an auth section loads its code

        apply_auth(extra["auth"], cfg)
    elif cfg.route_policies:
        raise ConfigError("%s.policy: policies need an auth section" % cfg.route_policies[0][2])
    if "mediation" in extra:
        from .medconfig import apply_mediation  # only a config with the section loads its code

        apply_mediation(extra["mediation"], cfg)
    elif cfg.route_transforms:
        raise ConfigError("%s.transform: transforms need a mediation section" % cfg.route_transforms[0][2])
    if "pools" in arrays or "balancer" in extra or cfg.service_pools:
        from .lbconfig import apply_pools  # only a config with pools loads the balancer's code

        apply_pools(cfg, stream, arrays.get("pools"), extra.get("balancer"))
    if "resilience" in extra or cfg.resilience_items:
        from .resconfig import apply_resilience  # only a config with resilience settings loads it

        apply_resilience(cfg, extra.get("resilience"))
    if "monitoring" in extra:
        from .monconfig import apply_monitoring  # only a config with the section loads it

        apply_monitoring(cfg, extra["monitoring"])
    return cfg


def _small_section(key):
    return key not in ARRAYS


def _all(key):
    return True


def load_config(path, gateway=None, before_tables=None):
    """Load the config file at path. Raises ConfigError (bad content) or OSError (unreadable)."""
    f = open(path, "rb")
    try:
        return load_config_stream(f, gateway, before_tables, path[: path.rfind("/")] if "/" in path else "")
    finally:
        f.close()


def load_config_text(text, gateway=None):
    """Load from a str or bytes holding the whole document (tests, the shell)."""
    import io

    return load_config_stream(io.BytesIO(text.encode() if isinstance(text, str) else text), gateway)


def _same_file(a, b):
    """True when the files at a and b hold the same bytes (False when either cannot be read)."""
    try:
        if os.stat(a)[6] != os.stat(b)[6]:
            return False
        fa, fb = open(a, "rb"), open(b, "rb")
    except OSError:
        return False
    try:
        while True:
            x = fa.read(_CHUNK)
            if x != fb.read(_CHUNK):
                return False
            if not x:
                return True
    finally:
        fa.close()
        fb.close()


def save_last_good(path, good_path):
    """Copy path to good_path atomically: write good_path + ".tmp", then rename over it. Nothing is
    written when good_path already holds the same bytes (a board that boots often, in a reset
    loop say, does not wear its flash)."""
    if _same_file(path, good_path):
        return
    tmp = good_path + ".tmp"
    buf = bytearray(_CHUNK)
    mv = memoryview(buf)
    with open(path, "rb") as src:
        with open(tmp, "wb") as dst:
            while True:
                n = src.readinto(buf)
                if not n:
                    break
                dst.write(mv[:n])
    try:
        os.rename(tmp, good_path)
    except OSError:  # some filesystems will not rename over an existing file
        os.remove(good_path)
        os.rename(tmp, good_path)


def load_with_fallback(path, good_path, before_tables=None):
    """(Config, None) from path, saved as the last good copy; or, if path cannot be used,
    (Config from good_path, the ConfigError about path). Raises if both fail."""
    try:
        cfg = load_config(path, None, before_tables)
    except (ConfigError, OSError) as e:
        err = e if isinstance(e, ConfigError) else ConfigError("%s: cannot read (%s)" % (path, e))
        import gc

        gc.collect()  # the half-built gateway of the failed attempt
        try:
            cfg = load_config(good_path, None, before_tables)
        except (ConfigError, OSError) as e2:
            raise ConfigError("%s; last good %s failed too: %s" % (err, good_path, e2))
        return cfg, err
    try:
        save_last_good(path, good_path)
    except OSError:
        pass  # a read-only filesystem: keep running on the config just loaded
    return cfg, None

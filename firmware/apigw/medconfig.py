"""The `mediation` section of gateway.json: builds the RequestMediator and gives routes their transforms.

Owns: checking every field (errors name the field: mediation.transforms.reading.request.to), the
protobuf message definitions, compiling the schemas, the transforms, the response cache and the
mediation buffers' sizes. Must not run after boot: config.py imports it only when the section is
present, and main.py drops it with the loader.
"""

from .config import ConfigError
from .sectioncheck import check_int as _int
from .sectioncheck import check_object as _obj
from .mediator import ContentType, MediationError, RequestMediator, Transform

SECTION_KEYS = ("limits", "protobuf", "schemas", "transforms")
LIMIT_DEFAULTS = {
    "transforms": (256, 1, 256),
    "schemas": (128, 1, 128),
    "buffers": (2, 1, 16),
    "buffer_bytes": (8192, 512, 65536),
    "cache_entries": (16, 0, 1024),
    "cache_entry_bytes": (4096, 256, 65536),
}
TRANSFORM_KEYS = ("request", "response", "xml_root", "grpc", "cache", "timeout_ms", "retries")
REQUEST_KEYS = ("from", "to", "message", "schema", "rename", "drop", "headers")
RESPONSE_KEYS = ("from", "to", "message", "schema", "on_invalid", "rename", "drop", "headers", "status")
HEADER_KEYS = ("add", "remove", "rename")


def _names(value, label):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("%s: must be a list of strings" % label)
    return value


def _format(value, label):
    try:
        return ContentType.parse(value, label)
    except MediationError as e:
        raise ConfigError(e.message)


def _headers(value, label):
    """{"add": {name: value}, "remove": [names], "rename": {old: new}} -> (remove: lower-case
    names, add: header lines, rename: ((old lower-case, new), ...)), names as bytes."""
    h = _obj(value, label, HEADER_KEYS)
    remove = tuple(n.lower().encode() for n in _names(h.get("remove", []), label + ".remove"))
    rename = []
    for old, new in _obj(h.get("rename", {}), label + ".rename").items():
        if not isinstance(new, str) or not new or ":" in new or ":" in old or " " in new:
            raise ConfigError("%s.rename.%s: must be a header name" % (label, old))
        rename.append((old.lower().encode(), new.encode()))
    lines = []
    for name, v in _obj(h.get("add", {}), label + ".add").items():
        if not isinstance(v, str) or ":" in name or not name or "\r" in v or "\n" in v or "\r" in name or "\n" in name:
            raise ConfigError("%s.add.%s: a header name and a one-line string value" % (label, name))
        lines.append(name + ": " + v + "\r\n")
    return remove, "".join(lines).encode(), tuple(rename)


def _fields(d, label):
    rename = d.get("rename")
    if rename is not None:
        rename = _obj(rename, label + ".rename")
        for k, v in rename.items():
            if not isinstance(v, str):
                raise ConfigError("%s.rename.%s: must be a string" % (label, k))
    drop = tuple(_names(d.get("drop", []), label + ".drop"))
    return rename, drop


def _message(m, messages, label):
    if m is None:
        return None
    if not isinstance(m, str) or messages is None or not messages.has(m):
        raise ConfigError("%s: no protobuf message %r in mediation.protobuf" % (label, m))
    return m


def _schema(name, med, label):
    if name is None:
        return -1
    sid = med.schema_id(name) if isinstance(name, str) else -1
    if sid < 0:
        raise ConfigError("%s: no schema %r in mediation.schemas" % (label, name))
    return sid


def _transform(name, d, med, label):
    t = Transform(name)
    d = _obj(d, label, TRANSFORM_KEYS)
    msgs = med.messages
    if "xml_root" in d:
        if not isinstance(d["xml_root"], str) or not d["xml_root"]:
            raise ConfigError("%s.xml_root: must be an XML element name" % label)
        t.xml_root = d["xml_root"]
    if "request" in d:
        rl = label + ".request"
        r = _obj(d["request"], rl, REQUEST_KEYS)
        if "from" in r:
            t.req_from = tuple(_format(f, rl + ".from") for f in _names(r["from"], rl + ".from"))
        if "to" in r:
            t.req_to = _format(r["to"], rl + ".to")
        t.req_message = _message(r.get("message"), msgs, rl + ".message")
        t.req_schema = _schema(r.get("schema"), med, rl + ".schema")
        t.req_rename, t.req_drop = _fields(r, rl)
        t.req_headers_remove, t.req_headers_add, t.req_headers_rename = _headers(r.get("headers", {}), rl + ".headers")
        if (t.req_to == ContentType.PROTOBUF or ContentType.PROTOBUF in t.req_from) and t.req_message is None:
            raise ConfigError("%s.message: protobuf needs a message" % rl)
    if "response" in d:
        rl = label + ".response"
        r = _obj(d["response"], rl, RESPONSE_KEYS)
        if "from" in r:
            t.resp_from = _format(r["from"], rl + ".from")
        if "to" in r:
            t.resp_to = _format(r["to"], rl + ".to")
        t.resp_message = _message(r.get("message"), msgs, rl + ".message")
        t.resp_schema = _schema(r.get("schema"), med, rl + ".schema")
        inv = r.get("on_invalid", "502")
        if inv not in ("502", "warn"):
            raise ConfigError('%s.on_invalid: "502" or "warn"' % rl)
        t.resp_on_invalid = 502 if inv == "502" else 0
        t.resp_rename, t.resp_drop = _fields(r, rl)
        t.resp_headers_remove, t.resp_headers_add, t.resp_headers_rename = _headers(
            r.get("headers", {}), rl + ".headers"
        )
        if "status" in r:
            m = {}
            for k, v in _obj(r["status"], rl + ".status").items():
                if not k.isdigit() or not 100 <= int(k) <= 599 or type(v) is not int or not 100 <= v <= 599:
                    raise ConfigError("%s.status.%s: map a status (100-599) to a status" % (rl, k))
                m[int(k)] = v
            t.status_map = m
        if (t.resp_to == ContentType.PROTOBUF or t.resp_from == ContentType.PROTOBUF) and t.resp_message is None:
            raise ConfigError("%s.message: protobuf needs a message" % rl)
    if "grpc" in d:
        g = d["grpc"]
        if not isinstance(g, str) or g.count("/") != 1 or g.startswith("/") or g.endswith("/") or " " in g:
            raise ConfigError('%s.grpc: "package.Service/Method"' % label)
        if t.req_message is None or t.resp_message is None:
            raise ConfigError("%s.grpc: needs request.message and response.message" % label)
        t.grpc = ("/" + g).encode()
        t.req_to = ContentType.PROTOBUF
        if not t.req_from:
            t.req_from = (ContentType.JSON,)
        t.resp_from = ContentType.PROTOBUF
    if "cache" in d:
        c = _obj(d["cache"], label + ".cache", ("ttl_s", "vary"))
        ttl = _int(c.get("ttl_s", 0), 1, 86400, label + ".cache.ttl_s")
        t.policy.cache_ttl = ttl
        t.cache_vary = tuple(v.lower() for v in _names(c.get("vary", []), label + ".cache.vary"))
    if "timeout_ms" in d:
        t.policy.timeout = _int(d["timeout_ms"], 1, 600000, label + ".timeout_ms")
    if "retries" in d:
        t.policy.retry_count = _int(d["retries"], 0, 10, label + ".retries")
    return t


def apply_mediation(value, cfg):
    """config.py's handler for the section: builds cfg.mediator and sets each route's transform."""
    m = _obj(value, "mediation", SECTION_KEYS)
    lim = _obj(m.get("limits", {}), "mediation.limits", tuple(LIMIT_DEFAULTS))
    n = {}
    for k, (default, lo, hi) in LIMIT_DEFAULTS.items():
        n[k] = _int(lim.get(k, default), lo, hi, "mediation.limits." + k)
    messages = None
    if "protobuf" in m:
        from .protobuf import MessageSet, ProtoError

        try:
            messages = MessageSet(_obj(m["protobuf"], "mediation.protobuf", ("messages", "enums")))
        except ProtoError as e:
            raise ConfigError("mediation.protobuf%s: %s" % ("." + e.path if e.path else "", e.message))
    med = RequestMediator(n["transforms"], n["schemas"], messages)
    for name, doc in _obj(m.get("schemas", {}), "mediation.schemas").items():
        try:
            med.register_schema(name, doc)
        except MediationError as e:
            raise ConfigError(
                "mediation.schemas.%s%s" % (name, e.message[6:] if e.message.startswith("(root)") else e.message)
            )
    for name, d in _obj(m.get("transforms", {}), "mediation.transforms").items():
        try:
            med.register_transform(_transform(name, d, med, "mediation.transforms." + name))
        except MediationError as e:
            raise ConfigError("mediation.transforms.%s: %s" % (name, e.message))
    if n["cache_entries"] and any(t.policy.cache_ttl for t in med.transforms):
        med.enable_cache(n["cache_entries"], n["cache_entry_bytes"])
    for rid, name, label in getattr(cfg, "route_transforms", []):
        tid = med.transform_id(name)
        if tid < 0:
            raise ConfigError("%s.transform: no transform %r in mediation.transforms" % (label, name))
        cfg.gateway.set_route_transform(rid, tid)
    med.buffers = n["buffers"]
    med.buffer_bytes = n["buffer_bytes"]
    cfg.mediator = med

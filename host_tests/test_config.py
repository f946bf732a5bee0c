"""Portable tests for config.py: good configs, every kind of error message, the streaming
loader on a generated 256-service / 512-route file, and the last-good fallback.

On MicroPython the runner caps the heap (make test: -X heapsize=512k); the generated file is
written piece by piece and is larger than what a whole-document parse could hold next to the
tables, so loading it at all shows the loader works element by element.
"""

import gc
import json
import os

from apigw.config import (
    MAX_ELEMENT,
    SECTIONS,
    ConfigError,
    load_config,
    load_config_stream,
    load_config_text,
    load_with_fallback,
    register_section,
    save_last_good,
)
from apigw.gateway import ApiGateway
from check import raises, requires_micropython

SVC = '"services": [{"name": "a", "host": "127.0.0.1", "port": 9001}, {"name": "b", "host": "h", "port": 2}]'


SMALL = '"limits": {"services": 4, "routes": 8, "strtab_bytes": 1024}'


def _doc(routes, extra=", " + SMALL):
    """Two services and the given routes; small tables keep the capped test heap free."""
    return '{%s, "routes": [%s]%s}' % (SVC, ", ".join(routes), extra)


def _err(text):
    return str(raises(ConfigError, load_config_text, text))


def _tmpdir():
    try:
        import tempfile

        return tempfile.mkdtemp()
    except ImportError:
        import time

        d = "/tmp/apigw_test_%d" % time.ticks_us()  # type: ignore[attr-defined]
        os.mkdir(d)
        return d


def _rmtree(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_defaults_from_empty_document():
    cfg = load_config_text("{}")
    assert cfg.listen.host == "0.0.0.0" and cfg.listen.port == 8080 and cfg.listen.slots == 4
    assert cfg.listen.header_timeout_ms == 5000 and cfg.listen.idle_timeout_ms == 5000
    assert cfg.listen.queue_timeout_ms == 2000 and cfg.listen.queue_max == 8
    assert cfg.listen.upstream_timeout_ms == 10000 and cfg.listen.connect_timeout_ms == 3000
    assert cfg.listen.shutdown_timeout_ms == 5000 and cfg.listen.max_headers == 32
    assert cfg.listen.request_buffer == 8192 and cfg.listen.io_buffer == 2048
    assert cfg.limits.services == 256 and cfg.limits.routes == 512 and cfg.limits.strtab_bytes == 16384
    assert cfg.shell.enabled is False and cfg.shell.host == "127.0.0.1" and cfg.shell.port == 8023
    assert cfg.services.count == 0 and cfg.services.timeout_ms == 10000
    gw = cfg.gateway
    assert gw.max_services == 256 and gw.max_routes == 512 and gw.get_route_count() == 0


def test_sections_in_any_order_and_comments():
    text = """{"routes": [{"path": "/x", "service": "late", "_note": "services load first"}],
        "_comment": ["ignored", {"}": "]"}],
        "shell": {"enabled": true, "port": 2323},
        "services": [{"name": "late", "host": "h", "port": 1, "keepalive": false, "timeout_ms": 50}],
        "limits": {"services": 2, "routes": 3, "strtab_bytes": 512, "_why": "small board"},
        "listen": {"port": 8081, "upstream_timeout_ms": 777}}"""
    cfg = load_config_text(text)
    gw = cfg.gateway
    assert gw.max_services == 2 and gw.max_routes == 3 and gw.strtab.max_bytes == 512
    assert cfg.shell.enabled and cfg.shell.port == 2323 and cfg.listen.port == 8081
    s = gw.get_service("late")
    assert s.keepalive is False and s.timeout_ms == 50 and gw.route("GET", "/x")[0] == 0
    cfg = load_config_text('{"listen": {"upstream_timeout_ms": 777}, ' + _doc([])[1:])
    assert cfg.gateway.get_service("a").timeout_ms == 777 and cfg.services.count == 2


def test_strings_with_brackets_escapes_and_unicode():
    routes = [
        '{"path": "/x", "respond": {"body": "a ] } , \\" [ { \\\\ end", "content_type": "text/plain"}}',
        '{"\\u0070ath": "/y", "service": "a", "name": "caf\\u00e9 \\"q\\""}',
        '{"path": "/j", "respond": {"body": {"ok": true, "list": [1, "]"]}}}',
    ]
    gw = load_config_text(_doc(routes)).gateway
    assert gw.respond_parts(0)[2] == b'a ] } , " [ { \\ end'
    assert gw.get_route(1)["name"] == 'caf\u00e9 "q"' and gw.route_id('caf\u00e9 "q"') == 1
    status, ctype, body = gw.respond_parts(2)
    assert ctype == b"application/json" and json.loads(body) == {"ok": True, "list": [1, "]"]}


ERRORS = (
    # (document, exact message or (prefix, part of the rest))
    (
        _doc(['{"path": "/1", "service": "a"}'] * 3 + ['{"path": "/x", "service": "x"}']),
        "routes[3].service: unknown service 'x'",
    ),
    ('{"listen": {"port": 0}}', "listen.port: must be an integer 1-65535"),
    ('{"listen": {"port": "80"}}', "listen.port: must be an integer 1-65535"),
    ('{"listen": {"port": true}}', "listen.port: must be an integer 1-65535"),
    ('{"listen": {"slots": 65}}', "listen.slots: must be an integer 1-64"),
    ('{"listen": {"host": 5}}', "listen.host: must be a string"),
    ('{"listen": {"prot": 80}}', "listen.prot: unknown key"),
    ('{"listen": []}', "listen: must be an object"),
    ('{"shell": {"enabled": "yes"}}', "shell.enabled: must be true or false"),
    ('{"limits": {"routes": 0}}', "limits.routes: must be an integer 1-4096"),
    ('{"bogus": {}}', "bogus: unknown section"),
    ('{"listen": {}, "listen": {}}', "listen: duplicate key"),
    ('{"services": {}}', "services: must be an array"),
    ("[1]", "config: must be a JSON object"),
    (
        _doc(['{"path": "/x", "match": "glob", "service": "a"}']),
        "routes[0].match: must be one of exact, prefix, wildcard, regex",
    ),
    (_doc(['{"path": "/x", "servce": "a"}']), "routes[0].servce: unknown key"),
    ('{%s, "services": [{"name": "a", "host": "h", "port": 1, "x": 1}]}' % SMALL, "services[0].x: unknown key"),
    ('{%s, "services": [{"name": "a", "host": "h"}]}' % SMALL, "services[0].port: required"),
    (
        '{%s, "services": [{"name": "a", "host": "h", "port": 70000}]}' % SMALL,
        "services[0].port: must be an integer 1-65535",
    ),
    (
        '{%s, "services": [{"name": "a", "host": "h", "port": 1}, {"name": "a", "host": "h", "port": 2}]}' % SMALL,
        "services[1].name: service 'a' already registered",
    ),
    (
        '{%s, "services": [{"name": "a", "host": "h", "port": 1, "keepalive": 1}]}' % SMALL,
        "services[0].keepalive: must be true or false",
    ),
    ('{%s, "services": [1]}' % SMALL, "services[0]: must be an object"),
    (_doc(['{"service": "a"}']), "routes[0].path: required"),
    (_doc(['{"path": 5, "service": "a"}']), "routes[0].path: must be a string"),
    (_doc(['{"path": "^/(x", "match": "regex", "service": "a"}']), ("routes[0].path: regex does not compile", "")),
    (
        _doc(['{"path": "/x", "methods": ["GET", "FETCH"], "service": "a"}']),
        ("routes[0].methods: unknown method 'FETCH'", ""),
    ),
    (_doc(['{"path": "/x", "methods": "GET", "service": "a"}']), ("routes[0].methods: must be a list", "")),
    (_doc(['{"path": "/x", "respond": {"status": 600}}']), "routes[0].respond.status: must be an integer 100-599"),
    (
        _doc(['{"path": "/x", "respond": {"status": 200, "body": "x", "type": "y"}}']),
        "routes[0].respond.type: unknown key",
    ),
    (_doc(['{"path": "/x"}']), "routes[0].service: needs exactly one of service or respond"),
    (
        _doc(
            ['{"path": "/a", "service": "a"}', '{"path": "/b", "service": "a"}', '{"path": "/_gw/x", "service": "a"}']
        ),
        "routes[2].path: /_gw/ is reserved for the gateway",
    ),
    (_doc(['{"path": "/a", "service": "a", "strip_prefix": "yes"}']), "routes[0].strip_prefix: must be true or false"),
    (
        _doc(['{"path": "/a", "service": "a", "name": "n"}', '{"path": "/b", "service": "a", "name": "n"}']),
        "routes[1].name: route name 'n' already used",
    ),
    (
        _doc(['{"path": "/x", "service": "a"}'] * 3, ', "limits": {"routes": 2, "services": 4, "strtab_bytes": 1024}'),
        "routes: more than limits.routes (2)",
    ),
    ('{"limits": {"services": 1, "routes": 8}, ' + SVC + "}", "services: more than limits.services (1)"),
    (
        _doc(
            ['{"path": "/' + "x" * 300 + '", "service": "a"}'],
            ', "limits": {"strtab_bytes": 256, "services": 4, "routes": 8}',
        ),
        "limits.strtab_bytes: string table full (256 bytes), at routes[0].path",
    ),
    # JSON syntax: the splitter's own checks, then json.loads on one element.
    ('{"listen" {}}', "config: expected ':' at byte 10"),
    ('{"listen": {}, }', "config: trailing comma at byte 15"),
    ('{"listen": {}', "config: unexpected end of file at byte 13"),
    ('{"listen": {}} x', "config: unexpected data after the end at byte 15"),
    ("{listen: 1}", "config: expected a key at byte 1"),
    ('{"listen": {}]', "config: unbalanced ']' at byte 13"),
    ('{"services": [{"name": "a", "host": "h", "port": 1}', "config: unexpected end of file at byte 51"),
    (_doc(['{"path": /x}']), ("routes[0]: invalid JSON near byte ", "")),
    ('{"listen": {"port": tru}}', ("listen: invalid JSON near byte ", "")),
)


def test_error_messages():
    for text, want in ERRORS:
        got = _err(text)
        if isinstance(want, tuple):
            assert got.startswith(want[0]) and want[1] in got, (text, got)
        else:
            assert got == want, (text, got, want)


def test_invalid_json_offset_points_into_the_element():
    text = _doc(['{"path": "/ok", "service": "a"}', '{"path": /x}'])
    got = _err(text)
    n = int(got.rsplit(" ", 1)[1])
    assert got.startswith("routes[1]: invalid JSON near byte ")
    assert text.index('{"path": /x}') <= n < len(text)


def test_element_too_long():
    body = "x" * (MAX_ELEMENT + 10)
    got = _err(_doc(['{"path": "/x", "respond": {"body": "%s"}}' % body]))
    assert got == "routes[0]: longer than %d bytes" % MAX_ELEMENT


def test_extension_section():
    seen = []

    def handler(value, cfg):
        if not isinstance(value, dict) or "keys" not in value:
            raise ConfigError("metrics.keys: required")
        seen.append((value, cfg.gateway.get_route_count()))

    register_section("metrics", handler)
    try:
        cfg = load_config_text('{"metrics": {"keys": 3}, ' + _doc(['{"path": "/", "service": "a"}'])[1:])
        assert seen == [({"keys": 3}, 1)] and cfg.extra["metrics"] == {"keys": 3}
        assert _err('{"metrics": {}, %s}' % SMALL) == "metrics.keys: required"
    finally:
        del SECTIONS["metrics"]
    assert _err('{"metrics": {}}') == "metrics: unknown section"


def test_route_policy_needs_an_auth_section():
    got = _err(_doc(['{"path": "/", "service": "a", "policy": "p"}']))
    assert got == "routes[0].policy: policies need an auth section", got


def test_auth_section_errors_name_the_field():
    for auth, want in (
        ('{"jwt": {"ttl_s": 0}}', "auth.jwt.ttl_s: must be an integer 1-2592000"),
        ('{"limits": {"tokens": "x"}}', "auth.limits.tokens: must be an integer 1-4096"),
        (
            '{"policies": {"p": {"rate": -1}}}',
            "auth.policies.p.rate: must be an integer 0-100000 (requests per second)",
        ),
        (
            '{"policies": {"p": {"schemes": ["magic"]}}}',
            "auth.policies.p.schemes: unknown scheme 'magic' (jwt, api_key, basic, bearer)",
        ),
        (
            '{"users": [{"name": "a", "role": "king"}]}',
            "auth.users[0]: role: must be one of admin, service_account, user, guest",
        ),
        ('{"api_keys": [{"id": "xyz", "digest": ""}]}', "auth.api_keys[0]: id: must be 8 lower-case hex characters"),
        ('{"secrets": "no-such-file.json"}', "auth.secrets: no file no-such-file.json"),
        (
            '{"bogus": 1}',
            "auth.bogus: unknown key (known: secrets, state, jwt, limits, pbkdf2_iterations, users, api_keys, introspection, policies)",
        ),
    ):
        got = _err('{"auth": %s, %s}' % (auth, SMALL))
        assert got == want, (auth, got)
    got = _err('{"auth": {"policies": {}}, %s' % _doc(['{"path": "/", "service": "a", "policy": "p"}'])[1:])
    assert got == "routes[0].policy: no policy 'p' in auth.policies", got


def test_load_into_given_gateway_and_stream():
    import io

    gw = ApiGateway(max_services=4, max_routes=4, strtab_bytes=512)
    cfg = load_config_stream(io.BytesIO(_doc(['{"path": "/x", "service": "b"}']).encode()), gw)
    assert cfg.gateway is gw and gw.get_route_count() == 1 and gw.max_routes == 4


def _big_config(path, services=256, routes=512, special=64):
    """Write a config of `services` services and `routes` mixed routes, piece by piece.

    One route in 8 of each kind; regex and respond routes only for the first `special` of
    their turns (prefix routes after that)."""
    with open(path, "w") as f:
        f.write(
            '{"listen": {"port": 8080, "slots": 4},\n "limits": {"services": %d, "routes": %d},\n'
            ' "services": [\n' % (services, routes)
        )
        for i in range(services):
            f.write(
                '  %s{"name": "svc%d", "host": "10.%d.%d.%d", "port": %d, "timeout_ms": %d}\n'
                % ("," if i else "", i, i // 65536, (i // 256) % 256, i % 256, 8000 + i, 1000 + i)
            )
        f.write(' ],\n "routes": [\n')
        for i in range(routes):
            s = i % services
            k = i % 8
            if k == 0:
                r = '{"path": "/api/svc%d/items", "service": "svc%d", "strip_prefix": true, "name": "r%d"}' % (i, s, i)
            elif k == 1:
                r = '{"path": "/static/p%d", "match": "exact", "methods": ["GET", "HEAD"], "service": "svc%d"}' % (i, s)
            elif k == 2:
                r = '{"path": "/dev/%d/*/status", "match": "wildcard", "service": "svc%d"}' % (i, s)
            elif k == 3:
                r = '{"path": "/api/v%d", "headers": {"X-Api-Version": "%d"}, "service": "svc%d"}' % (i, i, s)
            elif k == 4:
                r = '{"path": "/files/%d/**", "match": "wildcard", "service": "svc%d", "rewrite": "/f"}' % (i, s)
            elif k in (5, 6) and i // 8 >= special:
                r = '{"path": "/more/%d", "service": "svc%d"}' % (i, s)
            elif k == 5:
                r = '{"path": "^/legacy/%d/[0-9]+$", "match": "regex", "service": "svc%d"}' % (i, s)
            elif k == 6:
                r = '{"path": "/info/%d", "match": "exact", "respond": {"status": 200, "body": {"route": %d}}}' % (i, i)
            else:
                r = '{"path": "/admin/%d", "methods": ["POST"], "service": "svc%d", "rewrite": "/v1/admin"}' % (i, s)
            f.write("  %s%s\n" % ("," if i else "", r))
        f.write(" ]\n}\n")


def test_streaming_loader_256_services_512_routes():
    d = _tmpdir()
    path = d + "/big.json"
    try:
        _big_config(path)
        size = os.stat(path)[6]
        assert size > 60000  # far more than a whole-document parse could keep next to the tables
        gc.collect()
        cfg = load_config(path)
        gw = cfg.gateway
        assert gw.get_service_count() == 256 and gw.get_route_count() == 512 and cfg.services.count == 256
        assert gw.get_service("svc255").port == 8255 and gw.get_service("svc3").timeout_ms == 1003
        r, allow = gw.route("GET", "/api/svc8/items/x")
        assert r == gw.route_id("r8") and gw.dispatch_request(gw._scratch) == 8
        assert gw.upstream_path(gw._scratch) == b"/x"
        assert gw.route("GET", "/api/v11", {"x-api-version": "11"})[0] >= 0
        assert gw.route("GET", "/legacy/13/99")[0] >= 0
        assert gw.route("GET", "/admin/15") == (-405, 4)
        assert gw.respond_parts(gw.route("GET", "/info/510")[0])[2] == b'{"route": 510}'
    finally:
        _rmtree(d)


def test_loader_needs_little_heap_beside_the_tables():
    """With the tables made first and only 48 KB of heap left free, the 256/512 file
    (64 regex and 64 respond routes among them) still loads: the chunk buffer, one element's
    text and parsed value, and what the routes keep (compiled regexes, respond bodies: about
    15 KB here) all fit in that headroom."""
    requires_micropython()
    headroom = 48 * 1024
    d = _tmpdir()
    path = d + "/big.json"
    gc.collect()
    ballast = [None] * (gc.mem_free() // 240 + 64)  # made first, big enough: growing it would leave holes
    try:
        _big_config(path)
        gw = ApiGateway()
        gc.collect()
        n = 0
        while gc.mem_free() > headroom and n < len(ballast):
            ballast[n] = bytearray(240)
            n += 1
        gc.collect()
        free = gc.mem_free()
        cfg = load_config(path, gw)
        assert free <= headroom and gw.get_route_count() == 512 and cfg.services.count == 256
    finally:
        ballast = None
        _rmtree(d)


def test_last_good_fallback():
    d = _tmpdir()
    path = d + "/gateway.json"
    good = d + "/gateway.good.json"
    try:
        _write(path, _doc(['{"path": "/v1", "service": "a"}']))
        cfg, err = load_with_fallback(path, good)
        assert err is None and cfg.gateway.get_route_count() == 1
        with open(good) as f:
            assert f.read() == _doc(['{"path": "/v1", "service": "a"}'])
        _write(path, _doc(['{"path": "/v2", "service": "nope"}']))  # a bad edit
        cfg, err = load_with_fallback(path, good)
        assert isinstance(err, ConfigError) and str(err) == "routes[0].service: unknown service 'nope'"
        assert cfg.gateway.route("GET", "/v1")[0] == 0 and cfg.gateway.route("GET", "/v2")[0] == -404
        os.remove(path)
        cfg, err = load_with_fallback(path, good)  # unreadable file: the last good copy again
        assert str(err).startswith(path + ": cannot read") and cfg.gateway.get_route_count() == 1
        _write(path, "{")
        _write(good, "[")
        e = raises(ConfigError, load_with_fallback, path, good)
        assert "config: unexpected end of file" in str(e) and "last good" in str(e)
        assert sorted(os.listdir(d)) == ["gateway.good.json", "gateway.json"]  # no .tmp left
    finally:
        _rmtree(d)


def test_save_last_good_replaces():
    d = _tmpdir()
    try:
        _write(d + "/a.json", "new " * 200)
        _write(d + "/good.json", "old")
        save_last_good(d + "/a.json", d + "/good.json")
        with open(d + "/good.json") as f:
            assert f.read() == "new " * 200
        assert sorted(os.listdir(d)) == ["a.json", "good.json"]
        # The same bytes again: nothing is written (a board in a reset loop does not wear its
        # flash). A write would go through good.json.tmp: a folder of that name makes it fail.
        os.mkdir(d + "/good.json.tmp")
        save_last_good(d + "/a.json", d + "/good.json")
        _write(d + "/a.json", "new " * 199 + "nex ")  # same size, other bytes: written
        raises(OSError, save_last_good, d + "/a.json", d + "/good.json")
        os.rmdir(d + "/good.json.tmp")
    finally:
        _rmtree(d)


def test_one_secrets_file_holds_the_wifi_credentials_and_the_jwt_keys():
    """The board's secrets.json: "wifi" and "ap" are the board module's, allowed beside the keys;
    anything else is still refused by name."""
    from apigw.authconfig import read_secrets
    from apigw.store import write_json

    path = "config_test_secrets.json"
    key = "c2VjcmV0LWtleS1vZi1hdC1sZWFzdC0zMi1ieXRlcy0hIQ"
    try:
        write_json(path, {"jwt_keys": {"k1": key}, "wifi": {"ssid": "lan", "password": "pw"}, "ap": {}})
        keys, secret = read_secrets(path)
        assert list(keys) == ["k1"] and secret == ""
        write_json(path, {"jwt_keys": {}, "wlan": {}})
        err = None
        try:
            read_secrets(path)
        except ValueError as e:
            err = str(e)
        assert err is not None and err.startswith("secrets.wlan: unknown key"), err
    finally:
        import os

        os.remove(path)

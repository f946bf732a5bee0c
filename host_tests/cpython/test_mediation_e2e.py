"""End to end, the mediation stage: the firmware on the unix port with a `mediation` section, real
clients (http.client, raw sockets, curl), the demo upstreams and a small upstream of this module.

JSON -> XML and form <-> JSON request bodies as the service sees them (xml.etree, urllib.parse),
answers converted back by response.to or the client's Accept, header and field rules, schema
refusals (422 with the JSON pointer and keyword, 415, 400), JSON -> protobuf checked with Google's
protobuf both ways, the response cache (MISS/HIT, Age, HEAD, query, no-store, ttl, purge from the
shell, Authorization), status maps, an answer larger than mediation.limits.buffer_bytes, and the
shell's `mediator` command. Every error answer is checked for the one shape of errors.py.
"""

import importlib
import json
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import demo_upstreams
import pytest
from google.protobuf import json_format

# -- the config -----------------------------------------------------------------------------------

PROTO = """syntax = "proto3";
package medtest;
message Reading { string sensor = 1; double value = 2; repeated string tags = 3; int64 seq = 4; }
message Ack { bool ok = 1; int64 count = 2; string sensor = 3; repeated sint32 codes = 4; }
"""


def fields(*specs):
    """A message definition of mediation.protobuf: (name, type[, repeated]) numbered from 1."""
    out = {}
    for n, spec in enumerate(specs, 1):
        out[spec[0]] = {"number": n, "type": spec[1], "repeated": len(spec) > 2}
    return {"fields": out}


MEDIATION = {
    "limits": {"buffers": 2, "buffer_bytes": 8192, "cache_entries": 8, "cache_entry_bytes": 4096},
    "protobuf": {
        "messages": {
            "medtest.Reading": fields(
                ("sensor", "string"), ("value", "double"), ("tags", "string", 1), ("seq", "int64")
            ),
            "medtest.Ack": fields(("ok", "bool"), ("count", "int64"), ("sensor", "string"), ("codes", "sint32", 1)),
        }
    },
    "schemas": {
        "reading": {
            "type": "object",
            "required": ["sensor", "value"],
            "properties": {"sensor": {"type": "string", "minLength": 1}, "value": {"type": "number", "maximum": 100}},
        }
    },
    "transforms": {
        "xml-out": {
            "request": {
                "to": "xml",
                "rename": {"sensor": "name"},
                "drop": ["secret"],
                "headers": {"add": {"X-Mediated": "yes"}, "remove": ["X-Remove-Me"], "rename": {"X-Old": "X-New"}},
            },
            "response": {"drop": ["raw_headers"], "headers": {"rename": {"Server": "X-Upstream-Server"}}},
            "xml_root": "reading",
        },
        "xml-fixed": {"request": {"to": "xml"}, "response": {"to": "xml", "drop": ["raw_headers"]}},
        "form-in": {"request": {"from": ["form"], "to": "json"}},
        "form-out": {"request": {"from": ["json"], "to": "form"}},
        "validated": {"request": {"from": ["json"], "schema": "reading"}},
        "to-proto": {
            "request": {"from": ["json"], "to": "protobuf", "message": "medtest.Reading"},
            "response": {"from": "protobuf", "message": "medtest.Ack"},
        },
        "cached": {"cache": {"ttl_s": 30}},
        "short": {"cache": {"ttl_s": 1}},
        "status-map": {"response": {"status": {"404": 200}}},
    },
}

ROUTES = [
    {"name": "m-xml", "path": "/m/xml", "service": "controller", "transform": "xml-out"},
    {"name": "m-xml-fixed", "path": "/m/xml-fixed", "service": "controller", "transform": "xml-fixed"},
    {"name": "m-form-in", "path": "/m/form-in", "service": "controller", "transform": "form-in"},
    {"name": "m-form-out", "path": "/m/form-out", "service": "controller", "transform": "form-out"},
    {"name": "m-valid", "path": "/m/valid", "service": "controller", "transform": "validated"},
    {"name": "m-proto", "path": "/m/proto", "service": "lab", "transform": "to-proto"},
    {"name": "m-cache", "path": "/m/cache", "service": "lab", "transform": "cached"},
    {"name": "m-short", "path": "/m/short", "service": "lab", "transform": "short"},
    {"name": "m-mapped", "path": "/m/mapped", "service": "controller", "rewrite": "/status", "transform": "status-map"},
    {"name": "m-big", "path": "/m/big", "service": "controller", "rewrite": "/big", "transform": "status-map"},
    {"name": "m-maplab", "path": "/m/maplab", "service": "lab", "transform": "status-map"},
]

JSON_CT = {"Content-Type": "application/json"}

# -- helpers --------------------------------------------------------------------------------------


def error_of(status, headers, body, want_status, code, message=None):
    """The error document of an answer, checked: the status, application/json, exactly the keys
    status, error, message (errors.py), and the code (and message, when given)."""
    assert status == want_status, (status, body)
    assert headers["Content-Type"] == "application/json", headers
    doc = json.loads(body)
    assert sorted(doc) == ["error", "message", "status"], doc
    assert doc["status"] == want_status and doc["error"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"], doc
    if message is not None:
        assert doc["message"] == message, doc
    return doc


def post_json(gw, path, value, headers=None):
    return gw.request("POST", path, body=json.dumps(value), headers=dict(JSON_CT, **(headers or {})))


def curl(e2e, gw, path, *args):
    """curl -i: (status, {lower-case name: value}, body bytes) of the final response."""
    url = "http://127.0.0.1:%d%s" % (gw.port, path)
    p = subprocess.run([e2e.curl_exe(), "-sS", "-i", "--max-time", "10", *args, url], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


def shell(port, line):
    """One command on the gateway's TCP shell: its output (the text before the next prompt)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for cmd in (b"", line.encode() + b"\n"):  # the greeting's prompt, then the command's
            s.sendall(cmd)
            data = b""
            while not data.endswith(b"apigw> "):
                chunk = s.recv(4096)
                assert chunk, "shell closed after %r" % data
                data += chunk
    return data[:-7].decode().strip()


class LabHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        lab = self.server
        with lab.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            lab.seen.append({"method": self.command, "target": self.path, "headers": headers, "body": body})
            hits = sum(1 for r in lab.seen if r["target"] == self.path)
            answer = lab.answers.get(self.path.split("?")[0])
        if answer is None:
            doc = {"target": self.path, "n": hits}
            answer = (200, [("Content-Type", "application/json")], json.dumps(doc).encode())
        status, headers, out = answer
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_HEAD = _any


class Lab(ThreadingHTTPServer):
    """An upstream of this module (HTTP/1.1, keep-alive): records every request; answers what a test
    set for the path in .answers, else JSON {"target", "n": requests for that target so far}."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), LabHandler)
        self.lock = threading.Lock()
        self.seen = []
        self.answers = {}  # path -> (status, [(name, value)], body)

    @property
    def port(self):
        return self.server_address[1]

    def hits(self, target):
        with self.lock:
            return sum(1 for r in self.seen if r["target"] == target)

    def last(self, target):
        with self.lock:
            return [r for r in self.seen if r["target"] == target][-1]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    server = Lab()
    t = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """medtest_pb2, compiled from PROTO with grpc_tools.protoc."""
    d = tmp_path_factory.mktemp("medproto")
    (d / "medtest.proto").write_text(PROTO)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(d), "--python_out", str(d), "medtest.proto"]
    subprocess.run(cmd, check=True)
    sys.path.insert(0, str(d))
    try:
        return importlib.import_module("medtest_pb2")
    finally:
        sys.path.remove(str(d))


@pytest.fixture(scope="module")
def gw(e2e, upstreams, lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mediation")
    cfg = e2e.e2e_config(upstreams, e2e.free_port(), shell_port=e2e.free_port())
    cfg["services"].append({"name": "lab", "host": "127.0.0.1", "port": lab.port})
    cfg["routes"] = [r for r in cfg["routes"] if "transform" not in r]  # this suite's section replaces the demo's
    cfg["routes"] += ROUTES
    cfg["mediation"] = MEDIATION
    g = e2e.Gateway(cfg, tmp, "mediation").start()
    try:
        yield g
    finally:
        g.stop()


# -- JSON <-> XML, headers, fields ----------------------------------------------------------------


def test_json_request_reaches_the_service_as_xml_with_header_and_field_rules(gw):
    sent = {"sensor": "t1", "value": 21.5, "secret": "hunter2"}
    status, hdrs, body = post_json(gw, "/m/xml", sent, {"X-Remove-Me": "1", "X-Keep": "2", "X-Old": "3"})
    assert status == 200 and hdrs["Content-Type"] == "application/json", body
    assert hdrs["X-Upstream-Server"] == "apigw-demo" and "Server" not in hdrs  # renamed on the way back
    echo = json.loads(body)
    seen = echo["headers"]
    assert seen["content-type"] == "application/xml" and seen["x-mediated"] == "yes" and seen["x-keep"] == "2"
    assert "x-remove-me" not in seen and "x-old" not in seen and seen["x-new"] == "3"  # renamed on the way up
    root = ET.fromstring(echo["body"].encode())
    assert root.tag == "reading" and sorted(c.tag for c in root) == ["name", "value"]  # renamed, dropped
    assert root.findtext("name") == "t1" and float(root.findtext("value")) == 21.5
    assert int(seen["content-length"]) == echo["body_len"] == len(echo["body"].encode())
    assert "raw_headers" not in echo and echo["method"] == "POST"  # the response's drop rule


def test_response_follows_the_clients_accept(gw):
    status, hdrs, body = post_json(gw, "/m/xml", {"sensor": "t1"}, {"Accept": "application/xml"})
    assert status == 200 and hdrs["Content-Type"] == "application/xml", body
    root = ET.fromstring(body)
    assert root.tag == "reading" and root.findtext("method") == "POST" and root.find("raw_headers") is None
    assert root.findtext("headers/content-type") == "application/xml"
    assert ET.fromstring(root.findtext("body").encode()).findtext("name") == "t1"  # the request as sent up
    status, hdrs, body = post_json(gw, "/m/xml", {"sensor": "t1"}, {"Accept": "application/json"})
    assert status == 200 and hdrs["Content-Type"] == "application/json" and json.loads(body)["method"] == "POST"


def test_response_to_overrides_the_clients_accept(gw):
    status, hdrs, body = post_json(gw, "/m/xml-fixed", {"a": 1}, {"Accept": "application/json"})
    assert status == 200 and hdrs["Content-Type"] == "application/xml", body
    root = ET.fromstring(body)
    assert root.tag == "root" and root.findtext("method") == "POST"
    assert ET.fromstring(root.findtext("body").encode()).findtext("a") == "1"


# -- form <-> JSON --------------------------------------------------------------------------------


def test_form_request_reaches_the_service_as_json(e2e, gw):
    status, hdrs, body = curl(e2e, gw, "/m/form-in", "-d", "sensor=t1&value=21.5&tag=a&tag=b&note=two+words")
    assert status == 200, body
    echo = json.loads(body)
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"sensor": "t1", "value": 21.5, "tag": ["a", "b"], "note": "two words"}


def test_json_request_reaches_the_service_as_form(gw):
    status, _, body = post_json(gw, "/m/form-out", {"sensor": "t 1&2", "value": 2, "ok": True, "tags": ["x", "y"]})
    assert status == 200, body
    echo = json.loads(body)
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(echo["body"]) == {"sensor": ["t 1&2"], "value": ["2"], "ok": ["true"], "tags": ["x", "y"]}


# -- schemas --------------------------------------------------------------------------------------


def test_schema_refusal_names_the_pointer_and_keyword(e2e, gw, upstreams):
    before = e2e.count(upstreams["controller"])["requests"]
    status, hdrs, body = post_json(gw, "/m/valid", {"sensor": "t1", "value": 500})
    doc = error_of(status, hdrs, body, 422, "validation_failed")
    assert doc == {"status": 422, "error": "validation_failed", "message": "/value: maximum 100"}
    status, hdrs, body = post_json(gw, "/m/valid", {"value": 5})
    error_of(status, hdrs, body, 422, "validation_failed", "(root): required sensor")
    assert e2e.count(upstreams["controller"])["requests"] == before  # refused at the gateway


def test_valid_body_reaches_the_service_unchanged(gw):
    status, _, body = post_json(gw, "/m/valid", {"sensor": "t1", "value": 100})
    assert status == 200, body
    echo = json.loads(body)
    assert json.loads(echo["body"]) == {"sensor": "t1", "value": 100}
    assert echo["headers"]["content-type"] == "application/json"


def test_body_of_a_format_the_route_does_not_take_is_415(gw):
    status, hdrs, body = gw.request("POST", "/m/valid", b"<r/>", {"Content-Type": "application/xml"})
    error_of(status, hdrs, body, 415, "unsupported_media_type", "this route takes json")
    status, hdrs, body = gw.request("POST", "/m/valid", b"x", {"Content-Type": "text/plain"})
    error_of(status, hdrs, body, 415, "unsupported_media_type")


def test_malformed_json_is_400(gw):
    status, hdrs, body = gw.request("POST", "/m/valid", b'{"sensor": "t1",', JSON_CT)
    error_of(status, hdrs, body, 400, "bad_request", "the body is not valid JSON")


def test_empty_json_body_does_not_skip_the_schema(e2e, gw, upstreams):
    """A POST declaring a JSON body but sending none is not valid JSON, so it cannot satisfy the
    schema. Fails today (the service gets it): medio.py _prepare_forward converts and checks a body
    only when slot.body_end > slot.head_end."""
    before = e2e.count(upstreams["controller"])["requests"]
    status, hdrs, body = gw.request("POST", "/m/valid", b"", JSON_CT)
    assert status in (400, 422), body
    error_of(status, hdrs, body, status, "bad_request" if status == 400 else "validation_failed")
    assert e2e.count(upstreams["controller"])["requests"] == before


# -- protobuf -------------------------------------------------------------------------------------


def test_json_request_reaches_the_service_as_protobuf(gw, lab, pb):
    lab.answers["/m/proto/in"] = (200, [("Content-Type", "application/x-protobuf")], b"")
    sent = {"sensor": "t1", "value": 21.5, "tags": ["a", "b"], "seq": "9007199254740993"}
    status, _, body = post_json(gw, "/m/proto/in", sent)
    assert status == 200, body
    up = lab.last("/m/proto/in")
    assert up["headers"]["content-type"] == "application/x-protobuf"
    msg = pb.Reading.FromString(up["body"])
    assert (msg.sensor, msg.value, list(msg.tags), msg.seq) == ("t1", 21.5, ["a", "b"], 9007199254740993)
    assert json_format.MessageToDict(msg, preserving_proto_field_name=True) == sent


def test_protobuf_answer_comes_back_as_json(gw, lab, pb):
    ack = pb.Ack(ok=True, count=12345678901234, sensor="t1", codes=[1, -2, 300])
    data = ack.SerializeToString()
    lab.answers["/m/proto/out"] = (200, [("Content-Type", "application/x-protobuf")], data)
    status, hdrs, body = post_json(gw, "/m/proto/out", {"sensor": "t1", "value": 1})
    assert status == 200 and hdrs["Content-Type"] == "application/json", body
    assert json.loads(body) == json_format.MessageToDict(ack, preserving_proto_field_name=True)
    status, hdrs, body = post_json(gw, "/m/proto/out", {"sensor": "t1"}, {"Accept": "application/x-protobuf"})
    assert status == 200 and hdrs["Content-Type"] == "application/x-protobuf" and body == data


# -- the response cache ---------------------------------------------------------------------------


def get(gw, path, headers=None):
    return gw.request("GET", path, headers=headers)


def test_cache_miss_then_hit_with_age(gw, lab):
    s1, h1, b1 = get(gw, "/m/cache/a")
    s2, h2, b2 = get(gw, "/m/cache/a")
    assert (s1, h1["X-Cache"], s2, h2["X-Cache"]) == (200, "MISS", 200, "HIT")
    assert h1["Age"] is None and h2["Age"].isdigit() and int(h2["Age"]) <= 1
    assert b1 == b2 and json.loads(b2) == {"target": "/m/cache/a", "n": 1}
    assert h2["Content-Type"] == "application/json" and h2["Content-Length"] == str(len(b1))
    assert lab.hits("/m/cache/a") == 1


def test_head_is_served_from_the_get_entry(gw, lab):
    _, h1, b1 = get(gw, "/m/cache/h")
    with gw.raw() as c:
        c.send(b"HEAD /m/cache/h HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
        assert r.status == 200 and r.header("X-Cache") == "HIT" and r.header("Content-Length") == str(len(b1))
        c.send(b"GET /health/ping HTTP/1.1\r\nHost: t\r\n\r\n")  # a body after the HEAD would show here
        assert c.read_response().status == 200 and c.buf == b""
    assert h1["X-Cache"] == "MISS" and lab.hits("/m/cache/h") == 1


def test_head_before_any_get_keeps_the_length_of_the_get_answer(gw, lab):
    """RFC 9110 8.6: Content-Length in a HEAD answer must be the GET answer's, or absent. Fails
    today: medio.py (MediationIO.after) writes len(body) of the collected answer, 0 for HEAD."""
    lab.answers["/m/cache/head-first"] = (200, [("Content-Type", "text/plain")], b"hello")
    with gw.raw() as c:
        c.send(b"HEAD /m/cache/head-first HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head_request=True)
    assert r.status == 200 and r.header("X-Cache") == "MISS"
    assert r.header("Content-Length") in ("5", None), r.head
    _, h, body = get(gw, "/m/cache/head-first")
    assert body == b"hello" and h["Content-Length"] == "5"


def test_query_is_part_of_the_cache_key(gw, lab):
    assert get(gw, "/m/cache/q?x=1")[1]["X-Cache"] == "MISS"
    assert get(gw, "/m/cache/q?x=2")[1]["X-Cache"] == "MISS"
    _, h, body = get(gw, "/m/cache/q?x=1")
    assert h["X-Cache"] == "HIT" and json.loads(body)["target"] == "/m/cache/q?x=1"
    assert lab.hits("/m/cache/q?x=1") == lab.hits("/m/cache/q?x=2") == 1


def test_no_store_answers_are_never_cached(gw, lab):
    lab.answers["/m/cache/nostore"] = (200, [("Content-Type", "text/plain"), ("Cache-Control", "no-store")], b"fresh")
    for _ in range(3):
        status, h, body = get(gw, "/m/cache/nostore")
        assert (status, h["X-Cache"], body) == (200, "MISS", b"fresh")
    assert lab.hits("/m/cache/nostore") == 3


def test_entry_expires_after_its_ttl(gw, lab):
    assert get(gw, "/m/short/t")[1]["X-Cache"] == "MISS"
    assert get(gw, "/m/short/t")[1]["X-Cache"] == "HIT"
    time.sleep(1.2)
    _, h, body = get(gw, "/m/short/t")
    assert h["X-Cache"] == "MISS" and json.loads(body)["n"] == 2 and lab.hits("/m/short/t") == 2


def test_shell_cache_purge_empties_the_cache(gw, lab):
    get(gw, "/m/cache/p")
    assert get(gw, "/m/cache/p")[1]["X-Cache"] == "HIT"
    out = shell(gw.shell_port, "mediator cache purge")
    assert out.startswith("purged ") and out.endswith(" entries") and int(out.split()[1]) >= 1, out
    assert "entries_in_use 0" in shell(gw.shell_port, "mediator cache stats").splitlines()
    _, h, body = get(gw, "/m/cache/p")
    assert h["X-Cache"] == "MISS" and json.loads(body)["n"] == 2


def test_request_with_authorization_is_not_served_from_the_cache(gw, lab):
    assert get(gw, "/m/cache/auth")[1]["X-Cache"] == "MISS"
    _, h, body = get(gw, "/m/cache/auth", {"Authorization": "Bearer someone-else"})
    assert h["X-Cache"] == "MISS" and json.loads(body)["n"] == 2
    assert lab.last("/m/cache/auth")["headers"]["authorization"] == "Bearer someone-else"
    _, h, body = get(gw, "/m/cache/auth")  # the entry is the anonymous answer, not the other
    assert h["X-Cache"] == "HIT" and json.loads(body)["n"] == 1


# -- status maps and the buffer limit -------------------------------------------------------------


def test_status_map_turns_404_into_200(gw):
    status, _, body = get(gw, "/m/mapped/404")
    assert status == 200 and json.loads(body) == {"service": "controller", "status": 404}
    status, _, body = get(gw, "/m/mapped/500")  # not in the map: as the service answered
    assert status == 500 and json.loads(body)["status"] == 500


def test_status_map_passes_an_answer_it_need_not_convert(gw, lab):
    """The transform maps statuses only: a text/plain 404 (a typical error page) becomes a 200 as it
    is. Fails today (502 "no format the route can convert"): mediator.py transform_response takes
    JSON as the target when neither response.to nor Accept names one, also for a source format it
    cannot read (-1), then refuses that source."""
    lab.answers["/m/maplab/gone"] = (404, [("Content-Type", "text/plain")], b"gone")
    status, hdrs, body = get(gw, "/m/maplab/gone")
    assert (status, hdrs["Content-Type"], body) == (200, "text/plain", b"gone"), body


def test_answer_larger_than_buffer_bytes_is_502_and_the_gateway_goes_on(gw):
    size = MEDIATION["limits"]["buffer_bytes"] * 3
    with gw.raw() as c:
        c.send(b"GET /m/big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        r = c.read_response()
        hdrs = {"Content-Type": r.header("Content-Type")}
        doc = error_of(r.status, hdrs, r.body, 502, "bad_gateway")
        assert "mediation.limits.buffer_bytes" in doc["message"], doc
        assert r.header("Connection") is None  # the client's connection stays; the next answer is clean
        c.send(b"GET /m/mapped/404 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["status"] == 404 and c.buf == b""
    status, _, body = get(gw, "/m/big?size=100")  # within the limit: passed through
    assert status == 200 and body == demo_upstreams.pattern(100)
    assert get(gw, "/m/mapped/404")[0] == 200 and gw.health()["status"] == "ok"


# -- the shell's mediator command -----------------------------------------------------------------


def test_shell_lists_the_transforms(gw):
    out = shell(gw.shell_port, "mediator transforms")
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "request", "response", "schemas", "cache", "grpc"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert sorted(rows) == sorted(MEDIATION["transforms"])
    assert rows["xml-out"][2] == "any->xml" and rows["form-in"][2] == "form->json"
    assert rows["to-proto"][2:4] == ["json->protobuf", "protobuf->-"]
    assert rows["validated"][4] == "reading/-" and rows["cached"][5] == "30s" and rows["short"][5] == "1s"


def test_shell_validates_a_sample_against_a_schema(gw):
    assert shell(gw.shell_port, 'mediator schemas validate reading {"sensor": "t1", "value": 5}') == "valid"
    out = shell(gw.shell_port, 'mediator schemas validate reading {"sensor": "t1", "value": 500}')
    assert out == "invalid at /value: maximum", out
    assert shell(gw.shell_port, "mediator schemas validate nope {}").startswith("error: no schema 'nope'")
    assert shell(gw.shell_port, "mediator schemas") == "0 reading"


def test_shell_converts_bodies_through_a_transform(gw, pb):
    out = shell(gw.shell_port, 'mediator convert to-proto request json {"sensor": "t1", "value": 1.5}')
    kind, _, data = out.partition(": ")
    assert kind == "protobuf" and pb.Reading.FromString(bytes.fromhex(data)) == pb.Reading(sensor="t1", value=1.5)
    out = shell(gw.shell_port, 'mediator convert xml-out request json {"sensor": "t1", "secret": 1}')
    kind, _, data = out.partition(": ")
    assert kind == "xml" and ET.tostring(ET.fromstring(data.encode())) == b"<reading><name>t1</name></reading>"
    out = shell(gw.shell_port, 'mediator convert validated request json {"sensor": "t1", "value": 500}')
    assert out == "422 validation_failed: /value: maximum 100", out
    assert shell(gw.shell_port, "mediator convert nope request json {}").startswith("error: no transform 'nope'")

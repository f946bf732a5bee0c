"""Portable tests for the mediation stage without sockets: medconfig builds a RequestMediator from
a config section; transforms convert request and response bodies, check schemas, rename and drop
fields, map statuses and frame gRPC-Web; errors come in the gateway's one shape."""

import json

from apigw import grpcweb, httpmsg
from apigw.config import ConfigError, load_config_text
from apigw.mediator import ContentType, MediationError
from check import raises

SECTION = {
    "protobuf": {
        "messages": {
            "demo.Reading": {
                "fields": {
                    "sensor": {"number": 1, "type": "string"},
                    "value": {"number": 2, "type": "double"},
                    "tags": {"number": 3, "type": "string", "repeated": True},
                }
            },
            "demo.Ack": {"fields": {"ok": {"number": 1, "type": "bool"}, "count": {"number": 2, "type": "int64"}}},
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
        "to-proto": {
            "request": {"from": ["json", "form"], "to": "protobuf", "message": "demo.Reading", "schema": "reading"},
            "response": {"from": "protobuf", "message": "demo.Ack"},
        },
        "to-xml": {
            "request": {"to": "xml", "rename": {"sensor": "name"}, "drop": ["secret"]},
            "response": {"to": "json", "drop": ["internal"], "status": {"404": 200}},
            "xml_root": "reading",
        },
        "grpc": {
            "grpc": "demo.Sensors/Record",
            "request": {"message": "demo.Reading"},
            "response": {"message": "demo.Ack"},
        },
        "cached": {"cache": {"ttl_s": 30}},
    },
}


def _med(section=SECTION):
    doc = {
        "services": [{"name": "s", "host": "127.0.0.1", "port": 9}],
        "routes": [{"path": "/r", "service": "s", "transform": "to-proto"}],
        "limits": {"services": 4, "routes": 8, "strtab_bytes": 1024},
        "mediation": section,
    }
    cfg = load_config_text(json.dumps(doc))
    return cfg, cfg.mediator


def test_config_builds_the_tables_and_sets_route_transforms():
    cfg, med = _med()
    assert sorted(t.name for t in med.transforms) == ["cached", "grpc", "to-proto", "to-xml"]  # ids: dict order
    assert cfg.gateway.route_transform(0) == med.transform_id("to-proto") and med.cache is not None
    assert med.schema_names == ["reading"]


def test_json_request_to_protobuf_and_back():
    cfg, med = _med()
    tid = med.transform_id("to-proto")
    out, to = med.transform_request(tid, ContentType.JSON, b'{"sensor": "t1", "value": 21.5, "tags": ["a"]}')
    assert to == ContentType.PROTOBUF
    assert med.messages.decode("demo.Reading", out) == {"sensor": "t1", "value": 21.5, "tags": ["a"]}
    form, _ = med.transform_request(tid, ContentType.FORM_DATA, b"sensor=t1&value=21.5")
    assert med.messages.decode("demo.Reading", form) == {"sensor": "t1", "value": 21.5}
    ack = med.messages.encode("demo.Ack", {"ok": True, "count": "7"})
    status, ctype, body, extra = med.transform_response(tid, 200, ContentType.PROTOBUF, ack)
    assert status == 200 and ctype == ContentType.JSON and json.loads(body) == {"ok": True, "count": "7"}


def test_request_errors_have_their_statuses():
    cfg, med = _med()
    tid = med.transform_id("to-proto")
    for ctype, body, status, code in (
        (ContentType.JSON, b'{"sensor": "t1"}', 422, "validation_failed"),
        (ContentType.JSON, b'{"sensor": "t1", "value": 500}', 422, "validation_failed"),
        (ContentType.JSON, b"{not json", 400, "bad_request"),
        (ContentType.XML, b"<a/>", 415, "unsupported_media_type"),
        (-1, b"{}", 415, "unsupported_media_type"),
    ):
        e = raises(MediationError, med.transform_request, tid, ctype, body)
        assert (e.status, e.code) == (status, code), (body, e.status, e.code, e.message)
    e = raises(MediationError, med.transform_request, tid, ContentType.JSON, b'{"sensor": "t1", "value": 500}')
    assert e.message.startswith("/value: maximum"), e.message


def test_xml_fields_and_status_map():
    cfg, med = _med()
    tid = med.transform_id("to-xml")
    out, to = med.transform_request(tid, ContentType.JSON, b'{"sensor": "t1", "secret": "x"}')
    assert to == ContentType.XML and b"<reading>" in out and b"<name>t1</name>" in out and b"secret" not in out
    status, ctype, body, _ = med.transform_response(tid, 404, ContentType.XML, b"<r><a>1</a><internal>2</internal></r>")
    assert status == 200 and ctype == ContentType.JSON and json.loads(body) == {"a": 1}
    status, ctype, body, _ = med.transform_response(tid, 200, ContentType.JSON, b'{"a": 1}', ContentType.XML)
    assert ctype == ContentType.JSON  # the route says json whatever the client accepts


def test_grpc_web_framing_and_status_mapping():
    cfg, med = _med()
    tid = med.transform_id("grpc")
    out, to = med.transform_request(tid, ContentType.JSON, b'{"sensor": "t1", "value": 1}')
    assert out[0] == 0 and int.from_bytes(out[1:5], "big") == len(out) - 5
    ack = med.messages.encode("demo.Ack", {"ok": True})
    ok = grpcweb.frame(ack) + grpcweb.frame(b"grpc-status: 0\r\n", grpcweb.TRAILER_FLAG)
    status, ctype, body, _ = med.transform_response(tid, 200, ContentType.PROTOBUF, ok)
    assert status == 200 and json.loads(body) == {"ok": True}
    nf = grpcweb.frame(b"grpc-status: 5\r\ngrpc-message: no%20such%20sensor\r\n", grpcweb.TRAILER_FLAG)
    status, ctype, body, _ = med.transform_response(tid, 200, ContentType.PROTOBUF, nf)
    doc = json.loads(body)
    assert status == 404 and doc == {"status": 404, "error": "grpc_not_found", "message": "no such sensor"}
    assert grpcweb.unframe_response(200, b"\x00\x00")[0] == 502  # truncated
    assert grpcweb.unframe_response(503, b"")[0] == 502


def test_httpmsg_reads_and_writes_collected_answers():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive"
    status, reason, headers = httpmsg.parse_head(head, len(head))
    assert status == 200 and reason == b"OK" and httpmsg.header(headers, b"x-a") == b"1"
    buf = bytearray(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n")
    assert bytes(buf[: httpmsg.dechunk(buf, 0, len(buf))]) == b"Wikipedia"
    assert httpmsg.dechunk(bytearray(b"zz\r\n"), 0, 4) == -1
    out = httpmsg.compose_head(200, b"OK", headers, (b"x-a",), b"application/xml", 5, b"X-B: 2\r\n", False, 11)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")
    assert b"X-A" not in out and b"Transfer-Encoding" not in out and b"Content-Length: 5\r\n" in out
    assert b"Content-Type: application/xml\r\n" in out and b"X-B: 2\r\n" in out and b"Connection: close\r\n" in out


def test_config_errors_name_the_field():
    for section, want in (
        ({"transforms": {"t": {"request": {"to": "yaml"}}}}, "mediation.transforms.t.request.to: one of"),
        (
            {"transforms": {"t": {"request": {"to": "protobuf"}}}},
            "mediation.transforms.t.request.message: protobuf needs a message",
        ),
        (
            {"transforms": {"t": {"request": {"schema": "nope"}}}},
            "mediation.transforms.t.request.schema: no schema 'nope'",
        ),
        ({"transforms": {"t": {"grpc": "nope"}}}, "mediation.transforms.t.grpc:"),
        ({"transforms": {"t": {"bogus": 1}}}, "mediation.transforms.t.bogus: unknown key"),
        ({"schemas": {"s": {"oneOf": []}}}, "mediation.schemas.s"),
        ({"limits": {"buffers": 0}}, "mediation.limits.buffers: must be an integer 1-16"),
    ):
        section = dict(section)
        section.setdefault("transforms", {})
        section["transforms"]["to-proto"] = {}
        e = raises(ConfigError, _med, section)
        assert str(e).startswith(want), (section, str(e))


def test_get_error_response_has_the_one_shape():
    cfg, med = _med()
    e = med.get_error_response(422, "validation_failed", "/value: maximum")
    assert e.status == 422 and json.loads(e.body) == {
        "status": 422,
        "error": "validation_failed",
        "message": "/value: maximum",
    }
    assert json.loads(med.get_error_response(404).body)["error"] == "not_found"

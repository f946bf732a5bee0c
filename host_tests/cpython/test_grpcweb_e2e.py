"""End to end, gRPC-Web: a JSON client (curl) calls a real gRPC-Web service through the gateway.

The service is a grpcio servicer (stubs compiled from PROTO with grpc_tools.protoc) served by
sonora's WSGI app (sonora.wsgi.grpcWSGI), hosted two ways: wsgiref as it comes (it answers
HTTP/1.0 and closes after each answer) and wsgiref driven as an HTTP/1.1 keep-alive server (the
gateway's upstream client speaks HTTP/1.1 and reuses connections). The gateway's transform names
the method ("grpc": "demo.Sensors/Record"): it turns the JSON body into a framed demo.Reading,
POSTs it as application/grpc-web+proto, reads the Ack frame and the grpc-status trailer, and
answers JSON, or the error of the status (NOT_FOUND -> 404, INVALID_ARGUMENT -> 400) in the one
error shape {"status", "error", "message"}.
"""

import importlib
import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from socketserver import ThreadingMixIn
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

import grpc
import pytest
from google.protobuf import json_format
from sonora.wsgi import grpcWSGI

PROTO = """syntax = "proto3";
package demo;
message Reading { string sensor = 1; double value = 2; repeated string tags = 3; }
message Ack { bool ok = 1; int64 count = 2; string sensor = 3; }
service Sensors { rpc Record(Reading) returns (Ack); }
"""
MESSAGES = {
    "demo.Reading": {
        "fields": {
            "sensor": {"number": 1, "type": "string"},
            "value": {"number": 2, "type": "double"},
            "tags": {"number": 3, "type": "string", "repeated": True},
        }
    },
    "demo.Ack": {
        "fields": {
            "ok": {"number": 1, "type": "bool"},
            "count": {"number": 2, "type": "int64"},
            "sensor": {"number": 3, "type": "string"},
        }
    },
}
HOSTINGS = ("http10", "http11")  # the route /grpc/<hosting> goes to the server hosted that way
NOT_FOUND_TEXT = "no sensor 'missing' (100% sure)"

# -- helpers: hosting the service, clients -------------------------------------------------------


def compile_proto(d):
    """(demo_sensors_pb2, demo_sensors_pb2_grpc) compiled into directory d."""
    (d / "demo_sensors.proto").write_text(PROTO)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(d), "--python_out", str(d)]
    subprocess.run(cmd + ["--grpc_python_out", str(d), "demo_sensors.proto"], check=True)
    sys.path.insert(0, str(d))
    try:
        return importlib.import_module("demo_sensors_pb2"), importlib.import_module("demo_sensors_pb2_grpc")
    finally:
        sys.path.remove(str(d))


class Quiet(WSGIRequestHandler):
    """wsgiref's handler, silent, counting the connections it serves (server.connections)."""

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1


class Http11Handler(ServerHandler):
    http_version = "1.1"


class KeepAlive(Quiet):
    """wsgiref's request handler, looping over requests on a connection as HTTP/1.1 allows (wsgiref
    itself serves one request per connection). The answer is the app's: sonora sets Content-Length."""

    protocol_version = "HTTP/1.1"

    def handle(self):
        self.close_connection = True
        self._one()
        while not self.close_connection:
            self._one()

    def _one(self):
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():  # sets close_connection from the version and Connection
            return
        h = Http11Handler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True)
        h.request_handler = self
        h.run(self.server.get_app())


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self):
        super().server_bind()
        self.lock = threading.Lock()
        self.connections = 0


def curl(e2e, gw, path, body, *args):
    """curl -d BODY -H 'Content-Type: application/json': (status, {lower-case name: value}, bytes)."""
    url = "http://127.0.0.1:%d%s" % (gw.port, path)
    cmd = [e2e.curl_exe(), "-sS", "-i", "--max-time", "10", "-d", body, "-H", "Content-Type: application/json"]
    p = subprocess.run(cmd + list(args) + [url], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    head, _, data = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), hdrs, data


def curl_json(e2e, gw, path, body, *args):
    status, hdrs, data = curl(e2e, gw, path, body, *args)
    return status, hdrs, json.loads(data)


def error_doc(status, hdrs, doc, want_status, code, message=None):
    """Checks the one error shape: exactly status, error, message; application/json."""
    assert status == want_status, (status, doc)
    assert hdrs["content-type"] == "application/json", hdrs
    assert sorted(doc) == ["error", "message", "status"] and doc["status"] == want_status, doc
    assert doc["error"] == code and isinstance(doc["message"], str) and doc["message"], doc
    if message is not None:
        assert doc["message"] == message, doc


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    return compile_proto(tmp_path_factory.mktemp("grpcproto"))


@pytest.fixture(scope="module")
def service(pb):
    """The servicer and what it saw; sonora's WSGI app behind both hostings: {hosting: server}."""
    pb2, pb2_grpc = pb

    class Sensors(pb2_grpc.SensorsServicer):
        def __init__(self):
            self.readings = []
            self.environs = []

        def Record(self, request, context):  # noqa: N802 (the rpc's name)
            if request.sensor == "missing":
                context.abort(grpc.StatusCode.NOT_FOUND, NOT_FOUND_TEXT)
            if not request.sensor or not -50 <= request.value <= 150:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "value out of range")
            self.readings.append(request)
            return pb2.Ack(ok=True, count=len(self.readings), sensor=request.sensor)

    servicer = Sensors()
    grpc_app = grpcWSGI(None)
    pb2_grpc.add_SensorsServicer_to_server(servicer, grpc_app)

    def app(environ, start_response):  # sonora's app; the request's environ is kept to look at
        servicer.environs.append({k: v for k, v in environ.items() if isinstance(v, str)})
        return grpc_app(environ, start_response)

    servers = {}
    for hosting, handler in zip(HOSTINGS, (Quiet, KeepAlive)):
        srv = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=handler)
        threading.Thread(target=srv.serve_forever, args=(0.1,), daemon=True).start()
        servers[hosting] = srv
    servicer.servers = servers
    try:
        yield servicer
    finally:
        for srv in servers.values():
            srv.shutdown()
            srv.server_close()


@pytest.fixture(scope="module")
def gw(e2e, upstreams, service, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpcweb")
    cfg = e2e.e2e_config(upstreams, e2e.free_port())
    cfg["routes"] = [r for r in cfg["routes"] if "transform" not in r]  # this suite's section replaces the demo's
    for hosting, srv in service.servers.items():
        cfg["services"].append({"name": "grpc-" + hosting, "host": "127.0.0.1", "port": srv.server_address[1]})
        cfg["routes"].append({"path": "/grpc/" + hosting, "service": "grpc-" + hosting, "transform": "record"})
    cfg["mediation"] = {
        "protobuf": {"messages": MESSAGES},
        "transforms": {
            "record": {
                "grpc": "demo.Sensors/Record",
                "request": {"message": "demo.Reading"},
                "response": {"message": "demo.Ack"},
            }
        },
    }
    g = e2e.Gateway(cfg, tmp, "grpcweb").start()
    try:
        yield g
    finally:
        g.stop()


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("hosting", HOSTINGS)
def test_record_returns_the_json_ack(e2e, gw, service, pb, hosting):
    pb2 = pb[0]
    n = len(service.readings)
    status, hdrs, doc = curl_json(e2e, gw, "/grpc/" + hosting, '{"sensor":"t1","value":1.5}')
    assert status == 200 and hdrs["content-type"] == "application/json", doc
    ack = pb2.Ack(ok=True, count=n + 1, sensor="t1")
    assert doc == json_format.MessageToDict(ack, preserving_proto_field_name=True)
    assert service.readings[-1] == pb2.Reading(sensor="t1", value=1.5)
    env = service.environs[-1]
    assert (env["REQUEST_METHOD"], env["PATH_INFO"]) == ("POST", "/demo.Sensors/Record")
    assert env["CONTENT_TYPE"] == "application/grpc-web+proto" and env["HTTP_X_GRPC_WEB"] == "1"


@pytest.mark.parametrize("hosting", HOSTINGS)
def test_repeated_calls_and_the_upstream_connections(e2e, gw, service, hosting):
    srv = service.servers[hosting]
    before = srv.connections
    counts = [curl_json(e2e, gw, "/grpc/" + hosting, '{"sensor":"t2","value":%d}' % i)[2]["count"] for i in range(3)]
    assert [int(c) for c in counts] == list(range(int(counts[0]), int(counts[0]) + 3))
    if hosting == "http10":  # wsgiref closes after each answer: a new connection per call
        assert srv.connections - before == 3
    else:  # an HTTP/1.1 keep-alive upstream: the gateway reuses its connection
        assert srv.connections - before <= 1


@pytest.mark.parametrize("hosting", HOSTINGS)
def test_not_found_status_is_404(e2e, gw, service, hosting):
    n = len(service.readings)
    status, hdrs, doc = curl_json(e2e, gw, "/grpc/" + hosting, '{"sensor":"missing","value":1}')
    error_doc(status, hdrs, doc, 404, "grpc_not_found", NOT_FOUND_TEXT)  # grpc-message percent-decoded
    assert len(service.readings) == n


@pytest.mark.parametrize("hosting", HOSTINGS)
def test_invalid_argument_status_is_400(e2e, gw, hosting):
    status, hdrs, doc = curl_json(e2e, gw, "/grpc/" + hosting, '{"sensor":"t1","value":1000}')
    error_doc(status, hdrs, doc, 400, "grpc_invalid_argument", "value out of range")


def test_bad_bodies_never_reach_the_service(e2e, gw, service):
    n = len(service.environs)
    status, hdrs, doc = curl_json(e2e, gw, "/grpc/http11", '{"sensor": ')
    error_doc(status, hdrs, doc, 400, "bad_request")
    status, hdrs, doc = curl_json(e2e, gw, "/grpc/http11", '{"sensor":"t1","value":"hot"}')
    error_doc(status, hdrs, doc, 400, "bad_request")  # not a double: the codec refuses it
    assert len(service.environs) == n


def test_client_accept_picks_the_answer_format(e2e, gw):
    """The client's Accept also reaches the service (sonora labels its answer with it); the gateway
    reads the frames whatever the label and answers in the format the client asked for."""
    status, hdrs, data = curl(e2e, gw, "/grpc/http11", '{"sensor":"t3","value":2}', "-H", "Accept: application/xml")
    assert status == 200 and hdrs["content-type"] == "application/xml", data
    root = ET.fromstring(data)
    assert (root.tag, root.findtext("ok"), root.findtext("sensor")) == ("root", "true", "t3")
    assert int(root.findtext("count")) >= 1

"""Micro-benchmarks of the mediation stage, run ON the MicroPython unix port (by bench_mpy.py).

Measures, in the bench_mpy.py process:

- `MessageSet.encode` and `encode_into` (a buffer made once) of a 10-field message from its JSON
  value (strings, int32, int64, double, bool, enum, a packed repeated int32, a nested message),
  and `MessageSet.decode` of the same bytes back to that value;
- `Schema.validate` of the same object, valid, against a schema with types, minimum/maximum,
  minLength/maxLength, enum, required, minItems/maxItems, a nested object (no pattern: a pattern
  search allocates a match object);
- `RequestMediator.transform_request` of the object as JSON text to protobuf with the schema
  checked (what a route with such a transform does to a request body: json.loads, check, encode);
- the steps of a cache hit, on a Server built (not started) from a config like the one
  tools/bench.py runs: route + dispatch, `ResponseCache.lookup`, composing the answer into the
  slot's I/O buffer (the hit's own send_now goes to a sink), the whole mediation stage call, and
  the send of the composed answer on a loopback TCP connection; the direct route's route,
  compose and send beside them;
- bytes allocated per call of each (`micropython.mem_total()` deltas).

Each figure is the median of batch means with the cost of calling a function that does nothing
taken off. This file times things and asserts nothing about speed; it raises if a value does not
round-trip or validate, or if the cache does not answer (a figure would then mean nothing).
"""

import gc
import json
import socket
import time

import micropython  # type: ignore

from apigw import httpparse as hp
from apigw.config import load_config_text
from apigw.mediator import ContentType
from apigw.protobuf import MessageSet
from apigw.schema import compile_schema
from apigw.sockio import send_now

MESSAGE = "bench.Reading"
DEFS = {
    "messages": {
        "bench.Reading": {
            "fields": {
                "sensor": {"number": 1, "type": "string"},
                "site": {"number": 2, "type": "string"},
                "seq": {"number": 3, "type": "int32"},
                "ts_ms": {"number": 4, "type": "int64"},
                "value": {"number": 5, "type": "double"},
                "ok": {"number": 6, "type": "bool"},
                "unit": {"number": 7, "type": "enum", "enum": "bench.Unit"},
                "samples": {"number": 8, "type": "int32", "repeated": True},  # packed (proto3)
                "location": {"number": 9, "type": "message", "message": "bench.Location"},
                "note": {"number": 10, "type": "string"},
            }
        },
        "bench.Location": {"fields": {"lat": {"number": 1, "type": "double"}, "lon": {"number": 2, "type": "double"}}},
    },
    "enums": {"bench.Unit": {"UNIT_UNSPECIFIED": 0, "CELSIUS": 1, "KELVIN": 2}},
}
# The JSON value as the proto3 JSON mapping has it (int64 as a string, the enum by name): decode
# gives back exactly this.
VALUE = {
    "sensor": "greenhouse-t1",
    "site": "roof",
    "seq": 123456,
    "ts_ms": "1700000000123",
    "value": 21.5,
    "ok": True,
    "unit": "CELSIUS",
    "samples": [512, 1023, 7, 300, 4095, 0, 88, 2048],
    "location": {"lat": 52.52, "lon": 13.405},
    "note": "calibrated 2024-05",
}
SCHEMA = {
    "type": "object",
    "required": ["sensor", "seq", "ts_ms", "value", "unit"],
    "additionalProperties": False,
    "properties": {
        "sensor": {"type": "string", "minLength": 1, "maxLength": 32},
        "site": {"type": "string", "enum": ["lab", "roof", "cellar"]},
        "seq": {"type": "integer", "minimum": 0, "maximum": 2147483647},
        "ts_ms": {"type": "string", "minLength": 1, "maxLength": 20},
        "value": {"type": "number", "minimum": -100, "maximum": 200},
        "ok": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["UNIT_UNSPECIFIED", "CELSIUS", "KELVIN"]},
        "samples": {
            "type": "array",
            "minItems": 1,
            "maxItems": 64,
            "items": {"type": "integer", "minimum": 0, "maximum": 4095},
        },
        "location": {
            "type": "object",
            "required": ["lat", "lon"],
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
            },
        },
        "note": {"type": "string", "maxLength": 64},
    },
}
# The gateway of tools/bench.py, reduced to what the hit path touches: /direct answers itself,
# /cached forwards through a transform that caches (the upstream is never asked here: the cache is
# filled with the answer tools/bare_server.py gives, as the gateway would store it).
GATEWAY = {
    "listen": {"host": "127.0.0.1", "port": 8080, "slots": 4, "queue_max": 8},
    "limits": {"services": 4, "routes": 8, "strtab_bytes": 1024},
    "shell": {"enabled": False},
    "services": [{"name": "bare", "host": "127.0.0.1", "port": 9100}],
    "routes": [
        {"path": "/direct", "match": "exact", "respond": {"status": 200, "body": {"ok": True}}},
        {"path": "/cached", "service": "bare", "transform": "cached"},
        {"path": "/reading", "service": "bare", "transform": "reading"},
    ],
    "mediation": {
        "limits": {"buffers": 2, "buffer_bytes": 1024, "cache_entries": 4, "cache_entry_bytes": 512},
        "protobuf": DEFS,
        "schemas": {"reading": SCHEMA},
        "transforms": {
            "cached": {"cache": {"ttl_s": 3600}},
            "reading": {"request": {"from": ["json"], "to": "protobuf", "message": MESSAGE, "schema": "reading"}},
        },
    },
}
# The bare server's answer as the gateway stores it (Via added; X-Cache and Age come per hit).
STORED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nVia: 1.1 apigw\r\n"
STORED_BODY = b'{"ok": true}'


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _noop():
    pass


def _batch(fn, reps):
    """Mean µs per fn() over reps calls."""
    t0 = time.ticks_us()
    for _ in range(reps):
        fn()
    return time.ticks_diff(time.ticks_us(), t0) / reps


def _timed(fn, reps, batches):
    """Median of batch means of fn(), the cost of calling _noop taken off."""
    call = []
    own = []
    for _ in range(batches):
        call.append(_batch(_noop, reps))
        own.append(_batch(fn, reps))
    return median(own) - median(call)


def _alloc(fn, reps):
    """Bytes allocated per fn() (mem_total delta; the loop and an empty call taken off)."""
    gc.collect()
    m0 = micropython.mem_total()
    for _ in range(reps):
        _noop()
    m1 = micropython.mem_total()
    for _ in range(reps):
        fn()
    m2 = micropython.mem_total()
    return ((m2 - m1) - (m1 - m0)) / reps


# -- codecs and schema -------------------------------------------------------------------------------


def codec_setup():
    """(MessageSet, Schema, encoded bytes); the value is proved to round-trip and to validate."""
    messages = MessageSet(DEFS)
    schema = compile_schema(SCHEMA)
    data = messages.encode(MESSAGE, VALUE)
    back = messages.decode(MESSAGE, data)
    if back != VALUE:
        raise ValueError("the message does not round-trip: %r" % (back,))
    if schema.validate(VALUE) is not None:
        raise ValueError("the schema refuses the value: %r" % (schema.validate(VALUE),))
    return messages, schema, data


class _Calls:
    """The calls measured, as methods reading their arguments from attributes: the frame of each
    stays small enough for the VM to keep it on the C stack, so the alloc figures are the callee's
    alone (a closure over six values calling a five-argument method would get its own frame put on
    the heap on every call, and a bound method stored and called with five arguments its argument
    array)."""

    def enc(self):
        self.messages.encode(MESSAGE, VALUE)

    def enc_into(self):
        self.messages.encode_into(MESSAGE, VALUE, self.buf, 0)

    def dec(self):
        self.messages.decode(MESSAGE, self.data)

    def check(self):
        self.schema.validate(VALUE)

    def convert(self):
        self.med.transform_request(self.conv_tid, ContentType.JSON, self.body)

    def route(self):
        self.gw.route_request(self.slot)
        self.gw.dispatch_request(self.slot)

    def lookup(self):
        self.cache.lookup(self.slot, self.rid, self.now)

    def stage_medio(self):
        self.mio.before(self.slot, self.sink, self.rid, self.tid)

    def compose_medio(self):
        self.mio._send_cached(self.slot, self.sink, self.entry, self.now)

    def stage_server(self):  # the Server's own methods, before medio.py
        self.srv._mediate_request(self.slot, self.sink, self.rid, self.tid, 0)

    def compose_server(self):
        self.srv._send_cached(self.slot, self.sink, self.entry)

    def direct(self):
        self.srv._send(self.slot, self.sink, self.status, self.ctype, self.dbody)


def run_codecs(batches):
    messages, schema, data = codec_setup()
    k = _Calls()
    k.messages, k.schema, k.data, k.buf = messages, schema, data, bytearray(256)
    n = messages.encode_into(MESSAGE, VALUE, k.buf, 0)
    if bytes(k.buf[:n]) != data:
        raise ValueError("encode_into and encode disagree")
    return {
        "protobuf_bench_bytes": len(data),
        "json_to_protobuf_us": _timed(k.enc, 50, batches),
        "json_to_protobuf_into_us": _timed(k.enc_into, 50, batches),
        "protobuf_to_json_us": _timed(k.dec, 50, batches),
        "schema_validate_us": _timed(k.check, 50, batches),
        "json_to_protobuf_alloc_bytes": _alloc(k.enc, 50),
        "json_to_protobuf_into_alloc_bytes": _alloc(k.enc_into, 50),
        "protobuf_to_json_alloc_bytes": _alloc(k.dec, 50),
        "schema_validate_alloc_bytes": _alloc(k.check, 50),
    }


# -- the gateway's mediation stage ---------------------------------------------------------------


def _parse(slot, raw):
    slot.reset()
    slot.buf[0 : len(raw)] = raw
    slot.n = len(raw)
    if hp.parse_request(slot) != hp.DONE:
        raise ValueError("did not parse: %r" % raw)


def _request(path):
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"


class _Sink:
    """A socket that takes every write at once (compose figures without a system call)."""

    def write(self, buf, off, n):
        return n


def _stage(k, srv):
    """(stage, compose) callables of the server's mediation I/O (medio.MediationIO, or the
    Server's own methods in versions before it), or None."""
    mio = getattr(srv, "medio", None)
    if mio is not None and hasattr(mio, "before") and hasattr(mio, "_send_cached"):
        k.mio = mio
        return k.stage_medio, k.compose_medio
    if hasattr(srv, "_mediate_request") and hasattr(srv, "_send_cached"):
        return k.stage_server, k.compose_server
    return None


def _tcp_pair():
    """(non-blocking server-side socket, client socket) over loopback with TCP_NODELAY on the
    server side, as the gateway has it; None if no port could be bound."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = 0
    for i in range(40):
        p = 20000 + (time.ticks_us() + 7919 * i) % 40000
        try:
            ls.bind(socket.getaddrinfo("127.0.0.1", p)[0][-1])
            port = p
            break
        except OSError:
            pass
    if not port:
        ls.close()
        return None
    ls.listen(1)
    c = socket.socket()
    c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s, _ = ls.accept()
    ls.close()
    s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux values; the unix port lacks the names)
    s.setblocking(False)
    return s, c


def _send_batch(s, c, io, n, reps, scratch):
    """Mean µs per send_now of io[:n] on s; what arrives at c is read outside the timed part."""
    t0 = time.ticks_us()
    for _ in range(reps):
        send_now(s, io, 0, n)
    dt = time.ticks_diff(time.ticks_us(), t0) / reps
    left = n * reps
    while left > 0:
        left -= c.readinto(scratch, min(left, len(scratch)))
    return dt


def run_stage(batches):
    """The request conversion and the cache hit's steps (keys as in build/bench.json)."""
    from apigw.server import Server

    srv = Server(load_config_text(json.dumps(GATEWAY)), log=_noop)
    gw = srv.gw
    med = srv.mediator
    k = _Calls()
    k.srv, k.gw, k.med, k.sink = srv, gw, med, _Sink()
    k.slot = slot = srv.pool.acquire()
    out = {}

    # A request body through the "reading" transform: JSON text -> checked -> protobuf.
    k.conv_tid = med.transform_id("reading")
    k.body = json.dumps(VALUE).encode()
    conv, to = med.transform_request(k.conv_tid, ContentType.JSON, k.body)
    if to != ContentType.PROTOBUF or med.messages.decode(MESSAGE, conv) != VALUE:
        raise ValueError("transform_request did not give the message")
    out["mediate_json_to_protobuf_us"] = _timed(k.convert, 20, batches)
    out["mediate_json_to_protobuf_alloc_bytes"] = _alloc(k.convert, 20)

    # The hit path. The cache holds /cached as the gateway stores the bare server's answer.
    _parse(slot, _request(b"/cached"))
    k.rid = rid = gw.route_request(slot)
    svc = gw.dispatch_request(slot)
    k.tid = tid = gw.route_transform(rid)
    if rid < 0 or svc < 0 or tid < 0:
        raise ValueError("/cached: route %d, service %d, transform %d" % (rid, svc, tid))
    k.cache = cache = med.cache
    if not med.cache_set(slot, rid, 3600000, STORED_HEAD, STORED_BODY, time.ticks_ms()):
        raise ValueError("the cache refused the stored answer")
    k.now = time.ticks_ms()
    k.entry = cache.lookup(slot, rid, k.now)
    if k.entry < 0:
        raise ValueError("the cache does not answer /cached")
    out["cache_hit_route_us"] = _timed(k.route, 200, batches)
    out["cache_hit_lookup_us"] = _timed(k.lookup, 200, batches)
    out["cache_hit_route_alloc_bytes"] = _alloc(k.route, 100)
    out["cache_hit_lookup_alloc_bytes"] = _alloc(k.lookup, 100)
    hit = None
    stage = _stage(k, srv)
    if stage is not None:
        whole, compose = stage
        whole()
        if slot.out_end <= len(STORED_HEAD) + len(STORED_BODY) or b"X-Cache: HIT" not in bytes(slot.io[: slot.out_end]):
            raise ValueError("the mediation stage did not answer /cached from the cache")
        hit = bytes(slot.io[: slot.out_end])
        out["cache_hit_compose_us"] = _timed(compose, 200, batches)
        out["cache_hit_stage_us"] = _timed(whole, 200, batches)
        out["cache_hit_compose_alloc_bytes"] = _alloc(compose, 100)
        out["cache_hit_stage_alloc_bytes"] = _alloc(whole, 100)
        out["cache_hit_answer_bytes"] = len(hit)

    # The direct route's answer, routed, composed and sent the same way.
    _parse(slot, _request(b"/direct"))
    k.status, k.ctype, k.dbody = gw.respond_parts(gw.route_request(slot))
    out["direct_route_us"] = _timed(k.route, 200, batches)
    out["direct_compose_us"] = _timed(k.direct, 200, batches)
    out["direct_compose_alloc_bytes"] = _alloc(k.direct, 100)
    k.direct()
    answer = bytes(slot.io[: slot.out_end])
    out["direct_answer_bytes"] = len(answer)

    pair = _tcp_pair()
    if pair is not None:
        s, c = pair
        scratch = bytearray(8192)
        try:
            for key, data in (("direct_send_us", answer), ("cache_hit_send_us", hit)):
                if data is not None:
                    slot.io[: len(data)] = data
                    out[key] = median([_send_batch(s, c, slot.io, len(data), 40, scratch) for _ in range(batches)])
        finally:
            s.close()
            c.close()
    return out


def run(batches):
    """The mediation figures as a flat dict (keys as in build/bench.json)."""
    out = run_codecs(batches)
    out.update(run_stage(batches))
    return out


if __name__ == "__main__":
    for k, v in sorted(run(7).items()):
        print("%-40s %s" % (k, v))

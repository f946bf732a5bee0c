"""RequestMediator: the spec's api_mediation: format conversion, schemas, header and field rules.

Owns: the spec's types (ContentType, HttpMethod, RequestTransform, ResponseTransform,
MediationPolicy), the transform table (256) and the schema table (128), choosing formats from a
route's transform and the Content-Type / Accept of the request, converting bodies between JSON,
form, XML, protobuf and binary (codecs in formconv.py, xmlconv.py, protobuf.py), schema checks
(schema.py), renaming and dropping JSON fields, header rules, status maps, gRPC-Web framing for a
transform that names a gRPC method (grpcweb.py), and the error answer of every failure
(errors.py). Must not do I/O or hold connections: the server hands it bodies and sends what it
returns. Everything here allocates (parsing, encoding); it runs only on routes with a transform.
"""

import json

from .errors import error_json

MAX_TRANSFORMS = 256
MAX_SCHEMAS = 128


class ContentType:
    JSON = 0
    PROTOBUF = 1
    XML = 2
    FORM_DATA = 3
    BINARY = 4
    NAMES = ("json", "protobuf", "xml", "form", "binary")
    MEDIA = (
        b"application/json",
        b"application/x-protobuf",
        b"application/xml",
        b"application/x-www-form-urlencoded",
        b"application/octet-stream",
    )

    @staticmethod
    def parse(name, field="format"):
        if name in ContentType.NAMES:
            return ContentType.NAMES.index(name)
        raise MediationError(400, "bad_request", "%s: one of json, protobuf, xml, form, binary" % field)

    @staticmethod
    def from_media(value):
        """The ContentType of a Content-Type or Accept media range (bytes, any case, parameters
        ignored), or -1."""
        v = bytes(value).split(b";")[0].strip().lower()
        if v == b"application/json" or v.endswith(b"+json"):
            return ContentType.JSON
        if v in (b"application/x-protobuf", b"application/protobuf", b"application/vnd.google.protobuf"):
            return ContentType.PROTOBUF
        if v in (b"application/xml", b"text/xml") or v.endswith(b"+xml"):
            return ContentType.XML
        if v == b"application/x-www-form-urlencoded":
            return ContentType.FORM_DATA
        if v == b"application/octet-stream":
            return ContentType.BINARY
        return -1


class HttpMethod:
    """The spec's HttpMethod as the parser's METHOD_* bits."""

    GET = 1
    HEAD = 2
    POST = 4
    PUT = 8
    DELETE = 16
    PATCH = 32


class MediationError(ValueError):
    """A refused body or config: status, code (errors.py), message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RequestTransform:
    def __init__(self, input_format, output_format, transformation_id):
        self.input_format = input_format
        self.output_format = output_format
        self.transformation_id = transformation_id


class ResponseTransform:
    def __init__(self, status, format, headers):
        self.status = status
        self.format = format
        self.headers = headers


class MediationPolicy:
    def __init__(self, timeout=0, retry_count=0, cache_ttl=0):
        self.timeout = timeout
        self.retry_count = retry_count
        self.cache_ttl = cache_ttl


class ApiError:
    """get_error_response's answer: what the server sends."""

    def __init__(self, status, body, headers=b""):
        self.status = status
        self.body = body
        self.headers = headers


class Transform:
    """One registered transform: what happens to a route's request and response."""

    def __init__(self, name):
        self.name = name
        self.req_from = ()  # type: tuple # ContentTypes the request may come in (empty: any)
        self.req_to = -1  # ContentType sent upstream (-1: as it came)
        self.req_message = None  # type: str | None # protobuf message of the request body
        self.req_schema = -1
        self.req_rename = None  # type: dict | None # {old: new} JSON fields
        self.req_drop = ()
        self.req_headers_remove = ()  # lower-case names (bytes)
        self.req_headers_add = b""  # header lines, CRLF-ended
        self.req_headers_rename = ()  # ((old lower-case name, new name), ...)
        self.resp_from = -1  # ContentType expected from upstream (-1: from its Content-Type)
        self.resp_to = -1  # ContentType for the client (-1: the client's Accept, else JSON)
        self.resp_message = None  # type: str | None
        self.resp_schema = -1
        self.resp_on_invalid = 502  # or 0: pass with a warning header
        self.resp_rename = None  # type: dict | None
        self.resp_drop = ()
        self.resp_headers_remove = ()
        self.resp_headers_add = b""
        self.resp_headers_rename = ()
        self.status_map = None  # type: dict | None # {upstream status: client status}
        self.xml_root = "root"
        self.grpc = None  # type: bytes | None # b"/package.Service/Method" for gRPC-Web
        self.policy = MediationPolicy()
        self.cache_vary = ()
        self.req_converts = False  # set by fix(): converts_request() / converts_response()
        self.resp_converts = False

    def fix(self):
        """Work out, once the transform is complete, what a request on it has to do."""
        self.req_converts = self.converts_request()
        self.resp_converts = self.converts_response()

    def converts_request(self):
        return (
            self.req_to >= 0
            or self.req_schema >= 0
            or self.req_rename is not None
            or bool(self.req_drop)
            or self.grpc is not None
        )

    def converts_response(self):
        return (
            self.resp_to >= 0
            or self.resp_from >= 0
            or self.resp_schema >= 0
            or self.resp_rename is not None
            or bool(self.resp_drop)
            or bool(self.resp_headers_remove)
            or bool(self.resp_headers_add)
            or bool(self.resp_headers_rename)
            or self.status_map is not None
            or self.grpc is not None
        )


class RequestMediator:
    def __init__(self, max_transforms=MAX_TRANSFORMS, max_schemas=MAX_SCHEMAS, messages=None):
        self.max_transforms = max_transforms
        self.max_schemas = max_schemas
        self.transforms = []  # index = transformation id
        self.schemas = []  # compiled schema.Schema, index = schema id
        self.schema_names = []
        self.messages = messages  # protobuf.MessageSet, or None
        self.cache = None  # respcache.ResponseCache, when a transform caches (enable_cache)
        self.buffers = 2  # how many answers can be collected at once (server's buffers)
        self.buffer_bytes = 8192  # the largest answer a transform converts or caches
        self.converted = 0
        self.refused = 0

    # -- tables -----------------------------------------------------------------------------------

    def register_schema(self, name, doc):
        from .schema import SchemaError, compile_schema

        if name in self.schema_names:
            raise MediationError(400, "bad_request", "schema %r defined twice" % name)
        if len(self.schemas) >= self.max_schemas:
            raise MediationError(507, "full", "more than %d schemas" % self.max_schemas)
        try:
            s = compile_schema(doc)
        except SchemaError as e:
            raise MediationError(400, "bad_request", str(e))  # "/properties/a: unsupported keyword 'oneOf'"
        self.schemas.append(s)
        self.schema_names.append(name)
        return len(self.schemas) - 1

    def schema_id(self, name):
        return self.schema_names.index(name) if name in self.schema_names else -1

    def register_transform(self, t):
        """Add a Transform; returns its transformation id."""
        if len(self.transforms) >= self.max_transforms:
            raise MediationError(507, "full", "more than %d transforms" % self.max_transforms)
        if self.transform_id(t.name) >= 0:
            raise MediationError(400, "bad_request", "transform %r defined twice" % t.name)
        t.fix()  # per request the server reads two flags, not a dozen fields
        self.transforms.append(t)
        return len(self.transforms) - 1

    def transform_id(self, name):
        for i, t in enumerate(self.transforms):
            if t.name == name:
                return i
        return -1

    def enable_cache(self, entries, entry_bytes):
        from .respcache import ResponseCache

        self.cache = ResponseCache(entries, entry_bytes)

    def set_caching_policy(self, tid, ttl_s, vary=()):
        t = self.transforms[tid]
        t.policy.cache_ttl = ttl_s
        t.cache_vary = tuple(v.lower() for v in vary)

    def cache_get(self, slot, route, now_ms):
        """The cache entry for the request in slot, or -1 (respcache.ResponseCache.lookup)."""
        return -1 if self.cache is None else self.cache.lookup(slot, route, now_ms)

    def cache_set(self, slot, route, ttl_ms, head, body, now_ms):
        """Store a whole response (head bytes without the final CRLF, body bytes); False if it
        is not cacheable or does not fit."""
        c = self.cache
        if c is None:
            return False
        h = c.begin(slot, route, ttl_ms, now_ms)
        if h < 0:
            return False
        if not c.set_head(h, head, 0, len(head), 200, slot) or not c.append(h, body, 0, len(body)):
            c.abandon(h)
            return False
        return c.commit(h, now_ms)

    # -- bodies -----------------------------------------------------------------------------------

    def unmarshal_json(self, data):
        try:
            return json.loads(data)
        except (ValueError, UnicodeError):
            raise MediationError(400, "bad_request", "the body is not valid JSON")

    @staticmethod
    def marshal_json(value):
        return json.dumps(value, separators=(",", ":")).encode()

    def parse_request(self, ctype, body, message=None):
        """The body (bytes) of a ContentType as a JSON value."""
        try:
            if ctype == ContentType.JSON:
                return self.unmarshal_json(body)
            if ctype == ContentType.FORM_DATA:
                from . import formconv

                return formconv.loads(body, typed=True)  # "21.5" is a number, "true" a boolean
            if ctype == ContentType.XML:
                from . import xmlconv

                return xmlconv.loads(body, typed=True)[1]
            if ctype == ContentType.PROTOBUF:
                return self._messages().decode(message, body)
        except MediationError:
            raise
        except ValueError as e:  # ConvError, ProtoError
            raise MediationError(400, "bad_request", "the %s body does not parse: %s" % (ContentType.NAMES[ctype], e))
        raise MediationError(415, "unsupported_media_type", "cannot read a %s body" % ContentType.NAMES[ctype])

    def encode(self, ctype, value, message=None, root="root"):
        """A JSON value as the body bytes of a ContentType."""
        try:
            if ctype == ContentType.JSON:
                return self.marshal_json(value)
            if ctype == ContentType.FORM_DATA:
                from . import formconv

                return formconv.dumps(value)
            if ctype == ContentType.XML:
                from . import xmlconv

                return xmlconv.dumps(value, root)
            if ctype == ContentType.PROTOBUF:
                return self._messages().encode(message, value)
        except ValueError as e:
            raise MediationError(400, "bad_request", "cannot write the body as %s: %s" % (ContentType.NAMES[ctype], e))
        raise MediationError(415, "unsupported_media_type", "cannot write a %s body" % ContentType.NAMES[ctype])

    def _messages(self):
        if self.messages is None:
            raise MediationError(500, "internal_error", "no protobuf messages configured")
        return self.messages

    @staticmethod
    def _fields(value, rename, drop):
        if not isinstance(value, dict) or (rename is None and not drop):
            return value
        out = {}
        for k, v in value.items():
            if k in drop:
                continue
            out[rename.get(k, k) if rename is not None else k] = v
        return out

    def _check(self, sid, value, status, code):
        msg = self.schemas[sid].errors(value)  # "/value: maximum 100": the pointer and the keyword
        if msg is not None:
            raise MediationError(status, code, msg)

    def transform_request(self, tid, ctype, body):
        """(bytes to send upstream, ContentType) for a request body of ContentType ctype (-1:
        unknown). Raises MediationError (400 bad body, 415 format not taken, 422 schema)."""
        t = self.transforms[tid]
        if not t.req_converts:
            return body, ctype
        if t.req_from and ctype not in t.req_from:
            raise MediationError(
                415,
                "unsupported_media_type",
                "this route takes %s" % ", ".join(ContentType.NAMES[c] for c in t.req_from),
            )
        if ctype < 0:
            raise MediationError(415, "unsupported_media_type", "send a Content-Type the route takes")
        if ctype == ContentType.BINARY:
            if t.req_to >= 0 and t.req_to != ContentType.BINARY:
                raise MediationError(415, "unsupported_media_type", "a binary body cannot be converted")
            return body, ctype
        value = self.parse_request(ctype, body, t.req_message if ctype == ContentType.PROTOBUF else None)
        if t.req_schema >= 0:
            self._check(t.req_schema, value, 422, "validation_failed")
        value = self._fields(value, t.req_rename, t.req_drop)
        to = t.req_to if t.req_to >= 0 else ctype
        out = self.encode(to, value, t.req_message, t.xml_root)
        if t.grpc is not None:
            from .grpcweb import frame

            out = frame(out)
        self.converted += 1
        return out, to

    def validate_response(self, tid, value):
        """None, or (pointer, keyword) of the first value the response schema refuses."""
        t = self.transforms[tid]
        return None if t.resp_schema < 0 else self.schemas[t.resp_schema].validate(value)

    def transform_response(self, tid, status, ctype, body, accept=-1):
        """(status, ContentType, body bytes, extra header lines) for the client, from the
        upstream's status, ContentType (-1: unknown) and body. accept: the client's preferred
        ContentType (-1: none). Raises MediationError (502) when the answer cannot be used."""
        t = self.transforms[tid]
        extra = t.resp_headers_add
        if t.grpc is not None:
            from .grpcweb import unframe_response

            status, body, code, message = unframe_response(status, body)
            if status != 200:
                return status, ContentType.JSON, error_json(status, code, message), extra
            ctype = ContentType.PROTOBUF
        if t.status_map is not None:
            status = t.status_map.get(status, status)
        src = t.resp_from if t.resp_from >= 0 else ctype
        plain = t.resp_schema < 0 and t.resp_rename is None and not t.resp_drop
        if t.resp_to >= 0:
            to = t.resp_to
        elif src < 0 or src == ContentType.BINARY:
            to = src  # a format the gateway does not read (text/plain, HTML, ...): as it came
        else:
            to = accept if accept >= 0 else ContentType.JSON  # what the client asked for, else JSON
        if (src == to and plain) or not body:
            return status, src, body, extra
        if src < 0 or src == ContentType.BINARY:
            raise MediationError(502, "bad_gateway", "the service's answer has no format the route can convert")
        try:
            value = self.parse_request(src, body, t.resp_message)
        except MediationError as e:
            raise MediationError(502, "bad_gateway", "the service's answer: " + e.message)
        if t.resp_schema >= 0:
            msg = self.schemas[t.resp_schema].errors(value)
            if msg is not None:
                if t.resp_on_invalid:
                    raise MediationError(
                        t.resp_on_invalid, "bad_gateway", "the service's answer fails the schema: " + msg
                    )
                extra = extra + b'Warning: 199 apigw "the answer fails the schema"\r\n'
        value = self._fields(value, t.resp_rename, t.resp_drop)
        try:
            out = self.encode(to, value, t.resp_message, t.xml_root)
        except MediationError as e:
            raise MediationError(502, "bad_gateway", e.message)
        self.converted += 1
        return status, to, out, extra

    def get_error_response(self, status, code=None, message=None):
        """The gateway's one error shape (errors.py) as what the server sends."""
        self.refused += 1
        return ApiError(status, error_json(status, code, message))

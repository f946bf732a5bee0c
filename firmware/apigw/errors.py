"""The one shape of every error the gateway answers: {"status": N, "error": "code", "message": "..."}.

Owns: the error codes, their statuses and default messages, and the JSON bodies, made once per
(status, code) and kept, so a repeated error allocates nothing. Every stage (parser, router,
auth, mediation, relay) answers through here. Must not do I/O or know the request.
"""

import json

# code -> (status, default message). Codes are short snake_case tokens a client can branch on.
CODES = {
    "bad_request": (400, "the request is malformed"),
    "unauthorized": (401, "credentials are required"),
    "missing_credentials": (401, "this route needs a credential"),
    "invalid_token": (401, "the token is not valid"),
    "invalid_credentials": (401, "wrong user name or password"),
    "invalid_key": (401, "the API key is not valid"),
    "forbidden": (403, "the caller may not do this"),
    "not_found": (404, "no route matches the path"),
    "method_not_allowed": (405, "the route does not take this method"),
    "not_acceptable": (406, "no representation the client accepts"),
    "conflict": (409, "the request conflicts with the gateway's state"),
    "request_timeout": (408, "the request did not arrive in time"),
    "length_required": (411, "a chunked request body is not accepted: send Content-Length"),
    "content_too_large": (413, "the request body is larger than the gateway takes"),
    "uri_too_long": (414, "the request target is too long"),
    "unsupported_media_type": (415, "the route does not take this Content-Type"),
    "expectation_failed": (417, "only Expect: 100-continue is supported"),
    "validation_failed": (422, "the body does not match the route's schema"),
    "rate_limited": (429, "too many requests: retry later"),
    "request_header_fields_too_large": (431, "the request head is larger than the gateway takes"),
    "internal_error": (500, "the gateway failed; the error is logged"),
    "not_implemented": (501, "the method or transfer coding is not supported"),
    "bad_gateway": (502, "the service did not answer properly"),
    "service_unavailable": (503, "the gateway is busy: retry later"),
    "introspection_unavailable": (503, "the token introspection endpoint is unavailable"),
    "gateway_timeout": (504, "the service did not answer in time"),
    "http_version_not_supported": (505, "only HTTP/1.0 and HTTP/1.1 are supported"),
}

# status -> the code used when only a status is known.
BY_STATUS = {}
for _code, (_status, _msg) in CODES.items():
    if _status not in BY_STATUS:
        BY_STATUS[_status] = _code

_bodies = {}  # code -> JSON bytes with the default message


def error_json(status, code=None, message=None):
    """The JSON body for an error. With a known code, its own status and the default message it
    is made once and reused: a dict lookup by an interned str, no allocation after the first time."""
    if code is None:
        code = BY_STATUS.get(status, "error")
    if message is None:
        known = CODES.get(code)
        if known is not None and known[0] == status:
            body = _bodies.get(code)
            if body is None:
                body = _bodies[code] = _make(status, code, known[1])
            return body
        message = "error"
    return _make(status, code, message)


def _make(status, code, message):
    return ('{"status":%d,"error":%s,"message":%s}' % (status, json.dumps(code), json.dumps(message))).encode()


def status_of(code):
    """The status a code is answered with (500 for an unknown code)."""
    return CODES[code][0] if code in CODES else 500

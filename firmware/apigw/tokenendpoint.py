"""POST /_gw/token: the OAuth2 client-credentials grant (RFC 6749 section 4.4) at the gateway.

A client authenticates with HTTP Basic (RFC 6749 section 2.3.1: client_id and client_secret,
form-encoded, then base64) or with client_id/client_secret in the form body. The client is a user
(name and password) or an API key (its id and the part after the dot). The answer is a JWT with
the principal's role and permissions (narrowed by `scope` if asked), as RFC 6749 section 5.1
shapes it, or an error as section 5.2 does. Owns only that exchange; allocates freely (one
request per token, not on the proxy path). Must not do I/O: the server sends what it returns.
"""

import binascii
import json

from . import formconv
from .authtypes import EPOCH_BASE, AuthError, Permission

NO_STORE = b"Cache-Control: no-store\r\nPragma: no-cache\r\n"
BASIC_CHALLENGE = b'WWW-Authenticate: Basic realm="apigw"\r\n' + NO_STORE


def _error(status, code, description, extra=NO_STORE):
    return status, json.dumps({"error": code, "error_description": description}).encode(), extra


def issue(manager, authorization, body):
    """(status, JSON body bytes, extra header lines) for a token request. authorization: the
    Authorization header value (bytes) or None; body: the request body (bytes)."""
    try:
        form = formconv.loads(body)  # ConvError is a ValueError
    except (ValueError, UnicodeError):
        return _error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    for v in form.values():
        if isinstance(v, list):  # RFC 6749 3.2: no parameter may be sent twice
            return _error(400, "invalid_request", "a parameter is repeated")
    if form.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", "only grant_type=client_credentials")
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    if authorization is not None:
        if client_id is not None:
            return _error(400, "invalid_request", "one client authentication method only")
        if authorization[:6].lower() != b"basic ":
            return _error(401, "invalid_client", "use HTTP Basic client authentication", BASIC_CHALLENGE)
        try:
            pair = binascii.a2b_base64(authorization[6:].strip()).decode()
        except (ValueError, UnicodeError):
            return _error(401, "invalid_client", "malformed Basic credentials", BASIC_CHALLENGE)
        cid, colon, csec = pair.partition(":")
        if not colon:
            return _error(401, "invalid_client", "malformed Basic credentials", BASIC_CHALLENGE)
        try:  # RFC 6749 2.3.1: id and secret are form-encoded before base64
            client_id, secret = formconv.unquote(cid.encode()), formconv.unquote(csec.encode())
        except ValueError:
            return _error(401, "invalid_client", "malformed Basic credentials", BASIC_CHALLENGE)
    if not client_id or secret is None:
        return _error(401, "invalid_client", "client authentication required", BASIC_CHALLENGE)
    if client_id in manager._k_ids:
        try:
            entry = manager.verify_api_key(client_id + "." + secret)
        except AuthError:
            return _error(401, "invalid_client", "client authentication failed", BASIC_CHALLENGE)
        role, held = entry.role, entry.permissions
    elif manager.verify_password(client_id, secret):
        uid = manager._u_ids[client_id]
        role, held = manager._u_role[uid], manager._u_perms[uid]
    else:
        return _error(401, "invalid_client", "client authentication failed", BASIC_CHALLENGE)
    perms = held
    if "scope" in form:
        try:
            asked = Permission.parse(form["scope"].split(), "scope")
        except AuthError:
            return _error(400, "invalid_scope", "scope: names from read, write, execute, admin")
        if asked & ~held:
            return _error(400, "invalid_scope", "scope asks for more than the client holds")
        perms = asked
    try:
        token, info = manager.issue_token(client_id, role, perms)
    except AuthError as e:
        return _error(e.status if e.status >= 500 else 503, e.code, e.message)
    answer = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": info.expiry - (manager.now + EPOCH_BASE),
        "scope": " ".join(Permission.names(perms)),
    }
    return 200, json.dumps(answer).encode(), NO_STORE

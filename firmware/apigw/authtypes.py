"""The auth module's value types: the spec's TokenType, Role, Permission, AuthToken, ApiKeyEntry.

Owns: the small-int enums and their names, the default permission mask of each role, parsing of
permission and role names (config, shell), the display objects, AuthError (an HTTP status and a
short code the client may see), and the gateway clock in whole seconds. Must not hold tables or do
I/O; nothing here is on the request path except the constants.
"""

import time

# Seconds are counted from this instant (2023-11-14) so that they stay small ints on a board,
# where an int at or above 2**30 is a heap object (unix time passed 2**30 in 2004).
EPOCH_BASE = 1700000000
# A board's time.time() counts from 2000 on some ports, from 1970 on others.
_PORT_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


def clock_s():
    """Seconds since EPOCH_BASE by the board's clock: <= 0 means the clock was never set (no NTP
    yet), and anything that needs the date must fail closed. Allocates on the unix port (a float):
    call it from the server's tick, not per request."""
    return int(time.time()) + _PORT_EPOCH - EPOCH_BASE


class TokenType:
    JWT = 0
    API_KEY = 1
    BASIC = 2
    BEARER = 3  # opaque, checked by introspection
    NAMES = ("jwt", "api_key", "basic", "bearer")


class Permission:
    """Permission bits; a principal holds a mask of them."""

    READ = 1
    WRITE = 2
    EXECUTE = 4
    ADMIN = 8
    ALL = 15
    NAMES = ("read", "write", "execute", "admin")

    @staticmethod
    def parse(value, field="permissions"):
        """A list of names (or one name, or an int mask) -> mask. Raises AuthError naming field."""
        if type(value) is int:
            if 0 <= value <= 15:
                return value
            raise AuthError(400, "bad_request", "%s: mask must be 0-15" % field)
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)):
            raise AuthError(400, "bad_request", "%s: must be a list of permission names" % field)
        mask = 0
        for name in value:
            if name not in Permission.NAMES:
                raise AuthError(
                    400, "bad_request", "%s: unknown permission %r (known: read, write, execute, admin)" % (field, name)
                )
            mask |= 1 << Permission.NAMES.index(name)
        return mask

    @staticmethod
    def names(mask):
        return [Permission.NAMES[i] for i in range(4) if mask & (1 << i)]


class Role:
    ADMIN = 0
    SERVICE_ACCOUNT = 1
    USER = 2
    GUEST = 3
    NAMES = ("admin", "service_account", "user", "guest")
    # What each role may do unless a principal's own mask says otherwise.
    DEFAULTS = (
        Permission.ALL,
        Permission.READ | Permission.WRITE | Permission.EXECUTE,
        Permission.READ | Permission.WRITE,
        Permission.READ,
    )

    @staticmethod
    def parse(value, field="role"):
        if type(value) is int and 0 <= value <= 3:
            return value
        if value in Role.NAMES:
            return Role.NAMES.index(value)
        raise AuthError(400, "bad_request", "%s: must be one of admin, service_account, user, guest" % field)


class AuthError(ValueError):
    """A refused credential or change. status: 400/401/403/404/409/503; code: a short token for the
    JSON body (invalid_token, invalid_key, ...); message: safe to show (never a secret)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AuthToken:
    """An issued or validated token, as the spec names its fields (expiry: unix seconds or None)."""

    def __init__(self, token_id, user_id, role, permissions, expiry):
        self.token_id = token_id
        self.user_id = user_id
        self.role = role
        self.permissions = permissions
        self.expiry = expiry

    def as_dict(self):
        return {
            "token_id": self.token_id,
            "user_id": self.user_id,
            "role": Role.NAMES[self.role],
            "permissions": Permission.names(self.permissions),
            "expiry": self.expiry,
        }


class ApiKeyEntry:
    """An API key as shown: its public id, never the secret (secret is set only on the value
    register_api_key returns, the one time the key is shown)."""

    def __init__(self, key, service_name, permissions, role, secret=None, digest_prefix=""):
        self.key = key
        self.secret = secret
        self.service_name = service_name
        self.permissions = permissions
        self.role = role
        self.digest_prefix = digest_prefix

    def as_dict(self):
        return {
            "key": self.key,
            "service": self.service_name,
            "role": Role.NAMES[self.role],
            "permissions": Permission.names(self.permissions),
            "digest": self.digest_prefix,
        }

"""UserTable: the users of the auth stage, and what every principal table shares.

Owns: users (name, role, permission mask, 16-byte salt and PBKDF2-HMAC-SHA256 hash in flat
tables; never a password), Basic credential checks, the validated-credential cache, and the p_*
attributes where a check leaves its conclusion. ApiKeyTable and AuthenticationManager build on it.
Must not parse HTTP or do I/O; _save() (the state file) is the manager's.
"""

import binascii

from . import crypto
from .authtypes import AuthError, Permission, Role, TokenType
from .credcache import CredCache
from .strtab import table

SALT = 16
DIGEST = 32


def hexstr(b):
    return "".join("%02x" % c for c in b)


class UserTable:
    def __init__(self, max_users, pbkdf2_iterations, cache_entries, cache_bytes):
        self.max_users = U = max_users
        self.pbkdf2_iterations = pbkdf2_iterations
        self.now = 0  # gateway seconds (authtypes.clock_s), set by the server's tick; <= 0: no clock
        self.cache = CredCache(cache_entries, cache_bytes)
        self._u_name = [None] * U  # type: list
        self._u_ids = {}
        self._u_role = bytearray(U)
        self._u_perms = bytearray(U)
        self._u_salt = bytearray(U * SALT)
        self._u_hash = bytearray(U * DIGEST)
        self._u_iter = table("I", U)  # 0: no password (the user can hold tokens, not log in)
        self._added_users = []  # users added at run time, for the state file
        # The last check's conclusion (the request path reads these; no allocation).
        self.p_kind = -1
        self.p_principal = -1
        self.p_role = Role.GUEST
        self.p_perms = 0
        self.p_service = None
        self.p_cache = -1

    def _save(self):
        """Write the runtime changes to the state file (AuthenticationManager does)."""

    # -- users ------------------------------------------------------------------------------------

    def add_user(self, name, role="user", permissions=None, password=None, salt=None, digest=None, iterations=None):
        """Add a user. A password is stored as a salted PBKDF2-HMAC-SHA256 hash (or pass salt and
        digest, hex, as a config does). Returns the user id."""
        if not isinstance(name, str) or not name or ":" in name:
            raise AuthError(400, "bad_request", "name: must be a non-empty string without ':'")
        if name in self._u_ids:
            raise AuthError(409, "conflict", "user %r already exists" % name)
        r = Role.parse(role)
        perms = Role.DEFAULTS[r] if permissions is None else Permission.parse(permissions)
        try:
            uid = self._u_name.index(None)
        except ValueError:
            raise AuthError(507, "full", "user table full (%d)" % self.max_users)
        n = 0
        salt_b = digest_b = b""
        if password is not None:
            n = iterations or self.pbkdf2_iterations
            salt_b = crypto.random_bytes(SALT)
            digest_b = crypto.pbkdf2_hmac_sha256(password.encode(), salt_b, n)
        elif digest is not None:
            n = iterations or self.pbkdf2_iterations
            try:
                salt_b = bytes.fromhex(salt or "")
                digest_b = bytes.fromhex(digest)
            except (ValueError, TypeError):
                raise AuthError(400, "bad_request", "salt/hash: must be hex")
            if len(salt_b) != SALT or len(digest_b) != DIGEST:
                raise AuthError(400, "bad_request", "salt/hash: need 16 and 32 bytes of hex")
        if n:
            self._u_salt[uid * SALT : (uid + 1) * SALT] = salt_b
            self._u_hash[uid * DIGEST : (uid + 1) * DIGEST] = digest_b
        self._u_iter[uid] = n
        self._u_name[uid] = name
        self._u_ids[name] = uid
        self._u_role[uid] = r
        self._u_perms[uid] = perms
        return uid

    def add_user_record(self, d):
        """add_user from a record as user_record() makes it (the config, the state file)."""
        return self.add_user(
            d.get("name"),
            d.get("role", "user"),
            d.get("permissions"),
            None,
            d.get("salt"),
            d.get("hash"),
            d.get("iterations"),
        )

    def user_record(self, name):
        """The user as a config stores it: role, permissions, salt, hash, iterations (hex)."""
        uid = self._user(name)
        i = self._u_iter[uid]
        d = {"name": name, "role": Role.NAMES[self._u_role[uid]], "permissions": Permission.names(self._u_perms[uid])}
        if i:
            d["salt"] = hexstr(self._u_salt[uid * SALT : (uid + 1) * SALT])
            d["hash"] = hexstr(self._u_hash[uid * DIGEST : (uid + 1) * DIGEST])
            d["iterations"] = i
        return d

    def remove_user(self, name):
        uid = self._user(name)
        self._u_name[uid] = None
        del self._u_ids[name]
        self._u_iter[uid] = 0
        self.cache.clear()

    def list_users(self):
        return [
            {"name": n, "role": Role.NAMES[self._u_role[i]], "permissions": Permission.names(self._u_perms[i])}
            for i, n in enumerate(self._u_name)
            if n is not None
        ]

    def _user(self, name):
        uid = self._u_ids.get(name, -1)
        if uid < 0:
            raise AuthError(404, "not_found", "no user %r" % (name,))
        return uid

    def verify_password(self, name, password):
        """True if password is the user's (PBKDF2: costs iterations * 2 SHA-256 blocks)."""
        uid = self._u_ids.get(name, -1)
        if uid < 0 or not self._u_iter[uid]:
            return False
        salt = bytes(self._u_salt[uid * SALT : (uid + 1) * SALT])
        got = crypto.pbkdf2_hmac_sha256(
            password if isinstance(password, bytes) else password.encode(), salt, self._u_iter[uid]
        )
        return crypto.ct_eq(got, self._u_hash[uid * DIGEST : (uid + 1) * DIGEST])

    def get_user_roles(self, name):
        """The roles a user holds (one per user here), as names."""
        return [Role.NAMES[self._u_role[self._user(name)]]]

    # -- Basic ------------------------------------------------------------------------------------

    def check_basic(self, buf, start, end):
        """Check the base64 user:password in buf[start:end]; set the p_* attributes or raise
        AuthError(401). A credential seen before costs one SHA-256 (its digest is the cache key:
        the password itself is never kept) instead of the PBKDF2."""
        digest = crypto.sha256(memoryview(buf)[start:end])
        c = self.cache
        i = c.find(digest, 0, DIGEST, self.now)
        if i >= 0 and c.kind[i] == TokenType.BASIC:
            uid = c.principal[i]
            self._set_user(TokenType.BASIC, uid, i)
            return
        try:
            name, _, password = binascii.a2b_base64(bytes(buf[start:end])).decode().partition(":")
        except Exception:
            raise AuthError(401, "invalid_credentials", "malformed Basic credentials")
        if not self.verify_password(name, password):
            raise AuthError(401, "invalid_credentials", "wrong user name or password")
        uid = self._u_ids[name]
        i = c.put(digest, 0, DIGEST, TokenType.BASIC, uid, self._u_role[uid], self._u_perms[uid], -1, 0)
        self._set_user(TokenType.BASIC, uid, i)

    def _set_user(self, kind, uid, cache_index):
        self.p_kind = kind
        self.p_principal = uid
        self.p_role = self._u_role[uid]
        self.p_perms = self._u_perms[uid]
        self.p_service = None
        self.p_cache = cache_index

    def add_user_saved(self, name, role="user", permissions=None, password=None):
        """add_user, kept across reboots in the state file (the shell's `auth users add`)."""
        uid = self.add_user(name, role, permissions, password)
        self._added_users.append(self.user_record(name))
        self._save()
        return uid

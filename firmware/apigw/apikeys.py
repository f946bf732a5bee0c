"""ApiKeyTable: API keys, kept as SHA-256 digests in one flat table.

Owns: making keys (`<8 hex id>.<32 base64url>` from os.urandom, shown once), adding keys known by
their digest (the config), the bound service, role and permissions of each, revoking and listing
(id and digest prefix only), and the per-request check. Must not keep a key itself, parse HTTP or
do I/O.
"""

from . import crypto
from .authtypes import ApiKeyEntry, AuthError, Permission, Role, TokenType
from .authusers import DIGEST, UserTable, hexstr
from .native import mem_eq

KEY_ID_LEN = 8  # hex characters of an API key's public id
# principal numbers (rate-limit keys, cache entries): users from 0, API keys from KEY_BASE, other
# token subjects from SUBJECT_BASE + a 12-bit hash of the subject.
KEY_BASE = 4096
SUBJECT_BASE = 8192


class ApiKeyTable(UserTable):
    def __init__(self, max_api_keys, max_users, pbkdf2_iterations, cache_entries, cache_bytes):
        super().__init__(max_users, pbkdf2_iterations, cache_entries, cache_bytes)
        self.max_api_keys = K = max_api_keys
        self._k_ids = {}  # public id -> index
        self._k_id = [None] * K  # type: list
        self._k_digest = bytearray(K * DIGEST)
        self._k_service = [None] * K  # type: list # service name, or None for any
        self._k_role = bytearray(K)
        self._k_perms = bytearray(K)
        self._added_keys = []  # runtime changes, for the state file
        self._dropped_keys = []

    # -- API keys ---------------------------------------------------------------------------------

    def register_api_key(self, service_name=None, permissions=None, role="service_account", _save=True):
        """Make a new API key. Returns an ApiKeyEntry whose .secret is the whole key: it is shown
        this once and only its SHA-256 digest is kept."""
        r = Role.parse(role)
        perms = Role.DEFAULTS[r] if permissions is None else Permission.parse(permissions)
        while True:
            kid = hexstr(crypto.random_bytes(KEY_ID_LEN // 2))
            if kid not in self._k_ids:
                break
        whole = kid + "." + crypto.b64url_encode(crypto.random_bytes(24)).decode()
        digest = crypto.sha256(whole.encode())
        self.add_api_key_digest(kid, digest, service_name, perms, r)
        if _save:
            self._added_keys.append(self.api_key_record(kid))
            self._save()
        e = self._key_entry(self._k_ids[kid])
        e.secret = whole
        return e

    def add_api_key_digest(
        self, key_id, digest, service_name=None, permissions=Permission.READ, role=Role.SERVICE_ACCOUNT
    ):
        """Add a key known by its id and digest (bytes, or hex as a config holds it)."""
        if not isinstance(key_id, str) or len(key_id) != KEY_ID_LEN or any(c not in "0123456789abcdef" for c in key_id):
            raise AuthError(400, "bad_request", "id: must be %d lower-case hex characters" % KEY_ID_LEN)
        if key_id in self._k_ids:
            raise AuthError(409, "conflict", "key %s already exists" % key_id)
        if isinstance(digest, str):
            try:
                digest = bytes.fromhex(digest)
            except ValueError:
                digest = b""
        if len(digest) != DIGEST:
            raise AuthError(400, "bad_request", "digest: must be 64 hex characters (SHA-256)")
        try:
            i = self._k_id.index(None)
        except ValueError:
            raise AuthError(507, "full", "API key table full (%d)" % self.max_api_keys)
        self._k_id[i] = key_id
        self._k_ids[key_id] = i
        self._k_digest[i * DIGEST : (i + 1) * DIGEST] = digest
        self._k_service[i] = service_name
        self._k_role[i] = Role.parse(role)
        self._k_perms[i] = Permission.parse(permissions)
        return i

    def api_key_record(self, key_id):
        i = self._key(key_id)
        return {
            "id": key_id,
            "digest": hexstr(self._k_digest[i * DIGEST : (i + 1) * DIGEST]),
            "service": self._k_service[i],
            "role": Role.NAMES[self._k_role[i]],
            "permissions": Permission.names(self._k_perms[i]),
        }

    def _key(self, key_id):
        i = self._k_ids.get(key_id, -1)
        if i < 0:
            raise AuthError(404, "not_found", "no API key %r" % (key_id,))
        return i

    def _key_entry(self, i):
        prefix = hexstr(self._k_digest[i * DIGEST : i * DIGEST + 4])
        return ApiKeyEntry(self._k_id[i], self._k_service[i], self._k_perms[i], self._k_role[i], None, prefix)

    def revoke_api_key(self, key_id):
        i = self._key(key_id)
        self._k_id[i] = None
        del self._k_ids[key_id]
        for j in range(i * DIGEST, (i + 1) * DIGEST):
            self._k_digest[j] = 0
        self._added_keys = [k for k in self._added_keys if k["id"] != key_id]
        self._dropped_keys.append(key_id)
        self.cache.clear()
        self._save()

    def list_api_keys(self):
        return [self._key_entry(i).as_dict() for i in range(self.max_api_keys) if self._k_id[i] is not None]

    def verify_api_key(self, key):
        """ApiKeyEntry for a whole key (str or bytes); raises AuthError 401 invalid_key."""
        b = key.encode() if isinstance(key, str) else bytes(key)
        if not self.check_api_key(b, 0, len(b)):
            raise AuthError(401, "invalid_key", "unknown or revoked API key")
        return self._key_entry(self.p_principal - KEY_BASE)

    def check_api_key(self, buf, start, end):
        """Check the key in buf[start:end]: True and the p_* attributes set, or False. One
        SHA-256 per call (allocates a hash object and a digest)."""
        n = end - start
        if n != KEY_ID_LEN + 33 or buf[start + KEY_ID_LEN] != 46:  # "<8 hex>.<32 base64url>"
            return False
        i = self._k_ids.get(bytes(buf[start : start + KEY_ID_LEN]).decode(), -1)
        if i < 0:
            return False
        digest = crypto.sha256(memoryview(buf)[start:end])
        if not mem_eq(digest, 0, self._k_digest, i * DIGEST, DIGEST):
            return False
        self.p_kind = TokenType.API_KEY
        self.p_principal = KEY_BASE + i
        self.p_role = self._k_role[i]
        self.p_perms = self._k_perms[i]
        self.p_service = self._k_service[i]
        self.p_cache = -1
        return True

"""AuthenticationManager: users, API keys, issued tokens, revocations and credential checks.

Owns: the principal tables (users with salted PBKDF2 hashes, API keys stored as SHA-256 digests in
one flat table, issued tokens, revoked token ids), the JWT keys and claims policy, the validated-
credential cache, and the spec's methods (issue_token, validate_token, register_api_key,
verify_api_key, grant_permission, revoke_permission, check_permission, refresh_token,
revoke_token, get_user_roles, get_token_count, ...). Runtime changes (keys added or revoked,
users added, grants, revoked tokens) are saved to a state file with an atomic write and applied
again at boot. Must not parse HTTP or know routes (authgate.py does) and must not do network I/O.

The check_* methods are what a request costs: each leaves its conclusion in the p_* attributes.
A JWT or Basic credential seen before is answered from the cache without allocating; a first
sight verifies it (HMAC, JSON, PBKDF2: allocates) and caches the result. An API key costs one
SHA-256 (a hash object and a digest) per request.
"""

from . import crypto
from . import jwt as jwtlib
from .authtypes import EPOCH_BASE, ApiKeyEntry, AuthError, AuthToken, Permission, Role, TokenType
from .credcache import CredCache
from .native import mem_eq
from .strtab import table

KEY_ID_LEN = 8  # hex characters of an API key's public id
_SALT = 16
_DIGEST = 32
# principal numbers (rate-limit keys, cache entries): users from 0, API keys from KEY_BASE, other
# token subjects from SUBJECT_BASE + a 12-bit hash of the subject.
KEY_BASE = 4096
SUBJECT_BASE = 8192


def _hex(b):
    return "".join("%02x" % c for c in b)


class AuthenticationManager:
    def __init__(
        self,
        max_tokens=256,
        max_api_keys=512,
        max_users=32,
        max_revoked=256,
        cache_entries=16,
        cache_bytes=512,
        jwt_keys=None,
        signing_kid=None,
        issuer=None,
        audience=None,
        leeway_s=30,
        token_ttl_s=3600,
        max_token_len=2048,
        pbkdf2_iterations=1000,
        state_path=None,
    ):
        self.max_tokens = max_tokens
        self.max_api_keys = max_api_keys
        self.max_users = max_users
        self.max_revoked = max_revoked
        self.token_ttl_s = token_ttl_s
        self.pbkdf2_iterations = pbkdf2_iterations
        self.state_path = state_path
        self.now = 0  # gateway seconds (authtypes.clock_s), set by the server's tick; <= 0: no clock
        # JWT keys: {kid: key bytes}; tokens are signed with signing_kid's key.
        self.jwt_keys = jwt_keys or {}
        self.signing_kid = signing_kid
        self.issuer = issuer
        self.audience = audience
        self.verifier = jwtlib.JwtVerifier(self.jwt_keys, signing_kid, leeway_s, issuer, audience, max_token_len)
        # Users.
        U = max_users
        self._u_name = [None] * U  # type: list
        self._u_ids = {}
        self._u_role = bytearray(U)
        self._u_perms = bytearray(U)
        self._u_salt = bytearray(U * _SALT)
        self._u_hash = bytearray(U * _DIGEST)
        self._u_iter = table("I", U)  # 0: no password (the user can hold tokens, not log in)
        # API keys: public id, SHA-256 digest of the whole key, bound service, role, permissions.
        K = max_api_keys
        self._k_ids = {}  # public id -> index
        self._k_id = [None] * K  # type: list
        self._k_digest = bytearray(K * _DIGEST)
        self._k_service = [None] * K  # type: list # service name, or None for any
        self._k_role = bytearray(K)
        self._k_perms = bytearray(K)
        # Issued tokens (the spec's 256), by jti.
        T = max_tokens
        self._t_ids = {}
        self._t_jti = [None] * T  # type: list
        self._t_user = [None] * T  # type: list
        self._t_role = bytearray(T)
        self._t_perms = bytearray(T)
        self._t_exp = table("i", T)  # gateway seconds
        self._revoked = {}  # jti -> expiry in unix seconds (0: none), kept until it passes
        self.cache = CredCache(cache_entries, cache_bytes)
        # Runtime changes, saved to state_path.
        self._added_keys = []
        self._added_users = []
        self._dropped_keys = []
        self._grants = {}
        # The last check's conclusion (the request path reads these; no allocation).
        self.p_kind = -1
        self.p_principal = -1
        self.p_role = Role.GUEST
        self.p_perms = 0
        self.p_service = None
        self.p_cache = -1

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
            salt_b = crypto.random_bytes(_SALT)
            digest_b = crypto.pbkdf2_hmac_sha256(password.encode(), salt_b, n)
        elif digest is not None:
            n = iterations or self.pbkdf2_iterations
            try:
                salt_b = bytes.fromhex(salt or "")
                digest_b = bytes.fromhex(digest)
            except (ValueError, TypeError):
                raise AuthError(400, "bad_request", "salt/hash: must be hex")
            if len(salt_b) != _SALT or len(digest_b) != _DIGEST:
                raise AuthError(400, "bad_request", "salt/hash: need 16 and 32 bytes of hex")
        if n:
            self._u_salt[uid * _SALT : (uid + 1) * _SALT] = salt_b
            self._u_hash[uid * _DIGEST : (uid + 1) * _DIGEST] = digest_b
        self._u_iter[uid] = n
        self._u_name[uid] = name
        self._u_ids[name] = uid
        self._u_role[uid] = r
        self._u_perms[uid] = perms
        return uid

    def user_record(self, name):
        """The user as a config stores it: role, permissions, salt, hash, iterations (hex)."""
        uid = self._user(name)
        i = self._u_iter[uid]
        d = {"name": name, "role": Role.NAMES[self._u_role[uid]], "permissions": Permission.names(self._u_perms[uid])}
        if i:
            d["salt"] = _hex(self._u_salt[uid * _SALT : (uid + 1) * _SALT])
            d["hash"] = _hex(self._u_hash[uid * _DIGEST : (uid + 1) * _DIGEST])
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
        salt = bytes(self._u_salt[uid * _SALT : (uid + 1) * _SALT])
        got = crypto.pbkdf2_hmac_sha256(
            password if isinstance(password, bytes) else password.encode(), salt, self._u_iter[uid]
        )
        return crypto.ct_eq(got, self._u_hash[uid * _DIGEST : (uid + 1) * _DIGEST])

    def get_user_roles(self, name):
        """The roles a user holds (one per user here), as names."""
        return [Role.NAMES[self._u_role[self._user(name)]]]

    # -- API keys ---------------------------------------------------------------------------------

    def register_api_key(self, service_name=None, permissions=None, role="service_account", _save=True):
        """Make a new API key. Returns an ApiKeyEntry whose .secret is the whole key: it is shown
        this once and only its SHA-256 digest is kept."""
        r = Role.parse(role)
        perms = Role.DEFAULTS[r] if permissions is None else Permission.parse(permissions)
        while True:
            kid = _hex(crypto.random_bytes(KEY_ID_LEN // 2))
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
        if len(digest) != _DIGEST:
            raise AuthError(400, "bad_request", "digest: must be 64 hex characters (SHA-256)")
        try:
            i = self._k_id.index(None)
        except ValueError:
            raise AuthError(507, "full", "API key table full (%d)" % self.max_api_keys)
        self._k_id[i] = key_id
        self._k_ids[key_id] = i
        self._k_digest[i * _DIGEST : (i + 1) * _DIGEST] = digest
        self._k_service[i] = service_name
        self._k_role[i] = Role.parse(role)
        self._k_perms[i] = Permission.parse(permissions)
        return i

    def api_key_record(self, key_id):
        i = self._key(key_id)
        return {
            "id": key_id,
            "digest": _hex(self._k_digest[i * _DIGEST : (i + 1) * _DIGEST]),
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
        prefix = _hex(self._k_digest[i * _DIGEST : i * _DIGEST + 4])
        return ApiKeyEntry(self._k_id[i], self._k_service[i], self._k_perms[i], self._k_role[i], None, prefix)

    def revoke_api_key(self, key_id):
        i = self._key(key_id)
        self._k_id[i] = None
        del self._k_ids[key_id]
        for j in range(i * _DIGEST, (i + 1) * _DIGEST):
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
        if not mem_eq(digest, 0, self._k_digest, i * _DIGEST, _DIGEST):
            return False
        self.p_kind = TokenType.API_KEY
        self.p_principal = KEY_BASE + i
        self.p_role = self._k_role[i]
        self.p_perms = self._k_perms[i]
        self.p_service = self._k_service[i]
        self.p_cache = -1
        return True

    # -- tokens -----------------------------------------------------------------------------------

    def _signing_key(self):
        key = self.jwt_keys.get(self.signing_kid)
        if key is None:
            raise AuthError(503, "no_signing_key", "no JWT signing key configured (secrets file)")
        return key

    def _unix_now(self):
        """Unix seconds, or None when the clock was never set (tokens that need it fail closed)."""
        return self.now + EPOCH_BASE if self.now > 0 else None

    def issue_token(self, user_id, role=None, permissions=None, ttl_s=None):
        """Sign a JWT for user_id (a user name or a key id) and record it. Returns (token str,
        AuthToken). Role and permissions default to the user's (or the role's defaults)."""
        now = self._unix_now()
        if now is None:
            raise AuthError(503, "no_clock", "the gateway clock is not set: cannot issue tokens with an expiry")
        uid = self._u_ids.get(user_id, -1)
        r = Role.parse(role) if role is not None else (self._u_role[uid] if uid >= 0 else Role.GUEST)
        if permissions is not None:
            perms = Permission.parse(permissions)
        else:
            perms = self._u_perms[uid] if uid >= 0 else Role.DEFAULTS[r]
        ttl = ttl_s or self.token_ttl_s
        t = self._token_slot(now)
        jti = crypto.b64url_encode(crypto.random_bytes(12)).decode()
        claims = {
            "sub": user_id,
            "jti": jti,
            "iat": now,
            "exp": now + ttl,
            "role": Role.NAMES[r],
            "permissions": Permission.names(perms),
        }
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        token = jwtlib.encode(claims, self._signing_key(), self.signing_kid).decode()
        self._t_jti[t] = jti
        self._t_ids[jti] = t
        self._t_user[t] = user_id
        self._t_role[t] = r
        self._t_perms[t] = perms
        self._t_exp[t] = now + ttl - EPOCH_BASE
        return token, AuthToken(jti, user_id, r, perms, now + ttl)

    def _token_slot(self, now):
        try:
            return self._t_jti.index(None)
        except ValueError:
            pass
        self._drop_expired(now)  # the table is full: drop what expired, then try again
        try:
            return self._t_jti.index(None)
        except ValueError:
            raise AuthError(503, "full", "token table full (%d live tokens)" % self.max_tokens)

    def _drop_expired(self, now):
        g = now - EPOCH_BASE
        for t in range(self.max_tokens):
            if self._t_jti[t] is not None and self._t_exp[t] <= g:
                self._forget_token(t)
        for jti in [j for j, e in self._revoked.items() if e and e <= now]:
            del self._revoked[jti]

    def _forget_token(self, t):
        del self._t_ids[self._t_jti[t]]
        self._t_jti[t] = None
        self._t_user[t] = None
        self.cache.forget_token(t)

    def get_token_count(self):
        """Issued tokens that are neither expired nor revoked."""
        now = self.now
        return sum(
            1 for t in range(self.max_tokens) if self._t_jti[t] is not None and (now <= 0 or self._t_exp[t] > now)
        )

    def list_tokens(self):
        out = []
        for t in range(self.max_tokens):
            if self._t_jti[t] is not None:
                tok = AuthToken(
                    self._t_jti[t], self._t_user[t], self._t_role[t], self._t_perms[t], self._t_exp[t] + EPOCH_BASE
                )
                out.append(tok.as_dict())
        return out

    def validate_token(self, token):
        """AuthToken for a JWT (str or bytes), checked in full (the cache is for requests); raises
        AuthError 401 invalid_token with the reason."""
        b = token.encode() if isinstance(token, str) else bytes(token)
        sub, jti, exp = self._verify_jwt(b, 0, len(b))
        return AuthToken(jti, sub, self.p_role, self.p_perms, exp)

    def check_jwt(self, buf, start, end):
        """Check the JWT in buf[start:end]; set the p_* attributes or raise AuthError(401). A
        token seen before is answered from the cache without allocating."""
        c = self.cache
        i = c.find(buf, start, end, self.now)
        if i >= 0:
            self.p_kind = TokenType.JWT
            self.p_principal = c.principal[i]
            self.p_role = c.role[i]
            self.p_perms = c.perms[i]
            self.p_service = None
            self.p_cache = i
            return
        sub, jti, exp = self._verify_jwt(buf, start, end)
        t = self._t_ids.get(jti, -1) if jti is not None else -1
        expiry = exp - EPOCH_BASE if exp else 0
        self.p_cache = c.put(buf, start, end, TokenType.JWT, self.p_principal, self.p_role, self.p_perms, -1, expiry, t)

    def _verify_jwt(self, buf, start, end):
        """Full check: signature, claims, revocation. Sets p_*; returns (sub, jti, exp)."""
        try:
            claims = self.verifier.verify_span(buf, start, end, self._unix_now())
        except jwtlib.JwtError as e:
            raise AuthError(401, "invalid_token", e.message)
        jti = claims.get("jti")
        if jti is not None and (not isinstance(jti, str) or jti in self._revoked):
            raise AuthError(401, "invalid_token", "token revoked")
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise AuthError(401, "invalid_token", "token has no subject")
        try:
            r = Role.parse(claims.get("role", "guest"), "role claim")
            if "permissions" in claims:
                perms = Permission.parse(claims["permissions"], "permissions claim")
            elif "scope" in claims:
                perms = Permission.parse(str(claims["scope"]).split(), "scope claim")
            else:
                perms = Role.DEFAULTS[r]
        except AuthError as e:
            raise AuthError(401, "invalid_token", e.message)
        uid = self._u_ids.get(sub, -1)
        if uid >= 0:
            perms &= self._u_perms[uid]  # a permission revoked from the user applies to its tokens at once
            principal = uid
        elif sub in self._k_ids:
            i = self._k_ids[sub]
            perms &= self._k_perms[i]
            principal = KEY_BASE + i
        else:
            principal = SUBJECT_BASE + (hash(sub) & 0xFFF)
        self.p_kind = TokenType.JWT
        self.p_principal = principal
        self.p_role = r
        self.p_perms = perms
        self.p_service = None
        self.p_cache = -1
        return sub, jti, claims.get("exp")

    def revoke_token(self, token_or_jti):
        """Revoke a token (the JWT, or its jti). Its jti is kept, and saved, until it expires."""
        jti, exp = self._jti_of(token_or_jti)
        self._revoke(jti, exp)
        return jti

    def _revoke(self, jti, exp):
        if jti not in self._revoked and len(self._revoked) >= self.max_revoked:
            now = self._unix_now()
            if now is not None:
                self._drop_expired(now)
            if len(self._revoked) >= self.max_revoked:
                raise AuthError(507, "full", "revocation list full (%d)" % self.max_revoked)
        self._revoked[jti] = exp or 0
        t = self._t_ids.get(jti, -1)
        if t >= 0:
            self._forget_token(t)
        self.cache.clear()
        self._save()

    def _jti_of(self, token_or_jti):
        s = token_or_jti.decode() if isinstance(token_or_jti, (bytes, bytearray)) else token_or_jti
        if s.count(".") != 2:
            t = self._t_ids.get(s, -1)
            return s, (self._t_exp[t] + EPOCH_BASE if t >= 0 else 0)
        tok = self.validate_token(s)
        if tok.token_id is None:
            raise AuthError(400, "bad_request", "token has no jti: it cannot be revoked, only expire")
        return tok.token_id, tok.expiry

    def is_revoked(self, jti):
        return jti in self._revoked

    def refresh_token(self, token, ttl_s=None):
        """A successor for a valid token (same subject, role, permissions, a new expiry); the old
        one is revoked. Returns (token str, AuthToken)."""
        old = self.validate_token(token)
        new = self.issue_token(old.user_id, old.role, old.permissions, ttl_s)
        if old.token_id is not None:
            self._revoke(old.token_id, old.expiry)
        return new

    # -- Basic ------------------------------------------------------------------------------------

    def check_basic(self, buf, start, end):
        """Check the base64 user:password in buf[start:end]; set the p_* attributes or raise
        AuthError(401). A credential seen before costs one SHA-256 (its digest is the cache key:
        the password itself is never kept) instead of the PBKDF2."""
        digest = crypto.sha256(memoryview(buf)[start:end])
        c = self.cache
        i = c.find(digest, 0, _DIGEST, self.now)
        if i >= 0 and c.kind[i] == TokenType.BASIC:
            uid = c.principal[i]
            self._set_user(TokenType.BASIC, uid, i)
            return
        try:
            import binascii

            name, _, password = binascii.a2b_base64(bytes(buf[start:end])).decode().partition(":")
        except Exception:
            raise AuthError(401, "invalid_credentials", "malformed Basic credentials")
        if not self.verify_password(name, password):
            raise AuthError(401, "invalid_credentials", "wrong user name or password")
        uid = self._u_ids[name]
        i = c.put(digest, 0, _DIGEST, TokenType.BASIC, uid, self._u_role[uid], self._u_perms[uid], -1, 0)
        self._set_user(TokenType.BASIC, uid, i)

    def _set_user(self, kind, uid, cache_index):
        self.p_kind = kind
        self.p_principal = uid
        self.p_role = self._u_role[uid]
        self.p_perms = self._u_perms[uid]
        self.p_service = None
        self.p_cache = cache_index

    def principal_name(self, p):
        """What a principal number stands for, for display: a user, an API key, or a subject."""
        if 0 <= p < KEY_BASE and p < self.max_users and self._u_name[p] is not None:
            return "user " + self._u_name[p]
        if KEY_BASE <= p < KEY_BASE + self.max_api_keys and self._k_id[p - KEY_BASE] is not None:
            return "API key " + self._k_id[p - KEY_BASE]
        return "token subject #%d" % (p - SUBJECT_BASE)

    # -- permissions ------------------------------------------------------------------------------

    def _principal(self, who):
        """(table, index) for a user name or an API key id."""
        if who in self._u_ids:
            return self._u_perms, self._u_ids[who]
        if who in self._k_ids:
            return self._k_perms, self._k_ids[who]
        raise AuthError(404, "not_found", "no user or API key %r" % (who,))

    def grant_permission(self, who, permissions):
        """Add permissions to a user or an API key; returns the new mask."""
        tab, i = self._principal(who)
        tab[i] |= Permission.parse(permissions)
        return self._changed(who, tab[i])

    def revoke_permission(self, who, permissions):
        """Take permissions from a user or an API key (its tokens lose them at once)."""
        tab, i = self._principal(who)
        tab[i] &= ~Permission.parse(permissions) & Permission.ALL
        return self._changed(who, tab[i])

    def _changed(self, who, mask):
        self._grants[who] = mask
        self.cache.clear()
        self._save()
        return mask

    def permissions_of(self, who):
        tab, i = self._principal(who)
        return tab[i]

    @staticmethod
    def check_permission(held, needed):
        """True if the mask held (an int, or an AuthToken/ApiKeyEntry) has every bit of needed."""
        if not isinstance(held, int):
            held = held.permissions
        return held & needed == needed

    # -- state file -------------------------------------------------------------------------------

    def _save(self):
        if self.state_path is None:
            return
        from .store import write_json

        write_json(
            self.state_path,
            {
                "revoked": [[j, e] for j, e in self._revoked.items()],
                "keys_added": self._added_keys,
                "keys_revoked": self._dropped_keys,
                "users_added": self._added_users,
                "grants": self._grants,
            },
        )

    def load_state(self):
        """Apply the saved runtime changes (after the config's keys and users are in)."""
        if self.state_path is None:
            return
        from .store import read_json

        try:
            s = read_json(self.state_path)
        except ValueError:
            raise AuthError(500, "bad_state", "%s: not valid JSON" % self.state_path)
        if not s:
            return
        for jti, exp in s.get("revoked", []):
            self._revoked[jti] = exp
        for k in s.get("keys_added", []):
            if k["id"] not in self._k_ids:
                self.add_api_key_digest(
                    k["id"], k["digest"], k.get("service"), k.get("permissions", []), k.get("role", "service_account")
                )
            self._added_keys.append(k)
        for key_id in s.get("keys_revoked", []):
            if key_id in self._k_ids:
                i = self._k_ids.pop(key_id)
                self._k_id[i] = None
            self._dropped_keys.append(key_id)
        for u in s.get("users_added", []):
            if u["name"] not in self._u_ids:
                self.add_user(
                    u["name"],
                    u.get("role", "user"),
                    u.get("permissions"),
                    None,
                    u.get("salt"),
                    u.get("hash"),
                    u.get("iterations"),
                )
            self._added_users.append(u)
        for who, mask in s.get("grants", {}).items():
            try:
                tab, i = self._principal(who)
            except AuthError:
                continue  # the principal is gone from the config
            tab[i] = mask
            self._grants[who] = mask

    def add_user_saved(self, name, role="user", permissions=None, password=None):
        """add_user, kept across reboots in the state file (the shell's `auth users add`)."""
        uid = self.add_user(name, role, permissions, password)
        self._added_users.append(self.user_record(name))
        self._save()
        return uid

"""AuthenticationManager: the spec's api_auth, on top of the user and API key tables.

Owns: issued tokens and revoked token ids, the JWT keys and claims policy, permission changes of
users and keys, the state file, and the spec's methods (issue_token, validate_token,
register_api_key, verify_api_key, grant_permission, revoke_permission, check_permission,
refresh_token, revoke_token, get_user_roles, get_token_count, ...); users come from authusers.py
and API keys from apikeys.py, which it builds on. Runtime changes (keys added or revoked, users
added, grants, revoked tokens) are saved to a state file with an atomic write and applied again
at boot. Must not parse HTTP or know routes (authgate.py does) and must not do network I/O.

The check_* methods are what a request costs: each leaves its conclusion in the p_* attributes.
A JWT or Basic credential seen before is answered from the cache without allocating; a first
sight verifies it (HMAC, JSON, PBKDF2: allocates) and caches the result. An API key costs one
SHA-256 (a hash object and a digest) per request.
"""

from . import crypto
from . import jwt as jwtlib
from .apikeys import KEY_BASE, SUBJECT_BASE, ApiKeyTable
from .authtypes import EPOCH_BASE, AuthError, AuthToken, Permission, Role, TokenType
from .compat import micropython
from .strtab import table


class AuthenticationManager(ApiKeyTable):
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
        super().__init__(max_api_keys, max_users, pbkdf2_iterations, cache_entries, cache_bytes)
        self.max_tokens = max_tokens
        self.max_revoked = max_revoked
        self.token_ttl_s = token_ttl_s
        self.state_path = state_path
        # JWT keys: {kid: key bytes}; tokens are signed with signing_kid's key.
        self.jwt_keys = jwt_keys or {}
        self.signing_kid = signing_kid
        self.issuer = issuer
        self.audience = audience
        self.verifier = jwtlib.JwtVerifier(self.jwt_keys, signing_kid, leeway_s, issuer, audience, max_token_len)
        # Issued tokens (the spec's 256), by jti.
        T = max_tokens
        self._t_ids = {}
        self._t_jti = [None] * T  # type: list
        self._t_user = [None] * T  # type: list
        self._t_role = bytearray(T)
        self._t_perms = bytearray(T)
        self._t_exp = table("i", T)  # gateway seconds
        self._revoked = {}  # jti -> expiry in unix seconds (0: none), kept until it passes
        self._grants = {}  # runtime permission changes, for the state file

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
        if user_id in self._k_ids:
            claims["key"] = user_id  # bound to the key: its service, its permissions, its life
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

    @micropython.native  # its frame would come from the heap as bytecode
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
            p = c.principal[i] - KEY_BASE
            self.p_service = self._k_service[p] if 0 <= p < self.max_api_keys else None  # a key's binding
            self.p_cache = i
            return
        self._check_and_cache(buf, start, end)

    def _check_and_cache(self, buf, start, end):
        """The first sight of a token: the full check, then a cache entry (allocates)."""
        c = self.cache
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
        service = None
        key = claims.get("key")
        if key is not None or sub in self._k_ids:
            # A token an API key was traded for: it is worth what the key is, no more, and not
            # after the key is revoked.
            if key is None:
                key = sub
            i = self._k_ids.get(key, -1) if isinstance(key, str) else -1
            if i < 0:
                raise AuthError(401, "invalid_token", "the token's API key is revoked")
            perms &= self._k_perms[i]
            principal = KEY_BASE + i
            service = self._k_service[i]
        elif uid >= 0:
            perms &= self._u_perms[uid]  # a permission revoked from the user applies to its tokens at once
            principal = uid
        else:
            principal = SUBJECT_BASE + (hash(sub) & 0xFFF)
        self.p_kind = TokenType.JWT
        self.p_principal = principal
        self.p_role = r
        self.p_perms = perms
        self.p_service = service
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
                self.add_user_record(u)
            self._added_users.append(u)
        for who, mask in s.get("grants", {}).items():
            try:
                tab, i = self._principal(who)
            except AuthError:
                continue  # the principal is gone from the config
            tab[i] = mask
            self._grants[who] = mask

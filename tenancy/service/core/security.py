"""Who is calling, and what may they do: JWT verification against a JWKS, and the roles a token grants.

Tokens come from the platform's Keycloak realm (``iss`` = https://auth.<domain>/realms/platform,
``aud`` includes ``tenant-api``, ``groups`` = full group paths, ``roles`` = realm roles). Only access
tokens are accepted: an ID token (``typ: ID``) names the client in ``aud`` too and must not pass.

- ``platform-admin`` in ``roles``      -> every tenant, every action
- group ``/tenants/<t>/admins``        -> tenant-admin of ``t`` (read, change, reveal, API keys)
- group ``/tenants/<t>/viewers``       -> tenant-viewer of ``t`` (read)

A tenant's roles hold in every environment: Keycloak's groups name tenants, not stacks.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt

PLATFORM_ADMIN_ROLE = "platform-admin"
_TENANT_GROUP = re.compile(r"^/tenants/(?P<tenant>[a-z][-a-z0-9]*)/(?P<role>admins|viewers)$")

# Which key types may verify which algorithms; an RSA key must never verify an EC or HMAC signature.
_KEY_ALGORITHMS: dict[str, set[str]] = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "OKP": {"EdDSA"},
}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class Role(StrEnum):
    viewer = "tenant-viewer"
    admin = "tenant-admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a person (JWT) or a machine (API key)."""

    subject: str
    display_name: str
    email: str | None
    kind: Literal["user", "api_key"]
    platform_admin: bool = False
    tenant_roles: Mapping[str, Role] = field(default_factory=dict)
    api_key_id: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log and the git history name this caller."""
        return f"api-key:{self.api_key_id}" if self.kind == "api_key" else f"user:{self.subject}"

    def role_on(self, tenant: str) -> Role | None:
        if self.platform_admin:
            return Role.admin
        return self.tenant_roles.get(tenant)

    def can_read(self, tenant: str) -> bool:
        return self.role_on(tenant) is not None

    def can_change(self, tenant: str) -> bool:
        return self.role_on(tenant) == Role.admin


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    roles = _strings(claims.get("roles"))
    realm_access = claims.get("realm_access")
    if isinstance(realm_access, Mapping):  # Keycloak's built-in roles scope, if the flat mapper is missing
        roles |= _strings(realm_access.get("roles"))
    tenant_roles: dict[str, Role] = {}
    for group in _strings(claims.get("groups")):
        match = _TENANT_GROUP.match(group)
        if match is None:
            continue
        role = Role.admin if match["role"] == "admins" else Role.viewer
        tenant = match["tenant"]
        if tenant_roles.get(tenant) != Role.admin:
            tenant_roles[tenant] = role
    subject = str(claims["sub"])
    # An address a user can set without proving it must not become a git author: only a verified one.
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    if claims.get("email_verified") is not True:
        email = None
    name = claims.get("preferred_username") or email or subject
    return Principal(
        subject=subject,
        display_name=str(name),
        email=email,
        kind="user",
        platform_admin=PLATFORM_ADMIN_ROLE in roles,
        tenant_roles=tenant_roles,
    )


def _strings(value: Any) -> set[str]:
    if isinstance(value, list | tuple):
        return {item for item in value if isinstance(item, str)}
    return set()


class AuthenticationFailed(Exception):
    """A credential that does not verify; ``message`` is safe to show the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a metrics label: expired, audience, issuer, signature, ...
        self.message = message


class KeysUnavailable(Exception):
    """The JWKS could not be fetched or read and no cached copy is usable."""


def _read_url(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


class JwksKeys:
    """The issuer's public keys, from a URL or a file: cached, and refetched when a token names a key
    id the cache does not hold (key rotation), at most once per ``min_refresh_seconds``."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        fetch: Callable[[str], dict[str, Any]] = _read_url,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of url and file")
        self._url = url
        self._file = file
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._fetch = fetch
        self._keys: dict[str, dict[str, Any]] = {}
        self._anonymous: list[dict[str, Any]] = []
        self._fetched_at: float | None = None
        self._lock = threading.Lock()  # guards the cached keys; never held while fetching
        self._fetching = threading.Lock()  # one fetch at a time

    @property
    def source(self) -> str:
        return self._url or str(self._file)

    def _load(self) -> None:
        """Fetch and install the keys (without holding ``_lock``: the fetch may take seconds)."""
        try:
            if self._url is not None:
                document = self._fetch(self._url)
            else:
                assert self._file is not None
                document = json.loads(self._file.read_text(encoding="utf-8"))
            keys = [key for key in document.get("keys", []) if isinstance(key, dict)]
        except (OSError, ValueError, AttributeError, httpx.HTTPError) as error:
            with self._lock:
                self._fetched_at = time.monotonic()  # do not hammer a failing endpoint
                have_keys = bool(self._keys or self._anonymous)
            if not have_keys:
                raise KeysUnavailable(f"cannot read the JWKS from {self.source}") from error
            return  # keep serving the keys we have
        with self._lock:
            self._keys = {str(key["kid"]): key for key in keys if "kid" in key}
            self._anonymous = [key for key in keys if "kid" not in key]
            self._fetched_at = time.monotonic()

    def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` (or the only key, for tokens without a kid); None if unknown.

        Fetching happens outside the lock and by one thread at a time: while the keys are refreshed,
        tokens signed by keys already known keep verifying; only a caller that needs a key the cache
        lacks waits for the fetch (bounded by its timeout)."""
        now = time.monotonic()
        with self._lock:
            fetched_at = self._fetched_at
            found = self._lookup(kid)
        expired = fetched_at is None or now - fetched_at > self._cache_seconds
        may_refetch = fetched_at is None or now - fetched_at >= self._min_refresh_seconds
        if expired or (found is None and may_refetch):
            self._refresh(wait=found is None, seen=fetched_at)
            with self._lock:
                found = self._lookup(kid)
        return found

    def _refresh(self, *, wait: bool, seen: float | None) -> None:
        """Fetch the keys unless another thread is already at it (``wait``: then wait for it)."""
        if not self._fetching.acquire(blocking=wait):
            return
        try:
            with self._lock:
                if self._fetched_at != seen:
                    return  # another thread fetched while this one waited
            self._load()
        finally:
            self._fetching.release()

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        candidates = self._anonymous + list(self._keys.values())
        return candidates[0] if len(candidates) == 1 else None

    def ready(self) -> bool:
        try:
            with self._lock:
                fetched_at = self._fetched_at
            if fetched_at is None:
                self._refresh(wait=True, seen=None)
        except KeysUnavailable:
            return False
        with self._lock:
            return bool(self._keys or self._anonymous)


_FAILURES: list[tuple[type[jwt.PyJWTError], str, str]] = [
    (jwt.ExpiredSignatureError, "expired", "the token has expired; get a new one"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "the token is not valid yet (nbf/iat in the future)"),
    (jwt.InvalidAudienceError, "audience", "the token was not issued for this API (wrong audience)"),
    (jwt.InvalidIssuerError, "issuer", "the token comes from an issuer this service does not trust"),
    (jwt.InvalidSignatureError, "signature", "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm", "the token's signing algorithm is not allowed"),
]


# What an access token may say it is: Keycloak's ``typ`` claim, or RFC 9068's header ``typ``.
_ACCESS_TOKEN_CLAIM_TYPES = frozenset({"bearer", "at+jwt", "application/at+jwt"})
_ACCESS_TOKEN_HEADER_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})


class TokenVerifier:
    def __init__(
        self,
        keys: JwksKeys,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        leeway: float,
        authorized_parties: tuple[str, ...] = (),
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.authorized_parties = frozenset(authorized_parties)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it verifies; AuthenticationFailed (safe message) otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("malformed", "the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthenticationFailed("algorithm", "the token's signing algorithm is not allowed")
        header_type = header.get("typ")
        if header_type is not None and str(header_type).lower() not in _ACCESS_TOKEN_HEADER_TYPES:
            raise AuthenticationFailed("token_type", "the token is not an access token (header typ)")
        kid = header.get("kid")
        jwk = self.keys.key(kid if isinstance(kid, str) else None)
        if jwk is None:
            raise AuthenticationFailed(
                "unknown_key", "the token is signed by a key the issuer does not publish"
            )
        if not _key_fits(jwk, alg):
            raise AuthenticationFailed("algorithm", "the token's algorithm does not match its signing key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationFailed("claims", f"the token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError as error:
            for kind, reason, message in _FAILURES:
                if isinstance(error, kind):
                    raise AuthenticationFailed(reason, message) from None
            raise AuthenticationFailed("malformed", "the token could not be verified") from None
        self._check_access_token(claims)
        return claims

    def _check_access_token(self, claims: dict[str, Any]) -> None:
        """Refuse ID tokens and tokens of clients not allowed to call this API."""
        token_type = claims.get("typ")
        if token_type is not None and str(token_type).lower() not in _ACCESS_TOKEN_CLAIM_TYPES:
            raise AuthenticationFailed(
                "token_type", "the token is not an access token (send the access token, not the ID token)"
            )
        party = claims.get("azp")
        if self.authorized_parties and party not in self.authorized_parties:
            raise AuthenticationFailed(
                "authorized_party", "the token was issued to a client that may not call this API (azp)"
            )


def _key_fits(jwk: Mapping[str, Any], alg: str) -> bool:
    if jwk.get("use", "sig") != "sig":
        return False
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    if alg not in _KEY_ALGORITHMS.get(str(jwk.get("kty")), set()):
        return False
    return not (alg in _EC_CURVES and jwk.get("crv") != _EC_CURVES[alg])

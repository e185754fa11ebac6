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
import logging
import math
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

from tenancy.spec.text import forbidden_character, without_forbidden

_log = logging.getLogger("tenancy.service")
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
    # Where the roles hold: None, in every environment (a person's groups name tenants, not
    # environments); an API key's, only where its tenant is still the incarnation it was made for.
    environments: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """How the audit log and the git history name this caller."""
        return f"api-key:{self.api_key_id}" if self.kind == "api_key" else f"user:{self.subject}"

    @property
    def budget(self) -> str:
        """Whose share of a bounded resource (previews in flight) this caller draws on: a person's
        own, or, for an API key, one share for all the keys of its tenant, so a tenant-admin who
        makes keys does not multiply it (outside security review: five keys held every slot)."""
        if self.kind == "api_key" and self.tenant_roles:
            return "api-keys-of:" + ",".join(sorted(self.tenant_roles))
        return self.actor

    def role_on(self, tenant: str, environment: str | None) -> Role | None:
        """The caller's role on ``tenant`` in ``environment`` (None: where a route names none, as the
        API-key routes, which people only use)."""
        if self.platform_admin:
            return Role.admin
        if environment is not None and self.environments is not None and environment not in self.environments:
            return None
        return self.tenant_roles.get(tenant)

    def can_read(self, tenant: str, environment: str | None) -> bool:
        return self.role_on(tenant, environment) is not None

    def can_change(self, tenant: str, environment: str | None) -> bool:
        return self.role_on(tenant, environment) == Role.admin


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
        # Shown to platform-admins (change requests in tenantctl's terminal output, the portal): no
        # control or formatting character from the identity provider's claim gets that far.
        display_name=without_forbidden(str(name)).strip()[:100] or subject,
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
    """The signing keys a token needs cannot be read right now (the JWKS endpoint is down or answers
    garbage): nobody's fault but the identity provider's, so never a failed authentication."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(math.ceil(retry_after), 1)


def _read_url(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


_Outcome = Literal["attempted", "busy"]


class JwksKeys:
    """The issuer's public keys, from a URL or a file, cached for ``cache_seconds``.

    - A token naming a key id the cache lacks (key rotation) refetches, at most once per
      ``min_refresh_seconds`` after a successful fetch, so random key ids cannot hammer the issuer.
    - When a fetch fails, keys already cached keep verifying (stale rather than nothing), and a token
      that needs a key the cache lacks raises ``KeysUnavailable`` (503, retryable), never "unknown key".
    - A failure is remembered for ``retry_seconds`` only: the first request after that tries again, so
      an outage ends for callers as soon as the endpoint answers. While one request retries, the others
      answer at once instead of queueing behind a fetch that may hang until its timeout.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        retry_seconds: float = 1.0,
        fetch: Callable[[str], dict[str, Any]] = _read_url,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of url and file")
        self._url = url
        self._file = file
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._retry_seconds = retry_seconds
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._anonymous: list[dict[str, Any]] = []
        self._fetched_at: float | None = None  # the last successful fetch
        self._failed_at: float | None = None  # the last failed attempt, while no fetch has succeeded since
        self._attempts = 0  # fetches tried so far: tells a waiting caller that another one fetched
        self._lock = threading.Lock()  # guards the fields above; never held while fetching
        self._fetching = threading.Lock()  # one fetch at a time

    @property
    def source(self) -> str:
        return self._url or str(self._file)

    def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` (or the only key, for tokens without a kid); None if the issuer does not
        publish it; ``KeysUnavailable`` if that cannot be known because the keys cannot be read."""
        now = self._clock()
        with self._lock:
            found = self._lookup(kid)
            fetched_at, failed_at, attempts = self._fetched_at, self._failed_at, self._attempts
        backing_off = failed_at is not None and now - failed_at < self._retry_seconds
        if found is not None:
            stale = fetched_at is None or now - fetched_at > self._cache_seconds
            if stale and not backing_off and self._refresh(wait=False, seen=attempts) == "attempted":
                with self._lock:
                    if self._failed_at is None:  # fetched: the key may have been withdrawn
                        found = self._lookup(kid)
            return found
        if backing_off:
            raise self._unavailable(failed_at, now)
        if failed_at is None and fetched_at is not None and now - fetched_at < self._min_refresh_seconds:
            return None  # fetched moments ago and the key is not there: the issuer does not publish it
        # During an outage, do not queue behind another caller's retry (it may hang until its timeout).
        if self._refresh(wait=failed_at is None, seen=attempts) == "busy":
            raise self._unavailable(failed_at, now)
        with self._lock:
            found = self._lookup(kid)
            failed_at = self._failed_at
        if found is None and failed_at is not None:
            raise self._unavailable(failed_at, self._clock())
        return found

    def _unavailable(self, failed_at: float | None, now: float) -> KeysUnavailable:
        waited = 0.0 if failed_at is None else now - failed_at
        return KeysUnavailable(
            f"cannot read the signing keys from {self.source}", retry_after=self._retry_seconds - waited
        )

    def _refresh(self, *, wait: bool, seen: int) -> _Outcome:
        """Fetch the keys unless another thread is at it (``wait``: then wait for its outcome)."""
        if not self._fetching.acquire(blocking=wait):
            return "busy"
        try:
            with self._lock:
                if self._attempts != seen:
                    return "attempted"  # another thread fetched while this one waited: use its outcome
            self._load()
            return "attempted"
        finally:
            self._fetching.release()

    def _load(self) -> None:
        """Fetch and install the keys, or record the failure (never holding ``_lock`` while fetching)."""
        try:
            if self._url is not None:
                document = self._fetch(self._url)
            else:
                assert self._file is not None
                document = json.loads(self._file.read_text(encoding="utf-8"))
            listed = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(listed, list):
                raise ValueError("the document has no 'keys' list")
            keys = [key for key in listed if isinstance(key, dict)]
        except (OSError, ValueError, httpx.HTTPError) as error:
            _log.warning("cannot read the signing keys from %s: %s", self.source, type(error).__name__)
            with self._lock:
                self._failed_at = self._clock()
                self._attempts += 1
            return
        with self._lock:
            self._keys = {str(key["kid"]): key for key in keys if "kid" in key}
            self._anonymous = [key for key in keys if "kid" not in key]
            self._fetched_at = self._clock()
            self._failed_at = None
            self._attempts += 1

    def published(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` while the cached keys are fresh (fetched less than ``cache_seconds`` ago
        and no failure since), else None. Never fetches: safe on the event loop."""
        with self._lock:
            fresh = (
                self._fetched_at is not None
                and self._failed_at is None
                and self._clock() - self._fetched_at <= self._cache_seconds
            )
            return self._lookup(kid) if fresh else None

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        candidates = self._anonymous + list(self._keys.values())
        return candidates[0] if len(candidates) == 1 else None

    def ready(self) -> bool:
        """Whether keys are at hand (fetching them if none ever were, unless a fetch just failed)."""
        with self._lock:
            have = bool(self._keys or self._anonymous)
            failed_at, attempts = self._failed_at, self._attempts
        if not have and (failed_at is None or self._clock() - failed_at >= self._retry_seconds):
            self._refresh(wait=True, seen=attempts)
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
_MAX_SUBJECT = 255  # OpenID Connect Core 5.7: sub is at most 255 ASCII characters
_ACCESS_TOKEN_HEADER_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})


@dataclass(frozen=True)
class _Verified:
    claims: Mapping[str, Any]
    expires_at: float  # the token's exp
    kid: str | None
    jwk: Mapping[str, Any]  # the key that verified it, as the issuer published it then
    principal: Principal


class TokenVerifier:
    """Verifies access tokens against the issuer's keys, and remembers the tokens that verified.

    The signature check costs more than everything else a GET does, and a client sends the same token
    with every request until it expires. A remembered token passes again without the check only while
    it has not expired (its ``exp``, without leeway: past it, the full check decides) and while the key
    that verified it is still what the issuer publishes under its kid in a fresh key cache (a
    withdrawn or rotated key, or keys due for a refetch, send the token through the full check).
    Claims cannot change without the signature changing, so nothing else can go stale. Bounded: the
    oldest entries go first."""

    def __init__(
        self,
        keys: JwksKeys,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        leeway: float,
        authorized_parties: tuple[str, ...] = (),
        cache_entries: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.authorized_parties = frozenset(authorized_parties)
        self._cache_entries = cache_entries
        self._clock = clock
        self._verified: dict[str, _Verified] = {}  # insertion-ordered: the oldest first
        self._verified_lock = threading.Lock()

    def cached_principal(self, token: str) -> Principal | None:
        """The caller a token names if it verified before and still would (see the class); None
        otherwise. No I/O and no signature check: cheap enough for the event loop."""
        entry = self._cached(token)
        return None if entry is None else entry.principal

    def principal(self, token: str) -> Principal:
        """The caller a token names; AuthenticationFailed or KeysUnavailable as ``verify``."""
        return (self._cached(token) or self._verify(token)).principal

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it verifies; AuthenticationFailed (safe message) otherwise."""
        return dict((self._cached(token) or self._verify(token)).claims)

    def _cached(self, token: str) -> _Verified | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        if self._clock() < entry.expires_at and self.keys.published(entry.kid) == entry.jwk:
            return entry
        with self._verified_lock:
            if self._verified.get(token) is entry:
                del self._verified[token]
        return None

    def _verify(self, token: str) -> _Verified:
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
        entry = _Verified(
            claims=claims,
            expires_at=float(claims["exp"]),
            kid=kid if isinstance(kid, str) else None,
            jwk=jwk,
            principal=principal_from_claims(claims),
        )
        with self._verified_lock:
            self._verified[token] = entry
            while len(self._verified) > self._cache_entries:
                del self._verified[next(iter(self._verified))]
        return entry

    def _check_access_token(self, claims: dict[str, Any]) -> None:
        """Refuse ID tokens, tokens of clients not allowed to call this API, and a subject that is no
        identifier: it names the caller in git commit messages (``Requested-by: user:<sub>``), the
        audit log and the operations, so a line break in it would add lines of its own there."""
        subject = claims.get("sub")
        if (
            not isinstance(subject, str)
            or not subject
            or len(subject) > _MAX_SUBJECT
            or forbidden_character(subject)
        ):
            raise AuthenticationFailed(
                "claims",
                f"the token's sub claim must be a string of 1 to {_MAX_SUBJECT} characters without control "
                "or formatting characters",
            )
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

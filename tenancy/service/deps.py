"""Dependencies routes declare as ``Annotated`` aliases: the backends, the caller, and the tenant the
caller may read or change.

Every tenant route takes ``ReadableTenant`` or ``ChangeableTenant``; both answer 404 (never 403) for a
tenant the caller has no role on, so nobody learns whether another tenant exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tenancy.automation.contract import StackRef
from tenancy.service.backends import Backends
from tenancy.service.core.api_keys import looks_like_api_key
from tenancy.service.core.client_address import client_address, failure_key
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.rate_limit import InProcessRateLimiter, SharedRateLimiter
from tenancy.service.core.security import (
    AuthenticationFailed,
    KeysUnavailable,
    Principal,
)
from tenancy.service.models import Environment
from tenancy.service.portal.sessions import session_credential
from tenancy.spec.tenant import MAX_NAME_LENGTH


async def get_backends(request: Request) -> Backends:
    # async: a dependency declared with def costs a hop to a worker thread and back on every request.
    backends: Backends = request.app.state.backends
    return backends


BackendsDep = Annotated[Backends, Depends(get_backends)]

_bearer = HTTPBearer(
    auto_error=False,
    description="A Keycloak access token (aud tenant-api), or an API key (tnk_...).",
)
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (tnk_...).")


def _unauthenticated(message: str) -> ServiceError:
    return ServiceError("unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="tenant-api"'})


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    """The caller (see ``_authenticate``). A bearer token that verified before and still would, with
    a rate limiter of this host (memory or the processes' shared table), is settled here on the
    event loop: no signature check, no I/O, and no hop to a worker thread and back (which cost a
    GET more than the rest of its work). Everything
    else (API keys, portal sessions, new tokens, Redis) runs in a worker thread, as it may wait.

    The backends come from the app, not from ``BackendsDep``: every dependency FastAPI solves costs
    every request that declares it, and every route authenticates."""
    backends: Backends = request.app.state.backends
    credential = bearer.credentials if bearer is not None else api_key
    local_limits = isinstance(backends.rate_limiter, InProcessRateLimiter | SharedRateLimiter)
    if credential and local_limits and not looks_like_api_key(credential):
        principal = backends.verifier.cached_principal(credential)
        if principal is not None:
            return _within_rate_limit(request, backends, principal)
    return await run_in_threadpool(_authenticate, request, backends, credential)


def _authenticate(request: Request, backends: Backends, credential: str | None) -> Principal:
    """The caller, from a bearer JWT or an API key (Authorization: Bearer or X-API-Key); then the
    caller's rate limit.

    Failed authentications count per client address; once an address has too many, credentials from
    it that do not verify answer 429 instead of 401, while credentials that verify still pass (and
    count against their principal's own budget): a burst of bad tokens from a shared address (a NAT,
    an office, a proxy) never locks its valid callers out. A JWKS outage counts for nobody."""
    if not credential:  # the portal's cookie session (CSRF-checked for writes)
        credential = session_credential(request)
    if not credential:
        raise _unauthenticated("send a bearer token (Authorization: Bearer ...) or an API key (X-API-Key)")
    try:
        principal = _principal(backends, credential)
    except ServiceError as error:
        if error.code != "unauthenticated":
            raise
        address = client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            backends.settings.trusted_proxies,
        )
        failures = backends.auth_failures.hit(failure_key(address))
        if failures.allowed:
            raise
        backends.metrics.rate_limited.inc()
        raise ServiceError(
            "rate_limited",
            "too many failed authentications from your address; credentials that verify still pass, "
            f"others are refused for {failures.retry_after} s",
            headers={"Retry-After": str(failures.retry_after)},
        ) from None
    return _within_rate_limit(request, backends, principal)


def _within_rate_limit(request: Request, backends: Backends, principal: Principal) -> Principal:
    decision = backends.rate_limiter.hit(principal.actor)
    if not decision.allowed:
        backends.metrics.rate_limited.inc()
        raise ServiceError(
            "rate_limited",
            f"more than {decision.limit} requests in the current window; retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )
    request.state.principal = principal
    return principal


def _principal(backends: Backends, credential: str) -> Principal:
    if looks_like_api_key(credential):
        record = backends.api_keys.authenticate(credential)
        # A key works only for the incarnation of its tenant it was made for (see core.incarnation),
        # in each environment: where the name was deleted and made again, not there.
        live = (
            backends.incarnations.live_environments(record.tenant, record.incarnation)
            if record is not None
            else frozenset()
        )
        if record is None or not live:
            backends.metrics.auth_failures.labels("api_key").inc()
            raise _unauthenticated("the API key is unknown, revoked or expired, or its tenant was deleted")
        return record.principal(environments=live)
    try:
        return backends.verifier.principal(credential)
    except AuthenticationFailed as failure:
        backends.metrics.auth_failures.labels(failure.reason).inc()
        raise _unauthenticated(failure.message) from None
    except KeysUnavailable as outage:
        # The identity provider's fault, not the caller's: 503 and retry, never a failed authentication.
        raise ServiceError(
            "identity_provider_unavailable",
            "the identity provider's signing keys cannot be fetched, so the token cannot be checked; "
            f"retry in {outage.retry_after} s",
            headers={"Retry-After": str(outage.retry_after)},
        ) from None


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]

EnvironmentPath = Annotated[Environment, Path(description="The environment: dev or prod.")]
TenantNamePath = Annotated[
    str,
    Path(
        description="The tenant's name (a DNS label).",
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    ),
]


def tenant_not_found(environment: str, name: str) -> ServiceError:
    # One message whether the tenant is missing or someone else's: existence must not leak.
    return ServiceError("tenant_not_found", f"there is no tenant {environment}.{name} that you can access")


def served(backends: Backends, environment: str) -> None:
    """Refuse an environment whose tenants another service manages: a platform stack's service runs
    tenant stacks in its own cluster, with its own state bucket and credentials, so a tenant of the
    other environment written or deployed here would land in the wrong cluster."""
    environments = backends.settings.environments
    if environment not in environments:
        raise ServiceError(
            "environment_not_served",
            f"this service manages the tenants of {', '.join(environments)}, not of {environment}: "
            f"call the API of the {environment} platform",
        )


async def readable_tenant(
    request: Request, environment: EnvironmentPath, name: TenantNamePath, principal: CurrentPrincipal
) -> StackRef:
    return _readable(request.app.state.backends, environment, name, principal)


def _readable(backends: Backends, environment: Environment, name: str, principal: Principal) -> StackRef:
    served(backends, environment.value)
    if not principal.can_read(name, environment.value):
        raise tenant_not_found(environment.value, name)
    return StackRef(environment.value, name)


async def changeable_tenant(
    request: Request,
    backends: BackendsDep,
    environment: EnvironmentPath,
    name: TenantNamePath,
    principal: CurrentPrincipal,
) -> StackRef:
    return _changeable(request, backends, environment, name, principal)


def _changeable(
    request: Request, backends: Backends, environment: Environment, name: str, principal: Principal
) -> StackRef:
    _readable(backends, environment, name, principal)
    if not principal.can_change(name, environment.value):
        backends.audit.record(
            actor=principal.actor,
            action=str(getattr(request.scope.get("route"), "name", request.method)),
            outcome="denied",
            tenant=name,
            environment=environment.value,
            request_id=request_id(request),
            reason="tenant-viewer",
        )
        raise ServiceError("forbidden", f"you can read {name} but changing it needs the tenant-admin role")
    return StackRef(environment.value, name)


ReadableTenant = Annotated[StackRef, Depends(readable_tenant)]


@dataclass(frozen=True, slots=True)
class TenantAccess:
    """A tenant the caller may read (or change), with the caller and the backends: what
    ``ReadableTenant`` (or ``ChangeableTenant``), ``CurrentPrincipal`` and ``BackendsDep`` give, as one
    dependency. FastAPI walks a route's whole dependency tree on every request, cached or not, so a
    hot route declares one instead of three."""

    stack: StackRef
    principal: Principal
    backends: Backends


async def tenant_access(
    request: Request, environment: EnvironmentPath, name: TenantNamePath, principal: CurrentPrincipal
) -> TenantAccess:
    backends: Backends = request.app.state.backends
    return TenantAccess(_readable(backends, environment, name, principal), principal, backends)


async def changeable_tenant_access(
    request: Request, environment: EnvironmentPath, name: TenantNamePath, principal: CurrentPrincipal
) -> TenantAccess:
    """``ChangeableTenant`` with the caller and the backends, for the tenant write routes (PUT, PATCH,
    DELETE): 5 dependency nodes per request instead of 10 (about 0.1 ms of the event loop's time)."""
    backends: Backends = request.app.state.backends
    return TenantAccess(_changeable(request, backends, environment, name, principal), principal, backends)


ReadableTenantAccess = Annotated[TenantAccess, Depends(tenant_access)]
ChangeableTenant = Annotated[StackRef, Depends(changeable_tenant)]
ChangeableTenantAccess = Annotated[TenantAccess, Depends(changeable_tenant_access)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a write safely: the same key and request replay the first answer.",
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=256,
        description="The tenant's etag: change only that version (412 otherwise).",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=16,
        description="`*`: create only; 412 when the tenant already exists (nobody's spec is overwritten).",
    ),
]


def request_fingerprint(request: Request, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.url.path}\n{canonical}".encode()).hexdigest()

"""The portal's pages, its sign-in (Keycloak code + PKCE, or the local issuer's dev sign-in) and the
two read models the pages need beyond the API (an overview of tenants, the form's schema).

Every portal response carries a strict Content-Security-Policy: scripts, styles and connections to
this origin only, no inline code, no framing.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from functools import partial
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import anyio
import httpx
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenancy import versions
from tenancy.automation.contract import OperationKind, StackRef
from tenancy.service.api.routes.tenants import tenant_status
from tenancy.service.backends import Backends
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.local_issuer import mint_token
from tenancy.service.core.preview import render_preview
from tenancy.service.core.security import (
    AuthenticationFailed,
    KeysUnavailable,
    Principal,
    principal_from_claims,
)
from tenancy.service.deps import BackendsDep, ChangeableTenant, CurrentPrincipal
from tenancy.service.models import OperationView
from tenancy.service.portal.sessions import (
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    RedisStore,
    Sessions,
    SqliteStore,
)
from tenancy.spec.errors import SpecError
from tenancy.spec.plans import PLANS
from tenancy.spec.tenant import TenantSpec, parse_tenant, quota_usage

CALLBACK_PATH = "/auth/callback"  # tenancy.builders.identity.PORTAL_CALLBACK_PATH
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_KINDS = (OperationKind.up, OperationKind.destroy, OperationKind.refresh)


class PortalSettings(BaseSettings):
    """``TENANCY_SERVICE_PORTAL_*``: the portal's sign-in against Keycloak (ignored on the local issuer)."""

    model_config = SettingsConfigDict(env_prefix="TENANCY_SERVICE_PORTAL_", extra="ignore", frozen=True)

    client_id: str = Field(default="tenant-portal", description="The realm's public client for the portal.")
    public_url: str | None = Field(
        default=None,
        description="The portal's external base URL (https://portal.<domain>); default: the request's.",
    )
    authorization_url: str | None = Field(
        default=None, description="Default <issuer>/protocol/openid-connect/auth."
    )
    token_url: str | None = Field(default=None, description="Default <issuer>/protocol/openid-connect/token.")
    logout_url: str | None = Field(
        default=None, description="Default <issuer>/protocol/openid-connect/logout."
    )
    dev_session_minutes: int = Field(default=60, ge=1, le=1440, description="A dev sign-in's lifetime.")


def _page(body: bytes | str, media_type: str, *, cache: str = "no-store") -> Response:
    return Response(body, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": cache})


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _static(name: str) -> bytes:
    return resources.files("tenancy.service.portal").joinpath("static", name).read_bytes()


def install_portal(app: FastAPI, backends: Backends) -> None:
    """Serve the portal at / on ``app`` and keep its sessions where the backends keep shared state."""
    settings = PortalSettings()
    store: RedisStore | SqliteStore
    if backends.redis is not None:
        store = RedisStore(backends.redis, prefix=backends.settings.redis_prefix)
    else:  # shared by every process of this state directory (``tenantctl serve --processes``)
        store = SqliteStore(backends.settings.state_dir / "portal-sessions.sqlite3")
        backends.closers.append(store.close)
    app.state.portal_sessions = Sessions(store)
    app.state.portal_settings = settings
    app.include_router(router)


router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> Response:
    return _page(_static("index.html"), "text/html; charset=utf-8")


@router.get("/portal/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC:
        raise ServiceError("not_found", "no such portal file")
    return _page(_static(name), _STATIC[name], cache="no-cache")


# --- sign-in ---------------------------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.portal_sessions
    return sessions


def _settings(request: Request) -> PortalSettings:
    settings: PortalSettings = request.app.state.portal_settings
    return settings


def _base_url(request: Request) -> str:
    return (_settings(request).public_url or str(request.base_url)).rstrip("/")


def _endpoint(request: Request, backends: Backends, configured: str | None, tail: str) -> str:
    return configured or f"{backends.settings.issuer.rstrip('/')}/protocol/openid-connect/{tail}"


def _start_session(request: Request, backends: Backends, token: str, via: str, response: Response) -> None:
    claims = backends.verifier.verify(token)
    session_id, session = _sessions(request).create(token, float(claims["exp"]), via=via)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max(1, int(session.expires_at - time.time())),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    principal = principal_from_claims(claims)
    backends.audit.record(
        actor=principal.actor,
        action="portal.sign_in",
        outcome="succeeded",
        tenant=None,
        request_id=request_id(request),
        reason=via,
    )


@router.get("/auth/config")
def auth_config(backends: BackendsDep) -> JSONResponse:
    """How the sign-in page signs people in: the dev sign-in only while no Keycloak is configured."""
    return _json({"mode": _mode(backends)})


@router.get("/auth/session")
def session_info(request: Request, backends: BackendsDep) -> JSONResponse:
    """Who the page is signed in as (and the CSRF token its writes send), or ``signedIn: false``:
    a page that is not signed in is not an error, so it answers 200 either way."""
    sessions = _sessions(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(session_id)
    claims = None
    if session is not None:
        try:
            claims = backends.verifier.verify(session.token)
        except (AuthenticationFailed, KeysUnavailable):
            sessions.end(session_id)  # expired: back to sign-in
    if session is None or claims is None:
        return _json({"signedIn": False, "mode": _mode(backends)})
    principal = principal_from_claims(claims)
    return _json(
        {
            "signedIn": True,
            "name": principal.display_name,
            "email": principal.email,
            "actor": principal.actor,
            "platformAdmin": principal.platform_admin,
            "tenants": {name: role.value for name, role in principal.tenant_roles.items()},
            "csrf": session.csrf,
            "expiresAt": session.expires_at,
            "mode": _mode(backends),
        }
    )


def _mode(backends: Backends) -> str:
    return "dev" if backends.settings.uses_local_issuer else "oidc"


class DevSignIn(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    platform_admin: bool = False
    role: Literal["admin", "viewer"] = "admin"
    tenants: list[Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)]] = Field(
        default_factory=list, max_length=20
    )


@router.post("/auth/dev")
def dev_sign_in(request: Request, backends: BackendsDep, body: DevSignIn) -> JSONResponse:
    """Sign in through the local issuer (as ``tenantctl dev-token`` does); absent with Keycloak."""
    settings = backends.settings
    if not settings.uses_local_issuer:
        raise ServiceError("not_found", "the dev sign-in exists only while no Keycloak is configured")
    if not body.platform_admin and not body.tenants:
        raise ServiceError(
            "invalid_request",
            "name at least one tenant, or sign in as a platform-admin",
            details=[{"field": "tenants", "reason": "name at least one tenant"}],
        )
    token = mint_token(
        settings.local_issuer_dir,
        issuer=settings.issuer,
        audience=settings.audience,
        subject=body.name,
        groups=[f"/tenants/{tenant}/{body.role}s" for tenant in body.tenants],
        roles=["platform-admin"] if body.platform_admin else [],
        email=body.email,
        lifetime_seconds=_settings(request).dev_session_minutes * 60,
    )
    response = _json({"signedIn": True})
    _start_session(request, backends, token, "dev", response)
    return response


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@router.get("/auth/login")
def login(request: Request, backends: BackendsDep) -> Response:
    """Start Keycloak's authorization code flow with PKCE (S256) and a state bound to this browser."""
    if backends.settings.uses_local_issuer:
        return RedirectResponse("/", status_code=303)
    settings = _settings(request)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    _sessions(request).begin_login(state, {"verifier": verifier})
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": _base_url(request) + CALLBACK_PATH,
            "scope": "openid",
            "state": state,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(
        f"{_endpoint(request, backends, settings.authorization_url, 'auth')}?{query}", status_code=303
    )
    # Lax: the callback is a top-level navigation back from Keycloak, which Strict would not carry.
    response.set_cookie(
        LOGIN_COOKIE, state, max_age=600, path="/", secure=True, httponly=True, samesite="lax"
    )
    return response


@router.get(CALLBACK_PATH)
def callback(
    request: Request,
    backends: BackendsDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    def fail(reason: str) -> Response:
        response = RedirectResponse(f"/?signin_error={reason}", status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    if error or not code or not state:
        return fail("denied")
    if not secrets.compare_digest(request.cookies.get(LOGIN_COOKIE, ""), state):
        return fail("state")  # not the sign-in this browser started (login CSRF)
    pending = _sessions(request).finish_login(state)
    if pending is None:
        return fail("expired")
    settings = _settings(request)
    try:
        answer = httpx.post(
            _endpoint(request, backends, settings.token_url, "token"),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": _base_url(request) + CALLBACK_PATH,
                "client_id": settings.client_id,
                "code_verifier": pending["verifier"],
            },
            timeout=10.0,
        )
        token = answer.json().get("access_token") if answer.is_success else None
    except (httpx.HTTPError, ValueError):
        token = None
    if not isinstance(token, str):
        return fail("token")
    response = RedirectResponse("/", status_code=303)
    try:
        _start_session(request, backends, token, "oidc", response)
    except (AuthenticationFailed, KeysUnavailable):
        return fail("token")
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


@router.post("/auth/logout")
def logout(request: Request, backends: BackendsDep) -> JSONResponse:
    sessions = _sessions(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(session_id)
    if session is not None:
        presented = request.headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(presented, session.csrf):
            raise ServiceError(
                "csrf_failed", f"signing out needs the session's {CSRF_HEADER}; reload the page"
            )
        sessions.end(session_id)
    redirect = "/"
    if session is not None and session.via == "oidc":
        settings = _settings(request)
        query = urlencode(
            {"client_id": settings.client_id, "post_logout_redirect_uri": _base_url(request) + "/"}
        )
        redirect = f"{_endpoint(request, backends, settings.logout_url, 'logout')}?{query}"
    response = _json({"redirect": redirect})
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# --- read models for the pages ---------------------------------------------------------------------


def _usage(document: dict[str, Any], name: str) -> dict[str, dict[str, float]] | None:
    try:
        spec = parse_tenant({**document, "name": name}, file=f"{name}.yaml")
    except SpecError:
        return None
    return {
        key: {"used": float(used), "max": float(limit)} for key, (used, limit) in quota_usage(spec).items()
    }


@router.get("/portal/api/overview")
def overview(backends: BackendsDep, principal: CurrentPrincipal) -> JSONResponse:
    """The dashboard: every tenant the caller can read, with status, last operation, plan and quota
    use against the plan (counted as the validator counts, sidecars included); then the deleted
    tenants whose destroy has not succeeded, as their page shows them (``deleted``: true)."""
    tenants = []
    present = backends.repository.names()
    for environment, name in present:
        role = principal.role_on(name, environment)
        if role is None or environment not in backends.settings.environments:
            continue
        document = backends.repository.read(environment, name) or {}
        stack = StackRef(environment, name)
        recent = backends.incarnations.current(backends.queue.recent(stack=stack, limit=20), stack)
        operations = [op for op in recent if op.kind in _KINDS]
        tenants.append(
            {
                "environment": environment,
                "name": name,
                "displayName": document.get("displayName"),
                "plan": document.get("plan"),
                "role": role.value,
                "status": tenant_status(operations).wire(),
                "lastOperation": OperationView.of(operations[0]).wire() if operations else None,
                "usage": _usage(document, name),
                "deleted": False,
            }
        )
    tenants.extend(_deleted_tenants(backends, principal, set(present)))
    return _json({"tenants": tenants})


def _deleted_tenants(
    backends: Backends, principal: Principal, present: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Tenants whose file is deleted while their stack is not destroyed yet or failed to be: the read
    route still shows them (with the spec they had and a retry of the delete), so the dashboard lists
    them too, or a failed destroy is found only by typing its page's address."""
    found = []
    for stack in backends.queue.stacks():  # every stack that ever ran; those with a file are listed
        environment, name = stack.environment, stack.tenant
        if (environment, name) in present or environment not in backends.settings.environments:
            continue
        role = principal.role_on(name, environment)
        if role is None:
            continue
        pending = backends.changes.pending_deletion(stack)
        if pending is None:
            continue
        document = pending.spec or {}
        found.append(
            {
                "environment": environment,
                "name": name,
                "displayName": document.get("displayName"),
                "plan": document.get("plan"),
                "role": role.value,
                "status": tenant_status([pending], deleted=True).wire(),
                "lastOperation": OperationView.of(pending).wire(),
                "usage": None,
                "deleted": True,
            }
        )
    return found


@router.get("/portal/api/schema")
def form_schema(backends: BackendsDep, principal: CurrentPrincipal) -> JSONResponse:
    """What the form is built from: the tenant schema, each plan's limits and defaults, the versions."""
    plans = {
        plan.value: {
            "quota": limits.quota.model_dump(),
            "containerMax": limits.container_max.model_dump(),
            "qdrantMaxReplicas": limits.qdrant_max_replicas,
            "qdrantDefaultReplicas": limits.qdrant_default_replicas,
            "qdrantDefaultSize": limits.qdrant_default_size.model_dump(),
            "qdrantDefaultStorage": limits.qdrant_default_storage,
            "qdrantDefaultSnapshotStorage": limits.qdrant_default_snapshot_storage,
            "vclusterAllowed": limits.vcluster_allowed,
            "vclusterDefaultSize": limits.vcluster_default_size.model_dump(),
        }
        for plan, limits in PLANS.items()
    }
    return _json(
        {
            "schema": _form_schema(),
            "plans": plans,
            "selfServicePlans": list(backends.settings.self_service_plans),
            "qdrantVersions": list(versions.QDRANT_VERSIONS),
            "qdrantDefaultVersion": versions.QDRANT_DEFAULT_VERSION,
            "vclusterVersions": list(versions.VCLUSTER_KUBERNETES_VERSIONS),
            "vclusterDefaultVersion": versions.VCLUSTER_DEFAULT_KUBERNETES_VERSION,
            "environments": list(backends.settings.environments),
        }
    )


# Fields the platform writes and the form never offers: qdrant.keyRotation changes only through
# POST .../qdrant/keys/rotate and the service's revocation.
_NOT_IN_FORM = {"QdrantSpec": ("keyRotation",)}


def _form_schema() -> dict[str, Any]:
    schema = TenantSpec.model_json_schema(by_alias=True)
    for model, fields in _NOT_IN_FORM.items():
        definition = schema.get("$defs", {}).get(model, {})
        for name in fields:
            definition.get("properties", {}).pop(name, None)
        schema.get("$defs", {}).pop("KeyRotation", None)
    return schema


class FormCheck(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    spec: dict[str, Any]
    create: bool = False


@router.post("/portal/api/environments/{environment}/tenants/{name}/check")
async def check_form(
    stack: ChangeableTenant, backends: BackendsDep, principal: CurrentPrincipal, body: FormCheck
) -> JSONResponse:
    """Validate the form as the API validates a write (the same messages, by field), say whether it
    needs a platform-admin's approval, and render the preview; answers 200 whatever the verdict, so
    the page reads problems as data rather than as failed requests."""

    def assess() -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, str]]]:
        current = backends.repository.read(stack.environment, stack.tenant)
        if body.create and current is not None:
            raise ServiceError(
                "precondition_failed", f"{stack.name} already exists; pick another name or edit it"
            )
        proposal = backends.approvals.assess(stack, principal, body.spec, patch=False)
        if proposal is not None:
            return proposal.document, current, proposal.needs
        spec = backends.changes.validate(stack, body.spec)
        spec = backends.changes.keep_key_rotation(stack, current, spec)  # not the form's to change
        backends.changes.check_proposal(stack, principal, current, spec)  # volumes that cannot follow
        return spec.to_document(), current, []

    try:
        document, current, needs = await anyio.to_thread.run_sync(assess)
    except ServiceError as error:
        if error.code not in ("invalid_spec", "precondition_failed"):
            raise
        issues = error.details or [{"field": "name", "reason": error.message}]
        return _json({"valid": False, "issues": issues, "needsApproval": False, "needs": []})
    async with backends.previews.turn(principal.budget):
        preview = await anyio.to_thread.run_sync(
            partial(render_preview, backends.settings.project_dir, stack, current, document)
        )
    return _json(
        {
            "valid": True,
            "issues": [],
            "needsApproval": bool(needs),
            "needs": needs,
            "document": document,
            "preview": preview,
        }
    )

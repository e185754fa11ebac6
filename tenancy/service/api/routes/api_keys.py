"""API keys for machines: a tenant-admin creates (shown once), lists and revokes them.

Keys belong to a tenant (in every environment, like the tenant's Keycloak groups) and carry one
role. Only people manage keys: a key cannot mint or revoke keys, so a leaked key cannot entrench itself.
A key is bound to the tenant as it exists when the key is made (its incarnation): a tenant must
exist to get keys, deleting it revokes them, and they never work for a later tenant of the same name.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from tenancy.automation.contract import StackRef
from tenancy.service.api import API_PREFIX
from tenancy.service.api.idempotent import WriteResult, run_idempotent
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY, error_responses
from tenancy.service.backends import Backends
from tenancy.service.core.api_keys import ApiKeyRecord
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.security import Principal
from tenancy.service.deps import BackendsDep, CurrentPrincipal, IdempotencyKey, TenantNamePath
from tenancy.service.models import (
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRequest,
    ApiKeyView,
    timestamp,
)

router = APIRouter(prefix=API_PREFIX, tags=["api-keys"])

_ERRORS = error_responses(
    *AUTHENTICATED, "forbidden", "tenant_not_found", "api_key_not_found", "invalid_request"
)
_CREATE_ERRORS = error_responses(
    *AUTHENTICATED, "forbidden", "tenant_not_found", "too_many_api_keys", *WITH_BODY
)
KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


def key_managing_tenant(
    request: Request, name: TenantNamePath, principal: CurrentPrincipal, backends: BackendsDep
) -> str:
    if not principal.can_read(name, None):
        raise ServiceError("tenant_not_found", f"there is no tenant {name} that you can access")
    if not principal.can_change(name, None) or principal.kind != "user":
        backends.audit.record(
            actor=principal.actor,
            action="api-key.manage",
            outcome="denied",
            tenant=name,
            request_id=request_id(request),
            reason=principal.kind if principal.kind != "user" else "tenant-viewer",
        )
        raise ServiceError(
            "forbidden", "managing API keys needs a person (not a key) with the tenant-admin role"
        )
    return name


KeyManagingTenant = Annotated[str, Depends(key_managing_tenant)]


def _view(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "name": record.name,
        "role": record.role,
        "created_by": record.created_by,
        "created_at": timestamp(record.created_at),
        "expires_at": timestamp(record.expires_at),
        "revoked_at": timestamp(record.revoked_at),
        "active": record.usable(time.time()),
    }


@router.get("/tenants/{name}/api-keys", response_model=ApiKeyList, responses=_ERRORS, summary="List API keys")
def list_api_keys(tenant: KeyManagingTenant, backends: BackendsDep) -> ApiKeyList:
    return ApiKeyList(api_keys=[ApiKeyView(**_view(record)) for record in _keys_of(backends, tenant)])


def _keys_of(backends: Backends, tenant: str) -> list[ApiKeyRecord]:
    """The keys of the tenant of this name now, or of the last one while none is (deleted: its keys read
    revoked): an earlier tenant's, once the name was made again, are someone else's, with who made
    them (outside security review), and work for nothing here anyway; so are keys stored before keys
    were bound to incarnations. What is listed, and what counts against the cap."""
    current = {
        backends.incarnations.of(StackRef(environment, tenant))
        for environment in backends.settings.environments
    }
    return [record for record in backends.api_keys.list(tenant) if record.incarnation & current]


@router.post(
    "/tenants/{name}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=_CREATE_ERRORS,
    summary="Create an API key (the key is shown only in this answer)",
)
def create_api_key(
    request: Request,
    tenant: KeyManagingTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: ApiKeyRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    days = min(body.expires_in_days, backends.settings.api_key_max_days)

    def write() -> WriteResult:
        incarnation = backends.incarnations.markers(tenant)
        if not incarnation:
            raise ServiceError(
                "tenant_not_found",
                f"there is no tenant {tenant} that you can access; create it before making API keys",
            )
        # Bounded: each key is a caller with a request budget of its own (two requests racing may
        # both pass at the bound; nothing beyond that).
        active = sum(1 for key in _keys_of(backends, tenant) if key.usable(time.time()))
        if active >= backends.settings.api_key_max_active:
            raise ServiceError(
                "too_many_api_keys",
                f"{tenant} has {active} active API keys, the most it may have; revoke one it no longer "
                "uses (DELETE .../api-keys/<id>), then create this one",
            )
        record, plaintext = backends.api_keys.create(
            tenant=tenant,
            role=body.role,
            name=body.name,
            created_by=principal.actor,
            expires_at=time.time() + days * 86400,
            incarnation=incarnation,
        )
        _audit(
            request,
            backends,
            principal,
            tenant,
            "api-key.create",
            record.id,
            done=f"API key {record.id} of {tenant} was created",
            # Its secret is shown only in a 201: without one, nobody holds it.
            remedy=f"its secret cannot be shown, so revoke it (DELETE .../api-keys/{record.id}) and create "
            "another once the audit log works again",
        )
        return 201, ApiKeyCreated(**_view(record), key=plaintext).wire(), {}

    # A replay must not hand the key out a second time: the stored answer has it removed.
    return run_idempotent(
        request,
        backends,
        principal,
        idempotency_key,
        body.wire(),
        write,
        stored=lambda answer: {**answer, "key": None},
    )


@router.delete(
    "/tenants/{name}/api-keys/{key_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Revoke an API key",
)
def revoke_api_key(
    request: Request,
    tenant: KeyManagingTenant,
    key_id: KeyId,
    backends: BackendsDep,
    principal: CurrentPrincipal,
) -> Response:
    record = backends.api_keys.revoke(tenant, key_id)
    if record is None:
        raise ServiceError("api_key_not_found", f"{tenant} has no API key {key_id}")
    _audit(
        request,
        backends,
        principal,
        tenant,
        "api-key.revoke",
        key_id,
        done=f"API key {key_id} of {tenant} was revoked",
        remedy="the key no longer works",
    )
    return Response(status_code=204)


def _audit(
    request: Request,
    backends: BackendsDep,
    principal: Principal,
    tenant: str,
    action: str,
    key_id: str,
    *,
    done: str,
    remedy: str,
) -> None:
    backends.audit.record(
        done=done,
        remedy=remedy,
        actor=principal.actor,
        action=action,
        outcome="succeeded",
        tenant=tenant,
        request_id=request_id(request),
        reason=f"key {key_id}",
    )

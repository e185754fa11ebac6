"""A tenant's Qdrant keys: rotate them without downtime, and see where a rotation stands.

A rotation is a write like the others: the next ``qdrant.keyRotation`` record is committed under the
caller's name and an update is queued (202 with the operation). The previous keys keep working until
the grace period ends; then the service itself commits the revocation and queues the update that ends
them (tenancy.service.core.key_rotation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from tenancy.service.api import API_PREFIX
from tenancy.service.api.idempotent import WriteResult, run_idempotent
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY, error_responses
from tenancy.service.api.routes.tenants import TENANT_PATH, _audited_change, _state_operations
from tenancy.service.core.errors import ServiceError
from tenancy.service.deps import (
    BackendsDep,
    ChangeableTenant,
    CurrentPrincipal,
    IdempotencyKey,
    ReadableTenant,
    tenant_not_found,
)
from tenancy.service.models import (
    ApiModel,
    ChangeAccepted,
    Environment,
    OperationView,
    RequestModel,
)
from tenancy.spec.rotation import RotationRefused, parse_grace
from tenancy.spec.tenant import parse_utc_time

router = APIRouter(prefix=API_PREFIX, tags=["qdrant keys"])

ROTATE_PATH = f"{TENANT_PATH}/qdrant/keys/rotate"
_ERRORS = error_responses(*AUTHENTICATED, "tenant_not_found", "environment_not_served")
_ROTATE_ERRORS = error_responses(
    *AUTHENTICATED,
    "tenant_not_found",
    "environment_not_served",
    "forbidden",
    "rotation_in_progress",
    "qdrant_not_enabled",
    *WITH_BODY,
    "repository_unavailable",
    "tenant_busy",
)
Phase = Literal["none", "rolling_out", "stalled", "grace", "revoking", "complete"]


class RotateKeysRequest(RequestModel):
    grace: str = Field(
        default="1h",
        min_length=2,
        max_length=7,
        pattern=r"^[0-9]{1,6}[smhd]$",
        description="How long the previous keys keep working: 15m to 7d (e.g. 30m, 1h, 2d).",
    )


class KeyRotationView(ApiModel):
    environment: Environment
    name: str
    generation: int = Field(description="The key generation recorded in git; 0: never rotated.")
    started_at: datetime | None = None
    grace_until: datetime | None = Field(
        default=None,
        description="Until when the previous generation's keys work. Within a minute after it the service "
        "records the revocation and queues the update that ends them.",
    )
    requested_by: str | None = None
    revoked_at: datetime | None = Field(
        default=None, description="When the service recorded the revocation of the previous keys."
    )
    applied_generation: int | None = Field(
        description="The generation of the last successful update (null: none yet)."
    )
    old_keys_accepted: bool = Field(
        description="Qdrant, as last updated, still accepts the previous generation's keys."
    )
    phase: Phase = Field(
        description="none (never rotated), rolling_out (new keys being deployed; old ones work), stalled "
        "(the update deploying the new keys failed: the old ones keep working and are not revoked until "
        "the new ones are deployed; fix the cause and PATCH the tenant with {} to queue it again), grace "
        "(both work), revoking (revocation recorded, its update not finished), complete."
    )
    operation: OperationView | None = Field(description="The newest update of the tenant's stack.")


def _time(value: Any) -> datetime | None:
    return parse_utc_time(str(value)) if value is not None else None


@router.post(
    ROTATE_PATH,
    status_code=202,
    response_model=ChangeAccepted,
    responses=_ROTATE_ERRORS,
    summary="Rotate the tenant's Qdrant API key and read-only key without downtime",
    description=(
        "Commits the next key generation to tenants/<env>/<name>.yaml with you as the author and queues an "
        "update: Qdrant accepts the new and the previous keys, then the Secret qdrant-api-keys, Vault and "
        "the outputs get the new ones. The previous keys work until the grace period (default 1h, 15m to "
        "7d) ends; then the service revokes them. Refused (409 rotation_in_progress) while a grace period "
        "runs. Follow the operation at /api/v1/operations/{id}/events; GET this path for the status."
    ),
)
def rotate_keys(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: Annotated[RotateKeysRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    wanted = body or RotateKeysRequest()

    def rotate(_record_as: Any) -> Any:  # recorded here, not with its commit's group
        try:
            grace = parse_grace(wanted.grace)
        except RotationRefused as refused:
            raise ServiceError(
                "invalid_request", str(refused), details=[{"field": "grace", "reason": str(refused)}]
            ) from None
        return backends.rotations.rotate(stack, principal, grace=grace)

    def write() -> WriteResult:
        return _audited_change(request, backends, principal, stack, "qdrant.keys.rotate", rotate)

    return run_idempotent(request, backends, principal, idempotency_key, wanted.wire(), write)


@router.get(
    ROTATE_PATH,
    response_model=KeyRotationView,
    responses=_ERRORS,
    summary="Where the tenant's Qdrant key rotation stands",
)
def key_rotation_status(stack: ReadableTenant, backends: BackendsDep) -> KeyRotationView:
    if backends.repository.read(stack.environment, stack.tenant) is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    state = backends.rotations.state(stack, _state_operations(backends, stack))
    record = state.record or {}
    return KeyRotationView(
        environment=Environment(stack.environment),
        name=stack.tenant,
        generation=state.generation,
        started_at=_time(record.get("startedAt")),
        grace_until=_time(record.get("graceUntil")),
        requested_by=record.get("requestedBy"),
        revoked_at=_time(record.get("revokedAt")),
        applied_generation=state.applied_generation,
        old_keys_accepted=state.old_keys_accepted,
        phase=state.phase,
        operation=OperationView.of(state.operation) if state.operation else None,
    )

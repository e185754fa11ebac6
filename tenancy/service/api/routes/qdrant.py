"""A tenant's Qdrant data: back up now, list backups, restore one (into this tenant or another).

Backups and restores are operations the workers run (tenancy.automation.data_operations); these
routes queue them and answer 202 with the operation, followed at /api/v1/operations/{id}/events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.automation.data_operations import DataUnavailable, tenant_backups
from tenancy.service.api import API_PREFIX
from tenancy.service.backends import Backends
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.security import Principal
from tenancy.service.deps import (
    BackendsDep,
    ChangeableTenant,
    CurrentPrincipal,
    ReadableTenant,
    tenant_not_found,
)
from tenancy.service.models import ApiModel, ErrorResponse, OperationView, RequestModel
from tenancy.spec.tenant import DNS_LABEL

router = APIRouter(prefix=API_PREFIX, tags=["qdrant data"])

QDRANT_PATH = "/environments/{environment}/tenants/{name}/qdrant"
_NAME = DNS_LABEL.pattern
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No or invalid credentials."},
    403: {"model": ErrorResponse, "description": "You can read this tenant but not change it."},
    404: {"model": ErrorResponse, "description": "No such tenant (or backup) among those you can access."},
    409: {
        "model": ErrorResponse,
        "description": "The tenant has no Qdrant, or another operation runs on it (restore).",
    },
    422: {"model": ErrorResponse, "description": "Invalid request: details name each field."},
    503: {"model": ErrorResponse, "description": "Backups are not configured on this service."},
}


class BackupView(ApiModel):
    id: str
    created: datetime
    size: int = Field(description="Bytes stored, every shard snapshot together.")
    collections: list[str]
    checksum: str = Field(description="SHA-256 over every stored object's key, size and SHA-256.")


class BackupList(ApiModel):
    backups: list[BackupView] = Field(description="Complete backups, newest first.")


class RestoreRequest(RequestModel):
    backup: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z-]+$", description="A backup id.")
    collections: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Only these collections (the others are left alone); all when absent.",
    )
    into: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=_NAME,
        description="Restore into this tenant of the same environment (you must be able to change it); "
        "this tenant when absent. The restored collections replace the target's of the same name.",
    )


class OperationAccepted(ApiModel):
    operation: OperationView


def _data(backends: Backends) -> Any:
    if backends.data is None:
        raise ServiceError(
            "backups_unavailable",
            "this service has no backup bucket configured (TENANCY_SERVICE_BACKUP_BUCKET); ask the "
            "platform team",
        )
    return backends.data


def _with_qdrant(backends: Backends, stack: StackRef) -> dict[str, Any]:
    document = backends.repository.read(stack.environment, stack.tenant)
    if document is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    qdrant = document.get("qdrant")
    if not (isinstance(qdrant, dict) and qdrant.get("enabled") is True):
        raise ServiceError(
            "qdrant_not_enabled", f"{stack.name} has no Qdrant (qdrant.enabled is off): nothing to back up"
        )
    return document


def _active(backends: Backends, stack: StackRef) -> Operation | None:
    return next(
        (
            op
            for op in backends.queue.recent(stack=stack, limit=20)
            if op.status in (OperationStatus.queued, OperationStatus.running)
        ),
        None,
    )


def _accepted(backends: Backends, operation: Operation) -> JSONResponse:
    backends.metrics.operations_submitted.labels(operation.kind.value).inc()
    backends.wake_worker()
    return JSONResponse(
        OperationAccepted(operation=OperationView.of(operation)).wire(),
        status_code=202,
        headers={"Location": f"/api/v1/operations/{operation.id}"},
    )


def _audit(
    request: Request,
    backends: Backends,
    principal: Principal,
    stack: StackRef,
    action: str,
    *,
    operation: Operation | None = None,
    refused: str | None = None,
) -> None:
    backends.audit.record(
        actor=principal.actor,
        action=action,
        outcome="refused" if refused else "accepted",
        tenant=stack.tenant,
        environment=stack.environment,
        request_id=request_id(request),
        operation_id=operation.id if operation else None,
        reason=refused,
    )


@router.post(
    f"{QDRANT_PATH}/snapshots",
    status_code=202,
    response_model=OperationAccepted,
    responses=_ERRORS,
    summary="Back up the tenant's Qdrant now",
    description="Queues a backup (every shard of every collection, stored under the tenant's prefix "
    "of the backup bucket). Follow the operation's events; its summary names the backup.",
)
def back_up_now(
    request: Request, stack: ChangeableTenant, backends: BackendsDep, principal: CurrentPrincipal
) -> JSONResponse:
    _with_qdrant(backends, stack)  # 404/409 about the tenant before 503 about the service
    _data(backends)
    operation = backends.queue.submit(
        stack,
        OperationKind.backup,
        spec=None,
        requested_by=principal.actor,
        incarnation=backends.incarnations.of(stack),
    )
    _audit(request, backends, principal, stack, "qdrant.backup", operation=operation)
    return _accepted(backends, operation)


@router.get(
    f"{QDRANT_PATH}/snapshots",
    response_model=BackupList,
    responses=_ERRORS,
    summary="List the tenant's backups, newest first",
)
def list_backups(stack: ReadableTenant, backends: BackendsDep) -> BackupList:
    if backends.repository.read(stack.environment, stack.tenant) is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    data = _data(backends)
    try:
        records = tenant_backups(data, stack)
    except DataUnavailable:
        raise ServiceError(
            "backups_unavailable", f"the backups of {stack.name} cannot be listed now; retry"
        ) from None
    return BackupList(
        backups=[
            BackupView(
                id=r.id,
                created=r.created,
                size=r.size,
                collections=list(r.collections),
                checksum=r.checksum,
            )
            for r in records
        ]
    )


@router.post(
    f"{QDRANT_PATH}/restore",
    status_code=202,
    response_model=OperationAccepted,
    responses=_ERRORS,
    summary="Restore a backup of this tenant, into it or into another tenant you can change",
    description="Refused (409 operation_in_progress) while another operation is queued or running on "
    "the tenant restored into. The restore checks every object's SHA-256 before it changes anything.",
)
def restore(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: RestoreRequest,
) -> JSONResponse:
    target = StackRef(stack.environment, body.into or stack.tenant)
    if not principal.can_read(target.tenant):
        raise tenant_not_found(target.environment, target.tenant)
    if not principal.can_change(target.tenant):
        raise ServiceError(
            "forbidden", f"you can read {target.tenant} but restoring into it needs tenant-admin"
        )
    if target != stack and backends.repository.read(stack.environment, stack.tenant) is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    _with_qdrant(backends, target)
    data = _data(backends)
    try:
        backup_ids = {r.id: r for r in tenant_backups(data, stack)}
    except DataUnavailable:
        raise ServiceError(
            "backups_unavailable", f"the backups of {stack.name} cannot be listed now; retry"
        ) from None
    record = backup_ids.get(body.backup)
    if record is None:
        raise ServiceError("backup_not_found", f"{stack.name} has no complete backup {body.backup}")
    missing = sorted(set(body.collections or ()) - set(record.collections))
    if missing:
        raise ServiceError(
            "invalid_request",
            f"backup {body.backup} holds {', '.join(record.collections) or 'no collections'}",
            details=[{"field": "collections", "reason": f"not in the backup: {', '.join(missing)}"}],
        )
    with backends.write_lock.hold(target):  # no tenant change is queued between the check and the submit
        running = _active(backends, target)
        if running is not None:
            _audit(request, backends, principal, target, "qdrant.restore", refused="operation_in_progress")
            raise ServiceError(
                "operation_in_progress",
                f"{target.name} has a {running.kind.value} operation {running.status.value} "
                f"({running.id}); wait for it to finish, then restore",
            )
        params: dict[str, Any] = {"backup": body.backup, "source": stack.tenant}
        if body.collections:
            params["collections"] = sorted(set(body.collections))
        operation = backends.queue.submit(
            target,
            OperationKind.restore,
            spec=None,
            requested_by=principal.actor,
            incarnation=backends.incarnations.of(target),
            params=params,
        )
    _audit(request, backends, principal, target, "qdrant.restore", operation=operation)
    return _accepted(backends, operation)

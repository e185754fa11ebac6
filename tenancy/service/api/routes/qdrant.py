"""A tenant's Qdrant data: back up now, list backups, restore one (into this tenant or another).

Backups and restores are operations the workers run (tenancy.automation.data_operations); these
routes queue them and answer 202 with the operation, followed at /api/v1/operations/{id}/events.

Backups a deleted tenant left (``tenancy.dataops.retired``) belong to its incarnation, not its name:
a tenant's roles see and restore those of the tenant's own current incarnation and of incarnations a
platform-admin handed over to it; platform-admins see and restore all of them, also while no tenant
of the name exists. Group membership says only *which name* a caller administers, and a name can be
reused by someone else, so a role on the name alone never reaches an earlier incarnation's data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.automation.data_operations import (
    DataUnavailable,
    retired_area,
    tenant_backups,
    tenant_retired_backups,
)
from tenancy.automation.incarnation import UNCOMMITTED
from tenancy.dataops.backup import BackupError, BackupRecord
from tenancy.dataops.object_store import ObjectStoreError
from tenancy.dataops.retired import (
    RETIRED_FOLDER,
    RetiredBackup,
    RetiredIncarnation,
    hand_over,
    revoke_hand_over,
)
from tenancy.service.api import API_PREFIX
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY, error_responses
from tenancy.service.backends import Backends
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.security import Principal
from tenancy.service.core.tenant_changes import _repository_unavailable
from tenancy.service.core.tenants_repo import RepositoryError
from tenancy.service.deps import (
    BackendsDep,
    ChangeableTenant,
    CurrentPrincipal,
    ReadableTenant,
    tenant_not_found,
)
from tenancy.service.models import ApiModel, OperationView, RequestModel
from tenancy.spec.tenant import DNS_LABEL

router = APIRouter(prefix=API_PREFIX, tags=["qdrant data"])

QDRANT_PATH = "/environments/{environment}/tenants/{name}/qdrant"
_NAME = DNS_LABEL.pattern
_CODES = (
    *AUTHENTICATED,
    "forbidden",
    "backup_not_owned",
    "platform_admin_required",
    "tenant_not_found",
    "environment_not_served",
    "backup_not_found",
    "qdrant_not_enabled",
    "operation_in_progress",
    "backup_expired",
    "invalid_request",
    "backups_unavailable",
)
_ERRORS = error_responses(*_CODES)
_RESTORE_ERRORS = error_responses(*_CODES, *WITH_BODY, "tenant_busy")


class RetiredView(ApiModel):
    incarnation: str = Field(
        description="The deleted tenant's incarnation: the commit that created its file."
    )
    deleted: datetime = Field(description="When its backups were set aside (its destroy).")
    expires: datetime = Field(
        description="When the backup is deleted: its creation plus the maxAgeDays it had."
    )


class BackupView(ApiModel):
    id: str
    created: datetime
    size: int = Field(description="Bytes stored, every shard snapshot together.")
    collections: list[str]
    checksum: str = Field(description="SHA-256 over every stored object's key, size and SHA-256.")
    retired: RetiredView | None = Field(
        default=None,
        description="Set for a backup a deleted tenant of this name left; null for this tenant's.",
    )

    @classmethod
    def of(cls, record: BackupRecord, retired: RetiredBackup | None = None) -> BackupView:
        return cls(
            id=record.id,
            created=record.created,
            size=record.size,
            collections=list(record.collections),
            checksum=record.checksum,
            retired=None
            if retired is None
            else RetiredView(
                incarnation=retired.owner.folder, deleted=retired.owner.retired, expires=retired.expires
            ),
        )


class HandedOver(ApiModel):
    incarnation: str = Field(description="The deleted incarnation whose backups this tenant may now restore.")
    handed_to: list[str] = Field(description="Every incarnation (`<env>:<commit>`) they were handed over to.")


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
            "qdrant_not_enabled",
            f"{stack.name} has no Qdrant (qdrant.enabled is off): nothing to back up or restore into",
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
    if refused is None and operation is not None:  # queued: the record says so, or the answer does
        backends.audit.record(
            done=f"the {action.removeprefix('qdrant.')} of {stack.name} was queued "
            f"(operation {operation.id})",
            remedy="follow the operation",
            actor=principal.actor,
            action=action,
            outcome="accepted",
            tenant=stack.tenant,
            environment=stack.environment,
            request_id=request_id(request),
            operation_id=operation.id,
        )
        return
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
    description="Also the kept backups a deleted tenant of this name left that you may restore (their "
    "`retired` says which incarnation, when it was deleted and until when they are kept): a "
    "platform-admin sees all of them, also while no tenant has the name; a tenant's roles those of its "
    "own incarnation and those a platform-admin handed over to it.",
)
def list_backups(stack: ReadableTenant, backends: BackendsDep, principal: CurrentPrincipal) -> BackupList:
    exists = backends.repository.read(stack.environment, stack.tenant) is not None
    if not exists and (not principal.platform_admin or backends.data is None):
        # No tenant of the name: only a platform-admin sees backups deleted tenants left, if any are kept.
        raise tenant_not_found(stack.environment, stack.tenant)
    data = _data(backends)
    current = backends.incarnations.of(stack) if exists else None
    now = datetime.now(UTC)
    try:
        live = tenant_backups(data, stack)
        retired = [
            b
            for b in tenant_retired_backups(data, stack)
            if not b.expired(now) and may_restore_retired(principal, b.owner, current)
        ]
    except DataUnavailable:
        raise ServiceError(
            "backups_unavailable", f"the backups of {stack.name} cannot be listed now; retry"
        ) from None
    views = [BackupView.of(r) for r in live] + [BackupView.of(b.record, b) for b in retired]
    return BackupList(backups=sorted(views, key=lambda v: v.created, reverse=True))


def may_restore_retired(principal: Principal, owner: RetiredIncarnation, current: str | None) -> bool:
    """Whether ``principal`` may list and restore the backups a deleted incarnation left, ``current``
    being the marker of the name's live incarnation (None: no tenant of the name now).

    Platform-admins: always. A tenant's roles: only backups of their own incarnation (a destroy with
    the file kept, e.g. ``tenantctl destroy``) or of one a platform-admin handed over to it. A tenant
    re-created under the name is a new incarnation, and whoever holds its role may not be who held
    the old one's: the platform-admin who re-creates it decides (restore it, or hand it over)."""
    if principal.platform_admin:
        return True
    if current is None or current.endswith(f":{UNCOMMITTED}"):
        return False  # a file no commit created belongs to no incarnation anyone owns
    return owner.incarnation == current or current in owner.handed_to


@router.post(
    f"{QDRANT_PATH}/restore",
    status_code=202,
    response_model=OperationAccepted,
    responses=_RESTORE_ERRORS,
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
    if not principal.can_read(target.tenant, target.environment):
        raise tenant_not_found(target.environment, target.tenant)
    if not principal.can_change(target.tenant, target.environment):
        raise ServiceError(
            "forbidden", f"you can read {target.tenant} but restoring into it needs tenant-admin"
        )
    source_exists = backends.repository.read(stack.environment, stack.tenant) is not None
    if not source_exists and (not principal.platform_admin or backends.data is None):
        # A deleted tenant's backups: its roles went with it (a platform-admin restores them).
        raise tenant_not_found(stack.environment, stack.tenant)
    _with_qdrant(backends, target)
    data = _data(backends)
    record, retired = _find_backup(request, backends, principal, stack, data, body.backup, source_exists)
    missing = sorted(set(body.collections or ()) - set(record.collections))
    if missing:
        raise ServiceError(
            "invalid_request",
            f"backup {body.backup} holds {', '.join(record.collections) or 'no collections'}",
            details=[{"field": "collections", "reason": f"not in the backup: {', '.join(missing)}"}],
        )
    try:
        with backends.write_lock.hold(target):  # no tenant change is queued between the check and the submit
            running = _active(backends, target)
            if running is not None:
                refused = "operation_in_progress"
                _audit(request, backends, principal, target, "qdrant.restore", refused=refused)
                raise ServiceError(
                    "operation_in_progress",
                    f"{target.name} has a {running.kind.value} operation {running.status.value} "
                    f"({running.id}); wait for it to finish, then restore",
                )
            params: dict[str, Any] = {"backup": body.backup, "source": stack.tenant}
            if retired is not None:
                params["retired"] = retired.owner.folder
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
    except RepositoryError as error:  # the tenant's lock: another replica writes it (tenant_busy)
        raise _repository_unavailable(error) from None
    _audit(request, backends, principal, target, "qdrant.restore", operation=operation)
    return _accepted(backends, operation)


def _find_backup(
    request: Request,
    backends: Backends,
    principal: Principal,
    stack: StackRef,
    data: Any,
    backup_id: str,
    source_exists: bool,
) -> tuple[BackupRecord, RetiredBackup | None]:
    """The backup ``backup_id`` of ``stack``: one of its own, or one a deleted incarnation of its name
    left that the caller may restore (404 backup_not_found, 403 backup_not_owned, 410 backup_expired)."""
    try:
        live = next((r for r in tenant_backups(data, stack) if r.id == backup_id), None)
        if live is not None:
            return live, None
        retired = next((b for b in tenant_retired_backups(data, stack) if b.record.id == backup_id), None)
    except DataUnavailable:
        raise ServiceError(
            "backups_unavailable", f"the backups of {stack.name} cannot be listed now; retry"
        ) from None
    if retired is None:
        raise ServiceError("backup_not_found", f"{stack.name} has no complete backup {backup_id}")
    current = backends.incarnations.of(stack) if source_exists else None
    if not may_restore_retired(principal, retired.owner, current):
        _audit(request, backends, principal, stack, "qdrant.restore", refused="backup_not_owned")
        raise ServiceError(
            "backup_not_owned",
            f"backup {backup_id} was left by an earlier tenant {stack.name}, deleted "
            f"{retired.owner.retired:%Y-%m-%d %H:%M} UTC (incarnation {retired.owner.folder}); a new tenant "
            "of the name does not own it: a platform-admin may restore it or hand it over to this tenant",
        )
    if retired.expired(datetime.now(UTC)):
        raise ServiceError(
            "backup_expired",
            f"backup {backup_id} of the deleted {stack.name} expired at {retired.expires:%Y-%m-%d %H:%M} UTC "
            "(the retention it had); it can no longer be restored",
        )
    return retired.record, retired


_INCARNATION = Annotated[
    str,
    Path(
        description="The deleted incarnation (the `retired.incarnation` of its backups).",
        pattern=f"^({RETIRED_FOLDER})$",
    ),
]


@router.post(
    f"{QDRANT_PATH}/retired/{{incarnation}}/handover",
    response_model=HandedOver,
    responses=_ERRORS,
    summary="Let this tenant restore the backups a deleted tenant of its name left (platform-admin)",
    description="For a tenant re-created under a deleted tenant's name by the same people: its roles may "
    "then list and restore the deleted incarnation's backups (until they expire). 404 `backup_not_found` "
    "(nothing recorded) when no deleted incarnation of the name has that id or it holds no backup. Audited.",
)
def hand_over_backups(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    incarnation: _INCARNATION,
) -> HandedOver:
    return _change_hand_over(request, stack, backends, principal, incarnation, revoke=False)


@router.delete(
    f"{QDRANT_PATH}/retired/{{incarnation}}/handover",
    response_model=HandedOver,
    responses=_ERRORS,
    summary="Take back a hand-over of a deleted tenant's backups to this tenant (platform-admin)",
    description="This tenant's roles no longer list or restore that deleted incarnation's backups; "
    "idempotent. 404 `backup_not_found` when no deleted incarnation of the name has that id. Audited.",
)
def revoke_hand_over_backups(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    incarnation: _INCARNATION,
) -> HandedOver:
    return _change_hand_over(request, stack, backends, principal, incarnation, revoke=True)


def _change_hand_over(
    request: Request,
    stack: StackRef,
    backends: Backends,
    principal: Principal,
    incarnation: str,
    *,
    revoke: bool,
) -> HandedOver:
    if not principal.platform_admin:
        raise ServiceError(
            "platform_admin_required",
            "only a platform-admin may hand a deleted tenant's backups over to a tenant of its name",
        )
    if backends.repository.read(stack.environment, stack.tenant) is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    data = _data(backends)
    current = backends.incarnations.of(stack)
    if current.endswith(f":{UNCOMMITTED}"):  # a marker no tenant ever has: a grant to it grants nothing
        raise ServiceError(
            "tenant_not_found",
            f"{stack.name} has no committed file yet: there is no incarnation to hand over to",
        )
    try:
        change = revoke_hand_over if revoke else hand_over
        owner = change(retired_area(data, stack), incarnation, current)
    except BackupError as error:
        raise ServiceError(
            "backup_not_found", f"{stack.name} has no backups of a deleted incarnation {incarnation}: {error}"
        ) from None
    except ObjectStoreError:
        raise ServiceError(
            "backups_unavailable", f"the backups of {stack.name} cannot be changed now; retry"
        ) from None
    backends.audit.record(
        done=f"the backups of {incarnation} were "
        f"{'taken back from' if revoke else 'handed over to'} {stack.name}",
        actor=principal.actor,
        action="qdrant.backups.handover.revoke" if revoke else "qdrant.backups.handover",
        outcome="accepted",
        tenant=stack.tenant,
        environment=stack.environment,
        request_id=request_id(request),
        reason=f"{incarnation} -/-> {current}" if revoke else f"{incarnation} -> {current}",
    )
    return HandedOver(incarnation=owner.folder, handed_to=list(owner.handed_to))

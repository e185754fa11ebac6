"""Tenants: list, read, create/replace, patch, delete, preview, and their operations."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tenancy.automation.contract import (
    SECRET_MASK,
    Operation,
    OperationKind,
    OperationStatus,
    StackRef,
)
from tenancy.service.api import API_PREFIX
from tenancy.service.api.idempotent import WriteResult, answer_headers, run_idempotent
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY, error_responses
from tenancy.service.api.routes.change_requests import file_if_needed
from tenancy.service.core.audit import Outcome
from tenancy.service.core.errors import ServiceError, request_id
from tenancy.service.core.preview import preview_change
from tenancy.service.core.security import Principal, Role
from tenancy.service.core.tenant_changes import ChangeResult, RecordAs
from tenancy.service.deps import (
    BackendsDep,
    ChangeableTenant,
    ChangeableTenantAccess,
    CurrentPrincipal,
    IdempotencyKey,
    IfMatch,
    IfNoneMatch,
    ReadableTenant,
    ReadableTenantAccess,
    served,
    tenant_not_found,
)
from tenancy.service.models import (
    ChangeAccepted,
    DesiredResource,
    Environment,
    OperationList,
    OperationView,
    PreviewView,
    ResourceChangeView,
    TenantList,
    TenantStatus,
    TenantSummary,
    TenantView,
)
from tenancy.spec.tenant import TenantSpec

log = logging.getLogger("tenancy.service")

router = APIRouter(prefix=API_PREFIX, tags=["tenants"])

TENANT_PATH = "/environments/{environment}/tenants/{name}"
# Outputs that are secrets whatever the engine says: masked unless revealed through their own route.
SECRET_OUTPUTS = frozenset({"qdrantApiKey", "qdrantReadOnlyApiKey", "vclusterKubeconfig"})
_STATE_KINDS = (OperationKind.up, OperationKind.destroy, OperationKind.refresh)

# PUT and PATCH: an update that needs an automatic backup first (a Qdrant version change or removal)
# fails when that backup fails; a platform-admin repeats the change (PATCH {} will do) with force.
ForceWithoutBackup = Annotated[
    bool,
    Query(
        description="Platform-admins only: go on without the automatic backup if it fails (before a Qdrant "
        "version change or removal); recorded in the operation's events and the commit, audited as "
        "tenant.replace.forced / tenant.patch.forced."
    ),
]

_ERRORS = error_responses(*AUTHENTICATED, "tenant_not_found", "environment_not_served")
_WRITE_CODES = (
    *AUTHENTICATED,
    "tenant_not_found",
    "environment_not_served",
    "forbidden",
    "platform_admin_required",
    "deletion_protected",
    "idempotency_key_in_use",
    "conflict_with_repository",
    "previous_incarnation_not_destroyed",
    "precondition_failed",
    "invalid_spec",
    *WITH_BODY,
    "idempotency_key_reused",
    "repository_unavailable",
    "tenant_busy",
    "audit_unavailable",
)
_WRITE_ERRORS = error_responses(*_WRITE_CODES)
# A tenant-admin's PUT or PATCH that needs a platform-admin is filed as a change request instead.
_CHANGE_ERRORS = error_responses(*_WRITE_CODES, "too_many_change_requests", "preview_busy")
# A preview waits its turn to render, or answers 429 preview_busy (tenancy.service.core.preview).
_PREVIEW_ERRORS = error_responses(*_WRITE_CODES, "preview_busy")


def _spec_schema() -> dict[str, Any]:
    schema = TenantSpec.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    return schema


def _tenant_body_openapi(description: str) -> dict[str, Any]:
    schema = _spec_schema()
    definitions = schema.pop("$defs", {})
    # Inline the nested definitions so the request body stands alone in the OpenAPI document.
    inlined = _inline(schema, definitions)
    inlined["required"] = [field for field in inlined.get("required", []) if field != "name"]
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": inlined}},
        }
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str):
            return _inline(definitions[reference.rsplit("/", 1)[-1]], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, definitions) for value in node]
    return node


def mask_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    return {key: SECRET_MASK if key in SECRET_OUTPUTS else value for key, value in outputs.items()}


def _state_operations(backends: BackendsDep, stack: StackRef) -> list[Operation]:
    """The stack's up/destroy/refresh operations of its current incarnation, newest first."""
    recent = backends.queue.recent(stack=stack, limit=20)
    return [op for op in backends.incarnations.current(recent, stack) if op.kind in _STATE_KINDS]


def visible_operations(
    backends: BackendsDep, principal: Principal, stack: StackRef, operations: list[Operation]
) -> list[Operation]:
    """What the caller may see of a stack's operations: a tenant's roles see its current incarnation
    only (a reused name shows nothing of the tenant before it); platform-admins see all."""
    return operations if principal.platform_admin else backends.incarnations.current(operations, stack)


def tenant_status(operations: list[Operation], *, deleted: bool = False) -> TenantStatus:
    if not operations:
        return TenantStatus(phase="pending", message="no operation has run for this tenant yet")
    last = operations[0]
    if last.status in (OperationStatus.queued, OperationStatus.running):
        phase = "deleting" if last.kind == OperationKind.destroy else "updating"
        return TenantStatus(phase=phase, message=f"operation {last.id} is {last.status.value}")
    if last.status == OperationStatus.failed:
        error = last.summary.error if last.summary else None
        message = error or f"operation {last.id} failed"
        if deleted:
            message = (
                f"the tenant's file is deleted, but destroying its stack failed: {message.rstrip('.')}. "
                "Once that is fixed, DELETE the tenant again to retry."
            )
        return TenantStatus(phase="failed", message=message)
    if last.status == OperationStatus.succeeded:
        return TenantStatus(phase="ready")
    return TenantStatus(phase="unknown")


def _accepted(backends: BackendsDep, result: ChangeResult, *, status: int = 202) -> WriteResult:
    backends.metrics.operations_submitted.labels(result.operation.kind.value).inc()
    backends.wake_worker()
    body = ChangeAccepted(
        operation=OperationView.of(result.operation),
        commit=result.commit,
        changed=result.commit is not None,
        etag=result.etag,
    ).wire()
    return status, body, answer_headers(body)


def _audited_change(
    request: Request,
    backends: BackendsDep,
    principal: Principal,
    stack: StackRef,
    action: str,
    change: Callable[[RecordAs], ChangeResult],
) -> WriteResult:
    """Run ``change`` (returning a ChangeResult) and write the audit line whatever the outcome. While
    the audit log cannot be written no write gets here (``WritesNeedTheAuditLog``); a change committed
    when its record then fails is answered 503 ``audit_unavailable``, saying it was committed and
    queued (and its Idempotency-Key keeps that answer). ``change`` is handed the accepted record, for
    a write whose commit's group writes it (``ChangeResult.recorded``): one flush for the group."""
    try:
        result = change(RecordAs(principal.actor, action, request_id(request)))
    except ServiceError as error:
        if error.took_effect:  # accepted, but its own record could not be written: nothing to add
            raise
        outcome: Outcome = "invalid" if error.status == 422 else "refused"
        backends.audit.record(
            actor=principal.actor,
            action=action,
            outcome=outcome,
            tenant=stack.tenant,
            environment=stack.environment,
            request_id=request_id(request),
            reason=error.code,
        )
        raise
    if result.recorded:  # flushed with its commit (the commit stage's wait): none more here
        backends.metrics.write_waited("audit", 0.0)
        return _accepted(backends, result)
    started = time.perf_counter()
    backends.audit.record(
        done=result.what_was_done,
        actor=principal.actor,
        action=action,
        outcome="accepted",
        tenant=stack.tenant,
        environment=stack.environment,
        request_id=request_id(request),
        operation_id=result.operation.id,
    )
    backends.metrics.write_waited("audit", time.perf_counter() - started)
    return _accepted(backends, result)


@router.get(
    "/tenants",
    response_model=TenantList,
    responses=_ERRORS,
    summary="List the tenants you can access (those with a file in git)",
)
def list_tenants(
    backends: BackendsDep,
    principal: CurrentPrincipal,
    environment: Annotated[Environment | None, Query(description="Only this environment.")] = None,
) -> TenantList:
    if environment is not None:
        served(backends, environment.value)
    environments = backends.settings.environments
    found = []
    for env, name in backends.repository.names():
        role = principal.role_on(name, env)
        if role is None or env not in environments or (environment is not None and env != environment.value):
            continue
        document = backends.repository.read(env, name) or {}
        display = document.get("displayName")
        plan = document.get("plan")
        found.append(
            TenantSummary(
                environment=Environment(env),
                name=name,
                display_name=display if isinstance(display, str) else None,
                plan=plan if isinstance(plan, str) else None,
                role=role,
            )
        )
    return TenantList(tenants=found)


@router.get(TENANT_PATH, response_model=TenantView, responses=_ERRORS, summary="Read a tenant")
async def read_tenant(access: ReadableTenantAccess) -> Response:
    # The embedded default reads SQLite (WAL: readers never wait for writers) and local git objects:
    # quicker on the event loop than the hop to a worker thread and back. Anything that may wait (Redis,
    # a refresh from the remote, a git process) goes to a worker thread.
    stack, backends, principal = access.stack, access.backends, access.principal
    with backends.repository.one_tip():  # the branch read once for the whole read, not per lookup
        if backends.local_reads and not backends.repository.reads_wait(stack.environment, stack.tenant):
            return _read_tenant(stack, backends, principal)
        return await run_in_threadpool(_read_tenant, stack, backends, principal)


@router.head(
    TENANT_PATH,
    response_class=Response,
    responses={**_ERRORS, 200: {"description": "The headers a GET would answer (ETag), without the body."}},
    summary="Check a tenant for changes (its ETag) without reading it",
)
async def check_tenant(access: ReadableTenantAccess) -> Response:
    # The GET's answer without its body: the same status, the same checks (a caller who could not
    # read the tenant learns nothing here either) and the same headers, Content-Length included.
    read = await read_tenant(access)
    answer = Response(status_code=read.status_code)
    answer.raw_headers = list(read.raw_headers)  # every header as the GET has it, repeated ones too
    return answer


def _read_tenant(stack: StackRef, backends: BackendsDep, principal: Principal) -> Response:
    role = principal.role_on(stack.tenant, stack.environment)
    assert role is not None
    committed = backends.repository.file(stack.environment, stack.tenant)  # parsed once per blob
    if committed is None:
        return _read_deleted_tenant(stack, backends, role)
    document, etag = committed.document, committed.etag
    operations = _state_operations(backends, stack)
    applied = next(
        (op for op in operations if op.status == OperationStatus.succeeded and op.kind == OperationKind.up),
        None,
    )
    outputs = mask_outputs(applied.summary.outputs) if applied and applied.summary else None
    view = TenantView(
        environment=Environment(stack.environment),
        name=stack.tenant,
        role=role,
        etag=etag,
        spec=document,
        spec_problem=(
            f"{backends.changes.display_file(stack)} {committed.problem}"
            if committed.problem is not None
            else None
        ),
        status=tenant_status(operations),
        last_operation=OperationView.of(operations[0]) if operations else None,
        outputs=outputs,
    )
    return Response(view.wire_json(), media_type="application/json", headers={"ETag": f'"{etag}"'})


def _read_deleted_tenant(stack: StackRef, backends: BackendsDep, role: Role) -> JSONResponse:
    """A tenant whose file is deleted but whose stack is not destroyed yet (or failed to be): shown
    with the spec it had and its destroy, so the failure can be seen and the DELETE retried."""
    pending = backends.changes.pending_deletion(stack)
    if pending is None:
        raise tenant_not_found(stack.environment, stack.tenant)
    view = TenantView(
        environment=Environment(stack.environment),
        name=stack.tenant,
        role=role,
        etag=None,
        deleted=True,
        spec=pending.spec or {},
        status=tenant_status([pending], deleted=True),
        last_operation=OperationView.of(pending),
        outputs=None,
    )
    return JSONResponse(view.wire())


@router.put(
    TENANT_PATH,
    status_code=202,
    response_model=ChangeAccepted,
    responses=_CHANGE_ERRORS,
    summary="Create or replace a tenant's spec",
    description=(
        "Validates the spec like `tenantctl validate` (schema and plan limits), commits "
        "tenants/<env>/<name>.yaml with you as the author, and queues an update. Answers at once with "
        "the operation; follow it at /api/v1/operations/{id}/events. `name` may be left out. Send "
        "`If-None-Match: *` to create only (412 if the tenant exists). `plan` and `groups` are the "
        "platform's: a tenant-admin keeps them as they are (and creates on a self-service plan)."
    ),
    openapi_extra=_tenant_body_openapi("The tenant document, as in tenants/<env>/<name>.yaml."),
)
def replace_tenant(
    request: Request,
    access: ChangeableTenantAccess,
    body: Annotated[Any, Body()],
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
    force: ForceWithoutBackup = False,
) -> JSONResponse:
    stack, backends, principal = access.stack, access.backends, access.principal

    def write() -> WriteResult:
        # A forced write is a platform-admin's (refused and audited otherwise), never a change request.
        filed = (
            None
            if force
            else file_if_needed(
                request,
                backends,
                principal,
                stack,
                body,
                patch=False,
                if_match=if_match,
                if_none_match=if_none_match,
            )
        )
        if filed is not None:
            return filed
        return _audited_change(
            request,
            backends,
            principal,
            stack,
            "tenant.replace.forced" if force else "tenant.replace",
            lambda record_as: backends.changes.replace(
                stack,
                body,
                principal,
                if_match=if_match,
                if_none_match=if_none_match,
                force=force,
                record_as=record_as,
            ),
        )

    keyed = {"body": body, "force": True} if force else body
    return run_idempotent(request, backends, principal, idempotency_key, keyed, write)


@router.patch(
    TENANT_PATH,
    status_code=202,
    response_model=ChangeAccepted,
    responses=_CHANGE_ERRORS,
    summary="Change parts of a tenant's spec",
    description=(
        'A JSON merge patch (RFC 7396) of the tenant document, e.g. `{"qdrant": {"replicas": 3}}`; '
        "null removes a field. The merged document is validated in full, then committed and applied."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/merge-patch+json": {"schema": {"type": "object"}},
            },
        }
    },
)
def patch_tenant(
    request: Request,
    access: ChangeableTenantAccess,
    body: Annotated[Any, Body()],
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    force: ForceWithoutBackup = False,
) -> JSONResponse:
    stack, backends, principal = access.stack, access.backends, access.principal

    def write() -> WriteResult:
        filed = (
            None
            if force
            else file_if_needed(request, backends, principal, stack, body, patch=True, if_match=if_match)
        )
        if filed is not None:
            return filed
        return _audited_change(
            request,
            backends,
            principal,
            stack,
            "tenant.patch.forced" if force else "tenant.patch",
            lambda record_as: backends.changes.patch(
                stack, body, principal, if_match=if_match, force=force, record_as=record_as
            ),
        )

    keyed = {"body": body, "force": True} if force else body
    return run_idempotent(request, backends, principal, idempotency_key, keyed, write)


@router.delete(
    TENANT_PATH,
    status_code=202,
    response_model=ChangeAccepted,
    responses=_WRITE_ERRORS,
    summary="Delete a tenant",
    description=(
        "Refused (409 deletion_protected) while the spec has deletionProtection on. Commits the file's "
        "removal and queues a destroy. Until the destroy succeeds the tenant reads as deleted (status "
        "deleting or failed); DELETE again retries a failed destroy."
    ),
)
def delete_tenant(
    request: Request,
    access: ChangeableTenantAccess,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
    force: Annotated[
        bool,
        Query(
            description="Platform-admins only: destroy even if the automatic backup before it fails "
            "(audited as tenant.delete.forced)."
        ),
    ] = False,
) -> JSONResponse:
    stack, backends, principal = access.stack, access.backends, access.principal

    def write() -> WriteResult:
        return _audited_change(
            request,
            backends,
            principal,
            stack,
            "tenant.delete.forced" if force else "tenant.delete",
            lambda _record_as: backends.changes.delete(stack, principal, if_match=if_match, force=force),
        )

    body = {"force": True} if force else None
    return run_idempotent(request, backends, principal, idempotency_key, body, write)


@router.post(
    f"{TENANT_PATH}/preview",
    response_model=PreviewView,
    responses=_PREVIEW_ERRORS,
    summary="Preview a spec before applying it",
    description=(
        "Renders the tenant's desired state for the proposed spec and diffs it against the current spec "
        "(no Pulumi CLI needed). Where the Pulumi CLI is present, also queues a Pulumi preview against "
        "the live stack. Nothing is committed."
    ),
    openapi_extra=_tenant_body_openapi("The proposed tenant document."),
)
async def preview_tenant(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: Annotated[Any, Body()],
) -> PreviewView:
    # Validating and reading are quick; the render waits for its turn on the event loop (bounded,
    # 429 preview_busy beyond), so waiting previews never hold threads other routes need.
    proposed, current = await anyio.to_thread.run_sync(partial(_proposed_and_current, backends, stack, body))
    async with backends.previews.turn(principal.budget):
        rendered, _outputs = await anyio.to_thread.run_sync(
            partial(
                preview_change,
                backends.settings.project_dir,
                stack.environment,
                stack.tenant,
                current,
                proposed,
            )
        )
    pulumi_preview, note = await anyio.to_thread.run_sync(
        partial(_queue_pulumi_preview, request, backends, principal, stack, proposed)
    )
    return PreviewView(
        environment=Environment(stack.environment),
        name=stack.tenant,
        summary=rendered.summary,
        changes=[
            ResourceChangeView(type=c.type, name=c.name, action=c.action, changed_fields=c.changed_fields)
            for c in rendered.changes
        ],
        desired=[DesiredResource(type=t, name=n, inputs=inputs) for t, n, inputs in rendered.desired],
        pulumi_preview=pulumi_preview,
        pulumi_preview_note=note,
    )


def _proposed_and_current(
    backends: BackendsDep, stack: StackRef, body: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    proposed = backends.changes.validate(stack, body).to_document()
    return proposed, backends.repository.read(stack.environment, stack.tenant)


def _queue_pulumi_preview(
    request: Request, backends: BackendsDep, principal: Principal, stack: StackRef, proposed: dict[str, Any]
) -> tuple[OperationView | None, str | None]:
    pulumi_preview = None
    note = None
    if backends.pulumi_preview_enabled:
        operation = backends.queue.submit(
            stack,
            OperationKind.preview,
            spec=proposed,
            requested_by=principal.actor,
            incarnation=backends.incarnations.of(stack),
        )
        backends.metrics.operations_submitted.labels(OperationKind.preview.value).inc()
        backends.wake_worker()
        pulumi_preview = OperationView.of(operation)
    else:
        note = "no Pulumi CLI on the service's PATH: only the rendered diff is available"
    backends.audit.record(
        actor=principal.actor,
        action="tenant.preview",
        outcome="succeeded",
        tenant=stack.tenant,
        environment=stack.environment,
        request_id=request_id(request),
        operation_id=pulumi_preview.id if pulumi_preview else None,
    )
    return pulumi_preview, note


@router.get(
    f"{TENANT_PATH}/operations",
    response_model=OperationList,
    responses=_ERRORS,
    summary="List a tenant's operations, newest first",
)
def list_operations(
    stack: ReadableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OperationList:
    operations = visible_operations(
        backends, principal, stack, backends.queue.recent(stack=stack, limit=limit)
    )
    return OperationList(operations=[OperationView.of(op) for op in operations])

"""Change requests: file one, list and inspect them, approve or reject (platform-admins).

A tenant-admin's PUT or PATCH that needs a platform-admin answers 202 with a change request too
(``file_if_needed``), so clients get a request to follow instead of 403 ``platform_admin_required``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from tenancy.automation.contract import StackRef
from tenancy.service.api import API_PREFIX
from tenancy.service.api.idempotent import WriteResult, answer_headers
from tenancy.service.api.responses import AUTHENTICATED, WITH_BODY, error_responses
from tenancy.service.backends import Backends
from tenancy.service.core.change_requests import ChangeRequest, RequestStatus
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.errors import request_id as rid_of
from tenancy.service.core.security import Principal
from tenancy.service.deps import BackendsDep, ChangeableTenant, CurrentPrincipal
from tenancy.service.models import ApiModel, ChangeAccepted, Environment, OperationView
from tenancy.spec.text import forbidden_characters

router = APIRouter(prefix=API_PREFIX, tags=["change requests"])

_ERRORS = error_responses(*AUTHENTICATED, "change_request_not_found", "tenant_not_found")
_DECIDE_ERRORS = error_responses(
    *AUTHENTICATED,
    "change_request_not_found",
    "tenant_not_found",
    "forbidden",
    "change_request_decided",
    "change_request_expired",
    "change_request_stale",
    "previous_incarnation_not_destroyed",
    "repository_unavailable",
    "tenant_busy",
    *WITH_BODY,
)
_FILE_ERRORS = error_responses(
    *AUTHENTICATED,
    "change_request_not_found",
    "tenant_not_found",
    "environment_not_served",
    "forbidden",
    "invalid_spec",
    "too_many_change_requests",
    "preview_busy",
    "tenant_busy",
    *WITH_BODY,
)


class FieldChangeView(ApiModel):
    field: str = Field(description="Dotted path in the tenant document, e.g. qdrant.replicas.")
    before: Any = None
    after: Any = None


class NeedView(ApiModel):
    field: str
    reason: str = Field(description="Why this field needs a platform-admin.")


class ChangeRequestView(ApiModel):
    id: str
    environment: Environment
    tenant: str
    status: RequestStatus = Field(description="pending | applying | approved | rejected | expired")
    requested_by: str
    requester_name: str
    reason: str
    created_at: datetime
    expires_at: datetime
    base_etag: str | None = Field(description="The tenant's version the request was made against; null: new.")
    document: dict[str, Any] = Field(description="Exactly what approval commits.")
    diff: list[FieldChangeView]
    needs: list[NeedView] = Field(description="The fields that need a platform-admin, and why.")
    preview: dict[str, Any] = Field(description="The rendered change: summary and changed resources.")
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    operation_id: str | None = Field(default=None, description="The update approval queued.")
    commit: str | None = None

    @classmethod
    def of(cls, request: ChangeRequest) -> ChangeRequestView:
        return cls(
            id=request.id,
            environment=Environment(request.environment),
            tenant=request.tenant,
            status=request.status,
            requested_by=request.requested_by,
            requester_name=request.requester_name,
            reason=request.reason,
            created_at=_time(request.created_at),
            expires_at=_time(request.expires_at),
            base_etag=request.base_etag,
            document=request.document,
            diff=[FieldChangeView(field=c.field, before=c.before, after=c.after) for c in request.diff],
            needs=[NeedView(field=item["field"], reason=item["reason"]) for item in request.needs],
            preview=request.preview,
            decided_by=request.decided_by,
            decided_at=_time(request.decided_at) if request.decided_at is not None else None,
            decision_reason=request.decision_reason,
            operation_id=request.operation_id,
            commit=request.commit,
        )


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


class ChangeRequestFiled(ApiModel):
    change_request: ChangeRequestView


class ChangeRequestList(ApiModel):
    change_requests: list[ChangeRequestView]


class ChangeRequestApproved(ApiModel):
    change_request: ChangeRequestView
    accepted: ChangeAccepted = Field(description="The change approval committed and queued.")


Reason = Annotated[str, Field(min_length=1, max_length=1000)]


class NewChangeRequest(ApiModel):
    spec: dict[str, Any] | None = Field(default=None, description="A whole tenant document (as PUT).")
    patch: dict[str, Any] | None = Field(default=None, description="A JSON merge patch (as PATCH).")
    reason: Reason = Field(description="Why the change is needed, for the platform-admin deciding it.")


class Rejection(ApiModel):
    reason: Reason = Field(description="Why, for the requester.")


def file_if_needed(
    request: Request,
    backends: Backends,
    principal: Principal,
    stack: StackRef,
    body: Any,
    *,
    patch: bool,
    if_match: str | None = None,
    if_none_match: str | None = None,
) -> WriteResult | None:
    """For a tenant-admin's PUT/PATCH that needs a platform-admin: file it (202) instead of 403. Its
    ``If-Match`` and ``If-None-Match`` hold as for the write (412): approval would commit it over
    the version it was filed against."""
    try:
        proposal = backends.approvals.assess(stack, principal, body, patch=patch)
    except ServiceError:
        return None  # invalid: the ordinary write path reports (and audits) the same error
    if proposal is None:
        return None
    backends.changes.check_filing_preconditions(
        stack, proposal.base_etag, if_match=if_match, if_none_match=if_none_match
    )
    reason = _header_text(request.headers.get("Change-Reason", "")).strip()[:1000] or "(no reason given)"
    refused = [{"field": f, "reason": why} for f, why in forbidden_characters(reason, "Change-Reason")]
    if refused:  # as in a JSON reason: it is shown to platform-admins, in terminals too
        raise ServiceError(
            "invalid_character",
            "control and formatting characters are not accepted in the Change-Reason header; see details",
            details=refused,
        )
    filed = backends.approvals.file(proposal, principal, reason, rid_of(request))
    return _filed(filed)


def _header_text(raw: str) -> str:
    """A header's text: clients send UTF-8 bytes, which the server hands over decoded as Latin-1."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _filed(filed: ChangeRequest) -> WriteResult:
    body = ChangeRequestFiled(change_request=ChangeRequestView.of(filed)).wire()
    return 202, body, answer_headers(body)


@router.post(
    "/environments/{environment}/tenants/{name}/change-requests",
    status_code=202,
    response_model=ChangeRequestFiled,
    responses=_FILE_ERRORS,
    summary="Ask a platform-admin for a change",
    description=(
        "Files the change (a whole `spec`, or a merge `patch`) with a reason, for a platform-admin to "
        "approve or reject; nothing is committed or applied before approval. A tenant-admin's PUT or "
        "PATCH that needs a platform-admin (plan, groups, sizes above the plan, a new tenant on a "
        "paid plan) is filed the same way (reason from the `Change-Reason` header)."
    ),
)
async def create_change_request(
    request: Request,
    stack: ChangeableTenant,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: NewChangeRequest,
) -> JSONResponse:
    if (body.spec is None) == (body.patch is None):
        raise ServiceError(
            "invalid_request",
            "send exactly one of spec (a whole document) and patch (a merge patch)",
            details=[{"field": "spec", "reason": "exactly one of spec and patch"}],
        )
    proposal = await anyio.to_thread.run_sync(
        partial(
            backends.approvals.assess,
            stack,
            principal,
            body.spec if body.spec is not None else body.patch,
            patch=body.patch is not None,
            always=True,
        )
    )
    if proposal is None:  # a patch of a tenant that does not exist
        raise ServiceError("tenant_not_found", f"there is no tenant {stack.name} that you can access")
    filed = await anyio.to_thread.run_sync(
        partial(backends.approvals.file, proposal, principal, body.reason, rid_of(request))
    )
    status, payload, headers = _filed(filed)
    return JSONResponse(payload, status_code=status, headers=headers)


@router.get(
    "/change-requests",
    response_model=ChangeRequestList,
    responses=_ERRORS,
    summary="List change requests, newest first",
    description="Platform-admins see every request; others see requests on their tenants and their own.",
)
def list_change_requests(
    request: Request,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    status: Annotated[RequestStatus | None, Query(description="Only this status.")] = None,
    environment: Annotated[Environment | None, Query(description="Only this environment.")] = None,
    tenant: Annotated[str | None, Query(max_length=63, description="Only this tenant.")] = None,
) -> ChangeRequestList:
    found = backends.approvals.list(
        principal,
        rid_of(request),
        status=status,
        environment=environment.value if environment else None,
        tenant=tenant,
    )
    return ChangeRequestList(change_requests=[ChangeRequestView.of(item) for item in found])


RequestIdPath = Annotated[
    str, Path(pattern=r"^cr-[0-9a-f]{12}$", description="The change request's id (cr-...).")
]


@router.get(
    "/change-requests/{request_id}",
    response_model=ChangeRequestView,
    responses=_ERRORS,
    summary="Inspect a change request: diff, preview, outcome",
)
def read_change_request(
    request: Request, request_id: RequestIdPath, backends: BackendsDep, principal: CurrentPrincipal
) -> ChangeRequestView:
    return ChangeRequestView.of(backends.approvals.get(principal, request_id, rid_of(request)))


@router.post(
    "/change-requests/{request_id}/approve",
    response_model=ChangeRequestApproved,
    status_code=202,
    responses=_DECIDE_ERRORS,
    summary="Approve: commit and apply exactly the reviewed change (platform-admin)",
    description=(
        "Commits the stored document with If-Match set to the tenant version the request was made "
        "against, then queues the update. Refused with 409 change_request_stale when the tenant moved."
    ),
)
def approve_change_request(
    request: Request, request_id: RequestIdPath, backends: BackendsDep, principal: CurrentPrincipal
) -> JSONResponse:
    approved, result = backends.approvals.approve(principal, request_id, rid_of(request))
    backends.metrics.operations_submitted.labels(result.operation.kind.value).inc()
    backends.wake_worker()
    accepted = ChangeAccepted(
        operation=OperationView.of(result.operation),
        commit=result.commit,
        changed=result.commit is not None,
        etag=result.etag,
    )
    body = ChangeRequestApproved(change_request=ChangeRequestView.of(approved), accepted=accepted).wire()
    return JSONResponse(
        body, status_code=202, headers={"Location": f"{API_PREFIX}/operations/{result.operation.id}"}
    )


@router.post(
    "/change-requests/{request_id}/reject",
    response_model=ChangeRequestView,
    responses=_DECIDE_ERRORS,
    summary="Reject, with a reason for the requester (platform-admin)",
)
def reject_change_request(
    request: Request,
    request_id: RequestIdPath,
    backends: BackendsDep,
    principal: CurrentPrincipal,
    body: Annotated[Rejection, Body()],
) -> ChangeRequestView:
    return ChangeRequestView.of(
        backends.approvals.reject(principal, request_id, body.reason, rid_of(request))
    )

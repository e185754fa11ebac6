"""What the API sends and receives (camelCase on the wire, like the tenant files)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, ProgressEvent
from tenancy.service.core.security import Role


class Environment(StrEnum):
    dev = "dev"
    prod = "prod"


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def wire_json(self) -> bytes:
        """``wire()`` as the JSON a ``JSONResponse`` of it would send, serialised by pydantic-core in
        one step: no dict of it to build, and no pure-Python ``json.dumps`` (a hot route's answer)."""
        return self.model_dump_json(by_alias=True).encode()


def timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class ErrorDetail(ApiModel):
    field: str
    reason: str


class ErrorInfo(ApiModel):
    code: str = Field(description="Stable machine-readable code, e.g. tenant_not_found.")
    message: str = Field(description="What went wrong and what to do, for a person.")
    details: list[ErrorDetail] | None = None


class ErrorResponse(ApiModel):
    error: ErrorInfo


class OperationSummaryView(ApiModel):
    changes: dict[str, int]
    duration_seconds: float
    error: str | None = Field(description="What went wrong and what to do about it, for a person.")
    code: str | None = Field(default=None, description="Stable error code, e.g. pulumi_cli_missing.")
    recovered: bool


class ProgressEventView(ApiModel):
    seq: int
    time: datetime
    kind: str
    resource: str | None = None
    op: str | None = None
    status: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, event: ProgressEvent) -> ProgressEventView:
        return cls(
            seq=event.seq,
            time=datetime.fromtimestamp(event.time, UTC),
            kind=event.kind,
            resource=event.resource,
            op=event.op,
            status=event.status,
            message=event.message,
        )


class OperationView(ApiModel):
    id: str
    environment: str
    tenant: str
    kind: OperationKind
    status: OperationStatus
    requested_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: OperationSummaryView | None = None
    superseded_by: str | None = None
    links: dict[str, str] = Field(description="Where to read this operation and follow its events.")

    @classmethod
    def of(cls, operation: Operation) -> OperationView:
        summary = operation.summary
        return cls(
            id=operation.id,
            environment=operation.stack.environment,
            tenant=operation.stack.tenant,
            kind=operation.kind,
            status=operation.status,
            requested_by=operation.requested_by,
            created_at=datetime.fromtimestamp(operation.created_at, UTC),
            started_at=timestamp(operation.started_at),
            finished_at=timestamp(operation.finished_at),
            summary=(
                OperationSummaryView(
                    changes=dict(summary.changes),
                    duration_seconds=summary.duration_seconds,
                    error=summary.error,
                    code=summary.code,
                    recovered=summary.recovered,
                )
                if summary is not None
                else None
            ),
            superseded_by=operation.superseded_by,
            links={
                "self": f"/api/v1/operations/{operation.id}",
                "events": f"/api/v1/operations/{operation.id}/events",
            },
        )


class OperationDetail(OperationView):
    events: list[ProgressEventView] = Field(description="Progress so far (follow /events for a live stream).")


class OperationList(ApiModel):
    operations: list[OperationView]


class TenantSummary(ApiModel):
    environment: Environment
    name: str
    display_name: str | None = None
    plan: str | None = None
    role: Role = Field(description="Your role on this tenant.")


class TenantList(ApiModel):
    tenants: list[TenantSummary]


class TenantStatus(ApiModel):
    phase: str = Field(description="pending (never applied), updating, deleting, ready, failed, or unknown.")
    message: str | None = None


class TenantView(ApiModel):
    environment: Environment
    name: str
    role: Role
    etag: str | None = Field(
        description=(
            "Version of the spec; send it as If-Match to change exactly this version (null once deleted)."
        )
    )
    deleted: bool = Field(
        default=False,
        description=(
            "The tenant's file is deleted but its stack is not destroyed yet, or destroying it failed "
            "(status says which; DELETE again retries). spec is what the file held."
        ),
    )
    spec: dict[str, Any] = Field(description="The tenant document as committed to git.")
    spec_problem: str | None = Field(
        default=None,
        description=(
            "Null when the tenant's file reads. Otherwise why spec is {}, naming the file: it is not valid "
            "YAML (the line and column, and the loader's message), or its YAML is not a mapping (a list, "
            "a scalar, an empty file). The rest is read as usual; PUT a whole spec to replace the file (a "
            "PATCH is refused: 422 invalid_spec)."
        ),
    )
    status: TenantStatus
    last_operation: OperationView | None = None
    outputs: dict[str, Any] | None = Field(
        default=None, description="Stack outputs, secrets masked; null until the engine can report them."
    )


class ChangeAccepted(ApiModel):
    operation: OperationView
    commit: str | None = Field(description="The git commit recording the change; null when nothing changed.")
    changed: bool
    etag: str | None = None


class ResourceChangeView(ApiModel):
    type: str
    name: str
    action: str = Field(description="create | update | delete | same")
    changed_fields: list[str] = Field(default_factory=list)


class DesiredResource(ApiModel):
    type: str
    name: str
    inputs: dict[str, Any]


class PreviewView(ApiModel):
    environment: Environment
    name: str
    summary: dict[str, int]
    changes: list[ResourceChangeView]
    desired: list[DesiredResource] = Field(description="Every resource of the proposed spec, secrets masked.")
    pulumi_preview: OperationView | None = Field(
        default=None, description="A queued Pulumi preview (where the Pulumi CLI is present)."
    )
    pulumi_preview_note: str | None = None


class RequestModel(ApiModel):
    """What a caller sends: strict, so "90" is not a number and 1 is not a boolean (enums stay lax:
    their values arrive as strings)."""

    model_config = ConfigDict(strict=True)


class ApiKeyRequest(RequestModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    role: Role = Field(default=Role.viewer, strict=False)
    expires_in_days: int = Field(default=90, ge=1, le=3650)


class ApiKeyView(ApiModel):
    id: str
    tenant: str
    name: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    active: bool


class ApiKeyCreated(ApiKeyView):
    key: str | None = Field(
        description="The key itself, shown only in this answer (null when an Idempotency-Key replays it)."
    )


class ApiKeyList(ApiModel):
    api_keys: list[ApiKeyView]


class QdrantApiKeys(ApiModel):
    api_key: str
    read_only_api_key: str | None = None


class Me(ApiModel):
    subject: str
    kind: str
    platform_admin: bool
    tenants: dict[str, Role]


class HealthView(ApiModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)

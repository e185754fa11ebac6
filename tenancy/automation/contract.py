"""The automation layer's public contract: operations on tenant stacks, their progress, and the
narrow engine interface behind which every Pulumi engine call sits.

The CLI and the HTTP service use only what is named here. ``tenancy.automation.pulumi_engine`` is
the one module that imports ``pulumi.automation``; tests drive everything else with an engine double.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class OperationKind(StrEnum):
    preview = "preview"
    up = "up"
    refresh = "refresh"
    destroy = "destroy"


class OperationStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    superseded = "superseded"  # a newer request for the same stack replaced it before it ran

    @property
    def finished(self) -> bool:
        return self in (OperationStatus.succeeded, OperationStatus.failed, OperationStatus.superseded)


@dataclass(frozen=True)
class StackRef:
    environment: str
    tenant: str

    @property
    def name(self) -> str:
        return f"{self.environment}.{self.tenant}"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an operation: a resource changing, or a message from the engine."""

    operation_id: str
    seq: int
    time: float
    kind: str  # "resource" | "diagnostic" | "summary" | "recovery"
    resource: str | None = None  # resource type and name, e.g. "kubernetes:core/v1:Namespace acme-namespace"
    op: str | None = None  # create | update | delete | same | replace | refresh | read
    status: str | None = None  # started | done | failed
    message: str | None = None


@dataclass(frozen=True)
class OperationSummary:
    changes: dict[str, int] = field(default_factory=dict)  # {"create": 3, "update": 1, ...}
    duration_seconds: float = 0.0
    error: str | None = None  # a message a person can act on; never a raw traceback
    recovered: bool = False  # the stack was recovered from an interrupted update before this ran


@dataclass(frozen=True)
class Operation:
    id: str
    stack: StackRef
    kind: OperationKind
    status: OperationStatus
    requested_by: str
    created_at: float
    spec: dict[str, Any] | None = None  # the tenant document this operation applies (up/preview)
    started_at: float | None = None
    finished_at: float | None = None
    summary: OperationSummary | None = None
    superseded_by: str | None = None


class OperationQueue(Protocol):
    """Durable queue of operations: one running per stack, newer requests coalesce older queued ones."""

    def submit(
        self, stack: StackRef, kind: OperationKind, *, spec: dict[str, Any] | None, requested_by: str
    ) -> Operation: ...

    def get(self, operation_id: str) -> Operation | None: ...

    def recent(self, *, stack: StackRef | None = None, limit: int = 50) -> list[Operation]: ...

    def events(self, operation_id: str, *, after_seq: int = 0) -> list[ProgressEvent]: ...

    def last(self, stack: StackRef) -> Operation | None: ...


@dataclass(frozen=True)
class EngineRequest:
    operation_id: str
    stack: StackRef
    kind: OperationKind
    spec: dict[str, Any] | None


@dataclass(frozen=True)
class EngineResult:
    succeeded: bool
    changes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # secret values masked
    error: str | None = None


class Engine(Protocol):
    """The narrow interface to the Pulumi engine: PulumiEngine (real) or an engine double (tests)."""

    def run(self, request: EngineRequest, emit: Any) -> EngineResult:
        """Run one operation; call ``emit(kind=, resource=, op=, status=, message=)`` per event."""
        ...

    def needs_recovery(self, stack: StackRef) -> bool:
        """True when a previous update was interrupted (stale lock, pending operations)."""
        ...

    def recover(self, stack: StackRef) -> str:
        """Cancel/clear what an interrupted update left; return what was done, for the record."""
        ...

    def outputs(self, stack: StackRef, *, reveal_secrets: bool = False) -> dict[str, Any]: ...

    def remove(self, stack: StackRef) -> None: ...

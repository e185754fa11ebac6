"""The automation layer's public contract: operations on tenant stacks, their progress, and the
narrow engine interface behind which every Pulumi engine call sits.

The CLI and the HTTP service use only what is named here. ``tenancy.automation.pulumi_engine`` is
the one module that imports ``pulumi.automation``; tests drive everything else with an engine double.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class OperationKind(StrEnum):
    preview = "preview"
    up = "up"
    refresh = "refresh"
    destroy = "destroy"
    # Data operations on the tenant's Qdrant (tenancy.automation.data_operations): no Pulumi engine call.
    backup = "backup"
    restore = "restore"


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
    # Added by the automation layer (additive): a stable error code for callers that map errors
    # (see tenancy.automation.errors.ERROR_CODES: "conflict" -> 409, "not_found" -> 404, ...), and the
    # stack outputs after a successful up, secret values already masked.
    code: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


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
    # The tenant incarnation the operation belongs to (``<env>:<commit that created the file>``, see
    # tenancy.service.core.incarnation); None when queued by something that does not know it.
    incarnation: str | None = None
    # What a data operation is asked beyond the spec (a restore's backup id, source tenant, collections).
    params: dict[str, Any] | None = None


# The status of the recovery event a queue writes when it hands a claimed operation back: whether
# Pulumi may have worked on the stack for that claim (the operation's record then says it may be
# partly applied, whatever becomes of it; tenancy.service.core.tenant_changes reads it).
REQUEUED_AFTER_PULUMI = "requeued"
REQUEUED_BEFORE_PULUMI = "handed_back"


def requeue_status(pulumi_may_have_started: bool) -> str:
    return REQUEUED_AFTER_PULUMI if pulumi_may_have_started else REQUEUED_BEFORE_PULUMI


# The coalescing rule every queue backend applies: which queued operations (same stack, status queued
# only) a newly submitted one replaces. A destroy replaces nothing, and nothing is replaced across a
# queued destroy: the up queued before it may be the one that turns deletion protection off.
SUPERSEDES: dict[OperationKind, tuple[OperationKind, ...]] = {
    OperationKind.up: (OperationKind.up,),
    OperationKind.preview: (OperationKind.preview,),
    OperationKind.refresh: (OperationKind.refresh,),
    OperationKind.destroy: (),
    # Two queued backups of one tenant take the same data: the newer one stands for both.
    OperationKind.backup: (OperationKind.backup,),
    OperationKind.restore: (),
}
# Kinds that read or write the tenant's data, not its stack: the worker runs them without the engine.
DATA_KINDS = frozenset({OperationKind.backup, OperationKind.restore})


@dataclass(frozen=True)
class SubmitRequest:
    """One operation to queue (``OperationQueue.submit_in_order``): ``submit``'s arguments."""

    stack: StackRef
    kind: OperationKind
    spec: dict[str, Any] | None
    requested_by: str
    incarnation: str | None = None
    params: dict[str, Any] | None = None


class OperationQueue(Protocol):
    """Durable queue of operations: one running per stack, newer requests coalesce older queued ones."""

    def submit(
        self,
        stack: StackRef,
        kind: OperationKind,
        *,
        spec: dict[str, Any] | None,
        requested_by: str,
        incarnation: str | None = None,
        params: dict[str, Any] | None = None,
        queued: Callable[[], None] | None = None,
    ) -> Operation:
        """``queued``: called once, before this returns, when the operation's place in the queue's
        order is fixed (every submit that begins later is placed after it): the service queues a
        tenant's pipelined changes in commit order with it. SQLite calls it before its transaction
        commits, so consecutive writers share one; Redis once its submit is done."""
        ...

    def submit_in_order(self, requests: Sequence[SubmitRequest]) -> list[Operation]:
        """Queue ``requests`` in their order, each placed after the one before it (and after every
        submit that returned before this began); their operations, in the same order. SQLite inserts
        them in one transaction, all or none, and so does Redis (one WATCH/MULTI). The service queues
        a group of commits' operations with it, right after the group is in the branch. A submit still
        waiting for its transaction is not ordered against it: callers order their own (the service
        holds a tenant's turn until such a submit returns)."""
        ...

    def get(self, operation_id: str) -> Operation | None: ...

    def recent(self, *, stack: StackRef | None = None, limit: int = 50) -> list[Operation]: ...

    def events(self, operation_id: str, *, after_seq: int = 0) -> list[ProgressEvent]: ...

    def last(self, stack: StackRef) -> Operation | None: ...

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        """Every stack the queue holds an operation of (of ``environment``, when given)."""
        ...


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


# --- additions (additive only: everything above is unchanged) -----------------------------------

SECRET_MASK = "[secret]"  # what a secret output reads as unless secrets are explicitly revealed
# The tenant stack output holding the tenant document its last successful update applied: the worker
# compares a new spec with it (volumes, Qdrant nodes), whatever its queue remembers.
APPLIED_SPEC_OUTPUT = "appliedSpec"


class EmitEvent(Protocol):
    """The ``emit`` callback an engine calls once per event (what ``Engine.run`` receives)."""

    def __call__(
        self,
        *,
        kind: str,
        resource: str | None = None,
        op: str | None = None,
        status: str | None = None,
        message: str | None = None,
    ) -> None: ...


class WorkQueue(OperationQueue, Protocol):
    """The worker's side of the queue: claim, record progress, finish, recover from crashes."""

    def claim_next(
        self,
        running_stacks: Collection[StackRef] = (),
        *,
        worker_id: str = "",
        only: Collection[str] | None = None,
    ) -> Operation | None:
        """Mark the oldest runnable queued operation ``running`` and return it: never one whose stack
        already has a running operation (in any process), nor one for ``running_stacks``."""
        ...

    def add_event(
        self,
        operation_id: str,
        *,
        kind: str,
        resource: str | None = None,
        op: str | None = None,
        status: str | None = None,
        message: str | None = None,
    ) -> ProgressEvent: ...

    def finish(
        self,
        operation_id: str,
        status: OperationStatus,
        summary: OperationSummary,
        *,
        worker_id: str | None = None,
    ) -> Operation: ...

    def heartbeat(self, operation_ids: Collection[str]) -> None: ...

    def requeue_interrupted(self, *, stale_after: float | None = None) -> list[Operation]:
        """Put operations left ``running`` by a process that stopped back in the queue."""
        ...

    def was_interrupted(self, stack: StackRef) -> bool:
        """True when an operation on the stack stopped mid-way (crash, interruption) since the last
        successful recovery: the stack must be recovered before anything else runs on it."""
        ...

    def mark_interrupted(self, stack: StackRef) -> None: ...

    def mark_engine_started(self, operation_id: str, *, started: bool = True) -> None:
        """Pulumi is about to work on the claimed operation's stack: a stop or death from here flags it
        for recovery; before it (an operation waiting for another update's lock), not."""
        ...

    def abandon(self, worker_id: str, *, reason: str) -> list[Operation]:
        """Fail what ``worker_id`` is running (it is being stopped) and flag the stacks Pulumi was
        working on (``mark_engine_started``): the others never reached Pulumi."""
        ...

    def clear_interrupted(self, stack: StackRef) -> None: ...


@runtime_checkable
class EngineInventory(Protocol):
    """What an engine may also know about the backend (optional: ``sync`` and ``stacks`` use it when
    present). Kept out of ``Engine`` so engine doubles stay small."""

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        """Every tenant stack in the backend (platform stacks excluded)."""
        ...

    def applied_fingerprint(self, stack: StackRef) -> str | None:
        """The spec fingerprint of the stack's last successful update, or None when unknown."""
        ...

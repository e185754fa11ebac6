"""Qdrant key rotation in the service: start one, read where it stands, and end grace periods that are over.

Starting commits the next ``qdrant.keyRotation`` record (tenancy.spec.rotation) under the caller's name
and queues the update, like any other write. Ending a grace period is the service's own write: once
``graceUntil`` has passed, ``GraceTimer`` commits ``revokedAt`` and queues the update that revokes the
previous generation's keys. The Pulumi program reads only the file, so the revocation happens exactly
when git says so, and a render never depends on when it runs.

Crash safety: the revocation is committed before its update is queued, under the tenant's write lock.
If the process dies between the two, the start-up reconcile queues the update (git differs from what
was last applied); if queueing failed while the process lives on, the next sweep finds the recorded
revocation with no update that carries it and queues one. Several replicas may sweep at once: each
re-reads the file under the write lock, so the revocation is committed once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.automation.incarnation import stack_history
from tenancy.service.core.audit import AuditLog
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.incarnation import incarnation_of
from tenancy.service.core.periodic import Periodic
from tenancy.service.core.security import Principal
from tenancy.service.core.tenant_changes import (
    ChangeResult,
    TenantChanges,
    _conflict_with_repository,
    _repository_unavailable,
)
from tenancy.service.core.tenants_repo import ConflictError, GitAuthor, RepositoryError
from tenancy.spec.errors import SpecError
from tenancy.spec.rotation import MIN_GRACE, RotationRefused, begin_rotation, end_grace, grace_due
from tenancy.spec.tenant import parse_tenant, parse_utc_time

log = logging.getLogger("tenancy.service")

REVOKER = "tenant-api:key-rotation"  # requested_by and audit actor of the revocations
REVOKER_AUTHOR = GitAuthor(name="Tenant API key rotation", email="key-rotation@tenant-api.invalid")
# A revocation recorded this recently is checked for its update on every sweep (older ones were
# either applied, failed where people see it, or queued by the start-up reconcile).
_RECHECK_FOR = timedelta(days=1)
_REFUSAL_CODES = {"rotation_in_progress", "qdrant_not_enabled"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def rotation_record(document: dict[str, Any] | None) -> dict[str, Any] | None:
    qdrant = (document or {}).get("qdrant")
    record = qdrant.get("keyRotation") if isinstance(qdrant, dict) else None
    return record if isinstance(record, dict) else None


@dataclass(frozen=True)
class RotationState:
    """Where a tenant's key rotation stands: in git, and as last applied to its stack."""

    generation: int
    record: dict[str, Any] | None
    applied_generation: int | None  # None: no update has succeeded yet
    old_keys_accepted: bool  # the stack as last applied accepts the previous generation's keys
    phase: str
    operation: Operation | None  # the newest update of the stack


class KeyRotations:
    def __init__(
        self, *, changes: TenantChanges, audit: AuditLog, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.changes = changes
        self.audit = audit
        self.clock = clock

    @property
    def repository(self) -> Any:
        return self.changes.repository

    def rotate(self, stack: StackRef, principal: Principal, *, grace: timedelta) -> ChangeResult:
        """Commit the next key generation as the caller and queue its update."""
        author = GitAuthor.of(principal.display_name, principal.email, principal.subject)
        try:
            with self.changes.write_lock.hold(stack):
                self.repository.sync()
                current = self.repository.read(stack.environment, stack.tenant)
                if current is None:
                    raise ServiceError(
                        "tenant_not_found", f"there is no tenant {stack.name} that you can access"
                    )
                try:
                    rotated = begin_rotation(
                        current, now=self.clock(), grace=grace, requested_by=principal.actor
                    )
                except RotationRefused as refused:
                    if refused.code == "rotation_in_progress":
                        # Its keys were never deployed: the grace the refusal would name never began.
                        self._refuse_while_undeployed(stack, current)
                    raise _refusal(refused) from None
                self._refuse_while_undeployed(stack, current)
                spec = self.changes.validate(stack, rotated)
                document = spec.to_document()  # what the operation applies, in normal form
                record = document["qdrant"]["keyRotation"]
                commit = self.repository.write(
                    stack.environment,
                    stack.tenant,
                    spec.to_file_document(),  # the file's other fields as their author wrote them
                    author=author,
                    message=(
                        f"Rotate the Qdrant keys of tenant {stack.name} "
                        f"(generation {record['generation']})\n\n"
                        f"The previous keys work until {record['graceUntil']}.\n"
                        f"Requested-by: {principal.actor}"
                    ),
                )
                operation = self.changes._submit(stack, OperationKind.up, document, principal.actor, commit)
                etag = self.changes.current_etag(stack)
        except ConflictError as error:
            raise _conflict_with_repository(stack, error) from None
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        return ChangeResult(operation=operation, commit=commit, document=document, etag=etag)

    def _applied(self, stack: StackRef) -> tuple[int | None, float | None]:
        """The key generation the stack's current incarnation last applied (0: never rotated; None: no
        update of it succeeded), and when that update finished."""
        incarnation = incarnation_of(self.repository, stack)
        history = stack_history(self.changes.queue, stack)
        applied = _last_applied(op for op in history if op.incarnation == incarnation)
        return (None, None) if applied is None else (_generation_of(applied), applied.finished_at)

    def _refuse_while_undeployed(self, stack: StackRef, current: dict[str, Any]) -> None:
        """A rotation while the previous one's keys were never deployed (its update failed) would
        retire the keys clients hold with no grace: the next generation takes the slot of the keys in
        use (outside journey review). Refused until the previous generation is applied."""
        record = rotation_record(current)
        if record is None:
            return
        applied, _ = self._applied(stack)
        if applied is not None and applied >= int(record["generation"]):
            return
        raise ServiceError(
            "rotation_in_progress",
            f"the keys of generation {record['generation']} of {stack.name} are not deployed yet (the update "
            "that deploys them has not succeeded): the keys in use keep working; once that update succeeds "
            "(fix what failed it, then PATCH the tenant with {} to queue it again), rotate after its grace "
            "period",
        )

    def state(self, stack: StackRef, operations: list[Operation]) -> RotationState:
        """``operations``: the stack's operations of its current incarnation, newest first."""
        record = rotation_record(self.repository.read(stack.environment, stack.tenant))
        generation = int(record["generation"]) if record else 0
        ups = [op for op in operations if op.kind is OperationKind.up]
        applied = _last_applied(ups)
        applied_record = rotation_record(applied.spec) if applied else None
        applied_generation = None if applied is None else _generation_of(applied)
        old_accepted = applied_record is not None and applied_record.get("revokedAt") is None
        if generation == 0:
            phase = "none"
        elif applied_generation is None or applied_generation < generation:
            # The new keys are being deployed (the old ones work throughout), or their update failed:
            # then nothing deploys them until it is queued again, and the old keys are not revoked.
            stalled = ups and ups[0].status is OperationStatus.failed
            phase = "stalled" if stalled else "rolling_out"
        elif record is not None and record.get("revokedAt") is None:
            phase = "grace"  # both generations work
        elif old_accepted:
            phase = "revoking"  # the revocation is recorded; its update has not finished yet
        else:
            phase = "complete"
        return RotationState(
            generation=generation,
            record=record,
            applied_generation=applied_generation,
            old_keys_accepted=old_accepted,
            phase=phase,
            operation=ups[0] if ups else None,
        )

    # --- ending grace periods ------------------------------------------------------------------------

    def end_due_grace_periods(self) -> list[Operation]:
        """One sweep over every tenant file: revoke where the grace period is over, and queue the update
        of a recorded revocation that none carries yet. Returns the updates queued."""
        self.repository.sync()
        now = self.clock()
        queued = []
        for environment, name in self.repository.names():
            stack = StackRef(environment, name)
            record = rotation_record(self.repository.read(environment, name))
            if record is None or not _worth_a_look(record, now):
                continue
            try:
                operation = self.end_grace(stack)
            except Exception as error:  # one tenant's failure never stops the others; the next sweep retries
                log.error("ending the key grace period of %s failed: %s", stack.name, type(error).__name__)
                self.audit.record(
                    actor=REVOKER,
                    action="qdrant.keys.revoke",
                    outcome="failed",
                    tenant=name,
                    environment=environment,
                    reason=error.code if isinstance(error, ServiceError) else type(error).__name__,
                )
                continue
            if operation is not None:
                queued.append(operation)
        return queued

    def end_grace(self, stack: StackRef) -> Operation | None:
        """Revoke the previous generation of one tenant if its grace period is over (commit, queue,
        audit); queue the update of an earlier revocation that was committed but never queued."""
        file = self.changes.display_file(stack)
        try:
            with self.changes.write_lock.hold(stack):
                self.repository.sync()
                current = self.repository.read(stack.environment, stack.tenant)
                if current is None:
                    return None
                now = self.clock()
                ended = end_grace(current, now=now)
                if ended is None:
                    return self._queue_unqueued_revocation(stack, current, now)
                if not self._revocable(stack, current, now):
                    return None
                try:
                    spec = parse_tenant(ended, file=file)
                except SpecError:
                    log.warning("%s is not a valid tenant file: its key grace period is left as it is", file)
                    return None
                document = spec.to_document()
                record = document["qdrant"]["keyRotation"]
                commit = self.repository.write(
                    stack.environment,
                    stack.tenant,
                    spec.to_file_document(),
                    author=REVOKER_AUTHOR,
                    message=(
                        f"Revoke the previous Qdrant keys of tenant {stack.name} (generation "
                        f"{int(record['generation']) - 1})\n\n"
                        f"The grace period ended at {record['graceUntil']}.\n"
                        f"Requested-by: {REVOKER}"
                    ),
                )
                operation = self._submit(stack, document)
        except ConflictError as error:
            raise _conflict_with_repository(stack, error) from None
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        log.info("revoked generation %d's Qdrant keys of %s", int(record["generation"]) - 1, stack.name)
        self._audit(stack, operation, commit)
        return operation

    def _revocable(self, stack: StackRef, current: dict[str, Any], now: datetime) -> bool:
        """The previous keys are revoked only once the new ones are deployed, and at least the shortest
        grace period after that: a roll-out that failed, or finished late, never leaves clients
        without the keys they hold or with no time to switch (outside journey review: a failed update
        was followed by the revocation, and the next update dropped the keys in use at once)."""
        record = rotation_record(current)
        applied, finished = self._applied(stack)
        if record is None or applied is None or applied < int(record["generation"]):
            log.info("%s: the previous Qdrant keys stay until the new ones are deployed", stack.name)
            return False
        deployed = datetime.fromtimestamp(finished, UTC) if finished is not None else now
        return now >= deployed + MIN_GRACE

    def _queue_unqueued_revocation(
        self, stack: StackRef, document: dict[str, Any], now: datetime
    ) -> Operation | None:
        record = rotation_record(document)
        revoked_at = record.get("revokedAt") if record else None
        if record is None or revoked_at is None or now - parse_utc_time(str(revoked_at)) > _RECHECK_FOR:
            return None
        for operation in stack_history(self.changes.queue, stack):
            if operation.kind is OperationKind.destroy:
                return None
            if operation.kind is OperationKind.up and operation.status is not OperationStatus.superseded:
                carried = rotation_record(operation.spec)
                if carried is not None and carried.get("revokedAt") == revoked_at:
                    return None  # queued, running, applied, or failed where people see it
        try:
            spec = parse_tenant(document, file=self.changes.display_file(stack)).to_document()
        except SpecError:
            return None
        operation = self._submit(stack, spec)
        self._audit(stack, operation, None)
        return operation

    def _submit(self, stack: StackRef, document: dict[str, Any]) -> Operation:
        incarnation = incarnation_of(self.repository, stack)
        return self.changes.queue.submit(
            stack, OperationKind.up, spec=document, requested_by=REVOKER, incarnation=incarnation
        )

    def _audit(self, stack: StackRef, operation: Operation, commit: str | None) -> None:
        self.audit.record(
            actor=REVOKER,
            action="qdrant.keys.revoke",
            outcome="accepted",
            tenant=stack.tenant,
            environment=stack.environment,
            operation_id=operation.id,
            reason=None if commit else "update_requeued",
        )


def _last_applied(operations: Iterable[Operation]) -> Operation | None:
    """The newest update that succeeded among ``operations`` (newest first)."""
    return next(
        (op for op in operations if op.kind is OperationKind.up and op.status is OperationStatus.succeeded),
        None,
    )


def _generation_of(update: Operation) -> int:
    """The key generation an update applied (0: its spec records no rotation)."""
    record = rotation_record(update.spec)
    return int(record["generation"]) if record else 0


def _worth_a_look(record: dict[str, Any], now: datetime) -> bool:
    """Cheap, outside the lock: a grace period that is over, or a revocation recent enough to check."""
    if grace_due({"qdrant": {"keyRotation": record}}, now=now):
        return True
    revoked_at = record.get("revokedAt")
    try:
        return revoked_at is not None and now - parse_utc_time(str(revoked_at)) <= _RECHECK_FOR
    except ValueError:
        return False


def _refusal(refused: RotationRefused) -> ServiceError:
    if refused.code in _REFUSAL_CODES:
        return ServiceError(refused.code, str(refused))
    return ServiceError("invalid_request", str(refused), details=[{"field": "grace", "reason": str(refused)}])


class GraceTimer:
    """Runs ``KeyRotations.end_due_grace_periods`` at start and then every ``interval`` seconds, in a
    daemon thread, until stopped. A sweep's failure is logged; the next one retries."""

    def __init__(self, rotations: KeyRotations, *, interval: float) -> None:
        self.rotations = rotations
        self._wake_callbacks: list[Callable[[], None]] = []
        self._periodic = Periodic(
            self._sweep, interval=interval, name="key-grace-timer", what="the key grace sweep"
        )

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def on_queued(self, callback: Callable[[], None]) -> None:
        self._wake_callbacks.append(callback)

    def _sweep(self) -> None:
        if self.rotations.end_due_grace_periods():
            for callback in self._wake_callbacks:
                callback()

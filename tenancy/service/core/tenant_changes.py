"""A change to a tenant: validate -> commit the YAML (caller as author) -> queue the operation.

A tenant's writers take turns (``write_lock``): each reads, checks and commits on what the one before
left, so two concurrent patches both land (the second merges onto the first), and the queue sees the
changes in commit order, so the operation that runs last applies what git holds last. A PUT or PATCH
lets the next writer of the tenant in once its commit has its place (early lock release): the next
one builds on it while it is flushed, and each is answered only once its commit and every one before
it are flushed and queued; one that was built on a commit that failed fails too.

Platform-owned fields (``plan``, ``groups``) are the platform team's to change: a tenant-admin
keeps what a platform-admin set, and creates tenants only on the self-service plans.

Deleting commits the file's removal and queues a destroy behind whatever is queued (the update that
turned deletion protection off runs first). Until the destroy succeeds the tenant stays readable as
*deleting* or *failed*, and DELETE again retries a failed destroy: a stack is never left deployed
with no way to see or remove it through the API.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from tenancy.automation.contract import (
    REQUEUED_AFTER_PULUMI,
    Operation,
    OperationKind,
    OperationQueue,
    OperationStatus,
    StackRef,
    SubmitRequest,
)
from tenancy.automation.incarnation import stack_history
from tenancy.service.core.api_keys import ApiKeyStore
from tenancy.service.core.audit import AuditLog, AuditRecord, unrecorded
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.incarnation import incarnation_of
from tenancy.service.core.security import Principal
from tenancy.service.core.tenants_repo import (
    ConflictError,
    GitAuthor,
    RepositoryError,
    TenantBusy,
    TenantFile,
    TenantRepository,
)
from tenancy.service.core.write_lock import TenantWriteLock
from tenancy.spec.changes import refused_change_issues
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.tenant import Groups, KeyRotation, Tenant, TenantSpec, parse_tenant, resolve

log = logging.getLogger("tenancy.service")


@dataclass(frozen=True)
class ChangeResult:
    operation: Operation
    commit: str | None
    document: dict[str, Any] | None
    etag: str | None
    recorded: bool = False  # its ``record_as`` audit record was written with its commit's group

    @property
    def what_was_done(self) -> str:
        """For an audit record that cannot be written: what the change did all the same."""
        committed = f"committed ({self.commit[:12]}) and " if self.commit else ""
        return (
            f"the change to {self.operation.stack.name} was {committed}queued (operation {self.operation.id})"
        )


@dataclass(frozen=True)
class RecordAs:
    """The audit record a write asks for once accepted (``accepted``, with its operation id): written
    by the publisher of its commit's group with the group's others, one flush for them all."""

    actor: str
    action: str
    request_id: str | None


def etag_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: objects merge, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def spec_issues_details(error: SpecError) -> list[dict[str, str]]:
    return [{"field": issue.field or "(document)", "reason": issue.reason} for issue in error.issues]


CHANGE_REQUEST_TRAILER = "Change-Request: "  # the line an approval's commit names its request in
_ACTIVE = (OperationStatus.queued, OperationStatus.running)
_STANDING = (*_ACTIVE, OperationStatus.succeeded)  # an update in these leaves (or will) the stack up
_RESOLVED_CACHE_ENTRIES = 4096
# Failures raised before the update reaches Pulumi, by the worker or the engine's own checks: nothing
# of their spec can be on the stack. (Not secrets_unavailable: the engine also gives it to an update
# that failed while Pulumi worked.)
_NOTHING_RAN = frozenset(
    {
        "config_missing",
        "pulumi_cli_missing",
        "locked_elsewhere",
        "environment_not_served",
        "previous_incarnation_not_destroyed",
        "fixed_volumes",
        "backup_failed",
    }
)
# Checked against git's file only: written by the service's rotations, not applied state.
_GIT_ONLY_FIELDS = ("qdrant.keyRotation",)


@dataclass(eq=False)
class _QueuedWithCommit:
    """A write's operation, queued by whoever publishes its commit's group, in the same round
    (``TenantChanges.queue_published``); until then, neither field is set."""

    request: SubmitRequest  # its incarnation is known once the commit is in the branch
    record_as: RecordAs | None = None  # its audit record, written once it is queued
    operation: Operation | None = None
    error: Exception | None = None
    recorded: bool = False
    record_error: OSError | None = None


class TenantChanges:
    def __init__(
        self,
        *,
        repository: TenantRepository,
        queue: OperationQueue,
        write_lock: TenantWriteLock,
        api_keys: ApiKeyStore | None = None,
        self_service_plans: tuple[str, ...] = ("small",),
        platform_of: Callable[[str], PlatformConfig | None] = lambda environment: None,
        waited: Callable[[str, float], None] = lambda stage, seconds: None,
        stack_exists: Callable[[StackRef], bool | None] = lambda stack: None,
        audit: AuditLog | None = None,
    ) -> None:
        """``waited(stage, seconds)``: told how long each accepted PUT or PATCH waited for its commit
        to be flushed (``commit``) and its operation to be queued (``queue``)."""
        self.repository = repository
        self.audit = audit  # where a write's ``record_as`` is written with its group (None: by its caller)
        # A change's operation is queued by whoever publishes its commit, in the same round.
        repository.after_publish = self.queue_published
        self.waited = waited
        # Whether the engine's backend has the stack (None: it cannot tell, as without the Pulumi
        # CLI): a stack destroyed outside this queue (the deploy workflow's sync --prune) is gone.
        self.stack_exists = stack_exists
        # The environment's platform config: which StorageClasses let a volume grow.
        self.platform_of = platform_of
        self.queue = queue
        self.write_lock = write_lock
        self.api_keys = api_keys
        self.self_service_plans = self_service_plans
        self._resolved: dict[tuple[str, str, str], Tenant] = {}  # (blob, environment, file) -> resolved

    def queue_published(self, follow_ups: list[tuple[object, str]]) -> None:
        """The repository's ``after_publish``: queue the operations of a group of commits now in the
        branch, in commit order, in one transaction, before any of their writers is answered. Each
        writer reads its own outcome (``_submit``): a failure is every one's (the queue inserts a
        group all or none), answered as a failed submit is."""
        waiting = [follow for follow, _ in follow_ups if isinstance(follow, _QueuedWithCommit)]
        queued: list[Operation] = []
        failure: Exception | None = None
        try:
            requests = [
                # After the commit: a create's operation belongs to the incarnation that commit began
                # (the creation cache has it: the writer looked its tenant up, and a create is recorded
                # as it is published).
                replace(follow.request, incarnation=incarnation_of(self.repository, follow.request.stack))
                for follow in waiting
            ]
            queued = self.queue.submit_in_order(requests)
        except Exception as error:  # all or none: none was queued
            failure = error
        if failure is None and len(queued) != len(waiting):
            failure = RuntimeError(f"the queue answered {len(queued)} of {len(waiting)} operations")
        for follow, operation in zip(waiting, queued, strict=False):  # all of them, or none
            follow.operation = operation
        for follow in waiting[len(queued) :]:
            follow.error = failure
        self._record_published([follow for follow in waiting if follow.operation is not None])

    def _record_published(self, queued: list[_QueuedWithCommit]) -> None:
        """The audit records of a group's queued writes, one flush for them all; a failure is each
        one's (answered 503 audit_unavailable: committed and queued, not recorded)."""
        queued = [follow for follow in queued if follow.record_as is not None]
        if self.audit is None or not queued:
            return
        records = []
        for follow in queued:
            assert follow.record_as is not None and follow.operation is not None
            stack = follow.request.stack
            records.append(
                AuditRecord(
                    actor=follow.record_as.actor,
                    action=follow.record_as.action,
                    outcome="accepted",
                    tenant=stack.tenant,
                    environment=stack.environment,
                    request_id=follow.record_as.request_id,
                    operation_id=follow.operation.id,
                )
            )
        try:
            self.audit.record_accepted(records)
        except OSError as error:
            for follow in queued:
                follow.record_error = error
            return
        for follow in queued:
            follow.recorded = True

    def display_file(self, stack: StackRef) -> str:
        return f"{self.repository.tenants_dir.name}/{stack.environment}/{stack.tenant}.yaml"

    def validate(self, stack: StackRef, document: Any) -> TenantSpec:
        """The spec ``document`` describes, checked like a file (schema, plan limits); 422 otherwise."""
        file = self.display_file(stack)
        try:
            if isinstance(document, dict):
                document = {"name": stack.tenant, **document}
                if document["name"] != stack.tenant:
                    raise SpecError(
                        [SpecIssue(file, "name", f"must be {stack.tenant!r}, the tenant named in the path")]
                    )
            return parse_tenant(document, file=file)
        except SpecError as error:
            raise ServiceError(
                "invalid_spec",
                f"the spec for {stack.name} is invalid; fix the fields listed in details",
                details=spec_issues_details(error),
            ) from None

    def refuse_unreadable(self, stack: StackRef, found: TenantFile | Literal["read"] | None = "read") -> None:
        """A patch merges into the committed file: one that is not YAML (a syntax error, an alias that
        contains itself) or not a mapping (a list, a scalar, nothing) has nothing to merge into, and a
        PUT of the whole spec replaces it. ``found``: the file the patch merges into (a write's turn
        gives it, flushed or not); by default the branch's."""
        if found == "read":
            found = self.repository.file(stack.environment, stack.tenant)
        if found is None or found.problem is None:
            return
        file = self.display_file(stack)
        raise ServiceError(
            "invalid_spec",
            f"{file} in the tenants repository {found.problem.what}, so a patch cannot be merged into it; "
            "replace the whole spec with PUT",
            details=[{"field": "(document)", "reason": f"{file}: {found.problem.detail}"}],
        )

    def _protected(self, stack: StackRef) -> str:
        found = self.repository.file(stack.environment, stack.tenant)
        if found is not None and found.problem is not None:  # nothing to PATCH: protection reads as on
            return (
                f"{self.display_file(stack)} {found.problem.what}, so {stack.name}'s deletionProtection "
                "reads as on; PUT a whole spec with deletionProtection: false first, then delete"
            )
        return f"{stack.name} has deletionProtection on; PATCH it to false first, then delete"

    def current_etag(self, stack: StackRef) -> str | None:
        text = self.repository.read_text(stack.environment, stack.tenant)
        return etag_of(text) if text is not None else None

    def replace(
        self,
        stack: StackRef,
        document: Any,
        principal: Principal,
        *,
        if_match: str | None,
        if_none_match: str | None = None,
        force: bool = False,
        change_request: str | None = None,
        requested_by: str | None = None,
        incarnation: str | None = None,
        record_as: RecordAs | None = None,
    ) -> ChangeResult:
        """``force``: go on without the automatic backup if it fails (platform-admins only).
        ``record_as``: the audit record of the write once accepted, written with its commit's group
        when there is a commit (``ChangeResult.recorded``); else it is the caller's to write.
        ``change_request``: the id of the change request this applies, named in the commit
        (``Change-Request: <id>``): how an approval cut short by a crash is found applied or not.
        ``requested_by``: who asked for it, when ``principal`` approves someone else's request: the
        commit's ``Requested-by`` and the operation name them, and ``Approved-by`` the approver.
        ``incarnation``: the tenant's incarnation the change request was made for; checked in the write's
        turn (409 ``change_request_stale`` for another), so a delete and re-create is never written over."""
        self.check_force(stack, principal, force, "update")
        if if_none_match is not None:
            _check_if_none_match(if_none_match)
        spec = self.validate(stack, document)
        return self._commit_and_submit(
            stack,
            principal,
            if_match=if_match,
            create_only=if_none_match is not None,
            build=lambda _current, _found: spec,
            force=force,
            requested_by=requested_by,
            incarnation=incarnation,
            change_request=change_request,
            record_as=record_as,
        )

    def patch(
        self,
        stack: StackRef,
        patch: Any,
        principal: Principal,
        *,
        if_match: str | None,
        force: bool = False,
        record_as: RecordAs | None = None,
    ) -> ChangeResult:
        """``force``: go on without the automatic backup if it fails (platform-admins only).
        ``record_as``: as for ``replace``."""
        self.check_force(stack, principal, force, "update")
        if not isinstance(patch, dict):
            raise ServiceError(
                "invalid_request",
                "a patch is a JSON object (RFC 7396 merge patch)",
                details=[{"field": "body", "reason": "must be an object"}],
            )

        qdrant = patch.get("qdrant")
        if isinstance(qdrant, dict) and "keyRotation" in qdrant and qdrant["keyRotation"] is None:
            # Removing the record is changing it: refused like any other change to it (not kept quietly).
            raise _rotation_record_refused(stack, "; leave it out of the patch")

        def build(current: dict[str, Any] | None, found: TenantFile | None) -> TenantSpec:
            if current is None:
                raise _tenant_not_found(stack)
            self.refuse_unreadable(stack, found)
            return self.validate(stack, merge_patch(current, patch))

        return self._commit_and_submit(
            stack, principal, if_match=if_match, build=build, force=force, record_as=record_as
        )

    @staticmethod
    def check_force(stack: StackRef, principal: Principal, force: bool, what: str) -> None:
        """Going on without the automatic backup (before a destroy, a Qdrant version change or its
        removal) when that backup fails is the platform's call: 403 for anyone else."""
        if force and not principal.platform_admin:
            raise ServiceError(
                "platform_admin_required",
                f"only a platform-admin may force the {what} of {stack.name} without a backup",
                details=[{"field": "force", "reason": "needs the platform-admin role"}],
            )

    def delete(
        self, stack: StackRef, principal: Principal, *, if_match: str | None, force: bool = False
    ) -> ChangeResult:
        """``force``: destroy even if the automatic backup before it fails (platform-admins only)."""
        self.check_force(stack, principal, force, "deletion")
        author = GitAuthor.of(principal.display_name, principal.email, principal.subject)
        try:
            with self.write_lock.hold(stack):
                self.repository.sync()
                current = self.repository.read(stack.environment, stack.tenant)
                if current is None:
                    return self._retry_deletion(stack, principal, if_match=if_match, force=force)
                self._check_precondition(stack, if_match)
                if current.get("deletionProtection", True) is not False:
                    raise ServiceError("deletion_protected", self._protected(stack))
                commit = self.repository.delete(
                    stack.environment,
                    stack.tenant,
                    author=author,
                    message=f"Delete tenant {stack.name}\n\nRequested-by: {principal.actor}",
                )
                operation = self.submit_deletion(stack, current, principal.actor, commit, force=force)
                self._revoke_keys_once_gone(stack)
        except ConflictError as error:
            raise _conflict_with_repository(stack, error) from None
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        return ChangeResult(operation=operation, commit=commit, document=None, etag=None)

    def pending_deletion(self, stack: StackRef) -> Operation | None:
        """The destroy of a tenant whose file is deleted, while it has not succeeded (queued, running
        or failed): the tenant's stack is still there, so the tenant stays visible."""
        for operation in stack_history(self.queue, stack):  # however many operations came since
            if operation.kind is OperationKind.destroy:
                return None if operation.status is OperationStatus.succeeded else operation
            if operation.kind is OperationKind.up and operation.status is not OperationStatus.superseded:
                return None
        return None

    def standing_without_file(self, stack: StackRef) -> Operation | None:
        """For a tenant whose file git no longer has: the update that left its stack deployed (or will)
        when no destroy was queued since. That is a service that stopped between committing a deletion
        and queueing its destroy, or a file removed outside the service (a merged pull request). None
        when the stack was destroyed or a destroy is queued or failed (``pending_deletion``), or when
        no update of it succeeded or waits."""
        for operation in stack_history(self.queue, stack):
            if operation.kind not in (OperationKind.up, OperationKind.destroy):
                continue
            if operation.status in _STANDING or operation.kind is OperationKind.destroy:
                if operation.kind is not OperationKind.up:
                    return None
                return None if self._gone_from_backend(stack) else operation
        return None

    def _gone_from_backend(self, stack: StackRef) -> bool:
        try:
            return self.stack_exists(stack) is False
        except Exception as error:  # the backend cannot be asked: the history stands
            log.warning("could not ask the backend whether %s exists: %s", stack.name, type(error).__name__)
            return False

    def _refuse_while_predecessor_stands(self, stack: StackRef) -> None:
        """A tenant of a name whose earlier tenant's destroy has not succeeded would get that tenant's
        stack (one per name: ``<env>.<name>``), with its resources and the data in its Qdrant. Refused
        until the destroy succeeds; the workers refuse such an update too, whoever queues it (when that
        destroy failed). Refused too while the earlier tenant's stack stands with no destroy queued at
        all (``standing_without_file``): DELETE queues it."""
        pending = self.pending_deletion(stack)
        if pending is None:
            standing = self.standing_without_file(stack)
            if standing is None:
                return
            raise ServiceError(
                "previous_incarnation_not_destroyed",
                f"the earlier tenant named {stack.tenant} was removed from {stack.environment} without a "
                f"destroy of its stack, which its update {standing.id} left deployed, so its resources and "
                f"the data in its Qdrant are still there. DELETE {stack.tenant} to destroy that stack (a "
                "platform-admin may add ?force=true to go on without the automatic backup), then create "
                "the tenant again",
                details=[
                    {
                        "field": "name",
                        "reason": f"the earlier tenant named {stack.tenant} is not destroyed yet",
                    }
                ],
            )
        if pending.status in _ACTIVE:
            state = f"is still {pending.status.value}; create the tenant again once it has succeeded"
        else:
            code = pending.summary.code if pending.summary is not None else None
            state = (
                f"failed ({code or 'see the operation'}), so its resources and the data in its Qdrant are "
                f"still there. DELETE {stack.tenant} again to retry that destroy (a platform-admin may add "
                "?force=true to go on without the automatic backup), then create the tenant again"
            )
        raise ServiceError(
            "previous_incarnation_not_destroyed",
            f"{stack.name} was deleted and the destroy of its stack (operation {pending.id}) {state}",
            details=[
                {
                    "field": "name",
                    "reason": f"the earlier tenant named {stack.tenant} is not destroyed yet",
                }
            ],
        )

    def _retry_deletion(
        self, stack: StackRef, principal: Principal, *, if_match: str | None, force: bool = False
    ) -> ChangeResult:
        """DELETE of a tenant whose file is gone: the destroy under way, or a new one if it failed or
        was never queued (``standing_without_file``)."""
        pending = self.pending_deletion(stack)
        if pending is None:
            standing = self.standing_without_file(stack)
            if standing is None:
                raise _tenant_not_found(stack)
            if if_match is not None:
                raise ServiceError(
                    "precondition_failed", f"{stack.name} has no file in git: it has no version to match"
                )
            protected = (standing.spec or {}).get("deletionProtection", True) is not False
            if protected and not principal.platform_admin:
                # Its file may have gone by mistake (a bad merge, a wrong path): protection still holds.
                raise ServiceError(
                    "deletion_protected",
                    f"{stack.name} has no file in git, but its stack was last applied with "
                    "deletionProtection on: a platform-admin destroys it, or restore the file from git if "
                    "it went by mistake",
                )
            operation = self.submit_deletion(stack, standing.spec or {}, principal.actor, None, force=force)
            log.warning("queued the destroy of %s, whose file was gone with its stack still up", stack.name)
            return ChangeResult(operation=operation, commit=None, document=None, etag=None)
        if if_match is not None:
            raise ServiceError(
                "precondition_failed", f"{stack.name} is being deleted: it has no version to match"
            )
        if pending.status in _ACTIVE:
            return ChangeResult(operation=pending, commit=None, document=None, etag=None)
        operation = self.submit_deletion(stack, pending.spec or {}, principal.actor, None, force=force)
        return ChangeResult(operation=operation, commit=None, document=None, etag=None)

    def submit_deletion(
        self,
        stack: StackRef,
        document: dict[str, Any],
        requested_by: str,
        commit: str | None,
        *,
        force: bool = False,
    ) -> Operation:
        """Queue the destroy; first an update turning deletion protection off when the stack was last
        applied with it on and no update is queued to do so (one failed, say): a protected stack
        cannot be destroyed."""
        # Newest first, as far back as the last applied update (however many previews came since); a
        # stack runs its operations in order, so an update still in line is newer than that one.
        update_in_line, applied = False, None
        for op in stack_history(self.queue, stack):
            if op.kind is not OperationKind.up:
                continue
            update_in_line = update_in_line or op.status in _ACTIVE
            if op.status is OperationStatus.succeeded:
                applied = op
                break
        protected = applied is not None and (applied.spec or {}).get("deletionProtection", True) is not False
        if protected and not update_in_line:
            unprotected = {**document, "deletionProtection": False}
            self._submit(stack, OperationKind.up, unprotected, requested_by, commit)
        params = {"force": True} if force else None
        return self._submit(stack, OperationKind.destroy, document, requested_by, commit, params=params)

    def _revoke_keys_once_gone(self, stack: StackRef) -> None:
        """A tenant's API keys die with its last file: a later tenant of the same name is someone else."""
        if self.api_keys is None:
            return
        if any(name == stack.tenant for _, name in self.repository.names()):
            return
        revoked = self.api_keys.revoke_all(stack.tenant)
        if revoked:
            log.info("revoked %d API key(s) of deleted tenant %s", revoked, stack.tenant)

    def _submit(
        self,
        stack: StackRef,
        kind: OperationKind,
        document: dict[str, Any],
        requested_by: str,
        commit: str | None,
        *,
        params: dict[str, Any] | None = None,
        queued: Callable[[], None] | None = None,
        with_commit: _QueuedWithCommit | None = None,
    ) -> Operation:
        """``queued``: see ``WriteTurn.in_order`` (the queue calls it once the operation has its place).
        ``with_commit``: the operation as the commit's publisher queued it, or failed to."""
        try:
            if with_commit is not None:
                if with_commit.operation is not None:
                    return with_commit.operation
                # Not queued with its group: never queued here afterwards either, since a later
                # change of the tenant may already be queued (the running reconcile queues it).
                raise with_commit.error or RuntimeError("the commit's group did not queue it")
            # After the commit: a create's operation belongs to the incarnation that commit began.
            incarnation = incarnation_of(self.repository, stack)
            return self.queue.submit(
                stack,
                kind,
                spec=document,
                requested_by=requested_by,
                incarnation=incarnation,
                params=params,
                queued=queued,
            )
        except Exception as error:
            # Git already holds the change; repeating the request queues it (an unchanged spec still
            # queues an update), so the caller has a way forward.
            log.error("queueing %s of %s failed: %s", kind.value, stack.name, type(error).__name__)
            recorded = f" (recorded in git as {commit[:12]})" if commit else ""
            remedy = (
                "`tenantctl sync --prune` destroys the stack"
                if kind is OperationKind.destroy
                else "repeat the request to queue it"
            )
            raise ServiceError(
                "engine_unavailable", f"the change to {stack.name} was not queued{recorded}; {remedy}"
            ) from None

    def _check_platform_fields(
        self, stack: StackRef, principal: Principal, current: dict[str, Any] | None, spec: TenantSpec
    ) -> None:
        """``plan`` and ``groups`` decide quota and who holds which role: a tenant-admin may not change
        them (nor pick them beyond the self-service plans and default groups on create)."""
        refused = self.platform_field_refusals(principal, current, spec)
        if refused:
            fields = " and ".join(item["field"] for item in refused)
            raise ServiceError(
                "platform_admin_required",
                f"only a platform-admin may set {fields} of {stack.name}; ask the platform team",
                details=refused,
            )

    def check_proposal(
        self, stack: StackRef, principal: Principal, current: dict[str, Any] | None, spec: TenantSpec
    ) -> list[dict[str, str]]:
        """What a change request checks before it is stored: the volumes can follow (422 otherwise);
        returns the fields that need a platform-admin (field and reason), empty when none do."""
        self._check_fixed_volumes(stack, current, spec)
        return self.platform_field_refusals(principal, current, spec)

    def platform_field_refusals(
        self, principal: Principal, current: dict[str, Any] | None, spec: TenantSpec
    ) -> list[dict[str, str]]:
        if principal.platform_admin:
            return []
        refused: list[dict[str, str]] = []
        if current is None:
            if spec.plan.value not in self.self_service_plans:
                allowed = ", ".join(self.self_service_plans)
                refused.append(
                    {
                        "field": "plan",
                        "reason": f"a tenant-admin creates tenants on the {allowed} plan; "
                        f"a platform-admin sets {spec.plan.value}",
                    }
                )
            if spec.groups != Groups():
                refused.append(
                    {"field": "groups", "reason": "leave groups out: a platform-admin maps Keycloak groups"}
                )
        else:
            if str(current.get("plan")) != spec.plan.value:
                refused.append({"field": "plan", "reason": "only a platform-admin changes a tenant's plan"})
            if _groups_of(current) != spec.groups:
                refused.append(
                    {"field": "groups", "reason": "only a platform-admin changes a tenant's groups"}
                )
        return refused

    def _check_fixed_volumes(
        self,
        stack: StackRef,
        current: dict[str, Any] | None,
        spec: TenantSpec,
        *,
        blob: str | None = None,
    ) -> Tenant:
        """Refuse changes the tenant's volumes cannot follow, Qdrant scale-downs that change volumes too
        and Qdrant version downgrades (422, naming the
        value to keep). ``blob``: the git blob ``current`` was read from (its resolution is cached).
        Returns ``spec`` resolved (``remember_resolved`` keeps it for the file it is written as)."""
        after = resolve(spec, stack.environment)
        if current is None:
            return after
        file = self.display_file(stack)
        key = (blob, stack.environment, file) if blob is not None else None
        before = self._resolved.get(key) if key is not None else None
        if before is None:
            try:
                before = resolve(parse_tenant(current, file=file), stack.environment)
            except SpecError:
                return after  # the file in git is already invalid: nothing was applied from it to protect
            if key is not None:  # the same file resolves the same: once per version, not per write
                self.remember_resolved(key, before)
        platform = self.platform_of(stack.environment)

        def refused(was: Tenant) -> list[SpecIssue]:
            return refused_change_issues(
                was,
                after,
                file=file,
                default_class_after=None if platform is None else platform.storage_class,
                expandable_classes=() if platform is None else platform.expandable_storage_classes,
            )

        issues = refused(before)
        if issues:
            # Volumes and versions are what the stack holds, not what git says: a value that reached
            # git but was never applied (its update failed before Pulumi ran, or waits) can be taken
            # back. Known from this queue's record of the tenant; else git's file stands for it.
            applied = self._applied_specs(stack)
            if applied is not None:
                kept = [issue for issue in issues if issue.field.startswith(_GIT_ONLY_FIELDS)]
                for document in applied:
                    try:
                        was = resolve(parse_tenant(document, file=file), stack.environment)
                    except SpecError:
                        continue
                    kept += [issue for issue in refused(was) if not issue.field.startswith(_GIT_ONLY_FIELDS)]
                issues = list(dict.fromkeys(kept))
        if issues:
            raise ServiceError(
                "invalid_spec",
                f"the change to {stack.name} cannot be applied safely (volumes only grow, on expandable "
                "classes; a scale-down cannot change volumes too; Qdrant never goes back a version); fix "
                "the fields listed in details",
                details=spec_issues_details(SpecError(issues)),
            )
        return after

    def _applied_specs(self, stack: StackRef) -> list[dict[str, Any]] | None:
        """What the stack may hold, by this queue's record of the tenant's current incarnation: the
        spec of its last succeeded update, and of every later one that may have applied part of its
        own (running, or failed once Pulumi may have started). None when this queue has no succeeded
        update of this incarnation: it cannot tell what is applied (another queue may have applied
        it, the deploy workflow's), so git's file stands for it."""
        was_interrupted = getattr(self.queue, "was_interrupted", None)
        if was_interrupted is None or was_interrupted(stack):
            # An update stopped while Pulumi worked on it (handed back to the queue as queued): part of
            # it may be applied, and nothing here says which. Git's file stands until it is recovered.
            return None
        marker = incarnation_of(self.repository, stack)
        specs: list[dict[str, Any]] = []
        for operation in stack_history(self.queue, stack):
            if operation.incarnation != marker:
                return None  # an earlier tenant of the name (or a record from before markers)
            if operation.kind is not OperationKind.up or operation.spec is None:
                continue
            if operation.status is OperationStatus.succeeded:
                return [*specs, operation.spec]
            if self._may_have_applied(operation):
                specs.append(operation.spec)
        return None

    def _may_have_applied(self, operation: Operation) -> bool:
        """Whether Pulumi may have applied part of ``operation`` (an update that did not succeed):
        running; or failed with a code not known to come before Pulumi; or, whatever its status now
        (queued again, superseded, failed before Pulumi on a later attempt), ever handed back to the
        queue while Pulumi may have been at work on it (a stop or death mid-update: the recovery that
        follows clears the stack's flag before the next attempt). A hand-back before Pulumi started (a
        lock wait, the backup before an upgrade) is recorded apart and does not count."""
        status, summary = operation.status, operation.summary
        if status is OperationStatus.running:
            return True
        if status is OperationStatus.failed and (summary is None or summary.code not in _NOTHING_RAN):
            return True
        return any(
            event.kind == "recovery" and event.status == REQUEUED_AFTER_PULUMI
            for event in self.queue.events(operation.id)
        )

    def remember_resolved(self, key: tuple[str, str, str], resolved: Tenant) -> None:
        """Keep a file's resolution (``key``: its blob, environment and display name)."""
        if len(self._resolved) >= _RESOLVED_CACHE_ENTRIES:
            self._resolved.clear()
        self._resolved[key] = resolved

    def keep_key_rotation(
        self, stack: StackRef, current: dict[str, Any] | None, spec: TenantSpec
    ) -> TenantSpec:
        """``qdrant.keyRotation`` is written by a rotation (POST .../qdrant/keys/rotate) and by the
        service's revocation, never by a PUT or PATCH: a write that leaves it out keeps what git holds
        (while Qdrant stays on), one that sends it as it is changes nothing, any other value is refused."""
        qdrant = (current or {}).get("qdrant")
        kept = qdrant.get("keyRotation") if isinstance(qdrant, dict) else None
        proposed = spec.qdrant.key_rotation
        if proposed is None:
            if kept is None or not spec.qdrant.enabled:
                return spec
            document = spec.to_file_document()
            document.setdefault("qdrant", {})["keyRotation"] = kept
            return self.validate(stack, document)
        sent = proposed.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        try:
            same = kept is not None and KeyRotation.model_validate(kept) == proposed
        except ValidationError:
            same = False
        if same:
            return spec
        raise _rotation_record_refused(
            stack, f"(sent generation {sent.get('generation')}); leave it out or send it as it is"
        )

    def _check_precondition(
        self, stack: StackRef, if_match: str | None, found: TenantFile | None = None, *, read: bool = True
    ) -> None:
        """``found``, when not ``read``: the file the write builds on (flushed or not); else the branch's."""
        if if_match is None:
            return
        current = self.current_etag(stack) if read else found.etag if found is not None else None
        _check_if_match(stack, if_match, current)

    @staticmethod
    def check_filing_preconditions(
        stack: StackRef, base_etag: str | None, *, if_match: str | None, if_none_match: str | None
    ) -> None:
        """A PUT or PATCH filed as a change request keeps its preconditions: it is refused (412) when
        the tenant it was made against (``base_etag``; None: there is none) is not the one asked for,
        as the write itself would be, instead of being filed for an approval that would overwrite it."""
        if if_none_match is not None:
            _check_if_none_match(if_none_match)
            if base_etag is not None:
                raise _already_exists(stack)
        if if_match is not None:
            _check_if_match(stack, if_match, base_etag)

    def _commit_and_submit(
        self,
        stack: StackRef,
        principal: Principal,
        *,
        if_match: str | None,
        build: Callable[[dict[str, Any] | None, TenantFile | None], TenantSpec],
        create_only: bool = False,
        force: bool = False,
        requested_by: str | None = None,
        incarnation: str | None = None,
        change_request: str | None = None,
        record_as: RecordAs | None = None,
    ) -> ChangeResult:
        author = GitAuthor.of(principal.display_name, principal.email, principal.subject)
        asked_by = requested_by or principal.actor
        trailers = f"\n{CHANGE_REQUEST_TRAILER}{change_request}" if change_request else ""
        if requested_by is not None and requested_by != principal.actor:
            trailers = f"\nApproved-by: {principal.actor}{trailers}"
        try:
            with self.write_lock.turn(stack) as turn:
                self.repository.sync()
                # What this change builds on: the tenant as the last change to it left it, which may
                # not be flushed yet (it is answered, and this one too, only once it is).
                found = turn.file(stack.environment, stack.tenant)
                current = copy.deepcopy(found.document) if found is not None else None
                if create_only and current is not None:
                    raise _already_exists(stack)
                made_for_another = incarnation is not None and current is not None
                if made_for_another and incarnation_of(self.repository, stack) != incarnation:
                    raise ServiceError(
                        "change_request_stale",
                        f"change request {change_request} was filed for an earlier tenant named "
                        f"{stack.tenant}, deleted since; {stack.name} now is another tenant: reject it",
                    )
                self._check_precondition(stack, if_match, found, read=False)
                built = build(current, found)  # a PATCH of no tenant is 404, whatever stood before
                if current is None:
                    self._refuse_while_predecessor_stands(stack)
                spec = self.keep_key_rotation(stack, current, built)
                self._check_platform_fields(stack, principal, current, spec)
                resolved = self._check_fixed_volumes(stack, current, spec, blob=found.blob if found else None)
                document = spec.to_document()  # what the operation applies, in normal form
                verb = "Create" if current is None else "Update"
                # A forced change says so in git too (its update may then run without a backup).
                forced = "\nForced-without-backup: true" if force else ""
                trailers = forced + trailers
                if current is not None:  # read from the cache by whoever publishes the commit
                    incarnation_of(self.repository, stack)
                params = {"force": True} if force else None
                # Queued by whoever publishes the commit, in the same round (one transaction for the
                # group's operations); an unchanged file has no commit, and its writer queues it.
                with_commit = _QueuedWithCommit(
                    SubmitRequest(stack, OperationKind.up, document, asked_by, params=params),
                    record_as=record_as,
                )
                written = turn.write_file(
                    stack.environment,
                    stack.tenant,
                    spec.to_file_document(),  # what the author wrote, pins equal to defaults included
                    author=author,
                    message=f"{verb} tenant {stack.name}\n\nRequested-by: {asked_by}{trailers}",
                    follow_up=with_commit,
                )
                # The next write of the tenant checks its volumes against this file: resolved already.
                self.remember_resolved((written.blob, stack.environment, self.display_file(stack)), resolved)
                if turn.placed:
                    turn.release()  # the next writer of the tenant builds on this change from here
                # Else the file was already so: no commit, so this writer queues its own operation, and
                # holds the tenant until it has (a later writer's operation, queued with its commit's
                # group, must not come before it).
                started = time.perf_counter()
                commit = turn.durable()  # this change and every one before it flushed
                flushed = time.perf_counter()
                operation = turn.in_order(
                    lambda queued: self._submit(
                        stack,
                        OperationKind.up,
                        document,
                        asked_by,
                        commit,
                        params=params,
                        queued=queued,
                        with_commit=with_commit if turn.placed else None,
                    )
                )
                etag = written.etag  # the file as committed (or as it already was: unchanged)
                self.waited("commit", flushed - started)
                self.waited("queue", time.perf_counter() - flushed)
        except ConflictError as error:
            raise _conflict_with_repository(stack, error) from None
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        result = ChangeResult(operation, commit, document, etag, recorded=with_commit.recorded)
        if with_commit.record_error is not None and record_as is not None:
            record = AuditRecord(
                record_as.actor,
                record_as.action,
                "accepted",
                stack.tenant,
                stack.environment,
                record_as.request_id,
                operation.id,
            )
            raise unrecorded(
                record, with_commit.record_error, done=result.what_was_done, remedy="do not repeat it"
            )
        return result


def _rotation_record_refused(stack: StackRef, what_to_do: str) -> ServiceError:
    return ServiceError(
        "invalid_spec",
        f"qdrant.keyRotation of {stack.name} is the platform's record of its key rotations; fix the "
        "fields listed in details",
        details=[
            {
                "field": "qdrant.keyRotation",
                "reason": "written only by POST .../qdrant/keys/rotate and the service's revocation "
                f"{what_to_do}",
            }
        ],
    )


def _check_if_none_match(if_none_match: str) -> None:
    if if_none_match.strip() != "*":
        raise ServiceError(
            "invalid_request",
            "If-None-Match takes only * (create the tenant only if it does not exist)",
            details=[{"field": "If-None-Match", "reason": "must be *"}],
        )


def _already_exists(stack: StackRef) -> ServiceError:
    return ServiceError(
        "precondition_failed",
        f"{stack.name} already exists (If-None-Match: *); read it and change it instead",
    )


def _check_if_match(stack: StackRef, if_match: str, current: str | None) -> None:
    wanted = [tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")]
    if current is None or ("*" not in wanted and current not in wanted):
        raise ServiceError(
            "precondition_failed",
            f"{stack.name} changed since you read it (If-Match does not match); read it again and retry",
        )


def _groups_of(document: dict[str, Any]) -> Groups | None:
    try:
        return Groups.model_validate(document.get("groups") or {})
    except ValidationError:
        return None  # a hand-edited file with invalid groups: any new value is a change


def _tenant_not_found(stack: StackRef) -> ServiceError:
    return ServiceError("tenant_not_found", f"there is no tenant {stack.name} that you can access")


def _conflict_with_repository(stack: StackRef, error: ConflictError) -> ServiceError:
    """The tenant's file changed in git between reading it and committing (a merged pull request,
    another replica): the caller's change was made against a version that is gone. Not a fault of the
    repository (readiness is untouched), and retrying blindly would overwrite what the other wrote."""
    log.info("write to %s lost a race with another commit: %s", stack.name, error)
    return ServiceError(
        "conflict_with_repository",
        f"{stack.name} changed in the tenants repository while this change was being written (a merged "
        "pull request or another replica); nothing was committed or queued: read the tenant again and "
        "repeat the change on top of what it is now",
    )


def _repository_unavailable(error: RepositoryError) -> ServiceError:
    if isinstance(error, TenantBusy):  # the tenant's lock, not the repository (outside replica review)
        return ServiceError(
            "tenant_busy", f"{error}; nothing was written or queued, retry", headers={"Retry-After": "5"}
        )
    return ServiceError(
        "repository_unavailable",
        f"the change could not be recorded in the tenants repository ({error}); nothing was queued, retry",
    )

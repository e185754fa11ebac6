"""A change to a tenant: validate -> commit the YAML (caller as author) -> queue the operation.

The commit and the submit happen under one lock, so the queue sees changes in commit order and the
operation that runs last applies what git holds last. Reads for PATCH happen under the same lock,
so two concurrent patches both land (the second merges onto the first).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenancy.automation.contract import Operation, OperationKind, OperationQueue, StackRef
from tenancy.service.core.errors import ServiceError
from tenancy.service.core.security import Principal
from tenancy.service.core.tenants_repo import GitAuthor, RepositoryError, TenantRepository
from tenancy.service.core.write_lock import TenantWriteLock
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.tenant import TenantSpec, parse_tenant

log = logging.getLogger("tenancy.service")


@dataclass(frozen=True)
class ChangeResult:
    operation: Operation
    commit: str | None
    document: dict[str, Any] | None
    etag: str | None


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


class TenantChanges:
    def __init__(
        self, *, repository: TenantRepository, queue: OperationQueue, write_lock: TenantWriteLock
    ) -> None:
        self.repository = repository
        self.queue = queue
        self.write_lock = write_lock

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

    def current_etag(self, stack: StackRef) -> str | None:
        text = self.repository.read_text(stack.environment, stack.tenant)
        return etag_of(text) if text is not None else None

    def replace(
        self, stack: StackRef, document: Any, principal: Principal, *, if_match: str | None
    ) -> ChangeResult:
        spec = self.validate(stack, document)
        return self._commit_and_submit(stack, principal, if_match=if_match, build=lambda _current: spec)

    def patch(
        self, stack: StackRef, patch: Any, principal: Principal, *, if_match: str | None
    ) -> ChangeResult:
        if not isinstance(patch, dict):
            raise ServiceError(
                "invalid_request",
                "a patch is a JSON object (RFC 7396 merge patch)",
                details=[{"field": "body", "reason": "must be an object"}],
            )

        def build(current: dict[str, Any] | None) -> TenantSpec:
            if current is None:
                raise _tenant_not_found(stack)
            return self.validate(stack, merge_patch(current, patch))

        return self._commit_and_submit(stack, principal, if_match=if_match, build=build)

    def delete(self, stack: StackRef, principal: Principal, *, if_match: str | None) -> ChangeResult:
        author = GitAuthor.of(principal.display_name, principal.email, principal.subject)
        try:
            with self.write_lock.hold(stack):
                self.repository.sync()
                current = self.repository.read(stack.environment, stack.tenant)
                if current is None:
                    raise _tenant_not_found(stack)
                self._check_precondition(stack, if_match)
                if current.get("deletionProtection", True) is not False:
                    raise ServiceError(
                        "deletion_protected",
                        f"{stack.name} has deletionProtection on; PATCH it to false first, then delete",
                    )
                commit = self.repository.delete(
                    stack.environment,
                    stack.tenant,
                    author=author,
                    message=f"Delete tenant {stack.name}\n\nRequested-by: {principal.actor}",
                )
                operation = self._submit(stack, OperationKind.destroy, current, principal, commit)
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        return ChangeResult(operation=operation, commit=commit, document=None, etag=None)

    def _submit(
        self,
        stack: StackRef,
        kind: OperationKind,
        document: dict[str, Any],
        principal: Principal,
        commit: str | None,
    ) -> Operation:
        try:
            return self.queue.submit(stack, kind, spec=document, requested_by=principal.actor)
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

    def _check_precondition(self, stack: StackRef, if_match: str | None) -> None:
        if if_match is None:
            return
        current = self.current_etag(stack)
        wanted = [tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")]
        if current is None or ("*" not in wanted and current not in wanted):
            raise ServiceError(
                "precondition_failed",
                f"{stack.name} changed since you read it (If-Match does not match); read it again and retry",
            )

    def _commit_and_submit(
        self,
        stack: StackRef,
        principal: Principal,
        *,
        if_match: str | None,
        build: Callable[[dict[str, Any] | None], TenantSpec],
    ) -> ChangeResult:
        author = GitAuthor.of(principal.display_name, principal.email, principal.subject)
        try:
            with self.write_lock.hold(stack):
                self.repository.sync()
                current = self.repository.read(stack.environment, stack.tenant)
                self._check_precondition(stack, if_match)
                spec = build(current)
                document = spec.to_document()
                verb = "Create" if current is None else "Update"
                commit = self.repository.write(
                    stack.environment,
                    stack.tenant,
                    document,
                    author=author,
                    message=f"{verb} tenant {stack.name}\n\nRequested-by: {principal.actor}",
                )
                operation = self._submit(stack, OperationKind.up, document, principal, commit)
                etag = self.current_etag(stack)
        except RepositoryError as error:
            raise _repository_unavailable(error) from None
        return ChangeResult(operation=operation, commit=commit, document=document, etag=etag)


def _tenant_not_found(stack: StackRef) -> ServiceError:
    return ServiceError("tenant_not_found", f"there is no tenant {stack.name} that you can access")


def _repository_unavailable(error: RepositoryError) -> ServiceError:
    return ServiceError(
        "repository_unavailable",
        f"the change could not be recorded in the tenants repository ({error}); nothing was queued, retry",
    )

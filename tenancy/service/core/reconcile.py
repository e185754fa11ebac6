"""Reconciling git with the queue when the service starts: every tenant file whose spec differs from
what was last applied or queued for its stack gets an update queued (once: a queued one counts).

This covers a process that died between committing a change and queueing its update, and files
changed while no replica ran. Missing files are left alone: destroying stacks because files went
missing (a wrong tenants path, a bad merge) is never automatic; ``tenantctl sync --prune`` does it.
The one exception is a deletion the service itself committed (``Delete tenant <env>.<name>``, what
DELETE commits) whose destroy was never queued, as the process died between the two: the destroy is
queued now (``queue_unfinished_deletions``), as a change's update is. Until a stack whose file is gone
is destroyed, the service refuses a new tenant of the name (it would get that stack).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from tenancy.automation.contract import Operation, OperationKind, OperationQueue, OperationStatus, StackRef
from tenancy.automation.fingerprint import spec_fingerprint
from tenancy.automation.incarnation import stack_history
from tenancy.service.core.incarnation import incarnation_of
from tenancy.service.core.tenant_changes import TenantChanges
from tenancy.service.core.tenants_repo import TenantBusy, TenantRepository
from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import parse_tenant
from tenancy.spec.tree import ENVIRONMENTS

log = logging.getLogger("tenancy.service")

RECONCILER = "tenant-api:reconcile"  # requested_by of the updates it queues
_WANTED = (OperationStatus.queued, OperationStatus.running, OperationStatus.succeeded)


def queue_unapplied_changes(
    repository: TenantRepository, queue: OperationQueue, *, environments: Collection[str] = ENVIRONMENTS
) -> list[Operation]:
    """Queue an update for each tenant of ``environments`` whose file in git is not what its stack has
    or will have (the tenants repository holds every environment's files; a platform's service runs
    only its own environment's stacks). Each tenant is held (``locked``) while its file is read and its
    update queued, as the service holds it across a commit and its submit: a process sharing the
    checkout and the queue that changes the tenant meanwhile queues its update after this one, never
    before (this one, read earlier, would supersede it and leave the stack with a spec git no longer
    has)."""
    queued = []
    for environment, name in repository.names():
        if environment not in environments:
            continue
        stack = StackRef(environment, name)
        with repository.locked(stack.name):
            operation = _queue_if_unapplied(repository, queue, stack)
        if operation is not None:
            queued.append(operation)
    return queued


def _queue_if_unapplied(
    repository: TenantRepository, queue: OperationQueue, stack: StackRef
) -> Operation | None:
    environment, name = stack.environment, stack.tenant
    file = f"{repository.tenants_path}/{environment}/{name}.yaml"
    found = repository.file(environment, name)
    if found is not None and found.problem is not None:
        log.warning("reconcile: %s %s (%s); left alone", file, found.problem.what, found.problem.detail)
        return None
    try:
        spec = parse_tenant(repository.read(environment, name), file=file)
    except SpecError:
        log.warning("reconcile: %s is not a valid tenant file; left alone", file)
        return None
    if spec.name != name:
        log.warning("reconcile: %s names tenant %s; left alone", file, spec.name)
        return None
    desired = spec.to_document()
    if _last_wanted(queue, stack) == spec_fingerprint(desired):
        return None
    incarnation = incarnation_of(repository, stack)
    return queue.submit(
        stack, OperationKind.up, spec=desired, requested_by=RECONCILER, incarnation=incarnation
    )


def _last_wanted(queue: OperationQueue, stack: StackRef) -> str | None:
    """The fingerprint of the spec the stack has or is about to get; None after (or before) a destroy,
    or when nothing was ever applied. However many previews or refused operations came since: a fixed
    window of the newest 50 would miss the update and queue it again."""
    for operation in stack_history(queue, stack):
        if operation.status not in _WANTED:
            continue
        if operation.kind is OperationKind.destroy:
            return None
        if operation.kind is OperationKind.up:
            return spec_fingerprint(operation.spec)
    return None


def queue_unfinished_deletions(
    changes: TenantChanges, *, environments: Collection[str] = ENVIRONMENTS
) -> list[Operation]:
    """Queue the destroy of each stack of ``environments`` whose tenant the service deleted (its file's
    last commit is DELETE's ``Delete tenant <env>.<name>``) while the stack is still up with no destroy
    queued: the process that committed the deletion died before it queued the destroy. Other stacks
    whose file is gone are left alone and named in the log. Each tenant is held (its write lock, shared
    by every replica) while it is looked at and its destroy queued, as DELETE holds it across its commit
    and its submit."""
    repository, queue = changes.repository, changes.queue
    present = set(repository.names())
    queued = []
    for stack in queue.stacks():
        if stack.environment not in environments or (stack.environment, stack.tenant) in present:
            continue
        try:
            operation = _queue_destroy_if_unfinished(changes, stack)
        except TenantBusy as busy:  # a live writer holds it: it queues what it commits; the rest go on
            log.warning("reconcile: %s left for now: %s", stack.name, busy)
            continue
        if operation is not None:
            queued.append(operation)
    return queued


def _queue_destroy_if_unfinished(changes: TenantChanges, stack: StackRef) -> Operation | None:
    """``queue_unfinished_deletions`` for one stack whose file is gone, holding its write lock."""
    repository = changes.repository
    with changes.write_lock.hold(stack):  # what DELETE holds, across replicas too (Redis)
        repository.sync()
        if repository.exists(stack.environment, stack.tenant):
            return None  # created again meanwhile
        standing = changes.standing_without_file(stack)
        if standing is None:
            return None
        history = repository.history(stack.environment, stack.tenant)
        removal = history[0] if history else None
        if removal is None or removal.subject != f"Delete tenant {stack.name}":
            log.warning(
                "reconcile: %s has no file in git but its stack is up (update %s) and no destroy was "
                "queued; left alone: DELETE the tenant through the service or run `tenantctl sync "
                "--prune` to destroy it (a new tenant of the name is refused until then)",
                stack.name,
                standing.id,
            )
            return None
        return changes.submit_deletion(stack, standing.spec or {}, RECONCILER, removal.sha)

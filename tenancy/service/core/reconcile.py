"""Reconciling git with the queue when the service starts: every tenant file whose spec differs from
what was last applied or queued for its stack gets an update queued (once: a queued one counts).

This covers a process that died between committing a change and queueing its update, and files
changed while no replica ran. Missing files are left alone: destroying stacks because files went
missing (a wrong tenants path, a bad merge) is never automatic; ``tenantctl sync --prune`` does it.
The one exception is a deletion the service itself committed (``Delete tenant <env>.<name>``, what
DELETE commits) whose destroy was never queued, as the process died between the two: the destroy is
queued now (``queue_unfinished_deletions``), as a change's update is. Until a stack whose file is gone
is destroyed, the service refuses a new tenant of the name (it would get that stack).

A running service does the same every ``reconcile_seconds`` (``RunningReconcile``), for what was
never queued at all: a change a replica committed while the queue (Redis) was unreachable is queued
then, not only at the next start. Unlike the start's, this one never queues a failed update again
(only a start retries those), and it holds each tenant's write lock, shared by every replica, while it
reads the file and queues: a change committed meanwhile anywhere is queued after it, never before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

from tenancy.automation.contract import Operation, OperationKind, OperationQueue, OperationStatus, StackRef
from tenancy.automation.fingerprint import spec_fingerprint
from tenancy.automation.incarnation import stack_history
from tenancy.service.core.incarnation import incarnation_of
from tenancy.service.core.periodic import Periodic
from tenancy.service.core.tenant_changes import TenantChanges
from tenancy.service.core.tenants_repo import TenantBusy, TenantFile, TenantRepository
from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import parse_tenant
from tenancy.spec.tree import ENVIRONMENTS

log = logging.getLogger("tenancy.service")

RECONCILER = "tenant-api:reconcile"  # requested_by of the updates it queues
_WANTED = (OperationStatus.queued, OperationStatus.running, OperationStatus.succeeded)


def queue_unapplied_changes(
    repository: TenantRepository,
    queue: OperationQueue,
    *,
    environments: Collection[str] = ENVIRONMENTS,
    hold: Callable[[StackRef], AbstractContextManager[object]] | None = None,
) -> list[Operation]:
    """Queue an update for each tenant of ``environments`` whose file in git is not what its stack has
    or will have (the tenants repository holds every environment's files; a platform's service runs
    only its own environment's stacks). A tenant that may need one is held (``hold``: the service's
    write lock, which every replica takes; by default this checkout's ``locked``) while its file is
    read again, on a fresh fetch, and its update queued, as the service holds it across a commit and
    its submit: a writer changing the tenant meanwhile, in this process, another sharing the checkout
    or another replica (a rolling restart starts replicas while others serve), queues its update
    after this one, never before (this one, read earlier, would supersede it and leave the stack with
    a spec git no longer has). The others are looked at without it, each file read once."""
    held = hold or (lambda stack: repository.locked(stack.name))
    queued = []
    for environment, name in repository.names():
        if environment not in environments:
            continue
        stack = StackRef(environment, name)
        desired = _desired(repository, stack)
        if desired is None or _last_wanted(queue, stack) == spec_fingerprint(desired):
            continue
        operation = _holding(stack, held, repository, partial(_queue_if_unapplied, repository, queue))
        if operation is not None:
            queued.append(operation)
    return queued


def _holding(
    stack: StackRef,
    hold: Callable[[StackRef], AbstractContextManager[object]],
    repository: TenantRepository,
    step: Callable[[StackRef], Operation | None],
) -> Operation | None:
    """``step(stack)`` with the tenant held (``hold``) on a fresh fetch of the branch: what it queues then
    comes after any change a writer made meanwhile. None, logged, while a live writer holds it (that
    writer queues what it commits; the next reconcile looks again)."""
    try:
        with hold(stack):
            repository.sync()
            return step(stack)
    except TenantBusy as busy:
        log.warning("reconcile: %s left for now: %s", stack.name, busy)
        return None


def _queue_if_unapplied(
    repository: TenantRepository, queue: OperationQueue, stack: StackRef
) -> Operation | None:
    desired = _desired(repository, stack)
    if desired is None or _last_wanted(queue, stack) == spec_fingerprint(desired):
        return None
    return _queue_update(repository, queue, stack, desired)


def _queue_update(
    repository: TenantRepository, queue: OperationQueue, stack: StackRef, desired: dict[str, Any]
) -> Operation:
    """The reconcile's update of ``stack`` to ``desired``, for the tenant's current incarnation."""
    incarnation = incarnation_of(repository, stack)
    return queue.submit(
        stack, OperationKind.up, spec=desired, requested_by=RECONCILER, incarnation=incarnation
    )


def _desired(
    repository: TenantRepository, stack: StackRef, *, quiet: bool = False, found: TenantFile | None = None
) -> dict[str, Any] | None:
    """The spec the tenant's file in git asks for, in normal form; None (logged unless ``quiet``) when
    the file is unreadable, invalid or names another tenant: such a file is left alone. ``found``: the
    file already read (that blob, not the branch read again)."""
    environment, name = stack.environment, stack.tenant
    file = f"{repository.tenants_path}/{environment}/{name}.yaml"
    document = found.document if found is not None else None
    found = found or repository.file(environment, name)
    if found is None:
        return None  # deleted meanwhile
    if found.problem is not None:
        if not quiet:
            log.warning("reconcile: %s %s (%s); left alone", file, found.problem.what, found.problem.detail)
        return None
    try:
        spec = parse_tenant(
            document if document is not None else repository.read(environment, name), file=file
        )
    except SpecError:
        if not quiet:
            log.warning("reconcile: %s is not a valid tenant file; left alone", file)
        return None
    if spec.name != name:
        if not quiet:
            log.warning("reconcile: %s names tenant %s; left alone", file, spec.name)
        return None
    return spec.to_document()


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
    changes: TenantChanges,
    *,
    environments: Collection[str] = ENVIRONMENTS,
    warned: set[str] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[Operation]:
    """Queue the destroy of each stack of ``environments`` whose tenant the service deleted (its file's
    last commit is DELETE's ``Delete tenant <env>.<name>``) while the stack is still up with no destroy
    queued: the process that committed the deletion died before it queued the destroy. Other stacks
    whose file is gone are left alone and named in the log. Each tenant is held (its write lock, shared
    by every replica) while it is looked at and its destroy queued, as DELETE holds it across its commit
    and its submit. ``warned``: a running service's, which looks at each stack without the lock first
    (most have nothing to do), and logs and then skips a stack it leaves alone, until its file is
    back (a later removal is then looked at afresh). ``stopping``: checked between stacks."""
    repository, queue = changes.repository, changes.queue
    present = set(repository.names())
    if warned is not None:
        warned -= {name for name in warned if tuple(name.split(".", 1)) in present}  # back: look afresh
    queued = []
    for stack in queue.stacks():
        if stack.environment not in environments or (stack.environment, stack.tenant) in present:
            continue
        if stopping():
            break
        if warned is not None and (stack.name in warned or changes.standing_without_file(stack) is None):
            continue  # named in the log already (until its file is back), or nothing to do
        operation = _holding(  # what DELETE holds, across replicas too (Redis)
            stack,
            changes.write_lock.hold,
            repository,
            lambda held: _queue_destroy_if_unfinished(changes, held, warned),
        )
        if operation is not None:
            queued.append(operation)
    return queued


def _queue_destroy_if_unfinished(
    changes: TenantChanges, stack: StackRef, warned: set[str] | None = None
) -> Operation | None:
    """``queue_unfinished_deletions`` for one stack whose file is gone, its write lock held."""
    repository = changes.repository
    if repository.exists(stack.environment, stack.tenant):
        return None  # created again meanwhile
    standing = changes.standing_without_file(stack)
    if standing is None:
        return None
    history = repository.history(stack.environment, stack.tenant)
    removal = history[0] if history else None
    if removal is None or removal.subject != f"Delete tenant {stack.name}":
        if warned is not None:
            warned.add(stack.name)
        log.warning(
            "reconcile: %s has no file in git but its stack is up (update %s) and no destroy was "
            "queued; left alone: DELETE the tenant through the service or run `tenantctl sync "
            "--prune` to destroy it (a new tenant of the name is refused until then)",
            stack.name,
            standing.id,
        )
        return None
    return changes.submit_deletion(stack, standing.spec or {}, RECONCILER, removal.sha)


class RunningReconcile:
    """``queue_changes_never_queued`` and ``queue_unfinished_deletions`` every ``interval`` seconds in a
    running service (its first run one interval after start: the start's own reconcile runs before)."""

    def __init__(
        self,
        changes: TenantChanges,
        *,
        interval: float,
        environments: Collection[str],
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        """``on_queued``: called after a run that queued something (the local worker's wake-up)."""
        self.changes = changes
        self._on_queued = on_queued
        self.environments = tuple(environments)
        self._warned: set[str] = set()  # stacks left alone: named in the log once, until the file is back
        self._fingerprints: dict[tuple[str, str], str | None] = {}  # files looked at in the last run
        self._periodic = Periodic(
            self.run, interval=interval, name="tenants-reconcile", what="the running reconcile", delay=True
        )

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def run(self) -> list[Operation]:
        stopping = self._periodic.stopping
        queued = queue_changes_never_queued(
            self.changes, environments=self.environments, seen=self._fingerprints, stopping=stopping
        )
        destroys = queue_unfinished_deletions(
            self.changes, environments=self.environments, warned=self._warned, stopping=stopping
        )
        if queued:
            log.warning("queued %d update(s) for changes in git that were never queued", len(queued))
        if destroys:
            log.warning(
                "queued %d destroy(s) for deletions in git whose destroy was never queued", len(destroys)
            )
        if (queued or destroys) and self._on_queued is not None:
            self._on_queued()
        return queued + destroys


def queue_changes_never_queued(
    changes: TenantChanges,
    *,
    environments: Collection[str] = ENVIRONMENTS,
    seen: dict[tuple[str, str], str | None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> list[Operation]:
    """Queue an update for each tenant of ``environments`` whose file's last change the service
    committed and no operation ever asked for: its newest update (queued, running or
    ended in any way) is of another spec or incarnation, or there is none. That is a change committed
    while the queue could not be reached (the writer was answered that it was not queued) or by a
    process that died before queueing it. A failed update is not queued again here: it was queued, and
    repeating the request (or a restart) retries it. A merged pull request or a hand commit is left to
    the deploy workflow and to the next start, as before: queueing it here too would apply it twice.

    Each tenant is first looked at as the branch has it, without a lock and by its spec alone (most
    have nothing to queue; no git process); one that may need an update is then held (the write lock
    every replica takes, ``hold``) and looked at again on the fresh branch, incarnation and committer
    included, before its update is queued, so a writer mid-write, which queues its own change, is never
    overtaken by an older spec. ``seen``: the spec fingerprint of each file (tenant name, blob) looked at
    in the last run (None: left alone, a file not the service's included), kept by the caller so a file
    that did not change is not looked at again (replaced by this run's). ``stopping``: checked between
    tenants."""
    repository = changes.repository
    repository.refresh(max_age=0)
    known = seen if seen is not None else {}
    current: dict[tuple[str, str], str | None] = {}
    queued = []
    for environment, name in repository.names():
        if stopping():
            break
        if environment not in environments:
            continue
        stack = StackRef(environment, name)
        found = repository.file(environment, name)
        if found is None:
            continue
        key = (stack.name, found.blob)
        if key not in known:
            desired = _desired(repository, stack, quiet=True, found=found)
            known[key] = None if desired is None else spec_fingerprint(desired)
        current[key] = known[key]
        if _queued_ever(changes, stack, current[key], incarnation=False):
            continue
        if not repository.made_last_change(environment, name):
            # A merged pull request or a hand commit: the deploy workflow's to apply. Remembered for
            # this version of the file (as left alone), so no later run looks at it again.
            current[key] = known[key] = None
            continue
        operation = _holding(
            stack, changes.write_lock.hold, repository, partial(_queue_if_never_queued, changes)
        )
        if operation is not None:
            queued.append(operation)
    if seen is not None and not stopping():
        seen.clear()
        seen.update(current)
    return queued


def _queue_if_never_queued(changes: TenantChanges, stack: StackRef) -> Operation | None:
    """``queue_changes_never_queued`` for one tenant, its write lock held: looked at again, incarnation
    and committer included."""
    repository = changes.repository
    desired = _desired(repository, stack)
    fingerprint = None if desired is None else spec_fingerprint(desired)
    if desired is None or _queued_ever(changes, stack, fingerprint):
        return None
    if not repository.made_last_change(stack.environment, stack.tenant):
        return None
    return _queue_update(repository, changes.queue, stack, desired)


def _queued_ever(
    changes: TenantChanges, stack: StackRef, fingerprint: str | None, *, incarnation: bool = True
) -> bool:
    """Whether an update of the spec whose fingerprint is ``fingerprint`` (the tenant's file as git has
    it) was ever queued for the tenant; True as well for None, a file left alone (unreadable, invalid
    or naming another tenant). Without ``incarnation`` the newest update's spec alone decides (no git
    process for the tenant's creating commit): enough to find the tenants to look at under the lock,
    since a tenant made again after a destroy has that destroy after its predecessor's updates."""
    if fingerprint is None:
        return True
    marker = incarnation_of(changes.repository, stack) if incarnation else None
    for operation in stack_history(changes.queue, stack):
        if operation.kind is OperationKind.destroy:
            return False  # of an earlier tenant of the name: this one's create was never queued
        if operation.kind is OperationKind.up:
            same_tenant = operation.incarnation is None or marker is None or operation.incarnation == marker
            return same_tenant and spec_fingerprint(operation.spec) == fingerprint
    return False

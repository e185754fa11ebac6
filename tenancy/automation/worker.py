"""The worker: runs queued operations through an engine, one per stack, stacks in parallel.

Guarantees, whichever process submitted the operations:

- never two operations on one stack at once (the queue's claim is atomic across processes, and the
  worker never claims for a stack it is already running);
- at most ``max_parallel`` operations at once in this worker;
- before an operation runs, a stack left behind by an interrupted update is recovered, and the
  operation records that (a ``recovery`` event and ``summary.recovered``);
- every engine event becomes a ``ProgressEvent``; every operation ends with a summary (changes,
  duration, and on failure an error code and a message a person can act on, never a traceback).

``run_until_idle()`` drains the queue and returns (CLI, tests); ``start()``/``stop()`` keep a
background dispatcher running (HTTP service).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from tenancy.automation.contract import (
    APPLIED_SPEC_OUTPUT,
    DATA_KINDS,
    EmitEvent,
    Engine,
    EngineRequest,
    EngineResult,
    Operation,
    OperationKind,
    OperationStatus,
    OperationSummary,
    ProgressEvent,
    StackRef,
    WorkQueue,
)
from tenancy.automation.data_operations import (
    BackupFailed,
    BackupsNotSetAside,
    DataUnavailable,
    TenantData,
    run_data_operation,
    set_aside_backups,
    take_tenant_backup,
)
from tenancy.automation.errors import (
    AutomationError,
    EnvironmentNotServed,
    FixedVolumesChanged,
    PreviousIncarnationNotDestroyed,
    StackLocked,
    StackLockedElsewhere,
    StackNotFound,
    describe_failure,
)
from tenancy.automation.incarnation import stack_history, undestroyed_predecessor
from tenancy.automation.progress import describe_changes
from tenancy.automation.scaling import QdrantScaling, ScalingFailed, ScalingPlan, plan_scaling
from tenancy.spec.changes import refused_change_issues
from tenancy.spec.errors import SpecError
from tenancy.spec.plans import BACKUP_DEFAULT_MAX_AGE_DAYS
from tenancy.spec.tenant import NAMESPACE_PREFIX, parse_tenant, resolve

_log = logging.getLogger(__name__)
# How long a finished operation's outcome is retried while the queue cannot be written (its heartbeat
# goes on meanwhile, so no other worker takes it as abandoned and runs it again).
_OUTCOME_RETRY_SECONDS = 600.0


def _backup_max_age_days(applied: dict[str, Any] | None, operation: Operation) -> int:
    """How long the backups of a destroyed tenant are kept: its spec's ``maxAgeDays`` (plan default)."""
    if applied is not None:
        try:
            qdrant = resolve(
                parse_tenant(applied, file=operation.stack.name), operation.stack.environment
            ).qdrant
        except SpecError:
            qdrant = None
        if qdrant is not None:
            return qdrant.backup_max_age_days
    return BACKUP_DEFAULT_MAX_AGE_DAYS


def _removes_qdrant(operation: Operation, applied: dict[str, Any] | None) -> bool:
    """An update that turns off the Qdrant the last update deployed."""
    return (
        operation.kind is OperationKind.up
        and operation.spec is not None
        and applied is not None
        and _qdrant_enabled(applied)
        and not _qdrant_enabled(operation.spec)
    )


def _qdrant_enabled(document: dict[str, Any]) -> bool:
    qdrant = document.get("qdrant")
    return isinstance(qdrant, dict) and qdrant.get("enabled") is True


# A running operation whose heartbeat is older than this was left by a stopped process. Several
# times SQLite's lock wait (30 s), so a worker merely blocked on the database is never taken for dead
# and its live update cancelled by another process's recovery.
DEFAULT_STALE_AFTER_SECONDS = 120.0

# Pauses before running an up again when the cluster refused the workers a write right after the up
# created their RoleBinding in the tenant's namespace: each API server authorizes from its own cache
# of RoleBindings, which may not hold a binding created a moment ago, and Pulumi's Kubernetes provider
# does not retry a 403. Caches catch up within seconds; a refusal that outlasts these is a real one.
RBAC_SETTLE_PAUSES_SECONDS = (2.0, 5.0)
# Another update on a stack (the deploy workflow's sync right after a merge, a person's pulumi up)
# usually ends within minutes: an operation waits that long for it rather than fail at once.
LOCK_WAIT_SECONDS = 600.0
LOCK_POLL_SECONDS = 10.0


@functools.cache
def _worker_binding() -> tuple[str, str]:
    """The workers' binding's Pulumi resource suffix and the account it binds. Imported on first use:
    tenancy.builders.contract imports pulumi, a second of start-up the CLI's commands need not pay."""
    from tenancy.builders.contract import NAMESPACES, SELF_SERVICE_WORKER_ACCOUNT
    from tenancy.builders.rbac import WORKER_BINDING_RESOURCE_SUFFIX

    account = f"system:serviceaccount:{NAMESPACES.self_service}:{SELF_SERVICE_WORKER_ACCOUNT}"
    return WORKER_BINDING_RESOURCE_SUFFIX, account


def _worker_binding_created(resource: str | None, op: str | None, status: str | None) -> bool:
    """The event of the tenant stack's RoleBinding for the workers (TenantNamespace) being created."""
    if resource is None or op != "create" or status != "done":
        return False
    kind, _, name = resource.partition(" ")
    return kind.endswith(":RoleBinding") and name.endswith(_worker_binding()[0])


def refused_by_fresh_binding(error: str, stack: StackRef) -> bool:
    """Whether ``error`` is the API server's RBAC refusal (its "is forbidden: User ... cannot <verb>
    resource" message) of the workers' service account in the tenant's namespace: what that fresh
    binding grants. Admission refusals (their own "is forbidden: ... denied" messages) do not match."""
    account = _worker_binding()[1]
    namespace = f"{NAMESPACE_PREFIX}{stack.tenant}"
    pattern = (
        rf'is forbidden: User "{re.escape(account)}" cannot [a-z]+ resource "[^"]*"'
        rf'(?: in API group "[^"]*")? in the namespace "{re.escape(namespace)}"'
    )
    return re.search(pattern, error) is not None


@runtime_checkable
class RequeuingQueue(Protocol):
    """A queue that can hand a stopping worker's operations back (both queues of this package)."""

    def requeue_claimed(self, worker_id: str, *, reason: str) -> list[Operation]: ...


class WorkerListener:
    """Follow operations live (CLI progress bars, service metrics). Methods are called from worker
    threads; the default implementation ignores everything."""

    def operation_started(self, operation: Operation) -> None:
        """``operation`` was claimed and is about to run."""

    def event(self, operation: Operation, event: ProgressEvent) -> None:
        """``event`` was recorded for ``operation``."""

    def operation_finished(self, operation: Operation) -> None:
        """``operation`` ended (succeeded or failed); its summary is set."""


class Worker:
    """Runs operations from ``queue`` through ``engine`` (see the module docstring)."""

    def __init__(
        self,
        queue: WorkQueue,
        engine: Engine,
        *,
        max_parallel: int,
        listener: WorkerListener | None = None,
        worker_id: str | None = None,
        heartbeat_interval: float = 5.0,
        stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
        poll_interval: float = 0.5,
        scaling: QdrantScaling | None = None,
        data: TenantData | None = None,
        environments: Collection[str] | None = None,
        rbac_settle_pauses: Sequence[float] = RBAC_SETTLE_PAUSES_SECONDS,
        lock_wait_seconds: float = LOCK_WAIT_SECONDS,
        lock_poll_seconds: float = LOCK_POLL_SECONDS,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.queue = queue
        self.engine = engine
        self.max_parallel = max_parallel
        self.listener = listener or WorkerListener()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.poll_interval = poll_interval
        # Without it, an update that changes a tenant's Qdrant node count is refused (no drain).
        self.scaling = scaling
        self.data = data  # tenants' Qdrant and backup bucket, for backup and restore operations
        # The environments whose stacks this worker runs (None: every one). A platform's workers deploy
        # with their own cluster's credentials and their own state: another environment's operation
        # (queued by a tenantctl pointed at this queue, or before the service knew its environment)
        # fails without running rather than landing in the wrong cluster.
        self.environments = None if environments is None else frozenset(environments)
        self.rbac_settle_pauses = tuple(rbac_settle_pauses)
        # How long an operation waits for another update's lock (the deploy's sync, a person's pulumi
        # up) to go before it fails with locked_elsewhere, checking every lock_poll_seconds.
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_poll_seconds = lock_poll_seconds
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()  # stop() was called (``_stopping`` is set on errors too)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # The background dispatch's last queue failure (None: it runs): readiness reports it.
        self.failing_since: float | None = None
        self._active_lock = threading.Lock()
        self._active: dict[str, Operation] = {}

    # --- running ---------------------------------------------------------------------------------

    def run_until_idle(self, *, only: Collection[str] | None = None) -> list[Operation]:
        """Run queued operations until none is left to run, then return them as finished.

        With ``only`` (operation ids), run just those (and operations queued ahead of them on the same
        stacks) and return once all of them have finished, waiting for other processes' operations on
        those stacks if need be.
        """
        return self._dispatch(until_idle=True, only=None if only is None else set(only))

    def start(self) -> None:
        """Run operations in a background thread until ``stop()``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._stop_requested.clear()
        self._thread = threading.Thread(target=self._run_in_background, name="tenancy-worker", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """Started and running: not stopped by an error, not waiting to start again after one."""
        return self._thread is not None and self._thread.is_alive() and self.failing_since is None

    def _run_in_background(self) -> None:
        """``_dispatch`` until ``stop()``, started again after a queue failure (Redis restarting, a
        network cut) with growing pauses: a worker thread that died with the outage ran nothing again
        until its process restarted, while writes went on being queued (outside replica review)."""
        pause = 1.0
        while not self._stop_requested.is_set():
            try:
                self._dispatch(until_idle=False)
                return
            except Exception as error:
                self._mark_failing(error, f"it starts again in {pause:.0f} s")
            if self._stop_requested.wait(pause):
                return
            self._stopping.clear()
            pause = min(pause * 2, 30.0)

    def _lost_queue(self, error: Exception) -> None:
        """A queue call of the background loop failed: readiness says so until a claim succeeds, and the
        loop waits a little before it asks again (it keeps running what it runs)."""
        self._mark_failing(error, "it keeps asking")
        self._stop_requested.wait(min(self.poll_interval * 10, 1.0))

    def _mark_failing(self, error: Exception, then: str) -> None:
        """Not healthy (``failing_since``) until the next claim succeeds; logged once per outage."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            _log.error("the worker lost its queue (%s); %s", type(error).__name__, then)

    def stop(self, *, timeout: float | None = None) -> None:
        """Stop claiming; wait (up to ``timeout``) for running operations to finish. An update is
        never killed half-way here: that is what leaves a stack needing recovery."""
        self._stop_requested.set()
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll (call after submitting)."""
        self._wake.set()

    def abandon(self, reason: str) -> list[Operation]:
        """Give up on the operations this worker is running (the process is being interrupted):
        they are marked failed and the stacks Pulumi was working on flagged for recovery (not those of
        operations still waiting for another update's lock: that lock is not theirs)."""
        return self.queue.abandon(self.worker_id, reason=reason)

    def release(self, reason: str) -> list[Operation]:
        """Hand the operations this worker is running back to the queue (the process is stopping and
        will not see them finish): requeued with their stacks flagged, so the next worker recovers
        each stack and runs the operation again. Queues that cannot requeue fail them instead."""
        if isinstance(self.queue, RequeuingQueue):
            return self.queue.requeue_claimed(self.worker_id, reason=reason)
        return self.abandon(reason)

    @property
    def running(self) -> list[Operation]:
        with self._active_lock:
            return list(self._active.values())

    # --- dispatch loop ---------------------------------------------------------------------------

    def _dispatch(self, *, until_idle: bool, only: set[str] | None = None) -> list[Operation]:
        finished: list[Operation] = []
        futures: dict[Future[Operation], Operation] = {}
        self._requeue_stale()
        last_requeue = last_beat = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="tenancy-op") as pool:
            try:
                while True:
                    while len(futures) < self.max_parallel and not self._stopping.is_set():
                        try:
                            operation = self.queue.claim_next(
                                [o.stack for o in futures.values()],
                                worker_id=self.worker_id,
                                only=only,
                            )
                        except Exception as error:
                            if until_idle:  # a command: its caller reports the queue's failure
                                raise
                            self._lost_queue(error)  # in the background: go on heartbeating
                            break
                        self.failing_since = None
                        if operation is None:
                            break
                        with self._active_lock:
                            self._active[operation.id] = operation
                        futures[pool.submit(self._execute, operation)] = operation

                    if not futures:
                        if self._stopping.is_set():
                            return finished
                        if until_idle and (only is None or self._all_finished(only)):
                            return finished
                        # Idle in the background, or waiting for another process to free our stacks.
                        self._wake.wait(self.poll_interval)
                        self._wake.clear()
                    else:
                        done, _ = wait(futures, timeout=self.heartbeat_interval, return_when=FIRST_COMPLETED)
                        for future in done:
                            futures.pop(future)
                            outcome = future.result()  # _execute never raises
                            with self._active_lock:
                                self._active.pop(outcome.id, None)
                            if until_idle:  # a background worker runs for days: keep nothing
                                finished.append(outcome)

                    now = time.monotonic()
                    try:
                        if futures and now - last_beat >= self.heartbeat_interval:
                            self.queue.heartbeat([o.id for o in futures.values()])
                            last_beat = now
                        if now - last_requeue >= self.stale_after:
                            self._requeue_stale()
                            last_requeue = now
                    except Exception as error:
                        # The running operations' heartbeat must go on once the queue is back, or
                        # another worker takes them for abandoned and runs them again (outside review):
                        # a background worker keeps its loop; a command reports the failure.
                        if until_idle:
                            raise
                        self._lost_queue(error)
            except BaseException:
                # Ctrl-C (KeyboardInterrupt) or a failing queue: operations waiting for another update's
                # lock stop waiting (and run nothing) before the pool waits for its threads.
                self._stopping.set()
                self._wake.set()
                raise

    def _record_outcome(
        self, operation: Operation, status: OperationStatus, summary: OperationSummary
    ) -> Operation:
        """Record how an operation ended, trying again while the queue cannot be written (for up to
        ``_OUTCOME_RETRY_SECONDS``, or until the worker stops): an outcome given up on leaves the
        operation running with no heartbeat, so it was requeued and ran a second time (outside replica
        review: a Redis outage did that to five operations)."""
        deadline = time.monotonic() + _OUTCOME_RETRY_SECONDS
        pause = 0.5
        while True:
            try:
                return self.queue.finish(operation.id, status, summary, worker_id=self.worker_id)
            except Exception as error:
                if time.monotonic() >= deadline or self._stop_requested.is_set():
                    _log.exception("could not record the outcome of operation %s", operation.id)
                    return operation
                _log.warning(
                    "recording the outcome of operation %s failed (%s); trying again in %.1f s",
                    operation.id,
                    type(error).__name__,
                    pause,
                )
            if self._stop_requested.wait(pause):
                continue  # one last try, then give up above
            pause = min(pause * 2, 10.0)

    def _all_finished(self, ids: set[str]) -> bool:
        for operation_id in list(ids):
            operation = self.queue.get(operation_id)
            if operation is None or operation.status.finished:
                ids.discard(operation_id)
        return not ids

    def _requeue_stale(self) -> None:
        for operation in self.queue.requeue_interrupted(stale_after=self.stale_after):
            _log.warning(
                "operation %s (%s %s) was left running by a stopped process; requeued",
                operation.id,
                operation.kind.value,
                operation.stack.name,
            )

    # --- one operation ---------------------------------------------------------------------------

    def _execute(self, operation: Operation) -> Operation:
        """Run one claimed operation to its end; never raises."""
        started = time.monotonic()
        self._notify(self.listener.operation_started, operation)

        def emit(
            *,
            kind: str,
            resource: str | None = None,
            op: str | None = None,
            status: str | None = None,
            message: str | None = None,
        ) -> None:
            try:
                event = self.queue.add_event(
                    operation.id, kind=kind, resource=resource, op=op, status=status, message=message
                )
            except Exception:  # losing one progress line must not fail the update
                _log.exception("could not record an event of operation %s", operation.id)
                return
            self._notify(self.listener.event, operation, event)

        recovered = False
        stack = operation.stack
        # One wait for another update's lock per operation, before the run and (for a lock only
        # Pulumi's refusal shows) at it together.
        lock_deadline = time.monotonic() + self.lock_wait_seconds
        what = f"{operation.kind.value} of stack {stack.name}"
        try:
            if self.environments is not None and stack.environment not in self.environments:
                raise EnvironmentNotServed(
                    f"{stack.name} belongs to {stack.environment}, and this worker runs the stacks of "
                    f"{', '.join(sorted(self.environments))} only (in its own cluster, with its own state); "
                    f"nothing ran. Queue it where {stack.environment} is served"
                )
            holder = self._undestroyed_predecessor(operation)
            if operation.kind in DATA_KINDS:
                # The tenant's data, not its stack: no Pulumi call, so no stack recovery either (a
                # stack flagged as interrupted stays flagged for its next engine operation).
                result = run_data_operation(operation, self.data, emit)
            else:
                self._refuse_foreign_lock(operation, emit, lock_deadline)
                applied = self._applied_spec(operation, emit)
                plan = self._check_fixed_volumes(operation, applied)
                self._backup_first_if_needed(operation, emit, applied)
                self._set_aside_backups(operation, emit, applied, before=True, holder=holder)
                self.queue.mark_engine_started(operation.id)  # from here Pulumi works on the stack
                recovered = self._recover_if_needed(operation, emit)
                scaling = None if plan is None else self._scaling_for(plan, emit)
                if scaling is not None and plan is not None:
                    scaling.before_update(plan, emit)
                result = self._run_engine(operation, emit, lock_deadline)
                if scaling is not None and plan is not None and result.succeeded:
                    scaling.after_update(plan, emit)
            if result.succeeded and operation.kind is OperationKind.destroy:
                self._set_aside_backups(operation, emit, applied, before=False, holder=holder)
                self.engine.remove(stack)
                emit(kind="diagnostic", status="done", message=f"removed stack {stack.name}")
        except _StoppedWaiting:
            self.queue.mark_engine_started(operation.id, started=False)
            # The worker is stopping (Ctrl-C, the service shutting down) while this operation waited
            # for another update's lock: nothing ran. It stays claimed, for abandon (failed) or release
            # (requeued) to settle, neither flagging its stack: the lock is the other update's.
            emit(
                kind="diagnostic",
                status="warning",
                message="stopped while waiting for another update on the stack; nothing ran",
            )
            return operation
        except Exception as error:
            code, message = describe_failure(error, what=what)
            if code == "interrupted":
                self.queue.mark_interrupted(stack)
            status = OperationStatus.failed
            summary = OperationSummary(
                duration_seconds=time.monotonic() - started, error=message, recovered=recovered, code=code
            )
        else:
            status, summary = self._summarize(operation, result, started=started, recovered=recovered)

        planned = operation.kind is OperationKind.preview
        emit(
            kind="summary",
            status="done" if status is OperationStatus.succeeded else "failed",
            message=summary.error or describe_changes(summary.changes, planned=planned),
        )
        finished = self._record_outcome(operation, status, summary)
        self._notify(self.listener.operation_finished, finished)
        return finished

    def _run_engine(self, operation: Operation, emit: EmitEvent, lock_deadline: float) -> EngineResult:
        """The engine's run of ``operation``; an up that created the workers' RoleBinding and was then
        refused by the cluster on the workers' behalf in that namespace is run again after a pause
        (``rbac_settle_pauses``: one more run per pause), since the refusal may be an API server whose
        RBAC cache does not hold the binding yet. The next run goes on from what the first created."""
        request = EngineRequest(operation.id, operation.stack, operation.kind, operation.spec)
        binding_created = False

        def watch(
            *,
            kind: str,
            resource: str | None = None,
            op: str | None = None,
            status: str | None = None,
            message: str | None = None,
        ) -> None:
            nonlocal binding_created
            binding_created = binding_created or _worker_binding_created(resource, op, status)
            emit(kind=kind, resource=resource, op=op, status=status, message=message)

        pauses = list(self.rbac_settle_pauses) if operation.kind is OperationKind.up else []
        error: AutomationError | None
        told_of_lock = False
        while True:
            try:
                result = self.engine.run(request, watch)
            except StackLocked:
                # Pulumi refused to start: another update holds a lock the check before could not see
                # (a bucket or Pulumi Cloud lock with no pending operation yet). Nothing ran: try again
                # every lock_poll_seconds until the operation's wait is over.
                if not told_of_lock:
                    told_of_lock = True
                    emit(
                        kind="diagnostic",
                        status="warning",
                        message=(
                            f"another update holds stack {operation.stack.name}: trying again every "
                            f"{self.lock_poll_seconds:g} s while this operation may wait; nothing is "
                            "cancelled"
                        ),
                    )
                # Nothing of this operation runs while it waits: a stop or death meanwhile flags nothing.
                self.queue.mark_engine_started(operation.id, started=False)
                if not self._pause_for_lock(lock_deadline):
                    raise
                self.queue.mark_engine_started(operation.id)
                continue
            except AutomationError as raised:
                failure, error = raised.message, raised
            else:
                failure, error = result.error or "", None
                if result.succeeded:
                    return result
            if not (pauses and binding_created and refused_by_fresh_binding(failure, operation.stack)):
                if error is not None:
                    raise error
                return result
            pause = pauses.pop(0)
            emit(
                kind="diagnostic",
                status="warning",
                message=(
                    f"the cluster refused the workers a write in {NAMESPACE_PREFIX}{operation.stack.tenant} "
                    "right after this update created their RoleBinding there (the API server's RBAC cache "
                    f"may not hold it yet): running the update again in {pause:g} s"
                ),
            )
            if self._stopping.wait(pause):  # stopping: no new run; report the refusal
                if error is not None:
                    raise error
                return result

    def _undestroyed_predecessor(self, operation: Operation) -> Operation | None:
        """The failed destroy of an earlier incarnation of the tenant that still holds the stack.

        Nothing but a destroy runs on such a stack: an update of the new incarnation would take over
        the earlier tenant's resources and the data in its Qdrant, a backup or restore would read or
        write that data. A destroy is let through (it is how the stack is freed) and sets the backups
        aside for the incarnation that made them (returned here for that)."""
        history = (o for o in stack_history(self.queue, operation.stack) if o.id != operation.id)
        holder = undestroyed_predecessor(history, operation.incarnation)
        if holder is None or operation.kind is OperationKind.destroy:
            return holder
        stack = operation.stack
        raise PreviousIncarnationNotDestroyed(
            f"{operation.kind.value} of {stack.name} refused: the stack still holds the tenant of this name "
            f"deleted before this one (incarnation {holder.incarnation}), whose destroy (operation "
            f"{holder.id}) failed, so its resources and the data in its Qdrant are still there. Retry that "
            f"destroy (DELETE the tenant through the service, or `tenantctl destroy {stack.tenant} --env "
            f"{stack.environment}`; a platform-admin may force it past a failing backup); once it has "
            "succeeded, run this again"
        )

    def _scaling_for(self, plan: ScalingPlan, emit: EmitEvent) -> QdrantScaling | None:
        if self.scaling is None and not plan.shrinking and not plan.grown_volumes:
            emit(
                kind="diagnostic",
                status="done",
                message="this worker cannot reach the tenant's Qdrant: the new nodes get shards only for "
                "new collections until a rebalance (`python -m tenancy.dataops.job rebalance`)",
            )
            return None
        if self.scaling is None:
            raise ScalingFailed(
                f"{plan.stack.name}: changing qdrant.replicas from {plan.old_replicas} to "
                f"{plan.new_replicas} needs a worker that can reach the tenant's Qdrant and Kubernetes "
                "(the platform's worker); this one cannot, so nothing was changed"
            )
        return self.scaling

    def _check_fixed_volumes(
        self, operation: Operation, applied: dict[str, Any] | None
    ) -> ScalingPlan | None:
        """Refuse an update whose spec would change volumes the last applied spec created; return
        the change of Qdrant's node count it makes, if any (drained or rebalanced around the update).

        CI (validate --against) and the HTTP service refuse such changes earlier; this holds for
        every caller, so an update that Kubernetes would reject halfway never starts.
        """
        if operation.kind is not OperationKind.up or operation.spec is None or applied is None:
            return None
        environment, file = operation.stack.environment, f"{operation.stack.name} (operation {operation.id})"
        try:
            before = resolve(parse_tenant(applied, file=file), environment)
            after = resolve(parse_tenant(operation.spec, file=file), environment)
        except SpecError:
            return None  # the engine's own validation reports an invalid spec
        default_class, expandable = (
            self.scaling.volume_rules(environment) if self.scaling is not None else (None, frozenset[str]())
        )
        issues = refused_change_issues(
            before, after, file=file, default_class_after=default_class, expandable_classes=expandable
        )
        if issues:
            raise FixedVolumesChanged("; ".join(f"{issue.field}: {issue.reason}" for issue in issues))
        return plan_scaling(operation.stack, before, after)

    def _applied_spec(self, operation: Operation, emit: EmitEvent) -> dict[str, Any] | None:
        """The tenant document the stack's last successful update applied, for ``up`` and ``destroy``.

        Read from the stack itself (its ``appliedSpec`` output, kept in the stack's state), so a fresh
        queue (a new service, a restored or emptied database) still knows how many Qdrant nodes run and
        drains before a shrink. The queue's history answers only for stacks last updated before that
        output existed, or when the outputs cannot be read; None when the stack does not exist.
        """
        if operation.kind not in (OperationKind.up, OperationKind.destroy):
            return None
        try:
            outputs = self.engine.outputs(operation.stack)
        except StackNotFound:
            return None  # never applied (or removed): nothing deployed to compare with
        except AutomationError as error:
            emit(
                kind="diagnostic",
                status="failed",
                message=f"the stack's applied spec cannot be read ({error.message}); "
                "comparing with the last update this queue recorded",
            )
            outputs = {}
        applied = outputs.get(APPLIED_SPEC_OUTPUT)
        if isinstance(applied, dict):
            return applied
        return next(
            (
                previous.spec
                for previous in stack_history(self.queue, operation.stack)
                if previous.kind is OperationKind.up
                and previous.status is OperationStatus.succeeded
                and previous.spec is not None
                and previous.id != operation.id
            ),
            None,
        )

    @staticmethod
    def _backup_reason(operation: Operation, applied: dict[str, Any] | None) -> str | None:
        """Why ``operation`` needs a backup of the tenant's Qdrant before it runs, or None.

        A destroy removes the Qdrant's volumes; turning the Qdrant off removes it (and its backup job);
        a version change rewrites its storage. Each runs only once a backup of what the last update
        deployed (``applied``) is stored."""
        if applied is None or not _qdrant_enabled(applied):
            return None  # nothing deployed with a Qdrant: nothing to lose
        if operation.kind is OperationKind.destroy:
            return "before the destroy"
        spec = operation.spec
        if _removes_qdrant(operation, applied):
            return "before the Qdrant is removed"
        if operation.kind is OperationKind.up and spec is not None and _qdrant_enabled(spec):
            environment, file = operation.stack.environment, operation.stack.name
            try:
                before = resolve(parse_tenant(applied, file=file), environment).qdrant
                after = resolve(parse_tenant(spec, file=file), environment).qdrant
            except SpecError:
                return None
            if before is not None and after is not None and before.version != after.version:
                return f"before the Qdrant version change {before.version} -> {after.version}"
        return None

    def _backup_first_if_needed(
        self, operation: Operation, emit: EmitEvent, applied: dict[str, Any] | None
    ) -> None:
        """Take the automatic backup (see ``_backup_reason``); a failure refuses the operation unless a
        platform-admin forced it (``params.force``, which only the admin role may set)."""
        reason = self._backup_reason(operation, applied)
        if reason is None:
            return
        forced = bool((operation.params or {}).get("force"))
        if self.data is None:
            # No backup bucket on this platform (a local service, dev without object storage): say so
            # in the operation's events rather than refuse every destroy.
            emit(
                kind="diagnostic",
                status="failed",
                message=f"no automatic backup {reason}: no backup bucket is configured for the workers",
            )
            return
        try:
            record = take_tenant_backup(self.data, operation.stack, emit, reason=f"automatic, {reason}")
        except (BackupFailed, DataUnavailable) as error:
            if forced:
                emit(
                    kind="diagnostic",
                    status="failed",
                    message=f"{error.message}; going on without a backup: forced by {operation.requested_by}",
                )
                return
            raise BackupFailed(
                f"{operation.kind.value} of {operation.stack.name} refused: the automatic backup "
                f"{reason} failed ({error.message}). Fix the backup and retry; a platform-admin may force "
                "the operation without a backup"
            ) from None
        emit(kind="diagnostic", status="done", message=f"automatic backup {record.id} stored {reason}")

    def _set_aside_backups(
        self,
        operation: Operation,
        emit: EmitEvent,
        applied: dict[str, Any] | None,
        *,
        before: bool,
        holder: Operation | None = None,
    ) -> None:
        """Before a destroy (and once more after it, for a backup the tenant's CronJob finished
        meanwhile) or an update that turns the Qdrant off, move the tenant's backups out of its live
        prefix into its incarnation's retired folder, kept for the retention its spec had
        (``tenancy.dataops.retired``): a later tenant of the same name then starts with none, its
        backup job can neither read nor prune them, and with no job left to prune them the sweep
        deletes them when their retention is over.

        Failing before the destroy refuses it (nothing destroyed) unless a platform-admin forced it;
        failing after it leaves those backups where they were and says so. ``holder``: the failed
        destroy of an earlier incarnation this destroy retries (the backups are that incarnation's)."""
        if self.data is None:
            return
        if operation.kind is not OperationKind.destroy and not (
            before and _removes_qdrant(operation, applied)
        ):
            return
        try:
            set_aside_backups(
                self.data,
                operation.stack,
                emit,
                incarnation=(holder or operation).incarnation,
                operation_id=operation.id,
                max_age_days=_backup_max_age_days(applied, operation),
                now=datetime.now(UTC),
            )
        except (BackupsNotSetAside, DataUnavailable) as error:
            if not before or (operation.params or {}).get("force"):
                emit(kind="diagnostic", status="failed", message=f"{error.message}; left in the live prefix")
                return
            raise BackupsNotSetAside(
                f"{operation.kind.value} of {operation.stack.name} refused: {error.message}. Fix the object "
                f"store and retry; a platform-admin may force the {operation.kind.value}"
            ) from None

    def _refuse_foreign_lock(self, operation: Operation, emit: EmitEvent, deadline: float) -> None:
        """Before anything (a backup included): wait while the stack holds a lock or pending operations
        that this queue did not flag as its own interrupted operation's, and fail with
        ``locked_elsewhere`` if they outlast ``deadline``. They are someone else's and may be a live
        update: the deploy workflow's ``tenantctl sync`` runs its own queue and workers, and a person
        may run ``pulumi up``. Recovering would cancel that update and drop its pending operations;
        ``tenantctl refresh --recover`` takes over a stack whose update is known to be dead. A preview
        takes no lock and changes nothing: it neither waits nor refuses."""
        stack = operation.stack
        if operation.kind is OperationKind.preview:
            return
        if _recovery_asked(operation) or self.queue.was_interrupted(stack):
            return
        if not self.engine.needs_recovery(stack):
            return
        emit(
            kind="diagnostic",
            status="warning",
            message=(
                f"another update holds stack {stack.name} (its lock or pending operations): waiting up to "
                f"{self.lock_wait_seconds:g} s for it to finish; nothing is cancelled"
            ),
        )
        while self._pause_for_lock(deadline):
            if not self.engine.needs_recovery(stack):
                emit(kind="diagnostic", status="done", message=f"the other update on {stack.name} finished")
                return
        raise StackLockedElsewhere(
            f"stack {stack.name} holds a lock or pending operations that no operation of this queue "
            f"left, still after {self.lock_wait_seconds:g} s: another update may be running on it (the "
            "deploy workflow's tenantctl sync, or someone's pulumi up). Nothing ran and nothing was "
            "cancelled. Retry once it has finished; if no update is running (one was killed), run "
            f"tenantctl refresh {stack.tenant} --env {stack.environment} --recover where this queue runs"
        )

    def _pause_for_lock(self, deadline: float) -> bool:
        """One pause while waiting for another update's lock: False once ``deadline`` has passed;
        raises ``_StoppedWaiting`` when the worker stops meanwhile."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if self._stopping.wait(min(self.lock_poll_seconds, left)):
            raise _StoppedWaiting
        return True

    def _recover_if_needed(self, operation: Operation, emit: EmitEvent) -> bool:
        """Recover a stack this queue's workers left interrupted (a crash, a kill, Ctrl-C: the queue
        flags it), or whose operation asks for it (``tenantctl refresh --recover``), before anything
        else runs on it: cancel the stale lock, drop the pending operations, refresh."""
        stack = operation.stack
        if self.queue.was_interrupted(stack):
            reason = "the previous operation on this stack was interrupted before it finished"
        elif _recovery_asked(operation):
            reason = f"asked by {operation.requested_by}: the update that left the stack locked is dead"
        else:
            return False
        emit(kind="recovery", status="started", message=f"recovering: {reason}")
        done = self.engine.recover(stack)
        self.queue.clear_interrupted(stack)
        emit(kind="recovery", status="done", message=done)
        return True

    @staticmethod
    def _summarize(
        operation: Operation, result: EngineResult, *, started: float, recovered: bool
    ) -> tuple[OperationStatus, OperationSummary]:
        duration = time.monotonic() - started
        if result.succeeded:
            return OperationStatus.succeeded, OperationSummary(
                changes=dict(result.changes),
                duration_seconds=duration,
                recovered=recovered,
                outputs=dict(result.outputs),
            )
        error = (
            result.error or f"{operation.kind.value} failed; its progress events show which resource failed"
        )
        return OperationStatus.failed, OperationSummary(
            changes=dict(result.changes),
            duration_seconds=duration,
            error=error,
            recovered=recovered,
            code="engine_error",
        )

    @staticmethod
    def _notify(hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:  # a broken display must not break an update
            _log.exception("worker listener failed")


class _StoppedWaiting(Exception):  # a signal inside the worker, never reported as an error
    """The worker stopped while an operation waited for another update's lock."""


def _recovery_asked(operation: Operation) -> bool:
    """``tenantctl refresh --recover``: the operation itself asks to take over a stack left locked."""
    return operation.kind is OperationKind.refresh and bool((operation.params or {}).get("recover"))

"""The worker against the engine double: locking, coalescing, the parallelism bound, recovery,
error mapping and progress events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from tenancy.automation.contract import (
    EmitEvent,
    EngineRequest,
    EngineResult,
    Operation,
    OperationKind,
    OperationStatus,
    ProgressEvent,
)
from tenancy.automation.errors import EngineFailed, StackConflict, StackLocked, StackNotFound
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.worker import Worker, WorkerListener

from .conftest import stack, tenant_spec

UP, PREVIEW, REFRESH, DESTROY = (
    OperationKind.up,
    OperationKind.preview,
    OperationKind.refresh,
    OperationKind.destroy,
)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_two_operations_never_overlap_on_one_stack(queue: SqliteOperationQueue) -> None:
    engine = FakeEngine(delay=0.01)
    kinds = [PREVIEW, UP, REFRESH]  # different kinds do not coalesce: all of them run
    for round_ in range(3):
        for tenant in ("acme", "globex", "initech"):
            for kind in kinds:
                spec = tenant_spec(tenant, labels={"round": str(round_)}) if kind is not REFRESH else None
                queue.submit(stack(tenant), kind, spec=spec, requested_by="t")
                time.sleep(0)  # interleave with nothing: order is what the queue keeps

    Worker(queue, engine, max_parallel=8).run_until_idle()

    assert max(engine.max_overlap_per_stack.values()) == 1
    for tenant in ("acme", "globex", "initech"):
        calls = sorted(engine.calls_for(stack(tenant)), key=lambda call: call.started)
        assert all(later.started >= earlier.ended for earlier, later in pairwise(calls))
    assert engine.max_concurrency > 1  # the stacks did run side by side


def test_n_queued_changes_to_one_tenant_become_one_update_with_the_last_spec(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    submitted = [
        queue.submit(
            stack("acme"), UP, spec=tenant_spec("acme", labels={"version": str(n)}), requested_by="t"
        )
        for n in range(10)
    ]

    finished = Worker(queue, engine, max_parallel=4).run_until_idle()

    calls = engine.calls_for(stack("acme"))
    assert len(calls) == 1
    assert calls[0].spec == tenant_spec("acme", labels={"version": "9"})
    assert [op.id for op in finished] == [submitted[-1].id]
    assert all(queue.get(op.id).superseded_by == submitted[-1].id for op in submitted[:-1])  # type: ignore[union-attr]


def test_changes_queued_during_an_update_become_one_more_update_with_the_last_spec(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    engine.pause()
    worker = Worker(queue, engine, max_parallel=2, poll_interval=0.01)
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme", labels={"version": "0"}), requested_by="t")
    worker.start()
    try:
        wait_for(lambda: engine.running(stack("acme")) == 1)
        for n in range(1, 6):
            queue.submit(
                stack("acme"), UP, spec=tenant_spec("acme", labels={"version": str(n)}), requested_by="t"
            )
        engine.resume()
        wait_for(lambda: len(engine.calls_for(stack("acme"))) == 2 and engine.running() == 0)
    finally:
        engine.resume()
        worker.stop(timeout=5)

    versions = [call.spec["labels"]["version"] for call in engine.calls_for(stack("acme"))]  # type: ignore[index]
    assert versions == ["0", "5"]  # the running one finished; the queued ones became one


def test_different_tenants_run_in_parallel_up_to_the_bound_and_never_above(
    queue: SqliteOperationQueue,
) -> None:
    engine = FakeEngine(delay=0.04)
    for index in range(12):
        queue.submit(stack(f"t{index}"), UP, spec=tenant_spec(f"t{index}"), requested_by="t")

    finished = Worker(queue, engine, max_parallel=4).run_until_idle()

    assert len(finished) == 12
    assert engine.max_concurrency == 4  # four ran at once (the engine counts them), never five


def test_a_crash_mid_update_is_recovered_before_the_next_run_and_recorded(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    acme = stack("acme")
    engine.interrupt_next(acme)
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    [interrupted] = Worker(queue, engine, max_parallel=1).run_until_idle()
    assert interrupted.status is OperationStatus.failed
    assert interrupted.summary is not None and interrupted.summary.code == "interrupted"
    assert engine.needs_recovery(acme)

    second = queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.id == second.id and done.status is OperationStatus.succeeded
    assert done.summary is not None and done.summary.recovered
    assert engine.timeline == [("run", acme), ("recover", acme), ("run", acme)]
    recovery = [event for event in queue.events(done.id) if event.kind == "recovery"]
    assert [event.status for event in recovery] == ["started", "done"]
    assert "stale lock" in (recovery[1].message or "")
    assert queue.events(done.id)[0].kind == "recovery"  # before any resource changed


def test_restart_requeues_operations_left_running_and_recovers_their_stacks(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    acme = stack("acme")
    operation = queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    queue.claim_next(worker_id="process-that-crashed")  # it died mid-update: the row stays 'running'
    queue.mark_engine_started(operation.id)
    engine.break_stack(acme)  # and its update left a lock behind
    time.sleep(0.01)

    [done] = Worker(queue, engine, max_parallel=2, stale_after=0.0).run_until_idle()

    assert done.id == operation.id and done.status is OperationStatus.succeeded
    assert done.summary is not None and done.summary.recovered
    kinds = [(event.kind, event.status) for event in queue.events(done.id)]
    assert kinds[:3] == [("recovery", "requeued"), ("recovery", "started"), ("recovery", "done")]
    assert not queue.was_interrupted(acme)


def test_a_lock_no_operation_of_this_queue_left_is_never_cancelled(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    # Another queue's workers (the deploy workflow's tenantctl sync) or a person's pulumi up hold the
    # stack: recovering it would cancel their update and drop its pending operations.
    acme = stack("acme")
    engine.break_stack(acme)
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")

    [refused] = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=0.2, lock_poll_seconds=0.05
    ).run_until_idle()

    assert refused.status is OperationStatus.failed
    assert refused.summary is not None and refused.summary.code == "locked_elsewhere"
    assert "still after 0.2 s" in (refused.summary.error or "")
    assert "no operation of this queue left" in (refused.summary.error or "")
    assert engine.recoveries == [] and engine.calls_for(acme) == []
    assert engine.needs_recovery(acme)  # left as it was found
    assert not queue.was_interrupted(acme)
    assert not [event for event in queue.events(refused.id) if event.kind == "recovery"]


def test_an_operation_waits_for_another_update_to_finish_then_runs_without_recovering(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    # The deploy workflow's sync holds the stack for a moment (its pending operations are visible).
    acme = stack("acme")
    engine.break_stack(acme)
    threading.Timer(0.3, engine.release_stack, args=(acme,)).start()
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=30, lock_poll_seconds=0.05
    ).run_until_idle()

    assert done.status is OperationStatus.succeeded
    assert done.summary is not None and not done.summary.recovered
    assert engine.recoveries == []
    messages = [event.message or "" for event in queue.events(done.id) if event.kind == "diagnostic"]
    assert any("waiting up to 30 s" in message for message in messages)
    assert any("the other update on dev.acme finished" in message for message in messages)


class _LockedAtFirst(FakeEngine):
    """A lock the check before the run cannot see (a bucket's, Pulumi Cloud's): Pulumi refuses to
    start the first ``refusals`` runs."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        if self.refusals:
            self.refusals -= 1
            raise StackLocked(f"stack {request.stack.name} is locked by another update")
        return super().run(request, emit)


def test_a_lock_pulumi_refuses_on_is_waited_for_and_the_run_tried_again(queue: SqliteOperationQueue) -> None:
    engine = _LockedAtFirst(refusals=2)
    acme = stack("acme")
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=30, lock_poll_seconds=0.01
    ).run_until_idle()

    assert done.status is OperationStatus.succeeded and engine.refusals == 0
    assert engine.recoveries == []


def test_a_lock_pulumi_keeps_refusing_on_fails_the_operation_once_the_wait_is_over(
    queue: SqliteOperationQueue,
) -> None:
    engine = _LockedAtFirst(refusals=1_000)
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [failed] = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=0.2, lock_poll_seconds=0.05
    ).run_until_idle()

    assert failed.summary is not None and failed.summary.code == "conflict"
    assert 2 <= 1_000 - engine.refusals <= 10  # tried again while it waited, a bounded number of times
    assert not queue.was_interrupted(stack("acme"))  # someone else's lock: nothing flagged


def test_stopping_while_pulumi_refuses_on_another_updates_lock_flags_nothing(
    queue: SqliteOperationQueue,
) -> None:
    # A lock only Pulumi's refusal shows (a bucket's, Pulumi Cloud's): the stack was handed to Pulumi,
    # which refused; while the operation waits to try again nothing of it runs, so a stop then must not
    # flag the stack (the next operation would cancel the other update).
    engine = _LockedAtFirst(refusals=1_000)
    acme = stack("acme")
    operation = queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    worker = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=600, lock_poll_seconds=0.05, poll_interval=0.02
    )
    worker.start()
    wait_for(lambda: engine.refusals <= 998, timeout=10)  # Pulumi was asked twice

    worker.stop(timeout=10)
    [handed_back] = worker.release("the service stopped")

    assert handed_back.id == operation.id and handed_back.status is OperationStatus.queued
    assert not queue.was_interrupted(acme)


class _CrashesOnce(FakeEngine):
    """Its first run dies as a panicking CLI would: an engine error, the stack left locked."""

    crashed = False

    def run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        if not self.crashed:
            self.crashed = True
            self.break_stack(request.stack)
            raise EngineFailed("the pulumi CLI panicked (exit 2)")
        return super().run(request, emit)


def test_a_lock_a_failed_run_may_have_left_is_left_for_a_person_to_take_over(
    queue: SqliteOperationQueue,
) -> None:
    # Found right after a failed run, a lock may be that run's, or another update's that was waiting for
    # it: nothing tells them apart, so nothing is flagged and the next operation does not cancel it.
    engine = _CrashesOnce()
    acme = stack("acme")
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    [failed] = Worker(queue, engine, max_parallel=1).run_until_idle()
    assert failed.summary is not None and failed.summary.code == "engine_error"
    assert not queue.was_interrupted(acme)

    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    [refused] = Worker(queue, engine, max_parallel=1, lock_wait_seconds=0).run_until_idle()

    assert refused.summary is not None and refused.summary.code == "locked_elsewhere"
    assert engine.recoveries == []


def test_a_preview_neither_waits_for_nor_refuses_another_updates_lock(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    acme = stack("acme")
    engine.break_stack(acme)
    queue.submit(acme, OperationKind.preview, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1, lock_wait_seconds=600).run_until_idle()

    assert done.status is OperationStatus.succeeded and engine.recoveries == []


@pytest.mark.parametrize("settle", ["release", "abandon"])
def test_stopping_while_waiting_for_another_update_hands_the_operation_back_without_flagging(
    queue: SqliteOperationQueue, engine: FakeEngine, settle: str
) -> None:
    # The service shuts down (release: requeued) or tenantctl gets Ctrl-C (abandon: failed) while an
    # operation waits for the deploy's update: the stop is not held up by the wait, nothing ran, and the
    # stack is not flagged, so no later operation cancels the deploy's lock.
    acme = stack("acme")
    engine.break_stack(acme)
    operation = queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")
    worker = Worker(
        queue, engine, max_parallel=1, lock_wait_seconds=600, lock_poll_seconds=0.05, poll_interval=0.02
    )
    worker.start()
    wait_for(lambda: any(event.kind == "diagnostic" for event in queue.events(operation.id)), timeout=10)

    worker.stop(timeout=10)
    settled = worker.release("the service stopped") if settle == "release" else worker.abandon("Ctrl-C")

    assert worker.running == [] and [op.id for op in settled] == [operation.id]
    expected = OperationStatus.queued if settle == "release" else OperationStatus.failed
    assert settled[0].status is expected
    assert not queue.was_interrupted(acme)
    assert engine.calls_for(acme) == [] and engine.recoveries == []
    messages = [event.message or "" for event in queue.events(operation.id)]
    assert any("stopped while waiting for another update" in message for message in messages)


def test_a_failed_run_that_leaves_no_lock_flags_nothing(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    acme = stack("acme")
    engine.fail_next(acme, "quota exceeded")
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")

    [failed] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert failed.status is OperationStatus.failed
    assert not queue.was_interrupted(acme)


def test_a_stack_flagged_by_the_queue_is_recovered_even_when_the_engine_sees_no_lock(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    # Bucket backends: a stale lock is invisible to the engine; the queue remembers the crash.
    acme = stack("acme")
    queue.mark_interrupted(acme)
    queue.submit(acme, UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert engine.recoveries == [acme]
    assert done.summary is not None and done.summary.recovered


def test_a_healthy_stack_runs_without_recovery(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert engine.recoveries == []
    assert done.summary is not None and not done.summary.recovered
    assert all(event.kind != "recovery" for event in queue.events(done.id))


class RecordingListener(WorkerListener):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def operation_started(self, operation: Operation) -> None:
        with self.lock:
            self.log.append(("started", operation.id))

    def event(self, operation: Operation, event: ProgressEvent) -> None:
        with self.lock:
            self.log.append(("event", event))

    def operation_finished(self, operation: Operation) -> None:
        with self.lock:
            self.log.append(("finished", operation.status))


def test_progress_events_are_recorded_in_order(queue: SqliteOperationQueue) -> None:
    engine = FakeEngine(resources=3)
    listener = RecordingListener()
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    Worker(queue, engine, max_parallel=1, listener=listener).run_until_idle()

    events = queue.events(operation.id)
    assert [event.seq for event in events] == list(range(1, 8))
    assert [(event.kind, event.resource, event.status) for event in events[:6]] == [
        ("resource", f"kubernetes:core/v1:ConfigMap acme-{index}", status)
        for index in range(3)
        for status in ("started", "done")
    ]
    assert events[-1].kind == "summary" and events[-1].message == "3 created"
    assert listener.log[0] == ("started", operation.id)
    assert [entry[1] for entry in listener.log[1:-1]] == events
    assert listener.log[-1] == ("finished", OperationStatus.succeeded)


def test_summary_counts_changes_and_keeps_masked_outputs(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.summary is not None
    assert done.summary.changes == {"create": 3}
    assert done.summary.duration_seconds >= 0
    assert done.summary.outputs["qdrantApiKey"] == "[secret]"


@pytest.mark.parametrize(
    ("failure", "code", "fragment"),
    [
        (StackConflict("stack dev.acme is locked by another update"), "conflict", "locked by another update"),
        (StackNotFound("stack dev.acme does not exist"), "not_found", "does not exist"),
        ("provider rejected the namespace", "engine_error", "provider rejected the namespace"),
    ],
)
def test_engine_errors_become_codes_and_actionable_messages(
    queue: SqliteOperationQueue, engine: FakeEngine, failure: Exception | str, code: str, fragment: str
) -> None:
    engine.fail_next(stack("acme"), failure)
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.status is OperationStatus.failed
    assert done.summary is not None and done.summary.code == code
    assert fragment in (done.summary.error or "")


def test_an_unexpected_exception_is_reported_without_its_text_or_traceback(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    engine.fail_next(stack("acme"), KeyError("password=hunter2"))
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    error = done.summary.error if done.summary else ""
    assert done.summary is not None and done.summary.code == "internal"
    assert "KeyError" in (error or "")
    assert "hunter2" not in (error or "") and "Traceback" not in (error or "")


def test_a_successful_destroy_removes_the_stack(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    engine.deploy(stack("acme"), tenant_spec("acme", deletionProtection=False))
    queue.submit(stack("acme"), DESTROY, spec=None, requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.status is OperationStatus.succeeded
    assert engine.removed == [stack("acme")]
    assert queue.events(done.id)[-2].message == "removed stack dev.acme"


def test_a_protected_stack_is_not_destroyed(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    engine.deploy(stack("acme"), tenant_spec("acme"))  # deletionProtection defaults to on
    queue.submit(stack("acme"), DESTROY, spec=None, requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.summary is not None and done.summary.code == "protected"
    assert engine.removed == []


def test_a_failing_listener_does_not_fail_the_operation(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    class BrokenDisplay(WorkerListener):
        def event(self, operation: Operation, event: ProgressEvent) -> None:
            raise RuntimeError("terminal went away")

    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")

    [done] = Worker(queue, engine, max_parallel=1, listener=BrokenDisplay()).run_until_idle()

    assert done.status is OperationStatus.succeeded


def test_the_background_worker_runs_what_is_submitted_until_stopped(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    worker = Worker(queue, engine, max_parallel=2, poll_interval=0.01)
    worker.start()
    try:
        operations = [
            queue.submit(stack(name), UP, spec=tenant_spec(name), requested_by="t")
            for name in ("acme", "globex")
        ]
        worker.wake()
        wait_for(lambda: all(queue.get(op.id).status.finished for op in operations))  # type: ignore[union-attr]
    finally:
        worker.stop(timeout=5)
    assert not worker.running
    later = queue.submit(stack("acme"), REFRESH, spec=None, requested_by="t")
    time.sleep(0.05)
    assert queue.get(later.id).status is OperationStatus.queued  # type: ignore[union-attr]


def test_an_operation_is_called_stale_only_after_several_times_the_databases_lock_wait(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    from tenancy.automation.queue import BUSY_TIMEOUT_SECONDS
    from tenancy.service.core.config import ServiceSettings

    # A dispatcher blocked on SQLite for its whole lock wait misses heartbeats: that must not be
    # enough for another process to requeue its operation and cancel the live update in recovery.
    assert Worker(queue, engine, max_parallel=1).stale_after >= 3 * BUSY_TIMEOUT_SECONDS
    assert ServiceSettings().worker_stale_after_seconds >= 3 * BUSY_TIMEOUT_SECONDS


def test_a_released_worker_hands_its_running_operation_back_for_recovery_and_a_rerun(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    stopping = Worker(queue, engine, max_parallel=1, worker_id="stopping")
    engine.pause()
    try:
        stopping.start()
        wait_for(lambda: engine.running(stack("acme")) == 1)
        stopping.stop(timeout=0.1)
        [handed_back] = stopping.release("the service stopped")
    finally:
        engine.resume()
    assert handed_back.id == operation.id and handed_back.status is OperationStatus.queued
    wait_for(lambda: not stopping.running)

    [rerun] = Worker(queue, engine, max_parallel=1).run_until_idle()
    assert rerun.id == operation.id and rerun.status is OperationStatus.succeeded
    assert rerun.summary is not None and rerun.summary.recovered


def test_an_update_that_would_change_fixed_volumes_never_reaches_the_engine(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    qdrant = {"enabled": True}
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme", qdrant=qdrant), requested_by="t")
    Worker(queue, engine, max_parallel=1).run_until_idle()
    grown = queue.submit(
        stack("acme"), UP, spec=tenant_spec("acme", plan="medium", qdrant=qdrant), requested_by="t"
    )

    Worker(queue, engine, max_parallel=1).run_until_idle()

    finished = queue.get(grown.id)
    assert finished is not None and finished.status is OperationStatus.failed
    assert finished.summary is not None and finished.summary.code == "fixed_volumes"
    assert "set qdrant.storage.size: 10Gi" in (finished.summary.error or "")
    assert len(engine.calls_for(stack("acme"))) == 1

    pinned = {**qdrant, "storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium", qdrant=pinned), requested_by="t")
    Worker(queue, engine, max_parallel=1).run_until_idle()
    assert len(engine.calls_for(stack("acme"))) == 2


def test_a_background_worker_outlives_a_queue_outage_and_records_what_finished_during_it(
    queue: SqliteOperationQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outside review of replicas on a real Redis: a 1.5 s outage killed every replica's
    worker thread for good (writes were still accepted and queued, nothing ran, /readyz said ready),
    and an operation that finished during it had its outcome dropped, so it was run a second time. A
    review of the fix found a failed heartbeat still ended the loop: the running operations then had
    no heartbeat until they ended, and another worker could take them for abandoned."""
    engine = FakeEngine(delay=0.6)
    worker = Worker(queue, engine, max_parallel=2, poll_interval=0.01)
    worker.heartbeat_interval = 0.05
    down = threading.Event()
    claim, finish, heartbeat = queue.claim_next, queue.finish, queue.heartbeat
    beats: list[bool] = []  # whether each heartbeat reached the queue

    def unless_down(call: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if call is heartbeat:
                beats.append(not down.is_set())
            if down.is_set():
                raise ConnectionError("the queue's server is restarting")
            return call(*args, **kwargs)

        return guarded

    monkeypatch.setattr(queue, "claim_next", unless_down(claim))
    monkeypatch.setattr(queue, "finish", unless_down(finish))
    monkeypatch.setattr(queue, "heartbeat", unless_down(heartbeat))
    worker.start()
    try:
        # An outage in the middle of a run: its heartbeat fails, then goes on.
        first = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="t")
        worker.wake()
        wait_for(lambda: engine.running(stack("acme")) == 1)
        down.set()
        wait_for(lambda: not worker.healthy and beats and not beats[-1], timeout=10)
        time.sleep(0.1)
        down.clear()
        wait_for(lambda: beats[-1] and engine.running(stack("acme")) == 1, timeout=10)
        wait_for(lambda: queue.get(first.id).status is OperationStatus.succeeded, timeout=10)
        # An outage across the end of a run: its outcome is recorded once the queue is back.
        second = queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="t")
        worker.wake()
        wait_for(lambda: engine.running(stack("globex")) == 1)
        down.set()
        wait_for(lambda: engine.running(stack("globex")) == 0, timeout=10)  # ended meanwhile
        down.clear()
        wait_for(lambda: queue.get(second.id).status is OperationStatus.succeeded, timeout=10)
        wait_for(lambda: worker.healthy, timeout=10)
        third = queue.submit(stack("initech"), UP, spec=tenant_spec("initech"), requested_by="t")
        worker.wake()
        wait_for(lambda: queue.get(third.id).status is OperationStatus.succeeded, timeout=10)
        assert len(engine.calls_for(stack("acme"))) == len(engine.calls_for(stack("globex"))) == 1
    finally:
        down.clear()
        worker.stop(timeout=10)

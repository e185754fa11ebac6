"""The SQLite operation queue: coalescing, one running operation per stack, crash recovery."""

from __future__ import annotations

import multiprocessing
import time
from itertools import pairwise
from pathlib import Path

from tenancy.automation.contract import OperationKind, OperationStatus, OperationSummary
from tenancy.automation.queue import SqliteOperationQueue

from .conftest import stack, tenant_spec

UP, PREVIEW, REFRESH, DESTROY = (
    OperationKind.up,
    OperationKind.preview,
    OperationKind.refresh,
    OperationKind.destroy,
)


def test_a_newer_up_supersedes_the_queued_one_and_keeps_the_latest_spec(queue: SqliteOperationQueue) -> None:
    first = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    second = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="b")

    older = queue.get(first.id)
    assert older is not None
    assert older.status is OperationStatus.superseded
    assert older.superseded_by == second.id
    assert older.finished_at is not None
    assert second.status is OperationStatus.queued
    assert second.spec is not None and second.spec["plan"] == "medium"


def test_a_running_operation_is_never_superseded(queue: SqliteOperationQueue) -> None:
    running = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == running.id

    newer = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="b")

    still = queue.get(running.id)
    assert still is not None and still.status is OperationStatus.running
    assert newer.status is OperationStatus.queued


def test_a_destroy_waits_for_the_up_queued_before_it_instead_of_superseding_it(
    queue: SqliteOperationQueue,
) -> None:
    # The up queued first is typically the one turning deletion protection off: dropping it would
    # leave the destroy facing a protected stack.
    up = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", deletionProtection=False), requested_by="a")
    preview = queue.submit(stack("acme"), PREVIEW, spec=tenant_spec("acme"), requested_by="a")
    destroy = queue.submit(stack("acme"), DESTROY, spec=None, requested_by="a")

    assert queue.get(up.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(preview.id).status is OperationStatus.queued  # type: ignore[union-attr]
    order = []
    while (claimed := queue.claim_next(worker_id="w")) is not None:
        order.append(claimed.id)
        queue.finish(claimed.id, OperationStatus.succeeded, OperationSummary(), worker_id="w")
    assert order == [up.id, preview.id, destroy.id]


def test_queued_ups_coalesce_but_never_across_a_queued_destroy(queue: SqliteOperationQueue) -> None:
    before = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    destroy = queue.submit(stack("acme"), DESTROY, spec=None, requested_by="a")
    first_after = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    second_after = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="a")

    assert queue.get(before.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(destroy.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(first_after.id).superseded_by == second_after.id  # type: ignore[union-attr]


def test_an_up_after_a_queued_destroy_does_not_cancel_the_destroy(queue: SqliteOperationQueue) -> None:
    destroy = queue.submit(stack("acme"), DESTROY, spec=None, requested_by="a")
    up = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")

    assert queue.get(destroy.id).status is OperationStatus.queued  # type: ignore[union-attr]
    first = queue.claim_next(worker_id="w")
    assert first is not None and first.id == destroy.id  # asked first, runs first
    assert queue.claim_next(worker_id="w") is None  # the up waits for the destroy
    queue.finish(destroy.id, OperationStatus.succeeded, OperationSummary())
    second = queue.claim_next(worker_id="w")
    assert second is not None and second.id == up.id


def test_queued_refreshes_coalesce_and_other_stacks_are_untouched(queue: SqliteOperationQueue) -> None:
    old = queue.submit(stack("acme"), REFRESH, spec=None, requested_by="a")
    other = queue.submit(stack("globex"), REFRESH, spec=None, requested_by="a")
    queue.submit(stack("acme"), REFRESH, spec=None, requested_by="a")

    assert queue.get(old.id).status is OperationStatus.superseded  # type: ignore[union-attr]
    assert queue.get(other.id).status is OperationStatus.queued  # type: ignore[union-attr]


def test_claims_one_operation_per_stack_at_a_time(queue: SqliteOperationQueue) -> None:
    queue.submit(stack("acme"), PREVIEW, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")

    first = queue.claim_next(worker_id="w1")
    second = queue.claim_next(worker_id="w2")
    third = queue.claim_next(worker_id="w3")

    assert first is not None and first.stack == stack("acme") and first.kind is PREVIEW
    assert second is not None and second.stack == stack("globex")
    assert third is None  # acme's up waits for acme's preview, whoever asks


def test_claim_skips_stacks_the_caller_is_already_running(queue: SqliteOperationQueue) -> None:
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")

    claimed = queue.claim_next([stack("acme")], worker_id="w")

    assert claimed is not None and claimed.stack == stack("globex")


def test_claim_with_only_takes_those_operations_or_what_is_queued_ahead_of_them(
    queue: SqliteOperationQueue,
) -> None:
    ahead = queue.submit(stack("acme"), PREVIEW, spec=tenant_spec("acme"), requested_by="service")
    mine = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="cli")
    queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="service")

    first = queue.claim_next(worker_id="cli", only={mine.id})
    assert first is not None and first.id == ahead.id
    assert queue.claim_next(worker_id="cli", only={mine.id}) is None  # globex is not ours
    queue.finish(ahead.id, OperationStatus.succeeded, OperationSummary())
    second = queue.claim_next(worker_id="cli", only={mine.id})
    assert second is not None and second.id == mine.id


def test_events_keep_their_order_and_can_be_read_incrementally(queue: SqliteOperationQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    for index in range(5):
        queue.add_event(operation.id, kind="resource", resource=f"r{index}", op="create", status="done")

    events = queue.events(operation.id)
    assert [event.seq for event in events] == [1, 2, 3, 4, 5]
    assert [event.resource for event in events] == ["r0", "r1", "r2", "r3", "r4"]
    assert [event.seq for event in queue.events(operation.id, after_seq=3)] == [4, 5]


def test_finish_records_the_summary_and_last_returns_the_newest(queue: SqliteOperationQueue) -> None:
    first = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.claim_next(worker_id="w")
    summary = OperationSummary(
        changes={"create": 2}, duration_seconds=1.5, outputs={"namespace": "tenant-acme"}
    )
    done = queue.finish(first.id, OperationStatus.succeeded, summary, worker_id="w")

    assert done.status is OperationStatus.succeeded
    assert done.summary == summary
    newer = queue.submit(stack("acme"), REFRESH, spec=None, requested_by="a")
    assert queue.last(stack("acme")) == newer


def test_finish_by_a_worker_that_no_longer_owns_the_operation_is_ignored(queue: SqliteOperationQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.claim_next(worker_id="old-owner")
    queue.requeue_interrupted()
    queue.claim_next(worker_id="new-owner")

    queue.finish(operation.id, OperationStatus.failed, OperationSummary(error="late"), worker_id="old-owner")

    current = queue.get(operation.id)
    assert current is not None and current.status is OperationStatus.running


def test_operations_left_running_by_a_stopped_process_are_requeued_and_flagged(tmp_path: Path) -> None:
    now = [1000.0]
    queue = SqliteOperationQueue(tmp_path / "q.sqlite3", clock=lambda: now[0])
    stale = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    alive = queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")
    queue.claim_next(worker_id="crashed")
    now[0] = 1020.0
    queue.claim_next(worker_id="alive")
    now[0] = 1040.0
    queue.heartbeat([alive.id])

    requeued = queue.requeue_interrupted(stale_after=30.0)

    assert [operation.id for operation in requeued] == [stale.id]
    assert queue.get(stale.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(alive.id).status is OperationStatus.running  # type: ignore[union-attr]
    assert queue.was_interrupted(stack("acme")) and not queue.was_interrupted(stack("globex"))
    assert queue.events(stale.id)[-1].kind == "recovery"


def test_abandon_fails_the_workers_operations_and_flags_their_stacks(queue: SqliteOperationQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.claim_next(worker_id="w")

    abandoned = queue.abandon("w", reason="stopped")

    assert [op.id for op in abandoned] == [operation.id]
    assert abandoned[0].status is OperationStatus.failed
    assert abandoned[0].summary is not None and abandoned[0].summary.code == "interrupted"
    assert queue.was_interrupted(stack("acme"))


def test_applied_is_the_last_successful_up_or_destroy_per_tenant(queue: SqliteOperationQueue) -> None:
    def run(tenant: str, kind: OperationKind, status: OperationStatus, **spec: str) -> None:
        queue.submit(stack(tenant), kind, spec=tenant_spec(tenant, **spec), requested_by="a")
        claimed = queue.claim_next(worker_id="w")
        assert claimed is not None
        queue.finish(claimed.id, status, OperationSummary())

    run("acme", UP, OperationStatus.succeeded, plan="small")
    run("acme", UP, OperationStatus.failed, plan="large")
    run("acme", REFRESH, OperationStatus.succeeded)
    run("globex", UP, OperationStatus.succeeded)
    run("globex", DESTROY, OperationStatus.succeeded)

    applied = queue.applied("dev")
    assert applied["acme"].spec is not None and applied["acme"].spec["plan"] == "small"
    assert applied["globex"].kind is DESTROY
    assert queue.stacks("dev") == [stack("acme"), stack("globex")]


def _claim_loop(path: str, worker: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Run in another process: claim until the queue is empty, holding each claim briefly."""
    queue = SqliteOperationQueue(Path(path))
    while True:
        operation = queue.claim_next(worker_id=worker)
        if operation is None:
            break
        started = time.monotonic()
        time.sleep(0.005)
        ended = time.monotonic()  # before finish: the next claim on this stack can only follow it
        queue.finish(operation.id, OperationStatus.succeeded, OperationSummary())
        results.put((operation.id, operation.stack.tenant, started, ended))
    queue.close()


def test_claims_are_exclusive_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    queue = SqliteOperationQueue(path)
    submitted = [
        queue.submit(stack(f"t{index % 6}"), kind, spec=tenant_spec(f"t{index % 6}"), requested_by="a")
        for index in range(60)
        for kind in (PREVIEW, UP)
    ]
    expected = {op.id for op in submitted if queue.get(op.id).status is OperationStatus.queued}  # type: ignore[union-attr]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_claim_loop, args=(str(path), f"w{n}", results)) for n in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
    runs = [results.get(timeout=5) for _ in range(len(expected))]

    assert sorted(run[0] for run in runs) == sorted(expected)  # each claimed exactly once
    by_stack: dict[str, list[tuple[float, float]]] = {}
    for _, tenant, started, ended in runs:
        by_stack.setdefault(tenant, []).append((started, ended))
    for intervals in by_stack.values():
        intervals.sort()
        for (_, end), (start, _) in pairwise(intervals):
            assert start >= end  # never two at once on one stack

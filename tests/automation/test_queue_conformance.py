"""One conformance suite for every queue backend: SQLite (embedded) and Redis (the platform's, here
fakeredis). The CLI, the service and the worker get whichever ``open_queue`` returns, so each
behaviour below must hold for both: coalescing, one running operation per stack, claims limited to
some operations, a finish by a worker that no longer owns the operation, crash recovery, what was
applied per tenant."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import fakeredis
import pytest

from tenancy.automation.contract import (
    Operation,
    OperationKind,
    OperationStatus,
    OperationSummary,
    StackRef,
    SubmitRequest,
)
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.redis_queue import RedisOperationQueue
from tenancy.automation.storage import QueueSettings, StoredQueue, open_queue

from .conftest import stack, tenant_spec

BACKENDS = ("sqlite", "redis")


class QueueFactory(Protocol):
    def __call__(self, *, clock: Callable[[], float] | None = None) -> StoredQueue: ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_queue(backend: str, tmp_path: Path) -> Iterator[QueueFactory]:
    """Clients of ONE queue of ``backend``: each call is another client (another connection, as
    another process or replica would have) of the same stored queue."""
    server = fakeredis.FakeServer()
    opened: list[SqliteOperationQueue] = []

    def make(*, clock: Callable[[], float] | None = None) -> StoredQueue:
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        if backend == "redis":
            return RedisOperationQueue(fakeredis.FakeRedis(server=server), prefix="conformance:", **kwargs)
        sqlite = SqliteOperationQueue(tmp_path / "operations.sqlite3", **kwargs)
        opened.append(sqlite)
        return sqlite

    yield make
    for sqlite in opened:
        sqlite.close()


@pytest.fixture
def queue(make_queue: QueueFactory) -> StoredQueue:
    return make_queue()


def test_the_factory_opens_each_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_queue(QueueSettings(), state_dir=tmp_path) as embedded:
        assert isinstance(embedded.queue, SqliteOperationQueue)
        assert embedded.queue.path == tmp_path / "operations.sqlite3"
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = QueueSettings(backend="redis", redis_url="redis://redis.example:6379/0", redis_prefix="p:")
    with open_queue(settings, state_dir=tmp_path, redis=client) as shared:
        assert isinstance(shared.queue, RedisOperationQueue) and shared.redis is client
        shared.queue.submit(stack("acme"), OperationKind.up, spec={}, requested_by="a")
    assert client.exists("p:ops")


def test_submit_calls_queued_once_before_it_returns_with_the_operations_place_fixed(
    make_queue: QueueFactory, backend: str
) -> None:
    """The service hands ``queued`` to whichever queue it has (no isinstance on the backend): the next
    writer submits once it is called, from another thread, and must land after this operation. The
    Redis queue calls ``queued`` once its submit is stored, so any client's later submit lands after
    it; the SQLite queue calls it once the operation has its place in this queue object's group, so the
    next writer is this process's (the service's processes never pipeline a tenant's writes across
    each other: the tenant's flock is held until every write of its holder is queued). Two SQLite
    queue objects on one file each group their own submits, and nothing orders their transactions."""
    queue = make_queue()
    other = make_queue() if backend == "redis" else queue
    calls: list[str] = []
    following: list[str] = []
    threads: list[threading.Thread] = []

    def next_writer() -> None:
        following.append(other.submit(stack("initech"), OperationKind.up, spec={}, requested_by="b").id)

    def queued() -> None:
        calls.append("queued")
        threads.append(threading.Thread(target=next_writer))
        threads[0].start()

    first = queue.submit(stack("acme"), OperationKind.up, spec={}, requested_by="a", queued=queued)
    calls.append("returned")
    [thread] = threads
    thread.join(10)
    assert calls == ["queued", "returned"] and len(following) == 1
    assert [op.id for op in reversed(queue.recent())] == [first.id, following[0]]  # oldest first


def test_queue_settings_come_from_the_services_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_SERVICE_BACKEND", "redis")
    monkeypatch.setenv("TENANCY_SERVICE_REDIS_SENTINELS", "a.redis.svc:26379, b.redis.svc:26379")
    monkeypatch.setenv("TENANCY_SERVICE_REDIS_PASSWORD", "hunter2")
    settings = QueueSettings()
    assert settings.redis_sentinels == ("a.redis.svc:26379", "b.redis.svc:26379")
    assert "hunter2" not in settings.describe() and "hunter2" not in repr(settings)


def test_a_redis_queue_needs_an_address() -> None:
    with pytest.raises(ValueError, match="TENANCY_SERVICE_REDIS_SENTINELS"):
        QueueSettings(backend="redis")


UP, PREVIEW, REFRESH, DESTROY = (
    OperationKind.up,
    OperationKind.preview,
    OperationKind.refresh,
    OperationKind.destroy,
)


def test_a_newer_up_supersedes_the_queued_one_and_keeps_the_latest_spec(queue: StoredQueue) -> None:
    first = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    second = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="b")

    older = queue.get(first.id)
    assert older is not None
    assert older.status is OperationStatus.superseded
    assert older.superseded_by == second.id
    assert older.finished_at is not None
    assert second.status is OperationStatus.queued
    assert second.spec is not None and second.spec["plan"] == "medium"


def test_submit_in_order_queues_each_after_the_one_before_as_submits_one_by_one_would(
    queue: StoredQueue,
) -> None:
    """How the service queues a group of commits' operations at once: in their order, each a submit's
    operation (coalescing included), readable as returned, after what was queued before."""
    earlier = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    returned = queue.submit_in_order(
        [
            SubmitRequest(stack("acme"), UP, tenant_spec("acme", plan="medium"), "b", incarnation="dev:c1"),
            SubmitRequest(stack("beta"), UP, tenant_spec("beta"), "c", params={"force": True}),
            SubmitRequest(stack("acme"), UP, tenant_spec("acme", plan="large"), "d", incarnation="dev:c1"),
        ]
    )
    assert [op.stack.tenant for op in returned] == ["acme", "beta", "acme"]
    assert [queue.get(op.id) for op in returned[1:]] == returned[1:]  # what a read gives
    assert returned[1].params == {"force": True} and returned[2].incarnation == "dev:c1"
    statuses = {op.id: op.status for op in queue.recent(limit=10)}
    assert statuses[earlier.id] is OperationStatus.superseded
    assert statuses[returned[0].id] is OperationStatus.superseded  # by the next one of its stack
    newest = queue.get(earlier.id)
    assert newest is not None and newest.superseded_by == returned[2].id
    assert [op.id for op in queue.recent(limit=3)] == [op.id for op in reversed(returned)]
    assert queue.submit_in_order([]) == []


def test_sqlite_submit_in_order_queues_all_of_them_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction: a group whose insert fails part way leaves nothing queued, so each writer's
    "not queued, repeat the request" is true of every one."""
    queue = SqliteOperationQueue(tmp_path / "operations.sqlite3")
    insert = SqliteOperationQueue._insert
    calls: list[str] = []

    def second_fails(db: Any, submission: Any) -> None:
        calls.append(submission.stack.tenant)
        if len(calls) == 2:
            raise RuntimeError("disk I/O error")
        insert(db, submission)

    monkeypatch.setattr(SqliteOperationQueue, "_insert", staticmethod(second_fails))
    with pytest.raises(RuntimeError, match="disk I/O error"):
        queue.submit_in_order(
            [SubmitRequest(stack(name), UP, tenant_spec(name), "a") for name in ("acme", "beta", "gamma")]
        )
    assert calls == ["acme", "beta"] and queue.recent() == []
    queue.close()


def test_a_running_operation_is_never_superseded(queue: StoredQueue) -> None:
    running = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == running.id

    newer = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="b")

    still = queue.get(running.id)
    assert still is not None and still.status is OperationStatus.running
    assert newer.status is OperationStatus.queued


def test_a_destroy_waits_for_the_up_queued_before_it_instead_of_superseding_it(
    queue: StoredQueue,
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


def test_queued_ups_coalesce_but_never_across_a_queued_destroy(queue: StoredQueue) -> None:
    before = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    destroy = queue.submit(stack("acme"), DESTROY, spec=None, requested_by="a")
    first_after = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="small"), requested_by="a")
    second_after = queue.submit(stack("acme"), UP, spec=tenant_spec("acme", plan="medium"), requested_by="a")

    assert queue.get(before.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(destroy.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(first_after.id).superseded_by == second_after.id  # type: ignore[union-attr]


def test_an_up_after_a_queued_destroy_does_not_cancel_the_destroy(queue: StoredQueue) -> None:
    destroy = queue.submit(stack("acme"), DESTROY, spec=None, requested_by="a")
    up = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")

    assert queue.get(destroy.id).status is OperationStatus.queued  # type: ignore[union-attr]
    first = queue.claim_next(worker_id="w")
    assert first is not None and first.id == destroy.id  # asked first, runs first
    assert queue.claim_next(worker_id="w") is None  # the up waits for the destroy
    queue.finish(destroy.id, OperationStatus.succeeded, OperationSummary())
    second = queue.claim_next(worker_id="w")
    assert second is not None and second.id == up.id


def test_queued_refreshes_coalesce_and_other_stacks_are_untouched(queue: StoredQueue) -> None:
    old = queue.submit(stack("acme"), REFRESH, spec=None, requested_by="a")
    other = queue.submit(stack("globex"), REFRESH, spec=None, requested_by="a")
    queue.submit(stack("acme"), REFRESH, spec=None, requested_by="a")

    assert queue.get(old.id).status is OperationStatus.superseded  # type: ignore[union-attr]
    assert queue.get(other.id).status is OperationStatus.queued  # type: ignore[union-attr]


def test_claims_one_operation_per_stack_at_a_time(queue: StoredQueue) -> None:
    queue.submit(stack("acme"), PREVIEW, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")

    first = queue.claim_next(worker_id="w1")
    second = queue.claim_next(worker_id="w2")
    third = queue.claim_next(worker_id="w3")

    assert first is not None and first.stack == stack("acme") and first.kind is PREVIEW
    assert second is not None and second.stack == stack("globex")
    assert third is None  # acme's up waits for acme's preview, whoever asks


def test_claim_skips_stacks_the_caller_is_already_running(queue: StoredQueue) -> None:
    queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")

    claimed = queue.claim_next([stack("acme")], worker_id="w")

    assert claimed is not None and claimed.stack == stack("globex")


def test_claim_with_only_takes_those_operations_or_what_is_queued_ahead_of_them(
    queue: StoredQueue,
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


def test_events_keep_their_order_and_can_be_read_incrementally(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    for index in range(5):
        queue.add_event(operation.id, kind="resource", resource=f"r{index}", op="create", status="done")

    events = queue.events(operation.id)
    assert [event.seq for event in events] == [1, 2, 3, 4, 5]
    assert [event.resource for event in events] == ["r0", "r1", "r2", "r3", "r4"]
    assert [event.seq for event in queue.events(operation.id, after_seq=3)] == [4, 5]


def test_finish_records_the_summary_and_last_returns_the_newest(queue: StoredQueue) -> None:
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


def test_finish_by_a_worker_that_no_longer_owns_the_operation_is_ignored(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.claim_next(worker_id="old-owner")
    queue.requeue_interrupted()
    queue.claim_next(worker_id="new-owner")

    queue.finish(operation.id, OperationStatus.failed, OperationSummary(error="late"), worker_id="old-owner")

    current = queue.get(operation.id)
    assert current is not None and current.status is OperationStatus.running


def test_operations_left_running_by_a_stopped_process_are_requeued_and_flagged(
    make_queue: QueueFactory,
) -> None:
    now = [1000.0]
    queue = make_queue(clock=lambda: now[0])
    stale = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    alive = queue.submit(stack("globex"), UP, spec=tenant_spec("globex"), requested_by="a")
    queue.claim_next(worker_id="crashed")
    queue.mark_engine_started(stale.id)  # it died while Pulumi worked on the stack
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


def test_abandon_fails_the_workers_operations_and_flags_their_stacks(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec=tenant_spec("acme"), requested_by="a")
    queue.claim_next(worker_id="w")
    queue.mark_engine_started(operation.id)  # stopped mid-update (Ctrl-C)

    abandoned = queue.abandon("w", reason="stopped")

    assert [op.id for op in abandoned] == [operation.id]
    assert abandoned[0].status is OperationStatus.failed
    assert abandoned[0].summary is not None and abandoned[0].summary.code == "interrupted"
    assert queue.was_interrupted(stack("acme"))


def test_applied_is_the_last_successful_up_or_destroy_per_tenant(queue: StoredQueue) -> None:
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


def test_a_newer_submission_supersedes_only_queued_operations_of_its_kind(queue: StoredQueue) -> None:
    first = queue.submit(stack("acme"), UP, spec={"v": 1}, requested_by="a")
    preview = queue.submit(stack("acme"), PREVIEW, spec={"v": 2}, requested_by="a")
    second = queue.submit(stack("acme"), UP, spec={"v": 3}, requested_by="a")
    other = queue.submit(stack("beta"), UP, spec={"v": 1}, requested_by="a")

    assert queue.get(first.id).superseded_by == second.id  # type: ignore[union-attr]
    assert queue.get(preview.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(other.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert [op.id for op in queue.recent(stack=stack("acme"))] == [second.id, preview.id, first.id]
    assert queue.last(stack("beta")).id == other.id  # type: ignore[union-attr]
    assert [op.id for op in queue.active(stack("acme"))] == [preview.id, second.id]


def test_what_a_superseded_operation_had_replaced_points_at_the_newest(queue: StoredQueue) -> None:
    # A caller following the first request lands, in one hop, on the operation applying its change.
    first = queue.submit(stack("acme"), UP, spec={"v": 1}, requested_by="a")
    second = queue.submit(stack("acme"), UP, spec={"v": 2}, requested_by="a")
    third = queue.submit(stack("acme"), UP, spec={"v": 3}, requested_by="a")

    assert queue.get(first.id).superseded_by == third.id  # type: ignore[union-attr]
    assert queue.get(second.id).superseded_by == third.id  # type: ignore[union-attr]


def test_claim_with_only_takes_nothing_when_those_operations_finished(queue: StoredQueue) -> None:
    done = queue.submit(stack("acme"), UP, spec={}, requested_by="cli")
    queue.claim_next(worker_id="w")
    queue.finish(done.id, OperationStatus.succeeded, OperationSummary(), worker_id="w")
    queue.submit(stack("globex"), UP, spec={}, requested_by="service")

    assert queue.claim_next(worker_id="cli", only={done.id}) is None
    assert queue.claim_next(worker_id="cli", only={"no-such-operation"}) is None


def test_finish_by_a_worker_that_never_owned_it_is_ignored(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec={}, requested_by="a")
    queue.claim_next(worker_id="owner")

    outcome = queue.finish(operation.id, OperationStatus.succeeded, OperationSummary(), worker_id="intruder")

    assert outcome.status is OperationStatus.running
    assert queue.claim_next(worker_id="other") is None  # the stack is still busy
    queue.finish(operation.id, OperationStatus.succeeded, OperationSummary(), worker_id="owner")
    assert queue.get(operation.id).status is OperationStatus.succeeded  # type: ignore[union-attr]


def test_finish_refuses_a_status_that_is_not_an_outcome(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec={}, requested_by="a")
    queue.claim_next(worker_id="w")
    with pytest.raises(ValueError, match="succeeded or failed"):
        queue.finish(operation.id, OperationStatus.superseded, OperationSummary(), worker_id="w")


def test_abandon_leaves_other_workers_operations_alone_and_frees_the_stack(queue: StoredQueue) -> None:
    mine = queue.submit(stack("acme"), UP, spec={}, requested_by="a")
    theirs = queue.submit(stack("globex"), UP, spec={}, requested_by="a")
    queue.claim_next(worker_id="stopping")
    queue.claim_next(worker_id="other")
    after = queue.submit(stack("acme"), UP, spec={"v": 2}, requested_by="a")

    assert [op.id for op in queue.abandon("stopping", reason="Ctrl-C")] == [mine.id]
    assert queue.get(theirs.id).status is OperationStatus.running  # type: ignore[union-attr]
    assert queue.abandon("nobody", reason="x") == []
    assert not queue.was_interrupted(stack("globex"))
    claimed = queue.claim_next(worker_id="next")  # acme is free again; it is recovered first
    assert claimed is not None and claimed.id == after.id
    queue.clear_interrupted(stack("acme"))
    assert not queue.was_interrupted(stack("acme"))


def test_a_stopping_workers_operations_are_handed_back_and_their_stacks_flagged(queue: StoredQueue) -> None:
    mine = queue.submit(stack("acme"), UP, spec={}, requested_by="a")
    theirs = queue.submit(stack("beta"), UP, spec={}, requested_by="a")
    queue.claim_next(worker_id="stopping")
    queue.claim_next(worker_id="other")
    for operation in (mine, theirs):
        queue.mark_engine_started(operation.id)

    handed_back = queue.requeue_claimed("stopping", reason="the service stopped")

    assert [op.id for op in handed_back] == [mine.id]
    assert queue.get(mine.id).status is OperationStatus.queued  # type: ignore[union-attr]
    assert queue.get(theirs.id).status is OperationStatus.running  # type: ignore[union-attr]
    assert queue.was_interrupted(stack("acme")) and not queue.was_interrupted(stack("beta"))
    assert queue.events(mine.id)[-1].status == "requeued"
    assert queue.claim_next(worker_id="next").id == mine.id  # type: ignore[union-attr]


def test_handing_back_flags_only_the_stacks_pulumi_was_working_on(queue: StoredQueue) -> None:
    # One operation was in Pulumi, the other waiting for another update's lock (Pulumi refused it once:
    # marked, then unmarked): only the first stack is flagged for recovery, whether its worker stops
    # (requeue_claimed), gets Ctrl-C (abandon) or dies (the stale sweep, in another process, reads the
    # claims' record).
    settles: dict[str, Callable[[str], list[Operation]]] = {
        "requeue_claimed": lambda worker: queue.requeue_claimed(worker, reason="stopping"),
        "abandon": lambda worker: queue.abandon(worker, reason="Ctrl-C"),
        "requeue_interrupted": lambda _worker: queue.requeue_interrupted(),
    }
    for settle, handed_back in settles.items():
        running = queue.submit(stack(f"run-{settle}"), UP, spec={}, requested_by="a")
        waiting = queue.submit(stack(f"wait-{settle}"), UP, spec={}, requested_by="a")
        queue.claim_next(worker_id=settle, only={running.id})
        queue.claim_next(worker_id=settle, only={waiting.id})
        queue.mark_engine_started(running.id)
        queue.mark_engine_started(waiting.id)
        queue.mark_engine_started(waiting.id, started=False)

        settled = handed_back(settle)

        assert {op.id for op in settled} == {running.id, waiting.id}
        assert queue.was_interrupted(running.stack) and not queue.was_interrupted(waiting.stack)


def test_a_fresh_heartbeat_keeps_an_operation_from_being_requeued(queue: StoredQueue) -> None:
    operation = queue.submit(stack("acme"), UP, spec={}, requested_by="a")
    queue.claim_next(worker_id="alive")
    assert queue.requeue_interrupted(stale_after=60) == []
    time.sleep(0.05)
    assert [op.id for op in queue.requeue_interrupted(stale_after=0.01)] == [operation.id]
    queue.mark_interrupted(stack("globex"))
    assert queue.was_interrupted(stack("globex"))


def test_applied_ignores_previews_refreshes_and_other_environments(queue: StoredQueue) -> None:
    def run(target: StackRef, kind: OperationKind, status: OperationStatus) -> None:
        queue.submit(target, kind, spec=tenant_spec(target.tenant), requested_by="a")
        claimed = queue.claim_next(worker_id="w")
        assert claimed is not None
        queue.finish(claimed.id, status, OperationSummary(), worker_id="w")

    run(stack("acme"), PREVIEW, OperationStatus.succeeded)
    run(stack("acme", "prod"), UP, OperationStatus.succeeded)
    assert queue.applied("dev") == {}
    assert set(queue.applied("prod")) == {"acme"}
    assert queue.stacks() == [stack("acme"), stack("acme", "prod")]


def test_claims_from_many_clients_never_run_one_stack_twice(make_queue: QueueFactory) -> None:
    submitter = make_queue()
    submitted = [
        submitter.submit(stack(f"t{index % 4}"), kind, spec={"i": index}, requested_by="a")
        for index in range(24)
        for kind in (PREVIEW, UP)
    ]
    expected = {op.id for op in submitted if submitter.get(op.id).status is OperationStatus.queued}  # type: ignore[union-attr]
    runs: list[tuple[str, str, float, float]] = []
    lock = threading.Lock()

    def claim_loop(worker: str) -> None:
        client = make_queue()  # its own connection, like another replica
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            operation = client.claim_next(worker_id=worker)
            if operation is None:
                if all(submitter.get(i).status.finished for i in expected):  # type: ignore[union-attr]
                    return
                time.sleep(0.002)
                continue
            started = time.monotonic()
            time.sleep(0.002)
            ended = time.monotonic()
            client.finish(operation.id, OperationStatus.succeeded, OperationSummary(), worker_id=worker)
            with lock:
                runs.append((operation.id, operation.stack.tenant, started, ended))

    threads = [threading.Thread(target=claim_loop, args=(f"w{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)

    assert sorted(run[0] for run in runs) == sorted(expected)  # each claimed exactly once
    by_stack: dict[str, list[tuple[float, float]]] = {}
    for _, tenant, started, ended in runs:
        by_stack.setdefault(tenant, []).append((started, ended))
    for intervals in by_stack.values():
        intervals.sort()
        for (_, end), (start, _) in pairwise(intervals):
            assert start >= end  # never two at once on one stack


# --- SQLite only: several processes on one host share the file -------------------------------------


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


def test_sqlite_claims_are_exclusive_across_processes(tmp_path: Path) -> None:
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


def test_an_operation_keeps_the_tenant_incarnation_it_was_queued_for(queue: StoredQueue) -> None:
    tagged = queue.submit(stack("acme"), UP, spec={}, requested_by="a", incarnation="dev:abc123")
    untagged = queue.submit(stack("globex"), UP, spec={}, requested_by="a")

    assert queue.get(tagged.id).incarnation == "dev:abc123"  # type: ignore[union-attr]
    assert queue.get(untagged.id).incarnation is None  # type: ignore[union-attr]
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.incarnation == "dev:abc123"

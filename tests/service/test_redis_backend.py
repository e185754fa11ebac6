"""backend=redis: the queue, rate limits, API keys, idempotency and write locks in Redis (fakeredis),
behaving like the embedded default so replicas can share them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, OperationSummary, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.redis_queue import RedisOperationQueue
from tenancy.automation.worker import Worker
from tenancy.service.app import create_app
from tenancy.service.core.api_keys import RedisApiKeyStore
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.rate_limit import RedisRateLimiter
from tenancy.service.core.security import Role
from tenancy.service.core.tenants_repo import TenantRepository
from tenancy.service.core.write_lock import RedisWriteLock
from tests.service.conftest import Issuer, LiveServer, TenantEngine, settings_for, spec, wait_for

ACME = StackRef("dev", "acme")
BETA = StackRef("dev", "beta")


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path, redis: Any) -> Iterator[Any]:
    if request.param == "sqlite":
        sqlite = SqliteOperationQueue(tmp_path / "operations.sqlite3")
        yield sqlite
        sqlite.close()
    else:
        yield RedisOperationQueue(redis, prefix="test:")


def test_newer_submissions_supersede_older_queued_ones_of_the_same_kind(queue: Any) -> None:
    first = queue.submit(ACME, OperationKind.up, spec={"v": 1}, requested_by="a")
    preview = queue.submit(ACME, OperationKind.preview, spec={"v": 2}, requested_by="a")
    second = queue.submit(ACME, OperationKind.up, spec={"v": 3}, requested_by="a")
    other = queue.submit(BETA, OperationKind.up, spec={"v": 1}, requested_by="a")
    assert queue.get(first.id).status is OperationStatus.superseded
    assert queue.get(first.id).superseded_by == second.id
    assert queue.get(preview.id).status is OperationStatus.queued
    assert queue.get(other.id).status is OperationStatus.queued
    assert [op.id for op in queue.recent(stack=ACME)] == [second.id, preview.id, first.id]
    assert queue.last(BETA).id == other.id


def test_one_operation_runs_per_stack_and_stacks_in_parallel(queue: Any) -> None:
    a1 = queue.submit(ACME, OperationKind.up, spec={"v": 1}, requested_by="a")
    a2 = queue.submit(ACME, OperationKind.preview, spec={"v": 2}, requested_by="a")
    b1 = queue.submit(BETA, OperationKind.up, spec={"v": 1}, requested_by="a")
    assert queue.claim_next(worker_id="w1").id == a1.id
    assert queue.claim_next(worker_id="w2").id == b1.id
    assert queue.claim_next(worker_id="w3") is None  # acme's preview waits for acme's up
    queue.finish(a1.id, OperationStatus.succeeded, OperationSummary(changes={"create": 1}), worker_id="w1")
    assert queue.claim_next(worker_id="w3").id == a2.id


def test_events_are_numbered_and_readable_after_a_sequence(queue: Any) -> None:
    operation = queue.submit(ACME, OperationKind.up, spec={}, requested_by="a")
    for index in range(4):
        queue.add_event(operation.id, kind="resource", resource=f"r{index}", op="create", status="done")
    assert [e.seq for e in queue.events(operation.id)] == [1, 2, 3, 4]
    assert [e.resource for e in queue.events(operation.id, after_seq=2)] == ["r2", "r3"]


def test_operations_left_running_by_a_stopped_process_are_requeued(queue: Any) -> None:
    operation = queue.submit(ACME, OperationKind.up, spec={}, requested_by="a")
    queue.claim_next(worker_id="gone")
    assert queue.requeue_interrupted(stale_after=60) == []  # its heartbeat is fresh
    time.sleep(0.05)
    requeued = queue.requeue_interrupted(stale_after=0.01)
    assert [op.id for op in requeued] == [operation.id]
    assert queue.get(operation.id).status is OperationStatus.queued
    assert queue.was_interrupted(ACME)
    assert queue.events(operation.id)[-1].status == "requeued"


def test_a_worker_runs_a_redis_queue_to_the_end(redis: Any) -> None:
    queue = RedisOperationQueue(redis)
    engine = TenantEngine()
    ids = [
        queue.submit(StackRef("dev", f"t{i}"), OperationKind.up, spec={"i": i}, requested_by="a").id
        for i in range(6)
    ]
    finished = Worker(queue, engine, max_parallel=3).run_until_idle()
    assert {op.id for op in finished} == set(ids)
    assert all(queue.get(i).status is OperationStatus.succeeded for i in ids)
    assert max(engine.max_overlap_per_stack.values()) == 1


def test_claims_from_many_threads_never_run_one_stack_twice(redis: Any) -> None:
    queue = RedisOperationQueue(redis)
    for index in range(30):
        queue.submit(
            StackRef("dev", f"t{index % 3}"), OperationKind.refresh, spec=None, requested_by=f"{index}"
        )
        queue.submit(StackRef("dev", f"t{index % 3}"), OperationKind.up, spec={}, requested_by=f"{index}")
    engine = TenantEngine()
    workers = [Worker(queue, engine, max_parallel=2, worker_id=f"replica-{i}") for i in range(3)]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert max(engine.max_overlap_per_stack.values()) == 1
    assert all(op.status.finished for op in queue.recent(limit=200))


def test_rate_limits_are_shared_through_redis(redis: Any) -> None:
    replica_a = RedisRateLimiter(redis, prefix="t:", limit=3, window_seconds=60)
    replica_b = RedisRateLimiter(redis, prefix="t:", limit=3, window_seconds=60)
    decisions = [
        replica_a.hit("user:x").allowed,
        replica_b.hit("user:x").allowed,
        replica_a.hit("user:x").allowed,
    ]
    assert decisions == [True, True, True]
    assert replica_b.hit("user:x").allowed is False
    assert replica_b.hit("user:y").allowed is True


def test_api_keys_in_redis_are_hashed_scoped_and_revocable(redis: Any) -> None:
    store = RedisApiKeyStore(redis, prefix="t:")
    record, key = store.create(
        tenant="acme", role=Role.admin, name="ci", created_by="u", expires_at=time.time() + 60
    )
    assert store.authenticate(key) == record
    assert all(key.encode() not in (redis.dump(k) or b"") for k in redis.keys("*"))
    assert store.revoke("beta", record.id) is None  # another tenant's admin cannot revoke it
    assert store.revoke("acme", record.id) is not None
    assert store.authenticate(key) is None


def test_the_redis_write_lock_serializes_writers(tmp_path: Path, redis: Any) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    lock = RedisWriteLock(repository, redis, prefix="t:")
    inside = []
    overlap = []

    def writer() -> None:
        with lock.hold(ACME):
            inside.append(1)
            overlap.append(len(inside))
            time.sleep(0.01)
            inside.pop()

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(overlap) == 1
    assert redis.get("t:write-lock:dev.acme") is None


def test_the_service_runs_on_redis(tmp_path: Path, redis: Any, issuer: Issuer) -> None:
    settings = settings_for(tmp_path / "state", issuer, backend="redis", redis_url="redis://unused:6379/0")
    engine = TenantEngine()
    app = create_app(settings, engine=engine, redis=redis)
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        headers = {"Idempotency-Key": "one"}
        accepted = client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme"), headers=headers)
        replayed = client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme"), headers=headers)
        assert replayed.json() == accepted.json()
        assert wait_for(client, accepted.json()["operation"]["id"])["status"] == "succeeded"
        key = client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}).json()["key"]
    assert redis.exists(f"tenancy:op:{accepted.json()['operation']['id']}")
    assert RedisApiKeyStore(redis, prefix="tenancy:").authenticate(key) is not None


def test_backend_redis_needs_an_address() -> None:
    with pytest.raises(ValueError, match="REDIS_SENTINELS"):
        ServiceSettings(backend="redis")


def test_sentinel_addresses_come_from_a_comma_separated_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_SERVICE_BACKEND", "redis")
    monkeypatch.setenv(
        "TENANCY_SERVICE_REDIS_SENTINELS", "redis-ha.redis.svc:26379, redis-ha-announce-1.redis.svc:26379"
    )
    settings = ServiceSettings()
    assert settings.redis_sentinels == ("redis-ha.redis.svc:26379", "redis-ha-announce-1.redis.svc:26379")
    assert settings.redis_master == "mymaster"


def test_a_destroy_runs_after_the_up_queued_before_it(queue: Any) -> None:
    unprotect = queue.submit(ACME, OperationKind.up, spec={"deletionProtection": False}, requested_by="a")
    destroy = queue.submit(ACME, OperationKind.destroy, spec=None, requested_by="a")
    assert queue.get(unprotect.id).status is OperationStatus.queued
    order = []
    while (claimed := queue.claim_next(worker_id="w")) is not None:
        order.append(claimed.id)
        queue.finish(claimed.id, OperationStatus.succeeded, OperationSummary(), worker_id="w")
    assert order == [unprotect.id, destroy.id]


def test_a_stopping_workers_operations_are_handed_back_and_their_stacks_flagged(queue: Any) -> None:
    mine = queue.submit(ACME, OperationKind.up, spec={}, requested_by="a")
    theirs = queue.submit(BETA, OperationKind.up, spec={}, requested_by="a")
    queue.claim_next(worker_id="stopping")
    queue.claim_next(worker_id="other")

    handed_back = queue.requeue_claimed("stopping", reason="the service stopped")

    assert [op.id for op in handed_back] == [mine.id]
    assert queue.get(mine.id).status is OperationStatus.queued
    assert queue.get(theirs.id).status is OperationStatus.running
    assert queue.was_interrupted(ACME) and not queue.was_interrupted(BETA)
    assert queue.events(mine.id)[-1].status == "requeued"
    assert queue.claim_next(worker_id="next").id == mine.id


def test_the_redis_write_lock_is_renewed_while_a_slow_write_holds_it(tmp_path: Path, redis: Any) -> None:
    replicas = []
    for index in range(2):
        repository = TenantRepository(tmp_path / f"repo-{index}")
        repository.ensure()
        replicas.append(RedisWriteLock(repository, redis, prefix="t:", ttl_seconds=0.3, wait_seconds=5))
    held: list[tuple[str, float, float]] = []

    def write(index: int, seconds: float) -> None:
        with replicas[index].hold(ACME):
            started = time.monotonic()
            time.sleep(seconds)  # git pushing and retrying, longer than the lock's expiry
            held.append((f"replica-{index}", started, time.monotonic()))

    slow = threading.Thread(target=write, args=(0, 1.0))
    slow.start()
    time.sleep(0.1)
    write(1, 0.01)
    slow.join()
    (first, _, first_end), (second, second_start, _) = sorted(held, key=lambda h: h[1])
    assert (first, second) == ("replica-0", "replica-1")
    assert second_start >= first_end  # never both inside at once
    assert redis.get("t:write-lock:dev.acme") is None

"""backend=redis: the queue, rate limits, API keys, idempotency and write locks in Redis (fakeredis),
behaving like the embedded default so replicas can share them. Every queue behaviour is checked
against both backends in tests/automation/test_queue_conformance.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef, SubmitRequest
from tenancy.automation.redis_queue import RedisOperationQueue
from tenancy.automation.worker import Worker
from tenancy.service.app import create_app
from tenancy.service.core import write_lock
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


def test_while_redis_is_away_requests_answer_503_and_a_lost_write_lock_hides_no_error(
    tmp_path: Path, issuer: Issuer
) -> None:
    """Found by an outside review of replicas on a real Redis: during an outage every request, reads
    included, answered 500 internal_error (the rate limiter failed first); and a write whose lock could
    not be released answered 500 instead of its own outcome."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    settings = settings_for(tmp_path / "state", issuer, backend="redis", redis_url="redis://unused:6379/0")
    app = create_app(settings, engine=TenantEngine(), redis=redis)
    with LiveServer(app) as live, live.client(issuer.admin_of("acme")) as client:
        assert client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme")).status_code == 202
        server.connected = False
        try:
            read = client.get("/api/v1/environments/dev/tenants/acme")
        finally:
            server.connected = True
    assert read.status_code == 503, read.text
    assert read.json()["error"]["code"] == "service_unavailable" and read.headers["Retry-After"] == "5"

    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    lock = RedisWriteLock(repository, redis, prefix="t:")
    with pytest.raises(ValueError, match="the write's own error"), lock.hold(ACME):
        server.connected = False  # Redis goes away while the write holds the lock
        raise ValueError("the write's own error")
    server.connected = True


def test_a_write_lock_whose_release_was_lost_in_an_outage_is_released_once_redis_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left open by the last review: the release lost in a Redis blip left the tenant locked for the
    lock's whole expiry (120 s of tenant_busy) although Redis was back a second later."""
    monkeypatch.setattr(write_lock, "RELEASE_RETRY_SECONDS", 0.05)
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    lock = RedisWriteLock(repository, redis, prefix="t:", wait_seconds=0.1)
    with lock.hold(ACME):
        server.connected = False  # the release at the end of the write fails
    time.sleep(0.2)
    server.connected = True  # back
    deadline = time.monotonic() + 5
    while redis.get("t:write-lock:dev.acme") is not None:
        assert time.monotonic() < deadline, "the lock stayed until its expiry"
        time.sleep(0.02)
    with lock.hold(ACME):  # the next write takes it at once
        pass


def test_a_tenant_held_by_another_replica_answers_tenant_busy_not_a_repository_fault(
    tmp_path: Path, redis: Any, issuer: Issuer
) -> None:
    """Found by an outside review of replicas: a tenant whose write lock a killed replica left behind
    answered 503 repository_unavailable, "could not be recorded in the tenants repository", for up to
    two minutes; the repository was fine."""
    settings = settings_for(tmp_path / "state", issuer, backend="redis", redis_url="redis://unused:6379/0")
    app = create_app(settings, engine=TenantEngine(), redis=redis)
    with LiveServer(app) as live, live.client(issuer.admin_of("acme")) as client:
        assert client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme")).status_code == 202
        app.state.backends.changes.write_lock._wait_seconds = 0.2
        redis.set("tenancy:write-lock:dev.acme", "a-replica-that-died", px=60_000)
        busy = client.patch("/api/v1/environments/dev/tenants/acme", json={"displayName": "Acme"})
        # Filing a change request takes the same lock (it answered 500: review of this fix).
        filing = client.post(
            "/api/v1/environments/dev/tenants/acme/change-requests",
            json={
                "patch": {
                    "plan": "medium",
                    "qdrant": {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}},
                },
                "reason": "more traffic",
            },
        )
    assert filing.status_code == 503 and filing.json()["error"]["code"] == "tenant_busy", filing.text
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "tenant_busy" and busy.headers["Retry-After"] == "5"
    assert "lock expires within 120 s" in busy.json()["error"]["message"]


def test_a_submit_whose_exec_answer_was_lost_is_not_planned_again(
    redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside review of group submits, on a real Redis through a proxy: Redis ran the transaction but
    its answer was lost (a timeout, a reset, a failover), redis-py reported a WatchError, and the
    retry planned the group again: each operation found itself queued and superseded itself, so the
    writers were told "queued" while nothing would run."""
    from redis.client import Pipeline
    from redis.exceptions import WatchError

    queue = RedisOperationQueue(redis, prefix="t:")
    older = queue.submit(ACME, OperationKind.up, spec={"n": 0}, requested_by="a")
    execute = Pipeline.execute
    lost: list[bool] = []

    def answer_lost(self: Any, *args: Any, **kwargs: Any) -> Any:
        transaction = self.explicit_transaction  # MULTI was sent: this is the EXEC (not a batch of reads)
        result = execute(self, *args, **kwargs)
        if transaction and not lost:
            lost.append(True)
            raise WatchError("Watched variable changed.")  # what redis-py says for a lost EXEC reply
        return result

    monkeypatch.setattr(Pipeline, "execute", answer_lost)
    newer = queue.submit_in_order(
        [
            SubmitRequest(ACME, OperationKind.up, {"n": 1}, "b"),
            SubmitRequest(BETA, OperationKind.up, {"n": 2}, "c"),
        ]
    )
    assert lost == [True]
    stored = [queue.get(operation.id) for operation in newer]
    assert [operation.status for operation in stored if operation] == [OperationStatus.queued] * 2
    assert all(operation and operation.superseded_by is None for operation in stored)
    replaced = queue.get(older.id)
    assert replaced is not None and replaced.superseded_by == newer[0].id


def test_a_submit_placed_later_but_stored_first_is_not_superseded_by_the_earlier_one(redis: Any) -> None:
    """Outside review of group submits: places are taken before the transaction, so a submit placed
    later could be stored first; the earlier one then superseded it and kept its earlier place, and
    an older spec could win. It supersedes only what was placed before it: both stay queued, in the
    order of their places, and the later one runs last."""
    queue = RedisOperationQueue(redis, prefix="t:")
    transaction = queue._transaction
    later: list[Any] = []

    def another_submit_stored_first(watched: list[str], body: Any) -> Any:
        if not later:
            later.append(None)  # this call's place is taken; another submitter overtakes it now
            later[0] = queue.submit(ACME, OperationKind.up, spec={"n": "later"}, requested_by="b")
        return transaction(watched, body)

    queue._transaction = another_submit_stored_first  # type: ignore[method-assign]
    earlier = queue.submit(ACME, OperationKind.up, spec={"n": "earlier"}, requested_by="a")
    queue._transaction = transaction  # type: ignore[method-assign]
    stored_later = queue.get(later[0].id)
    assert stored_later is not None and stored_later.status is OperationStatus.queued
    assert [op.spec["n"] for op in queue.recent(stack=ACME) if op.spec] == ["later", "earlier"]
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == earlier.id  # the earlier place runs first

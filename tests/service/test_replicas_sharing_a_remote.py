"""Several replicas, each with its own checkout of one tenants remote: what one replica commits is
readable on the others without them writing first, and an API key made on one works on the others."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
from fastapi import FastAPI

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.service.app import create_app
from tenancy.service.core.tenants_repo import TenantRepository
from tests.service.conftest import (
    Issuer,
    LiveServer,
    TenantEngine,
    settings_for,
    spec,
    write_on_first_read,
)

NEWCO = "/api/v1/environments/dev/tenants/newco"


def _remote(tmp_path: Path) -> str:
    origin = TenantRepository(tmp_path / "origin")
    origin.ensure()
    remote = tmp_path / "tenants.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(origin.root), str(remote)], check=True)
    return str(remote)


def _replica(tmp_path: Path, name: str, issuer: Issuer, remote: str, redis: Any, **settings: Any) -> FastAPI:
    return create_app(
        settings_for(
            tmp_path / name,
            issuer,
            workers=0,
            git_remote=remote,
            backend="redis",
            redis_url="redis://unused:6379/0",
            **settings,
        ),
        engine=TenantEngine(),
        redis=redis,
    )


def test_a_tenant_created_on_one_replica_is_readable_on_another(
    tmp_path: Path, serve: Any, issuer: Issuer
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())  # keys and queue shared, as in production
    replica_a: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis))
    replica_b: LiveServer = serve(_replica(tmp_path, "b", issuer, remote, redis, git_refresh_seconds=0))
    token = issuer.admin_of("newco")
    with replica_b.client(token) as b:
        assert b.get(NEWCO).status_code == 404  # B has read its checkout before the tenant exists
    with replica_a.client(token) as a:
        assert a.put(NEWCO, json=spec("newco")).status_code == 202
        key = a.post("/api/v1/tenants/newco/api-keys", json={"name": "ci"}).json()["key"]
        etag = a.get(NEWCO).json()["etag"]
    with replica_b.client(token) as b:
        read = b.get(NEWCO)
        listed = [t["name"] for t in b.get("/api/v1/tenants").json()["tenants"]]
    assert read.status_code == 200 and read.json()["etag"] == etag
    assert listed == ["newco"]
    with replica_b.client(key) as machine:
        assert machine.get(NEWCO).status_code == 200


def test_a_write_racing_a_merged_pull_request_on_its_file_answers_409_and_readiness_holds(
    tmp_path: Path, serve: Any, issuer: Issuer, monkeypatch: Any
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    replica: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis, git_refresh_seconds=0))
    repository = replica.app.state.backends.repository
    with replica.client(issuer.admin_of("newco")) as client:
        assert client.put(NEWCO, json=spec("newco")).status_code == 202
        head = repository.head()
        # A pull request changing the same file is merged after the service read the tenant and before
        # it pushed its own commit: the push is refused, and the rebuilt commit no longer applies.
        person = tmp_path / "person"
        subprocess.run(["git", "clone", "--quiet", remote, str(person)], check=True)
        publish = repository._publish

        def merged_meanwhile(change: Any) -> None:
            file = person / "tenants" / "dev" / "newco.yaml"
            file.write_text(file.read_text() + "displayName: from a pull request\n")
            for command in (
                ["add", "-A"],
                ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", "PR"],
                ["push", "-q", "origin", "HEAD:main"],
            ):
                subprocess.run(["git", "-C", str(person), *command], check=True)
            monkeypatch.setattr(repository, "_publish", publish)  # once
            publish(change)

        monkeypatch.setattr(repository, "_publish", merged_meanwhile)
        answer = client.patch(NEWCO, json={"displayName": "from the API"})
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {
            "code": "conflict_with_repository",
            "message": "dev.newco changed in the tenants repository while this change was being written (a "
            "merged pull request or another replica); nothing was committed or queued: read the tenant "
            "again and repeat the change on top of what it is now",
        }
        assert client.get("/readyz").status_code == 200  # a lost race is no fault of the repository
        read = client.get(NEWCO).json()
        assert read["spec"]["displayName"] == "from a pull request"
        assert repository.head() != head  # the merged commit, and nothing of the refused write
        assert repository.history("dev", "newco")[0].subject == "PR"
        retried = client.patch(
            NEWCO, json={"displayName": "from the API"}, headers={"If-Match": read["etag"]}
        )
        assert retried.status_code == 202, retried.text


def test_replicas_take_turns_pushing_so_a_group_s_push_is_never_refused(tmp_path: Path) -> None:
    """Found by an outside review of three replicas on a real Redis: replicas pushing at once kept
    refusing each other, and a few writes in a hundred gave up after the attempts a group has ("kept
    moving"). With a turn in Redis a group's push was refused at most once, when its replica had not yet
    fetched what the one before pushed; the turn now also says what that was, so the replica fetches
    before it builds and its push is never refused."""

    from tenancy.service.core import tenants_repo
    from tenancy.service.core.tenants_repo import GitAuthor
    from tenancy.service.core.write_lock import RedisPushTurn

    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    replicas = []
    for name in ("a", "b", "c"):
        replica = TenantRepository(tmp_path / name, remote=remote)
        replica.ensure()
        replica.push_turn = RedisPushTurn(redis, prefix="t:")
        replicas.append(replica)
    refused_in_group: list[int] = []  # per group published, how often its push was refused
    group = threading.local()
    push = tenants_repo.TenantRepository._push
    commit_group = tenants_repo.TenantRepository._commit_group_locked

    def counting_push(self: TenantRepository, tip: Any) -> None:
        try:
            push(self, tip)
        except tenants_repo._Moved:
            group.refused += 1
            raise

    def counting_group(self: TenantRepository, changes: Any, **kwargs: Any) -> None:
        group.refused = 0
        try:
            commit_group(self, changes, **kwargs)
        finally:
            refused_in_group.append(group.refused)

    failures: list[BaseException] = []

    def writer(replica: TenantRepository, index: int) -> None:
        for round_ in range(6):
            try:
                replica.write(
                    "dev",
                    f"t{index}",
                    {"name": f"t{index}", "n": round_},
                    author=GitAuthor("Writer", "w@example.com"),
                    message=f"write {round_}",
                )
            except BaseException as error:
                failures.append(error)

    tenants_repo.TenantRepository._push = counting_push  # type: ignore[method-assign]
    tenants_repo.TenantRepository._commit_group_locked = counting_group  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=writer, args=(replicas[i % 3], i)) for i in range(9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        tenants_repo.TenantRepository._push = push  # type: ignore[method-assign]
        tenants_repo.TenantRepository._commit_group_locked = commit_group  # type: ignore[method-assign]
    assert failures == []
    assert refused_in_group and max(refused_in_group) == 0, refused_in_group


def test_a_change_one_replica_could_not_queue_is_queued_by_another_s_running_reconcile(
    tmp_path: Path, serve: Any, issuer: Issuer, monkeypatch: Any
) -> None:
    """Redis fails replica A's submit after A pushed its commit (answered 503 engine_unavailable): the
    replicas kept running and nothing queued it until a restart. Replica B's running reconcile, under
    the tenant's write lock in Redis and on a fresh fetch of the remote, queues it once."""
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    replica_a: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis))
    serve(_replica(tmp_path, "b", issuer, remote, redis, reconcile_seconds=0.2))  # both running
    queue_a = replica_a.app.state.backends.queue
    with replica_a.client(issuer.admin_of("newco")) as a:
        assert a.put(NEWCO, json=spec("newco")).status_code == 202

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("Error 111 connecting to redis-ha.redis.svc:6379. Connection refused.")

        monkeypatch.setattr(queue_a, "submit", unreachable)
        monkeypatch.setattr(queue_a, "submit_in_order", unreachable)
        answer = a.patch(NEWCO, json={"displayName": "pushed, never queued"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_unavailable"
        monkeypatch.undo()

    stack = StackRef("dev", "newco")

    def updates() -> list[Any]:
        return [op for op in queue_a.recent(stack=stack) if op.kind is OperationKind.up]

    deadline = time.monotonic() + 10
    while len(updates()) < 2:
        assert time.monotonic() < deadline, "no replica queued the change"
        time.sleep(0.05)
    newest = updates()[0]
    assert newest.requested_by == "tenant-api:reconcile"
    assert newest.spec is not None and newest.spec["displayName"] == "pushed, never queued"
    time.sleep(0.6)
    assert len(updates()) == 2  # queued once


def test_a_replica_starting_while_another_writes_a_tenant_never_queues_an_older_spec_after_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A rolling restart starts a replica while others serve. Its start-up reconcile held only its own
    checkout's lock: it read a tenant's file, another replica committed and queued a newer spec (under
    the Redis write lock), and the reconcile then queued the older one after it, so the stack would
    end with a spec git no longer has. It now holds the Redis write lock, and reads on a fresh fetch."""
    from tenancy.automation.queue import SqliteOperationQueue
    from tenancy.service.core.reconcile import queue_unapplied_changes
    from tenancy.service.core.tenants_repo import GitAuthor
    from tenancy.service.core.write_lock import RedisWriteLock
    from tenancy.spec.tenant import parse_tenant

    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")  # shared, as Redis's would be
    serving, starting = (TenantRepository(tmp_path / name, remote=remote) for name in ("a", "b"))
    for replica in (serving, starting):
        replica.ensure()
    stack, author = StackRef("dev", "newco"), GitAuthor("A", "a@example.com")

    def document(display_name: str) -> dict[str, Any]:
        return parse_tenant(
            spec("newco", displayName=display_name), file="tenants/dev/newco.yaml"
        ).to_document()

    serving.write("dev", "newco", document("never queued"), author=author, message="Update")
    newer = document("newer")
    writing = RedisWriteLock(serving, redis, prefix="t:")

    def another_replica_writes() -> None:
        with writing.hold(stack):
            serving.sync()
            serving.write("dev", "newco", newer, author=author, message="Update")
            queue.submit(stack, OperationKind.up, spec=newer, requested_by="replica-a")

    starting.sync()  # it has fetched the change never queued
    writer = write_on_first_read(starting, monkeypatch, another_replica_writes, wait=5)
    queue_unapplied_changes(starting, queue, hold=RedisWriteLock(starting, redis, prefix="t:").hold)
    writer.join(10)
    ups = [op for op in queue.recent(stack=stack) if op.kind is OperationKind.up]
    assert ups[0].spec == newer, [op.spec["displayName"] for op in ups if op.spec]  # last in line: git's
    queue.close()

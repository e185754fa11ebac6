"""Writers of one tenant share flush rounds (early lock release, ``TenantRepository.turn``): the next
writer builds on a change that is not flushed yet, and every writer is answered only once its change
and every one before it are flushed and queued. What must hold whatever the interleaving: one commit
per change under its author, each built on the one before (no update lost), the queue's operations of
the tenant in commit order with the spec of their commit, and every ETag answered that of a commit the
branch holds. Within one process, and with two processes sharing the checkout and the queue (which
take the tenant in turns: nothing is pipelined across them)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pygit2
import pytest
import yaml

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.redis_queue import RedisOperationQueue
from tenancy.service.core import durable
from tenancy.service.core.errors import ERROR_CODES, ServiceError
from tenancy.service.core.security import Principal
from tenancy.service.core.tenant_changes import ChangeResult, TenantChanges
from tenancy.service.core.tenants_repo import TenantRepository, etag_of
from tenancy.service.core.write_lock import LocalWriteLock
from tests.conftest import PROJECT_DIR

ACME = StackRef("dev", "acme")
ADMIN = Principal("root", "root", "root@x.example", "user", platform_admin=True)


def open_changes(root: Path, queue_path: Path) -> tuple[TenantChanges, SqliteOperationQueue]:
    repository = TenantRepository(root)
    repository.ensure()
    queue = SqliteOperationQueue(queue_path)
    return TenantChanges(repository=repository, queue=queue, write_lock=LocalWriteLock(repository)), queue


def writer(index: int) -> Principal:
    return Principal(f"w{index}", f"w{index}", f"w{index}@x.example", "user", platform_admin=True)


def history(root: Path) -> list[tuple[str, str, dict[str, object]]]:
    """(commit, author email, document) of every commit of acme's file, oldest first (other tenants'
    commits skipped)."""
    repo = pygit2.Repository(str(root / ".git"))
    found = []
    for commit in repo.walk(repo.head.target):
        try:
            blob = commit.tree["tenants/dev/acme.yaml"]
        except KeyError:
            break
        parent = commit.parents[0].tree if commit.parents else None
        if (
            parent is not None
            and "tenants/dev/acme.yaml" in parent
            and blob.id == parent["tenants/dev/acme.yaml"].id
        ):
            assert commit.tree.id != parent.id, "a commit that changes nothing"
            assert len(commit.parents) == 1
            continue  # another tenant's commit
        found.append((str(commit.id), commit.author.email, yaml.safe_load(blob.data)))  # type: ignore[attr-defined]
        assert len(commit.parents) == 1
    return found[::-1]


def patch_acme(
    changes: TenantChanges, index: int, name: str, acknowledged: dict[str, tuple[str, str, str]]
) -> ChangeResult:
    """Writer ``index`` sets acme's displayName to ``name``; recorded in ``acknowledged`` for
    ``check_order`` (its commit, ETag and author)."""
    result = changes.patch(ACME, {"displayName": name}, writer(index), if_match=None)
    assert result.commit is not None and result.etag is not None
    acknowledged[name] = (result.commit, result.etag, f"w{index}@x.example")
    return result


def check_order(
    root: Path, queue: SqliteOperationQueue, acknowledged: dict[str, tuple[str, str, str]]
) -> None:
    """Every acknowledged write is one commit under its author and one operation, and the queue's
    operations of acme are exactly the commits, in commit order, each with its commit's spec."""
    commits = history(root)[1:]  # after the create
    names = [document["displayName"] for _, _, document in commits]
    assert sorted(names) == sorted(acknowledged)  # one commit per acknowledged change, none lost
    for sha, email, document in commits:
        name = str(document["displayName"])
        commit, etag, author = acknowledged[name]
        assert (commit, email) == (sha, author)
        text = subprocess.run(
            ["git", "show", f"{sha}:tenants/dev/acme.yaml"], cwd=root, capture_output=True, text=True
        ).stdout
        assert etag == etag_of(text)  # the ETag answered is that of the commit, which the branch holds
    operations = [
        operation
        for operation in reversed(queue.recent(stack=ACME, limit=10_000))
        if operation.kind is OperationKind.up
    ][1:]
    assert [operation.spec["displayName"] for operation in operations] == names  # type: ignore[index]


def test_concurrent_patches_of_one_tenant_are_committed_and_queued_in_one_order(tmp_path: Path) -> None:
    changes, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")
    changes.replace(
        ACME, {"owners": ["a@x.example"], "plan": "small", "displayName": "start"}, ADMIN, if_match=None
    )
    acknowledged: dict[str, tuple[str, str, str]] = {}

    def patch(index: int) -> None:
        for round_ in range(5):
            patch_acme(changes, index, f"w{index}-{round_}", acknowledged)

    threads = [threading.Thread(target=patch, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(acknowledged) == 40
    check_order(tmp_path / "repo", queue, acknowledged)
    queue.close()


def test_a_group_s_operations_are_queued_by_its_publisher_in_one_transaction_before_any_writer_wakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#11: a write went through a second group round after its commit's (a thread per writer woken,
    then each submitting, grouped again). Whoever publishes a group now queues its operations right
    after moving the branch, in commit order, in one transaction: no writer submits its own, and
    concurrent writers share transactions. Order and specs as ``check_order`` requires."""
    changes, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")
    changes.replace(
        ACME, {"owners": ["a@x.example"], "plan": "small", "displayName": "start"}, ADMIN, if_match=None
    )
    others = [StackRef("dev", f"t{index}") for index in range(6)]
    for other in others:
        changes.replace(other, {"owners": ["a@x.example"], "plan": "small"}, ADMIN, if_match=None)

    def no_writer_submits(*args: object, **kwargs: object) -> None:
        raise AssertionError("a writer queued its own operation")

    transactions: list[int] = []
    submit_in_order = queue.submit_in_order

    def counted(requests: list[object]) -> object:
        transactions.append(len(requests))
        return submit_in_order(requests)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "submit", no_writer_submits)
    monkeypatch.setattr(queue, "submit_in_order", counted)
    acknowledged: dict[str, tuple[str, str, str]] = {}
    operations: list[str] = []

    def patch(index: int) -> None:
        for round_ in range(5):
            name = f"w{index}-{round_}"
            result = patch_acme(changes, index, name, acknowledged)
            other = changes.patch(others[index], {"displayName": name}, writer(index), if_match=None)
            operations.extend([result.operation.id, other.operation.id])

    threads = [threading.Thread(target=patch, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(acknowledged) == 30 and sum(transactions) == 60
    assert len(transactions) < 60, "every write had a transaction of its own"
    assert all(queue.get(operation) is not None for operation in operations)
    check_order(tmp_path / "repo", queue, acknowledged)
    queue.close()


def test_a_publisher_that_cannot_follow_up_tells_its_writers_their_change_was_not_queued(
    tmp_path: Path,
) -> None:
    """If the group's follow-up breaks (a bug), its writers say their change is committed but not
    queued, for the running reconcile or a repeat to queue: queueing it afterwards, out of the group's
    round, could put it after a later change of the tenant queued with a later group (outside review)."""
    changes, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")

    def broken(follow_ups: list[tuple[object, str]]) -> None:
        raise KeyError("a bug")

    changes.repository.after_publish = broken
    with pytest.raises(ServiceError) as refused:
        changes.replace(ACME, {"owners": ["a@x.example"], "plan": "small"}, ADMIN, if_match=None)
    assert refused.value.code == "engine_unavailable" and "was not queued" in refused.value.message
    assert changes.repository.read("dev", "acme") is not None and queue.recent() == []
    queue.close()


def _in_one_group(changes: TenantChanges, *writes: Callable[[], object]) -> None:
    """Run ``writes`` in threads, one after the other, while the commit lock is held, so the changes
    they place are published in one group (the common case under load)."""
    lock = changes.repository._commit_lock
    threads = []
    with lock:
        for write in writes:
            thread = threading.Thread(target=write)
            thread.start()
            threads.append(thread)
            time.sleep(0.3)
    for thread in threads:
        thread.join(30)


def test_an_unchanged_write_between_two_changes_is_queued_in_commit_order(tmp_path: Path) -> None:
    """Found by the review of the publisher's queueing: writers Z (S1), A (S1 again: no commit) and B
    (S2) of one tenant; Z's and B's operations were queued with their group, then A's own, which
    superseded B's: the stack would apply S1 while git holds S2. A writer with no commit now holds
    the tenant until its operation is queued."""
    changes, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")
    changes.replace(
        ACME, {"owners": ["a@x.example"], "plan": "small", "displayName": "S0"}, ADMIN, if_match=None
    )

    def patch(name: str) -> Callable[[], object]:
        return lambda: changes.patch(ACME, {"displayName": name}, ADMIN, if_match=None)

    _in_one_group(changes, patch("S1"), patch("S1"), patch("S2"))
    ups = [op for op in queue.recent(stack=ACME) if op.kind is OperationKind.up]
    assert changes.repository.read("dev", "acme")["displayName"] == "S2"  # type: ignore[index]
    assert [op.spec["displayName"] for op in ups if op.spec] == ["S2", "S1", "S1", "S0"]
    assert ups[0].status.value == "queued"  # the last in line applies what git holds
    queue.close()


def test_with_redis_a_group_s_operations_are_queued_in_one_transaction_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the publisher's queueing: with Redis the group was queued one submit after another
    (several round trips each, while the process's next group waited), and a failure part way left
    some queued and told every writer none was. It is one transaction: one place-taking INCRBY and
    one WATCH/MULTI for the group; when it fails, none is queued and every writer says so."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    queue = RedisOperationQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), prefix="t:")
    changes = TenantChanges(repository=repository, queue=queue, write_lock=LocalWriteLock(repository))
    stacks = [StackRef("dev", name) for name in ("acme", "beta", "gamma")]
    for stack in stacks:
        changes.replace(stack, {"owners": ["a@x.example"], "plan": "small"}, ADMIN, if_match=None)
    transactions: list[int] = []
    transaction = queue._transaction

    def counted(watched: list[str], body: Callable[[object], object]) -> object:
        transactions.append(len(watched))
        return transaction(watched, body)

    monkeypatch.setattr(queue, "_transaction", counted)
    answers: dict[str, object] = {}

    def patch(stack: StackRef, name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                answers[stack.tenant] = changes.patch(stack, {"displayName": name}, ADMIN, if_match=None)
            except ServiceError as error:
                answers[stack.tenant] = error

        return run

    _in_one_group(changes, *(patch(stack, "one") for stack in stacks))
    assert transactions == [3]  # one transaction, watching the three stacks' queues
    assert all(queue.recent(stack=stack, limit=1)[0].spec["displayName"] == "one" for stack in stacks)

    def unreachable(watched: list[str], body: Callable[[object], object]) -> object:
        raise ConnectionError("Connection reset by peer")

    monkeypatch.setattr(queue, "_transaction", unreachable)
    answers.clear()
    _in_one_group(changes, *(patch(stack, "two") for stack in stacks))
    for stack in stacks:
        refused = answers[stack.tenant]
        assert isinstance(refused, ServiceError) and refused.code == "engine_unavailable"
        assert queue.recent(stack=stack, limit=1)[0].spec["displayName"] == "one"  # none queued


def test_the_publisher_runs_no_git_process_under_the_commit_lock(tmp_path: Path) -> None:
    """Review of the publisher's queueing: looking up a tenant's creating commit on a cold cache is a
    ``git log`` of the whole history (seconds on a long one); the publisher did it for each tenant of
    its group while every writer of every process waited for the commit lock."""
    first, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")
    first.replace(ACME, {"owners": ["a@x.example"], "plan": "small"}, ADMIN, if_match=None)
    repository = TenantRepository(tmp_path / "repo")  # another process: a cold creation cache
    changes = TenantChanges(repository=repository, queue=queue, write_lock=LocalWriteLock(repository))
    run, ran = repository._run, []

    def watched(*args: Any, **kwargs: Any) -> Any:
        ran.append((args[0], repository._commit_depth > 0))
        return run(*args, **kwargs)

    repository._run = watched  # type: ignore[method-assign]
    changes.patch(ACME, {"displayName": "x"}, ADMIN, if_match=None)
    assert ("log", True) not in ran, ran
    queue.close()


PROCESS = """
import json, sys, threading
from pathlib import Path
from tenancy.automation.contract import StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core import durable
from tenancy.service.core.errors import ERROR_CODES, ServiceError
from tenancy.service.core.security import Principal
from tenancy.service.core.tenant_changes import TenantChanges
from tenancy.service.core.tenants_repo import TenantRepository
from tenancy.service.core.write_lock import LocalWriteLock
root, queue_path, process = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
repository = TenantRepository(root)
queue = SqliteOperationQueue(queue_path)
changes = TenantChanges(repository=repository, queue=queue, write_lock=LocalWriteLock(repository))
lock = threading.Lock()
def patch(index):
    principal = Principal(f"w{index}", f"w{index}", f"w{index}@x.example", "user", platform_admin=True)
    for round_ in range(6):
        name = f"p{process}-w{index}-{round_}"
        result = changes.patch(StackRef("dev", "acme"), {"displayName": name}, principal, if_match=None)
        with lock:
            print(json.dumps([name, result.commit, result.etag, f"w{index}@x.example"]), flush=True)
threads = [threading.Thread(target=patch, args=(index,)) for index in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
queue.close()
"""


def test_two_processes_sharing_the_checkout_take_one_tenant_in_turns(tmp_path: Path) -> None:
    """Each process pipelines its own writers; across processes the tenant's flock is held until a
    process's writes of it are flushed and queued, so the other reads them before it writes."""
    root, queue_path = tmp_path / "repo", tmp_path / "queue.sqlite3"
    changes, queue = open_changes(root, queue_path)
    changes.replace(
        ACME, {"owners": ["a@x.example"], "plan": "small", "displayName": "start"}, ADMIN, if_match=None
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(root), str(queue_path), str(number)],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        for number in (1, 2)
    ]
    acknowledged: dict[str, tuple[str, str, str]] = {}
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        for line in output.splitlines():
            name, commit, etag, author = json.loads(line)
            acknowledged[name] = (commit, etag, author)
    assert len(acknowledged) == 48
    check_order(root, queue, acknowledged)
    queue.close()


def test_patches_built_on_a_change_whose_flush_fails_answer_503_and_nothing_is_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first PATCH is held at its first flush; a second PATCH builds on it, and a third that sends
    If-Match with the ETag a GET gives now (the branch's, older than the change in flight) is refused
    with 412. The first round fails at refs/heads: both PATCHes answer 503 repository_unavailable, no
    operation is queued for either, and the tenant reads as before."""
    changes, queue = open_changes(tmp_path / "repo", tmp_path / "queue.sqlite3")
    changes.replace(
        ACME, {"owners": ["a@x.example"], "plan": "small", "displayName": "start"}, ADMIN, if_match=None
    )
    repository = changes.repository
    before, etag = repository.head(), changes.current_etag(ACME)
    heads = repository.git_dir / "refs" / "heads"
    hold, held, failed = threading.Event(), threading.Event(), threading.Event()

    def flush(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        held.set()
        assert hold.wait(10)
        if path == heads and not failed.is_set():
            failed.set()
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(descriptor)

    monkeypatch.setattr(durable, "fsync", flush)
    answers: dict[str, str] = {}

    def patch(name: str, if_match: str | None = None) -> None:
        try:
            changes.patch(ACME, {"displayName": name}, writer(0), if_match=if_match)
            answers[name] = "accepted"
        except ServiceError as error:
            answers[name] = f"{error.code} {ERROR_CODES[error.code][0]}"

    first = threading.Thread(target=patch, args=("first",))
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=patch, args=("second",))
    second.start()
    deadline = time.monotonic() + 10
    while len(repository._group._pending) < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    patch("stale", if_match=f'"{etag}"')  # the file it matches is no longer what writers build on
    hold.set()
    first.join(10)
    second.join(10)

    assert answers == {
        "first": "repository_unavailable 503",
        "second": "repository_unavailable 503",
        "stale": "precondition_failed 412",
    }
    assert repository.head() == before and changes.current_etag(ACME) == etag
    assert [op.spec["displayName"] for op in queue.recent(stack=ACME)] == ["start"]  # type: ignore[index]
    queue.close()

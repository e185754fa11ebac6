"""An acknowledged write survives a power loss: what a group of commits stored is flushed to the disk
(files before their renames, then the folders naming them), objects before the branch names them,
and the branch before the writers are answered; once per group. Seen through ``durable.fsync``, the
one call the service flushes with (a power loss itself cannot be staged in a test; the ``kill -9``
tests cover the process crashes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pygit2
import pytest

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core import durable
from tenancy.service.core.tenants_repo import GitAuthor, TenantRepository

AUTHOR = GitAuthor("a", "a@x.example")


class Flushes:
    """Every fsync as (the file's path relative to .git, what the branch named at that moment), and
    the writers' answers as ("answered", name) in the same list; ``hold`` stops the first flush."""

    def __init__(self, git_dir: Path, ref: Path) -> None:
        self.git_dir, self.ref = git_dir, ref
        self.events: list[tuple[str, str]] = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.hold.set()

    def __call__(self, descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        self.held.set()
        assert self.hold.wait(10)
        os.fsync(descriptor)
        self.events.append((str(path.relative_to(self.git_dir)), self.ref.read_text().strip()))


def loose_path(oid: str) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}"


def test_a_group_flushes_its_pack_and_index_then_the_folder_then_the_branch_before_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    git_dir = repository.git_dir
    flushes = Flushes(git_dir, git_dir / "refs" / "heads" / "main")
    monkeypatch.setattr(durable, "fsync", flushes)
    before = repository.head()
    assert before is not None

    def write(name: str) -> None:
        repository.write("dev", name, {"name": name}, author=AUTHOR, message=f"Create {name}")
        flushes.events.append(("answered", name))

    # The first write publishes alone and is held at its first flush while three more queue: those
    # three are the next group, stored as one pack.
    flushes.hold.clear()
    first = threading.Thread(target=write, args=("first",))
    first.start()
    assert flushes.held.wait(10)
    others = [threading.Thread(target=write, args=(f"t{index}",)) for index in range(3)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(repository._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(repository._pending) == 3
    flushes.hold.set()
    for thread in [first, *others]:
        thread.join(10)

    repo = pygit2.Repository(str(git_dir))
    tip = repository.head()
    assert tip is not None
    chain = [str(commit.id) for commit in repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL)]
    first_commit = chain[chain.index(before) - 1]
    events = flushes.events

    # The lone first change: libgit2's loose objects (blob, three trees, commit), their folders,
    # then the branch's lock file (the branch still old), then the branch's folder (now new).
    commit = repo[first_commit]
    assert isinstance(commit, pygit2.Commit)
    stored = {
        first_commit,
        str(commit.tree.id),
        str(commit.tree["tenants"].id),
        str(commit.tree["tenants/dev"].id),
        str(commit.tree["tenants/dev/first.yaml"].id),
    }
    first_group = events[: events.index(("answered", "first"))]
    files = [path for path, _ in first_group if path.count("/") == 2 and path.startswith("objects/")]
    assert set(files) == {loose_path(oid) for oid in stored}
    assert [path for path, _ in first_group[len(files) :]][-3:] == [
        "objects",
        "refs/heads/main.lock",
        "refs/heads",
    ]
    assert all(ref == before for _, ref in first_group[:-1])
    assert first_group[-1] == ("refs/heads", first_commit)

    # The group of three: the pack and its index (temporary names, flushed before their renames),
    # the pack folder, the branch's lock file, the branch's folder; one round for the three changes,
    # and every one of them answered only after it.
    second_group = events[events.index(("answered", "first")) + 1 :]
    answers = [event for event in second_group if event[0] == "answered"]
    assert sorted(name for _, name in answers) == ["t0", "t1", "t2"]
    flushed = [event for event in second_group if event[0] != "answered"]
    assert [Path(path).name.startswith("tmp_pack_") for path, _ in flushed[:2]] == [True, True]
    assert [path for path, _ in flushed[2:]] == ["objects/pack", "refs/heads/main.lock", "refs/heads"]
    assert all(ref == first_commit for _, ref in flushed[:-1])  # nothing named before it is flushed
    assert flushed[-1] == ("refs/heads", tip)
    assert second_group.index(answers[0]) > second_group.index(flushed[-1])
    assert len(list((git_dir / "objects" / "pack").glob("pack-*.idx"))) == 1


def test_the_queue_flushes_the_transaction_of_every_submit_it_acknowledges(tmp_path: Path) -> None:
    """WAL mode: a submit's transaction commits with synchronous=FULL (on disk when the caller is
    answered); the workers' bookkeeping with NORMAL (a power loss can take its last transactions,
    which leaves an operation queued, or running without a heartbeat and so requeued)."""
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    db = queue._db()  # this thread's connection: the one a submit from this thread commits on
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    statements: list[str] = []
    db.set_trace_callback(statements.append)

    operation = queue.submit(StackRef("dev", "acme"), OperationKind.up, spec={}, requested_by="a")
    commit = statements.index("COMMIT")
    assert "PRAGMA synchronous=FULL" in statements[:commit]
    assert (
        statements[statements.index("PRAGMA synchronous=FULL") : commit].count("PRAGMA synchronous=NORMAL")
        == 0
    )
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again afterwards

    statements.clear()
    claimed = queue.claim_next(worker_id="w")
    assert claimed is not None and claimed.id == operation.id
    assert "COMMIT" in statements and not any("synchronous=FULL" in line for line in statements)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1

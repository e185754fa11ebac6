"""An acknowledged write survives a power loss: what a group of commits stored is flushed to the disk
(files before their renames, then the folders naming them), objects before the branch names them,
and the branch before the writers are answered; once per group. Seen through ``durable.fsync``, the
one call the service flushes with (a power loss itself cannot be staged in a test; the ``kill -9``
tests cover the process crashes)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2
import pytest

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core import durable
from tenancy.service.core.audit import AuditLog
from tenancy.service.core.tenants_repo import (
    ConflictError,
    GitAuthor,
    RepositoryError,
    TenantRepository,
    _edit_tree,
)
from tests.service.conftest import AppFactory, Issuer, spec

AUTHOR = GitAuthor("a", "a@x.example")
ACME_URL = "/api/v1/environments/dev/tenants/acme"


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
    while len(repository._group._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(repository._group._pending) == 3
    flushes.hold.set()
    for thread in [first, *others]:
        thread.join(10)

    tip = repository.head()
    assert tip is not None
    repo = pygit2.Repository(str(git_dir))
    first_commit = str(repo[tip].parents[0].parents[0].parents[0].id)  # type: ignore[attr-defined]
    assert str(repo[first_commit].parents[0].id) == before  # type: ignore[attr-defined]
    events = flushes.events

    # Each group, one change or three: the pack and its index (temporary names, flushed at once before
    # their renames), then the pack folder and the branch's lock file (at once; the branch still old),
    # then the branch's folder (now new); one round per group, and its changes answered only after it.
    first_answer = events.index(("answered", "first"))
    groups = [(events[:first_answer], before, first_commit), (events[first_answer + 1 :], first_commit, tip)]
    for group, old, new in groups:
        flushed = [event for event in group if event[0] != "answered"]
        assert [Path(path).name.startswith("tmp_pack_") for path, _ in flushed[:2]] == [True, True]
        assert sorted(path for path, _ in flushed[2:4]) == ["objects/pack", "refs/heads/main.lock"]
        assert [path for path, _ in flushed[4:]] == ["refs/heads"]
        assert all(ref == old for _, ref in flushed[:-1])  # nothing names the objects before they are flushed
        assert flushed[-1] == ("refs/heads", new)
    answers = [event for event in groups[1][0] if event[0] == "answered"]
    assert sorted(name for _, name in answers) == ["t0", "t1", "t2"]
    last_flush = max(index for index, event in enumerate(groups[1][0]) if event[0] != "answered")
    assert all(groups[1][0].index(answer) > last_flush for answer in answers)
    assert len(list((git_dir / "objects" / "pack").glob("pack-*.idx"))) == 2


def test_a_new_repository_flushes_its_first_commit_before_any_write_builds_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_dir = tmp_path / "repo" / ".git"
    flushed: list[str] = []

    def record(descriptor: int) -> None:
        flushed.append(str(Path(os.readlink(f"/proc/self/fd/{descriptor}")).relative_to(git_dir)))
        os.fsync(descriptor)

    monkeypatch.setattr(durable, "fsync", record)
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    repo = pygit2.Repository(str(git_dir))
    commit = repo[repository.head()]  # type: ignore[index]
    assert isinstance(commit, pygit2.Commit)
    stored = [
        str(commit.id),
        str(commit.tree.id),
        str(commit.tree["tenants"].id),
        str(commit.tree["tenants/README.md"].id),
    ]
    objects = [path for path in flushed if path.startswith("objects/") and path.count("/") == 2]
    assert set(objects) >= {loose_path(oid) for oid in stored}
    rest = flushed[len(objects) :]
    assert rest[-3:] == ["objects", "refs/heads/main", "refs/heads"]  # the objects, then the branch


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


def test_a_branch_whose_move_cannot_be_flushed_is_put_back_and_the_writer_told_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush of refs/heads after the rename fails (EIO): the writer is answered with an error, so
    the branch must not keep its change (readers saw it, the next group made it durable and no
    operation was ever queued for it). It is put back where it was, and the next write builds there."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    repository.write("dev", "initech", {"name": "initech"}, author=AUTHOR, message="Create initech")
    assert repository.creation("dev", "initech") is not None  # the creation cache follows the branch
    before = repository.head()
    heads = repository.git_dir / "refs" / "heads"
    real = durable.fsync
    seen: list[object] = []

    def fail_on_the_branch_folder(descriptor: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{descriptor}")) == heads:
            seen.append(repository.creation("dev", "acme"))  # a reader while the branch names the tip
            raise OSError(errno.EIO, "Input/output error")
        real(descriptor)

    monkeypatch.setattr(durable, "fsync", fail_on_the_branch_folder)
    with pytest.raises(RepositoryError):
        repository.write("dev", "acme", {"name": "acme"}, author=AUTHOR, message="Create acme")
    monkeypatch.setattr(durable, "fsync", real)

    assert seen and seen[0] is not None  # it saw the change, which must not outlive the failure
    assert repository.head() == before
    assert repository.read("dev", "acme") is None
    assert repository.creation("dev", "acme") is None
    assert not (heads / "main.lock").exists()
    commit = repository.write("dev", "globex", {"name": "globex"}, author=AUTHOR, message="Create globex")
    repo = pygit2.Repository(str(repository.git_dir))
    created = repo[commit]
    assert isinstance(created, pygit2.Commit)
    assert [str(parent) for parent in created.parent_ids] == [before]
    assert repository.read("dev", "acme") is None


def _flushed_with_packs(monkeypatch: pytest.MonkeyPatch, git_dir: Path) -> list[tuple[str, set[str]]]:
    """Every fsync as (path relative to .git, the pack folder's files at that moment)."""
    events: list[tuple[str, set[str]]] = []

    def record(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        os.fsync(descriptor)
        events.append((str(path.relative_to(git_dir)), set(os.listdir(git_dir / "objects" / "pack"))))

    monkeypatch.setattr(durable, "fsync", record)
    return events


def test_git_s_gc_and_repack_have_the_pack_folder_flushed_once_they_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """git flushes the packs its gc and repack write, not the folder naming them: the service flushes
    it once git is done, before the maintenance lock lets a write build on the new packs."""
    from tenancy.service.core.git_pack import BLOB, object_id

    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    git_dir = repository.git_dir
    pack_dir = git_dir / "objects" / "pack"
    for n in range(3):  # three groups: three packs for repack to merge
        repository.write("dev", f"t{n}", {"name": f"t{n}"}, author=AUTHOR, message=f"Create t{n}")
    # git's gc --auto counts the loose objects in objects/17: two there pass a threshold of 10.
    # Committed as earlier versions of the service did (libgit2: one loose file per object).
    repo = pygit2.Repository(str(git_dir))
    contents = (b"name: loose%d\n" % n for n in range(100_000))
    tip = repo[repository.head()]  # type: ignore[index]
    assert isinstance(tip, pygit2.Commit)
    tree = tip.tree.id
    for n, data in enumerate([data for data in contents if object_id(BLOB, data).hex().startswith("17")][:2]):
        tree = _edit_tree(repo, tree, ["tenants", "dev", f"loose{n}.yaml"], repo.create_blob(data))
    signature = pygit2.Signature("A", "a@example.com")
    commit = repo.create_commit(None, signature, signature, "Loose objects\n", tree, [tip.id])
    repo.references[repository.ref].set_target(commit)
    assert len(list((git_dir / "objects" / "17").iterdir())) >= 2

    events = _flushed_with_packs(monkeypatch, git_dir)
    repository.maintain(loose_objects=10)
    assert not (git_dir / "objects" / "17").exists()  # gc ran (packed and removed the loose objects)
    assert events == [("objects/pack", set(os.listdir(pack_dir)))]  # after it, once

    events.clear()
    packs_before = len(list(pack_dir.glob("*.pack")))
    repository._merge_packs()
    assert len(list(pack_dir.glob("*.pack"))) < packs_before  # repack merged some
    assert events == [("objects/pack", set(os.listdir(pack_dir)))]

    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable, "fsync", failing)
    with caplog.at_level("WARNING", logger="tenancy.service"):
        repository._merge_packs()  # logged, not raised: the next group's flush covers the folder
    assert "flushing the tenants repository's pack folder after merging its packs failed" in caplog.text


def test_an_acknowledged_change_s_audit_record_is_flushed_before_the_answer(
    make_app: AppFactory, issuer: Issuer, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the service: a PATCH's audit line is in the file when the file is flushed, after the
    change's own flushes (git's branch) and before the caller is answered; a refusal waits on none."""
    app, _ = make_app(workers=0)
    server = serve(app)
    audit = Path(app.state.backends.settings.audit_target)
    events: list[tuple[str, str]] = []

    def record(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        os.fsync(descriptor)
        events.append((path.name, audit.read_text() if path == audit else ""))

    with server.client(issuer.admin_of("acme")) as client, server.client(issuer.viewer_of("acme")) as viewer:
        assert client.put(ACME_URL, json=spec("acme")).status_code == 202
        monkeypatch.setattr(durable, "fsync", record)
        patched = client.patch(ACME_URL, json={"displayName": "Acme"}, headers={"X-Request-ID": "the-patch"})
        events.append(("answered", ""))
        assert patched.status_code == 202
        names = [name for name, _ in events]
        flushed = names.index("audit.log")
        assert names.index("heads") < flushed < names.index("answered")  # the change, its record, the answer
        assert '"request_id":"the-patch"' in events[flushed][1]
        assert '"action":"tenant.patch","outcome":"accepted"' in events[flushed][1]

        events.clear()
        denied = viewer.patch(ACME_URL, json={"displayName": "Nope"}, headers={"X-Request-ID": "denied"})
        assert denied.status_code == 403
        assert '"request_id":"denied"' in audit.read_text()  # written at once, flushed with the next
        assert events == []


def test_a_rotated_audit_log_whose_flush_fails_turns_no_answer_into_a_500(
    make_app: AppFactory, issuer: Issuer, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate moves the audit log away and its old file can no longer be flushed (EIO). A refusal is
    answered as a refusal (before: the next line's rotation flushed the old file under the lock and
    raised, so the viewer's 403 became a 500), and an acknowledged change still has its record flushed
    before its answer: in the new file, whose name is flushed first."""
    app, _ = make_app(workers=0)
    server = serve(app)
    audit = Path(app.state.backends.settings.audit_target)
    events: list[str] = []

    with server.client(issuer.admin_of("acme")) as client, server.client(issuer.viewer_of("acme")) as viewer:
        assert client.put(ACME_URL, json=spec("acme")).status_code == 202
        rotated = audit.with_name("audit.log.1")
        audit.rename(rotated)
        old = os.stat(rotated).st_ino

        def fsync(descriptor: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
            if os.fstat(descriptor).st_ino == old:
                events.append("old file failed")
                raise OSError(errno.EIO, "Input/output error")
            os.fsync(descriptor)
            events.append(f"{path.name}:{audit.read_text() if path == audit else ''}")

        monkeypatch.setattr(durable, "fsync", fsync)
        denied = viewer.patch(ACME_URL, json={"displayName": "Nope"}, headers={"X-Request-ID": "denied"})
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["code"] == "forbidden"
        assert '"request_id":"denied"' in audit.read_text()  # in the new file, at the path

        patched = client.patch(ACME_URL, json={"displayName": "Acme"}, headers={"X-Request-ID": "the-patch"})
        events.append("answered")
        assert patched.status_code == 202
        flushed = next(i for i, event in enumerate(events) if event.startswith("audit.log:"))
        assert '"request_id":"the-patch"' in events[flushed]
        assert events.index(audit.parent.name + ":") < flushed < events.index("answered")
        assert "old file failed" not in events  # nothing acknowledged was left in it
        assert '"request_id":"the-patch"' not in rotated.read_text()


def test_an_acknowledged_record_in_a_rotated_audit_log_is_told_when_its_file_cannot_be_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record's line went to the old file, then the log was rotated before its flush: its flush is the
    old file's, and when that fails the record is not acknowledged; a refusal written meanwhile returns,
    and a record in the new file is acknowledged once the new file (and its name) is flushed."""
    target = tmp_path / "audit.log"
    log = AuditLog(str(target))
    log.record(actor="x", action="tenant.patch", outcome="accepted", tenant="acme")  # the file, named
    old = os.stat(target).st_ino
    flushes: list[str] = []
    hold, held = threading.Event(), threading.Event()

    def fsync(descriptor: int) -> None:
        if os.fstat(descriptor).st_ino == old:
            if not held.is_set():  # the first record's flush: held, then done
                held.set()
                assert hold.wait(10)
            else:
                path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
                flushes.append(f"{path.name} failed")
                raise OSError(errno.EIO, "Input/output error")
        os.fsync(descriptor)
        flushes.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")).name)

    monkeypatch.setattr(durable, "fsync", fsync)
    outcomes: dict[str, str] = {}

    def write(actor: str, outcome: Any = "accepted") -> None:
        try:
            log.record(actor=actor, action="tenant.patch", outcome=outcome, tenant="acme")
            outcomes[actor] = "returned"
        except OSError as error:
            outcomes[actor] = errno.errorcode[error.errno or 0]

    first = threading.Thread(target=write, args=("first",), daemon=True)
    first.start()
    assert held.wait(10)  # the first group flushes the old file; the next record waits for the next
    in_old = threading.Thread(target=write, args=("in-old",), daemon=True)
    in_old.start()
    deadline = time.monotonic() + 10
    while len(log._flushes._pending) < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(log._flushes._pending) == 1
    target.rename(tmp_path / "audit.log.1")
    write("refusal", "refused")  # opens the new file: returns at once, nothing flushed on its way
    assert outcomes == {"refusal": "returned"} and "refusal" in target.read_text()
    in_new = threading.Thread(target=write, args=("in-new",), daemon=True)
    in_new.start()
    while len(log._flushes._pending) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(log._flushes._pending) == 2
    hold.set()
    for thread in (first, in_old, in_new):
        thread.join(10)
    assert outcomes == {"refusal": "returned", "first": "returned", "in-old": "EIO", "in-new": "returned"}
    # The old file (now audit.log.1) for the first, then for the second group its failed flush, the
    # folder naming the new file, and the new file.
    assert flushes == ["audit.log.1", "audit.log.1 failed", tmp_path.name, "audit.log"]
    assert '"actor":"in-new"' in target.read_text()
    log.record(actor="after", action="tenant.patch", outcome="accepted", tenant="acme")  # the log goes on


def test_audit_records_arriving_during_a_flush_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit for audit lines: the first record is held in its flush while three more arrive;
    those three are flushed by one fsync, and each returns only after the flush covering its line."""
    log = AuditLog(str(tmp_path / "audit" / "audit.log"))
    flushes: list[str] = []  # as each flush starts
    completed: list[str] = []  # as each ends
    hold, held = threading.Event(), threading.Event()
    hold.set()

    def fsync(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        if path.name != "audit.log":
            flushes.append(path.name)
        else:  # the lines the flush covers: those in the file when it starts
            flushes.append(f"audit.log:{path.read_text().count(chr(10))}")
            held.set()
            assert hold.wait(10)
        os.fsync(descriptor)
        completed.append(path.name)

    monkeypatch.setattr(durable, "fsync", fsync)
    returned: list[str] = []

    def write(actor: str) -> None:
        log.record(actor=actor, action="tenant.patch", outcome="accepted", tenant="acme")
        returned.append(f"{actor}:{completed.count('audit.log')}")

    hold.clear()
    first = threading.Thread(target=write, args=("first",))
    first.start()
    assert held.wait(10)
    others = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(3)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log._flushes._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(log._flushes._pending) == 3
    hold.set()
    for thread in [first, *others]:
        thread.join(10)
    # The folder once (the file was created), then one flush for the first line and one for the other
    # three; every record returned after the flush holding its line.
    assert flushes == ["audit", "audit.log:1", "audit.log:4"]
    assert returned[0] in ("first:1", "first:2") and sorted(returned[1:]) == ["t0:2", "t1:2", "t2:2"]
    log.record(actor="x", action="tenant.patch", outcome="refused", tenant="acme")
    assert len(flushes) == 3  # a refusal waits on no disk


def test_an_audit_record_whose_flush_fails_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(str(tmp_path / "audit.log"))
    log.record(actor="x", action="tenant.patch", outcome="refused", tenant="acme")  # the file exists

    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable, "fsync", failing)
    with pytest.raises(OSError):
        log.record(actor="x", action="tenant.patch", outcome="accepted", tenant="acme")


def test_every_audit_record_of_a_group_is_answered_when_its_flush_cannot_even_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush of a group fails before its fsync (no descriptor left to duplicate the file's, EMFILE):
    every record of the group is told it failed, none waits for good. Before, the leader raised and
    the other records' threads slept on a wakeup nobody would set."""
    log = AuditLog(str(tmp_path / "audit.log"))
    log.record(actor="x", action="tenant.patch", outcome="accepted", tenant="acme")  # the file, named
    hold, held = threading.Event(), threading.Event()

    def fsync(descriptor: int) -> None:
        held.set()
        assert hold.wait(10)
        os.fsync(descriptor)

    monkeypatch.setattr(durable, "fsync", fsync)
    outcomes: dict[str, str] = {}

    def write(actor: str) -> None:
        try:
            log.record(actor=actor, action="tenant.patch", outcome="accepted", tenant="acme")
            outcomes[actor] = "acknowledged"
        except OSError as error:
            outcomes[actor] = errno.errorcode[error.errno or 0]

    first = threading.Thread(target=write, args=("first",), daemon=True)
    first.start()
    assert held.wait(10)  # the first group's flush runs; the next three records wait for the next
    others = [threading.Thread(target=write, args=(f"t{n}",), daemon=True) for n in range(3)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log._flushes._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(log._flushes._pending) == 3

    def no_descriptor_left(descriptor: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "dup", no_descriptor_left)
    hold.set()
    for thread in [first, *others]:
        thread.join(10)
    assert not any(thread.is_alive() for thread in [first, *others])
    assert outcomes == {"first": "acknowledged", "t0": "EMFILE", "t1": "EMFILE", "t2": "EMFILE"}


def pipelined_writer(
    repository: TenantRepository,
    name: str,
    index: int,
    done: list[tuple[int, str | None]],
    events: list[tuple[str, str]] | None = None,
) -> Callable[[], None]:
    """A writer of ``name`` as the service's PUT and PATCH write: it appends ``index`` to the file's
    list ``n`` as its turn finds it (flushed or not), lets the next writer in, waits for the flushes."""

    def write() -> None:
        with repository.turn(f"dev.{name}", pipelined=True) as turn:
            found = turn.file("dev", name)
            assert found is not None
            document = {**found.document, "n": [*found.document["n"], index]}
            author = GitAuthor(f"w{index}", f"w{index}@x.example")
            turn.write_file("dev", name, document, author=author, message=f"Write {index}")
            turn.release()
            try:
                commit = turn.durable()
            except RepositoryError as error:  # 503 repository_unavailable, never a 409 conflict
                assert not isinstance(error, ConflictError), error
                commit = None
            done.append((index, commit))
            if events is not None:
                events.append(("answered", str(index)))

    return write


def commits_since(repository: TenantRepository, base: str) -> list[pygit2.Commit]:
    """The branch's commits after ``base``, oldest first (a straight line)."""
    repo = pygit2.Repository(str(repository.git_dir))
    found = []
    commit = repo[repository.head()]  # type: ignore[index]
    while str(commit.id) != base:
        assert isinstance(commit, pygit2.Commit)
        found.append(commit)
        commit = commit.parents[0]
    return found[::-1]


def wait_for_pending(repository: TenantRepository, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(repository._group._pending) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(repository._group._pending) == count


def test_the_next_writers_of_a_tenant_build_on_a_change_being_flushed_and_share_one_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early lock release: while the first writer's change is being flushed, three more writers of the
    same tenant take their turns on it (each reads what the one before left, flushed or not) and
    their changes are flushed together in one round; each is answered only after its own round."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    repository.write("dev", "acme", {"name": "acme", "n": []}, author=AUTHOR, message="Create acme")
    base = repository.head()
    assert base is not None
    git_dir = repository.git_dir
    flushes = Flushes(git_dir, git_dir / "refs" / "heads" / "main")
    monkeypatch.setattr(durable, "fsync", flushes)
    done: list[tuple[int, str | None]] = []

    flushes.hold.clear()
    first = threading.Thread(target=pipelined_writer(repository, "acme", 0, done, flushes.events))
    first.start()
    assert flushes.held.wait(10)  # its pack: nothing of it is on disk or published yet
    others = [
        threading.Thread(target=pipelined_writer(repository, "acme", i, done, flushes.events))
        for i in (1, 2, 3)
    ]
    for thread in others:
        thread.start()
    wait_for_pending(repository, 3)  # each took its turn on the unflushed change before it
    assert repository.head() == base and repository.read("dev", "acme") == {"name": "acme", "n": []}
    assert done == []
    flushes.hold.set()
    for thread in [first, *others]:
        thread.join(10)

    commits = commits_since(repository, base)
    order = [int(commit.author.name[1:]) for commit in commits]
    assert order[0] == 0 and sorted(order) == [0, 1, 2, 3]  # one commit per change, under its author
    assert repository.read("dev", "acme") == {"name": "acme", "n": order}  # each on the one before
    assert sorted(done) == [(index, str(commits[order.index(index)].id)) for index in range(4)]
    events = flushes.events
    rounds = [index for index, event in enumerate(events) if event[0] == "refs/heads"]
    assert len(rounds) == 2  # two rounds of flushes for four changes of one tenant
    assert events[rounds[0]][1] == str(commits[0].id) and events[rounds[1]][1] == str(commits[-1].id)
    answered = {int(name): index for index, (what, name) in enumerate(events) if what == "answered"}
    assert answered[0] > rounds[0]
    assert all(answered[index] > rounds[1] for index in (1, 2, 3))


def test_a_failed_flush_fails_every_writer_built_on_it_and_the_branch_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first writer's round fails at its last flush (refs/heads, EIO) after two more writers of
    the tenant built on its change: all three fail (the service answers 503 repository_unavailable),
    the branch is put back where it was durable, and a writer of another tenant that shared the
    second round is unaffected; the next write of the tenant builds on the durable state."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    repository.write("dev", "acme", {"name": "acme", "n": []}, author=AUTHOR, message="Create acme")
    before = repository.head()
    assert before is not None
    heads = repository.git_dir / "refs" / "heads"
    hold, held = threading.Event(), threading.Event()
    failed: list[int] = []

    def flush(descriptor: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        held.set()
        assert hold.wait(10)
        if path == heads and not failed:
            failed.append(1)
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(descriptor)

    monkeypatch.setattr(durable, "fsync", flush)
    done: list[tuple[int, str | None]] = []
    first = threading.Thread(target=pipelined_writer(repository, "acme", 0, done))
    first.start()
    assert held.wait(10)
    others = [threading.Thread(target=pipelined_writer(repository, "acme", i, done)) for i in (1, 2)]
    for thread in others:
        thread.start()
    wait_for_pending(repository, 2)
    globex: list[str | None] = []
    bystander = threading.Thread(
        target=lambda: globex.append(
            repository.write("dev", "globex", {"name": "globex"}, author=AUTHOR, message="Create globex")
        )
    )
    bystander.start()
    wait_for_pending(repository, 3)
    hold.set()
    for thread in [first, *others, bystander]:
        thread.join(10)

    assert sorted(done) == [(0, None), (1, None), (2, None)]  # every writer built on the failed change
    assert globex and globex[0] is not None
    assert [str(commit.id) for commit in commits_since(repository, before)] == [globex[0]]
    assert repository.read("dev", "acme") == {"name": "acme", "n": []}
    assert not (heads / "main.lock").exists()
    done.clear()
    pipelined_writer(repository, "acme", 3, done)()
    assert repository.read("dev", "acme") == {"name": "acme", "n": [3]}
    assert done == [(3, repository.head())]


def test_a_record_after_a_torn_last_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    """Found by an outside review: a crash mid-write left the log's last line cut short, and the next
    acknowledged record was appended onto the fragment, so that line parsed as nothing and the record
    was lost to every reader. The next record now starts a new line; the fragment stays as it was."""
    path = tmp_path / "audit.log"
    path.write_text('{"time":"2026-12-07T00:00:00.000Z","actor":"user:a","action":"tenant.pat')
    log = AuditLog(str(path))
    log.record(actor="user:b", action="tenant.patch", outcome="accepted", tenant="acme", operation_id="op1")
    fragment, record = path.read_text().splitlines()
    assert fragment.endswith('"tenant.pat')
    assert json.loads(record)["operation_id"] == "op1"
    log.record(actor="user:b", action="tenant.patch", outcome="accepted", tenant="acme", operation_id="op2")
    assert [json.loads(line)["operation_id"] for line in path.read_text().splitlines()[1:]] == ["op1", "op2"]


def test_a_group_of_records_cut_short_by_a_full_disk_leaves_the_next_record_a_line_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the records written with their commit's group: a group's lines are one write, and a
    disk that filled part way through it left a line cut short in the file, with the log still open
    after it, so the next record (of any outcome) was glued to the fragment. A failed write now makes
    the next record open the file again, which ends the fragment's line first."""
    from tenancy.service.core.audit import AuditRecord

    path = tmp_path / "audit.log"
    log = AuditLog(str(path))
    log.record(actor="user:a", action="tenant.patch", outcome="accepted", tenant="acme", operation_id="op0")
    handle = log._file.handle if log._file is not None else None
    assert handle is not None
    real_write = handle.write

    def disk_fills_part_way(text: str) -> int:
        real_write(text[: len(text) // 2])
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handle, "write", disk_fills_part_way)
    records = [
        AuditRecord("user:a", "tenant.patch", "accepted", f"t{index}", "dev", None, f"op{index + 1}")
        for index in range(40)
    ]
    with pytest.raises(OSError):
        log.record_accepted(records)
    log.record(actor="user:b", action="tenant.get", outcome="denied", tenant="acme")
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["action"] == "tenant.get"  # its own line, parsed
    parsed = [line for line in lines if line.endswith("}")]
    assert all(json.loads(line) for line in parsed)


def test_no_change_is_accepted_while_the_audit_log_cannot_be_written_and_one_cut_short_says_it_stands(
    make_app: AppFactory,
    issuer: Issuer,
    serve: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an outside review: with the audit log unwritable a PATCH answered 500, yet was committed
    and queued, and /readyz said ready. Now readiness fails, every API write is refused before it does
    anything, and one whose record fails after its commit says it was committed and queued."""
    app, _ = make_app(workers=0)
    server = serve(app)
    backends = app.state.backends
    with server.client(issuer.admin_of("acme")) as client:
        assert client.put(ACME_URL, json=spec("acme")).status_code == 202
        head = backends.repository.head()

        monkeypatch.setattr(AuditLog, "writable", lambda self: False)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["audit_log"] == "failing"
        refused = client.patch(ACME_URL, json={"displayName": "Unrecorded"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "audit_unavailable"
        assert "nothing was done" in refused.json()["error"]["message"]
        assert backends.repository.head() == head
        # Every API write waits for the log, not only tenant writes (a key made, a backup started...);
        # reads go on.
        key = client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci", "role": "tenant-viewer"})
        assert key.status_code == 503 and key.json()["error"]["code"] == "audit_unavailable"
        assert client.get(ACME_URL).status_code == 200
        monkeypatch.undo()

        def failing(descriptor: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(durable, "fsync", lambda descriptor: None)  # git's flushes go on
        monkeypatch.setattr(AuditLog, "_flush_file", lambda self, file: failing(0))
        keyed = {"Idempotency-Key": "retry-me"}
        cut = client.patch(ACME_URL, json={"displayName": "Committed"}, headers=keyed)
        assert cut.status_code == 503, cut.text
        message = cut.json()["error"]["message"]
        assert cut.json()["error"]["code"] == "audit_unavailable"
        committed = backends.repository.head()
        assert f"was committed ({committed[:12]}) and queued" in message
        assert "do not repeat it" in message
        # The log line names the request and the operation, so the missing record can be made up.
        said = [r.getMessage() for r in caplog.records if "could not be written" in r.getMessage()]
        request = cut.headers["X-Request-ID"]
        assert any(
            request in line and cut.json()["error"]["message"].split("operation ")[1][:32] in line
            for line in said
        ), said
        # No "refused" line for it either (the change took effect; only its record is missing).
        audit_file = Path(backends.settings.audit_target)
        assert '"reason":"audit_unavailable"' not in audit_file.read_text()
        # A client retrying under its Idempotency-Key gets that answer again; nothing is committed twice.
        monkeypatch.undo()
        again = client.patch(ACME_URL, json={"displayName": "Committed"}, headers=keyed)
        assert again.status_code == 503 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == cut.json() and backends.repository.head() == committed


def test_an_api_key_or_a_decision_whose_record_fails_after_it_was_made_says_it_stands(
    make_app: AppFactory, issuer: Issuer, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left open by the last stop: only tenant writes said "it was done" when their audit record failed
    after acting; an API key made, a backup queued or a change request decided answered 500, and a
    retry under the same Idempotency-Key made a second key. Each now answers 503 ``audit_unavailable``
    saying what was done and what to do, and a retry replays that answer."""
    app, _ = make_app(workers=0)
    server = serve(app)
    backends = app.state.backends
    with (
        server.client(issuer.admin_of("acme", sub="alice")) as client,
        server.client(issuer.platform_admin(sub="root")) as admin,
    ):
        assert client.put(ACME_URL, json=spec("acme")).status_code == 202
        filed = client.patch(
            ACME_URL,
            # The volumes pinned: a plan change must not grow them.
            json={"plan": "medium", "qdrant": {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}},
            headers={"Change-Reason": "more traffic next month"},
        )
        assert filed.status_code == 202, filed.text
        request = filed.json()["changeRequest"]["id"]

        def failing(descriptor: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(AuditLog, "_flush_file", lambda self, file: failing(0))
        keyed = {"Idempotency-Key": "make-one-key"}
        made = client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}, headers=keyed)
        assert made.status_code == 503, made.text
        error = made.json()["error"]
        assert error["code"] == "audit_unavailable"
        [key] = backends.api_keys.list("acme")
        assert f"API key {key.id} of acme was created" in error["message"]
        assert f"revoke it (DELETE .../api-keys/{key.id})" in error["message"]
        again = client.post("/api/v1/tenants/acme/api-keys", json={"name": "ci"}, headers=keyed)
        assert again.status_code == 503 and again.headers["Idempotent-Replayed"] == "true"
        assert len(backends.api_keys.list("acme")) == 1  # not a second key

        rejected = admin.post(f"/api/v1/change-requests/{request}/reject", json={"reason": "not now"})
        assert rejected.status_code == 503, rejected.text
        assert f"change request {request} was rejected" in rejected.json()["error"]["message"]
        monkeypatch.undo()
        assert admin.get(f"/api/v1/change-requests/{request}").json()["status"] == "rejected"


def test_concurrent_writes_are_recorded_with_their_commits_group_one_flush_for_many(
    make_app: AppFactory, issuer: Issuer, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#11: a write's audit record was a third group round after its commit's and its operation's.
    The publisher of a group now writes the group's accepted records, with their operation ids, and
    flushes them once, before any writer is answered; no route writes its own. Every write still has
    exactly one accepted line, with its own operation."""
    app, _ = make_app(workers=0)
    server = serve(app)
    backends = app.state.backends
    names = [f"t{index}" for index in range(6)]
    flushes: list[int] = []
    record_accepted = AuditLog.record_accepted

    def counted(self: AuditLog, records: Any) -> None:
        flushes.append(len(records))
        record_accepted(self, records)

    def no_route_records_an_accepted_write(self: AuditLog, **fields: Any) -> None:
        assert fields.get("outcome") != "accepted", "a route wrote an accepted write's record itself"
        record(self, **fields)

    record = AuditLog.record
    with server.client(issuer.platform_admin(sub="root")) as client:
        for name in names:
            assert client.put(f"/api/v1/environments/dev/tenants/{name}", json=spec(name)).status_code == 202
        monkeypatch.setattr(AuditLog, "record_accepted", counted)
        monkeypatch.setattr(AuditLog, "record", no_route_records_an_accepted_write)
        answers: list[Any] = []

        def writer(name: str) -> None:
            with server.client(issuer.platform_admin(sub="root")) as own:
                for round_ in range(4):
                    url = f"/api/v1/environments/dev/tenants/{name}"
                    answers.append(own.patch(url, json={"displayName": f"{name} {round_}"}))

        threads = [threading.Thread(target=writer, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [answer.status_code for answer in answers] == [202] * 24
    assert sum(flushes) == 24 and len(flushes) < 24, flushes
    lines = [json.loads(line) for line in Path(backends.settings.audit_target).read_text().splitlines()]
    patched = [line for line in lines if line["action"] == "tenant.patch"]
    assert sorted(line["operation_id"] for line in patched) == sorted(
        answer.json()["operation"]["id"] for answer in answers
    )
    assert {line["outcome"] for line in patched} == {"accepted"}

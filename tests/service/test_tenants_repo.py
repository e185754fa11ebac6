"""The tenants repository: commits authored by the caller, pushed to a shared remote by several
replicas without losing each other's changes."""

from __future__ import annotations

import gc
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pygit2
import pytest
import yaml

from tenancy.service.core import tenants_repo
from tenancy.service.core.tenants_repo import (
    COMMITTER_NAME,
    GitAuthor,
    RepositoryError,
    TenantRepository,
    _edit_tree,
)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_a_new_repository_is_seeded_from_the_projects_tenants(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    (seed / "dev").mkdir(parents=True)
    (seed / "dev" / "acme.yaml").write_text("name: acme\n")
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure(seed_from=seed)
    assert repository.names() == [("dev", "acme")]
    assert git(repository.root, "status", "--porcelain") == ""


def test_author_names_cannot_inject_into_the_commit(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor.of("Mallory <evil@x>\nCo-authored-by: someone", "bad\n@x", "sub/../1")
    repository.write("dev", "acme", {"name": "acme"}, author=author, message="Update tenant dev.acme")
    commit = repository.history("dev", "acme")[0]
    assert "<" not in commit.author_name and "\n" not in commit.author_name
    assert commit.author_email == "sub-..-1@tenant-api.invalid"
    assert git(repository.root, "log", "-1", "--format=%cn").strip() == COMMITTER_NAME
    # Nor terminal escapes or other control and formatting characters, which `git log` prints as they are.
    escaped = GitAuthor.of("Ada\x1b[2J\u202eLovelace\x9b", "ada\x1b@example.com", "ada")
    assert escaped == GitAuthor(name="Ada[2JLovelace", email="ada@tenant-api.invalid")


def test_replicas_pushing_to_one_remote_never_lose_a_change(tmp_path: Path) -> None:
    origin = TenantRepository(tmp_path / "origin")
    origin.ensure()
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(origin.root), str(remote)], check=True)
    replicas = [TenantRepository(tmp_path / f"replica-{i}", remote=str(remote)) for i in range(3)]
    for replica in replicas:
        replica.ensure()

    def write(replica: TenantRepository, index: int) -> None:
        for round_ in range(3):
            name = f"t{index}"
            with replica.locked():
                replica.sync()
                replica.write(
                    "dev",
                    name,
                    {"name": name, "round": round_},
                    author=GitAuthor("r", "r@x.example"),
                    message=f"Update tenant dev.{name}",
                )

    threads = [threading.Thread(target=write, args=(replica, i)) for i, replica in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    check = TenantRepository(tmp_path / "check", remote=str(remote))
    check.ensure()
    assert check.names() == [("dev", "t0"), ("dev", "t1"), ("dev", "t2")]
    for index in range(3):
        assert yaml.safe_load(check.read_text("dev", f"t{index}") or "") == {"name": f"t{index}", "round": 2}
        assert len(check.history("dev", f"t{index}")) == 3


def _shared_remote(tmp_path: Path, replicas: int, **options: Any) -> tuple[Path, list[TenantRepository]]:
    """A bare remote seeded with an empty tenants repository, and ``replicas`` checkouts of it."""
    origin = TenantRepository(tmp_path / "origin")
    origin.ensure()
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(origin.root), str(remote)], check=True)
    checkouts = [
        TenantRepository(tmp_path / f"replica-{i}", remote=str(remote), **options) for i in range(replicas)
    ]
    for checkout in checkouts:
        checkout.ensure()
    return remote, checkouts


AUTHOR = GitAuthor("r", "r@x.example")


def _write(repository: TenantRepository, name: str, **fields: Any) -> str | None:
    return repository.write(
        "dev", name, {"name": name, **fields}, author=AUTHOR, message=f"Update tenant dev.{name}"
    )


def test_a_write_that_cannot_be_pushed_leaves_the_checkout_exactly_as_it_was(tmp_path: Path) -> None:
    remote, [replica] = _shared_remote(tmp_path, 1)
    _write(replica, "a", round=1)
    head = git(replica.root, "rev-parse", "HEAD")
    unreachable = remote.with_name("unreachable.git")
    remote.rename(unreachable)  # the network blip

    with pytest.raises(RepositoryError):
        _write(replica, "a", round=2)

    assert git(replica.root, "status", "--porcelain") == ""
    assert git(replica.root, "rev-parse", "HEAD") == head  # no local commit left to publish later
    assert yaml.safe_load(replica.read_text("dev", "a") or "") == {"name": "a", "round": 1}
    unreachable.rename(remote)
    replica.sync()
    _write(replica, "a", round=3)  # writes work again without anyone repairing the checkout
    check = TenantRepository(tmp_path / "check", remote=str(remote))
    check.ensure()
    rounds = [
        yaml.safe_load(git(check.root, "show", f"{c.sha}:tenants/dev/a.yaml"))["round"]
        for c in check.history("dev", "a")
    ]
    assert rounds == [3, 1]  # the write reported as failed never reached the remote


def test_a_rebase_conflict_is_aborted_and_the_checkout_reset(tmp_path: Path) -> None:
    _, [ours, theirs] = _shared_remote(tmp_path, 2)
    _write(ours, "a", owner="ours")
    theirs.sync()
    _write(theirs, "a", owner="theirs")  # say, a pull request merged on the same file
    head = git(ours.root, "rev-parse", "HEAD")

    with pytest.raises(RepositoryError):
        _write(ours, "a", owner="ours-again")  # not synced first: the push needs a rebase that conflicts

    git_dir = ours.root / ".git"
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()
    assert git(ours.root, "status", "--porcelain") == ""
    assert git(ours.root, "rev-parse", "HEAD") == head
    ours.sync()
    assert yaml.safe_load(ours.read_text("dev", "a") or "")["owner"] == "theirs"
    assert _write(ours, "a", owner="after") is not None


def test_sync_drops_whatever_an_earlier_failure_left_behind(tmp_path: Path) -> None:
    _, [replica] = _shared_remote(tmp_path, 1)
    _write(replica, "a", round=1)
    published = git(replica.root, "rev-parse", "HEAD")
    # What a process killed mid-write leaves: a commit never pushed, an edit, a stray tenant file.
    (replica.tenants_dir / "dev" / "a.yaml").write_text("name: a\nround: 99\n")
    git(replica.root, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "--quiet", "-am", "local only")
    (replica.tenants_dir / "dev" / "a.yaml").write_text("name: a\nround: 100\n")
    (replica.tenants_dir / "dev" / "stray.yaml").write_text("name: stray\n")

    replica.sync()

    assert git(replica.root, "rev-parse", "HEAD") == published
    assert git(replica.root, "status", "--porcelain") == ""
    assert replica.names() == [("dev", "a")]


def test_reads_on_a_replica_see_what_another_replica_committed(tmp_path: Path) -> None:
    _, [writer, reader] = _shared_remote(tmp_path, 2, refresh_seconds=0)
    assert reader.read_text("dev", "newco") is None

    _write(writer, "newco")

    assert reader.read_text("dev", "newco") is not None
    assert ("dev", "newco") in reader.names()


def test_reads_fetch_from_the_remote_at_most_once_per_refresh_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, [writer, reader] = _shared_remote(tmp_path, 2, refresh_seconds=60)
    _write(writer, "newco")
    fetches = []
    run = reader._run

    def counting(*args: str, **kwargs: Any) -> Any:
        if args[0] == "fetch":
            fetches.append(args)
        return run(*args, **kwargs)

    monkeypatch.setattr(reader, "_run", counting)
    for _ in range(20):
        reader.read_text("dev", "newco")
    assert fetches == []  # fresh from its clone: no fetch until the interval has passed
    monkeypatch.setattr(reader, "_synced_at", 0.0)
    for _ in range(20):
        reader.read_text("dev", "newco")
    assert len(fetches) == 1
    assert reader.read_text("dev", "newco") is not None


def test_creations_stay_cached_for_readers_a_commit_behind(tmp_path: Path, monkeypatch: Any) -> None:
    """Under write load a reader often holds the branch's previous commit: that must not throw the
    creation cache away (every write would then start a git process to find its incarnation)."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor.of("Ada", "ada@example.com", "ada")
    repository.write("dev", "acme", {"name": "acme"}, author=author, message="Create tenant dev.acme")
    before = repository._tip()
    created = repository.creation("dev", "acme")
    assert created is not None
    repository.write("dev", "beta", {"name": "beta"}, author=author, message="Create tenant dev.beta")
    beta = repository.creation("dev", "beta")  # carried over our own commit: no git process

    def no_git(*args: str, **kwargs: Any) -> None:
        raise AssertionError(f"git {args[0]} ran for a cached creation")

    monkeypatch.setattr(repository, "_run", no_git)
    monkeypatch.setattr(repository, "_tip", lambda: before)  # a reader one commit behind
    assert repository.creation("dev", "acme") == created
    assert repository.creation("dev", "beta") == beta


def test_maintenance_packs_loose_objects_and_loses_none_a_write_has_not_referenced_yet(
    tmp_path: Path,
) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor("A", "a@example.com")
    objects = repository.git_dir / "objects"
    # Writes store packs; loose objects are what earlier versions of the service wrote (libgit2, one
    # file per object): commits made that way. git estimates the loose objects from those in
    # objects/17 (1/256 of them) and packs with more than one there at this threshold: commit until it
    # has two.
    repo = repository._git()
    count = 0
    while count < 12 or len(list((objects / "17").glob("*"))) < 2:
        assert count < 800, "too few loose objects landed in objects/17"
        tip = repository._tip()
        assert tip is not None
        base = repo[tip]
        assert isinstance(base, pygit2.Commit)
        blob = repo.create_blob(tenants_repo.dump_document({"name": f"t{count}"}).encode())
        tree = _edit_tree(repo, base.tree.id, ["tenants", "dev", f"t{count}.yaml"], blob)
        signature = pygit2.Signature("A", "a@example.com")
        commit = repo.create_commit(None, signature, signature, f"t{count}\n", tree, [tip])
        repo.references[repository.ref].set_target(commit)
        count += 1
    repository.write("dev", "packed", {"name": "packed"}, author=author, message="packed")  # a pack
    pending = repository._store(b"a write between storing its blob and moving the branch\n")

    def loose() -> int:
        return sum(1 for folder in objects.glob("[0-9a-f][0-9a-f]") for _ in folder.iterdir())

    before = loose()
    repository.maintain(loose_objects=10)
    assert loose() < before / 4 and list((objects / "pack").glob("*.pack"))
    assert repository._git()[pending].read_raw().startswith(b"a write between")  # kept: not pruned
    checked = subprocess.run(
        ["git", "-C", str(repository.root), "fsck", "--strict"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert [repository.read("dev", f"t{n}") for n in range(count)] == [
        {"name": f"t{n}"} for n in range(count)
    ]
    assert repository.read("dev", "packed") == {"name": "packed"}
    repository.write("dev", "after", {"name": "after"}, author=author, message="after")  # still writable
    assert repository.read("dev", "after") == {"name": "after"}
    repository.maintain()  # below git's threshold: nothing to do, nothing fails


def test_maintenance_indexes_the_history_so_a_creation_lookup_skips_unrelated_commits(tmp_path: Path) -> None:
    """Review of the publisher's queueing: a tenant's creating commit (``git log --diff-filter=A``) on
    a cold cache walked the whole history. Maintenance writes a commit-graph with changed-path
    filters; git then answers from it, with the same answer, and a fresh process reads it."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor("Writer", "w@example.com")
    repository.write("dev", "acme", {"name": "acme"}, author=author, message="create acme")
    created = repository.creation("dev", "acme")
    for n in range(30):
        repository.write("dev", "other", {"name": "other", "n": n}, author=author, message=f"other {n}")
    repository.maintain()
    chain = repository.git_dir / "objects" / "info" / "commit-graphs" / "commit-graph-chain"
    assert chain.is_file()
    verified = subprocess.run(
        ["git", "-C", str(repository.root), "commit-graph", "verify"], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    fresh = TenantRepository(tmp_path / "repo")  # another process: a cold cache, the graph on disk
    assert fresh.creation("dev", "acme") == created


def test_packs_of_groups_are_merged_in_the_background_and_every_object_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_repo, "_PACKS_BEFORE_MERGE", 4)
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor("A", "a@example.com")
    pack_dir = repository.git_dir / "objects" / "pack"
    for n in range(12):
        repository.write("dev", f"t{n % 5}", {"name": f"t{n % 5}", "n": n}, author=author, message=f"{n}")
        if repository._merging is not None:
            repository._merging.join()
    assert len(list(pack_dir.glob("*.pack"))) < 8
    assert [repository.read("dev", f"t{n}") for n in range(5)] == [
        {"name": f"t{n}", "n": n + 10 if n < 2 else n + 5} for n in range(5)
    ]
    assert git(repository.root, "fsck", "--strict", "--no-dangling", "--no-progress") == ""
    assert int(git(repository.root, "rev-list", "--count", "main")) == 13
    # Packs git removed are let go of (libgit2 keeps a pack open while its repository object lives).
    gc.collect()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor, closed since
            continue
    assert not [path for path in held if "/objects/pack/" in path and path.endswith("(deleted)")]


def test_concurrent_writers_get_one_commit_each_under_their_author(tmp_path: Path) -> None:
    """Group commit: threads writing at once share ref updates, never commits or authors."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    start = threading.Barrier(8)

    def write(index: int) -> None:
        start.wait()
        for round_ in range(3):
            with repository.locked(f"dev.t{index}"):
                repository.write(
                    "dev",
                    f"t{index}",
                    {"name": f"t{index}", "round": round_},
                    author=GitAuthor(f"writer {index}", f"w{index}@x.example"),
                    message=f"Update tenant dev.t{index}",
                )

    threads = [threading.Thread(target=write, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(8):
        assert [commit.author_email for commit in repository.history("dev", f"t{index}")] == [
            f"w{index}@x.example"
        ] * 3
        assert repository.read("dev", f"t{index}") == {"name": f"t{index}", "round": 2}
    assert int(git(repository.root, "rev-list", "--count", "main")) == 1 + 8 * 3
    assert git(repository.root, "fsck", "--strict", "--no-dangling", "--no-progress") == ""


def test_a_branch_in_packed_refs_moves_and_a_moved_branch_is_built_upon(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor("a", "a@x.example")
    repository.write("dev", "acme", {"name": "acme"}, author=author, message="Create tenant dev.acme")
    git(repository.root, "pack-refs", "--all", "--prune")  # what `git gc` does to the branch
    assert not (repository.git_dir / "refs" / "heads" / "main").exists()
    repository.write("dev", "acme", {"name": "acme", "v": 2}, author=author, message="Update tenant dev.acme")
    assert git(repository.root, "rev-parse", "main").strip() == repository.head()
    # Someone else's commit lands between the group being built and published: it is built again on it.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "--quiet", str(repository.root), str(other)], check=True)
    (other / "tenants" / "dev" / "beta.yaml").write_text("name: beta\n")
    git(other, "add", "-A")
    git(other, "-c", "user.name=p", "-c", "user.email=p@x.example", "commit", "--quiet", "-m", "Add beta")
    moved = git(other, "rev-parse", "HEAD").strip()
    real_base = repository._base
    calls = iter([True])

    def base_then_move() -> Any:
        found = real_base()
        if next(calls, False):  # the first build sees the old tip; the branch moves before the swap
            git(repository.root, "fetch", "--quiet", str(other), "main")
            git(repository.root, "update-ref", "refs/heads/main", moved)
        return found

    repository._base = base_then_move  # type: ignore[method-assign]
    repository.write("dev", "acme", {"name": "acme", "v": 3}, author=author, message="Update tenant dev.acme")
    assert git(repository.root, "rev-parse", "main~1").strip() == moved
    assert repository.read("dev", "beta") == {"name": "beta"}
    assert repository.read("dev", "acme") == {"name": "acme", "v": 3}


def test_a_written_file_reads_back_as_parsing_it_would(tmp_path: Path) -> None:
    """The cache takes a written file's values from the document, not from parsing what was dumped:
    both must agree, for strings that look like other YAML types too."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    document = {
        "name": "acme",
        "displayName": "2024-01-01",
        "strings": ["yes", "1.0", "0o17", "null", "~", "1e3", ".inf", "Zoë: ü # no comment", "a\nb  "],
        "numbers": [1.5, 10**20, 1e-7, 2.0, -0.0, 7],
        "flags": {"on": True, "off": False, "none": None},
    }
    _, written = repository.write_file(
        "dev", "acme", document, author=GitAuthor("a", "a@x.example"), message="Create tenant dev.acme"
    )
    assert written.document == tenants_repo.parse_document(written.text) == document
    repository._parsed.clear()
    assert repository.read("dev", "acme") == document


def test_a_get_of_a_tenant_reads_the_branch_once_and_answers_as_before(
    make_app: Any, issuer: Any, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET looked the branch up three or four times (whether reads wait, the file, the
    incarnation); once now, on the event loop and from a worker thread alike, and answers the same."""
    from tests.service.conftest import spec

    app, _ = make_app(workers=0)
    url = "/api/v1/environments/dev/tenants/acme"
    reads: list[str] = []
    real = TenantRepository._read_ref

    def counted(self: TenantRepository) -> pygit2.Oid | None:
        reads.append(threading.current_thread().name)
        return real(self)

    with serve(app).client(issuer.admin_of("acme")) as client:
        assert client.put(url, json=spec("acme")).status_code == 202
        before = client.get(url)  # also fills the incarnation cache, as any first read does
        monkeypatch.setattr(TenantRepository, "_read_ref", counted)
        on_the_loop = client.get(url)
        assert len(reads) == 1
        monkeypatch.setattr(type(app.state.backends), "local_reads", property(lambda self: False))
        in_a_thread = client.get(url)
        assert len(reads) == 2
    for answer in (on_the_loop, in_a_thread):
        assert (answer.status_code, answer.json(), answer.headers["ETag"]) == (
            200,
            before.json(),
            before.headers["ETag"],
        )


def test_reads_follow_commits_made_outside_the_service_and_only_files_are_files(tmp_path: Path) -> None:
    """Files are looked up in trees parsed once per id: a commit git made (a merged pull request, a
    person on the checkout) is read like the service's own, and only a file at the path is a file."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    author = GitAuthor("A", "a@example.com")
    repository.write("dev", "acme", {"name": "acme", "plan": "small"}, author=author, message="create")
    assert repository.read("dev", "acme") == {"name": "acme", "plan": "small"}

    root = repository.root
    (root / "tenants" / "dev" / "acme.yaml").write_text("name: acme\nplan: medium\n")
    (root / "tenants" / "dev" / "folder.yaml").mkdir()
    (root / "tenants" / "dev" / "folder.yaml" / "inner.yaml").write_text("name: inner\n")
    (root / "tenants" / "dev" / "link.yaml").symlink_to("acme.yaml")
    git(root, "add", "-A")
    git(root, "-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", "by hand")

    assert repository.read("dev", "acme") == {"name": "acme", "plan": "medium"}
    assert repository.read("dev", "folder") is None  # a folder named like a file is no tenant
    assert repository.read("dev", "link") == {}  # a symlink is a blob (its target's name), as libgit2 says
    assert repository.read("dev", "acme.yaml/x") is None
    assert repository.read("prod", "acme") is None
    again = repository.write(
        "dev", "acme", {"name": "acme", "plan": "large"}, author=author, message="on top"
    )
    assert again is not None and repository.read("dev", "acme") == {"name": "acme", "plan": "large"}

"""A write that fails while git is locked: 503 with nothing half-applied, readiness not-ready while the
lock is held, git's own text in the log, and writes back without anyone touching the repository as
soon as the lock's holder is gone. A lock left by a dead process is simply cleared."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.automation.contract import StackRef
from tenancy.service.core.git_locks import clear_stale_locks
from tenancy.service.core.tenants_repo import GitAuthor, TenantRepository
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec

ACME = "/api/v1/environments/dev/tenants/acme"
AUTHOR = GitAuthor("Test", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_a_write_while_git_is_locked_fails_cleanly_and_recovers_without_a_hand(
    make_app: AppFactory, serve: Any, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    backends = app.state.backends
    repository: TenantRepository = backends.repository
    token = issuer.admin_of("acme", email="alice@acme.example")
    with server.client(token) as client:
        assert client.put(ACME, json=spec("acme", displayName="before")).status_code == 202
        queued = len(backends.queue.recent(stack=StackRef("dev", "acme")))
        head = repository.head()
        # A live process (a person's git, say) holds the branch's lock.
        lock = repository.git_dir / "refs" / "heads" / "main.lock"
        lock.write_text("")
        holder = subprocess.Popen(["sleep", "60"], cwd=repository.root)
        try:
            with caplog.at_level(logging.ERROR, logger="tenancy.service"):
                refused = client.patch(ACME, json={"displayName": "during"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "repository_unavailable"
            assert "failed to lock file" in caplog.text  # libgit2's own words reach the log
            assert lock.exists()  # never taken from a live holder
            assert client.get("/readyz").status_code == 503
            assert client.get(ACME).json()["spec"]["displayName"] == "before"
            assert repository.head() == head
            assert len(backends.queue.recent(stack=StackRef("dev", "acme"))) == queued  # nothing queued
            assert git(repository.root, "status", "--porcelain") == ""
        finally:
            holder.kill()
            holder.wait()
        # The holder is gone: readiness and writes come back on their own.
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "readiness stayed not-ready after the lock's holder died"
            time.sleep(0.2)
        accepted = client.patch(ACME, json={"displayName": "after"})
        assert accepted.status_code == 202
        assert not lock.exists()
        history = repository.history("dev", "acme")
        assert [c.author_email for c in history] == ["alice@acme.example"] * 2
        assert (
            yaml.safe_load(git(repository.root, "show", "HEAD:tenants/dev/acme.yaml"))["displayName"]
            == "after"
        )


def test_a_write_clears_a_lock_its_dead_process_left(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    for name in ("index.lock", "refs/heads/main.lock", "HEAD.lock"):
        (repository.git_dir / name).write_text("")
    assert repository.write("dev", "acme", spec("acme"), author=AUTHOR, message="Create tenant dev.acme")
    assert not list(repository.git_dir.glob("*.lock"))
    assert git(repository.root, "status", "--porcelain") == ""


def test_start_up_restores_the_working_copy_and_serves_only_the_commit(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    repository.write("dev", "acme", spec("acme", displayName="committed"), author=AUTHOR, message="Create")
    # What a process killed while writing through the index leaves behind.
    (repository.tenants_dir / "dev" / "acme.yaml").write_text(
        yaml.safe_dump(spec("acme", displayName="junk"))
    )
    git(repository.root, "add", "--", "tenants/dev/acme.yaml")
    (repository.tenants_dir / "dev" / "ghost.yaml").write_text(yaml.safe_dump(spec("ghost")))
    (repository.git_dir / "index.lock").write_text("")
    assert (repository.read("dev", "acme") or {})["displayName"] == "committed"  # before any recovery
    assert repository.names() == [("dev", "acme")]

    restarted = TenantRepository(tmp_path / "repo")
    restarted.ensure()

    assert git(restarted.root, "status", "--porcelain") == ""
    assert not (restarted.tenants_dir / "dev" / "ghost.yaml").exists()
    assert (
        yaml.safe_load((restarted.tenants_dir / "dev" / "acme.yaml").read_text())["displayName"]
        == "committed"
    )
    restarted.write("dev", "beta", spec("beta"), author=GitAuthor("Bob", "bob@example.com"), message="Create")
    assert git(restarted.root, "show", "--name-only", "--format=", "HEAD").split() == [
        "tenants/dev/beta.yaml"
    ]


def test_a_lock_kept_by_a_live_process_is_never_removed(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    lock = repository.git_dir / "index.lock"
    lock.write_text("")
    holder = subprocess.Popen(["sleep", "60"], cwd=repository.root)
    try:
        removed, holders = clear_stale_locks(repository.root, repository.git_dir)
        assert removed == [] and [h.pid for h in holders] == [holder.pid]
        assert lock.exists()
        assert repository.write_problems() != []
    finally:
        holder.kill()
        holder.wait()
    assert repository.write_problems() == []
    assert not lock.exists()


def test_concurrent_writers_on_many_tenants_each_get_their_own_commit(tmp_path: Path) -> None:
    import threading

    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    commits: list[str | None] = []

    def write(index: int) -> None:
        author = GitAuthor(f"W{index}", f"w{index}@example.com")
        for round_ in range(5):
            with repository.locked(f"dev.t{index}"):
                commits.append(
                    repository.write(
                        "dev",
                        f"t{index}",
                        spec(f"t{index}", displayName=f"r{round_}"),
                        author=author,
                        message=f"Update tenant dev.t{index}",
                    )
                )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(commits) == 40 and len(set(commits)) == 40 and None not in commits
    assert git(repository.root, "rev-list", "--count", "HEAD").strip() == "41"  # one per change, + the first
    entries = git(repository.root, "log", "--format=%x00%ae", "--name-only", "HEAD~40..HEAD").split("\0")[1:]
    for entry in entries:  # each commit changes exactly its author's tenant
        author, *files = entry.split()
        assert files == [f"tenants/dev/t{author[1:].split('@')[0]}.yaml"]
    for index in range(8):
        history = repository.history("dev", f"t{index}")
        assert [c.author_email for c in history] == [f"w{index}@example.com"] * 5
        assert (repository.read("dev", f"t{index}") or {})["displayName"] == "r4"


def test_creations_follow_the_services_own_commits_as_git_log_would(tmp_path: Path) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()

    def by_git_log(name: str) -> str:
        return git(
            repository.root, "log", "-n1", "--diff-filter=A", "--format=%H", "--", f"tenants/dev/{name}.yaml"
        )

    repository.write("dev", "a", spec("a"), author=AUTHOR, message="Create a")
    first = repository.creation("dev", "a")  # looked up once, then carried over our commits
    repository.write("dev", "a", spec("a", displayName="x"), author=AUTHOR, message="Update a")
    repository.write("dev", "b", spec("b"), author=AUTHOR, message="Create b")
    assert repository.creation("dev", "a") == first
    assert first is not None and first.sha == by_git_log("a").strip()
    repository.delete("dev", "a", author=AUTHOR, message="Delete a")
    repository.write("dev", "a", spec("a"), author=AUTHOR, message="Create a again")
    again = repository.creation("dev", "a")
    assert again is not None and again.sha == by_git_log("a").strip() != first.sha
    assert (repository.creation("dev", "b") or first).sha == by_git_log("b").strip()

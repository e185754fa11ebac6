"""The tenants repository: commits authored by the caller, pushed to a shared remote by several
replicas without losing each other's changes."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import yaml

from tenancy.service.core.tenants_repo import COMMITTER_NAME, GitAuthor, TenantRepository


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

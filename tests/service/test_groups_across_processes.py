"""Processes sharing the checkout (``tenantctl serve --processes N``) take turns on the commit lock.
What a process's writers hand in while another process holds that lock joins the group its leader is
waiting to commit: one round of flushes (one pack, one move of the branch) for all of them, instead of
a round for the writer that came first and another for those that came while it waited."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import takewhile
from pathlib import Path

import pygit2

from tenancy.service.core.tenants_repo import GitAuthor, TenantRepository

# Another process holding a lock file (flock) until its standard input closes: a service process in
# the middle of its commit, as far as this process can tell.
HOLDER = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


class LockHeldElsewhere:
    def __init__(self, path: Path) -> None:
        command = [sys.executable, "-c", HOLDER, str(path)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(10) == 0


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def start_in_turn(
    target: Callable[[str], None], names: list[str], waiting: Callable[[], int]
) -> list[threading.Thread]:
    """A thread per name, each started once the one before it waits (``waiting`` counts them)."""
    threads = []
    for name in names:
        thread = threading.Thread(target=target, args=(name,))
        thread.start()
        threads.append(thread)
        wait_for(lambda: waiting() == len(threads))
    return threads


def test_changes_placed_while_another_process_commits_share_the_waiting_leader_s_group(
    tmp_path: Path,
) -> None:
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    pack_dir = repository.git_dir / "objects" / "pack"
    packs_before = set(pack_dir.glob("pack-*.pack"))
    before = repository.head()
    other = LockHeldElsewhere(repository.git_dir / "tenant-api-commit.flock")
    answers: dict[str, str | None] = {}

    def write(name: str) -> None:
        answers[name] = repository.write(
            "dev", name, {"name": name}, author=GitAuthor(name, f"{name}@x.example"), message=f"Create {name}"
        )

    first = threading.Thread(target=write, args=("first",))
    first.start()
    # Its leader took the group (["first"]) and waits for the other process's commit lock.
    wait_for(lambda: repository._group._leader_active and not repository._group._pending)
    others = start_in_turn(write, ["second", "third"], lambda: len(repository._group._pending))
    other.release()
    for thread in [first, *others]:
        thread.join(10)

    # One new pack and one move of the branch for all three, each change its own commit under its
    # author, in the order they were placed.
    assert len(set(pack_dir.glob("pack-*.pack")) - packs_before) == 1
    head = repository.head()
    assert head is not None
    repo = pygit2.Repository(str(repository.git_dir))
    chain = list(takewhile(lambda commit: str(commit.id) != before, repo.walk(head)))[::-1]
    assert [commit.author.name for commit in chain] == ["first", "second", "third"]
    assert all(len(commit.parent_ids) == 1 for commit in chain)
    assert [answers[commit.author.name] for commit in chain] == [str(commit.id) for commit in chain]
    assert all(repository.read("dev", name) == {"name": name} for name in ("first", "second", "third"))

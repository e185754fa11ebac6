"""The group-commit turn-taking the SQLite queue and the tenants repository share."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from tenancy.group_commit import GroupCommit


@dataclass(eq=False)
class Item:
    name: str
    done: bool = False
    lead: bool = False
    wakeup: threading.Event = field(default_factory=threading.Event)


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_what_arrives_while_a_group_commits_is_the_next_group_in_arrival_order() -> None:
    groups: list[list[str]] = []
    first_entered, release = threading.Event(), threading.Event()

    def commit(group: list[Item]) -> None:
        groups.append([item.name for item in group])
        if len(groups) == 1:
            first_entered.set()
            release.wait(10)
        for item in group:
            item.done = True
            item.wakeup.set()

    committer = GroupCommit(commit)
    items = [Item(name) for name in "abcd"]
    threads = [threading.Thread(target=committer.join, args=(items[0],))]
    threads[0].start()
    first_entered.wait(10)
    for item in items[1:]:  # handed in one by one while "a" is being committed
        thread = threading.Thread(target=committer.join, args=(item,))
        thread.start()
        threads.append(thread)
        _wait_for(lambda: len(committer._pending) == len(threads) - 1)
    release.set()
    for thread in threads:
        thread.join(10)

    assert groups == [["a"], ["b", "c", "d"]]
    assert all(item.done for item in items) and not committer._leader_active


def test_a_failed_group_raises_in_its_leader_and_the_next_writer_still_leads() -> None:
    def commit(group: list[Item]) -> None:
        if group[0].name == "bad":
            raise RuntimeError("disk full")
        for item in group:
            item.done = True
            item.wakeup.set()

    committer = GroupCommit(commit)
    with pytest.raises(RuntimeError, match="disk full"):
        committer.join(Item("bad"))
    good = Item("good")
    committer.join(good)  # a leader that failed gave the turn back: this one is not left waiting
    assert good.done and not committer._leader_active

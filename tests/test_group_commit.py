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


def test_an_item_added_before_its_writer_waits_keeps_its_place_and_is_handed_the_lead() -> None:
    """``add`` fixes an item's place before its writer lets the next one go on (pipelined writes of a
    tenant, the queue's submits in commit order); the lead handed to it meanwhile waits for ``wait``."""
    groups: list[list[str]] = []
    entered, release = threading.Event(), threading.Event()

    def commit(group: list[Item]) -> None:
        groups.append([item.name for item in group])
        if len(groups) == 1:
            entered.set()
            release.wait(10)
        for item in group:
            item.done = True
            item.wakeup.set()

    committer = GroupCommit(commit)
    first = threading.Thread(target=committer.join, args=(Item("a"),))
    first.start()
    entered.wait(10)
    b, c = Item("b"), Item("c")
    committer.add(b)  # placed; its writer has not waited yet
    late = threading.Thread(target=committer.join, args=(c,))
    late.start()
    _wait_for(lambda: len(committer._pending) == 2)
    release.set()
    first.join(10)
    _wait_for(lambda: b.lead)  # handed to the oldest item, whose writer is not waiting yet
    assert groups == [["a"]] and not c.done
    committer.wait(b)  # its writer leads the next group, its own item and the later one
    late.join(10)
    assert groups == [["a"], ["b", "c"]] and b.done and c.done and not committer._leader_active

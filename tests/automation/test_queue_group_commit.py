"""Submits that arrive together share one SQLite transaction (one flush of the WAL), inserted in the
order they arrived, with the same outcome as one transaction each; a failed transaction fails every
submit in it and keeps none. The WAL is checkpointed off the commits' path."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation import queue as queue_module
from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.automation.queue import SqliteOperationQueue

STACK = StackRef("dev", "acme")


class HeldTransactions:
    """Wraps the queue's write transaction: counts them, and holds the first one open until released."""

    def __init__(self, queue: SqliteOperationQueue) -> None:
        self.count = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._write = queue._write

    @contextlib.contextmanager
    def __call__(self, **options: Any) -> Iterator[Any]:
        self.count += 1
        with self._write(**options) as db:
            self.entered.set()
            assert self.release.wait(10)
            yield db


def submit_in_turn(
    queue: SqliteOperationQueue, held: HeldTransactions, count: int, results: list[Any]
) -> list[threading.Thread]:
    """``count`` submits on threads: the first holds its transaction, each next one starts once the
    one before it is waiting."""
    threads = []
    for index in range(count):

        def submit(index: int = index) -> None:
            try:
                results[index] = queue.submit(STACK, OperationKind.up, spec={"v": index}, requested_by="a")
            except Exception as error:
                results[index] = error

        thread = threading.Thread(target=submit)
        thread.start()
        threads.append(thread)
        if index == 0:
            assert held.entered.wait(10)
        deadline = time.monotonic() + 10
        while len(queue._group._pending) < index and time.monotonic() < deadline:
            time.sleep(0.002)
    return threads


def test_submits_waiting_for_a_transaction_share_the_next_one_in_arrival_order(tmp_path: Path) -> None:
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    held = HeldTransactions(queue)
    queue._write = held  # type: ignore[method-assign]
    results: list[Any] = [None] * 6
    threads = submit_in_turn(queue, held, 6, results)  # the first holds the transaction; five wait
    assert len(queue._group._pending) == 5
    held.release.set()
    for thread in threads:
        thread.join(10)

    assert held.count == 2  # the first submit's transaction, then one for the five
    operations = queue.recent(stack=STACK, limit=10)[::-1]  # oldest first, by position
    assert [operation.id for operation in operations] == [result.id for result in results]
    # As if one after another: each replaced the one before, all point at the last, which keeps its spec.
    assert [operation.status for operation in operations] == [OperationStatus.superseded] * 5 + [
        OperationStatus.queued
    ]
    assert {operation.superseded_by for operation in operations[:5]} == {results[-1].id}
    assert operations[-1].spec == {"v": 5} == results[-1].spec


def test_a_failed_transaction_fails_every_submit_in_it_and_keeps_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    held = HeldTransactions(queue)
    queue._write = held  # type: ignore[method-assign]
    insert = SqliteOperationQueue._insert

    def insert_or_fail(db: Any, submission: Any) -> None:
        if submission.spec == '{"v": 3}':
            raise OSError("disk full")
        insert(db, submission)

    monkeypatch.setattr(SqliteOperationQueue, "_insert", staticmethod(insert_or_fail))
    results: list[Any] = [None] * 5
    threads = submit_in_turn(queue, held, 5, results)
    held.release.set()
    for thread in threads:
        thread.join(10)

    assert not isinstance(results[0], Exception)
    assert all(isinstance(result, OSError) for result in results[1:])
    assert [operation.id for operation in queue.recent(stack=STACK)] == [results[0].id]


_KILLED_MID_GROUP = """
import sys, time
from pathlib import Path
from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.queue import SqliteOperationQueue

queue = SqliteOperationQueue(Path(sys.argv[1]))
stack = StackRef("dev", "acme")
print("acked", queue.submit(stack, OperationKind.up, spec={"v": "acked"}, requested_by="a").id, flush=True)
insert, rows = SqliteOperationQueue._insert, []

def insert_then_stop(db, submission):
    insert(db, submission)
    rows.append(submission.id)
    if len(rows) == 2:  # two of the group's three rows inserted, its transaction open
        print("inside", flush=True)
        time.sleep(60)

SqliteOperationQueue._insert = staticmethod(insert_then_stop)
queue._group._leader_active = True  # a leader is busy: the three submits wait for the next transaction
import threading
for index in range(3):
    threading.Thread(
        target=queue.submit, args=(StackRef("dev", f"t{index}"), OperationKind.up),
        kwargs={"spec": {"v": index}, "requested_by": "a"}, daemon=True,
    ).start()
    while len(queue._group._pending) <= index:
        time.sleep(0.001)
with queue._group._lock:  # what the busy leader does when it is done: hand the lead on
    queue._group._pending[0].lead = True
queue._group._pending[0].wakeup.set()
time.sleep(60)
"""


def test_a_process_killed_inside_a_group_s_transaction_keeps_none_of_it(tmp_path: Path) -> None:
    """kill -9 while a group's rows are inserted but not committed: none of them is in the queue after,
    the submit acknowledged before is, and the queue takes submits again."""
    path = tmp_path / "queue.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_GROUP, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline().split()
        assert first[0] == "acked"
        assert child.stdout.readline().strip() == "inside"
    finally:
        child.kill()  # SIGKILL
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()

    queue = SqliteOperationQueue(path)
    assert queue._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [operation.id for operation in queue.recent()] == [first[1]]
    after = queue.submit(StackRef("dev", "t0"), OperationKind.up, spec={"v": "after"}, requested_by="a")
    assert [operation.id for operation in queue.recent()] == [after.id, first[1]]
    queue.close()


def test_the_wal_is_checkpointed_by_a_thread_of_its_own_not_inside_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's automatic checkpoint ran inside the commit that crossed 1,000 WAL pages, with the writer
    lock held; here no connection of the queue checkpoints on commit, and a thread of its own does it
    every so many transactions, until the queue is closed."""
    monkeypatch.setattr(queue_module, "_CHECKPOINT_EVERY", 10)
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    assert queue._db().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for index in range(25):
        queue.submit(StackRef("dev", f"t{index}"), OperationKind.up, spec={}, requested_by="a")
    deadline = time.monotonic() + 10
    while queue.checkpoints < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.checkpoints >= 1  # woken at the 10th and 20th transaction (two wakes may make one)
    checkpointer = queue._checkpointer
    assert checkpointer is not None and checkpointer.name == "queue-checkpoint"
    queue.close()
    assert not checkpointer.is_alive()
    reopened = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    assert len(reopened.recent(limit=50)) == 25

"""Submits that arrive together share one SQLite transaction (one flush of the WAL), inserted in the
order they arrived, with the same outcome as one transaction each; a failed transaction fails every
submit in it and keeps none."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
        while len(queue._pending) < index and time.monotonic() < deadline:
            time.sleep(0.002)
    return threads


def test_submits_waiting_for_a_transaction_share_the_next_one_in_arrival_order(tmp_path: Path) -> None:
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    held = HeldTransactions(queue)
    queue._write = held  # type: ignore[method-assign]
    results: list[Any] = [None] * 6
    threads = submit_in_turn(queue, held, 6, results)  # the first holds the transaction; five wait
    assert len(queue._pending) == 5
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

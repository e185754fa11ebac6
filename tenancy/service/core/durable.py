"""Making what a write stored survive a power loss, not only a crash of the process.

A file written and renamed into place is safe from a ``kill -9`` as soon as the calls return (the
kernel has it), but until it is flushed a power loss or a kernel panic can lose it, or keep the
rename and lose the data. So a group of commits is acknowledged only once its objects (the pack and
its index, or the loose objects), the folders naming them, the branch's new value (its lock file
before the rename) and the branch's folder are flushed: one round of these per group, whatever its
size, so group commit spreads their cost over every change in the group.

``fsync`` is the one place the service asks for it, so tests can see what is flushed and in which
order. ``os.fsync`` releases the GIL: other request threads run while the disk works.

Flushes that do not depend on each other run at once (``fsync_together``): the file system's journal
takes concurrent flushes in one commit where it can, so a group waits for about one flush instead of
one after the other (a group's pack and its index; the pack folder and the branch's lock file). On this
project's disk under load a flush took 5-10 ms, and a group's five flushes in a row were most of the
time the commit lock was held, which bounded writes of every process sharing the checkout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

_HELPERS = 3  # flushes run beside the calling thread's own; more wait for one of these
_helpers: ThreadPoolExecutor | None = None
_helpers_lock = threading.Lock()
_helpers_pid = -1


def fsync(descriptor: int) -> None:
    """Flush the file open as ``descriptor`` (data and metadata) to the disk."""
    os.fsync(descriptor)


def sync_file(path: Path) -> bool:
    """Flush the file at ``path``; False when there is none (nothing to flush)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fsync(descriptor)
    finally:
        os.close(descriptor)
    return True


def sync_folders(paths: Iterable[Path]) -> None:
    """Flush each folder once (their entries: files created, renamed or removed in them), in order."""
    for path in dict.fromkeys(paths):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_together(descriptors: Sequence[int]) -> None:
    """Flush every file (or folder) open as ``descriptors``, at once: the first on this thread, the
    others on helper threads; returns once all are flushed, raising the first failure (after every
    flush has ended, so no descriptor is still in use when the caller closes it)."""
    if len(descriptors) <= 1:
        for descriptor in descriptors:
            fsync(descriptor)
        return
    pending: list[Future[None]] = [_pool().submit(_flush, descriptor) for descriptor in descriptors[1:]]
    failure: BaseException | None = None
    try:
        fsync(descriptors[0])
    except BaseException as error:
        failure = error
    for future in pending:
        try:
            future.result()
        except BaseException as error:
            failure = failure or error
    if failure is not None:
        raise failure


def _flush(descriptor: int) -> None:
    fsync(descriptor)  # looked up at call time: tests replace ``fsync`` to watch or fail flushes


def _pool() -> ThreadPoolExecutor:
    """The helper threads, started on first use; a forked child starts its own (it has none of its
    parent's threads)."""
    global _helpers, _helpers_pid
    with _helpers_lock:
        if _helpers is None or _helpers_pid != os.getpid():
            _helpers = ThreadPoolExecutor(_HELPERS, thread_name_prefix="durable-flush")
            _helpers_pid = os.getpid()
        return _helpers


def open_folder(path: Path) -> int:
    """A descriptor of the folder at ``path`` to flush (``fsync_together``); the caller closes it."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

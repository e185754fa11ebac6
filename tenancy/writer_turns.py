"""Writers of one SQLite database take turns on a lock that blocks, across threads and processes.

A SQLite connection that finds the database locked does not wait on the lock: its busy handler
polls, sleeping up to 100 ms between tries, so writers queued behind one another wait far longer
than the transactions take (with several ``tenantctl serve`` processes, every submit would). Here a
writer first takes a Python lock (the threads of this process), then a ``flock`` of a file beside
the database (the processes), and only then begins its transaction: the kernel wakes the next
writer the moment the lock is released, and releases it if its holder dies. SQLite's busy handler
is left for anything that does not take turns here (an older process, a checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriterTurns:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(f"{database.name}-writer.lock")
        self._threads = threading.Lock()
        self._descriptor = -1
        self._pid = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the database's writer turn (a ``BEGIN IMMEDIATE`` inside it never waits on SQLite)."""
        with self._threads:
            descriptor = self._open()
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # the GIL is released while it waits
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _open(self) -> int:
        # A flock belongs to the open file: a forked child must not share its parent's, so it opens
        # its own (the descriptor is close-on-exec, so programs run by the service never hold it).
        if self._descriptor < 0 or self._pid != os.getpid():
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._descriptor

    def close(self) -> None:
        with self._threads:
            if self._descriptor >= 0 and self._pid == os.getpid():
                os.close(self._descriptor)
            self._descriptor = -1
